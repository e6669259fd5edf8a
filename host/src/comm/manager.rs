//! The communication manager: one task that owns the protocol endpoint and
//! is the only place its state changes. Path tasks hand it what they read
//! ([`Inbound`], on a channel of their own), the rest of the daemon hands
//! it [`Command`]s, its timer fires at the endpoint's next deadline; after
//! every input it drains the endpoint: frames to the path tasks (never
//! waiting on a slow path), events to the log and to watchers, membership
//! and admin messages to the resource brain, messages to the mailboxes.
//! Applications may not use the reserved mailboxes (0xFF00 and up).
//!
//! Nothing in this task waits on disk, on a CLI client or on a path: every
//! hand-off is a bounded channel it only ever `try_send`s into.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use heartline_brain::message::{ADMIN_MAILBOX, RESERVED};
use heartline_brain::port::{AdminPort, WINDOW};
use heartline_core::wire::{
    CAP_MAILBOX, CAP_RELAY, CAP_WATCHDOG, EventCode, MAX_ENCODED_LEN, NodeKind,
};
use heartline_core::{
    Endpoint, EndpointConfig, Event, FailReason, Incarnation, Instant, MessageId, NodeId,
    NodeState, PathId, PathRef, PathState, PeerConfig, Received, RemoteEvent, SendError,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant as TokioInstant;
use tracing::{error, info, warn};

use super::provision::{Provisioner, dongle_key};
use super::report::{DongleReport, PathReport, PeerReport, StatusReport, TimerReport};
use super::{Command, EventLine, Handle, ToBrain};
use crate::config::{Config, Transport};
use crate::sys::system;
use crate::transport::{self, Inbound, Role, ToPath};

/// The host's endpoint: up to 31 peers, 4 paths each, 64 messages queued
/// per peer, 256 received messages waiting for the mailboxes, 1024 events.
pub type HostEndpoint = Endpoint<31, 4, 64, 256, 1024>;

/// Messages a mailbox holds before it stops taking more (the sender's
/// messages then wait, unacknowledged, until `rcv-msg` makes room).
pub const MAILBOX_DEPTH: usize = 256;

struct Waiting<T> {
    reply: oneshot::Sender<T>,
}

/// A serial device and the paths it carries, before its task starts.
struct SharedLine {
    baud: u32,
    paths: Vec<PathRef>,
    frames: mpsc::Sender<ToPath>,
    queue: mpsc::Receiver<ToPath>,
}

/// The manager's side of one path task.
struct PathHandle {
    frames: mpsc::Sender<ToPath>,
    transport: String,
    /// The connection last confirmed to the path task.
    confirmed: Option<u64>,
}

struct Manager {
    endpoint: Box<HostEndpoint>,
    config: Config,
    started: TokioInstant,
    paths: HashMap<PathRef, PathHandle>,
    events: broadcast::Sender<EventLine>,
    sends: HashMap<MessageId, Waiting<Result<(), String>>>,
    mailboxes: HashMap<u16, VecDeque<Received>>,
    receivers: HashMap<u16, VecDeque<Waiting<Received>>>,
    /// A received message whose mailbox was full; the endpoint's inbox is
    /// not drained until it finds room, which holds back the senders.
    held: Option<Received>,
    /// Our mailboxes we told the peers are full.
    full_here: HashSet<u16>,
    /// Peers' mailboxes they told us are full: `(node, mailbox)`.
    full_there: HashSet<(u16, u16)>,
    provisioner: Provisioner,
    /// Hosts each dongle reports its watchdog tripped on, until re-armed.
    trips: BTreeMap<u16, BTreeSet<u16>>,
    /// A dongle witness: the last vote request's number, and the recent
    /// requests' numbers with when each was sent.
    vote_number: u16,
    vote_requests: std::collections::VecDeque<(u16, TokioInstant)>,
    /// Fence requests to the dongle waiting for its answer, by number.
    fence_number: u16,
    fences: HashMap<u16, tokio::sync::oneshot::Sender<Result<bool, String>>>,
    /// The admin channel between the nodes' brains.
    admin: AdminPort,
    /// Membership and admin messages for the resource brain, in order.
    to_brain: mpsc::UnboundedSender<ToBrain>,
    /// Waiting for the admin channel to be idle.
    idle_waiters: Vec<oneshot::Sender<()>>,
    /// Per host peer: the echo last told the brain (with quorum on).
    echoes: HashMap<u16, Instant>,
    /// A dongle as this node's self-fence: it, and how long this node may
    /// live after the last frame it heard (its watchdog + reset pulse).
    self_fence: Option<(NodeId, Duration)>,
    /// The resource brain's fence deadline (see [`Handle::fence_deadline`]).
    fence_deadline: tokio::sync::watch::Receiver<Option<TokioInstant>>,
    /// Whether the self-fence dongle is being starved.
    starving: bool,
    /// How late the timer woke, for `status`.
    timer: TimerReport,
    /// Frames rejected for a cause in the configuration, per path, when
    /// last looked at, and when to look next (see [`Manager::misconfigured`]).
    misconfig: HashMap<PathRef, [u32; 4]>,
    next_misconfig: TokioInstant,
}

/// How often the rejection counters of paths that are down are looked at
/// for a cause in the configuration.
const MISCONFIG_EVERY: Duration = Duration::from_secs(10);

/// A path's task: reads and writes its transport for the manager.
type PathTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// How far a peer's echo must advance before the brain is told again.
const ECHO_STEP: heartline_core::Duration =
    heartline_core::Duration::from_millis(crate::config::ECHO_STEP_MS);

/// Starts the communication manager and every path; returns its handle
/// and the resource brain's stream. That stream is unbounded so that this
/// task never waits on the brain; it carries only membership changes and
/// admin messages, which the network's own pace bounds.
pub fn start(
    config: Config,
    incarnation: Incarnation,
) -> Result<(Handle, mpsc::UnboundedReceiver<ToBrain>), String> {
    let started = TokioInstant::now();
    let mut endpoint = build_endpoint(&config, incarnation)?;
    let (commands, command_rx) = mpsc::channel(4096);
    let (inbound, inbound_rx) = mpsc::channel(4096);
    let (events, _) = broadcast::channel(1024);
    let (to_brain, brain_rx) = mpsc::unbounded_channel();
    let mut paths = HashMap::new();
    let now = Instant::ZERO;
    // Serial paths on the same device share one task: one line to a dongle
    // carries the path to it and, relayed, the path to the host beyond it.
    let mut lines: HashMap<String, SharedLine> = HashMap::new();
    // The path tasks run on the manager's own real-time thread (see below),
    // started there.
    let mut path_tasks: Vec<PathTask> = Vec::new();
    for peer in &config.peers {
        let timings: Vec<_> = peer.paths.iter().map(|p| p.timing).collect();
        // A dongle shares a key of its own with this node, derived from the
        // cluster key, so that it never holds the cluster's.
        let key = match peer.dongle {
            Some(_) => Some(dongle_key(&config, peer.id).map_err(|e| e.to_string())?),
            None => None,
        };
        endpoint
            .add_peer_with_key(now, PeerConfig::new(peer.id), &timings, key)
            .map_err(|e| e.to_string())?;
        for (index, spec) in peer.paths.iter().enumerate() {
            let path = PathRef {
                node: peer.id,
                path: PathId(u8::try_from(index).map_err(|_| "too many paths")?),
            };
            let (mut tx, rx) = mpsc::channel(64);
            let transport = match &spec.transport {
                Transport::Tcp { local, remote } => {
                    let role = if config.node > peer.id {
                        Role::Listen
                    } else {
                        Role::Dial
                    };
                    path_tasks.push(Box::pin(transport::tcp::run_path_with(
                        path,
                        role,
                        *local,
                        *remote,
                        transport::tcp::Options::for_timing(&spec.timing),
                        rx,
                        inbound.clone(),
                    )));
                    format!("tcp {local} -> {remote}")
                }
                Transport::Udp { local, remote } => {
                    path_tasks.push(Box::pin(transport::udp::run_path(
                        path,
                        *local,
                        *remote,
                        rx,
                        inbound.clone(),
                    )));
                    format!("udp {local} -> {remote}")
                }
                Transport::Serial { device, baud } => {
                    let line = lines.entry(device.clone()).or_insert_with(|| SharedLine {
                        baud: *baud,
                        paths: Vec::new(),
                        frames: tx.clone(),
                        queue: rx,
                    });
                    line.paths.push(path);
                    tx = line.frames.clone();
                    format!("serial {device} {} baud", line.baud)
                }
            };
            paths.insert(
                path,
                PathHandle {
                    frames: tx,
                    transport,
                    confirmed: None,
                },
            );
        }
    }
    for (device, line) in lines {
        path_tasks.push(Box::pin(transport::serial::run_path(
            line.paths,
            device,
            line.baud,
            line.queue,
            inbound.clone(),
        )));
    }
    info!(cluster = %config.cluster_name, node = config.node.0, name = %config.name, incarnation = incarnation.0,
        peers = config.peers.len(), "communication manager started");
    let (fence_deadline, fence_deadline_rx) = tokio::sync::watch::channel(None);
    let self_fence = config
        .quorum
        .as_ref()
        .and_then(|q| q.self_fence.as_ref())
        .and_then(|f| match f {
            crate::config::SelfFence::Dongle { node, within } => Some((*node, *within)),
            crate::config::SelfFence::Device { .. } => None,
        });
    let manager = Manager {
        self_fence,
        fence_deadline: fence_deadline_rx,
        starving: false,
        timer: TimerReport::default(),
        misconfig: HashMap::new(),
        next_misconfig: started + MISCONFIG_EVERY,
        endpoint,
        provisioner: Provisioner::new(&config),
        trips: BTreeMap::new(),
        vote_number: 0,
        vote_requests: std::collections::VecDeque::new(),
        fence_number: 0,
        fences: HashMap::new(),
        admin: AdminPort::new(WINDOW),
        to_brain,
        idle_waiters: Vec::new(),
        echoes: HashMap::new(),
        config,
        started,
        paths,
        events: events.clone(),
        sends: HashMap::new(),
        mailboxes: HashMap::new(),
        receivers: HashMap::new(),
        held: None,
        full_here: HashSet::new(),
        full_there: HashSet::new(),
    };
    // The manager and its paths get a thread of their own, at real-time
    // priority where permitted: a heartbeat is read, handled and answered
    // there, so neither a busy machine (the daemon's other threads share
    // the CPU with everything else) nor the control socket, scripts or
    // logging of the rest of the daemon delay it.
    // Its runtime's handle comes back to serve [`Handle::realtime`].
    let (runtime_tx, runtime_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("comm-manager".into())
        .spawn(move || {
            match system::realtime_priority() {
                Ok(()) => info!("communication manager runs at real-time priority (SCHED_FIFO 50)"),
                Err(e) => warn!(
                    "communication manager runs at normal priority: cannot get SCHED_FIFO: {e}"
                ),
            }
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    let _ = runtime_tx.send(Ok(runtime.handle().clone()));
                    runtime.block_on(async move {
                        for task in path_tasks {
                            tokio::spawn(task);
                        }
                        manager.run(inbound_rx, command_rx).await;
                    });
                }
                Err(e) => {
                    let _ = runtime_tx.send(Err(e.to_string()));
                }
            }
        })
        .map_err(|e| format!("cannot start the communication manager thread: {e}"))?;
    let realtime = runtime_rx
        .recv()
        .map_err(|_| "the communication manager thread ended at its start".to_string())?
        .map_err(|e| format!("cannot start the communication manager's runtime: {e}"))?;
    Ok((
        Handle {
            commands,
            events,
            started,
            fence_deadline: std::sync::Arc::new(fence_deadline),
            realtime,
        },
        brain_rx,
    ))
}

/// The endpoint is over a megabyte, all of it fixed-size state: it is
/// built on a thread with a stack big enough to hold it before it moves to
/// the heap, so no async task's stack has to.
fn build_endpoint(config: &Config, incarnation: Incarnation) -> Result<Box<HostEndpoint>, String> {
    new_endpoint(EndpointConfig {
        cluster: config.cluster,
        node: config.node,
        incarnation,
        name: &config.name,
        kind: NodeKind::Host,
        capabilities: CAP_MAILBOX,
        key: config.key.clone(),
    })
}

/// A protocol endpoint on the heap (built on a thread with a stack large
/// enough for its initial value).
pub fn new_endpoint(endpoint_config: EndpointConfig<'_>) -> Result<Box<HostEndpoint>, String> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("endpoint-init".into())
            .stack_size(64 << 20)
            .spawn_scoped(scope, || {
                HostEndpoint::new(endpoint_config)
                    .map(Box::new)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?
            .join()
            .map_err(|_| "building the protocol endpoint failed".to_string())?
    })
}

impl Manager {
    fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    /// Runs until its paths and every holder of its handle are gone.
    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        // Path traffic and commands come on channels of their own; each
        // closes when all its senders are gone.
        let (mut paths_open, mut commands_open) = (true, true);
        // systemd's watchdog is fed from this loop, so a stuck manager is
        // restarted rather than left silently failing.
        let keepalive = system::watchdog_interval();
        let mut next_keepalive = TokioInstant::now();
        while paths_open || commands_open {
            if let Some(every) = keepalive.filter(|_| TokioInstant::now() >= next_keepalive) {
                system::notify("WATCHDOG=1");
                next_keepalive = TokioInstant::now() + every;
            }
            let wake = self
                .endpoint
                .poll_timeout()
                .into_iter()
                .chain(self.provisioner.next_due())
                .min()
                .map(|at| self.started + Duration::from_micros(at.as_micros()))
                .unwrap_or_else(|| TokioInstant::now() + Duration::from_secs(3600));
            let wake = if keepalive.is_some() {
                wake.min(next_keepalive)
            } else {
                wake
            };
            tokio::select! {
                frame = inbound.recv(), if paths_open => match frame {
                    Some(frame) => self.inbound(frame),
                    None => paths_open = false,
                },
                command = commands.recv(), if commands_open => match command {
                    Some(command) => self.command(command),
                    None => commands_open = false,
                },
                () = tokio::time::sleep_until(wake) => {
                    self.timer.record(TokioInstant::now().saturating_duration_since(wake));
                    let now = self.now();
                    self.endpoint.handle_timeout(now);
                }
            }
            self.drain();
        }
    }

    fn inbound(&mut self, inbound: Inbound) {
        let now = self.now();
        match inbound {
            Inbound::Frame {
                path,
                connection,
                mut bytes,
            } => {
                // Rejections are counted by the endpoint and shown by `status`.
                let accepted = self.endpoint.handle_frame(now, path, &mut bytes).is_ok();
                if let Some(handle) = self
                    .paths
                    .get_mut(&path)
                    .filter(|h| accepted && h.confirmed != Some(connection))
                {
                    handle.confirmed = Some(connection);
                    let _ = handle.frames.try_send(ToPath::Confirmed(connection));
                }
            }
            Inbound::Overflow { path } => self.endpoint.handle_overflow(path),
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Send { mailbox, reply, .. } if RESERVED.contains(&mailbox) => {
                let _ = reply.send(Err(reserved(mailbox)));
            }
            // The control server refuses these with a reason; a reader of a
            // reserved mailbox is never served here.
            Command::Receive { mailbox, .. } if RESERVED.contains(&mailbox) => {}
            Command::SendAdmin { to, bytes } => self.admin.send_encoded(to, &bytes),
            Command::AdminIdle { reply } => self.idle_waiters.push(reply),
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::CanTalk { node, reply } => {
                let _ = reply.send(self.endpoint.can_talk(NodeId(node)));
            }
            Command::Send { node, reply, .. } if self.is_dongle(NodeId(node)) => {
                let _ = reply.send(Err(format!(
                    "{} is a heartbeat dongle; it has no mailboxes",
                    self.who(node)
                )));
            }
            Command::Send { node, reply, .. } if self.witness() == Some(NodeId(node)) => {
                let _ = reply.send(Err(format!(
                    "{} is the quorum witness; it has no mailboxes",
                    self.who(node)
                )));
            }
            Command::AskWitness { view, sent } => self.ask_witness(&view, sent),
            Command::DongleFence { target, reply } => self.dongle_fence(target, reply),
            Command::Send {
                node,
                mailbox,
                reply,
                ..
            } if self.full_there.contains(&(node, mailbox)) => {
                let message = format!(
                    "mailbox {mailbox} on {} is full ({MAILBOX_DEPTH} messages wait for rcv-msg there); try again later",
                    self.who(node)
                );
                let _ = reply.send(Err(message));
            }
            Command::Send {
                node,
                mailbox,
                payload,
                reply,
            } => match self.endpoint.send(NodeId(node), mailbox, &payload) {
                Ok(id) => {
                    self.sends.insert(id, Waiting { reply });
                }
                Err(e) => {
                    let message = match e {
                        SendError::UnknownNode(_) => {
                            format!("node {node} is not in this node's configuration")
                        }
                        other => other.to_string(),
                    };
                    let _ = reply.send(Err(message));
                }
            },
            Command::Receive { mailbox, reply } => {
                if let Some(message) = self
                    .mailboxes
                    .get_mut(&mailbox)
                    .and_then(VecDeque::pop_front)
                {
                    let _ = reply.send(message);
                    let room =
                        self.mailboxes.get(&mailbox).map_or(0, VecDeque::len) <= MAILBOX_DEPTH / 2;
                    if room && self.full_here.remove(&mailbox) {
                        info!("mailbox {mailbox} has room again");
                        self.announce(EventCode::MailboxReady, mailbox);
                    }
                } else {
                    self.receivers
                        .entry(mailbox)
                        .or_default()
                        .push_back(Waiting { reply });
                }
            }
        }
    }

    fn drain(&mut self) {
        self.flush_admin();
        let now = self.now();
        let endpoint = &self.endpoint;
        let provisions = self
            .provisioner
            .poll(now, endpoint.incarnation(), |dongle| {
                let incarnation = endpoint.peer(dongle).and_then(|p| p.incarnation);
                (endpoint.can_talk(dongle), incarnation)
            });
        let starved = self.starved_dongle();
        for (path, frame) in provisions {
            if Some(path.node) == starved {
                continue;
            }
            if let Some(handle) = self.paths.get(&path) {
                // A full line loses it; another follows in a second.
                let _ = handle.frames.try_send(ToPath::Frame(frame));
            }
        }
        self.transmit(now, starved);
        while let Some(event) = self.endpoint.poll_event() {
            self.on_event(event);
        }
        self.publish_echoes();
        self.misconfigured();
        self.deliver();
        // Deliveries free the admin window: what waited goes out now.
        self.flush_admin();
        self.transmit(now, starved);
        if self.admin.pending() == 0 {
            for waiter in self.idle_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    /// Hands the endpoint's frames to their paths, but none to `starved`.
    fn transmit(&mut self, now: Instant, starved: Option<NodeId>) {
        let mut buf = [0u8; MAX_ENCODED_LEN];
        while let Some(transmit) = self.endpoint.poll_transmit(now, &mut buf) {
            if Some(transmit.path.node) == starved {
                continue;
            }
            if let Some(handle) = self.paths.get(&transmit.path) {
                // A full or disconnected path loses this frame: heartbeats
                // are repeated and messages retransmitted by the protocol.
                let _ = handle
                    .frames
                    .try_send(ToPath::Frame(buf[..transmit.len].to_vec()));
            }
        }
    }

    /// The self-fence dongle, if a frame to it now could keep this node
    /// alive past its fence deadline: it is sent nothing then, so its
    /// watchdog trips and resets this node by its lease's end. A deadline
    /// the resource manager stopped renewing (stalled, or dead) starves it
    /// too. Says so when that starts and ends.
    fn starved_dongle(&mut self) -> Option<NodeId> {
        let (dongle, within) = self.self_fence?;
        let deadline = *self.fence_deadline.borrow();
        let starve = deadline.is_some_and(|deadline| {
            !crate::sys::watchdog::may_feed(std::time::Instant::now(), within, deadline.into_std())
        });
        if starve != self.starving {
            self.starving = starve;
            let text = if starve {
                format!(
                    "SELF-FENCE: this node's lease ends within dongle {dongle}'s watchdog and reset pulse ({} ms) while something may still run here; the dongle is sent nothing more and resets this node unless the lease is renewed or what runs stops",
                    within.as_millis()
                )
            } else {
                format!("self-fence: dongle {dongle} is fed again")
            };
            if starve {
                warn!("{text}");
            } else {
                info!("{text}");
            }
            let _ = self.events.send(EventLine {
                at_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                wall_ms: system::unix_ms(),
                text,
            });
        }
        starve.then_some(dongle)
    }

    /// Hands queued admin fragments to the endpoint.
    fn flush_admin(&mut self) {
        let endpoint = &mut self.endpoint;
        self.admin
            .flush(|to, fragment| endpoint.send(NodeId(to), ADMIN_MAILBOX, fragment));
    }

    fn on_event(&mut self, event: Event) {
        if let Some(change) = self.admin.event(&event) {
            let to_brain = match event {
                Event::NodeUp { node, .. }
                | Event::NodeDown { node }
                | Event::NodeRestarted { node, .. } => self.is_host(node),
                Event::Reincarnated { .. } => true,
                _ => false,
            };
            if to_brain {
                // The brain gone (the daemon stopping) loses nothing that
                // matters.
                let _ = self.to_brain.send(ToBrain::Membership(change));
            }
        }
        // Logged and streamed with the node it is about named; not for a
        // delivery, which is neither.
        let text = match event {
            Event::Delivered { .. } | Event::SendFailed { .. } => String::new(),
            _ => self.named(&event),
        };
        match event {
            Event::Delivered { id, .. } => {
                if let Some(waiting) = self.sends.remove(&id) {
                    let _ = waiting.reply.send(Ok(()));
                }
                return;
            }
            Event::SendFailed { id, node, reason } => {
                if let Some(waiting) = self.sends.remove(&id) {
                    let why = match reason {
                        FailReason::NodeDown => {
                            format!("{} went down before acknowledging", self.who(node.0))
                        }
                        FailReason::PeerRestarted => {
                            format!("{} restarted; delivery unknown", self.who(node.0))
                        }
                        FailReason::Reincarnated => format!(
                            "this node took a new incarnation (a peer remembered a larger one); delivery to {} unknown",
                            self.who(node.0)
                        ),
                    };
                    let _ = waiting.reply.send(Err(why));
                }
                return;
            }
            Event::Remote {
                from,
                event: remote,
            } => match remote.code {
                EventCode::MailboxFull => {
                    self.full_there
                        .insert((from.0, u16::try_from(remote.detail).unwrap_or(u16::MAX)));
                }
                EventCode::MailboxReady => {
                    self.full_there
                        .remove(&(from.0, u16::try_from(remote.detail).unwrap_or(u16::MAX)));
                }
                EventCode::WatchdogTripped => {
                    self.trips
                        .entry(from.0)
                        .or_default()
                        .insert(remote.subject.0);
                    warn!("{text}");
                }
                EventCode::WatchdogRearmed => {
                    self.trips
                        .entry(from.0)
                        .or_default()
                        .remove(&remote.subject.0);
                    info!("{text}");
                }
                EventCode::VoteGranted | EventCode::VoteRefused if Some(from) == self.witness() => {
                    self.dongle_vote(&remote);
                }
                EventCode::FenceDone | EventCode::FenceRefused => {
                    warn!("{text}");
                    if let Some((number, _, done)) =
                        heartline_core::dongle::parse_fence_answer(&remote)
                    {
                        if let Some(reply) = self.fences.remove(&number) {
                            let _ = reply.send(Ok(done));
                        }
                    }
                }
                _ => info!("{text}"),
            },
            Event::NodeDown { node } | Event::NodeRestarted { node, .. } => {
                // Its mailboxes start afresh when it is back, and a dongle's
                // watchdogs start idle.
                self.full_there.retain(|(n, _)| *n != node.0);
                if matches!(event, Event::NodeRestarted { .. }) {
                    self.trips.remove(&node.0);
                }
                if matches!(event, Event::NodeDown { .. }) {
                    warn!("{text}")
                } else {
                    info!("{text}")
                }
            }
            Event::PathDown(at) => {
                warn!("{text}");
                // A TCP path drops the connection that carried it and
                // redials, rather than wait on the kernel's backoff.
                if let Some(handle) = self.paths.get_mut(&at) {
                    let _ = handle
                        .frames
                        .try_send(ToPath::Down(handle.confirmed.take()));
                }
            }
            Event::WatchdogTripped { .. } => {
                warn!("{text}")
            }
            Event::Reincarnated { new, .. } => {
                warn!("{text}");
                // Once, right after a start: the write is small.
                if let Err(e) = super::incarnation::record(&self.config.state_dir, new) {
                    error!(
                        "{e}: the next start may take a smaller incarnation again (and the next one from its peers, as this one did)"
                    );
                }
            }
            _ => info!("{text}"),
        }
        let at_ms = self
            .started
            .elapsed()
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX);
        let _ = self.events.send(EventLine {
            at_ms,
            wall_ms: system::unix_ms(),
            text,
        });
    }

    /// A peer as messages name it: `bravo (2)`, or `node 2` without a
    /// configured name.
    fn who(&self, node: u16) -> String {
        let name = self
            .config
            .peers
            .iter()
            .find(|p| p.id.0 == node)
            .and_then(|p| p.name.as_deref());
        heartline_brain::api::node_name(node, name)
    }

    /// The event's line, with the node it is about named as configured
    /// (`bravo (2) down: every path silent`).
    fn named(&self, event: &Event) -> String {
        let text = event.to_string();
        let node = match event {
            Event::NodeUp { node, .. }
            | Event::NodeDown { node }
            | Event::NodeRestarted { node, .. } => *node,
            Event::Remote { from, .. } => *from,
            _ => return text,
        };
        match text.strip_prefix(&format!("{node} ")) {
            Some(rest) => format!("{} {rest}", self.who(node.0)),
            None => text,
        }
    }

    /// Moves received messages into their mailboxes and to waiting readers.
    fn deliver(&mut self) {
        loop {
            let message = match self.held.take() {
                Some(message) => message,
                None => match self.endpoint.poll_message() {
                    Some(message) => message,
                    None => break,
                },
            };
            let mailbox = message.mailbox;
            if mailbox == ADMIN_MAILBOX {
                let from = message.from.0;
                if let Some(bytes) = self.admin.receive(from, &message.payload) {
                    let _ = self.to_brain.send(ToBrain::Admin { from, bytes });
                }
                continue;
            }
            if mailbox == super::witness::WITNESS_MAILBOX && Some(message.from) == self.witness() {
                self.witness_answer(&message.payload);
                continue;
            }
            if RESERVED.contains(&mailbox) {
                // Nothing else of this release uses it; nobody may read it.
                continue;
            }
            let mut message = Some(message);
            if let Some(waiters) = self.receivers.get_mut(&mailbox) {
                while let Some(waiting) = waiters.pop_front() {
                    let Some(m) = message.take() else { break };
                    if let Err(m) = waiting.reply.send(m) {
                        // That reader gave up (timed out); offer it to the next.
                        message = Some(m);
                    }
                }
            }
            let Some(message) = message else { continue };
            let queue = self.mailboxes.entry(mailbox).or_default();
            if queue.len() >= MAILBOX_DEPTH {
                self.held = Some(message);
                break;
            }
            queue.push_back(message);
            if queue.len() == MAILBOX_DEPTH && self.full_here.insert(mailbox) {
                warn!(
                    "mailbox {mailbox} is full ({MAILBOX_DEPTH} messages): senders are refused until rcv-msg takes some"
                );
                self.announce(EventCode::MailboxFull, mailbox);
            }
        }
    }

    /// Every [`MISCONFIG_EVERY`]: a path that is down while frames keep
    /// arriving on it that are rejected for a cause in the configuration
    /// (another key, cluster id, path list or release) is logged as a
    /// warning that names the cause, with the count since the last look.
    fn misconfigured(&mut self) {
        let now = TokioInstant::now();
        if now < self.next_misconfig {
            return;
        }
        self.next_misconfig = now + MISCONFIG_EVERY;
        for spec in &self.config.peers {
            let Some(peer) = self.endpoint.peer(spec.id) else {
                continue;
            };
            for i in 0..peer.paths {
                let Ok(index) = u8::try_from(i) else { continue };
                let at = PathRef {
                    node: spec.id,
                    path: PathId(index),
                };
                let Some(status) = self.endpoint.path(at) else {
                    continue;
                };
                let c = &status.counters;
                let counts = [
                    c.bad_tag,
                    c.wrong_cluster,
                    c.path_mismatch,
                    c.unknown_version,
                ];
                let last = self.misconfig.insert(at, counts).unwrap_or([0; 4]);
                if status.state == PathState::Up {
                    continue;
                }
                let transport = self
                    .paths
                    .get(&at)
                    .map(|h| h.transport.clone())
                    .unwrap_or_default();
                let reasons = [
                    "bad_tag",
                    "wrong_cluster",
                    "path_mismatch",
                    "unknown_version",
                ];
                for ((reason, now), before) in reasons.iter().zip(counts).zip(last) {
                    let new = now.saturating_sub(before);
                    if new == 0 {
                        continue;
                    }
                    let meaning = super::report::rejection_meaning(reason).unwrap_or(reason);
                    warn!(
                        "path {index} to {} ({transport}) is down and {new} frames on it were rejected in the last {} s as {reason}: {meaning}",
                        heartline_brain::api::node_name(spec.id.0, spec.name.as_deref()),
                        MISCONFIG_EVERY.as_secs()
                    );
                }
            }
        }
    }

    /// With quorum on: tells the brain of each host peer's echo once it
    /// advanced by [`ECHO_STEP`].
    fn publish_echoes(&mut self) {
        if self.config.quorum.is_none() {
            return;
        }
        for peer in self.config.peers.iter().filter(|p| p.is_host()) {
            let Some(echoed) = self.endpoint.peer(peer.id).and_then(|p| p.echoed) else {
                continue;
            };
            let last = self.echoes.get(&peer.id.0).copied();
            if last.is_some_and(|l| echoed < l + ECHO_STEP) {
                continue;
            }
            self.echoes.insert(peer.id.0, echoed);
            let echoed = self.started + std::time::Duration::from_micros(echoed.as_micros());
            let _ = self.to_brain.send(ToBrain::Heard {
                node: peer.id.0,
                echoed,
            });
        }
    }

    /// Whether `node` is another host of the cluster.
    fn is_host(&self, node: NodeId) -> bool {
        self.config
            .peers
            .iter()
            .any(|p| p.id == node && p.is_host())
    }

    /// The quorum witness, if configured.
    fn witness(&self) -> Option<NodeId> {
        self.config.peers.iter().find(|p| p.witness).map(|p| p.id)
    }

    /// Sends the witness a request for its vote, if it can be reached (a
    /// request lost is asked again by the brain).
    fn ask_witness(&mut self, view: &std::collections::BTreeSet<u16>, sent: TokioInstant) {
        let Some(witness) = self.witness() else {
            return;
        };
        if !self.endpoint.can_talk(witness) {
            return;
        }
        if self.is_dongle(witness) {
            // Over the serial line, as an event report: the request's number
            // finds when it was sent.
            self.vote_number = self.vote_number.wrapping_add(1);
            let number = self.vote_number;
            let lease = self
                .config
                .quorum
                .as_ref()
                .map_or(std::time::Duration::ZERO, |q| q.lease);
            let set = heartline_core::witness::NodeSet::of(view.iter().copied());
            let Some(event) = heartline_core::witness::request_event(number, set, lease.into())
            else {
                return;
            };
            if self.vote_requests.len() >= 16 {
                self.vote_requests.pop_front();
            }
            self.vote_requests.push_back((number, sent));
            if let Err(e) = self.endpoint.send_event(witness, event) {
                tracing::debug!("cannot ask the dongle for its vote: {e}");
            }
            return;
        }
        let request = super::witness::VoteRequest {
            version: super::witness::VERSION,
            view: view.iter().copied().collect(),
            sent_us: u64::try_from(sent.saturating_duration_since(self.started).as_micros())
                .unwrap_or(u64::MAX),
        };
        let bytes = super::witness::encode(&request);
        if let Err(e) = self
            .endpoint
            .send(witness, super::witness::WITNESS_MAILBOX, &bytes)
        {
            tracing::debug!("cannot ask the witness: {e}");
        }
    }

    /// Asks the dongle that is the witness to reset `target`.
    fn dongle_fence(
        &mut self,
        target: u16,
        reply: tokio::sync::oneshot::Sender<Result<bool, String>>,
    ) {
        let Some(dongle) = self.witness().filter(|w| self.is_dongle(*w)) else {
            let _ = reply.send(Err("no dongle is this cluster's witness".into()));
            return;
        };
        if !self.endpoint.can_talk(dongle) {
            let _ = reply.send(Err(format!("the dongle ({dongle}) is not reachable")));
            return;
        }
        self.fence_number = self.fence_number.wrapping_add(1);
        let number = self.fence_number;
        // Requests nobody waits for any more (timed out) are forgotten.
        self.fences.retain(|_, r| !r.is_closed());
        let event = heartline_core::dongle::fence_request(number, NodeId(target));
        match self.endpoint.send_event(dongle, event) {
            Ok(_) => {
                self.fences.insert(number, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(format!("cannot ask the dongle: {e}")));
            }
        }
    }

    /// A dongle's answer, matched to the request it answers.
    fn dongle_vote(&mut self, event: &heartline_core::RemoteEvent) {
        let Some((number, view, granted, _)) = heartline_core::witness::parse_answer(event) else {
            return;
        };
        let Some(&(_, sent)) = self.vote_requests.iter().find(|(n, _)| *n == number) else {
            return;
        };
        let _ = self.to_brain.send(ToBrain::Witness {
            view: view.iter().collect(),
            sent,
            granted,
        });
    }

    /// An answer from the witness, for the brain.
    fn witness_answer(&mut self, payload: &[u8]) {
        match super::witness::decode::<super::witness::VoteAnswer>(payload) {
            Ok(answer) => {
                let _ = self.to_brain.send(ToBrain::Witness {
                    view: answer.view.into_iter().collect(),
                    sent: self.started + std::time::Duration::from_micros(answer.sent_us),
                    granted: answer.granted,
                });
            }
            Err(e) => warn!("the witness's answer refused: {e}"),
        }
    }

    fn is_dongle(&self, node: NodeId) -> bool {
        self.config
            .peers
            .iter()
            .any(|p| p.id == node && p.dongle.is_some())
    }

    /// Tells every reachable host about one of our mailboxes.
    fn announce(&mut self, code: EventCode, mailbox: u16) {
        let me = self.config.node;
        let peers: Vec<NodeId> = self.endpoint.peers().filter(|&p| self.is_host(p)).collect();
        for peer in peers {
            let event = RemoteEvent {
                code,
                subject: me,
                detail: u32::from(mailbox),
            };
            // A peer that is down learns afresh when it returns.
            let _ = self.endpoint.send_event(peer, event);
        }
    }

    fn status(&self) -> StatusReport {
        let now = self.now();
        let peers = self
            .config
            .peers
            .iter()
            .filter_map(|spec| {
                let peer = self.endpoint.peer(spec.id)?;
                let paths = (0..peer.paths)
                    .filter_map(|i| {
                        let index = u8::try_from(i).ok()?;
                        let at = PathRef {
                            node: spec.id,
                            path: PathId(index),
                        };
                        let status = self.endpoint.path(at)?;
                        Some(PathReport {
                            index,
                            transport: self
                                .paths
                                .get(&at)
                                .map(|h| h.transport.clone())
                                .unwrap_or_default(),
                            state: match status.state {
                                PathState::Up => "up".into(),
                                PathState::Down => "down".into(),
                            },
                            rtt_us: status.rtt.map(|d| d.as_micros()),
                            last_heard_ms_ago: status
                                .last_heard
                                .map(|t| now.saturating_since(t).as_millis()),
                            frames_in: status.counters.frames_in,
                            frames_out: status.counters.frames_out,
                            rejected: status.counters.rejected(),
                            errors: status
                                .counters
                                .by_reason()
                                .iter()
                                .filter(|(_, n)| *n > 0)
                                .map(|(name, n)| ((*name).to_string(), *n))
                                .collect(),
                        })
                    })
                    .collect();
                Some(PeerReport {
                    kind: peer.kind.map(|kind| match kind {
                        NodeKind::Host => "host".to_string(),
                        NodeKind::Dongle => "dongle".to_string(),
                        NodeKind::Other(n) => format!("kind {n}"),
                    }),
                    node: spec.id.0,
                    name: peer
                        .name
                        .map(str::to_string)
                        .or_else(|| spec.name.clone())
                        .unwrap_or_default(),
                    state: match peer.state {
                        NodeState::Up => "up",
                        NodeState::Down => "down",
                        NodeState::Unknown => "unknown",
                    }
                    .into(),
                    incarnation: peer.incarnation.map(|i| i.0),
                    queued: peer.queued,
                    paths,
                    dongle: spec.dongle.map(|dongle| DongleReport {
                        roles: [(CAP_RELAY, "relay"), (CAP_WATCHDOG, "watchdog")]
                            .into_iter()
                            .filter(|(bit, _)| peer.capabilities & bit != 0)
                            .map(|(_, role)| role.to_string())
                            .collect(),
                        hosts: std::iter::once(self.config.node.0)
                            .chain(dongle.other_host.map(|n| n.0))
                            .collect(),
                        watchdog_ms: dongle.watchdog.map(as_millis),
                        reset_pulse_ms: dongle.reset_pulse.map(as_millis),
                        tripped: self
                            .trips
                            .get(&spec.id.0)
                            .map(|hosts| hosts.iter().copied().collect())
                            .unwrap_or_default(),
                    }),
                })
            })
            .collect();
        StatusReport {
            cluster: self.config.cluster_name.clone(),
            node: self.config.node.0,
            name: self.config.name.clone(),
            incarnation: self.endpoint.incarnation().0,
            uptime_ms: self
                .started
                .elapsed()
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
            timer: self.timer,
            peers,
        }
    }
}

/// Why an application may not use `mailbox`.
pub fn reserved(mailbox: u16) -> String {
    format!(
        "mailbox {mailbox} (0x{mailbox:04X}) is reserved for heartline itself (0x{:04X} to 0x{:04X}); applications use mailboxes 0 to {}",
        RESERVED.start(),
        RESERVED.end(),
        RESERVED.start() - 1
    )
}

fn as_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
