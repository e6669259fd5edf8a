//! The control server: accepts CLI connections on the Unix socket, reads one
//! request per connection, and answers from the resource brain, the
//! communication manager or, for `--on`, another node ([`dispatch`]),
//! turning the control protocol's requests into each one's typed requests
//! and their answers back into responses. Each client is served by a task
//! of its own, so a slow or stuck client never delays a manager.

use std::path::Path;
use std::time::Duration;

use heartline_brain::api::{Answer, Request as BrainRequest};
use heartline_brain::message::RESERVED;
use heartline_core::Received;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, warn};

use super::ipc::{self, Reader, Writer};
use super::remote::Remote;
use super::{Envelope, NodeStatus, Request, Response, VERSION};
use crate::comm::report::StatusReport;
use crate::comm::{Command, EventLine, Handle};
use crate::resources;

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

/// How long an action on resources may take before the CLI is told it
/// timed out (the action itself goes on; its scripts have their own
/// timeouts).
const ACTION_TIMEOUT: Duration = Duration::from_secs(600);

/// Listens on `socket` and serves clients, each in a task of its own.
pub async fn serve(socket: &Path, services: Services) -> Result<(), String> {
    let mut listener = ipc::Listener::bind(socket).await?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((read, write)) => {
                    tokio::spawn(client(read, write, services.clone()));
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

async fn client(read: Reader, mut write: Writer, services: Services) {
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
        watch(services.comm.events.subscribe(), write).await;
        return;
    }
    let response = answer_within(&services, request.body).await;
    let _ = answer(&mut write, response).await;
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
