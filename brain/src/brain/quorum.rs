//! Quorum and leases: whether this node's partition may run hierarchies,
//! and when a node that was lost is known to run nothing.
//!
//! **Votes.** Each node has votes (1 unless configured); a partition is
//! quorate when the nodes in it hold more than half of the cluster's
//! expected votes. A partition without quorum starts nothing, orders
//! nothing and changes no configuration; with `no_quorum = stop` (the
//! default) every node in it stops its hierarchies at once.
//!
//! **The lease.** Quorum is held under a lease renewed by what the node
//! hears back: the core tells it, for each peer, the latest heartbeat of
//! its own that the peer echoed ([`super::Input::Heard`]), which proves the
//! peer heard it at or after that instant. The lease runs from the latest
//! instant at which the peers that echoed, with this node, held a majority
//! of the votes, for `lease`. A node whose lease runs out has no quorum,
//! whatever its membership says (a one-way cut: it hears the others, they
//! do not hear it). While anything may run here, [`super::Brain::fence_deadline`]
//! is the lease's end: the daemon keeps its watchdog from firing only
//! until then, so by the end of its lease a node has stopped what it ran,
//! or has been reset.
//!
//! **A lost node's lease.** A peer declared down was last heard at least
//! `detect_floor` (the fastest path's `interval × misses`) before the
//! node-down; its lease, renewed at best by what this node's partition
//! heard of it, ends by then plus `lease`, plus `drift_margin` for the two
//! clocks' rates. Past that instant the peer is *expired* here; the
//! coordinator starts what it may have run only once every node of the
//! partition reports it expired (each by its own clock), so the node that
//! heard it last decides. A node never seen since this one started counts
//! from the start.
//!
//! **Configured apart.** Peers count only when they announce the same
//! expected votes. Which of two nodes that disagree is configured apart is
//! judged from every node heard since this one started, whatever the order
//! they were heard in: while the nodes that agree with this one (itself
//! included) are not yet a majority of its expected votes and more than
//! those that announced other votes, it is *undecided* and holds no quorum
//! (a node whose configuration makes it a majority of its own must not
//! count itself into one). Once they are, it trusts its configuration for
//! good and only ignores the nodes configured apart. Once those that
//! disagree hold at least as many votes as those that agree and those not
//! yet heard together, it refuses to start: it holds no quorum and starts
//! nothing until it is restarted. (Two nodes that disagree both refuse.)
//!
//! **Wait for all.** At a cold start nothing is started until this node has
//! seen every node of the cluster once, or joins a partition in which a
//! node has.

use std::collections::{BTreeMap, BTreeSet};

use heartline_core::{Duration, Instant};

use super::{Brain, Level};

/// How quorum and leases are configured (the same on every node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumConfig {
    /// Votes of the nodes with other than 1.
    pub votes: BTreeMap<u16, u32>,
    /// The cluster's expected votes: a partition needs more than half.
    pub expected: u32,
    /// At a cold start, start nothing until every node was seen once.
    pub wait_for_all: bool,
    /// What a node that loses quorum does with what it runs.
    pub no_quorum: NoQuorum,
    /// How long quorum holds after the last proof a majority heard this
    /// node.
    pub lease: Duration,
    /// How long this node's stops may take: it gives its quorum up this
    /// long before its lease ends, so that what it runs is stopped by then
    /// (the watchdog resets it at the lease's end otherwise).
    pub stop_bound: Duration,
    /// Added to a lost node's lease for the clocks' rates.
    pub drift_margin: Duration,
    /// How long before a node-down the node was last heard, at least
    /// (the fastest path's `interval × misses`).
    pub detect_floor: Duration,
    /// A witness holds one more vote (counted in `expected`), granted to
    /// one partition at a time: the brain asks for it with
    /// [`super::Output::AskWitness`] every `lease / 8` (of the fast lease,
    /// if shorter) and after every
    /// change of view, and is told the answer with
    /// [`super::Input::Witness`].
    pub witness: bool,
    /// A shorter lease for hierarchies whose stop is fast and bounded
    /// ([`super::fast_lease`]); `None`: every hierarchy waits for `lease`.
    pub fast: Option<super::fast_lease::FastLease>,
}

impl QuorumConfig {
    /// One vote per node of `nodes`, a majority of them expected, waiting
    /// for all at a cold start, stopping without quorum, a lease of
    /// `lease` with a drift margin of 2% of it plus 10 ms, stops bounded
    /// by `stop_bound`.
    #[must_use]
    pub fn majority(nodes: &BTreeSet<u16>, lease: Duration, stop_bound: Duration) -> QuorumConfig {
        QuorumConfig {
            votes: BTreeMap::new(),
            expected: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
            wait_for_all: true,
            no_quorum: NoQuorum::Stop,
            lease,
            stop_bound,
            drift_margin: default_margin(lease),
            detect_floor: Duration::ZERO,
            witness: false,
            fast: None,
        }
    }

    /// As [`QuorumConfig::majority`], with a witness's vote expected too.
    #[must_use]
    pub fn with_witness(
        nodes: &BTreeSet<u16>,
        lease: Duration,
        stop_bound: Duration,
    ) -> QuorumConfig {
        let mut q = QuorumConfig::majority(nodes, lease, stop_bound);
        q.expected += 1;
        q.witness = true;
        q
    }

    /// A node's votes.
    #[must_use]
    pub fn votes_of(&self, node: u16) -> u32 {
        self.votes.get(&node).copied().unwrap_or(1)
    }

    /// Whether `votes` are a majority of the expected votes.
    #[must_use]
    pub fn is_majority(&self, votes: u32) -> bool {
        u64::from(votes) * 2 > u64::from(self.expected)
    }
}

pub use heartline_core::witness::default_margin;

/// How often the witness is asked for its vote: an eighth of the shortest
/// lease it renews (the fast lease's, if there is one).
fn witness_every(q: &QuorumConfig) -> Duration {
    let shortest =
        q.fast.as_ref().map_or(
            q.lease,
            |f| if f.lease < q.lease { f.lease } else { q.lease },
        );
    Duration::from_micros(shortest.as_micros() / 8)
}

/// What a node without quorum does with what runs on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NoQuorum {
    /// Stop its hierarchies at once.
    #[default]
    Stop,
    /// Keep what runs, start nothing; what still runs when the lease ends
    /// is ended by the watchdog (a reset, not a clean stop).
    Freeze,
}

/// What this node knows of quorum.
#[derive(Debug, Default)]
pub(super) struct QuorumState {
    /// Whether this node held its fast lease after the last input.
    pub(super) fast_had: bool,
    /// Per node not up: when it was declared down here, and the send
    /// instant of the first request the witness granted since (a lost node
    /// may have renewed its lease through the witness until the witness
    /// gave its vote away: see [`super::fast_lease`]).
    pub(super) down_at: BTreeMap<u16, (Instant, Option<Instant>)>,
    /// Per peer: the latest instant of a heartbeat of ours it echoed.
    echoed: BTreeMap<u16, Instant>,
    /// Per node not up: the latest instant it can have been heard here.
    lost_at: BTreeMap<u16, Instant>,
    /// Whether this node had quorum after the last input.
    pub(super) had: bool,
    /// Whether it had quorum since it started.
    pub(super) ever: bool,
    /// Per peer heard since this node started: the expected votes it
    /// announced last (0: quorum off there).
    announced: BTreeMap<u16, u32>,
    /// Whether the nodes heard since it started that agree with its
    /// expected votes were a majority of them and outnumbered those that
    /// announced others: it trusts its configuration for good.
    trusted: bool,
    /// A peer (with quorum on) that announced other expected votes, and
    /// what it announced, once those that disagree outnumber those that
    /// agree and those not yet heard together: this node then refuses to
    /// start (no quorum, nothing started) until it is restarted.
    pub(super) refused: Option<(u16, u32)>,
    /// The witness's latest grant: to which view, for a request sent when.
    witness: Option<(BTreeSet<u16>, Instant)>,
    /// When the witness was last asked, and for which view.
    asked: Option<(Instant, BTreeSet<u16>)>,
    /// The latest end of a lease this node earned from its peers' echoes
    /// alone while it held quorum: a promise its peers keep (none counts
    /// it expired before then), so what runs here may run on until then,
    /// less the stop bound, after quorum is lost.
    held: Option<Instant>,
}

/// Quorum as this node sees it, for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumStatus {
    /// Votes that count here: this node's and those of the peers up that
    /// announced the same expected votes (the witness's too, when it counts).
    pub votes: u32,
    /// The cluster's expected votes.
    pub expected: u32,
    /// Whether this node holds quorum (a majority and a lease).
    pub quorate: bool,
    /// When the lease ends unless renewed (`None`: no lease).
    pub lease_until: Option<Instant>,
    /// Whether it still waits to see every node once before starting
    /// anything.
    pub waiting_for_all: bool,
    /// It refused to start: this peer announced these expected votes, and
    /// the nodes that disagree with this one outnumber those that agree.
    pub refused: Option<(u16, u32)>,
    /// This peer announced these expected votes, and the nodes heard so far
    /// cannot tell which is configured apart: no quorum until they can.
    pub undecided: Option<(u16, u32)>,
    /// Whether the witness's vote counts here now (`None`: no witness).
    pub witness: Option<bool>,
}

impl Brain {
    /// The peer `node` echoed a heartbeat this node sent at `echoed`.
    pub(super) fn on_heard(&mut self, node: u16, echoed: Instant) {
        if node == self.cfg.node || !self.cfg.nodes.contains(&node) || echoed > self.now {
            return;
        }
        let e = self.quorum.echoed.entry(node).or_insert(echoed);
        *e = (*e).max(echoed);
    }

    /// The witness answered a request sent at `sent` for `view`.
    pub(super) fn on_witness(&mut self, view: BTreeSet<u16>, sent: Instant, granted: bool) {
        if self.cfg.quorum.as_ref().is_none_or(|q| !q.witness) || sent > self.now {
            return;
        }
        if granted {
            for (down, grant) in self.quorum.down_at.values_mut() {
                if grant.is_none() && sent >= *down {
                    *grant = Some(sent);
                }
            }
            let newer = self
                .quorum
                .witness
                .as_ref()
                .is_none_or(|(v, at)| *v != view || *at < sent);
            if newer {
                self.quorum.witness = Some((view, sent));
            }
        } else if self
            .quorum
            .witness
            .as_ref()
            .is_some_and(|(v, at)| *v == view && *at <= sent)
        {
            // Refused since: the grant is another partition's now.
            self.quorum.witness = None;
        }
    }

    /// Asks the witness for its vote when due: every `lease / 8`, and at
    /// once when the view changed.
    pub(super) fn ask_witness(&mut self) {
        let Some(q) = self.cfg.quorum.as_ref().filter(|q| q.witness) else {
            return;
        };
        let view: BTreeSet<u16> = self.view().keys().copied().collect();
        let every = witness_every(q);
        let due = self
            .quorum
            .asked
            .as_ref()
            .is_none_or(|(at, v)| *v != view || self.now >= *at + every);
        if due {
            self.quorum.asked = Some((self.now, view.clone()));
            self.out.push_back(super::Output::AskWitness { view });
        }
    }

    /// Whether the witness's last grant counts for this node's partition:
    /// it includes the one the grant named (the witness gives the vote to
    /// no partition apart from that one while the grant lasts; a view that
    /// grew keeps it, one that shrank must ask again), and is within the
    /// lease of the request answered.
    fn witness_counts(&self) -> bool {
        let Some((view, at)) = &self.quorum.witness else {
            return false;
        };
        let fresh = self
            .cfg
            .quorum
            .as_ref()
            .is_some_and(|q| self.now < *at + q.lease);
        let mine: BTreeSet<u16> = self
            .members
            .up
            .keys()
            .copied()
            .chain([self.cfg.node])
            .collect();
        fresh && view.is_subset(&mine)
    }

    /// Membership changed for `node`: up (`true`) or lost.
    pub(super) fn quorum_membership(&mut self, node: u16, up: bool) {
        let Some(q) = self.cfg.quorum.as_ref() else {
            return;
        };
        if up {
            self.quorum.lost_at.remove(&node);
            self.quorum.down_at.remove(&node);
        } else {
            self.quorum.down_at.insert(node, (self.now, None));
            let heard = Instant::from_micros(
                self.now
                    .as_micros()
                    .saturating_sub(q.detect_floor.as_micros()),
            )
            .max(self.started);
            self.quorum.lost_at.insert(node, heard);
        }
    }

    /// When this node's lease ends: the latest instant at which it and the
    /// up peers that echoed it since held a majority, plus the lease.
    /// `None` without a lease (or with quorum not configured).
    pub(super) fn lease_end(&self) -> Option<Instant> {
        self.lease_end_with(true)
    }

    /// As [`Brain::lease_end`], counting the witness's vote or not.
    fn lease_end_with(&self, witness: bool) -> Option<Instant> {
        let q = self.cfg.quorum.as_ref()?;
        let mut votes = q.votes_of(self.cfg.node);
        if q.is_majority(votes) {
            return Some(self.now + q.lease);
        }
        let mut heard: Vec<(Instant, u32)> = self
            .counted_peers()
            .filter_map(|n| self.quorum.echoed.get(&n).map(|at| (*at, q.votes_of(n))))
            .collect();
        if let Some((_, at)) = self
            .quorum
            .witness
            .as_ref()
            .filter(|_| witness && self.witness_counts())
        {
            heard.push((*at, 1));
        }
        heard.sort_unstable_by(|a, b| b.cmp(a));
        for (at, v) in heard {
            votes += v;
            if q.is_majority(votes) {
                return Some(at + q.lease);
            }
        }
        None
    }

    /// The latest end of a lease this node earned from its peers' echoes
    /// alone while it held quorum.
    pub(super) fn quorum_held(&self) -> Option<Instant> {
        self.quorum.held
    }

    /// The nodes not up, each with the latest instant it can have been
    /// heard here (this node's start, for a node not seen since).
    pub(super) fn lost_nodes(&self) -> impl Iterator<Item = (u16, Instant)> + '_ {
        self.cfg
            .nodes
            .iter()
            .copied()
            .filter(|n| *n != self.cfg.node && !self.members.up.contains_key(n))
            .map(|n| {
                let heard = self.quorum.lost_at.get(&n).copied();
                (n, heard.unwrap_or(self.started))
            })
    }

    /// Whether what runs here may run on without quorum: the lease it
    /// earned from its peers' echoes while it held quorum leaves time to
    /// stop before it ends. (A lease earned with the witness's vote does
    /// not count: a side of a broken holder may get that vote before the
    /// grant would have run out.)
    fn may_run_on(&self) -> bool {
        let Some(q) = self.cfg.quorum.as_ref() else {
            return true;
        };
        self.quorum
            .held
            .is_some_and(|end| self.now + q.stop_bound < end)
    }

    /// The peers up whose votes count here: they said hello with the same
    /// expected votes as this node's.
    fn counted_peers(&self) -> impl Iterator<Item = u16> + '_ {
        let expected = self.cfg.quorum.as_ref().map(|q| q.expected);
        self.members
            .up
            .iter()
            .filter(move |(_, p)| p.synced && Some(p.flags.expected_votes) == expected)
            .map(|(n, _)| *n)
    }

    /// Whether this node may run and start hierarchies: quorum is not
    /// configured, or it holds a lease with time left to stop before it
    /// ends.
    pub(super) fn has_quorum(&self) -> bool {
        self.quorum_until().is_none_or(|end| self.now < end)
    }

    /// The peers heard since this node started whose last announced
    /// expected votes differ from this node's (`0`: quorum off there).
    fn announced_apart(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        let own = self.cfg.quorum.as_ref().map(|q| q.expected);
        self.quorum
            .announced
            .iter()
            .filter(move |(_, e)| Some(**e) != own)
            .map(|(n, e)| (*n, *e))
    }

    /// A peer up now whose configuration gives other expected votes than
    /// this node's (or has quorum off), and what it gives: neither counts
    /// the other's votes, so a node configured apart from the rest holds no
    /// quorum with them. Current once [`Brain::judge_configuration`] ran.
    fn disagreement(&self) -> Option<(u16, u32)> {
        self.announced_apart()
            .find(|(n, _)| self.members.up.get(n).is_some_and(|p| p.synced))
    }

    /// Records what the peers heard announce, and judges, once it can,
    /// whether this node's expected votes or a peer's are configured apart
    /// (see the module's documentation): from every node heard since this
    /// one started, so that the order they were heard in does not matter.
    fn judge_configuration(&mut self, q: &QuorumConfig) {
        for (n, p) in &self.members.up {
            if p.synced {
                self.quorum.announced.insert(*n, p.flags.expected_votes);
            }
        }
        if self.quorum.trusted || self.quorum.refused.is_some() {
            return;
        }
        let own = self.cfg.node;
        let (mut agree, mut apart, mut unheard) = (u64::from(q.votes_of(own)), 0u64, 0u64);
        let mut first = None;
        for n in self.cfg.nodes.iter().filter(|n| **n != own) {
            let v = u64::from(q.votes_of(*n));
            match self.quorum.announced.get(n) {
                None => unheard += v,
                Some(e) if *e == q.expected => agree += v,
                Some(0) => {}
                Some(e) => {
                    apart += v;
                    first.get_or_insert((*n, *e));
                }
            }
        }
        let Some(first) = first else {
            return;
        };
        if agree * 2 > u64::from(q.expected) && agree > apart {
            self.quorum.trusted = true;
        } else if apart >= agree + unheard {
            self.quorum.refused = Some(first);
            self.quorum.held = None;
        }
    }

    /// A peer heard since this node started that announced other expected
    /// votes (quorum on), while the nodes heard cannot yet tell which is
    /// configured apart: this node holds no quorum meanwhile.
    fn undecided(&self) -> Option<(u16, u32)> {
        self.cfg.quorum.as_ref()?;
        if self.quorum.trusted || self.quorum.refused.is_some() {
            return None;
        }
        self.announced_apart().find(|(_, e)| *e != 0)
    }

    /// Until when this node holds quorum unless its lease is renewed: the
    /// lease's end less the stop bound (`None`: quorum not configured;
    /// `Some(ZERO)`: no lease).
    fn quorum_until(&self) -> Option<Instant> {
        let q = self.cfg.quorum.as_ref()?;
        if self.quorum.refused.is_some() || self.undecided().is_some() {
            return Some(Instant::ZERO);
        }
        Some(self.lease_end().map_or(Instant::ZERO, |end| {
            Instant::from_micros(end.as_micros().saturating_sub(q.stop_bound.as_micros()))
        }))
    }

    /// Whether this node has seen every node once since it started, or a
    /// peer in its partition has (`wait_for_all` satisfied).
    pub(super) fn seen_all(&self) -> bool {
        self.cfg
            .nodes
            .iter()
            .all(|n| *n == self.cfg.node || self.members.seen.contains(n))
            || self
                .members
                .up
                .values()
                .any(|p| p.synced && p.flags.seen_all)
    }

    /// Whether node `node` (not up) is past its lease by this node's clock.
    pub(super) fn expired_here(&self, node: u16) -> bool {
        let Some(q) = self.cfg.quorum.as_ref() else {
            return true;
        };
        if node == self.cfg.node || self.members.up.contains_key(&node) {
            return false;
        }
        let heard = self
            .quorum
            .lost_at
            .get(&node)
            .copied()
            .unwrap_or(self.started);
        self.now >= heard + q.lease + q.drift_margin
    }

    /// The nodes not up whose lease ended, by this node's clock.
    pub(super) fn expired_set(&self) -> BTreeSet<u16> {
        if self.cfg.quorum.is_none() {
            return BTreeSet::new();
        }
        self.cfg
            .nodes
            .iter()
            .copied()
            .filter(|n| self.expired_here(*n))
            .collect()
    }

    /// Whether `node` (down) runs nothing: this node confirmed it fenced
    /// since it was lost, or its lease ended for the whole partition.
    pub(super) fn fenced(&self, node: u16) -> bool {
        self.fence_confirmed(node) || self.lease_ended_everywhere(node)
    }

    /// Whether every node of the partition holds `node` (down) past its
    /// lease: it runs nothing, or has been reset.
    pub(super) fn lease_ended_everywhere(&self, node: u16) -> bool {
        if self.cfg.quorum.is_none() {
            return true;
        }
        self.expired_here(node)
            && self
                .members
                .up
                .values()
                .all(|p| p.synced && p.flags.expired.contains(&node))
    }

    /// The instant by which this node must have stopped everything it
    /// runs, or be reset: the end of its lease, while anything may run
    /// here (the daemon keeps its watchdog from firing only until then).
    /// `None`: nothing may run here, or quorum is not configured.
    #[must_use]
    pub fn fence_deadline(&self) -> Option<Instant> {
        self.cfg.quorum.as_ref()?;
        if !self.may_run_anything() {
            return None;
        }
        let end = self
            .lease_end()
            .into_iter()
            .chain(self.quorum.held)
            .max()
            .unwrap_or(self.now);
        // A hierarchy under the fast lease must be stopped by that lease's
        // end (the same renewal, a shorter lease).
        if self.fast_may_run() {
            if let Some(fast) = self.fast_deadline(end) {
                return Some(fast);
            }
        }
        Some(end)
    }

    /// Quorum as this node sees it (`None`: not configured).
    #[must_use]
    pub fn quorum(&self) -> Option<QuorumStatus> {
        let q = self.cfg.quorum.as_ref()?;
        let witness = q.witness.then(|| self.witness_counts());
        // The votes that count: this node's, and those of the peers the
        // lease counts.
        let votes = q.votes_of(self.cfg.node)
            + self.counted_peers().map(|n| q.votes_of(n)).sum::<u32>()
            + u32::from(witness == Some(true));
        let lease_until = self.lease_end().filter(|end| self.now < *end);
        Some(QuorumStatus {
            votes,
            expected: q.expected,
            quorate: self.has_quorum(),
            lease_until,
            waiting_for_all: q.wait_for_all && !self.seen_all(),
            witness,
            refused: self.quorum.refused,
            undecided: self.undecided(),
        })
    }

    /// After every input: a change of quorum is told, and acted on.
    pub(super) fn quorum_progress(&mut self) {
        let Some(q) = self.cfg.quorum.clone() else {
            return;
        };
        self.judge_configuration(&q);
        if let Some((node, theirs)) = self.quorum.refused {
            self.note_once(
                Level::Error,
                format!(
                    "REFUSED TO START: {} announces {theirs} expected votes, this node's configuration {}: the [quorum] sections differ; this node holds no quorum and starts nothing until it is restarted with a configuration that agrees",
                    self.who(node),
                    q.expected
                ),
            );
        } else if let Some((node, theirs)) = self.undecided() {
            self.note_once(
                Level::Error,
                format!(
                    "{} announces {theirs} expected votes, this node's configuration {}: the [quorum] sections differ; this node holds no quorum until the nodes heard tell which is configured apart (refused to start if it is this one)",
                    self.who(node),
                    q.expected
                ),
            );
        } else if let Some((node, theirs)) = self.disagreement() {
            let text = if theirs == 0 {
                format!(
                    "{} runs with quorum off, this node with {} expected votes: the [quorum] sections differ; its votes do not count here until they agree",
                    self.who(node),
                    q.expected
                )
            } else {
                format!(
                    "{} expects {theirs} votes, this node {}: the [quorum] sections differ; its votes do not count here until they agree",
                    self.who(node),
                    q.expected
                )
            };
            self.note_once(Level::Error, text);
        }
        let has = self.has_quorum();
        self.quorum.ever |= has;
        if has {
            if let Some(end) = self.lease_end_with(false) {
                self.quorum.held = Some(self.quorum.held.map_or(end, |h| h.max(end)));
            }
        }
        if has != self.quorum.had {
            self.quorum.had = has;
            self.dirty = true;
            self.forget_notes();
            let status = self.quorum();
            let votes = status.map_or(0, |s| s.votes);
            if has {
                self.local_quorum_regained();
                let own = self.cfg.node;
                self.place_forget_refusals(own);
                self.notice(
                    Level::Info,
                    format!(
                        "quorum: this partition holds {votes} of {} expected votes; hierarchies may run",
                        q.expected
                    ),
                );
            } else {
                let run_on = self
                    .quorum
                    .held
                    .filter(|_| self.may_run_on())
                    .map(|end| end.saturating_since(self.now + q.stop_bound));
                let what = match (q.no_quorum, run_on) {
                    (NoQuorum::Stop, None) => "stopping every hierarchy here".to_string(),
                    (NoQuorum::Stop, Some(left)) => format!(
                        "what runs here runs on for {left} (its lease, less the stop bound) in case quorum returns, then stops"
                    ),
                    (NoQuorum::Freeze, _) => {
                        "keeping what runs (no_quorum = freeze) until the lease ends, starting nothing".to_string()
                    }
                };
                self.notice(
                    Level::Error,
                    format!(
                        "QUORUM LOST: this node sees {votes} of {} expected votes, or its lease was not renewed: {what}; configuration changes are refused",
                        q.expected
                    ),
                );
            }
        }
        // A daemon that just started (its applications may have run on
        // while it was down) is given a lease's time to find its quorum
        // before it stops them.
        let grace = !self.quorum.ever && self.now < self.started + q.lease;
        self.fast_progress();
        if !has
            && !grace
            && !self.may_run_on()
            && q.no_quorum == NoQuorum::Stop
            && !self.model.maintenance
        {
            self.stop_everything_here("this node has no quorum");
        }
    }

    /// When quorum next changes unless something is heard: the lease's end,
    /// and the next lost node's lease.
    pub(super) fn quorum_timeout(&self) -> Option<Instant> {
        let q = self.cfg.quorum.as_ref()?;
        let lease = self.quorum_until().filter(|end| self.now < *end);
        let peers = self
            .cfg
            .nodes
            .iter()
            .filter(|n| **n != self.cfg.node && !self.members.up.contains_key(n))
            .map(|n| {
                self.quorum.lost_at.get(n).copied().unwrap_or(self.started)
                    + q.lease
                    + q.drift_margin
            })
            .filter(|at| *at > self.now);
        let grace = (!self.quorum.ever).then_some(self.started + q.lease);
        let run_on = self
            .quorum
            .held
            .filter(|_| !self.quorum.had)
            .map(|end| {
                Instant::from_micros(end.as_micros().saturating_sub(q.stop_bound.as_micros()))
            })
            .filter(|at| *at > self.now);
        let ask = q.witness.then(|| {
            let every = witness_every(q);
            self.quorum
                .asked
                .as_ref()
                .map_or(self.now, |(at, _)| *at + every)
        });
        lease
            .into_iter()
            .chain(run_on)
            .chain(self.fast_timeout())
            .chain(ask)
            .chain(peers)
            .chain(grace.filter(|at| *at > self.now))
            .min()
    }

    /// Why the coordinator may not start anything, for notices.
    pub(super) fn why_no_start(&self) -> Option<String> {
        let q = self.cfg.quorum.as_ref()?;
        if let Some((node, theirs)) = self.quorum.refused {
            return Some(format!(
                "this node refused to start: {} announces {theirs} expected votes, this node's configuration {}",
                self.who(node),
                q.expected
            ));
        }
        if let Some((node, theirs)) = self.undecided() {
            return Some(format!(
                "{} announces {theirs} expected votes, this node's configuration {}: no quorum until the nodes heard tell which is configured apart",
                self.who(node),
                q.expected
            ));
        }
        if !self.has_quorum() {
            return Some(format!(
                "this partition has no quorum (it holds {} of {} expected votes, or its lease was not renewed)",
                self.quorum().map_or(0, |s| s.votes),
                q.expected
            ));
        }
        if q.wait_for_all && !self.seen_all() {
            let missing: Vec<String> = self
                .cfg
                .nodes
                .iter()
                .filter(|n| **n != self.cfg.node && !self.members.seen.contains(n))
                .map(u16::to_string)
                .collect();
            return Some(format!(
                "waiting to see every node once since the cluster started (wait_for_all); not yet seen: {}",
                missing.join(", ")
            ));
        }
        None
    }
}
