//! The control server: accepts CLI connections on the Unix socket, reads one
//! request per connection, and answers from the resource manager or the
//! communication manager, turning the control protocol's requests into the
//! communication manager's commands and its answers and events back into
//! responses ([`comm_command`]). Each client is served by a task of its
//! own, so a slow or stuck client never delays a manager.

use std::path::Path;
use std::time::Duration;

use heartline_core::Received;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, warn};

use super::ipc::{self, Reader, Writer};
use super::{Envelope, NodeStatus, Request, Response, VERSION};
use crate::comm::report::StatusReport;
use crate::comm::{Command, EventLine, Handle};
use crate::resources;

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

/// How long an action on resources may take before the CLI is told it
/// timed out (the action itself goes on; its scripts have their own
/// timeouts).
const ACTION_TIMEOUT: Duration = Duration::from_secs(600);

/// Listens on `socket` and serves clients, each in a task of its own:
/// resource requests go to the resource manager, the rest to the
/// communication manager.
pub async fn serve(
    socket: &Path,
    handle: Handle,
    resources: resources::Handle,
) -> Result<(), String> {
    let mut listener = ipc::Listener::bind(socket).await?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((read, write)) => {
                    tokio::spawn(client(read, write, handle.clone(), resources.clone()));
                }
                Err(e) => {
                    warn!("control socket accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(())
}

async fn client(read: Reader, mut write: Writer, handle: Handle, resources: resources::Handle) {
    let mut lines = BufReader::new(read.take(MAX_REQUEST as u64)).lines();
    let request = match lines.next_line().await {
        Ok(Some(line)) => line,
        _ => return,
    };
    // The version is read first, so a client of another release is told
    // exactly that, not that its request is malformed.
    let version = serde_json::from_str::<serde_json::Value>(&request)
        .ok()
        .and_then(|value| value.get("v").and_then(serde_json::Value::as_u64));
    if version.is_some_and(|v| v != u64::from(VERSION)) {
        let message = format!(
            "control protocol version {} is not spoken here (this daemon speaks {VERSION}): use the heartline binary of the same release",
            version.unwrap_or_default()
        );
        let _ = answer(&mut write, error(message)).await;
        return;
    }
    let request: Envelope<Request> = match serde_json::from_str(&request) {
        Ok(request) => request,
        Err(e) => {
            let _ = answer(&mut write, error(format!("malformed request: {e}"))).await;
            return;
        }
    };
    debug!(?request.body, "control request");
    if let Request::Watch = request.body {
        watch(handle.events.subscribe(), write).await;
        return;
    }
    let timeout = match &request.body {
        Request::Send { timeout_ms, .. } | Request::Receive { timeout_ms, .. } => {
            Duration::from_millis(*timeout_ms)
        }
        Request::InService { .. }
        | Request::OutOfService { .. }
        | Request::SendEvent { .. }
        | Request::Switchover { .. }
        | Request::Remote { .. } => ACTION_TIMEOUT,
        _ => Duration::from_secs(10),
    };
    let request = request.body;
    let pending = if request.is_resource_request() {
        let (reply, response) = oneshot::channel();
        resources
            .inputs
            .send(resources::Input::Control { request, reply })
            .await
            .ok()
            .map(|()| Pending::Resources(response))
    } else {
        match comm_command(request) {
            Ok((command, answer)) => handle
                .commands
                .send(command)
                .await
                .ok()
                .map(|()| Pending::Comm(answer)),
            Err(response) => Some(Pending::Now(response)),
        }
    };
    let Some(pending) = pending else {
        let _ = answer(&mut write, error("the daemon is shutting down".into())).await;
        return;
    };
    let response = match tokio::time::timeout(timeout, pending.response()).await {
        Ok(Ok(response)) => response,
        Ok(Err(_)) => error("the daemon dropped the request".into()),
        Err(_) => Response::Error {
            message: format!("timed out after {}", humantime::format_duration(timeout)),
            timed_out: true,
        },
    };
    let _ = answer(&mut write, response).await;
}

/// An answer on its way to a client.
enum Pending {
    /// From the resource manager.
    Resources(oneshot::Receiver<Response>),
    /// From the communication manager.
    Comm(CommAnswer),
    /// Known already.
    Now(Response),
}

impl Pending {
    async fn response(self) -> Result<Response, oneshot::error::RecvError> {
        match self {
            Pending::Resources(response) => response.await,
            Pending::Comm(answer) => answer.response().await,
            Pending::Now(response) => Ok(response),
        }
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
                resources: Vec::new(),
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
pub fn comm_command(request: Request) -> Result<(Command, CommAnswer), Response> {
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
        Request::Watch => return Err(error("watch is served by the control server".into())),
        _ => {
            return Err(error(
                "resource requests are served by the resource manager".into(),
            ));
        }
    })
}

async fn watch(mut events: broadcast::Receiver<EventLine>, mut write: Writer) {
    loop {
        let event = match events.recv().await {
            Ok(EventLine { at_ms, text }) => Response::Event { at_ms, text },
            Err(broadcast::error::RecvError::Lagged(missed)) => error(format!(
                "{missed} events were missed: this watcher fell behind"
            )),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if answer(&mut write, event).await.is_err() {
            return;
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
