//! Identifiers carried in every frame: cluster, node, incarnation, path.

use core::fmt;
use serde::{Deserialize, Serialize};

/// Identifies one cluster; frames of another cluster are rejected before
/// authentication so that two clusters sharing a network stay apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClusterId(pub u32);

/// A node's id within its cluster. Zero is reserved and never valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NodeId(pub u16);

impl NodeId {
    /// Whether this id may name a node (it is not the reserved zero).
    #[must_use]
    pub const fn is_valid(self) -> bool {
        self.0 != 0
    }
}

/// One run of a node: it must be larger after every restart (the host takes
/// the larger of a persisted counter plus one and the wall clock in seconds;
/// the dongle gets one when provisioned). 64 bits, so that neither the
/// counter nor a clock set far ahead can bring it near its end. A node that
/// hears a peer name a run of it larger than its own (an earlier run's clock
/// was ahead and its record is lost) takes the next one at once (see
/// [`crate::Event::Reincarnated`]). Zero on the wire means "not known yet".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Incarnation(pub u64);

impl Incarnation {
    /// "Not known yet", as sent before a peer has been heard.
    pub const UNKNOWN: Incarnation = Incarnation(0);
}

/// One communication path between a pair of nodes, numbered from zero in the
/// same order at both ends of the pair (the config names it explicitly).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PathId(pub u8);

/// A path as the caller names it: which peer, which of its paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PathRef {
    /// The peer at the other end.
    pub node: NodeId,
    /// Which path to that peer.
    pub path: PathId,
}

/// The endpoint's handle on one message it accepted for sending; reported
/// back in `Delivered` or `SendFailed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MessageId(pub u32);

macro_rules! display_as_number {
    ($($t:ty => $prefix:literal),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    )*};
}
display_as_number!(ClusterId => "cluster ", NodeId => "node ", Incarnation => "incarnation ", PathId => "path ", MessageId => "message ");

impl fmt::Display for PathRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.node, self.path)
    }
}
