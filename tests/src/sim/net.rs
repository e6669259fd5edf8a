//! The simulated network: frames in flight on faulty links, delivered in
//! order of arrival time (ties broken by send order, so runs are
//! deterministic).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use heartline_core::Instant;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::scenario::LinkSpec;

/// Where a frame goes: from node, to node (indices), on which of their paths.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hop {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) path: u8,
}

/// A frame on its way.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) at: Instant,
    order: u64,
    pub(crate) hop: Hop,
    pub(crate) bytes: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    // Reversed: the heap yields the earliest frame first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

/// What happened to frames on the network, for the report.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetStats {
    /// Frames handed to the network.
    pub sent: u64,
    /// Frames dropped by random loss.
    pub lost: u64,
    /// Frames dropped because their link was cut.
    pub cut: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Most frames ever in flight at once.
    pub peak_in_flight: usize,
}

pub(crate) struct Net {
    queue: BinaryHeap<InFlight>,
    next_order: u64,
    rng: ChaCha8Rng,
    pub(crate) stats: NetStats,
}

impl Net {
    pub(crate) fn new(rng: ChaCha8Rng) -> Net {
        Net {
            queue: BinaryHeap::new(),
            next_order: 0,
            rng,
            stats: NetStats::default(),
        }
    }

    /// Puts a frame on `link`, applying its faults.
    pub(crate) fn send(
        &mut self,
        now: Instant,
        link: &LinkSpec,
        hop: Hop,
        bytes: &[u8],
        faults: bool,
    ) {
        self.stats.sent += 1;
        if faults && link.is_cut(now) {
            self.stats.cut += 1;
            return;
        }
        if faults && self.rng.random_bool(link.loss) {
            self.stats.lost += 1;
            return;
        }
        let copies = if faults && self.rng.random_bool(link.duplicate) {
            2
        } else {
            1
        };
        self.stats.duplicated += copies - 1;
        for _ in 0..copies {
            let jitter = if faults && link.jitter.as_micros() > 0 {
                self.rng.random_range(0..link.jitter.as_micros())
            } else {
                0
            };
            let at = Instant::from_micros(now.as_micros() + link.delay.as_micros() + jitter);
            self.queue.push(InFlight {
                at,
                order: self.next_order,
                hop,
                bytes: bytes.to_vec(),
            });
            self.next_order += 1;
        }
        self.stats.peak_in_flight = self.stats.peak_in_flight.max(self.queue.len());
    }

    /// When the next frame arrives.
    pub(crate) fn next_arrival(&self) -> Option<Instant> {
        self.queue.peek().map(|f| f.at)
    }

    /// The next frame arriving at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<InFlight> {
        if self.queue.peek()?.at <= now {
            self.queue.pop()
        } else {
            None
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.queue.len()
    }
}
