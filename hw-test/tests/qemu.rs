//! The dongle under QEMU between two real host daemons: both hosts see it as
//! a node of kind "dongle" over their serial path; the serial path from host
//! A through the dongle to host B carries heartbeats and mailboxes and keeps
//! the hosts up while their TCP path is cut; when host A dies, the dongle's
//! watchdog trips and host B hears about it; when A returns, it re-arms.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use heartline::comm::report::StatusReport;
use heartline::control::client::ask_blocking;
use heartline::control::{Request, Response};
use heartline::demo::local_cluster::wait_for;
use heartline::demo::relay::Relay;
use heartline_hw_test::{
    BOOT_LINE, DongleLog, Feed, Lines, ProvisionAs, ProvisionFrom, Qemu, RAM_BUDGET, RAM_HEADROOM,
    check_loopback, firmware_image, heartline_binary, measure_relay, static_ram,
};

/// The test cluster's secret: the hosts provision the dongle with a key
/// derived from it.
const SECRET: &[u8] = b"heartline hw-test cluster secret";
const CLUSTER: u32 = 4242;
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
        .unwrap_or_else(|e| panic!("{e}; the host's log:\n{}", self.log()));
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn status(&self) -> Option<StatusReport> {
        match ask_blocking(&self.socket, Request::Status) {
            Ok(Response::Status(status)) => Some(status.comm),
            _ => None,
        }
    }

    /// The state of path `index` to `node`, as this host sees it.
    fn path(&self, node: u16, index: usize) -> String {
        self.status()
            .and_then(|s| s.peers.into_iter().find(|p| p.node == node))
            .and_then(|p| p.paths.into_iter().nth(index))
            .map_or_else(|| "unknown".into(), |p| p.state)
    }

    /// The dongle's run, as this host last heard it.
    fn dongle_incarnation(&self) -> Option<u64> {
        self.status()
            .and_then(|s| s.peers.into_iter().find(|p| p.node == DONGLE))
            .and_then(|p| p.incarnation)
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

/// What the hosts of [`setup`] are configured for.
enum Role {
    /// Two paths between the hosts: 0, TCP; 1, serial through the
    /// dongle's relay.
    Relay,
    /// The dongle is the quorum witness and each host's self-fence (its
    /// watchdog 1 s, reset pulse 300 ms, with the 200 ms slack 1.5 s:
    /// within three quarters of the 3 s lease), and
    /// with `fence` their fence device; the hosts have only their TCP path
    /// to each other, so cutting it splits them while both still reach the
    /// dongle; recovery kits in `kits`.
    Witness { kits: PathBuf, fence: bool },
}

/// Hosts 1 and 2, each on its own dongle port, with a TCP path between
/// them through `tcp` (host 2 listens at `listen`), configured for `role`.
fn setup(
    dir: &Path,
    binary: &Path,
    ports: &[PathBuf; 2],
    listen: SocketAddr,
    tcp: &Relay,
    role: &Role,
) -> [Host; 2] {
    let key = dir.join("cluster.key");
    std::fs::write(&key, SECRET).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    [1u16, 2].map(|node| {
        let other = 3 - node;
        let port = &ports[usize::from(node - 1)];
        let remote = if node == 1 { tcp.addr } else { listen };
        let (witness, watchdog, relayed, sections) = match role {
            Role::Relay => (
                "",
                "2s",
                format!("  [[peers.paths]]\n  kind = \"serial\"\n  device = \"{}\"\n", port.display()),
                String::new(),
            ),
            Role::Witness { kits, fence } => (
                "witness = true\n",
                "1s",
                String::new(),
                format!(
                    "[resources]\nkits = [\"{}\"]\n[quorum]\nenabled = true\nlease = \"3s\"\nstop_bound = \"1s\"\n{}",
                    kits.display(),
                    if *fence {
                        "[[fence]]\nname = \"dongle-1\"\nnode = 1\nagent = \"dongle\"\ntimeout = \"2s\"\n\
                         [[fence]]\nname = \"dongle-2\"\nnode = 2\nagent = \"dongle\"\ntimeout = \"2s\"\n"
                    } else {
                        ""
                    }
                ),
            ),
        };
        let pulse = if matches!(role, Role::Witness { .. }) {
            "300ms"
        } else {
            "200ms"
        };
        let text = format!(
            "[cluster]\nname = \"qemu\"\nid = {CLUSTER}\nkey_file = \"cluster.key\"\n[node]\nid = {node}\nname = \"host{node}\"\ncontrol_socket = \"host{node}.sock\"\nstate_dir = \"host{node}.state\"\n{sections}\
             [[peers]]\nid = {DONGLE}\nkind = \"dongle\"\nwatchdog = \"{watchdog}\"\nreset_pulse = \"{pulse}\"\n{witness}  [[peers.paths]]\n  kind = \"serial\"\n  device = \"{port}\"\n\
             [[peers]]\nid = {other}\n  [[peers.paths]]\n  kind = \"tcp\"\n  local = \"{listen}\"\n  remote = \"{remote}\"\n{relayed}",
            port = port.display()
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
    if !qemu_installed() {
        eprintln!(
            "SKIPPED: qemu-system-arm is not installed (./test.sh installs it); the QEMU test did not run"
        );
        return;
    }
    let qemu = Qemu::start(&image).unwrap();
    qemu.log
        .wait_for(BOOT_LINE, Duration::from_secs(10))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hosts = check_dongle(dir.path(), &binary, &qemu.ports, Some(&qemu.log));

    // A reset board forgets its provisioning; the hosts give it back.
    let before = hosts[1].dongle_incarnation();
    let reset = std::time::Instant::now();
    qemu.reset().unwrap();
    wait_for(Duration::from_secs(10), "the dongle to boot again", || {
        qemu.boots() == 2
    })
    .unwrap();
    wait_for(
        Duration::from_secs(10),
        "the dongle provisioned again and up at both hosts",
        || {
            qemu.log
                .lines()
                .iter()
                .filter(|l| l.contains("provisioned by host"))
                .count()
                == 2
                && hosts.iter().all(|h| h.sees(DONGLE, "up"))
                && hosts[1].dongle_incarnation() > before
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}; host B: {:?}; the dongle's log:\n  {}",
            hosts[1].status(),
            qemu.log.lines().join("\n  ")
        )
    });
    eprintln!(
        "dongle reset; provisioned again and up at both hosts {:?} later",
        reset.elapsed()
    );
    drop(hosts);

    check_ram(&image, &qemu.log, "the run");
    eprintln!(
        "the dongle's whole log:\n  {}",
        qemu.log.lines().join("\n  ")
    );
    assert!(
        !qemu.log.lines().iter().any(|l| l.contains("panic")),
        "the dongle panicked"
    );
    assert_eq!(qemu.boots(), 2, "the dongle booted only when reset");
}

#[test]
fn the_dongle_relays_frames_between_its_ports() {
    let image = firmware_image();
    if !image.exists() || !qemu_installed() {
        eprintln!(
            "SKIPPED: needs the firmware image ({}) and qemu-system-arm (./test.sh provides both)",
            image.display()
        );
        return;
    }
    let qemu = Qemu::start(&image).unwrap();
    qemu.log
        .wait_for(BOOT_LINE, Duration::from_secs(10))
        .unwrap();
    let runs = measure_relay(
        &qemu.ports,
        115_200,
        &provisioning(),
        &[(2_000, Feed::AtOnce), (500, Feed::AtLineRate)],
    )
    .unwrap();
    for (run, how) in runs.iter().zip([
        "fed as fast as it takes them",
        "fed at the rate of a 115200-baud line",
    ]) {
        eprintln!("relay, QEMU, {how}: {run}");
        assert_eq!(
            run.intact,
            run.sent,
            "every frame relayed intact: {run}; the dongle's log:\n  {}",
            qemu.log.timed_lines().join("\n  ")
        );
    }
    check_ram(&image, &qemu.log, "the relay runs");
}

/// Provisionings with new settings restart the dongle's node in place:
/// host 1 naming no other host, then host 2 naming host 1, then a
/// watchdog, which trips when the hosts' heartbeats stop and re-arms when
/// they resume, then other timings; and the first provisioning after a
/// board reset. All of it within the dongle's RAM budget.
#[test]
fn reprovisioning_with_new_settings_stays_within_the_ram_budget() {
    let image = firmware_image();
    if !image.exists() || !qemu_installed() {
        eprintln!(
            "SKIPPED: needs the firmware image ({}) and qemu-system-arm (./test.sh provides both)",
            image.display()
        );
        return;
    }
    let qemu = Qemu::start(&image).unwrap();
    qemu.log
        .wait_for(BOOT_LINE, Duration::from_secs(10))
        .unwrap();
    let mut lines = Lines::open(&qemu.ports, 115_200).unwrap();
    let cluster = provisioning();
    let count = |text: &str| qemu.log.lines().iter().filter(|l| l.contains(text)).count();
    let wait_count = |text: &str, n: usize| {
        wait_for(Duration::from_secs(5), text, || count(text) >= n).unwrap_or_else(|e| {
            panic!(
                "{e} ({n} times); the dongle's log:\n  {}",
                qemu.log.lines().join("\n  ")
            )
        });
    };
    let restarted = "new settings from host";
    let mut provision = |port: usize, from: ProvisionFrom| {
        lines
            .write(port, &cluster.frame_from(&from).unwrap())
            .unwrap();
    };
    let lonely = ProvisionFrom {
        host: 1,
        other_host: 0,
        interval_ms: 100,
        watchdog_ms: 0,
        reset_pulse_ms: 0,
    };
    // The stack's high-water mark after each step, as the dongle logs it
    // (its check runs once a second).
    let peak_after = |step: &str| {
        std::thread::sleep(Duration::from_millis(1_200));
        eprintln!(
            "dongle: stack high-water mark after {step}: {} bytes",
            peak_stack(&qemu.log)
        );
    };
    peak_after("booting");
    provision(0, lonely);
    wait_count("provisioned by host 1 on UART0", 1);
    peak_after("a first provisioning naming no other host");
    provision(
        1,
        ProvisionFrom {
            host: 2,
            other_host: 1,
            ..lonely
        },
    );
    wait_count(restarted, 1);
    peak_after("new settings: the other host named");
    let watched = ProvisionFrom {
        other_host: 2,
        watchdog_ms: 600,
        reset_pulse_ms: 100,
        ..lonely
    };
    provision(0, watched);
    wait_count(restarted, 2);
    peak_after("new settings: a watchdog");

    // Both hosts heartbeat for a second, fall silent until the watchdog
    // trips for both and pulses their reset lines, then heartbeat again.
    let mut seq = 0;
    let mut beat = |lines: &mut Lines, rounds: u64| {
        for _ in 0..rounds {
            seq += 1;
            for (port, host) in [(0, 1), (1, 2)] {
                let beats = cluster.heartbeats_from(host, seq..=seq).unwrap();
                lines.write(port, &beats).unwrap();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    beat(&mut lines, 10);
    wait_count("host 1 up", 1);
    wait_count("host 2 up", 1);
    wait_count("watchdog tripped for host 1", 1);
    wait_count("watchdog tripped for host 2", 1);
    wait_count("reset output of the host on UART0 released", 1);
    wait_count("reset output of the host on UART1 released", 1);
    beat(&mut lines, 10);
    wait_count("watchdog re-armed: host 1", 1);
    wait_count("watchdog re-armed: host 2", 1);
    peak_after("heartbeats, trips, reset pulses and re-arms");

    // Other timings from host 2, then the same again: only the first
    // restarts the node.
    let timings = ProvisionFrom {
        host: 2,
        other_host: 1,
        interval_ms: 150,
        watchdog_ms: 800,
        reset_pulse_ms: 100,
    };
    lines
        .write(1, &cluster.frame_from(&timings).unwrap())
        .unwrap();
    wait_count(restarted, 3);
    lines
        .write(1, &cluster.frame_from(&timings).unwrap())
        .unwrap();
    beat(&mut lines, 5);
    assert_eq!(count(restarted), 3, "settings it already had restarted it");
    check_ram(&image, &qemu.log, "re-provisionings with new settings");

    // A board reset forgets it all; the first provisioning after it names
    // no other host either.
    qemu.reset().unwrap();
    wait_for(Duration::from_secs(10), "the dongle to boot again", || {
        qemu.boots() == 2
    })
    .unwrap();
    lines
        .write(0, &cluster.frame_from(&lonely).unwrap())
        .unwrap();
    wait_count("provisioned by host 1 on UART0", 2);
    check_ram(&image, &qemu.log, "re-provisionings and a board reset");
    eprintln!(
        "the dongle's whole log:\n  {}",
        qemu.log.lines().join("\n  ")
    );
    assert!(
        !qemu.log.lines().iter().any(|l| l.contains("panic")),
        "the dongle panicked"
    );
    assert_eq!(qemu.boots(), 2, "the dongle booted only when reset");
}

fn provisioning() -> ProvisionAs {
    ProvisionAs {
        cluster: CLUSTER,
        cluster_secret: SECRET.to_vec(),
        dongle: DONGLE,
    }
}

fn qemu_installed() -> bool {
    Command::new("qemu-system-arm")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok()
}

/// A looped cable: what one serial port writes comes back to it. Checked
/// on a pty looped through socat (always), and on a real port with a
/// loopback plug when `HEARTLINE_HW_LOOPBACK` names it.
#[test]
fn a_looped_line_returns_every_frame() {
    let baud = std::env::var("HEARTLINE_HW_BAUD")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(115_200);
    match std::env::var_os("HEARTLINE_HW_LOOPBACK") {
        Some(device) => {
            let run = check_loopback(Path::new(&device), baud, 500).unwrap();
            eprintln!("loopback, {}: {run}", device.to_string_lossy());
            assert_eq!(run.intact, run.sent, "every frame came back intact: {run}");
        }
        None => eprintln!(
            "SKIPPED: real-hardware loopback: set HEARTLINE_HW_LOOPBACK to a serial device with a loopback plug"
        ),
    }
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("looped");
    let Ok(socat) = Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", device.display()))
        .arg("exec:cat")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        eprintln!(
            "SKIPPED: socat is not installed (./test.sh installs it); the emulated loopback did not run"
        );
        return;
    };
    let _socat = Drain(socat);
    wait_for(Duration::from_secs(5), "socat's pty", || device.exists()).unwrap();
    let run = check_loopback(&device, baud, 500).unwrap();
    eprintln!("loopback, a pty looped through socat: {run}");
    assert_eq!(run.intact, run.sent, "every frame came back intact: {run}");
}

/// The same checks against a real board whose two serial ports are cabled
/// to `HEARTLINE_HW_PORT_A` and `HEARTLINE_HW_PORT_B` on this machine, running
/// the same image.
#[test]
fn a_real_board_passes_the_same_checks() {
    let (Some(a), Some(b)) = (
        std::env::var_os("HEARTLINE_HW_PORT_A"),
        std::env::var_os("HEARTLINE_HW_PORT_B"),
    ) else {
        eprintln!(
            "SKIPPED: real-hardware mode: set HEARTLINE_HW_PORT_A and HEARTLINE_HW_PORT_B to the serial devices cabled to the board"
        );
        return;
    };
    let Some(binary) = heartline_binary() else {
        eprintln!(
            "SKIPPED: the heartline binary is not built (cargo build -p heartline); the hardware test did not run"
        );
        return;
    };
    let ports = [PathBuf::from(a), PathBuf::from(b)];
    let dir = tempfile::tempdir().unwrap();
    drop(check_dongle(dir.path(), &binary, &ports, None));
    let runs = measure_relay(&ports, 115_200, &provisioning(), &[(1_000, Feed::AtOnce)]).unwrap();
    for run in runs {
        eprintln!("relay, real board at 115200 baud: {run}");
        assert_eq!(run.intact, run.sent, "every frame relayed intact: {run}");
    }
}

/// Two hosts on the dongle's two ports: they provision it, the dongle is a
/// node to both, the path through it carries heartbeats and mailboxes and
/// keeps the hosts up without their TCP path, and a dead host trips the
/// watchdog. `dongle_log`: the emulated dongle's log, whose ports are QEMU
/// ptys that must be drained while a host is down.
fn check_dongle(
    dir: &Path,
    binary: &Path,
    ports: &[PathBuf; 2],
    dongle_log: Option<&DongleLog>,
) -> [Host; 2] {
    let emulated = dongle_log.is_some();
    let listen = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let tcp = Relay::start(listen).unwrap();
    let [mut a, mut b] = setup(dir, binary, ports, listen, &tcp, &Role::Relay);
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
    let report = dongle.dongle.unwrap();
    assert_eq!(report.roles, ["relay", "watchdog"]);
    assert_eq!(report.hosts, [2, 1]);
    assert_eq!(report.watchdog_ms, Some(2_000));
    assert_eq!(report.reset_pulse_ms, Some(200));
    assert!(report.tripped.is_empty());
    let to_dongle = Request::Send {
        node: DONGLE,
        mailbox: 1,
        payload: b"hello dongle".to_vec(),
        timeout_ms: 1_000,
    };
    match ask_blocking(&a.socket, to_dongle).unwrap() {
        Response::Error { message, .. } => assert!(message.contains("no mailboxes"), "{message}"),
        other => panic!("a message to the dongle was not refused: {other:?}"),
    }
    if let Some(log) = dongle_log {
        let (_, line) = log
            .wait_for("provisioned by host", Duration::from_secs(1))
            .unwrap();
        eprintln!("dongle: {line}");
        assert!(
            line.contains(&format!("node {DONGLE} of cluster {CLUSTER}")),
            "{line}"
        );
    }

    // Host A - dongle - host B is a path of its own.
    wait_for(
        Duration::from_secs(10),
        "the serial path through the dongle up at both hosts",
        || a.path(2, 1) == "up" && b.path(1, 1) == "up",
    )
    .unwrap();
    tcp.block();
    wait_for(
        Duration::from_secs(5),
        "the TCP path down at both hosts",
        || a.path(2, 0) == "down" && b.path(1, 0) == "down",
    )
    .unwrap();
    assert!(
        a.sees(2, "up") && b.sees(1, "up"),
        "the hosts stay up through the dongle"
    );
    let request = Request::Send {
        node: 2,
        mailbox: 8,
        payload: b"through the dongle".to_vec(),
        timeout_ms: 10_000,
    };
    assert_eq!(
        ask_blocking(&a.socket, request).unwrap(),
        Response::Delivered
    );
    match ask_blocking(
        &b.socket,
        Request::Receive {
            mailbox: 8,
            timeout_ms: 5_000,
        },
    )
    .unwrap()
    {
        Response::Message {
            from: 1, payload, ..
        } => assert_eq!(payload, b"through the dongle"),
        other => panic!("{other:?}"),
    }
    tcp.restore();

    let killed = std::time::Instant::now();
    a.kill();
    // A real RS-232 line never pushes back on the dongle when its host dies;
    // QEMU's pty does once nobody reads it, so something must read it.
    let drain = emulated.then(|| Drain::start(&ports[0]));
    b.wait_log(
        "node 100 reports its watchdog tripped on node 1",
        Duration::from_secs(10),
    );
    eprintln!(
        "host A killed; {:?} later host B had logged the dongle's report",
        killed.elapsed()
    );
    if let Some(log) = dongle_log {
        let (tripped_at, line) = log
            .wait_for("watchdog tripped for host 1", Duration::from_secs(1))
            .unwrap();
        // Host A's last heartbeat left at most one interval (100 ms) before
        // the kill.
        eprintln!(
            "dongle: {line}; logged {:?} after the kill (watchdog 2 s)",
            tripped_at.duration_since(killed)
        );
        let (asserted_at, _) = log
            .wait_for(
                "reset output of the host on UART0 asserted",
                Duration::from_secs(1),
            )
            .unwrap();
        let (released_at, _) = log
            .wait_for(
                "reset output of the host on UART0 released",
                Duration::from_secs(2),
            )
            .unwrap();
        eprintln!(
            "dongle: reset output of host A held {:?} (pulse 200 ms)",
            released_at.duration_since(asserted_at)
        );
    }
    assert!(b.sees(1, "down"), "host B also sees host A down");
    let tripped = b
        .status()
        .and_then(|s| s.peers.into_iter().find(|p| p.node == DONGLE))
        .and_then(|p| p.dongle)
        .map(|d| d.tripped)
        .unwrap_or_default();
    assert_eq!(tripped, [1], "host B's status shows the trip");

    drop(drain);
    a.start();
    b.wait_log(
        "node 100 reports its watchdog re-armed on node 1",
        Duration::from_secs(20),
    );
    if let Some(log) = dongle_log {
        log.wait_for("watchdog re-armed: host 1", Duration::from_secs(1))
            .unwrap();
    }
    [a, b]
}

/// The dongle's RAM at its peak over `run`: its statics (from the image)
/// and the deepest its stack went (from its log), checked against the
/// budget and the headroom it must leave. Waits first for the dongle's
/// next stack check (once a second), so the run's last steps are counted.
fn check_ram(image: &Path, log: &DongleLog, run: &str) {
    std::thread::sleep(Duration::from_millis(1_500));
    let (bss, data) = static_ram(image).unwrap();
    let stack = peak_stack(log);
    let total = bss + data + stack;
    eprintln!(
        "dongle RAM over {run}: .bss {bss} + .data {data} + peak stack {stack} = {total} bytes of {RAM_BUDGET}, {} free",
        RAM_BUDGET.saturating_sub(total)
    );
    assert!(stack > 0, "the dongle logged no stack high-water mark");
    assert!(
        total + RAM_HEADROOM <= RAM_BUDGET,
        "the dongle's RAM over {run}, {total} bytes, leaves less than {RAM_HEADROOM} of {RAM_BUDGET} free; its log:\n  {}",
        log.lines().join("\n  ")
    );
}

/// The dongle's stack high-water mark, from its log.
fn peak_stack(log: &DongleLog) -> usize {
    log.lines()
        .iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once("stack high-water mark ")?;
            rest.split_whitespace().next()?.parse::<usize>().ok()
        })
        .max()
        .unwrap_or_default()
}

/// Runs the CLI against `host`; its output, which must be a success.
fn cli(binary: &Path, host: &Host, args: &[&str]) -> String {
    let out = Command::new(binary)
        .arg("--socket")
        .arg(&host.socket)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "heartline {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Moves web to host 2 through `host`, asking again while the coordinator
/// has not yet heard that host 2 (just back) holds quorum.
fn switchover_to_2(binary: &Path, host: &Host) {
    let mut last = String::new();
    let moved = wait_for(Duration::from_secs(10), "a switchover to host 2", || {
        let out = Command::new(binary)
            .arg("--socket")
            .arg(&host.socket)
            .args(["switchover", "web", "--to", "2"])
            .output()
            .unwrap();
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        out.status.success()
    });
    if let Err(e) = moved {
        panic!("{e}: {last}\n{}", host.log());
    }
}

/// Whether `host`'s brain holds quorum, and counts the dongle's vote.
fn quorum(host: &Host) -> Option<(bool, Option<bool>)> {
    match ask_blocking(&host.socket, Request::Resources) {
        Ok(Response::Resources(report)) => report.quorum.map(|q| (q.quorate, q.witness)),
        _ => None,
    }
}

/// A serial cable between a host and one of the dongle's ports that the
/// test can pull out and plug back: socat between QEMU's pty and a pty of
/// its own at `link`, which the host's configuration names. Cut, the
/// dongle's port is drained, as a dead host's cable would be.
struct Cable {
    link: PathBuf,
    port: PathBuf,
    socat: Option<Child>,
    drain: Option<Drain>,
}

impl Cable {
    fn connect(link: PathBuf, port: PathBuf) -> Cable {
        let mut cable = Cable {
            link,
            port,
            socat: None,
            drain: None,
        };
        cable.mend();
        cable
    }

    fn mend(&mut self) {
        self.drain = None;
        let socat = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", self.link.display()))
            .arg(format!("{},raw,echo=0", self.port.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.socat = Some(socat);
        let link = self.link.clone();
        wait_for(Duration::from_secs(5), "socat's pty", || link.exists()).unwrap();
    }

    fn cut(&mut self) {
        if let Some(mut socat) = self.socat.take() {
            let _ = socat.kill();
            let _ = socat.wait();
        }
        self.drain = Some(Drain::start(&self.port));
    }
}

impl Drop for Cable {
    fn drop(&mut self) {
        if let Some(mut socat) = self.socat.take() {
            let _ = socat.kill();
            let _ = socat.wait();
        }
    }
}

/// Two hosts with the dongle as their quorum witness (and, with `fence`,
/// their fence device), host 2 on its port through a [`Cable`], the TCP
/// path between them through a relay, web's instances on both and in
/// service on host 1.
struct WitnessPair {
    hosts: [Host; 2],
    apps: Vec<heartline::demo::sample_app::SampleApp>,
    cable: Cable,
    tcp: Relay,
    binary: PathBuf,
    image: PathBuf,
    qemu: Qemu,
    _dir: tempfile::TempDir,
}

impl WitnessPair {
    /// `None` (and says why) without the firmware image, QEMU, socat or the
    /// heartline binary.
    fn start(fence: bool) -> Option<WitnessPair> {
        use heartline::demo::sample_app::{SampleApp, copy_kit};
        let image = firmware_image();
        let Some(binary) = heartline_binary() else {
            eprintln!("SKIPPED: the heartline binary is not built (cargo build -p heartline)");
            return None;
        };
        let socat = Command::new("socat").arg("-V").output().is_ok();
        if !image.exists() || !qemu_installed() || !socat {
            eprintln!(
                "SKIPPED: needs the firmware image ({}), qemu-system-arm and socat (./test.sh provides them)",
                image.display()
            );
            return None;
        }
        let qemu = Qemu::start(&image).unwrap();
        qemu.log
            .wait_for(BOOT_LINE, Duration::from_secs(10))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kits = dir.path().join("kits");
        copy_kit(
            &kits,
            "gen/app",
            "description = \"Generic Application, checked often\"\nquick_check_interval = \"200ms\"\n",
        )
        .unwrap();
        let listen = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let tcp = Relay::start(listen).unwrap();
        let cable = Cable::connect(dir.path().join("host2-line"), qemu.ports[1].clone());
        let ports = [qemu.ports[0].clone(), cable.link.clone()];
        let mut hosts = setup(
            dir.path(),
            &binary,
            &ports,
            listen,
            &tcp,
            &Role::Witness { kits, fence },
        );
        hosts[0].start();
        hosts[1].start();
        let events = dir.path().join("events");
        let apps: Vec<SampleApp> = [1u16, 2]
            .iter()
            .map(|&n| SampleApp::write(dir.path(), n, "web", &events, "exec sleep 100000").unwrap())
            .collect();
        let pair = WitnessPair {
            hosts,
            apps,
            cable,
            tcp,
            binary,
            image,
            qemu,
            _dir: dir,
        };
        pair.wait_quorate();
        for app in &pair.apps {
            let args = app.create_args(app.node);
            pair.cli(0, &args.iter().map(String::as_str).collect::<Vec<_>>());
        }
        pair.cli(
            0,
            &[
                "eqv",
                "create",
                "--tag",
                "web",
                "--other-node",
                "2",
                "--other-tag",
                "web",
            ],
        );
        pair.cli(0, &["in-service", "web"]);
        wait_for(Duration::from_secs(10), "web on host 1", || {
            pair.running() == [1]
        })
        .unwrap();
        Some(pair)
    }

    fn cli(&self, host: usize, args: &[&str]) -> String {
        cli(&self.binary, &self.hosts[host], args)
    }

    /// The hosts web runs on.
    fn running(&self) -> Vec<u16> {
        self.apps
            .iter()
            .filter(|a| a.running())
            .map(|a| a.node)
            .collect()
    }

    /// Times the dongle asserted the reset line of the host on `port`.
    fn resets_seen(&self, port: usize) -> usize {
        self.qemu
            .log
            .lines()
            .iter()
            .filter(|l| l.contains(&format!("reset output of the host on UART{port} asserted")))
            .count()
    }

    /// The dongle's log, for a failure's message.
    fn dongle_log(&self) -> String {
        self.qemu.log.timed_lines().join("\n  ")
    }

    /// Waits until both hosts see each other and hold quorum with the
    /// dongle's vote.
    fn wait_quorate(&self) {
        let ready = wait_for(
            Duration::from_secs(20),
            "both hosts up, quorate, counting the dongle's vote",
            || {
                self.hosts[0].sees(2, "up")
                    && self.hosts[1].sees(1, "up")
                    && self
                        .hosts
                        .iter()
                        .all(|h| quorum(h) == Some((true, Some(true))))
            },
        );
        if let Err(e) = ready {
            panic!(
                "{e}: {:?} {:?}\nhost 1:\n{}\nhost 2:\n{}\nthe dongle's log:\n  {}",
                quorum(&self.hosts[0]),
                quorum(&self.hosts[1]),
                self.hosts[0].log(),
                self.hosts[1].log(),
                self.dongle_log()
            );
        }
    }

    /// Host 2's machine back (booted again: its daemon started) after a
    /// fault was repaired: both quorate, web still on host 1 only.
    fn heal(&mut self) {
        self.hosts[1].start();
        self.wait_quorate();
        assert_eq!(self.running(), [1]);
    }

    /// Web moved to host 2, then `fault`: samples every 2 ms until web runs
    /// on host 1, never on both; when the dongle pulses host 2's reset line
    /// the harness, as the reset wiring, ends host 2's machine (its daemon
    /// and web). When (after the fault) host 2 was reset, and when host 1
    /// ran web.
    fn fail_over_from_host_2(
        &mut self,
        fault: impl FnOnce(&mut WitnessPair),
    ) -> (Option<Duration>, Duration) {
        switchover_to_2(&self.binary, &self.hosts[0]);
        wait_for(Duration::from_secs(10), "web on host 2", || {
            self.running() == [2]
        })
        .unwrap();
        let before = self.resets_seen(1);
        fault(self);
        let at = std::time::Instant::now();
        let mut reset = None;
        loop {
            let now = self.running();
            assert!(
                now.len() <= 1,
                "web on both hosts {:?} after the fault\nhost 1:\n{}\nhost 2:\n{}\nthe dongle's log:\n  {}",
                at.elapsed(),
                self.hosts[0].log(),
                self.hosts[1].log(),
                self.dongle_log()
            );
            if reset.is_none() && self.resets_seen(1) > before {
                reset = Some(at.elapsed());
                self.hosts[1].kill();
                self.apps[1].kill();
            }
            if now == [1] {
                return (reset, at.elapsed());
            }
            assert!(
                at.elapsed() < Duration::from_secs(20),
                "web not on host 1 {:?} after the fault\nhost 1:\n{}\nhost 2:\n{}\nthe dongle's log:\n  {}",
                at.elapsed(),
                self.hosts[0].log(),
                self.hosts[1].log(),
                self.dongle_log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[test]
fn the_dongle_is_the_witness_a_cut_between_its_hosts_leaves_one_side_running() {
    let Some(mut pair) = WitnessPair::start(true) else {
        return;
    };
    let (hosts, apps, tcp, qemu) = (&mut pair.hosts, &pair.apps, &pair.tcp, &pair.qemu);
    let running = |apps: &[heartline::demo::sample_app::SampleApp]| -> Vec<u16> {
        apps.iter()
            .filter(|a| a.running())
            .map(|a| a.node)
            .collect()
    };
    let binary = pair.binary.clone();
    let image = pair.image.clone();

    // The harness is the reset wiring: when the dongle asserts a host's
    // reset line, that host's machine (its daemon and application) dies.
    let resets_seen = |port: usize| {
        qemu.log
            .lines()
            .iter()
            .filter(|l| l.contains(&format!("reset output of the host on UART{port} asserted")))
            .count()
    };

    // The hosts' network is cut; both still reach the dongle. Host 1 (the
    // lower id) gets the dongle's vote and keeps web; host 2 never starts
    // it, and host 1 has the dongle reset it. Sampled every 2 ms.
    let before = resets_seen(1);
    tcp.block();
    let cut = std::time::Instant::now();
    let mut split = None;
    let mut reset = None;
    while cut.elapsed() < Duration::from_secs(10) {
        let now = running(apps);
        assert!(
            now.len() <= 1,
            "web on both hosts {:?} after the cut",
            cut.elapsed()
        );
        assert_eq!(
            now,
            [1],
            "web left host 1 {:?} after the cut\n{}",
            cut.elapsed(),
            hosts[0].log()
        );
        if split.is_none()
            && quorum(&hosts[0]) == Some((true, Some(true)))
            && quorum(&hosts[1]).is_none_or(|q| !q.0)
        {
            split = Some(cut.elapsed());
        }
        if reset.is_none() && resets_seen(1) > before {
            reset = Some(cut.elapsed());
            hosts[1].kill();
            apps[1].kill();
        }
        if split.is_some() && reset.is_some() && cut.elapsed() > Duration::from_secs(4) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (Some(split), Some(reset)) = (split, reset) else {
        panic!(
            "split {split:?}, reset {reset:?}: host 1 {:?}, host 2 {:?}\n{}\nthe dongle's log:\n  {}",
            quorum(&hosts[0]),
            quorum(&hosts[1]),
            hosts[0].log(),
            qemu.log.lines().join("\n  ")
        );
    };
    eprintln!(
        "dongle witness: cut between the hosts; host 1 quorate with the dongle's vote, host 2 without quorum {split:?} after, reset by the dongle at host 1's request {reset:?} after; web stayed on host 1"
    );
    hosts[0].wait_log(
        "node 2 FENCED: dongle-2 (level 1) confirmed",
        Duration::from_secs(2),
    );

    // Healed, host 2 booted again: both quorate, web where it was.
    tcp.restore();
    hosts[1].start();
    wait_for(Duration::from_secs(20), "both quorate again", || {
        hosts.iter().all(|h| quorum(h) == Some((true, Some(true))))
    })
    .unwrap();
    assert_eq!(running(apps), [1]);

    // Web on host 2, the network cut again: host 1 gets the vote, has the
    // dongle reset host 2, and once the dongle confirmed (at its pulse's
    // end) runs web, before host 2's lease (3 s) would have ended.
    switchover_to_2(&binary, &hosts[0]);
    wait_for(Duration::from_secs(10), "web on host 2", || {
        running(apps) == [2]
    })
    .unwrap();
    let before = resets_seen(1);
    tcp.block();
    let cut = std::time::Instant::now();
    let mut reset = None;
    let taken = loop {
        let now = running(apps);
        assert!(
            now.len() <= 1,
            "web on both hosts {:?} after the cut",
            cut.elapsed()
        );
        if reset.is_none() && resets_seen(1) > before {
            reset = Some(cut.elapsed());
            hosts[1].kill();
            apps[1].kill();
        }
        if now == [1] {
            break cut.elapsed();
        }
        assert!(
            cut.elapsed() < Duration::from_secs(15),
            "web not back on host 1\n{}\nthe dongle's log:\n  {}",
            hosts[0].log(),
            qemu.log.lines().join("\n  ")
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    eprintln!(
        "dongle fence: cut with web on host 2; the dongle's reset line for host 2 {reset:?} after the cut, host 1 ran web {taken:?} after (lease 3 s)"
    );
    assert!(reset.is_some(), "the dongle never reset host 2");
    assert!(
        taken < Duration::from_millis(2_900),
        "taken over only at host 2's lease end: {taken:?}"
    );
    tcp.restore();
    hosts[1].start();
    wait_for(Duration::from_secs(20), "both quorate again", || {
        hosts.iter().all(|h| quorum(h) == Some((true, Some(true))))
    })
    .unwrap();
    assert_eq!(running(apps), [1]);

    // Host 1's machine dies: its daemon and application, so its serial
    // line and its network fall silent. Host 2 gets the vote once host 1's
    // grant ran out, and runs web.
    hosts[0].kill();
    apps[0].kill();
    let lost = std::time::Instant::now();
    let _drain = Drain::start(&qemu.ports[0]);
    wait_for(Duration::from_secs(20), "web on host 2", || {
        running(apps) == [2]
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: host 2 {:?}\n{}\nthe dongle's log:\n  {}",
            quorum(&hosts[1]),
            hosts[1].log(),
            qemu.log.lines().join("\n  ")
        )
    });
    eprintln!(
        "dongle witness: host 1 lost, host 2 ran web {:?} later (lease 3 s)",
        lost.elapsed()
    );
    assert_eq!(quorum(&hosts[1]), Some((true, Some(true))));
    let holders: Vec<String> = qemu
        .log
        .lines()
        .into_iter()
        .filter(|l| l.contains("witness vote held by hosts"))
        .collect();
    eprintln!("the dongle's vote: {holders:?}");
    check_ram(&image, &qemu.log, "the witness run");
    assert!(holders.len() >= 3, "{holders:?}");
    assert!(
        !qemu.log.lines().iter().any(|l| l.contains("panic")),
        "the dongle panicked"
    );
}

/// No fence device: the dongle's watchdog is each host's self-fence (no
/// watchdog device here). Host 2's stop hangs when a cut costs it quorum:
/// its daemon stops sending the dongle frames once one could keep it alive
/// past its lease, and the dongle resets it before host 1 takes over.
/// Host 2 cut off from everything (serial line and network): the dongle
/// resets it and host 1 runs web. Host 2's daemon stalled (SIGSTOP) with web
/// running: the same.
#[test]
fn the_dongle_is_the_self_fence_of_a_host_that_cannot_stop_or_is_cut_off() {
    let Some(mut pair) = WitnessPair::start(false) else {
        return;
    };

    // 1. Host 2's stop hangs; the network is cut.
    let stop = pair.apps[1].stop.clone();
    let original = std::fs::read_to_string(&stop).unwrap();
    let (reset, taken) = pair.fail_over_from_host_2(|pair| {
        std::fs::write(&stop, "#!/bin/sh\nexec sleep 100000\n").unwrap();
        pair.tcp.block();
    });
    let log = pair.hosts[1].log();
    assert!(log.contains("SELF-FENCE"), "{log}");
    let reset = reset.unwrap_or_else(|| panic!("the dongle never reset host 2\n{log}"));
    assert!(reset < taken, "reset {reset:?}, taken {taken:?}");
    eprintln!(
        "dongle self-fence: host 2's stop hung after a cut; its daemon starved the dongle, which reset it {reset:?} after the cut; host 1 ran web {taken:?} after (lease 3 s)"
    );
    std::fs::write(&stop, original).unwrap();
    pair.tcp.restore();
    pair.heal();

    // 2. Host 2 cut off from everything: its serial line and the network.
    let (reset, taken) = pair.fail_over_from_host_2(|pair| {
        pair.cable.cut();
        pair.tcp.block();
    });
    let reset = reset.unwrap_or_else(|| panic!("the dongle never reset host 2"));
    eprintln!(
        "dongle: host 2's serial line and network cut; the dongle reset it {reset:?} after, host 1 ran web {taken:?} after (lease 3 s)"
    );
    pair.cable.mend();
    pair.tcp.restore();
    pair.heal();

    // 3. Host 2's daemon stalls with web running.
    let (reset, taken) = pair.fail_over_from_host_2(|pair| {
        let pid = pair.hosts[1].child.as_ref().unwrap().id();
        Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .unwrap();
    });
    let reset = reset.unwrap_or_else(|| panic!("the dongle never reset host 2"));
    assert!(reset < taken, "reset {reset:?}, taken {taken:?}");
    eprintln!(
        "dongle: host 2's daemon stopped (SIGSTOP) with web running; the dongle reset it {reset:?} after, host 1 ran web {taken:?} after (lease 3 s)"
    );
    check_ram(&pair.image, &pair.qemu.log, "the self-fence run");
}
