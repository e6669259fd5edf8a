//! The control server: accepts CLI connections on the Unix socket, reads one
//! request per connection, and answers from the resource brain, the
//! communication manager or, for `--on`, another node ([`dispatch`]),
//! turning the control protocol's requests into each one's typed requests
//! and their answers back into responses. Each client is served by a task
//! of its own, so a slow or stuck client never delays a manager.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heartline_brain::api::{Answer, Request as BrainRequest};
use heartline_brain::message::RESERVED;
use heartline_core::Received;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, info, warn};

use super::access::{Class, Client, Policy, Role, Roles, class_of};
use super::ipc::{self, Reader, Writer};
use super::remote::Remote;
use super::{Envelope, NodeStatus, Request, Response, VERSION};
use crate::comm::report::StatusReport;
use crate::comm::{Command, EventLine, Handle};
use crate::config::ControlSpec;
use crate::resources;
use crate::sys::memory;

/// What requests are served from.
#[derive(Debug, Clone)]
pub struct Services {
    /// The communication manager.
    pub comm: Handle,
    /// The resource brain.
    pub resources: resources::Handle,
    /// Other nodes, for `--on`.
    pub remote: Remote,
}

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;
/// A connection's read buffer: a request is one line, most far shorter;
/// a longer one is read in several passes. Small, because 256 of them
/// can be open at once (what a storm of connections took is given back
/// once it is over: [`memory`]).
const READ_BUFFER: usize = 1024;

/// How long an action on resources may take before the CLI is told it
/// timed out (the action itself goes on; its scripts have their own
/// timeouts).
const ACTION_TIMEOUT: Duration = Duration::from_secs(600);

/// How long writing one answer may take: a client that does not read
/// its answer is dropped, not waited for.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a `watch` client may leave one event unread.
const WATCH_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Listens on `socket` and serves clients, each in a task of its own:
/// checks each client's credentials against `control`'s groups, holds at
/// most `control.max_connections` at once, and drops a client that sends
/// no request within `control.idle_timeout`.
pub async fn serve(socket: &Path, services: Services, control: &ControlSpec) -> Result<(), String> {
    let policy = Policy::resolve(control);
    match (&policy.group, &policy.admin_group) {
        (Some(group), admin) => info!(
            "control socket: mode 0660, group {}; members of {} may change things{}",
            group.name,
            control.admin_group,
            if admin.is_none() {
                " (that group does not exist: only root may)"
            } else {
                ""
            }
        ),
        (None, _) => info!(
            "control socket: mode 0600: only root may use it (there is no group {}; create it with `groupadd --system {}` to give other users access)",
            control.group, control.group
        ),
    }
    let gid = policy.group.as_ref().map(|g| g.gid);
    let mut listener = ipc::Listener::bind(socket, gid).await?;
    let roles = Roles::new(policy);
    let table = Table::new(control.max_connections);
    let idle = control.idle_timeout;
    // What a storm of connections took is given back once it is over.
    let bursts = memory::Bursts::new("control connections");
    tokio::spawn(async move {
        let mut refusals = Refusals::default();
        let mut failures = Refusals::default();
        loop {
            // Connections told to go (evicted, refused) hold their
            // descriptor until their task has said why: past the cap and
            // a quarter, new ones wait in the socket's backlog, so a storm
            // cannot take the descriptors scripts and peers need.
            bursts.below(table.cap() + (table.cap() / 4).max(16)).await;
            let (read, write, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    failures.failed(&e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let held = bursts.enter();
            let client = match peer {
                Some(peer) => roles.client(peer.uid, peer.gid).await,
                // Windows: the pipe's own security let it in. On Unix,
                // credentials that cannot be read admit nobody.
                None => Client {
                    uid: None,
                    name: "client".into(),
                    role: if cfg!(windows) {
                        Role::Admin
                    } else {
                        Role::Stranger
                    },
                },
            };
            if client.role == Role::Stranger {
                let message = roles.policy().allow(&client, Class::Read).err();
                refusals.note(&client.name, "not allowed");
                tokio::spawn(refuse(write, message.unwrap_or_default(), held));
                continue;
            }
            match table.admit(client.role == Role::Admin) {
                Ok(slot) => {
                    let (services, roles) = (services.clone(), roles.clone());
                    tokio::spawn(async move {
                        let _held = held;
                        serve_client(read, write, services, slot, client, roles, idle).await;
                    });
                }
                Err(message) => {
                    refusals.note(&client.name, "too many connections");
                    tokio::spawn(refuse(write, message, held));
                }
            }
        }
    });
    Ok(())
}

/// Refusals, logged at most once every ten seconds with how many there
/// were, so a flood cannot drown the log.
#[derive(Debug, Default)]
struct Refusals {
    since: Option<tokio::time::Instant>,
    count: u64,
}

impl Refusals {
    /// An accept failed (out of descriptors, most likely).
    fn failed(&mut self, e: &std::io::Error) {
        self.count += 1;
        let now = tokio::time::Instant::now();
        if self
            .since
            .is_none_or(|since| now.duration_since(since) >= Duration::from_secs(10))
        {
            tracing::error!(
                "control socket: accept failed {} time(s) in the last 10 s: {e}; clients wait until descriptors are free",
                self.count
            );
            self.since = Some(now);
            self.count = 0;
        }
    }

    fn note(&mut self, who: &str, why: &str) {
        self.count += 1;
        let now = tokio::time::Instant::now();
        if self
            .since
            .is_none_or(|since| now.duration_since(since) >= Duration::from_secs(10))
        {
            warn!(
                "control socket: refused {} connection(s) in the last 10 s (last: {who}, {why})",
                self.count
            );
            self.since = Some(now);
            self.count = 0;
        }
    }
}

/// Tells a refused client why, and hangs up.
async fn refuse(mut write: Writer, message: String, _held: memory::Held) {
    let _ = tokio::time::timeout(Duration::from_secs(1), answer(&mut write, error(message))).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), write.shutdown()).await;
}

/// The control connections open, oldest first. A client holds a slot from
/// its acceptance until it hangs up; while it has not sent its request it
/// is idle, and the oldest idle client makes room for a new one when the
/// table is full. Clients that are not administrators may hold all but
/// [`Table::reserve`] slots, so an administrator always gets in.
#[derive(Debug, Clone)]
pub struct Table {
    cap: usize,
    inner: Arc<Mutex<Slots>>,
}

#[derive(Debug, Default)]
struct Slots {
    next: u64,
    open: BTreeMap<u64, Entry>,
}

#[derive(Debug)]
struct Entry {
    admin: bool,
    /// Told to go to make room, while the client has sent no request.
    idle: Option<oneshot::Sender<()>>,
}

/// A client's place in the [`Table`], given back when dropped.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    table: Arc<Mutex<Slots>>,
    /// Fires when the slot is taken for a newer client (only while idle).
    pub evicted: oneshot::Receiver<()>,
}

impl Slot {
    /// The client sent its request: it is no longer idle.
    pub fn busy(&self) {
        if let Some(entry) = lock(&self.table).open.get_mut(&self.id) {
            entry.idle = None;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.table).open.remove(&self.id);
    }
}

fn lock(table: &Mutex<Slots>) -> std::sync::MutexGuard<'_, Slots> {
    table
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Table {
    /// A table of `cap` slots.
    #[must_use]
    pub fn new(cap: usize) -> Table {
        Table {
            cap,
            inner: Arc::new(Mutex::new(Slots::default())),
        }
    }

    /// How many slots there are.
    #[must_use]
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Slots only administrators may take.
    #[must_use]
    pub fn reserve(&self) -> usize {
        (self.cap / 8).clamp(1, 32)
    }

    /// How many connections are open.
    #[must_use]
    pub fn open(&self) -> usize {
        lock(&self.inner).open.len()
    }

    /// A slot for a new client (an administrator or not), making room by
    /// closing the oldest idle client if needed; or the refusal it is
    /// told.
    pub fn admit(&self, admin: bool) -> Result<Slot, String> {
        let mut slots = lock(&self.inner);
        let total = slots.open.len();
        let others = slots.open.values().filter(|e| !e.admin).count();
        let full = total >= self.cap;
        let others_full = !admin && others >= self.cap - self.reserve();
        if full || others_full {
            let victim = slots
                .open
                .iter()
                .find(|(_, e)| e.idle.is_some() && (full || !e.admin))
                .map(|(id, _)| *id);
            let Some(victim) = victim else {
                return Err(format!(
                    "refused: the daemon holds {} control connections already, every one busy (its limit is {}; {} reserved for administrators): close idle `heartline watch` or `rcv-msg` clients, or raise [control] max_connections",
                    total,
                    self.cap,
                    self.reserve()
                ));
            };
            if let Some(Entry {
                idle: Some(evict), ..
            }) = slots.open.remove(&victim)
            {
                let _ = evict.send(());
            }
        }
        let id = slots.next;
        slots.next += 1;
        let (evict, evicted) = oneshot::channel();
        slots.open.insert(
            id,
            Entry {
                admin,
                idle: Some(evict),
            },
        );
        Ok(Slot {
            id,
            table: self.inner.clone(),
            evicted,
        })
    }
}

async fn serve_client(
    read: Reader,
    mut write: Writer,
    services: Services,
    mut slot: Slot,
    client: Client,
    roles: Roles,
    idle: Duration,
) {
    let mut lines = BufReader::with_capacity(READ_BUFFER, read.take(MAX_REQUEST as u64)).lines();
    let request = tokio::select! {
        line = tokio::time::timeout(idle, lines.next_line()) => match line {
            Ok(Ok(Some(line))) => line,
            Ok(_) => return,
            Err(_) => {
                let message = format!(
                    "closed: no request within {} ([control] idle_timeout)",
                    humantime::format_duration(idle)
                );
                let _ = tokio::time::timeout(WRITE_TIMEOUT, answer(&mut write, error(message))).await;
                return;
            }
        },
        _ = &mut slot.evicted => {
            let message = "closed: too many control connections, and this one had sent no request".to_string();
            let _ = tokio::time::timeout(Duration::from_secs(1), answer(&mut write, error(message))).await;
            return;
        }
    };
    slot.busy();
    let response = match parse(&request) {
        Ok(request) => {
            debug!(?request, user = %client.name, "control request");
            if let Err(message) = roles.policy().allow(&client, class_of(&request)) {
                warn!("control socket: {message}");
                error(message)
            } else if let Request::Watch = request {
                watch(services.comm.events.subscribe(), write, lines).await;
                return;
            } else {
                answer_within(&services, request).await
            }
        }
        Err(message) => error(message),
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, answer(&mut write, response)).await;
    drop(slot);
}

/// The request in `line`, or the error to answer instead.
fn parse(line: &str) -> Result<Request, String> {
    // The version is read first, so a client of another release is told
    // exactly that, not that its request is malformed.
    let version = serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|value| value.get("v").and_then(serde_json::Value::as_u64));
    if version.is_some_and(|v| v != u64::from(VERSION)) {
        return Err(format!(
            "control protocol version {} is not spoken here (this daemon speaks {VERSION}): use the heartline binary of the same release",
            version.unwrap_or_default()
        ));
    }
    serde_json::from_str::<Envelope<Request>>(line)
        .map(|envelope| envelope.body)
        .map_err(|e| format!("malformed request: {e}"))
}

/// How long a request may take before its client is told it timed out
/// (the action itself goes on; scripts have their own timeouts).
#[must_use]
pub fn timeout_of(request: &Request) -> Duration {
    match request {
        Request::Send { timeout_ms, .. } | Request::Receive { timeout_ms, .. } => {
            Duration::from_millis(*timeout_ms)
        }
        Request::InService { .. }
        | Request::OutOfService { .. }
        | Request::SendEvent { .. }
        | Request::Switchover { .. }
        | Request::Remote { .. } => ACTION_TIMEOUT,
        Request::Change { .. }
        | Request::Standby { .. }
        | Request::Maintenance { .. }
        | Request::Cleanup { .. }
        | Request::Resync
        | Request::Verify => Duration::from_secs(60),
        _ => Duration::from_secs(10),
    }
}

/// [`dispatch`], or a timeout.
pub async fn answer_within(services: &Services, request: Request) -> Response {
    let timeout = timeout_of(&request);
    match tokio::time::timeout(timeout, dispatch(services, request)).await {
        Ok(response) => response,
        Err(_) => Response::Error {
            message: format!("timed out after {}", humantime::format_duration(timeout)),
            timed_out: true,
        },
    }
}

/// Answers `request` from whichever part of the daemon serves it.
pub async fn dispatch(services: &Services, request: Request) -> Response {
    match request {
        Request::Remote { node, request } => services.remote.call(node, *request).await,
        Request::Send { mailbox, .. } | Request::Receive { mailbox, .. }
            if RESERVED.contains(&mailbox) =>
        {
            error(crate::comm::manager::reserved(mailbox))
        }
        request => match brain_request(request) {
            Ok(request) => response_of(services.resources.ask(request).await),
            Err(request) => match comm_command(*request) {
                Ok((command, answer)) => {
                    if services.comm.commands.send(command).await.is_err() {
                        return error("the daemon is shutting down".into());
                    }
                    answer
                        .response()
                        .await
                        .unwrap_or_else(|_| error("the daemon dropped the request".into()))
                }
                Err(response) => *response,
            },
        },
    }
}

/// `request` as a request to the resource brain, or back if it serves
/// another part.
fn brain_request(request: Request) -> Result<BrainRequest, Box<Request>> {
    Ok(match request {
        Request::Lcd => BrainRequest::Lcd,
        Request::Change { change } => BrainRequest::Change { change },
        Request::InService { tag } => BrainRequest::InService { tag },
        Request::OutOfService { tag } => BrainRequest::OutOfService { tag },
        Request::SendEvent { class, event, tag } => BrainRequest::SendEvent { class, event, tag },
        Request::Switchover { tag, to } => BrainRequest::Switchover { tag, to },
        Request::Verify => BrainRequest::Verify,
        Request::Resources => BrainRequest::Report,
        Request::Cleanup { tag, node } => BrainRequest::Cleanup { tag, node },
        Request::Standby { node, on } => BrainRequest::Standby { node, on },
        Request::Maintenance { on } => BrainRequest::Maintenance { on },
        Request::Resync => BrainRequest::Resync,
        other => return Err(Box::new(other)),
    })
}

/// The brain's answer as a response.
fn response_of(answer: Answer) -> Response {
    match answer {
        Answer::Model { model } => Response::Lcd(model),
        Answer::Changed {
            version,
            unconfirmed,
        } => Response::Changed {
            generation: version.generation,
            unconfirmed,
        },
        Answer::Done { steps } => Response::Done { steps },
        Answer::Report(report) => Response::Resources(Box::new(report)),
        Answer::Verified {
            summary,
            problems,
            warnings,
        } => Response::Verified {
            summary,
            problems,
            warnings,
        },
        Answer::Error { message, timed_out } => Response::Error { message, timed_out },
        other => error(format!(
            "unexpected answer from the resource brain: {other:?}"
        )),
    }
}

/// The communication manager's answer to a [`comm_command`], still to
/// come.
#[derive(Debug)]
pub enum CommAnswer {
    /// To `status`.
    Status(oneshot::Receiver<StatusReport>),
    /// To `can_talk`.
    CanTalk(oneshot::Receiver<bool>),
    /// To `send`.
    Sent(oneshot::Receiver<Result<(), String>>),
    /// To `receive`.
    Received(oneshot::Receiver<Received>),
}

impl CommAnswer {
    /// Waits for the answer and gives it as a response; an error if the
    /// communication manager dropped the command. Dropping this future (a
    /// client's timeout) drops the receiver, so a message that arrives
    /// later goes to the next reader.
    pub async fn response(self) -> Result<Response, oneshot::error::RecvError> {
        Ok(match self {
            CommAnswer::Status(report) => Response::Status(NodeStatus {
                comm: report.await?,
                resources: None,
                other_nodes: Vec::new(),
            }),
            CommAnswer::CanTalk(reachable) => Response::CanTalk {
                reachable: reachable.await?,
            },
            CommAnswer::Sent(sent) => match sent.await? {
                Ok(()) => Response::Delivered,
                Err(message) => error(message),
            },
            CommAnswer::Received(message) => {
                let message = message.await?;
                Response::Message {
                    from: message.from.0,
                    mailbox: message.mailbox,
                    payload: message.payload.to_vec(),
                }
            }
        })
    }
}

/// `request` as a command for the communication manager, with its answer
/// to come; or, for a request it does not serve, the answer now.
pub fn comm_command(request: Request) -> Result<(Command, CommAnswer), Box<Response>> {
    Ok(match request {
        Request::Status => {
            let (reply, answer) = oneshot::channel();
            (Command::Status { reply }, CommAnswer::Status(answer))
        }
        Request::CanTalk { node } => {
            let (reply, answer) = oneshot::channel();
            (
                Command::CanTalk { node, reply },
                CommAnswer::CanTalk(answer),
            )
        }
        // The timeout is the waiting side's (the server's or the remote
        // node's), not the communication manager's.
        Request::Send {
            node,
            mailbox,
            payload,
            timeout_ms: _,
        } => {
            let (reply, answer) = oneshot::channel();
            let command = Command::Send {
                node,
                mailbox,
                payload,
                reply,
            };
            (command, CommAnswer::Sent(answer))
        }
        Request::Receive {
            mailbox,
            timeout_ms: _,
        } => {
            let (reply, answer) = oneshot::channel();
            (
                Command::Receive { mailbox, reply },
                CommAnswer::Received(answer),
            )
        }
        // The control server serves `watch` from the event stream.
        Request::Watch => {
            return Err(Box::new(error(
                "watch is served by the control server".into(),
            )));
        }
        _ => {
            return Err(Box::new(error(
                "resource requests are served by the resource brain".into(),
            )));
        }
    })
}

/// Sends every event to a `watch` client until it hangs up (noticed at
/// once, even when nothing happens, so a watcher gone frees its slot).
async fn watch<R: tokio::io::AsyncBufRead + Unpin>(
    mut events: broadcast::Receiver<EventLine>,
    mut write: Writer,
    mut from_client: tokio::io::Lines<R>,
) {
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Ok(EventLine {
                    at_ms,
                    wall_ms,
                    text,
                }) => Response::Event {
                    at_ms,
                    text,
                    wall_ms,
                },
                Err(broadcast::error::RecvError::Lagged(missed)) => error(format!(
                    "{missed} events were missed: this watcher fell behind"
                )),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            line = from_client.next_line() => match line {
                // Anything more the client sends is ignored.
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            },
        };
        match tokio::time::timeout(WATCH_WRITE_TIMEOUT, answer(&mut write, event)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

fn error(message: String) -> Response {
    Response::Error {
        message,
        timed_out: false,
    }
}

async fn answer(write: &mut Writer, response: Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(&Envelope::new(response)).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_drops_its_oldest_idle_client_and_keeps_room_for_administrators() {
        let table = Table::new(16);
        assert_eq!(table.reserve(), 2);
        // Readers take all but the reserve.
        let mut readers: Vec<Slot> = (0..14).map(|_| table.admit(false).unwrap()).collect();
        assert_eq!(table.open(), 14);
        // One more reader: the oldest idle reader makes room for it.
        let newer = table.admit(false).unwrap();
        assert_eq!(table.open(), 14);
        assert!(readers[0].evicted.try_recv().is_ok(), "the oldest was told");
        assert!(readers[1].evicted.try_recv().is_err());
        readers.remove(0);
        readers.push(newer);
        // Busy readers are not dropped: with every reader busy, a reader
        // is refused, and an administrator still gets in.
        for slot in &readers {
            slot.busy();
        }
        let e = table.admit(false).unwrap_err();
        assert!(
            e.starts_with("refused:") && e.contains("every one busy"),
            "{e}"
        );
        let admins: Vec<Slot> = (0..2).map(|_| table.admit(true).unwrap()).collect();
        assert_eq!(table.open(), 16);
        for slot in &admins {
            slot.busy();
        }
        assert!(table.admit(true).is_err(), "full, every one busy");
        // A slot comes back when its client goes.
        drop(readers.pop());
        assert_eq!(table.open(), 15);
        assert!(table.admit(true).is_ok());
    }
}
