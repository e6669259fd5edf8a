//! Counters of frames in and out and of every kind of rejected frame, kept
//! per path and for the whole endpoint, so an operator can see which path is
//! noisy, misconfigured or under attack.

use crate::endpoint::RxError;
use crate::wire::WireError;

/// Frame and error counts. Each rejection reason has its own counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(missing_docs)] // each field is named for the error it counts
pub struct Counters {
    pub frames_in: u64,
    pub frames_out: u64,
    pub oversize: u32,
    pub framing: u32,
    pub truncated: u32,
    pub bad_crc: u32,
    pub unknown_version: u32,
    pub wrong_cluster: u32,
    pub unknown_kind: u32,
    pub bad_tag: u32,
    pub malformed: u32,
    pub unknown_path: u32,
    pub wrong_destination: u32,
    pub unexpected_sender: u32,
    pub path_mismatch: u32,
    pub replayed: u32,
    pub stale_incarnation: u32,
    /// Authentic frames for an earlier run of this node: still proof of
    /// life, but their channel content is dropped (normal after a restart).
    pub stale_destination: u32,
}

impl Counters {
    /// Counts one rejected frame.
    pub(crate) fn record(&mut self, error: &RxError) {
        let counter = match error {
            RxError::Wire(wire) => match wire {
                WireError::Oversize => &mut self.oversize,
                WireError::Framing => &mut self.framing,
                WireError::Truncated => &mut self.truncated,
                WireError::BadCrc => &mut self.bad_crc,
                WireError::UnknownVersion(_) => &mut self.unknown_version,
                WireError::WrongCluster(_) => &mut self.wrong_cluster,
                WireError::UnknownKind(_) => &mut self.unknown_kind,
                WireError::BadTag => &mut self.bad_tag,
                WireError::Malformed => &mut self.malformed,
            },
            RxError::UnknownPath(_) => &mut self.unknown_path,
            RxError::WrongDestination(_) => &mut self.wrong_destination,
            RxError::UnexpectedSender(_) => &mut self.unexpected_sender,
            RxError::PathMismatch { .. } => &mut self.path_mismatch,
            RxError::Replayed => &mut self.replayed,
            RxError::StaleIncarnation(_) => &mut self.stale_incarnation,
        };
        *counter = counter.saturating_add(1);
    }

    /// Every rejection counter with its name, in a fixed order.
    #[must_use]
    pub fn by_reason(&self) -> [(&'static str, u32); 16] {
        [
            ("oversize", self.oversize),
            ("framing", self.framing),
            ("truncated", self.truncated),
            ("bad_crc", self.bad_crc),
            ("unknown_version", self.unknown_version),
            ("wrong_cluster", self.wrong_cluster),
            ("unknown_kind", self.unknown_kind),
            ("bad_tag", self.bad_tag),
            ("malformed", self.malformed),
            ("unknown_path", self.unknown_path),
            ("wrong_destination", self.wrong_destination),
            ("unexpected_sender", self.unexpected_sender),
            ("path_mismatch", self.path_mismatch),
            ("replayed", self.replayed),
            ("stale_incarnation", self.stale_incarnation),
            ("stale_destination", self.stale_destination),
        ]
    }

    /// All rejected frames, whatever the reason.
    #[must_use]
    pub fn rejected(&self) -> u64 {
        self.by_reason().iter().map(|&(_, n)| u64::from(n)).sum()
    }
}
