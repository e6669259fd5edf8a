//! The fast lease's guard: a task on the communication manager's
//! real-time thread that removes this node's virtual addresses the moment
//! its fast lease runs out unrenewed.
//!
//! After every step the resource manager publishes an [`Order`]: the
//! addresses of fast hierarchies that may run here and the instant the
//! brain stops them unless the lease is renewed first
//! ([`heartline_brain::Brain::fast_guard`]). A renewal moves the instant
//! on; a stop, or nothing fast running, clears the order. If the instant
//! comes, the guard deletes the addresses through netlink at once, on a
//! thread that a busy machine, a step of the brain or a slow script do not
//! delay; the brain's own stop follows and finds them gone. For a second
//! after, it looks again every 10 ms (a restore already under way could
//! add an address back) until the brain's stop clears the order.
//!
//! Survivors take the addresses over only after the lost node's fast
//! lease has ended, which the stop bound (`[quorum] fast_stop_bound`)
//! lies inside: the guard acts at its start, in microseconds.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, warn};

use super::netlink::Netlink;
use super::vip::{self, VipSpec};

/// What the guard watches: when to remove which addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// When this node's fast lease runs out unless renewed before.
    pub at: Instant,
    /// The addresses, each with its resource's tag.
    pub vips: Vec<(String, VipSpec)>,
}

/// How often the guard looks again once the lease ran out, and for how
/// long.
const AGAIN: Duration = Duration::from_millis(10);
const AGAIN_FOR: Duration = Duration::from_secs(1);

/// How much before the brain's stop the guard acts: the runtime's timer
/// wakes up to a millisecond after the instant asked, so the guard asks
/// for this much earlier and acts no later than the brain's own stop.
const LEAD: Duration = Duration::from_millis(2);

/// Starts the guard on `realtime` (the communication manager's real-time
/// runtime); returns where to publish orders. What it does is logged and
/// told to `report` (the watchers). Without a netlink socket it says so,
/// and the brain's own stop is all there is.
pub fn start(
    realtime: &tokio::runtime::Handle,
    report: impl Fn(String) + Send + Sync + 'static,
) -> watch::Sender<Option<Order>> {
    let (orders, rx) = watch::channel(None);
    realtime.spawn(async move {
        match Netlink::connect() {
            Ok(nl) => run(&nl, rx, &report).await,
            Err(e) => error!(
                "the fast lease's guard cannot open a netlink socket ({e}): virtual addresses are removed at the fast lease's end by the resource manager alone"
            ),
        }
    });
    orders
}

async fn run(
    nl: &Netlink,
    mut orders: watch::Receiver<Option<Order>>,
    report: &(impl Fn(String) + Sync),
) {
    // The instant of the order carried out last, if the lease has not
    // been renewed since.
    let mut fired: Option<Instant> = None;
    loop {
        let order = orders.borrow_and_update().clone();
        let wake = order.as_ref().and_then(|o| match fired {
            Some(at) if at == o.at => {
                (Instant::now() < o.at + AGAIN_FOR).then(|| Instant::now() + AGAIN)
            }
            _ => Some(o.at.checked_sub(LEAD).unwrap_or(o.at)),
        });
        tokio::select! {
            changed = orders.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = sleep_until(wake) => {
                // A renewal (or a stop) published as the instant came wins.
                if orders.has_changed().unwrap_or(true) {
                    continue;
                }
                let Some(order) = order else { continue };
                let first = fired != Some(order.at);
                fired = Some(order.at);
                carry_out(nl, &order, first, report).await;
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Removes the order's addresses; says what it did the first time, and
/// afterwards only if an address had come back.
async fn carry_out(nl: &Netlink, order: &Order, first: bool, report: &(impl Fn(String) + Sync)) {
    let now = Instant::now();
    let offset = if now >= order.at {
        format!("{} µs after", (now - order.at).as_micros())
    } else {
        format!("{} µs before", (order.at - now).as_micros())
    };
    for (tag, spec) in &order.vips {
        let began = std::time::Instant::now();
        let done = vip::remove(nl, spec).await;
        let took = began.elapsed();
        let text = match done {
            Ok(removal) if first || removal.deleted => {
                let text = format!(
                    "this node's fast lease ran out unrenewed: {tag}: {} (on the real-time thread, {offset} its stop point, in {} µs)",
                    removal.line,
                    took.as_micros()
                );
                warn!("{text}");
                text
            }
            Err(e) if first => {
                let text = format!(
                    "this node's fast lease ran out unrenewed: {tag}: cannot remove {}: {e}; the resource manager's stop tries again, and the watchdog resets this node if it fails",
                    spec.name()
                );
                error!("{text}");
                text
            }
            // Looking again: only an address that came back is said.
            Ok(_) | Err(_) => continue,
        };
        report(text);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test that cannot set up should panic

    use std::process::Command;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Runs `ip ARGS` (in the calling thread's network namespace).
    fn ip(args: &str) {
        let out = Command::new("ip").args(args.split(' ')).output().unwrap();
        assert!(out.status.success(), "ip {args}: {out:?}");
    }

    fn holds(address: &str) -> bool {
        let out = Command::new("ip")
            .args(["-o", "addr", "show", "dev", "hlg0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {address}/"))
    }

    /// Waits for `check` with a deadline, on the runtime (the guard runs
    /// on this thread too).
    async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// On a veth interface in a network namespace of the test's own: an
    /// order renewed in time removes nothing; one that runs out removes
    /// the address at its instant, again if it comes back within the
    /// second after, and is said; a cleared order removes nothing.
    #[test]
    fn the_guard_removes_the_address_when_the_lease_runs_out_and_not_while_renewed() {
        let skipped = std::thread::spawn(|| {
            // The namespace is this thread's alone, and the `ip` programs
            // it starts inherit it.
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                return Some(format!("cannot make a network namespace: {e}"));
            }
            if Command::new("ip").arg("-V").output().is_err() {
                return Some("no `ip` program".into());
            }
            ip("link add hlg0 type veth peer name hlg1");
            ip("link set hlg0 up");
            ip("link set hlg1 up");
            ip("addr add 192.0.2.10/24 dev hlg0");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let said = Arc::new(Mutex::new(Vec::<String>::new()));
            let said_too = said.clone();
            let orders = start(runtime.handle(), move |text| {
                said_too.lock().unwrap().push(text);
            });
            let spec = VipSpec::from_props(
                &[
                    ("address".to_string(), "192.0.2.10/24".to_string()),
                    ("interface".to_string(), "hlg0".to_string()),
                ]
                .into_iter()
                .collect(),
            )
            .unwrap();
            let order = |at| {
                Some(Order {
                    at,
                    vips: vec![("vip".into(), spec.clone())],
                })
            };
            runtime.block_on(async {
                // Renewed before its instant: nothing happens.
                let first = Instant::now() + Duration::from_millis(100);
                orders.send_replace(order(first));
                tokio::time::sleep(Duration::from_millis(50)).await;
                let renewed = Instant::now() + Duration::from_millis(300);
                orders.send_replace(order(renewed));
                tokio::time::sleep_until(first + Duration::from_millis(50)).await;
                assert!(holds("192.0.2.10"), "removed although renewed");
                assert!(said.lock().unwrap().is_empty());
                // Not renewed: removed at its instant (less the lead), not
                // before.
                wait_for("the address removed", || !holds("192.0.2.10")).await;
                assert!(Instant::now() + LEAD >= renewed);
                // The guard says so once its check after the deletion is
                // done (this thread may see the address gone before).
                wait_for("the removal said", || !said.lock().unwrap().is_empty()).await;
                let lines = said.lock().unwrap().clone();
                assert_eq!(lines.len(), 1, "{lines:?}");
                assert!(
                    lines[0].contains("fast lease ran out unrenewed: vip: removed 192.0.2.10/24 on hlg0 (on the real-time thread"),
                    "{lines:?}"
                );
                // Added back within the second after (a restore that was
                // under way): removed again, and said.
                ip("addr add 192.0.2.10/24 dev hlg0");
                wait_for("the address removed again", || !holds("192.0.2.10")).await;
                wait_for("the second removal said", || said.lock().unwrap().len() == 2).await;
                // The brain stopped it: the order is cleared, and an
                // address added by hand stays.
                orders.send_replace(None);
                // A look again already under way ends first.
                tokio::time::sleep(AGAIN * 2).await;
                ip("addr add 192.0.2.10/24 dev hlg0");
                tokio::time::sleep(AGAIN * 5).await;
                assert!(holds("192.0.2.10"), "removed with no order");
                assert_eq!(said.lock().unwrap().len(), 2);
            });
            None
        })
        .join()
        .unwrap();
        if let Some(why) = skipped {
            eprintln!("SKIPPED: the fast lease's guard on a veth interface: {why}");
        }
    }
}
