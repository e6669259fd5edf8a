//! TCP paths: each path is a TCP connection of its own. The node with the
//! higher id listens on the path's local address; the other dials the
//! path's remote address from the local IP, reconnecting with backoff.
//!
//! A listener may hold several connections at once (a reconnecting peer
//! whose old connection is half-open, or a stranger writing junk to the
//! port). Frames from all of them go to the communication manager, which
//! authenticates them; the first connection whose frame it accepts becomes
//! the one this path writes to, and the others are closed. A stranger
//! therefore can neither take a path over nor shut it down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use heartline_core::PathRef;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{Inbound, Role, Route, ToPath, WRITE_TIMEOUT, read_frames};

/// First wait before redialling; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Unconfirmed connections a listener keeps; the oldest goes first.
const MAX_PENDING: usize = 4;

struct Connection {
    writer: OwnedWriteHalf,
    reader: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The connections of one path.
struct Connections {
    path: PathRef,
    open: HashMap<u64, Connection>,
    order: Vec<u64>,
    confirmed: Option<u64>,
    next_id: u64,
    closed_tx: mpsc::Sender<u64>,
    incoming: mpsc::Sender<Inbound>,
}

impl Connections {
    fn add(&mut self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let id = self.next_id;
        self.next_id += 1;
        let (read, writer) = stream.into_split();
        let reader = tokio::spawn(read_frames(
            Route::Fixed(self.path),
            id,
            read,
            self.incoming.clone(),
            self.closed_tx.clone(),
        ));
        self.open.insert(id, Connection { writer, reader });
        self.order.push(id);
        let unconfirmed: Vec<u64> = self
            .order
            .iter()
            .copied()
            .filter(|&c| Some(c) != self.confirmed)
            .collect();
        if unconfirmed.len() > MAX_PENDING {
            self.close(unconfirmed[0]);
        }
    }

    fn close(&mut self, id: u64) {
        self.open.remove(&id);
        self.order.retain(|&c| c != id);
        if self.confirmed == Some(id) {
            self.confirmed = None;
        }
    }

    fn confirm(&mut self, id: u64) {
        if !self.open.contains_key(&id) || self.confirmed == Some(id) {
            return;
        }
        debug!(path = %self.path, connection = id, "connection confirmed");
        self.confirmed = Some(id);
        let others: Vec<u64> = self.order.iter().copied().filter(|&c| c != id).collect();
        for other in others {
            self.close(other);
        }
    }

    /// Writes to the confirmed connection, or before any is confirmed to the
    /// newest (so a new peer can hear our hello).
    async fn write(&mut self, frame: &[u8]) {
        let Some(id) = self.confirmed.or_else(|| self.order.last().copied()) else {
            return;
        };
        let Some(connection) = self.open.get_mut(&id) else {
            return;
        };
        match tokio::time::timeout(WRITE_TIMEOUT, connection.writer.write_all(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                info!(path = %self.path, "connection lost: {e}");
                self.close(id);
            }
            Err(_) => {
                warn!(path = %self.path, "connection stalled for {WRITE_TIMEOUT:?}; dropping it");
                self.close(id);
            }
        }
    }
}

/// Runs one TCP path until the daemon stops.
pub async fn run_path(
    path: PathRef,
    role: Role,
    local: SocketAddr,
    remote: SocketAddr,
    mut outgoing: mpsc::Receiver<ToPath>,
    incoming: mpsc::Sender<Inbound>,
) {
    let (closed_tx, mut closed_rx) = mpsc::channel(16);
    let mut connections = Connections {
        path,
        open: HashMap::new(),
        order: Vec::new(),
        confirmed: None,
        next_id: 0,
        closed_tx,
        incoming,
    };
    let listener = match role {
        Role::Listen => Some(listen(path, local).await),
        Role::Dial => None,
    };
    let mut backoff = MIN_BACKOFF;
    let mut redial = tokio::time::Instant::now();
    let mut unreachable_reported = false;
    loop {
        let dialling = listener.is_none() && connections.open.is_empty();
        tokio::select! {
            accepted = async { match &listener { Some(l) => l.accept().await, None => std::future::pending().await } } => {
                match accepted {
                    Ok((stream, from)) => {
                        info!(%path, %from, "connection accepted");
                        connections.add(stream);
                    }
                    Err(e) => warn!(%path, "accept failed: {e}"),
                }
            }
            () = tokio::time::sleep_until(redial), if dialling => {
                match dial(local, remote).await {
                    Ok(stream) => {
                        info!(%path, %remote, "connected");
                        backoff = MIN_BACKOFF;
                        unreachable_reported = false;
                        connections.add(stream);
                    }
                    Err(e) => {
                        // Once per outage at warning level; every retry at debug.
                        if unreachable_reported {
                            debug!(%path, %remote, "connect failed: {e}");
                        } else {
                            warn!(%path, %remote, "cannot connect: {e}; retrying with backoff up to {MAX_BACKOFF:?}");
                            unreachable_reported = true;
                        }
                        redial = tokio::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            closed = closed_rx.recv() => {
                if let Some(id) = closed {
                    connections.close(id);
                    redial = tokio::time::Instant::now() + MIN_BACKOFF;
                }
            }
            message = outgoing.recv() => {
                match message {
                    Some(ToPath::Frame(frame)) => connections.write(&frame).await,
                    Some(ToPath::Confirmed(id)) => connections.confirm(id),
                    None => return,
                }
            }
        }
    }
}

async fn listen(path: PathRef, local: SocketAddr) -> TcpListener {
    let mut reported = false;
    loop {
        match TcpListener::bind(local).await {
            Ok(listener) => return listener,
            Err(e) => {
                if !reported {
                    warn!(%path, %local, "cannot listen: {e}; retrying every {MAX_BACKOFF:?}");
                    reported = true;
                }
                tokio::time::sleep(MAX_BACKOFF).await;
            }
        }
    }
}

async fn dial(local: SocketAddr, remote: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if remote.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(local.ip(), 0))?;
    tokio::time::timeout(MAX_BACKOFF * 4, socket.connect(remote))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}
