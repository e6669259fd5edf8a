//! The simulation loop: endpoints, the network, scheduled crashes and
//! traffic, advanced one instant at a time.

use std::fmt;

use heartline_core::wire::{Key, MAX_ENCODED_LEN, NodeKind};
use heartline_core::{
    ClusterId, Duration, Endpoint, EndpointConfig, Event, Incarnation, Instant, NodeId, PathConfig,
    PathId, PathRef, PathState, PeerConfig, RxError,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::net::{Hop, Net, NetStats};
use super::oracle::{self, Oracle, Tally, Violation};
use super::scenario::Scenario;

/// The endpoint shape the simulator runs: up to 32 nodes, 4 paths per peer.
pub type SimEndpoint = Endpoint<31, 4, 16, 64, 1024>;

const CLUSTER: ClusterId = ClusterId(0x5349_4d31);
const SECRET: &[u8] = b"simulated cluster shared secret!";

/// What a run did.
#[derive(Clone, Debug)]
pub struct Report {
    /// The scenario's seed.
    pub seed: u64,
    /// Nodes simulated.
    pub nodes: usize,
    /// Paths, counting each pair's paths once.
    pub paths: usize,
    /// Simulated time covered.
    pub simulated: Duration,
    /// Instants processed.
    pub steps: u64,
    /// The network's figures.
    pub net: NetStats,
    /// The oracle's figures.
    pub tally: Tally,
    /// PathDown events seen.
    pub path_downs: u64,
    /// NodeRestarted events seen.
    pub restarts_seen: u64,
    /// Restarts that forgot their incarnation (and took a smaller one).
    pub forgot: usize,
    /// Reincarnated events: a node took the next incarnation after the one
    /// a peer remembered.
    pub reincarnations: u64,
    /// Node crashes played.
    pub crashes: usize,
    /// Bytes of one simulated endpoint, fixed at compile time.
    pub endpoint_bytes: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.tally;
        writeln!(
            f,
            "seed {}: {} nodes, {} paths, {} simulated in {} steps",
            self.seed, self.nodes, self.paths, self.simulated, self.steps
        )?;
        writeln!(
            f,
            "  frames: {} sent, {} lost, {} cut, {} duplicated, at most {} in flight",
            self.net.sent,
            self.net.lost,
            self.net.cut,
            self.net.duplicated,
            self.net.peak_in_flight
        )?;
        write!(
            f,
            "  failures: {} paths down, {} node-down verdicts, {} crashes ({} forgot their incarnation, {} reincarnations), {} restarts seen",
            self.path_downs,
            t.node_downs,
            self.crashes,
            self.forgot,
            self.reincarnations,
            self.restarts_seen
        )?;
        if let (Some(min), Some(max)) = (t.detection.iter().min(), t.detection.iter().max()) {
            let mean =
                t.detection.iter().map(|d| d.as_micros()).sum::<u64>() / t.detection.len() as u64;
            write!(
                f,
                "; detection after last frame: min {min}, mean {}, max {max}",
                Duration::from_micros(mean)
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "  mailboxes: {} sent, {} received, {} delivered, {} failed (peer down or restarted)",
            t.sent, t.received, t.delivered, t.failed
        )?;
        write!(
            f,
            "  memory: {} bytes per endpoint, fixed; all invariants held",
            self.endpoint_bytes
        )
    }
}

struct Node {
    endpoint: Option<Box<SimEndpoint>>,
    incarnation: u64,
    /// The smallest incarnation it ran with.
    lowest: u64,
    timeout: Option<Instant>,
    next_message: Instant,
    counters: Vec<u64>,
}

enum Action {
    Crash(usize),
    /// With `true`, it forgot its incarnation.
    Restart(usize, bool),
}

struct World<'a> {
    scenario: &'a Scenario,
    nodes: Vec<Node>,
    net: Net,
    oracle: Oracle,
    rng: ChaCha8Rng,
    key: Key,
    now: Instant,
    actions: Vec<(Instant, Action)>,
    path_downs: u64,
    restarts_seen: u64,
    reincarnations: u64,
    steps: u64,
    trace: Option<&'a mut dyn FnMut(String)>,
}

/// Plays `scenario` out, checking every invariant after every step.
pub fn run(scenario: &Scenario) -> Result<Report, Violation> {
    run_inner(scenario, None)
}

/// As [`run`], passing a line for every event to `trace`.
pub fn run_traced(scenario: &Scenario, trace: &mut dyn FnMut(String)) -> Result<Report, Violation> {
    run_inner(scenario, Some(trace))
}

fn run_inner<'a>(
    scenario: &'a Scenario,
    trace: Option<&'a mut dyn FnMut(String)>,
) -> Result<Report, Violation> {
    let mut rng = ChaCha8Rng::seed_from_u64(scenario.seed ^ 0x5eed);
    let net = Net::new(ChaCha8Rng::seed_from_u64(rng.random()));
    let mut actions = Vec::new();
    for crash in &scenario.crashes {
        actions.push((crash.at, Action::Crash(crash.node)));
        actions.push((
            crash.at + crash.restart_after,
            Action::Restart(crash.node, crash.forgets),
        ));
    }
    // Latest first, so the next action pops off the end.
    actions.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let mut world = World {
        scenario,
        nodes: Vec::new(),
        net,
        oracle: Oracle::new(scenario.seed, scenario.nodes),
        rng,
        key: Key::new(SECRET).map_err(|e| Violation {
            simulator: "",
            seed: scenario.seed,
            at: Instant::ZERO,
            what: e.to_string(),
        })?,
        now: Instant::ZERO,
        actions,
        path_downs: 0,
        restarts_seen: 0,
        reincarnations: 0,
        steps: 0,
        trace,
    };
    for index in 0..scenario.nodes {
        let first_message = world.next_message_time(Instant::ZERO);
        world.nodes.push(Node {
            endpoint: None,
            // Room below for restarts that forget.
            incarnation: 1_000_000,
            lowest: u64::MAX,
            timeout: None,
            next_message: first_message,
            counters: vec![0; scenario.nodes],
        });
        world.start(index, false)?;
    }
    world.run()?;
    Ok(Report {
        seed: scenario.seed,
        nodes: scenario.nodes,
        paths: scenario.links.iter().map(Vec::len).sum(),
        simulated: Duration::from_micros(scenario.end().as_micros()),
        steps: world.steps,
        net: world.net.stats,
        tally: world.oracle.tally.clone(),
        path_downs: world.path_downs,
        restarts_seen: world.restarts_seen,
        forgot: scenario.crashes.iter().filter(|c| c.forgets).count(),
        reincarnations: world.reincarnations,
        crashes: scenario.crashes.len(),
        endpoint_bytes: size_of::<SimEndpoint>(),
    })
}

fn node_id(index: usize) -> NodeId {
    NodeId(u16::try_from(index + 1).unwrap_or(u16::MAX))
}

impl World<'_> {
    fn violation(&self, what: String) -> Violation {
        Violation {
            simulator: "",
            seed: self.scenario.seed,
            at: self.now,
            what,
        }
    }

    fn faults_on(&self) -> bool {
        self.now < Instant::ZERO + self.scenario.faulty
    }

    fn next_message_time(&mut self, after: Instant) -> Instant {
        let rate = self.scenario.messages_per_second;
        if rate <= 0.0 {
            return Instant::from_micros(u64::MAX);
        }
        let mean = 1e6 / rate;
        after + Duration::from_micros(self.rng.random_range(0.0..2.0 * mean) as u64 + 1)
    }

    /// Boots node `index` with a new incarnation: the next one, or with
    /// `forgot`, one smaller than any it ran with.
    fn start(&mut self, index: usize, forgot: bool) -> Result<(), Violation> {
        let below = self.nodes[index].lowest;
        let node = &mut self.nodes[index];
        node.incarnation = if forgot && below > 1 {
            self.rng.random_range(1..below)
        } else {
            node.incarnation + 1
        };
        node.lowest = node.lowest.min(node.incarnation);
        let name = format!("sim-{}", index + 1);
        let config = EndpointConfig {
            cluster: CLUSTER,
            node: node_id(index),
            incarnation: Incarnation(node.incarnation),
            name: &name,
            kind: NodeKind::Host,
            capabilities: 0,
            key: self.key.clone(),
        };
        let mut endpoint =
            Box::new(SimEndpoint::new(config).map_err(|e| self.violation(e.to_string()))?);
        for peer in (0..self.scenario.nodes).filter(|&p| p != index) {
            let paths: Vec<PathConfig> = self
                .scenario
                .paths(index, peer)
                .iter()
                .map(|l| l.config)
                .collect();
            endpoint
                .add_peer(self.now, PeerConfig::new(node_id(peer)), &paths)
                .map_err(|e| self.violation(format!("node {}: {e}", index + 1)))?;
        }
        self.nodes[index].endpoint = Some(endpoint);
        self.drain(index)
    }

    fn run(&mut self) -> Result<(), Violation> {
        let end = self.scenario.end();
        let mut touched = vec![false; self.nodes.len()];
        loop {
            let next_timer = self.nodes.iter().filter_map(|n| n.timeout).min();
            let next_message = if self.faults_on() {
                self.nodes.iter().map(|n| n.next_message).min()
            } else {
                None
            };
            let next_action = self.actions.last().map(|(at, _)| *at);
            let Some(next) = [
                next_timer,
                next_message,
                next_action,
                self.net.next_arrival(),
            ]
            .into_iter()
            .flatten()
            .min() else {
                break;
            };
            if next > end {
                break;
            }
            self.now = next.max(self.now);
            self.steps += 1;
            touched.fill(false);

            while let Some(frame) = self.net.pop_due(self.now) {
                let Some(endpoint) = self.nodes[frame.hop.to].endpoint.as_mut() else {
                    continue;
                };
                let at = PathRef {
                    node: node_id(frame.hop.from),
                    path: PathId(frame.hop.path),
                };
                let mut bytes = frame.bytes;
                let framed = bytes.len() - 1;
                match endpoint.handle_frame(self.now, at, &mut bytes[..framed]) {
                    Ok(()) => {
                        let link = &self.scenario.paths(frame.hop.to, frame.hop.from)
                            [usize::from(frame.hop.path)];
                        self.oracle.accepted(
                            frame.hop.to,
                            frame.hop.from,
                            frame.hop.path,
                            self.now,
                            link,
                        );
                    }
                    // Duplicated frames, and frames of a crashed run still in flight.
                    Err(RxError::Replayed | RxError::StaleIncarnation(_)) => {}
                    Err(e) => {
                        return Err(self.violation(format!(
                            "node {} rejected a frame from {} on {}: {e}",
                            frame.hop.to + 1,
                            frame.hop.from + 1,
                            at.path
                        )));
                    }
                }
                touched[frame.hop.to] = true;
            }

            while self.actions.last().is_some_and(|(at, _)| *at <= self.now) {
                let Some((_, action)) = self.actions.pop() else {
                    break;
                };
                match action {
                    Action::Crash(index) => {
                        self.log(format!("node {} crashes", index + 1));
                        self.nodes[index].endpoint = None;
                        self.nodes[index].timeout = None;
                        self.oracle.crashed(index, self.nodes[index].incarnation);
                    }
                    Action::Restart(index, forgot) => {
                        self.start(index, forgot)?;
                        self.log(format!(
                            "node {} restarts as incarnation {}{}",
                            index + 1,
                            self.nodes[index].incarnation,
                            if forgot {
                                " (its record lost, its clock behind)"
                            } else {
                                ""
                            }
                        ));
                    }
                }
            }

            if self.faults_on() {
                for (index, touched) in touched.iter_mut().enumerate() {
                    if self.nodes[index].next_message <= self.now {
                        self.send_message(index);
                        self.nodes[index].next_message = self.next_message_time(self.now);
                        *touched = true;
                    }
                }
            }

            for (index, node) in self.nodes.iter_mut().enumerate() {
                if let (Some(endpoint), Some(at)) = (node.endpoint.as_mut(), node.timeout) {
                    if at <= self.now {
                        endpoint.handle_timeout(self.now);
                        touched[index] = true;
                    }
                }
            }
            for (index, _) in touched.iter().enumerate().filter(|(_, touched)| **touched) {
                self.drain(index)?;
            }

            let nodes = &self.nodes;
            self.oracle.check_detection(self.now, |observer, subject| {
                nodes[observer]
                    .endpoint
                    .as_ref()
                    .is_some_and(|e| e.can_talk(node_id(subject)))
            })?;
            if self.net.in_flight() > 64 * self.scenario.links.len().max(1) * 4 + 100_000 {
                return Err(self.violation(format!(
                    "{} frames in flight: unbounded growth",
                    self.net.in_flight()
                )));
            }
        }
        self.now = end;
        self.check_healed()
    }

    fn send_message(&mut self, index: usize) {
        let peers = self.scenario.nodes;
        let dst = (index + 1 + self.rng.random_range(0..peers - 1)) % peers;
        let filler = self.rng.random_range(0..100);
        let node = &mut self.nodes[index];
        let Some(endpoint) = node.endpoint.as_mut() else {
            return;
        };
        if !endpoint.can_talk(node_id(dst)) {
            return;
        }
        let counter = node.counters[dst];
        let payload = oracle::payload(index, dst, counter, filler);
        if let Ok(id) = endpoint.send(node_id(dst), 1, &payload) {
            node.counters[dst] += 1;
            self.oracle.sent(index, node.incarnation, id, dst, counter);
        }
    }

    /// Drains node `index`'s outputs into the network and the oracle.
    fn drain(&mut self, index: usize) -> Result<(), Violation> {
        let mut buf = [0u8; MAX_ENCODED_LEN];
        let faults = self.faults_on();
        let Some(endpoint) = self.nodes[index].endpoint.as_mut() else {
            return Ok(());
        };
        while let Some(t) = endpoint.poll_transmit(self.now, &mut buf) {
            let to = usize::from(t.path.node.0) - 1;
            let link = &self.scenario.paths(index, to)[usize::from(t.path.path.0)];
            let hop = Hop {
                from: index,
                to,
                path: t.path.path.0,
            };
            self.net.send(self.now, link, hop, &buf[..t.len], faults);
        }
        let mut events = Vec::new();
        while let Some(event) = endpoint.poll_event() {
            events.push(event);
        }
        let mut messages = Vec::new();
        while let Some(message) = endpoint.poll_message() {
            messages.push(message);
        }
        if endpoint.events_dropped() > 0 {
            return Err(self.violation(format!("node {} dropped events", index + 1)));
        }
        self.nodes[index].timeout = endpoint.poll_timeout();
        for message in messages {
            let from = usize::from(message.from.0) - 1;
            self.oracle
                .received(self.now, index, from, &message.payload)?;
        }
        for event in events {
            // The run it is in as of this event (a reincarnation renames it).
            let incarnation = self.nodes[index].incarnation;
            self.observe(index, incarnation, event)?;
        }
        Ok(())
    }

    fn observe(
        &mut self,
        observer: usize,
        incarnation: u64,
        event: Event,
    ) -> Result<(), Violation> {
        match event {
            Event::PathDown(_) => self.path_downs += 1,
            Event::NodeDown { node } => {
                let subject = usize::from(node.0) - 1;
                self.oracle.node_down(
                    observer,
                    subject,
                    self.now,
                    self.scenario.paths(observer, subject),
                )?;
            }
            Event::NodeRestarted { node, new } => {
                self.restarts_seen += 1;
                let current = self.nodes[usize::from(node.0) - 1].incarnation;
                if new.0 > current {
                    return Err(self.violation(format!(
                        "node {} reported {node} restarted as {new}; it is at {current}",
                        observer + 1
                    )));
                }
            }
            Event::Reincarnated { new } => {
                self.reincarnations += 1;
                if new.0 <= incarnation {
                    return Err(self.violation(format!(
                        "node {} reincarnated as {new} while at {incarnation}",
                        observer + 1
                    )));
                }
                self.nodes[observer].incarnation = new.0;
                self.oracle.renamed(observer, incarnation, new.0);
            }
            Event::Delivered { id, .. } => {
                self.oracle.delivered(self.now, observer, incarnation, id)?
            }
            Event::SendFailed { id, .. } => self.oracle.failed(observer, incarnation, id),
            _ => {}
        }
        self.log(format!("node {}: {event}", observer + 1));
        Ok(())
    }

    fn log(&mut self, line: String) {
        let now = Duration::from_micros(self.now.as_micros());
        if let Some(trace) = self.trace.as_mut() {
            trace(format!("{now:>10} {line}"));
        }
    }

    /// After the quiet phase: everyone sees everyone up on every path, at
    /// their current incarnation, and every message is settled.
    fn check_healed(&self) -> Result<(), Violation> {
        for (o, node) in self.nodes.iter().enumerate() {
            let Some(endpoint) = node.endpoint.as_ref() else {
                continue;
            };
            for (s, subject) in self.nodes.iter().enumerate().filter(|(s, _)| *s != o) {
                let peer = endpoint
                    .peer(node_id(s))
                    .ok_or_else(|| self.violation(format!("node {} lost peer {}", o + 1, s + 1)))?;
                if !endpoint.can_talk(node_id(s))
                    || peer.incarnation != Some(Incarnation(subject.incarnation))
                {
                    return Err(self.violation(format!(
                        "after healing, node {} sees node {} as {:?} at {:?}, expected up at incarnation {}",
                        o + 1,
                        s + 1,
                        peer.state,
                        peer.incarnation,
                        subject.incarnation
                    )));
                }
                for p in 0..peer.paths {
                    let at = PathRef {
                        node: node_id(s),
                        path: PathId(u8::try_from(p).unwrap_or(0)),
                    };
                    if endpoint.path(at).map(|st| st.state) != Some(PathState::Up) {
                        return Err(
                            self.violation(format!("after healing, node {} sees {at} down", o + 1))
                        );
                    }
                }
                if peer.queued > 0 {
                    return Err(self.violation(format!(
                        "after healing, node {} still has {} messages queued to {}",
                        o + 1,
                        peer.queued,
                        s + 1
                    )));
                }
            }
        }
        self.oracle.check_settled(self.now)
    }
}
