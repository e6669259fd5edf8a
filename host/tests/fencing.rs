//! Fencing on real daemons: the coordinator of the quorate partition runs
//! the lost node's `[[fence]]` devices, ClusterLabs fence agents reading
//! `key=value` lines on their standard input. A confirmed fence lets the
//! survivors take over long before the lost node's lease ends; an agent
//! that is missing, fails or hangs is reported, retried and escalated, and
//! never taken for a fence: the hierarchy waits for the lease. Against a
//! real BMC protocol: `fence_ipmilan` (Debian's fence-agents) powers off a
//! machine simulated by OpenIPMI's `ipmi_sim`, whose power-off kills the
//! lost node's application, and the takeover comes only after it.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Site, WEB, hierarchy, running_on};
use heartline::demo::local_cluster::wait_for;

/// A 6 s lease (stops bounded by 1 s), so that a takeover well before it
/// can only come from a fence; paths declare a peer down after 0.5 s.
const QUORUM: &str = "\n[quorum]\nenabled = true\nlease = \"6s\"\nstop_bound = \"1s\"\n\n[fencing]\nretry_delay = \"300ms\"\n";

fn quorate(site: &Site, node: u16) -> Option<bool> {
    site.report(node).and_then(|r| r.quorum).map(|q| q.quorate)
}

fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// Three quorate nodes running web on node 1, with `fence` sections.
fn site_with(fence: &str) -> (Site, Vec<heartline::demo::sample_app::SampleApp>) {
    let site = Site::start_with(3, &format!("{QUORUM}{fence}"));
    let nodes = [1, 2, 3];
    let apps = hierarchy(&site, &nodes, None);
    wait_for(Duration::from_secs(10), "quorum on every node", || {
        nodes.iter().all(|&n| quorate(&site, n) == Some(true))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    site.ok(1, &["in-service", WEB]);
    wait_for(Duration::from_secs(10), "web on node 1", || {
        running_on(&apps, &nodes) == [1]
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    (site, apps)
}

/// Samples where web runs every 2 ms until it runs on a node other than
/// 1: never on two at once. How long after `from` that was.
fn watch_takeover(
    site: &Site,
    apps: &[heartline::demo::sample_app::SampleApp],
    from: Instant,
    limit: Duration,
) -> Duration {
    let nodes = [1, 2, 3];
    loop {
        let running = running_on(apps, &nodes);
        assert!(
            running.len() <= 1,
            "web runs on {running:?} at once, {:?} after the loss\n{}",
            from.elapsed(),
            site.logs()
        );
        if running.len() == 1 && running[0] != 1 {
            return from.elapsed();
        }
        assert!(
            from.elapsed() < limit,
            "web not taken over within {limit:?}\n{}",
            site.logs()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_missing_failing_or_hanging_agent_is_never_a_fence_and_the_lease_decides() {
    let dir = tempfile::tempdir().unwrap();
    let failing = script(
        dir.path(),
        "fence_failing",
        "cat >/dev/null; echo 'Failed: Unable to obtain correct plug status or plug is not available' >&2; exit 1",
    );
    let hanging = script(dir.path(), "fence_hanging", "exec sleep 100000");
    let fence = format!(
        "\n[[fence]]\nname = \"missing-1\"\nnode = 1\nagent = \"fence_heartline_test_missing\"\n\n[[fence]]\nname = \"failing-1\"\nnode = 1\nlevel = 2\nagent = \"{failing}\"\n\n[[fence]]\nname = \"hanging-1\"\nnode = 1\nlevel = 3\nagent = \"{hanging}\"\ntimeout = \"500ms\"\n"
    );
    let (mut site, apps) = site_with(&fence);
    // Node 1's machine dies: its daemon and its application.
    site.cluster.kill(1);
    let lost = Instant::now();
    apps[0].kill();
    let took = watch_takeover(&site, &apps, lost, Duration::from_secs(20));
    eprintln!(
        "fencing: every device of node 1 failed; node 2 took web over {took:?} after the loss (lease 6 s)"
    );
    // Node 1 was last heard at best 0.5 s before it was declared down:
    // its lease ends 5.5 s after that at the earliest.
    assert!(
        took >= Duration::from_millis(5_400),
        "{took:?}\n{}",
        site.logs()
    );
    let log_of_2 = || std::fs::read_to_string(site.cluster.log_path(2)).unwrap_or_default();
    wait_for(
        Duration::from_secs(5),
        "node 2 to log the end of fencing",
        || log_of_2().contains("fencing node 1 given up"),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    let log = log_of_2();
    for expected in [
        "fencing node 1 FAILED: missing-1 (level 1, attempt 1 of 2): agent fence_heartline_test_missing not found",
        "escalating to level 2",
        "fencing node 1 FAILED: failing-1 (level 2, attempt 1 of 2)",
        "Unable to obtain correct plug status",
        "escalating to level 3",
        "fencing node 1 FAILED: hanging-1 (level 3, attempt 1 of 2)",
        "timed out",
        "every level failed, trying again from level 1",
        "fencing node 1 given up: its lease ended",
    ] {
        assert!(
            log.contains(expected),
            "no `{expected}` in node 2's log:\n{log}"
        );
    }
    assert!(!log.contains("FENCED"), "{log}");
}
