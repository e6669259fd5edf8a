//! A virtual IP resource: its properties ([`VipSpec`]) and its actions.
//!
//! - **restore** (and **recover**, which adds a missing address again): the
//!   interface must be up with carrier; an address already there is kept;
//!   otherwise no other host may answer for it ([`super::probe`], bounded),
//!   then it is added (IPv6 without waiting for duplicate address
//!   detection unless `dad = true`) and announced `announce_count` times,
//!   `announce_interval` apart.
//! - **quickCheck**: the interface exists, is up with carrier, and holds
//!   the address.
//! - **remove**: the address is deleted if present: removing twice, or from
//!   an interface that is gone, succeeds.
//! - **delete**: nothing to clean up.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use super::{announce, netlink, probe};
use heartline_brain::action::Action;

/// A virtual address, from a resource's properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipSpec {
    /// The address (`address = "192.0.2.10/24"`).
    pub address: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
    /// The interface it is added to (`interface`).
    pub interface: String,
    /// An IPv4 label (`label`, as `ip addr add ... label eth0:web`).
    pub label: Option<String>,
    /// Gratuitous ARPs or unsolicited neighbour advertisements sent after
    /// a restore (`announce_count`, default 3; 0 for none).
    pub announce_count: u32,
    /// Between them (`announce_interval`, default 100 ms).
    pub announce_interval: Duration,
    /// How long a restore waits for another host to answer for the address
    /// before it adds it (`probe_timeout`, default 100 ms; `0s`: no probe).
    pub probe_timeout: Duration,
    /// IPv6: wait for the kernel's duplicate address detection (`dad`,
    /// default false: the probe stands in for it and the address serves at
    /// once).
    pub dad: bool,
    /// A gateway that quickCheck and recover ask for by ARP or neighbour
    /// solicitation (`gateway`): no answer within `gateway_timeout`
    /// (default 200 ms) fails them, and the address moves to a node that
    /// reaches it. A restore does not ask.
    pub gateway: Option<IpAddr>,
    /// How long to wait for the gateway's answer.
    pub gateway_timeout: Duration,
}

/// The longest the announcements and the probe of a restore may take
/// together (the built-in kit's actions time out at 30 s, and a restore
/// may wait 5 s for duplicate address detection).
pub const MAX_RESTORE: Duration = Duration::from_secs(15);

/// The properties [`VipSpec`] reads, for error messages.
pub const PROPERTIES: &str = "address (with /prefix), interface, and optionally label, announce_count, announce_interval, probe_timeout, dad, gateway, gateway_timeout";

impl VipSpec {
    /// Reads the properties; an error names the property and what to do.
    pub fn from_props(props: &BTreeMap<String, String>) -> Result<VipSpec, String> {
        for key in props.keys() {
            if ![
                "address",
                "interface",
                "label",
                "announce_count",
                "announce_interval",
                "probe_timeout",
                "dad",
                "gateway",
                "gateway_timeout",
                // Read by the daemon for every resource.
                "quick_check_interval",
                "failure_window",
                "max_failures",
            ]
            .contains(&key.as_str())
            {
                return Err(format!(
                    "ip/vip has no property `{key}`: its properties are {PROPERTIES}"
                ));
            }
        }
        let text = props.get("address").ok_or_else(|| {
            "ip/vip needs an address: --prop address=192.0.2.10/24 (or an IPv6 address/prefix)"
                .to_string()
        })?;
        let (ip, prefix) = text.split_once('/').ok_or_else(|| {
            format!("address `{text}` has no prefix length: write it as 192.0.2.10/24")
        })?;
        let address: IpAddr = ip
            .parse()
            .map_err(|_| format!("address `{text}`: `{ip}` is not an IPv4 or IPv6 address"))?;
        let most = if address.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= most)
            .ok_or_else(|| format!("address `{text}`: the prefix must be 0 to {most}"))?;
        if address.is_unspecified() || address.is_multicast() || address.is_loopback() {
            return Err(format!(
                "address `{text}` cannot be a virtual address (unspecified, multicast or loopback)"
            ));
        }
        let interface = props
            .get("interface")
            .filter(|i| !i.is_empty())
            .ok_or_else(|| "ip/vip needs an interface: --prop interface=eth0".to_string())?
            .clone();
        if interface.len() > 15 || interface.contains(['/', ' ']) {
            return Err(format!(
                "interface `{interface}` is not an interface name (at most 15 characters, no / or space)"
            ));
        }
        let label = props.get("label").cloned();
        if let Some(label) = &label {
            if address.is_ipv6() {
                return Err("label applies to IPv4 addresses only".into());
            }
            if label.len() > 15 || !label.starts_with(interface.as_str()) {
                return Err(format!(
                    "label `{label}` must start with the interface name ({interface}) and be at most 15 characters, as eth0:web"
                ));
            }
        }
        let count = |key: &str, default: u32| -> Result<u32, String> {
            props.get(key).map_or(Ok(default), |v| {
                v.parse()
                    .ok()
                    .filter(|n| *n <= 100)
                    .ok_or_else(|| format!("{key} `{v}` is not a count from 0 to 100"))
            })
        };
        let duration = |key: &str, default: Duration| -> Result<Duration, String> {
            props.get(key).map_or(Ok(default), |v| {
                humantime::parse_duration(v)
                    .ok()
                    .filter(|d| *d <= Duration::from_secs(10))
                    .ok_or_else(|| format!("{key} `{v}` is not a duration up to 10s, as 100ms"))
            })
        };
        let dad = match props.get("dad").map(String::as_str) {
            None | Some("false") => false,
            Some("true") if address.is_ipv6() => true,
            Some("true") => return Err("dad applies to IPv6 addresses only".into()),
            Some(other) => return Err(format!("dad `{other}` is not true or false")),
        };
        let announce_count = count("announce_count", 3)?;
        let announce_interval = duration("announce_interval", Duration::from_millis(100))?;
        let probe_timeout = duration("probe_timeout", Duration::from_millis(100))?;
        let gateway = match props.get("gateway") {
            None => None,
            Some(text) => {
                let gateway: IpAddr = text.parse().map_err(|_| {
                    format!("gateway `{text}` is not an address (as 192.0.2.1 or fe80::1)")
                })?;
                if gateway.is_ipv4() != address.is_ipv4() {
                    return Err(format!(
                        "gateway {gateway} is not of the address's family ({address})"
                    ));
                }
                if gateway.is_unspecified() || gateway.is_multicast() || gateway.is_loopback() {
                    return Err(format!(
                        "gateway {gateway} cannot answer (unspecified, multicast or loopback)"
                    ));
                }
                if gateway == address {
                    return Err(format!("gateway {gateway} is the address itself"));
                }
                Some(gateway)
            }
        };
        let gateway_timeout = duration("gateway_timeout", Duration::from_millis(200))?;
        if gateway_timeout.is_zero() {
            return Err("gateway_timeout must be more than 0s".into());
        }
        let takes = announce_interval * announce_count.saturating_sub(1) + probe_timeout;
        if takes > MAX_RESTORE {
            return Err(format!(
                "announce_count × announce_interval plus probe_timeout come to {}, more than {}: a restore must end well within its timeout",
                humantime::format_duration(takes),
                humantime::format_duration(MAX_RESTORE)
            ));
        }
        Ok(VipSpec {
            address,
            prefix,
            interface,
            label,
            announce_count,
            announce_interval,
            probe_timeout,
            dad,
            gateway,
            gateway_timeout,
        })
    }

    /// `192.0.2.10/24 on eth0`.
    #[must_use]
    pub fn name(&self) -> String {
        format!("{}/{} on {}", self.address, self.prefix, self.interface)
    }
}

/// Why an action did not do its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActError {
    /// It failed: one line saying why.
    Failed(String),
    /// It could not run for want of the node's resources (descriptors,
    /// memory): nothing is known of the address, and a check is not
    /// counted as failed (as a script that could not be spawned).
    Exhausted(String),
}

impl From<String> for ActError {
    fn from(line: String) -> ActError {
        ActError::Failed(line)
    }
}

/// Carries out `action`: one line saying what was done, or why not.
pub async fn act(
    action: Action,
    props: &BTreeMap<String, String>,
    handover: bool,
) -> Result<String, ActError> {
    let spec = VipSpec::from_props(props)?;
    let nl = netlink::Netlink::connect().map_err(|e| {
        let line = format!("cannot open a netlink socket: {e}");
        // EMFILE, ENFILE, ENOBUFS, ENOMEM.
        if matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12)) {
            ActError::Exhausted(line)
        } else {
            ActError::Failed(line)
        }
    })?;
    Ok(match action {
        Action::Restore => restore(&nl, &spec, handover).await?,
        Action::Recover => {
            let done = restore(&nl, &spec, false).await?;
            // Adding the address again cannot make the gateway answer: a
            // node that cannot reach it gives the address up.
            match gateway(&nl, &spec).await? {
                Some(answer) => format!("{done}; {answer}"),
                None => done,
            }
        }
        Action::Remove => remove(&nl, &spec).await?.line,
        Action::QuickCheck => check(&nl, &spec).await?,
        Action::Delete => "nothing to clean up".into(),
    })
}

/// What is on the interface for `spec`: the address with `spec`'s prefix
/// (`Some`), or nothing (`None`); with another prefix, an error (it was
/// put there by someone else, or the property changed).
async fn present(
    nl: &netlink::Netlink,
    index: u32,
    spec: &VipSpec,
) -> Result<Option<netlink::Found>, String> {
    match nl.find_address(index, spec.address).await? {
        Some(found) if found.prefix != spec.prefix => Err(format!(
            "{} is on {} with prefix /{}, not /{}: it was not added by this resource (remove it by hand, or set the address property to match)",
            spec.address, spec.interface, found.prefix, spec.prefix
        )),
        Some(found) if found.dad_failed => Err(format!(
            "{} on {}: duplicate address detection found another host holding it",
            spec.address, spec.interface
        )),
        other => Ok(other),
    }
}

/// Adds the address. Unless this is a `handover` (every other node of the
/// cluster said it is stopped there), first probes whether another host
/// answers for it.
async fn restore(nl: &netlink::Netlink, spec: &VipSpec, handover: bool) -> Result<String, String> {
    let link = usable_link(nl, spec).await?;
    let name = spec.name();
    if present(nl, link.index, spec).await?.is_some() {
        settled(nl, link.index, spec).await?;
        let announced = announce::announce(&link, spec).await;
        return Ok(format!("{name} was already there; {announced}"));
    }
    if !spec.probe_timeout.is_zero() && !handover {
        if let Some(holder) = probe::answered(nl, &link, spec.address, spec.probe_timeout).await? {
            return Err(format!(
                "{} is answered for by {holder} on {}: another host holds it, so it was not added (take it off that host, or change the address)",
                spec.address, spec.interface
            ));
        }
    }
    nl.add_address(link.index, spec).await?;
    // Looked at again: "exists" from the kernel is success only if it is
    // this address with this prefix.
    if present(nl, link.index, spec).await?.is_none() {
        return Err(format!("{name} was added but is not there"));
    }
    settled(nl, link.index, spec).await?;
    let announced = announce::announce(&link, spec).await;
    let probe = if handover && !spec.probe_timeout.is_zero() {
        " (a handover: every other node said it is stopped, so no conflict probe)"
    } else {
        ""
    };
    Ok(format!("added {name}{probe}; {announced}"))
}

/// With `dad = true` (IPv6), waits for duplicate address detection to end
/// (at most 5 s): an address still tentative is not announced, and one
/// another host holds fails.
async fn settled(nl: &netlink::Netlink, index: u32, spec: &VipSpec) -> Result<(), String> {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match present(nl, index, spec).await? {
            Some(found) if found.tentative => {
                if std::time::Instant::now() >= until {
                    return Err(format!(
                        "{} still tentative 5 s after it was added (duplicate address detection)",
                        spec.name()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some(_) => return Ok(()),
            None => return Err(format!("{} went away while it was added", spec.name())),
        }
    }
}

/// What a removal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// Whether it deleted the address (else it was not there, or left
    /// alone as another's).
    pub deleted: bool,
    /// What it did, in one line.
    pub line: String,
}

impl Removal {
    fn nothing(line: String) -> Removal {
        Removal {
            deleted: false,
            line,
        }
    }
}

/// Deletes the address if it is there with `spec`'s prefix (idempotent).
pub async fn remove(nl: &netlink::Netlink, spec: &VipSpec) -> Result<Removal, String> {
    let name = spec.name();
    let Some(link) = nl.link(&spec.interface).await? else {
        return Ok(Removal::nothing(format!(
            "{name}: no interface {}, nothing to remove",
            spec.interface
        )));
    };
    match nl.find_address(link.index, spec.address).await? {
        // With another prefix it was not put there by this resource (it
        // could be the node's own address): left alone. Another node's
        // probe finds it answered for, so it is not taken twice.
        Some(found) if found.prefix != spec.prefix => Ok(Removal::nothing(format!(
            "{name}: {} is there with prefix /{}, not added by this resource: left alone",
            spec.address, found.prefix
        ))),
        Some(found) => {
            // Deleting a primary IPv4 address deletes its subnet's
            // secondaries with it (another resource's address, or the
            // node's own) unless the kernel promotes one in its place.
            let behind = nl.secondaries_of(link.index, &found).await?;
            let mut promoted = String::new();
            if !behind.is_empty() {
                promoted = promote_secondaries(&spec.interface)?;
            }
            nl.delete_address(found.message).await?;
            if nl.find_address(link.index, spec.address).await?.is_some() {
                return Err(format!("{name} is still there after it was deleted"));
            }
            for ip in &behind {
                if nl.find_address(link.index, *ip).await?.is_none() {
                    return Err(format!(
                        "removed {name}, and the kernel deleted {ip} with it (a secondary of the same subnet): add it back, and set net.ipv4.conf.{}.promote_secondaries = 1",
                        spec.interface
                    ));
                }
            }
            Ok(Removal {
                deleted: true,
                line: format!("removed {name}{promoted}"),
            })
        }
        None => Ok(Removal::nothing(format!("{name} was not there"))),
    }
}

/// Makes the kernel promote a secondary address of `interface` when its
/// primary is deleted (`net.ipv4.conf.IF.promote_secondaries`, off by
/// default outside systemd's defaults), so that removing one address
/// never takes others with it; what was done, for the action's line.
fn promote_secondaries(interface: &str) -> Result<String, String> {
    let path = format!("/proc/sys/net/ipv4/conf/{interface}/promote_secondaries");
    let now = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    if now.trim() == "1" {
        return Ok(String::new());
    }
    std::fs::write(&path, "1").map_err(|e| {
        format!("cannot set {path} to 1 ({e}), so removing the address would delete the secondaries of its subnet: left in place")
    })?;
    Ok(format!(
        "; set net.ipv4.conf.{interface}.promote_secondaries = 1 so that the other addresses of its subnet stay"
    ))
}

async fn check(nl: &netlink::Netlink, spec: &VipSpec) -> Result<String, String> {
    let link = usable_link(nl, spec).await?;
    match present(nl, link.index, spec).await? {
        None => Err(format!("{} is missing", spec.name())),
        Some(found) if found.tentative => Err(format!(
            "{} is still tentative (duplicate address detection)",
            spec.name()
        )),
        Some(_) => {
            let present = format!("{} present, link up with carrier", spec.name());
            Ok(match gateway(nl, spec).await? {
                Some(answer) => format!("{present}; {answer}"),
                None => present,
            })
        }
    }
}

/// Asks for the gateway, if one is configured: what answered, or why the
/// check fails.
async fn gateway(nl: &netlink::Netlink, spec: &VipSpec) -> Result<Option<String>, String> {
    let Some(gateway) = spec.gateway else {
        return Ok(None);
    };
    let link = usable_link(nl, spec).await?;
    let how = if gateway.is_ipv4() {
        "ARP"
    } else {
        "neighbour solicitation"
    };
    match probe::answered(nl, &link, gateway, spec.gateway_timeout).await? {
        Some(by) => Ok(Some(format!("gateway {gateway} answers ({by})"))),
        None => Err(format!(
            "gateway {gateway} did not answer {how} on {} within {}: this node cannot reach it, so the address moves to a node that can (if the gateway itself is down, every node fails this check)",
            spec.interface,
            humantime::format_duration(spec.gateway_timeout)
        )),
    }
}

/// The interface, if it exists, is up and has carrier.
async fn usable_link(nl: &netlink::Netlink, spec: &VipSpec) -> Result<netlink::Link, String> {
    let link = nl
        .link(&spec.interface)
        .await?
        .ok_or_else(|| format!("no interface {} on this node", spec.interface))?;
    if !link.up {
        return Err(format!(
            "{} is administratively down (ip link set {} up)",
            spec.interface, spec.interface
        ));
    }
    if !link.carrier {
        return Err(format!(
            "{} has no carrier (cable, switch port or peer interface down)",
            spec.interface
        ));
    }
    Ok(link)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn properties_are_read_with_defaults_and_clear_errors() {
        let spec = VipSpec::from_props(&props(&[
            ("address", "192.0.2.10/24"),
            ("interface", "eth0"),
            ("label", "eth0:web"),
        ]))
        .unwrap();
        assert_eq!(spec.address, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!((spec.prefix, spec.announce_count, spec.dad), (24, 3, false));
        assert_eq!(spec.announce_interval, Duration::from_millis(100));
        assert_eq!(spec.probe_timeout, Duration::from_millis(100));
        let v6 = VipSpec::from_props(&props(&[
            ("address", "2001:db8::10/64"),
            ("interface", "eth1"),
            ("dad", "true"),
            ("announce_count", "0"),
            ("probe_timeout", "0s"),
        ]))
        .unwrap();
        assert!(v6.dad && v6.announce_count == 0 && v6.probe_timeout.is_zero());
        assert_eq!((spec.gateway, v6.gateway), (None, None));
        let gw = VipSpec::from_props(&props(&[
            ("address", "192.0.2.10/24"),
            ("interface", "eth0"),
            ("gateway", "192.0.2.1"),
        ]))
        .unwrap();
        assert_eq!(gw.gateway, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(gw.gateway_timeout, Duration::from_millis(200));
        let gateway = |value: &str, timeout: &str| {
            VipSpec::from_props(&props(&[
                ("address", "192.0.2.10/24"),
                ("interface", "eth0"),
                ("gateway", value),
                ("gateway_timeout", timeout),
            ]))
            .unwrap_err()
        };
        assert!(gateway("router", "1s").contains("not an address"));
        assert!(gateway("2001:db8::1", "1s").contains("not of the address's family"));
        assert!(gateway("192.0.2.10", "1s").contains("the address itself"));
        assert!(gateway("224.0.0.1", "1s").contains("cannot answer"));
        assert!(gateway("192.0.2.1", "0s").contains("more than 0s"));
        for (pairs, expect) in [
            (&[("interface", "eth0")][..], "needs an address"),
            (
                &[("address", "192.0.2.10"), ("interface", "eth0")][..],
                "no prefix",
            ),
            (
                &[("address", "192.0.2.300/24"), ("interface", "eth0")][..],
                "not an IPv4",
            ),
            (
                &[("address", "192.0.2.10/33"), ("interface", "eth0")][..],
                "0 to 32",
            ),
            (
                &[("address", "127.0.0.9/8"), ("interface", "eth0")][..],
                "loopback",
            ),
            (&[("address", "192.0.2.10/24")][..], "needs an interface"),
            (
                &[
                    ("address", "192.0.2.10/24"),
                    ("interface", "eth0"),
                    ("label", "web"),
                ][..],
                "must start with the interface",
            ),
            (
                &[
                    ("address", "2001:db8::1/64"),
                    ("interface", "eth0"),
                    ("label", "eth0:x"),
                ][..],
                "IPv4 addresses only",
            ),
            (
                &[
                    ("address", "192.0.2.10/24"),
                    ("interface", "eth0"),
                    ("dad", "true"),
                ][..],
                "IPv6 addresses only",
            ),
            (
                &[
                    ("address", "192.0.2.10/24"),
                    ("interface", "eth0"),
                    ("announce_count", "x"),
                ][..],
                "not a count",
            ),
            (
                &[
                    ("address", "192.0.2.10/24"),
                    ("interface", "eth0"),
                    ("probe_timeout", "1h"),
                ][..],
                "up to 10s",
            ),
            (
                &[
                    ("address", "192.0.2.10/24"),
                    ("interface", "eth0"),
                    ("colour", "red"),
                ][..],
                "no property `colour`",
            ),
        ] {
            let e = VipSpec::from_props(&props(pairs)).unwrap_err();
            assert!(e.contains(expect), "{pairs:?}: {e}");
        }
    }
}
