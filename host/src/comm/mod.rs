//! The communication manager (LCM): the protocol endpoint driven on a
//! real-time thread of its own ([`manager`]), the mailboxes, what it
//! reports of nodes and paths ([`report`]), provisioning the heartbeat
//! dongles ([`provision`]) and this node's incarnation ([`incarnation`]).
//!
//! The rest of the daemon talks to it through its [`Handle`]: typed
//! [`Command`]s in, each with where its answer goes; every event out as an
//! [`EventLine`]. The resource brain gets its own ordered stream,
//! [`ToBrain`]: the core's membership events exactly as they happened, none
//! merged, and whole admin messages from the brains of other nodes, which
//! travel on the reserved admin mailbox through the brain crate's
//! [`AdminPort`](heartline_brain::port::AdminPort). It knows nothing of the
//! control protocol, and does not read the admin messages it carries.

pub mod incarnation;
pub mod manager;
pub mod provision;
pub mod report;
pub mod witness;

pub use manager::{MAILBOX_DEPTH, start};

use heartline_brain::Membership;
use heartline_core::Received;
use tokio::sync::{broadcast, mpsc, oneshot};

use report::StatusReport;

/// What the communication manager is asked, with where its answer goes.
#[derive(Debug)]
pub enum Command {
    /// Ask the quorum witness for its vote for `view` (the brain's
    /// partition); the answer comes back as [`ToBrain::Witness`].
    AskWitness {
        /// The nodes the brain sees up, itself included.
        view: std::collections::BTreeSet<u16>,
        /// When the brain asked.
        sent: tokio::time::Instant,
    },
    /// Ask the dongle (the witness) to reset the host `target`: `Ok(true)`
    /// once it held the reset line for its pulse, `Ok(false)` if it
    /// refused, `Err` if it cannot be asked.
    DongleFence {
        /// The host to reset.
        target: u16,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<Result<bool, String>>,
    },
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
    /// Send an admin message (encoded) to node `to`'s brain. It is lost if
    /// that node goes down or restarts first: the brains then say hello
    /// again.
    SendAdmin {
        /// The node.
        to: u16,
        /// The encoded message.
        bytes: Vec<u8>,
    },
    /// Answer once every admin message queued has been delivered or given
    /// up (the daemon waits for this before it exits).
    AdminIdle {
        /// The answer.
        reply: oneshot::Sender<()>,
    },
}

/// What the resource brain is told, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToBrain {
    /// A host peer came up, went down or restarted.
    Membership(Membership),
    /// A host peer echoed a heartbeat this node sent at `echoed`: it
    /// heard this node then (what quorum leases are renewed by). Sent at
    /// most every 50 ms per peer.
    Heard {
        /// The peer.
        node: u16,
        /// When this node sent what it echoed.
        echoed: tokio::time::Instant,
    },
    /// The quorum witness answered an [`Command::AskWitness`].
    Witness {
        /// The view asked for.
        view: std::collections::BTreeSet<u16>,
        /// When it was asked.
        sent: tokio::time::Instant,
        /// Whether the vote is that view's.
        granted: bool,
    },
    /// A whole admin message from a node, still encoded.
    Admin {
        /// The sender.
        from: u16,
        /// The message.
        bytes: Vec<u8>,
    },
}

/// One event, as a line of text with its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLine {
    /// Milliseconds since the daemon started.
    pub at_ms: u64,
    /// When, by the wall clock (milliseconds since the Unix epoch).
    pub wall_ms: u64,
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
    /// When the daemon started: event times count from it.
    pub started: tokio::time::Instant,
    /// The instant by which this node must have stopped what it runs or be
    /// reset (the resource brain's fence deadline; `None`: nothing may run
    /// here). With a dongle as the self-fence, the manager sends the dongle
    /// nothing that would keep this node alive past it.
    pub fence_deadline: std::sync::Arc<tokio::sync::watch::Sender<Option<tokio::time::Instant>>>,
    /// The runtime of the manager's real-time thread: a task that must act
    /// at an instant whatever the rest of the daemon is doing (the fast
    /// lease's guard) is spawned on it. Such a task must never block.
    pub realtime: tokio::runtime::Handle,
}

impl Handle {
    /// Milliseconds since the daemon started, for an [`EventLine`].
    #[must_use]
    pub fn at_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Tells every watcher `text`, timed now.
    pub fn event(&self, text: String) {
        let _ = self.events.send(EventLine {
            at_ms: self.at_ms(),
            wall_ms: crate::sys::system::unix_ms(),
            text,
        });
    }
}
