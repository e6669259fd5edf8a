//! A real watchdog reset, in a virtual machine: QEMU boots Debian's kernel
//! with an initramfs holding busybox, this heartline binary, the Generic
//! Application kit and the kernel's `softdog` as `/dev/watchdog0` (1 s),
//! the watchdog sbd uses on machines without a hardware one. Node 1 runs
//! there with quorum on and `[quorum] watchdog = "/dev/watchdog0"`; the
//! guest's `/init` plays a scenario and prints `HL <step> <uptime>` lines;
//! QEMU runs with `-no-reboot`, so the reset ends it, and the kernel says
//! why (`softdog: Initiating system reboot`).
//!
//! - One node: an application in service lives through three of the
//!   device's timeouts (the daemon feeds it); out of service, the daemon
//!   killed with SIGKILL changes nothing (it disarmed the device: `V`, then
//!   close); in service again, the daemon killed with SIGKILL while the
//!   application runs: the machine is reset (the issue's "daemon death with
//!   applications running").
//! - Three nodes, nodes 2 and 3 stopped with SIGSTOP: node 1 loses quorum,
//!   its stop hangs past its lease's end, its feeds stop, and its daemon is
//!   killed then. The machine is reset by the lease's end, measured from
//!   the cut: a daemon that died holding the device would have had the
//!   kernel ping it once more as it closed (`watchdog did not stop!`), a
//!   timeout past the kill; near the deadline the daemon holds it no more.
//!
//! The test machine itself is never at risk: the watchdog is the guest's.
//! QEMU emulates the machine in software (TCG).

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_heartline");

/// Where test.sh puts the kernel and its two modules.
fn vm_dir() -> PathBuf {
    std::env::var_os("HEARTLINE_VM_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/vm"),
        PathBuf::from,
    )
}

/// What the test needs from the machine, or what is missing.
fn prerequisites() -> Result<PathBuf, String> {
    let dir = vm_dir();
    for file in ["vmlinuz", "watchdog.ko", "softdog.ko"] {
        if !dir.join(file).is_file() {
            return Err(format!(
                "{} is missing (test.sh fetches Debian's linux-image-cloud-amd64 there)",
                dir.join(file).display()
            ));
        }
    }
    for program in ["qemu-system-x86_64", "cpio", "strip", "ldd"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!("{program} is not installed"));
        }
    }
    if !Path::new("/bin/busybox").is_file() {
        return Err("/bin/busybox is not installed (busybox-static)".into());
    }
    Ok(dir)
}

/// The start of every guest's `/init`: every line it prints for the test
/// starts with `HL ` and ends with the guest's uptime in seconds.
const PRELUDE: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin HEARTLINE_SOCKET=/run/n1.sock
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp /var/log
ip link set lo up
LOG=/var/log/n1.log
say() { echo "HL $* $(cut -d' ' -f1 /proc/uptime)"; }
fail() { say "FAIL $*"; for f in /var/log/*.log; do echo "--- $f:"; cat $f; done; poweroff -f; sleep 60; }
# Runs a command until it succeeds, at most $1 tenths of a second.
until_ok() {
  n=$1; shift
  while ! "$@" >/dev/null 2>&1; do
    n=$((n - 1)); [ $n -le 0 ] && return 1; sleep 0.1
  done
}
quorate() { heartline status | grep -q "quorum: yes"; }
running() { [ -s /run/app.pid ] && kill -0 "$(cat /run/app.pid)"; }
armed() { [ "$(grep -c 'watchdog armed' $LOG)" -ge "$1" ]; }
logged() { grep -q "$1" $LOG; }
# Starts node $1's daemon; its pid in D$1.
daemon() {
  mkdir -p -m 700 /var/lib/n$1
  heartline daemon --config /etc/heartline/n$1.toml >>/var/log/n$1.log 2>&1 &
  eval D$1=$!
}
create_web() {
  heartline ins create --node 1 --priority 1 --tag web --id /srv/web --app gen --type app \
    --prop start=/srv/start --prop stop=$1 --prop check=/srv/check || fail "ins create"
}
# Prints the guest's state every 0.1 s for 10 s: the reset should end it.
watch_for_reset() {
  i=0
  while [ $i -lt 100 ]; do
    if running; then say "ALIVE application-running"; else say "ALIVE application-gone"; fi
    sleep 0.1
    i=$((i + 1))
  done
  say NO-RESET
  poweroff -f
  sleep 60
}
insmod /lib/modules/watchdog.ko || fail "insmod watchdog"
insmod /lib/modules/softdog.ko soft_margin=1 || fail "insmod softdog"
say BOOTED
"#;

/// One node: an application in service, fed for three of the device's
/// timeouts; out of service and its daemon killed (disarmed, nothing
/// happens); in service again and its daemon killed: reset.
const KILLED: &str = r#"
daemon 1
until_ok 600 quorate || fail "no quorum"
create_web /srv/stop
heartline in-service web || fail "in-service"
until_ok 300 running || fail "the application does not run"
until_ok 300 armed 1 || fail "the watchdog was never armed"
say RUNNING
# Three of the device's timeouts: the machine lives only if it is fed.
sleep 3
running || fail "the application stopped by itself"
say FED
heartline out-of-service web || fail "out-of-service"
until_ok 300 logged "watchdog disarmed" || fail "the watchdog was never disarmed"
kill -9 $D1
say DISARMED-DAEMON-KILLED
sleep 3
say SURVIVED
daemon 1
until_ok 600 quorate || fail "no quorum after the restart"
heartline in-service web || fail "in-service again"
until_ok 300 running || fail "the application does not run again"
until_ok 300 armed 2 || fail "the watchdog was not armed again"
say KILL
kill -9 $D1
watch_for_reset
"#;

/// Three nodes: the application on node 1, whose stop hangs; nodes 2 and 3
/// stopped (SIGSTOP), so node 1 hears nobody. It loses quorum, its stop
/// hangs past its lease's end, its feeds stop, and its daemon is killed
/// then: the reset must still come by the lease's end, not a timeout after
/// the daemon's death.
const STARVED: &str = r#"
daemon 1; daemon 2; daemon 3
until_ok 900 quorate || fail "no quorum"
create_web /srv/hang
heartline in-service web || fail "in-service"
until_ok 300 running || fail "the application does not run"
until_ok 300 armed 1 || fail "the watchdog was never armed"
say RUNNING
kill -STOP $D2 $D3
say CUT
until_ok 100 logged "the watchdog is no longer fed" || fail "the watchdog was fed on"
say KILL
kill -9 $D1
watch_for_reset
"#;

/// The application: `sleep` in its own session, its pid in /run/app.pid.
const START: &str = "#!/bin/sh\nrm -f /run/app.pid\nsetsid sh -c 'echo $$ > /run/app.pid; exec sleep 100000' </dev/null >/dev/null 2>&1 &\nfor i in $(seq 1 100); do [ -s /run/app.pid ] && exit 0; sleep 0.01; done\nexit 1\n";
const STOP: &str = "#!/bin/sh\nif [ -s /run/app.pid ]; then\n  p=$(cat /run/app.pid)\n  kill $p 2>/dev/null\n  for i in $(seq 1 300); do kill -0 $p 2>/dev/null || break; sleep 0.01; done\n  kill -9 $p 2>/dev/null\nfi\nrm -f /run/app.pid\nexit 0\n";
const CHECK: &str = "#!/bin/sh\n[ -s /run/app.pid ] && kill -0 $(cat /run/app.pid) 2>/dev/null\n";

/// The lease of the three-node scenario: node 1 must be reset within it
/// of being cut off. Paths declare a peer down after 2 s of silence (250 ms
/// × 8): three daemons emulated in software, under a loaded test machine,
/// stall for longer than the default 0.5 s.
const LEASE_S: f64 = 5.0;

/// Node `node`'s configuration among `nodes` (one TCP path per pair on
/// loopback); node 1 feeds the softdog.
fn config(node: u16, nodes: u16) -> String {
    let mut text = format!(
        "[cluster]\nname = \"vm\"\nid = 9\nkey_file = \"/etc/heartline/cluster.key\"\n\n[node]\nid = {node}\nname = \"n{node}\"\ncontrol_socket = \"/run/n{node}.sock\"\nstate_dir = \"/var/lib/n{node}\"\n\n[resources]\nkits = [\"/usr/share/heartline/kits\"]\n\n[timing]\ninterval = \"250ms\"\nmisses = 8\n\n[quorum]\nenabled = true\nlease = \"{LEASE_S}s\"\nstop_bound = \"1s\"\n"
    );
    if node == 1 {
        text.push_str("watchdog = \"/dev/watchdog0\"\nwatchdog_timeout = \"1s\"\n");
    }
    for peer in (1..=nodes).filter(|p| *p != node) {
        let (a, b) = (node.min(peer), node.max(peer));
        text.push_str(&format!(
            "\n[[peers]]\nid = {peer}\nname = \"n{peer}\"\n  [[peers.paths]]\n  kind = \"tcp\"\n  local = \"127.0.0.1:74{a}{b}\"\n  remote = \"127.0.0.1:74{a}{b}\"\n"
        ));
    }
    text
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Copies a directory tree (the kit), keeping modes.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The initramfs tree: busybox, heartline (without its debug sections)
/// and the libraries it links, the kit, the application's scripts, the
/// configurations of `nodes` nodes, the modules and `/init` (the prelude,
/// then `scenario`); packed as a newc cpio archive.
fn initramfs(vm: &Path, dir: &Path, scenario: &str, nodes: u16) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    let status = Command::new("strip")
        .args(["--strip-debug", "-o"])
        .arg(root.join("usr/bin/heartline"))
        .arg(BIN)
        .status()
        .unwrap();
    assert!(status.success(), "strip failed");
    let ldd = Command::new("ldd").arg(BIN).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let Some(lib) = line
            .split_whitespace()
            .find(|word| word.starts_with('/'))
            .map(Path::new)
        else {
            continue;
        };
        let target = root.join(lib.strip_prefix("/").unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(lib, &target).unwrap();
    }
    std::fs::create_dir_all(root.join("lib/modules")).unwrap();
    for module in ["watchdog.ko", "softdog.ko"] {
        std::fs::copy(vm.join(module), root.join("lib/modules").join(module)).unwrap();
    }
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("kits/gen/app"),
        &root.join("usr/share/heartline/kits/gen/app"),
    );
    write(&root.join("init"), &format!("{PRELUDE}{scenario}"), 0o755);
    write(&root.join("srv/start"), START, 0o755);
    write(&root.join("srv/stop"), STOP, 0o755);
    write(
        &root.join("srv/hang"),
        "#!/bin/sh\nexec sleep 100000\n",
        0o755,
    );
    write(&root.join("srv/check"), CHECK, 0o755);
    for node in 1..=nodes {
        write(
            &root.join(format!("etc/heartline/n{node}.toml")),
            &config(node, nodes),
            0o644,
        );
    }
    heartline::config::write_new_key(&root.join("etc/heartline/cluster.key")).unwrap();
    for sub in ["proc", "sys", "dev", "run", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    // Nobody but root may change what the daemon runs.
    let status = Command::new("chmod")
        .args(["-R", "go-w"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    let archive = dir.join("initramfs.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | cpio -o -H newc --owner 0:0 --quiet > \"$0\"")
        .arg(&archive)
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(status.success(), "cpio failed");
    archive
}

/// The kernel's timestamp of a console line (`[   12.345678] ...`), in
/// seconds since boot.
fn kernel_time(line: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix('[')?;
    rest.split(']').next()?.trim().parse().ok()
}

/// The uptime a `HL ...` line ends with.
fn guest_time(line: &str) -> Option<f64> {
    line.split_whitespace().last()?.parse().ok()
}

/// What the guest printed on its console, once QEMU exited (the guest
/// reset: `-no-reboot`) or was killed at the deadline; `None` if the test
/// cannot run here (and may skip: not in CI).
fn boot(scenario: &str, nodes: u16) -> Option<Console> {
    // One virtual machine at a time: emulated in software, each wants a core.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let vm = match prerequisites() {
        Ok(vm) => vm,
        Err(missing) => {
            eprintln!("SKIPPED: {missing}");
            assert!(
                std::env::var_os("CI").is_none(),
                "the watchdog VM tests must run in CI: {missing}"
            );
            return None;
        }
    };
    let _one = ONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let archive = initramfs(&vm, dir.path(), scenario, nodes);
    let mut qemu = Command::new("qemu-system-x86_64");
    // Software emulation: the same on every machine (nested KVM, where
    // /dev/kvm exists at all, was seen to hang at boot).
    qemu.args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "1"])
        .args([
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(vm.join("vmlinuz"))
        .arg("-initrd")
        .arg(&archive)
        .args([
            "-append",
            "console=ttyS0 quiet printk.time=1 panic=-1 rdinit=/init",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = qemu.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for text in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(text).is_err() {
                return;
            }
        }
    });
    // Software emulation boots in a few seconds; each scenario takes less
    // than 30 s after that.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut lines: Vec<String> = Vec::new();
    let mut exited = false;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => lines.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                exited = true;
                break;
            }
        }
    }
    if !exited {
        let _ = child.kill();
    }
    let _ = child.wait();
    let console = Console { lines };
    assert!(
        exited,
        "the virtual machine did not end within 300 s:\n{}",
        console.text()
    );
    if std::env::var_os("HEARTLINE_VM_CONSOLE").is_some() {
        eprintln!("{}", console.text());
    }
    Some(console)
}

/// The guest's console.
struct Console {
    lines: Vec<String>,
}

/// The softdog's line as it resets the machine.
const RESET: &str = "softdog: Initiating system reboot";

impl Console {
    fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The first line containing `needle`.
    fn find(&self, needle: &str) -> Option<usize> {
        self.lines.iter().position(|l| l.contains(needle))
    }

    /// The line of each step, which must come in this order; the guest
    /// never failed, nor lived on unreset.
    fn steps(&self, order: &[&str]) -> Vec<usize> {
        let text = self.text();
        assert!(self.find("HL FAIL").is_none(), "the guest failed:\n{text}");
        assert!(self.find("HL NO-RESET").is_none(), "no reset:\n{text}");
        assert!(self.find("Kernel panic").is_none(), "{text}");
        let mut last = 0;
        order
            .iter()
            .map(|step| {
                let at = self
                    .find(step)
                    .unwrap_or_else(|| panic!("no {step:?} in:\n{text}"));
                assert!(at >= last, "{step:?} out of order in:\n{text}");
                last = at;
                at
            })
            .collect()
    }

    /// The application ran until the reset: the last line the guest
    /// printed between `from` and the reset says so.
    fn ran_until(&self, from: usize, reset: usize) {
        if let Some(alive) = self.lines[from..reset]
            .iter()
            .rev()
            .find(|l| l.starts_with("HL ALIVE"))
        {
            assert!(
                alive.contains("application-running"),
                "the application had stopped before the reset:\n{}",
                self.text()
            );
        }
    }
}

#[test]
fn a_daemon_killed_with_its_application_running_is_reset_by_a_real_watchdog() {
    let Some(console) = boot(KILLED, 1) else {
        return;
    };
    let text = console.text();
    let at = console.steps(&[
        "HL RUNNING",
        "HL FED",
        "HL DISARMED-DAEMON-KILLED",
        "HL SURVIVED",
        "HL KILL",
        RESET,
    ]);
    let (kill, reset) = (at[4], at[5]);
    console.ran_until(kill, reset);
    let killed_at = guest_time(&console.lines[kill]).unwrap();
    let reset_at = kernel_time(&console.lines[reset]).unwrap();
    eprintln!(
        "killed with its application running: the watchdog reset the machine {:.0} ms after the daemon was killed (device timeout 1 s; the kernel pings it once as the dying daemon's descriptor closes)",
        (reset_at - killed_at) * 1_000.0
    );
    assert!(reset_at > killed_at, "{text}");
}

#[test]
fn a_node_whose_stop_hangs_past_its_lease_is_reset_by_then_even_if_its_daemon_dies() {
    let Some(console) = boot(STARVED, 3) else {
        return;
    };
    let text = console.text();
    let at = console.steps(&["HL RUNNING", "HL CUT", "HL KILL", RESET]);
    let (cut, kill, reset) = (at[1], at[2], at[3]);
    console.ran_until(kill, reset);
    let cut_at = guest_time(&console.lines[cut]).unwrap();
    let killed_at = guest_time(&console.lines[kill]).unwrap();
    let reset_at = kernel_time(&console.lines[reset]).unwrap();
    // Near its lease's end the daemon no longer holds the device: its
    // death closes nothing, so the kernel does not ping it (it would say
    // `watchdog did not stop!`) and the reset stays where the last feed
    // put it, less than a timeout after the kill.
    assert!(
        !console.lines[kill..reset]
            .iter()
            .any(|l| l.contains("did not stop")),
        "the daemon's death pinged the watchdog:\n{text}"
    );
    assert!(
        reset_at < killed_at + 1.0,
        "reset {reset_at} s, a timeout or more after the kill at {killed_at} s:\n{text}"
    );
    // Its lease began before the cut: the reset came by its end.
    assert!(
        reset_at <= cut_at + LEASE_S,
        "reset {reset_at} s, after the lease from the cut at {cut_at} s:\n{text}"
    );
    eprintln!(
        "a stop hanging past the lease: reset {:.0} ms after the cut (lease {LEASE_S} s), {:.0} ms after the daemon was killed",
        (reset_at - cut_at) * 1_000.0,
        (reset_at - killed_at) * 1_000.0
    );
}
