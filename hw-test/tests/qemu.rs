//! The dongle under QEMU between two real host daemons: both hosts see it as
//! a node of kind "dongle" over their serial path; when host A dies, the
//! dongle's watchdog trips and host B hears about it; when A returns, the
//! watchdog re-arms.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use heartline::client::ask_blocking;
use heartline::control::{Request, Response, StatusReport};
use heartline::local_cluster::wait_for;
use heartline_hw_test::{Qemu, firmware_image, heartline_binary};

/// The QEMU test image's compiled-in provisioning (firmware/src/main.rs).
const SECRET: &[u8] = b"heartline qemu dongle test key!!";
const DONGLE: u16 = 100;

struct Host {
    child: Option<Child>,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    binary: PathBuf,
}

impl Host {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.binary)
            .args(["daemon", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let socket = self.socket.clone();
        wait_for(Duration::from_secs(10), "the control socket", || {
            ask_blocking(&socket, Request::Status).is_ok()
        })
        .unwrap();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn status(&self) -> Option<StatusReport> {
        match ask_blocking(&self.socket, Request::Status) {
            Ok(Response::Status(report)) => Some(report),
            _ => None,
        }
    }

    fn sees(&self, node: u16, state: &str) -> bool {
        self.status()
            .is_some_and(|s| s.peers.iter().any(|p| p.node == node && p.state == state))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `text` in this host's log; on failure shows the log.
    fn wait_log(&self, text: &str, limit: Duration) {
        if wait_for(limit, text, || self.log().contains(text)).is_err() {
            panic!("no {text:?} within {limit:?}; the log:\n{}", self.log());
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads and discards a pty while it lives, as a dead host's cable would.
struct Drain(Child);

impl Drain {
    fn start(port: &Path) -> Drain {
        Drain(
            Command::new("cat")
                .arg(port)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn setup(dir: &Path, binary: &Path, ports: &[PathBuf; 2]) -> [Host; 2] {
    let key = dir.join("cluster.key");
    std::fs::write(&key, SECRET).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let tcp = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    [1u16, 2].map(|node| {
        let other = 3 - node;
        let port = &ports[usize::from(node - 1)];
        let text = format!(
            "[cluster]\nname = \"qemu\"\nid = 4242\nkey_file = \"cluster.key\"\n[node]\nid = {node}\nname = \"host{node}\"\ncontrol_socket = \"host{node}.sock\"\nstate_dir = \"host{node}.state\"\n\
             [[peers]]\nid = {DONGLE}\n  [[peers.paths]]\n  kind = \"serial\"\n  device = \"{}\"\n\
             [[peers]]\nid = {other}\n  [[peers.paths]]\n  kind = \"tcp\"\n  local = \"{tcp}\"\n  remote = \"{tcp}\"\n",
            port.display()
        );
        let config = dir.join(format!("host{node}.toml"));
        std::fs::write(&config, text).unwrap();
        Host {
            child: None,
            config,
            socket: dir.join(format!("host{node}.sock")),
            log: dir.join(format!("host{node}.log")),
            binary: binary.to_path_buf(),
        }
    })
}

#[test]
fn the_dongle_is_a_node_to_both_hosts_and_reports_a_dead_host() {
    let image = firmware_image();
    let Some(binary) = heartline_binary() else {
        eprintln!(
            "SKIPPED: the heartline binary is not built (cargo build -p heartline); the QEMU test did not run"
        );
        return;
    };
    if !image.exists() {
        eprintln!(
            "SKIPPED: no firmware image at {} (./test.sh builds it); the QEMU test did not run",
            image.display()
        );
        return;
    }
    if Command::new("qemu-system-arm")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!(
            "SKIPPED: qemu-system-arm is not installed (./test.sh installs it); the QEMU test did not run"
        );
        return;
    }
    let qemu = Qemu::start(&image).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let [mut a, mut b] = setup(dir.path(), &binary, &qemu.ports);
    a.start();
    b.start();
    wait_for(
        Duration::from_secs(20),
        "both hosts to see the dongle and each other up",
        || a.sees(DONGLE, "up") && b.sees(DONGLE, "up") && a.sees(2, "up") && b.sees(1, "up"),
    )
    .unwrap();
    let dongle = b
        .status()
        .unwrap()
        .peers
        .into_iter()
        .find(|p| p.node == DONGLE)
        .unwrap();
    assert_eq!(dongle.kind.as_deref(), Some("dongle"));
    assert_eq!(dongle.name, "dongle");

    a.kill();
    // A real RS-232 line never pushes back on the dongle when its host dies;
    // QEMU's pty does once nobody reads it, so something must read it.
    let drain = Drain::start(&qemu.ports[0]);
    b.wait_log(
        "node 100 reports its watchdog tripped on node 1",
        Duration::from_secs(10),
    );
    assert!(b.sees(1, "down"), "host B also sees host A down");

    drop(drain);
    a.start();
    b.wait_log(
        "node 100 reports its watchdog re-armed on node 1",
        Duration::from_secs(20),
    );
}
