//! The Guest Application kit (`gen/appmon`) on two real daemons and a real
//! appserver: an application on the guest brought in service, restarted in
//! place when it dies, failed over to the other node when it cannot be
//! restarted, and stopped when taken out of service.

#![cfg(unix)]
#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use heartline::demo::local_cluster::{LocalCluster, wait_for};
use heartline::demo::local_guest::{LocalGuest, process_alive as alive, recorded_pid};
use heartline::demo::sample_app::install_kits;

const BIN: &str = env!("CARGO_BIN_EXE_heartline");

/// The kit checked every 200 ms, one local recovery before failover.
const MANIFEST: &str = "quick_check_interval = \"200ms\"\nrecover_attempts = 1\n";

struct Site {
    cluster: LocalCluster,
    guest: LocalGuest,
    work: tempfile::TempDir,
}

impl Site {
    fn ok(&self, at: u16, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .arg("--socket")
            .arg(self.cluster.socket(at))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.cluster.log(at)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn state(&self, at: u16, of: u16) -> String {
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&self.ok(at, &["ins", "list", "--json"])).unwrap();
        list.into_iter()
            .find(|r| r["place"]["tag"] == "guestapp" && r["place"]["node"] == of)
            .map(|r| r["state"].as_str().unwrap().to_string())
            .unwrap_or_default()
    }

    /// Node `node`'s appmgr state file for the resource.
    fn state_file(&self, node: u16) -> PathBuf {
        self.cluster
            .dir()
            .join(format!("{}.state", LocalCluster::name(node)))
            .join("appmon/guestapp.state")
    }

    /// The guest pid of the application node `node` runs, once it runs.
    fn running_pid(&self, node: u16, not: u32) -> u32 {
        let mut pid = None;
        wait_for(
            Duration::from_secs(20),
            "the guest application to run",
            || {
                pid = recorded_pid(&self.state_file(node)).filter(|&p| p != not && alive(p));
                pid.is_some()
            },
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nnode {node}:\n{}\nguest:\n{}",
                self.cluster.log(node),
                self.guest.log_text()
            )
        });
        pid.unwrap()
    }

    /// Where node `node`'s application is told to fail at start.
    fn broken(&self, node: u16) -> PathBuf {
        self.work.path().join(format!("broken-{node}"))
    }
}

fn kill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[test]
fn a_guest_application_is_recovered_in_place_then_failed_over() {
    let guest = LocalGuest::start(Path::new(BIN), &[]).unwrap();
    let mut cluster = LocalCluster::new(Path::new(BIN), 2, 1).unwrap();
    install_kits(&cluster, &[("gen/appmon", MANIFEST)]).unwrap();
    cluster.start_all().unwrap();
    wait_for(Duration::from_secs(10), "both nodes up", || {
        cluster.all_up()
    })
    .unwrap();
    let site = Site {
        cluster,
        guest,
        work: tempfile::tempdir().unwrap(),
    };
    for node in 1..=2u16 {
        let command = format!(
            "[ -e {} ] && exit 1; exec sleep 100000",
            site.broken(node).display()
        );
        let args = site.guest.resource_args(node, node, "guestapp", &command);
        site.ok(1, &args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    site.ok(
        1,
        &[
            "eqv",
            "create",
            "--tag",
            "guestapp",
            "--other-node",
            "2",
            "--other-tag",
            "guestapp",
        ],
    );

    let steps = site.ok(1, &["in-service", "guestapp"]);
    assert!(steps.contains("restore"), "{steps}");
    let first = site.running_pid(1, 0);
    assert_eq!(site.state(1, 1), "ISP");

    // The application dies: node 1 starts it again in place.
    kill(first);
    let second = site.running_pid(1, first);
    wait_for(Duration::from_secs(10), "ISP after local recovery", || {
        site.state(1, 1) == "ISP"
    })
    .unwrap();
    assert!(
        site.cluster.log(1).contains("restarting after"),
        "{}",
        site.cluster.log(1)
    );

    // It dies and cannot start again on node 1: node 2 takes it over.
    std::fs::write(site.broken(1), "").unwrap();
    kill(second);
    let third = site.running_pid(2, 0);
    wait_for(Duration::from_secs(15), "node 1 OSF, node 2 ISP", || {
        site.state(2, 1) == "OSF" && site.state(2, 2) == "ISP"
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nnode 1:\n{}\nnode 2:\n{}",
            site.cluster.log(1),
            site.cluster.log(2)
        )
    });

    // Out of service on node 2 stops it on the guest.
    site.ok(2, &["out-of-service", "guestapp"]);
    assert!(!alive(third), "the guest application was stopped");
    let recorded = std::fs::read_to_string(site.state_file(2)).unwrap();
    assert!(recorded.starts_with("ended 143: "), "{recorded}");
}
