//! Three real daemons on loopback, two TCP paths between each pair, each
//! path through a relay the test can block: convergence, a blocked path, a
//! killed and restarted node, mailboxes across path cuts, and junk on the
//! wire.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use heartline::control::{Request, Response};
use heartline::demo::local_cluster::{LocalCluster, run_with_input};

const CONVERGE: Duration = Duration::from_secs(15);

fn cluster(nodes: u16, paths: usize) -> LocalCluster {
    let mut cluster =
        LocalCluster::new(Path::new(env!("CARGO_BIN_EXE_heartline")), nodes, paths).unwrap();
    cluster.start_all().unwrap();
    wait_for(CONVERGE, "every node up everywhere", || cluster.all_up());
    cluster
}

fn wait_for(limit: Duration, what: &str, check: impl FnMut() -> bool) {
    heartline::demo::local_cluster::wait_for(limit, what, check).unwrap();
}

/// The `heartline` CLI pointed at node `node`'s daemon.
fn cli(cluster: &LocalCluster, node: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_heartline"));
    command.arg("--socket").arg(cluster.socket(node));
    command
}

#[test]
fn status_converges_and_a_blocked_path_takes_only_that_path_down() {
    let cluster = cluster(3, 2);
    let table = cli(&cluster, 1).arg("status").output().unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains("NODE") && table.contains("bravo") && table.contains("path 1"),
        "{table}"
    );

    cluster.link(1, 2, 0).unwrap().relay.block();
    wait_for(
        Duration::from_secs(5),
        "path 0 between 1 and 2 down at both ends",
        || cluster.path_state(1, 2, 0) == "down" && cluster.path_state(2, 1, 0) == "down",
    );
    assert_eq!(
        cluster.view(1, 2).0,
        "up",
        "one path lost is not a node lost"
    );
    assert_eq!(cluster.view(2, 1).0, "up");
    assert!(
        cli(&cluster, 1)
            .args(["can-talk", "--node", "2"])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        !cluster.log(1).contains("bravo (2) down"),
        "no NodeDown was ever logged"
    );

    cluster.link(1, 2, 0).unwrap().relay.restore();
    wait_for(Duration::from_secs(5), "path 0 back up", || {
        cluster.path_state(1, 2, 0) == "up"
    });
}

#[test]
fn a_killed_node_is_declared_down_and_its_restart_is_seen() {
    let mut cluster = cluster(3, 2);
    let (_, before) = cluster.view(1, 3);

    cluster.kill(3);
    wait_for(
        Duration::from_secs(5),
        "nodes 1 and 2 to declare node 3 down",
        || cluster.view(1, 3).0 == "down" && cluster.view(2, 3).0 == "down",
    );
    let can_talk = cli(&cluster, 1)
        .args(["can-talk", "--node", "3"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(can_talk.code(), Some(1));
    assert!(
        cluster
            .log(1)
            .contains("charlie (3) down: every path silent")
    );

    cluster.start(3).unwrap();
    wait_for(CONVERGE, "node 3 up again with a new incarnation", || {
        let (state, incarnation) = cluster.view(1, 3);
        state == "up" && incarnation > before
    });
    wait_for(Duration::from_secs(5), "the restart logged", || {
        cluster.log(1).contains("charlie (3) restarted")
    });
}

#[test]
fn ten_thousand_messages_arrive_once_and_in_order_while_paths_are_cut() {
    const COUNT: u32 = 10_000;
    let cluster = Arc::new(cluster(2, 2));

    let done = Arc::new(AtomicBool::new(false));
    let cutter = {
        let (cluster, done) = (cluster.clone(), done.clone());
        thread::spawn(move || {
            let mut index = 0;
            let mut cuts = 0;
            while !done.load(Ordering::SeqCst) {
                let relay = &cluster.link(1, 2, index).unwrap().relay;
                relay.block();
                thread::sleep(Duration::from_millis(700));
                relay.restore();
                thread::sleep(Duration::from_millis(700));
                index = 1 - index;
                cuts += 1;
            }
            cuts
        })
    };
    let receiver = {
        let cluster = cluster.clone();
        thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < COUNT as usize {
                let request = Request::Receive {
                    mailbox: 9,
                    timeout_ms: 30_000,
                };
                match cluster.ask(2, request).unwrap() {
                    Response::Message { payload, .. } => {
                        got.push(u32::from_le_bytes(payload.try_into().unwrap()));
                    }
                    other => panic!("receive failed: {other:?}"),
                }
            }
            got
        })
    };
    for i in 0..COUNT {
        let payload = i.to_le_bytes().to_vec();
        let answer = cluster
            .ask(
                1,
                Request::Send {
                    node: 2,
                    mailbox: 9,
                    payload,
                    timeout_ms: 30_000,
                },
            )
            .unwrap();
        assert_eq!(answer, Response::Delivered, "message {i}");
    }
    done.store(true, Ordering::SeqCst);
    let got = receiver.join().unwrap();
    let cuts = cutter.join().unwrap();
    assert!(cuts >= 2, "paths were cut {cuts} times during the run");
    assert_eq!(
        got,
        (0..COUNT).collect::<Vec<_>>(),
        "exactly once, in order"
    );
}

#[test]
fn junk_and_forged_frames_are_counted_and_the_daemon_keeps_serving() {
    let cluster = cluster(2, 1);
    let port = cluster.link(1, 2, 0).unwrap().listen;

    // Ten megabytes of junk, with and without delimiters.
    let mut junk = TcpStream::connect(port).unwrap();
    let mut block = vec![0u8; 1 << 20];
    for (i, byte) in block.iter_mut().enumerate() {
        *byte = (i * 7919 % 251) as u8;
    }
    for _ in 0..10 {
        junk.write_all(&block).unwrap();
    }
    // A frame made with another key, and one of another cluster.
    let mut forged = TcpStream::connect(port).unwrap();
    // LocalCluster uses cluster id 42.
    for (cluster_id, secret) in [
        (42, b"not the cluster's secret at all!"),
        (7, b"another cluster's secret, 32 by."),
    ] {
        let key = heartline_core::wire::Key::new(secret).unwrap();
        let header = heartline_core::wire::Header {
            kind: heartline_core::wire::Kind::Heartbeat,
            path: heartline_core::PathId(0),
            cluster: heartline_core::ClusterId(cluster_id),
            src: heartline_core::NodeId(1),
            dst: heartline_core::NodeId(2),
            src_incarnation: heartline_core::Incarnation(u64::MAX),
            dst_incarnation: heartline_core::Incarnation(0),
            seq: 1,
        };
        let message =
            heartline_core::wire::Message::Heartbeat(heartline_core::wire::Heartbeat::default());
        let mut buf = [0u8; heartline_core::wire::MAX_ENCODED_LEN];
        let n = heartline_core::wire::encode(&header, &message, &key, &mut buf).unwrap();
        forged.write_all(&buf[..n]).unwrap();
    }

    // A replay of the real peer's first frames, on a connection of its own.
    let mut replay = TcpStream::connect(port).unwrap();
    replay
        .write_all(&cluster.link(1, 2, 0).unwrap().relay.recorded())
        .unwrap();

    wait_for(
        Duration::from_secs(10),
        "the rejections to be counted",
        || {
            let status = cluster.status(2).unwrap();
            let counted = |reason: &str| {
                status.peers[0].paths[0]
                    .errors
                    .iter()
                    .any(|(name, _)| name == reason)
            };
            counted("bad_tag")
                && counted("wrong_cluster")
                && counted("replayed")
                && (counted("framing") || counted("bad_crc"))
        },
    );
    assert_eq!(cluster.view(2, 1).0, "up", "the real peer stays up");
    assert_eq!(cluster.view(1, 2).0, "up");
    let sent = run_with_input(
        cli(&cluster, 1).args(["snd-msg", "--node", "2", "--mailbox", "3"]),
        b"still serving",
    )
    .unwrap();
    assert!(sent.success());
    let received = cli(&cluster, 2)
        .args(["rcv-msg", "--mailbox", "3", "--timeout", "5s"])
        .output()
        .unwrap();
    assert_eq!(received.stdout, b"still serving");
}

#[test]
fn a_full_mailbox_refuses_senders_clearly_and_loses_nothing() {
    let cluster = cluster(2, 1);
    let send = |i: u32| {
        let request = Request::Send {
            node: 2,
            mailbox: 6,
            payload: i.to_le_bytes().to_vec(),
            timeout_ms: 10_000,
        };
        cluster.ask(1, request).unwrap()
    };
    let mut accepted = 0u32;
    let refusal = loop {
        assert!(accepted < 1_000, "the mailbox never filled");
        match send(accepted) {
            Response::Delivered => accepted += 1,
            Response::Error { message, .. } => break message,
            other => panic!("{other:?}"),
        }
    };
    assert!(
        refusal.contains("mailbox 6 on bravo (2) is full"),
        "{refusal}"
    );
    assert!(
        accepted >= heartline::comm::MAILBOX_DEPTH as u32,
        "only {accepted} accepted"
    );

    let receive = || match cluster
        .ask(
            2,
            Request::Receive {
                mailbox: 6,
                timeout_ms: 5_000,
            },
        )
        .unwrap()
    {
        Response::Message { payload, .. } => u32::from_le_bytes(payload.try_into().unwrap()),
        other => panic!("receive failed: {other:?}"),
    };
    for expected in 0..accepted {
        assert_eq!(receive(), expected);
    }
    wait_for(
        Duration::from_secs(5),
        "the sender to hear the mailbox has room",
        || matches!(send(accepted), Response::Delivered),
    );
    assert_eq!(receive(), accepted);
}

/// Writes node `node`'s incarnation record, as an earlier run would have.
fn record_incarnation(cluster: &LocalCluster, node: u16, value: u64) {
    let dir = cluster
        .dir()
        .join(format!("{}.state", LocalCluster::name(node)));
    std::fs::create_dir_all(&dir).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    std::fs::write(dir.join("incarnation"), format!("{value}\n")).unwrap();
}

/// Starts node `node` and waits until node 1 sees it up at `incarnation`:
/// how long that took after its control socket was ready.
fn start_and_see(cluster: &mut LocalCluster, node: u16, incarnation: u64) -> Duration {
    cluster.start(node).unwrap();
    let started = std::time::Instant::now();
    wait_for(
        CONVERGE,
        &format!("node 1 to see node {node} up at incarnation {incarnation}"),
        || cluster.view(1, node) == ("up".to_string(), Some(incarnation)),
    );
    started.elapsed()
}

#[test]
fn incarnations_neither_saturate_nor_lock_a_node_out_after_a_clock_correction() {
    let mut cluster = LocalCluster::new(Path::new(env!("CARGO_BIN_EXE_heartline")), 2, 1).unwrap();
    // Where the 32-bit incarnation saturated: the next run is larger.
    let saturated = u64::from(u32::MAX);
    record_incarnation(&cluster, 2, saturated);
    cluster.start_all().unwrap();
    wait_for(CONVERGE, "every node up everywhere", || cluster.all_up());
    assert_eq!(cluster.view(1, 2).1, Some(saturated + 1));
    cluster.kill(2);
    let took = start_and_see(&mut cluster, 2, saturated + 2);
    eprintln!("restart past the old 32-bit end seen in {took:?}");

    // A run whose clock was a century ahead, then a restart with the
    // clock corrected and the record lost: node 1 remembers the larger
    // run and drops the new one's frames as stale, until node 2 takes the
    // next incarnation after it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ahead = now + 100 * 365 * 86_400;
    cluster.kill(2);
    record_incarnation(&cluster, 2, ahead - 1);
    start_and_see(&mut cluster, 2, ahead);
    cluster.kill(2);
    let record = cluster.dir().join("bravo.state").join("incarnation");
    std::fs::remove_file(&record).unwrap();
    let took = start_and_see(&mut cluster, 2, ahead + 1);
    eprintln!("restart with the clock corrected and the record lost seen in {took:?}");
    let log = cluster.log(2);
    assert!(
        log.contains(&format!("takes incarnation {}", ahead + 1)),
        "{log}"
    );
    assert!(cluster.log(1).contains("bravo (2) restarted"));
    // Recorded: the next start takes the one after without asking.
    let recorded: u64 = std::fs::read_to_string(&record)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(recorded, ahead + 1);
    cluster.kill(2);
    start_and_see(&mut cluster, 2, ahead + 2);
    let log = cluster.log(2);
    assert_eq!(log.matches("takes incarnation").count(), 1, "{log}");
}

/// A measurement, run by hand (`cargo test --release -p heartline --test
/// loopback stall_bound -- --ignored --nocapture`): node 2 of two nodes
/// with two paths at the default profile is stopped (SIGSTOP) for a given
/// time, 10 times each, and node 1's NodeDowns are counted. The README's
/// bound comes from it.
#[test]
#[ignore = "a measurement for the README, by hand"]
fn stall_bound() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let cluster = cluster(2, 2);
    let pid = Pid::from_raw(i32::try_from(cluster.pid(2).unwrap()).unwrap());
    for stall_ms in [250u64, 300, 350, 380, 400, 420, 450, 500] {
        let mut downs = 0;
        for trial in 0..10u64 {
            let before = cluster.log(1).matches("bravo (2) down").count();
            // A different phase of the heartbeat cycle each time.
            std::thread::sleep(Duration::from_millis(500 + trial * 13));
            kill(pid, Signal::SIGSTOP).unwrap();
            std::thread::sleep(Duration::from_millis(stall_ms));
            kill(pid, Signal::SIGCONT).unwrap();
            wait_for(CONVERGE, "node 2 up again", || cluster.view(1, 2).0 == "up");
            std::thread::sleep(Duration::from_millis(300));
            if cluster.log(1).matches("bravo (2) down").count() > before {
                downs += 1;
            }
        }
        eprintln!("stall {stall_ms} ms: declared down in {downs} of 10");
    }
}

/// Two nodes whose configurations disagree never come up, and say why,
/// for each kind of mismatch: the cluster keys (`bad_tag`), the cluster
/// ids (`wrong_cluster`) and the path lists (`path_mismatch`, node 2's two
/// paths in the other order): a warning naming the peer and the likely
/// cause in node 1's log, and `status` spelling out what the count means.
#[test]
fn nodes_whose_configurations_differ_say_why_in_the_log_and_in_status() {
    type Change = fn(&std::path::Path, String) -> String;
    let cases: [(&str, &str, Change); 3] = [
        (
            "bad_tag",
            "the nodes' cluster keys differ (key_file)",
            |config, text| {
                let other = config.with_file_name("other.key");
                heartline::config::write_new_key(&other).unwrap();
                text.replace("key_file = \"cluster.key\"", "key_file = \"other.key\"")
            },
        ),
        (
            "wrong_cluster",
            "the nodes' [cluster] id differs",
            |_, text| text.replacen("id = 42", "id = 43", 1),
        ),
        (
            "path_mismatch",
            "the nodes' [[peers.paths]] lists differ",
            |_, text| {
                // Node 2's paths to node 1 in the other order.
                let (head, paths) = text.split_once("  [[peers.paths]]").unwrap();
                let paths = format!("  [[peers.paths]]{paths}");
                let second = paths[1..].find("  [[peers.paths]]").unwrap() + 1;
                let (first, rest) = paths.split_at(second);
                format!("{head}{rest}{first}")
            },
        ),
    ];
    for (reason, cause, change) in cases {
        let mut cluster =
            LocalCluster::new(Path::new(env!("CARGO_BIN_EXE_heartline")), 2, 2).unwrap();
        let config = cluster.config_path(2);
        let text = change(&config, std::fs::read_to_string(&config).unwrap());
        std::fs::write(&config, text).unwrap();
        cluster.start_all().unwrap();
        let found = heartline::demo::local_cluster::wait_for(
            Duration::from_secs(30),
            "the cause in node 1's log",
            || {
                cluster.log(1).lines().any(|l| {
                    l.contains("WARN")
                        && l.contains(&format!("rejected in the last 10 s as {reason}: "))
                        && l.contains(cause)
                        && l.contains("bravo (2)")
                })
            },
        );
        assert!(found.is_ok(), "{reason}: {found:?}\n{}", cluster.log(1));
        assert!(!cluster.all_up(), "{reason}");
        let table = cli(&cluster, 1).arg("status").output().unwrap();
        let table = String::from_utf8(table.stdout).unwrap();
        assert!(
            table.contains(reason) && table.contains(cause),
            "{reason}: {table}"
        );
    }
}

/// `status --json` is one object with a `schema` version, this node, its
/// peers and their paths.
#[test]
fn status_json_carries_its_schema_version() {
    let cluster = cluster(2, 1);
    let out = cli(&cluster, 1)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["schema"], heartline::cli::STATUS_SCHEMA);
    assert_eq!(json["node"], 1);
    assert_eq!(json["name"], "alpha");
    assert_eq!(json["peers"][0]["name"], "bravo");
    assert_eq!(json["peers"][0]["paths"][0]["state"], "up");
    // The other node's resources, asked through this node's daemon.
    assert_eq!(json["other_nodes"][0]["node"], 2, "{json}");
    assert_eq!(json["other_nodes"][0]["name"], "bravo");
    assert_eq!(json["other_nodes"][0]["resources"]["node"], 2, "{json}");
    assert!(json["other_nodes"][0]["error"].is_null(), "{json}");
}

/// Every command that takes a node gives the same result whether the
/// node is given by name or by id: `--on`, `--node`, `--to` and the
/// positional node of `standby` and `unstandby`, for answers, errors and
/// changes alike.
#[test]
fn a_node_by_name_or_by_id_gives_the_same_result_for_every_command() {
    let cluster = cluster(2, 1);
    let run = |args: &[&str]| {
        let out = cli(&cluster, 1).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let both = |with: &dyn Fn(&str) -> Vec<String>| {
        let by_name = run(&with("bravo").iter().map(String::as_str).collect::<Vec<_>>());
        let by_id = run(&with("2").iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(by_name, by_id, "{:?}", with("bravo|2"));
        by_name
    };
    let words = |text: &str| -> Vec<String> { text.split(' ').map(String::from).collect() };
    // Answers.
    let (code, _, _) = both(&|n| words(&format!("can-talk --node {n}")));
    assert_eq!(code, Some(0));
    for command in [
        "ins list --node {}",
        "dep list --node {}",
        "--on {} ins list",
        "--on {} dep list",
        "--on {} verify",
    ] {
        let (code, _, stderr) = both(&|n| words(&command.replace("{}", n)));
        assert_eq!(code, Some(0), "{command}: {stderr}");
    }
    // Errors, each naming the same node the same way.
    for command in [
        "cleanup nosuch --node {}",
        "ins remove nosuch --node {}",
        "ins setstate nosuch OSU --node {}",
        "ins setprop nosuch x y --node {}",
        "ins setinit nosuch autores --node {}",
        "switchover nosuch --to {}",
        "--on {} cleanup nosuch",
        "--on {} switchover nosuch --to alpha",
    ] {
        let (code, _, stderr) = both(&|n| words(&command.replace("{}", n)));
        assert_ne!(code, Some(0), "{command}: {stderr}");
        assert!(!stderr.is_empty(), "{command}");
    }
    // A message sent to bravo by name and by id: both delivered.
    for node in ["bravo", "2"] {
        let sent = run_with_input(
            cli(&cluster, 1).args(["snd-msg", "--node", node, "--mailbox", "3"]),
            node.as_bytes(),
        )
        .unwrap();
        assert!(sent.success(), "snd-msg --node {node}");
    }
    for expected in [&b"bravo"[..], b"2"] {
        let received = cli(&cluster, 2)
            .args(["rcv-msg", "--mailbox", "3", "--timeout", "5s"])
            .output()
            .unwrap();
        assert_eq!(received.stdout, expected);
    }
    // Standby by name, then by id: the same change, the same status line.
    for (on, off) in [("bravo", "2"), ("2", "bravo")] {
        assert_eq!(run(&["standby", on]).0, Some(0));
        let status = run(&["status"]).1;
        assert!(
            status.contains("in standby: bravo (2)"),
            "standby {on}: {status}"
        );
        assert_eq!(run(&["unstandby", off]).0, Some(0));
        let status = run(&["status"]).1;
        assert!(!status.contains("in standby"), "unstandby {off}: {status}");
    }
}
