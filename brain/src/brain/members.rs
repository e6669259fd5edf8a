//! Who is up, what each peer last said of itself, and what this node tells
//! them of itself.
//!
//! Membership comes from the core's events, one at a time and in order. A
//! peer that comes up (or restarts) is sent a hello: everything this node
//! is (its [`Flags`], the states of its resources, its actions under way);
//! afterwards only updates. A peer counts as reported once its own hello
//! has arrived since it came up; until then nothing it says is believed.
//! A hello from a peer this node never saw leave is answered with a hello
//! of its own: that peer saw this node leave, and lost what it knew.

use std::collections::BTreeMap;

use crate::message::{Activity, BrainMsg, Flags, View};
use crate::model::{Place, State};

use super::{Brain, BrainConfig, Membership};

/// One peer that is up.
#[derive(Debug, Default)]
pub(super) struct Peer {
    /// The run of it that is up.
    pub(super) incarnation: u64,
    /// Whether its hello arrived since it came up.
    pub(super) synced: bool,
    /// What it last said of itself.
    pub(super) flags: Flags,
    /// Its actions under way, by hierarchy.
    pub(super) busy: BTreeMap<String, Activity>,
    /// The states of its resources, as it reported them.
    pub(super) states: BTreeMap<String, State>,
}

/// The membership, and what was last told of this node.
#[derive(Debug, Default)]
pub(super) struct Members {
    /// Peers up, by node.
    pub(super) up: BTreeMap<u16, Peer>,
    /// Peers owed a hello, and whether it answers theirs.
    hello_to: BTreeMap<u16, bool>,
    sent_flags: Option<Flags>,
    sent_busy: BTreeMap<String, Activity>,
    sent_states: BTreeMap<String, State>,
    /// Orders refused since the last update, with why.
    pub(super) refused: Vec<(String, String)>,
    /// Every node seen up since this node started.
    pub(super) seen: std::collections::BTreeSet<u16>,
    /// The resources reported running and watched (`ISP`) since this node
    /// started, its own included.
    pub(super) ran: std::collections::BTreeSet<Place>,
}

impl Members {
    pub(super) fn view(&self, cfg: &BrainConfig) -> View {
        self.up
            .iter()
            .map(|(node, peer)| (*node, peer.incarnation))
            .chain([(cfg.node, cfg.incarnation)])
            .collect()
    }

    /// The lowest node up, leaving out a peer that runs quorum with other
    /// expected votes than this node's (its `[quorum]` differs: it holds no
    /// quorum with this node, so it must not decide for it). One
    /// misconfigured node with the lowest id would otherwise leave the
    /// cluster without a coordinator that may start anything. A node with
    /// quorum off on either side is left in, as before (a cluster turning
    /// quorum on node by node keeps one coordinator).
    pub(super) fn coordinator(&self, cfg: &BrainConfig) -> u16 {
        let expected = cfg.quorum.as_ref().map_or(0, |q| q.expected);
        let apart = |p: &Peer| {
            let theirs = p.flags.expected_votes;
            p.synced && expected != 0 && theirs != 0 && theirs != expected
        };
        self.up
            .iter()
            .filter(|(_, p)| !apart(p))
            .map(|(n, _)| *n)
            .chain([cfg.node])
            .min()
            .unwrap_or(cfg.node)
    }

    /// Whether every peer up has reported, and reports the same view.
    pub(super) fn settled(&self, cfg: &BrainConfig) -> bool {
        let view = self.view(cfg);
        self.up
            .values()
            .all(|peer| peer.synced && peer.flags.view == view)
    }

    /// A reported peer, if `node` is up and has said hello.
    pub(super) fn reported(&self, node: u16) -> Option<&Peer> {
        self.up.get(&node).filter(|p| p.synced)
    }
}

impl Brain {
    pub(super) fn on_membership(&mut self, change: Membership) {
        let node = match change {
            Membership::Up { node, .. }
            | Membership::Restarted { node, .. }
            | Membership::Down { node } => node,
            Membership::Reincarnated { incarnation } => {
                self.reincarnated(incarnation);
                return;
            }
        };
        if node == self.cfg.node || !self.cfg.nodes.contains(&node) {
            return;
        }
        let known = self.members.up.get(&node).map(|p| p.incarnation);
        let up = match change {
            Membership::Up { incarnation, .. } if known == Some(incarnation) => return,
            Membership::Up { incarnation, .. } => Some(incarnation),
            // A restart heard while the node was down changes nothing
            // here: its node-up follows.
            Membership::Restarted { .. } if known.is_none() => return,
            Membership::Restarted { incarnation, .. } => Some(incarnation),
            Membership::Down { .. } if known.is_none() => return,
            Membership::Down { .. } => None,
            // Handled above: this node's own run.
            Membership::Reincarnated { .. } => return,
        };
        let mut leaving = false;
        if known.is_some() {
            leaving = self
                .members
                .up
                .remove(&node)
                .is_some_and(|p| p.synced && p.flags.leaving);
            self.members.hello_to.remove(&node);
            self.peer_gone(node);
        }
        self.quorum_membership(node, up.is_some());
        self.fence_membership(node, up.is_some(), leaving);
        if let Some(incarnation) = up {
            self.members.seen.insert(node);
            self.members.up.insert(
                node,
                Peer {
                    incarnation,
                    ..Peer::default()
                },
            );
            self.members.hello_to.insert(node, false);
        }
        self.view_changed();
    }

    /// This node took a new incarnation (its peers remembered a larger
    /// run of it): the peers see a restart, so each is told who this node
    /// is again.
    fn reincarnated(&mut self, incarnation: u64) {
        if incarnation == self.cfg.incarnation {
            return;
        }
        self.cfg.incarnation = incarnation;
        for sent in self.members.hello_to.values_mut() {
            *sent = false;
        }
        self.view_changed();
    }

    /// The view changed: decisions made for the old one are void.
    fn view_changed(&mut self) {
        self.local_view_changed();
        self.place_view_changed();
        self.requests_view_changed();
        self.forget_notes();
    }

    /// `node` went down or restarted: whatever waited on it is told.
    fn peer_gone(&mut self, node: u16) {
        self.config_peer_gone(node);
        self.requests_peer_gone(node);
    }

    pub(super) fn on_message(&mut self, from: u16, msg: BrainMsg) {
        if !self.members.up.contains_key(&from) {
            // From a run this node does not see up (it went down before its
            // message was read, or the message came before its node-up):
            // the hello exchange that follows its node-up replaces it.
            return;
        }
        match msg {
            BrainMsg::Hello {
                reply,
                flags,
                busy,
                states,
            } => self.on_hello(from, reply, flags, busy, states),
            BrainMsg::Update {
                flags,
                busy,
                states,
                refused,
            } => self.on_update(from, flags, busy, states, refused),
            BrainMsg::Commit {
                prev,
                version,
                change,
            } => self.on_commit(from, prev, version, &change),
            BrainMsg::Ack { version } => self.on_ack(from, version),
            BrainMsg::GetSnapshot { force } => self.send_snapshot(from, force),
            BrainMsg::Snapshot {
                model,
                history,
                force,
            } => self.on_snapshot(from, model, &history, force),
            BrainMsg::Order {
                view,
                op,
                tag,
                ticket,
                ends,
                handover,
            } => self.on_order(from, &view, op, &tag, ticket, ends, handover),
            BrainMsg::JobReport {
                ticket,
                node,
                steps,
                end,
            } => self.on_job_report(ticket, node, steps, end),
            BrainMsg::Call { id, call } => self.on_call(from, id, call),
            BrainMsg::Answer { id, answer } => self.on_answer(from, id, answer),
        }
    }

    fn on_hello(
        &mut self,
        from: u16,
        reply: bool,
        flags: Flags,
        busy: BTreeMap<String, Activity>,
        states: BTreeMap<String, State>,
    ) {
        let Some(peer) = self.members.up.get_mut(&from) else {
            return;
        };
        peer.synced = true;
        peer.flags = flags;
        peer.busy = busy;
        peer.states = states;
        if !reply {
            self.members.hello_to.entry(from).or_insert(true);
        }
        self.sync_peer_states(from);
    }

    fn on_update(
        &mut self,
        from: u16,
        flags: Option<Flags>,
        busy: Vec<(String, Option<Activity>)>,
        states: Vec<(String, State)>,
        refused: Vec<(String, String)>,
    ) {
        let Some(peer) = self.members.up.get_mut(&from).filter(|p| p.synced) else {
            return;
        };
        let mut regained = false;
        if let Some(flags) = flags {
            regained =
                flags.quorate && !peer.flags.quorate || flags.fast_lease && !peer.flags.fast_lease;
            peer.flags = flags;
        }
        if regained {
            // What it refused for want of quorum it may run now.
            self.place_forget_refusals(from);
        }
        let Some(peer) = self.members.up.get_mut(&from) else {
            return;
        };
        let mut touched: Vec<String> = Vec::new();
        for (tag, activity) in busy {
            match activity {
                Some(activity) => peer.busy.insert(tag.clone(), activity),
                None => peer.busy.remove(&tag),
            };
            touched.push(tag);
        }
        for (tag, state) in &states {
            peer.states.insert(tag.clone(), *state);
            touched.push(tag.clone());
        }
        for (tag, state) in states {
            // Running and watched: a failed start (in service, unprotected,
            // until its remove) does not count.
            if state == State::Isp {
                self.members.ran.insert(Place {
                    node: from,
                    tag: tag.clone(),
                });
            }
            self.record_state(from, tag, state);
        }
        for tag in &touched {
            self.place_progress(from, tag);
        }
        for (tag, why) in refused {
            self.place_refused(from, &tag, why);
        }
    }

    /// Writes `node`'s reported state of `tag` into the model, if the
    /// configuration knows the resource yet.
    fn record_state(&mut self, node: u16, tag: String, state: State) {
        let place = Place { node, tag };
        if self
            .model
            .resources
            .get(&place)
            .is_some_and(|r| r.state != state)
        {
            self.apply_change(&crate::model::Change::SetState { place, state });
        }
    }

    /// Writes every state `node` reported into the model (after its hello,
    /// or after the configuration changed and may know more resources).
    pub(super) fn sync_peer_states(&mut self, node: u16) {
        let states: Vec<(String, State)> = self
            .members
            .up
            .get(&node)
            .map(|p| p.states.iter().map(|(t, s)| (t.clone(), *s)).collect())
            .unwrap_or_default();
        for (tag, state) in states {
            self.record_state(node, tag, state);
        }
    }

    /// After a configuration change: every reported peer's states again.
    pub(super) fn sync_all_peer_states(&mut self) {
        let synced: Vec<u16> = self
            .members
            .up
            .iter()
            .filter(|(_, p)| p.synced)
            .map(|(n, _)| *n)
            .collect();
        for node in synced {
            self.sync_peer_states(node);
        }
    }

    /// What this node says of itself now.
    pub(super) fn own_flags(&mut self) -> Flags {
        let digest = self.config_digest();
        Flags {
            view: self.view(),
            version: self.model.version(),
            digest,
            kits: self.cfg.kits.keys().cloned().collect(),
            ..self.placement_flags()
        }
    }

    /// What placement reads of this node's flags: whether it is probing or
    /// stopping, what it holds off and cannot run (not the view, version
    /// and fingerprint, which cost a pass over the configuration).
    pub(super) fn placement_flags(&self) -> Flags {
        let node = self.cfg.node;
        let mut cannot = BTreeMap::new();
        for r in self
            .model
            .resources
            .values()
            .filter(|r| r.place.node == node)
        {
            let kind = format!("{}/{}", r.app, r.rtype);
            match self.cfg.kits.get(&kind) {
                None => {
                    cannot.insert(
                        r.place.tag.clone(),
                        format!("no recovery kit {kind} on {}", self.who(node)),
                    );
                }
                Some(kit) if !kit.problems.is_empty() => {
                    cannot.insert(
                        r.place.tag.clone(),
                        format!(
                            "recovery kit {kind} on {}: {}",
                            self.who(node),
                            kit.problems.join("; ")
                        ),
                    );
                }
                Some(_) => {}
            }
        }
        Flags {
            probing: self.local.probing,
            leaving: self.local.leaving,
            held: self.local.held.clone(),
            cannot,
            expired: self.expired_set(),
            expired_fast: self.fast_expired_set(),
            quorate: self.has_quorum(),
            fast_lease: self.quorum.fast_had,
            expected_votes: self.cfg.quorum.as_ref().map_or(0, |q| q.expected),
            seen_all: self
                .cfg
                .nodes
                .iter()
                .all(|n| *n == node || self.members.seen.contains(n)),
            ..Flags::default()
        }
    }

    /// This node's resources' states.
    pub(super) fn own_states(&self) -> BTreeMap<String, State> {
        self.model
            .resources
            .values()
            .filter(|r| r.place.node == self.cfg.node)
            .map(|r| (r.place.tag.clone(), r.state))
            .collect()
    }

    /// Tells the peers what changed here: a hello to those owed one, an
    /// update to the rest.
    pub(super) fn flush_facts(&mut self) {
        if self.members.up.is_empty() {
            self.members.hello_to.clear();
            self.members.refused.clear();
            return;
        }
        let flags = self.own_flags();
        let busy = self.local.busy();
        let states = self.own_states();
        let hellos: Vec<(u16, bool)> = std::mem::take(&mut self.members.hello_to)
            .into_iter()
            .filter(|(node, _)| self.members.up.contains_key(node))
            .collect();
        for (to, reply) in &hellos {
            self.send(
                *to,
                BrainMsg::Hello {
                    reply: *reply,
                    flags: flags.clone(),
                    busy: busy.clone(),
                    states: states.clone(),
                },
            );
        }
        let flags_changed = self.members.sent_flags.as_ref() != Some(&flags);
        let busy_delta: Vec<(String, Option<Activity>)> = diff(&self.members.sent_busy, &busy);
        let states_delta: Vec<(String, State)> = diff(&self.members.sent_states, &states)
            .into_iter()
            .filter_map(|(tag, state)| state.map(|s| (tag, s)))
            .collect();
        let own = self.cfg.node;
        for (tag, state) in &states_delta {
            if *state == State::Isp {
                self.members.ran.insert(Place {
                    node: own,
                    tag: tag.clone(),
                });
            }
        }
        let refused = std::mem::take(&mut self.members.refused);
        let update = flags_changed
            || !busy_delta.is_empty()
            || !states_delta.is_empty()
            || !refused.is_empty();
        if update {
            let peers: Vec<u16> = self
                .members
                .up
                .keys()
                .copied()
                .filter(|p| !hellos.iter().any(|(h, _)| h == p) || !refused.is_empty())
                .collect();
            for to in peers {
                self.send(
                    to,
                    BrainMsg::Update {
                        flags: flags_changed.then(|| flags.clone()),
                        busy: busy_delta.clone(),
                        states: states_delta.clone(),
                        refused: refused.clone(),
                    },
                );
            }
        }
        self.members.sent_flags = Some(flags);
        self.members.sent_busy = busy;
        self.members.sent_states = states;
    }
}

/// What changed from `before` to `after`: new or changed values, and
/// `None` for keys gone.
fn diff<V: Clone + PartialEq>(
    before: &BTreeMap<String, V>,
    after: &BTreeMap<String, V>,
) -> Vec<(String, Option<V>)> {
    let mut changes: Vec<(String, Option<V>)> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    changes.extend(
        before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .map(|k| (k.clone(), None)),
    );
    changes
}
