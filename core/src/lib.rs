//! heartline-core: the protocol at the heart of heartline.
//!
//! One crate, three homes: the same code runs on the heartbeat dongle (a
//! Cortex-M3 with no heap), inside the host daemon, and inside a deterministic
//! simulator. It is sans-IO: the caller feeds it received bytes and the
//! current [`Instant`], and drains frames to send, events, and the instant it
//! next needs to be woken. It has no clock, no threads and no allocator;
//! every capacity is a const generic.
//!
//! - [`wire`]: the frame format (its `//!` doc is the specification),
//!   authentication and stream framing.
//! - [`path`]: one communication path's heartbeat and failure state machine.
//! - [`peer`]: membership: a node is down only when every path to it is down.
//! - [`channel`]: reliable, ordered, exactly-once mailbox delivery per peer.
//! - [`replay`]: the per-path replay window.
//! - [`watchdog`]: the dongle's watch over its hosts.
//! - [`endpoint`]: the [`Endpoint`] tying them together; start here.
//! - [`dongle`]: the heartbeat dongle's provisioning, relay and watchdog
//!   roles on top of an endpoint.
//! - [`witness`]: a third party's one vote, granted to one partition at a
//!   time (the dongle's and `heartline witness`'s).
//!
//! Features: `std` (off by default) trades 16 KiB of CRC tables for speed on
//! hosts and changes no behaviour; `defmt` derives `defmt::Format` on the
//! public types for the dongle's logs.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod channel;
pub mod counters;
pub mod dongle;
pub mod endpoint;
pub mod ids;
pub mod path;
pub mod peer;
pub mod replay;
pub mod rtt;
pub mod time;
pub mod watchdog;
pub mod wire;
pub mod witness;

pub use counters::Counters;
pub use endpoint::{
    ConfigError, Endpoint, EndpointConfig, Event, FailReason, PathStatus, PeerStatus, Received,
    RemoteEvent, RxError, SendError, Transmit,
};
pub use ids::{ClusterId, Incarnation, MessageId, NodeId, PathId, PathRef};
pub use path::{PathConfig, PathConfigError, PathState};
pub use peer::{NodeState, PeerConfig};
pub use time::{Duration, Instant};
pub use watchdog::{Watchdog, WatchdogEvent, WatchdogState};
