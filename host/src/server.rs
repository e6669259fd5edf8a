//! The control server: accepts CLI connections on the Unix socket, reads one
//! request per connection, and answers from the communication manager.
//! Each client is served by a task of its own, so a slow or stuck client
//! never delays the manager.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, warn};

use crate::comm::manager::{Handle, Input};
use crate::control::{Envelope, Request, Response, VERSION};
use crate::ipc::{self, Reader, Writer};
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
    let (reply, response) = oneshot::channel();
    let request = request.body;
    let sent = if request.is_resource_request() {
        resources
            .inputs
            .send(resources::Input::Control { request, reply })
            .await
            .is_ok()
    } else {
        handle
            .inputs
            .send(Input::Control { request, reply })
            .await
            .is_ok()
    };
    if !sent {
        let _ = answer(&mut write, error("the daemon is shutting down".into())).await;
        return;
    }
    let response = match tokio::time::timeout(timeout, response).await {
        Ok(Ok(response)) => response,
        Ok(Err(_)) => error("the daemon dropped the request".into()),
        Err(_) => Response::Error {
            message: format!("timed out after {}", humantime::format_duration(timeout)),
            timed_out: true,
        },
    };
    let _ = answer(&mut write, response).await;
}

async fn watch(mut events: broadcast::Receiver<Response>, mut write: Writer) {
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
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
