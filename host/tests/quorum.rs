//! Quorum and leases on real daemons (`[quorum] enabled = true`): a node
//! cut off from the majority stops its hierarchy, the majority takes it
//! over only once that node's lease has ended, and at no sampled instant
//! (every 2 ms) does the application run on two nodes; the cut-off node
//! refuses configuration changes and says so in `status`; a heal leaves
//! the hierarchy where it is. Two nodes and a `heartline witness` process:
//! a cut between the nodes leaves the hierarchy on the witness's side
//! only; without the witness a lone survivor starts nothing. A node killed
//! with its application is taken over once its lease ends, also in turn
//! with the fast heartbeat profile. A node whose `[quorum]` section gives
//! other expected votes refuses to start and says why.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

mod common;

use std::time::{Duration, Instant};

use common::{Site, WEB, hierarchy, running_on};
use heartline::demo::local_cluster::{listen_addr, wait_for};

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
    let mut site = Site::start(1);
    let path = site.cluster.config_path(1);
    site.cluster
        .add_config("\n[quorum]\nenabled = true\nlease = \"300ms\"\n")
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

#[test]
fn a_node_whose_expected_votes_disagree_refuses_to_start() {
    let mut cluster =
        heartline::demo::local_cluster::LocalCluster::new(std::path::Path::new(common::BIN), 3, 1)
            .unwrap();
    cluster.add_config(QUORUM).unwrap();
    cluster.add_config_for(3, "expected_votes = 5\n").unwrap();
    let site = Site::from_cluster(cluster);
    let refused = || {
        site.report(3)
            .and_then(|r| r.quorum)
            .and_then(|q| q.refused)
    };
    wait_for(
        Duration::from_secs(10),
        "quorum on nodes 1 and 2, node 3 refused",
        || {
            quorate(&site, 1) == Some(true)
                && quorate(&site, 2) == Some(true)
                && refused().is_some()
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    let (by, theirs) = refused().unwrap();
    assert!([1, 2].contains(&by) && theirs == 3, "{by} {theirs}");
    assert_eq!(quorate(&site, 3), Some(false));
    let status = site.ok(3, &["status"]);
    assert!(
        status.contains("REFUSED TO START") && status.contains("this node's configuration 5"),
        "{status}"
    );
    let log = std::fs::read_to_string(site.cluster.log_path(3)).unwrap_or_default();
    assert!(log.contains("REFUSED TO START"), "{log}");
    let log = std::fs::read_to_string(site.cluster.log_path(1)).unwrap_or_default();
    assert!(
        log.contains("charlie (3) expects 5 votes, this node 3"),
        "{log}"
    );
}

/// A `heartline witness` process for a local cluster, killed on drop.
struct WitnessProcess {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl WitnessProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const WITNESS_ID: u16 = 100;

/// Two daemons with quorum and a witness (id 100) on loopback: each node
/// has a TCP path of its own to the witness.
fn witnessed_pair() -> (Site, WitnessProcess) {
    let mut cluster =
        heartline::demo::local_cluster::LocalCluster::new(std::path::Path::new(common::BIN), 2, 1)
            .unwrap();
    cluster.add_config(QUORUM).unwrap();
    let dir = cluster.dir().to_path_buf();
    let mut nodes_text = String::new();
    for node in 1..=2u16 {
        let (witness_end, node_end) =
            (listen_addr().unwrap().port(), listen_addr().unwrap().port());
        cluster
            .add_config_for(
                node,
                &format!(
                    "\n[[peers]]\nid = {WITNESS_ID}\nname = \"witness\"\nkind = \"witness\"\n  [[peers.paths]]\n  kind = \"tcp\"\n  local = \"127.0.0.1:{node_end}\"\n  remote = \"127.0.0.1:{witness_end}\"\n"
                ),
            )
            .unwrap();
        nodes_text.push_str(&format!(
            "  [[clusters.nodes]]\n  id = {node}\n  local = \"127.0.0.1:{witness_end}\"\n  remote = \"127.0.0.1:{node_end}\"\n"
        ));
    }
    let witness_config = dir.join("witness.toml");
    std::fs::write(
        &witness_config,
        format!(
            "[witness]\nid = {WITNESS_ID}\nname = \"witness\"\nstate_dir = \"witness.state\"\n\n[[clusters]]\nname = \"local\"\nid = 42\nkey_file = \"cluster.key\"\nlease = \"2s\"\n{nodes_text}"
        ),
    )
    .unwrap();
    let log = dir.join("witness.log");
    let child = std::process::Command::new(common::BIN)
        .args(["witness", "--config"])
        .arg(&witness_config)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let witness = WitnessProcess { child, log };
    let site = Site::from_cluster(cluster);
    (site, witness)
}

#[test]
fn two_nodes_and_a_witness_split_run_it_on_one_side_and_never_both() {
    let (site, witness) = witnessed_pair();
    let nodes = [1, 2];
    let apps = hierarchy(&site, &nodes, None);
    wait_for(
        Duration::from_secs(15),
        "quorum on both nodes, the witness's vote counted",
        || {
            nodes.iter().all(|&n| {
                site.report(n)
                    .and_then(|r| r.quorum)
                    .is_some_and(|q| q.quorate && q.witness == Some(true))
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", site.logs(), witness.log()));
    let status = site.ok(2, &["status"]);
    assert!(status.contains("3 of 3 expected votes"), "{status}");
    // Node 2 runs it; the split goes to node 1 (lowest id), which takes it
    // over once node 2's lease has ended; node 2 stops it first.
    site.ok(1, &["switchover", WEB, "--to", "2"]);
    wait_for(Duration::from_secs(10), "web on node 2", || {
        running_on(&apps, &nodes) == [2]
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    let link = site.cluster.link(1, 2, 0).unwrap();
    link.relay.block();
    let cut = Instant::now();
    let mut moved = None;
    while Instant::now() < cut + Duration::from_secs(20) {
        let running = running_on(&apps, &nodes);
        assert!(
            running.len() <= 1,
            "web on {running:?} at once {:?} after the cut\n{}",
            cut.elapsed(),
            site.logs()
        );
        if running == [1] {
            moved = Some(cut.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let moved = moved.unwrap_or_else(|| panic!("never moved\n{}\n{}", site.logs(), witness.log()));
    eprintln!("witness: after the cut, web ran on node 1 (the witness's side) {moved:?} later");
    assert_eq!(quorate(&site, 2), Some(false));
    // The partition lasts: node 1 keeps the witness's vote and web.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(
            running_on(&apps, &nodes),
            [1],
            "web left node 1 in a lasting partition\n{}\n{}",
            site.logs(),
            witness.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(quorate(&site, 1), Some(true));
    // Heal: it stays on node 1.
    link.relay.restore();
    wait_for(Duration::from_secs(10), "both quorate again", || {
        nodes.iter().all(|&n| quorate(&site, n) == Some(true))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    assert_eq!(running_on(&apps, &nodes), [1]);

    // The witness dies, then node 1 with its application: node 2 alone
    // holds 1 of 3 votes and must not start it.
    drop(witness);
    std::thread::sleep(Duration::from_millis(100));
    site.cluster.signal(1, "KILL").unwrap();
    apps[0].kill();
    wait_for(Duration::from_secs(5), "node 1's application gone", || {
        !apps[0].running()
    })
    .unwrap();
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        assert!(running_on(&apps, &nodes).is_empty(), "{}", site.logs());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(quorate(&site, 2), Some(false));
}

#[test]
fn a_node_killed_with_its_application_is_taken_over_after_its_lease() {
    let mut site = Site::start_with(3, QUORUM);
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
    site.cluster.kill(1);
    let killed = Instant::now();
    apps[0].kill();
    wait_for(Duration::from_secs(15), "web on node 2", || {
        running_on(&apps, &nodes) == [2]
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    eprintln!(
        "quorum: node 1 killed with web, node 2 ran it {:?} later (lease 2 s)",
        killed.elapsed()
    );
}

#[test]
fn fast_profile_kills_in_turn_are_each_taken_over() {
    let mut site = Site::start_with(
        3,
        "\n[timing]\ninterval = \"20ms\"\nmisses = 5\n\n[quorum]\nenabled = true\nstop_bound = \"500ms\"\n",
    );
    let nodes = [1, 2, 3];
    let apps = hierarchy(&site, &nodes, None);
    wait_for(Duration::from_secs(10), "quorum on every node", || {
        nodes.iter().all(|&n| quorate(&site, n) == Some(true))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    site.ok(1, &["in-service", WEB]);
    let mut owner = 1u16;
    for _ in 0..3 {
        wait_for(Duration::from_secs(10), "web on its owner", || {
            running_on(&apps, &nodes) == [owner]
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
        site.cluster.kill(owner);
        let killed = Instant::now();
        apps[usize::from(owner - 1)].kill();
        wait_for(Duration::from_secs(15), "web elsewhere", || {
            let running = running_on(&apps, &nodes);
            running.len() == 1 && running[0] != owner
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
        let next = running_on(&apps, &nodes)[0];
        eprintln!(
            "fast: node {owner} killed, node {next} ran it {:?} later",
            killed.elapsed()
        );
        site.cluster.start(owner).unwrap();
        wait_for(Duration::from_secs(10), "all up", || site.cluster.all_up()).unwrap();
        owner = next;
    }
}

/// Three quorate nodes configured with `quorum`, web on each; node 1's
/// watchdog device is a regular file (it records the feeds, NUL bytes, and
/// the magic close, `V`), returned with the site once every node holds
/// quorum.
fn watched_trio(
    quorum: &str,
) -> (
    Site,
    Vec<heartline::demo::sample_app::SampleApp>,
    std::path::PathBuf,
) {
    let mut cluster =
        heartline::demo::local_cluster::LocalCluster::new(std::path::Path::new(common::BIN), 3, 1)
            .unwrap();
    let device = cluster.dir().join("watchdog-1");
    std::fs::write(&device, b"").unwrap();
    cluster.add_config(quorum).unwrap();
    cluster
        .add_config_for(
            1,
            &format!(
                "watchdog = \"{}\"\nwatchdog_timeout = \"500ms\"\n",
                device.display()
            ),
        )
        .unwrap();
    let site = Site::from_cluster(cluster);
    let nodes = [1, 2, 3];
    let apps = hierarchy(&site, &nodes, None);
    wait_for(Duration::from_secs(10), "quorum on every node", || {
        nodes.iter().all(|&n| quorate(&site, n) == Some(true))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    (site, apps, device)
}

#[test]
fn the_watchdog_is_fed_while_the_hierarchy_runs_and_disarmed_once_it_stopped() {
    // A regular file stands in for /dev/watchdog: it records the feeds
    // (NUL bytes) and the magic close (`V`); a real device would reset the
    // machine if the feeds stopped while something ran.
    let (site, apps, device) = watched_trio(QUORUM);
    let nodes = [1, 2, 3];
    assert!(
        std::fs::read(&device).unwrap().is_empty(),
        "nothing runs: never armed"
    );
    site.ok(1, &["in-service", WEB]);
    wait_for(
        Duration::from_secs(10),
        "web on node 1, the watchdog fed",
        || running_on(&apps, &nodes) == [1] && std::fs::read(&device).unwrap().len() >= 3,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    // Cut off, node 1 stops web and disarms the watchdog.
    site.cluster.link(1, 2, 0).unwrap().relay.block();
    site.cluster.link(1, 3, 0).unwrap().relay.block();
    wait_for(Duration::from_secs(10), "the watchdog disarmed", || {
        std::fs::read(&device).unwrap().last() == Some(&b'V')
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    assert!(!apps[0].running(), "disarmed only once web stopped");
    let written = std::fs::read(&device).unwrap();
    assert!(
        written[..written.len() - 1].iter().all(|b| *b == 0),
        "{written:?}"
    );
    eprintln!("watchdog: {} feeds, then disarmed", written.len() - 1);
}

#[test]
fn freeze_keeps_what_runs_without_quorum_until_the_watchdog_would_reset_it() {
    // no_quorum = "freeze": node 1, cut off, keeps web running and starts
    // nothing; it feeds its watchdog only up to its lease's end and never
    // disarms it while web runs, so a real device resets the machine by
    // then (here a file records the feeds; the application runs on, which
    // is freeze's documented risk without a watchdog).
    let (site, apps, device) =
        watched_trio(&QUORUM.replace("enabled = true", "enabled = true\nno_quorum = \"freeze\""));
    let nodes = [1, 2, 3];
    site.ok(1, &["in-service", WEB]);
    wait_for(Duration::from_secs(10), "web on node 1, fed", || {
        running_on(&apps, &nodes) == [1] && std::fs::read(&device).unwrap().len() >= 3
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    site.cluster.link(1, 2, 0).unwrap().relay.block();
    site.cluster.link(1, 3, 0).unwrap().relay.block();
    let cut = Instant::now();
    wait_for(Duration::from_secs(10), "node 1 without quorum", || {
        quorate(&site, 1) == Some(false)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    assert!(apps[0].running(), "freeze keeps web running on node 1");
    let refused = site.refused(1, &["standby", "3"]);
    assert!(refused.contains("no quorum"), "{refused}");
    let log = std::fs::read_to_string(site.cluster.log_path(1)).unwrap_or_default();
    assert!(log.contains("no_quorum = freeze"), "{log}");
    // The majority starts web once node 1's lease ended; by then node 1
    // stopped feeding its watchdog.
    wait_for(Duration::from_secs(10), "web on node 2", || {
        apps[1].running()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    let fed = std::fs::read(&device).unwrap();
    let since = cut.elapsed();
    // Feeds would reset a real device 500 ms after the last: none came
    // for well over that.
    let quiet_until = Instant::now() + Duration::from_millis(1_200);
    while Instant::now() < quiet_until {
        assert_eq!(
            std::fs::read(&device).unwrap().len(),
            fed.len(),
            "node 1 fed its watchdog after its lease ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        fed.iter().all(|b| *b == 0),
        "never disarmed while web ran: {fed:?}"
    );
    eprintln!(
        "freeze: node 1 kept web without quorum, fed its watchdog {} times and stopped before node 2 started web {since:?} after the cut",
        fed.len()
    );
}
