//! The resource manager: owns this node's copy of the configuration
//! database and runs the recovery kits' scripts on its resources (LRACI).
//!
//! It takes administrative changes (checked against the database's rules
//! and the kits installed here), brings hierarchies in service children
//! first and takes them out parents first, runs each in-service resource's
//! `quickCheck` at its kit's interval, answers a failure (a failed check, or
//! `sendevent`) with the kit's `recover` up to the kit's attempts, and when
//! that fails takes the hierarchy out of service so that the next node by
//! priority brings it in.
//!
//! Cluster-wide, through [`super::remote`]:
//! - **One configuration.** The coordinator, the lowest-numbered node that
//!   is up, orders every change: a change made on another node is sent to
//!   it, checked and applied there, and committed to every node as the next
//!   generation. A node that was down, or that missed a generation, gets the
//!   coordinator's whole database. Two changes made at once are checked in
//!   turn against the same database, so the second is refused if the first
//!   made it wrong; none is silently lost.
//! - **States are facts of their node.** Each node reports its resources'
//!   state changes to the others.
//! - **Failover.** When a node goes down with hierarchies in service, or
//!   reports one failed (OSF), every surviving node computes the same
//!   choice: the instance with the best priority on a node that is up and
//!   has not failed it. Only that node acts.
//!
//! It runs on a thread of its own, so database writes (fsync) and script
//! runs never delay the communication manager. Scripts run as tasks; one
//! hierarchy has at most one action at a time, and the database is changed
//! only here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::kit::{Action, Kits};
use super::lcd::{Change, Init, Lcd, LcdError, Model, Place, Resource, State};
use super::remote::{self, Message, Remote};
use super::script::{self, ScriptRun};
use crate::comm;
use crate::config::Config;
use crate::control::server::comm_command;
use crate::control::{Request, ResourceReport, Response};

/// How long a change forwarded to the coordinator may take.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an action run on another node may take.
const ACTION_TIMEOUT: Duration = Duration::from_secs(600);
/// How long after start the manager waits to hear the cluster (its
/// membership and the coordinator's database) before acting on init
/// strategies: long enough for paths to come up and be heard.
const SETTLE: Duration = Duration::from_millis(1500);

/// What the resource manager is told.
#[derive(Debug)]
pub enum Input {
    /// A CLI request, with where to answer.
    Control {
        /// The request.
        request: Request,
        /// The answer goes here.
        reply: oneshot::Sender<Response>,
    },
    /// One script of an action finished.
    Step {
        /// The action it belongs to.
        job: u64,
        /// The resource.
        place: Place,
        /// The script.
        action: Action,
        /// How it went.
        run: ScriptRun,
    },
    /// Every script of an action ran, or one failed.
    Finished {
        /// The action.
        job: u64,
    },
    /// Another node's resource manager said something.
    Remote(remote::Incoming),
}

/// Handle on the resource manager.
#[derive(Debug, Clone)]
pub struct Handle {
    /// Inputs to it.
    pub inputs: mpsc::Sender<Input>,
}

/// What an action is for, which decides what its steps do to the states.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Purpose {
    InService,
    OutOfService,
    Check,
    /// Local recovery of a resource, after `event`; `attempt` counts from 1.
    Recover {
        event: String,
        attempt: u32,
    },
    /// Local recovery of `failed` gave up: the hierarchy goes out of
    /// service here so that another node takes it.
    GiveUp {
        failed: String,
    },
}

/// An action under way on one hierarchy.
#[derive(Debug)]
struct Job {
    purpose: Purpose,
    /// The resource the action was asked for.
    subject: String,
    /// The tags of the hierarchy it holds.
    tags: BTreeSet<String>,
    /// One line per step, for the CLI.
    steps: Vec<String>,
    failed: bool,
    reply: Option<oneshot::Sender<Response>>,
}

struct Manager {
    lcd: Lcd,
    kits: Kits,
    node: u16,
    jobs: BTreeMap<u64, Job>,
    next_job: u64,
    /// When each in-service resource is next checked.
    checks: BTreeMap<String, Instant>,
    inputs: mpsc::Sender<Input>,
    remote: Remote,
    comm: mpsc::Sender<comm::Command>,
    /// Host peers up now.
    up: BTreeSet<u16>,
    /// When the init strategies are due; `None` once applied.
    init_at: Option<Instant>,
    /// Actions waiting for another on their hierarchy to end.
    waiting: Vec<(String, Purpose, Option<oneshot::Sender<Response>>)>,
    /// Tags an action has run on since start: the init strategies leave
    /// them be.
    acted: BTreeSet<String>,
    /// The last script run on each resource here, and how it went.
    last: BTreeMap<String, String>,
    /// What every script sees of this daemon (see [`daemon_env`]).
    daemon_env: Vec<(String, String)>,
}

/// Opens the database, loads the kits and starts the manager, which
/// applies the init strategies once it has heard the cluster.
pub fn start(config: &Config, comm: &comm::Handle) -> Result<Handle, String> {
    let mut lcd = Lcd::open(&config.database).map_err(|e| e.to_string())?;
    let kits = Kits::load(&config.kits).map_err(|e| e.to_string())?;
    let node = config.node.0;
    if lcd.model().nodes.get(&node) != Some(&config.name) {
        let change = Change::SetNode {
            id: node,
            name: config.name.clone(),
        };
        lcd.apply(&change).map_err(|e| e.to_string())?;
    }
    let kit_names: Vec<String> = kits
        .iter()
        .map(|k| format!("{}/{}", k.app, k.rtype))
        .collect();
    info!(
        database = %config.database.display(),
        generation = lcd.model().generation,
        resources = lcd.model().resources.values().filter(|r| r.place.node == node).count(),
        kits = %kit_names.join(", "),
        "resource manager started"
    );
    let daemon_env = daemon_env(config);
    let (inputs, rx) = mpsc::channel(1024);
    let comm = comm.clone();
    let handle_inputs = inputs.clone();
    std::thread::Builder::new()
        .name("resource-manager".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(async move {
                    let (incoming_tx, mut incoming) = mpsc::channel(1024);
                    let remote = Remote::start(&comm, incoming_tx);
                    let forward = inputs.clone();
                    tokio::spawn(async move {
                        while let Some(message) = incoming.recv().await {
                            if forward.send(Input::Remote(message)).await.is_err() {
                                return;
                            }
                        }
                    });
                    let manager = Manager {
                        lcd,
                        kits,
                        node,
                        jobs: BTreeMap::new(),
                        next_job: 1,
                        checks: BTreeMap::new(),
                        inputs,
                        remote,
                        comm: comm.commands.clone(),
                        up: BTreeSet::new(),
                        init_at: Some(Instant::now() + SETTLE),
                        waiting: Vec::new(),
                        acted: BTreeSet::new(),
                        last: BTreeMap::new(),
                        daemon_env,
                    };
                    manager.run(rx, comm.up.clone()).await;
                }),
                Err(e) => error!("cannot start the resource manager: {e}"),
            }
        })
        .map_err(|e| format!("cannot start the resource manager thread: {e}"))?;
    Ok(Handle {
        inputs: handle_inputs,
    })
}

impl Manager {
    fn place(&self, tag: &str) -> Place {
        Place {
            node: self.node,
            tag: tag.to_string(),
        }
    }

    fn model(&self) -> &Model {
        self.lcd.model()
    }

    /// The node that orders configuration changes: the lowest that is up.
    fn coordinator(&self) -> u16 {
        self.up
            .iter()
            .copied()
            .chain([self.node])
            .min()
            .unwrap_or(self.node)
    }

    fn alive(&self, node: u16) -> bool {
        node == self.node || self.up.contains(&node)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Input>, mut up: watch::Receiver<BTreeSet<u16>>) {
        loop {
            let next = self
                .checks
                .values()
                .chain(self.init_at.as_ref())
                .min()
                .copied();
            let wake = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => self.handle(input),
                    None => return,
                },
                changed = up.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now_up = up.borrow_and_update().clone();
                    self.membership(now_up);
                }
                () = tokio::time::sleep_until(wake) => self.timers(),
            }
        }
    }

    fn timers(&mut self) {
        if self.init_at.is_some_and(|at| at <= Instant::now()) {
            self.init_at = None;
            self.init();
        }
        self.run_checks();
    }

    /// Brings in service, once each, the hierarchies whose init strategy
    /// says so, unless another node that is up runs them or has a better
    /// claim, or an action already ran on them. Until this has run, this
    /// node's recorded states are those of before it started, and it does
    /// not report them.
    fn init(&mut self) {
        let mut started = BTreeSet::new();
        let due: Vec<String> = self
            .model()
            .resources
            .values()
            .filter(|r| r.place.node == self.node)
            .filter(|r| match r.init {
                Init::InService => true,
                Init::Autores => r.state.in_service(),
                Init::OutOfService => false,
            })
            .map(|r| r.place.tag.clone())
            .collect();
        for tag in due {
            if started.contains(&tag) || self.acted.contains(&tag) {
                continue;
            }
            let place = self.place(&tag);
            started.extend(self.model().hierarchy(&place));
            if let Some(elsewhere) = self.served_elsewhere(&place) {
                // What may still run here from before (only the daemon
                // stopped) must not run twice: it is taken out of service.
                info!(%tag, "not brought in service at start: node {} runs it; making sure it is out of service here", elsewhere.node);
                if let Err(e) = self.begin(&tag, Purpose::OutOfService, None) {
                    warn!(%tag, "{e}");
                }
                continue;
            }
            if let Some(better) = self.better_claim(&place) {
                info!(%tag, "not brought in service at start: node {} has a better priority for it", better.node);
                continue;
            }
            info!(%tag, "bringing in service at start (init strategy)");
            if let Err(e) = self.begin(&tag, Purpose::InService, None) {
                warn!(%tag, "cannot bring in service at start: {e}");
            }
        }
        let mine: Vec<(Place, State)> = self.own_states();
        for (place, state) in mine {
            self.broadcast(&Message::State { place, state });
        }
    }

    fn own_states(&self) -> Vec<(Place, State)> {
        self.model()
            .resources
            .values()
            .filter(|r| r.place.node == self.node)
            .map(|r| (r.place.clone(), r.state))
            .collect()
    }

    /// An instance equivalent to `place` in service on another node that is
    /// up.
    fn served_elsewhere(&self, place: &Place) -> Option<Place> {
        self.model()
            .equivalents(place)
            .into_iter()
            .filter(|p| p.node != self.node && self.up.contains(&p.node))
            .find(|p| {
                self.model()
                    .resources
                    .get(p)
                    .is_some_and(|r| r.state.in_service())
            })
    }

    /// An instance of `place`'s hierarchy on another node that is up with
    /// a better priority than this node's, which has not failed it.
    fn better_claim(&self, place: &Place) -> Option<Place> {
        let model = self.model();
        let mine = model.resources.get(place)?.priority;
        model
            .equivalents(place)
            .into_iter()
            .filter(|p| p.node != self.node && self.up.contains(&p.node))
            .find(|p| {
                model
                    .resources
                    .get(p)
                    .is_some_and(|r| r.priority < mine && r.state != State::Osf)
            })
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Control { request, reply } => self.control(request, reply),
            Input::Step {
                job,
                place,
                action,
                run,
            } => self.step(job, &place, action, &run),
            Input::Finished { job } => self.finished(job),
            Input::Remote(incoming) => self.remote_message(incoming.from, incoming.message),
        }
    }

    /// Who is up changed: catch newcomers up, and take over what the
    /// departed ran.
    fn membership(&mut self, now_up: BTreeSet<u16>) {
        let joined: Vec<u16> = now_up.difference(&self.up).copied().collect();
        let left: Vec<u16> = self.up.difference(&now_up).copied().collect();
        self.up = now_up;
        for node in joined {
            if self.coordinator() == self.node {
                info!(
                    node,
                    generation = self.model().generation,
                    "sending the configuration to node {node}"
                );
                self.send(
                    node,
                    Message::Snapshot {
                        model: self.model().clone(),
                    },
                );
            }
            // It learns what runs here from us, once we know it ourselves.
            if self.init_at.is_none() {
                for (place, state) in self.own_states() {
                    self.send(node, Message::State { place, state });
                }
            }
        }
        for node in left {
            let lost: Vec<Place> = self
                .model()
                .resources
                .values()
                .filter(|r| r.place.node == node && r.state.in_service())
                .map(|r| r.place.clone())
                .collect();
            for place in lost {
                warn!(node, tag = %place.tag, "node {node} is down with {} in service", place.tag);
                self.take_over(&place);
            }
        }
    }

    fn send(&self, node: u16, message: Message) {
        let remote = self.remote.clone();
        tokio::spawn(async move { remote.send(node, message).await });
    }

    fn broadcast(&self, message: &Message) {
        for &node in &self.up {
            self.send(node, message.clone());
        }
    }

    /// `lost`, an instance of some hierarchy, stopped running (its node
    /// went down, or it failed there): if this node has the best claim to
    /// the hierarchy now, it brings it in service.
    fn take_over(&mut self, lost: &Place) {
        let model = self.model();
        let instances = model.equivalents(lost);
        let serving = instances.iter().any(|p| {
            p != lost
                && self.alive(p.node)
                && model.resources.get(p).is_some_and(|r| r.state.in_service())
        });
        if serving {
            return;
        }
        let best = instances
            .iter()
            .filter(|p| *p != lost && self.alive(p.node))
            .filter_map(|p| model.resources.get(p))
            .filter(|r| r.state != State::Osf)
            .min_by_key(|r| (r.priority, r.place.node));
        let Some(best) = best else {
            error!(tag = %lost.tag, "{lost} is lost and no node that is up can take it");
            return;
        };
        if best.place.node != self.node {
            info!(tag = %lost.tag, "node {} takes over {lost} (priority {})", best.place.node, best.priority);
            return;
        }
        let tag = best.place.tag.clone();
        warn!(%tag, "taking over {lost}: this node has the best priority ({}) among those up", best.priority);
        if let Err(e) = self.begin(&tag, Purpose::InService, None) {
            // Busy means an action already holds it, which brings it in or
            // reports again when it ends.
            warn!(%tag, "cannot take over now: {e}");
        }
    }

    fn remote_message(&mut self, from: u16, message: Message) {
        match message {
            Message::Call { id, request } => {
                debug!(from, ?request, "request from node {from}");
                let dropped = |_| error_response("the request was dropped".into());
                let remote = self.remote.clone();
                if request.is_resource_request() {
                    let (reply, answer) = oneshot::channel();
                    self.control(request, reply);
                    tokio::spawn(async move {
                        let response = answer.await.unwrap_or_else(dropped);
                        remote.send(from, Message::Reply { id, response }).await;
                    });
                } else {
                    let comm = self.comm.clone();
                    tokio::spawn(async move {
                        let response = match comm_command(request) {
                            Ok((command, answer)) => {
                                let _ = comm.send(command).await;
                                answer.response().await.unwrap_or_else(dropped)
                            }
                            Err(response) => response,
                        };
                        remote.send(from, Message::Reply { id, response }).await;
                    });
                }
            }
            Message::Reply { .. } => {}
            Message::Commit { change, generation } => self.commit(from, &change, generation),
            Message::Snapshot { model } => self.catch_up(from, model),
            Message::State { place, state } => {
                if place.node != from {
                    warn!(from, %place, "node {from} reported the state of another node's resource; ignored");
                    return;
                }
                let before = self.model().resources.get(&place).map(|r| r.state);
                if before == Some(state) {
                    return;
                }
                let change = Change::SetState {
                    place: place.clone(),
                    state,
                };
                if let Err(e) = self.lcd.apply(&change) {
                    warn!(%place, "cannot record node {from}'s state {state}: {e}");
                    return;
                }
                info!(node = from, tag = %place.tag, "{state} on node {from}");
                // A node marks a resource failed when it gives its
                // hierarchy up (having taken it out of service first).
                if state == State::Osf {
                    self.take_over(&place);
                }
            }
        }
    }

    /// A change the coordinator ordered.
    fn commit(&mut self, from: u16, change: &Change, generation: u64) {
        let mine = self.model().generation;
        if generation <= mine {
            return;
        }
        if generation > mine + 1 {
            warn!(
                from,
                generation,
                mine,
                "missed a configuration change; asking node {from} for the whole configuration"
            );
            self.ask_snapshot(from);
            return;
        }
        match self.lcd.apply(change) {
            Ok(generation) => info!(
                generation,
                ?change,
                "configuration changed by the coordinator"
            ),
            Err(e) => {
                error!(
                    from,
                    "cannot apply the coordinator's change ({e}); asking for the whole configuration"
                );
                self.ask_snapshot(from);
            }
        }
    }

    fn ask_snapshot(&self, from: u16) {
        let remote = self.remote.clone();
        let inputs = self.inputs.clone();
        tokio::spawn(async move {
            if let Response::Lcd(model) = remote.call(from, Request::Lcd, CHANGE_TIMEOUT).await {
                let message = Message::Snapshot { model };
                let _ = inputs
                    .send(Input::Remote(remote::Incoming { from, message }))
                    .await;
            }
        });
    }

    /// The coordinator's whole configuration: taken if it is not behind
    /// this node's, keeping this node's own states.
    fn catch_up(&mut self, from: u16, mut model: Model) {
        let mine = self.model().generation;
        if model.generation < mine {
            error!(
                from,
                theirs = model.generation,
                mine,
                "the configuration diverged: node {from} coordinates at generation {} but this node has {mine}; changes made while the cluster was partitioned must be made again (see heartline verify)",
                model.generation
            );
            return;
        }
        for resource in model.resources.values_mut() {
            if resource.place.node == self.node {
                resource.state = self
                    .model()
                    .resources
                    .get(&resource.place)
                    .map_or(State::Osu, |r| r.state);
            }
        }
        if model == *self.model() {
            return;
        }
        let generation = model.generation;
        match self.lcd.replace(model) {
            Ok(()) => info!(from, generation, "configuration taken from node {from}"),
            Err(e) => error!(from, "cannot take node {from}'s configuration: {e}"),
        }
    }

    fn control(&mut self, request: Request, reply: oneshot::Sender<Response>) {
        let response = match request {
            Request::Lcd => Response::Lcd(self.model().clone()),
            Request::Change { change } => return self.change(change, reply),
            Request::InService { tag } => {
                return self.start_or_answer(&tag, Purpose::InService, reply);
            }
            Request::OutOfService { tag } => {
                return self.start_or_answer(&tag, Purpose::OutOfService, reply);
            }
            Request::SendEvent { class, event, tag } => {
                info!(%tag, %class, %event, "event raised (sendevent)");
                let purpose = Purpose::Recover {
                    event: format!("{class},{event}"),
                    attempt: 1,
                };
                return self.start_or_answer(&tag, purpose, reply);
            }
            Request::Switchover { tag, to } => return self.switchover(&tag, to, reply),
            Request::Verify => return self.verify(reply),
            Request::Resources => Response::Resources {
                resources: self
                    .model()
                    .resources
                    .values()
                    .filter(|r| r.place.node == self.node)
                    .map(|r| ResourceReport {
                        tag: r.place.tag.clone(),
                        kind: format!("{}/{}", r.app, r.rtype),
                        state: r.state.to_string(),
                        priority: r.priority,
                        last: self.last.get(&r.place.tag).cloned(),
                    })
                    .collect(),
            },
            Request::Remote { node, request } => {
                if node == self.node {
                    return self.control(*request, reply);
                }
                if !self.up.contains(&node) {
                    error_response(format!("node {node} is not up; it cannot run the command"))
                } else {
                    let remote = self.remote.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(remote.call(node, *request, ACTION_TIMEOUT).await);
                    });
                    return;
                }
            }
            other => error_response(format!("{other:?} is not a resource request")),
        };
        let _ = reply.send(response);
    }

    fn start_or_answer(&mut self, tag: &str, purpose: Purpose, reply: oneshot::Sender<Response>) {
        if let Err(e) = self.begin(tag, purpose, Some(reply)) {
            // `begin` answers the caller itself when it refuses.
            warn!(%tag, "{e}");
        }
    }

    /// An administrative change: applied here and committed to every node
    /// if this node coordinates, else sent to the coordinator.
    fn change(&mut self, change: Change, reply: oneshot::Sender<Response>) {
        let coordinator = self.coordinator();
        if coordinator != self.node {
            let remote = self.remote.clone();
            tokio::spawn(async move {
                let request = Request::Change { change };
                let _ = reply.send(remote.call(coordinator, request, CHANGE_TIMEOUT).await);
            });
            return;
        }
        let response = match self.apply_change(&change) {
            Ok(generation) => {
                self.broadcast(&Message::Commit { change, generation });
                Response::Changed { generation }
            }
            Err(e) => error_response(e.to_string()),
        };
        let _ = reply.send(response);
    }

    /// Checks a change against the kits installed here and the actions
    /// under way, then applies it.
    fn apply_change(&mut self, change: &Change) -> Result<u64, LcdError> {
        if let Change::CreateResource(resource) = change {
            let Some(kit) = self.kits.get(&resource.app, &resource.rtype) else {
                let known: Vec<String> = self
                    .kits
                    .iter()
                    .map(|k| format!("{}/{}", k.app, k.rtype))
                    .collect();
                return Err(LcdError::Invalid(format!(
                    "no recovery kit for resource type {}/{} on node {}; installed: {}",
                    resource.app,
                    resource.rtype,
                    self.node,
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                )));
            };
            let problems = kit.problems();
            if !problems.is_empty() {
                return Err(LcdError::Invalid(problems.join("; ")));
            }
        }
        if let Some(tag) = self.busy_tag(change) {
            return Err(LcdError::Invalid(format!(
                "{tag} is busy with an action; try again when it ends"
            )));
        }
        let generation = self.lcd.apply(change)?;
        info!(generation, ?change, "configuration changed");
        Ok(generation)
    }

    /// The tag a change touches on this node, if an action holds it.
    fn busy_tag(&self, change: &Change) -> Option<String> {
        let place = match change {
            Change::RemoveResource(place)
            | Change::SetState { place, .. }
            | Change::SetPriority { place, .. } => place,
            Change::CreateDependency { node, parent, .. }
            | Change::RemoveDependency { node, parent, .. } => {
                return (*node == self.node && self.is_busy(parent)).then(|| parent.clone());
            }
            _ => return None,
        };
        (place.node == self.node && self.is_busy(&place.tag)).then(|| place.tag.clone())
    }

    fn is_busy(&self, tag: &str) -> bool {
        self.jobs.values().any(|job| job.tags.contains(tag))
    }

    /// Moves the hierarchy of `tag` to node `to`: out of service where it
    /// runs, then in service there, each on its own node.
    fn switchover(&mut self, tag: &str, to: u16, reply: oneshot::Sender<Response>) {
        let place = self.place(tag);
        let model = self.model();
        let refuse = |reply: oneshot::Sender<Response>, why: String| {
            let _ = reply.send(error_response(why));
        };
        if !model.resources.contains_key(&place) {
            return refuse(reply, LcdError::NoSuchResource(place).to_string());
        }
        if !self.alive(to) {
            return refuse(
                reply,
                format!("node {to} is not up; a switchover needs the node it goes to"),
            );
        }
        let instances = model.equivalents(&place);
        let Some(target) = instances.iter().find(|p| p.node == to).cloned() else {
            return refuse(
                reply,
                format!(
                    "node {to} has no instance of {tag}'s hierarchy; extend it there first (heartline eqv create)"
                ),
            );
        };
        let running_there = model
            .resources
            .get(&target)
            .is_some_and(|r| r.state.in_service());
        if running_there {
            return refuse(
                reply,
                format!("{tag}'s hierarchy already runs on node {to}"),
            );
        }
        // Every other node that is up and holds the hierarchy takes it out
        // of service first (a no-op where it is not running): the states
        // this node has heard may lag, and it must never run twice.
        let others: Vec<Place> = instances
            .iter()
            .filter(|p| p.node != to && self.alive(p.node))
            .cloned()
            .collect();
        let remote = self.remote.clone();
        let inputs = self.inputs.clone();
        let here = self.node;
        info!(%tag, to, "switchover");
        tokio::spawn(async move {
            let ask = |node: u16, request: Request| {
                let remote = remote.clone();
                let inputs = inputs.clone();
                async move {
                    if node == here {
                        let (reply, answer) = oneshot::channel();
                        let _ = inputs.send(Input::Control { request, reply }).await;
                        answer
                            .await
                            .unwrap_or_else(|_| error_response("the request was dropped".into()))
                    } else {
                        remote.call(node, request, ACTION_TIMEOUT).await
                    }
                }
            };
            let mut steps = Vec::new();
            for other in others {
                let request = Request::OutOfService {
                    tag: other.tag.clone(),
                };
                match ask(other.node, request).await {
                    Response::Done { steps: done } => {
                        steps.extend(
                            done.into_iter()
                                .map(|s| format!("node {}: {s}", other.node)),
                        );
                    }
                    other => {
                        let _ = reply.send(other);
                        return;
                    }
                }
            }
            match ask(
                to,
                Request::InService {
                    tag: target.tag.clone(),
                },
            )
            .await
            {
                Response::Done { steps: done } => {
                    steps.extend(done.into_iter().map(|s| format!("node {to}: {s}")));
                    let _ = reply.send(Response::Done { steps });
                }
                other => {
                    let _ = reply.send(other);
                }
            }
        });
    }

    /// Every node up agrees on the configuration; every hierarchy is sane
    /// and its scripts are runnable here.
    fn verify(&mut self, reply: oneshot::Sender<Response>) {
        let model = self.model().clone();
        let mut problems = Vec::new();
        for resource in model.resources.values() {
            match self.kits.get(&resource.app, &resource.rtype) {
                None if resource.place.node == self.node => problems.push(format!(
                    "{}: no recovery kit {}/{} on this node",
                    resource.place, resource.app, resource.rtype
                )),
                Some(kit) if resource.place.node == self.node => {
                    problems.extend(
                        kit.problems()
                            .into_iter()
                            .map(|p| format!("{}: {p}", resource.place)),
                    );
                }
                _ => {}
            }
            let class = model.equivalents(&resource.place);
            let priorities: BTreeSet<u16> = class
                .iter()
                .filter_map(|p| model.resources.get(p).map(|r| r.priority))
                .collect();
            if priorities.len() != class.len() {
                problems.push(format!("{}: two nodes share a priority", resource.place));
            }
            // Every resource a hierarchy member depends on is extended to
            // the same nodes as the member.
            for child in model.children(resource.place.node, &resource.place.tag) {
                let child = Place {
                    node: resource.place.node,
                    tag: child.to_string(),
                };
                let nodes =
                    |c: &BTreeSet<Place>| c.iter().map(|p| p.node).collect::<BTreeSet<u16>>();
                if nodes(&class) != nodes(&model.equivalents(&child)) {
                    problems.push(format!(
                        "{}: extended to nodes {:?} but its dependency {} to {:?}",
                        resource.place,
                        nodes(&class),
                        child.tag,
                        nodes(&model.equivalents(&child))
                    ));
                }
            }
        }
        let peers: Vec<u16> = self.up.iter().copied().collect();
        let remote = self.remote.clone();
        let here = self.node;
        tokio::spawn(async move {
            for node in &peers {
                match remote.call(*node, Request::Lcd, CHANGE_TIMEOUT).await {
                    Response::Lcd(theirs) => {
                        if theirs.generation != model.generation {
                            problems.push(format!(
                                "node {node} is at generation {}, node {here} at {}",
                                theirs.generation, model.generation
                            ));
                        } else if !same_configuration(&theirs, &model) {
                            problems.push(format!(
                                "node {node} has a different configuration at the same generation {}",
                                model.generation
                            ));
                        }
                    }
                    other => problems.push(format!("node {node}: {other:?}")),
                }
            }
            let summary = format!(
                "{} resources, {} dependencies, {} equivalencies at generation {}; compared with nodes {peers:?}",
                model.resources.len(),
                model.dependencies.len(),
                model.equivalencies.len(),
                model.generation
            );
            let _ = reply.send(Response::Verified { summary, problems });
        });
    }

    /// Starts an action on the hierarchy of `tag`: its scripts in order, as
    /// a task that reports each step back.
    fn begin(
        &mut self,
        tag: &str,
        purpose: Purpose,
        reply: Option<oneshot::Sender<Response>>,
    ) -> Result<(), String> {
        let place = self.place(tag);
        let refuse = |reply: Option<oneshot::Sender<Response>>, why: String| {
            if let Some(reply) = reply {
                let _ = reply.send(error_response(why.clone()));
            }
            Err(why)
        };
        let model = self.lcd.model();
        if let Err(e) = model.resource(&place) {
            return refuse(reply, e.to_string());
        }
        let tags = model.hierarchy(&place);
        if let Some(busy) = tags.iter().find(|t| self.is_busy(t)) {
            // One action at a time per hierarchy: a check is skipped (the
            // next comes soon), anything else waits its turn.
            if purpose == Purpose::Check {
                return Err(format!("{busy} is busy with another action"));
            }
            self.waiting.push((tag.to_string(), purpose, reply));
            return Ok(());
        }
        if purpose == Purpose::InService {
            if let Some(elsewhere) = self.served_elsewhere(&place) {
                return refuse(
                    reply,
                    format!(
                        "{tag}'s hierarchy runs on node {} ({}); use heartline switchover to move it",
                        elsewhere.node, elsewhere.tag
                    ),
                );
            }
        }
        let state_of = |t: &String| model.resources.get(&self.place(t)).map(|r| r.state);
        let order: Vec<(String, Action)> = match &purpose {
            Purpose::InService => model
                .restore_order(&place)
                .into_iter()
                .filter(|t| state_of(t) != Some(State::Isp))
                .map(|t| (t, Action::Restore))
                .collect(),
            Purpose::OutOfService | Purpose::GiveUp { .. } => model
                .remove_order(&place)
                .into_iter()
                .filter(|t| state_of(t).is_some_and(State::in_service))
                .map(|t| (t, Action::Remove))
                .collect(),
            Purpose::Check => vec![(tag.to_string(), Action::QuickCheck)],
            Purpose::Recover { .. } => vec![(tag.to_string(), Action::Recover)],
        };
        let mut steps = Vec::new();
        for (tag, action) in order {
            let Ok(resource) = model.resource(&self.place(&tag)) else {
                continue;
            };
            let Some(kit) = self.kits.get(&resource.app, &resource.rtype) else {
                return refuse(
                    reply,
                    format!(
                        "no recovery kit for {}/{} (resource {tag}) on this node",
                        resource.app, resource.rtype
                    ),
                );
            };
            let event = match &purpose {
                Purpose::Recover { event, .. } => event.clone(),
                _ => String::new(),
            };
            steps.push((
                resource.place.clone(),
                action,
                kit.script(action),
                kit.manifest.timeout(action),
                script_env(&self.daemon_env, resource, action, &event),
            ));
        }
        if steps.is_empty() {
            if let Some(reply) = reply {
                let already = match purpose {
                    Purpose::OutOfService | Purpose::GiveUp { .. } => "out of service",
                    _ => "in service",
                };
                let _ = reply.send(Response::Done {
                    steps: vec![format!("{tag}'s hierarchy is already {already} here")],
                });
            }
            return Ok(());
        }
        let job = self.next_job;
        self.next_job += 1;
        if purpose != Purpose::Check {
            self.acted.extend(tags.iter().cloned());
        }
        if !matches!(purpose, Purpose::Check) {
            info!(%tag, ?purpose, steps = steps.len(), "hierarchy action starts");
        }
        self.jobs.insert(
            job,
            Job {
                purpose,
                subject: tag.to_string(),
                tags,
                steps: Vec::new(),
                failed: false,
                reply,
            },
        );
        let inputs = self.inputs.clone();
        tokio::spawn(async move {
            for (place, action, path, timeout, env) in steps {
                let run = script::run(&path, &[], &env, timeout).await;
                let ok = run.succeeded();
                let _ = inputs
                    .send(Input::Step {
                        job,
                        place,
                        action,
                        run,
                    })
                    .await;
                if !ok {
                    break;
                }
            }
            let _ = inputs.send(Input::Finished { job }).await;
        });
        Ok(())
    }

    /// Records one script's outcome in the database.
    fn step(&mut self, job: u64, place: &Place, action: Action, run: &ScriptRun) {
        let ok = run.succeeded();
        let line = format!("{action} {}: {run}", place.tag);
        self.last.insert(
            place.tag.clone(),
            format!(
                "{action} {run}, at {}",
                humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            ),
        );
        if ok {
            info!(tag = %place.tag, %action, "{run}");
        } else {
            warn!(tag = %place.tag, %action, "{run}");
        }
        let state = match (action, ok) {
            (Action::Restore | Action::Recover, true) => Some(State::Isp),
            (Action::Restore | Action::Remove, false) => Some(State::Osf),
            (Action::Remove, true) => Some(State::Osu),
            _ => None,
        };
        if let Some(state) = state {
            self.set_state(place, state);
        }
        if let Some(job) = self.jobs.get_mut(&job) {
            job.steps.push(line);
            job.failed |= !ok;
        }
    }

    /// Records a state of this node's resource and tells the other nodes.
    fn set_state(&mut self, place: &Place, state: State) {
        if self.model().resources.get(place).map(|r| r.state) == Some(state) {
            return;
        }
        let change = Change::SetState {
            place: place.clone(),
            state,
        };
        match self.lcd.apply(&change) {
            Ok(_) => {
                if state == State::Isp {
                    self.schedule_check(&place.tag);
                } else {
                    self.checks.remove(&place.tag);
                }
                self.broadcast(&Message::State {
                    place: place.clone(),
                    state,
                });
            }
            Err(e) => error!(tag = %place.tag, "cannot record state {state}: {e}"),
        }
    }

    fn schedule_check(&mut self, tag: &str) {
        let interval = self
            .model()
            .resources
            .get(&self.place(tag))
            .and_then(|r| self.kits.get(&r.app, &r.rtype))
            .and_then(|k| k.manifest.quick_check_interval);
        match interval {
            Some(every) => {
                self.checks.insert(tag.to_string(), Instant::now() + every);
            }
            None => {
                self.checks.remove(tag);
            }
        }
    }

    /// An action ended: answer the CLI, and follow a failed check with
    /// recovery, a failed recovery with another attempt, and the last
    /// failed attempt with giving the hierarchy up to another node.
    fn finished(&mut self, job: u64) {
        let Some(job) = self.jobs.remove(&job) else {
            return;
        };
        // Checks that fell due while the action held the hierarchy.
        for member in &job.tags {
            let in_service = self
                .model()
                .resources
                .get(&self.place(member))
                .map(|r| r.state);
            if in_service == Some(State::Isp) && !self.checks.contains_key(member) {
                self.schedule_check(member);
            }
        }
        for (tag, purpose, reply) in std::mem::take(&mut self.waiting) {
            if let Err(e) = self.begin(&tag, purpose, reply) {
                warn!(%tag, "{e}");
            }
        }
        let tag = job.subject.clone();
        match (&job.purpose, job.failed) {
            (Purpose::Check, false) => self.schedule_check(&tag),
            (Purpose::Check, true) => {
                warn!(%tag, "quickCheck failed: recovering");
                let purpose = Purpose::Recover {
                    event: "quickCheck,failed".into(),
                    attempt: 1,
                };
                if let Err(e) = self.begin(&tag, purpose, None) {
                    warn!(%tag, "{e}");
                }
            }
            (Purpose::Recover { event, attempt }, true) => {
                let attempts = self
                    .model()
                    .resources
                    .get(&self.place(&tag))
                    .and_then(|r| self.kits.get(&r.app, &r.rtype))
                    .map_or(1, |k| k.manifest.recover_attempts);
                let purpose = if *attempt < attempts {
                    warn!(%tag, attempt, attempts, "local recovery failed; trying again");
                    Purpose::Recover {
                        event: event.clone(),
                        attempt: attempt + 1,
                    }
                } else {
                    error!(%tag, attempts, "local recovery failed: taking the hierarchy out of service here so that another node takes it");
                    Purpose::GiveUp {
                        failed: tag.clone(),
                    }
                };
                if let Err(e) = self.begin(&tag, purpose, job.reply) {
                    warn!(%tag, "{e}");
                }
                return;
            }
            (Purpose::GiveUp { failed }, _) => {
                // Marked failed last: the other nodes take over on seeing it.
                let failed = self.place(failed);
                self.set_state(&failed, State::Osf);
            }
            _ => {}
        }
        if let Some(reply) = job.reply {
            let response = if job.failed {
                error_response(format!(
                    "{} failed: {}",
                    purpose_name(&job.purpose),
                    job.steps.last().cloned().unwrap_or_default()
                ))
            } else {
                Response::Done { steps: job.steps }
            };
            let _ = reply.send(response);
        }
    }

    /// Starts the quickCheck of every in-service resource that is due and
    /// not busy.
    fn run_checks(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .checks
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(tag, _)| tag.clone())
            .collect();
        for tag in due {
            self.checks.remove(&tag);
            if self.is_busy(&tag) {
                // The action holding it reschedules it when it ends well.
                continue;
            }
            if let Err(e) = self.begin(&tag, Purpose::Check, None) {
                warn!(%tag, "cannot check: {e}");
            }
        }
    }
}

/// Whether two databases hold the same configuration, states aside (each
/// node's states reach the others a moment later).
fn same_configuration(a: &Model, b: &Model) -> bool {
    let without_states = |m: &Model| {
        let mut m = m.clone();
        for r in m.resources.values_mut() {
            r.state = State::Osu;
        }
        m
    };
    without_states(a) == without_states(b)
}

fn purpose_name(purpose: &Purpose) -> &'static str {
    match purpose {
        Purpose::InService => "in-service",
        Purpose::OutOfService => "out-of-service",
        Purpose::Check => "quickCheck",
        Purpose::Recover { .. } => "recovery",
        Purpose::GiveUp { .. } => "failover",
    }
}

/// What every script sees of the daemon running it, so that a kit can run
/// `heartline` commands against it and keep files of its own:
/// `HEARTLINE_BIN` (the daemon's program), `HEARTLINE_SOCKET` (its control
/// socket) and `HEARTLINE_STATE_DIR`.
fn daemon_env(config: &Config) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "HEARTLINE_SOCKET".to_string(),
            config.control_socket.display().to_string(),
        ),
        (
            "HEARTLINE_STATE_DIR".to_string(),
            config.state_dir.display().to_string(),
        ),
    ];
    if let Ok(program) = std::env::current_exe() {
        env.push(("HEARTLINE_BIN".to_string(), program.display().to_string()));
    }
    env
}

/// The environment a kit's script sees: the daemon's, who it acts on and
/// why, and the resource's properties as `HEARTLINE_PROP_<NAME>`.
fn script_env(
    daemon_env: &[(String, String)],
    resource: &Resource,
    action: Action,
    event: &str,
) -> Vec<(String, String)> {
    let mut env = daemon_env.to_vec();
    env.extend([
        ("HEARTLINE_TAG".to_string(), resource.place.tag.clone()),
        ("HEARTLINE_ID".to_string(), resource.id.clone()),
        ("HEARTLINE_APP".to_string(), resource.app.clone()),
        ("HEARTLINE_TYPE".to_string(), resource.rtype.clone()),
        (
            "HEARTLINE_NODE".to_string(),
            resource.place.node.to_string(),
        ),
        ("HEARTLINE_ACTION".to_string(), action.to_string()),
        ("HEARTLINE_INFO".to_string(), resource.info.clone()),
    ]);
    if !event.is_empty() {
        env.push(("HEARTLINE_EVENT".to_string(), event.to_string()));
    }
    for (name, value) in &resource.props {
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        env.push((format!("HEARTLINE_PROP_{name}"), value.clone()));
    }
    env
}

fn error_response(message: String) -> Response {
    Response::Error {
        message,
        timed_out: false,
    }
}
