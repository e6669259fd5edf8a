//! Protected resources on a real daemon: the configuration database and its
//! CLI, a hierarchy of Generic Application resources brought in service
//! children first and out parents first, local recovery of a killed
//! application, the refusals of bad input, and the database through kill -9.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use heartline::local_cluster::{LocalCluster, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_heartline");

/// One daemon with a copy of the shipped Generic Application kit whose
/// quickCheck runs every 200 ms and which tries recovery twice.
struct Node {
    cluster: LocalCluster,
    work: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let mut cluster = LocalCluster::new(Path::new(BIN), 1, 0).unwrap();
        let work = tempfile::tempdir().unwrap();
        let kits = work.path().join("kits");
        copy_kit(&kits, "gen", "app");
        let manifest = kits.join("gen/app/manifest.toml");
        std::fs::write(
            &manifest,
            "description = \"Generic Application, checked often\"\nquick_check_interval = \"200ms\"\nrecover_attempts = 2\n",
        )
        .unwrap();
        let config = cluster.config_path(1);
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&format!("\n[resources]\nkits = [\"{}\"]\n", kits.display()));
        std::fs::write(&config, text).unwrap();
        cluster.start(1).unwrap();
        Node { cluster, work }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--socket")
            .arg(self.cluster.socket(1))
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs a command that must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail with exit 1; its one-line error.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        stderr
    }

    fn resources(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["ins", "list", "--json"])).unwrap()
    }

    fn state(&self, tag: &str) -> String {
        self.resources()
            .into_iter()
            .find(|r| r["place"]["tag"] == tag)
            .map(|r| r["state"].as_str().unwrap().to_string())
            .unwrap_or_default()
    }

    fn generation(&self) -> u64 {
        let model = heartline::client::ask_blocking(
            &self.cluster.socket(1),
            heartline::control::Request::Lcd,
        )
        .unwrap();
        match model {
            heartline::control::Response::Lcd(model) => model.generation,
            other => panic!("{other:?}"),
        }
    }

    /// A Generic Application resource whose application is a `sleep`
    /// recording its pid; its start and stop append to `events.log`.
    fn app(&self, tag: &str) -> App {
        let dir = self.work.path().join(tag);
        std::fs::create_dir_all(&dir).unwrap();
        let pid = dir.join("pid");
        let events = self.work.path().join("events.log");
        let script = |name: &str, body: String| {
            let path = dir.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
            make_executable(&path);
            path
        };
        let start = script(
            "start",
            format!(
                "echo start {tag} >> {events}\nsetsid sh -c 'echo $$ > {pid}; exec sleep 1000' </dev/null >/dev/null 2>&1 &\nfor i in 1 2 3 4 5 6 7 8 9 10; do [ -s {pid} ] && exit 0; sleep 0.05; done\nexit 1\n",
                events = events.display(),
                pid = pid.display()
            ),
        );
        let stop = script(
            "stop",
            format!(
                "echo stop {tag} >> {events}\n[ -s {pid} ] && kill $(cat {pid}) 2>/dev/null\nrm -f {pid}\nexit 0\n",
                events = events.display(),
                pid = pid.display()
            ),
        );
        // A killed process may linger as a zombie until something reaps
        // it; a zombie is not running.
        let check = script(
            "check",
            format!(
                "pid=$(cat {pid} 2>/dev/null) || exit 1\nstate=$(awk '/^State:/ {{print $2}}' /proc/$pid/status 2>/dev/null)\n[ -n \"$state\" ] && [ \"$state\" != Z ]\n",
                pid = pid.display()
            ),
        );
        App {
            tag: tag.to_string(),
            pid,
            start,
            stop,
            check,
        }
    }

    fn create(&self, app: &App) {
        self.ok(&[
            "ins",
            "create",
            "--tag",
            &app.tag,
            "--id",
            &format!("/srv/{}", app.tag),
            "--app",
            "gen",
            "--type",
            "app",
            "--prop",
            &format!("start={}", app.start.display()),
            "--prop",
            &format!("stop={}", app.stop.display()),
            "--prop",
            &format!("check={}", app.check.display()),
        ]);
    }

    fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.work.path().join("events.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

struct App {
    tag: String,
    pid: PathBuf,
    start: PathBuf,
    stop: PathBuf,
    check: PathBuf,
}

impl App {
    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pid).ok()?.trim().parse().ok()
    }

    /// Whether its process is alive: a zombie is not.
    fn running(&self) -> bool {
        self.pid().is_some_and(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
                !status
                    .lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z'))
            })
        })
    }
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Copies the shipped kit `app/rtype` into `kits`.
fn copy_kit(kits: &Path, app: &str, rtype: &str) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("kits")
        .join(app)
        .join(rtype);
    let to = kits.join(app).join(rtype);
    std::fs::create_dir_all(to.join("actions")).unwrap();
    std::fs::copy(from.join("manifest.toml"), to.join("manifest.toml")).unwrap();
    for entry in std::fs::read_dir(from.join("actions")).unwrap() {
        let entry = entry.unwrap();
        let target = to.join("actions").join(entry.file_name());
        std::fs::copy(entry.path(), &target).unwrap();
        make_executable(&target);
    }
}

#[test]
fn a_hierarchy_comes_up_in_order_recovers_locally_and_goes_down_in_order() {
    let node = Node::start();
    let apps: Vec<App> = ["data", "app", "web"].iter().map(|t| node.app(t)).collect();
    for app in &apps {
        node.create(app);
    }
    node.ok(&["dep", "create", "--parent", "web", "--child", "app"]);
    node.ok(&["dep", "create", "--parent", "app", "--child", "data"]);
    let listed = node.ok(&["dep", "list"]);
    assert!(
        listed.contains("web") && listed.contains("data"),
        "{listed}"
    );

    let steps = node.ok(&["in-service", "web"]);
    assert_eq!(
        steps
            .lines()
            .map(|l| l.split(':').next().unwrap())
            .collect::<Vec<_>>(),
        ["restore data", "restore app", "restore web"],
        "{steps}"
    );
    assert_eq!(node.events(), ["start data", "start app", "start web"]);
    assert!(apps.iter().all(App::running));
    assert!(
        ["data", "app", "web"]
            .iter()
            .all(|t| node.state(t) == "ISP")
    );

    // Kill the middle application: its quickCheck fails and recover
    // (stop, then start) brings it back here.
    let app = &apps[1];
    let old = app.pid().unwrap();
    let killed = Instant::now();
    Command::new("kill")
        .arg("-9")
        .arg(old.to_string())
        .status()
        .unwrap();
    wait_for(Duration::from_secs(10), "app recovered locally", || {
        app.pid().is_some_and(|pid| pid != old) && app.running()
    })
    .unwrap();
    eprintln!(
        "local recovery: app answering again {:?} after kill -9 (quickCheck every 200 ms)",
        killed.elapsed()
    );
    wait_for(Duration::from_secs(5), "app ISP again", || {
        node.state("app") == "ISP"
    })
    .unwrap();
    assert!(
        node.cluster.log(1).contains("recover"),
        "{}",
        node.cluster.log(1)
    );

    // A recovery that cannot work: the start script now fails, so after
    // two attempts the resource is in service but unprotected.
    std::fs::write(&app.start, "#!/bin/sh\necho cannot start >&2\nexit 1\n").unwrap();
    Command::new("kill")
        .arg("-9")
        .arg(app.pid().unwrap().to_string())
        .status()
        .unwrap();
    wait_for(
        Duration::from_secs(10),
        "app ISU after failed recovery",
        || node.state("app") == "ISU",
    )
    .unwrap();
    let log = node.cluster.log(1);
    assert!(log.contains("local recovery failed"), "{log}");

    // sendevent: the alarm interface runs recovery on demand.
    std::fs::write(
        &app.start,
        std::fs::read_to_string(&apps[0].start)
            .unwrap()
            .replace("data", "app"),
    )
    .unwrap();
    node.ok(&["sendevent", "-C", "gen/app", "-E", "down", "-i", "app"]);
    assert_eq!(node.state("app"), "ISP");
    assert!(app.running());

    let before = node.events().len();
    let steps = node.ok(&["out-of-service", "data"]);
    assert_eq!(steps.lines().count(), 3, "{steps}");
    assert_eq!(
        node.events()[before..],
        ["stop web", "stop app", "stop data"]
    );
    assert!(
        ["data", "app", "web"]
            .iter()
            .all(|t| node.state(t) == "OSU")
    );
    assert!(!apps.iter().any(App::running));
}

#[test]
fn bad_input_is_refused_with_a_reason_and_changes_nothing() {
    let mut node = Node::start();
    for tag in ["web", "db"] {
        node.create(&node.app(tag));
    }
    node.ok(&["dep", "create", "--parent", "web", "--child", "db"]);
    let generation = node.generation();

    let e = node.refused(&["dep", "create", "--parent", "db", "--child", "web"]);
    assert!(e.contains("cycle on node 1: db -> web -> db"), "{e}");

    let e = node.refused(&[
        "ins", "create", "--tag", "x", "--id", "x", "--app", "nope", "--type", "thing",
    ]);
    assert!(
        e.contains("no recovery kit for resource type nope/thing"),
        "{e}"
    );

    // A kit whose restore script is not executable.
    let kits = node.work.path().join("kits");
    copy_kit(&kits, "gen", "app");
    let broken = kits.join("broken/app");
    std::fs::create_dir_all(broken.parent().unwrap()).unwrap();
    std::fs::rename(kits.join("gen/app"), &broken).unwrap();
    copy_kit(&kits, "gen", "app");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        broken.join("actions/restore"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    // Kits are read at start.
    node.cluster.kill(1);
    node.cluster.start(1).unwrap();
    let e = node.refused(&[
        "ins", "create", "--tag", "y", "--id", "y", "--app", "broken", "--type", "app",
    ]);
    assert!(e.contains("restore") && e.contains("chmod +x"), "{e}");

    // The same resource on node 2 with the same priority.
    node.ok(&[
        "ins", "create", "--tag", "db", "--id", "db", "--app", "gen", "--type", "app", "--node",
        "2",
    ]);
    let generation = generation.max(node.generation());
    let e = node.refused(&[
        "eqv",
        "create",
        "--tag",
        "db",
        "--other-node",
        "2",
        "--other-tag",
        "db",
    ]);
    assert!(e.contains("priority 1 is already"), "{e}");
    let e = node.refused(&["hry", "setpri", "db", "0"]);
    assert!(e.contains("1 (first choice) to 1024"), "{e}");
    let e = node.refused(&["ins", "remove", "nothing"]);
    assert!(e.contains("no resource nothing on node 1"), "{e}");
    let e = node.refused(&["in-service", "nothing"]);
    assert!(e.contains("no resource nothing"), "{e}");
    assert_eq!(node.generation(), generation, "nothing changed");

    // With distinct priorities the equivalency is made.
    node.ok(&["hry", "setpri", "db", "2", "--node", "2"]);
    node.ok(&[
        "eqv",
        "create",
        "--tag",
        "db",
        "--other-node",
        "2",
        "--other-tag",
        "db",
    ]);
    assert!(node.ok(&["eqv", "list"]).contains("db on node 2"));
}

#[test]
fn every_acknowledged_change_survives_kill_9_of_the_daemon() {
    let mut node = Node::start();
    let socket = node.cluster.socket(1);
    let writer = std::thread::spawn(move || {
        let mut acknowledged = Vec::new();
        for i in 0..10_000 {
            let tag = format!("r{i}");
            let out = Command::new(BIN)
                .arg("--socket")
                .arg(&socket)
                .args([
                    "ins", "create", "--tag", &tag, "--id", &tag, "--app", "gen", "--type", "app",
                ])
                .output()
                .unwrap();
            if !out.status.success() {
                break;
            }
            acknowledged.push(tag);
        }
        acknowledged
    });
    wait_for(Duration::from_secs(60), "50 changes acknowledged", || {
        node.generation() >= 51
    })
    .unwrap();
    node.cluster.kill(1);
    let acknowledged = writer.join().unwrap();
    node.cluster.start(1).unwrap();
    let tags: Vec<String> = node
        .resources()
        .into_iter()
        .map(|r| r["place"]["tag"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|t| !tags.contains(t)).collect();
    eprintln!(
        "{} changes acknowledged before kill -9, {} in the database after restart",
        acknowledged.len(),
        tags.len()
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(acknowledged.len() >= 50);
}
