//! Two endpoints wired back to back over ideal links in simulated time: the
//! endpoint's behaviour as a peer sees it.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use heartline_core::wire::{self, Key, MAX_ENCODED_LEN, NodeKind};
use heartline_core::{
    ClusterId, ConfigError, Duration, Endpoint, EndpointConfig, Event, FailReason, Incarnation,
    Instant, NodeId, NodeState, PathConfig, PathId, PathRef, PathState, PeerConfig, RemoteEvent,
    RxError, SendError, WatchdogState,
};

type Ep = Endpoint<2, 2, 4, 2, 64>;

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const INTERVAL: Duration = Duration::from_millis(100);
const MISSES: u32 = 3;

fn path_config() -> PathConfig {
    PathConfig {
        interval: INTERVAL,
        misses: MISSES,
        rise: 2,
        priority: 1,
    }
}

fn endpoint(
    node: NodeId,
    peer: NodeId,
    incarnation: u64,
    now: Instant,
    watchdog: Option<Duration>,
) -> Ep {
    let mut ep = Ep::new(EndpointConfig {
        cluster: ClusterId(42),
        node,
        incarnation: Incarnation(incarnation),
        name: if node == A { "alpha" } else { "bravo" },
        kind: NodeKind::Host,
        capabilities: wire::CAP_MAILBOX,
        key: Key::new(b"0123456789abcdef0123456789abcdef").unwrap(),
    })
    .unwrap();
    let config = PeerConfig {
        watchdog,
        ..PeerConfig::new(peer)
    };
    ep.add_peer(now, config, &[path_config(), path_config()])
        .unwrap();
    ep
}

/// Two endpoints and the two paths between them; each path can be cut.
struct Pair {
    a: Ep,
    b: Ep,
    now: Instant,
    cut: [bool; 2],
    /// Frames from B to A as they were sent, for replay tests.
    b_to_a: Vec<(PathRef, Vec<u8>)>,
    events_a: Vec<(Instant, Event)>,
    events_b: Vec<(Instant, Event)>,
    /// Frames from B that A dropped as from an earlier run of B.
    stale_at_a: u32,
}

impl Pair {
    fn new() -> Pair {
        Pair::with_watchdog(None)
    }

    fn with_watchdog(watchdog: Option<Duration>) -> Pair {
        let now = Instant::ZERO;
        Pair {
            a: endpoint(A, B, 1, now, watchdog),
            b: endpoint(B, A, 1, now, None),
            now,
            cut: [false; 2],
            b_to_a: Vec::new(),
            events_a: Vec::new(),
            events_b: Vec::new(),
            stale_at_a: 0,
        }
    }

    /// Exchanges frames until neither side has anything more to send now.
    fn flush(&mut self) {
        let mut buf = [0u8; MAX_ENCODED_LEN];
        loop {
            let mut sent = false;
            while let Some(t) = self.a.poll_transmit(self.now, &mut buf) {
                sent = true;
                if !self.cut[usize::from(t.path.path.0)] {
                    let at = PathRef {
                        node: A,
                        path: t.path.path,
                    };
                    self.b
                        .handle_frame(self.now, at, &mut buf[..t.len - 1])
                        .unwrap();
                }
            }
            while let Some(t) = self.b.poll_transmit(self.now, &mut buf) {
                sent = true;
                let at = PathRef {
                    node: B,
                    path: t.path.path,
                };
                self.b_to_a.push((at, buf[..t.len - 1].to_vec()));
                if !self.cut[usize::from(t.path.path.0)] {
                    match self.a.handle_frame(self.now, at, &mut buf[..t.len - 1]) {
                        Err(RxError::StaleIncarnation(_)) => self.stale_at_a += 1,
                        other => other.unwrap(),
                    }
                }
            }
            self.drain_events();
            if !sent {
                break;
            }
        }
    }

    fn drain_events(&mut self) {
        while let Some(e) = self.a.poll_event() {
            self.events_a.push((self.now, e));
        }
        while let Some(e) = self.b.poll_event() {
            self.events_b.push((self.now, e));
        }
    }

    fn run_until(&mut self, until: Instant) {
        loop {
            self.flush();
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let next = next.map_or(until, |t| t.max(self.now));
            if next > until {
                self.now = until;
            } else {
                self.now = next;
            }
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
            if next > until {
                self.flush();
                return;
            }
        }
    }

    fn run_for(&mut self, span: Duration) {
        self.run_until(self.now + span);
    }

    fn a_saw(&self, wanted: &Event) -> Option<Instant> {
        self.events_a
            .iter()
            .find(|(_, e)| e == wanted)
            .map(|(t, _)| *t)
    }

    fn b_saw(&self, wanted: &Event) -> Option<Instant> {
        self.events_b
            .iter()
            .find(|(_, e)| e == wanted)
            .map(|(t, _)| *t)
    }
}

fn path(node: NodeId, index: u8) -> PathRef {
    PathRef {
        node,
        path: PathId(index),
    }
}

#[test]
fn peers_come_up_and_learn_each_other() {
    let mut pair = Pair::new();
    pair.run_for(Duration::from_millis(350));
    assert!(pair.a_saw(&Event::PathUp(path(B, 0))).is_some());
    assert!(pair.a_saw(&Event::PathUp(path(B, 1))).is_some());
    let up = pair.a_saw(&Event::NodeUp {
        node: B,
        incarnation: Incarnation(1),
    });
    assert_eq!(
        up,
        Some(Instant::from_millis(100)),
        "rise 2: second heartbeat at one interval"
    );
    assert!(pair.a.can_talk(B));
    let peer = pair.a.peer(B).unwrap();
    assert_eq!(peer.name, Some("bravo"));
    assert_eq!(peer.kind, Some(NodeKind::Host));
    assert_eq!(peer.capabilities, wire::CAP_MAILBOX);
    let status = pair.a.path(path(B, 0)).unwrap();
    assert_eq!(status.state, PathState::Up);
    assert!(
        status.rtt.is_some(),
        "round trip measured from echoed heartbeats"
    );
    assert_eq!(status.counters.rejected(), 0);
}

#[test]
fn losing_one_path_takes_only_that_path_down() {
    let mut pair = Pair::new();
    pair.run_for(Duration::from_millis(500));
    pair.cut[0] = true;
    let cut_at = pair.now;
    pair.run_for(Duration::from_secs(2));
    let down = pair
        .a_saw(&Event::PathDown(path(B, 0)))
        .expect("path 0 down");
    assert!(down <= cut_at + INTERVAL * (MISSES + 1));
    assert!(pair.a_saw(&Event::NodeDown { node: B }).is_none());
    assert!(pair.a.can_talk(B));
    assert_eq!(pair.a.path(path(B, 1)).unwrap().state, PathState::Up);

    pair.cut[0] = false;
    pair.run_for(Duration::from_secs(1));
    let events = pair
        .events_a
        .iter()
        .filter(|(_, e)| *e == Event::PathUp(path(B, 0)))
        .count();
    assert_eq!(events, 2, "path 0 came back");
}

#[test]
fn losing_every_path_takes_the_node_down_within_the_bound() {
    let mut pair = Pair::new();
    pair.run_for(Duration::from_millis(500));
    let last_heard = pair.a.path(path(B, 0)).unwrap().last_heard.unwrap();
    pair.cut = [true, true];
    pair.run_for(Duration::from_secs(2));
    let down = pair.a_saw(&Event::NodeDown { node: B }).expect("node down");
    assert!(down <= last_heard + INTERVAL * (MISSES + 1), "{down:?}");
    assert!(down >= last_heard + INTERVAL * MISSES, "{down:?}");
    assert_eq!(pair.a.peer(B).unwrap().state, NodeState::Down);
    assert_eq!(pair.a.send(B, 1, b"x"), Err(SendError::Unreachable(B)));
}

#[test]
fn a_restarted_peer_is_reported_with_its_new_incarnation() {
    let mut pair = Pair::new();
    pair.run_for(Duration::from_millis(500));
    pair.b = endpoint(B, A, 2, pair.now, None);
    pair.run_for(Duration::from_millis(500));
    assert!(
        pair.a_saw(&Event::NodeRestarted {
            node: B,
            new: Incarnation(2)
        })
        .is_some()
    );
    assert!(
        pair.a_saw(&Event::NodeDown { node: B }).is_none(),
        "a quick restart is not a node failure"
    );
    assert_eq!(pair.a.peer(B).unwrap().incarnation, Some(Incarnation(2)));
}

#[test]
fn a_restart_with_a_smaller_incarnation_takes_the_next_after_the_one_its_peer_remembers() {
    // B's earlier run took its incarnation from a clock that was ahead; B
    // restarts with a smaller one (its clock corrected, its record lost).
    let mut pair = Pair::new();
    pair.b = endpoint(B, A, 4_000_000_000_000, pair.now, None);
    pair.run_for(Duration::from_millis(500));
    assert_eq!(
        pair.a.peer(B).unwrap().incarnation,
        Some(Incarnation(4_000_000_000_000))
    );
    let restart = pair.now;
    pair.b = endpoint(B, A, 1_800_000_000, pair.now, None);
    pair.run_for(Duration::from_millis(500));
    // A dropped the new run's first frames as stale, but its own name the
    // run it remembers: B takes the next one.
    assert!(pair.stale_at_a > 0);
    let new = Incarnation(4_000_000_000_001);
    let took = pair
        .b_saw(&Event::Reincarnated { new })
        .expect("B takes the next incarnation");
    let seen = pair
        .a_saw(&Event::NodeRestarted { node: B, new })
        .expect("A sees B restarted");
    // Within a heartbeat interval or two of the restart, not the earlier
    // run's length.
    assert!(took <= restart + INTERVAL * 2, "{took:?}");
    assert!(seen <= restart + INTERVAL * 2, "{seen:?}");
    assert!(pair.a_saw(&Event::NodeDown { node: B }).is_none());
    assert_eq!(pair.b.incarnation(), new);
    assert_eq!(pair.a.peer(B).unwrap().incarnation, Some(new));
    assert_eq!(pair.a.peer(B).unwrap().state, NodeState::Up);
    assert_eq!(pair.b.peer(A).unwrap().state, NodeState::Up);
    // And the mailboxes work both ways.
    let id = pair.b.send(A, 7, b"after").unwrap();
    pair.a.send(B, 7, b"back").unwrap();
    pair.run_for(Duration::from_millis(50));
    assert!(pair.b_saw(&Event::Delivered { node: A, id }).is_some());
    assert_eq!(pair.a.poll_message().unwrap().payload.as_slice(), b"after");
    assert_eq!(pair.b.poll_message().unwrap().payload.as_slice(), b"back");
    // Stale from here on: frames of the run that took the small number
    // are dropped, and take nothing back.
    let before = pair.stale_at_a;
    pair.run_for(Duration::from_millis(500));
    assert_eq!(pair.stale_at_a, before);
    assert_eq!(pair.b.incarnation(), new);
}

#[test]
fn incarnations_past_32_bits_are_carried_whole() {
    let mut pair = Pair::new();
    pair.b = endpoint(B, A, u64::from(u32::MAX), pair.now, None);
    pair.run_for(Duration::from_millis(300));
    pair.b = endpoint(B, A, u64::from(u32::MAX) + 1, pair.now, None);
    pair.run_for(Duration::from_millis(300));
    assert!(
        pair.a_saw(&Event::NodeRestarted {
            node: B,
            new: Incarnation(u64::from(u32::MAX) + 1),
        })
        .is_some()
    );
    assert_eq!(pair.stale_at_a, 0);
}

#[test]
fn mailbox_messages_arrive_in_order_and_the_sender_learns_of_delivery() {
    let mut pair = Pair::new();
    pair.run_for(Duration::from_millis(300));
    let first = pair.a.send(B, 7, b"hello").unwrap();
    let second = pair.a.send(B, 7, b"world").unwrap();
    pair.run_for(Duration::from_millis(10));
    let got: Vec<_> = std::iter::from_fn(|| pair.b.poll_message()).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].from, got[0].mailbox, &got[0].payload[..]),
        (A, 7, &b"hello"[..])
    );
    assert_eq!(&got[1].payload[..], b"world");
    assert!(
        pair.a_saw(&Event::Delivered { node: B, id: first })
            .is_some()
    );
    assert!(
        pair.a_saw(&Event::Delivered {
            node: B,
            id: second
        })
        .is_some()
    );
}

#[test]
fn in_flight_messages_move_to_the_surviving_path() {
    let mut pair = Pair::new();
    pair.run_for(Duration::from_millis(300));
    // Both paths are equal; whichever carries data, cut it silently.
    pair.cut[0] = true;
    pair.cut[1] = false;
    let id = pair.a.send(B, 1, b"survives").unwrap();
    pair.run_for(Duration::from_secs(1));
    assert!(pair.a_saw(&Event::Delivered { node: B, id }).is_some());
    assert_eq!(
        pair.b.poll_message().map(|m| m.payload.to_vec()),
        Some(b"survives".to_vec())
    );
    assert_eq!(pair.b.poll_message(), None, "exactly once");
}

/// A path that died silently is still up until interval × misses; the
/// retransmission after one timeout goes on the other path, so the message
/// arrives long before the dead path is declared down. Then new messages
/// start on the best path again (the dead one) and each gets through one
/// timeout later, until it is declared down.
#[test]
fn a_retransmission_takes_another_path_before_the_dead_one_is_declared_down() {
    let mut pair = Pair::new();
    pair.run_for(Duration::from_millis(300));
    // The path data goes on first (lowest round trip, then lowest index)
    // dies silently.
    let rtt = |i| pair.a.path(path(B, i)).unwrap().rtt;
    let dead = if rtt(0) <= rtt(1) { 0 } else { 1 };
    pair.cut[usize::from(dead)] = true;
    let min_rto = heartline_core::rtt::MIN_RTO;
    for text in [&b"first"[..], b"second"] {
        let sent_at = pair.now;
        let id = pair.a.send(B, 1, text).unwrap();
        pair.run_for(Duration::from_millis(100));
        let took = pair
            .a_saw(&Event::Delivered { node: B, id })
            .expect("delivered over the other path")
            .saturating_since(sent_at);
        assert!(
            took >= min_rto && took <= min_rto * 3,
            "{text:?} delivered {took:?} after it was sent"
        );
        assert_eq!(
            pair.b.poll_message().map(|m| m.payload.to_vec()),
            Some(text.to_vec())
        );
        assert_eq!(pair.b.poll_message(), None, "exactly once");
    }
    assert!(
        pair.a_saw(&Event::PathDown(path(B, dead))).is_none(),
        "both went before the dead path was declared down"
    );
}

#[test]
fn a_full_queue_pushes_back_and_a_full_inbox_holds_messages_unacked() {
    let mut pair = Pair::new();
    pair.run_for(Duration::from_millis(300));
    pair.cut = [true, true];
    for i in 0..4u8 {
        pair.a.send(B, 1, &[i]).unwrap();
    }
    assert_eq!(pair.a.send(B, 1, b"5"), Err(SendError::QueueFull(B)));
    assert_eq!(
        pair.a.send(B, 1, &[0; 513]),
        Err(SendError::TooLarge { len: 513, max: 512 })
    );
    assert_eq!(
        pair.a.send(NodeId(9), 1, b""),
        Err(SendError::UnknownNode(NodeId(9)))
    );
    pair.cut = [false, false];
    pair.run_for(Duration::from_millis(250));
    // B's inbox holds 2: the other two wait, unacked, at A.
    assert_eq!(pair.a.peer(B).unwrap().queued, 2);
    let first: Vec<u8> = std::iter::from_fn(|| pair.b.poll_message())
        .map(|m| m.payload[0])
        .collect();
    assert_eq!(first, [0, 1]);
    pair.run_for(Duration::from_secs(3));
    let rest: Vec<u8> = std::iter::from_fn(|| pair.b.poll_message())
        .map(|m| m.payload[0])
        .collect();
    assert_eq!(rest, [2, 3]);
    assert_eq!(pair.a.peer(B).unwrap().queued, 0);
}

#[test]
fn messages_outstanding_when_the_node_dies_are_reported_failed() {
    let mut pair = Pair::new();
    pair.run_for(Duration::from_millis(300));
    pair.cut = [true, true];
    let id = pair.a.send(B, 1, b"lost").unwrap();
    pair.run_for(Duration::from_secs(1));
    assert!(
        pair.a_saw(&Event::SendFailed {
            node: B,
            id,
            reason: FailReason::NodeDown
        })
        .is_some()
    );
}

#[test]
fn replayed_misrouted_and_stale_frames_are_rejected_and_counted() {
    let mut pair = Pair::new();
    pair.run_for(Duration::from_millis(300));
    let (at, frame) = pair.b_to_a.last().cloned().unwrap();
    assert_eq!(
        pair.a.handle_frame(pair.now, at, &mut frame.clone()),
        Err(RxError::Replayed)
    );
    let other = PathRef {
        node: B,
        path: PathId(1 - at.path.0),
    };
    assert_eq!(
        pair.a.handle_frame(pair.now, other, &mut frame.clone()),
        Err(RxError::PathMismatch {
            arrived_on: other.path,
            sent_on: at.path
        })
    );
    let nowhere = PathRef {
        node: B,
        path: PathId(7),
    };
    assert_eq!(
        pair.a.handle_frame(pair.now, nowhere, &mut frame.clone()),
        Err(RxError::UnknownPath(nowhere))
    );
    // A's own frame looped back to A names B as its destination.
    assert_eq!(
        pair.b.handle_frame(pair.now, at, &mut frame.clone()),
        Err(RxError::WrongDestination(A))
    );

    let (old_at, old_frame) = pair.b_to_a[0].clone();
    pair.b = endpoint(B, A, 2, pair.now, None);
    pair.run_for(Duration::from_millis(300));
    assert_eq!(
        pair.a
            .handle_frame(pair.now, old_at, &mut old_frame.clone()),
        Err(RxError::StaleIncarnation(Incarnation(1)))
    );
    let counters = pair.a.counters();
    assert_eq!(
        (
            counters.replayed,
            counters.path_mismatch,
            counters.unknown_path
        ),
        (1, 1, 1)
    );
    assert_eq!(counters.stale_incarnation, 1);
    assert_eq!(pair.a.path(at).unwrap().counters.replayed, 1);
    let mut garbage = *b"not a frame";
    assert!(matches!(
        pair.a.handle_frame(pair.now, at, &mut garbage),
        Err(RxError::Wire(_))
    ));
}

#[test]
fn watchdog_trips_on_silence_and_rearms_and_events_travel_reliably() {
    let timeout = Duration::from_millis(800);
    let mut pair = Pair::with_watchdog(Some(timeout));
    pair.run_for(Duration::from_millis(300));
    assert!(matches!(
        pair.a.peer(B).unwrap().watchdog,
        Some(WatchdogState::Armed { .. })
    ));
    pair.cut = [true, true];
    let last = pair.a.path(path(B, 0)).unwrap().last_heard.unwrap();
    pair.run_for(Duration::from_secs(2));
    let tripped = pair.events_a.iter().find_map(|(t, e)| match e {
        Event::WatchdogTripped {
            node: B,
            silent_for,
        } => Some((*t, *silent_for)),
        _ => None,
    });
    assert_eq!(tripped, Some((last + timeout, timeout)));
    pair.cut = [false, false];
    pair.run_for(Duration::from_millis(500));
    assert!(pair.a_saw(&Event::WatchdogRearmed { node: B }).is_some());

    let report = RemoteEvent {
        code: wire::EventCode::WatchdogTripped,
        subject: NodeId(5),
        detail: 800,
    };
    pair.a.send_event(B, report).unwrap();
    pair.run_for(Duration::from_millis(50));
    assert!(pair.events_b.iter().any(|(_, e)| *e
        == Event::Remote {
            from: A,
            event: report
        }));
}

#[test]
fn an_endpoint_without_peers_has_nothing_to_do() {
    let ep = Ep::new(EndpointConfig {
        cluster: ClusterId(1),
        node: A,
        incarnation: Incarnation(1),
        name: "alone",
        kind: NodeKind::Host,
        capabilities: 0,
        key: Key::new(b"0123456789abcdef").unwrap(),
    })
    .unwrap();
    assert_eq!(ep.poll_timeout(), None);
    assert_eq!(ep.peers().count(), 0);
    assert!(!ep.can_talk(B));
}

#[test]
fn heartbeats_follow_the_interval_and_drained_endpoints_sleep_until_due() {
    let mut pair = Pair::new();
    pair.run_for(Duration::from_millis(250));
    let next = pair.a.poll_timeout().unwrap();
    assert!(next > pair.now && next <= pair.now + INTERVAL, "{next:?}");
    let sent = pair.a.path(path(B, 0)).unwrap().counters.frames_out;
    pair.run_for(Duration::from_secs(1));
    let per_second = pair.a.path(path(B, 0)).unwrap().counters.frames_out - sent;
    assert_eq!(per_second, 10, "one heartbeat per 100 ms interval");
    assert_eq!(pair.a.events_dropped(), 0);
}

#[test]
fn bad_configuration_is_refused_with_a_reason() {
    let key = || Key::new(b"0123456789abcdef").unwrap();
    let config = |node, incarnation, name| EndpointConfig {
        cluster: ClusterId(1),
        node,
        incarnation: Incarnation(incarnation),
        name,
        kind: NodeKind::Host,
        capabilities: 0,
        key: key(),
    };
    assert_eq!(
        Ep::new(config(NodeId(0), 1, "x")).unwrap_err(),
        ConfigError::InvalidNode(NodeId(0))
    );
    assert_eq!(
        Ep::new(config(A, 0, "x")).unwrap_err(),
        ConfigError::ZeroIncarnation
    );
    let long_name = "n".repeat(40);
    assert_eq!(
        Ep::new(config(A, 1, &long_name)).unwrap_err(),
        ConfigError::NameTooLong { len: 40 }
    );
    let mut ep = Ep::new(config(A, 1, "alpha")).unwrap();
    let now = Instant::ZERO;
    assert_eq!(
        ep.add_peer(now, PeerConfig::new(A), &[path_config()]),
        Err(ConfigError::InvalidNode(A))
    );
    assert_eq!(
        ep.add_peer(now, PeerConfig::new(B), &[]),
        Err(ConfigError::PathCount {
            node: B,
            given: 0,
            max: 2
        })
    );
    assert_eq!(
        ep.add_peer(now, PeerConfig::new(B), &[path_config(); 3]),
        Err(ConfigError::PathCount {
            node: B,
            given: 3,
            max: 2
        })
    );
    let bad = PathConfig {
        misses: 0,
        ..path_config()
    };
    assert!(matches!(
        ep.add_peer(now, PeerConfig::new(B), &[bad]),
        Err(ConfigError::Path { .. })
    ));
    ep.add_peer(now, PeerConfig::new(B), &[path_config()])
        .unwrap();
    assert_eq!(
        ep.add_peer(now, PeerConfig::new(B), &[path_config()]),
        Err(ConfigError::DuplicatePeer(B))
    );
    ep.add_peer(now, PeerConfig::new(NodeId(3)), &[path_config()])
        .unwrap();
    assert_eq!(
        ep.add_peer(now, PeerConfig::new(NodeId(4)), &[path_config()]),
        Err(ConfigError::TooManyPeers { max: 2 })
    );
}
