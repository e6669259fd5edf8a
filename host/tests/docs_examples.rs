//! The documentation's examples, run as written. The administrator's
//! guide's resource example (`docs/admin.md`): its shell block (after
//! `<!-- example: resources -->`) against two real daemons, with `/srv`
//! standing for a directory of real start, stop and check scripts and
//! `heartline` for this build talking to node 1. Every command must
//! succeed, and the hierarchy must end where the example says. The
//! README's quickstart (`<!-- quickstart -->`): its shell block run by
//! bash, as written, in a copy of `examples/quickstart` (and of the kits it
//! names), with this build first on the path; the web server must answer
//! from the node the quickstart says, and nothing it started may be left.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, Site};

#[test]
fn the_guides_resource_example_runs_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/admin.md")).unwrap();
    let after = readme
        .split("<!-- example: resources -->")
        .nth(1)
        .expect("docs/admin.md marks its resource example");
    let block = after
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a shell block after the marker");
    let site = Site::start(2);
    // The applications' scripts: one directory each, as on a shared disk.
    let data = site.app(0, "data");
    let web = site.app(0, "web");
    let dir = |app: &heartline::demo::sample_app::SampleApp| {
        app.start.parent().unwrap().display().to_string()
    };
    let script = block
        .replace("/srv/data", &dir(&data))
        .replace("/srv/web", &dir(&web));
    let program = format!(
        "set -eu\nheartline() {{ '{BIN}' --socket '{}' \"$@\"; }}\n{script}",
        site.cluster.socket(1).display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&program)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the docs/admin.md example failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        site.logs()
    );
    // It ends out of service everywhere: data was taken down last, web
    // with it.
    assert!(!data.running() && !web.running(), "{}", site.logs());
    // In service on node 1, switched over to node 2, taken down there.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let steps: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("restore") || l.contains("remove"))
        .map(|l| l.split(": exited").next().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "restore data",
            "restore web",
            "remove web",
            "remove data",
            "bravo (2): restore data",
            "bravo (2): restore web",
            "bravo (2): remove web",
            "bravo (2): remove data"
        ],
        "{stdout}"
    );
}

/// The shipped example configuration is docs/admin.md's, and it is valid.
#[test]
fn the_example_configuration_is_the_guides_and_is_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/admin.md")).unwrap();
    let block = readme
        .split("### Configuration\n")
        .nth(1)
        .and_then(|s| s.split("```toml\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("docs/admin.md's configuration block");
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/heartline.example.toml"
    ))
    .unwrap();
    assert_eq!(
        shipped, block,
        "host/heartline.example.toml differs from docs/admin.md's configuration"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("heartline.toml");
    std::fs::write(&config, shipped).unwrap();
    let keygen = Command::new(BIN)
        .arg("keygen")
        .arg(dir.path().join("cluster.key"))
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok: cluster prod (id 7), node 1 (alpha)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Copies the directory `from` to `to`, recursively, keeping modes.
fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

#[test]
fn the_readme_quickstart_runs_as_written_and_leaves_nothing_running() {
    for program in ["python3", "curl", "bash"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("SKIPPED: the README's quickstart needs {program}");
            return;
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let block = readme
        .split("<!-- quickstart -->")
        .nth(1)
        .and_then(|s| s.split("```sh\n").nth(1))
        .and_then(|b| b.split("```").next())
        .expect("the README marks its quickstart, a shell block");
    // The tree the quickstart expects: examples/quickstart and the kits
    // its configuration names (../../host/kits), in a directory of the
    // test's own.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("examples")).unwrap();
    std::fs::create_dir_all(dir.path().join("host")).unwrap();
    copy_tree(
        &root.join("examples/quickstart"),
        &dir.path().join("examples/quickstart"),
    );
    copy_tree(&root.join("host/kits"), &dir.path().join("host/kits"));
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .args(["-e", "-c", block])
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("HEARTLINE_SOCKET")
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let group = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let until = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > until {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever happened: the daemons (bash's background jobs, in its
    // process group, which bash itself has left once reaped) and the web
    // servers (in sessions of their own) go.
    let quickstart = dir.path().join("examples/quickstart");
    let leftover_daemons =
        nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).is_ok();
    let mut leftover_servers = Vec::new();
    for node in ["alpha", "bravo"] {
        let pid_file = quickstart.join(format!("{node}.state/web/pid"));
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let pid = nix::unistd::Pid::from_raw(pid);
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
                leftover_servers.push(node);
            }
        }
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let logs: String = ["alpha.log", "bravo.log"]
        .iter()
        .map(|f| {
            format!(
                "== {f}\n{}",
                std::fs::read_to_string(quickstart.join(f)).unwrap_or_default()
            )
        })
        .collect();
    let all = format!(
        "{stdout}\n{}\n{logs}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status = status.unwrap_or_else(|| panic!("the quickstart did not end in 120 s:\n{all}"));
    assert!(status.success(), "the quickstart failed ({status}):\n{all}");
    // Where the web server answered from, in order: alpha, bravo after the
    // switchover, alpha again once bravo stopped.
    let served: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("served by"))
        .collect();
    assert_eq!(
        served,
        ["served by node 1", "served by node 2", "served by node 1"],
        "{all}"
    );
    assert!(stdout.contains("web  runs on bravo (2)"), "{all}");
    // The quickstart stops everything it started.
    assert!(
        leftover_servers.is_empty(),
        "web servers left running on {leftover_servers:?}"
    );
    assert!(!leftover_daemons, "daemons left running");
}
