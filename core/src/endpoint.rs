//! The endpoint: one node's view of its cluster, sans-IO.
//!
//! It owns every peer, path, replay window, reliable channel and watchdog of
//! one node, and turns received frames and the passing of time into frames to
//! send, events and delivered messages. It never reads a clock, touches a
//! socket or allocates.

use core::fmt;

use heapless::{Deque, String, Vec};

use crate::channel::{Arrival, Content};
use crate::counters::Counters;
use crate::ids::{ClusterId, Incarnation, MessageId, NodeId, PathId, PathRef};
use crate::path::{Path, PathConfig, PathConfigError, PathState, Transition};
use crate::peer::{Membership, NodeState, Peer, PeerConfig, PeerInfo};
use crate::time::{Duration, Instant};
use crate::watchdog::{WatchdogEvent, WatchdogState};
use crate::wire::{
    self, EventCode, Header, Hello, Key, Kind, MAX_ENCODED_LEN, MAX_NAME_LEN, MAX_PAYLOAD, Message,
    NodeKind, WireError,
};

/// Who this node is.
#[derive(Clone, Debug)]
pub struct EndpointConfig<'a> {
    /// The cluster; frames of others are rejected.
    pub cluster: ClusterId,
    /// This node's id (not 0).
    pub node: NodeId,
    /// This run of the node (not 0); larger after every restart.
    pub incarnation: Incarnation,
    /// This node's name as peers will show it (at most 32 bytes).
    pub name: &'a str,
    /// Host or dongle.
    pub kind: NodeKind,
    /// `wire::CAP_*` bits.
    pub capabilities: u32,
    /// The cluster's shared secret.
    pub key: Key,
}

/// Why a configuration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ConfigError {
    /// Node id 0, or a peer with this node's own id.
    InvalidNode(NodeId),
    /// Incarnation 0 is reserved for "unknown".
    ZeroIncarnation,
    /// The name is longer than 32 bytes.
    NameTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The peer was already added.
    DuplicatePeer(NodeId),
    /// More peers than the endpoint's capacity.
    TooManyPeers {
        /// The capacity.
        max: usize,
    },
    /// A peer with no paths, or more than the endpoint's capacity.
    PathCount {
        /// The peer.
        node: NodeId,
        /// Paths given.
        given: usize,
        /// The capacity.
        max: usize,
    },
    /// A path's timing is unusable.
    Path {
        /// The path.
        path: PathRef,
        /// What is wrong.
        error: PathConfigError,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidNode(n) => write!(
                f,
                "{n} is not a valid peer id (0 is reserved, and a node is not its own peer)"
            ),
            ConfigError::ZeroIncarnation => f.write_str("incarnation 0 is reserved"),
            ConfigError::NameTooLong { len } => write!(
                f,
                "node name is {len} bytes; at most {MAX_NAME_LEN} allowed"
            ),
            ConfigError::DuplicatePeer(n) => write!(f, "{n} is configured twice"),
            ConfigError::TooManyPeers { max } => write!(f, "more than {max} peers"),
            ConfigError::PathCount { node, given, max } => {
                write!(
                    f,
                    "{node} has {given} paths; between 1 and {max} are allowed"
                )
            }
            ConfigError::Path { path, error } => write!(f, "{path}: {error}"),
        }
    }
}

impl core::error::Error for ConfigError {}

/// Why a received frame was rejected. Every variant is counted, per path and
/// for the endpoint (see [`Counters`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RxError {
    /// The wire layer refused it.
    Wire(WireError),
    /// The caller named a path that is not configured.
    UnknownPath(PathRef),
    /// Addressed to another node.
    WrongDestination(NodeId),
    /// From a node other than the peer configured on this path.
    UnexpectedSender(NodeId),
    /// Sent on a different path than it arrived on: crossed cables or a
    /// path numbered differently at the two ends.
    PathMismatch {
        /// The path it arrived on.
        arrived_on: PathId,
        /// The path the sender meant.
        sent_on: PathId,
    },
    /// Already received (or too old for the replay window).
    Replayed,
    /// From an earlier run of the peer than the one already heard.
    StaleIncarnation(Incarnation),
}

impl fmt::Display for RxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RxError::Wire(e) => e.fmt(f),
            RxError::UnknownPath(p) => write!(f, "frame on unconfigured {p}"),
            RxError::WrongDestination(n) => write!(f, "frame addressed to {n}"),
            RxError::UnexpectedSender(n) => {
                write!(f, "frame from {n}, not the peer configured on this path")
            }
            RxError::PathMismatch {
                arrived_on,
                sent_on,
            } => {
                write!(
                    f,
                    "frame sent on {sent_on} arrived on {arrived_on} (crossed cables?)"
                )
            }
            RxError::Replayed => f.write_str("replayed frame"),
            RxError::StaleIncarnation(i) => {
                write!(f, "frame from an earlier run of the peer ({i})")
            }
        }
    }
}

impl core::error::Error for RxError {}

/// Why a message was not accepted for sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SendError {
    /// Not a configured peer.
    UnknownNode(NodeId),
    /// The peer is not up (no path to it is up).
    Unreachable(NodeId),
    /// The queue to that peer is full: try again once something is delivered.
    QueueFull(NodeId),
    /// The payload exceeds what the endpoint's queue slots hold
    /// ([`MAX_PAYLOAD`] unless built smaller).
    TooLarge {
        /// Its length.
        len: usize,
        /// The most allowed.
        max: usize,
    },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::UnknownNode(n) => write!(f, "{n} is not a configured peer"),
            SendError::Unreachable(n) => write!(f, "{n} is not reachable over any path"),
            SendError::QueueFull(n) => {
                write!(f, "the queue to {n} is full; retry after a delivery")
            }
            SendError::TooLarge { len, max } => {
                write!(f, "message is {len} bytes; at most {max} allowed")
            }
        }
    }
}

impl core::error::Error for SendError {}

/// Why an accepted message was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FailReason {
    /// The peer was declared down before acknowledging it.
    NodeDown,
    /// The peer restarted; the old run may or may not have received it.
    PeerRestarted,
    /// This node took a new incarnation ([`Event::Reincarnated`]); the
    /// peer may or may not have received it.
    Reincarnated,
}

/// An event report received from a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RemoteEvent {
    /// What happened.
    pub code: EventCode,
    /// To which node.
    pub subject: NodeId,
    /// Code-specific detail.
    pub detail: u32,
}

/// Something that happened, in the order it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event {
    /// A path came up.
    PathUp(PathRef),
    /// A path went down.
    PathDown(PathRef),
    /// A peer became reachable.
    NodeUp {
        /// The peer.
        node: NodeId,
        /// Its run.
        incarnation: Incarnation,
    },
    /// Every path to a peer is down.
    NodeDown {
        /// The peer.
        node: NodeId,
    },
    /// A peer is running a new incarnation.
    NodeRestarted {
        /// The peer.
        node: NodeId,
        /// The run now heard (larger than the one known; one incarnation
        /// per event, so that the dongle's event queue stays small).
        new: Incarnation,
    },
    /// A peer named a run of this node newer than this one (an earlier run
    /// took its incarnation from a clock that was ahead, and the record of
    /// it is lost): this node takes the next incarnation after it, and its
    /// paths and channels start over as after a restart, so that the peers
    /// that remember the earlier run stop dropping its frames as stale. The
    /// caller records `new` where the next run's incarnation comes from.
    Reincarnated {
        /// The run it has now: one more than the run the peer named.
        new: Incarnation,
    },
    /// A message was acknowledged by its receiver.
    Delivered {
        /// The receiver.
        node: NodeId,
        /// The message.
        id: MessageId,
    },
    /// A message will not be delivered.
    SendFailed {
        /// The intended receiver.
        node: NodeId,
        /// The message.
        id: MessageId,
        /// Why.
        reason: FailReason,
    },
    /// A peer reported an event (e.g. a dongle's watchdog trip).
    Remote {
        /// The reporter.
        from: NodeId,
        /// The report.
        event: RemoteEvent,
    },
    /// A watched peer fell silent.
    WatchdogTripped {
        /// The peer.
        node: NodeId,
        /// Silence from its last frame to the trip.
        silent_for: Duration,
    },
    /// A tripped watchdog's peer was heard again.
    WatchdogRearmed {
        /// The peer.
        node: NodeId,
    },
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailReason::NodeDown => "the node was declared down",
            FailReason::PeerRestarted => "the node restarted (delivery to its old run unknown)",
            FailReason::Reincarnated => {
                "this node took a new incarnation (delivery to the peer unknown)"
            }
        })
    }
}

impl fmt::Display for Event {
    /// One line saying what happened, for logs and status streams.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::PathUp(p) => write!(f, "{p} up"),
            Event::PathDown(p) => write!(f, "{p} down: silent for interval x misses"),
            Event::NodeUp { node, incarnation } => write!(f, "{node} up ({incarnation})"),
            Event::NodeDown { node } => write!(f, "{node} down: every path silent"),
            Event::NodeRestarted { node, new } => write!(f, "{node} restarted ({new})"),
            Event::Reincarnated { new } => write!(
                f,
                "this node takes {new}: a peer names a run of it, {}, newer than this one (an earlier run's clock was ahead and its record is lost)",
                new.0.saturating_sub(1)
            ),
            Event::Delivered { node, id } => write!(f, "{id} delivered to {node}"),
            Event::SendFailed { node, id, reason } => write!(f, "{id} to {node} failed: {reason}"),
            Event::Remote { from, event } => match event.code {
                EventCode::WatchdogTripped => write!(
                    f,
                    "{from} reports its watchdog tripped on {} after {} ms of silence",
                    event.subject, event.detail
                ),
                EventCode::WatchdogRearmed => {
                    write!(
                        f,
                        "{from} reports its watchdog re-armed on {}",
                        event.subject
                    )
                }
                EventCode::MailboxFull => {
                    write!(f, "{from} reports its mailbox {} full", event.detail)
                }
                EventCode::MailboxReady => {
                    write!(
                        f,
                        "{from} reports its mailbox {} has room again",
                        event.detail
                    )
                }
                EventCode::VoteRequest => write!(
                    f,
                    "{from} asks for the witness vote (request {:#010x})",
                    event.detail
                ),
                EventCode::VoteGranted | EventCode::VoteRefused => write!(
                    f,
                    "{from} {} the witness vote (request {:#010x})",
                    if event.code == EventCode::VoteGranted {
                        "grants"
                    } else {
                        "refuses"
                    },
                    event.detail
                ),
                EventCode::FenceRequest => {
                    write!(f, "{from} asks for a reset of {}", event.subject)
                }
                EventCode::FenceDone => write!(f, "{from} reset {}", event.subject),
                EventCode::FenceRefused => {
                    write!(f, "{from} refused to reset {}", event.subject)
                }
                EventCode::Other(code) => write!(
                    f,
                    "{from} reports event {code} about {} (detail {})",
                    event.subject, event.detail
                ),
            },
            Event::WatchdogTripped { node, silent_for } => {
                write!(f, "watchdog tripped: {node} silent for {silent_for}")
            }
            Event::WatchdogRearmed { node } => write!(f, "watchdog re-armed: {node} heard again"),
        }
    }
}

/// A mailbox message received in order from a peer; `N` is the largest
/// payload the receiving endpoint holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received<const N: usize = MAX_PAYLOAD> {
    /// The sender.
    pub from: NodeId,
    /// The mailbox it is addressed to.
    pub mailbox: u16,
    /// The message.
    pub payload: Vec<u8, N>,
}

/// A frame written into the caller's buffer, to send on `path`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
    /// Where to send it.
    pub path: PathRef,
    /// Bytes written at the start of the buffer, delimiter included.
    pub len: usize,
}

/// One peer's status, for display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerStatus<'a> {
    /// The peer.
    pub node: NodeId,
    /// Alive or not.
    pub state: NodeState,
    /// The run last heard.
    pub incarnation: Option<Incarnation>,
    /// Its name, from its hello.
    pub name: Option<&'a str>,
    /// Host or dongle, from its hello.
    pub kind: Option<NodeKind>,
    /// `CAP_*` bits from its hello.
    pub capabilities: u32,
    /// Paths configured.
    pub paths: usize,
    /// Messages queued to it, unacked.
    pub queued: usize,
    /// Its watchdog, if this node watches it.
    pub watchdog: Option<WatchdogState>,
    /// When this node sent the latest heartbeat the peer echoed back, on
    /// any path: the peer heard this node at or after that instant (quorum
    /// leases are renewed by it).
    pub echoed: Option<Instant>,
}

/// One path's status, for display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathStatus {
    /// Up or down.
    pub state: PathState,
    /// Smoothed round trip, once measured.
    pub rtt: Option<Duration>,
    /// When a frame last arrived.
    pub last_heard: Option<Instant>,
    /// Its configuration.
    pub config: PathConfig,
    /// Frames and errors on it.
    pub counters: Counters,
}

/// A bounded event queue that counts what it had to drop.
#[derive(Debug)]
struct Events<const N: usize> {
    queue: Deque<Event, N>,
    dropped: u32,
}

impl<const N: usize> Events<N> {
    fn push(&mut self, event: Event) {
        if self.queue.push_back(event).is_err() {
            self.dropped = self.dropped.saturating_add(1);
        }
    }
}

/// One node's protocol state.
///
/// Capacities are fixed at compile time: `PEERS` peers, `PATHS` paths per
/// peer, `QUEUE` unacked messages per peer, `INBOX` received messages
/// awaiting the application, `EVENTS` undrained events.
///
/// # Call order
///
/// 1. [`Endpoint::new`], then [`Endpoint::add_peer`] for each peer.
/// 2. Feed every input as it happens: [`Endpoint::handle_frame`] for each
///    frame from a path (split a stream with [`wire::FrameReader`]),
///    [`Endpoint::handle_timeout`] when the instant from `poll_timeout` has
///    come, [`Endpoint::send`] for the application's messages.
/// 3. After every input, drain the outputs: [`Endpoint::poll_transmit`] until
///    it returns `None` (sending each frame on its path),
///    [`Endpoint::poll_event`] and [`Endpoint::poll_message`] until `None`.
/// 4. Sleep until [`Endpoint::poll_timeout`] or the next input, then go to 2.
///
/// Every call takes the current instant; instants must never go backwards.
/// Events are lost only if the caller lets more than `EVENTS` pile up (see
/// [`Endpoint::events_dropped`]).
#[derive(Debug)]
pub struct Endpoint<
    const PEERS: usize,
    const PATHS: usize,
    const QUEUE: usize,
    const INBOX: usize,
    const EVENTS: usize,
    const PAYLOAD: usize = MAX_PAYLOAD,
> {
    cluster: ClusterId,
    node: NodeId,
    incarnation: Incarnation,
    name: String<MAX_NAME_LEN>,
    kind: NodeKind,
    capabilities: u32,
    key: Key,
    peers: Vec<Peer<PATHS, QUEUE, PAYLOAD>, PEERS>,
    /// The peers' ids, in `peers` order: one cache line to search instead of
    /// one per (large) peer.
    peer_ids: Vec<NodeId, PEERS>,
    inbox: Deque<Received<PAYLOAD>, INBOX>,
    events: Events<EVENTS>,
    next_message: u32,
    counters: Counters,
    /// No path falls silent and no watchdog trips before this instant (a
    /// lower bound, so most calls skip the scan of every path).
    next_expiry: Instant,
    /// No heartbeat is due before this instant (a lower bound likewise).
    next_heartbeat: Instant,
    /// Where the last due heartbeat was found.
    heartbeat_cursor: usize,
    /// No mailbox traffic is due before this instant (a lower bound).
    next_send: Instant,
    /// Some peer may be owed an ack.
    acks_pending: bool,
}

/// Who is sending: the fields every outgoing header and hello repeats.
struct Local<'a> {
    cluster: ClusterId,
    node: NodeId,
    incarnation: Incarnation,
    key: &'a Key,
}

impl Local<'_> {
    fn emit(
        &self,
        key: Option<&Key>,
        (peer_node, peer_incarnation): (NodeId, Option<Incarnation>),
        path: (PathId, &mut Path),
        message: &Message<'_>,
        buf: &mut [u8; MAX_ENCODED_LEN],
    ) -> Option<Transmit> {
        let (path_id, path) = path;
        let header = Header {
            kind: message.kind(),
            path: path_id,
            cluster: self.cluster,
            src: self.node,
            dst: peer_node,
            src_incarnation: self.incarnation,
            dst_incarnation: peer_incarnation.unwrap_or(Incarnation::UNKNOWN),
            seq: path.next_seq(),
        };
        // Cannot fail: the buffer holds the largest frame and every message
        // the endpoint builds is within the protocol limits.
        let len = wire::encode(&header, message, key.unwrap_or(self.key), buf).ok()?;
        path.counters.frames_out += 1;
        Some(Transmit {
            path: PathRef {
                node: peer_node,
                path: path_id,
            },
            len,
        })
    }
}

/// When the channel to `peer` next has a message to send, if it can send
/// at all (the peer is up and a path to it is up).
fn sendable<const PATHS: usize, const QUEUE: usize, const PAYLOAD: usize>(
    peer: &Peer<PATHS, QUEUE, PAYLOAD>,
) -> Option<Instant> {
    let deadline = peer.channel.send_deadline()?;
    let can_send =
        peer.state == NodeState::Up && peer.incarnation.is_some() && peer.best_path().is_some();
    can_send.then_some(deadline)
}

/// "No deadline" in the endpoint's cached lower bounds.
const NEVER: Instant = Instant::from_micros(u64::MAX);

fn path_index(path: PathId) -> usize {
    usize::from(path.0)
}

impl<
    const PEERS: usize,
    const PATHS: usize,
    const QUEUE: usize,
    const INBOX: usize,
    const EVENTS: usize,
    const PAYLOAD: usize,
> Endpoint<PEERS, PATHS, QUEUE, INBOX, EVENTS, PAYLOAD>
{
    /// An endpoint with no peers yet.
    pub fn new(config: EndpointConfig<'_>) -> Result<Self, ConfigError> {
        let name = Self::checked_name(&config)?;
        Ok(Self::with_name(config, name))
    }

    /// [`Endpoint::new`] once `name` is [`Endpoint::checked_name`]'s, so
    /// infallible: a caller that puts the endpoint in place (the dongle)
    /// builds it there rather than in a `Result` on its stack.
    #[inline(always)]
    pub(crate) fn with_name(config: EndpointConfig<'_>, name: String<MAX_NAME_LEN>) -> Self {
        Endpoint {
            cluster: config.cluster,
            node: config.node,
            incarnation: config.incarnation,
            name,
            kind: config.kind,
            capabilities: config.capabilities,
            key: config.key,
            peers: Vec::new(),
            peer_ids: Vec::new(),
            inbox: Deque::new(),
            events: Events {
                queue: Deque::new(),
                dropped: 0,
            },
            next_message: 0,
            counters: Counters::default(),
            next_expiry: NEVER,
            next_heartbeat: NEVER,
            heartbeat_cursor: 0,
            next_send: NEVER,
            acks_pending: false,
        }
    }

    /// Makes this endpoint what [`Endpoint::new`] would make of `config`,
    /// in place: with no peers, nothing queued, counters at zero. A device
    /// that cannot afford a second endpoint's worth of stack (the dongle,
    /// when it is provisioned anew) restarts its node this way. On error
    /// the endpoint is unchanged.
    pub fn reset(&mut self, config: EndpointConfig<'_>) -> Result<(), ConfigError> {
        self.name = Self::checked_name(&config)?;
        self.cluster = config.cluster;
        self.node = config.node;
        self.incarnation = config.incarnation;
        self.kind = config.kind;
        self.capabilities = config.capabilities;
        self.key = config.key;
        self.peers.clear();
        self.peer_ids.clear();
        self.inbox.clear();
        self.events.queue.clear();
        self.events.dropped = 0;
        self.next_message = 0;
        self.counters = Counters::default();
        self.next_expiry = NEVER;
        self.next_heartbeat = NEVER;
        self.heartbeat_cursor = 0;
        self.next_send = NEVER;
        self.acks_pending = false;
        Ok(())
    }

    pub(crate) fn checked_name(
        config: &EndpointConfig<'_>,
    ) -> Result<String<MAX_NAME_LEN>, ConfigError> {
        if !config.node.is_valid() {
            return Err(ConfigError::InvalidNode(config.node));
        }
        if config.incarnation == Incarnation::UNKNOWN {
            return Err(ConfigError::ZeroIncarnation);
        }
        String::try_from(config.name).map_err(|_| ConfigError::NameTooLong {
            len: config.name.len(),
        })
    }

    /// Adds a peer reachable over `paths` (numbered from 0 in this order,
    /// the same order the peer uses). Heartbeats start at `now`.
    pub fn add_peer(
        &mut self,
        now: Instant,
        peer: PeerConfig,
        paths: &[PathConfig],
    ) -> Result<(), ConfigError> {
        self.add_peer_with_key(now, peer, paths, None)
    }

    /// As [`Endpoint::add_peer`], for a peer that shares `key` with this
    /// node instead of the cluster key: a dongle, which is given a key of
    /// its own so that it never holds the cluster's.
    pub fn add_peer_with_key(
        &mut self,
        now: Instant,
        peer: PeerConfig,
        paths: &[PathConfig],
        key: Option<Key>,
    ) -> Result<(), ConfigError> {
        if !peer.node.is_valid() || peer.node == self.node {
            return Err(ConfigError::InvalidNode(peer.node));
        }
        if self.peer_index(peer.node).is_some() {
            return Err(ConfigError::DuplicatePeer(peer.node));
        }
        if self.peers.is_full() {
            return Err(ConfigError::TooManyPeers { max: PEERS });
        }
        let max = PATHS.min(usize::from(u8::MAX) + 1);
        if paths.is_empty() || paths.len() > max {
            return Err(ConfigError::PathCount {
                node: peer.node,
                given: paths.len(),
                max,
            });
        }
        let mut built = Vec::new();
        for (index, config) in paths.iter().enumerate() {
            let path = PathRef {
                node: peer.node,
                path: PathId(u8::try_from(index).unwrap_or(u8::MAX)),
            };
            config
                .validate()
                .map_err(|error| ConfigError::Path { path, error })?;
            // Cannot fail: the count was checked against the capacity.
            let _ = built.push(Path::new(*config, now));
        }
        self.peers
            .push(Peer::new(peer, built, key))
            .map_err(|_| ConfigError::TooManyPeers { max: PEERS })?;
        // Cannot fail: `peer_ids` has the capacity of `peers`.
        let _ = self.peer_ids.push(peer.node);
        self.next_heartbeat = self.next_heartbeat.min(now);
        Ok(())
    }

    /// Processes one received frame: `frame` is its COBS bytes without the
    /// delimiter (decoded in place), `at` the path it arrived on.
    ///
    /// Rejected frames are counted and reported; they change nothing else.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        at: PathRef,
        frame: &mut [u8],
    ) -> Result<(), RxError> {
        // Timers that fell due before this frame run first, so a late caller
        // still sees the failure it missed; a frame arriving at the very
        // instant a path would fall silent still counts for it.
        self.advance(Instant::from_micros(now.as_micros().saturating_sub(1)));
        let result = self.receive(now, at, frame);
        match &result {
            Ok(()) => {
                self.counters.frames_in += 1;
                if let Some(path) = self.path_mut(at) {
                    path.counters.frames_in += 1;
                }
            }
            Err(error) => {
                self.counters.record(error);
                if let Some(path) = self.path_mut(at) {
                    path.counters.record(error);
                }
            }
        }
        result
    }

    /// Counts a run of bytes the caller's stream reader discarded for being
    /// longer than any frame ([`wire::Overflow`]) on path `at`.
    pub fn handle_overflow(&mut self, at: PathRef) {
        let error = RxError::Wire(WireError::Oversize);
        self.counters.record(&error);
        if let Some(path) = self.path_mut(at) {
            path.counters.record(&error);
        }
    }

    /// Runs the timers that are due: paths falling silent, nodes going down,
    /// watchdogs tripping. Retransmissions that fall due go out with the next
    /// [`Endpoint::poll_transmit`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// Queues a mailbox message to `to`; its fate is reported later as
    /// [`Event::Delivered`] or [`Event::SendFailed`] with the returned id.
    pub fn send(
        &mut self,
        to: NodeId,
        mailbox: u16,
        payload: &[u8],
    ) -> Result<MessageId, SendError> {
        let payload = Vec::from_slice(payload).map_err(|_| SendError::TooLarge {
            len: payload.len(),
            max: PAYLOAD.min(MAX_PAYLOAD),
        })?;
        self.enqueue(to, Content::Mailbox { mailbox, payload })
    }

    /// Queues an event report to `to`, delivered reliably like a message.
    pub fn send_event(&mut self, to: NodeId, event: RemoteEvent) -> Result<MessageId, SendError> {
        self.enqueue(
            to,
            Content::Event {
                code: event.code.into(),
                subject: event.subject,
                detail: event.detail,
            },
        )
    }

    fn enqueue(&mut self, to: NodeId, content: Content<PAYLOAD>) -> Result<MessageId, SendError> {
        let id = MessageId(self.next_message);
        let index = self.peer_index(to).ok_or(SendError::UnknownNode(to))?;
        let peer = &mut self.peers[index];
        if peer.state != NodeState::Up {
            return Err(SendError::Unreachable(to));
        }
        if !peer.channel.push(id, content) {
            return Err(SendError::QueueFull(to));
        }
        self.next_send = sendable(peer).map_or(self.next_send, |at| at.min(self.next_send));
        self.next_message = self.next_message.wrapping_add(1);
        Ok(id)
    }

    /// Writes the next frame to send into `buf`, if any is due: heartbeats
    /// first, then acks, then mailbox traffic.
    #[must_use]
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8; MAX_ENCODED_LEN],
    ) -> Option<Transmit> {
        self.advance(now);
        let transmit = self.next_transmit(now, buf)?;
        self.counters.frames_out += 1;
        Some(transmit)
    }

    fn next_transmit(&mut self, now: Instant, buf: &mut [u8; MAX_ENCODED_LEN]) -> Option<Transmit> {
        let local = Local {
            cluster: self.cluster,
            node: self.node,
            incarnation: self.incarnation,
            key: &self.key,
        };
        let peers = self.peers.len();
        if now >= self.next_heartbeat {
            // Resume where the last heartbeat was found, so a burst of due
            // heartbeats costs one pass over the peers, not one per frame.
            for offset in 0..peers {
                let at = (self.heartbeat_cursor + offset) % peers;
                let peer = &mut self.peers[at];
                let (node, incarnation, knows_us) = (peer.node(), peer.incarnation, peer.knows_us);
                let Some((index, path)) = peer
                    .paths
                    .iter_mut()
                    .enumerate()
                    .find(|(_, p)| p.next_heartbeat() <= now)
                else {
                    continue;
                };
                self.heartbeat_cursor = at;
                let heartbeat = path.make_heartbeat(now);
                let message = if path.is_up() && knows_us {
                    Message::Heartbeat(heartbeat)
                } else {
                    Message::Hello(Hello {
                        name: self.name.as_str(),
                        node_kind: self.kind,
                        capabilities: self.capabilities,
                        heartbeat,
                    })
                };
                let id = PathId(u8::try_from(index).ok()?);
                return local.emit(
                    peer.key.as_ref(),
                    (node, incarnation),
                    (id, path),
                    &message,
                    buf,
                );
            }
            let all = self
                .peers
                .iter()
                .flat_map(|p| p.paths.iter())
                .map(Path::next_heartbeat);
            self.next_heartbeat = all.fold(NEVER, Instant::min);
        }
        if self.acks_pending {
            for peer in &mut self.peers {
                let Some((id, cumulative)) = peer.channel.take_ack() else {
                    continue;
                };
                let to = (peer.node(), peer.incarnation);
                let Some(path) = peer.paths.get_mut(path_index(id)) else {
                    continue;
                };
                let message = Message::Ack(wire::Ack { cumulative });
                return local.emit(peer.key.as_ref(), to, (id, path), &message, buf);
            }
            self.acks_pending = false;
        }
        if now >= self.next_send {
            for peer in &mut self.peers {
                if sendable(peer).is_none_or(|at| at > now) {
                    continue;
                }
                let round = peer.channel.round(now);
                let Some(id) = peer.path_for_round(round) else {
                    continue;
                };
                let to = (peer.node(), peer.incarnation);
                let Some(path) = peer.paths.get_mut(path_index(id)) else {
                    continue;
                };
                let Some(message) = peer.channel.poll_send(now, id, path.rtt.rto()) else {
                    continue;
                };
                return local.emit(peer.key.as_ref(), to, (id, path), &message, buf);
            }
            self.next_send = self
                .peers
                .iter()
                .filter_map(sendable)
                .fold(NEVER, Instant::min);
        }
        None
    }

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.queue.pop_front()
    }

    /// The next received mailbox message, in order per sender.
    #[must_use]
    pub fn poll_message(&mut self) -> Option<Received<PAYLOAD>> {
        self.inbox.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] (or `poll_transmit`) next has work,
    /// assuming the outputs were drained.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.acks_pending {
            return Some(Instant::ZERO);
        }
        [self.next_heartbeat, self.next_expiry, self.next_send]
            .into_iter()
            .filter(|&at| at != NEVER)
            .min()
    }

    fn peer_index(&self, node: NodeId) -> Option<usize> {
        self.peer_ids.iter().position(|&id| id == node)
    }

    fn path_mut(&mut self, at: PathRef) -> Option<&mut Path> {
        let index = self.peer_index(at.node)?;
        self.peers[index].paths.get_mut(path_index(at.path))
    }

    /// Expires paths and watchdogs whose time has come.
    fn advance(&mut self, now: Instant) {
        if now < self.next_expiry {
            return;
        }
        let mut next_expiry = NEVER;
        for peer in &mut self.peers {
            let node = peer.node();
            for (index, path) in peer.paths.iter_mut().enumerate() {
                if path.expire(now) == Some(Transition::Down) {
                    let id = PathId(u8::try_from(index).unwrap_or(u8::MAX));
                    self.events
                        .push(Event::PathDown(PathRef { node, path: id }));
                    peer.channel.path_down(id);
                }
            }
            Self::membership_changed(peer, &mut self.events);
            self.next_send = sendable(peer).map_or(self.next_send, |at| at.min(self.next_send));
            if let Some(WatchdogEvent::Tripped { silent_for }) =
                peer.watchdog.as_mut().and_then(|w| w.handle_timeout(now))
            {
                self.events
                    .push(Event::WatchdogTripped { node, silent_for });
            }
            let deadlines = peer.paths.iter().filter_map(Path::silence_deadline);
            let watchdog = peer.watchdog.as_ref().and_then(|w| w.poll_timeout());
            next_expiry = deadlines.chain(watchdog).fold(next_expiry, Instant::min);
        }
        self.next_expiry = next_expiry;
    }

    fn membership_changed(peer: &mut Peer<PATHS, QUEUE, PAYLOAD>, events: &mut Events<EVENTS>) {
        let node = peer.node();
        match peer.update_membership() {
            Some(Membership::Up) => events.push(Event::NodeUp {
                node,
                incarnation: peer.incarnation.unwrap_or(Incarnation::UNKNOWN),
            }),
            Some(Membership::Down) => {
                events.push(Event::NodeDown { node });
                peer.channel.fail_all(|id| {
                    events.push(Event::SendFailed {
                        node,
                        id,
                        reason: FailReason::NodeDown,
                    });
                });
            }
            None => {}
        }
    }

    fn receive(&mut self, now: Instant, at: PathRef, frame: &mut [u8]) -> Result<(), RxError> {
        let peer_key = self
            .peer_index(at.node)
            .and_then(|i| self.peers[i].key.as_ref());
        let key = peer_key.unwrap_or(&self.key);
        let (header, message) = wire::decode(frame, key, self.cluster).map_err(RxError::Wire)?;
        if header.dst != self.node {
            return Err(RxError::WrongDestination(header.dst));
        }
        let index = self.peer_index(at.node).ok_or(RxError::UnknownPath(at))?;
        let peer = &mut self.peers[index];
        if path_index(at.path) >= peer.paths.len() {
            return Err(RxError::UnknownPath(at));
        }
        if header.src != at.node {
            return Err(RxError::UnexpectedSender(header.src));
        }
        if header.path != at.path {
            return Err(RxError::PathMismatch {
                arrived_on: at.path,
                sent_on: header.path,
            });
        }
        let node = at.node;
        match peer.incarnation {
            Some(known) if header.src_incarnation < known => {
                return Err(RxError::StaleIncarnation(header.src_incarnation));
            }
            Some(old) if header.src_incarnation > old => {
                let new = header.src_incarnation;
                self.events.push(Event::NodeRestarted { node, new });
                for path in &mut peer.paths {
                    path.peer_restarted();
                }
                let events = &mut self.events;
                peer.channel.peer_restarted(|id| {
                    events.push(Event::SendFailed {
                        node,
                        id,
                        reason: FailReason::PeerRestarted,
                    });
                });
                peer.info = None;
                peer.incarnation = Some(new);
            }
            Some(_) => {}
            None => peer.incarnation = Some(header.src_incarnation),
        }
        peer.paths[path_index(at.path)]
            .replay
            .accept(header.seq)
            .map_err(|_| RxError::Replayed)?;

        // Authentic and fresh from here on.
        if header.dst_incarnation > self.incarnation {
            self.reincarnate(Incarnation(header.dst_incarnation.0.saturating_add(1)));
        }
        let peer = &mut self.peers[index];
        let path = &mut peer.paths[path_index(at.path)];
        peer.knows_us = header.dst_incarnation == self.incarnation;
        let heartbeat = match &message {
            Message::Hello(hello) => {
                peer.info = Some(PeerInfo {
                    name: String::try_from(hello.name).unwrap_or_default(),
                    kind: hello.node_kind,
                    capabilities: hello.capabilities,
                });
                Some(hello.heartbeat)
            }
            Message::Heartbeat(hb) => Some(*hb),
            _ => None,
        };
        if let (Some(hb), true) = (&heartbeat, peer.knows_us) {
            path.measure(now, hb);
        }
        let stale = matches!(header.kind, Kind::Data | Kind::Event | Kind::Ack) && !peer.knows_us;
        if stale {
            // Meant for an earlier run of this node: its channel state is gone.
            self.counters.stale_destination += 1;
            path.counters.stale_destination += 1;
        }
        if path.heard(now, heartbeat.as_ref()) == Some(Transition::Up) {
            self.events.push(Event::PathUp(at));
            Self::membership_changed(peer, &mut self.events);
        }
        if let Some(WatchdogEvent::Rearmed) = peer.watchdog.as_mut().and_then(|w| w.feed(now)) {
            self.events.push(Event::WatchdogRearmed { node });
        }
        let path = &peer.paths[path_index(at.path)];
        let watchdog = peer.watchdog.as_ref().and_then(|w| w.poll_timeout());
        self.next_expiry = path
            .silence_deadline()
            .into_iter()
            .chain(watchdog)
            .fold(self.next_expiry, Instant::min);
        if !stale {
            self.receive_channel(now, at, message);
        }
        if let Some(peer) = self.peers.get(index) {
            self.next_send = sendable(peer).map_or(self.next_send, |at| at.min(self.next_send));
        }
        Ok(())
    }

    /// Takes the incarnation `new`, larger than a run of this node a peer
    /// named: every peer's channel starts over (what was sent may or may
    /// not have arrived) and no peer knows this run yet. The peers see a
    /// restart.
    fn reincarnate(&mut self, new: Incarnation) {
        self.incarnation = new;
        self.events.push(Event::Reincarnated { new });
        for peer in &mut self.peers {
            peer.knows_us = false;
            let node = peer.node();
            let events = &mut self.events;
            peer.channel.peer_restarted(|id| {
                events.push(Event::SendFailed {
                    node,
                    id,
                    reason: FailReason::Reincarnated,
                });
            });
        }
    }

    /// Hands a fresh data, event or ack message that arrived `at` to its
    /// peer's channel.
    fn receive_channel(&mut self, now: Instant, at: PathRef, message: Message<'_>) {
        let node = at.node;
        let Some(peer) = self.peer_index(node).and_then(|i| self.peers.get_mut(i)) else {
            return;
        };
        match message {
            Message::Data(data) => {
                self.acks_pending = true;
                // A payload larger than this endpoint holds (one built
                // small, like the dongle's, which has no mailboxes) is left
                // unacknowledged, as if the inbox were full: never cut short.
                let fits = Vec::<u8, PAYLOAD>::from_slice(data.payload).ok();
                if peer.channel.arrival(data.seq, data.base, at.path) == Arrival::Next
                    && !self.inbox.is_full()
                    && let Some(payload) = fits
                {
                    let _ = self.inbox.push_back(Received {
                        from: node,
                        mailbox: data.mailbox,
                        payload,
                    });
                    peer.channel.delivered();
                }
            }
            Message::Event(report) => {
                self.acks_pending = true;
                if peer.channel.arrival(report.seq, report.base, at.path) == Arrival::Next
                    && !self.events.queue.is_full()
                {
                    let event = RemoteEvent {
                        code: report.event_code(),
                        subject: report.subject,
                        detail: report.detail,
                    };
                    self.events.push(Event::Remote { from: node, event });
                    peer.channel.delivered();
                }
            }
            Message::Ack(ack) => {
                let events = &mut self.events;
                peer.channel.on_ack(now, ack.cumulative, |id| {
                    events.push(Event::Delivered { node, id })
                });
            }
            Message::Hello(_) | Message::Heartbeat(_) | Message::Provision(_) => {}
        }
    }

    /// This node's id.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// This node's run.
    #[must_use]
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// The key this node's frames are tagged with.
    pub(crate) fn key(&self) -> &Key {
        &self.key
    }

    /// The configured peers, in the order they were added.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.iter().map(Peer::node)
    }

    /// Whether `node` is reachable over some path (LCM's `can_talk`).
    #[must_use]
    pub fn can_talk(&self, node: NodeId) -> bool {
        self.peer(node).is_some_and(|p| p.state == NodeState::Up)
    }

    /// A peer's status.
    #[must_use]
    pub fn peer(&self, node: NodeId) -> Option<PeerStatus<'_>> {
        let peer = self.peers.get(self.peer_index(node)?)?;
        Some(PeerStatus {
            node,
            state: peer.state,
            incarnation: peer.incarnation,
            name: peer.info.as_ref().map(|i| i.name.as_str()),
            kind: peer.info.as_ref().map(|i| i.kind),
            capabilities: peer.info.as_ref().map_or(0, |i| i.capabilities),
            paths: peer.paths.len(),
            queued: peer.channel.queued(),
            watchdog: peer.watchdog.as_ref().map(|w| w.state()),
            echoed: peer.paths.iter().filter_map(Path::echoed).max(),
        })
    }

    /// A path's status.
    #[must_use]
    pub fn path(&self, at: PathRef) -> Option<PathStatus> {
        let path = self
            .peers
            .get(self.peer_index(at.node)?)?
            .paths
            .get(path_index(at.path))?;
        Some(PathStatus {
            state: path.state(),
            rtt: path.rtt.smoothed(),
            last_heard: path.last_heard(),
            config: path.config,
            counters: path.counters,
        })
    }

    /// Totals over all paths, plus frames on unconfigured paths.
    #[must_use]
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Events dropped because the caller did not drain them in time; zero
    /// in a correct driver.
    #[must_use]
    pub fn events_dropped(&self) -> u32 {
        self.events.dropped
    }
}
