//! Fencing on real daemons: the coordinator of the quorate partition runs
//! the lost node's `[[fence]]` devices, ClusterLabs fence agents reading
//! `key=value` lines on their standard input. A confirmed fence lets the
//! survivors take over long before the lost node's lease ends; an agent
//! that is missing, fails or hangs is reported, retried and escalated, and
//! never taken for a fence: the hierarchy waits for the lease. Against a
//! real BMC protocol: `fence_ipmilan` (Debian's fence-agents) powers off a
//! machine simulated by OpenIPMI's `ipmi_sim`, whose power-off kills the
//! lost node's application, and the takeover comes only after it.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Site, WEB, hierarchy, running_on};
use heartline::demo::local_cluster::wait_for;

/// A 6 s lease (stops bounded by 1 s), so that a takeover well before it
/// can only come from a fence; paths declare a peer down after 0.5 s.
const QUORUM: &str = "\n[quorum]\nenabled = true\nlease = \"6s\"\nstop_bound = \"1s\"\n\n[fencing]\nretry_delay = \"300ms\"\n";

fn quorate(site: &Site, node: u16) -> Option<bool> {
    site.report(node).and_then(|r| r.quorum).map(|q| q.quorate)
}

fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// Three quorate nodes running web on node 1, with `fence` sections.
fn site_with(fence: &str) -> (Site, Vec<heartline::demo::sample_app::SampleApp>) {
    let site = Site::start_with(3, &format!("{QUORUM}{fence}"));
    let nodes = [1, 2, 3];
    wait_for(Duration::from_secs(10), "quorum on every node", || {
        nodes.iter().all(|&n| quorate(&site, n) == Some(true))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    let apps = hierarchy(&site, &nodes, None);
    site.ok(1, &["in-service", WEB]);
    wait_for(Duration::from_secs(10), "web on node 1", || {
        running_on(&apps, &nodes) == [1]
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    (site, apps)
}

/// Samples where web runs every 2 ms until it runs on a node other than
/// 1: never on two at once. How long after `from` that was.
fn watch_takeover(
    site: &Site,
    apps: &[heartline::demo::sample_app::SampleApp],
    from: Instant,
    limit: Duration,
) -> Duration {
    let nodes = [1, 2, 3];
    loop {
        let running = running_on(apps, &nodes);
        assert!(
            running.len() <= 1,
            "web runs on {running:?} at once, {:?} after the loss\n{}",
            from.elapsed(),
            site.logs()
        );
        if running.len() == 1 && running[0] != 1 {
            return from.elapsed();
        }
        assert!(
            from.elapsed() < limit,
            "web not taken over within {limit:?}\n{}",
            site.logs()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_missing_failing_or_hanging_agent_is_never_a_fence_and_the_lease_decides() {
    let dir = tempfile::tempdir().unwrap();
    let failing = script(
        dir.path(),
        "fence_failing",
        "cat >/dev/null; echo 'Failed: Unable to obtain correct plug status or plug is not available' >&2; exit 1",
    );
    let hanging = script(dir.path(), "fence_hanging", "exec sleep 100000");
    let fence = format!(
        "\n[[fence]]\nname = \"missing-1\"\nnode = 1\nagent = \"fence_heartline_test_missing\"\n\n[[fence]]\nname = \"failing-1\"\nnode = 1\nlevel = 2\nagent = \"{failing}\"\n\n[[fence]]\nname = \"hanging-1\"\nnode = 1\nlevel = 3\nagent = \"{hanging}\"\ntimeout = \"500ms\"\n"
    );
    let (mut site, apps) = site_with(&fence);
    // Node 1's machine dies: its daemon and its application.
    site.cluster.kill(1);
    let lost = Instant::now();
    apps[0].kill();
    let took = watch_takeover(&site, &apps, lost, Duration::from_secs(20));
    eprintln!(
        "fencing: every device of node 1 failed; node 2 took web over {took:?} after the loss (lease 6 s)"
    );
    // Node 1 was last heard at best 0.5 s before it was declared down:
    // its lease ends 5.5 s after that at the earliest.
    assert!(
        took >= Duration::from_millis(5_400),
        "{took:?}\n{}",
        site.logs()
    );
    let log_of_2 = || std::fs::read_to_string(site.cluster.log_path(2)).unwrap_or_default();
    wait_for(
        Duration::from_secs(5),
        "node 2 to log the end of fencing",
        || log_of_2().contains("fencing alpha (1) given up"),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    let log = log_of_2();
    for expected in [
        "fencing alpha (1) FAILED: missing-1 (level 1, attempt 1 of 2): agent fence_heartline_test_missing not found",
        "escalating to level 2",
        "fencing alpha (1) FAILED: failing-1 (level 2, attempt 1 of 2)",
        "Unable to obtain correct plug status",
        "escalating to level 3",
        "fencing alpha (1) FAILED: hanging-1 (level 3, attempt 1 of 2)",
        "timed out",
        "every level failed, trying again from level 1",
        "fencing alpha (1) given up: its lease ended",
    ] {
        assert!(
            log.contains(expected),
            "no `{expected}` in node 2's log:\n{log}"
        );
    }
    assert!(!log.contains("FENCED"), "{log}");
}

/// A machine's BMC simulated by OpenIPMI's `ipmi_sim` on a loopback UDP
/// port: its chassis power is a file; powering off kills the processes
/// listed in `machine.pids` (the simulated machine) and is logged in
/// `chassis.log`.
struct Bmc {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

const BMC_USER: &str = "admin";
const BMC_PASS: &str = "heartline-test";

/// The chassis control program `ipmi_sim` runs through `sh -c`, with `get
/// power` or `set power "0"`/`"1"` (and other names it may ignore) after
/// the state directory.
const CHASSIS: &str = r#"#!/bin/sh
dir=$1; op=$2; shift 2
echo "$(date '+%H:%M:%S.%N') $op $*" >> "$dir/chassis.log"
case $op in
get)
    for parm in "$@"; do
        case $parm in
        power) if [ "$(cat "$dir/power")" = off ]; then echo "power:0"; else echo "power:1"; fi ;;
        boot) echo "boot:default" ;;
        *) echo "Invalid parameter: $parm"; exit 1 ;;
        esac
    done ;;
set)
    while [ $# -ge 2 ]; do
        case $1 in
        power)
            if [ "$2" = 0 ]; then
                [ -f "$dir/machine.pids" ] && kill -9 $(cat "$dir/machine.pids") 2>/dev/null
                echo off > "$dir/power"
            else
                echo on > "$dir/power"
            fi ;;
        shutdown) [ "$2" = 0 ] || echo off > "$dir/power" ;;
        *) : ;;
        esac
        shift 2
    done ;;
*) exit 1 ;;
esac
exit 0
"#;

impl Bmc {
    /// `None` when `ipmi_sim`, `ipmitool` or `fence_ipmilan` is missing
    /// (test.sh installs them).
    fn start() -> Option<Bmc> {
        let have = |p: &str| {
            Path::new(p).is_file()
                || std::env::var_os("PATH")
                    .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
        };
        if !(have("ipmi_sim") && have("ipmitool") && have("/usr/sbin/fence_ipmilan")) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let chassis = script(
            dir.path(),
            "chassis_control",
            CHASSIS.trim_start_matches("#!/bin/sh\n"),
        );
        let state = dir.path().display().to_string();
        std::fs::write(dir.path().join("power"), "on\n").unwrap();
        std::fs::write(
            dir.path().join("lan.conf"),
            format!(
                "name \"heartline\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    priv_limit admin\n    allowed_auths_callback md2 md5 straight\n    allowed_auths_user md2 md5 straight\n    allowed_auths_operator md2 md5 straight\n    allowed_auths_admin md2 md5 straight\n    guid a123456789abcdefa123456789abcdef\n  endlan\n  chassis_control \"'{chassis}' '{state}'\"\n  user 2 true \"{BMC_USER}\" \"{BMC_PASS}\" admin 10 md2 md5 straight\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sim.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n",
        )
        .unwrap();
        let child = std::process::Command::new("ipmi_sim")
            .arg("-c")
            .arg(dir.path().join("lan.conf"))
            .arg("-f")
            .arg(dir.path().join("sim.emu"))
            .arg("-s")
            .arg(dir.path())
            .arg("-n")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let bmc = Bmc { child, port, dir };
        wait_for(Duration::from_secs(20), "ipmi_sim to answer", || {
            bmc.agent("status").0 == Some(0)
        })
        .unwrap();
        std::fs::write(bmc.dir.path().join("chassis.log"), "").unwrap();
        Some(bmc)
    }

    /// The `[[fence]]` parameters that reach it quickly (lanplus with
    /// cipher suite 3: without one, ipmitool waits 14 s for a cipher list
    /// ipmi_sim does not give; no pause after power changes).
    fn params(&self) -> String {
        format!(
            "  [fence.params]\n  ip = \"127.0.0.1\"\n  ipport = {}\n  username = \"{BMC_USER}\"\n  password = \"{BMC_PASS}\"\n  lanplus = true\n  cipher = 3\n  power_wait = 0\n  power_timeout = 5\n",
            self.port
        )
    }

    /// Runs fence_ipmilan itself with `action`: its exit code and output.
    fn agent(&self, action: &str) -> (Option<i32>, String) {
        use std::io::Write;
        let mut child = std::process::Command::new("/usr/sbin/fence_ipmilan")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let input = format!(
            "action={action}\nip=127.0.0.1\nipport={}\nusername={BMC_USER}\npassword={BMC_PASS}\nlanplus=1\ncipher=3\npower_wait=0\npower_timeout=5\n",
            self.port
        );
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn chassis_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chassis.log")).unwrap_or_default()
    }
}

impl Drop for Bmc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn fence_ipmilan_powers_the_lost_node_off_through_ipmi_sim_before_the_takeover() {
    let Some(bmc) = Bmc::start() else {
        eprintln!(
            "SKIPPED: ipmi_sim, ipmitool or fence_ipmilan is not installed (test.sh installs openipmi, ipmitool and fence-agents)"
        );
        assert!(
            std::env::var_os("CI").is_none(),
            "the fencing packages must be installed in CI"
        );
        return;
    };
    let fence = format!(
        "\n[[fence]]\nname = \"bmc-1\"\nnode = 1\nagent = \"fence_ipmilan\"\ntimeout = \"30s\"\n{}",
        bmc.params()
    );
    let (mut site, apps) = site_with(&fence);
    // The simulated machine of node 1 is its application: the daemon is
    // killed by the test, the application only by a power-off.
    let app = apps[0].pid().unwrap();
    std::fs::write(bmc.dir.path().join("machine.pids"), format!("{app}\n")).unwrap();
    site.cluster.kill(1);
    let lost = Instant::now();
    assert!(
        apps[0].running(),
        "the application runs on without its daemon"
    );
    let took = watch_takeover(&site, &apps, lost, Duration::from_secs(20));
    eprintln!(
        "fencing: node 1's daemon killed, its application fenced through fence_ipmilan and ipmi_sim, node 2 took web over {took:?} after (lease 6 s)"
    );
    assert!(
        !apps[0].running(),
        "the power-off ended node 1's application"
    );
    let chassis = bmc.chassis_log();
    assert!(chassis.contains("set power 0"), "{chassis}");
    assert!(
        took < Duration::from_millis(5_400),
        "taken over only at the lease's end: {took:?}\n{}",
        site.logs()
    );
    let log = std::fs::read_to_string(site.cluster.log_path(2)).unwrap();
    assert!(
        log.contains("alpha (1) FENCED: bmc-1 (level 1) confirmed reboot"),
        "{log}"
    );
    // reboot = off, confirmed off, then on again.
    wait_for(Duration::from_secs(10), "power back on", || {
        bmc.chassis_log().contains("set power 1")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bmc.chassis_log()));
    // The agent's own view agrees.
    assert_eq!(bmc.agent("status").0, Some(0));
    // Node 1 comes back: it runs nothing, web stays on node 2.
    site.cluster.start(1).unwrap();
    wait_for(Duration::from_secs(10), "all up", || site.cluster.all_up()).unwrap();
    let status = site.ok(2, &["status"]);
    assert!(!status.contains("fencing: alpha (1)"), "{status}");
    assert_eq!(running_on(&apps, &[1, 2, 3]), [2]);
}
