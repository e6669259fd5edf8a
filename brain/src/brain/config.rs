//! One configuration for the cluster, never silently diverging.
//!
//! The coordinator (the lowest node up) orders every change. It checks the
//! change against the whole configuration, the kits of the node it
//! concerns and the actions under way; applies it as the next [`Version`];
//! sends it to every node up as a commit; and answers the request once
//! every node confirmed it, or after `commit_timeout` naming those that did
//! not. A coordinator starts a new term (a new [`Epoch`]) for the first
//! change it makes in a new view, so two partitions never make the same
//! version.
//!
//! Before ordering anything the coordinator waits until every node it sees
//! has reported, and takes the configuration of any that holds a greater
//! version (the rule after a partition heals: the greater epoch and
//! generation wins). A node that took another's configuration lists its own
//! changes the winner does not have as discarded: logged, kept, shown by
//! `verify`. Within a view the coordinator's copy wins: a node with another
//! configuration at the same version is sent the coordinator's, forced.
//! `heartline resync` forces a node to take the coordinator's copy.

use std::collections::{BTreeSet, VecDeque};

use heartline_core::Instant;

use crate::api::{Answer, RequestId};
use crate::message::{BrainMsg, View};
use crate::model::{Change, Epoch, Model, Place, State, Version};

use super::{Brain, Level};

/// Changes remembered, with their versions (for telling which were lost
/// when another configuration wins).
pub(super) const JOURNAL: usize = 256;

/// Discarded changes remembered (the oldest are forgotten first).
pub const DISCARDED: usize = 100;

/// Who asked for a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Requester {
    /// A request on this node.
    Local(RequestId),
    /// A call from another node's brain.
    Remote {
        /// The node.
        node: u16,
        /// Its call.
        id: u64,
    },
    /// This brain itself (init strategies, moves, a clean stop).
    Internal,
}

#[derive(Debug)]
struct PendingCommit {
    version: Version,
    who: Requester,
    waiting: BTreeSet<u16>,
    unconfirmed: Vec<(u16, String)>,
    deadline: Instant,
}

#[derive(Debug)]
struct Proposal {
    who: Requester,
    change: Change,
    deadline: Instant,
}

/// The configuration's ordering.
#[derive(Debug)]
pub(super) struct ConfigState {
    journal: VecDeque<(Version, String)>,
    pub(super) discarded: Vec<String>,
    /// The view this node started its current term as coordinator in.
    term_view: Option<View>,
    commits: Vec<PendingCommit>,
    queue: VecDeque<Proposal>,
    /// A snapshot asked of a node, until when.
    asked: Option<(u16, Instant)>,
    /// Snapshots sent, by node: the version sent (not sent again).
    offered: std::collections::BTreeMap<u16, (Version, u64)>,
    /// Requests for `resync`, answered when the forced snapshot comes.
    resyncs: Vec<(RequestId, u16, Instant)>,
}

impl ConfigState {
    pub(super) fn new(journal: Vec<(Version, String)>, discarded: Vec<String>) -> ConfigState {
        ConfigState {
            journal: journal.into_iter().collect(),
            discarded,
            term_view: None,
            commits: Vec::new(),
            queue: VecDeque::new(),
            asked: None,
            offered: std::collections::BTreeMap::new(),
            resyncs: Vec::new(),
        }
    }
}

impl Brain {
    /// A change, from whoever asked: ordered here if this node
    /// coordinates, else sent to the coordinator.
    pub(super) fn propose(&mut self, who: Requester, change: Change) {
        if self.coordinator() == self.cfg.node {
            self.config.queue.push_back(Proposal {
                who,
                change,
                deadline: self.now + self.cfg.call_timeout,
            });
            return;
        }
        match who {
            Requester::Remote { node, id } => {
                let answer = Answer::error(format!(
                    "{} is not the coordinator ({} is, as {} sees it): the cluster's membership is changing; try again",
                    self.who(self.cfg.node),
                    self.who(self.coordinator()),
                    self.who(self.cfg.node)
                ));
                self.send(node, BrainMsg::Answer { id, answer });
            }
            Requester::Local(id) => self.call_coordinator_for_change(Some(id), change),
            Requester::Internal => self.call_coordinator_for_change(None, change),
        }
    }

    /// Whether the coordinator may order changes: it sees every node it
    /// can (or waited long enough at start), every node reported, and none
    /// holds a greater configuration.
    pub(super) fn config_ready(&self) -> bool {
        self.coordinator() == self.cfg.node
            && self.settled()
            && self.config.asked.is_none()
            && self.heard_enough()
            && self
                .members
                .up
                .values()
                .all(|p| p.flags.version <= self.model.version())
    }

    /// Why configuration changes are refused now: no quorum.
    fn no_quorum_for_changes(&self) -> Option<String> {
        let q = self.cfg.quorum.as_ref()?;
        if self.has_quorum() {
            return None;
        }
        if let Some((node, theirs)) = self.quorum.refused {
            return Some(format!(
                "no quorum: this node refused to start ({} announces {theirs} expected votes, this node's configuration {}); configuration changes are refused until the [quorum] sections agree and it is restarted (status and reads still work)",
                self.who(node),
                q.expected
            ));
        }
        let votes = self.quorum().map_or(0, |s| s.votes);
        Some(format!(
            "no quorum: this partition holds {votes} of {} expected votes (more than half are needed); configuration changes are refused until it has quorum (status and reads still work)",
            q.expected
        ))
    }

    /// Whether this node has seen every node of the cluster up since it
    /// started, or waited `settle`.
    pub(super) fn heard_enough(&self) -> bool {
        self.now >= self.started + self.cfg.settle
            || self
                .cfg
                .nodes
                .iter()
                .all(|n| *n == self.cfg.node || self.members.seen.contains(n))
    }

    /// Coordinator's work: bring the members to one configuration, then
    /// order the changes waiting.
    pub(super) fn config_progress(&mut self) {
        if self.coordinator() != self.cfg.node {
            // Proposals queued while this node coordinated go to the new
            // coordinator.
            let queued: Vec<Proposal> = self.config.queue.drain(..).collect();
            for p in queued {
                self.propose(p.who, p.change);
            }
            return;
        }
        if !self.settled() {
            return;
        }
        self.sync_members();
        if !self.config_ready() {
            return;
        }
        if let Some(why) = self.no_quorum_for_changes() {
            while let Some(proposal) = self.config.queue.pop_front() {
                self.answer_change(proposal.who, Answer::error(why.clone()));
            }
        }
        while let Some(proposal) = self.config.queue.pop_front() {
            match self.commit(&proposal.change) {
                Ok(version) => {
                    let waiting: BTreeSet<u16> = self.members.up.keys().copied().collect();
                    let pending = PendingCommit {
                        version,
                        who: proposal.who,
                        waiting,
                        unconfirmed: Vec::new(),
                        deadline: self.now + self.cfg.commit_timeout,
                    };
                    self.config.commits.push(pending);
                }
                Err(why) => self.answer_change(proposal.who, Answer::error(why)),
            }
        }
        self.finish_commits();
    }

    /// Asks the member with the greatest configuration for it, if greater
    /// than this node's; sends this node's to members behind or different.
    fn sync_members(&mut self) {
        if self.members.up.is_empty() {
            return;
        }
        let mine = self.model.version();
        let digest = self.config_digest();
        let ahead = self
            .members
            .up
            .iter()
            .filter(|(_, p)| p.flags.version > mine)
            .max_by_key(|(_, p)| p.flags.version)
            .map(|(n, _)| *n);
        if let Some(node) = ahead {
            if self.config.asked.is_none() {
                self.config.asked = Some((node, self.now + self.cfg.call_timeout));
                self.send(node, BrainMsg::GetSnapshot { force: false });
            }
            return;
        }
        let catching_up: BTreeSet<u16> = self
            .config
            .commits
            .iter()
            .flat_map(|c| c.waiting.iter().copied())
            .collect();
        let behind: Vec<(u16, bool)> = self
            .members
            .up
            .iter()
            .filter(|(n, p)| {
                (p.flags.version < mine || p.flags.digest != digest)
                    && !catching_up.contains(n)
                    && self.config.offered.get(n) != Some(&(mine, digest))
            })
            .map(|(n, p)| (*n, p.flags.version == mine))
            .collect();
        for (node, same_version) in behind {
            self.config.offered.insert(node, (mine, digest));
            // At the same version with other contents, the coordinator's
            // copy wins.
            self.send_snapshot(node, same_version);
        }
    }

    /// Checks and applies `change` as the next version, and sends it to
    /// every node up.
    fn commit(&mut self, change: &Change) -> Result<Version, String> {
        self.check_change(change)?;
        let prev = self.model.version();
        let view = self.view();
        if self.config.term_view.as_ref() != Some(&view) {
            let seen = self
                .members
                .up
                .values()
                .map(|p| p.flags.version.epoch.term)
                .chain([self.model.epoch.term])
                .max()
                .unwrap_or(0);
            self.model.epoch = Epoch {
                term: seen + 1,
                node: self.cfg.node,
            };
            self.config.term_view = Some(view);
        }
        self.apply_change(change);
        let version = self.model.version();
        self.journal_push(version, change.to_string());
        self.stats.commits += 1;
        self.notice(Level::Info, format!("configuration {version}: {change}"));
        let peers: Vec<u16> = self.members.up.keys().copied().collect();
        for to in peers {
            self.send(
                to,
                BrainMsg::Commit {
                    prev,
                    version,
                    change: change.clone(),
                },
            );
        }
        self.after_config_change();
        Ok(version)
    }

    fn journal_push(&mut self, version: Version, text: String) {
        self.config.journal.push_back((version, text.clone()));
        while self.config.journal.len() > JOURNAL {
            self.config.journal.pop_front();
        }
        self.persist.journal.push((version, text));
    }

    /// Whether `change` may be made now: the database's rules, the kits of
    /// the node it concerns, and the actions under way.
    fn check_change(&mut self, change: &Change) -> Result<(), String> {
        self.model.check(change).map_err(|e| e.to_string())?;
        match change {
            Change::SetState { place, .. } if place.node != self.cfg.node => {
                return Err(format!(
                    "the state of {place} is {}'s to set (heartline --on {} ins setstate ...)",
                    self.who(place.node),
                    place.node
                ));
            }
            Change::CreateResource(r) => {
                let kind = format!("{}/{}", r.app, r.rtype);
                let node = r.place.node;
                let kits: Option<BTreeSet<String>> = if node == self.cfg.node {
                    Some(self.cfg.kits.keys().cloned().collect())
                } else {
                    self.members.reported(node).map(|p| p.flags.kits.clone())
                };
                if let Some(kits) = kits {
                    if !kits.contains(&kind) {
                        let known: Vec<String> = kits.into_iter().collect();
                        return Err(format!(
                            "no recovery kit for resource type {kind} on {}; installed: {}",
                            self.who(node),
                            if known.is_empty() {
                                "none".into()
                            } else {
                                known.join(", ")
                            }
                        ));
                    }
                }
                if node == self.cfg.node {
                    if let Some(kit) = self.cfg.kits.get(&kind) {
                        if !kit.problems.is_empty() {
                            return Err(kit.problems.join("; "));
                        }
                    }
                }
            }
            _ => {}
        }
        let touches: Option<Place> = match change {
            Change::RemoveResource(place) | Change::SetPriority { place, .. } => {
                Some(place.clone())
            }
            Change::CreateDependency { node, parent, .. }
            | Change::RemoveDependency { node, parent, .. } => Some(Place {
                node: *node,
                tag: parent.clone(),
            }),
            _ => None,
        };
        if let Some(place) = touches {
            if let Some(tag) = self.busy_in_hierarchy(&place) {
                return Err(format!(
                    "{tag} on {} is busy with an action; try again when it ends",
                    self.who(place.node)
                ));
            }
        }
        Ok(())
    }

    /// A member of `place`'s hierarchy an action holds on its node.
    fn busy_in_hierarchy(&self, place: &Place) -> Option<String> {
        let hierarchy = self.model.hierarchy(place);
        if place.node == self.cfg.node {
            return self.local.busy_tag(&hierarchy);
        }
        let peer = self.members.up.get(&place.node)?;
        hierarchy.into_iter().find(|t| peer.busy.contains_key(t))
    }

    /// Sends every commit's requester its answer once every node
    /// confirmed it.
    fn finish_commits(&mut self) {
        let mut i = 0;
        while i < self.config.commits.len() {
            let done = self.config.commits[i].waiting.is_empty()
                || self.config.commits[i].deadline <= self.now;
            if !done {
                i += 1;
                continue;
            }
            let mut commit = self.config.commits.remove(i);
            for node in std::mem::take(&mut commit.waiting) {
                commit.unconfirmed.push((
                    node,
                    format!("did not confirm within {}", self.cfg.commit_timeout),
                ));
            }
            for (node, why) in &commit.unconfirmed {
                self.notice(
                    Level::Warn,
                    format!(
                        "{} {why} the change making {}",
                        self.who(*node),
                        commit.version
                    ),
                );
            }
            let answer = Answer::Changed {
                version: commit.version,
                unconfirmed: commit.unconfirmed,
            };
            self.answer_change(commit.who, answer);
        }
    }

    fn answer_change(&mut self, who: Requester, answer: Answer) {
        match who {
            Requester::Local(id) => self.reply(id, answer),
            Requester::Remote { node, id } => self.send(node, BrainMsg::Answer { id, answer }),
            Requester::Internal => {
                if let Answer::Error { message, .. } = answer {
                    self.notice(
                        Level::Warn,
                        format!("a change this node asked for was refused: {message}"),
                    );
                }
            }
        }
    }

    /// A commit from a coordinator.
    pub(super) fn on_commit(
        &mut self,
        from: u16,
        prev: Version,
        version: Version,
        change: &Change,
    ) {
        let mine = self.model.version();
        if prev == mine && version > mine {
            if self.model.check(change).is_ok() {
                self.apply_change(change);
                self.model.epoch = version.epoch;
                self.model.generation = version.generation;
                self.persist.meta = true;
                self.config_changed();
                self.journal_push(version, change.to_string());
                self.notice(
                    Level::Info,
                    format!("configuration {version} from {}: {change}", self.who(from)),
                );
                self.after_config_change();
            } else {
                self.notice(
                    Level::Warn,
                    format!("cannot apply {}'s change making {version} ({change}); asking for its whole configuration", self.who(from)),
                );
                self.ask_snapshot(from);
            }
        } else if version > mine {
            self.notice(
                Level::Info,
                format!("missed configuration changes (this node has {mine}, {} sent {version}); asking for the whole configuration", self.who(from)),
            );
            self.ask_snapshot(from);
        }
        let version = self.model.version();
        self.send(from, BrainMsg::Ack { version });
    }

    fn ask_snapshot(&mut self, from: u16) {
        if self.config.asked.is_some_and(|(node, _)| node == from) {
            return;
        }
        self.config.asked = Some((from, self.now + self.cfg.call_timeout));
        self.send(from, BrainMsg::GetSnapshot { force: false });
    }

    /// A member confirms it holds `version`.
    pub(super) fn on_ack(&mut self, from: u16, version: Version) {
        for commit in &mut self.config.commits {
            if commit.version <= version {
                commit.waiting.remove(&from);
            }
        }
        self.finish_commits();
    }

    pub(super) fn send_snapshot(&mut self, to: u16, force: bool) {
        let history: Vec<(Version, String)> = self.config.journal.iter().cloned().collect();
        self.send(
            to,
            BrainMsg::Snapshot {
                model: self.model.clone(),
                history,
                force,
            },
        );
    }

    /// Another node's whole configuration: taken if it is greater, forced,
    /// or the coordinator's at this node's version with other contents.
    pub(super) fn on_snapshot(
        &mut self,
        from: u16,
        model: Model,
        history: &[(Version, String)],
        force: bool,
    ) {
        if self.config.asked.is_some_and(|(node, _)| node == from) {
            self.config.asked = None;
        }
        let mine = self.model.version();
        let theirs = model.version();
        let take = force
            || theirs > mine
            || (theirs == mine
                && from == self.coordinator()
                && model.digest() != self.config_digest());
        if take {
            self.adopt(from, model, history, force);
        }
        let resyncs: Vec<RequestId> = self
            .config
            .resyncs
            .iter()
            .filter(|(_, node, _)| *node == from)
            .map(|(id, _, _)| *id)
            .collect();
        self.config.resyncs.retain(|(_, node, _)| *node != from);
        for id in resyncs {
            let steps = vec![format!(
                "took {}'s configuration: {}",
                self.who(from),
                self.model.version()
            )];
            self.reply(id, Answer::Done { steps });
        }
        let version = self.model.version();
        self.send(from, BrainMsg::Ack { version });
    }

    /// Replaces this node's configuration with `model`, keeping this node's
    /// states (facts only it knows), and lists the changes made here that
    /// `model` does not hold as discarded.
    fn adopt(&mut self, from: u16, mut model: Model, history: &[(Version, String)], forced: bool) {
        let mine = self.model.version();
        let oldest = history.first().map(|(v, _)| *v);
        let lost: Vec<(Version, String)> = match oldest {
            Some(oldest) => self
                .config
                .journal
                .iter()
                .filter(|(v, _)| {
                    v.generation >= oldest.generation && !history.iter().any(|(h, _)| h == v)
                })
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        let node = self.cfg.node;
        for r in model.resources.values_mut() {
            match self.model.resources.get(&r.place) {
                Some(old) => r.state = old.state,
                None if r.place.node == node => r.state = State::Osu,
                None => {}
            }
        }
        let orphans: Vec<Place> = self
            .model
            .resources
            .values()
            .filter(|r| {
                r.place.node == node
                    && r.state.maybe_running()
                    && !model.resources.contains_key(&r.place)
            })
            .map(|r| r.place.clone())
            .collect();
        for place in orphans {
            self.notice(
                Level::Error,
                format!(
                    "{place} is {} here but not in {}'s configuration, which this node takes: it is left as it is, unmanaged; stop it by hand",
                    self.model.resources[&place].state,
                    self.who(from)
                ),
            );
        }
        let theirs = model.version();
        self.model = model;
        self.persist.all = true;
        self.persist.meta = true;
        self.config.journal = history.iter().cloned().collect();
        self.persist.journal = history.to_vec();
        self.persist.journal_replaced = true;
        self.config.term_view = None;
        self.stats.snapshots += 1;
        let how = if forced { "forced: " } else { "" };
        if lost.is_empty() {
            self.notice(
                Level::Info,
                format!(
                    "{how}took {}'s configuration ({theirs}; this node had {mine})",
                    self.who(from)
                ),
            );
        } else {
            let list: Vec<String> = lost
                .iter()
                .map(|(v, text)| format!("{text} [{v}]"))
                .collect();
            self.notice(
                Level::Warn,
                format!(
                    "{how}took {}'s configuration ({theirs}) over this node's ({mine}); {} changes made on this side are discarded: {}",
                    self.who(from),
                    lost.len(),
                    list.join("; ")
                ),
            );
            for entry in list {
                let line = format!(
                    "discarded when {} took {}'s configuration: {entry}",
                    self.who(node),
                    self.who(from)
                );
                self.config.discarded.push(line.clone());
                self.persist.discarded.push(line);
            }
            let extra = self.config.discarded.len().saturating_sub(DISCARDED);
            self.config.discarded.drain(..extra);
        }
        self.config_changed();
        self.after_config_change();
    }

    /// Everything that follows a configuration change here: peers' states
    /// for resources now known, maintenance mode's effect on checks.
    fn after_config_change(&mut self) {
        self.sync_all_peer_states();
        self.local_config_changed();
    }

    /// `heartline resync`: take the coordinator's configuration.
    pub(super) fn resync(&mut self, id: RequestId) {
        let coordinator = self.coordinator();
        if coordinator == self.cfg.node {
            self.reply(
                id,
                Answer::error(format!(
                    "{} is the coordinator: its copy is the one the others take; run resync on the node whose copy is wrong",
                    self.who(self.cfg.node)
                )),
            );
            return;
        }
        self.config
            .resyncs
            .push((id, coordinator, self.now + self.cfg.call_timeout));
        self.send(coordinator, BrainMsg::GetSnapshot { force: true });
    }

    pub(super) fn config_peer_gone(&mut self, node: u16) {
        for commit in &mut self.config.commits {
            if commit.waiting.remove(&node) {
                commit
                    .unconfirmed
                    .push((node, "went down before confirming".into()));
            }
        }
        if self.config.asked.is_some_and(|(n, _)| n == node) {
            self.config.asked = None;
        }
        self.config.offered.remove(&node);
        let failed: Vec<RequestId> = self
            .config
            .resyncs
            .iter()
            .filter(|(_, n, _)| *n == node)
            .map(|(id, _, _)| *id)
            .collect();
        self.config.resyncs.retain(|(_, n, _)| *n != node);
        for id in failed {
            self.reply(
                id,
                Answer::error(format!(
                    "{}, the coordinator, went down before sending its configuration",
                    self.who(node)
                )),
            );
        }
        self.finish_commits();
    }

    pub(super) fn config_timers(&mut self) {
        self.finish_commits();
        if self
            .config
            .asked
            .is_some_and(|(_, until)| until <= self.now)
        {
            self.config.asked = None;
        }
        let now = self.now;
        let expired: Vec<Proposal> = {
            let (gone, kept): (VecDeque<Proposal>, VecDeque<Proposal>) =
                self.config.queue.drain(..).partition(|p| p.deadline <= now);
            self.config.queue = kept;
            gone.into_iter().collect()
        };
        for p in expired {
            self.answer_change(
                p.who,
                Answer::Error {
                    message: format!(
                        "the change was not made: the cluster did not settle within {} (nodes still joining or reporting)",
                        self.cfg.call_timeout
                    ),
                    timed_out: true,
                },
            );
        }
        let late: Vec<RequestId> = self
            .config
            .resyncs
            .iter()
            .filter(|(_, _, until)| *until <= now)
            .map(|(id, _, _)| *id)
            .collect();
        self.config.resyncs.retain(|(_, _, until)| *until > now);
        for id in late {
            self.reply(
                id,
                Answer::Error {
                    message: "the coordinator did not send its configuration in time".into(),
                    timed_out: true,
                },
            );
        }
    }

    pub(super) fn config_timeout(&self) -> Option<Instant> {
        let settle = (!self.heard_enough() && !self.config.queue.is_empty())
            .then_some(self.started + self.cfg.settle);
        self.config
            .commits
            .iter()
            .map(|c| c.deadline)
            .chain(self.config.queue.iter().map(|p| p.deadline))
            .chain(self.config.asked.map(|(_, until)| until))
            .chain(self.config.resyncs.iter().map(|(_, _, until)| *until))
            .chain(settle)
            .min()
    }
}
