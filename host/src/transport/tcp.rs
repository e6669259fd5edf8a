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
//!
//! Nor can a stranger crowd the peer out. Connections not yet
//! authenticated are held in two lines: the peer's (from the path's
//! configured remote IP, or from an address a connection recently
//! authenticated from), and everyone else's. The peer's line holds
//! [`PEER_PENDING`] connections, a newer one replacing the oldest (the
//! peer's fresh reconnect supersedes its own older attempts); the others
//! hold [`STRANGER_PER_SOURCE`] per address and [`STRANGER_TOTAL`] in all,
//! and a connection beyond that is closed at once: a stranger never takes
//! the peer's place. Every unauthenticated connection must present an
//! authentic frame within its handshake deadline ([`Options::handshake`]).
//! Connections closed unauthenticated are logged once, then summarised at
//! most every [`SUMMARY_EVERY`] per path.
//!
//! When the protocol declares the path down the manager says so
//! ([`ToPath::Down`]): the connection that carried it is closed at once and
//! the dialer redials with backoff, so a path comes back as soon as its
//! network does, however long the outage, instead of waiting on the
//! kernel's retransmission backoff. `TCP_USER_TIMEOUT` (Linux) also bounds
//! how long the kernel keeps unacknowledged data on a connection.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use heartline_core::PathConfig;
use heartline_core::PathRef;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Closed, Inbound, Role, Route, ToPath, WRITE_TIMEOUT, read_frames};

/// First wait before redialling; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// A connect that has not completed within this is abandoned and tried
/// afresh (each attempt sends a new SYN at once, rather than waiting on
/// the kernel's SYN backoff while the network is out).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Unauthenticated connections held from the peer's addresses; a newer one
/// replaces the oldest.
pub const PEER_PENDING: usize = 4;
/// Unauthenticated connections held from any one other address; more are
/// refused.
pub const STRANGER_PER_SOURCE: usize = 2;
/// Unauthenticated connections held from all other addresses; more are
/// refused.
pub const STRANGER_TOTAL: usize = 8;
/// Addresses remembered as the peer's once a connection from them
/// authenticated.
const RECENT_ADDRESSES: usize = 4;
/// Connections closed unauthenticated are summarised at most this often.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// Addresses told apart in one summary; more are counted, not named.
const TRACKED_SOURCES: usize = 1024;

/// How a TCP path guards itself, from its timing.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long a new connection may take to present an authentic frame:
    /// two heartbeat intervals and half a second, at least a second.
    pub handshake: Duration,
    /// `TCP_USER_TIMEOUT` (Linux): how long sent data may stay
    /// unacknowledged before the kernel drops the connection: four times
    /// the path's `interval × misses`, at least 5 s.
    pub user_timeout: Duration,
}

impl Options {
    /// The options for a path with `timing`.
    pub fn for_timing(timing: &PathConfig) -> Options {
        let interval = Duration::from(timing.interval);
        let down_after = interval.saturating_mul(timing.misses);
        Options {
            handshake: (interval.saturating_mul(2) + Duration::from_millis(500))
                .max(Duration::from_secs(1)),
            user_timeout: down_after.saturating_mul(4).max(Duration::from_secs(5)),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::for_timing(&PathConfig::default())
    }
}

struct Connection {
    writer: OwnedWriteHalf,
    reader: JoinHandle<()>,
    from: IpAddr,
    since: Instant,
    /// From the peer's addresses (or dialled by us).
    peer_line: bool,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Why an unauthenticated connection was closed.
#[derive(Debug, Clone, Copy)]
enum Dropped {
    Refused,
    Replaced,
    NoFrame,
    ClosedByPeer,
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dropped::Refused => "refused: too many unauthenticated connections",
            Dropped::Replaced => "closed: replaced by a newer connection from the peer's address",
            Dropped::NoFrame => "closed: no authentic frame within the handshake deadline",
            Dropped::ClosedByPeer => "closed by the other end before authenticating",
        })
    }
}

/// Unauthenticated connections closed, for the log: the first of a quiet
/// spell is logged at once, the rest summarised every [`SUMMARY_EVERY`].
#[derive(Default)]
struct Strangers {
    /// The current summary window's end, if one is open.
    until: Option<Instant>,
    count: u64,
    sources: HashMap<IpAddr, u64>,
    /// Addresses beyond [`TRACKED_SOURCES`] in this window.
    untracked: bool,
}

impl Strangers {
    fn record(&mut self, path: PathRef, from: IpAddr, why: Dropped, now: Instant) {
        if self.until.is_none() {
            warn!(path = %super::Named(path), %from, "unauthenticated connection {why}; more are summarised every {}s", SUMMARY_EVERY.as_secs());
            self.until = Some(now + SUMMARY_EVERY);
            return;
        }
        debug!(path = %super::Named(path), %from, "unauthenticated connection {why}");
        self.count += 1;
        if let Some(n) = self.sources.get_mut(&from) {
            *n += 1;
        } else if self.sources.len() < TRACKED_SOURCES {
            self.sources.insert(from, 1);
        } else {
            self.untracked = true;
        }
    }

    /// At the window's end: the summary, if anything happened in it.
    fn flush(&mut self, path: PathRef, now: Instant) {
        if self.count == 0 {
            self.until = None;
            return;
        }
        let mut sources: Vec<(IpAddr, u64)> = self.sources.drain().collect();
        sources.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let addresses = if self.untracked {
            format!("over {}", thousands(TRACKED_SOURCES as u64))
        } else {
            thousands(sources.len() as u64)
        };
        let top: Vec<String> = sources
            .iter()
            .take(3)
            .map(|(ip, n)| format!("{ip}: {}", thousands(*n)))
            .collect();
        warn!(
            path = %super::Named(path),
            "dropped {} unauthenticated connection{} from {addresses} address{} in the last {}s (most from {})",
            thousands(self.count),
            if self.count == 1 { "" } else { "s" },
            if addresses == "1" { "" } else { "es" },
            SUMMARY_EVERY.as_secs(),
            top.join(", ")
        );
        self.count = 0;
        self.untracked = false;
        self.until = Some(now + SUMMARY_EVERY);
    }
}

/// `24981` as `24,981`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The connections of one path.
struct Connections {
    path: PathRef,
    options: Options,
    /// The configured remote IP and those recently authenticated from.
    remote: IpAddr,
    recent: VecDeque<IpAddr>,
    open: HashMap<u64, Connection>,
    order: Vec<u64>,
    confirmed: Option<u64>,
    next_id: u64,
    closed_tx: mpsc::Sender<Closed>,
    incoming: mpsc::Sender<Inbound>,
    strangers: Strangers,
    listening: bool,
}

impl Connections {
    fn is_peer_address(&self, ip: IpAddr) -> bool {
        ip == self.remote || self.recent.contains(&ip)
    }

    fn pending(&self) -> impl Iterator<Item = (u64, &Connection)> {
        self.order
            .iter()
            .filter(|&&c| Some(c) != self.confirmed)
            .filter_map(|&c| self.open.get(&c).map(|conn| (c, conn)))
    }

    /// A connection we accepted: held, or refused if a stranger's line is
    /// full.
    fn accept(&mut self, stream: TcpStream, from: SocketAddr) {
        let ip = from.ip();
        let now = Instant::now();
        if self.is_peer_address(ip) {
            debug!(path = %super::Named(self.path), %from, "connection accepted");
            self.add(stream, ip, true);
            let pending: Vec<u64> = self
                .pending()
                .filter(|(_, c)| c.peer_line)
                .map(|(id, _)| id)
                .collect();
            if pending.len() > PEER_PENDING {
                self.drop_unauthenticated(pending[0], Dropped::Replaced, now);
            }
            return;
        }
        let (mut same, mut all) = (0, 0);
        for (_, c) in self.pending().filter(|(_, c)| !c.peer_line) {
            all += 1;
            if c.from == ip {
                same += 1;
            }
        }
        if same >= STRANGER_PER_SOURCE || all >= STRANGER_TOTAL {
            drop(stream);
            self.strangers.record(self.path, ip, Dropped::Refused, now);
            return;
        }
        debug!(path = %super::Named(self.path), %from, "connection accepted from an address not the peer's");
        self.add(stream, ip, false);
    }

    fn add(&mut self, stream: TcpStream, from: IpAddr, peer_line: bool) -> u64 {
        let _ = stream.set_nodelay(true);
        set_user_timeout(&stream, self.options.user_timeout);
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
        self.open.insert(
            id,
            Connection {
                writer,
                reader,
                from,
                since: Instant::now(),
                peer_line,
            },
        );
        self.order.push(id);
        id
    }

    fn close(&mut self, id: u64) {
        self.open.remove(&id);
        self.order.retain(|&c| c != id);
        if self.confirmed == Some(id) {
            self.confirmed = None;
        }
    }

    fn drop_unauthenticated(&mut self, id: u64, why: Dropped, now: Instant) {
        if let Some(connection) = self.open.get(&id) {
            let from = connection.from;
            self.close(id);
            self.strangers.record(self.path, from, why, now);
        }
    }

    /// The other end closed a connection (or it failed).
    fn closed(&mut self, closed: Closed) {
        let Some(connection) = self.open.get(&closed.connection) else {
            return;
        };
        if self.confirmed == Some(closed.connection) || !self.listening {
            info!(path = %super::Named(self.path), from = %connection.from, "connection {}", closed.why);
            self.close(closed.connection);
        } else {
            self.drop_unauthenticated(closed.connection, Dropped::ClosedByPeer, Instant::now());
        }
    }

    fn confirm(&mut self, id: u64) {
        let Some(connection) = self.open.get(&id) else {
            return;
        };
        if self.confirmed == Some(id) {
            return;
        }
        let from = connection.from;
        if self.listening {
            info!(path = %super::Named(self.path), %from, connection = id, "connection authenticated");
        } else {
            debug!(path = %super::Named(self.path), connection = id, "connection confirmed");
        }
        self.recent.retain(|&ip| ip != from);
        self.recent.push_front(from);
        self.recent.truncate(RECENT_ADDRESSES);
        if let Some(c) = self.open.get_mut(&id) {
            c.peer_line = true;
        }
        self.confirmed = Some(id);
        let others: Vec<u64> = self.order.iter().copied().filter(|&c| c != id).collect();
        for other in others {
            self.close(other);
        }
    }

    /// The path is down: the connection that carried it is closed.
    fn down(&mut self, id: Option<u64>) {
        let Some(id) = id.or(self.confirmed) else {
            return;
        };
        if self.open.contains_key(&id) {
            info!(path = %super::Named(self.path), connection = id, "path down: closing its connection");
            self.close(id);
        }
    }

    /// When the next unauthenticated connection's handshake deadline falls.
    fn next_deadline(&self) -> Option<Instant> {
        self.pending()
            .map(|(_, c)| c.since + self.options.handshake)
            .min()
    }

    /// Closes the unauthenticated connections past their deadline (a
    /// dialler's own connection waits: the listener judges it).
    fn expire(&mut self, now: Instant) {
        if !self.listening {
            return;
        }
        let late: Vec<u64> = self
            .pending()
            .filter(|(_, c)| c.since + self.options.handshake <= now)
            .map(|(id, _)| id)
            .collect();
        for id in late {
            self.drop_unauthenticated(id, Dropped::NoFrame, now);
        }
    }

    /// Writes to the confirmed connection, or before any is confirmed to the
    /// newest from the peer's line (so a new peer can hear our hello).
    async fn write(&mut self, frame: &[u8]) {
        let Some(id) = self.confirmed.or_else(|| {
            self.order
                .iter()
                .rev()
                .copied()
                .find(|c| self.open.get(c).is_some_and(|c| c.peer_line))
        }) else {
            return;
        };
        let Some(connection) = self.open.get_mut(&id) else {
            return;
        };
        match tokio::time::timeout(WRITE_TIMEOUT, connection.writer.write_all(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                info!(path = %super::Named(self.path), "connection lost: {e}");
                self.close(id);
            }
            Err(_) => {
                warn!(path = %super::Named(self.path), "connection stalled for {WRITE_TIMEOUT:?}; dropping it");
                self.close(id);
            }
        }
    }
}

/// Runs one TCP path until the daemon stops, with the default [`Options`].
pub async fn run_path(
    path: PathRef,
    role: Role,
    local: SocketAddr,
    remote: SocketAddr,
    outgoing: mpsc::Receiver<ToPath>,
    incoming: mpsc::Sender<Inbound>,
) {
    run_path_with(
        path,
        role,
        local,
        remote,
        Options::default(),
        outgoing,
        incoming,
    )
    .await;
}

type Dialling = Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send>>;

/// Runs one TCP path until the daemon stops.
pub async fn run_path_with(
    path: PathRef,
    role: Role,
    local: SocketAddr,
    remote: SocketAddr,
    options: Options,
    mut outgoing: mpsc::Receiver<ToPath>,
    incoming: mpsc::Sender<Inbound>,
) {
    let (closed_tx, mut closed_rx) = mpsc::channel(64);
    let listener = match role {
        Role::Listen => Some(listen(path, local).await),
        Role::Dial => None,
    };
    let mut connections = Connections {
        path,
        options,
        remote: remote.ip(),
        recent: VecDeque::new(),
        open: HashMap::new(),
        order: Vec::new(),
        confirmed: None,
        next_id: 0,
        closed_tx,
        incoming,
        strangers: Strangers::default(),
        listening: listener.is_some(),
    };
    let mut backoff = MIN_BACKOFF;
    let mut redial = Instant::now();
    let mut unreachable_reported = false;
    let mut dialling: Option<Dialling> = None;
    loop {
        let may_dial = listener.is_none() && connections.open.is_empty() && dialling.is_none();
        let deadline = connections
            .next_deadline()
            .filter(|_| connections.listening);
        let summary = connections.strangers.until;
        tokio::select! {
            // What the manager says and connections closing come before new
            // connections, so a flood of them cannot hold the path back.
            biased;
            message = outgoing.recv() => {
                match message {
                    Some(ToPath::Frame(frame)) => connections.write(&frame).await,
                    Some(ToPath::Confirmed(id)) => connections.confirm(id),
                    Some(ToPath::Down(id)) => {
                        connections.down(id);
                        if listener.is_none() && connections.open.is_empty() && dialling.is_none() {
                            // Redialled at once, then with the usual backoff.
                            backoff = MIN_BACKOFF;
                            redial = Instant::now();
                        }
                    }
                    None => return,
                }
            }
            closed = closed_rx.recv() => {
                if let Some(closed) = closed {
                    connections.closed(closed);
                    redial = redial.max(Instant::now() + MIN_BACKOFF);
                }
            }
            dialled = async { dialling.as_mut().expect("guarded").await }, if dialling.is_some() => {
                dialling = None;
                match dialled {
                    Ok(stream) => {
                        info!(path = %super::Named(path), %remote, "connected");
                        backoff = MIN_BACKOFF;
                        unreachable_reported = false;
                        connections.add(stream, remote.ip(), true);
                    }
                    Err(e) => {
                        // Once per outage at warning level; every retry at debug.
                        if unreachable_reported {
                            debug!(path = %super::Named(path), %remote, "connect failed: {e}");
                        } else {
                            warn!(path = %super::Named(path), %remote, "cannot connect: {e}; retrying with backoff up to {MAX_BACKOFF:?}");
                            unreachable_reported = true;
                        }
                        // The attempt's own wait counts towards the backoff.
                        redial = redial.max(Instant::now()).min(Instant::now() + backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            () = tokio::time::sleep_until(redial), if may_dial => {
                redial = Instant::now() + backoff;
                dialling = Some(Box::pin(dial(local, remote, options)));
            }
            () = sleep_until_some(deadline), if deadline.is_some() => {
                connections.expire(Instant::now());
            }
            () = sleep_until_some(summary), if summary.is_some() => {
                connections.strangers.flush(path, Instant::now());
            }
            accepted = async { match &listener { Some(l) => l.accept().await, None => std::future::pending().await } } => {
                match accepted {
                    Ok((stream, from)) => connections.accept(stream, from),
                    Err(e) => {
                        // Out of descriptors, typically: wait rather than spin.
                        warn!(path = %super::Named(path), "accept failed: {e}");
                        tokio::time::sleep(MIN_BACKOFF).await;
                    }
                }
            }
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn listen(path: PathRef, local: SocketAddr) -> TcpListener {
    let mut reported = false;
    loop {
        match TcpListener::bind(local).await {
            Ok(listener) => return listener,
            Err(e) => {
                if !reported {
                    warn!(path = %super::Named(path), %local, "cannot listen: {e}; retrying every {MAX_BACKOFF:?}");
                    reported = true;
                }
                tokio::time::sleep(MAX_BACKOFF).await;
            }
        }
    }
}

async fn dial(
    local: SocketAddr,
    remote: SocketAddr,
    options: Options,
) -> std::io::Result<TcpStream> {
    let socket = if remote.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(local.ip(), 0))?;
    set_user_timeout(&socket, options.user_timeout);
    tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(remote))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

/// Bounds how long the kernel keeps unacknowledged data (Linux only).
#[cfg(target_os = "linux")]
fn set_user_timeout<S: std::os::fd::AsFd>(socket: &S, timeout: Duration) {
    if let Err(e) = socket2::SockRef::from(socket).set_tcp_user_timeout(Some(timeout)) {
        debug!("cannot set TCP_USER_TIMEOUT: {e}");
    }
}

#[cfg(not(target_os = "linux"))]
fn set_user_timeout<S>(_socket: &S, _timeout: Duration) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_with_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(24_981), "24,981");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn options_follow_the_timing() {
        let options = Options::default();
        assert_eq!(options.handshake, Duration::from_secs(1));
        assert_eq!(options.user_timeout, Duration::from_secs(5));
        let slow = PathConfig {
            interval: Duration::from_secs(2).into(),
            ..PathConfig::default()
        };
        let options = Options::for_timing(&slow);
        assert_eq!(options.handshake, Duration::from_millis(4_500));
        assert_eq!(options.user_timeout, Duration::from_secs(40));
    }
}
