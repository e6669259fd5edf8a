//! A real cluster on loopback for the daemon's tests: real `heartline`
//! processes, real TCP, a real key file, and for every path a test-owned TCP
//! relay that can black-hole the path on demand (a blocked cable: the
//! connection stays open, nothing gets through).

#![allow(dead_code, clippy::unwrap_used)] // each test file uses part of this

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_heartline");

/// Waits for `check` to hold, polling, until `limit` passes.
pub fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP relay in front of one path's listener that can be switched to
/// swallow everything.
pub struct Relay {
    pub addr: SocketAddr,
    blocked: Arc<AtomicBool>,
}

impl Relay {
    fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let blocked = Arc::new(AtomicBool::new(false));
        let flag = blocked.clone();
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let flag = flag.clone();
                    thread::spawn(move || {
                        let mut buf = [0u8; 8192];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => {
                                    let _ = to.shutdown(std::net::Shutdown::Both);
                                    return;
                                }
                                Ok(n) => {
                                    if !flag.load(Ordering::SeqCst)
                                        && to.write_all(&buf[..n]).is_err()
                                    {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
            }
        });
        Relay { addr, blocked }
    }

    /// Swallow everything from now on.
    pub fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
    }

    /// Let traffic through again.
    pub fn restore(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }
}

/// One path between two nodes: the listener's real address and the relay.
pub struct Link {
    pub a: u16,
    pub b: u16,
    pub index: usize,
    pub listen: SocketAddr,
    pub relay: Relay,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: u16,
    pub links: Vec<Link>,
    children: Vec<Option<Child>>,
}

impl Cluster {
    /// `nodes` nodes, `paths` paths between every pair, all through relays.
    pub fn new(nodes: u16, paths: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new(BIN)
            .arg("keygen")
            .arg(dir.path().join("cluster.key"))
            .status()
            .unwrap();
        assert!(status.success());
        let mut links = Vec::new();
        for a in 1..=nodes {
            for b in a + 1..=nodes {
                for index in 0..paths {
                    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
                    links.push(Link {
                        a,
                        b,
                        index,
                        listen,
                        relay: Relay::start(listen),
                    });
                }
            }
        }
        let cluster = Cluster {
            dir,
            nodes,
            links,
            children: (0..nodes).map(|_| None).collect(),
        };
        for node in 1..=nodes {
            std::fs::write(cluster.config_path(node), cluster.config_text(node)).unwrap();
        }
        cluster
    }

    pub fn config_path(&self, node: u16) -> PathBuf {
        self.dir.path().join(format!("node{node}.toml"))
    }

    pub fn socket(&self, node: u16) -> PathBuf {
        self.dir.path().join(format!("node{node}.sock"))
    }

    fn config_text(&self, node: u16) -> String {
        let mut text = format!(
            "[cluster]\nname = \"test\"\nid = 99\nkey_file = \"cluster.key\"\n\n[node]\nid = {node}\nname = \"n{node}\"\ncontrol_socket = \"node{node}.sock\"\nstate_dir = \"state{node}\"\n"
        );
        for peer in (1..=self.nodes).filter(|&p| p != node) {
            text.push_str(&format!("\n[[peers]]\nid = {peer}\n"));
            let (a, b) = (node.min(peer), node.max(peer));
            for link in self.links.iter().filter(|l| (l.a, l.b) == (a, b)) {
                // The higher id listens; the lower dials through the relay.
                let (local, remote) = if node == b {
                    (link.listen, link.listen)
                } else {
                    (link.listen, link.relay.addr)
                };
                text.push_str(&format!("  [[peers.paths]]\n  kind = \"tcp\"\n  local = \"{local}\"\n  remote = \"{remote}\"\n"));
            }
        }
        text
    }

    pub fn start(&mut self, node: u16) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node{node}.log")))
            .unwrap();
        let child = Command::new(BIN)
            .arg("daemon")
            .arg("--config")
            .arg(self.config_path(node))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[usize::from(node - 1)] = Some(child);
        let socket = self.socket(node);
        wait_for(Duration::from_secs(10), "the control socket", || {
            UnixStream::connect(&socket).is_ok()
        });
    }

    pub fn start_all(&mut self) {
        for node in 1..=self.nodes {
            self.start(node);
        }
    }

    /// kill -9.
    pub fn kill(&mut self, node: u16) {
        if let Some(mut child) = self.children[usize::from(node - 1)].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn link(&self, a: u16, b: u16, index: usize) -> &Link {
        self.links
            .iter()
            .find(|l| (l.a, l.b) == (a.min(b), a.max(b)) && l.index == index)
            .unwrap()
    }

    /// One request over the control socket, answered.
    pub fn ask(&self, node: u16, request: Value) -> Value {
        let mut stream = UnixStream::connect(self.socket(node)).unwrap();
        let mut line = serde_json::to_vec(&request).unwrap();
        line.push(b'\n');
        stream.write_all(&line).unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap()
    }

    pub fn status(&self, node: u16) -> Value {
        self.ask(node, json!({"v": 1, "op": "status"}))
    }

    /// `state` of `peer` as `node` sees it, and its incarnation.
    pub fn view(&self, node: u16, peer: u16) -> (String, Option<u64>) {
        let status = self.status(node);
        let entry = status["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["node"] == peer)
            .unwrap()
            .clone();
        (
            entry["state"].as_str().unwrap().to_string(),
            entry["incarnation"].as_u64(),
        )
    }

    pub fn path_state(&self, node: u16, peer: u16, index: usize) -> String {
        let status = self.status(node);
        let entry = status["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["node"] == peer)
            .unwrap()
            .clone();
        entry["paths"][index]["state"].as_str().unwrap().to_string()
    }

    pub fn all_up(&self) -> bool {
        (1..=self.nodes).all(|n| {
            (1..=self.nodes)
                .filter(|&p| p != n)
                .all(|p| self.view(n, p).0 == "up")
        })
    }

    pub fn log(&self, node: u16) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{node}.log"))).unwrap_or_default()
    }

    pub fn cli(&self, node: u16) -> Command {
        let mut command = Command::new(BIN);
        command.arg("--socket").arg(self.socket(node));
        command
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in 1..=self.nodes {
            self.kill(node);
        }
    }
}
