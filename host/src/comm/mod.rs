//! The communication manager (LCM): the protocol endpoint driven on a
//! real-time thread of its own ([`manager`]), the mailboxes, what it
//! reports of nodes and paths ([`report`]), provisioning the heartbeat
//! dongles ([`provision`]) and this node's incarnation ([`incarnation`]).
//!
//! The rest of the daemon talks to it through its [`Handle`]: typed
//! [`Command`]s in, each with where its answer goes; every event out as an
//! [`EventLine`]; and the host peers that are up. It knows nothing of the
//! control protocol or of resources.

pub mod incarnation;
pub mod manager;
pub mod provision;
pub mod report;

pub use manager::{MAILBOX_DEPTH, start};

use std::collections::BTreeSet;

use heartline_core::Received;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use report::StatusReport;

/// What the communication manager is asked, with where its answer goes.
#[derive(Debug)]
pub enum Command {
    /// Nodes, paths and counters.
    Status {
        /// The answer.
        reply: oneshot::Sender<StatusReport>,
    },
    /// Whether a node is reachable over some path.
    CanTalk {
        /// The node id.
        node: u16,
        /// The answer.
        reply: oneshot::Sender<bool>,
    },
    /// Send a mailbox message. The answer comes once the receiving node
    /// holds it, or says in one line why it will not.
    Send {
        /// Destination node id.
        node: u16,
        /// Destination mailbox.
        mailbox: u16,
        /// The message.
        payload: Vec<u8>,
        /// The answer.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Take one message from a mailbox, waiting for one to arrive. A reader
    /// that gives up drops its receiver; a message that arrives later goes
    /// to the next reader instead.
    Receive {
        /// The mailbox.
        mailbox: u16,
        /// The message.
        reply: oneshot::Sender<Received>,
    },
}

/// One event, as a line of text with its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLine {
    /// Milliseconds since the daemon started.
    pub at_ms: u64,
    /// What happened, in words.
    pub text: String,
}

/// Handles the rest of the daemon keeps on the communication manager.
#[derive(Clone, Debug)]
pub struct Handle {
    /// Commands to the communication manager.
    pub commands: mpsc::Sender<Command>,
    /// Every event.
    pub events: broadcast::Sender<EventLine>,
    /// The host peers that are up now.
    pub up: watch::Receiver<BTreeSet<u16>>,
}
