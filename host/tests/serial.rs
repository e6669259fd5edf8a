//! A serial line as the only path between two daemons: a pty pair made by
//! `socat` stands in for an RS-232 null-modem cable.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use heartline::control::{Request, Response};
use heartline::demo::local_cluster::{ExtraPath, LocalCluster, PathEnds, wait_for};

struct Socat(Child);

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn socat_available() -> bool {
    Command::new("socat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_pty_pair_carries_heartbeats_and_mailboxes_and_its_loss_takes_the_node_down() {
    if !socat_available() {
        eprintln!(
            "SKIPPED: socat is not installed (./test.sh installs it); the serial path test did not run"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("ttyA"), dir.path().join("ttyB"));
    let socat = Socat(
        Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(Duration::from_secs(5), "socat's ptys", || {
        a.exists() && b.exists()
    })
    .unwrap();

    let line = ExtraPath {
        a: 1,
        b: 2,
        ends: PathEnds::Serial {
            a_device: a,
            b_device: b,
        },
    };
    let mut cluster = LocalCluster::with_extra_paths(
        Path::new(env!("CARGO_BIN_EXE_heartline")),
        2,
        0,
        vec![line],
    )
    .unwrap();
    cluster.start_all().unwrap();
    wait_for(
        Duration::from_secs(15),
        "both nodes up over the serial line",
        || cluster.all_up(),
    )
    .unwrap();
    let status = cluster.status(1).unwrap();
    assert!(
        status.peers[0].paths[0].transport.starts_with("serial "),
        "{:?}",
        status.peers[0].paths[0]
    );

    let sent = cluster.ask(
        1,
        Request::Send {
            node: 2,
            mailbox: 4,
            payload: b"over the wire".to_vec(),
            timeout_ms: 5_000,
        },
    );
    assert_eq!(sent.unwrap(), Response::Delivered);
    match cluster
        .ask(
            2,
            Request::Receive {
                mailbox: 4,
                timeout_ms: 5_000,
            },
        )
        .unwrap()
    {
        Response::Message {
            from: 1, payload, ..
        } => assert_eq!(payload, b"over the wire"),
        other => panic!("{other:?}"),
    }

    drop(socat);
    wait_for(
        Duration::from_secs(5),
        "the serial path and then node 2 down at node 1",
        || cluster.path_state(1, 2, 0) == "down" && cluster.view(1, 2).0 == "down",
    )
    .unwrap();
    let log = cluster.log(1);
    let path_down = log.find("node 2 path 0 down").unwrap();
    let node_down = log.find("bravo (2) down: every path silent").unwrap();
    assert!(
        path_down < node_down,
        "the path went down first, then the node"
    );
}
