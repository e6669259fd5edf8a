//! The simulator's invariant checks: what the protocol promises, checked
//! against what the simulated network actually delivered.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;

use heartline_core::{Duration, Instant, MessageId};

use super::scenario::LinkSpec;

/// A broken promise, with what is needed to replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which simulator: `""` for the protocol's, `"--resources "` for the
    /// resource brains' (the flag `heartline-sim` replays it with).
    pub simulator: &'static str,
    /// The scenario's seed.
    pub seed: u64,
    /// Simulated time of the failed check.
    pub at: Instant,
    /// What went wrong.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}seed {} failed at t={}: {}\n  replay: cargo run --release -p heartline-tests --bin heartline-sim -- {}--seed {} --trace",
            if self.simulator.is_empty() {
                ""
            } else {
                "resource "
            },
            self.seed,
            Duration::from_micros(self.at.as_micros()),
            self.what,
            self.simulator,
            self.seed
        )
    }
}

impl std::error::Error for Violation {}

/// Bytes at the start of every simulated mailbox payload: sender, receiver,
/// per-pair counter.
pub(crate) const PAYLOAD_HEADER: usize = 12;

pub(crate) fn payload(src: usize, dst: usize, counter: u64, filler: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(PAYLOAD_HEADER + filler);
    p.extend_from_slice(&u16::try_from(src).unwrap_or(u16::MAX).to_le_bytes());
    p.extend_from_slice(&u16::try_from(dst).unwrap_or(u16::MAX).to_le_bytes());
    p.extend_from_slice(&counter.to_le_bytes());
    p.resize(PAYLOAD_HEADER + filler, 0xa5);
    p
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Pending,
    Delivered,
    Failed,
    /// The sender crashed before learning the outcome.
    Abandoned,
}

#[derive(Default)]
struct PairLedger {
    /// Outcome by counter.
    sent: HashMap<u64, Outcome>,
    received: HashMap<u64, ()>,
    last_received: Option<u64>,
}

/// Summary figures the oracle gathered.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// NodeDown events.
    pub node_downs: u64,
    /// Time from the last frame accepted from a node to its NodeDown.
    pub detection: Vec<Duration>,
    /// Messages accepted for sending.
    pub sent: u64,
    /// Messages received by the application.
    pub received: u64,
    /// Messages reported delivered to the sender.
    pub delivered: u64,
    /// Messages reported failed.
    pub failed: u64,
}

pub(crate) struct Oracle {
    seed: u64,
    nodes: usize,
    /// `[observer][subject][path]`: when a frame was last accepted.
    last_accepted: Vec<Vec<Vec<Option<Instant>>>>,
    /// `[observer][subject]`: the latest instant by which the observer must
    /// have declared the subject down if nothing more arrives. While it is
    /// `Some`, one entry for the pair waits in `deadlines`, at this bound or
    /// earlier.
    must_be_down_by: Vec<Vec<Option<Instant>>>,
    deadlines: BinaryHeap<Reverse<(Instant, usize, usize)>>,
    ledger: HashMap<(usize, usize), PairLedger>,
    ids: HashMap<(usize, u64, MessageId), (usize, u64)>,
    pub(crate) tally: Tally,
}

impl Oracle {
    pub(crate) fn new(seed: u64, nodes: usize) -> Oracle {
        Oracle {
            seed,
            nodes,
            last_accepted: vec![vec![Vec::new(); nodes]; nodes],
            must_be_down_by: vec![vec![None; nodes]; nodes],
            deadlines: BinaryHeap::new(),
            ledger: HashMap::new(),
            ids: HashMap::new(),
            tally: Tally::default(),
        }
    }

    fn violation(&self, at: Instant, what: String) -> Violation {
        Violation {
            simulator: "",
            seed: self.seed,
            at,
            what,
        }
    }

    /// `observer` accepted a frame from `subject` on `path` at `now`.
    pub(crate) fn accepted(
        &mut self,
        observer: usize,
        subject: usize,
        path: u8,
        now: Instant,
        link: &LinkSpec,
    ) {
        let slots = &mut self.last_accepted[observer][subject];
        let index = usize::from(path);
        if slots.len() <= index {
            slots.resize(index + 1, None);
        }
        slots[index] = Some(now);
        let bound = now + link.config.interval * (link.config.misses + 1);
        let slot = &mut self.must_be_down_by[observer][subject];
        match *slot {
            // A check is already scheduled; it reschedules itself when it
            // finds the bound has moved.
            Some(current) if bound <= current => {}
            Some(_) => *slot = Some(bound),
            None => {
                *slot = Some(bound);
                self.deadlines.push(Reverse((bound, observer, subject)));
            }
        }
    }

    /// `node` crashed: what it knew is gone, and its unsettled messages
    /// will never be settled.
    pub(crate) fn crashed(&mut self, node: usize, incarnation: u64) {
        for subject in 0..self.nodes {
            self.last_accepted[node][subject].clear();
            self.must_be_down_by[node][subject] = None;
        }
        let ids = &self.ids;
        for ((src, inc, _), (dst, counter)) in ids {
            if *src == node && *inc == incarnation {
                if let Some(o) = self
                    .ledger
                    .get_mut(&(*src, *dst))
                    .and_then(|l| l.sent.get_mut(counter))
                {
                    if *o == Outcome::Pending {
                        *o = Outcome::Abandoned;
                    }
                }
            }
        }
    }

    /// `observer` declared `subject` down at `now`: no path may have
    /// delivered within its `interval × misses`.
    pub(crate) fn node_down(
        &mut self,
        observer: usize,
        subject: usize,
        now: Instant,
        links: &[LinkSpec],
    ) -> Result<(), Violation> {
        self.tally.node_downs += 1;
        let heard = &self.last_accepted[observer][subject];
        for (index, last) in heard.iter().enumerate() {
            let (Some(last), Some(link)) = (last, links.get(index)) else {
                continue;
            };
            if now.saturating_since(*last) < link.config.down_after() {
                return Err(self.violation(
                    now,
                    format!(
                        "node {} declared node {} down, but path {index} delivered {} ago (down after {})",
                        observer + 1,
                        subject + 1,
                        now.saturating_since(*last),
                        link.config.down_after()
                    ),
                ));
            }
        }
        if let Some(last) = heard.iter().flatten().max() {
            self.tally.detection.push(now.saturating_since(*last));
        }
        Ok(())
    }

    /// After every step: no observer may still think a silent subject is up
    /// past `interval × (misses + 1)` from the last frame.
    pub(crate) fn check_detection(
        &mut self,
        now: Instant,
        is_up: impl Fn(usize, usize) -> bool,
    ) -> Result<(), Violation> {
        while let Some(&Reverse((bound, observer, subject))) = self.deadlines.peek() {
            if bound >= now {
                break;
            }
            self.deadlines.pop();
            match self.must_be_down_by[observer][subject] {
                None => continue,
                Some(current) if current > bound => {
                    self.deadlines.push(Reverse((current, observer, subject)));
                    continue;
                }
                Some(_) => self.must_be_down_by[observer][subject] = None,
            }
            if is_up(observer, subject) {
                return Err(self.violation(
                    now,
                    format!(
                        "node {} still sees node {} up, though nothing has arrived since {} (bound passed at {})",
                        observer + 1,
                        subject + 1,
                        Duration::from_micros(self.last_accepted[observer][subject].iter().flatten().max().map_or(0, |t| t.as_micros())),
                        Duration::from_micros(bound.as_micros())
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn sent(
        &mut self,
        src: usize,
        incarnation: u64,
        id: MessageId,
        dst: usize,
        counter: u64,
    ) {
        self.tally.sent += 1;
        self.ids.insert((src, incarnation, id), (dst, counter));
        self.ledger
            .entry((src, dst))
            .or_default()
            .sent
            .insert(counter, Outcome::Pending);
    }

    /// `dst` received `bytes` from `from`: it must be the next message of
    /// that pair after the last received, never a duplicate or a step back.
    pub(crate) fn received(
        &mut self,
        now: Instant,
        dst: usize,
        from: usize,
        bytes: &[u8],
    ) -> Result<(), Violation> {
        self.tally.received += 1;
        if bytes.len() < PAYLOAD_HEADER {
            return Err(self.violation(
                now,
                format!("node {} received a truncated message", dst + 1),
            ));
        }
        let src = usize::from(u16::from_le_bytes([bytes[0], bytes[1]]));
        let to = usize::from(u16::from_le_bytes([bytes[2], bytes[3]]));
        let counter = u64::from_le_bytes(bytes[4..12].try_into().unwrap_or_default());
        if (src, to) != (from, dst) {
            return Err(self.violation(
                now,
                format!(
                    "node {} received a message meant for {} from {}",
                    dst + 1,
                    to + 1,
                    src + 1
                ),
            ));
        }
        let seed = self.seed;
        let fail = |what: String| {
            Err(Violation {
                simulator: "",
                seed,
                at: now,
                what,
            })
        };
        let ledger = self.ledger.entry((src, dst)).or_default();
        if !ledger.sent.contains_key(&counter) {
            return fail(format!(
                "node {} received message #{counter} that {} never sent",
                dst + 1,
                src + 1
            ));
        }
        if let Some(last) = ledger.last_received.filter(|last| counter <= *last) {
            return fail(format!(
                "node {} received message #{counter} from {} after #{last}: duplicate or out of order",
                dst + 1,
                src + 1
            ));
        }
        ledger.last_received = Some(counter);
        ledger.received.insert(counter, ());
        Ok(())
    }

    /// The sender was told `id` was delivered: it must have been received.
    pub(crate) fn delivered(
        &mut self,
        now: Instant,
        src: usize,
        incarnation: u64,
        id: MessageId,
    ) -> Result<(), Violation> {
        self.tally.delivered += 1;
        let Some(&(dst, counter)) = self.ids.get(&(src, incarnation, id)) else {
            return Err(self.violation(
                now,
                format!("node {} told of delivery of unknown {id}", src + 1),
            ));
        };
        let seed = self.seed;
        let ledger = self.ledger.entry((src, dst)).or_default();
        if !ledger.received.contains_key(&counter) {
            let what = format!(
                "node {} told #{counter} was delivered to {}, which never received it",
                src + 1,
                dst + 1
            );
            return Err(Violation {
                simulator: "",
                seed,
                at: now,
                what,
            });
        }
        ledger.sent.insert(counter, Outcome::Delivered);
        Ok(())
    }

    /// `node` took the incarnation `new` in place of `old`: its messages
    /// not yet settled are its new run's now (the core keeps the ones it
    /// never sent, and fails the others).
    pub(crate) fn renamed(&mut self, node: usize, old: u64, new: u64) {
        let moved: Vec<_> = self
            .ids
            .iter()
            .filter(|((src, inc, _), _)| *src == node && *inc == old)
            .map(|(k, v)| (*k, *v))
            .collect();
        for ((src, _, id), value) in moved {
            self.ids.remove(&(src, old, id));
            self.ids.insert((src, new, id), value);
        }
    }

    pub(crate) fn failed(&mut self, src: usize, incarnation: u64, id: MessageId) {
        self.tally.failed += 1;
        if let Some(&(dst, counter)) = self.ids.get(&(src, incarnation, id)) {
            self.ledger
                .entry((src, dst))
                .or_default()
                .sent
                .insert(counter, Outcome::Failed);
        }
    }

    /// At the end, after healing: every message of a live sender is settled.
    pub(crate) fn check_settled(&self, now: Instant) -> Result<(), Violation> {
        for ((src, dst), ledger) in &self.ledger {
            if let Some(counter) = ledger
                .sent
                .iter()
                .find(|(_, o)| **o == Outcome::Pending)
                .map(|(c, _)| c)
            {
                return Err(self.violation(
                    now,
                    format!(
                        "message #{counter} from node {} to {} never settled",
                        src + 1,
                        dst + 1
                    ),
                ));
            }
        }
        Ok(())
    }
}
