//! This node's actions on its resources.
//!
//! A job holds one hierarchy and runs its scripts one at a time, in
//! dependency order: children first to start, parents first to stop.
//! A hierarchy has at most one job; anything else asked of it waits its
//! turn (a quickCheck that falls due is skipped instead).
//!
//! - **Start** restores what is not in service. A restore that fails is
//!   unwound: what this job started is removed again, and the resource that
//!   failed is marked failed (OSF), so the coordinator tries the next node.
//! - **Stop** removes, parents first. A remove that fails or times out
//!   leaves its resource BLOCKED (it may still run) and stops there: the
//!   hierarchy is started nowhere until an administrator cleans it up.
//! - **Check** runs quickCheck at the resource's interval. A failure is
//!   counted in the resource's failure window; up to `max_failures` are
//!   recovered in place (`recover`, up to the kit's attempts); the next
//!   failure in the window, or a recovery that fails, gives the hierarchy
//!   up: it is stopped here and the failed resource marked OSF, and the
//!   coordinator starts it on the next node.
//! - **Probe**, at start and when maintenance mode ends, runs quickCheck on
//!   every resource to learn what runs here, whatever the database said.
//!   Until every probe has ended the node reports itself probing and the
//!   coordinator decides nothing about its hierarchies.
//! - A clean stop takes every hierarchy here out of service (on
//!   `on_stop = "stop"` their role becomes stopped first), then exits.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use heartline_core::{Duration, Instant};

use crate::action::Action;
use crate::api::{Answer, RequestId};
use crate::message::{Activity, BrainMsg, Op, Ticket, View};
use crate::model::{Change, Init, Place, Role, State};

use super::config::Requester;
use super::{Brain, Level, OnStop, Output};

/// Names one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {}", self.0)
    }
}

/// What a job is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    Start,
    Stop,
    Check,
    Recover { event: String, attempt: u32 },
    GiveUp,
    Probe,
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Start => "in-service",
            Kind::Stop => "out-of-service",
            Kind::Check => "quickCheck",
            Kind::Recover { .. } => "recovery",
            Kind::GiveUp => "failover",
            Kind::Probe => "probe",
        }
    }
}

/// Who waits for a job.
#[derive(Debug, Clone, Default)]
pub(super) struct After {
    /// A request on this node.
    pub(super) reply: Option<RequestId>,
    /// A request somewhere, and whether this job ends it.
    pub(super) ticket: Option<(Ticket, bool)>,
}

#[derive(Debug)]
struct Job {
    kind: Kind,
    subject: String,
    tags: BTreeSet<String>,
    steps: VecDeque<(String, Action)>,
    current: Option<(String, Action)>,
    lines: Vec<String>,
    started: Vec<String>,
    failure: Option<String>,
    after: After,
}

#[derive(Debug)]
struct Waiting {
    kind: Kind,
    tag: String,
    after: After,
    /// For an order: its sender and view, which must still hold.
    order: Option<(u16, View)>,
}

/// This node's actions and what it keeps of its resources.
#[derive(Debug, Default)]
pub(super) struct Local {
    jobs: BTreeMap<JobId, Job>,
    next_job: u64,
    waiting: VecDeque<Waiting>,
    checks: BTreeMap<String, Instant>,
    /// Resources to check as soon as the action holding them ends (asked
    /// for by [`Input::CheckNow`](super::Input::CheckNow) while busy).
    recheck: BTreeSet<String>,
    failures: BTreeMap<String, VecDeque<Instant>>,
    last: BTreeMap<String, String>,
    /// The last failure of each resource here (a check, a start, a stop or
    /// a recovery that failed): when, and what the script said.
    last_failure: BTreeMap<String, (Instant, String)>,
    /// Hierarchies (a tag of each) not to run here until an administrator
    /// brings them in service here (init strategy out-of-service).
    pub(super) held: BTreeSet<String>,
    pub(super) probing: bool,
    pub(super) leaving: bool,
    initialised: bool,
    exited: bool,
    maintenance_seen: bool,
    /// Tags of hierarchies whose start this node refused in the current
    /// view: the coordinator chose another node, so a copy of the order
    /// still on its way is refused too.
    refused_starts: BTreeSet<String>,
    /// Tags whose next restore is a handover (the coordinator said so in
    /// its start order): see [`Output::Run`]'s `handover`.
    handover: BTreeSet<String>,
}

impl Local {
    /// What each action under way does, by the hierarchy's tag it was
    /// asked for.
    /// Actions queued behind another count too: they will run.
    pub(super) fn busy(&self) -> BTreeMap<String, Activity> {
        let activity = |kind: &Kind| match kind {
            Kind::Start => Some(Activity::Starting),
            Kind::Stop | Kind::GiveUp => Some(Activity::Stopping),
            Kind::Recover { .. } => Some(Activity::Recovering),
            Kind::Check | Kind::Probe => None,
        };
        let queued = self
            .waiting
            .iter()
            .filter_map(|w| Some((w.tag.clone(), activity(&w.kind)?)));
        let running = self
            .jobs
            .values()
            .filter_map(|job| Some((job.subject.clone(), activity(&job.kind)?)));
        queued.chain(running).collect()
    }

    /// A tag of `tags` a job holds.
    pub(super) fn busy_tag(&self, tags: &BTreeSet<String>) -> Option<String> {
        self.jobs
            .values()
            .flat_map(|j| j.tags.iter())
            .find(|t| tags.contains(*t))
            .cloned()
    }

    fn holds(&self, tags: &BTreeSet<String>) -> bool {
        self.busy_tag(tags).is_some()
    }

    /// Failures of `tag` counted now.
    pub(super) fn failures(&self, tag: &str) -> u32 {
        self.failures
            .get(tag)
            .map_or(0, |f| u32::try_from(f.len()).unwrap_or(u32::MAX))
    }

    /// The last script run on `tag` and how it went.
    pub(super) fn last(&self, tag: &str) -> Option<String> {
        self.last.get(tag).cloned()
    }

    /// The last failure of `tag` here: when, and what the script said.
    pub(super) fn last_failure(&self, tag: &str) -> Option<&(Instant, String)> {
        self.last_failure.get(tag)
    }
}

impl Brain {
    fn place_of(&self, tag: &str) -> Place {
        Place {
            node: self.cfg.node,
            tag: tag.to_string(),
        }
    }

    fn state_of(&self, tag: &str) -> Option<State> {
        self.model
            .resources
            .get(&self.place_of(tag))
            .map(|r| r.state)
    }

    /// The duration property `name` of `tag`, if set and valid.
    fn duration_prop(&self, tag: &str, name: &str) -> Option<Duration> {
        let value = self
            .model
            .resources
            .get(&self.place_of(tag))?
            .props
            .get(name)?;
        humantime::parse_duration(value).ok().map(Duration::from)
    }

    /// Sets the state of this node's `tag`, and its check schedule.
    fn set_state(&mut self, tag: &str, state: State) {
        let place = self.place_of(tag);
        if self
            .model
            .resources
            .get(&place)
            .is_some_and(|r| r.state != state)
        {
            self.apply_change(&Change::SetState { place, state });
        }
        if state == State::Isp {
            self.schedule_check(tag);
        } else if !state.in_service() {
            self.local.checks.remove(tag);
            self.local.recheck.remove(tag);
        }
    }

    /// How often `tag` is checked: its `quick_check_interval` property, else
    /// its kit's; `None` for never.
    fn check_interval(&self, tag: &str) -> Option<Duration> {
        let resource = self.model.resources.get(&self.place_of(tag))?;
        let kit = self
            .cfg
            .kits
            .get(&format!("{}/{}", resource.app, resource.rtype));
        self.duration_prop(tag, "quick_check_interval")
            .or_else(|| kit.and_then(|k| k.quick_check_interval))
            .filter(|d| *d > Duration::ZERO)
    }

    fn schedule_check(&mut self, tag: &str) {
        if self.model.maintenance {
            return;
        }
        // Asked for by a hint ([`Input::CheckNow`]): now, whatever was
        // scheduled, once nothing holds it (until its check begins, the
        // hint stays).
        let at_once = self.local.recheck.contains(tag)
            && !self.local.holds(&BTreeSet::from([tag.to_string()]));
        if !at_once && self.local.checks.contains_key(tag) {
            return;
        }
        if let Some(every) = self.check_interval(tag) {
            let at = if at_once { self.now } else { self.now + every };
            self.local.checks.insert(tag.to_string(), at);
        }
    }

    /// [`Input::CheckNow`](super::Input::CheckNow): each of `tags` in
    /// service here and checked at an interval is checked now, or once the
    /// action holding its hierarchy ends (a check that finds it dead, the
    /// recovery after it: whatever they saw, the hint came after). Others
    /// are left alone: one starting, stopping or out of service, or never
    /// checked, has nothing to check; nor has a node leaving.
    pub(super) fn check_now(&mut self, tags: &[String], why: &str) {
        for tag in tags {
            if self.model.maintenance
                || self.local.leaving
                || self.state_of(tag) != Some(State::Isp)
                || self.check_interval(tag).is_none()
            {
                continue;
            }
            let fresh = self.local.recheck.insert(tag.clone());
            if self.local.holds(&BTreeSet::from([tag.clone()])) {
                if fresh {
                    self.notice(
                        Level::Info,
                        format!("{why}: checking {tag} once its current action ends"),
                    );
                }
                continue;
            }
            if self.local.checks.get(tag).is_none_or(|due| *due > self.now) {
                self.local.checks.insert(tag.clone(), self.now);
                self.notice(Level::Info, format!("{why}: checking {tag} now"));
            }
        }
    }

    /// At start: a probe of every hierarchy here.
    pub(super) fn start_probes(&mut self) {
        let mut seen = BTreeSet::new();
        let tags: Vec<String> = self
            .model
            .resources
            .values()
            .filter(|r| r.place.node == self.cfg.node)
            .map(|r| r.place.tag.clone())
            .collect();
        self.local.probing = true;
        for tag in tags {
            if seen.contains(&tag) {
                continue;
            }
            seen.extend(self.model.hierarchy(&self.place_of(&tag)));
            let _ = self.begin(Kind::Probe, &tag, After::default(), None);
        }
        self.local.maintenance_seen = self.model.maintenance;
    }

    /// Starts a job on the hierarchy of `tag`, or queues it behind the one
    /// holding it. A quickCheck is skipped rather than queued.
    pub(super) fn begin(
        &mut self,
        kind: Kind,
        tag: &str,
        after: After,
        order: Option<(u16, View)>,
    ) -> Result<(), String> {
        let place = self.place_of(tag);
        if !self.model.resources.contains_key(&place) {
            return Err(format!(
                "no resource {tag} on {}; `heartline ins list` shows what exists",
                self.who(self.cfg.node)
            ));
        }
        if matches!(kind, Kind::Start | Kind::Recover { .. }) && !self.has_quorum() {
            return Err(format!(
                "{} has no quorum: nothing is started here until it has",
                self.who(self.cfg.node)
            ));
        }
        if matches!(kind, Kind::Start | Kind::Recover { .. }) && !self.has_quorum_for(tag) {
            return Err(format!(
                "{}'s fast lease was not renewed: its hierarchies whose stop is fast are not started here until it is",
                self.who(self.cfg.node)
            ));
        }
        let tags = self.model.hierarchy(&place);
        if order.is_none() && matches!(kind, Kind::Start | Kind::Recover { .. }) {
            // Not ordered by the coordinator: no handover it vouched for.
            self.local.handover.retain(|t| !tags.contains(t));
        }
        if self.local.holds(&tags) {
            if kind == Kind::Check {
                return Err(format!("{tag} is busy with another action"));
            }
            self.local.waiting.push_back(Waiting {
                kind,
                tag: tag.to_string(),
                after,
                order,
            });
            return Ok(());
        }
        if kind == Kind::Start {
            if self.local.leaving {
                return Err(format!("{} is stopping", self.who(self.cfg.node)));
            }
            let failed: Vec<String> = tags
                .iter()
                .filter(|t| self.state_of(t).is_some_and(State::failed))
                .cloned()
                .collect();
            if let Some(t) = failed.first() {
                let state = self.state_of(t).unwrap_or(State::Osf);
                return Err(format!(
                    "{t} is {state} on {}: make sure it is stopped and fixed, then heartline cleanup {t}",
                    self.who(self.cfg.node)
                ));
            }
        }
        let state = |t: &String| self.state_of(t);
        let steps: VecDeque<(String, Action)> = match &kind {
            Kind::Start => self
                .model
                .restore_order(&place)
                .into_iter()
                .filter(|t| !state(t).is_some_and(State::in_service))
                .map(|t| (t, Action::Restore))
                .collect(),
            Kind::Stop | Kind::GiveUp => self
                .model
                .remove_order(&place)
                .into_iter()
                .filter(|t| state(t).is_some_and(State::maybe_running))
                .map(|t| (t, Action::Remove))
                .collect(),
            Kind::Check => VecDeque::from([(tag.to_string(), Action::QuickCheck)]),
            Kind::Recover { .. } => VecDeque::from([(tag.to_string(), Action::Recover)]),
            Kind::Probe => self
                .model
                .restore_order(&place)
                .into_iter()
                .map(|t| (t, Action::QuickCheck))
                .collect(),
        };
        let mut job = Job {
            kind,
            subject: tag.to_string(),
            tags,
            steps,
            current: None,
            lines: Vec::new(),
            started: Vec::new(),
            failure: None,
            after,
        };
        if job.steps.is_empty() {
            let already = match job.kind {
                Kind::Start => Some("in service"),
                Kind::Stop => Some("out of service"),
                _ => None,
            };
            if let Some(already) = already {
                job.lines.push(format!(
                    "{tag}'s hierarchy is already {already} on {}",
                    self.who(self.cfg.node)
                ));
            }
            self.end_job(job);
            return Ok(());
        }
        let id = JobId(self.local.next_job);
        self.local.next_job += 1;
        self.dirty = true;
        if !matches!(job.kind, Kind::Check | Kind::Probe) {
            self.notice(
                Level::Info,
                format!(
                    "{} of {tag}'s hierarchy begins ({} steps)",
                    job.kind.name(),
                    job.steps.len()
                ),
            );
        }
        self.local.jobs.insert(id, job);
        self.next_step(id);
        Ok(())
    }

    /// Asks for the job's next script, or ends it.
    fn next_step(&mut self, id: JobId) {
        let Some(job) = self.local.jobs.get_mut(&id) else {
            return;
        };
        let Some((tag, action)) = job.steps.pop_front() else {
            if let Some(job) = self.local.jobs.remove(&id) {
                self.end_job(job);
            }
            return;
        };
        job.current = Some((tag.clone(), action));
        let event = match &job.kind {
            Kind::Recover { event, .. } => Some(event.clone()),
            _ => None,
        };
        match self.model.resources.get(&self.place_of(&tag)) {
            Some(resource) => {
                let resource = resource.clone();
                let handover = action == Action::Restore && self.local.handover.remove(&tag);
                self.out.push_back(Output::Run {
                    job: id,
                    action,
                    resource,
                    event,
                    handover,
                });
            }
            None => {
                // The resource was removed from the configuration while
                // the job waited: that step is done.
                self.on_script_done(id, true, "skipped: the resource no longer exists");
            }
        }
    }

    pub(super) fn on_script_done(&mut self, id: JobId, ok: bool, summary: &str) {
        let Some(job) = self.local.jobs.get_mut(&id) else {
            return;
        };
        let Some((tag, action)) = job.current.take() else {
            return;
        };
        let line = format!("{action} {tag}: {summary}");
        job.lines.push(line.clone());
        let kind = job.kind.clone();
        self.local
            .last
            .insert(tag.clone(), format!("{action} {summary}"));
        if !ok && kind != Kind::Probe {
            // A probe that finds it stopped is no failure.
            self.local
                .last_failure
                .insert(tag.clone(), (self.now, format!("{action} {summary}")));
        }
        if !ok && !matches!(kind, Kind::Check | Kind::Probe) {
            self.notice(Level::Warn, line.clone());
        }
        let mut stop_here = false;
        match (&kind, action, ok) {
            (Kind::Start, Action::Restore, true) => {
                self.set_state(&tag, State::Isp);
                if let Some(job) = self.local.jobs.get_mut(&id) {
                    job.started.push(tag.clone());
                }
            }
            (Kind::Start, Action::Restore, false) => {
                if let Some(job) = self.local.jobs.get_mut(&id) {
                    job.failure = Some(line);
                    job.steps = std::iter::once(tag.clone())
                        .chain(job.started.iter().rev().cloned())
                        .map(|t| (t, Action::Remove))
                        .collect();
                    job.started.clear();
                }
                self.set_state(&tag, State::Isu);
            }
            (Kind::Start, Action::Remove, true) => {
                let failed = self
                    .local
                    .jobs
                    .get(&id)
                    .and_then(|j| j.failure.as_ref())
                    .is_some_and(|f| f.starts_with(&format!("restore {tag}:")));
                self.set_state(&tag, if failed { State::Osf } else { State::Osu });
            }
            (Kind::Stop | Kind::GiveUp | Kind::Start, Action::Remove, false) => {
                self.block(&tag, &line);
                if let Some(job) = self.local.jobs.get_mut(&id) {
                    job.failure.get_or_insert(line);
                }
                stop_here = true;
            }
            (Kind::Stop | Kind::GiveUp, Action::Remove, true) => self.set_state(&tag, State::Osu),
            (Kind::Check | Kind::Recover { .. }, _, false) => {
                if let Some(job) = self.local.jobs.get_mut(&id) {
                    job.failure = Some(line);
                }
            }
            (Kind::Recover { .. }, _, true) => self.set_state(&tag, State::Isp),
            (Kind::Probe, _, true) if self.state_of(&tag) != Some(State::Blocked) => {
                self.set_state(&tag, State::Isp);
            }
            (Kind::Probe, _, false) if self.state_of(&tag).is_some_and(State::in_service) => {
                self.set_state(&tag, State::Osu);
            }
            _ => {}
        }
        if stop_here {
            if let Some(job) = self.local.jobs.get_mut(&id) {
                job.steps.clear();
            }
        }
        self.next_step(id);
    }

    /// A step's script could not be started for want of resources: a
    /// quickCheck is skipped (the hierarchy is not failed for it), any
    /// other step is asked for again.
    pub(super) fn on_script_not_run(&mut self, id: JobId, summary: &str) {
        let Some(job) = self.local.jobs.get_mut(&id) else {
            return;
        };
        let Some((tag, action)) = job.current.take() else {
            return;
        };
        let check = job.kind == Kind::Check;
        if !check {
            job.steps.push_front((tag.clone(), action));
        }
        self.local
            .last
            .insert(tag.clone(), format!("{action} could not run: {summary}"));
        let then = if check {
            "not counted as a failure; checked again at the next interval"
        } else {
            "trying again"
        };
        self.notice(
            Level::Error,
            format!("{action} {tag} could not run ({summary}): {then}"),
        );
        self.next_step(id);
    }

    /// A remove failed: the resource may still run.
    fn block(&mut self, tag: &str, line: &str) {
        self.set_state(tag, State::Blocked);
        self.stats.blocked += 1;
        self.notice(
            Level::Error,
            format!(
                "BLOCKED: {line}. {tag} may still be running on {}: its hierarchy will not be started on any node until it is known to be stopped; make sure it is, then run heartline cleanup {tag} --node {}",
                self.who(self.cfg.node),
                self.cfg.node
            ),
        );
    }

    /// A job ended: tell who waits, and follow a failed check with
    /// recovery, a failed recovery with another attempt or a failover.
    fn end_job(&mut self, job: Job) {
        self.dirty = true;
        let tag = job.subject.clone();
        let failed = job.failure.clone();
        match (&job.kind, &failed) {
            (Kind::Check, None) => {
                self.local.checks.remove(&tag);
                self.schedule_check(&tag);
            }
            (Kind::Check, Some(line)) => {
                // It stays ISP while it is recovered (the action shows in
                // status): nothing is written before recovery starts.
                self.notice(Level::Warn, format!("{line}: {tag} failed"));
                self.on_failure(&tag, "quickCheck,failed".into(), job.after);
                self.after_job(&job.tags);
                return;
            }
            (Kind::Recover { event, attempt }, Some(_)) => {
                let attempts = self.recover_attempts(&tag);
                if *attempt < attempts {
                    self.notice(
                        Level::Warn,
                        format!("recovery of {tag} failed (attempt {attempt} of {attempts}); trying again"),
                    );
                    let kind = Kind::Recover {
                        event: event.clone(),
                        attempt: attempt + 1,
                    };
                    self.after_job(&job.tags);
                    let _ = self.begin(kind, &tag, job.after, None);
                    return;
                }
                self.notice(
                    Level::Error,
                    format!(
                        "recovery of {tag} failed {attempts} times: failing its hierarchy over"
                    ),
                );
                self.after_job(&job.tags);
                self.give_up(&tag, job.after);
                return;
            }
            (Kind::Recover { .. }, None) => {
                self.notice(Level::Info, format!("{tag} recovered in place"));
            }
            (Kind::GiveUp, None) => {
                self.set_state(&tag, State::Osf);
                self.stats.give_ups += 1;
                self.notice(
                    Level::Error,
                    format!(
                        "{tag}'s hierarchy is out of service on {} and {tag} marked failed (OSF): the next node by priority takes it",
                        self.who(self.cfg.node)
                    ),
                );
            }
            (Kind::Start | Kind::Stop | Kind::GiveUp, _) => {
                let how = failed
                    .as_deref()
                    .map_or("done".to_string(), |f| format!("failed: {f}"));
                self.notice(
                    if failed.is_some() {
                        Level::Error
                    } else {
                        Level::Info
                    },
                    format!("{} of {tag}'s hierarchy {how}", job.kind.name()),
                );
            }
            _ => {}
        }
        let result = match &failed {
            None => Ok(()),
            Some(line) => Err(format!("{} failed: {line}", job.kind.name())),
        };
        if let Some(id) = job.after.reply {
            let answer = match &result {
                Ok(()) => Answer::Done {
                    steps: job.lines.clone(),
                },
                Err(e) => Answer::error(e.clone()),
            };
            self.reply(id, answer);
        }
        if let Some((ticket, ends)) = job.after.ticket {
            let end = if ends || result.is_err() {
                Some(result)
            } else {
                None
            };
            self.report_ticket(ticket, job.lines.clone(), end);
        }
        self.after_job(&job.tags);
    }

    /// After a job: checks that fell due while it held the hierarchy, and
    /// what waited for it.
    fn after_job(&mut self, tags: &BTreeSet<String>) {
        for tag in tags {
            if self.state_of(tag) == Some(State::Isp) {
                self.schedule_check(tag);
            }
        }
        let waiting: Vec<Waiting> = self.local.waiting.drain(..).collect();
        for w in waiting {
            if let Some((from, view)) = &w.order {
                if *from != self.coordinator() || *view != self.view() {
                    // The order's view is gone; its coordinator decides
                    // again.
                    continue;
                }
            }
            let (tag, after) = (w.tag.clone(), w.after.clone());
            if let Err(why) = self.begin(w.kind, &w.tag, w.after, w.order) {
                self.refuse_after(&tag, after, why);
            }
        }
        self.check_probes_done();
    }

    /// Once no probe is left: the node knows what runs here.
    fn check_probes_done(&mut self) {
        let probing = self.local.jobs.values().any(|j| j.kind == Kind::Probe)
            || self.local.waiting.iter().any(|w| w.kind == Kind::Probe);
        if self.local.probing && !probing {
            self.local.probing = false;
            self.notice(Level::Info, "probes done: what runs here is known");
            self.apply_init_strategies();
        }
    }

    /// Tells whoever waits that the job was refused.
    pub(super) fn refuse_after(&mut self, tag: &str, after: After, why: String) {
        if let Some(id) = after.reply {
            self.reply(id, Answer::error(why.clone()));
        }
        if let Some((ticket, _)) = after.ticket {
            self.report_ticket(ticket, Vec::new(), Some(Err(why.clone())));
            self.members.refused.push((tag.to_string(), why));
        }
    }

    /// Sends a job's outcome to the request waiting for it.
    fn report_ticket(
        &mut self,
        ticket: Ticket,
        steps: Vec<String>,
        end: Option<Result<(), String>>,
    ) {
        let node = self.cfg.node;
        if ticket.origin == node {
            self.on_job_report(ticket, node, steps, end);
        } else {
            self.send(
                ticket.origin,
                BrainMsg::JobReport {
                    ticket,
                    node,
                    steps,
                    end,
                },
            );
        }
    }

    fn recover_attempts(&self, tag: &str) -> u32 {
        self.model
            .resources
            .get(&self.place_of(tag))
            .and_then(|r| self.cfg.kits.get(&format!("{}/{}", r.app, r.rtype)))
            .map_or(1, |k| k.recover_attempts)
    }

    /// `tag` failed (a quickCheck, or `sendevent`): count it; recover in
    /// place while the failure window allows, else fail over.
    pub(super) fn on_failure(&mut self, tag: &str, event: String, after: After) {
        if self.model.maintenance {
            self.notice(
                Level::Warn,
                format!("{tag} failed ({event}) in maintenance mode: nothing is done"),
            );
            self.refuse_after(
                tag,
                after,
                "maintenance mode is on: nothing is recovered".into(),
            );
            return;
        }
        if !self.has_quorum() {
            self.notice(
                Level::Warn,
                format!("{tag} failed ({event}) on a node without quorum: stopping its hierarchy here, not recovering it"),
            );
            if let Err(why) = self.begin(Kind::Stop, tag, after.clone(), None) {
                self.refuse_after(tag, after, why);
            }
            return;
        }
        let window = self
            .duration_prop(tag, "failure_window")
            .unwrap_or(self.cfg.failure_window);
        let max = self
            .model
            .resources
            .get(&self.place_of(tag))
            .and_then(|r| r.props.get("max_failures"))
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(self.cfg.max_failures);
        let now = self.now;
        let failures = self.local.failures.entry(tag.to_string()).or_default();
        failures.push_back(now);
        while failures
            .front()
            .is_some_and(|at| now.saturating_since(*at) > window)
        {
            failures.pop_front();
        }
        let count = u32::try_from(failures.len()).unwrap_or(u32::MAX);
        if count > max {
            self.notice(
                Level::Error,
                format!(
                    "{tag} failed {count} times within {window}: more than max_failures ({max}) local recoveries; failing its hierarchy over"
                ),
            );
            self.give_up(tag, after);
            return;
        }
        if self.recover_attempts(tag) == 0 {
            self.give_up(tag, after);
            return;
        }
        self.stats.recoveries += 1;
        self.notice(
            Level::Warn,
            format!("{tag} failed ({event}); recovering in place (failure {count} of {max} allowed within {window})"),
        );
        let kind = Kind::Recover { event, attempt: 1 };
        if let Err(why) = self.begin(kind, tag, after.clone(), None) {
            self.refuse_after(tag, after, why);
        }
    }

    fn give_up(&mut self, tag: &str, after: After) {
        if let Err(why) = self.begin(Kind::GiveUp, tag, after.clone(), None) {
            self.refuse_after(tag, after, why);
        }
    }

    /// Once the first probes are done: the init strategies. `in-service`
    /// asks that the hierarchy's role be started; `out-of-service` holds it
    /// off this node until an administrator brings it in service here.
    fn apply_init_strategies(&mut self) {
        if self.local.initialised {
            return;
        }
        self.local.initialised = true;
        let node = self.cfg.node;
        let mut start = Vec::new();
        for r in self
            .model
            .resources
            .values()
            .filter(|r| r.place.node == node)
        {
            match r.init {
                Init::OutOfService => {
                    self.local.held.insert(r.place.tag.clone());
                }
                Init::InService if r.role == Role::Stopped => start.push(r.place.clone()),
                _ => {}
            }
        }
        for place in start {
            self.propose(
                Requester::Internal,
                Change::SetRole {
                    place,
                    role: Role::Started,
                },
            );
        }
    }

    /// Clears the hold on the hierarchy of `tag` here.
    pub(super) fn unhold(&mut self, tag: &str) {
        let tags = self.model.hierarchy(&self.place_of(tag));
        self.local.held.retain(|t| !tags.contains(t));
    }

    /// An order from the coordinator.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_order(
        &mut self,
        from: u16,
        view: &View,
        op: Op,
        tag: &str,
        ticket: Option<Ticket>,
        ends: bool,
        handover: bool,
    ) {
        if from != self.coordinator() || *view != self.view() {
            return;
        }
        if op == Op::Start {
            let tags = self.model.hierarchy(&self.place_of(tag));
            if handover {
                self.local.handover.extend(tags);
            } else {
                self.local.handover.retain(|t| !tags.contains(t));
            }
        }
        let after = After {
            reply: None,
            ticket: ticket.map(|t| (t, ends)),
        };
        let refused = self.local.refused_starts.contains(tag);
        let refusal = match op {
            Op::Start if refused => Some(format!(
                "{} refused to start it earlier in this view",
                self.who(self.cfg.node)
            )),
            Op::Start if self.local.leaving => {
                Some(format!("{} is stopping", self.who(self.cfg.node)))
            }
            Op::Start if self.model.maintenance => Some("maintenance mode is on".to_string()),
            Op::Start if !self.has_quorum() => {
                Some(format!("{} has no quorum", self.who(self.cfg.node)))
            }
            Op::Start if !self.has_quorum_for(tag) => Some(format!(
                "{}'s fast lease was not renewed",
                self.who(self.cfg.node)
            )),
            _ => None,
        };
        if let Some(why) = refusal {
            self.refuse_order(tag, &why);
            if let Some((ticket, _)) = after.ticket {
                self.report_ticket(ticket, Vec::new(), Some(Err(why)));
            }
            return;
        }
        let kind = match op {
            Op::Start => {
                self.unhold(tag);
                Kind::Start
            }
            Op::Stop => Kind::Stop,
        };
        if let Err(why) = self.begin(kind, tag, after.clone(), Some((from, view.clone()))) {
            self.refuse_order(tag, &why);
            if let Some((ticket, _)) = after.ticket {
                self.report_ticket(ticket, Vec::new(), Some(Err(why)));
            }
        }
    }

    /// An order refused: the coordinator is told (itself at once), and
    /// orders for the same hierarchy queued behind an action here are
    /// dropped (the coordinator decides again from the refusal).
    fn refuse_order(&mut self, tag: &str, why: &str) {
        let tags = self.model.hierarchy(&self.place_of(tag));
        self.local.refused_starts.extend(tags.iter().cloned());
        self.local
            .waiting
            .retain(|w| w.order.is_none() || !tags.contains(&w.tag));
        if self.coordinator() == self.cfg.node {
            self.place_refused(self.cfg.node, tag, why.to_string());
        } else {
            self.members
                .refused
                .push((tag.to_string(), why.to_string()));
        }
    }

    /// `heartline cleanup`: the resource's failure, fail-count and last failure are
    /// cleared.
    pub(super) fn cleanup(&mut self, tag: &str) -> Result<String, String> {
        let place = self.place_of(tag);
        let Some(state) = self.model.resources.get(&place).map(|r| r.state) else {
            return Err(format!(
                "no resource {tag} on {}; `heartline ins list` shows what exists",
                self.who(self.cfg.node)
            ));
        };
        let tags = self.model.hierarchy(&place);
        if let Some(busy) = self.local.busy_tag(&tags) {
            return Err(format!(
                "{busy} is busy with an action; try again when it ends"
            ));
        }
        let failures = self.local.failures.remove(tag).map_or(0, |f| f.len());
        // Its last failure is cleared too: status lists it no more.
        self.local.last_failure.remove(tag);
        self.unhold(tag);
        if state.failed() {
            self.set_state(tag, State::Osu);
        }
        let text = format!(
            "{tag} on {}: {} -> {}, {failures} failures forgotten",
            self.who(self.cfg.node),
            state,
            self.state_of(tag).unwrap_or(state)
        );
        self.notice(Level::Info, format!("cleanup: {text}"));
        Ok(text)
    }

    /// The daemon is asked to stop.
    pub(super) fn on_shutdown(&mut self) {
        if self.local.leaving {
            self.notice(Level::Warn, "already stopping; send SIGKILL to abandon the stop (what runs here then runs unwatched)");
            return;
        }
        self.local.leaving = true;
        self.local.checks.clear();
        self.local.recheck.clear();
        if self.model.maintenance {
            self.notice(
                Level::Warn,
                "stopping in maintenance mode: every resource is left as it is, unwatched",
            );
            return;
        }
        let node = self.cfg.node;
        let running: Vec<Place> = self
            .model
            .resources
            .values()
            .filter(|r| r.place.node == node && r.state.maybe_running())
            .map(|r| r.place.clone())
            .collect();
        let how = match self.cfg.on_stop {
            OnStop::Switchover => {
                "taking its hierarchies out of service for the next nodes to take"
            }
            OnStop::Stop => {
                "taking its hierarchies out of service, to stay out (on_stop = \"stop\")"
            }
        };
        self.notice(Level::Info, format!("stopping: {how}"));
        if self.cfg.on_stop == OnStop::Stop {
            let mut seen = BTreeSet::new();
            for place in &running {
                let group = self.model.group(place);
                if seen.insert(group.iter().next().cloned()) {
                    self.propose(
                        Requester::Internal,
                        Change::SetRole {
                            place: place.clone(),
                            role: Role::Stopped,
                        },
                    );
                }
            }
        }
        // Queued starts and checks are dropped; stops go ahead.
        let waiting: Vec<Waiting> = self.local.waiting.drain(..).collect();
        for w in waiting {
            if matches!(w.kind, Kind::Start | Kind::Check) {
                let why = format!("{} is stopping", self.who(node));
                self.refuse_after(&w.tag, w.after, why);
            } else {
                self.local.waiting.push_back(w);
            }
        }
    }

    /// While stopping: stop what still runs here; once nothing runs and no
    /// job is left, exit.
    pub(super) fn local_exit(&mut self) {
        if !self.local.leaving || self.local.exited {
            return;
        }
        if !self.model.maintenance {
            let node = self.cfg.node;
            let why = format!("{} is stopping", self.who(node));
            self.stop_everything_here(&why);
            if !self.local.jobs.is_empty() || !self.local.waiting.is_empty() {
                return;
            }
            if self
                .model
                .resources
                .values()
                .any(|r| r.place.node == node && r.state.in_service())
            {
                return;
            }
            let blocked: Vec<String> = self
                .model
                .resources
                .values()
                .filter(|r| r.place.node == node && r.state == State::Blocked)
                .map(|r| r.place.tag.clone())
                .collect();
            if !blocked.is_empty() {
                self.notice(
                    Level::Error,
                    format!(
                        "exiting with BLOCKED resources that may still run: {}; no other node starts their hierarchies until they are cleaned up",
                        blocked.join(", ")
                    ),
                );
            }
        }
        self.local.exited = true;
        self.notice(Level::Info, "stopped: nothing of this node's runs here");
        self.out.push_back(Output::Exit);
    }

    /// Stops every hierarchy in service here that no action holds, and
    /// drops queued starts (refused: `why`).
    pub(super) fn stop_everything_here(&mut self, why: &str) {
        let node = self.cfg.node;
        let waiting: Vec<Waiting> = self.local.waiting.drain(..).collect();
        for w in waiting {
            if matches!(w.kind, Kind::Start | Kind::Recover { .. }) {
                self.refuse_after(&w.tag, w.after, why.to_string());
            } else {
                self.local.waiting.push_back(w);
            }
        }
        let running: Vec<String> = self
            .model
            .resources
            .values()
            .filter(|r| r.place.node == node && r.state.in_service())
            .map(|r| r.place.tag.clone())
            .collect();
        self.stop_here(&running, why);
    }

    /// Stops the hierarchies of `running` (tags in service here), and
    /// refuses the starts waiting for them, for `why`.
    pub(super) fn stop_here(&mut self, running: &[String], why: &str) {
        let hierarchies: BTreeSet<String> = running
            .iter()
            .flat_map(|tag| self.model.hierarchy(&self.place_of(tag)))
            .collect();
        let waiting: Vec<Waiting> = self.local.waiting.drain(..).collect();
        for w in waiting {
            if matches!(w.kind, Kind::Start | Kind::Recover { .. }) && hierarchies.contains(&w.tag)
            {
                self.refuse_after(&w.tag, w.after, why.to_string());
            } else {
                self.local.waiting.push_back(w);
            }
        }
        for tag in running {
            let tags = self.model.hierarchy(&self.place_of(tag));
            let queued = self.local.waiting.iter().any(|w| tags.contains(&w.tag));
            if !self.local.holds(&tags) && !queued {
                let _ = self.begin(Kind::Stop, tag, After::default(), None);
            }
        }
    }

    /// Whether starting the hierarchy of `tag` on node `to` is a handover,
    /// by what this node (the coordinator) knows: another node was seen
    /// running one of its resources since this node started, and every
    /// other node they are extended to is up, has said hello, says they
    /// are stopped there (`OSU` or `OSF`), and has nothing under way for
    /// them: no node of the cluster holds them. (A first start is no
    /// handover.)
    pub(super) fn is_handover(&self, to: u16, tag: &str) -> bool {
        let own = self.cfg.node;
        let tags = self.model.hierarchy(&Place {
            node: to,
            tag: tag.to_string(),
        });
        let groups: Vec<&crate::groups::Group> = tags
            .iter()
            .filter_map(|t| {
                self.groups.of(&Place {
                    node: to,
                    tag: t.clone(),
                })
            })
            .collect();
        let others = || {
            groups.iter().flat_map(|g| {
                g.members
                    .iter()
                    .filter(|(n, _)| **n != to)
                    .flat_map(|(n, members)| members.iter().map(move |m| (*n, m)))
            })
        };
        let ran = others().any(|(_, m)| self.members.ran.contains(m));
        ran && others().all(|(n, m)| {
            let hierarchy = self.model.hierarchy(m);
            if n == own {
                let stopped = self
                    .model
                    .resources
                    .get(m)
                    .is_some_and(|r| matches!(r.state, State::Osu | State::Osf));
                return stopped && !self.local.holds(&hierarchy);
            }
            let Some(peer) = self.members.up.get(&n).filter(|p| p.synced) else {
                return false;
            };
            let stopped = peer
                .states
                .get(&m.tag)
                .is_some_and(|s| matches!(s, State::Osu | State::Osf));
            stopped && !peer.busy.keys().any(|k| hierarchy.contains(k))
        })
    }

    /// The subjects of the actions here that may start something.
    pub(super) fn local_starting(&self) -> impl Iterator<Item = &str> + '_ {
        self.local
            .jobs
            .values()
            .filter(|j| matches!(j.kind, Kind::Start | Kind::Recover { .. }))
            .map(|j| j.subject.as_str())
    }

    /// Whether anything may run here: a resource in service or blocked, or
    /// an action that may start one.
    pub(super) fn may_run_anything(&self) -> bool {
        let node = self.cfg.node;
        self.local
            .jobs
            .values()
            .any(|j| matches!(j.kind, Kind::Start | Kind::Recover { .. }))
            || self
                .model
                .resources
                .values()
                .any(|r| r.place.node == node && r.state.maybe_running())
    }

    /// The view changed: refusals were of the old one.
    pub(super) fn local_view_changed(&mut self) {
        self.local.refused_starts.clear();
    }

    /// Quorum came back: what was refused for want of it may be asked again.
    pub(super) fn local_quorum_regained(&mut self) {
        self.local.refused_starts.clear();
    }

    /// Work that follows an input.
    pub(super) fn local_progress(&mut self) {
        self.check_probes_done();
    }

    /// The configuration changed: maintenance mode's effect, and what was
    /// kept for resources that are gone.
    pub(super) fn local_config_changed(&mut self) {
        let node = self.cfg.node;
        let exists = |model: &crate::model::Model, tag: &String| {
            model.resources.contains_key(&Place {
                node,
                tag: tag.clone(),
            })
        };
        let model = &self.model;
        self.local.checks.retain(|t, _| exists(model, t));
        self.local.recheck.retain(|t| exists(model, t));
        self.local.failures.retain(|t, _| exists(model, t));
        self.local.held.retain(|t| exists(model, t));
        let maintenance = self.model.maintenance;
        if maintenance == self.local.maintenance_seen {
            return;
        }
        self.local.maintenance_seen = maintenance;
        if maintenance {
            self.local.checks.clear();
            self.local.recheck.clear();
            self.notice(
                Level::Warn,
                "MAINTENANCE MODE ON: nothing is checked, recovered, started or stopped by the cluster until it is turned off",
            );
        } else {
            self.notice(
                Level::Info,
                "maintenance mode off: probing what runs here before the cluster acts again",
            );
            if !self.local.leaving {
                self.start_probes();
            }
        }
    }

    pub(super) fn local_timers(&mut self) {
        let now = self.now;
        let due: Vec<String> = self
            .local
            .checks
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(t, _)| t.clone())
            .collect();
        for tag in due {
            self.local.checks.remove(&tag);
            if self
                .begin(Kind::Check, &tag, After::default(), None)
                .is_ok()
            {
                // A hint is answered by this check.
                self.local.recheck.remove(&tag);
            }
            // Else busy: the job holding it reschedules the check when it
            // ends (at once if a hint waits).
        }
    }

    pub(super) fn local_timeout(&self) -> Option<Instant> {
        self.local.checks.values().min().copied()
    }
}
