//! What may run as root, on a real daemon: a recovery kit, or a user script
//! a resource names, that someone other than root could change or replace
//! (writable by group or others, in such a directory, or owned by another
//! user) is refused with its path and the command that fixes it, and never
//! runs; checked when the kits load and again before every run.

#![cfg(unix)]
#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::Site;

/// The uid files are given away to: `nobody`.
const NOBODY: u32 = 65534;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), None).unwrap();
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    })
}

/// A kit `<app>/app` in `kits` whose every action appends its name to
/// `marker`; safe as made (0755, owned by the test's user).
fn marking_kit(kits: &Path, app: &str, marker: &Path) -> PathBuf {
    let dir = kits.join(app).join("app");
    std::fs::create_dir_all(dir.join("actions")).unwrap();
    for d in [kits.join(app), dir.clone(), dir.join("actions")] {
        chmod(&d, 0o755);
    }
    std::fs::write(
        dir.join("manifest.toml"),
        "quick_check_interval = \"200ms\"\n",
    )
    .unwrap();
    chmod(&dir.join("manifest.toml"), 0o644);
    for action in ["restore", "remove", "quickCheck", "recover", "delete"] {
        let script = dir.join("actions").join(action);
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$HEARTLINE_ACTION\" >> '{}'\n",
                marker.display()
            ),
        )
        .unwrap();
        chmod(&script, 0o755);
    }
    dir
}

fn restart(site: &mut Site) {
    site.cluster.kill(1);
    site.cluster.start(1).unwrap();
}

/// Runs `args` on node 1, which must fail; its standard error.
fn fails(site: &Site, args: &[&str]) -> String {
    let out = site.cli(1, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !out.status.success(),
        "{args:?} succeeded: {stdout}{stderr}"
    );
    format!("{stdout}{stderr}")
}

#[test]
fn an_unsafe_kit_is_refused_at_load_with_the_fix_and_never_runs() {
    if !is_root() {
        eprintln!("skipped: giving a file to another user needs root");
        return;
    }
    let mut site = Site::start(1);
    let kits = site.cluster.dir().join("kits");
    let marker = site.work.path().join("ran");
    let loose = marking_kit(&kits, "loose", &marker);
    let foreign = marking_kit(&kits, "foreign", &marker);
    restart(&mut site);
    // Safe, they load: a resource of each.
    for app in ["loose", "foreign"] {
        site.ok(
            1,
            &[
                "ins", "create", "--tag", app, "--id", app, "--app", app, "--type", "app",
            ],
        );
    }

    // Then a world-writable kit directory, and an action script given to
    // another user; kits are read at start.
    chmod(&loose, 0o777);
    let restore = foreign.join("actions/restore");
    chown(&restore, NOBODY);
    std::fs::remove_file(&marker).ok();
    restart(&mut site);

    let log = site.cluster.log(1);
    let loose_fix = format!("(chmod go-w {})", loose.display());
    let foreign_fix = format!("(chown root {})", restore.display());
    assert!(
        log.contains("recovery kit loose/app cannot be used")
            && log.contains(&format!(
                "{} is writable by group and others",
                loose.display()
            ))
            && log.contains(&loose_fix),
        "{log}"
    );
    assert!(
        log.contains("recovery kit foreign/app cannot be used")
            && log.contains(&format!("{} is owned by uid {NOBODY}", restore.display()))
            && log.contains(&foreign_fix),
        "{log}"
    );

    // Refused: a new resource of either kit, and bringing one in service.
    let e = site.refused(
        1,
        &[
            "ins", "create", "--tag", "x", "--id", "x", "--app", "loose", "--type", "app",
        ],
    );
    assert!(e.contains(&loose_fix), "{e}");
    let e = fails(&site, &["in-service", "foreign"]);
    eprintln!("in-service of a resource whose kit is unsafe:\n{e}");
    assert!(e.contains(&restore.display().to_string()), "{e}");
    let e = fails(&site, &["in-service", "loose"]);
    assert!(e.contains(&loose.display().to_string()), "{e}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        !marker.exists(),
        "an unsafe kit's script ran: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );

    // Fixed as said, and restarted: usable again.
    chmod(&loose, 0o755);
    chown(&restore, 0);
    restart(&mut site);
    site.ok(1, &["in-service", "foreign"]);
    assert!(marker.exists(), "the fixed kit's scripts run");
}

#[test]
fn an_unsafe_user_script_is_refused_before_each_run_and_never_runs() {
    if !is_root() {
        eprintln!("skipped: giving a file to another user needs root");
        return;
    }
    let site = Site::start(1);
    let app = site.app(1, "web");
    let start = app.start.display().to_string();

    // Named when it is already unsafe: the resource is not created.
    chmod(&app.start, 0o775);
    let args = app.create_args(1);
    let e = site.refused(1, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        e.contains(&format!(
            "start script {start} is writable by group (mode 0775)"
        )) && e.contains(&format!("(chmod go-w {start})")),
        "{e}"
    );
    assert!(site.resources(1).is_empty());
    chmod(&app.start, 0o755);
    site.create(1, &app, 1);
    // Nor is a property changed to name an unsafe script.
    let other = site.work.path().join("other-start");
    std::fs::write(&other, "#!/bin/sh\nexit 0\n").unwrap();
    chmod(&other, 0o777);
    let e = site.refused(
        1,
        &[
            "ins",
            "setprop",
            "web",
            "start",
            &other.display().to_string(),
        ],
    );
    assert!(
        e.contains(&format!("(chmod go-w {})", other.display())),
        "{e}"
    );

    // World-writable: refused, with the path and the fix, and not run.
    chmod(&app.start, 0o757);
    let e = fails(&site, &["in-service", "web"]);
    eprintln!("in-service with a world-writable start script:\n{e}");
    assert!(
        e.contains(&format!(
            "start script {start} is writable by others (mode 0757)"
        )) && e.contains(&format!("(chmod go-w {start})")),
        "{e}"
    );
    assert!(
        site.cluster
            .log(1)
            .contains(&format!("(chmod go-w {start})"))
    );
    // (The failed start is undone with the stop script, which is safe.)
    let starts = |site: &Site| site.events(1).iter().filter(|e| *e == "start web").count();
    assert_eq!(starts(&site), 0, "{:?}", site.events(1));
    assert!(!app.running());

    // Fixed: it runs.
    chmod(&app.start, 0o755);
    site.ok(1, &["in-service", "web"]);
    assert_eq!(starts(&site), 1);
    assert!(app.running());
    site.ok(1, &["out-of-service", "web"]);
    assert!(!app.running());

    // Made unsafe after it ran: refused before the next run. Owned by
    // another user...
    chown(&app.start, NOBODY);
    let e = fails(&site, &["in-service", "web"]);
    assert!(
        e.contains(&format!("{start} is owned by uid {NOBODY}"))
            && e.contains(&format!("(chown root {start})")),
        "{e}"
    );
    chown(&app.start, 0);
    // ... or in a directory others can write: whoever can write it can
    // put another script in its place.
    let dir = app.start.parent().unwrap();
    chmod(dir, 0o777);
    let e = fails(&site, &["in-service", "web"]);
    assert!(
        e.contains(&format!("(chmod go-w {})", dir.display())),
        "{e}"
    );
    assert_eq!(starts(&site), 1, "the unsafe start never ran");
    assert!(!app.running());

    // The stop script, in the same directory, could not undo the start
    // either: blocked until the operator has fixed it and says it is
    // stopped.
    assert_eq!(site.state("web"), "BLOCKED");

    // Fixed: it runs again.
    chmod(dir, 0o755);
    site.ok(1, &["cleanup", "web"]);
    site.ok(1, &["in-service", "web"]);
    assert!(app.running());
    assert_eq!(starts(&site), 2);
}
