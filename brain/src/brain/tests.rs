//! The brain's rules, each tried in simulated time on a few nodes whose
//! messages travel instantly and in order, whose scripts take 10 ms and
//! act on pretend applications, and whose membership the test sets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use heartline_core::{Duration, Instant};

use super::*;
use crate::api::{Answer, Request, RequestId};
use crate::message::BrainMsg;
use crate::model::{Change, Init, Model, Place, Resource, Role, State};

const SCRIPT: Duration = Duration::from_millis(10);

/// How a pretend script behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Works,
    Fails,
    /// Cannot be started: the node is out of descriptors.
    Exhausted,
}

/// A pretend cluster.
struct Cluster {
    brains: BTreeMap<u16, Brain>,
    /// What each node's database holds (what a restart starts from).
    disks: BTreeMap<u16, Stored>,
    incarnations: BTreeMap<u16, u64>,
    now: Instant,
    /// Applications running, by node and tag.
    apps: BTreeSet<(u16, String)>,
    /// Scripts under way: when they end, where, which job, how.
    runs: Vec<(Instant, u16, JobId, Action, String)>,
    /// Every script started: when, where, what, on which resource.
    started: Vec<(Instant, u16, Action, String)>,
    behaviour: BTreeMap<(u16, String, Action), Behaviour>,
    /// Messages in flight, in order.
    wire: VecDeque<(u16, u16, BrainMsg)>,
    /// Pairs that can talk.
    connected: BTreeSet<(u16, u16)>,
    replies: BTreeMap<(u16, RequestId), Answer>,
    notices: Vec<(u16, Level, String)>,
    exited: BTreeSet<u16>,
    next_request: u64,
    cfg: fn(u16) -> BrainConfig,
    nodes: BTreeSet<u16>,
    /// Every start of an application, with the other nodes running it then.
    doubles: Vec<String>,
    /// With quorum: the lease; peers that hear each other echo every 100 ms.
    lease: Option<Duration>,
    /// The next echo round.
    next_echo: Option<Instant>,
    /// One-way cuts: `(from, to)`, `to` does not hear `from`.
    deaf: BTreeSet<(u16, u16)>,
    /// Each node's watchdog: it resets the node (its applications die) at
    /// this instant unless fed again; set from `fence_deadline` after every
    /// input, kept after the daemon dies.
    watchdog: BTreeMap<u16, Instant>,
    /// Nodes reset by their watchdog.
    resets: Vec<(u16, Instant)>,
    /// Nodes whose configuration gives other expected votes.
    expected: BTreeMap<u16, u32>,
    /// A witness every node asks for its vote (answers are instant).
    witness: Option<heartline_core::witness::Witness>,
    /// Nodes that cannot reach the witness.
    witness_cut: BTreeSet<u16>,
    /// Fence devices by node, if any.
    fencing: Option<FenceConfig>,
    /// How each fence device behaves (a device not named works in 100 ms).
    devices: BTreeMap<String, (Duration, Behaviour)>,
    /// Fence runs under way: when they end, who asked, the run, the
    /// target, the device.
    fences: Vec<(Instant, u16, FenceId, u16, String)>,
    /// Nodes fenced, by which device, when.
    fenced: Vec<(u16, String, Instant)>,
    /// The fast lease, if any (for `ip/vip`: tags starting `vip`).
    fast: Option<FastLease>,
    /// Every restore run: node, tag, whether the brain called it a
    /// handover.
    restores: Vec<(u16, String, bool)>,
}

fn kit() -> KitInfo {
    KitInfo {
        quick_check_interval: Some(Duration::from_millis(200)),
        recover_attempts: 1,
        problems: Vec::new(),
    }
}

const NAMES: [&str; 5] = ["alpha", "bravo", "charlie", "delta", "echo"];

fn config(node: u16, nodes: &BTreeSet<u16>) -> BrainConfig {
    let mut cfg = BrainConfig::new(node, 1, nodes.clone());
    for &n in nodes {
        if let Some(name) = NAMES.get(usize::from(n) - 1) {
            cfg.names.insert(n, (*name).to_string());
        }
    }
    cfg.kits.insert("gen/app".into(), kit());
    cfg.kits.insert("ip/vip".into(), kit());
    cfg
}

fn pair(a: u16, b: u16) -> (u16, u16) {
    (a.min(b), a.max(b))
}

impl Cluster {
    fn new(n: u16) -> Cluster {
        Cluster::with(n, None)
    }

    /// `n` nodes with quorum (one vote each) and a lease of `lease`.
    fn quorate(n: u16, lease: Duration) -> Cluster {
        Cluster::with(n, Some(lease))
    }

    /// `n` nodes and a witness, a lease of `lease`.
    fn witnessed(n: u16, lease: Duration) -> Cluster {
        Cluster::with_witness(n, Some(lease), true)
    }

    fn with(n: u16, lease: Option<Duration>) -> Cluster {
        Cluster::with_witness(n, lease, false)
    }

    fn with_witness(n: u16, lease: Option<Duration>, witness: bool) -> Cluster {
        Cluster::build(n, lease, witness, None, None)
    }

    /// `n` nodes with quorum, a lease of `lease`, and fence devices.
    fn fencing(n: u16, lease: Duration, fencing: FenceConfig) -> Cluster {
        Cluster::build(n, Some(lease), false, Some(fencing), None)
    }

    /// `n` nodes with quorum, a lease of `lease`, and `fast` for the
    /// hierarchies of tags starting `vip`.
    fn fast(n: u16, lease: Duration, fast: FastLease) -> Cluster {
        Cluster::build(n, Some(lease), false, None, Some(fast))
    }

    fn build(
        n: u16,
        lease: Option<Duration>,
        witness: bool,
        fencing: Option<FenceConfig>,
        fast: Option<FastLease>,
    ) -> Cluster {
        let nodes: BTreeSet<u16> = (1..=n).collect();
        let mut cluster = Cluster {
            brains: BTreeMap::new(),
            disks: BTreeMap::new(),
            incarnations: BTreeMap::new(),
            now: Instant::from_millis(1),
            apps: BTreeSet::new(),
            runs: Vec::new(),
            started: Vec::new(),
            behaviour: BTreeMap::new(),
            wire: VecDeque::new(),
            connected: BTreeSet::new(),
            replies: BTreeMap::new(),
            notices: Vec::new(),
            exited: BTreeSet::new(),
            next_request: 1,
            cfg: |node| {
                let nodes: BTreeSet<u16> = (1..=3).collect();
                config(node, &nodes)
            },
            nodes: nodes.clone(),
            doubles: Vec::new(),
            lease,
            next_echo: lease.map(|_| Instant::from_millis(1)),
            deaf: BTreeSet::new(),
            watchdog: BTreeMap::new(),
            resets: Vec::new(),
            expected: BTreeMap::new(),
            witness: witness.then(|| {
                heartline_core::witness::Witness::new(heartline_core::witness::WitnessConfig {
                    lease: lease.unwrap_or(LEASE),
                    margin: default_margin(lease.unwrap_or(LEASE)),
                    settle: Duration::from_millis(500),
                })
            }),
            witness_cut: BTreeSet::new(),
            fencing,
            devices: BTreeMap::new(),
            fences: Vec::new(),
            fenced: Vec::new(),
            fast,
            restores: Vec::new(),
        };
        for node in &nodes {
            cluster.disks.insert(*node, Stored::default());
        }
        for node in nodes.clone() {
            cluster.boot(node);
        }
        for a in &nodes {
            for b in &nodes {
                if a < b {
                    cluster.connect(*a, *b);
                }
            }
        }
        cluster.settle();
        cluster
    }

    fn config_for(&self, node: u16) -> BrainConfig {
        let mut cfg = config(node, &self.nodes);
        cfg.incarnation = self.incarnations[&node];
        if let Some(lease) = self.lease {
            let mut q = QuorumConfig::majority(
                &self.nodes,
                lease,
                Duration::from_micros(lease.as_micros() / 4),
            );
            if self.witness.is_some() {
                q.expected += 1;
                q.witness = true;
            }
            if let Some(expected) = self.expected.get(&node) {
                q.expected = *expected;
            }
            q.fast.clone_from(&self.fast);
            cfg.quorum = Some(q);
        }
        cfg.fencing.clone_from(&self.fencing);
        let _ = self.cfg;
        cfg
    }

    fn boot(&mut self, node: u16) {
        *self.incarnations.entry(node).or_insert(0) += 1;
        let cfg = self.config_for(node);
        let stored = self.disks[&node].clone();
        let brain = Brain::new(cfg, stored, self.now);
        self.brains.insert(node, brain);
        self.exited.remove(&node);
        self.drain(node);
    }

    /// Node `node`'s daemon dies; with `apps`, its applications too.
    fn crash(&mut self, node: u16, apps: bool) {
        self.brains.remove(&node);
        self.runs.retain(|r| r.1 != node);
        self.wire
            .retain(|(from, to, _)| *from != node && *to != node);
        if apps {
            self.apps.retain(|(n, _)| *n != node);
        }
        let peers: Vec<u16> = self.brains.keys().copied().collect();
        for peer in peers {
            if self.connected.contains(&pair(node, peer)) {
                self.membership(peer, Membership::Down { node });
            }
        }
    }

    /// Starts a crashed node again, connected to every node it was.
    fn restart(&mut self, node: u16) {
        self.boot(node);
        let peers: Vec<u16> = self.brains.keys().copied().filter(|p| *p != node).collect();
        for peer in peers {
            if self.connected.contains(&pair(node, peer)) {
                let inc = self.incarnations[&node];
                self.membership(
                    peer,
                    Membership::Up {
                        node,
                        incarnation: inc,
                    },
                );
                let inc = self.incarnations[&peer];
                self.membership(
                    node,
                    Membership::Up {
                        node: peer,
                        incarnation: inc,
                    },
                );
            }
        }
    }

    fn connect(&mut self, a: u16, b: u16) {
        self.connected.insert(pair(a, b));
        if self.brains.contains_key(&a) && self.brains.contains_key(&b) {
            let (ia, ib) = (self.incarnations[&a], self.incarnations[&b]);
            self.membership(
                a,
                Membership::Up {
                    node: b,
                    incarnation: ib,
                },
            );
            self.membership(
                b,
                Membership::Up {
                    node: a,
                    incarnation: ia,
                },
            );
        }
    }

    fn cut(&mut self, a: u16, b: u16) {
        self.connected.remove(&pair(a, b));
        self.wire.retain(|(f, t, _)| pair(*f, *t) != pair(a, b));
        if self.brains.contains_key(&a) && self.brains.contains_key(&b) {
            self.membership(a, Membership::Down { node: b });
            self.membership(b, Membership::Down { node: a });
        }
    }

    fn membership(&mut self, node: u16, change: Membership) {
        if let Some(brain) = self.brains.get_mut(&node) {
            brain.handle(self.now, Input::Membership(change));
            self.drain(node);
        }
    }

    fn drain(&mut self, node: u16) {
        let Some(brain) = self.brains.get_mut(&node) else {
            return;
        };
        match brain.fence_deadline() {
            // Fed only while the lease lasts: a stale deadline stands.
            Some(at) if at > self.now => {
                self.watchdog.insert(node, at);
            }
            Some(_) => {}
            None => {
                self.watchdog.remove(&node);
            }
        }
        if let Some(persist) = brain.take_persist() {
            let disk = self.disks.get_mut(&node).unwrap();
            disk.model = brain.model().clone();
            if persist.journal_replaced {
                disk.journal.clear();
            }
            disk.journal.extend(persist.journal);
            disk.discarded.extend(persist.discarded);
        }
        let mut answers = Vec::new();
        while let Some(output) = brain.poll_output() {
            match output {
                Output::AskWitness { view } => {
                    if let (Some(w), false) =
                        (self.witness.as_mut(), self.witness_cut.contains(&node))
                    {
                        let set = heartline_core::witness::NodeSet::of(view.iter().copied());
                        let granted = w.request(self.now, node, set).granted;
                        answers.push(Input::Witness {
                            view,
                            sent: self.now,
                            granted,
                        });
                    }
                }
                Output::Run {
                    job,
                    action,
                    resource,
                    handover,
                    ..
                } => {
                    let tag = resource.place.tag.clone();
                    if action == Action::Restore {
                        self.restores.push((node, tag.clone(), handover));
                        let others: Vec<u16> = self
                            .apps
                            .iter()
                            .filter(|(n, t)| *n != node && *t == tag)
                            .map(|(n, _)| *n)
                            .collect();
                        if !others.is_empty() {
                            self.doubles.push(format!(
                                "{tag} started on node {node} at {} while running on {others:?}",
                                self.now.as_micros()
                            ));
                        }
                    }
                    self.started.push((self.now, node, action, tag.clone()));
                    self.runs.push((self.now + SCRIPT, node, job, action, tag));
                }
                Output::Send { to, msg } => {
                    if self.connected.contains(&pair(node, to)) {
                        self.wire.push_back((node, to, msg));
                    }
                }
                Output::Reply { id, answer } => {
                    self.replies.insert((node, id), answer);
                }
                Output::Notice { level, text } => self.notices.push((node, level, text)),
                Output::Exit => {
                    self.exited.insert(node);
                }
                Output::Fence {
                    id,
                    node: target,
                    device,
                    ..
                } => {
                    let took = self
                        .devices
                        .get(&device)
                        .map_or(Duration::from_millis(100), |d| d.0);
                    self.fences
                        .push((self.now + took, node, id, target, device));
                }
            }
        }
        if !answers.is_empty() {
            for answer in answers {
                if let Some(brain) = self.brains.get_mut(&node) {
                    brain.handle(self.now, answer);
                }
            }
            self.drain(node);
        }
    }

    /// Runs until nothing is left to do before `until`.
    fn run_until(&mut self, until: Instant) {
        loop {
            while let Some((from, to, msg)) = self.wire.pop_front() {
                if let Some(brain) = self.brains.get_mut(&to) {
                    brain.handle(self.now, Input::Message { from, msg });
                    self.drain(to);
                }
            }
            let next_run = self.runs.iter().map(|r| r.0).min();
            let next_timer = self.brains.values().filter_map(Brain::poll_timeout).min();
            let next_reset = self.watchdog.values().min().copied();
            let next_fence = self.fences.iter().map(|f| f.0).min();
            let Some(next) = [next_run, next_timer, self.next_echo, next_reset, next_fence]
                .into_iter()
                .flatten()
                .min()
            else {
                break;
            };
            if next > until {
                break;
            }
            self.now = next.max(self.now);
            let due: Vec<(Instant, u16, JobId, Action, String)> = self
                .runs
                .iter()
                .filter(|r| r.0 <= self.now)
                .cloned()
                .collect();
            self.runs.retain(|r| r.0 > self.now);
            if self.next_echo.is_some_and(|at| at <= self.now) {
                self.next_echo = Some(self.now + Duration::from_millis(100));
                self.echo_round();
            }
            let fired: Vec<u16> = self
                .watchdog
                .iter()
                .filter(|(_, at)| **at <= self.now)
                .map(|(n, _)| *n)
                .collect();
            for node in fired {
                self.watchdog.remove(&node);
                if self.apps.iter().any(|(n, _)| *n == node) || self.brains.contains_key(&node) {
                    self.resets.push((node, self.now));
                    self.apps.retain(|(n, _)| *n != node);
                    if self.brains.contains_key(&node) {
                        self.crash(node, true);
                    }
                }
            }
            let (done, pending): (Vec<_>, Vec<_>) =
                self.fences.drain(..).partition(|f| f.0 <= self.now);
            self.fences = pending;
            for (_, by, id, target, device) in done {
                self.fence_done(by, id, target, &device);
            }
            for (_, node, job, action, tag) in due {
                let behaviour = self
                    .behaviour
                    .get(&(node, tag.clone(), action))
                    .copied()
                    .unwrap_or(Behaviour::Works);
                let key = (node, tag.clone());
                if behaviour == Behaviour::Exhausted {
                    if let Some(brain) = self.brains.get_mut(&node) {
                        brain.handle(
                            self.now,
                            Input::ScriptNotRun {
                                job,
                                summary: "cannot run quickCheck: Too many open files (os error 24)"
                                    .into(),
                            },
                        );
                        self.drain(node);
                    }
                    continue;
                }
                let ok = match (action, behaviour) {
                    (_, Behaviour::Fails) => false,
                    (Action::Restore | Action::Recover, _) => {
                        self.apps.insert(key);
                        true
                    }
                    (Action::Remove, _) => {
                        self.apps.remove(&key);
                        true
                    }
                    (Action::QuickCheck, _) => self.apps.contains(&key),
                    (Action::Delete, _) => true,
                };
                let summary = if ok { "exited 0" } else { "exited with code 1" };
                if let Some(brain) = self.brains.get_mut(&node) {
                    brain.handle(
                        self.now,
                        Input::ScriptDone {
                            job,
                            ok,
                            summary: summary.into(),
                        },
                    );
                    self.drain(node);
                }
            }
            let nodes: Vec<u16> = self.brains.keys().copied().collect();
            for node in nodes {
                let due = self.brains[&node]
                    .poll_timeout()
                    .is_some_and(|t| t <= self.now);
                if due {
                    self.brains.get_mut(&node).unwrap().handle_timeout(self.now);
                    self.drain(node);
                }
            }
        }
        self.now = until.max(self.now);
    }

    /// A fence run ends: a working device resets `target` (its
    /// applications die, its daemon too) and confirms.
    fn fence_done(&mut self, by: u16, id: FenceId, target: u16, device: &str) {
        let works = self
            .devices
            .get(device)
            .is_none_or(|d| d.1 == Behaviour::Works);
        // A `half-` device cuts one of two power feeds: it confirms, but
        // the node runs on.
        if works && !device.starts_with("half-") {
            self.fenced.push((target, device.to_string(), self.now));
            self.apps.retain(|(n, _)| *n != target);
            self.watchdog.remove(&target);
            if self.brains.contains_key(&target) {
                self.crash(target, true);
            }
        }
        let summary = if works {
            "exited 0"
        } else {
            "exited with code 1"
        };
        if let Some(brain) = self.brains.get_mut(&by) {
            brain.handle(
                self.now,
                Input::FenceDone {
                    id,
                    ok: works,
                    summary: summary.into(),
                },
            );
            self.drain(by);
        }
    }

    /// Every node hears back from every peer that hears it.
    fn echo_round(&mut self) {
        let echoed = Instant::from_micros(self.now.as_micros().saturating_sub(1_000));
        let nodes: Vec<u16> = self.brains.keys().copied().collect();
        for &a in &nodes {
            for &b in &nodes {
                if a != b && self.connected.contains(&pair(a, b)) && !self.deaf.contains(&(a, b)) {
                    if let Some(brain) = self.brains.get_mut(&a) {
                        brain.handle(self.now, Input::Heard { node: b, echoed });
                    }
                    self.drain(a);
                }
            }
        }
    }

    /// `to` stops hearing `from` (and declares it down); `from` still
    /// hears `to`.
    fn deafen(&mut self, from: u16, to: u16) {
        self.deaf.insert((from, to));
        self.membership(to, Membership::Down { node: from });
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        self.run_until(until);
    }

    /// Long enough for starts, probes and settling.
    fn settle(&mut self) {
        self.advance(Duration::from_secs(3));
    }

    fn ask(&mut self, node: u16, request: Request) -> Answer {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.brains
            .get_mut(&node)
            .unwrap()
            .handle(self.now, Input::Request { id, request });
        self.drain(node);
        for _ in 0..200 {
            if let Some(answer) = self.replies.remove(&(node, id)) {
                return answer;
            }
            self.advance(Duration::from_millis(50));
        }
        panic!("no answer from node {node}");
    }

    fn ok(&mut self, node: u16, request: Request) -> Answer {
        let answer = self.ask(node, request.clone());
        assert!(
            !matches!(answer, Answer::Error { .. }),
            "{request:?} on node {node}: {answer:?}"
        );
        answer
    }

    fn change(&mut self, node: u16, change: Change) -> Answer {
        self.ok(node, Request::Change { change })
    }

    fn create(&mut self, node: u16, tag: &str, priority: u16) {
        let at = *self.brains.keys().next().unwrap();
        self.create_via(at, node, tag, priority);
    }

    fn create_via(&mut self, at: u16, node: u16, tag: &str, priority: u16) {
        let resource = Resource {
            place: Place {
                node,
                tag: tag.into(),
            },
            id: format!("/srv/{tag}"),
            app: if tag.starts_with("vip") { "ip" } else { "gen" }.into(),
            rtype: if tag.starts_with("vip") { "vip" } else { "app" }.into(),
            state: State::Osu,
            init: Init::Autores,
            flags: BTreeSet::new(),
            info: String::new(),
            props: BTreeMap::new(),
            priority,
            role: Role::Stopped,
        };
        self.change(at, Change::CreateResource(resource));
    }

    /// `tag` on every node given, equivalent, priorities in that order.
    fn extend(&mut self, tag: &str, nodes: &[u16]) {
        for (i, node) in nodes.iter().enumerate() {
            self.create(*node, tag, u16::try_from(i + 1).unwrap());
        }
        for pair in nodes.windows(2) {
            let change = Change::CreateEquivalency {
                a: Place {
                    node: pair[0],
                    tag: tag.into(),
                },
                b: Place {
                    node: pair[1],
                    tag: tag.into(),
                },
            };
            let at = *self.brains.keys().next().unwrap();
            self.change(at, change);
        }
    }

    fn running(&self, tag: &str) -> Vec<u16> {
        self.apps
            .iter()
            .filter(|(_, t)| t == tag)
            .map(|(n, _)| *n)
            .collect()
    }

    fn state(&self, at: u16, of: u16, tag: &str) -> State {
        self.brains[&at].model().resources[&Place {
            node: of,
            tag: tag.into(),
        }]
            .state
    }

    fn kill_app(&mut self, node: u16, tag: &str) {
        self.apps.remove(&(node, tag.to_string()));
    }

    fn noticed(&self, text: &str) -> bool {
        self.notices.iter().any(|(_, _, t)| t.contains(text))
    }

    fn assert_never_twice(&self) {
        assert!(self.doubles.is_empty(), "{:#?}", self.doubles);
    }

    fn versions(&self) -> BTreeSet<(crate::model::Version, u64)> {
        self.brains
            .values()
            .map(|b| (b.model().version(), b.model().digest()))
            .collect()
    }
}

fn in_service(c: &mut Cluster, node: u16, tag: &str) -> Answer {
    c.ok(node, Request::InService { tag: tag.into() })
}

#[test]
fn a_hierarchy_starts_on_one_node_and_fails_over_when_that_node_dies() {
    let mut c = Cluster::new(3);
    c.extend("db", &[1, 2, 3]);
    in_service(&mut c, 1, "db");
    assert_eq!(c.running("db"), [1]);
    c.crash(1, true);
    c.advance(Duration::from_secs(1));
    assert_eq!(c.running("db"), [2], "{:#?}", c.notices);
    c.assert_never_twice();
    // Node 1 comes back: it finds nothing running and leaves db on node 2.
    c.restart(1);
    c.settle();
    assert_eq!(c.running("db"), [2]);
    assert_eq!(c.versions().len(), 1, "one configuration");
}

#[test]
fn each_hierarchy_says_where_it_would_go_next_and_a_takeover_says_why_by_name() {
    let mut c = Cluster::new(3);
    c.extend("db", &[1, 2, 3]);
    let key = Place {
        node: 1,
        tag: "db".into(),
    };
    // Out of service: where it would start.
    assert_eq!(c.brains[&2].next_nodes(), [(key.clone(), Ok(1))]);
    in_service(&mut c, 1, "db");
    // In service on alpha: bravo would take it over, as every node sees it.
    for node in 1..=3 {
        assert_eq!(c.brains[&node].next_nodes(), [(key.clone(), Ok(2))]);
    }
    c.crash(1, true);
    c.advance(Duration::from_secs(1));
    assert_eq!(c.running("db"), [2], "{:#?}", c.notices);
    assert!(
        c.noticed(
            "decision: bravo (2) starts db: alpha (1) ran it and is down; the best node that can run it (priority 2)"
        ),
        "{:#?}",
        c.notices
    );
    assert_eq!(c.brains[&3].next_nodes(), [(key.clone(), Ok(3))]);
    c.crash(2, true);
    c.advance(Duration::from_secs(1));
    assert_eq!(c.running("db"), [3]);
    // Nowhere left to go, and why, by name.
    assert_eq!(
        c.brains[&3].next_nodes(),
        [(
            key,
            Err("alpha (1) is not up; bravo (2) is not up".to_string())
        )]
    );
    c.assert_never_twice();
}

#[test]
fn two_losses_close_together_end_on_the_best_node_left() {
    let mut c = Cluster::new(3);
    c.extend("db", &[1, 2, 3]);
    in_service(&mut c, 1, "db");
    c.crash(1, true);
    c.advance(Duration::from_millis(5));
    // Node 2 is starting db (its restore takes 10 ms) when it dies too.
    c.crash(2, true);
    c.advance(Duration::from_secs(1));
    assert_eq!(c.running("db"), [3], "{:#?}", c.notices);
    c.assert_never_twice();
}

#[test]
fn a_restart_with_no_change_leaves_one_configuration() {
    let mut c = Cluster::new(2);
    c.extend("db", &[1, 2]);
    let before = c.versions();
    assert_eq!(before.len(), 1);
    c.crash(2, false);
    c.restart(2);
    c.settle();
    assert_eq!(c.versions(), before, "nothing changed, nothing diverged");
    // A change made on node 2 afterwards is applied on both.
    c.change(
        2,
        Change::SetInit {
            place: Place {
                node: 2,
                tag: "db".into(),
            },
            init: Init::OutOfService,
        },
    );
    assert_eq!(c.versions().len(), 1);
    let answer = c.ask(1, Request::Verify);
    let Answer::Verified { problems, .. } = answer else {
        panic!("{answer:?}")
    };
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn a_change_made_while_a_node_is_down_reaches_it_when_it_returns() {
    let mut c = Cluster::new(3);
    c.extend("db", &[1, 2, 3]);
    c.crash(3, false);
    c.create(1, "web", 1);
    c.restart(3);
    c.settle();
    assert_eq!(c.versions().len(), 1);
    assert!(c.brains[&3].model().resources.contains_key(&Place {
        node: 1,
        tag: "web".into()
    }));
}

#[test]
fn a_change_names_the_nodes_that_did_not_confirm_it() {
    let mut c = Cluster::new(2);
    // Node 2's brain stops reading: the wire to it drops everything.
    c.brains.get_mut(&2).unwrap();
    let id = RequestId(999);
    c.brains.get_mut(&1).unwrap().handle(
        c.now,
        Input::Request {
            id,
            request: Request::Maintenance { on: true },
        },
    );
    c.drain(1);
    // Lose what node 1 sends to node 2.
    c.wire.clear();
    c.advance(Duration::from_secs(6));
    let Some(Answer::Changed { unconfirmed, .. }) = c.replies.remove(&(1, id)) else {
        panic!("{:?}", c.replies)
    };
    assert_eq!(unconfirmed.len(), 1);
    assert_eq!(unconfirmed[0].0, 2);
}

#[test]
fn a_flapping_application_is_recovered_max_failures_times_then_fails_over() {
    let mut c = Cluster::new(2);
    c.extend("db", &[1, 2]);
    in_service(&mut c, 1, "db");
    for _ in 0..3 {
        c.kill_app(1, "db");
        c.advance(Duration::from_millis(400));
        assert_eq!(c.running("db"), [1], "recovered in place");
    }
    c.kill_app(1, "db");
    c.advance(Duration::from_secs(1));
    assert_eq!(c.running("db"), [2], "{:#?}", c.notices);
    assert_eq!(c.state(2, 1, "db"), State::Osf);
    // Cleanup clears the failure and the fail-count; no failback.
    c.ok(
        2,
        Request::Cleanup {
            tag: "db".into(),
            node: Some(1),
        },
    );
    c.advance(Duration::from_millis(100));
    assert_eq!(c.state(1, 1, "db"), State::Osu);
    assert_eq!(c.running("db"), [2]);
    c.assert_never_twice();
}

#[test]
fn a_check_that_cannot_be_spawned_never_fails_a_hierarchy_over() {
    let mut c = Cluster::new(2);
    c.extend("db", &[1, 2]);
    in_service(&mut c, 1, "db");
    c.behaviour
        .insert((1, "db".into(), Action::QuickCheck), Behaviour::Exhausted);
    c.advance(Duration::from_secs(5));
    assert_eq!(c.running("db"), [1], "{:#?}", c.notices);
    assert_eq!(c.state(1, 1, "db"), State::Isp);
    assert_eq!(c.state(2, 1, "db"), State::Isp);
    assert!(c.noticed("quickCheck db could not run"), "{:#?}", c.notices);
    // Once checks run again, a real failure is still caught.
    c.behaviour.remove(&(1, "db".into(), Action::QuickCheck));
    c.kill_app(1, "db");
    c.advance(Duration::from_millis(400));
    assert_eq!(c.running("db"), [1], "recovered in place");
    c.assert_never_twice();
}

#[test]
fn a_failed_stop_blocks_the_hierarchy_everywhere_until_cleanup() {
    let mut c = Cluster::new(2);
    c.extend("db", &[1, 2]);
    in_service(&mut c, 1, "db");
    c.behaviour
        .insert((1, "db".into(), Action::Remove), Behaviour::Fails);
    c.behaviour
        .insert((1, "db".into(), Action::Recover), Behaviour::Fails);
    c.kill_app(1, "db");
    // The quickCheck fails, recovery fails, giving up fails to stop it.
    c.advance(Duration::from_secs(2));
    assert_eq!(c.state(2, 1, "db"), State::Blocked);
    assert!(c.running("db").is_empty() || c.running("db") == [1]);
    assert!(!c.running("db").contains(&2), "never started elsewhere");
    // Even with node 1 gone, node 2 does not start it.
    c.crash(1, false);
    c.advance(Duration::from_secs(2));
    assert!(!c.running("db").contains(&2));
    assert!(c.noticed("BLOCKED"));
    // Node 1 returns; an administrator makes sure and cleans up: it runs
    // again on one node.
    c.behaviour.clear();
    c.restart(1);
    c.settle();
    assert!(!c.running("db").contains(&2));
    c.ok(
        2,
        Request::Cleanup {
            tag: "db".into(),
            node: Some(1),
        },
    );
    c.settle();
    assert_eq!(c.running("db").len(), 1, "{:#?}", c.notices);
}

#[test]
fn a_failed_start_is_unwound_and_the_next_node_takes_it() {
    let mut c = Cluster::new(2);
    c.extend("db", &[1, 2]);
    c.behaviour
        .insert((1, "db".into(), Action::Restore), Behaviour::Fails);
    let answer = c.ask(1, Request::InService { tag: "db".into() });
    assert!(matches!(answer, Answer::Error { .. }), "{answer:?}");
    c.settle();
    assert_eq!(c.state(2, 1, "db"), State::Osf);
    assert_eq!(c.running("db"), [2], "{:#?}", c.notices);
}

#[test]
fn a_partition_runs_it_on_both_sides_and_the_heal_ends_one() {
    let mut c = Cluster::new(2);
    c.extend("db", &[1, 2]);
    in_service(&mut c, 1, "db");
    c.cut(1, 2);
    c.advance(Duration::from_secs(1));
    assert_eq!(c.running("db"), [1, 2], "no quorum yet: both sides");
    c.connect(1, 2);
    c.settle();
    assert_eq!(c.running("db").len(), 1, "{:#?}", c.notices);
    assert_eq!(c.brains[&1].stats().multi_active, 1);
    let Answer::Verified { problems, .. } = c.ask(2, Request::Verify) else {
        panic!()
    };
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn after_a_heal_the_greater_configuration_wins_and_the_other_is_listed() {
    let mut c = Cluster::new(3);
    c.extend("db", &[1, 2, 3]);
    c.cut(1, 2);
    c.cut(1, 3);
    c.advance(Duration::from_secs(2));
    // Each side makes a change: node 1 alone, nodes 2 and 3 together.
    c.create(1, "left", 5);
    c.create_via(2, 2, "right", 5);
    c.connect(1, 2);
    c.connect(1, 3);
    c.settle();
    assert_eq!(c.versions().len(), 1, "one configuration after the heal");
    let model = c.brains[&1].model().clone();
    let left = model.resources.contains_key(&Place {
        node: 1,
        tag: "left".into(),
    });
    let right = model.resources.contains_key(&Place {
        node: 2,
        tag: "right".into(),
    });
    assert!(
        left != right,
        "exactly one side's change stands: {left} {right} {:#?}",
        c.notices
    );
    let discarded: Vec<&str> = c
        .brains
        .values()
        .flat_map(|b| b.discarded().iter().map(String::as_str))
        .collect();
    assert_eq!(discarded.len(), 1, "{discarded:?}");
    let lost = if left { "right" } else { "left" };
    assert!(discarded[0].contains(lost), "{discarded:?}");
}

#[test]
fn a_clean_stop_moves_its_hierarchies_and_never_runs_one_twice() {
    let mut c = Cluster::new(2);
    c.extend("db", &[1, 2]);
    in_service(&mut c, 1, "db");
    let brain = c.brains.get_mut(&1).unwrap();
    brain.handle(c.now, Input::Shutdown);
    c.drain(1);
    c.advance(Duration::from_secs(1));
    assert!(c.exited.contains(&1));
    assert_eq!(c.running("db"), [2]);
    c.assert_never_twice();
}

#[test]
fn on_stop_stop_keeps_them_out_of_service() {
    let mut c = Cluster::new(2);
    c.extend("db", &[1, 2]);
    in_service(&mut c, 1, "db");
    c.brains.get_mut(&1).unwrap().cfg.on_stop = OnStop::Stop;
    c.brains.get_mut(&1).unwrap().handle(c.now, Input::Shutdown);
    c.drain(1);
    c.advance(Duration::from_secs(1));
    assert!(c.exited.contains(&1));
    c.crash(1, false);
    c.advance(Duration::from_secs(1));
    assert!(c.running("db").is_empty());
    assert_eq!(
        c.brains[&2].groups().iter().next().unwrap().role,
        Role::Stopped
    );
}

#[test]
fn standby_moves_hierarchies_away_and_unstandby_does_not_move_them_back() {
    let mut c = Cluster::new(2);
    c.extend("db", &[1, 2]);
    in_service(&mut c, 1, "db");
    c.ok(2, Request::Standby { node: 1, on: true });
    c.settle();
    assert_eq!(c.running("db"), [2], "{:#?}", c.notices);
    c.ok(2, Request::Standby { node: 1, on: false });
    c.settle();
    assert_eq!(c.running("db"), [2]);
    c.assert_never_twice();
}

#[test]
fn maintenance_stops_checks_failovers_and_administrative_actions() {
    let mut c = Cluster::new(2);
    c.extend("db", &[1, 2]);
    in_service(&mut c, 1, "db");
    c.ok(1, Request::Maintenance { on: true });
    c.kill_app(1, "db");
    c.settle();
    assert!(c.running("db").is_empty(), "not recovered");
    let refused = c.ask(2, Request::InService { tag: "db".into() });
    assert!(
        matches!(&refused, Answer::Error { message, .. } if message.contains("maintenance")),
        "{refused:?}"
    );
    c.crash(1, false);
    c.settle();
    assert!(c.running("db").is_empty(), "no failover in maintenance");
    c.restart(1);
    c.settle();
    // Off: nodes probe, then the coordinator starts what should run.
    c.ok(2, Request::Maintenance { on: false });
    c.settle();
    assert_eq!(c.running("db").len(), 1, "{:#?}", c.notices);
}

#[test]
fn a_start_is_a_handover_only_when_every_other_node_says_it_stopped_what_it_ran() {
    let mut c = Cluster::new(3);
    c.extend("vip", &[1, 2, 3]);
    in_service(&mut c, 1, "vip");
    // A first start: nobody was seen running it.
    assert_eq!(c.restores.last(), Some(&(1, "vip".to_string(), false)));
    c.ok(
        1,
        Request::Switchover {
            tag: "vip".into(),
            to: 2,
        },
    );
    // Node 1 ran it and says it stopped; node 3 never ran it.
    assert_eq!(c.restores.last(), Some(&(2, "vip".to_string(), true)));
    assert_eq!(c.running("vip"), [2]);
    // Its holder lost: nobody can say it stopped.
    c.crash(2, true);
    c.advance(Duration::from_secs(1));
    assert_eq!(c.running("vip"), [1], "{:#?}", c.notices);
    assert_eq!(c.restores.last(), Some(&(1, "vip".to_string(), false)));
    // Back: node 2 restarted (it runs nothing), node 1 hands it over.
    c.restart(2);
    c.settle();
    c.ok(
        1,
        Request::Switchover {
            tag: "vip".into(),
            to: 3,
        },
    );
    assert_eq!(c.restores.last(), Some(&(3, "vip".to_string(), true)));
    c.assert_never_twice();
}

#[test]
fn a_start_after_a_failed_start_elsewhere_is_no_handover() {
    let mut c = Cluster::new(2);
    c.extend("vip", &[1, 2]);
    c.behaviour
        .insert((1, "vip".into(), Action::Restore), Behaviour::Fails);
    let _ = c.ask(1, Request::InService { tag: "vip".into() });
    c.settle();
    // Node 1's restore failed (it was in service, unprotected, until its
    // remove): it never ran, so node 2's start probes.
    assert_eq!(c.running("vip"), [2], "{:#?}", c.notices);
    assert_eq!(
        c.restores,
        [(1, "vip".to_string(), false), (2, "vip".to_string(), false)]
    );
}

#[test]
fn a_switchover_stops_it_then_starts_it_and_reports_every_step() {
    let mut c = Cluster::new(3);
    c.extend("db", &[1, 2, 3]);
    in_service(&mut c, 1, "db");
    let Answer::Done { steps } = c.ok(
        1,
        Request::Switchover {
            tag: "db".into(),
            to: 3,
        },
    ) else {
        panic!()
    };
    assert!(steps.iter().any(|s| s.contains("remove db")), "{steps:?}");
    assert!(
        steps.iter().any(|s| s.contains("charlie (3): restore db")),
        "{steps:?}"
    );
    assert_eq!(c.running("db"), [3]);
    c.assert_never_twice();
    let refused = c.ask(
        1,
        Request::Switchover {
            tag: "db".into(),
            to: 3,
        },
    );
    assert!(matches!(refused, Answer::Error { .. }));
}

#[test]
fn in_service_where_it_runs_elsewhere_is_refused_and_out_of_service_stops_it() {
    let mut c = Cluster::new(2);
    c.extend("db", &[1, 2]);
    in_service(&mut c, 1, "db");
    let refused = c.ask(2, Request::InService { tag: "db".into() });
    assert!(
        matches!(&refused, Answer::Error { message, .. } if message.contains("switchover")),
        "{refused:?}"
    );
    c.ok(2, Request::OutOfService { tag: "db".into() });
    assert!(c.running("db").is_empty());
    // Its role is stopped: losing node 1 starts nothing.
    c.crash(1, false);
    c.settle();
    assert!(c.running("db").is_empty());
}

#[test]
fn a_restarted_daemon_finds_its_leftovers_and_one_copy_is_stopped() {
    let mut c = Cluster::new(2);
    c.extend("db", &[1, 2]);
    in_service(&mut c, 1, "db");
    // The daemon alone dies; its application goes on, and node 2 takes
    // over (no fencing yet): two copies.
    c.crash(1, false);
    c.settle();
    assert_eq!(c.running("db"), [1, 2]);
    c.doubles.clear();
    c.restart(1);
    c.settle();
    assert_eq!(c.running("db").len(), 1, "{:#?}", c.notices);
    c.assert_never_twice();
}

#[test]
fn init_out_of_service_holds_a_node_until_an_administrator_acts() {
    let mut c = Cluster::new(2);
    c.extend("db", &[1, 2]);
    c.change(
        1,
        Change::SetInit {
            place: Place {
                node: 1,
                tag: "db".into(),
            },
            init: Init::OutOfService,
        },
    );
    in_service(&mut c, 2, "db");
    c.crash(1, false);
    c.restart(1);
    c.settle();
    // Node 2 dies: node 1 holds db out, so nothing runs.
    c.crash(2, true);
    c.settle();
    assert!(c.running("db").is_empty(), "{:#?}", c.notices);
    in_service(&mut c, 1, "db");
    assert_eq!(c.running("db"), [1]);
}

#[test]
fn a_quick_check_interval_property_overrides_the_kit() {
    let mut c = Cluster::new(1);
    c.create(1, "db", 1);
    c.change(
        1,
        Change::SetProp {
            place: Place {
                node: 1,
                tag: "db".into(),
            },
            name: "quick_check_interval".into(),
            value: Some("5s".into()),
        },
    );
    in_service(&mut c, 1, "db");
    c.kill_app(1, "db");
    c.advance(Duration::from_secs(2));
    assert!(c.running("db").is_empty(), "not checked yet");
    c.advance(Duration::from_secs(4));
    assert_eq!(c.running("db"), [1], "checked and recovered");
    let refused = c.ask(
        1,
        Request::Change {
            change: Change::SetProp {
                place: Place {
                    node: 1,
                    tag: "db".into(),
                },
                name: "quick_check_interval".into(),
                value: Some("often".into()),
            },
        },
    );
    assert!(matches!(refused, Answer::Error { .. }));
}

#[test]
fn a_check_now_hint_checks_at_once_what_runs_here_and_nothing_else() {
    let mut c = Cluster::new(2);
    c.extend("db", &[1, 2]);
    c.change(
        1,
        Change::SetProp {
            place: Place {
                node: 1,
                tag: "db".into(),
            },
            name: "quick_check_interval".into(),
            value: Some("30s".into()),
        },
    );
    in_service(&mut c, 1, "db");
    c.kill_app(1, "db");
    c.advance(Duration::from_secs(1));
    assert!(c.running("db").is_empty(), "not checked yet");
    let hint = |c: &mut Cluster, node: u16| {
        if let Some(brain) = c.brains.get_mut(&node) {
            brain.handle(
                c.now,
                Input::CheckNow {
                    tags: vec!["db".into()],
                    why: "eth1: link changed".into(),
                },
            );
        }
        c.drain(node);
    };
    hint(&mut c, 1);
    c.advance(Duration::from_millis(100));
    assert!(
        c.noticed("eth1: link changed: checking db now"),
        "{:#?}",
        c.notices
    );
    assert_eq!(
        c.running("db"),
        [1],
        "checked at once and recovered in place"
    );
    // A hint while an action holds it (the check that finds it dead, then
    // the recovery it starts): checked again the moment the recovery ends,
    // not at the next interval.
    c.kill_app(1, "db");
    hint(&mut c, 1);
    c.advance(Duration::from_millis(5));
    hint(&mut c, 1);
    assert!(
        c.noticed("eth1: link changed: checking db once its current action ends"),
        "{:#?}",
        c.notices
    );
    c.advance(Duration::from_millis(200));
    assert_eq!(c.running("db"), [1], "recovered in place again");
    let recovered = c
        .started
        .iter()
        .rposition(|(_, n, a, t)| *n == 1 && *a == Action::Recover && t == "db")
        .expect("a recovery");
    assert!(
        c.started[recovered..]
            .iter()
            .any(|(_, n, a, t)| *n == 1 && *a == Action::QuickCheck && t == "db"),
        "checked after the recovery: {:#?}",
        c.started
    );
    // On node 2, where db is out of service, the same hint does nothing.
    let before = c.notices.len();
    hint(&mut c, 2);
    c.advance(Duration::from_millis(100));
    assert_eq!(c.notices.len(), before, "{:#?}", &c.notices[before..]);
    assert_eq!(c.running("db"), [1]);
    c.assert_never_twice();
}

#[test]
fn a_node_joining_with_a_greater_configuration_gives_it_to_the_coordinator() {
    let mut c = Cluster::new(2);
    c.extend("db", &[1, 2]);
    c.crash(1, false);
    c.create(2, "web", 1);
    let newer = c.brains[&2].model().version();
    c.restart(1);
    c.settle();
    assert_eq!(c.versions().len(), 1);
    assert_eq!(c.brains[&1].model().version(), newer);
    assert!(c.brains[&1].discarded().is_empty());
}

#[test]
fn resync_takes_the_coordinators_copy() {
    let mut c = Cluster::new(2);
    c.extend("db", &[1, 2]);
    let Answer::Done { steps } = c.ok(2, Request::Resync) else {
        panic!()
    };
    assert!(
        steps[0].contains("took alpha (1)'s configuration"),
        "{steps:?}"
    );
    let refused = c.ask(1, Request::Resync);
    assert!(matches!(refused, Answer::Error { .. }));
}

#[test]
fn plan_is_pure_and_fast_enough_to_check() {
    let mut c = Cluster::new(2);
    c.extend("db", &[1, 2]);
    let brain = c.brains.get_mut(&1).unwrap();
    let flags = brain.flags();
    let busy = brain.busy();
    let a = brain.plan(&flags, &busy);
    let b = brain.plan(&flags, &busy);
    assert_eq!(a, b);
    let _ = Model::default();
}

#[test]
fn a_move_survives_a_new_coordinator_joining_midway() {
    let mut c = Cluster::new(3);
    c.extend("db", &[2, 3]);
    c.crash(1, false);
    c.settle();
    // Node 2 coordinates; node 3 asks for db; node 1 comes back (and
    // becomes the coordinator) before anything ran.
    let id = RequestId(500);
    c.brains.get_mut(&3).unwrap().handle(
        c.now,
        Input::Request {
            id,
            request: Request::InService { tag: "db".into() },
        },
    );
    c.drain(3);
    c.restart(1);
    c.settle();
    let answer = c.replies.remove(&(3, id));
    assert!(
        matches!(answer, Some(Answer::Done { .. })),
        "{answer:?} {:#?}",
        c.notices
    );
    assert_eq!(c.running("db"), [3]);
}

// Quorum, leases and the watchdog.

const LEASE: Duration = Duration::from_secs(2);

/// The instant node `node` started `tag`, if it runs it.
fn started_at(c: &Cluster, node: u16, tag: &str) -> bool {
    c.apps.contains(&(node, tag.to_string()))
}

#[test]
fn a_minority_runs_on_until_its_lease_less_the_stop_bound_and_the_majority_takes_over_after() {
    let mut c = Cluster::quorate(3, LEASE);
    c.extend("db", &[1, 2, 3]);
    in_service(&mut c, 1, "db");
    assert_eq!(c.running("db"), [1]);
    assert!(
        c.brains[&1]
            .quorum()
            .is_some_and(|q| q.quorate && q.votes == 3)
    );
    let cut = c.now;
    c.cut(1, 2);
    c.cut(1, 3);
    c.advance(Duration::from_millis(100));
    assert!(c.noticed("QUORUM LOST"));
    assert!(c.noticed("runs on for"), "{:#?}", c.notices);
    // Its peers count it expired only after its lease: it may run on
    // (quorum may come back) until the lease less the stop bound (here a
    // quarter of it).
    assert_eq!(c.running("db"), [1], "{:#?}", c.notices);
    c.run_until(cut + Duration::from_micros(LEASE.as_micros() * 3 / 4) + SCRIPT * 2);
    assert!(
        c.running("db").is_empty(),
        "node 1 stopped db by its lease less the stop bound: {:#?}",
        c.notices
    );
    // The majority waits for node 1's lease, then takes over.
    c.run_until(cut + LEASE);
    assert!(!started_at(&c, 2, "db"), "not before node 1's lease ends");
    c.advance(Duration::from_secs(1));
    assert_eq!(c.running("db"), [2], "{:#?}", c.notices);
    c.assert_never_twice();
    assert!(
        c.resets.is_empty(),
        "a clean stop needs no reset: {:?}",
        c.resets
    );
    // Heal: node 1 rejoins with nothing running; db stays on node 2.
    c.connect(1, 2);
    c.connect(1, 3);
    c.settle();
    assert_eq!(c.running("db"), [2]);
    c.assert_never_twice();
}

/// A fast lease of 400 ms (stop bound 100 ms) for `ip/vip` (tags `vip*`).
fn fast_lease() -> FastLease {
    let lease = Duration::from_millis(400);
    FastLease {
        kinds: BTreeSet::from(["ip/vip".to_string()]),
        lease,
        stop_bound: Duration::from_millis(100),
        drift_margin: default_margin(lease),
    }
}

#[test]
fn a_fast_hierarchy_is_taken_over_at_its_fast_lease_while_a_slow_one_waits_for_the_quorum_lease() {
    let fast = fast_lease();
    let mut c = Cluster::fast(3, LEASE, fast.clone());
    c.extend("vip", &[1, 2, 3]);
    c.extend("db", &[1, 2, 3]);
    in_service(&mut c, 1, "vip");
    in_service(&mut c, 1, "db");
    assert_eq!((c.running("vip"), c.running("db")), (vec![1], vec![1]));
    let cut = c.now;
    c.cut(1, 2);
    c.cut(1, 3);
    // Node 1 stops the address once its fast lease, less its stop bound,
    // has passed without a renewal; the database runs on.
    c.run_until(cut + Duration::from_millis(300) + SCRIPT * 2);
    assert!(c.running("vip").is_empty(), "{:#?}", c.notices);
    assert_eq!(c.running("db"), [1]);
    assert!(c.noticed("fast lease was not renewed"), "{:#?}", c.notices);
    // The majority takes the address over once node 1's fast lease ended,
    // not before.
    c.run_until(cut + fast.lease);
    assert!(!started_at(&c, 2, "vip"), "not before node 1's fast lease");
    c.advance(Duration::from_millis(300));
    assert_eq!(c.running("vip"), [2], "{:#?}", c.notices);
    assert_eq!(c.running("db"), [1], "the database waits for its lease");
    // The database, after the quorum lease.
    c.run_until(cut + LEASE);
    assert!(!started_at(&c, 2, "db"), "not before node 1's lease ends");
    c.advance(Duration::from_secs(1));
    assert_eq!(c.running("db"), [2], "{:#?}", c.notices);
    c.assert_never_twice();
    assert!(c.resets.is_empty(), "clean stops: {:?}", c.resets);
    // Heal: both stay where they are.
    c.connect(1, 2);
    c.connect(1, 3);
    c.settle();
    assert_eq!((c.running("vip"), c.running("db")), (vec![2], vec![2]));
    c.assert_never_twice();
}

#[test]
fn a_dead_daemon_holding_a_fast_hierarchy_is_reset_by_its_fast_lease_before_the_takeover() {
    let fast = fast_lease();
    let mut c = Cluster::fast(3, LEASE, fast.clone());
    c.extend("vip", &[1, 2, 3]);
    in_service(&mut c, 1, "vip");
    let deadline = c.brains[&1].fence_deadline().expect("vip runs: a deadline");
    assert!(
        deadline <= c.now + fast.lease,
        "the fast lease's end, not the quorum lease's: {deadline:?} at {:?}",
        c.now
    );
    // kill -9 of the daemon alone: the address stays, unwatched.
    c.crash(1, false);
    c.advance(Duration::from_millis(200));
    assert_eq!(c.running("vip"), [1], "nobody may take it yet");
    c.advance(Duration::from_millis(800));
    assert_eq!(c.running("vip"), [2], "{:#?}", c.notices);
    assert!(
        c.resets.iter().any(|(n, at)| *n == 1 && *at <= deadline),
        "node 1 was reset by its fast deadline {deadline:?}: {:?}",
        c.resets
    );
    c.assert_never_twice();
}

#[test]
fn without_a_fast_hierarchy_the_deadline_is_the_quorum_lease() {
    let mut c = Cluster::fast(3, LEASE, fast_lease());
    c.extend("db", &[1, 2, 3]);
    // A hierarchy with one resource of another kind is not fast.
    c.create(1, "vip-db", 1);
    c.change(
        1,
        Change::CreateDependency {
            node: 1,
            parent: "db".into(),
            child: "vip-db".into(),
        },
    );
    in_service(&mut c, 1, "db");
    assert_eq!(c.running("vip-db"), [1]);
    let deadline = c.brains[&1].fence_deadline().unwrap();
    assert!(
        deadline > c.now + Duration::from_secs(1),
        "{deadline:?} at {:?}",
        c.now
    );
    let cut = c.now;
    c.cut(1, 2);
    c.cut(1, 3);
    c.run_until(cut + Duration::from_millis(600));
    assert_eq!(c.running("vip-db"), [1], "it waits with its hierarchy");
}

#[test]
fn two_nodes_without_a_witness_never_fail_over() {
    let mut c = Cluster::quorate(2, LEASE);
    c.extend("db", &[1, 2]);
    in_service(&mut c, 1, "db");
    c.cut(1, 2);
    c.advance(Duration::from_secs(5));
    assert!(
        c.running("db").is_empty(),
        "neither half has quorum: {:#?}",
        c.notices
    );
    c.assert_never_twice();
    let q = c.brains[&2].quorum().unwrap();
    assert!(!q.quorate && q.votes == 1 && q.expected == 2, "{q:?}");
    c.connect(1, 2);
    c.settle();
    assert_eq!(
        c.running("db"),
        [1],
        "quorum back: db runs again, on the best node"
    );
}

#[test]
fn a_dead_daemon_is_taken_over_only_after_its_watchdog_ended_its_applications() {
    let mut c = Cluster::quorate(3, LEASE);
    c.extend("db", &[1, 2, 3]);
    in_service(&mut c, 1, "db");
    let deadline = c.brains[&1].fence_deadline().expect("db runs: a deadline");
    // kill -9 of the daemon alone: db runs on, unwatched.
    c.crash(1, false);
    c.advance(Duration::from_millis(500));
    assert_eq!(c.running("db"), [1], "nobody may start it yet");
    c.advance(Duration::from_secs(3));
    assert_eq!(c.running("db"), [2], "{:#?}", c.notices);
    assert!(
        c.resets.iter().any(|(n, at)| *n == 1 && *at <= deadline),
        "node 1 was reset by its deadline {deadline:?}: {:?}",
        c.resets
    );
    c.assert_never_twice();
}

#[test]
fn a_one_way_cut_costs_the_deaf_side_its_lease() {
    let mut c = Cluster::quorate(3, LEASE);
    c.extend("db", &[1, 2, 3]);
    in_service(&mut c, 1, "db");
    // Nodes 2 and 3 stop hearing node 1; node 1 still hears them, so its
    // membership says all is well, but nothing it sends is echoed.
    c.deafen(1, 2);
    c.deafen(1, 3);
    c.advance(Duration::from_secs(4));
    assert_eq!(c.running("db"), [2], "{:#?}", c.notices);
    c.assert_never_twice();
    assert!(
        c.noticed("QUORUM LOST"),
        "node 1 knew it had lost its lease"
    );
}

#[test]
fn without_quorum_configuration_changes_are_refused_and_reads_work() {
    let mut c = Cluster::quorate(3, LEASE);
    c.extend("db", &[1, 2, 3]);
    c.cut(1, 2);
    c.cut(1, 3);
    c.advance(Duration::from_millis(500));
    let answer = c.ask(
        1,
        Request::Change {
            change: Change::SetStandby { node: 3, on: true },
        },
    );
    let Answer::Error { message, .. } = answer else {
        panic!("{answer:?}")
    };
    assert!(
        message.contains("no quorum") && message.contains("1 of 3"),
        "{message}"
    );
    assert!(matches!(c.ask(1, Request::Report), Answer::Report(_)));
    assert!(matches!(c.ask(1, Request::Lcd), Answer::Model { .. }));
    // The majority still changes it.
    c.change(2, Change::SetStandby { node: 3, on: true });
}

#[test]
fn a_cold_start_waits_to_see_every_node_once() {
    let mut c = Cluster::quorate(3, LEASE);
    c.extend("db", &[1, 2, 3]);
    in_service(&mut c, 1, "db");
    for n in [1, 2, 3] {
        c.crash(n, true);
    }
    c.restart(1);
    c.restart(2);
    c.advance(Duration::from_secs(5));
    assert!(
        c.running("db").is_empty(),
        "quorate, but node 3 not yet seen: {:#?}",
        c.notices
    );
    assert!(c.brains[&1].quorum().unwrap().waiting_for_all);
    assert!(c.noticed("wait_for_all"));
    c.restart(3);
    c.settle();
    assert_eq!(c.running("db"), [1]);
    // Not a cold start: node 2 ran on and saw node 3 since it started, so
    // node 1 restarting beside it while node 3 is down does not wait.
    c.crash(3, true);
    c.crash(1, true);
    c.advance(Duration::from_secs(4));
    assert!(c.running("db").is_empty(), "1 of 3: no quorum");
    c.restart(1);
    c.settle();
    assert_eq!(c.running("db"), [1], "{:#?}", c.notices);
    c.assert_never_twice();
}

#[test]
fn a_blocked_resource_on_a_fenced_node_no_longer_blocks() {
    let mut c = Cluster::quorate(3, LEASE);
    c.extend("db", &[1, 2, 3]);
    in_service(&mut c, 1, "db");
    c.behaviour
        .insert((1, "db".into(), Action::Remove), Behaviour::Fails);
    // The partition makes node 1 stop db; the stop fails: BLOCKED, db may
    // still run there. The watchdog resets node 1 at its lease's end; only
    // then does the majority start db.
    c.cut(1, 2);
    c.cut(1, 3);
    c.advance(Duration::from_secs(5));
    assert!(c.resets.iter().any(|(n, _)| *n == 1), "{:?}", c.resets);
    assert_eq!(c.running("db"), [2], "{:#?}", c.notices);
    c.assert_never_twice();
}

#[test]
fn a_node_that_takes_a_new_incarnation_while_running_is_seen_restarted_and_keeps_its_hierarchy() {
    let mut c = Cluster::quorate(3, LEASE);
    c.extend("db", &[2, 1, 3]);
    in_service(&mut c, 2, "db");
    // Node 2's core heard a peer name a larger earlier run of it: it takes
    // the next incarnation, and the peers see a restart.
    let new = c.incarnations[&2] + 1_000;
    c.incarnations.insert(2, new);
    c.membership(2, Membership::Reincarnated { incarnation: new });
    for peer in [1, 3] {
        c.membership(
            peer,
            Membership::Restarted {
                node: 2,
                incarnation: new,
            },
        );
    }
    c.settle();
    assert_eq!(c.running("db"), [2], "{:#?}", c.notices);
    // The views agree again: the coordinator can move it.
    let answer = c.ok(
        1,
        Request::Switchover {
            tag: "db".into(),
            to: 3,
        },
    );
    assert!(!matches!(answer, Answer::Error { .. }), "{answer:?}");
    c.settle();
    assert_eq!(c.running("db"), [3], "{:#?}", c.notices);
    c.assert_never_twice();
}

#[test]
fn a_node_that_disagrees_on_expected_votes_counts_alone() {
    let mut c = Cluster::quorate(3, LEASE);
    c.extend("db", &[1, 2, 3]);
    in_service(&mut c, 1, "db");
    // Node 3 restarts with a configuration expecting 5 votes.
    c.expected.insert(3, 5);
    c.crash(3, true);
    c.restart(3);
    c.settle();
    assert!(
        c.noticed("charlie (3) expects 5 votes, this node 3"),
        "{:#?}",
        c.notices
    );
    assert!(
        c.noticed(
            "REFUSED TO START: alpha (1) announces 3 expected votes, this node's configuration 5"
        ),
        "{:#?}",
        c.notices
    );
    assert_eq!(c.running("db"), [1], "nodes 1 and 2 agree: a majority of 3");
    assert!(c.brains[&1].quorum().unwrap().quorate);
    let q = c.brains[&3].quorum().unwrap();
    assert!(!q.quorate && q.refused == Some((1, 3)), "{q:?}");
    // Nodes 1 and 2 are lost: node 3 must not take over.
    c.crash(1, true);
    c.crash(2, true);
    c.advance(Duration::from_secs(5));
    assert!(c.running("db").is_empty(), "{:#?}", c.notices);
    c.restart(1);
    c.restart(2);
    // Fixed: quorum again.
    c.expected.clear();
    c.crash(3, true);
    c.restart(3);
    c.settle();
    assert_eq!(c.running("db"), [1], "{:#?}", c.notices);
    c.assert_never_twice();
}

#[test]
fn a_node_configured_as_a_majority_of_its_own_refuses_to_start() {
    let mut c = Cluster::quorate(3, LEASE);
    c.extend("db", &[1, 2, 3]);
    in_service(&mut c, 1, "db");
    // Node 3 restarts with a configuration in which its vote alone is a
    // majority: without the refusal it would hold quorum whatever it
    // hears, and take db over once nodes 1 and 2 are lost.
    c.expected.insert(3, 1);
    c.crash(3, true);
    c.restart(3);
    c.settle();
    let q = c.brains[&3].quorum().unwrap();
    assert!(!q.quorate && q.refused.is_some(), "{q:?}");
    // Node 1's daemon dies (db runs on there until its watchdog), and
    // node 2 goes: node 3 never starts db, however long it waits.
    c.crash(1, false);
    c.crash(2, true);
    c.advance(Duration::from_secs(30));
    assert!(!c.brains[&3].quorum().unwrap().quorate);
    assert!(!c.running("db").contains(&3), "{:#?}", c.notices);
    c.assert_never_twice();
}

#[test]
fn a_node_that_held_quorum_with_agreeing_peers_only_ignores_one_configured_apart() {
    let mut c = Cluster::quorate(3, LEASE);
    c.extend("db", &[1, 2, 3]);
    in_service(&mut c, 1, "db");
    c.expected.insert(3, 5);
    c.crash(3, true);
    c.restart(3);
    c.settle();
    for n in [1, 2] {
        let q = c.brains[&n].quorum().unwrap();
        assert!(q.quorate && q.refused.is_none(), "node {n}: {q:?}");
    }
    assert!(c.noticed("charlie (3) expects 5 votes, this node 3"));
    assert_eq!(c.running("db"), [1]);
    c.assert_never_twice();
}

#[test]
fn who_is_configured_apart_does_not_depend_on_the_order_nodes_are_heard_in() {
    let mut c = Cluster::quorate(3, LEASE);
    c.extend("db", &[1, 2, 3]);
    in_service(&mut c, 1, "db");
    for n in [1, 2, 3] {
        c.crash(n, true);
    }
    // A cold start in which node 1 hears node 3, configured apart, before
    // node 2: the two it has heard are one against one, which tells
    // nothing yet.
    c.expected.insert(3, 5);
    c.restart(1);
    c.restart(3);
    c.settle();
    let q = c.brains[&1].quorum().unwrap();
    assert!(
        !q.quorate && q.refused.is_none() && q.undecided == Some((3, 5)),
        "{q:?}"
    );
    assert!(c.noticed("charlie (3) announces 5 expected votes, this node's configuration 3"));
    let q = c.brains[&3].quorum().unwrap();
    assert!(!q.quorate && q.refused.is_none(), "{q:?}");
    // Node 2 agrees with node 1: two against one.
    c.restart(2);
    c.settle();
    for n in [1, 2] {
        let q = c.brains[&n].quorum().unwrap();
        assert!(
            q.quorate && q.refused.is_none() && q.undecided.is_none(),
            "node {n}: {q:?}"
        );
    }
    let q = c.brains[&3].quorum().unwrap();
    assert!(!q.quorate && q.refused.is_some(), "{q:?}");
    assert_eq!(c.running("db"), [1], "{:#?}", c.notices);
    // Heard in the other order, the same judgment.
    for n in [1, 2, 3] {
        c.crash(n, true);
    }
    c.advance(Duration::from_secs(4));
    c.restart(3);
    c.restart(2);
    c.restart(1);
    c.settle();
    for n in [1, 2] {
        assert!(c.brains[&n].quorum().unwrap().quorate, "node {n}");
    }
    assert!(c.brains[&3].quorum().unwrap().refused.is_some());
    c.assert_never_twice();
}

#[test]
fn a_node_configured_apart_with_the_lowest_id_does_not_keep_the_others_from_running() {
    // Node 1 coordinates by its id, but its [quorum] differs: it refuses
    // to start, and the others (a majority without it) must not wait on
    // it: node 2 coordinates them, and db, on node 1 before, runs on one
    // of them.
    let mut c = Cluster::quorate(3, LEASE);
    c.extend("db", &[1, 2, 3]);
    in_service(&mut c, 1, "db");
    for n in [1, 2, 3] {
        c.crash(n, true);
    }
    c.advance(Duration::from_secs(4));
    c.expected.insert(1, 5);
    for n in [1, 2, 3] {
        c.restart(n);
    }
    c.settle();
    assert!(c.brains[&1].quorum().unwrap().refused.is_some());
    for n in [2, 3] {
        assert_eq!(c.brains[&n].coordinator(), 2, "node {n}");
        assert!(c.brains[&n].quorum().unwrap().quorate, "node {n}");
    }
    c.advance(Duration::from_secs(5));
    c.settle();
    assert_eq!(c.running("db"), [2], "{:#?}", c.notices);
    c.assert_never_twice();
}

#[test]
fn a_node_configured_as_a_majority_of_its_own_and_cut_off_while_undecided_starts_nothing() {
    let mut c = Cluster::quorate(3, LEASE);
    c.extend("db", &[3, 1, 2]);
    in_service(&mut c, 3, "db");
    // Node 2 is down; node 3 restarts with a configuration in which its
    // vote alone is a majority and hears only node 1 (one against one)
    // before it is cut off: it must not count itself into a quorum.
    c.crash(2, true);
    c.expected.insert(3, 1);
    c.crash(3, true);
    c.restart(3);
    c.settle();
    let q = c.brains[&3].quorum().unwrap();
    assert!(!q.quorate && q.undecided == Some((1, 3)), "{q:?}");
    c.cut(1, 3);
    c.advance(Duration::from_secs(30));
    let q = c.brains[&3].quorum().unwrap();
    assert!(!q.quorate, "{q:?}");
    assert!(!c.running("db").contains(&3), "{:#?}", c.notices);
    c.assert_never_twice();
}

// The witness.

#[test]
fn two_nodes_and_a_witness_fail_over_once_the_lease_ends() {
    let mut c = Cluster::witnessed(2, LEASE);
    c.extend("db", &[1, 2]);
    in_service(&mut c, 1, "db");
    assert!(
        c.brains[&1]
            .quorum()
            .is_some_and(|q| q.quorate && q.expected == 3)
    );
    let lost = c.now;
    c.crash(1, true);
    c.run_until(lost + LEASE);
    assert!(c.running("db").is_empty(), "not before node 1's lease ends");
    c.advance(Duration::from_secs(2));
    assert_eq!(c.running("db"), [2], "{:#?}", c.notices);
    c.assert_never_twice();
}

#[test]
fn a_two_node_split_runs_it_on_the_witness_side_only() {
    let mut c = Cluster::witnessed(2, LEASE);
    c.extend("db", &[2, 1]);
    in_service(&mut c, 2, "db");
    assert_eq!(c.running("db"), [2]);
    c.cut(1, 2);
    c.advance(Duration::from_secs(5));
    // The witness goes to the lower id: node 1 takes it over, node 2
    // stopped it when it lost quorum.
    assert_eq!(c.running("db"), [1], "{:#?}", c.notices);
    assert!(c.brains[&1].quorum().unwrap().quorate);
    assert!(!c.brains[&2].quorum().unwrap().quorate);
    c.assert_never_twice();
    // Heal: it stays where it is.
    c.connect(1, 2);
    c.settle();
    assert_eq!(c.running("db"), [1]);
    c.assert_never_twice();
}

#[test]
fn without_the_witness_a_lone_survivor_starts_nothing() {
    let mut c = Cluster::witnessed(2, LEASE);
    c.extend("db", &[1, 2]);
    in_service(&mut c, 1, "db");
    c.witness_cut.extend([1, 2]);
    c.advance(Duration::from_secs(3));
    assert_eq!(
        c.running("db"),
        [1],
        "2 of 3 votes without the witness: still quorate"
    );
    c.crash(1, true);
    c.advance(Duration::from_secs(5));
    assert!(c.running("db").is_empty(), "1 of 3: {:#?}", c.notices);
    c.assert_never_twice();
}

// Fencing.

/// Node `n`'s fence levels: `levels[i]` is level `i + 1`'s devices.
fn fence_levels(n: u16, levels: &[&[&str]]) -> FenceConfig {
    let mut f = FenceConfig {
        retry_delay: Duration::from_millis(200),
        ..FenceConfig::default()
    };
    f.levels.insert(
        n,
        levels
            .iter()
            .map(|l| l.iter().map(|d| (*d).to_string()).collect())
            .collect(),
    );
    f
}

#[test]
fn a_confirmed_fence_lets_the_survivors_take_over_before_the_lease_ends() {
    let mut c = Cluster::fencing(3, LEASE, fence_levels(1, &[&["ipmi-1"]]));
    c.extend("db", &[1, 2, 3]);
    in_service(&mut c, 1, "db");
    // Node 1's daemon dies; its application runs on.
    let lost = c.now;
    c.crash(1, false);
    c.advance(Duration::from_millis(900));
    assert_eq!(c.fenced.len(), 1, "{:#?}", c.notices);
    assert_eq!(c.fenced[0].0, 1);
    assert_eq!(c.running("db"), [2], "{:#?}", c.notices);
    assert!(c.noticed("alpha (1) FENCED: ipmi-1 (level 1) confirmed reboot"));
    assert!(c.now < lost + LEASE, "taken over before the lease ended");
    c.assert_never_twice();
}

#[test]
fn a_failing_fence_is_retried_escalated_and_never_taken_for_success() {
    let mut c = Cluster::fencing(
        3,
        LEASE,
        fence_levels(1, &[&["ipmi-1"], &["half-pdu-a", "pdu-b"]]),
    );
    c.devices.insert(
        "ipmi-1".into(),
        (Duration::from_millis(50), Behaviour::Fails),
    );
    c.devices.insert(
        "pdu-b".into(),
        (Duration::from_millis(50), Behaviour::Fails),
    );
    c.extend("db", &[1, 2, 3]);
    in_service(&mut c, 1, "db");
    let lost = c.now;
    c.crash(1, false);
    // Every device of level 2 must confirm: pdu-a (one of the node's two
    // power feeds) alone does not fence it.
    c.advance(Duration::from_millis(1500));
    assert!(c.noticed("fencing alpha (1) FAILED: ipmi-1 (level 1, attempt 1 of 2)"));
    assert!(c.noticed("escalating to level 2"), "{:#?}", c.notices);
    assert!(
        c.noticed("fencing alpha (1) FAILED: pdu-b (level 2"),
        "{:#?}",
        c.notices
    );
    assert_eq!(
        c.running("db"),
        [1],
        "nothing started without a confirmed fence"
    );
    // The lease does it: node 1's watchdog resets it, and the survivors
    // start db only once its lease ended for all of them.
    c.advance(Duration::from_secs(3));
    assert_eq!(c.running("db"), [2], "{:#?}", c.notices);
    let started = c
        .notices
        .iter()
        .any(|(_, _, t)| t.contains("given up: its lease ended"));
    assert!(started, "{:#?}", c.notices);
    assert!(
        c.resets
            .iter()
            .any(|(n, at)| *n == 1 && *at <= lost + LEASE)
    );
    c.assert_never_twice();
}

#[test]
fn a_hanging_fence_holds_the_takeover_until_the_lease_ends() {
    let mut c = Cluster::fencing(3, LEASE, fence_levels(1, &[&["ipmi-1"]]));
    c.devices
        .insert("ipmi-1".into(), (Duration::from_secs(60), Behaviour::Works));
    c.extend("db", &[1, 2, 3]);
    in_service(&mut c, 1, "db");
    c.crash(1, false);
    c.advance(Duration::from_millis(1500));
    assert_eq!(c.running("db"), [1]);
    c.advance(Duration::from_secs(3));
    assert_eq!(c.running("db"), [2], "{:#?}", c.notices);
    assert!(c.fenced.is_empty());
    c.assert_never_twice();
}

#[test]
fn a_clean_stop_and_a_minority_partition_fence_nobody() {
    let mut c = Cluster::fencing(3, LEASE, fence_levels(1, &[&["ipmi-1"]]));
    c.fencing
        .as_mut()
        .unwrap()
        .levels
        .insert(3, vec![vec!["ipmi-3".into()]]);
    c.extend("db", &[1, 2, 3]);
    in_service(&mut c, 1, "db");
    // Node 1 stops cleanly: what it ran was stopped, it is not fenced.
    let brain = c.brains.get_mut(&1).unwrap();
    brain.handle(c.now, Input::Shutdown);
    c.drain(1);
    c.advance(Duration::from_secs(1));
    assert!(c.exited.contains(&1));
    c.crash(1, false);
    c.advance(Duration::from_secs(3));
    assert!(c.fenced.is_empty(), "{:?}", c.fenced);
    assert_eq!(c.running("db"), [2]);
    // Node 3 alone cannot fence node 2 (no quorum), and the pair 2|3 is
    // split: only nobody has a majority; nothing is fenced.
    c.cut(2, 3);
    c.advance(Duration::from_secs(3));
    assert!(c.fenced.is_empty(), "{:?}", c.fenced);
    c.assert_never_twice();
}

#[test]
fn a_split_leaves_the_hierarchy_running_on_the_witness_side_without_a_restart() {
    let mut c = Cluster::witnessed(2, LEASE);
    c.extend("db", &[1, 2]);
    in_service(&mut c, 1, "db");
    let stops = |c: &Cluster| {
        c.notices
            .iter()
            .filter(|(n, _, t)| *n == 1 && t.contains("stopping every hierarchy"))
            .count()
    };
    let before = stops(&c);
    c.cut(1, 2);
    for _ in 0..40 {
        c.advance(Duration::from_millis(100));
        assert_eq!(c.running("db"), [1], "{:#?}", c.notices);
    }
    assert_eq!(stops(&c), before, "{:#?}", c.notices);
    // Node 1 was without quorum until the witness heard node 2's side.
    assert!(
        c.notices
            .iter()
            .any(|(n, _, t)| *n == 1 && t.contains("QUORUM LOST") && t.contains("runs on for")),
        "{:#?}",
        c.notices
    );
    assert!(c.brains[&1].quorum().unwrap().quorate);
    assert!(!c.brains[&2].quorum().unwrap().quorate);
    c.assert_never_twice();
}

#[test]
fn the_fast_guard_names_what_runs_here_and_the_instant_the_brain_stops_it() {
    let fast = fast_lease();
    let mut c = Cluster::fast(3, LEASE, fast.clone());
    c.extend("vip", &[1, 2, 3]);
    c.extend("db", &[1, 2, 3]);
    // Nothing fast runs anywhere: nothing to guard.
    assert_eq!(c.brains[&1].fast_guard(), None);
    in_service(&mut c, 1, "vip");
    in_service(&mut c, 1, "db");
    let guard = c.brains[&1].fast_guard().expect("vip runs on node 1");
    assert_eq!(
        guard.places,
        [Place {
            node: 1,
            tag: "vip".into()
        }],
        "the database is not guarded"
    );
    assert!(
        guard.at > c.now
            && guard.at.as_micros() + fast.stop_bound.as_micros()
                <= (c.now + fast.lease).as_micros(),
        "{guard:?} at {:?}",
        c.now
    );
    // Renewed while connected: the instant moves on.
    c.advance(Duration::from_millis(500));
    let renewed = c.brains[&1].fast_guard().unwrap();
    assert!(renewed.at > guard.at, "{renewed:?} after {guard:?}");
    // The other nodes run nothing fast.
    assert_eq!(c.brains[&2].fast_guard(), None);
    // Cut off: no renewal moves it, and the brain stops the address at
    // that very instant, not a step later.
    c.cut(1, 2);
    c.cut(1, 3);
    let at = c.brains[&1].fast_guard().unwrap().at;
    c.run_until(Instant::from_micros(at.as_micros() - 1_000));
    assert_eq!(c.brains[&1].fast_guard().unwrap().at, at);
    assert!(
        !c.started
            .iter()
            .any(|(_, n, a, t)| *n == 1 && *a == Action::Remove && t == "vip"),
        "not before the guard's instant"
    );
    c.run_until(at);
    assert!(
        c.started
            .iter()
            .any(|(when, n, a, t)| *n == 1 && *a == Action::Remove && t == "vip" && *when == at),
        "removed at {at:?}: {:?}",
        c.started
    );
    c.advance(SCRIPT * 2);
    assert!(c.running("vip").is_empty());
    assert_eq!(
        c.brains[&1].fast_guard(),
        None,
        "nothing fast runs any more"
    );
    assert_eq!(c.running("db"), [1]);
    c.assert_never_twice();
}
