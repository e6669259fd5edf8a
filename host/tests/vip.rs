//! The IP kit (`ip/vip`) on real interfaces: two daemons and a client, each
//! in a network namespace of its own, on one bridge (`10.79.0.0/24`, and
//! `2001:db8:79::/64`), the two nodes also joined by a direct link of their
//! own (`10.79.1.0/24`, a second heartbeat path). `ip -ts monitor
//! address` runs in both nodes' namespaces for the whole test, so that
//! every moment the address was on a node is known from the kernel's own
//! notifications, and never both at once is checked over the whole run.
//! The lab (`common/vip_lab.rs`) creates and removes its namespaces;
//! without root or `ip` the test says it was skipped.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::netns::{cannot_run, must_in, run};
use common::vip_lab::{Spec, TwoNodes};
use heartline::demo::local_cluster::wait_for;

const BIN: &str = env!("CARGO_BIN_EXE_heartline");
const VIP: &str = "10.79.0.100";
const VIP6: &str = "2001:db8:79::100";

/// The shared two-node lab, with `ip -ts monitor address` recording both
/// nodes' addresses.
struct Lab {
    two: TwoNodes,
}

impl std::ops::Deref for Lab {
    type Target = TwoNodes;
    fn deref(&self) -> &TwoNodes {
        &self.two
    }
}

impl Lab {
    fn new() -> Lab {
        let mut two = TwoNodes::new(&Spec {
            prefix: "hv",
            net: 79,
            interval: "50ms",
            paths: 2,
            ipv6: true,
            bin: BIN.to_string(),
        });
        for node in [1u16, 2] {
            two.spawn_in(
                &format!("n{node}"),
                &["ip", "-ts", "monitor", "address"],
                &format!("monitor{node}"),
            );
        }
        two.start_both();
        Lab { two }
    }

    /// What `ip -o addr show to ADDRESS` prints in `host`'s namespace.
    fn addr_line(&self, host: &str, address: &str) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(host),
                "ip",
                "-o",
                "addr",
                "show",
                "to",
                address,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Where the address is: the nodes holding it.
    fn where_is(&self, address: &str) -> Vec<u16> {
        [1u16, 2]
            .into_iter()
            .filter(|n| self.holds(&format!("n{n}"), address))
            .collect()
    }

    /// The client's neighbour entry for `address`: its hardware address.
    fn client_neighbour(&self, address: &str) -> Option<String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns("c"),
                "ip",
                "neigh",
                "show",
                address,
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut words = text.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_string)
    }

    /// The client opens a TCP connection to `address` (refused: no one
    /// listens), which makes it resolve the address's neighbour entry.
    fn client_contacts(&self, address: &str) {
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.ns("c"), "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/{address}/9"))
            .stderr(Stdio::null())
            .status();
    }

    /// Waits (2 s at most) for the client's neighbour entry for `address`
    /// to name `host`'s hardware address.
    fn client_entry_on(&self, address: &str, host: &str) {
        let mac = self.mac(host);
        wait_for(
            Duration::from_secs(2),
            &format!("the client's entry for {address} on {host}"),
            || self.client_neighbour(address).as_ref() == Some(&mac),
        )
        .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", self.client_neighbour(address), self.logs()));
    }

    /// `host`'s bridge interface's hardware address.
    fn mac(&self, host: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), "cat"])
            .arg(format!("/sys/class/net/{}/address", self.dev(host)))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The VIP resource `tag` with `address` on both nodes (priority by
    /// node id), node 2's equivalent to node 1's.
    fn vip(&self, tag: &str, address: &str, extra: &[&str]) {
        for node in [1u16, 2] {
            self.vip_on(node, tag, address, extra);
        }
        self.cli(
            1,
            &[
                "eqv",
                "create",
                "--tag",
                tag,
                "--other-node",
                "2",
                "--other-tag",
                tag,
            ],
        );
    }

    /// The VIP resource `tag` on `node` alone (priority: its id).
    fn vip_on(&self, node: u16, tag: &str, address: &str, extra: &[&str]) {
        let node_s = node.to_string();
        let dev = self.dev(&format!("n{node}"));
        let address = format!("address={address}");
        let interface = format!("interface={dev}");
        let mut args = vec![
            "ins",
            "create",
            "--node",
            &node_s,
            "--priority",
            &node_s,
            "--tag",
            tag,
            "--id",
            tag,
            "--app",
            "ip",
            "--type",
            "vip",
            "--prop",
            &address,
            "--prop",
            &interface,
        ];
        for e in extra {
            args.extend(["--prop", e]);
        }
        self.cli(1, &args);
    }

    /// The intervals (in seconds of the wall clock) in which node `node`
    /// held `address`, from its monitor: open at the end if still held.
    fn held(&self, node: u16, address: &str) -> Vec<(f64, f64)> {
        let text =
            std::fs::read_to_string(self.path(&format!("monitor{node}"))).unwrap_or_default();
        let mut intervals = Vec::new();
        let mut since: Option<f64> = None;
        for line in text.lines() {
            if !line.contains(&format!(" {address}/")) {
                continue;
            }
            // "[2026-12-02T10:00:00.123456] 3: dev inet ..." or "Deleted ...".
            let Some(at) = line
                .strip_prefix('[')
                .and_then(|l| l.split(']').next())
                .and_then(wall_seconds)
            else {
                continue;
            };
            let deleted = line.contains("Deleted");
            match (deleted, since) {
                (false, None) => since = Some(at),
                (true, Some(from)) => {
                    intervals.push((from, at));
                    since = None;
                }
                _ => {}
            }
        }
        if let Some(from) = since {
            intervals.push((from, f64::INFINITY));
        }
        intervals
    }

    /// The address was never on both nodes at once, by their kernels.
    fn never_both(&self, address: &str) {
        let (one, two) = (self.held(1, address), self.held(2, address));
        assert!(
            !one.is_empty() || !two.is_empty(),
            "the monitors saw {address} nowhere\n{}",
            self.logs()
        );
        for a in &one {
            for b in &two {
                assert!(
                    a.1 <= b.0 || b.1 <= a.0,
                    "{address} on both nodes: node 1 {a:?}, node 2 {b:?}\n{}",
                    self.logs()
                );
            }
        }
    }

    fn logs(&self) -> String {
        self.two.logs_with(&["monitor1", "monitor2"])
    }
}

/// "2026-12-02T10:00:00.123456" (UTC, as `ip -ts` prints it in the
/// local zone, which is UTC here) as seconds since midnight.
fn wall_seconds(text: &str) -> Option<f64> {
    let time = text.split('T').nth(1)?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn lab() -> Option<Lab> {
    if let Some(why) = cannot_run() {
        eprintln!("SKIPPED: {why}");
        assert!(
            std::env::var_os("CI").is_none(),
            "the VIP tests must run in CI: {why}"
        );
        return None;
    }
    Some(Lab::new())
}

#[test]
fn a_vip_moves_between_two_daemons_announced_to_the_client_and_never_on_both() {
    let Some(lab) = lab() else {
        return;
    };
    lab.vip("vip", &format!("{VIP}/24"), &[]);
    lab.cli(1, &["in-service", "vip"]);
    wait_for(Duration::from_secs(10), "the VIP on node 1", || {
        lab.where_is(VIP) == [1]
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    // The client talks to it (a TCP connection, refused: no one listens):
    // its neighbour table says node 1.
    lab.client_contacts(VIP);
    lab.client_entry_on(VIP, "n1");
    // The kernel keeps a neighbour entry a second before another address
    // may replace it (locktime): let it pass, then move the VIP.
    std::thread::sleep(Duration::from_millis(1_100));
    lab.cli(1, &["switchover", "vip", "--to", "2"]);
    wait_for(Duration::from_secs(10), "the VIP on node 2", || {
        lab.where_is(VIP) == [2]
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    // Without sending anything, the client learnt from the gratuitous ARP.
    lab.client_entry_on(VIP, "n2");
    // A handover (node 1 said it removed the address) skips the conflict
    // probe; the first start probed.
    let log = |n: u16| std::fs::read_to_string(lab.path(&format!("n{n}.log"))).unwrap();
    let handover = "a handover: every other node said it is stopped, so no conflict probe";
    assert!(log(2).contains(handover), "{}", log(2));
    assert!(
        log(1).contains("restore vip: added") && !log(1).contains(handover),
        "{}",
        log(1)
    );
    // Where it is cannot change while it is in service: the next remove
    // would look elsewhere and leave it behind.
    let error = lab.cli_error(
        1,
        &[
            "ins",
            "setprop",
            "vip",
            "address",
            "10.79.0.101/24",
            "--node",
            "2",
        ],
    );
    assert!(
        error.contains("cannot change while it is in service"),
        "{error}"
    );
    // Out of service: nothing left.
    lab.cli(2, &["out-of-service", "vip"]);
    wait_for(Duration::from_secs(10), "the VIP nowhere", || {
        lab.where_is(VIP).is_empty()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    lab.never_both(VIP);
    assert!(
        !lab.held(1, VIP).is_empty() && !lab.held(2, VIP).is_empty(),
        "{}",
        lab.logs()
    );
}

#[test]
fn a_vip_deleted_by_hand_is_added_again_and_a_dead_link_moves_it() {
    let Some(lab) = lab() else {
        return;
    };
    // Node 1's copy labelled, as `ip addr add ... label` would.
    let label = format!("label={}:v", lab.dev("n1"));
    lab.vip_on(1, "vip", &format!("{VIP}/24"), &[&label]);
    lab.vip_on(2, "vip", &format!("{VIP}/24"), &[]);
    lab.cli(
        1,
        &[
            "eqv",
            "create",
            "--tag",
            "vip",
            "--other-node",
            "2",
            "--other-tag",
            "vip",
        ],
    );
    lab.cli(1, &["in-service", "vip"]);
    wait_for(Duration::from_secs(10), "the VIP on node 1", || {
        lab.where_is(VIP) == [1]
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let dev = lab.dev("n1");
    let line = lab.addr_line("n1", VIP);
    assert!(line.contains(&format!("{dev}:v")), "labelled: {line}");
    must_in(
        &lab.ns("n1"),
        &["ip", "addr", "del", &format!("{VIP}/24"), "dev", &dev],
    );
    wait_for(
        Duration::from_secs(10),
        "the VIP added again on node 1",
        || lab.where_is(VIP) == [1],
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    // Node 1's link to the bridge down: it still sees node 2 over their own
    // link, and the VIP moves there.
    must_in(&lab.ns("n1"), &["ip", "link", "set", &dev, "down"]);
    wait_for(Duration::from_secs(15), "the VIP on node 2", || {
        lab.where_is(VIP) == [2]
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    assert!(lab.sees_up(2, 1), "node 1 stays up over the other path");
    lab.never_both(VIP);
}

/// Link monitoring: with node 1's checks an hour apart, only the kernel's
/// events (netlink) can tell its daemon that the address was deleted or
/// that the carrier went at the far end of its link (the bridge's end set
/// down: the node's own interface stays up, without carrier). Each is
/// acted on: the address added again, then the VIP moved to node 2.
#[test]
fn with_checks_an_hour_apart_a_deleted_address_and_a_far_end_carrier_loss_are_acted_on_at_once() {
    let Some(lab) = lab() else {
        return;
    };
    lab.vip_on(1, "vip", &format!("{VIP}/24"), &["quick_check_interval=1h"]);
    lab.vip_on(2, "vip", &format!("{VIP}/24"), &[]);
    lab.cli(
        1,
        &[
            "eqv",
            "create",
            "--tag",
            "vip",
            "--other-node",
            "2",
            "--other-tag",
            "vip",
        ],
    );
    lab.cli(1, &["in-service", "vip"]);
    wait_for(Duration::from_secs(10), "the VIP on node 1", || {
        lab.where_is(VIP) == [1]
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let dev = lab.dev("n1");
    let deleted = std::time::Instant::now();
    must_in(
        &lab.ns("n1"),
        &["ip", "addr", "del", &format!("{VIP}/24"), "dev", &dev],
    );
    wait_for(
        Duration::from_secs(20),
        "the VIP added again on node 1",
        || lab.holds("n1", VIP),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let readded = deleted.elapsed();
    let log = lab.logs();
    assert!(
        log.contains("address removed: checking vip now"),
        "the event, not the interval, did it:\n{log}"
    );
    // The far end of node 1's link to the bridge goes down: node 1's
    // interface loses its carrier but stays up, and node 1 still sees
    // node 2 over their own link.
    let cut = std::time::Instant::now();
    must_in(
        &lab.ns("b"),
        &["ip", "link", "set", &format!("{dev}h"), "down"],
    );
    wait_for(Duration::from_secs(20), "the VIP on node 2", || {
        lab.where_is(VIP) == [2]
    })
    .unwrap_or_else(|e| {
        let link = Command::new("ip")
            .args(["-n", &lab.ns("n1"), "link", "show", "dev", &dev])
            .output()
            .unwrap();
        panic!(
            "{e}\n{}\n{}",
            String::from_utf8_lossy(&link.stdout),
            lab.logs()
        )
    });
    let moved = cut.elapsed();
    assert!(lab.sees_up(2, 1), "node 1 stays up over the other path");
    let log = lab.logs();
    // Now, or (when the cut came while the recovery still ran) once it
    // ended.
    assert!(
        log.contains("link changed: checking vip"),
        "the event, not the interval, did it:\n{log}"
    );
    eprintln!(
        "link monitor (checks 1 h apart, debug build): the deleted address was back after {readded:?}; the far end's carrier lost, the VIP on node 2 after {moved:?}"
    );
    lab.never_both(VIP);
}

/// Two VIPs of a subnet the node has no address of its own in: the first
/// added is the kernel's primary of that subnet, the second its secondary,
/// and deleting a primary deletes its secondaries unless the kernel is told
/// to promote one. Taking the first out of service leaves the second.
#[test]
fn removing_a_primary_address_keeps_the_other_vips_of_its_subnet() {
    let Some(lab) = lab() else {
        return;
    };
    let (a, b) = ("10.81.0.100", "10.81.0.101");
    let sysctl = format!(
        "/proc/sys/net/ipv4/conf/{}/promote_secondaries",
        lab.dev("n1")
    );
    must_in(&lab.ns("n1"), &["sh", "-c", &format!("echo 0 > {sysctl}")]);
    lab.vip_on(1, "va", &format!("{a}/24"), &[]);
    lab.vip_on(1, "vb", &format!("{b}/24"), &[]);
    for tag in ["va", "vb"] {
        lab.cli(1, &["in-service", tag]);
    }
    wait_for(Duration::from_secs(10), "both VIPs on node 1", || {
        lab.holds("n1", a) && lab.holds("n1", b)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let line = lab.addr_line("n1", b);
    assert!(line.contains("secondary"), "{b} is a secondary: {line}");
    lab.cli(1, &["out-of-service", "va"]);
    wait_for(Duration::from_secs(10), "the first VIP gone", || {
        !lab.holds("n1", a)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    assert!(lab.holds("n1", b), "{b} kept:\n{}", lab.logs());
    let log = lab.logs();
    assert!(
        log.contains("promote_secondaries = 1 so that the other addresses of its subnet stay"),
        "{log}"
    );
    // The kernel never dropped it, even for a moment.
    let gone = std::fs::read_to_string(lab.path("monitor1")).unwrap();
    assert!(
        !gone
            .lines()
            .any(|l| l.contains("Deleted") && l.contains(&format!(" {b}/"))),
        "{gone}"
    );
}

#[test]
fn an_address_another_host_answers_for_is_not_taken_v4_or_v6_and_ipv6_needs_no_dad() {
    let Some(lab) = lab() else {
        return;
    };
    // The client already holds the address: the restore refuses it.
    let client = lab.dev("c");
    must_in(
        &lab.ns("c"),
        &["ip", "addr", "add", &format!("{VIP}/24"), "dev", &client],
    );
    lab.vip("vip", &format!("{VIP}/24"), &[]);
    let error = lab.cli_error(1, &["in-service", "vip"]);
    assert!(
        error.contains("answered for by") && error.contains(&lab.mac("c")),
        "{error}\n{}",
        lab.logs()
    );
    assert!(lab.where_is(VIP).is_empty(), "{}", lab.logs());
    // The address already on node 1 with another prefix (by hand, as a
    // node's own address would be): not taken for this one, and left alone
    // by the remove that follows the failed restore.
    let n1dev = lab.dev("n1");
    must_in(
        &lab.ns("n1"),
        &["ip", "addr", "add", "10.79.0.101/16", "dev", &n1dev],
    );
    lab.vip_on(1, "other", "10.79.0.101/24", &[]);
    let error = lab.cli_error(1, &["in-service", "other"]);
    assert!(error.contains("with prefix /16, not /24"), "{error}");
    assert!(lab.holds("n1", "10.79.0.101"), "{}", lab.logs());
    // The same for IPv6: the client answers the neighbour solicitation.
    must_in(
        &lab.ns("c"),
        &[
            "ip",
            "addr",
            "add",
            "2001:db8:79::200/64",
            "dev",
            &client,
            "nodad",
        ],
    );
    lab.vip("taken6", "2001:db8:79::200/64", &[]);
    let error = lab.cli_error(1, &["in-service", "taken6"]);
    assert!(error.contains("answered for by"), "{error}\n{}", lab.logs());
    assert!(!lab.holds("n1", "2001:db8:79::200"), "{}", lab.logs());
    // IPv6, in service at once (no tentative period); the client learns
    // where it moved from the unsolicited advertisement; then removed.
    lab.vip("vip6", &format!("{VIP6}/64"), &[]);
    lab.cli(1, &["in-service", "vip6"]);
    assert!(lab.holds("n1", VIP6), "{}", lab.logs());
    let line = lab.addr_line("n1", VIP6);
    assert!(!line.contains("tentative"), "{line}");
    lab.client_contacts(VIP6);
    lab.client_entry_on(VIP6, "n1");
    let entry = |lab: &Lab| {
        let out = Command::new("ip")
            .args(["-n", &lab.ns("c"), "-6", "neigh", "show", VIP6])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(!entry(&lab).contains("router"), "{}", entry(&lab));
    // Node 2 routes IPv6 on that link: its advertisement says so (RFC
    // 4861's router flag), or hosts would drop it from their default
    // routers.
    must_in(
        &lab.ns("n2"),
        &[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{}.forwarding=1", lab.dev("n2")),
        ],
    );
    lab.cli(1, &["switchover", "vip6", "--to", "2"]);
    assert!(lab.holds("n2", VIP6), "{}", lab.logs());
    lab.client_entry_on(VIP6, "n2");
    wait_for(
        Duration::from_secs(2),
        "the client's entry a router",
        || entry(&lab).contains("router"),
    )
    .unwrap_or_else(|e| panic!("{e}: {}", entry(&lab)));
    lab.cli(2, &["out-of-service", "vip6"]);
    assert!(!lab.holds("n2", VIP6), "{}", lab.logs());
    lab.never_both(VIP6);
}

#[test]
fn bad_vip_properties_are_refused_when_the_resource_is_made() {
    let Some(lab) = lab() else {
        return;
    };
    for (props, expected) in [
        (
            &["address=10.79.0.300/24", "interface=eth0"][..],
            "is not an IPv4 or IPv6 address",
        ),
        (&["address=10.79.0.100"][..], "no prefix length"),
        (
            &["address=10.79.0.100/24", "interface=eth0", "colour=red"][..],
            "no property `colour`",
        ),
    ] {
        let mut args = vec![
            "ins",
            "create",
            "--node",
            "1",
            "--priority",
            "1",
            "--tag",
            "bad",
            "--id",
            "bad",
            "--app",
            "ip",
            "--type",
            "vip",
        ];
        for prop in props {
            args.extend(["--prop", prop]);
        }
        let error = lab.cli_error(1, &args);
        assert!(error.contains(expected), "{props:?}: {error}");
    }
}

/// The gateway check: the gateway (the client's namespace) stops answering
/// node 1's ARP (arptables there drops its replies to node 1; node 1 still
/// reaches node 2), node 1's check fails, and the address moves to node 2,
/// which reaches it.
#[test]
fn a_node_whose_gateway_stops_answering_gives_the_vip_to_one_that_reaches_it() {
    let Some(lab) = lab() else {
        return;
    };
    if !run(&["sh", "-c", "command -v arptables"]) {
        assert!(
            std::env::var_os("CI").is_none(),
            "the gateway test must run in CI: arptables is not installed"
        );
        eprintln!("SKIPPED: the gateway test: arptables is not installed");
        return;
    }
    // The client's address stands in for the gateway.
    let gateway = format!("{}.50", lab.net());
    let props = [
        format!("gateway={gateway}"),
        "quick_check_interval=500ms".to_string(),
    ];
    let props: Vec<&str> = props.iter().map(String::as_str).collect();
    lab.vip_on(1, "vip", &format!("{VIP}/24"), &props);
    lab.vip_on(2, "vip", &format!("{VIP}/24"), &props);
    lab.cli(
        1,
        &[
            "eqv",
            "create",
            "--tag",
            "vip",
            "--other-node",
            "2",
            "--other-tag",
            "vip",
        ],
    );
    lab.cli(1, &["in-service", "vip"]);
    wait_for(Duration::from_secs(10), "the VIP on node 1", || {
        lab.where_is(VIP) == [1]
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let log = |n: u16| std::fs::read_to_string(lab.path(&format!("n{n}.log"))).unwrap();
    // Three checks (every 500 ms) find the gateway answering: it stays.
    let until = std::time::Instant::now() + Duration::from_millis(1_500);
    while std::time::Instant::now() < until {
        assert_eq!(lab.where_is(VIP), [1], "{}", lab.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The gateway's kernel stops answering node 1 (its replies to node 1's
    // hardware address dropped; a probe from 0.0.0.0 is answered to it).
    let out = Command::new("ip")
        .args([
            "-n",
            &lab.ns("n1"),
            "-o",
            "link",
            "show",
            "dev",
            &lab.dev("n1"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no hardware address in {text}"))
        .to_string();
    must_in(
        &lab.ns("c"),
        &[
            "arptables",
            "-A",
            "OUTPUT",
            "--destination-mac",
            &mac,
            "-j",
            "DROP",
        ],
    );
    wait_for(Duration::from_secs(15), "the VIP on node 2", || {
        lab.where_is(VIP) == [2]
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    assert!(
        log(1).contains(&format!("gateway {gateway} did not answer ARP")),
        "{}",
        log(1)
    );
    assert!(lab.sees_up(2, 1), "node 1 stays up");
    // Node 2 reaches the gateway: the address stays there.
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < until {
        assert_eq!(lab.where_is(VIP), [2], "{}", lab.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    lab.never_both(VIP);
}
