//! What the tests of protected resources on real daemons share: [`Site`],
//! daemons on loopback with a quickly checked Generic Application kit and
//! the commands to drive them, and the sample applications they protect.
//! Each test file uses part of it.

#![allow(dead_code)] // each test file uses part of it
#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

pub mod netns;
pub mod vip_lab;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use heartline::control::{Request, Response};
use heartline::demo::local_cluster::{LocalCluster, wait_for};
use heartline::demo::sample_app::{SampleApp as App, install_kits};
use heartline_brain::api::NodeReport;

pub const BIN: &str = env!("CARGO_BIN_EXE_heartline");

/// The Generic Application kit's manifest for these tests.
pub const CHECKED_OFTEN: &str = "description = \"Generic Application, checked often\"\nquick_check_interval = \"200ms\"\nrecover_attempts = 2\n";

/// Daemons on loopback, each with a copy of the shipped Generic Application
/// kit whose quickCheck runs every 200 ms and which tries recovery twice.
/// Methods take the node to talk to. Dropping it kills the daemons, then
/// every application it wrote that still runs.
pub struct Site {
    pub cluster: LocalCluster,
    pub work: tempfile::TempDir,
    apps: RefCell<Vec<App>>,
}

impl Site {
    /// `nodes` daemons, one TCP path between each pair, every node up.
    pub fn start(nodes: u16) -> Site {
        Site::start_with(nodes, "")
    }

    /// As [`Site::start`], with `sections` added to every configuration.
    pub fn start_with(nodes: u16, sections: &str) -> Site {
        let paths = usize::from(nodes > 1);
        let mut cluster = LocalCluster::new(Path::new(BIN), nodes, paths).unwrap();
        if !sections.is_empty() {
            cluster.add_config(sections).unwrap();
        }
        Site::from_cluster(cluster)
    }

    /// Starts every daemon of `cluster` (configured as the test wants).
    pub fn from_cluster(mut cluster: LocalCluster) -> Site {
        let nodes = cluster.nodes();
        let work = tempfile::tempdir().unwrap();
        install_kits(&cluster, &[("gen/app", CHECKED_OFTEN)]).unwrap();
        cluster.start_all().unwrap();
        if nodes > 1 {
            wait_for(Duration::from_secs(10), "every node up", || {
                cluster.all_up()
            })
            .unwrap_or_else(|e| {
                let logs: Vec<String> = (1..=nodes)
                    .map(|n| format!("--- node {n}'s log:\n{}", cluster.log(n)))
                    .collect();
                panic!("{e}\n{}", logs.join("\n"))
            });
        }
        Site {
            cluster,
            work,
            apps: RefCell::new(Vec::new()),
        }
    }

    pub fn cli(&self, at: u16, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--socket")
            .arg(self.cluster.socket(at))
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs a command on node `at` that must succeed; its standard output.
    pub fn ok(&self, at: u16, args: &[&str]) -> String {
        let out = self.cli(at, args);
        assert!(
            out.status.success(),
            "{args:?} on node {at} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command on node `at` that must fail with exit 1; its one-line
    /// error.
    pub fn refused(&self, at: u16, args: &[&str]) -> String {
        let out = self.cli(at, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        stderr
    }

    /// Every resource of the cluster, as node `at` knows them.
    pub fn resources(&self, at: u16) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(at, &["ins", "list", "--json"])).unwrap()
    }

    /// The state of `tag` on node `of`, as node `at` knows it.
    pub fn state_of(&self, at: u16, of: u16, tag: &str) -> String {
        self.resources(at)
            .into_iter()
            .find(|r| r["place"]["tag"] == tag && r["place"]["node"] == of)
            .map(|r| r["state"].as_str().unwrap().to_string())
            .unwrap_or_default()
    }

    /// The state of `tag` on node 1, as node 1 knows it.
    pub fn state(&self, tag: &str) -> String {
        self.state_of(1, 1, tag)
    }

    pub fn generation(&self, at: u16) -> u64 {
        let model = heartline::control::client::ask_blocking(
            &self.cluster.socket(at),
            heartline::control::Request::Lcd,
        )
        .unwrap();
        match model {
            heartline::control::Response::Lcd(model) => model.generation,
            other => panic!("{other:?}"),
        }
    }

    /// What node `at`'s resource brain says of itself and its resources
    /// (`heartline status`), if it answers.
    pub fn report(&self, at: u16) -> Option<NodeReport> {
        match self.cluster.ask(at, Request::Resources) {
            Ok(Response::Resources(report)) => Some(*report),
            _ => None,
        }
    }

    /// Whether every node in `nodes` answers, follows the same
    /// coordinator, sees exactly `nodes` up, is done probing and is at the
    /// same configuration version.
    pub fn settled(&self, nodes: &[u16]) -> bool {
        let reports: Vec<NodeReport> = nodes.iter().filter_map(|&n| self.report(n)).collect();
        reports.len() == nodes.len()
            && reports.iter().all(|r| {
                r.members == nodes
                    && !r.probing
                    && r.coordinator == reports[0].coordinator
                    && r.version == reports[0].version
            })
    }

    /// `heartline verify` on node `at`: whether it exited 0, and what it
    /// printed.
    pub fn verify(&self, at: u16) -> (bool, String) {
        let out = self.cli(at, &["verify"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Waits until `verify` exits 0 on every node of `nodes`, at once;
    /// panics with the last reports and the daemons' logs if it does not
    /// within `limit`.
    pub fn wait_verified(&self, nodes: &[u16], limit: Duration) {
        let mut last = String::new();
        let verified = wait_for(limit, "verify clean on every node", || {
            last.clear();
            let mut clean = true;
            for &n in nodes {
                let (ok, text) = self.verify(n);
                if !ok {
                    last.push_str(&format!("node {n}:\n{text}\n"));
                    clean = false;
                    break;
                }
            }
            clean
        });
        if let Err(e) = verified {
            panic!("{e}\n{last}\n{}", self.logs());
        }
    }

    /// Every node's log, for a failure's message.
    pub fn logs(&self) -> String {
        (1..=self.cluster.nodes())
            .map(|n| format!("--- node {n}'s log:\n{}", self.cluster.log(n)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A Generic Application resource `tag` for node `node` (a `sleep`).
    pub fn app(&self, node: u16, tag: &str) -> App {
        self.app_running(node, tag, "exec sleep 100000")
    }

    /// A Generic Application resource `tag` for node `node` running the
    /// shell command `command`.
    pub fn app_running(&self, node: u16, tag: &str, command: &str) -> App {
        let app = App::write(self.work.path(), node, tag, &self.events_log(node), command).unwrap();
        self.apps.borrow_mut().push(app.clone());
        app
    }

    /// Creates `app` through node `at`, with `priority`.
    pub fn create(&self, at: u16, app: &App, priority: u16) {
        let args = app.create_args(priority);
        self.ok(at, &args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    pub fn events_log(&self, node: u16) -> PathBuf {
        self.work.path().join(format!("node{node}-events.log"))
    }

    /// What node `node`'s applications did, in order.
    pub fn events(&self, node: u16) -> Vec<String> {
        std::fs::read_to_string(self.events_log(node))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        for node in 1..=self.cluster.nodes() {
            self.cluster.kill(node);
        }
        for app in self.apps.borrow().iter().filter(|a| a.running()) {
            app.kill();
        }
    }
}

/// The tag of the hierarchy the tests protect.
pub const WEB: &str = "web";

/// Resource `web` on each node of `nodes`, node `n` with priority `n`,
/// configured on the first of them and extended to the others by
/// equivalencies. Applications run `command` (a `sleep` by default); the
/// result is indexed by node - 1.
pub fn hierarchy(site: &Site, nodes: &[u16], command: Option<&dyn Fn(u16) -> String>) -> Vec<App> {
    let first = nodes[0];
    let apps: Vec<App> = nodes
        .iter()
        .map(|&n| match command {
            Some(command) => site.app_running(n, WEB, &command(n)),
            None => site.app(n, WEB),
        })
        .collect();
    // With quorum configured, changes wait for it: its lease is earned
    // from the peers' echoes, a few heartbeats after every node is up.
    wait_for(
        Duration::from_secs(15),
        "quorum where the hierarchy is made",
        || {
            site.report(first)
                .is_some_and(|r| r.quorum.is_none_or(|q| q.quorate))
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", site.logs()));
    for app in &apps {
        site.create(first, app, app.node);
    }
    for &n in &nodes[1..] {
        site.ok(
            first,
            &[
                "eqv",
                "create",
                "--tag",
                WEB,
                "--other-node",
                &n.to_string(),
                "--other-tag",
                WEB,
            ],
        );
    }
    apps
}

/// The nodes among `nodes` whose application runs.
pub fn running_on(apps: &[App], nodes: &[u16]) -> Vec<u16> {
    nodes
        .iter()
        .copied()
        .filter(|&n| apps[usize::from(n - 1)].running())
        .collect()
}
