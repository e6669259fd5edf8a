//! A whole cluster on this machine: a key, a config per node with TCP paths
//! on loopback (each through a [`Relay`] so it can be cut), and real daemon
//! processes. `heartline demo` runs one; so do the integration tests.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::relay::Relay;
use crate::comm::report::StatusReport;
use crate::config;
use crate::control::client::{self, ClientError};
use crate::control::{Request, Response};

/// Set when the demo is interrupted (Ctrl-C, SIGTERM): every wait then
/// ends with an error, so what was started is stopped as the error
/// unwinds.
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What [`wait_for`] returns once [`INTERRUPTED`] is set.
pub const INTERRUPTED_TEXT: &str = "interrupted";

/// Waits for `check` to hold, polling every 20 ms, until `limit` passes
/// (or the demo is interrupted).
pub fn wait_for(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(format!("{INTERRUPTED_TEXT} while waiting for {what}"));
        }
        if check() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "timed out after {} waiting for {what}",
        humantime::format_duration(limit)
    ))
}

/// Runs `command` with `input` on its standard input (as `snd-msg` reads
/// its message) and returns how it exited.
pub fn run_with_input(
    command: &mut Command,
    input: &[u8],
) -> std::io::Result<std::process::ExitStatus> {
    use std::io::Write;
    let mut child = command.stdin(Stdio::piped()).spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input)?;
    }
    child.wait()
}

/// One path between nodes `a` < `b`: `b` listens on `listen`, `a` dials the relay.
#[derive(Debug)]
pub struct Link {
    /// The lower node id.
    pub a: u16,
    /// The higher node id, which listens.
    pub b: u16,
    /// Path number between them.
    pub index: usize,
    /// The listener's address.
    pub listen: SocketAddr,
    /// The relay the dialer goes through.
    pub relay: Relay,
}

/// Nodes named after the NATO alphabet, for readable output.
const NAMES: [&str; 8] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
];

/// The cluster.
#[derive(Debug)]
pub struct LocalCluster {
    dir: tempfile::TempDir,
    program: PathBuf,
    nodes: u16,
    links: Vec<Link>,
    extra: Vec<ExtraPath>,
    /// Sections added to every node's configuration.
    tail: String,
    /// Sections added to one node's configuration.
    tails: std::collections::BTreeMap<u16, String>,
    /// Whether a node whose sections say nothing of `[quorum]` is given
    /// `enabled = false` (see [`LocalCluster::default_quorum`]).
    quorum_off: bool,
    children: Vec<Option<Child>>,
}

/// A path other than the relayed TCP ones, between nodes `a` < `b`.
#[derive(Debug, Clone)]
pub struct ExtraPath {
    /// The lower node id.
    pub a: u16,
    /// The higher node id.
    pub b: u16,
    /// What each end uses.
    pub ends: PathEnds,
}

/// Each end of an [`ExtraPath`].
#[derive(Debug, Clone)]
pub enum PathEnds {
    /// A serial line: the device each end opens.
    Serial {
        /// `a`'s device.
        a_device: PathBuf,
        /// `b`'s device.
        b_device: PathBuf,
    },
    /// UDP: the address each end binds.
    Udp {
        /// `a`'s address.
        a_addr: SocketAddr,
        /// `b`'s address.
        b_addr: SocketAddr,
    },
}

fn io(e: std::io::Error) -> String {
    e.to_string()
}

/// A loopback address with a port free now, for a daemon to listen on
/// later: taken below the kernel's ephemeral range (so no outgoing
/// connection or `bind(0)` elsewhere takes it in the meantime), from a
/// counter of this process that starts at a place of its own, and checked
/// free. A port picked with `bind(0)` and released could be handed to
/// another cluster of the same process (tests run side by side) before the
/// daemon bound it, and that path never came up.
pub fn listen_addr() -> std::io::Result<SocketAddr> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(97) % COUNT,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..COUNT {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % COUNT;
        let port = u16::try_from(FIRST + offset).unwrap_or(u16::MAX);
        if let Ok(probe) = TcpListener::bind(("127.0.0.1", port)) {
            return probe.local_addr();
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr())
}

impl LocalCluster {
    /// Writes a key and configs for `nodes` nodes (at most 8) with `paths`
    /// TCP paths between every pair; `program` is the heartline binary.
    pub fn new(program: &Path, nodes: u16, paths: usize) -> Result<LocalCluster, String> {
        Self::with_extra_paths(program, nodes, paths, Vec::new())
    }

    /// As [`LocalCluster::new`], plus the given paths, numbered after the
    /// TCP paths of their pair.
    pub fn with_extra_paths(
        program: &Path,
        nodes: u16,
        paths: usize,
        extra: Vec<ExtraPath>,
    ) -> Result<LocalCluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("heartline-")
            .tempdir()
            .map_err(io)?;
        config::write_new_key(&dir.path().join("cluster.key"))?;
        let mut links = Vec::new();
        for a in 1..=nodes {
            for b in a + 1..=nodes {
                for index in 0..paths {
                    let port = listen_addr().map_err(io)?;
                    let relay = Relay::start(port).map_err(io)?;
                    links.push(Link {
                        a,
                        b,
                        index,
                        listen: port,
                        relay,
                    });
                }
            }
        }
        let cluster = LocalCluster {
            dir,
            program: program.to_path_buf(),
            nodes,
            links,
            extra,
            tail: String::new(),
            tails: std::collections::BTreeMap::new(),
            quorum_off: true,
            children: (0..nodes).map(|_| None).collect(),
        };
        for node in 1..=nodes {
            std::fs::write(cluster.config_path(node), cluster.config_text(node)).map_err(io)?;
        }
        Ok(cluster)
    }

    /// Lets the nodes run quorum as the daemon's default has it (on with
    /// three nodes or more). Without this call, a node whose added sections
    /// have no `[quorum]` table runs with quorum off: most tests are about
    /// other things, and a lost node's lease would add seconds to each
    /// of their failovers. Call it before starting the nodes.
    pub fn default_quorum(&mut self) -> Result<(), String> {
        self.quorum_off = false;
        for node in 1..=self.nodes {
            std::fs::write(self.config_path(node), self.config_text(node)).map_err(io)?;
        }
        Ok(())
    }

    /// Adds `sections` (TOML, e.g. a `[quorum]` table) to every node's
    /// configuration, rewriting the files: call it before starting them.
    pub fn add_config(&mut self, sections: &str) -> Result<(), String> {
        self.tail.push_str(sections);
        for node in 1..=self.nodes {
            std::fs::write(self.config_path(node), self.config_text(node)).map_err(io)?;
        }
        Ok(())
    }

    /// Adds `sections` to node `node`'s configuration only (after those of
    /// [`LocalCluster::add_config`]).
    pub fn add_config_for(&mut self, node: u16, sections: &str) -> Result<(), String> {
        self.tails.entry(node).or_default().push_str(sections);
        std::fs::write(self.config_path(node), self.config_text(node)).map_err(io)
    }

    /// Node `node`'s name.
    pub fn name(node: u16) -> &'static str {
        NAMES
            .get(usize::from(node).wrapping_sub(1))
            .copied()
            .unwrap_or("node")
    }

    /// Where the cluster's files are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How many nodes it has.
    #[must_use]
    pub fn nodes(&self) -> u16 {
        self.nodes
    }

    /// Node `node`'s config file.
    pub fn config_path(&self, node: u16) -> PathBuf {
        self.dir.path().join(format!("{}.toml", Self::name(node)))
    }

    /// Node `node`'s control socket.
    pub fn socket(&self, node: u16) -> PathBuf {
        self.dir.path().join(format!("{}.sock", Self::name(node)))
    }

    /// Node `node`'s log file.
    pub fn log_path(&self, node: u16) -> PathBuf {
        self.dir.path().join(format!("{}.log", Self::name(node)))
    }

    fn config_text(&self, node: u16) -> String {
        let name = Self::name(node);
        let mut text = format!(
            "[cluster]\nname = \"local\"\nid = 42\nkey_file = \"cluster.key\"\n\n[node]\nid = {node}\nname = \"{name}\"\ncontrol_socket = \"{name}.sock\"\nstate_dir = \"{name}.state\"\n{}{}",
            self.tail,
            self.tails.get(&node).map_or("", String::as_str)
        );
        if self.quorum_off && !text.contains("[quorum]") {
            text.push_str("\n[quorum]\nenabled = false\n");
        }
        for peer in (1..=self.nodes).filter(|&p| p != node) {
            text.push_str(&format!(
                "\n[[peers]]\nid = {peer}\nname = \"{}\"\n",
                Self::name(peer)
            ));
            let (a, b) = (node.min(peer), node.max(peer));
            for link in self.links.iter().filter(|l| (l.a, l.b) == (a, b)) {
                let remote = if node == b {
                    link.listen
                } else {
                    link.relay.addr
                };
                text.push_str(&format!(
                    "  [[peers.paths]]\n  kind = \"tcp\"\n  local = \"{}\"\n  remote = \"{remote}\"\n",
                    link.listen
                ));
            }
            for path in self.extra.iter().filter(|l| (l.a, l.b) == (a, b)) {
                text.push_str(&match &path.ends {
                    PathEnds::Serial { a_device, b_device } => {
                        let device = if node == a { a_device } else { b_device };
                        format!("  [[peers.paths]]\n  kind = \"serial\"\n  device = \"{}\"\n", device.display())
                    }
                    PathEnds::Udp { a_addr, b_addr } => {
                        let (local, remote) = if node == a { (a_addr, b_addr) } else { (b_addr, a_addr) };
                        format!("  [[peers.paths]]\n  kind = \"udp\"\n  local = \"{local}\"\n  remote = \"{remote}\"\n")
                    }
                });
            }
        }
        text
    }

    /// Starts node `node`'s daemon and waits for its control socket.
    pub fn start(&mut self, node: u16) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(node))
            .map_err(io)?;
        let child = Command::new(&self.program)
            .arg("daemon")
            .arg("--config")
            .arg(self.config_path(node))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        self.children[usize::from(node - 1)] = Some(child);
        let socket = self.socket(node);
        wait_for(
            Duration::from_secs(10),
            &format!("{}'s control socket", Self::name(node)),
            || UnixStream::connect(&socket).is_ok(),
        )
    }

    /// Starts every node.
    pub fn start_all(&mut self) -> Result<(), String> {
        (1..=self.nodes).try_for_each(|node| self.start(node))
    }

    /// Kills node `node`'s daemon with SIGKILL, as a crash would (a stalled
    /// one too).
    pub fn kill(&mut self, node: u16) {
        if let Some(mut child) = self.children[usize::from(node - 1)].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Node `node`'s daemon process id, while this cluster runs it.
    #[must_use]
    pub fn pid(&self, node: u16) -> Option<u32> {
        self.children[usize::from(node - 1)].as_ref().map(Child::id)
    }

    /// Sends node `node`'s daemon the signal `signal`, named as `kill -s`
    /// names it (`TERM`, `STOP`, `CONT`...): a stall is `STOP` then
    /// `CONT`.
    pub fn signal(&self, node: u16, signal: &str) -> Result<(), String> {
        let pid = self
            .pid(node)
            .ok_or_else(|| format!("{} is not running", Self::name(node)))?;
        let status = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "kill -s {signal} {pid} ({}) failed: {status}",
                Self::name(node)
            ))
        }
    }

    /// Asks node `node`'s daemon to stop cleanly, as systemd does (SIGTERM):
    /// it takes its hierarchies out of service first, then exits by itself.
    /// Returns at once; [`LocalCluster::wait_exit`] waits for the exit.
    pub fn terminate(&mut self, node: u16) -> Result<(), String> {
        self.signal(node, "TERM")
    }

    /// Waits up to `limit` for node `node`'s daemon to exit by itself (after
    /// [`LocalCluster::terminate`]), and returns how it exited; the node is
    /// then stopped, and [`LocalCluster::start`] starts it again. An error
    /// if it is not running or still runs after `limit` (it is left
    /// running).
    pub fn wait_exit(
        &mut self,
        node: u16,
        limit: Duration,
    ) -> Result<std::process::ExitStatus, String> {
        let slot = &mut self.children[usize::from(node - 1)];
        let child = slot
            .as_mut()
            .ok_or_else(|| format!("{} is not running", Self::name(node)))?;
        let deadline = Instant::now() + limit;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    *slot = None;
                    return Ok(status);
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    return Err(format!(
                        "{} did not exit within {}",
                        Self::name(node),
                        humantime::format_duration(limit)
                    ));
                }
                Err(e) => return Err(format!("cannot wait for {}: {e}", Self::name(node))),
            }
        }
    }

    /// The `index`th path between `a` and `b`.
    pub fn link(&self, a: u16, b: u16, index: usize) -> Option<&Link> {
        self.links
            .iter()
            .find(|l| (l.a, l.b) == (a.min(b), a.max(b)) && l.index == index)
    }

    /// One control request to node `node`.
    pub fn ask(&self, node: u16, request: Request) -> Result<Response, ClientError> {
        client::ask_blocking(&self.socket(node), request)
    }

    /// Node `node`'s status.
    pub fn status(&self, node: u16) -> Result<StatusReport, String> {
        match self.ask(node, Request::Status).map_err(|e| e.to_string())? {
            Response::Status(status) => Ok(status.comm),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// How `node` sees `peer`: its state and incarnation.
    pub fn view(&self, node: u16, peer: u16) -> (String, Option<u64>) {
        self.status(node)
            .ok()
            .and_then(|s| s.peers.into_iter().find(|p| p.node == peer))
            .map_or_else(
                || ("unreachable".into(), None),
                |p| (p.state, p.incarnation),
            )
    }

    /// How `node` sees its `index`th path to `peer`.
    pub fn path_state(&self, node: u16, peer: u16, index: usize) -> String {
        self.status(node)
            .ok()
            .and_then(|s| s.peers.into_iter().find(|p| p.node == peer))
            .and_then(|p| p.paths.into_iter().nth(index))
            .map_or_else(|| "unknown".into(), |p| p.state)
    }

    /// Whether every node sees every other up.
    pub fn all_up(&self) -> bool {
        (1..=self.nodes).all(|n| {
            (1..=self.nodes)
                .filter(|&p| p != n)
                .all(|p| self.view(n, p).0 == "up")
        })
    }

    /// Node `node`'s log so far.
    pub fn log(&self, node: u16) -> String {
        std::fs::read_to_string(self.log_path(node)).unwrap_or_default()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in 1..=self.nodes {
            self.kill(node);
        }
    }
}
