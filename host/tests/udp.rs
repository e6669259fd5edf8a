//! A UDP path as the only path between two daemons on loopback.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;

use heartline::control::{Request, Response};
use heartline::demo::local_cluster::{ExtraPath, LocalCluster, PathEnds, wait_for};

#[test]
fn a_udp_path_carries_heartbeats_and_mailboxes() {
    let free = || {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let path = ExtraPath {
        a: 1,
        b: 2,
        ends: PathEnds::Udp {
            a_addr: free(),
            b_addr: free(),
        },
    };
    let mut cluster = LocalCluster::with_extra_paths(
        Path::new(env!("CARGO_BIN_EXE_heartline")),
        2,
        0,
        vec![path],
    )
    .unwrap();
    cluster.start_all().unwrap();
    wait_for(Duration::from_secs(15), "both nodes up over UDP", || {
        cluster.all_up()
    })
    .unwrap();
    assert!(
        cluster.status(1).unwrap().peers[0].paths[0]
            .transport
            .starts_with("udp ")
    );

    let sent = cluster.ask(
        1,
        Request::Send {
            node: 2,
            mailbox: 2,
            payload: b"datagram".to_vec(),
            timeout_ms: 5_000,
        },
    );
    assert_eq!(sent.unwrap(), Response::Delivered);
    match cluster
        .ask(
            2,
            Request::Receive {
                mailbox: 2,
                timeout_ms: 5_000,
            },
        )
        .unwrap()
    {
        Response::Message { payload, .. } => assert_eq!(payload, b"datagram"),
        other => panic!("{other:?}"),
    }

    cluster.kill(2);
    wait_for(Duration::from_secs(5), "node 2 down at node 1", || {
        cluster.view(1, 2).0 == "down"
    })
    .unwrap();
}
