//! The resource brain: one node's decisions about resources, as a state
//! machine in the shape of the core's `Endpoint`. It never reads a clock,
//! touches a file or runs a script: its caller feeds it [`Input`]s with the
//! current instant, writes what [`Brain::take_persist`] says changed, then
//! drains [`Brain::poll_output`] and arms a timer for
//! [`Brain::poll_timeout`].
//!
//! What it decides, and where:
//! - [`members`]: who is up (the core's membership events, in order, none
//!   merged), what every peer last said of itself, and what this node says
//!   of itself ([`crate::message::Flags`], states, actions under way).
//! - [`config`]: one configuration for the cluster. The coordinator (the
//!   lowest node up) orders every change as the next [`Version`]; members
//!   apply it and confirm; a node that is behind, or on the losing side of
//!   a healed partition, takes a snapshot, and the changes it loses are
//!   logged and kept for `verify`.
//! - [`place`]: where each hierarchy group runs, recomputed by the
//!   coordinator from the whole state after every input, and only when
//!   every member has reported the same view: started on one node (the one
//!   running it, else the best by priority that can), stopped where it
//!   runs twice, never started while any node may still run it.
//! - [`local`]: this node's actions: scripts in dependency order, checks,
//!   failure counting, local recovery, giving a hierarchy up, failed stops
//!   (blocked), probes of what runs after a start, and a clean stop.
//! - [`quorum`]: votes, the lease renewed by what peers echo, when a lost
//!   node is past its lease, wait-for-all at a cold start.
//! - [`fast_lease`]: a shorter lease for hierarchies whose stop is fast
//!   and bounded (a virtual IP), so they are taken over sooner.
//! - [`fence`]: the coordinator fences lost nodes through their fence
//!   devices, level by level, so their hierarchies need not wait for the
//!   lease.
//! - [`requests`]: the administrator's requests, and calls between brains.

mod config;
mod fast_lease;
mod fence;
mod local;
mod members;
mod place;
mod quorum;
mod requests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use heartline_core::{Duration, Instant};

use crate::action::Action;
use crate::api::{Answer, Request, RequestId};
use crate::groups::Groups;
use crate::message::{BrainMsg, Flags, View};
use crate::model::{Change, Model, Place, Resource, Version};

pub use config::DISCARDED;
pub use fast_lease::{FastGuard, FastLease};
pub use fence::{FenceAction, FenceConfig, FenceId, FenceStatus};
pub use local::JobId;
pub use place::Decision;
pub use quorum::{NoQuorum, QuorumConfig, QuorumStatus, default_margin};

/// What the brain of a node is told about its node and cluster.
#[derive(Debug, Clone)]
pub struct BrainConfig {
    /// This node.
    pub node: u16,
    /// This run of it (the communication manager's incarnation).
    pub incarnation: u64,
    /// Every host node of the cluster, this one included.
    pub nodes: BTreeSet<u16>,
    /// The nodes' names, as configured, for what the brain says (`bravo
    /// (2)`); a node without one is `node 2`.
    pub names: BTreeMap<u16, String>,
    /// The recovery kits installed here, by `app/type`.
    pub kits: BTreeMap<String, KitInfo>,
    /// Failures of a resource counted together (a resource's
    /// `failure_window` property overrides it).
    pub failure_window: Duration,
    /// Local recoveries of a resource allowed within its window before its
    /// hierarchy fails over (a resource's `max_failures` overrides it).
    pub max_failures: u32,
    /// What a clean stop of the daemon does with its hierarchies.
    pub on_stop: OnStop,
    /// After a start, how long the coordinator waits to hear from every
    /// node before it decides with those it has.
    pub settle: Duration,
    /// How long the coordinator waits for every node to confirm a change.
    pub commit_timeout: Duration,
    /// How long a call to another node's brain may take.
    pub call_timeout: Duration,
    /// How long a request waiting for actions may take.
    pub action_timeout: Duration,
    /// After how long without progress an order is sent again.
    pub order_retry: Duration,
    /// Quorum and leases (`None`: every partition acts alone, and a node
    /// lost counts as running nothing: split brain is possible).
    pub quorum: Option<QuorumConfig>,
    /// Fence devices by node (`None`: lost nodes are waited out by their
    /// lease). Needs `quorum`.
    pub fencing: Option<FenceConfig>,
}

impl BrainConfig {
    /// A configuration with the defaults for everything but the node.
    #[must_use]
    pub fn new(node: u16, incarnation: u64, nodes: BTreeSet<u16>) -> BrainConfig {
        BrainConfig {
            node,
            incarnation,
            nodes,
            names: BTreeMap::new(),
            kits: BTreeMap::new(),
            failure_window: Duration::from_secs(600),
            max_failures: 3,
            on_stop: OnStop::Switchover,
            settle: Duration::from_millis(1500),
            commit_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
            action_timeout: Duration::from_secs(600),
            order_retry: Duration::from_secs(5),
            quorum: None,
            fencing: None,
        }
    }
}

/// What a recovery kit tells the brain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KitInfo {
    /// How often quickCheck runs (`None`: never).
    pub quick_check_interval: Option<Duration>,
    /// Attempts of `recover` before the failure counts as unrecoverable.
    pub recover_attempts: u32,
    /// What is wrong with the kit here (a script missing...); a resource of
    /// a kit with problems is not run here.
    pub problems: Vec<String>,
}

/// What a clean stop of the daemon does with the hierarchies it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnStop {
    /// Take them out of service here; the next node by priority brings
    /// them in service.
    #[default]
    Switchover,
    /// Take them out of service and keep them out (their role becomes
    /// stopped) until an administrator brings them in service.
    Stop,
}

/// A membership change, exactly as the core's endpoint reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// A peer became reachable.
    Up {
        /// The peer.
        node: u16,
        /// Its run.
        incarnation: u64,
    },
    /// Every path to a peer is down.
    Down {
        /// The peer.
        node: u16,
    },
    /// A peer is running a new incarnation.
    Restarted {
        /// The peer.
        node: u16,
        /// Its new run.
        incarnation: u64,
    },
    /// This node took a new incarnation (a peer named an earlier run of it
    /// with a larger one): the peers see it restarted.
    Reincarnated {
        /// Its run from now on.
        incarnation: u64,
    },
}

/// What the brain is told.
#[derive(Debug, Clone)]
pub enum Input {
    /// Membership changed.
    Membership(Membership),
    /// Another node's brain said something.
    Message {
        /// The sender.
        from: u16,
        /// What.
        msg: BrainMsg,
    },
    /// An administrator's request; answer with [`Output::Reply`] of `id`.
    Request {
        /// Its name.
        id: RequestId,
        /// It.
        request: Request,
    },
    /// A script asked for by [`Output::Run`] ended.
    ScriptDone {
        /// The run's job.
        job: JobId,
        /// Whether it exited 0 (a timeout, a kill, a script that could not
        /// run are failures).
        ok: bool,
        /// How it went, in a few words ("exited 0 in 12 ms").
        summary: String,
    },
    /// A script asked for by [`Output::Run`] could not be started for
    /// want of the node's resources (file descriptors, processes): nothing
    /// ran, so nothing is known of the resource. A quickCheck is skipped
    /// (not a failure: the next one runs at its interval); any other step
    /// is asked for again. The shell reports this no faster than it can
    /// usefully retry.
    ScriptNotRun {
        /// The run's job.
        job: JobId,
        /// Why, in one line.
        summary: String,
    },
    /// Something the shell watches says these resources of this node may
    /// have failed (the IP kit's link monitor: a carrier lost, an address
    /// removed, on an interface they use): each that is in service here is
    /// checked now rather than at its interval, or as soon as the action
    /// holding it ends. The check decides, as at any other time: a hint
    /// that was wrong costs one check.
    CheckNow {
        /// The resources (tags on this node).
        tags: Vec<String>,
        /// What was seen, for the log ("eth1: link changed").
        why: String,
    },
    /// The daemon was asked to stop (SIGTERM): act on `on_stop`, then
    /// [`Output::Exit`].
    Shutdown,
    /// The peer `node` echoed a heartbeat this node sent at `echoed` (the
    /// core's [`heartline_core::PeerStatus::echoed`]): it heard this node
    /// at or after that instant. Renews the quorum lease; feeding it once
    /// per `lease / 10` is plenty.
    Heard {
        /// The peer.
        node: u16,
        /// When this node sent what it echoed.
        echoed: Instant,
    },
    /// The witness answered an [`Output::AskWitness`] sent at `sent`.
    Witness {
        /// The view the request named.
        view: BTreeSet<u16>,
        /// When it was sent, by this node's clock.
        sent: Instant,
        /// Whether the witness's vote is this view's.
        granted: bool,
    },
    /// A fence device asked for by [`Output::Fence`] finished.
    FenceDone {
        /// The run.
        id: FenceId,
        /// Whether it confirmed the node off (a failure, a timeout or an
        /// agent that could not run are not).
        ok: bool,
        /// How it went, in a few words.
        summary: String,
    },
}

/// How loud a notice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something happened.
    Info,
    /// Something needs watching.
    Warn,
    /// Something needs an administrator.
    Error,
}

/// What the brain asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Run `action`'s script of `resource`'s kit; report with
    /// [`Input::ScriptDone`] of `job`.
    Run {
        /// Which job it belongs to.
        job: JobId,
        /// The script.
        action: Action,
        /// The resource it acts on.
        resource: Resource,
        /// For `recover`: the event that raised it.
        event: Option<String>,
        /// For `restore`: a handover. Every other node the resource is
        /// extended to is up and says it is stopped there, with nothing
        /// under way for it, so no node of the cluster holds it (the IP kit
        /// skips its conflict probe then: the probe is for a host that is
        /// not in the cluster, or a node that may still hold it).
        handover: bool,
    },
    /// Send `msg` to node `to`'s brain.
    Send {
        /// The node.
        to: u16,
        /// The message.
        msg: BrainMsg,
    },
    /// Answer a request.
    Reply {
        /// The request.
        id: RequestId,
        /// The answer.
        answer: Answer,
    },
    /// Something worth a log line and a line in `watch`.
    Notice {
        /// How loud.
        level: Level,
        /// What, in one line.
        text: String,
    },
    /// The clean stop is complete: the daemon may exit once its messages
    /// are out.
    Exit,
    /// Ask the witness for its vote for `view` (this node's partition);
    /// answer with [`Input::Witness`], naming when the request was sent.
    AskWitness {
        /// The nodes this node sees up, itself included.
        view: BTreeSet<u16>,
    },
    /// Fence `node` through the fence device `device`; report with
    /// [`Input::FenceDone`] of `id`.
    Fence {
        /// The run.
        id: FenceId,
        /// The node to fence.
        node: u16,
        /// The device, by name.
        device: String,
        /// What the device is asked to do.
        action: FenceAction,
    },
}

/// What changed in the database since the last [`Brain::take_persist`]:
/// write each named row as it is now in [`Brain::model`] (or delete it if
/// it is gone), before executing the outputs that follow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Persist {
    /// Rewrite everything (a snapshot was taken).
    pub all: bool,
    /// Resource rows.
    pub resources: BTreeSet<Place>,
    /// Dependency rows.
    pub dependencies: BTreeSet<(u16, String, String)>,
    /// Equivalency rows.
    pub equivalencies: BTreeSet<(Place, Place)>,
    /// The generation, epoch and maintenance mode.
    pub meta: bool,
    /// The nodes in standby and the nodes' names.
    pub nodes: bool,
    /// Changes applied, with the version each made (the journal), to
    /// append; with `journal_replaced`, the whole journal.
    pub journal: Vec<(Version, String)>,
    /// The journal was replaced (a snapshot was taken): `journal` is all
    /// of it.
    pub journal_replaced: bool,
    /// Changes discarded when this node took another's configuration.
    pub discarded: Vec<String>,
}

impl Persist {
    fn is_empty(&self) -> bool {
        *self == Persist::default()
    }
}

/// What the brain counted since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Hierarchies found running on more than one node, and stopped on
    /// all but one.
    pub multi_active: u64,
    /// Orders the coordinator sent.
    pub orders: u64,
    /// Configuration changes this node ordered as coordinator.
    pub commits: u64,
    /// Snapshots taken from another node.
    pub snapshots: u64,
    /// Failovers: hierarchies given up here after failures.
    pub give_ups: u64,
    /// Local recoveries begun.
    pub recoveries: u64,
    /// Stops that failed (resources blocked).
    pub blocked: u64,
}

/// What the brain remembers of its node and cluster, and decides from.
#[derive(Debug)]
pub struct Brain {
    cfg: BrainConfig,
    model: Model,
    groups: Arc<Groups>,
    /// Every resource's state, by its slot in the groups (kept with the
    /// model's, for deciding without lookups by name).
    states: Vec<crate::model::State>,
    digest: Option<u64>,
    now: Instant,
    started: Instant,
    out: VecDeque<Output>,
    persist: Persist,
    stats: Stats,
    members: members::Members,
    local: local::Local,
    config: config::ConfigState,
    place: place::PlaceState,
    requests: requests::RequestState,
    quorum: quorum::QuorumState,
    fence: fence::FenceState,
    /// Notices already given for a standing condition, so they are not
    /// repeated after every input.
    noted: BTreeSet<String>,
    /// Whether something changed since the coordinator last decided.
    dirty: bool,
}

/// What a brain is made from at start: the database as it was left.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// The configuration and the last known states.
    pub model: Model,
    /// The last changes applied, with their versions.
    pub journal: Vec<(Version, String)>,
    /// Changes discarded at heals, not yet forgotten.
    pub discarded: Vec<String>,
}

impl Brain {
    /// A brain starting at `now` from what the database held. It begins by
    /// finding out what runs here (a quickCheck of every resource), and
    /// reports it before anything is started or stopped.
    #[must_use]
    pub fn new(cfg: BrainConfig, stored: Stored, now: Instant) -> Brain {
        let mut brain = Brain {
            members: members::Members::default(),
            local: local::Local::default(),
            config: config::ConfigState::new(stored.journal, stored.discarded),
            place: place::PlaceState::default(),
            requests: requests::RequestState::default(),
            quorum: quorum::QuorumState::default(),
            fence: fence::FenceState::default(),
            groups: Arc::new(Groups::build(&stored.model)),
            states: stored.model.resources.values().map(|r| r.state).collect(),
            digest: None,
            model: stored.model,
            cfg,
            now,
            started: now,
            out: VecDeque::new(),
            persist: Persist::default(),
            stats: Stats::default(),
            noted: BTreeSet::new(),
            dirty: true,
        };
        brain.start_probes();
        brain.after_input();
        brain
    }

    /// Takes `input` at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) {
        self.now = now.max(self.now);
        // Reading changes nothing the coordinator decides from; an echo
        // only if quorum changes (seen after the input).
        let reads = matches!(
            input,
            Input::Request {
                request: Request::Lcd | Request::Report | Request::Verify,
                ..
            } | Input::Heard { .. }
                | Input::Witness { .. }
        );
        self.dirty |= !reads;
        match input {
            Input::Membership(change) => self.on_membership(change),
            Input::Message { from, msg } => self.on_message(from, msg),
            Input::Request { id, request } => self.on_request(id, request),
            Input::ScriptDone { job, ok, summary } => self.on_script_done(job, ok, &summary),
            Input::ScriptNotRun { job, summary } => self.on_script_not_run(job, &summary),
            Input::CheckNow { tags, why } => self.check_now(&tags, &why),
            Input::Shutdown => self.on_shutdown(),
            Input::Heard { node, echoed } => self.on_heard(node, echoed),
            Input::Witness {
                view,
                sent,
                granted,
            } => self.on_witness(view, sent, granted),
            Input::FenceDone { id, ok, summary } => self.on_fence_done(id, ok, &summary),
        }
        self.after_input();
    }

    /// Acts on whatever fell due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now.max(self.now);
        self.dirty = true;
        self.ask_witness();
        self.local_timers();
        self.config_timers();
        self.request_timers();
        self.place_timers();
        self.after_input();
    }

    /// The next instant [`Brain::handle_timeout`] has something to do.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.local_timeout(),
            self.config_timeout(),
            self.request_timeout(),
            self.place_timeout(),
            self.quorum_timeout(),
            self.fence_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// What to write to the database before executing the outputs.
    pub fn take_persist(&mut self) -> Option<Persist> {
        if self.persist.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.persist))
    }

    /// The next thing to do.
    #[must_use = "outputs must be executed"]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The configuration and every node's last known states.
    #[must_use]
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The hierarchy groups of the configuration.
    #[must_use]
    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    /// This node.
    #[must_use]
    pub fn node(&self) -> u16 {
        self.cfg.node
    }

    /// The nodes this node sees up, itself included, with their runs.
    #[must_use]
    pub fn view(&self) -> View {
        self.members.view(&self.cfg)
    }

    /// A node as what the brain says names it: `bravo (2)`, or `node 2`
    /// when its name is not configured.
    #[must_use]
    pub fn who(&self, node: u16) -> String {
        match self.cfg.names.get(&node) {
            Some(name) if !name.is_empty() => format!("{name} ({node})"),
            _ => format!("node {node}"),
        }
    }

    /// The coordinator this node follows: the lowest node it sees up.
    #[must_use]
    pub fn coordinator(&self) -> u16 {
        self.members.coordinator(&self.cfg)
    }

    /// Whether every node this one sees up has reported, and sees the
    /// same nodes up.
    #[must_use]
    pub fn settled(&self) -> bool {
        self.members.settled(&self.cfg)
    }

    /// Every peer up, with the view it last reported (`None`: it has not
    /// said hello yet).
    #[must_use]
    pub fn peer_views(&self) -> BTreeMap<u16, Option<View>> {
        self.members
            .up
            .iter()
            .map(|(n, p)| (*n, p.synced.then(|| p.flags.view.clone())))
            .collect()
    }

    /// What this node says of itself now.
    #[must_use]
    pub fn flags(&mut self) -> Flags {
        self.own_flags()
    }

    /// What the brain counted.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether a clean stop is under way.
    #[must_use]
    pub fn leaving(&self) -> bool {
        self.local.leaving
    }

    /// Whether it is still finding out what runs here.
    #[must_use]
    pub fn probing(&self) -> bool {
        self.local.probing
    }

    /// Changes this node discarded when it took another's configuration.
    #[must_use]
    pub fn discarded(&self) -> &[String] {
        &self.config.discarded
    }

    /// What every action under way is doing, by hierarchy.
    #[must_use]
    pub fn busy(&self) -> BTreeMap<String, crate::message::Activity> {
        self.local.busy()
    }

    fn notice(&mut self, level: Level, text: impl Into<String>) {
        self.out.push_back(Output::Notice {
            level,
            text: text.into(),
        });
    }

    /// A notice for a standing condition, given once until
    /// [`Brain::forget_notes`].
    fn note_once(&mut self, level: Level, text: String) {
        if self.noted.insert(text.clone()) {
            self.notice(level, text);
        }
    }

    fn forget_notes(&mut self) {
        self.noted.clear();
    }

    fn send(&mut self, to: u16, msg: BrainMsg) {
        self.out.push_back(Output::Send { to, msg });
    }

    fn reply(&mut self, id: RequestId, answer: Answer) {
        self.out.push_back(Output::Reply { id, answer });
    }

    /// The groups (a cheap copy, to iterate while changing the brain).
    fn current_groups(&self) -> Arc<Groups> {
        Arc::clone(&self.groups)
    }

    fn config_digest(&mut self) -> u64 {
        if let Some(digest) = self.digest {
            return digest;
        }
        let digest = self.model.digest();
        self.digest = Some(digest);
        digest
    }

    /// The configuration changed: the groups are rebuilt, the fingerprint
    /// is stale.
    fn config_changed(&mut self) {
        self.groups = Arc::new(Groups::build(&self.model));
        self.states = self.model.resources.values().map(|r| r.state).collect();
        self.digest = None;
        self.forget_notes();
    }

    /// Applies a change that was checked, noting the rows it touches.
    fn apply_change(&mut self, change: &Change) {
        self.dirty = true;
        touched_by(&self.model, change, &mut self.persist);
        self.model.apply(change);
        if let Change::SetState { place, state } = change {
            if let Some(slot) = self.groups.slot(place) {
                if let Some(s) = self.states.get_mut(slot) {
                    *s = *state;
                }
            }
        }
        if change.is_configuration() {
            self.persist.meta = true;
            self.config_changed();
        }
    }

    /// After every input: decisions, then what changed here is told to
    /// the peers, until nothing more changes.
    fn after_input(&mut self) {
        for _ in 0..8 {
            let before = self.out.len();
            self.ask_witness();
            self.quorum_progress();
            self.fence_progress();
            self.local_progress();
            self.config_progress();
            self.queued_moves_progress();
            if std::mem::take(&mut self.dirty) {
                self.decide();
            }
            self.flush_facts();
            self.local_exit();
            if self.out.len() == before && !self.dirty {
                break;
            }
        }
    }
}

/// Notes in `persist` the rows `change` touches in `model` (before it is
/// applied).
fn touched_by(model: &Model, change: &Change, persist: &mut Persist) {
    let hierarchy = |place: &Place| -> Vec<Place> {
        let node = place.node;
        model
            .hierarchy(place)
            .into_iter()
            .map(|tag| Place { node, tag })
            .collect()
    };
    match change {
        Change::SetNode { .. } | Change::SetStandby { .. } => persist.nodes = true,
        Change::SetMaintenance { .. } => {}
        Change::CreateResource(r) => {
            persist.resources.insert(r.place.clone());
        }
        Change::RemoveResource(place) => {
            persist.resources.insert(place.clone());
            persist.dependencies.extend(
                model
                    .dependencies
                    .iter()
                    .filter(|(n, p, c)| *n == place.node && (*p == place.tag || *c == place.tag))
                    .cloned(),
            );
            persist.equivalencies.extend(
                model
                    .equivalencies
                    .iter()
                    .filter(|(a, b)| a == place || b == place)
                    .cloned(),
            );
        }
        Change::SetState { place, .. }
        | Change::SetInit { place, .. }
        | Change::SetProp { place, .. } => {
            persist.resources.insert(place.clone());
        }
        Change::CreateDependency {
            node,
            parent,
            child,
        }
        | Change::RemoveDependency {
            node,
            parent,
            child,
        } => {
            persist
                .dependencies
                .insert((*node, parent.clone(), child.clone()));
        }
        Change::CreateEquivalency { a, b } | Change::RemoveEquivalency { a, b } => {
            let pair = if a <= b {
                (a.clone(), b.clone())
            } else {
                (b.clone(), a.clone())
            };
            persist.equivalencies.insert(pair);
        }
        Change::SetPriority { place, .. } => persist.resources.extend(hierarchy(place)),
        Change::SetRole { place, .. } => persist.resources.extend(model.group(place)),
    }
}

#[cfg(test)]
mod tests;
