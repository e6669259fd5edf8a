//! Quorum and leases on real daemons (`[quorum] enabled = true`): a node
//! cut off from the majority stops its hierarchy, the majority takes it
//! over only once that node's lease has ended, and at no sampled instant
//! (every 2 ms) does the application run on two nodes; the cut-off node
//! refuses configuration changes and says so in `status`; a heal leaves
//! the hierarchy where it is.

mod common;

use std::time::{Duration, Instant};

use common::{Site, WEB, hierarchy, running_on};
use heartline::demo::local_cluster::wait_for;

/// A 2 s lease, stops bounded by 1 s: paths declare a peer down after
/// 0.5 s (100 ms × 5), so a cut-off node has stopped by 2 s, and the
/// majority starts after 2 s + margin (50 ms) − 0.5 s from noticing.
const QUORUM: &str = "\n[quorum]\nenabled = true\nlease = \"2s\"\nstop_bound = \"1s\"\n";

fn quorate(site: &Site, node: u16) -> Option<bool> {
    site.report(node).and_then(|r| r.quorum).map(|q| q.quorate)
}

#[test]
fn a_cut_off_node_stops_within_its_lease_and_the_majority_takes_over_after() {
    let site = Site::start_with(3, QUORUM);
    let nodes = [1, 2, 3];
    let apps = hierarchy(&site, &nodes, None);
    wait_for(Duration::from_secs(10), "quorum on every node", || {
        nodes.iter().all(|&n| quorate(&site, n) == Some(true))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    let status = site.ok(1, &["status"]);
    assert!(
        status.contains("quorum: yes, 3 of 3 expected votes"),
        "{status}"
    );
    site.ok(1, &["in-service", WEB]);
    wait_for(Duration::from_secs(10), "web on node 1", || {
        running_on(&apps, &nodes) == [1]
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));

    // Node 1 cut off from both others.
    let to_2 = site.cluster.link(1, 2, 0).unwrap();
    let to_3 = site.cluster.link(1, 3, 0).unwrap();
    to_2.relay.block();
    to_3.relay.block();
    let cut = Instant::now();
    let mut stopped = None;
    let mut started = None;
    let deadline = cut + Duration::from_secs(20);
    while started.is_none() && Instant::now() < deadline {
        let running = running_on(&apps, &nodes);
        assert!(
            running.len() <= 1,
            "web runs on {running:?} at once, {:?} after the cut\n{}",
            cut.elapsed(),
            site.logs()
        );
        if stopped.is_none() && !running.contains(&1) {
            stopped = Some(cut.elapsed());
        }
        if running == [2] {
            started = Some(cut.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (Some(stopped), Some(started)) = (stopped, started) else {
        panic!(
            "web stopped on node 1 after {stopped:?}, started on node 2 after {started:?}\n{}",
            site.logs()
        );
    };
    eprintln!(
        "quorum: node 1 cut off stopped web {stopped:?} after the cut; node 2 started it {started:?} after (lease 2 s)"
    );
    assert!(stopped < started, "stopped before the other started");

    // The cut-off node says so, and refuses changes; reads still work.
    assert_eq!(quorate(&site, 1), Some(false));
    let status = site.ok(1, &["status"]);
    assert!(
        status.contains("NO QUORUM: this node sees 1 of 3 expected votes"),
        "{status}"
    );
    let refused = site.refused(1, &["standby", "3"]);
    assert!(refused.contains("no quorum"), "{refused}");
    site.ok(1, &["ins", "list"]);
    let log = std::fs::read_to_string(site.cluster.log_path(1)).unwrap_or_default();
    assert!(log.contains("QUORUM LOST"), "{log}");

    // Heal: node 1 rejoins with nothing running; web stays on node 2.
    to_2.relay.restore();
    to_3.relay.restore();
    wait_for(Duration::from_secs(10), "quorum on node 1 again", || {
        quorate(&site, 1) == Some(true)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(running_on(&apps, &nodes), [2], "{}", site.logs());
        std::thread::sleep(Duration::from_millis(5));
    }
    let (ok, text) = site.verify(2);
    assert!(ok, "{text}");
}

#[test]
fn a_bad_quorum_section_is_refused_with_its_line() {
    let site = Site::start(1);
    let path = site.cluster.config_path(1);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{text}\n[quorum]\nenabled = true\nlease = \"300ms\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("quorum.lease") && stderr.contains("too short"),
        "{stderr}"
    );
}
