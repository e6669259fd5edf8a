//! The administrator's requests, and the calls brains make of each other.
//!
//! A request names a resource on this node. Changes go to the coordinator;
//! in-service, out-of-service and switchover are moves the coordinator
//! carries out with orders to whichever nodes must act, each of which
//! reports its steps to the node the request came in on, which answers once
//! the last action ended (or one failed). Every request that waits on
//! another node fails with a clear line if that node goes down first, and
//! times out otherwise.

use std::collections::{BTreeMap, BTreeSet};

use heartline_core::Instant;

use crate::api::{Answer, NodeReport, Request, RequestId, ResourceStatus};
use crate::message::{BrainMsg, Call, Ticket};
use crate::model::{Change, Place, Role, State, Version};

use super::config::Requester;
use super::local::After;
use super::place::Move;
use super::{Brain, Level};

#[derive(Debug, Clone, Copy)]
enum Purpose {
    Change(Option<RequestId>),
    Move(RequestId),
    Cleanup(RequestId),
    Digest(RequestId),
}

#[derive(Debug)]
struct OutCall {
    to: u16,
    purpose: Purpose,
    deadline: Instant,
}

#[derive(Debug)]
struct Pending {
    lines: Vec<String>,
    /// The coordinator holding the move.
    via: u16,
    deadline: Instant,
    /// The move: its group and where to.
    key: Place,
    to: Option<u16>,
    /// The call that handed it to `via`, if not this node.
    call: Option<u64>,
}

#[derive(Debug)]
struct Verify {
    waiting: BTreeSet<u16>,
    answers: BTreeMap<u16, Result<(Version, u64), String>>,
    deadline: Instant,
}

/// Requests and calls under way.
#[derive(Debug, Default)]
pub(super) struct RequestState {
    next_call: u64,
    calls: BTreeMap<u64, OutCall>,
    pending: BTreeMap<RequestId, Pending>,
    verifies: BTreeMap<RequestId, Verify>,
}

impl Brain {
    pub(super) fn on_request(&mut self, id: RequestId, request: Request) {
        match request {
            Request::Lcd => {
                let model = self.model.clone();
                self.reply(id, Answer::Model { model });
            }
            Request::Change { change } => self.request_change(id, change),
            Request::InService { tag } => self.request_in_service(id, &tag),
            Request::OutOfService { tag } => self.request_out_of_service(id, &tag),
            Request::SendEvent { class, event, tag } => {
                let place = self.local_place(&tag);
                match self.model.resources.get(&place).map(|r| r.state) {
                    None => self.reply(id, Answer::error(no_such(&place))),
                    Some(state) if !state.in_service() => self.reply(
                        id,
                        Answer::error(format!(
                            "{tag} is {state} on {}: only a resource in service is recovered",
                            self.who(self.cfg.node)
                        )),
                    ),
                    Some(_) => {
                        self.notice(
                            Level::Info,
                            format!("event {class},{event} raised on {tag} (sendevent)"),
                        );
                        let after = After {
                            reply: Some(id),
                            ticket: None,
                        };
                        self.on_failure(&tag, format!("{class},{event}"), after);
                    }
                }
            }
            Request::Switchover { tag, to } => self.request_switchover(id, &tag, to),
            Request::Cleanup { tag, node } => {
                let node = node.unwrap_or(self.cfg.node);
                if node == self.cfg.node {
                    let answer = match self.cleanup(&tag) {
                        Ok(line) => Answer::Done { steps: vec![line] },
                        Err(why) => Answer::error(why),
                    };
                    self.reply(id, answer);
                } else if self.members.up.contains_key(&node) {
                    self.call(node, Call::Cleanup { tag }, Purpose::Cleanup(id));
                } else {
                    self.reply(
                        id,
                        Answer::error(format!(
                            "{} is not up; its resources are cleaned up on it",
                            self.who(node)
                        )),
                    );
                }
            }
            Request::Standby { node, on } => {
                if self.cfg.nodes.contains(&node) {
                    self.request_change(id, Change::SetStandby { node, on });
                } else {
                    self.reply(
                        id,
                        Answer::error(format!("node {node} is not a node of this cluster")),
                    );
                }
            }
            Request::Maintenance { on } => {
                self.request_change(id, Change::SetMaintenance { on });
            }
            Request::Resync => self.resync(id),
            Request::Verify => self.start_verify(id),
            Request::Report => {
                let report = self.report();
                self.reply(id, Answer::Report(report));
            }
        }
    }

    fn local_place(&self, tag: &str) -> Place {
        Place {
            node: self.cfg.node,
            tag: tag.to_string(),
        }
    }

    fn request_change(&mut self, id: RequestId, change: Change) {
        if let Change::SetState { place, state } = &change {
            if place.node != self.cfg.node {
                let answer = Answer::error(format!(
                    "the state of {place} is {}'s to set: run it there (heartline --on {} ins setstate {} {state})",
                    self.who(place.node),
                    place.node,
                    place.tag
                ));
                self.reply(id, answer);
                return;
            }
            let answer = match self.model.check(&change) {
                Ok(()) => {
                    let (tag, state) = (place.tag.clone(), *state);
                    self.set_manual_state(&tag, state);
                    Answer::Changed {
                        version: self.model.version(),
                        unconfirmed: Vec::new(),
                    }
                }
                Err(e) => Answer::error(e.to_string()),
            };
            self.reply(id, answer);
            return;
        }
        self.propose(Requester::Local(id), change);
    }

    /// `ins setstate` on this node: recorded as told, nothing run.
    fn set_manual_state(&mut self, tag: &str, state: State) {
        self.notice(
            Level::Warn,
            format!("{tag} set {state} by hand on {}", self.who(self.cfg.node)),
        );
        let place = self.local_place(tag);
        self.apply_change(&Change::SetState { place, state });
    }

    fn refuse_in_maintenance(&mut self, id: RequestId) -> bool {
        if self.model.maintenance {
            self.reply(
                id,
                Answer::error(
                    "maintenance mode is on: nothing is started or stopped until heartline maintenance off",
                ),
            );
        }
        self.model.maintenance
    }

    fn request_in_service(&mut self, id: RequestId, tag: &str) {
        let place = self.local_place(tag);
        if !self.model.resources.contains_key(&place) {
            self.reply(id, Answer::error(no_such(&place)));
            return;
        }
        if self.refuse_in_maintenance(id) {
            return;
        }
        if self.local.leaving {
            self.reply(
                id,
                Answer::error(format!("{} is stopping", self.who(self.cfg.node))),
            );
            return;
        }
        let elsewhere: Vec<u16> = self
            .running_on(&place)
            .into_iter()
            .filter(|n| *n != self.cfg.node)
            .collect();
        if let Some(node) = elsewhere.first() {
            let other = self
                .groups
                .of(&place)
                .and_then(|g| g.tag_on(*node).map(str::to_string))
                .unwrap_or_default();
            self.reply(
                id,
                Answer::error(format!(
                    "{tag}'s hierarchy runs on {} ({other}); use heartline switchover to move it",
                    self.who(*node)
                )),
            );
            return;
        }
        // An administrator asking for it here says it is fixed: failures
        // (OSF) of its resources here are cleared. A failed stop is not:
        // it may still run, and needs a cleanup after making sure.
        let hierarchy = self.model.hierarchy(&place);
        for member in &hierarchy {
            let state = self
                .model
                .resources
                .get(&self.local_place(member))
                .map(|r| r.state);
            if state == Some(State::Blocked) {
                self.reply(
                    id,
                    Answer::error(format!(
                        "{member} is BLOCKED on {}: its stop failed and it may still run; make sure it is stopped, then heartline cleanup {member}",
                        self.who(self.cfg.node)
                    )),
                );
                return;
            }
        }
        for member in &hierarchy {
            let state = self
                .model
                .resources
                .get(&self.local_place(member))
                .map(|r| r.state);
            if state == Some(State::Osf) {
                let _ = self.cleanup(member);
            }
        }
        self.unhold(tag);
        self.request_move(id, &place, Some(self.cfg.node));
    }

    fn request_out_of_service(&mut self, id: RequestId, tag: &str) {
        let place = self.local_place(tag);
        if !self.model.resources.contains_key(&place) {
            self.reply(id, Answer::error(no_such(&place)));
            return;
        }
        if self.refuse_in_maintenance(id) {
            return;
        }
        self.request_move(id, &place, None);
    }

    fn request_switchover(&mut self, id: RequestId, tag: &str, to: u16) {
        let place = self.local_place(tag);
        if !self.model.resources.contains_key(&place) {
            self.reply(id, Answer::error(no_such(&place)));
            return;
        }
        if self.refuse_in_maintenance(id) {
            return;
        }
        if to != self.cfg.node && !self.members.up.contains_key(&to) {
            self.reply(
                id,
                Answer::error(format!(
                    "{} is not up; a switchover needs the node it goes to",
                    self.who(to)
                )),
            );
            return;
        }
        let target = self
            .groups
            .of(&place)
            .and_then(|g| g.tag_on(to).map(str::to_string));
        let Some(target) = target else {
            self.reply(
                id,
                Answer::error(format!(
                    "{} has no instance of {tag}'s hierarchy; extend it there first (heartline eqv create)",
                    self.who(to)
                )),
            );
            return;
        };
        let running = self.running_on(&place);
        if running == [to] {
            let there = Place {
                node: to,
                tag: target,
            };
            let complete = self.model.hierarchy(&there).iter().all(|t| {
                self.model
                    .resources
                    .get(&Place {
                        node: to,
                        tag: t.clone(),
                    })
                    .is_some_and(|r| r.state.in_service())
            });
            if complete {
                self.reply(
                    id,
                    Answer::error(format!(
                        "{tag}'s hierarchy already runs on {}",
                        self.who(to)
                    )),
                );
                return;
            }
        }
        self.request_move(id, &place, Some(to));
    }

    /// Hands a move to the coordinator; the answer comes from the actions'
    /// reports.
    fn request_move(&mut self, id: RequestId, place: &Place, to: Option<u16>) {
        let Some(key) = self.groups.of(place).map(|g| g.key.clone()) else {
            self.reply(id, Answer::error(no_such(place)));
            return;
        };
        self.requests.pending.insert(
            id,
            Pending {
                lines: Vec::new(),
                via: self.cfg.node,
                deadline: self.now + self.cfg.action_timeout,
                key,
                to,
                call: None,
            },
        );
        self.hand_move(id);
    }

    /// Hands the move of request `id` to the coordinator (this node, or
    /// another by a call).
    fn hand_move(&mut self, id: RequestId) {
        let coordinator = self.coordinator();
        let Some(pending) = self.requests.pending.get_mut(&id) else {
            return;
        };
        pending.via = coordinator;
        let (key, to) = (pending.key.clone(), pending.to);
        let ticket = Ticket {
            origin: self.cfg.node,
            request: id,
        };
        if coordinator == self.cfg.node {
            pending.call = None;
            if let Err(why) = self.accept_move(key, to, ticket) {
                self.requests.pending.remove(&id);
                self.reply(id, Answer::error(why));
            }
        } else {
            let call = self.call(
                coordinator,
                Call::Move { key, to, ticket },
                Purpose::Move(id),
            );
            if let Some(pending) = self.requests.pending.get_mut(&id) {
                pending.call = Some(call);
            }
        }
    }

    /// The view changed: moves whose coordinator no longer is are handed
    /// to the one that is.
    pub(super) fn requests_view_changed(&mut self) {
        let coordinator = self.coordinator();
        let moved: Vec<RequestId> = self
            .requests
            .pending
            .iter()
            .filter(|(_, p)| p.via != coordinator)
            .map(|(id, _)| *id)
            .collect();
        for id in moved {
            self.hand_move(id);
        }
    }

    /// The coordinator takes a move: at once if it holds the cluster's
    /// configuration, else once it does (it may be catching up, and not
    /// know the group yet).
    fn accept_move(&mut self, key: Place, to: Option<u16>, ticket: Ticket) -> Result<(), String> {
        if !self.config_ready() {
            let until = self.now + self.cfg.call_timeout;
            self.place.queued_moves.push((key, to, ticket, until));
            return Ok(());
        }
        self.take_move(key, to, ticket)
    }

    /// Moves queued while the configuration was catching up: taken once it
    /// has, refused if that takes too long.
    pub(super) fn queued_moves_progress(&mut self) {
        if self.place.queued_moves.is_empty() {
            return;
        }
        let ready = self.config_ready();
        let now = self.now;
        let queued = std::mem::take(&mut self.place.queued_moves);
        for (key, to, ticket, until) in queued {
            let result = if ready {
                self.take_move(key, to, ticket)
            } else if until <= now || self.coordinator() != self.cfg.node {
                Err(if until <= now {
                    "the cluster's configuration did not settle in time for the move; try again"
                        .to_string()
                } else {
                    format!(
                        "{} coordinates now; try again",
                        self.who(self.coordinator())
                    )
                })
            } else {
                self.place.queued_moves.push((key, to, ticket, until));
                continue;
            };
            if let Err(why) = result {
                self.end_ticket(ticket, Vec::new(), Err(why));
            }
        }
    }

    fn take_move(&mut self, key: Place, to: Option<u16>, ticket: Ticket) -> Result<(), String> {
        if self.model.maintenance {
            return Err(
                "maintenance mode is on: nothing is started or stopped until heartline maintenance off"
                    .into(),
            );
        }
        let groups = self.current_groups();
        let Some(group) = groups.by_key(&key) else {
            return Err(no_such(&key));
        };
        if let Some(t) = to {
            if group.on(t).is_empty() {
                return Err(format!(
                    "{} has no instance of {}'s hierarchy; extend it there first (heartline eqv create)",
                    self.who(t),
                    key.tag
                ));
            }
        }
        let wanted = if to.is_some() {
            Role::Started
        } else {
            Role::Stopped
        };
        if group.role != wanted {
            self.propose(
                Requester::Internal,
                Change::SetRole {
                    place: key.clone(),
                    role: wanted,
                },
            );
        }
        let old = self.place.moves.insert(
            key.clone(),
            Move {
                to,
                ticket,
                ordered: false,
            },
        );
        if let Some(old) = old.filter(|old| old.ticket != ticket) {
            let node = self.cfg.node;
            let why = "superseded by a later request for the same hierarchy".to_string();
            if old.ticket.origin == node {
                self.on_job_report(old.ticket, node, Vec::new(), Some(Err(why)));
            } else {
                self.send(
                    old.ticket.origin,
                    BrainMsg::JobReport {
                        ticket: old.ticket,
                        node,
                        steps: Vec::new(),
                        end: Some(Err(why)),
                    },
                );
            }
        }
        Ok(())
    }

    /// A report on an action a request here waits for.
    pub(super) fn on_job_report(
        &mut self,
        ticket: Ticket,
        node: u16,
        steps: Vec<String>,
        end: Option<Result<(), String>>,
    ) {
        if ticket.origin != self.cfg.node {
            return;
        }
        let id = ticket.request;
        let here = self.cfg.node;
        let there = self.who(node);
        let Some(pending) = self.requests.pending.get_mut(&id) else {
            return;
        };
        pending.lines.extend(steps.into_iter().map(|line| {
            if node == here {
                line
            } else {
                format!("{there}: {line}")
            }
        }));
        let Some(end) = end else {
            return;
        };
        let Some(pending) = self.requests.pending.remove(&id) else {
            return;
        };
        let answer = match end {
            Ok(()) => Answer::Done {
                steps: pending.lines,
            },
            Err(why) if node == here => Answer::error(why),
            Err(why) => Answer::error(format!("{}: {why}", self.who(node))),
        };
        self.reply(id, answer);
    }

    fn call(&mut self, to: u16, call: Call, purpose: Purpose) -> u64 {
        self.requests.next_call += 1;
        let id = self.requests.next_call;
        self.requests.calls.insert(
            id,
            OutCall {
                to,
                purpose,
                deadline: self.now + self.cfg.call_timeout,
            },
        );
        self.send(to, BrainMsg::Call { id, call });
        id
    }

    pub(super) fn call_coordinator_for_change(&mut self, reply: Option<RequestId>, change: Change) {
        let coordinator = self.coordinator();
        self.call(
            coordinator,
            Call::Propose { change },
            Purpose::Change(reply),
        );
    }

    /// A call from another brain.
    pub(super) fn on_call(&mut self, from: u16, id: u64, call: Call) {
        let answer = match call {
            Call::Propose { change } => {
                self.propose(Requester::Remote { node: from, id }, change);
                return;
            }
            Call::Move { key, to, ticket } => {
                if self.coordinator() != self.cfg.node {
                    Answer::error(format!(
                        "{} is not the coordinator: the cluster's membership is changing; try again",
                        self.who(self.cfg.node)
                    ))
                } else {
                    match self.accept_move(key, to, ticket) {
                        Ok(()) => Answer::Accepted,
                        Err(why) => Answer::error(why),
                    }
                }
            }
            Call::Cleanup { tag } => match self.cleanup(&tag) {
                Ok(line) => Answer::Done { steps: vec![line] },
                Err(why) => Answer::error(why),
            },
            Call::Digest => Answer::Digest {
                version: self.model.version(),
                digest: self.config_digest(),
            },
        };
        self.send(from, BrainMsg::Answer { id, answer });
    }

    /// The answer to a call this brain made.
    pub(super) fn on_answer(&mut self, from: u16, id: u64, answer: Answer) {
        let Some(call) = self.requests.calls.remove(&id) else {
            return;
        };
        match call.purpose {
            Purpose::Change(Some(request)) | Purpose::Cleanup(request) => {
                self.reply(request, answer);
            }
            Purpose::Change(None) => {
                if let Answer::Error { message, .. } = answer {
                    self.notice(
                        Level::Warn,
                        format!(
                            "a change this node asked of {} was refused: {message}",
                            self.who(from)
                        ),
                    );
                }
            }
            Purpose::Move(request) => {
                // An answer to a call since superseded (the move was handed
                // to a newer coordinator) is moot.
                let current = self
                    .requests
                    .pending
                    .get(&request)
                    .is_some_and(|p| p.call == Some(id));
                if let (true, Answer::Error { message, .. }) = (current, answer) {
                    self.requests.pending.remove(&request);
                    self.reply(request, Answer::error(message));
                }
            }
            Purpose::Digest(request) => {
                let result = match answer {
                    Answer::Digest { version, digest } => Ok((version, digest)),
                    Answer::Error { message, .. } => Err(message),
                    other => Err(format!("answered {other:?}")),
                };
                if let Some(v) = self.requests.verifies.get_mut(&request) {
                    v.waiting.remove(&from);
                    v.answers.insert(from, result);
                }
                self.finish_verifies();
            }
        }
    }

    /// `node` went down: calls to it fail, but moves it held, which are
    /// handed to the next coordinator when the view change is taken.
    pub(super) fn requests_peer_gone(&mut self, node: u16) {
        let gone: Vec<(u64, Purpose)> = self
            .requests
            .calls
            .iter()
            .filter(|(_, c)| c.to == node)
            .map(|(id, c)| (*id, c.purpose))
            .collect();
        for (id, purpose) in gone {
            self.requests.calls.remove(&id);
            if let Purpose::Move(_) = purpose {
                continue;
            }
            let why = format!("{} went down before answering", self.who(node));
            self.fail_call(purpose, node, why, false);
        }
        for v in self.requests.verifies.values_mut() {
            if v.waiting.remove(&node) {
                v.answers
                    .insert(node, Err("went down before answering".into()));
            }
        }
        self.finish_verifies();
    }

    fn fail_call(&mut self, purpose: Purpose, node: u16, why: String, timed_out: bool) {
        let answer = Answer::Error {
            message: match purpose {
                Purpose::Change(_) => format!(
                    "{why}; the change may or may not have been made: check with heartline ins list"
                ),
                _ => why.clone(),
            },
            timed_out,
        };
        match purpose {
            Purpose::Change(Some(id)) | Purpose::Cleanup(id) => self.reply(id, answer),
            Purpose::Change(None) => self.notice(Level::Warn, why),
            Purpose::Move(id) => {
                self.requests.pending.remove(&id);
                self.reply(id, answer);
            }
            Purpose::Digest(id) => {
                if let Some(v) = self.requests.verifies.get_mut(&id) {
                    v.waiting.remove(&node);
                    v.answers.insert(node, Err(why));
                }
                self.finish_verifies();
            }
        }
    }

    pub(super) fn request_timers(&mut self) {
        let now = self.now;
        let late: Vec<(u64, u16, Purpose)> = self
            .requests
            .calls
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(id, c)| (*id, c.to, c.purpose))
            .collect();
        for (id, to, purpose) in late {
            self.requests.calls.remove(&id);
            let why = format!(
                "{} did not answer within {}",
                self.who(to),
                self.cfg.call_timeout
            );
            self.fail_call(purpose, to, why, true);
        }
        let late: Vec<RequestId> = self
            .requests
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.requests.pending.remove(&id);
            self.reply(
                id,
                Answer::Error {
                    message: format!(
                        "the action did not end within {}; it may still be going on (see heartline status)",
                        self.cfg.action_timeout
                    ),
                    timed_out: true,
                },
            );
        }
        for v in self.requests.verifies.values_mut() {
            if v.deadline <= now {
                for node in std::mem::take(&mut v.waiting) {
                    v.answers.insert(node, Err("did not answer".into()));
                }
            }
        }
        self.finish_verifies();
    }

    pub(super) fn request_timeout(&self) -> Option<Instant> {
        self.requests
            .calls
            .values()
            .map(|c| c.deadline)
            .chain(self.requests.pending.values().map(|p| p.deadline))
            .chain(self.requests.verifies.values().map(|v| v.deadline))
            .min()
    }

    fn start_verify(&mut self, id: RequestId) {
        let peers: BTreeSet<u16> = self.members.up.keys().copied().collect();
        self.requests.verifies.insert(
            id,
            Verify {
                waiting: peers.clone(),
                answers: BTreeMap::new(),
                deadline: self.now + self.cfg.commit_timeout,
            },
        );
        for node in peers {
            self.call(node, Call::Digest, Purpose::Digest(id));
        }
        self.finish_verifies();
    }

    fn finish_verifies(&mut self) {
        let done: Vec<RequestId> = self
            .requests
            .verifies
            .iter()
            .filter(|(_, v)| v.waiting.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if let Some(v) = self.requests.verifies.remove(&id) {
                let answer = self.verdict(&v.answers);
                self.reply(id, answer);
            }
        }
    }

    /// What `verify` says: the configuration is the same everywhere, every
    /// hierarchy is sane, and each runs where it should, once.
    fn verdict(&mut self, answers: &BTreeMap<u16, Result<(Version, u64), String>>) -> Answer {
        let mine = self.model.version();
        let digest = self.config_digest();
        let here = self.cfg.node;
        let mut problems = Vec::new();
        for (node, answer) in answers {
            match answer {
                Ok((version, theirs)) if *version != mine => problems.push(format!(
                    "{} has configuration {version}, {} has {mine}",
                    self.who(*node),
                    self.who(here)
                )),
                Ok((_, theirs_digest)) if *theirs_digest != digest => problems.push(format!(
                    "{} has a different configuration at the same {mine}",
                    self.who(*node)
                )),
                Ok(_) => {}
                Err(why) => problems.push(format!("{} {why}", self.who(*node))),
            }
        }
        problems.extend(self.sanity());
        problems.extend(self.placement_problems());
        let mut warnings: Vec<String> = self.config.discarded.clone();
        if self.model.maintenance {
            warnings.push(
                "MAINTENANCE MODE is on: nothing is checked, recovered, started or stopped".into(),
            );
        }
        for node in &self.model.standby {
            warnings.push(format!("{} is in standby", self.who(*node)));
        }
        let peers: Vec<String> = answers.keys().map(u16::to_string).collect();
        let summary = format!(
            "{} resources, {} dependencies, {} equivalencies at {mine}; compared with nodes [{}]",
            self.model.resources.len(),
            self.model.dependencies.len(),
            self.model.equivalencies.len(),
            peers.join(", ")
        );
        Answer::Verified {
            summary,
            problems,
            warnings,
        }
    }

    /// Hierarchies that are not sane: kits missing here, priorities shared,
    /// dependencies not extended with their parents.
    fn sanity(&self) -> Vec<String> {
        let model = &self.model;
        let mut problems = Vec::new();
        for r in model.resources.values() {
            if r.place.node == self.cfg.node {
                match self.cfg.kits.get(&format!("{}/{}", r.app, r.rtype)) {
                    None => problems.push(format!(
                        "{}: no recovery kit {}/{} on this node",
                        r.place, r.app, r.rtype
                    )),
                    Some(kit) => {
                        problems.extend(kit.problems.iter().map(|p| format!("{}: {p}", r.place)))
                    }
                }
            } else if let Some(why) = self
                .members
                .reported(r.place.node)
                .and_then(|p| p.flags.cannot.get(&r.place.tag))
            {
                problems.push(format!("{}: {why}", r.place));
            }
            let class = model.equivalents(&r.place);
            let priorities: BTreeSet<u16> = class
                .iter()
                .filter_map(|p| model.resources.get(p).map(|r| r.priority))
                .collect();
            if priorities.len() != class.len() {
                problems.push(format!("{}: two nodes share a priority", r.place));
            }
            let nodes = |c: &BTreeSet<Place>| c.iter().map(|p| p.node).collect::<BTreeSet<u16>>();
            for child in model.children(r.place.node, &r.place.tag) {
                let child = Place {
                    node: r.place.node,
                    tag: child.to_string(),
                };
                let child_class = model.equivalents(&child);
                if nodes(&class) != nodes(&child_class) {
                    problems.push(format!(
                        "{}: extended to nodes {:?} but its dependency {} to {:?}",
                        r.place,
                        nodes(&class),
                        child.tag,
                        nodes(&child_class)
                    ));
                }
            }
        }
        problems
    }

    /// Where things run against where they should.
    fn placement_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (node, peer) in &self.members.up {
            if !peer.synced {
                problems.push(format!(
                    "{} has not reported what runs there yet",
                    self.who(*node)
                ));
            } else if peer.flags.probing {
                problems.push(format!(
                    "{} is still probing what runs there",
                    self.who(*node)
                ));
            }
        }
        if self.local.probing {
            problems.push(format!(
                "{} is still probing what runs here",
                self.who(self.cfg.node)
            ));
        }
        for g in self.groups.iter() {
            let name = &g.key.tag;
            if let Some(p) = g.places().find(|p| {
                self.model
                    .resources
                    .get(p)
                    .is_some_and(|r| r.state == State::Blocked)
            }) {
                problems.push(format!(
                    "{name}'s hierarchy is BLOCKED: {} on {} failed to stop and may still run (heartline cleanup {} --node {} once it is stopped)",
                    p.tag,
                    self.who(p.node),
                    p.tag,
                    p.node
                ));
                continue;
            }
            let running = self.running_on(&g.key);
            let role = g.role;
            let list: Vec<String> = running.iter().map(|n| self.who(*n)).collect();
            match (role, running.len()) {
                (_, n) if n > 1 => problems.push(format!(
                    "{name}'s hierarchy runs on {} at once",
                    list.join(", ")
                )),
                (Role::Started, 0) => {
                    problems.push(format!("{name}'s hierarchy should run but runs nowhere"));
                }
                (Role::Stopped, 1) => problems.push(format!(
                    "{name}'s hierarchy runs on {} but its role is stopped",
                    list.join(", ")
                )),
                _ => {}
            }
        }
        problems
    }

    fn report(&mut self) -> NodeReport {
        let node = self.cfg.node;
        let busy = self.local.busy();
        let resources = self
            .model
            .resources
            .values()
            .filter(|r| r.place.node == node)
            .map(|r| {
                let hierarchy = self.model.hierarchy(&r.place);
                ResourceStatus {
                    tag: r.place.tag.clone(),
                    kind: format!("{}/{}", r.app, r.rtype),
                    state: r.state,
                    priority: r.priority,
                    role: r.role.to_string(),
                    failures: self.local.failures(&r.place.tag),
                    busy: busy
                        .iter()
                        .find(|(t, _)| hierarchy.contains(*t))
                        .map(|(_, a)| a.to_string()),
                    last: self.local.last(&r.place.tag),
                    last_failure: self
                        .local
                        .last_failure(&r.place.tag)
                        .map(|(_, said)| said.clone()),
                    last_failure_ago_ms: self
                        .local
                        .last_failure(&r.place.tag)
                        .map(|(at, _)| self.now.saturating_since(*at).as_millis()),
                    props: r.props.clone(),
                }
            })
            .collect();
        NodeReport {
            node,
            coordinator: self.coordinator(),
            members: self.view().keys().copied().collect(),
            version: self.model.version(),
            maintenance: self.model.maintenance,
            standby: self.model.standby.iter().copied().collect(),
            leaving: self.local.leaving,
            probing: self.local.probing,
            resources,
            multi_active: self.stats.multi_active,
            quorum: self.quorum().map(|q| crate::api::QuorumReport {
                votes: q.votes,
                expected: q.expected,
                quorate: q.quorate,
                lease_left_ms: q
                    .lease_until
                    .map(|end| end.saturating_since(self.now).as_millis()),
                lease_ms: self.cfg.quorum.as_ref().map_or(0, |c| c.lease.as_millis()),
                waiting_for_all: q.waiting_for_all,
                witness: q.witness,
                refused: q.refused,
                undecided: q.undecided,
            }),
            fencing: self
                .fencing()
                .into_iter()
                .map(|f| crate::api::FenceReport {
                    node: f.node,
                    confirmed: f.confirmed,
                    level: f.level,
                    failed: f.failed,
                    running: f.running,
                })
                .collect(),
            next: self
                .next_nodes()
                .into_iter()
                .map(|(key, next)| match next {
                    Ok(node) => crate::api::NextReport {
                        key,
                        node: Some(node),
                        why: None,
                    },
                    Err(why) => crate::api::NextReport {
                        key,
                        node: None,
                        why: Some(why),
                    },
                })
                .collect(),
        }
    }
}

fn no_such(place: &Place) -> String {
    format!("no resource {place}; `heartline ins list` shows what exists")
}
