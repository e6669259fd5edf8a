//! The heartbeat dongle's logic, sans-IO: its provisioning, the relay
//! between its two ports, and the watch it keeps over its hosts.
//!
//! The firmware feeds it the bytes each port received and the time, and
//! writes out what it returns: frames per port, the level of each host's
//! reset output, and notes to log. The board supplies nothing but UARTs, a
//! clock and two output pins, so the logic is tested here in simulated time.
//!
//! A dongle starts unprovisioned and silent. The first authentic
//! provisioning frame a host sends it (see "Provisioning" in
//! [`crate::wire`]) makes it a node: it learns its cluster, its node id, the
//! hosts on its two ports, the key it shares with them and its timings, and
//! keeps them in RAM until it is reset. After that it takes provisioning
//! only under the same key; a different key needs the dongle reset.
//!
//! It is also the cluster's quorum witness, when its hosts ask: their vote
//! requests come as event reports ([`crate::witness::request_event`]) and
//! are answered by the same [`Witness`] as `heartline witness` runs,
//! remembering its two hosts. And it is a fence device: a host holding its
//! vote without the other may have the other reset ([`fence_request`]);
//! the dongle holds the reset line for its pulse, then confirms.

use heapless::Deque;

use crate::endpoint::{ConfigError, Endpoint, EndpointConfig, Event, RemoteEvent};
use crate::ids::{ClusterId, Incarnation, NodeId, PathId, PathRef};
use crate::path::PathConfig;
use crate::peer::PeerConfig;
use crate::time::{Duration, Instant};
use crate::wire::{
    self, CAP_RELAY, CAP_WATCHDOG, DONGLE_SECRET_LEN, EncodeError, EventCode, FrameReader, Header,
    Key, Kind, MAX_ENCODED_LEN, Message, NodeKind, Provision, WireError,
};
use crate::witness::{self, Witness, WitnessConfig};

/// Serial ports on a dongle; port `p`'s host is the other port's "beyond".
pub const PORTS: usize = 2;

/// The dongle's endpoint: one peer per port, one path each, two event
/// reports in flight per host, and no mailboxes: its queue slots hold no
/// payload, which keeps it under 2 KiB.
pub type DongleEndpoint = Endpoint<PORTS, 1, 2, 1, 16, 0>;

/// Something worth a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Note {
    /// The dongle became node `node` of `cluster`, provisioned by `by`.
    Provisioned {
        /// The port the provisioning came in on.
        port: usize,
        /// The host that sent it.
        by: NodeId,
        /// The cluster joined.
        cluster: ClusterId,
        /// The dongle's node id.
        node: NodeId,
        /// The dongle's run.
        incarnation: Incarnation,
    },
    /// New settings under the same key; the dongle restarted as a node.
    Reprovisioned {
        /// The port the provisioning came in on.
        port: usize,
        /// The host that sent it.
        by: NodeId,
        /// The dongle's new run.
        incarnation: Incarnation,
    },
    /// A provisioning frame was not taken.
    Refused {
        /// The port it came in on.
        port: usize,
        /// Why.
        reason: Refusal,
    },
    /// A host's path came up.
    HostUp {
        /// The host.
        host: NodeId,
    },
    /// A host's path went down.
    HostDown {
        /// The host.
        host: NodeId,
    },
    /// A host fell silent for the watchdog time.
    Tripped {
        /// The host.
        host: NodeId,
        /// Its silence at the trip.
        silent_for: Duration,
    },
    /// A tripped host was heard again.
    Rearmed {
        /// The host.
        host: NodeId,
    },
    /// The witness vote moved: to the partition of these hosts (empty:
    /// none holds it).
    VoteHolder {
        /// The hosts holding it.
        holder: witness::NodeSet,
    },
    /// A host asked for the other's reset: done (the line is pulsed, and
    /// confirmed at the pulse's end) or refused.
    Fence {
        /// The host that asked.
        by: NodeId,
        /// The host to reset.
        host: NodeId,
        /// Whether the reset line is pulsed.
        done: bool,
    },
}

/// A request that the dongle reset `target`, numbered `number` (echoed in
/// the answer).
#[must_use]
pub fn fence_request(number: u16, target: NodeId) -> RemoteEvent {
    RemoteEvent {
        code: EventCode::FenceRequest,
        subject: target,
        detail: u32::from(number),
    }
}

/// A fence answer: the request's number, the host, whether it was reset.
#[must_use]
pub fn parse_fence_answer(event: &RemoteEvent) -> Option<(u16, NodeId, bool)> {
    let done = match event.code {
        EventCode::FenceDone => true,
        EventCode::FenceRefused => false,
        _ => return None,
    };
    Some(((event.detail & 0xFFFF) as u16, event.subject, done))
}

/// Why a provisioning frame was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Refusal {
    /// Corrupt, forged or malformed.
    Frame(WireError),
    /// Made with another key than the one the dongle holds: another cluster
    /// or a rotated key. Reset the dongle to provision it afresh.
    OtherKey,
    /// Not newer than the last one taken from that host: a replay.
    Replayed,
    /// Names a different host on a port than the dongle already serves:
    /// cables moved, or two hosts' configurations disagree.
    Cabling {
        /// The port.
        port: usize,
        /// The host the dongle has there.
        serving: NodeId,
        /// The host the frame names there.
        named: NodeId,
    },
    /// The settings make no valid node (e.g. a host with the dongle's id).
    Invalid(ConfigError),
}

/// What a provisioning sets, apart from the dongle's run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Settings {
    cluster: ClusterId,
    node: NodeId,
    hosts: [Option<NodeId>; PORTS],
    secret: [u8; DONGLE_SECRET_LEN],
    path: PathConfig,
    watchdog: Option<Duration>,
    reset_pulse: Option<Duration>,
}

impl Settings {
    fn from_frame(port: usize, header: &Header, body: &Provision<'_>) -> Settings {
        let millis = |ms: u32| (ms > 0).then(|| Duration::from_millis(u64::from(ms)));
        let mut secret = [0u8; DONGLE_SECRET_LEN];
        // The length was checked when the frame was decoded.
        let len = DONGLE_SECRET_LEN.min(body.secret.len());
        secret[..len].copy_from_slice(&body.secret[..len]);
        let mut hosts = [None; PORTS];
        hosts[port] = Some(header.src);
        hosts[1 - port] = body.other_host.is_valid().then_some(body.other_host);
        Settings {
            cluster: header.cluster,
            node: header.dst,
            hosts,
            secret,
            path: PathConfig {
                interval: Duration::from_millis(u64::from(body.interval_ms)),
                misses: body.misses,
                rise: body.rise,
                priority: 1,
            },
            watchdog: millis(body.watchdog_ms),
            reset_pulse: millis(body.reset_pulse_ms),
        }
    }

    fn port_of(&self, host: NodeId) -> Option<usize> {
        self.hosts.iter().position(|&h| h == Some(host))
    }

    /// The endpoint configuration these settings make, for run
    /// `incarnation`, with their `key`.
    fn endpoint_config(&self, incarnation: Incarnation, key: Key) -> EndpointConfig<'static> {
        EndpointConfig {
            cluster: self.cluster,
            node: self.node,
            incarnation,
            name: "dongle",
            kind: NodeKind::Dongle,
            capabilities: CAP_WATCHDOG | CAP_RELAY,
            key,
        }
    }

    /// Adds the hosts as peers. Never inlined, as [`Settings::reset`].
    #[inline(never)]
    fn add_hosts(&self, now: Instant, endpoint: &mut DongleEndpoint) -> Result<(), Refusal> {
        for host in self.hosts.into_iter().flatten() {
            let peer = PeerConfig {
                watchdog: self.watchdog,
                ..PeerConfig::new(host)
            };
            endpoint
                .add_peer(now, peer, &[self.path])
                .map_err(Refusal::Invalid)?;
        }
        Ok(())
    }

    /// Restarts `endpoint` in place as the node these settings make: the
    /// endpoint is the dongle's largest object, and a copy of it on the
    /// stack would double the dongle's RAM. In two calls, so the stack
    /// never holds the key's preparation and a new peer at once.
    fn apply(
        &self,
        now: Instant,
        incarnation: Incarnation,
        endpoint: &mut DongleEndpoint,
    ) -> Result<(), Refusal> {
        self.reset(incarnation, endpoint)?;
        self.add_hosts(now, endpoint)
    }

    /// Makes `endpoint` the node these settings make, with no peers yet,
    /// keeping its key: settings are taken only under the key the dongle
    /// holds, so the key made of them is the same, and preparing it again
    /// would cost stack and time for nothing. Never inlined: the
    /// configuration is on the stack only while it runs.
    #[inline(never)]
    fn reset(
        &self,
        incarnation: Incarnation,
        endpoint: &mut DongleEndpoint,
    ) -> Result<(), Refusal> {
        let key = endpoint.key().clone();
        endpoint
            .reset(self.endpoint_config(incarnation, key))
            .map_err(Refusal::Invalid)
    }
}

/// The secret hosts give dongle `dongle` of `cluster`, derived from the
/// cluster key (see "Provisioning" in [`crate::wire`]).
#[must_use]
pub fn dongle_secret(
    cluster_key: &Key,
    cluster: ClusterId,
    dongle: NodeId,
) -> [u8; DONGLE_SECRET_LEN] {
    let mut context = [0u8; 29];
    context[..23].copy_from_slice(b"heartline dongle key v1");
    context[23..27].copy_from_slice(&cluster.0.to_le_bytes());
    context[27..].copy_from_slice(&dongle.0.to_le_bytes());
    cluster_key.derive(&context)
}

/// Encodes a provision frame, tagged with the secret it carries; returns
/// its length in `out`, delimiter included.
pub fn encode_provision(
    header: &Header,
    body: &Provision<'_>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    if body.secret.len() != DONGLE_SECRET_LEN {
        return Err(EncodeError::TooLarge);
    }
    let key = Key::new(body.secret).map_err(|_| EncodeError::TooLarge)?;
    wire::encode(header, &Message::Provision(*body), &key, out)
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(a: &[u8; DONGLE_SECRET_LEN], b: &[u8; DONGLE_SECRET_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug)]
struct Provisioned {
    settings: Settings,
    endpoint: DongleEndpoint,
    /// (sender, its run, frame sequence) of the last provisioning taken on
    /// each port: an older one is a replay.
    last: [Option<(NodeId, Incarnation, u64)>; PORTS],
    /// The witness, once a host asked for its vote.
    witness: Option<Witness<PORTS>>,
    /// Per port: the confirmation owed, at the end of its reset pulse, to
    /// the host that asked for it, and the number of its request.
    fenced: [Option<(NodeId, u16)>; PORTS],
}

impl Provisioned {
    /// The dongle's first provisioning: the node `pending` makes, put in
    /// `slot`. Its key is prepared, the endpoint built in `slot` and the
    /// hosts added by three calls in turn, so the stack holds one of them
    /// at a time. Inlined in `State::apply_pending`, whose frame holds the
    /// key meanwhile: a frame of its own would add to the depth of all
    /// three.
    #[inline(always)]
    fn first(
        slot: &mut Option<Provisioned>,
        now: Instant,
        pending: &Pending,
    ) -> Result<Note, Refusal> {
        let Pending {
            port,
            sender,
            ref settings,
            incarnation,
        } = *pending;
        let Ok(key) = Key::new(&settings.secret) else {
            // Cannot happen: the secret is 32 bytes, twice the shortest key.
            return Err(Refusal::Frame(WireError::Malformed));
        };
        let p = Provisioned::install(slot, key, pending)?;
        settings.add_hosts(now, &mut p.endpoint).inspect_err(|_| {
            *slot = None;
        })?;
        Ok(Note::Provisioned {
            port,
            by: sender.0,
            cluster: settings.cluster,
            node: settings.node,
            incarnation,
        })
    }

    /// Builds the node `pending` makes, under `key`, in `slot`, where it
    /// will live: an endpoint built whole on the stack and then moved
    /// would nearly double the dongle's RAM. (The compiler still assembles
    /// parts of it in this frame, which is why it is a call of its own.)
    #[inline(never)]
    fn install<'a>(
        slot: &'a mut Option<Provisioned>,
        key: Key,
        pending: &Pending,
    ) -> Result<&'a mut Provisioned, Refusal> {
        let config = pending.settings.endpoint_config(pending.incarnation, key);
        let name = DongleEndpoint::checked_name(&config).map_err(Refusal::Invalid)?;
        let mut last = [None; PORTS];
        last[pending.port] = Some(pending.sender);
        Ok(slot.get_or_insert_with(|| Provisioned {
            settings: pending.settings,
            endpoint: DongleEndpoint::with_name(config, name),
            last,
            witness: None,
            fenced: [None; PORTS],
        }))
    }

    /// Restarts the node with the new settings of `pending`, in place.
    /// Never inlined, so its frame and the first provisioning's never
    /// stack up (see `State::apply_pending`).
    #[inline(never)]
    fn restart(&mut self, now: Instant, pending: &Pending) -> Result<Note, Refusal> {
        let Pending {
            port,
            sender: (by, ..),
            ref settings,
            incarnation,
        } = *pending;
        // `State::provision` takes new settings only under the key in force,
        // which `Settings::reset` therefore keeps.
        debug_assert!(same_secret(&self.settings.secret, &settings.secret));
        match settings.apply(now, incarnation, &mut self.endpoint) {
            Ok(()) => {
                self.settings = *settings;
                Ok(Note::Reprovisioned {
                    port,
                    by,
                    incarnation,
                })
            }
            Err(refusal) => {
                // The settings in force were valid: the node restarts with
                // them.
                let _ = self.settings.apply(now, incarnation, &mut self.endpoint);
                Err(refusal)
            }
        }
    }

    /// A host's vote request: answered by the witness (made with the lease
    /// the request names, settling over the host path's detection time +
    /// 0.5 s). The new holder, when it changed.
    #[inline(never)]
    fn vote(
        &mut self,
        now: Instant,
        from: NodeId,
        event: &RemoteEvent,
    ) -> Option<witness::NodeSet> {
        let (_, view, lease) = witness::parse_request(event)?;
        self.settings.port_of(from)?;
        let config = WitnessConfig {
            lease,
            margin: witness::default_margin(lease),
            settle: self.settings.path.down_after() + Duration::from_millis(500),
        };
        let w = self.witness.get_or_insert_with(|| Witness::new(config));
        if w.config() != config {
            w.set_config(config);
        }
        let before = w.holder(now).unwrap_or(witness::NodeSet::EMPTY);
        let answer = w.request(now, from.0, view);
        // A full queue drops the answer: the host asks again.
        let _ = self
            .endpoint
            .send_event(from, witness::answer_event(event, answer));
        (answer.holder != before).then_some(answer.holder)
    }
}

impl Provisioned {
    /// A host's fence request: the other host's reset line is pulsed if the
    /// asker's side holds the witness vote without it and a pulse is
    /// configured (confirmed at the pulse's end); otherwise refused at once.
    #[inline(never)]
    fn fence(
        &mut self,
        now: Instant,
        from: NodeId,
        event: &RemoteEvent,
        resets: &mut [Option<Instant>; PORTS],
    ) -> Option<Note> {
        if event.code != EventCode::FenceRequest {
            return None;
        }
        let target = event.subject;
        let holder = self.witness.as_ref().and_then(|w| w.holder(now));
        let port = self.settings.port_of(target);
        let allowed = match (self.settings.reset_pulse, port, holder) {
            (Some(pulse), Some(port), Some(holder))
                if target != from
                    && self.settings.port_of(from).is_some()
                    && holder.contains(from.0)
                    && !holder.contains(target.0) =>
            {
                Some((port, pulse))
            }
            _ => None,
        };
        if let Some((port, pulse)) = allowed {
            resets[port] = Some(now + pulse);
            self.fenced[port] = Some((from, (event.detail & 0xFFFF) as u16));
        } else {
            let refused = RemoteEvent {
                code: EventCode::FenceRefused,
                subject: target,
                detail: event.detail,
            };
            let _ = self.endpoint.send_event(from, refused);
        }
        Some(Note::Fence {
            by: from,
            host: target,
            done: allowed.is_some(),
        })
    }
}

/// Notes waiting for the caller, and how many did not fit.
#[derive(Debug)]
struct Notes {
    queue: Deque<Note, 4>,
    dropped: u32,
}

impl Notes {
    fn push(&mut self, note: Note) {
        if self.queue.push_back(note).is_err() {
            self.dropped = self.dropped.wrapping_add(1);
        }
    }
}

/// Everything but the frame readers, so a reader can hand its frames here.
#[derive(Debug)]
struct State {
    provisioned: Option<Provisioned>,
    /// Until when each port's reset output is asserted.
    resets: [Option<Instant>; PORTS],
    notes: Notes,
    relayed: [u32; PORTS],
    /// A provisioning that passed its checks, to apply once the frame
    /// reader returns. A line carries at most one per read in practice (a
    /// provision frame is longer than the firmware's reads); of two, the
    /// later wins.
    pending: Option<Pending>,
}

/// A checked provisioning, waiting to be applied.
#[derive(Debug)]
struct Pending {
    port: usize,
    sender: (NodeId, Incarnation, u64),
    settings: Settings,
    incarnation: Incarnation,
}

/// The dongle.
#[derive(Debug)]
pub struct Dongle {
    readers: [FrameReader<MAX_ENCODED_LEN>; PORTS],
    state: State,
}

impl Default for Dongle {
    fn default() -> Self {
        Self::new()
    }
}

impl Dongle {
    /// An unprovisioned dongle.
    #[must_use]
    pub const fn new() -> Dongle {
        Dongle {
            readers: [FrameReader::new(), FrameReader::new()],
            state: State {
                provisioned: None,
                resets: [None; PORTS],
                notes: Notes {
                    queue: Deque::new(),
                    dropped: 0,
                },
                relayed: [0; PORTS],
                pending: None,
            },
        }
    }

    /// Feeds bytes received on `port`. A frame for the host on the other
    /// port is passed to `relay` with that port, as it came (COBS bytes
    /// without the `0x00` delimiter, which the caller writes after it): it
    /// stays authenticated end to end between the hosts. A caller whose
    /// line is full drops it, as a slow line would.
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        port: usize,
        bytes: &[u8],
        mut relay: impl FnMut(usize, &[u8]),
    ) {
        let Some(reader) = self.readers.get_mut(port) else {
            return;
        };
        let state = &mut self.state;
        reader.push(bytes, |frame| match frame {
            Ok(frame) => state.handle_frame(now, port, frame, &mut relay),
            Err(_) => {
                if let Some((p, at)) = state.at(port) {
                    p.endpoint.handle_overflow(at);
                }
            }
        });
        self.state.apply_pending(now);
        self.state.drain_events(now);
    }

    /// Lets time pass: silent hosts, due heartbeats, reset pulses.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(p) = &mut self.state.provisioned {
            p.endpoint.handle_timeout(now);
        }
        self.state.drain_events(now);
        for (port, until) in self.state.resets.iter_mut().enumerate() {
            if until.is_some_and(|at| now >= at) {
                *until = None;
                // A fence asked for: confirmed now the pulse is over.
                if let Some(p) = &mut self.state.provisioned {
                    let host = p.settings.hosts.get(port).copied().flatten();
                    if let (Some((to, number)), Some(host)) =
                        (p.fenced.get_mut(port).and_then(Option::take), host)
                    {
                        let answer = RemoteEvent {
                            code: EventCode::FenceDone,
                            subject: host,
                            detail: u32::from(number),
                        };
                        let _ = p.endpoint.send_event(to, answer);
                    }
                }
            }
        }
    }

    /// The next frame to send: its port and its length in `buf`.
    #[must_use]
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8; MAX_ENCODED_LEN],
    ) -> Option<(usize, usize)> {
        let p = self.state.provisioned.as_mut()?;
        let transmit = p.endpoint.poll_transmit(now, buf)?;
        let port = p.settings.port_of(transmit.path.node)?;
        Some((port, transmit.len))
    }

    /// The next thing worth logging.
    #[must_use]
    pub fn poll_note(&mut self) -> Option<Note> {
        self.state.notes.queue.pop_front()
    }

    /// When [`Dongle::handle_timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let endpoint = self
            .state
            .provisioned
            .as_ref()
            .and_then(|p| p.endpoint.poll_timeout());
        self.state
            .resets
            .iter()
            .flatten()
            .copied()
            .chain(endpoint)
            .min()
    }

    /// Whether the reset output of the host on `port` is asserted now.
    #[must_use]
    pub fn reset_asserted(&self, port: usize) -> bool {
        self.state.resets.get(port).is_some_and(Option::is_some)
    }

    /// The endpoint, once provisioned: its peers' and paths' status.
    #[must_use]
    pub fn endpoint(&self) -> Option<&DongleEndpoint> {
        self.state.provisioned.as_ref().map(|p| &p.endpoint)
    }

    /// The host on `port`, once known.
    #[must_use]
    pub fn host(&self, port: usize) -> Option<NodeId> {
        let p = self.state.provisioned.as_ref()?;
        p.settings.hosts.get(port).copied().flatten()
    }

    /// Frames relayed out of `port` so far.
    #[must_use]
    pub fn relayed(&self, port: usize) -> u32 {
        self.state.relayed.get(port).copied().unwrap_or(0)
    }

    /// Notes lost because the caller did not drain them in time.
    #[must_use]
    pub fn notes_dropped(&self) -> u32 {
        self.state.notes.dropped
    }
}

impl State {
    /// The endpoint and the path to the host on `port`, once known.
    fn at(&mut self, port: usize) -> Option<(&mut Provisioned, PathRef)> {
        let p = self.provisioned.as_mut()?;
        let node = p.settings.hosts[port]?;
        Some((
            p,
            PathRef {
                node,
                path: PathId(0),
            },
        ))
    }

    fn handle_frame(
        &mut self,
        now: Instant,
        port: usize,
        frame: &mut [u8],
        relay: &mut impl FnMut(usize, &[u8]),
    ) {
        if wire::kind_of(frame) == Some(Kind::Provision) {
            if let Err(reason) = self.provision(port, frame) {
                self.notes.push(Note::Refused { port, reason });
            }
            return;
        }
        let other = 1 - port;
        let Some((p, at)) = self.at(port) else {
            // Unprovisioned, or nobody known on this port: nothing to say.
            return;
        };
        let beyond = p.settings.hosts[other];
        if beyond.is_some() && wire::route_of(frame).map(|(_, dst)| Some(dst)) == Some(beyond) {
            relay(other, frame);
            self.relayed[other] = self.relayed[other].wrapping_add(1);
            return;
        }
        // Rejections are counted by the endpoint.
        let _ = p.endpoint.handle_frame(now, at, frame);
    }

    /// Checks a provision frame; one that passes waits in `pending` until
    /// the frame reader is done, so the node is built at the shallowest
    /// point of the stack (see `Dongle::handle_bytes`).
    fn provision(&mut self, port: usize, frame: &mut [u8]) -> Result<(), Refusal> {
        let (header, body) = wire::decode_provision(frame).map_err(Refusal::Frame)?;
        let mut settings = Settings::from_frame(port, &header, &body);
        let sender = (header.src, header.src_incarnation, header.seq);
        let mut incarnation = Incarnation(body.incarnation.max(1));
        if let Some(p) = &self.provisioned {
            if !same_secret(&p.settings.secret, &settings.secret) {
                return Err(Refusal::OtherKey);
            }
            if let Some((host, run, seq)) = p.last[port] {
                if host == header.src && (header.src_incarnation, header.seq) <= (run, seq) {
                    return Err(Refusal::Replayed);
                }
            }
            for (at, (&serving, named)) in
                p.settings.hosts.iter().zip(&mut settings.hosts).enumerate()
            {
                match (serving, *named) {
                    (Some(serving), Some(named)) if serving != named => {
                        return Err(Refusal::Cabling {
                            port: at,
                            serving,
                            named,
                        });
                    }
                    // A host that does not name the other port's host
                    // leaves it.
                    (Some(_), None) => *named = serving,
                    _ => {}
                }
            }
            incarnation =
                incarnation.max(Incarnation(p.endpoint.incarnation().0.saturating_add(1)));
        }
        self.pending = Some(Pending {
            port,
            sender,
            settings,
            incarnation,
        });
        Ok(())
    }

    /// Applies a provisioning that passed its checks: the dongle becomes a
    /// node, or restarts as one with new settings. Never inlined, so the
    /// stack holds the provisioning only while it runs; the two ways'
    /// deeper parts are calls of their own, so they never stack up.
    #[inline(never)]
    fn apply_pending(&mut self, now: Instant) {
        // Lent from `pending`, not taken: taking it would copy it.
        let Some(pending) = &self.pending else {
            return;
        };
        let result = match &mut self.provisioned {
            Some(p) => {
                p.last[pending.port] = Some(pending.sender);
                if pending.settings == p.settings {
                    None
                } else {
                    Some(p.restart(now, pending))
                }
            }
            None => Some(Provisioned::first(&mut self.provisioned, now, pending)),
        };
        match result {
            Some(Ok(note)) => self.notes.push(note),
            Some(Err(reason)) => self.notes.push(Note::Refused {
                port: pending.port,
                reason,
            }),
            None => {}
        }
        self.pending = None;
    }

    /// Acts on what the endpoint saw: trips pulse the reset output and are
    /// reported to the other host, as are re-arms; vote and fence requests
    /// are answered. Never inlined, so its temporaries are not on the stack
    /// while a frame is verified (the deepest path).
    #[inline(never)]
    fn drain_events(&mut self, now: Instant) {
        let Some(p) = &mut self.provisioned else {
            return;
        };
        while p.endpoint.poll_message().is_some() {}
        while let Some(event) = p.endpoint.poll_event() {
            let (note, report) = match event {
                Event::NodeUp { node, .. } => (Note::HostUp { host: node }, None),
                Event::NodeDown { node } => (Note::HostDown { host: node }, None),
                Event::WatchdogTripped { node, silent_for } => {
                    if let (Some(pulse), Some(port)) =
                        (p.settings.reset_pulse, p.settings.port_of(node))
                    {
                        self.resets[port] = Some(now + pulse);
                    }
                    let detail = u32::try_from(silent_for.as_millis()).unwrap_or(u32::MAX);
                    (
                        Note::Tripped {
                            host: node,
                            silent_for,
                        },
                        Some((EventCode::WatchdogTripped, node, detail)),
                    )
                }
                Event::WatchdogRearmed { node } => (
                    Note::Rearmed { host: node },
                    Some((EventCode::WatchdogRearmed, node, 0)),
                ),
                Event::Remote { from, event } => {
                    if let Some(holder) = p.vote(now, from, &event) {
                        self.notes.push(Note::VoteHolder { holder });
                    }
                    if let Some(note) = p.fence(now, from, &event, &mut self.resets) {
                        self.notes.push(note);
                    }
                    continue;
                }
                _ => continue,
            };
            if let Some((code, subject, detail)) = report {
                for other in p.settings.hosts.into_iter().flatten() {
                    if other != subject {
                        // If the other host is unreachable too, there is
                        // nobody to tell.
                        let _ = p.endpoint.send_event(
                            other,
                            RemoteEvent {
                                code,
                                subject,
                                detail,
                            },
                        );
                    }
                }
            }
            self.notes.push(note);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: ClusterId = ClusterId(7);
    const DONGLE: NodeId = NodeId(100);
    const SECRET: [u8; DONGLE_SECRET_LEN] = [0x5A; DONGLE_SECRET_LEN];

    /// Feeds the dongle, on `port`, a provisioning from `host` naming
    /// `other` (0: no one) with a `watchdog_ms` watchdog.
    fn provision(dongle: &mut Dongle, port: usize, host: u16, other: u16, watchdog_ms: u32) {
        let header = Header {
            kind: Kind::Provision,
            path: PathId(0),
            cluster: CLUSTER,
            src: NodeId(host),
            dst: DONGLE,
            src_incarnation: Incarnation(1),
            dst_incarnation: Incarnation::UNKNOWN,
            seq: u64::from(watchdog_ms) + 1,
        };
        let body = Provision {
            incarnation: 1_000,
            other_host: NodeId(other),
            secret: &SECRET,
            interval_ms: 50,
            misses: 4,
            rise: 2,
            watchdog_ms,
            reset_pulse_ms: 200,
        };
        let mut out = [0u8; MAX_ENCODED_LEN];
        let len = encode_provision(&header, &body, &mut out).unwrap();
        dongle.handle_bytes(Instant::ZERO, port, &out[..len], |_, _| {});
    }

    #[test]
    fn new_settings_restart_the_node_in_place_under_the_key_in_force() {
        let mut dongle = Dongle::new();
        provision(&mut dongle, 0, 1, 0, 0);
        assert!(matches!(
            dongle.poll_note(),
            Some(Note::Provisioned {
                incarnation: Incarnation(1_000),
                ..
            })
        ));
        assert_eq!([dongle.host(0), dongle.host(1)], [Some(NodeId(1)), None]);

        // The other host names the first: both are served, by a new run.
        provision(&mut dongle, 1, 2, 1, 0);
        assert_eq!(
            dongle.poll_note(),
            Some(Note::Reprovisioned {
                port: 1,
                by: NodeId(2),
                incarnation: Incarnation(1_001),
            })
        );
        // A watchdog from the first: another run.
        provision(&mut dongle, 0, 1, 2, 600);
        assert_eq!(
            dongle.poll_note(),
            Some(Note::Reprovisioned {
                port: 0,
                by: NodeId(1),
                incarnation: Incarnation(1_002),
            })
        );
        assert_eq!(dongle.poll_note(), None);
        assert_eq!(
            [dongle.host(0), dongle.host(1)],
            [Some(NodeId(1)), Some(NodeId(2))]
        );
        let endpoint = dongle.endpoint().unwrap();
        assert!(endpoint.peers().eq([NodeId(1), NodeId(2)]));
        assert_eq!(endpoint.incarnation(), Incarnation(1_002));

        // What it sends each host is tagged with the secret it was given.
        let key = Key::new(&SECRET).unwrap();
        let mut buf = [0u8; MAX_ENCODED_LEN];
        let mut to = [false; PORTS];
        while let Some((port, len)) = dongle.poll_transmit(Instant::ZERO, &mut buf) {
            let (header, _) = wire::decode(&mut buf[..len - 1], &key, CLUSTER).unwrap();
            assert_eq!(header.src_incarnation, Incarnation(1_002));
            to[port] = true;
        }
        assert_eq!(to, [true; PORTS]);
    }
}
