//! The README's resource example, run as written: its shell block (after
//! `<!-- example: resources -->`) against two real daemons, with `/srv`
//! standing for a directory of real start, stop and check scripts and
//! `heartline` for this build talking to node 1. Every command must
//! succeed, and the hierarchy must end where the example says.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

mod common;

use std::process::Command;

use common::{BIN, Site};

#[test]
fn the_readme_resource_example_runs_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let after = readme
        .split("<!-- example: resources -->")
        .nth(1)
        .expect("the README marks its resource example");
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
        "the README example failed:\n{}\n{}\n{}",
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
            "node 2: restore data",
            "node 2: restore web",
            "node 2: remove web",
            "node 2: remove data"
        ],
        "{stdout}"
    );
}

/// The shipped example configuration is the README's, and it is valid.
#[test]
fn the_example_configuration_is_the_readmes_and_is_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let block = readme
        .split("### Configuration\n")
        .nth(1)
        .and_then(|s| s.split("```toml\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("the README's configuration block");
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/heartline.example.toml"
    ))
    .unwrap();
    assert_eq!(
        shipped, block,
        "host/heartline.example.toml differs from the README's configuration"
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
