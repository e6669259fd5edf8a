//! Fencing: a lost node is powered off (or reset) through its fence
//! devices, so that what it ran may be started elsewhere before its lease
//! ends.
//!
//! Only the coordinator of a quorate partition fences, and only nodes it
//! saw up and then lost (not one that said it was leaving, a clean stop:
//! what it ran was stopped). Each node has levels of devices, tried in
//! order; a level succeeds when every device in it confirmed (the daemon
//! runs the device's agent, [`super::Output::Fence`], and reports with
//! [`super::Input::FenceDone`]: an agent's success is its confirmation, a
//! failure, a timeout or a missing agent is not). A failed level is tried
//! `attempts` times, `retry_delay` apart, then the next one; after the last
//! level the first is tried again, until the node is fenced, comes back or
//! its lease ends (then it runs nothing anyway: [`super::quorum`]).
//!
//! A confirmation counts here only, until the node comes back: its
//! hierarchies may be started at once (see [`Brain::fenced`]). A new
//! coordinator does not trust another's confirmation; it fences again, or
//! waits for the lease.

use std::collections::BTreeMap;

use heartline_core::{Duration, Instant};

use super::{Brain, Level, Output};

/// How nodes are fenced (the same on every node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceConfig {
    /// Per node: its levels of fence devices (by name), tried in order; a
    /// level succeeds when every device in it confirmed.
    pub levels: BTreeMap<u16, Vec<Vec<String>>>,
    /// Attempts of a level before the next one is tried.
    pub attempts: u32,
    /// Pause after a failed attempt.
    pub retry_delay: Duration,
    /// What the devices are asked to do.
    pub action: FenceAction,
}

impl Default for FenceConfig {
    fn default() -> FenceConfig {
        FenceConfig {
            levels: BTreeMap::new(),
            attempts: 2,
            retry_delay: Duration::from_secs(1),
            action: FenceAction::Reboot,
        }
    }
}

/// What a fence device is asked to do to a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FenceAction {
    /// Power it off and on again (the agent confirms the off).
    #[default]
    Reboot,
    /// Power it off; it stays off until an administrator powers it on.
    Off,
}

impl FenceAction {
    /// The fence agents' name for it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            FenceAction::Reboot => "reboot",
            FenceAction::Off => "off",
        }
    }
}

/// One run of a fence device, named in [`super::Output::Fence`] and
/// [`super::Input::FenceDone`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FenceId(pub u64);

/// One node being fenced.
#[derive(Debug, Clone)]
struct Target {
    /// The level tried now.
    level: usize,
    /// The device of that level to run next.
    device: usize,
    /// Attempts of this level that failed.
    failed: u32,
    /// The run under way.
    pending: Option<FenceId>,
    /// Not to be tried again before.
    not_before: Instant,
    /// When it was confirmed fenced.
    confirmed: Option<Instant>,
}

/// What this node knows of fencing.
#[derive(Debug, Default)]
pub(super) struct FenceState {
    next: u64,
    /// Nodes lost that are to be fenced, or were.
    targets: BTreeMap<u16, Target>,
    /// Runs under way, by id: which node.
    runs: BTreeMap<FenceId, u16>,
}

/// Fencing of a node as this node sees it, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceStatus {
    /// The node.
    pub node: u16,
    /// Whether it was confirmed fenced (since it was lost).
    pub confirmed: bool,
    /// The level tried now (from 1).
    pub level: usize,
    /// Failed attempts of that level.
    pub failed: u32,
    /// Whether a device runs now.
    pub running: bool,
}

impl Brain {
    /// Membership changed for `node`: lost (`up == false`, `leaving`: it
    /// said it was stopping) or back.
    pub(super) fn fence_membership(&mut self, node: u16, up: bool, leaving: bool) {
        if up || leaving {
            self.fence.targets.remove(&node);
            return;
        }
        let configured = self
            .cfg
            .fencing
            .as_ref()
            .is_some_and(|f| f.levels.get(&node).is_some_and(|l| !l.is_empty()));
        if configured && self.cfg.quorum.is_some() {
            self.fence.targets.entry(node).or_insert(Target {
                level: 0,
                device: 0,
                failed: 0,
                pending: None,
                not_before: self.now,
                confirmed: None,
            });
        }
    }

    /// Whether `node` was confirmed fenced here since it was lost.
    pub(super) fn fence_confirmed(&self, node: u16) -> bool {
        self.fence
            .targets
            .get(&node)
            .is_some_and(|t| t.confirmed.is_some())
    }

    /// A fence device's run ended.
    pub(super) fn on_fence_done(&mut self, id: FenceId, ok: bool, summary: &str) {
        let Some(node) = self.fence.runs.remove(&id) else {
            return;
        };
        let Some(f) = self.cfg.fencing.clone() else {
            return;
        };
        let levels = f.levels.get(&node).cloned().unwrap_or_default();
        let now = self.now;
        let who = self.who(node);
        let Some(t) = self.fence.targets.get_mut(&node) else {
            // Back since: nothing waits on it.
            let text = format!(
                "fencing {who} ended after it was no longer needed ({}): {summary}",
                if ok { "confirmed" } else { "failed" }
            );
            self.notice(Level::Warn, text);
            return;
        };
        if t.pending != Some(id) {
            return;
        }
        t.pending = None;
        let level = levels.get(t.level).cloned().unwrap_or_default();
        let device = level.get(t.device).cloned().unwrap_or_default();
        let at = t.level + 1;
        if ok {
            t.device += 1;
            if t.device >= level.len() {
                t.confirmed = Some(now);
                self.dirty = true;
                self.notice(
                    Level::Warn,
                    format!(
                        "{who} FENCED: {device} (level {at}) confirmed {} ({summary}); what it ran may be started elsewhere",
                        f.action.as_str()
                    ),
                );
            } else {
                self.notice(
                    Level::Info,
                    format!("fencing {who}: {device} (level {at}) confirmed ({summary}); next device of the level"),
                );
            }
            return;
        }
        t.failed += 1;
        t.device = 0;
        t.not_before = now + f.retry_delay;
        let mut text = format!(
            "fencing {who} FAILED: {device} (level {at}, attempt {} of {}): {summary}",
            t.failed, f.attempts
        );
        if t.failed >= f.attempts.max(1) {
            t.failed = 0;
            t.level += 1;
            if t.level >= levels.len() {
                t.level = 0;
                text.push_str(&format!(
                    "; every level failed, trying again from level 1 in {}; what it ran waits for a fence or for its lease to end",
                    f.retry_delay
                ));
            } else {
                text.push_str(&format!("; escalating to level {}", t.level + 1));
            }
        } else {
            text.push_str(&format!("; trying again in {}", f.retry_delay));
        }
        self.notice(Level::Error, text);
    }

    /// After every input: the coordinator of a quorate partition runs the
    /// next fence device for every lost node that needs it.
    pub(super) fn fence_progress(&mut self) {
        let Some(f) = self.cfg.fencing.clone() else {
            return;
        };
        if self.fence.targets.is_empty() {
            return;
        }
        let acting = self.has_quorum() && self.coordinator() == self.cfg.node;
        let now = self.now;
        let nodes: Vec<u16> = self.fence.targets.keys().copied().collect();
        for node in nodes {
            // Past its lease for the whole partition: it runs nothing.
            let by_lease = self.lease_ended_everywhere(node);
            let who = self.who(node);
            let Some(t) = self.fence.targets.get_mut(&node) else {
                continue;
            };
            if t.confirmed.is_some() {
                continue;
            }
            if by_lease {
                // A run under way ends unheeded.
                self.fence.targets.remove(&node);
                self.notice(
                    Level::Warn,
                    format!("fencing {who} given up: its lease ended, so it runs nothing"),
                );
                continue;
            }
            if t.pending.is_some() || now < t.not_before {
                continue;
            }
            if !acting {
                continue;
            }
            let Some(device) = f
                .levels
                .get(&node)
                .and_then(|l| l.get(t.level))
                .and_then(|l| l.get(t.device))
                .cloned()
            else {
                continue;
            };
            let id = FenceId(self.fence.next);
            self.fence.next += 1;
            t.pending = Some(id);
            let (level, attempt) = (t.level + 1, t.failed + 1);
            self.fence.runs.insert(id, node);
            self.notice(
                Level::Warn,
                format!(
                    "fencing {who}: {} through {device} (level {level}, attempt {attempt} of {}); it was lost and may still run what it ran",
                    f.action.as_str(),
                    f.attempts
                ),
            );
            self.out.push_back(Output::Fence {
                id,
                node,
                device,
                action: f.action,
            });
        }
    }

    /// When a fence attempt is next due.
    pub(super) fn fence_timeout(&self) -> Option<Instant> {
        self.fence
            .targets
            .values()
            .filter(|t| t.confirmed.is_none() && t.pending.is_none())
            .map(|t| t.not_before)
            .filter(|at| *at > self.now)
            .min()
    }

    /// Fencing of every lost node, for `status`.
    #[must_use]
    pub fn fencing(&self) -> Vec<FenceStatus> {
        self.fence
            .targets
            .iter()
            .map(|(node, t)| FenceStatus {
                node: *node,
                confirmed: t.confirmed.is_some(),
                level: t.level + 1,
                failed: t.failed,
                running: t.pending.is_some(),
            })
            .collect()
    }
}
