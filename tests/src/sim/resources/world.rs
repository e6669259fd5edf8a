//! The resource simulation: every node's real resource brain over its real
//! protocol endpoint and admin channel, on the simulated network, with
//! simulated scripts acting on pretend applications, in simulated time.
//!
//! After every step the oracle checks the promises:
//! - **never twice in one partition**: a hierarchy is never started on a
//!   node while another node runs it, if the two have seen each other
//!   continuously up (paths, daemons and membership unchanged) for longer
//!   than their paths take to notice a change. Starts the nodes could not
//!   have prevented (across a partition, or while the other's daemon was
//!   dead or stalled) are counted, not hidden: quorum and fencing must
//!   bring that count to zero;
//! - **back in service**: a hierarchy lost with its node runs again within
//!   a bound, on the best node that can run it, unless another fault came
//!   first;
//! - at the end, after a quiet span: every node up agrees on one
//!   configuration, every acknowledged change is in it (or listed as
//!   discarded by a heal), and every hierarchy runs where its role says,
//!   once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use heartline_brain::action::Action;
use heartline_brain::api::{Answer, Request, RequestId};
use heartline_brain::message::{ADMIN_MAILBOX, AdminMessage};
use heartline_brain::model::{Change, Epoch, Init, Model, Place, Resource, Role, State};
use heartline_brain::port::AdminPort;
use heartline_brain::{
    Brain, BrainConfig, FastLease, FenceConfig, FenceId, Input, JobId, KitInfo, Output,
    QuorumConfig, Stored,
};
use heartline_core::wire::{Key, MAX_ENCODED_LEN, NodeKind};
use heartline_core::witness::{NodeSet, Witness, WitnessConfig};
use heartline_core::{
    ClusterId, Duration, Endpoint, EndpointConfig, Event, Incarnation, Instant, NodeId, PathId,
    PathRef, PeerConfig, RxError,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::scenario::{Admin, Fault, Scenario};
use crate::sim::net::{Hop, Net};

type SimEndpoint = Endpoint<31, 4, 16, 64, 1024>;

const CLUSTER: ClusterId = ClusterId(0x5349_4d32);
const SECRET: &[u8] = b"simulated resource cluster key!!";

pub use crate::sim::oracle::Violation;

/// The flags `heartline-sim` replays a resource seed with.
fn simulator(sc: &Scenario) -> &'static str {
    if sc.quorum {
        "--resources "
    } else {
        "--resources --no-quorum "
    }
}

/// Starts of a hierarchy while another node ran it, that the nodes could
/// not have prevented without quorum and fencing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitBrain {
    /// Across a partition (or before the nodes could notice one healed).
    pub partition: u64,
    /// While the other node's daemon was dead or stalled (its
    /// applications ran on unwatched).
    pub unwatched: u64,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Groups.
    pub groups: usize,
    /// Faults played.
    pub faults: usize,
    /// Simulation steps.
    pub steps: u64,
    /// Starts the nodes could not have prevented.
    pub split_brain: SplitBrain,
    /// Hierarchies found on several nodes and resolved.
    pub multi_active: u64,
    /// Nodes reset by their watchdog (a stop that did not end within the
    /// lease, a daemon dead or stalled with applications running).
    pub resets: u64,
    /// Nodes reset by a fence device, confirmed to the node that asked.
    pub fences: u64,
    /// Fence runs that failed or hung.
    pub fence_failures: u64,
    /// Takeovers after a loss, and how long each took.
    pub takeovers: Vec<Duration>,
    /// Configuration changes acknowledged.
    pub changes: u64,
    /// Changes discarded when a partition healed.
    pub discarded: u64,
    /// Scripts run.
    pub scripts: u64,
    /// Admin messages sent.
    pub messages: u64,
    /// Link monitor hints a node heard (`Input::CheckNow`).
    pub hints: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "resource seed {}: {} nodes, {} groups, {} faults, {} steps, {} scripts, {} admin messages; {} takeovers",
            self.seed,
            self.nodes,
            self.groups,
            self.faults,
            self.steps,
            self.scripts,
            self.messages,
            self.takeovers.len()
        )?;
        if let Some(max) = self.takeovers.iter().max() {
            write!(f, " (longest {max})")?;
        }
        write!(
            f,
            "; {} changes acknowledged, {} discarded at heals; {} multiple-active resolved; {} watchdog resets; {} fences ({} failed); split-brain starts: {} across partitions, {} beside unwatched applications",
            self.changes,
            self.discarded,
            self.multi_active,
            self.resets,
            self.fences,
            self.fence_failures,
            self.split_brain.partition,
            self.split_brain.unwatched
        )
    }
}

#[derive(Debug)]
struct Node {
    endpoint: Option<Box<SimEndpoint>>,
    brain: Option<Brain>,
    port: AdminPort,
    incarnation: u64,
    timeout: Option<Instant>,
    disk: Stored,
    stalled_until: Option<Instant>,
    backlog: Vec<(PathRef, Vec<u8>)>,
    finished: Vec<(JobId, bool, String)>,
    exited_at: Option<Instant>,
    restart_at: Option<Instant>,
    /// After a clean stop's exit, how long until the restart.
    restart_after_exit: Option<Duration>,
    requests: BTreeMap<RequestId, Admin>,
    /// The machine's watchdog: it resets the node at this instant unless
    /// fed again. The daemon feeds it up to its brain's fence deadline
    /// (the end of its lease) while anything may run; it outlives the
    /// daemon.
    watchdog: Option<Instant>,
    /// Per peer: the echo last given to the brain.
    echo_fed: BTreeMap<usize, Instant>,
}

/// The lease every simulated node holds quorum under.
pub const LEASE: Duration = Duration::from_secs(2);
/// How long a simulated node's stops may take before its lease ends.
pub const STOP_BOUND: Duration = Duration::from_millis(700);
/// How long stopping a fast hierarchy (`ip/vip`) may take before its fast
/// lease ends.
pub const FAST_STOP_BOUND: Duration = Duration::from_millis(250);
/// How far a peer's echo must advance before the brain is told again (as
/// the daemon's communication manager does).
pub const ECHO_STEP: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
struct ScriptRun {
    due: Instant,
    node: usize,
    incarnation: u64,
    job: JobId,
    action: Action,
    tag: String,
    /// Fails (or hangs): the effect of a failure.
    fails: bool,
    /// For a failed restore: the application runs anyway.
    half_started: bool,
}

struct World<'a> {
    sc: &'a Scenario,
    nodes: Vec<Node>,
    net: Net,
    rng: ChaCha8Rng,
    key: Key,
    now: Instant,
    steps: u64,
    faults: Vec<(Instant, Fault)>,
    apps: BTreeSet<(usize, String)>,
    runs: Vec<ScriptRun>,
    next_request: u64,
    /// Per pair: when its paths, daemons or membership last changed.
    stable_since: BTreeMap<(usize, usize), Instant>,
    /// Hierarchies lost with their node: when, and which node.
    lost: BTreeMap<usize, (Instant, usize)>,
    last_disruption: Instant,
    /// Per group: the last time the cluster was right to leave it alone.
    held_until: BTreeMap<usize, Instant>,
    acked_creates: Vec<(usize, String)>,
    report: Report,
    tidy_next: Option<Instant>,
    /// The witness (with an even number of nodes), its requests and
    /// answers in flight.
    witness: Option<Witness>,
    to_witness: Vec<(Instant, usize, BTreeSet<u16>, Instant)>,
    from_witness: Vec<(Instant, usize, u64, Input)>,
    /// Fence runs under way.
    fences: Vec<FenceRun>,
    /// The fence devices' luck, a stream of its own.
    fence_rng: ChaCha8Rng,
    trace: Option<&'a mut dyn FnMut(String)>,
}

/// A fence device at work.
#[derive(Debug, Clone)]
struct FenceRun {
    due: Instant,
    /// The node that asked, and its run.
    by: usize,
    incarnation: u64,
    id: FenceId,
    target: usize,
    step: FenceStep,
}

/// Where a fence run is.
#[derive(Debug, Clone, Copy)]
enum FenceStep {
    /// At work: it resets the target and confirms, or fails.
    Acts { works: bool },
    /// Done, its outcome waiting for the node that asked to resume.
    Tells { ok: bool },
}

/// How long a message to or from the witness takes.
const WITNESS_DELAY: Duration = Duration::from_millis(1);

/// Plays `scenario` out, checking every promise after every step.
pub fn run(scenario: &Scenario) -> Result<Report, Violation> {
    run_inner(scenario, None)
}

/// As [`run`], passing a line for everything that happens to `trace`.
pub fn run_traced(scenario: &Scenario, trace: &mut dyn FnMut(String)) -> Result<Report, Violation> {
    run_inner(scenario, Some(trace))
}

fn node_id(index: usize) -> u16 {
    u16::try_from(index + 1).unwrap_or(u16::MAX)
}

fn index_of(node: u16) -> usize {
    usize::from(node) - 1
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

/// The configuration every node starts with: the scenario's groups.
fn initial_model(sc: &Scenario) -> Model {
    let mut model = Model::default();
    let mut apply = |change: Change| {
        if model.check(&change).is_ok() {
            model.apply(&change);
        }
    };
    for (g, group) in sc.groups.iter().enumerate() {
        let fast = fast_group(sc, g);
        for (rank, &node) in group.nodes.iter().enumerate() {
            let priority = u16::try_from(rank + 1).unwrap_or(1);
            let mut tags = vec![group.name.clone()];
            if group.child {
                tags.push(format!("{}-data", group.name));
            }
            for tag in &tags {
                apply(Change::CreateResource(resource(
                    node_id(node),
                    tag,
                    fast,
                    priority,
                    if group.started {
                        Role::Started
                    } else {
                        Role::Stopped
                    },
                )));
            }
            if group.child {
                apply(Change::CreateDependency {
                    node: node_id(node),
                    parent: group.name.clone(),
                    child: format!("{}-data", group.name),
                });
            }
        }
        for tags in [group.name.clone(), format!("{}-data", group.name)] {
            for w in group.nodes.windows(2) {
                apply(Change::CreateEquivalency {
                    a: Place {
                        node: node_id(w[0]),
                        tag: tags.clone(),
                    },
                    b: Place {
                        node: node_id(w[1]),
                        tag: tags.clone(),
                    },
                });
            }
        }
    }
    model.epoch = Epoch { term: 1, node: 1 };
    model
}

/// Whether group `g` is of the fast kind (`ip/vip`, under the fast lease):
/// every other group, with quorum.
fn fast_group(sc: &Scenario, g: usize) -> bool {
    sc.quorum && g % 2 == 1
}

/// The fast lease of scenario `sc`: its slowest detection, two of its
/// slowest heartbeat intervals for the echoes, and [`FAST_STOP_BOUND`].
fn fast_lease(sc: &Scenario) -> FastLease {
    let slowest = sc
        .links
        .iter()
        .flatten()
        .map(|l| l.config.interval)
        .fold(Duration::ZERO, |a, b| if b > a { b } else { a });
    let lease = sc.detection() + slowest * 2 + ECHO_STEP + FAST_STOP_BOUND;
    FastLease {
        kinds: BTreeSet::from(["ip/vip".to_string()]),
        lease,
        stop_bound: FAST_STOP_BOUND,
        drift_margin: heartline_brain::default_margin(lease),
    }
}

fn resource(node: u16, tag: &str, fast: bool, priority: u16, role: Role) -> Resource {
    let (app, rtype) = if fast { ("ip", "vip") } else { ("gen", "app") };
    Resource {
        place: Place {
            node,
            tag: tag.to_string(),
        },
        id: format!("/srv/{tag}"),
        app: app.into(),
        rtype: rtype.into(),
        state: State::Osu,
        init: Init::Autores,
        flags: BTreeSet::new(),
        info: String::new(),
        props: std::collections::BTreeMap::new(),
        priority,
        role,
    }
}

fn run_inner<'a>(
    sc: &'a Scenario,
    trace: Option<&'a mut dyn FnMut(String)>,
) -> Result<Report, Violation> {
    let mut rng = ChaCha8Rng::seed_from_u64(sc.seed ^ 0x5eed_b4a1);
    let net = Net::new(ChaCha8Rng::seed_from_u64(rng.random()));
    let key = Key::new(SECRET).map_err(|e| Violation {
        simulator: simulator(sc),
        seed: sc.seed,
        at: Instant::ZERO,
        what: e.to_string(),
    })?;
    let model = initial_model(sc);
    let mut world = World {
        sc,
        nodes: Vec::new(),
        net,
        rng,
        key,
        now: Instant::ZERO,
        steps: 0,
        faults: sc.faults.iter().rev().cloned().collect(),
        apps: BTreeSet::new(),
        runs: Vec::new(),
        next_request: 1,
        stable_since: BTreeMap::new(),
        lost: BTreeMap::new(),
        last_disruption: Instant::ZERO,
        held_until: BTreeMap::new(),
        acked_creates: Vec::new(),
        report: Report {
            seed: sc.seed,
            nodes: sc.nodes,
            groups: sc.groups.len(),
            faults: sc.faults.len(),
            ..Report::default()
        },
        tidy_next: Some(Instant::ZERO + sc.faulty),
        witness: (sc.quorum && sc.witness).then(|| {
            Witness::new(WitnessConfig {
                lease: LEASE,
                margin: heartline_brain::default_margin(LEASE),
                settle: sc.detection() + Duration::from_millis(200),
            })
        }),
        to_witness: Vec::new(),
        from_witness: Vec::new(),
        fences: Vec::new(),
        fence_rng: ChaCha8Rng::seed_from_u64(sc.seed ^ 0xfe4c_e5e7 ^ 1),
        trace,
    };
    for _ in 0..sc.nodes {
        world.nodes.push(Node {
            endpoint: None,
            brain: None,
            port: AdminPort::new(8),
            incarnation: 0,
            timeout: None,
            disk: Stored {
                model: model.clone(),
                ..Stored::default()
            },
            stalled_until: None,
            backlog: Vec::new(),
            finished: Vec::new(),
            exited_at: None,
            restart_at: None,
            restart_after_exit: None,
            requests: BTreeMap::new(),
            watchdog: None,
            echo_fed: BTreeMap::new(),
        });
    }
    for index in 0..sc.nodes {
        world.boot(index)?;
    }
    world.run()?;
    world.check_end()?;
    Ok(world.report)
}

impl World<'_> {
    fn violation(&self, what: String) -> Violation {
        Violation {
            simulator: simulator(self.sc),
            seed: self.sc.seed,
            at: self.now,
            what,
        }
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = self.trace.as_mut() {
            let now = Duration::from_micros(self.now.as_micros());
            trace(format!("{now:>10} {}", line()));
        }
    }

    fn alive(&self, index: usize) -> bool {
        let node = &self.nodes[index];
        node.brain.is_some() && node.stalled_until.is_none() && node.exited_at.is_none()
    }

    fn unstable(&mut self, index: usize) {
        for other in 0..self.sc.nodes {
            if other != index {
                self.stable_since.insert(pair(index, other), self.now);
            }
        }
    }

    fn brain_config(&self, index: usize) -> BrainConfig {
        let nodes: BTreeSet<u16> = (0..self.sc.nodes).map(node_id).collect();
        let mut cfg = BrainConfig::new(node_id(index), self.nodes[index].incarnation, nodes);
        for kind in ["gen/app", "ip/vip"] {
            cfg.kits.insert(
                kind.into(),
                KitInfo {
                    quick_check_interval: Some(Duration::from_millis(200)),
                    recover_attempts: 1,
                    problems: Vec::new(),
                },
            );
        }
        cfg.settle = Duration::from_millis(1000);
        cfg.failure_window = Duration::from_secs(30);
        cfg.commit_timeout = Duration::from_secs(2);
        cfg.call_timeout = Duration::from_secs(5);
        cfg.order_retry = Duration::from_secs(2);
        cfg.action_timeout = Duration::from_secs(20);
        if self.sc.quorum {
            let mut quorum = if self.sc.witness {
                QuorumConfig::with_witness(&cfg.nodes, LEASE, STOP_BOUND)
            } else {
                QuorumConfig::majority(&cfg.nodes, LEASE, STOP_BOUND)
            };
            quorum.detect_floor = self.sc.detection_floor();
            quorum.fast = Some(fast_lease(self.sc));
            if let Some((apart, expected)) = self.sc.apart
                && apart == index
            {
                quorum.expected = expected;
            }
            cfg.quorum = Some(quorum);
            if self.sc.fencing.is_some() {
                let mut fencing = FenceConfig {
                    retry_delay: Duration::from_millis(300),
                    ..FenceConfig::default()
                };
                for node in &cfg.nodes {
                    fencing.levels.insert(
                        *node,
                        vec![vec![format!("bmc-{node}")], vec![format!("pdu-{node}")]],
                    );
                }
                cfg.fencing = Some(fencing);
            }
        }
        cfg
    }

    /// Starts node `index`'s daemon: a new incarnation, a new endpoint,
    /// a brain from its disk.
    fn boot(&mut self, index: usize) -> Result<(), Violation> {
        let now = self.local(index);
        let node = &mut self.nodes[index];
        node.incarnation += 1;
        node.port = AdminPort::new(8);
        node.exited_at = None;
        node.restart_at = None;
        node.stalled_until = None;
        node.backlog.clear();
        node.finished.clear();
        node.requests.clear();
        node.echo_fed.clear();
        let name = format!("sim-{}", index + 1);
        let config = EndpointConfig {
            cluster: CLUSTER,
            node: NodeId(node_id(index)),
            incarnation: Incarnation(node.incarnation),
            name: &name,
            kind: NodeKind::Host,
            capabilities: 0,
            key: self.key.clone(),
        };
        let mut endpoint =
            Box::new(SimEndpoint::new(config).map_err(|e| self.violation(e.to_string()))?);
        for peer in (0..self.sc.nodes).filter(|&p| p != index) {
            let paths: Vec<_> = self
                .sc
                .paths(index, peer)
                .iter()
                .map(|l| l.config)
                .collect();
            endpoint
                .add_peer(now, PeerConfig::new(NodeId(node_id(peer))), &paths)
                .map_err(|e| self.violation(format!("node {}: {e}", index + 1)))?;
        }
        self.nodes[index].endpoint = Some(endpoint);
        let cfg = self.brain_config(index);
        let stored = self.nodes[index].disk.clone();
        self.nodes[index].brain = Some(Brain::new(cfg, stored, now));
        self.unstable(index);
        self.last_disruption = now;
        let inc = self.nodes[index].incarnation;
        self.log(|| format!("node {} starts (incarnation {inc})", index + 1));
        self.pump(index)
    }

    /// Node `index`'s clock at the true instant `at`: each node's
    /// monotonic clock runs at its own rate ([`Scenario::drift_ppm`]).
    fn local_at(&self, index: usize, at: Instant) -> Instant {
        let ppm = i128::from(self.sc.drift_ppm.get(index).copied().unwrap_or(0));
        let us = i128::from(at.as_micros());
        Instant::from_micros(u64::try_from(us + us * ppm / 1_000_000).unwrap_or(0))
    }

    /// Node `index`'s clock now.
    fn local(&self, index: usize) -> Instant {
        self.local_at(index, self.now)
    }

    /// The first true instant at which node `index`'s clock reads `local`.
    fn global_at(&self, index: usize, local: Instant) -> Instant {
        let ppm = i128::from(self.sc.drift_ppm.get(index).copied().unwrap_or(0));
        let us = i128::from(local.as_micros()) * 1_000_000;
        let rate = 1_000_000 + ppm;
        let mut at =
            Instant::from_micros(u64::try_from((us + rate - 1) / rate).unwrap_or(u64::MAX));
        while self.local_at(index, at) < local {
            at += Duration::from_micros(1);
        }
        at
    }

    /// Node `index`'s daemon is gone.
    fn kill(&mut self, index: usize, apps: bool) {
        let node = &mut self.nodes[index];
        node.endpoint = None;
        node.brain = None;
        node.timeout = None;
        node.stalled_until = None;
        node.backlog.clear();
        node.finished.clear();
        // A runner's hierarchies must come back elsewhere.
        let groups: Vec<usize> = (0..self.sc.groups.len())
            .filter(|&g| self.runs_on(g).contains(&index))
            .collect();
        for g in groups {
            self.lost.entry(g).or_insert((self.now, index));
        }
        if apps {
            // The machine is gone: its applications, and the scripts it
            // was running.
            self.apps.retain(|(n, _)| *n != index);
            self.runs.retain(|r| r.node != index);
        }
        self.unstable(index);
    }

    /// Node `index`'s watchdog fires (or a fence device, `by`, resets it):
    /// the machine resets, its applications die, and it boots again a
    /// second later.
    fn reset(&mut self, index: usize, by: &str) {
        let daemon = self.nodes[index].brain.is_some();
        let apps = self.apps.iter().filter(|(n, _)| *n == index).count();
        self.log(|| {
            format!(
                "node {}'s {by} resets it ({apps} applications running, daemon {})",
                index + 1,
                if daemon { "alive" } else { "dead" }
            )
        });
        if by == "watchdog" {
            self.report.resets += 1;
        } else {
            self.report.fences += 1;
        }
        self.nodes[index].watchdog = None;
        self.kill(index, true);
        self.nodes[index].exited_at = None;
        if daemon || self.nodes[index].restart_at.is_none() {
            self.nodes[index].restart_at = Some(self.now + Duration::from_secs(1));
        }
        self.nodes[index].restart_after_exit = None;
    }

    fn group_of(&self, tag: &str) -> Option<usize> {
        self.sc
            .groups
            .iter()
            .position(|g| tag == g.name || tag.strip_suffix("-data") == Some(g.name.as_str()))
    }

    /// Nodes where an application of group `g` runs.
    fn runs_on(&self, g: usize) -> BTreeSet<usize> {
        self.apps
            .iter()
            .filter(|(_, tag)| self.group_of(tag) == Some(g))
            .map(|(n, _)| *n)
            .collect()
    }

    fn run(&mut self) -> Result<(), Violation> {
        let end = self.sc.end();
        loop {
            let next = self.next_instant();
            let Some(next) = next else { break };
            if next > end {
                break;
            }
            self.now = next.max(self.now);
            self.steps += 1;
            self.step()?;
            self.check_lost()?;
            self.check_doubles()?;
        }
        self.now = end;
        self.report.steps = self.steps;
        Ok(())
    }

    fn next_instant(&self) -> Option<Instant> {
        let mut next = [
            self.net.next_arrival(),
            self.runs.iter().map(|r| r.due).min(),
            self.faults.last().map(|(at, _)| *at),
            self.tidy_next,
            self.to_witness.iter().map(|r| r.0).min(),
            self.from_witness.iter().map(|r| r.0).min(),
            self.fences.iter().map(|f| f.due).min(),
        ]
        .into_iter()
        .flatten()
        .min();
        for (index, node) in self.nodes.iter().enumerate() {
            let times = [
                node.stalled_until,
                node.restart_at,
                node.exited_at.map(|at| at + Duration::from_millis(200)),
                node.watchdog,
            ];
            let running = node.brain.is_some() && node.stalled_until.is_none();
            // The node's timers are on its own clock.
            let timers = if running {
                [
                    node.timeout.map(|at| self.global_at(index, at)),
                    node.brain
                        .as_ref()
                        .and_then(Brain::poll_timeout)
                        .map(|at| self.global_at(index, at)),
                ]
            } else {
                [None, None]
            };
            for t in times.into_iter().chain(timers).flatten() {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        }
        next
    }

    fn step(&mut self) -> Result<(), Violation> {
        let now = self.now;
        let mut touched = vec![false; self.sc.nodes];
        // Frames.
        while let Some(frame) = self.net.pop_due(now) {
            let to = frame.hop.to;
            let at = PathRef {
                node: NodeId(node_id(frame.hop.from)),
                path: PathId(frame.hop.path),
            };
            let node = &mut self.nodes[to];
            if node.endpoint.is_none() {
                continue;
            }
            let mut bytes = frame.bytes;
            let framed = bytes.len() - 1;
            bytes.truncate(framed);
            if node.stalled_until.is_some() {
                node.backlog.push((at, bytes));
                continue;
            }
            self.frame(to, at, bytes)?;
            touched[to] = true;
        }
        // Scripts that ended.
        let due: Vec<ScriptRun> = {
            let (due, rest): (Vec<ScriptRun>, Vec<ScriptRun>) =
                self.runs.drain(..).partition(|r| r.due <= now);
            self.runs = rest;
            due
        };
        for run in due {
            self.script_ended(&run)?;
            touched[run.node] = true;
        }
        // Faults.
        while self.faults.last().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, fault)) = self.faults.pop() {
                self.fault(fault)?;
            }
        }
        if self.tidy_next.is_some_and(|at| at <= now) {
            self.tidy();
        }
        // The witness: requests it receives, answers that arrive.
        let (due, rest): (Vec<_>, Vec<_>) = self.to_witness.drain(..).partition(|r| r.0 <= now);
        self.to_witness = rest;
        for (_, index, view, sent) in due {
            let Some(witness) = self.witness.as_mut() else {
                continue;
            };
            if self.sc.witness_down(now) {
                continue;
            }
            let set = NodeSet::of(view.iter().copied());
            let granted = witness.request(now, node_id(index), set).granted;
            let incarnation = self.nodes[index].incarnation;
            self.from_witness.push((
                now + WITNESS_DELAY,
                index,
                incarnation,
                Input::Witness {
                    view,
                    sent,
                    granted,
                },
            ));
        }
        let (due, rest): (Vec<_>, Vec<_>) = self.from_witness.drain(..).partition(|r| r.0 <= now);
        self.from_witness = rest;
        for (_, index, incarnation, answer) in due {
            let now = self.local(index);
            let node = &mut self.nodes[index];
            if node.incarnation != incarnation || node.stalled_until.is_some() {
                continue;
            }
            if let Some(brain) = node.brain.as_mut() {
                brain.handle(now, answer);
                touched[index] = true;
            }
        }
        // Fence devices that finish: a working one resets its target, then
        // its confirmation reaches the node that asked (once it can hear).
        let (due, rest): (Vec<_>, Vec<_>) = self.fences.drain(..).partition(|f| f.due <= now);
        self.fences = rest;
        for run in due {
            let now = self.local(run.by);
            if let FenceStep::Acts { works } = run.step {
                if works {
                    self.reset(run.target, "fence device");
                } else {
                    self.report.fence_failures += 1;
                }
            }
            let node = &mut self.nodes[run.by];
            if node.incarnation != run.incarnation || node.brain.is_none() {
                continue;
            }
            let ok = match run.step {
                FenceStep::Acts { works } | FenceStep::Tells { ok: works } => works,
            };
            if let Some(until) = node.stalled_until {
                self.fences.push(FenceRun {
                    due: until,
                    step: FenceStep::Tells { ok },
                    ..run
                });
                continue;
            }
            let summary = if ok { "exited 0" } else { "exited with code 1" };
            if let Some(brain) = node.brain.as_mut() {
                brain.handle(
                    now,
                    Input::FenceDone {
                        id: run.id,
                        ok,
                        summary: summary.to_string(),
                    },
                );
                touched[run.by] = true;
            }
        }
        // Watchdogs that fire.
        for index in 0..self.sc.nodes {
            if self.nodes[index].watchdog.is_some_and(|at| at <= now) {
                self.nodes[index].watchdog = None;
                self.reset(index, "watchdog");
            }
        }
        // Stalls that end, restarts, exits.
        for (index, touched) in touched.iter_mut().enumerate() {
            if self.nodes[index].stalled_until.is_some_and(|at| at <= now) {
                self.resume(index)?;
                *touched = true;
            }
            if self.nodes[index].restart_at.is_some_and(|at| at <= now) {
                self.boot(index)?;
            }
            if let Some(exited) = self.nodes[index].exited_at {
                let flushed = self.nodes[index].port.pending() == 0;
                if flushed || now >= exited + Duration::from_millis(200) {
                    self.log(|| format!("node {} exits", index + 1));
                    self.kill(index, false);
                    let after = self.nodes[index].restart_after_exit.take();
                    self.nodes[index].exited_at = None;
                    self.nodes[index].restart_at = after.map(|d| now + d);
                }
            }
        }
        // Timers.
        let locals: Vec<Instant> = (0..self.sc.nodes).map(|i| self.local(i)).collect();
        for ((node, touched), now) in self.nodes.iter_mut().zip(touched.iter_mut()).zip(locals) {
            if node.stalled_until.is_some() {
                continue;
            }
            if let (Some(endpoint), Some(at)) = (node.endpoint.as_mut(), node.timeout) {
                if at <= now {
                    endpoint.handle_timeout(now);
                    *touched = true;
                }
            }
            if let Some(brain) = node.brain.as_mut() {
                if brain.poll_timeout().is_some_and(|at| at <= now) {
                    brain.handle_timeout(now);
                    *touched = true;
                }
            }
        }
        for (index, touched) in touched.iter().enumerate() {
            if *touched {
                self.pump(index)?;
            }
        }
        Ok(())
    }

    fn frame(&mut self, to: usize, at: PathRef, mut bytes: Vec<u8>) -> Result<(), Violation> {
        let now = self.local(to);
        let Some(endpoint) = self.nodes[to].endpoint.as_mut() else {
            return Ok(());
        };
        match endpoint.handle_frame(now, at, &mut bytes) {
            Ok(()) | Err(RxError::Replayed | RxError::StaleIncarnation(_)) => Ok(()),
            Err(e) => Err(self.violation(format!(
                "node {} rejected a frame from {}: {e}",
                to + 1,
                at.node
            ))),
        }
    }

    fn resume(&mut self, index: usize) -> Result<(), Violation> {
        self.nodes[index].stalled_until = None;
        self.unstable(index);
        // A resumed daemon sees every peer silent, then heard again: a
        // disruption of its own, not a loss to time.
        self.last_disruption = self.now;
        self.log(|| format!("node {} resumes", index + 1));
        let backlog = std::mem::take(&mut self.nodes[index].backlog);
        for (at, bytes) in backlog {
            self.frame(index, at, bytes)?;
        }
        let finished = std::mem::take(&mut self.nodes[index].finished);
        let now = self.local(index);
        if let Some(brain) = self.nodes[index].brain.as_mut() {
            for (job, ok, summary) in finished {
                brain.handle(now, Input::ScriptDone { job, ok, summary });
            }
        }
        if let Some(endpoint) = self.nodes[index].endpoint.as_mut() {
            endpoint.handle_timeout(now);
        }
        if let Some(brain) = self.nodes[index].brain.as_mut() {
            brain.handle_timeout(now);
        }
        Ok(())
    }

    /// Carries out what node `index`'s brain, admin port and endpoint ask,
    /// until they are quiet.
    fn pump(&mut self, index: usize) -> Result<(), Violation> {
        // The node's own clock for its endpoint and brain; true time for
        // the network and the checks.
        let now = self.local(index);
        let true_now = self.now;
        let mut buf = [0u8; MAX_ENCODED_LEN];
        for _ in 0..10_000 {
            let mut progressed = false;
            // The brain's outputs.
            let outputs: Vec<Output> = {
                let node = &mut self.nodes[index];
                let Some(brain) = node.brain.as_mut() else {
                    return Ok(());
                };
                match brain.fence_deadline() {
                    // Fed only while the lease lasts: a stale deadline
                    // stands. The watchdog counts on the node's clock.
                    Some(at) if at > now => {
                        let ppm = i128::from(self.sc.drift_ppm.get(index).copied().unwrap_or(0));
                        let left = i128::from(at.saturating_since(now).as_micros());
                        let real = u64::try_from(left * 1_000_000 / (1_000_000 + ppm)).unwrap_or(0);
                        node.watchdog = Some(true_now + Duration::from_micros(real));
                    }
                    Some(_) => {}
                    None => node.watchdog = None,
                }
                if let Some(persist) = brain.take_persist() {
                    node.disk.model = brain.model().clone();
                    if persist.journal_replaced {
                        node.disk.journal.clear();
                    }
                    node.disk.journal.extend(persist.journal);
                    let keep = node.disk.journal.len().saturating_sub(256);
                    node.disk.journal.drain(..keep);
                    node.disk.discarded.extend(persist.discarded);
                }
                std::iter::from_fn(|| brain.poll_output()).collect()
            };
            for output in outputs {
                progressed = true;
                self.output(index, output)?;
            }
            // The admin channel into the endpoint.
            let node = &mut self.nodes[index];
            let (Some(endpoint), port) = (node.endpoint.as_mut(), &mut node.port) else {
                return Ok(());
            };
            port.flush(|to, fragment| endpoint.send(NodeId(to), ADMIN_MAILBOX, fragment));
            while let Some(t) = endpoint.poll_transmit(now, &mut buf) {
                let peer = index_of(t.path.node.0);
                let link = &self.sc.paths(index, peer)[usize::from(t.path.path.0)];
                let faults = true_now < Instant::ZERO + self.sc.faulty;
                let bytes = buf[..t.len].to_vec();
                self.net.send(
                    true_now,
                    link,
                    Hop {
                        from: index,
                        to: peer,
                        path: t.path.path.0,
                    },
                    &bytes,
                    faults || !link.cuts.is_empty() && link.is_cut(true_now),
                );
            }
            let renew = ECHO_STEP;
            let mut echoes = Vec::new();
            for peer in (0..self.sc.nodes).filter(|&p| p != index) {
                let Some(echoed) = endpoint.peer(NodeId(node_id(peer))).and_then(|p| p.echoed)
                else {
                    continue;
                };
                let fed = node.echo_fed.get(&peer).copied();
                if fed.is_none_or(|f| echoed >= f + renew) {
                    node.echo_fed.insert(peer, echoed);
                    echoes.push(Input::Heard {
                        node: node_id(peer),
                        echoed,
                    });
                }
            }
            let events: Vec<Event> = std::iter::from_fn(|| endpoint.poll_event()).collect();
            let messages: Vec<_> = std::iter::from_fn(|| endpoint.poll_message()).collect();
            node.timeout = endpoint.poll_timeout();
            if endpoint.events_dropped() > 0 {
                return Err(self.violation(format!("node {} dropped events", index + 1)));
            }
            let mut inputs = echoes;
            for event in &events {
                if let Event::NodeUp { node: peer, .. }
                | Event::NodeDown { node: peer }
                | Event::NodeRestarted { node: peer, .. } = event
                {
                    self.stable_since
                        .insert(pair(index, index_of(peer.0)), true_now);
                }
                if let Some(change) = self.nodes[index].port.event(event) {
                    inputs.push(Input::Membership(change));
                }
                if matches!(
                    event,
                    Event::NodeUp { .. } | Event::NodeDown { .. } | Event::NodeRestarted { .. }
                ) {
                    self.log(|| format!("node {}: {event}", index + 1));
                }
            }
            for message in messages {
                if message.mailbox != ADMIN_MAILBOX {
                    continue;
                }
                let from = message.from.0;
                match self.nodes[index]
                    .port
                    .receive_decoded(from, &message.payload)
                {
                    Some(Ok(AdminMessage::Brain { msg })) => {
                        inputs.push(Input::Message { from, msg: *msg })
                    }
                    Some(Err(error)) => {
                        return Err(self.violation(format!(
                            "node {} refused an admin message from {from}: {error}",
                            index + 1
                        )));
                    }
                    _ => {}
                }
            }
            if let Some(brain) = self.nodes[index].brain.as_mut() {
                for input in inputs {
                    progressed = true;
                    brain.handle(now, input);
                }
            }
            if !progressed {
                return Ok(());
            }
        }
        Err(self.violation(format!("node {} never went quiet", index + 1)))
    }

    fn output(&mut self, index: usize, output: Output) -> Result<(), Violation> {
        match output {
            Output::Run {
                job,
                action,
                resource,
                ..
            } => self.start_script(index, job, action, resource.place.tag),
            Output::Send { to, msg } => {
                self.report.messages += 1;
                self.nodes[index]
                    .port
                    .send(to, &AdminMessage::Brain { msg: Box::new(msg) });
                Ok(())
            }
            Output::Reply { id, answer } => {
                if let Some(request) = self.nodes[index].requests.remove(&id) {
                    self.answered(index, request, answer);
                }
                Ok(())
            }
            Output::Notice { level, text } => {
                self.log(|| format!("node {} {level:?}: {text}", index + 1));
                Ok(())
            }
            Output::AskWitness { view } => {
                if self.witness.is_some() && !self.sc.witness_down(self.now) {
                    let sent = self.local(index);
                    self.to_witness
                        .push((self.now + WITNESS_DELAY, index, view, sent));
                }
                Ok(())
            }
            Output::Fence {
                id, node, device, ..
            } => {
                let Some(f) = self.sc.fencing else {
                    return Err(self.violation(format!(
                        "node {} fences node {node} with no fence devices configured",
                        index + 1
                    )));
                };
                let hangs = self.fence_rng.random_bool(f.hangs);
                let works = !hangs && !self.fence_rng.random_bool(f.fails);
                let took = if hangs {
                    f.timeout
                } else {
                    Duration::from_micros(
                        self.fence_rng
                            .random_range(1..=f.longest.as_micros().max(1)),
                    )
                };
                self.log(|| {
                    format!(
                        "node {} fences node {node} with {device}: {}",
                        index + 1,
                        if works {
                            "will work"
                        } else if hangs {
                            "will hang"
                        } else {
                            "will fail"
                        }
                    )
                });
                self.fences.push(FenceRun {
                    due: self.now + took,
                    by: index,
                    incarnation: self.nodes[index].incarnation,
                    id,
                    target: index_of(node),
                    step: FenceStep::Acts { works },
                });
                Ok(())
            }
            Output::Exit => {
                self.log(|| format!("node {} is done stopping", index + 1));
                self.nodes[index].exited_at = Some(self.now);
                Ok(())
            }
        }
    }

    fn start_script(
        &mut self,
        index: usize,
        job: JobId,
        action: Action,
        tag: String,
    ) -> Result<(), Violation> {
        self.report.scripts += 1;
        if action == Action::Restore {
            self.check_start(index, &tag)?;
        }
        let s = self.sc.scripts;
        let hangs = self.rng.random_bool(s.hangs);
        let fails = hangs
            || match action {
                Action::Restore => self.rng.random_bool(s.restore_fails),
                Action::Remove => self.rng.random_bool(s.remove_fails),
                Action::Recover => self.rng.random_bool(s.recover_fails),
                _ => false,
            };
        let took = if hangs {
            s.timeout
        } else {
            Duration::from_micros(self.rng.random_range(1..=s.longest.as_micros().max(1)))
        };
        let half_started = self.rng.random_bool(0.5);
        if fails {
            if let Some(g) = self.group_of(&tag) {
                // A failing script is a fault of its own: a takeover under
                // way is not timed.
                self.lost.remove(&g);
            }
            self.last_disruption = self.now;
        }
        self.runs.push(ScriptRun {
            due: self.now + took,
            node: index,
            incarnation: self.nodes[index].incarnation,
            job,
            action,
            tag,
            fails,
            half_started,
        });
        Ok(())
    }

    /// A restore begins on `index`: nobody else that has seen it steadily
    /// may run the hierarchy.
    fn check_start(&mut self, index: usize, tag: &str) -> Result<(), Violation> {
        let Some(g) = self.group_of(tag) else {
            return Ok(());
        };
        if self.sc.is_apart(index) {
            return Err(self.violation(format!(
                "{tag} started on node {}, whose [quorum] is configured apart (expected votes {:?}): it must refuse to start",
                index + 1,
                self.sc.apart.map(|(_, e)| e)
            )));
        }
        for other in self.runs_on(g) {
            if other == index {
                continue;
            }
            let (steady, since) = self.steady(index, other, self.sc.settle_time(index, other));
            // With quorum and leases, never: whether the other node is in
            // another partition, stalled or without its daemon, it runs
            // the application until it has stopped it or been reset.
            if steady || self.sc.quorum {
                if !steady {
                    if self.alive(other) {
                        self.report.split_brain.partition += 1;
                    } else {
                        self.report.split_brain.unwatched += 1;
                    }
                    return Err(self.violation(format!(
                        "{tag} started on node {} while node {} runs it ({}): quorum and leases must prevent it",
                        index + 1,
                        other + 1,
                        if self.alive(other) {
                            "in another partition"
                        } else {
                            "its daemon dead or stalled"
                        }
                    )));
                }
                return Err(self.violation(format!(
                    "{tag} started on node {} while node {} runs it; they have seen each other steadily since {}",
                    index + 1,
                    other + 1,
                    Duration::from_micros(since.as_micros())
                )));
            }
            if self.alive(other) {
                self.report.split_brain.partition += 1;
            } else {
                self.report.split_brain.unwatched += 1;
            }
            self.log(|| {
                format!(
                    "split-brain start: {tag} on node {} while node {} runs it (counted)",
                    index + 1,
                    other + 1
                )
            });
        }
        Ok(())
    }

    fn script_ended(&mut self, run: &ScriptRun) -> Result<(), Violation> {
        let key = (run.node, run.tag.clone());
        let ok = match (run.action, run.fails) {
            (Action::Restore, false) | (Action::Recover, false) => {
                self.apps.insert(key.clone());
                true
            }
            (Action::Restore, true) => {
                if run.half_started {
                    self.apps.insert(key.clone());
                }
                false
            }
            (Action::Remove, false) => {
                self.apps.remove(&key);
                true
            }
            (Action::Recover, true) => {
                self.apps.remove(&key);
                false
            }
            (Action::QuickCheck, _) => self.apps.contains(&key),
            _ => !run.fails,
        };
        if run.action == Action::Restore && ok {
            self.restored(run.node, &run.tag)?;
        }
        let summary = if ok {
            "exited 0".to_string()
        } else if run.fails && run.due.saturating_since(self.now) == Duration::ZERO {
            "exited with code 1".to_string()
        } else {
            "failed".to_string()
        };
        let node = &mut self.nodes[run.node];
        if node.incarnation != run.incarnation || node.brain.is_none() {
            return Ok(());
        }
        if node.stalled_until.is_some() {
            node.finished.push((run.job, ok, summary));
            return Ok(());
        }
        let now = self.local_at(run.node, self.now);
        let node = &mut self.nodes[run.node];
        if let Some(brain) = node.brain.as_mut() {
            brain.handle(
                now,
                Input::ScriptDone {
                    job: run.job,
                    ok,
                    summary,
                },
            );
        }
        Ok(())
    }

    /// A hierarchy's resource came up on `index`: a takeover ends, on the
    /// best node that could run it.
    fn restored(&mut self, index: usize, tag: &str) -> Result<(), Violation> {
        let Some(g) = self.group_of(tag) else {
            return Ok(());
        };
        let Some((at, from)) = self.lost.remove(&g) else {
            return Ok(());
        };
        if index == from || self.last_disruption > at {
            return Ok(());
        }
        let took = self.now.saturating_since(at);
        self.report.takeovers.push(took);
        self.log(|| format!("takeover of g{g} on node {} after {took}", index + 1));
        let spec = &self.sc.groups[g];
        // The best node on the taker's side of any partition.
        let reachable =
            |n: usize| n == index || self.sc.paths(index, n).iter().any(|l| !l.is_cut(self.now));
        let best = spec.nodes.iter().copied().find(|&n| {
            n != from
                && self.alive(n)
                && !self.sc.is_apart(n)
                && reachable(n)
                && self.nodes[n].brain.as_ref().is_some_and(|b| {
                    let model = b.model();
                    // A node without quorum may not start anything.
                    !b.leaving()
                        && !b.probing()
                        && b.quorum().is_none_or(|q| q.quorate)
                        && !model.standby.contains(&node_id(n))
                        && !model.resources.values().any(|r| {
                            r.place.node == node_id(n)
                                && self.group_of(&r.place.tag) == Some(g)
                                && r.state.failed()
                        })
                })
        });
        if let Some(best) = best.filter(|&b| b != index) {
            let rank = |n: usize| spec.nodes.iter().position(|&m| m == n);
            if rank(best) < rank(index) {
                return Err(self.violation(format!(
                    "{} lost with node {} was taken over by node {}, but node {} has a better priority and could run it",
                    spec.name,
                    from + 1,
                    index + 1,
                    best + 1
                )));
            }
        }
        Ok(())
    }

    /// How long a takeover may take: noticing the loss, the coordinator's
    /// round, and the scripts.
    fn takeover_bound(&self) -> Duration {
        let lease = if self.sc.quorum {
            LEASE + heartline_brain::default_margin(LEASE)
        } else {
            Duration::ZERO
        };
        self.sc.detection() + lease + self.sc.scripts.longest * 8 + Duration::from_secs(2)
    }

    fn check_lost(&mut self) -> Result<(), Violation> {
        let bound = self.takeover_bound();
        let now = self.now;
        let overdue: Vec<(usize, Instant, usize)> = self
            .lost
            .iter()
            .filter(|(_, (at, _))| now.saturating_since(*at) > bound)
            .map(|(g, (at, from))| (*g, *at, *from))
            .collect();
        for (g, at, from) in overdue {
            self.lost.remove(&g);
            if self.last_disruption > at {
                continue;
            }
            // Could anyone run it? Ask the lowest live node's brain that
            // has quorum (without, nothing is started: not a miss).
            let Some(judge) = (0..self.sc.nodes).find(|&n| {
                self.alive(n)
                    && self.nodes[n]
                        .brain
                        .as_ref()
                        .is_some_and(|b| b.quorum().is_none_or(|q| q.quorate))
            }) else {
                continue;
            };
            let with_judge =
                |n: usize| n == judge || self.sc.paths(judge, n).iter().any(|l| !l.is_cut(now));
            let Some(brain) = self.nodes[judge].brain.as_ref() else {
                continue;
            };
            let model = brain.model();
            let spec = &self.sc.groups[g];
            if model.maintenance {
                continue;
            }
            let role = model
                .resources
                .get(&Place {
                    node: node_id(spec.nodes[0]),
                    tag: spec.name.clone(),
                })
                .map(|r| r.role);
            if role != Some(Role::Started) {
                continue;
            }
            let failed = |n: usize| {
                model.resources.values().any(|r| {
                    r.place.node == node_id(n)
                        && self.group_of(&r.place.tag) == Some(g)
                        && r.state.failed()
                })
            };
            if spec.nodes.iter().any(|&n| {
                model.resources.values().any(|r| {
                    r.place.node == node_id(n)
                        && self.group_of(&r.place.tag) == Some(g)
                        && r.state == State::Blocked
                })
            }) {
                continue;
            }
            let candidates: Vec<usize> = spec
                .nodes
                .iter()
                .copied()
                .filter(|&n| {
                    n != from
                        && self.alive(n)
                        && !self.sc.is_apart(n)
                        && with_judge(n)
                        && !model.standby.contains(&node_id(n))
                        && !failed(n)
                })
                .collect();
            if candidates.is_empty() || !self.runs_on(g).is_empty() {
                continue;
            }
            return Err(self.violation(format!(
                "{} was lost with node {} at {} and runs nowhere {} later (bound {bound}); nodes {:?} could run it",
                spec.name,
                from + 1,
                Duration::from_micros(at.as_micros()),
                now.saturating_since(at),
                candidates.iter().map(|n| n + 1).collect::<Vec<_>>()
            )));
        }
        Ok(())
    }

    /// Whether `a` and `b` have been up to each other, with both daemons
    /// running, since at least `for_at_least` ago.
    fn steady(&self, a: usize, b: usize, for_at_least: Duration) -> (bool, Instant) {
        let paths = self.sc.paths(a, b);
        let connected = paths.iter().any(|l| !l.is_cut(self.now));
        let cut_changed = paths
            .iter()
            .flat_map(|l| l.cuts.iter().flat_map(|(x, y)| [*x, *y]))
            .filter(|t| *t <= self.now)
            .max()
            .unwrap_or(Instant::ZERO);
        let since = self
            .stable_since
            .get(&pair(a, b))
            .copied()
            .unwrap_or(Instant::ZERO)
            .max(cut_changed);
        let steady = self.alive(a)
            && self.alive(b)
            && connected
            && self.now.saturating_since(since) >= for_at_least;
        (steady, since)
    }

    /// How long a hierarchy may run on two nodes that see each other
    /// steadily: they must notice and one stop it.
    fn multi_active_bound(&self, a: usize, b: usize) -> Duration {
        self.sc.settle_time(a, b) + self.sc.scripts.longest * 4 + Duration::from_secs(3)
    }

    /// Whether the cluster is right to leave group `g` as it is: one of its
    /// resources is BLOCKED (a failed stop), or maintenance mode is on, as
    /// some running node knows.
    fn held_back(&self, g: usize) -> bool {
        self.nodes.iter().filter_map(|n| n.brain.as_ref()).any(|b| {
            b.model().maintenance
                || b.model()
                    .resources
                    .values()
                    .any(|r| r.state == State::Blocked && self.group_of(&r.place.tag) == Some(g))
        })
    }

    /// A hierarchy running on two nodes that see each other steadily is
    /// stopped on one within the bound.
    fn check_doubles(&mut self) -> Result<(), Violation> {
        for g in 0..self.sc.groups.len() {
            let running: Vec<usize> = self.runs_on(g).into_iter().collect();
            if running.len() < 2 {
                continue;
            }
            if self.held_back(g) {
                self.held_until.insert(g, self.now);
                continue;
            }
            let released = self.held_until.get(&g).copied().unwrap_or(Instant::ZERO);
            for (i, &a) in running.iter().enumerate() {
                for &b in &running[i + 1..] {
                    let bound = self.multi_active_bound(a, b);
                    let (steady, since) = self.steady(a, b, bound);
                    let since = since.max(released);
                    if steady && self.now.saturating_since(since) >= bound {
                        return Err(self.violation(format!(
                            "{} runs on nodes {} and {}, which have seen each other steadily since {}, for longer than {bound}",
                            self.sc.groups[g].name,
                            a + 1,
                            b + 1,
                            Duration::from_micros(since.as_micros())
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn fault(&mut self, fault: Fault) -> Result<(), Violation> {
        self.last_disruption = self.now;
        let text = format!("{fault:?}");
        self.log(|| format!("fault: {text}"));
        match fault {
            Fault::Crash {
                node,
                apps,
                down_for,
            } => {
                if self.nodes[node].brain.is_some() {
                    // The loss is what is timed: a takeover must follow
                    // (check_lost skips losses older than a later fault).
                    self.kill(node, apps);
                    self.nodes[node].restart_at = Some(self.now + down_for);
                }
            }
            Fault::Stop { node, down_for } => {
                let now = self.local(node);
                if self.nodes[node].stalled_until.is_none() && self.nodes[node].exited_at.is_none()
                {
                    if let Some(brain) = self.nodes[node].brain.as_mut() {
                        brain.handle(now, Input::Shutdown);
                        self.nodes[node].restart_after_exit = Some(down_for);
                        self.pump(node)?;
                    }
                }
            }
            Fault::Stall { node, span } => {
                if self.nodes[node].brain.is_some() && self.nodes[node].stalled_until.is_none() {
                    self.nodes[node].stalled_until = Some(self.now + span);
                    self.unstable(node);
                }
            }
            Fault::Partition { .. } => {}
            Fault::KillApp(g) => {
                let name = &self.sc.groups[g].name;
                let child = format!("{name}-data");
                let victims: Vec<(usize, String)> = self
                    .apps
                    .iter()
                    .filter(|(_, t)| *t == *name || *t == child)
                    .cloned()
                    .collect();
                if let Some(victim) = victims.first() {
                    self.apps.remove(victim);
                }
            }
            Fault::Hint { group, node, kill } => {
                let name = self.sc.groups[group].name.clone();
                let child = format!("{name}-data");
                let mut told = node;
                if kill {
                    // The application dies, and the node it ran on hears
                    // of it at once (its link monitor).
                    if let Some(victim) = self
                        .apps
                        .iter()
                        .find(|(_, t)| *t == name || *t == child)
                        .cloned()
                    {
                        told = victim.0;
                        self.apps.remove(&victim);
                    }
                }
                if self.alive(told) {
                    self.report.hints += 1;
                    let now = self.local(told);
                    self.log(|| format!("node {} is told to check {name} now", told + 1));
                    if let Some(brain) = self.nodes[told].brain.as_mut() {
                        brain.handle(
                            now,
                            Input::CheckNow {
                                tags: vec![name, child],
                                why: "link changed".into(),
                            },
                        );
                    }
                    self.pump(told)?;
                }
            }
            Fault::Admin { node, request } => self.admin(node, request)?,
        }
        Ok(())
    }

    fn admin(&mut self, index: usize, admin: Admin) -> Result<(), Violation> {
        let request = match &admin {
            Admin::InService(g) | Admin::OutOfService(g) | Admin::Switchover(g, _) => {
                let spec = &self.sc.groups[*g];
                let at = if spec.nodes.contains(&index) {
                    index
                } else {
                    spec.nodes[0]
                };
                let tag = spec.name.clone();
                let request = match admin {
                    Admin::InService(_) => Request::InService { tag },
                    Admin::OutOfService(_) => Request::OutOfService { tag },
                    Admin::Switchover(_, to) => Request::Switchover {
                        tag,
                        to: node_id(to),
                    },
                    _ => return Ok(()),
                };
                return self.ask(at, request, admin.clone());
            }
            Admin::Standby(node, on) => Request::Standby {
                node: node_id(*node),
                on: *on,
            },
            Admin::Maintenance(span) => {
                self.faults.push((
                    self.now + *span,
                    Fault::Admin {
                        node: index,
                        request: Admin::Cleanup,
                    },
                ));
                self.faults.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
                Request::Maintenance { on: true }
            }
            Admin::Create(tag) => Request::Change {
                change: Change::CreateResource(resource(
                    node_id(index),
                    tag,
                    false,
                    1,
                    Role::Stopped,
                )),
            },
            Admin::Cleanup => {
                self.cleanup_everything();
                return Ok(());
            }
        };
        self.ask(index, request, admin)
    }

    fn ask(&mut self, index: usize, request: Request, admin: Admin) -> Result<(), Violation> {
        if !self.alive(index) {
            return Ok(());
        }
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.nodes[index].requests.insert(id, admin);
        let now = self.local(index);
        let text = format!("{request:?}");
        self.log(|| format!("node {} is asked {text}", index + 1));
        if let Some(brain) = self.nodes[index].brain.as_mut() {
            brain.handle(now, Input::Request { id, request });
        }
        self.pump(index)
    }

    fn answered(&mut self, index: usize, admin: Admin, answer: Answer) {
        let text = format!("{answer:?}");
        self.log(|| format!("node {} answers {admin:?}: {text}", index + 1));
        if let (Admin::Create(tag), Answer::Changed { .. }) = (&admin, &answer) {
            self.report.changes += 1;
            self.acked_creates.push((index, tag.clone()));
        }
    }

    /// An operator makes sure every failed or blocked resource is stopped,
    /// turns maintenance off, and cleans the failures up.
    fn cleanup_everything(&mut self) {
        let mut asks = Vec::new();
        let mut maintenance = false;
        for index in 0..self.sc.nodes {
            if !self.alive(index) {
                continue;
            }
            let Some(brain) = self.nodes[index].brain.as_ref() else {
                continue;
            };
            maintenance |= brain.model().maintenance;
            for r in brain.model().resources.values() {
                if r.place.node == node_id(index) && r.state.failed() {
                    asks.push((index, r.place.tag.clone(), r.state == State::Blocked));
                }
            }
        }
        for (index, tag, blocked) in asks {
            if blocked {
                self.apps.remove(&(index, tag.clone()));
            }
            // A node configured apart refuses changes: asked of another.
            let (at, node) = match self.tidier() {
                Some(other) if self.sc.is_apart(index) => (other, Some(node_id(index))),
                _ => (index, None),
            };
            let _ = self.ask(at, Request::Cleanup { tag, node }, Admin::Cleanup);
        }
        if maintenance && let Some(index) = self.tidier() {
            let _ = self.ask(index, Request::Maintenance { on: false }, Admin::Cleanup);
        }
    }

    /// The node the tidying is asked of: the first alive and configured
    /// like the rest.
    fn tidier(&self) -> Option<usize> {
        (0..self.sc.nodes).find(|&n| self.alive(n) && !self.sc.is_apart(n))
    }

    /// After the faults: standby off, maintenance off, failures cleaned up,
    /// again every two seconds while anything is left.
    fn tidy(&mut self) {
        self.tidy_next = None;
        let Some(index) = self.tidier() else {
            self.tidy_next = Some(self.now + Duration::from_secs(2));
            return;
        };
        let standby: Vec<u16> = self.nodes[index]
            .brain
            .as_ref()
            .map(|b| b.model().standby.iter().copied().collect())
            .unwrap_or_default();
        for node in &standby {
            let _ = self.ask(
                index,
                Request::Standby {
                    node: *node,
                    on: false,
                },
                Admin::Standby(index_of(*node), false),
            );
        }
        self.cleanup_everything();
        let last = Instant::from_micros(self.sc.end().as_micros().saturating_sub(6_000_000));
        if self.now + Duration::from_secs(2) < last {
            self.tidy_next = Some(self.now + Duration::from_secs(2));
        }
    }

    /// After the quiet span.
    fn check_end(&mut self) -> Result<(), Violation> {
        let all: BTreeSet<u16> = (0..self.sc.nodes).map(node_id).collect();
        let mut versions = BTreeSet::new();
        for index in 0..self.sc.nodes {
            let Some(brain) = self.nodes[index].brain.as_ref() else {
                return Err(self.violation(format!("node {} is not running at the end", index + 1)));
            };
            let view: BTreeSet<u16> = brain.view().keys().copied().collect();
            let settled = brain.settled();
            if view != all || !settled {
                return Err(self.violation(format!(
                    "node {} sees {:?} at the end; its peers reported {:?}",
                    index + 1,
                    brain.view(),
                    brain.peer_views()
                )));
            }
            if brain.probing() || brain.leaving() {
                return Err(
                    self.violation(format!("node {} is still probing or leaving", index + 1))
                );
            }
            versions.insert((brain.model().version(), brain.model().digest()));
        }
        if versions.len() != 1 {
            return Err(self.violation(format!(
                "the nodes hold {} configurations: {versions:?}",
                versions.len()
            )));
        }
        let brain = self.nodes[0]
            .brain
            .as_ref()
            .map(|b| (b.model().clone(), b.stats()));
        let Some((model, _)) = brain else {
            return Ok(());
        };
        if model.maintenance || !model.standby.is_empty() {
            return Err(self.violation("maintenance or standby left on after tidying".into()));
        }
        for (g, spec) in self.sc.groups.iter().enumerate() {
            let running = self.runs_on(g);
            let role = model
                .resources
                .get(&Place {
                    node: node_id(spec.nodes[0]),
                    tag: spec.name.clone(),
                })
                .map(|r| r.role);
            let states: Vec<(Place, State)> = model
                .resources
                .values()
                .filter(|r| self.group_of(&r.place.tag) == Some(g))
                .map(|r| (r.place.clone(), r.state))
                .collect();
            if running.len() > 1 {
                return Err(self.violation(format!(
                    "{} runs on nodes {:?} at the end",
                    spec.name,
                    running.iter().map(|n| n + 1).collect::<Vec<_>>()
                )));
            }
            let blocked = states.iter().any(|(_, s)| *s == State::Blocked);
            let someone = spec.nodes.iter().any(|&n| {
                !self.sc.is_apart(n)
                    && !states
                        .iter()
                        .any(|(p, s)| p.node == node_id(n) && s.failed())
            });
            match role {
                Some(Role::Started) if !blocked && someone && running.is_empty() => {
                    return Err(self.violation(format!(
                        "{} should run and runs nowhere at the end; states {states:?}",
                        spec.name
                    )));
                }
                Some(Role::Stopped) if !running.is_empty() => {
                    return Err(self.violation(format!(
                        "{} runs on {:?} at the end but its role is stopped",
                        spec.name,
                        running.iter().map(|n| n + 1).collect::<Vec<_>>()
                    )));
                }
                _ => {}
            }
        }
        let discarded: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.brain.as_ref())
            .flat_map(|b| b.discarded().iter().cloned())
            .collect();
        self.report.discarded = discarded.len() as u64;
        for (index, tag) in &self.acked_creates {
            let place = Place {
                node: node_id(*index),
                tag: tag.clone(),
            };
            let present = model.resources.contains_key(&place);
            let listed = discarded
                .iter()
                .any(|d| d.contains(&format!("create {place}")));
            if !present && !listed {
                return Err(self.violation(format!(
                    "the change creating {place} was acknowledged but is neither in the configuration nor listed as discarded"
                )));
            }
        }
        self.report.multi_active = self
            .nodes
            .iter()
            .filter_map(|n| n.brain.as_ref())
            .map(|b| b.stats().multi_active)
            .sum();
        Ok(())
    }
}
