//! The CLI's side of the control API: connect, send one request, read the
//! answer (or, for `watch`, every answer).

use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::ipc;
use super::{Envelope, Request, Response, VERSION};

/// Why the CLI could not get an answer.
#[derive(Debug)]
pub enum ClientError {
    /// No daemon listens on the socket.
    NoDaemon(String),
    /// The connection broke or the answer made no sense.
    Protocol(String),
    /// This user may not open the control socket.
    Denied(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NoDaemon(m) | ClientError::Protocol(m) | ClientError::Denied(m) => {
                f.write_str(m)
            }
        }
    }
}

/// One request as a line of the control protocol.
pub fn request_line(request: Request) -> Result<Vec<u8>, ClientError> {
    let mut line = serde_json::to_vec(&Envelope::new(request))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    Ok(line)
}

/// One line of the control protocol as a response.
pub fn response_of(line: &str) -> Result<Response, ClientError> {
    let envelope: Envelope<Response> = serde_json::from_str(line)
        .map_err(|e| ClientError::Protocol(format!("unreadable answer from the daemon: {e}")))?;
    if envelope.v != VERSION {
        return Err(ClientError::Protocol(format!(
            "the daemon speaks control protocol {}, this CLI {VERSION}",
            envelope.v
        )));
    }
    Ok(envelope.body)
}

fn no_daemon(socket: &Path, e: &std::io::Error) -> ClientError {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        return denied(socket);
    }
    ClientError::NoDaemon(format!(
        "cannot reach the heartline daemon at {}: {e} (is it running? is --socket right?)",
        socket.display()
    ))
}

/// The socket's modes keep this user out: say who may use it.
fn denied(socket: &Path) -> ClientError {
    let group = socket
        .parent()
        .into_iter()
        .chain(std::iter::once(socket))
        .filter_map(crate::sys::perms::mode_of)
        .map(|(_, _, gid)| gid)
        .find(|&gid| gid != 0)
        .and_then(crate::sys::perms::group_name);
    let who = match group {
        Some(group) => format!("root and the members of group `{group}`"),
        None => "root".to_string(),
    };
    ClientError::Denied(format!(
        "permission denied on {}: only {who} may use the heartline daemon's control socket",
        socket.display()
    ))
}

/// Sends `request` and waits for the single answer, without an async runtime.
pub fn ask_blocking(socket: &Path, request: Request) -> Result<Response, ClientError> {
    use std::io::{BufRead, Write};
    let (read, mut write) = ipc::connect_blocking(socket).map_err(|e| no_daemon(socket, &e))?;
    // A daemon that refuses the client says why and hangs up, perhaps
    // before the request is written: its answer is read all the same.
    let sent = write.write_all(&request_line(request)?);
    let mut line = String::new();
    let read = std::io::BufReader::new(read).read_line(&mut line);
    if line.is_empty() {
        if let Err(e) = sent {
            return Err(ClientError::Protocol(format!(
                "cannot send the request: {e}"
            )));
        }
        read.map_err(|e| ClientError::Protocol(format!("connection lost: {e}")))?;
    }
    response_of(&line)
}

/// A connection carrying one request.
pub struct Connection {
    lines: tokio::io::Lines<BufReader<ipc::Reader>>,
    /// Kept open: a daemon takes a closed write side for a client gone
    /// (a `watch` would end at once).
    _write: ipc::Writer,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connection(..)")
    }
}

impl Connection {
    /// Connects to the daemon at `socket` and sends `request`.
    pub async fn open(socket: &Path, request: Request) -> Result<Connection, ClientError> {
        let (read, mut write) = ipc::connect(socket)
            .await
            .map_err(|e| no_daemon(socket, &e))?;
        // A refusal may come before the request is written (see
        // [`ask_blocking`]): a failed write leaves the answer to be read.
        let _ = write.write_all(&request_line(request)?).await;
        Ok(Connection {
            lines: BufReader::new(read).lines(),
            _write: write,
        })
    }

    /// The next answer; `None` when the daemon closed the connection.
    pub async fn next(&mut self) -> Result<Option<Response>, ClientError> {
        let line = self
            .lines
            .next_line()
            .await
            .map_err(|e| ClientError::Protocol(format!("connection lost: {e}")))?;
        line.map(|line| response_of(&line)).transpose()
    }
}

/// Sends `request` and returns the single answer.
pub async fn ask(socket: &Path, request: Request) -> Result<Response, ClientError> {
    let mut connection = Connection::open(socket, request).await?;
    connection.next().await?.ok_or_else(|| {
        ClientError::Protocol("the daemon closed the connection without answering".into())
    })
}
