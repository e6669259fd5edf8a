//! `heartline demo` (issue 15): it runs on defaults and exits 0, and it
//! leaves no process behind, whether it ends normally or is interrupted
//! with Ctrl-C in the middle of its tour. This test process makes itself
//! the child subreaper, so every process the demo started and left
//! running becomes its child, and is found (and killed) here.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// One demo at a time: what they leave behind is told apart by parent.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// This process's children other than `except` (a demo still running),
/// zombies reaped, as `pid command line`.
fn children(except: Option<u32>) -> Vec<String> {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
    }
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.parse::<u32>().is_err() || Some(name.parse::<u32>().unwrap()) == except {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let parent = status.lines().find_map(|l| l.strip_prefix("PPid:"));
        if parent.map(str::trim) == Some(me.as_str()) {
            let command = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let command = String::from_utf8_lossy(&command).replace('\0', " ");
            found.push(format!("{name} {command}"));
        }
    }
    found
}

/// Waits up to 5 s for every process the demo left to be gone (one being
/// killed takes a moment); kills and names any that stay.
fn assert_nothing_left(when: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = children(None);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = children(None);
    }
    for process in &left {
        let pid: i32 = process.split(' ').next().unwrap().parse().unwrap();
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    assert!(left.is_empty(), "{when}, the demo left: {left:#?}");
}

fn subreaper() -> std::sync::MutexGuard<'static, ()> {
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    guard
}

#[test]
fn the_demo_runs_on_defaults_exits_0_and_leaves_nothing_running() {
    let _one = subreaper();
    let output = Command::new(env!("CARGO_BIN_EXE_heartline"))
        .arg("demo")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for step in [
        "still see each other up over",
        "delivered",
        "declared charlie down",
        "saw charlie restart",
        "it answers \"hello from alpha\"",
        "recover restarted it on alpha",
        "\"hello from bravo\"",
        "waited for alpha's quorum lease",
        "left it there",
        "in service: pid",
        "recover started it again",
        "appmgr stopped it on the guest",
        "Summary",
    ] {
        assert!(text.contains(step), "missing {step:?} in:\n{text}");
    }
    assert_nothing_left("after the demo ended");
}

/// Ctrl-C (SIGINT to the demo's process group, as a terminal sends it)
/// while the protected application runs: the demo stops, says so, exits 1,
/// and nothing it started (daemons, the application, relays) is left.
#[test]
fn the_demo_interrupted_with_ctrl_c_leaves_nothing_running() {
    let _one = subreaper();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_heartline"))
        .arg("demo")
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    let stdout = demo.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    // Step 5: the application runs on alpha, started by alpha's daemon.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut text = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) => {
                text.push_str(&line);
                text.push('\n');
                if line.contains("in service on alpha; it answers") {
                    break;
                }
            }
            Err(e) => {
                let _ = demo.kill();
                panic!("the demo never protected its application ({e}):\n{text}");
            }
        }
    }
    killpg(Pid::from_raw(demo.id() as i32), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not end after Ctrl-C:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut demo.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{text}\n{stderr}");
    assert!(
        stderr.contains("interrupted; every process it started is stopped"),
        "{stderr}"
    );
    assert_nothing_left("after Ctrl-C");
}
