//! Why a frame could not be decoded or encoded.

use core::fmt;

use crate::ids::ClusterId;

/// Why a received frame was rejected by the wire layer. Each variant is
/// counted separately (see [`crate::counters`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WireError {
    /// Longer than any valid frame; discarded unread.
    Oversize,
    /// Not valid COBS (corrupted framing).
    Framing,
    /// Shorter than header, tag and CRC.
    Truncated,
    /// CRC mismatch: corrupted in transit.
    BadCrc,
    /// A protocol version this build does not speak.
    UnknownVersion(u8),
    /// A frame of another cluster.
    WrongCluster(ClusterId),
    /// A message kind this build does not know (a newer peer).
    UnknownKind(u8),
    /// Authentication failed: a wrong key or a forged frame.
    BadTag,
    /// Authentic, but the body does not decode for its kind.
    Malformed,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Oversize => f.write_str("frame longer than the protocol maximum"),
            WireError::Framing => f.write_str("invalid COBS framing"),
            WireError::Truncated => f.write_str("frame too short"),
            WireError::BadCrc => f.write_str("CRC mismatch (corrupted in transit)"),
            WireError::UnknownVersion(v) => write!(f, "unknown protocol version {v}"),
            WireError::WrongCluster(c) => write!(f, "frame of another cluster ({c})"),
            WireError::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            WireError::BadTag => f.write_str("authentication failed (wrong key or forged)"),
            WireError::Malformed => f.write_str("authentic frame with a malformed body"),
        }
    }
}

impl core::error::Error for WireError {}

/// Why a frame could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EncodeError {
    /// A data payload longer than [`super::MAX_PAYLOAD`], or a name longer than
    /// [`super::MAX_NAME_LEN`].
    TooLarge,
    /// The output buffer is shorter than the encoded frame.
    BufferTooSmall,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLarge => f.write_str("message exceeds the protocol maximum"),
            EncodeError::BufferTooSmall => f.write_str("output buffer too small for the frame"),
        }
    }
}

impl core::error::Error for EncodeError {}
