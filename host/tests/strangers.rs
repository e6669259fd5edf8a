//! A stranger on a path's port: two real daemons on loopback, one TCP path
//! through a relay that can reset the connection, and a stranger churning
//! connections to the listening port from another address (as from another
//! host) as fast as it can, some sending junk, some nothing. The peer's
//! reconnects must never be crowded out (no false NodeDown), and the log
//! must stay small.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use heartline::control::client::ask_blocking;
use heartline::control::{Request, Response};
use heartline::demo::local_cluster::wait_for;

const BIN: &str = env!("CARGO_BIN_EXE_heartline");

/// Where the stranger connects from: another address than the peer's, as
/// from another host. (`HEARTLINE_TEST_STRANGER=127.0.0.1` measures a
/// stranger on the peer's own address, which only the handshake deadline
/// and the caps hold back.)
const STRANGER: &str = "127.0.0.2";

/// A relay whose connections can be reset (both sides closed at once, as a
/// middlebox resetting them would).
struct ResettingRelay {
    addr: SocketAddr,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl ResettingRelay {
    fn start(target: SocketAddr) -> ResettingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let live = Arc::new(Mutex::new(Vec::new()));
        let streams = live.clone();
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    thread::spawn(move || pump(from, to));
                }
                let mut live = streams.lock().unwrap();
                live.push(client);
                live.push(server);
            }
        });
        ResettingRelay { addr, live }
    }

    /// Closes every connection through the relay.
    fn reset(&self) {
        for stream in self.live.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

/// Two daemons, node 2 listening on `listen`, node 1 dialling it through
/// `relay`; killed on drop.
struct Pair {
    dir: tempfile::TempDir,
    listen: SocketAddr,
    relay: ResettingRelay,
    daemons: Vec<Child>,
}

impl Pair {
    fn start() -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let listen = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let relay = ResettingRelay::start(listen);
        let status = Command::new(BIN)
            .arg("keygen")
            .arg(dir.path().join("cluster.key"))
            .status()
            .unwrap();
        assert!(status.success());
        for node in [1u16, 2] {
            let (local, remote) = if node == 1 {
                ("127.0.0.1:0".to_string(), relay.addr.to_string())
            } else {
                // The listener's remote is the peer's address: 127.0.0.1.
                (listen.to_string(), "127.0.0.1:9".to_string())
            };
            let text = format!(
                "[cluster]\nname = \"strangers\"\nid = 6\nkey_file = \"cluster.key\"\n[node]\nid = {node}\nname = \"n{node}\"\ncontrol_socket = \"n{node}.sock\"\nstate_dir = \"n{node}.state\"\n[[peers]]\nid = {}\n  [[peers.paths]]\n  kind = \"tcp\"\n  local = \"{local}\"\n  remote = \"{remote}\"\n",
                3 - node
            );
            std::fs::write(dir.path().join(format!("n{node}.toml")), text).unwrap();
        }
        let mut pair = Pair {
            dir,
            listen,
            relay,
            daemons: Vec::new(),
        };
        for node in [1u16, 2] {
            let log = std::fs::File::create(pair.log_path(node)).unwrap();
            let child = Command::new(BIN)
                .arg("daemon")
                .arg("--config")
                .arg(pair.dir.path().join(format!("n{node}.toml")))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            pair.daemons.push(child);
        }
        pair
    }

    fn log_path(&self, node: u16) -> PathBuf {
        self.dir.path().join(format!("n{node}.log"))
    }

    fn log(&self, node: u16) -> String {
        std::fs::read_to_string(self.log_path(node)).unwrap_or_default()
    }

    /// (node state, path state) of the peer as `node` sees it.
    fn view(&self, node: u16) -> (String, String) {
        let socket: &Path = &self.dir.path().join(format!("n{node}.sock"));
        match ask_blocking(socket, Request::Status) {
            Ok(Response::Status(status)) => {
                let peer = &status.comm.peers[0];
                (peer.state.clone(), peer.paths[0].state.clone())
            }
            _ => Default::default(),
        }
    }

    fn both_up(&self) -> bool {
        self.view(1) == ("up".into(), "up".into()) && self.view(2) == ("up".into(), "up".into())
    }

    fn node_downs(&self) -> usize {
        [1, 2]
            .iter()
            .map(|&n| self.log(n).matches("down: every path silent").count())
            .sum()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for child in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Connects to `port` from `from` as fast as it can until `stop`, every
/// other connection writing junk first, each held open until eight newer
/// ones are; counts them.
fn churn(from: &str, port: SocketAddr, stop: Arc<AtomicBool>, made: Arc<AtomicU64>) {
    let junk: Vec<u8> = (0..200u32).map(|i| (i * 7919 % 251) as u8).collect();
    let mut held = std::collections::VecDeque::new();
    while !stop.load(Ordering::SeqCst) {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None);
        let Ok(socket) = socket else { continue };
        let bound: SocketAddr = format!("{from}:0").parse().unwrap();
        if socket.bind(&bound.into()).is_err() || socket.connect(&port.into()).is_err() {
            thread::sleep(Duration::from_millis(1));
            continue;
        }
        let mut stream = TcpStream::from(socket);
        let n = made.fetch_add(1, Ordering::SeqCst);
        if n % 2 == 0 {
            let _ = stream.write_all(&junk);
        }
        held.push_back(stream);
        if held.len() > 8 {
            held.pop_front();
        }
    }
}

#[test]
fn a_stranger_churning_connections_never_crowds_out_the_peers_reconnects() {
    let pair = Pair::start();
    wait_for(Duration::from_secs(15), "both nodes up", || pair.both_up()).unwrap();
    let log_before = pair.log(2).len();

    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicU64::new(0));
    let from = std::env::var("HEARTLINE_TEST_STRANGER").unwrap_or_else(|_| STRANGER.into());
    let strangers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, made, port, from) = (stop.clone(), made.clone(), pair.listen, from.clone());
            thread::spawn(move || churn(&from, port, stop, made))
        })
        .collect();
    thread::sleep(Duration::from_millis(500));

    let mut slowest = Duration::ZERO;
    for reset in 0..20 {
        pair.relay.reset();
        let started = Instant::now();
        // Path up again at both ends after the reset (it may never have
        // gone down: the peer redials within 50 ms).
        thread::sleep(Duration::from_millis(100));
        wait_for(Duration::from_secs(5), "the path back up", || {
            pair.both_up()
        })
        .unwrap_or_else(|e| panic!("reset {reset}: {e}\n{}", pair.log(2)));
        slowest = slowest.max(started.elapsed());
        thread::sleep(Duration::from_millis(300));
    }
    // Long enough for a summary window to close.
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    for stranger in strangers {
        stranger.join().unwrap();
    }
    let connections = made.load(Ordering::SeqCst);
    wait_for(
        Duration::from_secs(12),
        "a summary of the strangers",
        || pair.log(2).contains("unauthenticated connections from"),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", pair.log(2)));
    let log_bytes = pair.log(2).len() - log_before;
    let node_downs = pair.node_downs();
    if std::env::var_os("HEARTLINE_TEST_SHOW_LOG").is_some() {
        eprintln!("{}", pair.log(2));
    }
    eprintln!(
        "20 resets under {connections} stranger connections: {node_downs} NodeDowns, slowest recovery {slowest:?}, {log_bytes} bytes of log ({:.3} per stranger connection)",
        log_bytes as f64 / connections as f64
    );
    assert!(connections > 1_000, "the stranger made only {connections}");
    assert_eq!(node_downs, 0, "{}", pair.log(2));
    // The peer's own reconnects are logged (a few lines each); the
    // strangers' connections only summarised.
    assert!(
        log_bytes < 20 * 1_000 + 4_000,
        "{log_bytes} bytes of log:\n{}",
        pair.log(2)
    );
}
