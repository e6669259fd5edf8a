//! The IP kit (`ip/vip`), built into the daemon: a switchable virtual
//! address, added and removed through netlink ([`netlink`]), announced to
//! the segment with gratuitous ARP or unsolicited neighbour advertisements
//! ([`announce`]) after a bounded probe that no other host answers for it
//! ([`probe`]). [`vip`] reads a resource's properties and carries out its
//! actions; the resource brain drives them as it drives any kit's scripts
//! (the resource manager runs [`vip::act`] where it would spawn a script),
//! and each ends with one line saying what was done, or why it failed.
//! [`monitor`] watches the kernel's link and address events so that a lost
//! carrier or a deleted address is checked at once. [`guard`] removes the
//! addresses on the real-time thread the moment this node's fast lease
//! runs out unrenewed.

pub mod announce;
pub mod guard;
pub mod monitor;
pub mod netlink;
pub mod probe;
pub mod vip;

use std::time::Duration;

use heartline_brain::KitInfo;

/// The kit's application and type names: `--app ip --type vip`.
pub const APP: &str = "ip";
/// See [`APP`].
pub const TYPE: &str = "vip";

/// How often quickCheck runs: the address and its link are read from the
/// kernel in microseconds.
pub const QUICK_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Whether `app/rtype` is this built-in kit.
#[must_use]
pub fn is_builtin(app: &str, rtype: &str) -> bool {
    app == APP && rtype == TYPE
}

/// What the resource brain knows of the kit.
#[must_use]
pub fn brain_info() -> (String, KitInfo) {
    (
        format!("{APP}/{TYPE}"),
        KitInfo {
            quick_check_interval: Some(QUICK_CHECK_INTERVAL.into()),
            // A missing address is added again once; a dead link fails the
            // re-add, and the resource over.
            recover_attempts: 1,
            problems: Vec::new(),
        },
    )
}
