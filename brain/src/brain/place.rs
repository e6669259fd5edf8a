//! Where each hierarchy group runs: the coordinator's scheduler.
//!
//! After every input the coordinator recomputes, from the whole state (the
//! configuration, every node's reported states and actions, who is up,
//! standby, maintenance, moves asked for), what must change, as Pacemaker's
//! scheduler does; it never reasons from the one event at hand, so two
//! nodes lost 50 ms apart, or a node lost while it takes over, end the same
//! as any other loss. It decides only when every node it sees has reported
//! and reports the same view, and then only about groups no node is acting
//! on: a node's report of its view comes after everything it did in the
//! old one, so what the coordinator knows of each node is complete.
//!
//! For each group:
//! - a member BLOCKED on any node (up or down): nothing is started or
//!   stopped until it is cleaned up;
//! - role stopped: stop it wherever it runs;
//! - running on several nodes (after a partition heals, a stalled daemon
//!   resumes, a daemon restarts): keep it on the best of them, stop it on
//!   the others, count it;
//! - running on one node: keep it there (no failback) unless that node is
//!   stopping or in standby, or an administrator moves it;
//! - running nowhere with role started: start it on the best node that
//!   can run it (priority, then node id).
//!
//! Orders name the coordinator's view; a node whose view changed ignores
//! them, and the coordinator decides again once views agree.

use std::collections::{BTreeMap, BTreeSet};

use heartline_core::Instant;

use crate::groups::Group;
use crate::message::{Activity, BrainMsg, Flags, Op, Ticket};
use crate::model::{Place, Role, State};

use super::{Brain, Level};

/// A move an administrator asked for (in-service, out-of-service,
/// switchover), held by the coordinator until done.
#[derive(Debug, Clone)]
pub(super) struct Move {
    /// Where to (`None`: nowhere).
    pub(super) to: Option<u16>,
    /// Who waits.
    pub(super) ticket: Ticket,
    /// Whether an order was sent for it (else the coordinator ends it).
    pub(super) ordered: bool,
}

/// What the coordinator keeps between decisions.
#[derive(Debug, Default)]
pub(super) struct PlaceState {
    /// Orders sent and not yet acted on, by group and node.
    orders: BTreeMap<Place, BTreeMap<u16, (Op, Instant)>>,
    /// Orders refused in this view, by (node, group), with why.
    refused: BTreeMap<(u16, Place), String>,
    /// Moves under way, by group.
    pub(super) moves: BTreeMap<Place, Move>,
    /// Groups found running on several nodes and not yet resolved.
    multi: BTreeSet<Place>,
    /// Moves waiting for this coordinator's configuration to catch up:
    /// the group, where to, who waits, until when.
    pub(super) queued_moves: Vec<(Place, Option<u16>, Ticket, Instant)>,
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start or stop the group `key` on `node` (its hierarchy of `tag`).
    Order {
        /// The node.
        node: u16,
        /// Start or stop.
        op: Op,
        /// The group.
        key: Place,
        /// A member on `node`.
        tag: String,
        /// Who waits, and whether this action ends the request.
        ticket: Option<(Ticket, bool)>,
        /// Why, in words.
        why: String,
    },
    /// A move is over.
    EndMove {
        /// The group.
        key: Place,
        /// Done (with a line) or failed (why), to tell who waits; `None`
        /// when the last action's report told them.
        result: Option<Result<String, String>>,
    },
    /// A group runs on several nodes.
    MultiActive {
        /// The group.
        key: Place,
        /// Where.
        nodes: Vec<u16>,
        /// The node kept.
        keep: u16,
    },
    /// Something to say once.
    Note {
        /// The text.
        text: String,
    },
}

/// What the scheduler knows of one node.
struct NodeView<'a> {
    flags: &'a Flags,
    busy: &'a BTreeMap<String, Activity>,
}

/// Drops the starts of group `key` from `decisions[from..]`, noting why,
/// and ends a move that waited for one.
fn hold_starts(decisions: &mut Vec<Decision>, from: usize, key: &Place, why: &str) {
    let before = decisions.len();
    let mut i = from;
    let mut ended = false;
    while i < decisions.len() {
        match &decisions[i] {
            Decision::Order {
                op: Op::Start,
                ticket,
                ..
            } => {
                ended |= ticket.is_some();
                decisions.remove(i);
            }
            _ => i += 1,
        }
    }
    if decisions.len() < before {
        decisions.push(Decision::Note {
            text: format!("{}'s hierarchy is not started: {why}", key.tag),
        });
        if ended {
            decisions.push(Decision::EndMove {
                key: key.clone(),
                result: Some(Err(format!(
                    "{}'s hierarchy cannot be started: {why}",
                    key.tag
                ))),
            });
        }
    }
}

impl Brain {
    /// Whether this node decides placement now.
    fn may_decide(&self) -> bool {
        let mine = self.model.version();
        self.coordinator() == self.cfg.node
            && self.has_quorum()
            && self.settled()
            && self.heard_enough()
            && !self.local.probing
            && !self.model.maintenance
            && self.members.up.values().all(|p| p.flags.version == mine)
    }

    /// The coordinator's decisions, carried out.
    pub(super) fn decide(&mut self) {
        if !self.may_decide() {
            return;
        }
        let own = self.placement_flags();
        let own_busy = self.local.busy();
        let decisions = self.plan(&own, &own_busy);
        let replan = decisions
            .iter()
            .any(|d| matches!(d, Decision::EndMove { .. }));
        let view = self.view();
        for decision in decisions {
            self.carry_out(decision, &view);
        }
        // A group found on several nodes that runs on one (or none) again:
        // the next time is a new finding, warned of and counted.
        let resolved: Vec<Place> = self
            .place
            .multi
            .iter()
            .filter(|key| self.running_on(key).len() <= 1)
            .cloned()
            .collect();
        for key in resolved {
            self.place.multi.remove(&key);
        }
        // Orders change nothing this plan did not account for (the groups
        // they concern are skipped until the orders are acted on); an
        // ended move does: the group is decided afresh.
        self.dirty = replan;
    }

    fn carry_out(&mut self, decision: Decision, view: &crate::message::View) {
        match decision {
            Decision::Order {
                node,
                op,
                key,
                tag,
                ticket,
                why,
            } => {
                if self
                    .place
                    .orders
                    .get(&key)
                    .and_then(|o| o.get(&node))
                    .is_some_and(|(o, _)| *o == op)
                {
                    return;
                }
                self.place
                    .orders
                    .entry(key.clone())
                    .or_default()
                    .insert(node, (op, self.now));
                if let Some((t, _)) = ticket {
                    if let Some(m) = self.place.moves.get_mut(&key) {
                        if m.ticket == t {
                            m.ordered = true;
                        }
                    }
                }
                self.stats.orders += 1;
                let verb = match op {
                    Op::Start => "starts",
                    Op::Stop => "stops",
                };
                // One line that says what and why, nodes by name.
                self.notice(
                    Level::Info,
                    format!("decision: {} {verb} {}: {why}", self.who(node), key.tag),
                );
                let view = view.clone();
                let (ticket, ends) = match ticket {
                    Some((t, ends)) => (Some(t), ends),
                    None => (None, false),
                };
                let handover = op == Op::Start && self.is_handover(node, &tag);
                if node == self.cfg.node {
                    // Its effect is in this node's own jobs at once.
                    self.forget_order(&key, node);
                    self.on_order(node, &view, op, &tag, ticket, ends, handover);
                } else {
                    self.send(
                        node,
                        BrainMsg::Order {
                            view,
                            op,
                            tag,
                            ticket,
                            ends,
                            handover,
                        },
                    );
                }
            }
            Decision::EndMove { key, result } => {
                if let (Some(m), Some(result)) = (self.place.moves.remove(&key), result) {
                    let (steps, end) = match result {
                        Ok(line) => (vec![line], Ok(())),
                        Err(why) => (Vec::new(), Err(why)),
                    };
                    self.end_ticket(m.ticket, steps, end);
                }
            }
            Decision::MultiActive { key, nodes, keep } => {
                if self.place.multi.insert(key.clone()) {
                    self.stats.multi_active += 1;
                    let list: Vec<String> = nodes.iter().map(|&n| self.who(n)).collect();
                    self.notice(
                        Level::Warn,
                        format!(
                            "{}'s hierarchy runs on {} at once: keeping it on {}, stopping it on the others",
                            key.tag,
                            list.join(", "),
                            self.who(keep)
                        ),
                    );
                }
            }
            Decision::Note { text } => self.note_once(Level::Warn, text),
        }
    }

    /// Sends a ticket its end from the coordinator itself.
    pub(super) fn end_ticket(
        &mut self,
        ticket: Ticket,
        steps: Vec<String>,
        end: Result<(), String>,
    ) {
        let node = self.cfg.node;
        if ticket.origin == node {
            self.on_job_report(ticket, node, steps, Some(end));
        } else {
            self.send(
                ticket.origin,
                BrainMsg::JobReport {
                    ticket,
                    node,
                    steps,
                    end: Some(end),
                },
            );
        }
    }

    /// What must change, from the whole state. Pure: it reads, and the
    /// caller carries the decisions out.
    pub fn plan(&self, own: &Flags, own_busy: &BTreeMap<String, Activity>) -> Vec<Decision> {
        let nodes = self.node_views(own, own_busy);
        let mut decisions = Vec::new();
        let no_start = self.why_no_start();
        for group in self.groups.iter() {
            let from = decisions.len();
            self.plan_group(group, &nodes, &mut decisions);
            let wait = no_start.clone().or_else(|| self.unfenced(group, &nodes));
            if let Some(why) = wait {
                hold_starts(&mut decisions, from, &group.key, &why);
            }
        }
        // Moves for groups that no longer exist.
        for key in self.place.moves.keys() {
            if self.groups.by_key(key).is_none() {
                decisions.push(Decision::EndMove {
                    key: key.clone(),
                    result: Some(Err(format!("{key} no longer exists"))),
                });
            }
        }
        decisions
    }

    /// Every node up as placement sees it: this one with `own`, the
    /// others as they last reported.
    fn node_views<'a>(
        &'a self,
        own: &'a Flags,
        own_busy: &'a BTreeMap<String, Activity>,
    ) -> BTreeMap<u16, NodeView<'a>> {
        let mut nodes: BTreeMap<u16, NodeView<'_>> = BTreeMap::new();
        nodes.insert(
            self.cfg.node,
            NodeView {
                flags: own,
                busy: own_busy,
            },
        );
        for (node, peer) in &self.members.up {
            nodes.insert(
                *node,
                NodeView {
                    flags: &peer.flags,
                    busy: &peer.busy,
                },
            );
        }
        nodes
    }

    fn plan_group(&self, g: &Group, nodes: &BTreeMap<u16, NodeView<'_>>, out: &mut Vec<Decision>) {
        let model = &self.model;
        let key = &g.key;
        let mv = self.place.moves.get(key);
        let orders = self.place.orders.get(key);
        // One pass over the members: what each node up runs, and whether
        // anything stops the group from being decided now.
        let mut here: Vec<(u16, usize, usize)> = Vec::new();
        for (&n, members) in &g.members {
            let view = nodes.get(&n);
            let mut running = 0;
            let slots = g.on_slots(n);
            for (place, slot) in members.iter().zip(slots) {
                let state = self.states.get(*slot).copied().unwrap_or(State::Osu);
                let fenced = view.is_none() && self.cfg.quorum.is_some() && self.fenced_for(n, g);
                if state == State::Blocked && !fenced {
                    // A failed stop anywhere, even on a node that is down,
                    // blocks the group: it may still run there.
                    out.push(Decision::Note {
                        text: format!(
                            "{}'s hierarchy is BLOCKED: {} is BLOCKED on {} (its stop failed; it may still run there); nothing is started or stopped for it until that node stops it and heartline cleanup {} --node {} is run",
                            key.tag,
                            place.tag,
                            self.who(place.node),
                            place.tag,
                            place.node
                        ),
                    });
                    if mv.is_some() {
                        out.push(Decision::EndMove {
                            key: key.clone(),
                            result: Some(Err(format!(
                                "{}'s hierarchy is blocked: {} on {} failed to stop",
                                key.tag,
                                place.tag,
                                self.who(place.node)
                            ))),
                        });
                    }
                    return;
                }
                if view.is_some() && state.in_service() {
                    running += 1;
                }
            }
            let Some(view) = view else { continue };
            // A node still learning what runs on it may run anything; an
            // action under way, or an order not yet seen acted on, may be
            // changing where it runs: decide once it has ended.
            let busy =
                !view.busy.is_empty() && members.iter().any(|p| view.busy.contains_key(&p.tag));
            if view.flags.probing || busy || orders.is_some_and(|o| o.contains_key(&n)) {
                return;
            }
            here.push((n, running, members.len()));
        }
        let active: Vec<u16> = here.iter().filter(|h| h.1 > 0).map(|h| h.0).collect();
        let complete = |n: u16| here.iter().any(|h| h.0 == n && h.1 == h.2);
        let in_service = |n: u16| here.iter().find(|h| h.0 == n).map_or(0, |h| h.1);
        let role = match mv {
            Some(Move { to: Some(_), .. }) => Role::Started,
            Some(Move { to: None, .. }) => Role::Stopped,
            None => g.role,
        };
        let ticket_of = |ends: bool| mv.map(|m| (m.ticket, ends));
        let order =
            |node: u16, op: Op, ticket: Option<(Ticket, bool)>, why: String| Decision::Order {
                node,
                op,
                key: key.clone(),
                tag: g.tag_on(node).unwrap_or_default().to_string(),
                ticket,
                why,
            };
        if role == Role::Stopped {
            if active.is_empty() {
                if let Some(m) = mv {
                    out.push(Decision::EndMove {
                        key: key.clone(),
                        result: (!m.ordered).then(|| {
                            Ok(format!("{}'s hierarchy is already out of service", key.tag))
                        }),
                    });
                }
            }
            for &n in &active {
                out.push(order(
                    n,
                    Op::Stop,
                    ticket_of(true),
                    "its role is stopped".into(),
                ));
            }
            return;
        }
        let keepable = |n: u16| {
            let flags = nodes[&n].flags;
            !flags.leaving && !model.standby.contains(&n)
        };
        if active.len() > 1 {
            let keep = active
                .iter()
                .copied()
                .max_by_key(|&n| {
                    (
                        keepable(n),
                        Some(n) == mv.and_then(|m| m.to),
                        in_service(n),
                        std::cmp::Reverse(g.priority(n)),
                        std::cmp::Reverse(n),
                    )
                })
                .unwrap_or(active[0]);
            out.push(Decision::MultiActive {
                key: key.clone(),
                nodes: active.clone(),
                keep,
            });
            for &n in active.iter().filter(|&&n| n != keep) {
                out.push(order(
                    n,
                    Op::Stop,
                    None,
                    format!("it runs on {} too", self.who(keep)),
                ));
            }
            return;
        }
        if let [n] = active[..] {
            if let Some(t) = mv.and_then(|m| m.to) {
                if t != n {
                    match self.eligible(g, t, nodes, true) {
                        Ok(()) => out.push(order(
                            n,
                            Op::Stop,
                            ticket_of(false),
                            format!("an administrator moves it to {}", self.who(t)),
                        )),
                        Err(why) => out.push(Decision::EndMove {
                            key: key.clone(),
                            result: Some(Err(why)),
                        }),
                    }
                    return;
                }
                if complete(n) {
                    let ordered = mv.is_some_and(|m| m.ordered);
                    out.push(Decision::EndMove {
                        key: key.clone(),
                        result: (!ordered).then(|| {
                            Ok(format!(
                                "{}'s hierarchy is already in service on {}",
                                key.tag,
                                self.who(n)
                            ))
                        }),
                    });
                } else {
                    out.push(order(n, Op::Start, ticket_of(true), "asked for".into()));
                }
                return;
            }
            if !keepable(n) {
                let why = if nodes[&n].flags.leaving {
                    format!("{} is stopping", self.who(n))
                } else {
                    format!("{} is in standby", self.who(n))
                };
                out.push(order(n, Op::Stop, None, why));
            } else if !complete(n) {
                out.push(order(
                    n,
                    Op::Start,
                    None,
                    "part of it is out of service".into(),
                ));
            }
            return;
        }
        // Running nowhere, role started.
        if let Some(t) = mv.and_then(|m| m.to) {
            match self.eligible(g, t, nodes, true) {
                Ok(()) => out.push(order(t, Op::Start, ticket_of(true), "asked for".into())),
                Err(why) => out.push(Decision::EndMove {
                    key: key.clone(),
                    result: Some(Err(why)),
                }),
            }
            return;
        }
        match self.best_node(g, nodes, &[]) {
            Ok(n) => {
                // Where it ran, if that node is lost: the why of a takeover.
                let lost: Vec<String> = g
                    .nodes()
                    .filter(|m| !nodes.contains_key(m))
                    .filter(|&m| {
                        g.on_slots(m).iter().any(|slot| {
                            self.states
                                .get(*slot)
                                .is_some_and(|state| state.in_service())
                        })
                    })
                    .map(|m| self.who(m))
                    .collect();
                let best = format!("the best node that can run it (priority {})", g.priority(n));
                let why = if lost.is_empty() {
                    best
                } else {
                    format!("{} ran it and is down; {best}", lost.join(", "))
                };
                out.push(order(n, Op::Start, None, why));
            }
            Err(reasons) => out.push(Decision::Note {
                text: format!(
                    "{}'s hierarchy should run but no node can run it: {}",
                    key.tag,
                    reasons.join("; ")
                ),
            }),
        }
    }

    /// The best node up that may be given the group (by priority, then
    /// node id), other than those in `except`; else why none may.
    fn best_node(
        &self,
        g: &Group,
        nodes: &BTreeMap<u16, NodeView<'_>>,
        except: &[u16],
    ) -> Result<u16, Vec<String>> {
        let mut reasons = Vec::new();
        g.nodes()
            .filter(|n| !except.contains(n))
            .filter(|&n| match self.eligible(g, n, nodes, false) {
                Ok(()) => true,
                Err(why) => {
                    reasons.push(why);
                    false
                }
            })
            .min_by_key(|&n| (g.priority(n), n))
            .ok_or(reasons)
    }

    /// Where each group would go next, as this node sees the cluster: for
    /// a group that runs, the node that would take it over if the nodes it
    /// runs on were lost; for one that does not, where it would start.
    /// `Err`: no node could, and why.
    #[must_use]
    pub fn next_nodes(&self) -> Vec<(Place, Result<u16, String>)> {
        let own = self.placement_flags();
        let own_busy = self.local.busy();
        let nodes = self.node_views(&own, &own_busy);
        self.groups
            .iter()
            .map(|g| {
                let active: Vec<u16> = g
                    .nodes()
                    .filter(|n| nodes.contains_key(n))
                    .filter(|&n| {
                        g.on_slots(n).iter().any(|slot| {
                            self.states
                                .get(*slot)
                                .is_some_and(|state| state.in_service())
                        })
                    })
                    .collect();
                let next = self.best_node(g, &nodes, &active).map_err(|reasons| {
                    if reasons.is_empty() {
                        "no other node has an instance of it".to_string()
                    } else {
                        reasons.join("; ")
                    }
                });
                (g.key.clone(), next)
            })
            .collect()
    }

    /// Why the group may not be started anywhere yet: a node that is not up
    /// and has an instance of it is not yet past its lease for every node
    /// of the partition. What this node last heard of that node's states
    /// does not count: it may be stale (this node restarted since, or
    /// another coordinator ordered a start it never heard of).
    fn unfenced(&self, g: &Group, nodes: &BTreeMap<u16, NodeView<'_>>) -> Option<String> {
        self.cfg.quorum.as_ref()?;
        let n = g
            .members
            .keys()
            .copied()
            .find(|n| !nodes.contains_key(n) && !self.fenced_for(*n, g))?;
        let lease = if self.fast_group(g) {
            "fast lease"
        } else {
            "lease"
        };
        Some(format!(
            "{} may still run it: waiting for its {lease} to end on every node of this partition",
            self.who(n)
        ))
    }

    /// Whether `n` may be given the group to run (`explicit`: an
    /// administrator asked for that node, which overrides its hold).
    fn eligible(
        &self,
        g: &Group,
        n: u16,
        nodes: &BTreeMap<u16, NodeView<'_>>,
        explicit: bool,
    ) -> Result<(), String> {
        let Some(view) = nodes.get(&n) else {
            return Err(format!("{} is not up", self.who(n)));
        };
        let flags = view.flags;
        let members = g.on(n);
        if members.is_empty() {
            return Err(format!(
                "{} has no instance of {}'s hierarchy",
                self.who(n),
                g.key.tag
            ));
        }
        if flags.leaving {
            return Err(format!("{} is stopping", self.who(n)));
        }
        if flags.probing {
            return Err(format!("{} is still probing", self.who(n)));
        }
        if self.cfg.quorum.is_some() && !flags.quorate {
            return Err(format!("{} has no quorum", self.who(n)));
        }
        if self.model.standby.contains(&n) {
            return Err(format!("{} is in standby", self.who(n)));
        }
        if !explicit && members.iter().any(|p| flags.held.contains(&p.tag)) {
            return Err(format!(
                "{} holds it out (init out-of-service) until heartline in-service there",
                self.who(n)
            ));
        }
        for place in members {
            if let Some(r) = self.model.resources.get(place) {
                if r.state.failed() {
                    return Err(format!(
                        "{} is {} on {} (heartline cleanup {} --node {n})",
                        place.tag,
                        r.state,
                        self.who(n),
                        place.tag
                    ));
                }
            }
            if let Some(why) = flags.cannot.get(&place.tag) {
                return Err(why.clone());
            }
        }
        if let Some(why) = self.place.refused.get(&(n, g.key.clone())) {
            return Err(format!("{} refused it: {why}", self.who(n)));
        }
        Ok(())
    }

    fn forget_order(&mut self, key: &Place, node: u16) {
        if let Some(orders) = self.place.orders.get_mut(key) {
            orders.remove(&node);
            if orders.is_empty() {
                self.place.orders.remove(key);
            }
        }
    }

    pub(super) fn place_view_changed(&mut self) {
        self.place.orders.clear();
        self.place.refused.clear();
        // Another node coordinates now: the moves this one held are its.
        // The nodes that asked for them hand them to it (see
        // `requests_view_changed`); reports of actions under way still
        // reach them.
        if self.coordinator() != self.cfg.node {
            self.place.moves.clear();
            self.place.queued_moves.clear();
        }
    }

    /// `node` reported progress on `tag`: orders to it for that group are
    /// acted on.
    pub(super) fn place_progress(&mut self, node: u16, tag: &str) {
        let place = Place {
            node,
            tag: tag.to_string(),
        };
        if let Some(key) = self.groups.of(&place).map(|g| g.key.clone()) {
            self.forget_order(&key, node);
        }
    }

    /// `node` regained quorum: its refusals are forgotten.
    pub(super) fn place_forget_refusals(&mut self, node: u16) {
        self.place.refused.retain(|(n, _), _| *n != node);
    }

    /// `node` refused an order for the group of `tag`.
    pub(super) fn place_refused(&mut self, node: u16, tag: &str, why: String) {
        let place = Place {
            node,
            tag: tag.to_string(),
        };
        if let Some(key) = self.groups.of(&place).map(|g| g.key.clone()) {
            self.forget_order(&key, node);
            if self.coordinator() == self.cfg.node {
                self.notice(
                    Level::Warn,
                    format!(
                        "{} refused to act on {}'s hierarchy: {why}",
                        self.who(node),
                        key.tag
                    ),
                );
            }
            self.place.refused.insert((node, key), why);
        }
    }

    pub(super) fn place_timers(&mut self) {
        self.queued_moves_progress();
        let now = self.now;
        let retry = self.cfg.order_retry;
        for orders in self.place.orders.values_mut() {
            orders.retain(|_, (_, sent)| now.saturating_since(*sent) < retry);
        }
        self.place.orders.retain(|_, o| !o.is_empty());
    }

    pub(super) fn place_timeout(&self) -> Option<Instant> {
        let settle = (!self.heard_enough()).then_some(self.started + self.cfg.settle);
        self.place
            .orders
            .values()
            .flat_map(BTreeMap::values)
            .map(|(_, sent)| *sent + self.cfg.order_retry)
            .chain(self.place.queued_moves.iter().map(|m| m.3))
            .chain(settle)
            .min()
    }

    /// Where the group of `place` runs or is being acted on, as this node
    /// knows: nodes up with a member that may run or an action under way.
    pub(super) fn running_on(&self, place: &Place) -> Vec<u16> {
        let Some(g) = self.groups.of(place) else {
            return Vec::new();
        };
        let own_busy = self.local.busy();
        g.members
            .iter()
            .filter(|(n, members)| {
                let busy = if **n == self.cfg.node {
                    members.iter().any(|p| own_busy.contains_key(&p.tag))
                } else if let Some(peer) = self.members.up.get(n) {
                    members.iter().any(|p| peer.busy.contains_key(&p.tag))
                } else {
                    return false;
                };
                busy || members.iter().any(|p| {
                    self.model
                        .resources
                        .get(p)
                        .is_some_and(|r| r.state.maybe_running())
                })
            })
            .map(|(n, _)| *n)
            .collect()
    }
}
