//! The appmon protocol between `appmgr` (the client, on a cluster node) and
//! `appserver` (the server, on the guest), carried inside a mutually
//! authenticated TLS 1.3 stream on TCP port 5315.
//!
//! # Framing
//!
//! Each message is one frame: a 4-byte big-endian body length, then the
//! body, a [postcard] encoding of [`ClientFrame`] (manager to server) or
//! [`ServerFrame`] (server to manager). A server refuses a request body
//! longer than [`MAX_REQUEST`] bytes; a manager refuses a server body
//! longer than [`MAX_REPLY`]. A frame that is too long or does not decode
//! is answered with an [`ErrorKind::Malformed`] error (request id 0) and
//! the connection is closed; the server goes on serving everyone else.
//!
//! # Exchange
//!
//! Every request carries the protocol [`VERSION`] and an id chosen by the
//! manager; the server answers each with exactly one
//! [`ServerFrame::Reply`] bearing the same id, in order. Between replies
//! the server may push [`ServerFrame::Exited`] the moment a process this
//! connection manages terminates, so an exit is reported without waiting
//! for the next poll.
//!
//! - `Start` runs a command (argv, environment added to the server's,
//!   working directory) and answers `Started` with the process's id and
//!   pid. The connection that started it manages it.
//! - `Poll` answers `Status`: running, exited with a code, or killed by a
//!   signal, plus the output (stdout and stderr interleaved) written since
//!   byte offset `output_from`, at most the server's output limit.
//! - `Attach` makes this connection the process's manager again after a
//!   reconnect, answering `Status`. A process id names the server instance
//!   that started it, so after an appserver restart the answer is
//!   [`ErrorKind::AppserverRestarted`] rather than a guess.
//! - `Stop` sends SIGTERM to the process's group, SIGKILL after the grace
//!   period, and answers `Status` once it has ended.
//! - `Release` forgets an ended process; an ended process nobody manages is
//!   forgotten after its orphan timeout anyway.
//!
//! A process whose manager's connection is gone is an orphan: if no
//! manager attaches within the orphan timeout given at `Start`, the server
//! stops it, so a lost manager never leaves an application running twice.
//!
//! New variants are only ever appended, so an older peer reads what it
//! knows; a request of another version is answered
//! [`ErrorKind::Version`].

use std::fmt;
use std::io;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version this build speaks.
pub const VERSION: u16 = 1;
/// The TCP port an appserver listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 5315;
/// The longest request body a server accepts.
pub const MAX_REQUEST: usize = 64 * 1024;
/// The longest reply body a manager accepts (a status with the longest
/// output tail fits many times over).
pub const MAX_REPLY: usize = 4 * 1024 * 1024;

/// A process on one appserver instance: the instance's random id, drawn
/// when it starts, and a serial number within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessId {
    /// The appserver instance that started the process.
    pub server: u64,
    /// Its number on that instance.
    pub serial: u64,
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.server, self.serial)
    }
}

/// What to run on the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartSpec {
    /// The program and its arguments; the program is looked up in the
    /// appserver's `PATH` unless it contains a `/`.
    pub argv: Vec<String>,
    /// Variables added to the appserver's environment.
    pub env: Vec<(String, String)>,
    /// The working directory; the appserver's own when `None`.
    pub cwd: Option<String>,
    /// How long the process may go without a manager before the server
    /// stops it (at least 1 s is honoured); also how long the managing
    /// connection may stay silent.
    pub orphan_timeout_ms: u64,
}

/// A request from a manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Run a command; answered `Started`.
    Start(StartSpec),
    /// The process's state and the output from byte `output_from`;
    /// answered `Status`.
    Poll {
        /// The process.
        process: ProcessId,
        /// The first output byte wanted (the `output_end` of the last
        /// status, or 0).
        output_from: u64,
    },
    /// Manage this process from this connection; answered `Status`.
    Attach {
        /// The process.
        process: ProcessId,
    },
    /// Stop the process; answered `Status` once it has ended.
    Stop {
        /// The process.
        process: ProcessId,
        /// How long after SIGTERM to send SIGKILL.
        grace_ms: u64,
    },
    /// Forget an ended process; answered `Released`.
    Release {
        /// The process.
        process: ProcessId,
    },
}

/// A request as sent: version, id, request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// The sender's protocol version.
    pub version: u16,
    /// Echoed in the reply.
    pub id: u32,
    /// What is asked.
    pub request: Request,
}

/// Where a monitored process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessState {
    /// Still running.
    Running,
    /// Exited by itself with this code.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// Ended by a signal.
    Killed {
        /// The signal number.
        signal: i32,
    },
}

impl ProcessState {
    /// Whether the process has ended.
    pub fn ended(&self) -> bool {
        !matches!(self, ProcessState::Running)
    }
}

impl fmt::Display for ProcessState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessState::Running => f.write_str("running"),
            ProcessState::Exited { code } => write!(f, "exited with code {code}"),
            ProcessState::Killed { signal } => write!(f, "killed by signal {signal}"),
        }
    }
}

/// A process's status as a poll reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The process.
    pub process: ProcessId,
    /// Its pid on the guest.
    pub pid: u32,
    /// Running or how it ended.
    pub state: ProcessState,
    /// The offset of `output`'s first byte in everything the process wrote
    /// (above the asked offset when older output was dropped).
    pub output_from: u64,
    /// Output written from `output_from` on.
    pub output: Vec<u8>,
    /// How many bytes the process has written in all.
    pub output_end: u64,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The command runs.
    Started {
        /// Its id, for later requests.
        process: ProcessId,
        /// Its pid on the guest.
        pid: u32,
    },
    /// A process's status.
    Status(Status),
    /// The process is forgotten.
    Released,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request was not a valid frame; the connection is closed.
    Malformed,
    /// The request's protocol version is not this server's.
    Version,
    /// No such process on this server.
    UnknownProcess,
    /// The process was started by an earlier instance of this appserver,
    /// which has since restarted: the process ended with it.
    AppserverRestarted,
    /// The command could not be started (no such program, bad directory).
    CannotStart,
    /// The server already monitors as many processes as it may.
    TooManyProcesses,
}

/// A refusal, with a sentence for the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// What kind of refusal.
    pub kind: ErrorKind,
    /// What went wrong and what to do.
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// The answer to request `id`.
    Reply {
        /// The request's id (0 for a request that could not be read).
        id: u32,
        /// The answer.
        result: Result<Reply, Refusal>,
    },
    /// A process this connection manages has ended.
    Exited(Status),
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The stream failed or ended inside a frame.
    Io(io::Error),
    /// The frame announces more bytes than allowed.
    TooLong {
        /// Announced.
        len: usize,
        /// Allowed.
        max: usize,
    },
    /// The body is not a valid message.
    Malformed(postcard::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "{e}"),
            FrameError::TooLong { len, max } => {
                write!(f, "a frame of {len} bytes, over the limit of {max}")
            }
            FrameError::Malformed(e) => write!(f, "a frame that does not decode: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Writes one frame holding `message`.
pub async fn write_frame<W, T>(writer: &mut W, message: &T) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = postcard::to_stdvec(message).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    writer.write_all(&frame).await?;
    writer.flush().await
}

/// Reads one frame of at most `max` body bytes; `None` when the stream
/// ends cleanly between frames.
pub async fn read_frame<R, T>(reader: &mut R, max: usize) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLong { len, max });
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await.map_err(FrameError::Io)?;
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(FrameError::Malformed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    fn status() -> Status {
        Status {
            process: ProcessId {
                server: 0xfeed,
                serial: 7,
            },
            pid: 4242,
            state: ProcessState::Killed { signal: 9 },
            output_from: 10,
            output: b"last words\n".to_vec(),
            output_end: 21,
        }
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let request = ClientFrame {
            version: VERSION,
            id: 3,
            request: Request::Start(StartSpec {
                argv: vec!["sleep".into(), "1".into()],
                env: vec![("A".into(), "b".into())],
                cwd: Some("/tmp".into()),
                orphan_timeout_ms: 30_000,
            }),
        };
        let replies = [
            ServerFrame::Reply {
                id: 3,
                result: Ok(Reply::Status(status())),
            },
            ServerFrame::Reply {
                id: 4,
                result: Err(Refusal {
                    kind: ErrorKind::TooManyProcesses,
                    message: "full".into(),
                }),
            },
            ServerFrame::Exited(status()),
        ];
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &request).await.unwrap();
        for reply in &replies {
            write_frame(&mut buffer, reply).await.unwrap();
        }
        let mut reader = buffer.as_slice();
        let read: ClientFrame = read_frame(&mut reader, MAX_REQUEST).await.unwrap().unwrap();
        assert_eq!(read, request);
        for reply in &replies {
            let read: ServerFrame = read_frame(&mut reader, MAX_REPLY).await.unwrap().unwrap();
            assert_eq!(&read, reply);
        }
        let end: Option<ServerFrame> = read_frame(&mut reader, MAX_REPLY).await.unwrap();
        assert!(end.is_none(), "a clean end between frames reads as None");
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_before_its_body_is_read() {
        let mut bytes = (MAX_REQUEST as u32 + 1).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let read: Result<Option<ClientFrame>, _> =
            read_frame(&mut bytes.as_slice(), MAX_REQUEST).await;
        assert!(matches!(read, Err(FrameError::TooLong { .. })), "{read:?}");
    }

    #[tokio::test]
    async fn a_frame_cut_short_is_an_error_not_a_clean_end() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &ServerFrame::Exited(status()))
            .await
            .unwrap();
        buffer.truncate(buffer.len() - 3);
        let read: Result<Option<ServerFrame>, _> =
            read_frame(&mut buffer.as_slice(), MAX_REPLY).await;
        assert!(matches!(read, Err(FrameError::Io(_))), "{read:?}");
    }

    proptest! {
        /// Any bytes at all read as a frame, a clean end or a typed error:
        /// never a panic.
        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let mut reader = bytes.as_slice();
                let _: Result<Option<ClientFrame>, _> = read_frame(&mut reader, MAX_REQUEST).await;
                let mut reader = bytes.as_slice();
                let _: Result<Option<ServerFrame>, _> = read_frame(&mut reader, MAX_REPLY).await;
            });
        }

        /// A length prefix followed by random bytes (the likeliest garbage
        /// inside a TLS stream) never panics either.
        #[test]
        fn framed_garbage_decodes_without_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(&body);
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let _: Result<Option<ClientFrame>, _> = read_frame(&mut bytes.as_slice(), MAX_REQUEST).await;
            });
        }
    }
}
