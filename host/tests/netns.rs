//! Two daemons in network namespaces of their own, joined by two veth links
//! (two independent networks, as two NICs and two switches would be). The
//! tests create and remove their namespaces; without root, or without `ip`
//! and `iptables`, they say they were skipped.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use heartline::comm::report::StatusReport;
use heartline::control::client::ask_blocking;
use heartline::control::{Request, Response};
use heartline::demo::local_cluster::wait_for;

mod common;

use common::netns::{cannot_run, must, must_in, run};

const BIN: &str = env!("CARGO_BIN_EXE_heartline");

/// Two namespaces, two veth links, two daemons; all removed on drop.
struct Testbed {
    tag: String,
    dir: tempfile::TempDir,
    daemons: Vec<Child>,
}

impl Testbed {
    fn ns(&self, side: char) -> String {
        format!("hl{}{side}", self.tag)
    }

    fn dev(&self, side: char, link: u8) -> String {
        format!("hl{}{side}{link}", self.tag)
    }

    fn new(tag: &str) -> Testbed {
        let tag = format!("{}{}", std::process::id() % 100_000, tag);
        let dir = tempfile::tempdir().unwrap();
        let mut bed = Testbed {
            tag,
            dir,
            daemons: Vec::new(),
        };
        for side in ['a', 'b'] {
            must(&["ip", "netns", "add", &bed.ns(side)]);
            must_in(&bed.ns(side), &["ip", "link", "set", "lo", "up"]);
        }
        for link in 0..2u8 {
            let (a, b) = (bed.dev('a', link), bed.dev('b', link));
            must(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
            for (side, dev, host) in [('a', &a, 1), ('b', &b, 2)] {
                must(&["ip", "link", "set", dev, "netns", &bed.ns(side)]);
                let address = format!("10.77.{link}.{host}/24");
                must_in(&bed.ns(side), &["ip", "addr", "add", &address, "dev", dev]);
                must_in(&bed.ns(side), &["ip", "link", "set", dev, "up"]);
            }
        }
        let status = Command::new(BIN)
            .arg("keygen")
            .arg(bed.dir.path().join("cluster.key"))
            .status()
            .unwrap();
        assert!(status.success());
        for node in [1u16, 2] {
            let peer = 3 - node;
            let mut text = format!(
                "[cluster]\nname = \"netns\"\nid = 5\nkey_file = \"cluster.key\"\n[node]\nid = {node}\nname = \"n{node}\"\ncontrol_socket = \"n{node}.sock\"\nstate_dir = \"n{node}.state\"\n[[peers]]\nid = {peer}\n"
            );
            for link in 0..2 {
                text.push_str(&format!(
                    "  [[peers.paths]]\n  kind = \"tcp\"\n  local = \"10.77.{link}.{node}:7400\"\n  remote = \"10.77.{link}.{peer}:7400\"\n"
                ));
            }
            std::fs::write(bed.dir.path().join(format!("n{node}.toml")), text).unwrap();
        }
        for (node, side) in [(1u16, 'a'), (2, 'b')] {
            let log = std::fs::File::create(bed.dir.path().join(format!("n{node}.log"))).unwrap();
            let config = bed.dir.path().join(format!("n{node}.toml"));
            let child = Command::new("ip")
                .args(["netns", "exec", &bed.ns(side), BIN, "daemon", "--config"])
                .arg(config)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            bed.daemons.push(child);
        }
        bed
    }

    fn socket(&self, node: u16) -> PathBuf {
        self.dir.path().join(format!("n{node}.sock"))
    }

    fn status(&self, node: u16) -> Option<StatusReport> {
        match ask_blocking(&self.socket(node), Request::Status) {
            Ok(Response::Status(status)) => Some(status.comm),
            _ => None,
        }
    }

    /// (node state, path 0 state, path 1 state) of the peer as `node` sees it.
    fn view(&self, node: u16) -> (String, String, String) {
        let Some(status) = self.status(node) else {
            return Default::default();
        };
        let peer = &status.peers[0];
        (
            peer.state.clone(),
            peer.paths[0].state.clone(),
            peer.paths[1].state.clone(),
        )
    }

    fn link(&self, link: u8, up: bool) {
        must_in(
            &self.ns('a'),
            &[
                "ip",
                "link",
                "set",
                &self.dev('a', link),
                if up { "up" } else { "down" },
            ],
        );
    }

    fn log(&self, node: u16) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("n{node}.log"))).unwrap_or_default()
    }

    fn converge(&self) {
        let up = |s: &(String, String, String)| s.0 == "up" && s.1 == "up" && s.2 == "up";
        wait_for(
            Duration::from_secs(20),
            "both nodes up on both links",
            || up(&self.view(1)) && up(&self.view(2)),
        )
        .unwrap();
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for child in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
        // `ip netns exec` leaves the daemon running if only ip was killed.
        let _ = Command::new("pkill")
            .args(["-9", "-f", &self.dir.path().display().to_string()])
            .status();
        for side in ['a', 'b'] {
            run(&["ip", "netns", "del", &self.ns(side)]);
        }
    }
}

fn skip_unless_possible(test: &str) -> bool {
    if let Some(why) = cannot_run() {
        eprintln!("SKIPPED: {test}: {why}");
        return false;
    }
    true
}

#[test]
fn a_link_down_takes_its_path_down_and_both_take_the_node_down() {
    if !skip_unless_possible("network namespace link test") {
        return;
    }
    let bed = Testbed::new("l");
    bed.converge();

    bed.link(0, false);
    wait_for(Duration::from_secs(5), "path 0 down at both ends", || {
        bed.view(1).1 == "down" && bed.view(2).1 == "down"
    })
    .unwrap();
    assert_eq!(bed.view(1).0, "up", "one link down is not a node down");
    assert_eq!(bed.view(2).0, "up");

    bed.link(1, false);
    wait_for(Duration::from_secs(5), "the node down at both ends", || {
        bed.view(1).0 == "down" && bed.view(2).0 == "down"
    })
    .unwrap();

    bed.link(0, true);
    bed.link(1, true);
    bed.converge();
    assert!(bed.log(1).contains("node 2 down: every path silent"));
}

#[test]
fn twenty_percent_loss_on_one_link_causes_no_node_down_in_sixty_seconds() {
    if !skip_unless_possible("network namespace loss test") {
        return;
    }
    let bed = Testbed::new("p");
    bed.converge();
    for (side, dev) in [('a', bed.dev('a', 1)), ('b', bed.dev('b', 1))] {
        must_in(
            &bed.ns(side),
            &[
                "iptables",
                "-A",
                "INPUT",
                "-i",
                &dev,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                "0.2",
                "-j",
                "DROP",
            ],
        );
    }
    let started = Instant::now();
    let mut samples = 0;
    while started.elapsed() < Duration::from_secs(60) {
        assert_eq!(
            bed.view(1).0,
            "up",
            "node 2 seen down at {:?}",
            started.elapsed()
        );
        assert_eq!(
            bed.view(2).0,
            "up",
            "node 1 seen down at {:?}",
            started.elapsed()
        );
        samples += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(samples > 100);
    assert!(
        !bed.log(1).contains("down: every path silent"),
        "{}",
        bed.log(1)
    );
    assert!(
        !bed.log(2).contains("down: every path silent"),
        "{}",
        bed.log(2)
    );
}

/// Drops everything arriving on both links at both ends (`on`), or stops
/// doing so: a cut in the middle of both networks. Unlike a link set down,
/// the connections' sockets stay as they are, and the kernel retransmits
/// into the void with a growing backoff, as across a real outage.
fn cut_both_links(bed: &Testbed, on: bool) {
    for side in ['a', 'b'] {
        for link in 0..2 {
            must_in(
                &bed.ns(side),
                &[
                    "iptables",
                    if on { "-A" } else { "-D" },
                    "INPUT",
                    "-i",
                    &bed.dev(side, link),
                    "-j",
                    "DROP",
                ],
            );
        }
    }
}

#[test]
fn after_thirty_seconds_cut_off_the_nodes_rejoin_within_two_seconds() {
    if !skip_unless_possible("network namespace long outage test") {
        return;
    }
    let bed = Testbed::new("o");
    bed.converge();
    // Traffic in flight when the cut comes: the nodes keep heartbeating
    // into it for the whole outage.
    cut_both_links(&bed, true);
    wait_for(Duration::from_secs(5), "the node down at both ends", || {
        bed.view(1).0 == "down" && bed.view(2).0 == "down"
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(30));
    cut_both_links(&bed, false);
    let healed = Instant::now();
    wait_for(Duration::from_secs(10), "both nodes up again", || {
        bed.view(1).0 == "up" && bed.view(2).0 == "up"
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", bed.log(1), bed.log(2)));
    let rejoined = healed.elapsed();
    eprintln!("after 30 s cut off, the nodes rejoined in {rejoined:?}");
    assert!(
        rejoined < Duration::from_secs(2),
        "rejoined only after {rejoined:?}"
    );
}
