//! What nodes' brains tell each other, and how it is written on the admin
//! mailbox.
//!
//! Every admin message is one JSON object `{"v": 2, "msg": ...}`; a message
//! of another version (or none: the first release's) is refused whole with
//! [`DecodeError::Version`], so a mixed-release cluster logs exactly that
//! rather than misreading. Messages travel over the reliable mailbox
//! channel ([`crate::link`] cuts them into mailbox messages), in order and
//! exactly once between two runs of two nodes; what was in flight when a
//! node went down or restarted is lost, and the brains resynchronise with
//! [`BrainMsg::Hello`].
//!
//! Enums are externally tagged: serde's internally tagged enums cannot
//! hold maps keyed by integers, such as a [`View`].
//!
//! Mailboxes [`RESERVED`] are heartline's own; applications may not send
//! to or read from them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::api::{Answer, RequestId};
use crate::model::{Change, Model, Place, State, Version};

/// The mailbox the brains talk on.
pub const ADMIN_MAILBOX: u16 = 0xFFF0;

/// The mailbox nodes and a quorum witness talk on.
pub const WITNESS_MAILBOX: u16 = 0xFFF1;

/// Mailboxes reserved for heartline itself.
pub const RESERVED: RangeInclusive<u16> = 0xFF00..=0xFFFF;

/// The admin message format this build speaks.
pub const VERSION: u64 = 2;

/// A node's membership view: every node it sees up, itself included, with
/// the incarnation (run) it sees.
pub type View = BTreeMap<u16, u64>;

/// What an action is doing to a hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    /// Bringing it in service.
    Starting,
    /// Taking it out of service.
    Stopping,
    /// Recovering a resource of it in place.
    Recovering,
}

impl fmt::Display for Activity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Activity::Starting => "starting",
            Activity::Stopping => "stopping",
            Activity::Recovering => "recovering",
        })
    }
}

/// What a node says of itself that changes rarely.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    /// Its view of the cluster.
    pub view: View,
    /// Its configuration's version.
    pub version: Version,
    /// Its configuration's fingerprint.
    pub digest: u64,
    /// Still finding out what runs here (after a start, or maintenance).
    pub probing: bool,
    /// Stopping: it must not be given anything to run.
    pub leaving: bool,
    /// Hierarchies (by a tag of theirs here) it must not run until an
    /// administrator brings them in service here.
    pub held: BTreeSet<String>,
    /// Resources (by tag) it cannot run, with why (no recovery kit...).
    pub cannot: BTreeMap<String, String>,
    /// The recovery kits it has, `app/type`.
    pub kits: BTreeSet<String>,
    /// Nodes down whose quorum lease ended by its clock (they run
    /// nothing, or were reset).
    #[serde(default)]
    pub expired: BTreeSet<u16>,
    /// Nodes down whose fast lease ended by its clock (they run no
    /// hierarchy whose stop is fast, or were reset).
    #[serde(default)]
    pub expired_fast: BTreeSet<u16>,
    /// It saw every node of the cluster once since it started
    /// (`wait_for_all` is satisfied in its partition).
    #[serde(default)]
    pub seen_all: bool,
    /// It holds quorum (always, where quorum is not configured).
    #[serde(default)]
    pub quorate: bool,
    /// It holds its fast lease, and may start hierarchies whose stop is
    /// fast (false where no fast lease is configured).
    #[serde(default)]
    pub fast_lease: bool,
    /// The expected votes its configuration gives (0: quorum off).
    #[serde(default)]
    pub expected_votes: u32,
}

/// A start or a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Bring in service.
    Start,
    /// Take out of service.
    Stop,
}

/// Who waits for the outcome of an action: a request on some node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ticket {
    /// The node the request came in on.
    pub origin: u16,
    /// The request there.
    pub request: RequestId,
}

/// A request one brain makes of another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    /// To the coordinator: order this change.
    Propose {
        /// The change.
        change: Change,
    },
    /// To the coordinator: run the group `key` on `to` (a switchover or an
    /// in-service), or nowhere (`None`: out of service); progress is
    /// reported to `ticket`.
    Move {
        /// The group.
        key: Place,
        /// Where.
        to: Option<u16>,
        /// Who waits.
        ticket: Ticket,
    },
    /// To a resource's node: clear its failure.
    Cleanup {
        /// The resource there.
        tag: String,
    },
    /// Your configuration's version and fingerprint.
    Digest,
}

/// What a brain tells another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrainMsg {
    /// Everything the sender knows of itself; sent when it sees the
    /// receiver come up. A receiver that did not see the sender go away
    /// answers with its own (`reply` set), so both resynchronise.
    Hello {
        /// Whether this answers a hello.
        reply: bool,
        /// Its flags.
        flags: Flags,
        /// What its actions are doing, by hierarchy.
        busy: BTreeMap<String, Activity>,
        /// Every state of its resources.
        states: BTreeMap<String, State>,
    },
    /// What changed since the last hello or update.
    Update {
        /// The flags, when they changed.
        flags: Option<Flags>,
        /// Actions begun or ended (`None`).
        busy: Vec<(String, Option<Activity>)>,
        /// States changed.
        states: Vec<(String, State)>,
        /// Orders it refused, with why.
        refused: Vec<(String, String)>,
    },
    /// From the coordinator: apply `change`, which takes the configuration
    /// from `prev` to `version`.
    Commit {
        /// The version it applies to.
        prev: Version,
        /// The version it makes.
        version: Version,
        /// The change.
        change: Change,
    },
    /// To the coordinator: this node holds `version` now.
    Ack {
        /// The version.
        version: Version,
    },
    /// Send me your whole configuration (`force`: I will take it whatever
    /// I hold, for `heartline resync`).
    GetSnapshot {
        /// Answer with a forced snapshot.
        force: bool,
    },
    /// The sender's whole configuration, with the versions of its last
    /// changes (so a node whose copy loses can tell which of its own
    /// changes are discarded). `force`: take it whatever you hold.
    Snapshot {
        /// The configuration.
        model: Model,
        /// Its recent changes with their versions, oldest first.
        history: Vec<(Version, String)>,
        /// Take it even if yours is newer (`heartline resync`).
        force: bool,
    },
    /// From the coordinator: start or stop the hierarchy of `tag` on the
    /// receiver, if the receiver still sees the cluster as `view`.
    Order {
        /// The coordinator's view when it decided.
        view: View,
        /// Start or stop.
        op: Op,
        /// A resource of the hierarchy, on the receiver.
        tag: String,
        /// Who waits for the outcome, if anyone.
        ticket: Option<Ticket>,
        /// Whether this action's end is the end of the request (else more
        /// actions follow, on this node or another).
        ends: bool,
        /// A start that is a handover: every other node said it stopped
        /// what it ran of the hierarchy (see `Output::Run`).
        #[serde(default)]
        handover: bool,
    },
    /// The outcome of an action someone waits for.
    JobReport {
        /// Who waits.
        ticket: Ticket,
        /// The node that acted.
        node: u16,
        /// Its steps, a line each.
        steps: Vec<String>,
        /// Whether this ends the request (`Ok`) or fails it (`Err`), or
        /// more follows (`None`).
        end: Option<Result<(), String>>,
    },
    /// A request to the receiver's brain.
    Call {
        /// Matches the answer.
        id: u64,
        /// The request.
        call: Call,
    },
    /// The answer to a call.
    Answer {
        /// The call's id.
        id: u64,
        /// The answer.
        answer: Answer,
    },
}

/// Everything on the admin mailbox: brains' messages, and control requests
/// run on another node for `heartline --on` (opaque here: the control
/// protocol's JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminMessage {
    /// Between brains.
    Brain {
        /// The message (boxed: it is far larger than the others).
        msg: Box<BrainMsg>,
    },
    /// Run this control request and answer with `forward_reply`.
    Forward {
        /// Matches the reply.
        id: u64,
        /// The control request.
        request: serde_json::Value,
    },
    /// The answer to a forwarded request.
    ForwardReply {
        /// The forward's id.
        id: u64,
        /// The control response.
        response: serde_json::Value,
    },
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    v: u64,
    msg: &'a AdminMessage,
}

/// Why an admin message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON, or not a message this build knows.
    Malformed(String),
    /// Another version of the format (`None`: it names none, as the first
    /// release's did).
    Version(Option<u64>),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Malformed(why) => write!(f, "malformed admin message: {why}"),
            DecodeError::Version(Some(v)) => write!(
                f,
                "admin message of version {v} refused: this node speaks version {VERSION} (run the same heartline release on every node)"
            ),
            DecodeError::Version(None) => write!(
                f,
                "admin message without a version refused (an older heartline release?): this node speaks version {VERSION}"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Writes `message` as it travels.
#[must_use]
pub fn encode(message: &AdminMessage) -> Vec<u8> {
    // Serialising these types cannot fail: every map key is a string or
    // an integer.
    serde_json::to_vec(&EnvelopeOut {
        v: VERSION,
        msg: message,
    })
    .unwrap_or_default()
}

#[derive(Deserialize)]
struct Peek {
    v: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    msg: AdminMessage,
}

/// Reads a message; any byte string gives a message or an error.
pub fn decode(bytes: &[u8]) -> Result<AdminMessage, DecodeError> {
    // The version is read first, so that another release's message is
    // refused as such rather than as malformed.
    let peek: Peek =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    match peek.v.as_ref().map(serde_json::Value::as_u64) {
        Some(Some(VERSION)) => {}
        Some(Some(other)) => return Err(DecodeError::Version(Some(other))),
        Some(None) => return Err(DecodeError::Malformed("`v` is not a number".into())),
        None => return Err(DecodeError::Version(None)),
    }
    serde_json::from_slice::<EnvelopeIn>(bytes)
        .map(|e| e.msg)
        .map_err(|e| DecodeError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_message_round_trips() {
        let messages = [
            AdminMessage::Brain {
                msg: Box::new(BrainMsg::Hello {
                    reply: true,
                    flags: Flags {
                        view: View::from([(1, 5), (2, 7)]),
                        ..Flags::default()
                    },
                    busy: BTreeMap::from([("web".to_string(), Activity::Starting)]),
                    states: BTreeMap::from([("web".to_string(), State::Blocked)]),
                }),
            },
            AdminMessage::Brain {
                msg: Box::new(BrainMsg::Call {
                    id: 3,
                    call: Call::Propose {
                        change: Change::SetMaintenance { on: true },
                    },
                }),
            },
            AdminMessage::Brain {
                msg: Box::new(BrainMsg::Answer {
                    id: 3,
                    answer: Answer::Changed {
                        version: Version::default(),
                        unconfirmed: vec![(2, "down".into())],
                    },
                }),
            },
            AdminMessage::Brain {
                msg: Box::new(BrainMsg::Snapshot {
                    model: Model::default(),
                    history: vec![(Version::default(), "create x".into())],
                    force: false,
                }),
            },
            AdminMessage::Forward {
                id: 9,
                request: serde_json::json!({"op": "status"}),
            },
        ];
        for message in messages {
            let bytes = encode(&message);
            assert_eq!(
                decode(&bytes).unwrap(),
                message,
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        assert_eq!(
            decode(br#"{"v": 3, "msg": {}}"#),
            Err(DecodeError::Version(Some(3)))
        );
        assert_eq!(
            decode(br#"{"msg": "call", "id": 1}"#),
            Err(DecodeError::Version(None))
        );
        for garbage in [
            &b""[..],
            b"\xff\xfe",
            b"[]",
            br#"{"v": 2}"#,
            br#"{"v": 2, "msg": {"type": "nope"}}"#,
        ] {
            assert!(
                matches!(decode(garbage), Err(DecodeError::Malformed(_))),
                "{garbage:?}"
            );
        }
        let text = DecodeError::Version(Some(3)).to_string();
        assert!(
            text.contains("version 3") && text.contains("same heartline release"),
            "{text}"
        );
    }
}
