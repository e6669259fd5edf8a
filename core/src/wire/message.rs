//! Message bodies, one struct per kind, postcard-encoded (see the spec in
//! [`crate::wire`]).

use serde::{Deserialize, Serialize};

use super::error::{EncodeError, WireError};
use super::header::Kind;
use crate::ids::NodeId;

/// Largest mailbox payload in one data frame.
pub const MAX_PAYLOAD: usize = 512;
/// Longest node name in a hello.
pub const MAX_NAME_LEN: usize = 32;

/// Capability bit: the node runs mailboxes for applications.
pub const CAP_MAILBOX: u32 = 1 << 0;
/// Capability bit: the node relays frames between its serial ports.
pub const CAP_RELAY: u32 = 1 << 1;
/// Capability bit: the node watches its hosts and reports trips.
pub const CAP_WATCHDOG: u32 = 1 << 2;

/// What sort of node a peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(from = "u8", into = "u8")]
pub enum NodeKind {
    /// A server running the host daemon.
    Host,
    /// A heartbeat dongle on a serial line.
    Dongle,
    /// A kind introduced after this build.
    Other(u8),
}

impl From<u8> for NodeKind {
    fn from(value: u8) -> Self {
        match value {
            1 => NodeKind::Host,
            2 => NodeKind::Dongle,
            other => NodeKind::Other(other),
        }
    }
}

impl From<NodeKind> for u8 {
    fn from(kind: NodeKind) -> u8 {
        match kind {
            NodeKind::Host => 1,
            NodeKind::Dongle => 2,
            NodeKind::Other(other) => other,
        }
    }
}

/// Liveness and round-trip timing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Heartbeat {
    /// When this frame was made, in µs on the sender's clock.
    pub sent_at: u64,
    /// The last `sent_at` received from the receiver on this path; 0 if none.
    pub echo: u64,
    /// How long, in µs, the sender held `echo` before sending this frame.
    pub echo_age: u32,
}

/// Introduction: who the sender is. Also proves the path alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Hello<'a> {
    /// The sender's name, at most [`MAX_NAME_LEN`] bytes of UTF-8.
    pub name: &'a str,
    /// Host or dongle.
    pub node_kind: NodeKind,
    /// `CAP_*` bits.
    pub capabilities: u32,
    /// Timing, as in a heartbeat.
    pub heartbeat: Heartbeat,
}

/// One mailbox message on the reliable channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Data<'a> {
    /// Channel sequence number, from 1.
    pub seq: u32,
    /// Every sequence before this one is settled at the sender (acknowledged,
    /// or given up when the receiver was declared down): the receiver skips
    /// any it has not seen.
    pub base: u32,
    /// The receiving application's mailbox.
    pub mailbox: u16,
    /// The message, at most [`MAX_PAYLOAD`] bytes.
    #[serde(borrow)]
    pub payload: &'a [u8],
}

/// Cumulative acknowledgement of the reliable channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Ack {
    /// Every sequence number up to and including this one was delivered.
    pub cumulative: u32,
}

/// What an event report says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EventCode {
    /// A watchdog saw its subject fall silent.
    WatchdogTripped,
    /// The subject of a tripped watchdog was heard again.
    WatchdogRearmed,
    /// A mailbox on the subject is full; `detail` is the mailbox.
    MailboxFull,
    /// A full mailbox on the subject has room again; `detail` is the mailbox.
    MailboxReady,
    /// A host asks the dongle for its witness vote (see
    /// `witness::request_event`).
    VoteRequest,
    /// The dongle grants its witness vote to the request in `detail`.
    VoteGranted,
    /// The dongle refuses its witness vote to the request in `detail`.
    VoteRefused,
    /// A host asks the dongle to reset the host `subject` (fencing);
    /// `detail` is the request's number.
    FenceRequest,
    /// The dongle held `subject`'s reset line for its pulse (request
    /// `detail`).
    FenceDone,
    /// The dongle refused to reset `subject` (request `detail`): the asker
    /// does not hold its witness vote without `subject`, the subject is not
    /// a host on its ports, or it has no reset pulse configured.
    FenceRefused,
    /// A code introduced after this build.
    Other(u16),
}

impl From<u16> for EventCode {
    fn from(value: u16) -> Self {
        match value {
            1 => EventCode::WatchdogTripped,
            2 => EventCode::WatchdogRearmed,
            3 => EventCode::MailboxFull,
            4 => EventCode::MailboxReady,
            5 => EventCode::VoteRequest,
            6 => EventCode::VoteGranted,
            7 => EventCode::VoteRefused,
            8 => EventCode::FenceRequest,
            9 => EventCode::FenceDone,
            10 => EventCode::FenceRefused,
            other => EventCode::Other(other),
        }
    }
}

impl From<EventCode> for u16 {
    fn from(code: EventCode) -> u16 {
        match code {
            EventCode::WatchdogTripped => 1,
            EventCode::WatchdogRearmed => 2,
            EventCode::MailboxFull => 3,
            EventCode::MailboxReady => 4,
            EventCode::VoteRequest => 5,
            EventCode::VoteGranted => 6,
            EventCode::VoteRefused => 7,
            EventCode::FenceRequest => 8,
            EventCode::FenceDone => 9,
            EventCode::FenceRefused => 10,
            EventCode::Other(other) => other,
        }
    }
}

/// An event report on the reliable channel, e.g. a dongle's watchdog trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EventReport {
    /// Channel sequence number, from 1.
    pub seq: u32,
    /// As in [`Data::base`].
    pub base: u32,
    /// What happened ([`EventCode`] as a number).
    pub code: u16,
    /// The node it happened to.
    pub subject: NodeId,
    /// Code-specific detail (for a trip: milliseconds of silence).
    pub detail: u32,
}

impl EventReport {
    /// The event code, decoded.
    #[must_use]
    pub fn event_code(&self) -> EventCode {
        EventCode::from(self.code)
    }
}

/// Bytes of the key a host gives a dongle.
pub const DONGLE_SECRET_LEN: usize = 32;

/// A host's provisioning of a dongle: who the dongle is, the key it shares
/// with its hosts, and its timings. The frame's tag is made with this very
/// key (see "Provisioning" in [`crate::wire`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Provision<'a> {
    /// The dongle's run from now on: larger than any it had (the host's
    /// clock in seconds), since a dongle keeps no state across a reset.
    pub incarnation: u64,
    /// The host on the dongle's other port; 0 if none.
    pub other_host: NodeId,
    /// The key of every frame between the dongle and its hosts: exactly
    /// [`DONGLE_SECRET_LEN`] bytes. (A byte string rather than an array: it
    /// decodes in a fraction of the code, which the dongle's flash notices.)
    #[serde(borrow)]
    pub secret: &'a [u8],
    /// Heartbeat interval of the dongle's paths, in ms.
    pub interval_ms: u32,
    /// Missed heartbeats before a path is down.
    pub misses: u32,
    /// Heartbeats heard in a row before a path is up.
    pub rise: u32,
    /// Silence from a host before its watchdog trips, in ms; 0: no watchdog.
    pub watchdog_ms: u32,
    /// How long a trip holds the host's reset output, in ms; 0: never.
    pub reset_pulse_ms: u32,
}

impl core::fmt::Debug for Provision<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Provision")
            .field("incarnation", &self.incarnation)
            .field("other_host", &self.other_host)
            .field("secret", &"..")
            .field("interval_ms", &self.interval_ms)
            .field("misses", &self.misses)
            .field("rise", &self.rise)
            .field("watchdog_ms", &self.watchdog_ms)
            .field("reset_pulse_ms", &self.reset_pulse_ms)
            .finish()
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Provision<'_> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "Provision {{ incarnation: {}, other_host: {}, interval_ms: {}, misses: {}, rise: {}, watchdog_ms: {}, reset_pulse_ms: {} }}",
            self.incarnation,
            self.other_host,
            self.interval_ms,
            self.misses,
            self.rise,
            self.watchdog_ms,
            self.reset_pulse_ms
        );
    }
}

/// A decoded frame body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Message<'a> {
    /// Kind 1.
    Hello(Hello<'a>),
    /// Kind 2.
    Heartbeat(Heartbeat),
    /// Kind 3.
    Data(Data<'a>),
    /// Kind 4.
    Ack(Ack),
    /// Kind 5.
    Event(EventReport),
    /// Kind 6.
    Provision(Provision<'a>),
}

impl<'a> Message<'a> {
    /// The kind number this body travels under.
    #[must_use]
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::Heartbeat(_) => Kind::Heartbeat,
            Message::Data(_) => Kind::Data,
            Message::Ack(_) => Kind::Ack,
            Message::Event(_) => Kind::Event,
            Message::Provision(_) => Kind::Provision,
        }
    }

    /// Encodes the body into `out`, returning its length.
    pub(crate) fn encode_body(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let too_large = match self {
            Message::Hello(h) => h.name.len() > MAX_NAME_LEN,
            Message::Data(d) => d.payload.len() > MAX_PAYLOAD,
            Message::Provision(p) => p.secret.len() != DONGLE_SECRET_LEN,
            _ => false,
        };
        if too_large {
            return Err(EncodeError::TooLarge);
        }
        let written = match self {
            Message::Hello(h) => postcard::to_slice(h, out),
            Message::Heartbeat(h) => postcard::to_slice(h, out),
            Message::Data(d) => postcard::to_slice(d, out),
            Message::Ack(a) => postcard::to_slice(a, out),
            Message::Event(e) => postcard::to_slice(e, out),
            Message::Provision(p) => postcard::to_slice(p, out),
        }
        .map_err(|_| EncodeError::BufferTooSmall)?;
        Ok(written.len())
    }

    /// Decodes a body of `kind`. Trailing bytes are ignored: later revisions
    /// of version 1 may append fields.
    pub(crate) fn decode_body(kind: Kind, body: &'a [u8]) -> Result<Message<'a>, WireError> {
        fn take<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, WireError> {
            postcard::take_from_bytes(body)
                .map(|(value, _rest)| value)
                .map_err(|_| WireError::Malformed)
        }
        let message = match kind {
            Kind::Hello => Message::Hello(take(body)?),
            Kind::Heartbeat => Message::Heartbeat(take(body)?),
            Kind::Data => Message::Data(take(body)?),
            Kind::Ack => Message::Ack(take(body)?),
            Kind::Event => Message::Event(take(body)?),
            Kind::Provision => Message::Provision(take(body)?),
        };
        match message {
            Message::Hello(h) if h.name.len() > MAX_NAME_LEN => Err(WireError::Malformed),
            Message::Data(d) if d.payload.len() > MAX_PAYLOAD => Err(WireError::Malformed),
            Message::Provision(p) if p.secret.len() != DONGLE_SECRET_LEN => {
                Err(WireError::Malformed)
            }
            _ => Ok(message),
        }
    }
}
