//! What the brain is asked and how it answers: the typed requests the
//! daemon's control server hands it (from the CLI), and its answers. They
//! are the brain's own types, not the control protocol's; answers also
//! travel between brains.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Change, Model, State, Version};

/// Names one request to this node's brain, chosen by its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// A request to the brain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// The whole configuration, as this node has it.
    Lcd,
    /// A configuration change, ordered by the coordinator.
    Change {
        /// The change.
        change: Change,
    },
    /// Bring the hierarchy of `tag` (on this node) in service here.
    InService {
        /// A resource of the hierarchy.
        tag: String,
    },
    /// Take the hierarchy of `tag` (on this node) out of service wherever
    /// it runs, and keep it out (its role becomes stopped).
    OutOfService {
        /// A resource of the hierarchy.
        tag: String,
    },
    /// `tag` (on this node) failed: recover it.
    SendEvent {
        /// The event's class.
        class: String,
        /// The event.
        event: String,
        /// The resource.
        tag: String,
    },
    /// Move the hierarchy of `tag` (on this node) to node `to`.
    Switchover {
        /// A resource of the hierarchy.
        tag: String,
        /// The node to run it.
        to: u16,
    },
    /// Clear a resource's failed or blocked state and its fail-count, on
    /// `node` (this one if `None`).
    Cleanup {
        /// The resource.
        tag: String,
        /// Its node.
        node: Option<u16>,
    },
    /// Put `node` in standby or take it out.
    Standby {
        /// The node.
        node: u16,
        /// In standby.
        on: bool,
    },
    /// Turn cluster-wide maintenance mode on or off.
    Maintenance {
        /// On.
        on: bool,
    },
    /// Take the coordinator's configuration, whatever this node holds.
    Resync,
    /// Whether every node agrees on the configuration and where things run.
    Verify,
    /// This node's resources and the cluster's state, for `status`.
    Report,
}

/// The brain's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// The configuration.
    Model {
        /// It.
        model: Model,
    },
    /// A change was made at `version`; the nodes in `unconfirmed` did not
    /// confirm they applied it, each with why.
    Changed {
        /// The configuration's version with the change.
        version: Version,
        /// Nodes that were up and did not confirm it.
        unconfirmed: Vec<(u16, String)>,
    },
    /// An action finished; what was done, a line per step.
    Done {
        /// The steps.
        steps: Vec<String>,
    },
    /// This node's report.
    Report(NodeReport),
    /// What `verify` found.
    Verified {
        /// What was compared, in one line.
        summary: String,
        /// Each problem, a line each; none is good news.
        problems: Vec<String>,
        /// Things to know that are not problems (changes discarded when a
        /// partition healed, maintenance mode).
        warnings: Vec<String>,
    },
    /// A node's configuration version and fingerprint, for `verify`.
    Digest {
        /// Its version.
        version: Version,
        /// Its fingerprint.
        digest: u64,
    },
    /// The coordinator took a move; its steps follow.
    Accepted,
    /// The request failed or was refused.
    Error {
        /// Why, in one line.
        message: String,
        /// Whether waiting longer could have helped.
        timed_out: bool,
    },
}

impl Answer {
    /// A refusal or failure, in one line.
    #[must_use]
    pub fn error(message: impl Into<String>) -> Answer {
        Answer::Error {
            message: message.into(),
            timed_out: false,
        }
    }
}

/// How every message and view names a node: `bravo (2)`, or `node 2`
/// when it has no name.
#[must_use]
pub fn node_name(node: u16, name: Option<&str>) -> String {
    match name {
        Some(name) if !name.is_empty() => format!("{name} ({node})"),
        _ => format!("node {node}"),
    }
}

/// A node's resources and the cluster as it sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// This node.
    pub node: u16,
    /// The coordinator it follows.
    pub coordinator: u16,
    /// The nodes it sees up, itself included.
    pub members: Vec<u16>,
    /// Its configuration version.
    pub version: Version,
    /// Cluster-wide maintenance mode.
    pub maintenance: bool,
    /// Nodes in standby.
    pub standby: Vec<u16>,
    /// Whether it is stopping (leaving the cluster).
    pub leaving: bool,
    /// Whether it is still finding out what runs here after a start.
    pub probing: bool,
    /// Its resources.
    pub resources: Vec<ResourceStatus>,
    /// Hierarchies running on more than one node found and ended since
    /// start.
    pub multi_active: u64,
    /// Quorum as this node sees it (`None`: quorum is off).
    #[serde(default)]
    pub quorum: Option<QuorumReport>,
    /// Lost nodes this node fences, or fenced since they were lost.
    #[serde(default)]
    pub fencing: Vec<FenceReport>,
    /// Where each hierarchy would go next, as this node sees the cluster.
    #[serde(default)]
    pub next: Vec<NextReport>,
}

/// Where a hierarchy would go next: for one that runs, the node that would
/// take it over if the nodes it runs on were lost; for one that does not,
/// where it would start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextReport {
    /// The hierarchy, by its group's key (its smallest member).
    pub key: crate::model::Place,
    /// The node (`None`: no node could take it).
    pub node: Option<u16>,
    /// Why no node could, when none could.
    #[serde(default)]
    pub why: Option<String>,
}

/// Quorum, for `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumReport {
    /// Votes that count here: this node's and those of the peers up that
    /// announced the same expected votes (the witness's too, when it counts).
    pub votes: u32,
    /// The cluster's expected votes.
    pub expected: u32,
    /// Whether this node holds quorum.
    pub quorate: bool,
    /// Milliseconds left on its lease, if it holds one.
    pub lease_left_ms: Option<u64>,
    /// The configured lease, in milliseconds: how long the others wait
    /// after losing this node before its hierarchies may start elsewhere
    /// (without a fence device's confirmation).
    #[serde(default)]
    pub lease_ms: u64,
    /// Whether it waits to see every node once before starting anything.
    pub waiting_for_all: bool,
    /// Whether the witness's vote counts here (`None`: no witness).
    #[serde(default)]
    pub witness: Option<bool>,
    /// It refused to start: this peer announced these expected votes
    /// first (the `[quorum]` sections differ).
    #[serde(default)]
    pub refused: Option<(u16, u32)>,
    /// This peer announced other expected votes, and the nodes heard so
    /// far cannot tell which is configured apart: no quorum until they can.
    #[serde(default)]
    pub undecided: Option<(u16, u32)>,
}

/// A lost node being fenced, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceReport {
    /// The node.
    pub node: u16,
    /// Whether a fence was confirmed since it was lost.
    pub confirmed: bool,
    /// The level tried now (from 1).
    pub level: usize,
    /// Failed attempts of that level.
    pub failed: u32,
    /// Whether a device runs now.
    pub running: bool,
}

/// One resource of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceStatus {
    /// Its tag.
    pub tag: String,
    /// `app/type`.
    pub kind: String,
    /// Its state.
    pub state: State,
    /// The node's priority for it.
    pub priority: u16,
    /// Whether the cluster keeps its hierarchy running.
    pub role: String,
    /// Failures counted in its failure window.
    pub failures: u32,
    /// What an action is doing to it now, if anything.
    pub busy: Option<String>,
    /// The last script run on it and how it went.
    pub last: Option<String>,
    /// Its last failure here (a check, start, stop or recovery that
    /// failed): the script and what it said (exit code or signal, time
    /// taken, the last lines of its output).
    #[serde(default)]
    pub last_failure: Option<String>,
    /// How long ago that failure was, in milliseconds.
    #[serde(default)]
    pub last_failure_ago_ms: Option<u64>,
    /// Properties (as set), for the curious.
    pub props: BTreeMap<String, String>,
}
