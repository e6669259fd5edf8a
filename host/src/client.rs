//! The CLI's side of the control API: connect, send one request, read the
//! answer (or, for `watch`, every answer).

use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::control::{Envelope, Request, Response, VERSION};

/// Why the CLI could not get an answer.
#[derive(Debug)]
pub enum ClientError {
    /// No daemon listens on the socket.
    NoDaemon(String),
    /// The connection broke or the answer made no sense.
    Protocol(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NoDaemon(m) | ClientError::Protocol(m) => f.write_str(m),
        }
    }
}

/// A connection carrying one request.
pub struct Connection {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
}

impl Connection {
    /// Connects to the daemon at `socket` and sends `request`.
    pub async fn open(socket: &Path, request: Request) -> Result<Connection, ClientError> {
        let stream = UnixStream::connect(socket).await.map_err(|e| {
            ClientError::NoDaemon(format!(
                "cannot reach the heartline daemon at {}: {e} (is it running? is --socket right?)",
                socket.display()
            ))
        })?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_vec(&Envelope::new(request))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        write
            .write_all(&line)
            .await
            .map_err(|e| ClientError::Protocol(format!("cannot send the request: {e}")))?;
        Ok(Connection {
            lines: BufReader::new(read).lines(),
        })
    }

    /// The next answer; `None` when the daemon closed the connection.
    pub async fn next(&mut self) -> Result<Option<Response>, ClientError> {
        let Some(line) = self
            .lines
            .next_line()
            .await
            .map_err(|e| ClientError::Protocol(format!("connection lost: {e}")))?
        else {
            return Ok(None);
        };
        let envelope: Envelope<Response> = serde_json::from_str(&line).map_err(|e| {
            ClientError::Protocol(format!("unreadable answer from the daemon: {e}"))
        })?;
        if envelope.v != VERSION {
            return Err(ClientError::Protocol(format!(
                "the daemon speaks control protocol {}, this CLI {VERSION}",
                envelope.v
            )));
        }
        Ok(Some(envelope.body))
    }
}

/// Sends `request` and returns the single answer.
pub async fn ask(socket: &Path, request: Request) -> Result<Response, ClientError> {
    let mut connection = Connection::open(socket, request).await?;
    connection.next().await?.ok_or_else(|| {
        ClientError::Protocol("the daemon closed the connection without answering".into())
    })
}
