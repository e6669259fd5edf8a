//! The resource shell: the tokio side of the resource brain. It owns the
//! brain (`heartline_brain::Brain`), the configuration database on disk
//! ([`Lcd`]) and the kits, on a thread of its own, so database writes
//! (fsync) and scripts never delay the communication manager.
//!
//! It feeds the brain what happens (the communication manager's membership
//! events and admin messages, in order; requests; scripts that ended; the
//! passing of time) and carries out what the brain asks, in this order
//! after every input: first the database writes (so nothing is answered or
//! sent that the disk does not hold), then scripts started as tasks, admin
//! messages handed to the communication manager, answers, and notices to
//! the log and to `watch`. It decides nothing itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use heartline_brain::api::{Answer, Request, RequestId};
use heartline_brain::message::{AdminMessage, decode, encode};
use heartline_brain::model::{Change, Resource};
use heartline_brain::{Brain, BrainConfig, Input, JobId, Level, Output, Persist};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant as TokioInstant;
use tracing::{debug, error, info, warn};

use super::kit::{Action, Kits};
use super::lcd::Lcd;
use super::script::{self, ScriptRun};
use crate::comm::{self, Command, ToBrain};
use crate::config::Config;

/// What the shell is asked by the rest of the daemon.
#[derive(Debug)]
enum ShellInput {
    Request {
        request: Request,
        reply: oneshot::Sender<Answer>,
    },
    Script {
        job: JobId,
        run: ScriptRun,
        /// Runs in a row that could not start, this one included (0 for
        /// one that started).
        streak: u32,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
    Fenced {
        id: heartline_brain::FenceId,
        run: super::fence::FenceRun,
    },
    /// The kernel said something of an interface (the IP kit's monitor).
    #[cfg(target_os = "linux")]
    Link(crate::ip::monitor::LinkEvent),
}

/// The rest of the daemon's handle on the resource brain.
#[derive(Debug, Clone)]
pub struct Handle {
    inputs: mpsc::UnboundedSender<ShellInput>,
}

impl Handle {
    /// Asks the brain; its answer, or an error if the shell is gone.
    pub async fn ask(&self, request: Request) -> Answer {
        let (reply, answer) = oneshot::channel();
        if self
            .inputs
            .send(ShellInput::Request { request, reply })
            .is_err()
        {
            return Answer::error("the resource manager has stopped");
        }
        answer
            .await
            .unwrap_or_else(|_| Answer::error("the resource manager dropped the request"))
    }

    /// A clean stop: the brain takes this node's hierarchies out of service
    /// (or hands them over) and says when it is done.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.inputs.send(ShellInput::Shutdown { done }).is_ok() {
            let _ = finished.await;
        }
    }
}

/// Everything the shell carries out, and the brain itself.
struct Shell {
    brain: Brain,
    lcd: Lcd,
    kits: Kits,
    comm: comm::Handle,
    /// Admin messages for `--on` (forwarded control requests and their
    /// answers): the control layer's.
    forwards: mpsc::UnboundedSender<(u16, AdminMessage)>,
    inputs: mpsc::UnboundedSender<ShellInput>,
    started: TokioInstant,
    next_request: u64,
    waiting: HashMap<RequestId, oneshot::Sender<Answer>>,
    exit: Vec<oneshot::Sender<()>>,
    exited: bool,
    daemon_env: Vec<(String, String)>,
    /// Why the database could not be written, while it cannot: the whole
    /// model is written at the next chance.
    storage_failure: Option<String>,
    /// The watchdog device, fed up to the brain's fence deadline.
    watchdog: Option<crate::sys::watchdog::Watchdog>,
    /// Why the watchdog could not be fed, once said.
    watchdog_failure: Option<String>,
    /// The fence devices, to run what the brain asks.
    fencing: Option<crate::config::FencingSpec>,
    /// Scripts in a row that could not be started for want of descriptors
    /// or processes (0 once one starts): paces the retries and the log.
    exhausted: Arc<AtomicU32>,
    /// Where the fast lease's guard on the real-time thread takes its
    /// orders (with a fast lease).
    #[cfg(target_os = "linux")]
    fast_guard: Option<tokio::sync::watch::Sender<Option<crate::ip::guard::Order>>>,
}

/// Opens the database, loads the kits and starts the brain on a thread of
/// its own. `from_comm` is the communication manager's stream for it;
/// `forwards` takes the admin messages that are the control layer's.
pub fn start(
    config: &Config,
    comm: &comm::Handle,
    incarnation: u64,
    from_comm: mpsc::UnboundedReceiver<ToBrain>,
    forwards: mpsc::UnboundedSender<(u16, AdminMessage)>,
) -> Result<Handle, String> {
    let (lcd, stored) = Lcd::open(&config.database).map_err(|e| e.to_string())?;
    let kits = Kits::load(&config.kits).map_err(|e| e.to_string())?;
    let kit_names: Vec<String> = kits
        .iter()
        .map(|k| format!("{}/{}", k.app, k.rtype))
        .collect();
    let node = config.node.0;
    let mut nodes: std::collections::BTreeSet<u16> = config
        .peers
        .iter()
        .filter(|p| p.is_host())
        .map(|p| p.id.0)
        .collect();
    nodes.insert(node);
    let mut cfg = BrainConfig::new(node, incarnation, nodes);
    cfg.names = config.host_names();
    cfg.kits = kits.brain_info();
    #[cfg(target_os = "linux")]
    {
        let (name, info) = crate::ip::brain_info();
        cfg.kits.insert(name, info);
    }
    for (kind, kit) in &cfg.kits {
        if !kit.problems.is_empty() {
            error!(
                "recovery kit {kind} cannot be used (fix it, then restart the daemon): {}",
                kit.problems.join("; ")
            );
        }
    }
    for resource in stored
        .model
        .resources
        .values()
        .filter(|r| r.place.node == node)
    {
        if let Some(kit) = kits.get(&resource.app, &resource.rtype) {
            let unsafe_scripts = kit.unsafe_user_scripts(&Action::ALL, &resource.props);
            if !unsafe_scripts.is_empty() {
                error!(
                    "{}'s scripts will not be run until fixed: {}",
                    resource.place.tag,
                    unsafe_scripts.join("; ")
                );
            }
        }
    }
    cfg.on_stop = config.policy.on_stop;
    cfg.failure_window = config.policy.failure_window.into();
    cfg.max_failures = config.policy.max_failures;
    let watchdog = config
        .quorum
        .as_ref()
        .and_then(|q| q.self_fence.as_ref())
        .and_then(|f| match f {
            crate::config::SelfFence::Device { path, timeout } => {
                Some(crate::sys::watchdog::Watchdog::new(path, *timeout))
            }
            crate::config::SelfFence::Dongle { .. } => None,
        });
    match config.quorum.as_ref().map(|q| &q.self_fence) {
        Some(Some(crate::config::SelfFence::Device { path, timeout })) => info!(
            "self-fence: the watchdog device {} ({} ms), fed until this node's lease ends while anything may run here",
            path.display(),
            timeout.as_millis()
        ),
        Some(Some(crate::config::SelfFence::Dongle { node, within })) => info!(
            "self-fence: dongle {node}'s watchdog (with its reset pulse, {} ms), sent frames until this node's lease ends while anything may run here",
            within.as_millis()
        ),
        Some(None) => warn!(
            "quorum without a self-fence (no quorum.watchdog, no dongle with a reset_pulse): if this daemon dies or stalls while applications run, only a fence device keeps them from running twice"
        ),
        None if cfg.nodes.len() > 1 => warn!(
            "quorum is off (two nodes without a witness, or [quorum] enabled = false): a network partition, or a daemon that dies while its applications run, can leave a hierarchy running on two nodes; give a 2-node cluster a witness (docs/admin.md: Quorum and leases)"
        ),
        None => {}
    }
    cfg.quorum = config.quorum.as_ref().map(|q| {
        let lease = q.lease.into();
        heartline_brain::QuorumConfig {
            votes: q
                .votes
                .iter()
                .filter(|(_, v)| **v != 1)
                .map(|(n, v)| (*n, *v))
                .collect(),
            expected: q.expected,
            wait_for_all: q.wait_for_all,
            no_quorum: q.no_quorum,
            lease,
            stop_bound: q.stop_bound.into(),
            drift_margin: heartline_brain::default_margin(lease),
            detect_floor: q.detect_floor.into(),
            witness: q.witness.is_some(),
            fast: q.fast.map(|(lease, stop_bound)| {
                let lease = lease.into();
                heartline_brain::FastLease {
                    kinds: crate::config::FAST_KINDS
                        .iter()
                        .map(|k| (*k).to_string())
                        .collect(),
                    lease,
                    stop_bound: stop_bound.into(),
                    drift_margin: heartline_brain::default_margin(lease),
                }
            }),
        }
    });
    cfg.fencing = config
        .fencing
        .as_ref()
        .map(crate::config::FencingSpec::brain_config);
    let fencing = config.fencing.clone();
    for device in config.fencing.iter().flat_map(|f| &f.devices) {
        let dongle = device.agent == crate::config::fencing::DONGLE_AGENT;
        if !dongle && device.program().is_none_or(|p| !p.is_file()) {
            warn!(
                "fence device {} (node {}, level {}): agent {} not found; fencing node {} through it will fail until it is installed (Debian and Ubuntu: apt install fence-agents)",
                device.name, device.node, device.level, device.agent, device.node
            );
        }
    }
    info!(
        database = %config.database.display(),
        version = %stored.model.version(),
        resources = stored.model.resources.values().filter(|r| r.place.node == node).count(),
        kits = %kit_names.join(", "),
        "resource manager started"
    );
    let daemon_env = daemon_env(config);
    let (inputs, rx) = mpsc::unbounded_channel();
    let handle = Handle {
        inputs: inputs.clone(),
    };
    #[cfg(target_os = "linux")]
    let fast_guard = cfg.quorum.as_ref().and_then(|q| q.fast.as_ref()).map(|_| {
        let events = comm.clone();
        crate::ip::guard::start(&comm.realtime, move |text| events.event(text))
    });
    let comm = comm.clone();
    std::thread::Builder::new()
        .name("resource-manager".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(async move {
                    let started = TokioInstant::now();
                    let brain = Brain::new(cfg, stored, heartline_core::Instant::ZERO);
                    let shell = Shell {
                        brain,
                        lcd,
                        kits,
                        comm,
                        forwards,
                        inputs,
                        started,
                        next_request: 1,
                        waiting: HashMap::new(),
                        exit: Vec::new(),
                        exited: false,
                        daemon_env,
                        storage_failure: None,
                        watchdog,
                        watchdog_failure: None,
                        fencing,
                        exhausted: Arc::default(),
                        #[cfg(target_os = "linux")]
                        fast_guard,
                    };
                    shell.run(rx, from_comm).await;
                }),
                Err(e) => error!("cannot start the resource manager: {e}"),
            }
        })
        .map_err(|e| format!("cannot start the resource manager thread: {e}"))?;
    Ok(handle)
}

impl Shell {
    fn now(&self) -> heartline_core::Instant {
        heartline_core::Instant::from_micros(
            u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
        )
    }

    async fn run(
        mut self,
        mut inputs: mpsc::UnboundedReceiver<ShellInput>,
        mut from_comm: mpsc::UnboundedReceiver<ToBrain>,
    ) {
        self.carry_out().await;
        self.publish_fence_deadline();
        #[cfg(target_os = "linux")]
        self.publish_fast_guard();
        #[cfg(target_os = "linux")]
        self.watch_links();
        loop {
            let tend = self
                .watchdog
                .as_ref()
                .filter(|w| w.armed() || self.brain.fence_deadline().is_some())
                .map(|w| TokioInstant::now() + w.period());
            let wake = self
                .brain
                .poll_timeout()
                .map(|at| self.started + Duration::from_micros(at.as_micros()))
                .into_iter()
                .chain(tend)
                .min()
                .unwrap_or_else(|| TokioInstant::now() + Duration::from_secs(3600));
            tokio::select! {
                input = inputs.recv() => match input {
                    Some(input) => self.input(input),
                    None => return,
                },
                event = from_comm.recv() => match event {
                    Some(event) => self.on_comm(event),
                    None => return,
                },
                () = tokio::time::sleep_until(wake) => {
                    let now = self.now();
                    if self.brain.poll_timeout().is_some_and(|at| at <= now) {
                        self.brain.handle_timeout(now);
                    }
                }
            }
            self.carry_out().await;
            self.tend_watchdog();
            self.publish_fence_deadline();
            #[cfg(target_os = "linux")]
            self.publish_fast_guard();
        }
    }

    /// Tells the fast lease's guard which virtual addresses to remove, and
    /// when, unless the lease is renewed before (see [`crate::ip::guard`]).
    #[cfg(target_os = "linux")]
    fn publish_fast_guard(&self) {
        let Some(orders) = &self.fast_guard else {
            return;
        };
        let model = self.brain.model();
        let order = self.brain.fast_guard().and_then(|guard| {
            let vips: Vec<(String, crate::ip::vip::VipSpec)> = guard
                .places
                .iter()
                .filter_map(|place| model.resources.get(place))
                .filter(|r| crate::ip::is_builtin(&r.app, &r.rtype))
                .filter_map(|r| {
                    let spec = crate::ip::vip::VipSpec::from_props(&r.props).ok()?;
                    Some((r.place.tag.clone(), spec))
                })
                .collect();
            (!vips.is_empty()).then(|| crate::ip::guard::Order {
                at: self.started + Duration::from_micros(guard.at.as_micros()),
                vips,
            })
        });
        orders.send_if_modified(|o| {
            let changed = *o != order;
            *o = order;
            changed
        });
    }

    /// Tells the communication manager the brain's fence deadline, for a
    /// dongle that is this node's self-fence.
    fn publish_fence_deadline(&self) {
        let deadline = self
            .brain
            .fence_deadline()
            .map(|at| self.started + Duration::from_micros(at.as_micros()));
        self.comm.fence_deadline.send_if_modified(|d| {
            let changed = *d != deadline;
            *d = deadline;
            changed
        });
    }

    /// Feeds the watchdog device up to the brain's fence deadline, or
    /// disarms it when nothing may run here.
    fn tend_watchdog(&mut self) {
        let Some(watchdog) = self.watchdog.as_mut() else {
            return;
        };
        let deadline = self
            .brain
            .fence_deadline()
            .map(|at| (self.started + Duration::from_micros(at.as_micros())).into_std());
        let was_armed = watchdog.armed();
        let tended = watchdog.tend(std::time::Instant::now(), deadline);
        match (was_armed, watchdog.armed()) {
            (false, true) => info!(
                "watchdog armed: something may run here, so the device is fed until this node's lease ends"
            ),
            (true, false) => info!("watchdog disarmed: nothing may run here"),
            _ => {}
        }
        match tended {
            Ok(crate::sys::watchdog::Tended::Starved) => {
                if self.watchdog_failure.is_none() {
                    let text = "the watchdog is no longer fed: this node's lease ends before another feed would; it resets unless what runs here stops or the lease is renewed".to_string();
                    warn!("{text}");
                    self.event(text.clone());
                    self.watchdog_failure = Some(text);
                }
            }
            Ok(_) => self.watchdog_failure = None,
            Err(e) => {
                let text = format!("cannot feed the watchdog device: {e}");
                if self.watchdog_failure.as_deref() != Some(text.as_str()) {
                    error!("{text}");
                    self.event(text.clone());
                    self.watchdog_failure = Some(text);
                }
            }
        }
    }

    fn input(&mut self, input: ShellInput) {
        let now = self.now();
        match input {
            ShellInput::Request { request, reply } => {
                if let Some(why) = self.unsafe_scripts_named(&request) {
                    let _ = reply.send(Answer::error(why));
                    return;
                }
                let id = RequestId(self.next_request);
                self.next_request += 1;
                self.waiting.insert(id, reply);
                self.brain.handle(now, Input::Request { id, request });
            }
            ShellInput::Script { job, run, streak }
                if matches!(run.outcome, script::Outcome::Exhausted(_)) =>
            {
                // Out of descriptors or processes: nothing ran, so nothing
                // failed (the brain skips a check, retries anything else).
                // Said the first time and then at 2, 4, 8... in a row.
                if streak <= 1 || streak.is_power_of_two() {
                    error!(
                        "{run}: this node is out of file descriptors or processes; the script did not run and is not counted as failed; {streak} in a row, retried every {} at most (raise LimitNOFILE, or find what holds them: ls /proc/{}/fd | wc -l)",
                        humantime::format_duration(exhausted_pause(u32::MAX)),
                        std::process::id()
                    );
                }
                self.brain.handle(
                    now,
                    Input::ScriptNotRun {
                        job,
                        summary: run.to_string(),
                    },
                );
            }
            ShellInput::Script { job, run, .. } => {
                let ok = run.succeeded();
                self.brain.handle(
                    now,
                    Input::ScriptDone {
                        job,
                        ok,
                        summary: run.summary(),
                    },
                );
            }
            #[cfg(target_os = "linux")]
            ShellInput::Link(event) => self.on_link(&event),
            ShellInput::Fenced { id, run } => {
                self.brain.handle(
                    now,
                    Input::FenceDone {
                        id,
                        ok: run.confirmed,
                        summary: run.summary,
                    },
                );
            }
            ShellInput::Shutdown { done } => {
                if self.exited {
                    let _ = done.send(());
                } else {
                    self.exit.push(done);
                    self.brain.handle(now, Input::Shutdown);
                }
            }
        }
    }

    /// A resource created on this node, or a property set on one of its
    /// resources, that names a user script not safe to run as root: why
    /// it is refused (it would be refused before every run anyway).
    fn unsafe_scripts_named(&self, request: &Request) -> Option<String> {
        let Request::Change { change } = request else {
            return None;
        };
        if let Some(refused) = self.bad_builtin_props(change) {
            return Some(refused);
        }
        let (place, resource, props) = match change {
            Change::CreateResource(r) => (&r.place, r, r.props.clone()),
            Change::SetProp {
                place,
                name,
                value: Some(value),
            } => (
                place,
                self.brain.model().resources.get(place)?,
                [(name.clone(), value.clone())].into(),
            ),
            _ => return None,
        };
        if place.node != self.brain.node() {
            return None;
        }
        let kit = self.kits.get(&resource.app, &resource.rtype)?;
        let found = kit.unsafe_user_scripts(&Action::ALL, &props);
        (!found.is_empty()).then(|| format!("{place}: {}", found.join("; ")))
    }

    /// A resource of a built-in kit (the IP kit) created, or given a
    /// property, that its kit cannot use: why, in one line naming the
    /// property (checked wherever the request arrives).
    fn bad_builtin_props(&self, change: &Change) -> Option<String> {
        let (place, resource, props) = match change {
            Change::CreateResource(r) => (&r.place, r, r.props.clone()),
            Change::SetProp { place, name, value } => {
                let resource = self.brain.model().resources.get(place)?;
                // Where the address is comes from these: changed while it
                // is in service, the next remove would look elsewhere and
                // leave it behind.
                if is_builtin(&resource.app, &resource.rtype)
                    && ["address", "interface", "label"].contains(&name.as_str())
                    && matches!(
                        resource.state,
                        heartline_brain::model::State::Isp | heartline_brain::model::State::Isu
                    )
                {
                    return Some(format!(
                        "{place}: {name} cannot change while it is in service (take it out of service first)"
                    ));
                }
                let mut props = resource.props.clone();
                match value {
                    Some(value) => props.insert(name.clone(), value.clone()),
                    None => props.remove(name),
                };
                (place, resource, props)
            }
            _ => return None,
        };
        builtin_props_problem(&resource.app, &resource.rtype, &props)
            .map(|e| format!("{place}: {e}"))
    }

    fn on_comm(&mut self, event: ToBrain) {
        let now = self.now();
        match event {
            ToBrain::Membership(change) => self.brain.handle(now, Input::Membership(change)),
            ToBrain::Witness {
                view,
                sent,
                granted,
            } => {
                let sent = heartline_core::Instant::from_micros(
                    u64::try_from(sent.saturating_duration_since(self.started).as_micros())
                        .unwrap_or(u64::MAX),
                );
                self.brain.handle(
                    now,
                    Input::Witness {
                        view,
                        sent,
                        granted,
                    },
                );
            }
            ToBrain::Heard { node, echoed } => {
                // The communication manager's clock, on this shell's scale
                // (an instant before this shell started counts as its
                // start: earlier, so never a longer lease).
                let echoed = heartline_core::Instant::from_micros(
                    u64::try_from(echoed.saturating_duration_since(self.started).as_micros())
                        .unwrap_or(u64::MAX),
                );
                self.brain.handle(now, Input::Heard { node, echoed });
            }
            ToBrain::Admin { from, bytes } => match decode(&bytes) {
                Ok(AdminMessage::Brain { msg }) => {
                    self.brain.handle(now, Input::Message { from, msg: *msg });
                }
                Ok(other) => {
                    let _ = self.forwards.send((from, other));
                }
                Err(e) => {
                    warn!(from, "admin message from node {from} refused: {e}");
                    self.event(format!("admin message from node {from} refused: {e}"));
                }
            },
        }
    }

    /// Carries out what the brain asks: the database first, then the rest
    /// in order.
    async fn carry_out(&mut self) {
        let persist = self.brain.take_persist();
        if self.storage_failure.is_some() {
            self.save(&Persist {
                all: true,
                meta: true,
                ..persist.unwrap_or_default()
            });
        } else if let Some(persist) = persist {
            self.save(&persist);
        }
        while let Some(output) = self.brain.poll_output() {
            match output {
                Output::Run {
                    job,
                    action,
                    resource,
                    event,
                    handover,
                } => self.run_script(job, action, &resource, event.as_deref(), handover),
                Output::Send { to, msg } => {
                    let bytes = encode(&AdminMessage::Brain { msg: Box::new(msg) });
                    if self
                        .comm
                        .commands
                        .send(Command::SendAdmin { to, bytes })
                        .await
                        .is_err()
                    {
                        debug!("the communication manager is gone");
                    }
                }
                Output::Reply { id, answer } => {
                    let answer = match (&self.storage_failure, answer) {
                        (Some(why), Answer::Changed { .. }) => Answer::error(format!(
                            "the change is made and sent to the other nodes, but this node cannot write its database ({why}): it keeps it in memory and writes it once the disk works again"
                        )),
                        (_, answer) => answer,
                    };
                    if let Some(reply) = self.waiting.remove(&id) {
                        let _ = reply.send(answer);
                    }
                }
                Output::Notice { level, text } => {
                    match level {
                        Level::Info => info!("{text}"),
                        Level::Warn => warn!("{text}"),
                        Level::Error => error!("{text}"),
                    }
                    self.event(text);
                }
                Output::Exit => {
                    self.exited = true;
                    for done in self.exit.drain(..) {
                        let _ = done.send(());
                    }
                }
                Output::Fence {
                    id,
                    node,
                    device,
                    action,
                } => self.fence(id, node, &device, action),
                Output::AskWitness { view } => {
                    let sent = TokioInstant::now();
                    if self
                        .comm
                        .commands
                        .send(Command::AskWitness { view, sent })
                        .await
                        .is_err()
                    {
                        debug!("the communication manager is gone");
                    }
                }
            }
        }
    }

    /// One line for `watch`.
    fn event(&self, text: String) {
        self.comm.event(text);
    }

    fn save(&mut self, persist: &Persist) {
        match self.lcd.save(persist, self.brain.model()) {
            Ok(()) => {
                if self.storage_failure.take().is_some() {
                    info!("the configuration database is written again");
                }
            }
            Err(e) => {
                if self.storage_failure.is_none() {
                    error!(
                        "cannot write the configuration database: {e}; this node's copy is only in memory until a write succeeds (it is written whole at the next input)"
                    );
                    self.event(format!("cannot write the configuration database: {e}"));
                }
                self.storage_failure = Some(e.to_string());
            }
        }
    }

    /// Runs a fence device's agent as a task; its end comes back as an
    /// input.
    fn fence(
        &self,
        id: heartline_brain::FenceId,
        node: u16,
        name: &str,
        action: heartline_brain::FenceAction,
    ) {
        let inputs = self.inputs.clone();
        let device = self.fencing.as_ref().and_then(|f| f.device(name)).cloned();
        let Some(device) = device else {
            let run = super::fence::FenceRun {
                confirmed: false,
                summary: format!("no fence device {name} in this node's configuration"),
            };
            let _ = inputs.send(ShellInput::Fenced { id, run });
            return;
        };
        let commands = self.comm.commands.clone();
        tokio::spawn(async move {
            let run = if device.agent == crate::config::fencing::DONGLE_AGENT {
                super::fence::dongle(&device, &commands).await
            } else {
                super::fence::fence(&device, action).await
            };
            if run.confirmed {
                warn!(node, device = %device.name, "{}", run.summary);
            } else {
                error!(node, device = %device.name, "{}", run.summary);
            }
            let _ = inputs.send(ShellInput::Fenced { id, run });
        });
    }

    /// Starts the IP kit's link monitor: the kernel's link and address
    /// events come back as inputs.
    #[cfg(target_os = "linux")]
    fn watch_links(&self) {
        let inputs = self.inputs.clone();
        if let Err(e) =
            crate::ip::monitor::spawn(move |event| inputs.send(ShellInput::Link(event)).is_ok())
        {
            warn!(
                "cannot watch the kernel's link events ({e}): IP addresses are checked at their interval only"
            );
        }
    }

    /// A link or address event: this node's IP addresses on that interface
    /// are checked now (the brain skips those not in service).
    #[cfg(target_os = "linux")]
    fn on_link(&mut self, event: &crate::ip::monitor::LinkEvent) {
        let node = self.brain.node();
        let tags: Vec<String> = self
            .brain
            .model()
            .resources
            .values()
            .filter(|r| {
                r.place.node == node
                    && crate::ip::is_builtin(&r.app, &r.rtype)
                    && r.props.get("interface") == Some(&event.interface)
            })
            .map(|r| r.place.tag.clone())
            .collect();
        if tags.is_empty() {
            return;
        }
        debug!(interface = %event.interface, "{}: checking {}", event.what, tags.join(", "));
        let now = self.now();
        self.brain.handle(
            now,
            Input::CheckNow {
                tags,
                why: format!("{}: {}", event.interface, event.what),
            },
        );
    }

    /// Runs one script of a job as a task; its end comes back as an input.
    fn run_script(
        &self,
        job: JobId,
        action: Action,
        resource: &Resource,
        event: Option<&str>,
        handover: bool,
    ) {
        let inputs = self.inputs.clone();
        let exhausted = self.exhausted.clone();
        if is_builtin(&resource.app, &resource.rtype) {
            let props = resource.props.clone();
            let tag = resource.place.tag.clone();
            tokio::spawn(async move {
                let run = run_builtin(action, &props, handover).await;
                // As for a script that could not be spawned; one that
                // ran spawned nothing, so it says nothing of processes.
                let streak = pace_exhausted(&exhausted, &run, false).await;
                if run.succeeded() && action != Action::QuickCheck {
                    info!("{action} {tag}: {}", run.output);
                }
                let _ = inputs.send(ShellInput::Script { job, run, streak });
            });
            return;
        }
        let Some(kit) = self.kits.get(&resource.app, &resource.rtype) else {
            let why = format!(
                "cannot run {action}: no recovery kit {}/{} on this node",
                resource.app, resource.rtype
            );
            let run = ScriptRun::cannot_run(why);
            let _ = inputs.send(ShellInput::Script {
                job,
                run,
                streak: 0,
            });
            return;
        };
        // What runs as root is checked before every run: a file made
        // unsafe since the kits were loaded is refused now.
        let refusals = kit.refusals(action, &resource.props);
        if !refusals.is_empty() {
            let why = format!(
                "refused to run {action} of {}: {}",
                resource.place.tag,
                refusals.join("; ")
            );
            error!("{why}");
            let _ = inputs.send(ShellInput::Script {
                job,
                run: ScriptRun::cannot_run(why),
                streak: 0,
            });
            return;
        }
        let path = kit.script(action);
        let timeout = kit.manifest.timeout(action);
        let env = script_env(&self.daemon_env, resource, action, event.unwrap_or(""));
        tokio::spawn(async move {
            let run = script::run(&path, &[], &env, timeout).await;
            let streak = pace_exhausted(&exhausted, &run, true).await;
            let _ = inputs.send(ShellInput::Script { job, run, streak });
        });
    }
}

/// Whether `app/rtype` is a kit built into the daemon (the IP kit).
fn is_builtin(app: &str, rtype: &str) -> bool {
    #[cfg(target_os = "linux")]
    {
        crate::ip::is_builtin(app, rtype)
    }
    #[cfg(not(target_os = "linux"))]
    {
        app == "ip" && rtype == "vip"
    }
}

/// Why a built-in kit cannot use `props`, if it cannot.
fn builtin_props_problem(
    app: &str,
    rtype: &str,
    props: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    if !is_builtin(app, rtype) {
        return None;
    }
    #[cfg(target_os = "linux")]
    {
        crate::ip::vip::VipSpec::from_props(props).err()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = props;
        Some("the IP kit (ip/vip) runs on Linux only".into())
    }
}

/// How long a built-in kit's action may take: an address is added or
/// removed in microseconds; a restore probes and announces for at most
/// 15 s (bounded by its properties) and may wait 5 s for duplicate address
/// detection.
const BUILTIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Carries out `action` of a built-in kit, as a script run would end.
async fn run_builtin(
    action: Action,
    props: &std::collections::BTreeMap<String, String>,
    handover: bool,
) -> ScriptRun {
    let started = std::time::Instant::now();
    #[cfg(target_os = "linux")]
    let done = tokio::time::timeout(
        BUILTIN_TIMEOUT,
        crate::ip::vip::act(action, props, handover),
    )
    .await;
    #[cfg(not(target_os = "linux"))]
    let done: Result<Result<String, String>, tokio::time::error::Elapsed> = {
        let _ = (action, props, handover, BUILTIN_TIMEOUT);
        Ok(Err("the IP kit (ip/vip) runs on Linux only".into()))
    };
    #[cfg(target_os = "linux")]
    let (outcome, output) = match done {
        Ok(Ok(line)) => (script::Outcome::Succeeded, line),
        Ok(Err(crate::ip::vip::ActError::Failed(line))) => (
            script::Outcome::Failed {
                code: Some(1),
                signal: None,
            },
            line,
        ),
        Ok(Err(crate::ip::vip::ActError::Exhausted(line))) => {
            (script::Outcome::Exhausted(line), String::new())
        }
        Err(_) => (script::Outcome::TimedOut, String::new()),
    };
    #[cfg(not(target_os = "linux"))]
    let (outcome, output) = match done {
        Ok(Ok(line)) => (script::Outcome::Succeeded, line),
        Ok(Err(line)) => (
            script::Outcome::Failed {
                code: Some(1),
                signal: None,
            },
            line,
        ),
        Err(_) => (script::Outcome::TimedOut, String::new()),
    };
    ScriptRun {
        outcome,
        output,
        elapsed: started.elapsed(),
    }
}

/// How long a script that could not be started for want of descriptors
/// waits before the brain hears of it (and asks again), when it is the
/// `streak`th in a row: 1 s, doubling to 8 s, so a node out of descriptors
/// neither spins nor leaves a step waiting long once they come back.
fn exhausted_pause(streak: u32) -> Duration {
    Duration::from_secs(1 << streak.saturating_sub(1).min(3))
}

/// Counts a run that could not start (and waits its pause before it is
/// reported) or, for one that started, ends the streak.
/// Returns the streak this run is part of (0 if it started).
async fn pace_exhausted(streak: &AtomicU32, run: &ScriptRun, spawns: bool) -> u32 {
    match count_exhausted(streak, run, spawns) {
        Some((n, pause)) => {
            tokio::time::sleep(pause).await;
            n
        }
        None => 0,
    }
}

/// The counting of [`pace_exhausted`]: for a run that could not start,
/// its place in the streak and its pause. Only a run that `spawns` a
/// process ends the streak by starting (the IP kit's actions open sockets
/// but fork nothing, so they say nothing of the process limit).
fn count_exhausted(streak: &AtomicU32, run: &ScriptRun, spawns: bool) -> Option<(u32, Duration)> {
    if matches!(run.outcome, script::Outcome::Exhausted(_)) {
        let n = streak.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        Some((n, exhausted_pause(n)))
    } else {
        if spawns {
            streak.store(0, Ordering::Relaxed);
        }
        None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_out_of_descriptors_retries_at_1_2_4_then_8_seconds() {
        let pauses: Vec<u64> = (1..=6).map(|n| exhausted_pause(n).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 8, 8]);
        assert_eq!(exhausted_pause(u32::MAX), Duration::from_secs(8));
        assert_eq!(exhausted_pause(0), Duration::from_secs(1));
    }

    #[test]
    fn the_streak_grows_with_each_run_that_could_not_start_and_ends_with_one_that_did() {
        let streak = AtomicU32::new(0);
        let starved = ScriptRun {
            outcome: script::Outcome::Exhausted("Too many open files".into()),
            output: String::new(),
            elapsed: Duration::ZERO,
        };
        let pauses: Vec<_> = (0..3)
            .filter_map(|_| count_exhausted(&streak, &starved, true))
            .map(|(n, p)| (n, p.as_secs()))
            .collect();
        assert_eq!(pauses, [(1, 1), (2, 2), (3, 4)]);
        assert_eq!(streak.load(Ordering::Relaxed), 3);
        let ran = ScriptRun {
            outcome: script::Outcome::Succeeded,
            output: String::new(),
            elapsed: Duration::ZERO,
        };
        // A built-in action that ran forked nothing: the streak goes on.
        assert_eq!(count_exhausted(&streak, &ran, false), None);
        assert_eq!(streak.load(Ordering::Relaxed), 3);
        assert_eq!(
            count_exhausted(&streak, &ran, true),
            None,
            "no pause after a run"
        );
        assert_eq!(streak.load(Ordering::Relaxed), 0);
        assert_eq!(
            count_exhausted(&streak, &starved, true),
            Some((1, Duration::from_secs(1)))
        );
    }
}
