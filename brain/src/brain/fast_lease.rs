//! The fast lease: hierarchies whose stop is fast and bounded (every
//! resource of a kind in [`FastLease::kinds`], such as the built-in
//! virtual IP, whose removal takes microseconds) run under a lease of their
//! own, shorter than the quorum lease, so that a survivor may take them
//! over soon after a node is lost instead of waiting out a lease sized for
//! a database's stop.
//!
//! The arithmetic is the quorum lease's ([`super::quorum`]) with other
//! figures. Both leases run from the same renewal (the latest instant at
//! which this node and the peers that echoed it held a majority):
//! - a node stops its fast hierarchies once `fast.lease - fast.stop_bound`
//!   has passed since that renewal without another (the rest run on to the
//!   quorum lease's own limit), and starts none after that point;
//! - while a fast hierarchy may run here, [`super::Brain::fence_deadline`]
//!   is the fast lease's end, so a stop that does not end in time resets the
//!   node through its watchdog, as for the quorum lease;
//! - a survivor holds a lost node past its fast lease at the instant it was
//!   last heard plus `fast.lease` plus `fast.drift_margin`, and the
//!   coordinator starts a fast hierarchy that node had once every node of
//!   the partition says so ([`crate::message::Flags::expired_fast`]).
//!
//! A hierarchy with one resource of another kind, anywhere, is not fast:
//! it waits for the quorum lease.
//!
//! [`Brain::fast_guard`] tells the host, after every step, which resources
//! the fast lease guards here and the instant this node stops them unless
//! the lease is renewed first, so that something faster than a step of the
//! brain (the daemon removes virtual addresses on its real-time thread)
//! can act at that instant too.

use std::collections::BTreeSet;

use heartline_core::{Duration, Instant};

use super::{Brain, Level};
use crate::groups::Group;
use crate::model::Place;

/// The fast lease's figures (part of [`super::QuorumConfig`], the same on
/// every node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastLease {
    /// Resource kinds (`app/type`) whose stop is bounded by `stop_bound`.
    pub kinds: BTreeSet<String>,
    /// How long a fast hierarchy runs on after the last renewal, and its
    /// stop: shorter than the quorum lease.
    pub lease: Duration,
    /// How long stopping a fast hierarchy may take.
    pub stop_bound: Duration,
    /// Added to a lost node's fast lease for the clocks' rates.
    pub drift_margin: Duration,
}

/// What the fast lease guards on this node (see [`Brain::fast_guard`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastGuard {
    /// When this node stops them unless its lease is renewed before.
    pub at: Instant,
    /// The resources of fast hierarchies that may run here: in service,
    /// blocked, or in a hierarchy being started.
    pub places: Vec<Place>,
}

impl Brain {
    fn fast(&self) -> Option<&FastLease> {
        self.cfg.quorum.as_ref()?.fast.as_ref()
    }

    /// Whether the resource at `place` is of a fast kind.
    fn fast_kind(&self, place: &Place) -> bool {
        let Some(fast) = self.fast() else {
            return false;
        };
        self.model
            .resources
            .get(place)
            .is_some_and(|r| fast.kinds.contains(&format!("{}/{}", r.app, r.rtype)))
    }

    /// Whether the hierarchy of `tag` on this node runs under the fast
    /// lease: every resource of it is of a fast kind.
    pub(super) fn fast_here(&self, tag: &str) -> bool {
        let node = self.cfg.node;
        let place = Place {
            node,
            tag: tag.to_string(),
        };
        self.fast().is_some()
            && self.model.hierarchy(&place).iter().all(|t| {
                self.fast_kind(&Place {
                    node,
                    tag: t.clone(),
                })
            })
    }

    /// Whether group `g` runs under the fast lease: every member, on every
    /// node, is of a fast kind.
    pub(super) fn fast_group(&self, g: &Group) -> bool {
        self.fast().is_some() && g.members.values().flatten().all(|p| self.fast_kind(p))
    }

    /// The fast lease's end for a quorum lease ending at `end` (the same
    /// renewal).
    fn fast_end(&self, end: Instant) -> Option<Instant> {
        let q = self.cfg.quorum.as_ref()?;
        let fast = q.fast.as_ref()?;
        Some(Instant::from_micros(
            end.as_micros()
                .saturating_sub(q.lease.as_micros())
                .saturating_add(fast.lease.as_micros()),
        ))
    }

    /// Until when this node may start and run fast hierarchies unless its
    /// lease is renewed (`None`: no fast lease configured).
    pub(super) fn fast_until(&self) -> Option<Instant> {
        let fast = self.fast()?;
        let end = self.lease_end().and_then(|e| self.fast_end(e));
        Some(end.map_or(Instant::ZERO, |end| {
            Instant::from_micros(end.as_micros().saturating_sub(fast.stop_bound.as_micros()))
        }))
    }

    /// Whether this node may start the hierarchy of `tag` now: it holds
    /// quorum and, for a fast hierarchy, its fast lease too.
    pub(super) fn has_quorum_for(&self, tag: &str) -> bool {
        self.has_quorum()
            && (!self.fast_here(tag) || self.fast_until().is_none_or(|end| self.now < end))
    }

    /// Until when fast hierarchies may run on after quorum was lost: the
    /// fast lease earned from the peers' echoes alone, less its stop bound.
    fn fast_run_on_until(&self) -> Option<Instant> {
        let fast = self.fast()?;
        let end = self.quorum_held().and_then(|e| self.fast_end(e))?;
        Some(Instant::from_micros(
            end.as_micros().saturating_sub(fast.stop_bound.as_micros()),
        ))
    }

    /// When this node stops its fast hierarchies unless its lease is
    /// renewed first: where its fast lease less the stop bound ends, but
    /// not before a fast lease earned from the peers' echoes alone ends
    /// (after quorum was lost), nor within the first fast lease after the
    /// daemon started (what ran while it was down is given that long to be
    /// confirmed). `None`: no fast lease, or the cluster is in maintenance.
    fn fast_stop_at(&self) -> Option<Instant> {
        let fast = self.fast()?;
        if self.model.maintenance {
            return None;
        }
        let until = self.fast_until()?;
        let run_on = self.fast_run_on_until().unwrap_or(Instant::ZERO);
        let grace = if self.quorum.ever {
            Instant::ZERO
        } else {
            self.started + fast.lease
        };
        Some(until.max(run_on).max(grace))
    }

    /// What the fast lease guards here: the resources of fast hierarchies
    /// that may run on this node, and the instant at which this node stops
    /// them unless its lease is renewed before (the same instant
    /// [`Brain::handle_timeout`] acts at). `None`: nothing of a fast
    /// hierarchy may run here, or no fast lease, or maintenance. The host
    /// asks after every step: a renewal moves `at` on.
    #[must_use]
    pub fn fast_guard(&self) -> Option<FastGuard> {
        let at = self.fast_stop_at()?;
        let node = self.cfg.node;
        let mut starting = BTreeSet::new();
        for tag in self.local_starting() {
            starting.extend(self.model.hierarchy(&Place {
                node,
                tag: tag.to_string(),
            }));
        }
        let places: Vec<Place> = self
            .model
            .resources
            .values()
            .filter(|r| {
                r.place.node == node
                    && (r.state.maybe_running() || starting.contains(&r.place.tag))
                    && self.fast_here(&r.place.tag)
            })
            .map(|r| r.place.clone())
            .collect();
        (!places.is_empty()).then_some(FastGuard { at, places })
    }

    /// After every input: fast hierarchies whose fast lease ran out are
    /// stopped here (as `no_quorum = stop` does for all of them at the
    /// quorum lease's limit).
    pub(super) fn fast_progress(&mut self) {
        let Some(until) = self.fast_until() else {
            return;
        };
        let has = self.has_quorum() && self.now < until;
        if has != self.quorum.fast_had {
            self.quorum.fast_had = has;
            // Peers learn it (the coordinator may order fast hierarchies
            // here again); what was refused for want of it may be asked
            // again.
            self.dirty = true;
            if has {
                self.local_quorum_regained();
                let own = self.cfg.node;
                self.place_forget_refusals(own);
            }
        }
        if self.fast_stop_at().is_none_or(|at| self.now < at) {
            return;
        }
        let node = self.cfg.node;
        let fast: Vec<String> = self
            .model
            .resources
            .values()
            .filter(|r| r.place.node == node && r.state.in_service())
            .map(|r| r.place.tag.clone())
            .filter(|tag| self.fast_here(tag))
            .collect();
        if !fast.is_empty() {
            let why = "this node's fast lease was not renewed";
            self.note_once(
                Level::Error,
                format!(
                    "{why}: stopping {} here (hierarchies whose stop is fast stop first; the others run on to the quorum lease's limit)",
                    fast.join(", ")
                ),
            );
            self.stop_here(&fast, why);
        }
    }

    /// When a lost node's fast lease ends by this node's clock (`None`: not
    /// known yet). From the instant it was last heard here, or, with a
    /// witness, from the first request the witness granted this node since
    /// that node was lost, if later: until the witness gives its vote away
    /// (to a partition that asks after the holder went silent for the
    /// witness's settle time), the lost node may have renewed through it.
    fn fast_lease_end_of(&self, node: u16, heard: Instant) -> Option<Instant> {
        let q = self.cfg.quorum.as_ref()?;
        let fast = q.fast.as_ref()?;
        let from = if q.witness {
            match self.quorum.down_at.get(&node) {
                Some((_, Some(grant))) => heard.max(*grant),
                // Never seen since this node started: counted from its start.
                None => heard,
                Some((_, None)) => return None,
            }
        } else {
            heard
        };
        Some(from + fast.lease + fast.drift_margin)
    }

    /// When the fast lease next runs out unless renewed, or a lost node's
    /// fast lease ends.
    pub(super) fn fast_timeout(&self) -> Option<Instant> {
        self.fast()?;
        let until = self.fast_until().filter(|at| *at > self.now);
        let run_on = self.fast_run_on_until().filter(|at| *at > self.now);
        let stop = self.fast_stop_at().filter(|at| *at > self.now);
        let peers = self
            .lost_nodes()
            .filter_map(|(n, heard)| self.fast_lease_end_of(n, heard))
            .filter(|at| *at > self.now);
        until
            .into_iter()
            .chain(run_on)
            .chain(stop)
            .chain(peers)
            .min()
    }

    /// Whether node `node` (not up) is past its fast lease by this node's
    /// clock.
    fn fast_expired_here(&self, node: u16) -> bool {
        self.lost_nodes().any(|(n, heard)| {
            n == node
                && self
                    .fast_lease_end_of(n, heard)
                    .is_some_and(|end| self.now >= end)
        })
    }

    /// The nodes not up whose fast lease ended, by this node's clock.
    pub(super) fn fast_expired_set(&self) -> BTreeSet<u16> {
        self.lost_nodes()
            .map(|(n, _)| n)
            .filter(|n| self.fast_expired_here(*n))
            .collect()
    }

    /// Whether `node` (down) runs none of group `g`: it was fenced, or the
    /// lease that covers `g` there (the fast one for a fast group) ended for
    /// the whole partition.
    pub(super) fn fenced_for(&self, node: u16, g: &Group) -> bool {
        if self.fenced(node) {
            return true;
        }
        self.fast_group(g)
            && self.fast_expired_here(node)
            && self
                .members
                .up
                .values()
                .all(|p| p.synced && p.flags.expired_fast.contains(&node))
    }

    /// Whether a fast hierarchy may run here: one of its resources may be
    /// running, or an action may start one.
    pub(super) fn fast_may_run(&self) -> bool {
        if self.fast().is_none() {
            return false;
        }
        let node = self.cfg.node;
        self.local_starting().any(|tag| self.fast_here(tag))
            || self.model.resources.values().any(|r| {
                r.place.node == node && r.state.maybe_running() && self.fast_here(&r.place.tag)
            })
    }

    /// The instant by which a node whose quorum lease ends at `end` must
    /// have stopped its fast hierarchies.
    pub(super) fn fast_deadline(&self, end: Instant) -> Option<Instant> {
        self.fast_end(end)
    }
}
