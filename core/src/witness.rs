//! The witness: a third party's one vote for clusters of two (or an even
//! number of) nodes, granted to one partition at a time. The dongle and
//! `heartline witness` share this state machine; both feed it the requests
//! they receive and the current instant, and send back its answer.
//!
//! Each node of the cluster asks for the vote regularly, naming its
//! partition (the nodes it sees up, itself included). The witness grants
//! it:
//! - to the partition that holds it, while that partition is alive (its
//!   members keep asking with the same view): *sticky*, so a node that
//!   returns on its own does not pull the resources back;
//! - to a partition that grew from the holder (every holder member is in
//!   it: nodes joined), asked for by a member of the holder (a newcomer's
//!   word alone is not enough: at a heal one side may see the other first);
//! - when the holder broke apart (its members now report smaller views),
//!   once every former member has reported its new side or fallen silent,
//!   to the side with more nodes, else the one with the lowest node id;
//! - when no partition holds it (never granted, or the holder's grant ran
//!   out: nobody of it asked for `lease + margin`), to the best of the
//!   partitions that asked lately, by the same rule.
//!
//! **Safety.** A node counts the witness's vote for its current view only,
//! and for at most `lease` after it sent the request the witness answered
//! (a grant is an echo: the witness heard the node then). The witness moves
//! its vote to an unrelated partition only once the holder's last grant is
//! `lease + margin` old, so no node still counts it; a broken holder's
//! sides have different views from the holder's, so the side not chosen
//! stops counting the vote as soon as it notices the break.
//!
//! Nodes are named by ids 1 to 64 ([`NodeSet`] is a bitmap). The witness
//! remembers the last request of up to `N` nodes (64 for `heartline
//! witness`; the dongle's two hosts on the dongle).
//!
//! **Over a dongle's serial line** the questions and answers are event
//! reports, the only messages its reliable channel carries: see
//! [`request_event`] and [`answer_event`].

use crate::endpoint::RemoteEvent;
use crate::ids::NodeId;
use crate::time::{Duration, Instant};
use crate::wire::EventCode;

/// A set of node ids 1 to 64.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NodeSet(pub u64);

impl NodeSet {
    /// The empty set.
    pub const EMPTY: NodeSet = NodeSet(0);

    /// The set of `ids` (ids outside 1 to 64 are left out: see
    /// [`NodeSet::fits`]).
    pub fn of(ids: impl IntoIterator<Item = u16>) -> NodeSet {
        let mut set = NodeSet::EMPTY;
        for id in ids {
            set.insert(id);
        }
        set
    }

    /// Whether `id` can be in a set.
    #[must_use]
    pub const fn fits(id: u16) -> bool {
        id >= 1 && id <= 64
    }

    /// Adds `id` (ignored if it does not fit).
    pub fn insert(&mut self, id: u16) {
        if Self::fits(id) {
            self.0 |= 1 << (id - 1);
        }
    }

    /// Whether `id` is in it.
    #[must_use]
    pub const fn contains(self, id: u16) -> bool {
        Self::fits(id) && self.0 & (1 << (id - 1)) != 0
    }

    /// How many nodes.
    #[must_use]
    pub const fn len(self) -> u32 {
        self.0.count_ones()
    }

    /// Whether it has none.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Its lowest id (`None` if empty).
    #[must_use]
    pub const fn lowest(self) -> Option<u16> {
        if self.0 == 0 {
            None
        } else {
            Some(self.0.trailing_zeros() as u16 + 1)
        }
    }

    /// Whether every node of `other` is in it.
    #[must_use]
    pub const fn includes(self, other: NodeSet) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether they share a node.
    #[must_use]
    pub const fn meets(self, other: NodeSet) -> bool {
        self.0 & other.0 != 0
    }

    /// The ids in it, lowest first.
    pub fn iter(self) -> impl Iterator<Item = u16> {
        (1..=64u16).filter(move |id| self.contains(*id))
    }

    /// Which of two partitions the rule prefers: more nodes, then the
    /// lowest node id.
    #[must_use]
    pub fn better_than(self, other: NodeSet) -> bool {
        (
            self.len(),
            core::cmp::Reverse(self.lowest().unwrap_or(u16::MAX)),
        ) > (
            other.len(),
            core::cmp::Reverse(other.lowest().unwrap_or(u16::MAX)),
        )
    }
}

/// The drift margin for `lease`: 2% of it (clocks whose rates differ by up
/// to 1% each way) plus 10 ms for scheduling.
#[must_use]
pub const fn default_margin(lease: Duration) -> Duration {
    Duration::from_micros(lease.as_micros() / 50 + 10_000)
}

/// The witness's timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct WitnessConfig {
    /// How long a node counts a grant: the cluster's quorum lease.
    pub lease: Duration,
    /// Added for the clocks' rates before the vote moves on.
    pub margin: Duration,
    /// How recent a node's request must be for its view to count, and how
    /// long a silent member of a broken holder is waited for.
    pub settle: Duration,
}

/// The witness's answer to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Answer {
    /// Whether the vote is the asker's partition's.
    pub granted: bool,
    /// The partition holding the vote now (empty: none).
    pub holder: NodeSet,
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    heard: Instant,
    view: NodeSet,
}

#[derive(Clone, Copy, Debug)]
struct Grant {
    members: NodeSet,
    last: Instant,
}

/// One cluster's witness, remembering up to `N` nodes' last requests (a
/// node beyond them takes the slot of the one heard longest ago).
#[derive(Clone, Debug)]
pub struct Witness<const N: usize = 64> {
    config: WitnessConfig,
    seen: [Option<(u16, Seen)>; N],
    grant: Option<Grant>,
}

impl<const N: usize> Witness<N> {
    /// A witness that has granted nothing.
    #[must_use]
    pub const fn new(config: WitnessConfig) -> Witness<N> {
        Witness {
            config,
            seen: [None; N],
            grant: None,
        }
    }

    /// Its timing.
    #[must_use]
    pub const fn config(&self) -> WitnessConfig {
        self.config
    }

    /// New timing (the grant and what it heard stay).
    pub fn set_config(&mut self, config: WitnessConfig) {
        self.config = config;
    }

    /// The partition holding the vote at `now`, if its grant is alive.
    #[must_use]
    pub fn holder(&self, now: Instant) -> Option<NodeSet> {
        self.grant
            .filter(|g| now < g.last + self.config.lease + self.config.margin)
            .map(|g| g.members)
    }

    /// Node `node`, seeing `view` up (itself included), asks for the vote
    /// at `now`.
    pub fn request(&mut self, now: Instant, node: u16, view: NodeSet) -> Answer {
        if !NodeSet::fits(node) || !view.contains(node) {
            return self.answer(now, false);
        }
        self.remember(node, Seen { heard: now, view });
        let granted = match self.holder(now) {
            // The holder, or a partition grown from it on the word of a
            // member of the holder (or once every member reported the
            // grown view): a node that sees the holder's nodes before they
            // see it, as at a heal, does not take the vote from under them.
            Some(holder) if view.includes(holder) => {
                holder.contains(node)
                    || holder
                        .iter()
                        .all(|m| self.recent(now, m).is_some_and(|v| v.includes(view)))
            }
            Some(holder) if holder.includes(view) => self.broke_toward(now, holder, view),
            Some(_) => false,
            None => self.best_recent(now) == Some(view),
        };
        if granted {
            self.grant = Some(Grant {
                members: view,
                last: now,
            });
        }
        self.answer(now, granted)
    }

    fn answer(&self, now: Instant, granted: bool) -> Answer {
        Answer {
            granted,
            holder: self.holder(now).unwrap_or(NodeSet::EMPTY),
        }
    }

    /// Keeps `node`'s request: in its slot, else a free one, else the one
    /// heard longest ago.
    fn remember(&mut self, node: u16, seen: Seen) {
        let slot = self
            .seen
            .iter()
            .position(|s| matches!(s, Some((n, _)) if *n == node))
            .or_else(|| self.seen.iter().position(Option::is_none))
            .or_else(|| {
                (0..N).min_by_key(|&i| self.seen[i].map_or(Instant::ZERO, |(_, s)| s.heard))
            });
        if let Some(slot) = slot.and_then(|i| self.seen.get_mut(i)) {
            *slot = Some((node, seen));
        }
    }

    fn recent(&self, now: Instant, node: u16) -> Option<NodeSet> {
        let (_, seen) = self.seen.iter().flatten().find(|(n, _)| *n == node)?;
        (now.saturating_since(seen.heard) < self.config.settle).then_some(seen.view)
    }

    /// The holder broke apart and `view`, a part of it, asks: granted once
    /// every other member has reported another side or fallen silent, if
    /// `view` is the best side.
    fn broke_toward(&self, now: Instant, holder: NodeSet, view: NodeSet) -> bool {
        for member in holder.iter().filter(|m| !view.contains(*m)) {
            match self.recent(now, member) {
                // Still in the holder, or overlapping this side: not yet.
                Some(theirs) if theirs == holder || theirs.meets(view) => return false,
                Some(theirs) if theirs.better_than(view) => return false,
                _ => {}
            }
        }
        true
    }

    /// The best view among the nodes heard lately.
    fn best_recent(&self, now: Instant) -> Option<NodeSet> {
        self.seen
            .iter()
            .flatten()
            .filter(|(_, s)| now.saturating_since(s.heard) < self.config.settle)
            .map(|(_, s)| s.view)
            .fold(None, |best: Option<NodeSet>, v| match best {
                Some(b) if !v.better_than(b) => Some(b),
                _ => Some(v),
            })
    }
}

/// Ids a vote over a dongle can name: 1 to 16 (a view is 16 bits).
pub const EVENT_IDS: u16 = 16;

/// A vote request as an event report to the dongle: `subject` carries the
/// asker's lease in units of 10 ms (the dongle is not told it otherwise),
/// `detail` the request's number (high 16 bits, echoed back) and its view
/// (low 16 bits, bit `n − 1` for node `n`). `None` if the view names a
/// node above [`EVENT_IDS`] or the lease is longer than 655 s.
#[must_use]
pub fn request_event(number: u16, view: NodeSet, lease: Duration) -> Option<RemoteEvent> {
    let bits = u16::try_from(view.0).ok()?;
    let lease = u16::try_from(lease.as_millis().div_ceil(10)).ok()?;
    Some(RemoteEvent {
        code: EventCode::VoteRequest,
        subject: NodeId(lease),
        detail: (u32::from(number) << 16) | u32::from(bits),
    })
}

/// A vote request read from an event report: its number, view and lease.
#[must_use]
pub fn parse_request(event: &RemoteEvent) -> Option<(u16, NodeSet, Duration)> {
    if event.code != EventCode::VoteRequest {
        return None;
    }
    let lease = Duration::from_millis(u64::from(event.subject.0) * 10);
    Some((
        (event.detail >> 16) as u16,
        NodeSet(u64::from(event.detail & 0xFFFF)),
        lease,
    ))
}

/// The answer to `request` as an event report: granted or refused, the
/// request's `detail` echoed, `subject` the holder's nodes (bits as in a
/// view).
#[must_use]
pub fn answer_event(request: &RemoteEvent, answer: Answer) -> RemoteEvent {
    RemoteEvent {
        code: if answer.granted {
            EventCode::VoteGranted
        } else {
            EventCode::VoteRefused
        },
        subject: NodeId((answer.holder.0 & 0xFFFF) as u16),
        detail: request.detail,
    }
}

/// An answer read from an event report: the request's number and view,
/// whether it was granted, and the holder.
#[must_use]
pub fn parse_answer(event: &RemoteEvent) -> Option<(u16, NodeSet, bool, NodeSet)> {
    let granted = match event.code {
        EventCode::VoteGranted => true,
        EventCode::VoteRefused => false,
        _ => return None,
    };
    Some((
        (event.detail >> 16) as u16,
        NodeSet(u64::from(event.detail & 0xFFFF)),
        granted,
        NodeSet(u64::from(event.subject.0)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(2_000);

    fn witness() -> Witness {
        Witness::<64>::new(WitnessConfig {
            lease: LEASE,
            margin: Duration::from_millis(50),
            settle: Duration::from_millis(1_000),
        })
    }

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    fn set(ids: &[u16]) -> NodeSet {
        NodeSet::of(ids.iter().copied())
    }

    #[test]
    fn node_sets_compare_by_size_then_lowest_id() {
        assert!(set(&[2, 3]).better_than(set(&[1])));
        assert!(set(&[1]).better_than(set(&[2])));
        assert!(!set(&[2]).better_than(set(&[1])));
        assert_eq!(set(&[3, 5]).lowest(), Some(3));
        assert!(set(&[1, 2]).includes(set(&[2])));
        assert!(!NodeSet::fits(0) && !NodeSet::fits(65));
        assert_eq!(set(&[0, 65, 7]), set(&[7]));
    }

    #[test]
    fn the_whole_cluster_gets_it_and_keeps_it() {
        let mut w = witness();
        assert!(w.request(ms(0), 1, set(&[1, 2])).granted);
        assert!(w.request(ms(100), 2, set(&[1, 2])).granted);
        assert_eq!(w.holder(ms(100)), Some(set(&[1, 2])));
    }

    #[test]
    fn a_split_goes_to_the_lowest_id_once_both_sides_spoke() {
        let mut w = witness();
        w.request(ms(0), 1, set(&[1, 2]));
        w.request(ms(0), 2, set(&[1, 2]));
        // Node 2 notices first; node 1 still reports the whole cluster.
        assert!(
            !w.request(ms(500), 2, set(&[2])).granted,
            "node 1 not heard from yet"
        );
        assert!(w.request(ms(510), 1, set(&[1])).granted, "lowest id");
        assert!(!w.request(ms(600), 2, set(&[2])).granted);
        assert_eq!(w.holder(ms(600)), Some(set(&[1])));
    }

    #[test]
    fn a_split_goes_to_the_bigger_side() {
        let mut w = witness();
        for n in 1..=4 {
            w.request(ms(0), n, set(&[1, 2, 3, 4]));
        }
        // Node 1 is cut off; 2, 3 and 4 still report the whole cluster.
        assert!(
            !w.request(ms(400), 1, set(&[1])).granted,
            "the others not heard from yet"
        );
        // The bigger side needs only the word of its own nodes: node 1, the
        // one member outside it, reports another side.
        assert!(w.request(ms(410), 2, set(&[2, 3, 4])).granted);
        assert!(w.request(ms(420), 3, set(&[2, 3, 4])).granted);
        assert!(!w.request(ms(450), 1, set(&[1])).granted);
    }

    #[test]
    fn a_dead_member_is_waited_for_only_until_it_falls_silent() {
        let mut w = witness();
        w.request(ms(0), 1, set(&[1, 2]));
        w.request(ms(0), 2, set(&[1, 2]));
        // Node 1 died at 0: node 2 alone.
        assert!(!w.request(ms(500), 2, set(&[2])).granted);
        assert!(
            w.request(ms(1_000), 2, set(&[2])).granted,
            "node 1 silent for settle"
        );
    }

    #[test]
    fn it_is_sticky_a_returning_node_does_not_take_it_back() {
        let mut w = witness();
        w.request(ms(0), 1, set(&[1, 2]));
        w.request(ms(0), 2, set(&[1, 2]));
        assert!(w.request(ms(1_000), 2, set(&[2])).granted);
        // Node 1 comes back on its own (its network to node 2 still cut),
        // and has the lower id: it stays node 2's while node 2 asks.
        for t in (1_100..10_000).step_by(100) {
            assert!(!w.request(ms(t), 1, set(&[1])).granted);
            assert!(w.request(ms(t + 50), 2, set(&[2])).granted);
        }
        // Rejoined: node 1 sees node 2 first; its word alone does not move
        // the vote, node 2's does, at once.
        assert!(!w.request(ms(10_000), 1, set(&[1, 2])).granted);
        assert!(w.request(ms(10_010), 2, set(&[1, 2])).granted);
        assert!(w.request(ms(10_020), 1, set(&[1, 2])).granted);
    }

    #[test]
    fn an_unrelated_partition_waits_for_the_holders_lease_and_margin() {
        let mut w = witness();
        assert!(w.request(ms(0), 2, set(&[2])).granted);
        // Node 2 falls silent after its last grant at 0.
        assert!(!w.request(ms(100), 1, set(&[1])).granted);
        assert!(
            !w.request(ms(2_049), 1, set(&[1])).granted,
            "2 s + 50 ms not yet over"
        );
        assert!(w.request(ms(2_050), 1, set(&[1])).granted);
    }

    #[test]
    fn a_request_that_leaves_out_its_own_node_is_refused() {
        let mut w = witness();
        assert!(!w.request(ms(0), 1, set(&[2])).granted);
        assert!(!w.request(ms(0), 70, set(&[1])).granted);
        assert_eq!(w.holder(ms(0)), None);
    }
}

#[cfg(test)]
mod event_tests {
    use super::*;

    #[test]
    fn votes_travel_as_event_reports_and_come_back_matched() {
        let view = NodeSet::of([1, 2]);
        let request = request_event(7, view, Duration::from_millis(4_605)).unwrap();
        assert_eq!(
            parse_request(&request),
            Some((7, view, Duration::from_millis(4_610)))
        );
        let answer = answer_event(
            &request,
            Answer {
                granted: true,
                holder: view,
            },
        );
        assert_eq!(parse_answer(&answer), Some((7, view, true, view)));
        assert_eq!(parse_request(&answer), None);
        assert_eq!(
            request_event(1, NodeSet::of([17]), Duration::from_secs(1)),
            None
        );
        assert_eq!(request_event(1, view, Duration::from_secs(700)), None);
    }

    #[test]
    fn two_slots_serve_two_hosts_and_a_third_takes_the_oldest() {
        let cfg = WitnessConfig {
            lease: Duration::from_secs(2),
            margin: default_margin(Duration::from_secs(2)),
            settle: Duration::from_secs(1),
        };
        assert_eq!(cfg.margin, Duration::from_millis(50));
        let mut w = Witness::<2>::new(cfg);
        let both = NodeSet::of([1, 2]);
        assert!(w.request(Instant::from_millis(0), 1, both).granted);
        assert!(w.request(Instant::from_millis(10), 2, both).granted);
        // The split goes to node 1 once node 2 spoke for its side.
        assert!(
            !w.request(Instant::from_millis(500), 2, NodeSet::of([2]))
                .granted
        );
        assert!(
            w.request(Instant::from_millis(510), 1, NodeSet::of([1]))
                .granted
        );
        // A stranger in a full table replaces the oldest and changes nothing.
        assert!(
            !w.request(Instant::from_millis(600), 3, NodeSet::of([3]))
                .granted
        );
        assert!(
            w.request(Instant::from_millis(700), 1, NodeSet::of([1]))
                .granted
        );
    }
}
