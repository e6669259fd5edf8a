//! The dongle between two host endpoints in simulated time: provisioning
//! and its refusals, the relay, the watchdog with its reset output and
//! reports, as the hosts see them.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::sync::LazyLock;

use heartline_core::dongle::{Dongle, Note, Refusal, dongle_secret, encode_provision};
use heartline_core::wire::{
    self, EventCode, Header, Key, Kind, MAX_ENCODED_LEN, NodeKind, Provision,
};
use heartline_core::{
    ClusterId, Duration, Endpoint, EndpointConfig, Event, Incarnation, Instant, NodeId, NodeState,
    PathConfig, PathId, PathRef, PeerConfig, WatchdogState,
};

type Host = Endpoint<2, 1, 8, 8, 64>;

const CLUSTER: ClusterId = ClusterId(7);
const DONGLE: NodeId = NodeId(100);
const HOSTS: [NodeId; 2] = [NodeId(1), NodeId(2)];
const CLUSTER_SECRET: &[u8] = b"the cluster's own 32-byte secret";
const WATCHDOG: Duration = Duration::from_millis(600);
const PULSE: Duration = Duration::from_millis(200);

fn path() -> PathConfig {
    PathConfig {
        interval: Duration::from_millis(50),
        misses: 4,
        rise: 2,
        priority: 1,
    }
}

fn cluster_key() -> Key {
    Key::new(CLUSTER_SECRET).unwrap()
}

fn secret() -> [u8; 32] {
    dongle_secret(&cluster_key(), CLUSTER, DONGLE)
}

static SECRET: LazyLock<[u8; 32]> = LazyLock::new(secret);

/// What host `port` sends the dongle.
fn provision(port: usize) -> Provision<'static> {
    Provision {
        incarnation: 1_000,
        other_host: HOSTS[1 - port],
        secret: &*SECRET,
        interval_ms: 50,
        misses: 4,
        rise: 2,
        watchdog_ms: 600,
        reset_pulse_ms: 200,
    }
}

/// Host `port` of the bench: the dongle on its own key, the other host on
/// the cluster key through the dongle.
fn host(port: usize, now: Instant, incarnation: u64) -> Host {
    let mut host = Host::new(EndpointConfig {
        cluster: CLUSTER,
        node: HOSTS[port],
        incarnation: Incarnation(incarnation),
        name: "host",
        kind: NodeKind::Host,
        capabilities: wire::CAP_MAILBOX,
        key: cluster_key(),
    })
    .unwrap();
    host.add_peer_with_key(
        now,
        PeerConfig::new(DONGLE),
        &[path()],
        Some(Key::new(&secret()).unwrap()),
    )
    .unwrap();
    host.add_peer(now, PeerConfig::new(HOSTS[1 - port]), &[path()])
        .unwrap();
    host
}

fn since(start: Instant, now: Instant) -> Duration {
    Duration::from_micros(now.as_micros() - start.as_micros())
}

/// A dongle with a host on each port, wired by ideal serial lines.
struct Bench {
    now: Instant,
    dongle: Dongle,
    hosts: [Host; 2],
    /// A dead host neither sends nor hears.
    alive: [bool; 2],
    notes: Vec<Note>,
    events: [Vec<Event>; 2],
    provision_seq: [u64; 2],
}

impl Bench {
    fn new() -> Bench {
        let now = Instant::ZERO;
        Bench {
            now,
            dongle: Dongle::new(),
            hosts: [host(0, now, 1), host(1, now, 1)],
            alive: [true; 2],
            notes: Vec::new(),
            events: [Vec::new(), Vec::new()],
            provision_seq: [0; 2],
        }
    }

    /// Host `port` sends `body` to the dongle, tagged with `key`'s secret
    /// unless `tag_with` names another.
    fn send_provision(&mut self, port: usize, body: &Provision<'_>, tag_with: Option<&Key>) {
        self.provision_seq[port] += 1;
        let header = Header {
            kind: Kind::Provision,
            path: PathId(0),
            cluster: CLUSTER,
            src: HOSTS[port],
            dst: DONGLE,
            src_incarnation: self.hosts[port].incarnation(),
            dst_incarnation: Incarnation::UNKNOWN,
            seq: self.provision_seq[port],
        };
        let mut out = [0u8; MAX_ENCODED_LEN];
        let len = match tag_with {
            None => encode_provision(&header, body, &mut out).unwrap(),
            Some(key) => {
                wire::encode(&header, &wire::Message::Provision(*body), key, &mut out).unwrap()
            }
        };
        self.feed(port, &out[..len]);
    }

    /// Bytes arriving at the dongle on `port`.
    fn feed(&mut self, port: usize, bytes: &[u8]) {
        let Bench {
            now,
            dongle,
            hosts,
            alive,
            ..
        } = self;
        dongle.handle_bytes(*now, port, bytes, |to, frame| {
            if alive[to] {
                let mut frame = frame.to_vec();
                let (src, _) = wire::route_of(&frame).unwrap();
                let at = PathRef {
                    node: src,
                    path: PathId(0),
                };
                let _ = hosts[to].handle_frame(*now, at, &mut frame);
            }
        });
        self.collect();
    }

    fn collect(&mut self) {
        while let Some(note) = self.dongle.poll_note() {
            self.notes.push(note);
        }
        for (host, events) in self.hosts.iter_mut().zip(&mut self.events) {
            while let Some(event) = host.poll_event() {
                events.push(event);
            }
        }
    }

    /// One millisecond of simulated time.
    fn step(&mut self) {
        self.now += Duration::from_millis(1);
        let mut buf = [0u8; MAX_ENCODED_LEN];
        for port in 0..2 {
            self.hosts[port].handle_timeout(self.now);
            while let Some(t) = self.hosts[port].poll_transmit(self.now, &mut buf) {
                if self.alive[port] {
                    let bytes = buf[..t.len].to_vec();
                    self.feed(port, &bytes);
                }
            }
        }
        self.dongle.handle_timeout(self.now);
        while let Some((port, len)) = self.dongle.poll_transmit(self.now, &mut buf) {
            if self.alive[port] {
                let mut frame = buf[..len - 1].to_vec();
                let at = PathRef {
                    node: DONGLE,
                    path: PathId(0),
                };
                let _ = self.hosts[port].handle_frame(self.now, at, &mut frame);
            }
        }
        self.collect();
    }

    fn run_for(&mut self, span: Duration) {
        let until = self.now + span;
        while self.now < until {
            self.step();
        }
    }

    /// Steps until `done`, at most `limit`; the simulated time it took.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Bench) -> bool) -> Duration {
        let start = self.now;
        while !done(self) {
            assert!(since(start, self.now) < limit, "not within {limit:?}");
            self.step();
        }
        since(start, self.now)
    }

    fn sees(&self, port: usize, node: NodeId) -> NodeState {
        self.hosts[port]
            .peer(node)
            .map_or(NodeState::Unknown, |p| p.state)
    }

    fn refusals(&self) -> Vec<Refusal> {
        self.notes
            .iter()
            .filter_map(|n| match n {
                Note::Refused { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }
}

/// A bench whose dongle host A has provisioned, with everything up.
fn provisioned() -> Bench {
    let mut bench = Bench::new();
    bench.send_provision(0, &provision(0), None);
    bench.run_until(Duration::from_secs(2), |b| {
        (0..2)
            .all(|p| b.sees(p, DONGLE) == NodeState::Up && b.sees(p, HOSTS[1 - p]) == NodeState::Up)
    });
    bench
}

#[test]
fn an_unprovisioned_dongle_is_silent_and_ignores_cluster_frames() {
    let mut bench = Bench::new();
    bench.run_for(Duration::from_secs(1));
    assert!(bench.dongle.endpoint().is_none());
    let mut buf = [0u8; MAX_ENCODED_LEN];
    assert_eq!(bench.dongle.poll_transmit(bench.now, &mut buf), None);
    assert_eq!(bench.sees(0, DONGLE), NodeState::Unknown);
    assert_eq!(bench.sees(0, HOSTS[1]), NodeState::Unknown, "no relay yet");
    assert!(bench.notes.is_empty());
}

#[test]
fn the_first_provisioning_makes_it_a_node_to_both_hosts() {
    let mut bench = Bench::new();
    bench.run_for(Duration::from_millis(100));
    bench.send_provision(0, &provision(0), None);
    assert_eq!(
        bench.notes,
        [Note::Provisioned {
            port: 0,
            by: HOSTS[0],
            cluster: CLUSTER,
            node: DONGLE,
            incarnation: Incarnation(1_000),
        }]
    );
    assert_eq!(bench.dongle.host(0), Some(HOSTS[0]));
    assert_eq!(
        bench.dongle.host(1),
        Some(HOSTS[1]),
        "A named the host beyond"
    );
    let took = bench.run_until(Duration::from_secs(2), |b| {
        (0..2).all(|p| b.sees(p, DONGLE) == NodeState::Up)
    });
    assert!(took < Duration::from_millis(300), "up in {took:?}");
    let dongle = bench.hosts[1].peer(DONGLE).unwrap();
    assert_eq!(dongle.kind, Some(NodeKind::Dongle));
    assert_eq!(dongle.name, Some("dongle"));
    assert_eq!(dongle.capabilities, wire::CAP_RELAY | wire::CAP_WATCHDOG);
    assert_eq!(dongle.incarnation, Some(Incarnation(1_000)));
}

#[test]
fn the_relay_carries_the_hosts_heartbeats_and_mailboxes_end_to_end() {
    let mut bench = provisioned();
    assert!(bench.dongle.relayed(0) > 0 && bench.dongle.relayed(1) > 0);
    let id = bench.hosts[0]
        .send(HOSTS[1], 9, b"through the dongle")
        .unwrap();
    bench.run_until(Duration::from_secs(1), |b| {
        b.events[0]
            .iter()
            .any(|e| *e == Event::Delivered { node: HOSTS[1], id })
    });
    let received = bench.hosts[1].poll_message().unwrap();
    assert_eq!(received.from, HOSTS[0]);
    assert_eq!(received.payload.as_slice(), b"through the dongle");
    // The dongle's key cannot make a frame the other host takes as A's.
    let before = bench.hosts[1].counters().bad_tag;
    let forged = Header {
        kind: Kind::Heartbeat,
        path: PathId(0),
        cluster: CLUSTER,
        src: HOSTS[0],
        dst: HOSTS[1],
        src_incarnation: Incarnation(1),
        dst_incarnation: Incarnation(1),
        seq: 1 << 40,
    };
    let mut out = [0u8; MAX_ENCODED_LEN];
    let len = wire::encode(
        &forged,
        &wire::Message::Heartbeat(wire::Heartbeat::default()),
        &Key::new(&secret()).unwrap(),
        &mut out,
    )
    .unwrap();
    bench.feed(0, &out[..len]);
    assert_eq!(bench.hosts[1].counters().bad_tag, before + 1);
}

#[test]
fn a_silent_host_trips_its_watchdog_pulses_its_reset_and_is_reported() {
    let mut bench = provisioned();
    let watchdog = bench.dongle.endpoint().unwrap().peer(HOSTS[0]).unwrap();
    assert!(matches!(
        watchdog.watchdog,
        Some(WatchdogState::Armed { .. })
    ));
    bench.alive[0] = false;
    let tripped = bench.run_until(Duration::from_secs(2), |b| b.dongle.reset_asserted(0));
    assert!(
        tripped >= WATCHDOG && tripped <= WATCHDOG + Duration::from_millis(60),
        "tripped {tripped:?} after the host's last frame"
    );
    assert!(!bench.dongle.reset_asserted(1));
    assert!(bench.notes.iter().any(|n| matches!(
        n,
        Note::Tripped { host, .. } if *host == HOSTS[0]
    )));
    let held = bench.run_until(Duration::from_secs(1), |b| !b.dongle.reset_asserted(0));
    assert!(
        held + Duration::from_millis(1) >= PULSE && held <= PULSE + Duration::from_millis(1),
        "reset held {held:?}"
    );
    bench.run_until(Duration::from_secs(2), |b| {
        b.events[1].iter().any(|e| {
            matches!(e, Event::Remote { from, event }
                if *from == DONGLE && event.code == EventCode::WatchdogTripped && event.subject == HOSTS[0])
        })
    });

    bench.alive[0] = true;
    bench.run_until(Duration::from_secs(2), |b| {
        b.events[1].iter().any(|e| {
            matches!(e, Event::Remote { event, .. }
                if event.code == EventCode::WatchdogRearmed && event.subject == HOSTS[0])
        })
    });
    assert!(bench.notes.contains(&Note::Rearmed { host: HOSTS[0] }));
}

#[test]
fn provisioning_under_another_key_is_refused_until_reset() {
    let mut bench = provisioned();
    let mut other = provision(1);
    other.secret = &[7; 32];
    bench.send_provision(1, &other, None);
    assert_eq!(bench.refusals(), [Refusal::OtherKey]);
    assert_eq!(
        bench.dongle.endpoint().unwrap().incarnation(),
        Incarnation(1_000)
    );
}

#[test]
fn a_forged_or_replayed_provisioning_is_refused() {
    let mut bench = Bench::new();
    // Tagged with a key other than the one it carries.
    bench.send_provision(0, &provision(0), Some(&cluster_key()));
    assert_eq!(bench.refusals(), [Refusal::Frame(wire::WireError::BadTag)]);
    assert!(bench.dongle.endpoint().is_none());

    bench.notes.clear();
    bench.send_provision(0, &provision(0), None);
    let mut newer = provision(0);
    newer.watchdog_ms = 900;
    bench.send_provision(0, &newer, None);
    assert!(matches!(bench.notes[1], Note::Reprovisioned { .. }));
    // The first frame again, as recorded from the line.
    bench.provision_seq[0] = 0;
    bench.send_provision(0, &provision(0), None);
    assert_eq!(bench.refusals(), [Refusal::Replayed]);
}

#[test]
fn hosts_that_disagree_on_the_cabling_are_refused() {
    let mut bench = provisioned();
    let mut wrong = provision(1);
    wrong.other_host = NodeId(3);
    bench.send_provision(1, &wrong, None);
    assert_eq!(
        bench.refusals(),
        [Refusal::Cabling {
            port: 0,
            serving: HOSTS[0],
            named: NodeId(3),
        }]
    );
}

#[test]
fn the_same_provisioning_again_changes_nothing_and_new_timings_restart_the_node() {
    let mut bench = provisioned();
    let before = bench.notes.len();
    bench.send_provision(1, &provision(1), None);
    assert_eq!(bench.notes.len(), before, "{:?}", bench.notes);
    bench.run_for(Duration::from_millis(200));
    assert!(
        !bench.events[0]
            .iter()
            .any(|e| matches!(e, Event::NodeRestarted { .. })),
    );

    let mut slower = provision(1);
    slower.watchdog_ms = 5_000;
    bench.send_provision(1, &slower, None);
    assert!(matches!(
        bench.notes.last(),
        Some(Note::Reprovisioned {
            port: 1,
            incarnation: Incarnation(1_001),
            ..
        })
    ));
    bench.run_until(Duration::from_secs(2), |b| {
        b.events[0].iter().any(|e| {
            *e == Event::NodeRestarted {
                node: DONGLE,
                new: Incarnation(1_001),
            }
        })
    });
    // The new watchdog time holds: a second's silence no longer trips.
    bench.alive[0] = false;
    bench.run_for(Duration::from_secs(1));
    assert!(!bench.dongle.reset_asserted(0));
}

#[test]
fn garbage_on_either_port_never_panics_and_leaves_the_dongle_working() {
    let mut bench = provisioned();
    let mut state = 0x2545_f491_u32;
    for round in 0..2_000 {
        let mut junk = [0u8; 97];
        for byte in &mut junk {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            *byte = state.to_le_bytes()[0];
        }
        bench.feed(round % 2, &junk);
    }
    bench.feed(0, &[0]);
    bench.feed(1, &[0]);
    bench.run_for(Duration::from_millis(500));
    assert!((0..2).all(|p| bench.sees(p, DONGLE) == NodeState::Up));
    assert!((0..2).all(|p| bench.sees(p, HOSTS[1 - p]) == NodeState::Up));
}

impl Bench {
    /// Host `port` asks the dongle for its witness vote for `view`; the
    /// answer (granted, holder) once it arrives.
    fn ask_vote(&mut self, port: usize, number: u16, view: &[u16]) -> (bool, Vec<u16>) {
        use heartline_core::witness::{NodeSet, parse_answer, request_event};
        let set = NodeSet::of(view.iter().copied());
        let request = request_event(number, set, Duration::from_secs(2)).unwrap();
        self.hosts[port].send_event(DONGLE, request).unwrap();
        let seen = self.events[port].len();
        let mut answer = None;
        self.run_until(Duration::from_secs(1), |b| {
            answer = b.events[port][seen..].iter().find_map(|e| match e {
                Event::Remote { from, event } if *from == DONGLE => {
                    parse_answer(event).filter(|(n, v, _, _)| *n == number && *v == set)
                }
                _ => None,
            });
            answer.is_some()
        });
        let (_, _, granted, holder) = answer.unwrap();
        (granted, holder.iter().collect())
    }
}

#[test]
fn the_dongle_is_the_witness_its_hosts_ask_over_their_serial_lines() {
    let mut bench = provisioned();
    assert_eq!(bench.ask_vote(0, 1, &[1, 2]), (true, vec![1, 2]));
    assert_eq!(bench.ask_vote(1, 1, &[1, 2]), (true, vec![1, 2]));
    assert!(
        bench
            .notes
            .iter()
            .any(|n| matches!(n, Note::VoteHolder { holder } if holder.0 == 0b11))
    );
    // The hosts' network splits (their serial lines to the dongle stay):
    // host 2 asks for itself first, then host 1; the lower id gets it.
    assert!(!bench.ask_vote(1, 2, &[2]).0, "host 1 not heard yet");
    assert_eq!(bench.ask_vote(0, 2, &[1]), (true, vec![1]));
    assert_eq!(bench.ask_vote(1, 3, &[2]), (false, vec![1]));
    // Host 1 and its line die: once host 1 is silent past the settle time
    // and its grant past the lease and margin, host 2 gets the vote.
    bench.alive[0] = false;
    bench.run_for(Duration::from_millis(2_100));
    assert_eq!(bench.ask_vote(1, 4, &[2]), (true, vec![2]));
    // Sticky: host 1 returning alone does not take it back.
    bench.alive[0] = true;
    bench.run_for(Duration::from_millis(500));
    assert_eq!(bench.ask_vote(0, 5, &[1]), (false, vec![2]));
    assert_eq!(bench.ask_vote(1, 5, &[2]), (true, vec![2]));
}

impl Bench {
    /// Host `port` asks the dongle to reset `target`; whether it was
    /// done, and how long the answer took.
    fn ask_fence(&mut self, port: usize, number: u16, target: NodeId) -> (bool, Duration) {
        use heartline_core::dongle::{fence_request, parse_fence_answer};
        self.hosts[port]
            .send_event(DONGLE, fence_request(number, target))
            .unwrap();
        let seen = self.events[port].len();
        let mut answer = None;
        let took = self.run_until(Duration::from_secs(2), |b| {
            answer = b.events[port][seen..].iter().find_map(|e| match e {
                Event::Remote { from, event } if *from == DONGLE => {
                    parse_fence_answer(event).filter(|(n, t, _)| *n == number && *t == target)
                }
                _ => None,
            });
            answer.is_some()
        });
        (answer.unwrap().2, took)
    }
}

#[test]
fn the_dongle_resets_a_host_only_for_the_side_holding_its_vote_and_confirms_after_the_pulse() {
    let mut bench = provisioned();
    bench.ask_vote(0, 1, &[1, 2]);
    bench.ask_vote(1, 1, &[1, 2]);
    // Both hosts hold the vote together: neither may reset the other.
    assert!(!bench.ask_fence(0, 1, HOSTS[1]).0);
    assert!(!bench.dongle.reset_asserted(1));
    // Split: host 1 gets the vote; host 2 may not reset it.
    bench.ask_vote(1, 2, &[2]);
    assert!(bench.ask_vote(0, 2, &[1]).0);
    assert!(!bench.ask_fence(1, 2, HOSTS[0]).0);
    assert!(!bench.dongle.reset_asserted(0));
    // Host 1 may reset host 2: the line is held for the pulse, then the
    // dongle confirms.
    let (done, took) = bench.ask_fence(0, 3, HOSTS[1]);
    assert!(done);
    assert!(took >= PULSE, "confirmed after the pulse: {took:?}");
    assert!(bench.notes.iter().any(|n| matches!(n, Note::Fence { by, host, done: true } if *by == HOSTS[0] && *host == HOSTS[1])));
    assert!(!bench.ask_fence(0, 4, HOSTS[0]).0, "not itself");
}
