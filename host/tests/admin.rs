//! The admin channel against a real daemon, from a stand-in peer built on
//! the protocol core in this test: the daemon speaks admin version 2 to its
//! peers, refuses messages of another version (and garbage) with a log
//! line naming the sender and the version, and goes on serving.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant as WallClock};

use heartline::config::Config;
use heartline::control::{Request, Response};
use heartline::demo::local_cluster::{LocalCluster, wait_for};
use heartline_brain::message::{ADMIN_MAILBOX, AdminMessage, BrainMsg, decode};
use heartline_core::wire::{CAP_MAILBOX, MAX_ENCODED_LEN, NodeKind};
use heartline_core::{
    Endpoint, EndpointConfig, Event, Incarnation, Instant, NodeId, PathId, PathRef, PeerConfig,
};

const BIN: &str = env!("CARGO_BIN_EXE_heartline");

type PeerEndpoint = Endpoint<1, 4, 16, 16, 64>;

/// Node 2, played by this test on one TCP path: node 1's daemon dials it.
struct StandIn {
    endpoint: Box<PeerEndpoint>,
    stream: std::net::TcpStream,
    started: WallClock,
    pending: Vec<u8>,
    /// Admin messages node 1 sent, decoded.
    heard: Vec<AdminMessage>,
    up: bool,
}

impl StandIn {
    fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.started.elapsed().as_micros()).unwrap())
    }

    /// Reads and writes for `span`.
    fn pump(&mut self, span: Duration) {
        let until = WallClock::now() + span;
        let path = PathRef {
            node: NodeId(1),
            path: PathId(0),
        };
        let mut buf = [0u8; 4096];
        while WallClock::now() < until {
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("node 1 closed the path"),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("{e}"),
            }
            let now = self.now();
            while let Some(end) = self.pending.iter().position(|b| *b == 0) {
                let mut frame: Vec<u8> = self.pending.drain(..=end).collect();
                frame.pop();
                let _ = self.endpoint.handle_frame(now, path, &mut frame);
            }
            self.endpoint.handle_timeout(now);
            while let Some(event) = self.endpoint.poll_event() {
                if matches!(event, Event::NodeUp { .. }) {
                    self.up = true;
                }
            }
            while let Some(message) = self.endpoint.poll_message() {
                if message.mailbox == ADMIN_MAILBOX && message.payload.len() > 5 {
                    // One fragment per message is enough for a hello.
                    if let Ok(m) = decode(&message.payload[5..]) {
                        self.heard.push(m);
                    }
                }
            }
            let mut out = [0u8; MAX_ENCODED_LEN];
            while let Some(t) = self.endpoint.poll_transmit(now, &mut out) {
                self.stream.write_all(&out[..t.len]).unwrap();
            }
        }
    }

    /// Sends `bytes` to node 1's admin mailbox as one whole message.
    fn send_admin(&mut self, number: u32, bytes: &[u8]) {
        let mut fragment = vec![2u8];
        fragment.extend_from_slice(&number.to_le_bytes());
        fragment.extend_from_slice(bytes);
        self.endpoint
            .send(NodeId(1), ADMIN_MAILBOX, &fragment)
            .unwrap();
    }
}

#[test]
fn admin_messages_of_another_version_are_refused_and_logged_and_the_daemon_goes_on() {
    let mut cluster = LocalCluster::new(Path::new(BIN), 2, 1).unwrap();
    let link = cluster.link(1, 2, 0).unwrap();
    let listener = TcpListener::bind(link.listen).unwrap();
    let config = Config::load(&cluster.config_path(2)).unwrap();
    cluster.start(1).unwrap();
    let (stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let endpoint_config = EndpointConfig {
        cluster: config.cluster,
        node: config.node,
        incarnation: Incarnation(1),
        name: "bravo",
        kind: NodeKind::Host,
        capabilities: CAP_MAILBOX,
        key: config.key.clone(),
    };
    let mut endpoint = Box::new(PeerEndpoint::new(endpoint_config).unwrap());
    let timing = config.peers[0].paths[0].timing;
    endpoint
        .add_peer(Instant::ZERO, PeerConfig::new(NodeId(1)), &[timing])
        .unwrap();
    let mut peer = StandIn {
        endpoint,
        stream,
        started: WallClock::now(),
        pending: Vec::new(),
        heard: Vec::new(),
        up: false,
    };
    let deadline = WallClock::now() + Duration::from_secs(10);
    while !peer.up || peer.heard.is_empty() {
        assert!(WallClock::now() < deadline, "node 1 never said hello");
        peer.pump(Duration::from_millis(50));
    }
    assert!(
        matches!(
            peer.heard[0],
            AdminMessage::Brain { ref msg } if matches!(**msg, BrainMsg::Hello { .. })
        ),
        "node 1 greets a new peer with a version 2 hello: {:?}",
        peer.heard[0]
    );

    peer.send_admin(
        1,
        br#"{"v": 99, "msg": {"brain": {"kind": "from the future"}}}"#,
    );
    peer.send_admin(2, b"\xff\xfe not json at all");
    peer.send_admin(3, br#"{"msg": "a first release message, with no version"}"#);
    let log = |cluster: &LocalCluster| cluster.log(1);
    let mut seen = String::new();
    let refused = wait_for(Duration::from_secs(10), "three refusals in the log", || {
        peer.pump(Duration::from_millis(20));
        seen = log(&cluster);
        seen.contains("admin message of version 99 refused")
            && seen.contains("malformed admin message")
            && seen.contains("admin message without a version refused")
    });
    refused.unwrap_or_else(|e| panic!("{e}:\n{seen}"));
    assert!(
        seen.contains("admin message from node 2 refused"),
        "the sender is named: {seen}"
    );

    // The daemon goes on: it answers, and still talks to node 2.
    match cluster.ask(1, Request::Status).unwrap() {
        Response::Status(status) => {
            assert_eq!(status.comm.peers[0].state, "up", "{status:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        cluster.ask(1, Request::Lcd).unwrap(),
        Response::Lcd(_)
    ));
    let heard = peer.heard.len();
    let answered = wait_for(Duration::from_secs(5), "node 1 still talking", || {
        peer.pump(Duration::from_millis(20));
        peer.endpoint.can_talk(NodeId(1))
    });
    answered.unwrap();
    assert!(peer.heard.len() >= heard);
}
