//! The local control API between the CLI and the daemon: one JSON object
//! per line over a Unix socket, every message carrying the protocol version
//! `v`. A client sends one request; the daemon answers with one response,
//! or for `watch` with a response per event until the client hangs up.
//!
//! This folder owns that protocol (here), the daemon's side of it
//! ([`server`]), the CLI's side ([`client`]), and the local transport under
//! both, a Unix socket or a Windows named pipe ([`ipc`]).

pub mod access;
pub mod client;
pub mod ipc;
pub mod remote;
pub mod server;

use heartline_brain::api::NodeReport;
use serde::{Deserialize, Serialize};

use crate::comm::report::StatusReport;
use crate::resources::lcd::{Change, Model};

/// The control protocol version this build speaks (2: the resource brain's
/// answers, standby, maintenance, cleanup, resync).
pub const VERSION: u32 = 2;

/// A request from the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Nodes, paths and counters.
    Status,
    /// Stream every event as it happens.
    Watch,
    /// Send a mailbox message and wait until it is delivered.
    Send {
        /// Destination node id.
        node: u16,
        /// Destination mailbox.
        mailbox: u16,
        /// The message.
        payload: Vec<u8>,
        /// Give up waiting after this long.
        timeout_ms: u64,
    },
    /// Take one message from a mailbox, waiting up to the timeout.
    Receive {
        /// The mailbox.
        mailbox: u16,
        /// Give up waiting after this long.
        timeout_ms: u64,
    },
    /// Whether a node is reachable over some path.
    CanTalk {
        /// The node id.
        node: u16,
    },
    /// The configuration database, whole (`ins list`, `dep list`, ...).
    Lcd,
    /// One change to the configuration database.
    Change {
        /// The change.
        change: Change,
    },
    /// Bring the hierarchy containing `tag` (on this node) in service.
    InService {
        /// A resource of the hierarchy.
        tag: String,
    },
    /// Take the hierarchy containing `tag` (on this node) out of service.
    OutOfService {
        /// A resource of the hierarchy.
        tag: String,
    },
    /// A failure of `tag` on this node (the alarm interface): recover it.
    SendEvent {
        /// The event's class (e.g. the resource type).
        class: String,
        /// The event (e.g. `down`).
        event: String,
        /// The failed resource.
        tag: String,
    },
    /// Move the hierarchy containing `tag` (on this node) to `to`: out of
    /// service where it runs, then in service there.
    Switchover {
        /// A resource of the hierarchy, on this node.
        tag: String,
        /// The node to run it.
        to: u16,
    },
    /// Whether every node agrees on the configuration, every hierarchy is
    /// sane, and each runs where it should, once.
    Verify,
    /// This node's resources and what it knows of the cluster.
    Resources,
    /// Clear a resource's failure (OSF or BLOCKED) and its fail-count.
    Cleanup {
        /// The resource.
        tag: String,
        /// Its node (this one if none).
        node: Option<u16>,
    },
    /// Put a node in standby (it runs no hierarchy) or take it out.
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
    /// Run `request` on another node (`heartline --on NODE ...`).
    Remote {
        /// The node.
        node: u16,
        /// The request.
        request: Box<Request>,
    },
}

/// A response from the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// Answer to `status`.
    Status(NodeStatus),
    /// One event, for `watch`.
    Event {
        /// Milliseconds since the daemon started.
        at_ms: u64,
        /// What happened, in words.
        text: String,
        /// When, by the daemon's wall clock (milliseconds since the Unix
        /// epoch; 0 from a daemon of an earlier release).
        #[serde(default)]
        wall_ms: u64,
    },
    /// The message was delivered.
    Delivered,
    /// A message from a mailbox.
    Message {
        /// The sender.
        from: u16,
        /// The mailbox.
        mailbox: u16,
        /// The message.
        payload: Vec<u8>,
    },
    /// Answer to `can_talk`.
    CanTalk {
        /// Reachable over some path.
        reachable: bool,
    },
    /// The configuration database.
    Lcd(Model),
    /// A change was made; the configuration is now at this generation.
    /// The nodes in `unconfirmed` were up and did not confirm they applied
    /// it, each with why.
    Changed {
        /// The cluster configuration generation.
        generation: u64,
        /// Nodes that did not confirm it.
        #[serde(default)]
        unconfirmed: Vec<(u16, String)>,
    },
    /// An action on resources finished; what was done, in words.
    Done {
        /// One line per step.
        steps: Vec<String>,
    },
    /// This node's resources and what it knows of the cluster.
    Resources(Box<NodeReport>),
    /// What `verify` found; no problem is good news.
    Verified {
        /// What it checked, in one line.
        summary: String,
        /// Each problem, in one line.
        problems: Vec<String>,
        /// Things to know that are not problems, in one line each.
        #[serde(default)]
        warnings: Vec<String>,
    },
    /// The request failed.
    Error {
        /// Why, in one line.
        message: String,
        /// Whether waiting longer could have helped (a timeout).
        timed_out: bool,
    },
}

/// A request or response with its version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Protocol version.
    pub v: u32,
    /// The message.
    #[serde(flatten)]
    pub body: T,
}

impl<T> Envelope<T> {
    /// Wraps `body` in the current version.
    pub fn new(body: T) -> Self {
        Envelope { v: VERSION, body }
    }
}

/// The answer to `status`: the communication manager's report, and this
/// node's protected resources and view of the cluster beside it (from the
/// resource brain; the CLI adds them). On the wire, one object: the
/// report's fields, then `resources`, then `other_nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Nodes, paths and counters.
    #[serde(flatten)]
    pub comm: StatusReport,
    /// This node's protected resources and the cluster as it sees it.
    #[serde(default)]
    pub resources: Option<Box<NodeReport>>,
    /// Every other node up, with its resources as it reports them (the
    /// CLI asks each through this node's daemon), so that one `status`
    /// shows the fail-counts and last failures of the whole cluster.
    #[serde(default)]
    pub other_nodes: Vec<OtherNode>,
}

/// Another node's resources, for `status`: its report, or why there is
/// none (it went down or did not answer in time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OtherNode {
    /// The node.
    pub node: u16,
    /// Its name.
    pub name: String,
    /// Its resources and view of the cluster.
    #[serde(default)]
    pub resources: Option<Box<NodeReport>>,
    /// Why it could not be asked.
    #[serde(default)]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::report::{DongleReport, PathReport, PeerReport};

    fn status(resources: Option<Box<NodeReport>>) -> NodeStatus {
        let path = PathReport {
            index: 0,
            transport: "tcp 127.0.0.1:7000 -> 127.0.0.1:7001".into(),
            state: "up".into(),
            rtt_us: Some(120),
            last_heard_ms_ago: None,
            frames_in: 5,
            frames_out: 6,
            rejected: 1,
            errors: vec![("bad_tag".into(), 1)],
        };
        let peer = PeerReport {
            node: 2,
            name: "bravo".into(),
            kind: Some("host".into()),
            state: "up".into(),
            incarnation: Some(9),
            queued: 0,
            paths: vec![path],
            dongle: Some(DongleReport {
                roles: vec!["relay".into()],
                hosts: vec![1, 3],
                watchdog_ms: Some(2000),
                reset_pulse_ms: None,
                tripped: vec![],
            }),
        };
        NodeStatus {
            comm: StatusReport {
                cluster: "prod".into(),
                node: 1,
                name: "alpha".into(),
                incarnation: 8,
                uptime_ms: 1500,
                timer: crate::comm::report::TimerReport::default(),
                peers: vec![peer],
            },
            resources,
            other_nodes: Vec::new(),
        }
    }

    /// `status` is one flat object, as `status --json` prints it: the
    /// communication manager's fields, then the resources.
    #[test]
    fn a_status_is_one_flat_object() {
        let json = serde_json::to_value(Envelope::new(Response::Status(status(None)))).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "v",
            "kind",
            "cluster",
            "node",
            "name",
            "incarnation",
            "uptime_ms",
            "peers",
            "resources",
            "other_nodes",
        ] {
            assert!(keys.contains(&key), "{key} missing from {json}");
        }
        assert_eq!(json["kind"], "status");
        assert_eq!(json["peers"][0]["paths"][0]["errors"][0][0], "bad_tag");
        let text = serde_json::to_string(&status(None)).unwrap();
        assert!(text.starts_with(r#"{"cluster":"prod","node":1,"#), "{text}");
        assert!(
            text.ends_with(r#","resources":null,"other_nodes":[]}"#),
            "{text}"
        );
        // Resources and the other nodes may be left out (an older
        // daemon's answer).
        let bare = text.replace(r#","resources":null,"other_nodes":[]"#, "");
        let back: NodeStatus = serde_json::from_str(&bare).unwrap();
        assert_eq!(back, status(None));
    }

    /// Every answer crosses a socket or another node's mailbox as JSON:
    /// each must encode and decode (serde's tagged enums refuse some
    /// shapes only when they run).
    #[test]
    fn every_response_round_trips_as_json() {
        let report = NodeReport {
            node: 1,
            coordinator: 1,
            members: vec![1, 2],
            resources: vec![heartline_brain::api::ResourceStatus {
                tag: "web".into(),
                kind: "gen/app".into(),
                state: crate::resources::lcd::State::Isp,
                priority: 1,
                role: "started".into(),
                failures: 1,
                busy: None,
                last: Some("restore exited 0".into()),
                last_failure: Some("quickCheck exited with code 1 in 2 ms: not answering".into()),
                last_failure_ago_ms: Some(12_000),
                props: std::collections::BTreeMap::new(),
            }],
            ..NodeReport::default()
        };
        let responses = [
            Response::Status(status(Some(Box::new(report.clone())))),
            Response::Event {
                at_ms: 12,
                text: "path 2/0 up".into(),
                wall_ms: 1_796_268_512_000,
            },
            Response::Message {
                from: 2,
                mailbox: 7,
                payload: b"hi".to_vec(),
            },
            Response::Delivered,
            Response::CanTalk { reachable: true },
            Response::Lcd(Model::default()),
            Response::Changed {
                generation: 3,
                unconfirmed: vec![(2, "went down before confirming".into())],
            },
            Response::Done {
                steps: vec!["restore web: exited 0".into()],
            },
            Response::Resources(Box::new(report)),
            Response::Verified {
                summary: "ok".into(),
                problems: vec![],
                warnings: vec!["node 2 is in standby".into()],
            },
            Response::Error {
                message: "no".into(),
                timed_out: false,
            },
        ];
        for response in responses {
            let json = serde_json::to_string(&Envelope::new(response.clone())).unwrap();
            let back: Envelope<Response> = serde_json::from_str(&json).unwrap();
            assert_eq!(back.body, response, "{json}");
        }
    }
}
