//! What this node knows of one peer: its paths, whether it is alive, which
//! run of it we are talking to, and the reliable channel to it.
//!
//! Membership rule: a peer comes up when one of its paths is up, stays up
//! while any path has delivered anything within its `interval × misses`
//! (even a path still rising), and is declared down only when every path has
//! fallen silent. A frame carrying a larger
//! incarnation than the one we knew means the peer restarted, whether or not
//! any path noticed it missing.

use heapless::{String, Vec};

use crate::channel::Channel;
use crate::ids::{Incarnation, NodeId, PathId};
use crate::path::Path;
use crate::time::Duration;
use crate::watchdog::Watchdog;
use crate::wire::{Key, MAX_NAME_LEN, NodeKind};

/// Whether a peer is alive, as far as this node can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NodeState {
    /// Never up since this endpoint started.
    Unknown,
    /// At least one path is up.
    Up,
    /// Was up; every path is now down.
    Down,
}

/// Per-peer settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PeerConfig {
    /// The peer's node id.
    pub node: NodeId,
    /// Messages in flight at once on the reliable channel (at most the queue
    /// capacity).
    pub window: u16,
    /// Trip a watchdog after this much silence from the peer (dongles set
    /// this for their hosts).
    pub watchdog: Option<Duration>,
}

impl PeerConfig {
    /// A peer with the default window of 16 and no watchdog.
    #[must_use]
    pub const fn new(node: NodeId) -> Self {
        PeerConfig {
            node,
            window: 16,
            watchdog: None,
        }
    }
}

/// What a peer told us in its hello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PeerInfo {
    pub(crate) name: String<MAX_NAME_LEN>,
    pub(crate) kind: NodeKind,
    pub(crate) capabilities: u32,
}

/// A change in a peer's membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Membership {
    Up,
    Down,
}

#[derive(Debug)]
pub(crate) struct Peer<const PATHS: usize, const QUEUE: usize, const PAYLOAD: usize> {
    pub(crate) config: PeerConfig,
    pub(crate) paths: Vec<Path, PATHS>,
    pub(crate) state: NodeState,
    pub(crate) incarnation: Option<Incarnation>,
    /// The peer's last frame named our current incarnation.
    pub(crate) knows_us: bool,
    pub(crate) info: Option<PeerInfo>,
    pub(crate) channel: Channel<QUEUE, PAYLOAD>,
    pub(crate) watchdog: Option<Watchdog>,
    /// The key shared with this peer alone, if not the cluster key.
    pub(crate) key: Option<Key>,
}

impl<const PATHS: usize, const QUEUE: usize, const PAYLOAD: usize> Peer<PATHS, QUEUE, PAYLOAD> {
    pub(crate) fn new(config: PeerConfig, paths: Vec<Path, PATHS>, key: Option<Key>) -> Self {
        Peer {
            config,
            paths,
            state: NodeState::Unknown,
            incarnation: None,
            knows_us: false,
            info: None,
            channel: Channel::new(usize::from(config.window)),
            watchdog: config.watchdog.map(Watchdog::new),
            key,
        }
    }

    pub(crate) fn node(&self) -> NodeId {
        self.config.node
    }

    /// Re-derives membership from the paths after any of them changed.
    pub(crate) fn update_membership(&mut self) -> Option<Membership> {
        let alive = self.paths.iter().any(Path::is_audible);
        let any_up = self.paths.iter().any(Path::is_up);
        match self.state {
            NodeState::Up if !alive => {
                self.state = NodeState::Down;
                Some(Membership::Down)
            }
            NodeState::Unknown | NodeState::Down if any_up => {
                self.state = NodeState::Up;
                Some(Membership::Up)
            }
            _ => None,
        }
    }

    /// The up path to carry mailbox traffic: lowest priority number, then
    /// lowest smoothed round trip.
    pub(crate) fn best_path(&self) -> Option<PathId> {
        self.path_for_round(0)
    }

    /// The up path for send round `round` (0: first sends; each timeout
    /// without progress starts the next): the best up path first, then
    /// each other up path in order of preference, and round again. A path
    /// that died silently is still "up" until interval × misses; a
    /// retransmission on another path gets through after one timeout
    /// instead of waiting for that.
    #[inline(never)]
    pub(crate) fn path_for_round(&self, round: u32) -> Option<PathId> {
        let up = self.paths.iter().filter(|p| p.is_up()).count();
        if up == 0 {
            return None;
        }
        // Rank (priority, round trip, index): the next up path after
        // `chosen` in order of preference, `round % up` times over.
        let mut chosen: Option<(u8, Duration, usize)> = None;
        for _ in 0..=(round as usize % up) {
            let mut next = None;
            for (index, p) in self.paths.iter().enumerate() {
                let rank = (
                    p.config.priority,
                    p.rtt.smoothed().unwrap_or(Duration::MAX),
                    index,
                );
                let later = chosen.is_none_or(|c| rank > c);
                if p.is_up() && later && next.is_none_or(|n| rank < n) {
                    next = Some(rank);
                }
            }
            chosen = next;
        }
        chosen.and_then(|(_, _, index)| u8::try_from(index).ok().map(PathId))
    }
}
