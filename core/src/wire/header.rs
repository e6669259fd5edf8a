//! The fixed 36-byte frame header: parsing and emitting (see the spec in
//! [`crate::wire`]).

use crate::ids::{ClusterId, Incarnation, NodeId, PathId};

/// The protocol version this crate speaks.
pub const VERSION: u8 = 2;
/// Bytes in the fixed header.
pub const HEADER_LEN: usize = 36;
/// Bytes in the trailing CRC-32.
pub const CRC_LEN: usize = 4;

/// The message kinds of version 2 (the same as version 1's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Kind {
    /// Introduction: who the sender is; also a heartbeat.
    Hello = 1,
    /// Liveness and round-trip timing.
    Heartbeat = 2,
    /// A mailbox message on the reliable channel.
    Data = 3,
    /// Cumulative acknowledgement of the reliable channel.
    Ack = 4,
    /// An event report (e.g. a watchdog trip) on the reliable channel.
    Event = 5,
    /// A host hands a dongle its settings and key.
    Provision = 6,
}

impl Kind {
    /// The kind with this number, if this version knows it.
    #[must_use]
    pub const fn from_u8(value: u8) -> Option<Kind> {
        Some(match value {
            1 => Kind::Hello,
            2 => Kind::Heartbeat,
            3 => Kind::Data,
            4 => Kind::Ack,
            5 => Kind::Event,
            6 => Kind::Provision,
            _ => return None,
        })
    }
}

/// The decoded fixed header of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// What the body is.
    pub kind: Kind,
    /// The path the frame was sent on.
    pub path: PathId,
    /// The sender's cluster.
    pub cluster: ClusterId,
    /// The sender.
    pub src: NodeId,
    /// The intended receiver.
    pub dst: NodeId,
    /// The sender's current run.
    pub src_incarnation: Incarnation,
    /// The receiver's run as the sender last heard it.
    pub dst_incarnation: Incarnation,
    /// Per (sender run, path) frame sequence, from 1.
    pub seq: u64,
}

/// Source and destination of an encoded frame (COBS bytes without the
/// delimiter), read without any check: for a relay that forwards frames it
/// cannot authenticate, and for a serial line that carries paths to several
/// nodes and must tell them apart.
#[must_use]
pub fn route_of(encoded: &[u8]) -> Option<(NodeId, NodeId)> {
    let raw = raw_prefix::<12>(encoded)?;
    Some((NodeId(le16(&raw, 8)), NodeId(le16(&raw, 10))))
}

/// The kind of an encoded frame (COBS bytes without the delimiter), read
/// without any check; `None` for a kind this build does not know.
#[must_use]
pub fn kind_of(encoded: &[u8]) -> Option<Kind> {
    Kind::from_u8(raw_prefix::<2>(encoded)?[1])
}

/// The first `N` raw bytes of an encoded frame, COBS-decoded without
/// touching the rest, so peeking at a header needs no frame-sized buffer.
fn raw_prefix<const N: usize>(encoded: &[u8]) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    let mut filled = 0;
    let mut at = 0;
    while filled < N {
        let code = usize::from(*encoded.get(at)?);
        if code == 0 {
            return None;
        }
        for &byte in encoded.get(at + 1..at + code)? {
            if filled == N {
                return Some(out);
            }
            out[filled] = byte;
            filled += 1;
        }
        at += code;
        // Every block but a full one (code 0xFF) and the last stands for a
        // zero byte after its run.
        if code < 0xFF && filled < N && at < encoded.len() {
            filled += 1;
        } else if at >= encoded.len() && filled < N {
            return None;
        }
    }
    Some(out)
}

/// Header fields read without any check, for a relay that forwards frames it
/// cannot authenticate. `bytes` is a raw (COBS-decoded) frame.
#[must_use]
pub fn peek_route(bytes: &[u8]) -> Option<(NodeId, NodeId)> {
    if bytes.len() < HEADER_LEN {
        return None;
    }
    Some((NodeId(le16(bytes, 8)), NodeId(le16(bytes, 10))))
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub(crate) fn emit(&self, out: &mut [u8; HEADER_LEN]) {
        out[0] = VERSION;
        out[1] = self.kind as u8;
        out[2] = self.path.0;
        out[3] = 0;
        out[4..8].copy_from_slice(&self.cluster.0.to_le_bytes());
        out[8..10].copy_from_slice(&self.src.0.to_le_bytes());
        out[10..12].copy_from_slice(&self.dst.0.to_le_bytes());
        out[12..20].copy_from_slice(&self.src_incarnation.0.to_le_bytes());
        out[20..28].copy_from_slice(&self.dst_incarnation.0.to_le_bytes());
        out[28..36].copy_from_slice(&self.seq.to_le_bytes());
    }

    /// Reads a header whose version, cluster and kind have been checked.
    pub(crate) fn parse(bytes: &[u8; HEADER_LEN], kind: Kind) -> Header {
        Header {
            kind,
            path: PathId(bytes[2]),
            cluster: ClusterId(le32(bytes, 4)),
            src: NodeId(le16(bytes, 8)),
            dst: NodeId(le16(bytes, 10)),
            src_incarnation: Incarnation(le64(bytes, 12)),
            dst_incarnation: Incarnation(le64(bytes, 20)),
            seq: le64(bytes, 28),
        }
    }
}

pub(crate) fn le16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

pub(crate) fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

pub(crate) fn le64(bytes: &[u8], at: usize) -> u64 {
    u64::from(le32(bytes, at)) | (u64::from(le32(bytes, at + 4)) << 32)
}
