//! The administrative channel between nodes: messages of any size over the
//! reliable mailboxes, for single-point administration.
//!
//! Mailbox [`ADMIN_MAILBOX`] is reserved for it. A message is JSON, cut into
//! fragments that fit a mailbox message, each led by five bytes: 1 if more
//! follow (0 for the last), then the message's number (u32 LE). Mailbox
//! delivery is exactly once and in order between two nodes, and one task per
//! peer sends one message at a time, so the receiver joins a peer's
//! fragments in arrival order; a fragment of another number than the one
//! being joined means the rest of that one was never delivered (its sender
//! gave up or restarted), and it is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::{debug, error, warn};

use super::lcd::{Change, Model, Place, State};
use crate::comm::{self, Command};
use crate::control::{Request, Response};

/// The mailbox the nodes' resource managers talk on. Applications use
/// mailboxes below 0xFF00.
pub const ADMIN_MAILBOX: u16 = 0xFFF0;

/// Bytes of a message per fragment (a mailbox message holds 512).
const FRAGMENT: usize = 500;
/// Bytes before each fragment: the more-follows flag and the message number.
const FRAGMENT_HEADER: usize = 5;

/// How long a fragment may wait for delivery before the message is given
/// up: the peer is down, or so slow that it will be declared down.
const DELIVERY_TIMEOUT_MS: u64 = 10_000;

/// What the resource managers tell each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum Message {
    /// Run a request here and answer with a `Reply` of the same id.
    Call {
        /// Matches the reply.
        id: u64,
        /// The request.
        request: Request,
    },
    /// The answer to a `Call`.
    Reply {
        /// The call's id.
        id: u64,
        /// The answer.
        response: Response,
    },
    /// The coordinator made a change; apply it as this generation.
    Commit {
        /// The change.
        change: Change,
        /// The configuration's generation with it.
        generation: u64,
    },
    /// The whole configuration, for a node catching up.
    Snapshot {
        /// The coordinator's database.
        model: Model,
    },
    /// A resource on the sender changed state.
    State {
        /// The resource.
        place: Place,
        /// Its new state.
        state: State,
    },
}

/// A message from another node.
#[derive(Debug)]
pub struct Incoming {
    /// The sender.
    pub from: u16,
    /// The message.
    pub message: Message,
}

/// Sends messages to other nodes' resource managers and matches replies to
/// calls.
#[derive(Debug, Clone)]
pub struct Remote {
    comm: mpsc::Sender<Command>,
    senders: Arc<Mutex<HashMap<u16, mpsc::UnboundedSender<Message>>>>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>,
    next_id: Arc<AtomicU64>,
}

impl Remote {
    /// Starts receiving on the admin mailbox; what arrives (but replies,
    /// which go to their callers) is sent to `incoming`.
    pub fn start(comm: &comm::Handle, incoming: mpsc::Sender<Incoming>) -> Remote {
        let remote = Remote {
            comm: comm.commands.clone(),
            senders: Arc::default(),
            pending: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
        };
        tokio::spawn(remote.clone().receive(incoming));
        remote
    }

    /// Sends `message` to `node`, after whatever was sent to it before.
    /// Delivery is reliable while the node is up; if it goes down, what was
    /// not delivered is dropped (it catches up from a snapshot when back).
    pub async fn send(&self, node: u16, message: Message) {
        let mut senders = self.senders.lock().await;
        let sender = senders.entry(node).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(send_loop(self.comm.clone(), node, rx));
            tx
        });
        let _ = sender.send(message);
    }

    /// Runs `request` on `node` and returns its answer, or an error once
    /// `timeout` passes.
    pub async fn call(&self, node: u16, request: Request, timeout: Duration) -> Response {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().await.insert(id, tx);
        self.send(node, Message::Call { id, request }).await;
        let answer = tokio::time::timeout(timeout, rx).await;
        self.pending.lock().await.remove(&id);
        match answer {
            Ok(Ok(response)) => response,
            Ok(Err(_)) | Err(_) => Response::Error {
                message: format!(
                    "node {node} did not answer within {}",
                    humantime::format_duration(timeout)
                ),
                timed_out: true,
            },
        }
    }

    async fn receive(self, incoming: mpsc::Sender<Incoming>) {
        let mut partial: HashMap<u16, (u32, Vec<u8>)> = HashMap::new();
        loop {
            let (reply, answer) = oneshot::channel();
            let command = Command::Receive {
                mailbox: ADMIN_MAILBOX,
                reply,
            };
            if self.comm.send(command).await.is_err() {
                return;
            }
            let Ok(received) = answer.await else {
                continue;
            };
            let (from, payload) = (received.from.0, received.payload);
            if payload.len() < FRAGMENT_HEADER {
                warn!(from, "admin fragment of {} bytes dropped", payload.len());
                continue;
            }
            let more = payload[0] != 0;
            let number = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
            let joining = partial.entry(from).or_insert((number, Vec::new()));
            if joining.0 != number {
                warn!(
                    from,
                    "the rest of admin message {} from node {from} never came; dropped", joining.0
                );
                *joining = (number, Vec::new());
            }
            joining.1.extend_from_slice(&payload[FRAGMENT_HEADER..]);
            if more {
                continue;
            }
            let bytes = partial
                .remove(&from)
                .map(|(_, bytes)| bytes)
                .unwrap_or_default();
            match serde_json::from_slice::<Message>(&bytes) {
                Ok(Message::Reply { id, response }) => {
                    if let Some(waiting) = self.pending.lock().await.remove(&id) {
                        let _ = waiting.send(response);
                    }
                }
                Ok(message) => {
                    debug!(from, ?message, "admin message");
                    if incoming.send(Incoming { from, message }).await.is_err() {
                        return;
                    }
                }
                Err(e) => warn!(
                    from,
                    "unreadable admin message ({} bytes): {e}",
                    bytes.len()
                ),
            }
        }
    }
}

/// Sends one peer's messages in order, each fragment once the last was
/// delivered. A message whose fragment is not delivered is given up.
async fn send_loop(
    comm: mpsc::Sender<Command>,
    node: u16,
    mut messages: mpsc::UnboundedReceiver<Message>,
) {
    let mut number = 0u32;
    'messages: while let Some(message) = messages.recv().await {
        let bytes = match serde_json::to_vec(&message) {
            Ok(bytes) => bytes,
            Err(e) => {
                error!(node, "cannot encode an admin message for node {node}: {e}");
                continue;
            }
        };
        number = number.wrapping_add(1);
        let pieces: Vec<&[u8]> = bytes.chunks(FRAGMENT).collect();
        for (i, piece) in pieces.iter().enumerate() {
            let mut payload = Vec::with_capacity(FRAGMENT_HEADER + piece.len());
            payload.push(u8::from(i + 1 < pieces.len()));
            payload.extend_from_slice(&number.to_le_bytes());
            payload.extend_from_slice(piece);
            let (reply, answer) = oneshot::channel();
            let command = Command::Send {
                node,
                mailbox: ADMIN_MAILBOX,
                payload,
                reply,
            };
            if comm.send(command).await.is_err() {
                return;
            }
            let delivered =
                tokio::time::timeout(Duration::from_millis(DELIVERY_TIMEOUT_MS), answer).await;
            if !matches!(delivered, Ok(Ok(Ok(())))) {
                warn!(
                    node,
                    "admin message to node {node} not delivered; it catches up when it is back"
                );
                continue 'messages;
            }
        }
    }
}
