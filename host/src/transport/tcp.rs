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
use heartline_core::wire::{FrameReader, MAX_ENCODED_LEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::daemon::Input;

/// First wait before redialling; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Unconfirmed connections a listener keeps; the oldest goes first.
const MAX_PENDING: usize = 4;
/// A write that cannot finish within this drops the connection.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Which end of the connection this node takes.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// Accept on `local`.
    Listen,
    /// Connect to `remote` from `local`'s IP.
    Dial,
}

/// What the communication manager tells a path.
#[derive(Debug)]
pub enum ToPath {
    /// Send this encoded frame.
    Frame(Vec<u8>),
    /// A frame from this connection was authentic: write to it from now on.
    Confirmed(u64),
}

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
    incoming: mpsc::Sender<Input>,
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
    incoming: mpsc::Sender<Input>,
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

/// Which path a frame read from a stream belongs to.
#[derive(Clone, Debug)]
pub(crate) enum Route {
    /// Every frame belongs to this path.
    Fixed(PathRef),
    /// A serial line carrying paths to several nodes (a dongle, and hosts
    /// through it): by the frame's source node. A frame whose source cannot
    /// be read or is unknown is charged to the first path, which counts it.
    BySource(Vec<PathRef>),
}

impl Route {
    pub(crate) fn first(&self) -> PathRef {
        match self {
            Route::Fixed(path) => *path,
            Route::BySource(paths) => paths.first().copied().unwrap_or(PathRef {
                node: heartline_core::NodeId(0),
                path: heartline_core::PathId(0),
            }),
        }
    }

    fn path_of(&self, frame: &[u8]) -> PathRef {
        match self {
            Route::Fixed(path) => *path,
            Route::BySource(paths) => heartline_core::wire::route_of(frame)
                .and_then(|(src, _)| paths.iter().find(|p| p.node == src).copied())
                .unwrap_or_else(|| self.first()),
        }
    }
}

/// Splits one connection's bytes into frames for the manager until it ends.
pub(crate) async fn read_frames(
    route: Route,
    connection: u64,
    mut read: impl AsyncRead + Unpin,
    incoming: mpsc::Sender<Input>,
    closed: mpsc::Sender<u64>,
) {
    let path = route.first();
    let mut frames = FrameReader::<MAX_ENCODED_LEN>::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match read.read(&mut buf).await {
            Ok(0) => {
                info!(%path, connection, "connection closed by peer");
                break;
            }
            Ok(n) => n,
            Err(e) => {
                info!(%path, connection, "connection lost: {e}");
                break;
            }
        };
        let mut batch = Vec::new();
        frames.push(&buf[..n], |frame| {
            batch.push(frame.map(|bytes| bytes.to_vec()))
        });
        for frame in batch {
            let input = match frame {
                Ok(bytes) => Input::Frame {
                    path: route.path_of(&bytes),
                    connection,
                    bytes,
                },
                Err(_) => Input::Overflow { path },
            };
            if incoming.send(input).await.is_err() {
                return;
            }
        }
    }
    let _ = closed.send(connection).await;
}
