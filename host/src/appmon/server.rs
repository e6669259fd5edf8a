//! The appserver's network side: accepts TLS connections (a manager
//! without a certificate from a trusted authority is refused in the
//! handshake), serves each connection's requests against the process
//! table, pushes exits to the connection managing the process, and
//! stops orphans. One connection's garbage closes that connection only.
//! Connections still in their handshake pass the [`Gate`]: a bounded
//! number per address and in all, for a short time, so idle strangers
//! cannot hold the descriptors real managers need.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::gate::{Caps, Gate, Ticket};
use super::proto::{
    ClientFrame, ErrorKind, FrameError, MAX_REQUEST, Refusal, Reply, Request, ServerFrame, VERSION,
    read_frame, write_frame,
};
use super::table::{Manager, STOP_GRACE, Table};

/// How long a client has to finish the TLS handshake: a manager on a slow
/// link needs a few round trips; an idle stranger is cut off.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often orphans are looked for.
const REAP_EVERY: Duration = Duration::from_millis(500);
/// How long connections get at shutdown to send what they have queued.
const FLUSH_AT_SHUTDOWN: Duration = Duration::from_secs(2);
/// Frames queued for one connection before its requests wait.
const QUEUE: usize = 64;
/// How long a connection that manages nothing may stay silent. One that
/// manages processes may stay silent for their orphan timeout: a manager
/// polls far more often, so one silent that long is gone (its host died
/// without closing the connection) and what it managed becomes orphaned.
const IDLE_UNMANAGED: Duration = Duration::from_secs(60);

/// Serves managers on `listener` until `shutdown` resolves, then stops
/// every monitored process.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    table: Table,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let gate = Gate::default();
    let mut next_connection = 1u64;
    let mut connections = tokio::task::JoinSet::new();
    // Tells every connection to finish: send what is queued (the exits of
    // the processes stopped at shutdown among it), then close.
    let (closing, closed) = watch::channel(false);
    let reaper = {
        let table = table.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(REAP_EVERY);
            loop {
                every.tick().await;
                table.reap_orphans(Instant::now());
                if let Some(summary) = gate.summary(Instant::now()) {
                    tracing::warn!("{summary}");
                }
            }
        })
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Over its share: closed now (counted for the summary).
                    let Some(ticket) = gate.admit(peer.ip(), handshake_caps()) else {
                        drop(stream);
                        continue;
                    };
                    let connection = next_connection;
                    next_connection += 1;
                    let acceptor = acceptor.clone();
                    let table = table.clone();
                    let closed = closed.clone();
                    let gate = gate.clone();
                    connections.spawn(async move {
                        let pass = Pass { gate, ticket, peer, connection };
                        handshake_then_serve(acceptor, stream, pass, table, closed).await;
                    });
                }
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    tracing::error!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    reaper.abort();
    tracing::info!(processes = table.len(), "stopping every monitored process");
    table.stop_all(STOP_GRACE).await;
    let _ = closing.send(true);
    let flushed = tokio::time::timeout(FLUSH_AT_SHUTDOWN, async {
        while connections.join_next().await.is_some() {}
    });
    if flushed.await.is_err() {
        tracing::warn!("some managers were not told of their processes' end in time");
    }
}

/// The handshake caps for the descriptor limit in force now (it may be
/// changed while the appserver runs, e.g. with prlimit).
fn handshake_caps() -> Caps {
    use nix::sys::resource::{Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE)
        .map_or_else(|_| Caps::default(), |(soft, _)| Caps::for_limit(soft))
}

/// A connection through the gate: its ticket, held until its handshake
/// ends.
struct Pass {
    gate: Gate,
    ticket: Ticket,
    peer: SocketAddr,
    connection: u64,
}

async fn handshake_then_serve(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    pass: Pass,
    table: Table,
    closed: watch::Receiver<bool>,
) {
    let Pass {
        gate,
        ticket,
        peer,
        connection,
    } = pass;
    let _ = stream.set_nodelay(true);
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
    drop(ticket);
    // The first failures of each period get a line of their own; the
    // gate sums up the rest.
    let text = match handshake {
        Ok(Ok(stream)) => {
            tracing::debug!(%peer, connection, "manager connected");
            serve_connection(stream, peer, table, connection, closed).await;
            return;
        }
        Ok(Err(e)) => format!("refused a client: TLS handshake failed: {e}"),
        Err(_) => format!("refused a client: no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
    };
    if gate.failed() {
        tracing::warn!(%peer, "{text}");
    } else {
        tracing::debug!(%peer, "{text}");
    }
}

async fn serve_connection(
    stream: TlsStream<TcpStream>,
    peer: SocketAddr,
    table: Table,
    connection: u64,
    mut closed: watch::Receiver<bool>,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (frames, mut queued) = mpsc::channel::<ServerFrame>(QUEUE);
    let writing = tokio::spawn(async move {
        while let Some(frame) = queued.recv().await {
            if write_frame(&mut writer, &frame).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut allowed_silence = None;
    loop {
        let silence = allowed_silence.unwrap_or(IDLE_UNMANAGED);
        let read = tokio::select! {
            read = tokio::time::timeout(silence, read_frame(&mut reader, MAX_REQUEST)) => read,
            _ = closed.wait_for(|closed| *closed) => break,
        };
        let Ok(read) = read else {
            tracing::warn!(%peer, connection, "no request for {silence:?}: closing the connection");
            break;
        };
        let frame: ClientFrame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(FrameError::Io(e)) => {
                tracing::debug!(%peer, connection, "connection ended: {e}");
                break;
            }
            Err(e) => {
                tracing::warn!(%peer, connection, "malformed request ({e}): closing the connection");
                let refusal = Refusal {
                    kind: ErrorKind::Malformed,
                    message: format!("malformed request: {e}; closing the connection"),
                };
                let _ = frames
                    .send(ServerFrame::Reply {
                        id: 0,
                        result: Err(refusal),
                    })
                    .await;
                break;
            }
        };
        let result = if frame.version == VERSION {
            let manager = Manager {
                connection,
                frames: frames.clone(),
            };
            let result = answer(&table, frame.request, manager).await;
            let managed = match &result {
                Ok(Reply::Started { process, .. }) => table.orphan_timeout(*process),
                Ok(Reply::Status(status)) => table.orphan_timeout(status.process),
                _ => None,
            };
            allowed_silence = allowed_silence.max(managed);
            result
        } else {
            Err(Refusal {
                kind: ErrorKind::Version,
                message: format!(
                    "the manager speaks appmon protocol version {}, this appserver {VERSION}: install matching heartline releases",
                    frame.version
                ),
            })
        };
        if let Err(refusal) = &result {
            tracing::info!(%peer, connection, "refused: {refusal}");
        }
        let reply = ServerFrame::Reply {
            id: frame.id,
            result,
        };
        if frames.send(reply).await.is_err() {
            break;
        }
    }
    table.detach_all(connection);
    drop(frames);
    let _ = writing.await;
}

async fn answer(table: &Table, request: Request, manager: Manager) -> Result<Reply, Refusal> {
    match request {
        Request::Start(spec) => {
            let (process, pid) = table.start(&spec, manager)?;
            tracing::info!(%process, pid, argv = ?spec.argv, "started");
            Ok(Reply::Started { process, pid })
        }
        Request::Poll {
            process,
            output_from,
        } => table.status(process, output_from).map(Reply::Status),
        Request::Attach { process } => {
            let status = table.attach(process, manager)?;
            tracing::info!(%process, "manager re-attached");
            Ok(Reply::Status(status))
        }
        Request::Stop { process, grace_ms } => {
            tracing::info!(%process, "stopping on the manager's request");
            table
                .stop(process, Duration::from_millis(grace_ms))
                .await
                .map(Reply::Status)
        }
        Request::Release { process } => table.release(process).map(|()| Reply::Released),
    }
}
