//! The command line as an operator meets it: exit codes, one-line errors,
//! `check-config`, and the LCMI names `snd_msg`, `rcv_msg`, `can_talk`.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use heartline::demo::local_cluster::{LocalCluster, run_with_input, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_heartline");

#[test]
fn check_config_accepts_a_good_file_and_names_the_line_of_a_bad_one() {
    let cluster = LocalCluster::new(Path::new(BIN), 2, 1).unwrap();
    let good = Command::new(BIN)
        .arg("check-config")
        .arg(cluster.config_path(1))
        .output()
        .unwrap();
    assert!(good.status.success());
    assert!(
        String::from_utf8_lossy(&good.stdout)
            .contains(": ok: cluster local (id 42), node 1 (alpha), 1 peers, 1 paths")
    );

    let text = std::fs::read_to_string(cluster.config_path(1))
        .unwrap()
        .replace("id = 42", "id = \"forty-two\"");
    let bad = cluster.dir().join("bad.toml");
    std::fs::write(&bad, text).unwrap();
    let output = Command::new(BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    let expected = format!(
        "heartline: {}:3: `id = \"forty-two\"`: invalid type",
        bad.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
}

#[test]
fn without_a_daemon_commands_say_so_and_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .arg("--socket")
        .arg(dir.path().join("none.sock"))
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach the heartline daemon"));
}

#[test]
fn the_lcmi_names_work_as_links_to_the_binary() {
    let mut cluster = LocalCluster::new(Path::new(BIN), 2, 1).unwrap();
    cluster.start_all().unwrap();
    wait_for(Duration::from_secs(15), "both nodes up", || {
        cluster.all_up()
    })
    .unwrap();
    let links = tempfile::tempdir().unwrap();
    for name in ["snd_msg", "rcv_msg", "can_talk"] {
        std::os::unix::fs::symlink(BIN, links.path().join(name)).unwrap();
    }
    let lcmi = |name: &str, node: u16| {
        let mut command = Command::new(links.path().join(name));
        command.env("HEARTLINE_SOCKET", cluster.socket(node));
        command
    };
    assert!(
        lcmi("can_talk", 1)
            .args(["--node", "2"])
            .status()
            .unwrap()
            .success()
    );
    let sent = run_with_input(
        lcmi("snd_msg", 1).args(["--node", "2", "--mailbox", "11"]),
        b"via snd_msg",
    )
    .unwrap();
    assert!(sent.success());
    let received = lcmi("rcv_msg", 2)
        .args(["--mailbox", "11", "--timeout", "5s"])
        .output()
        .unwrap();
    assert_eq!(received.stdout, b"via snd_msg");
    let nothing = lcmi("rcv_msg", 2)
        .args(["--mailbox", "11", "--timeout", "200ms"])
        .output()
        .unwrap();
    assert_eq!(nothing.status.code(), Some(4), "an empty mailbox times out");
}

#[test]
fn the_control_socket_refuses_other_versions_and_malformed_requests() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;
    let mut cluster = LocalCluster::new(Path::new(BIN), 2, 1).unwrap();
    cluster.start(1).unwrap();
    let ask_raw = |line: &str| {
        let mut stream = UnixStream::connect(cluster.socket(1)).unwrap();
        stream.write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).unwrap();
        answer
    };
    let newer = ask_raw("{\"v\": 3, \"op\": \"teleport\"}\n");
    assert!(
        newer.contains("control protocol version 3 is not spoken here"),
        "{newer}"
    );
    let garbage = ask_raw("this is not json\n");
    assert!(garbage.contains("malformed request"), "{garbage}");
    assert!(cluster.status(1).is_ok(), "the daemon still serves");
}

/// `status --watch` redraws until interrupted (piped: one snapshot after
/// another, each with its header), shows a daemon that went away and
/// comes back; `--colour always` colours the states, `never` and a pipe
/// do not.
#[test]
fn status_watch_redraws_and_colour_follows_the_option() {
    use std::io::{BufRead, BufReader};
    let mut cluster = LocalCluster::new(Path::new(BIN), 2, 1).unwrap();
    cluster.start_all().unwrap();
    wait_for(Duration::from_secs(10), "node 2 up", || {
        cluster
            .status(1)
            .is_ok_and(|s| s.peers.iter().any(|p| p.node == 2 && p.state == "up"))
    })
    .unwrap();
    let painted = Command::new(BIN)
        .arg("--socket")
        .arg(cluster.socket(1))
        .args(["status", "--colour", "always"])
        .output()
        .unwrap();
    let painted = String::from_utf8_lossy(&painted.stdout);
    assert!(painted.contains("\x1b[32mup\x1b[0m"), "{painted}");
    let plain = Command::new(BIN)
        .arg("--socket")
        .arg(cluster.socket(1))
        .arg("status")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains('\x1b'));

    let mut watch = Command::new(BIN)
        .arg("--socket")
        .arg(cluster.socket(1))
        .args(["status", "--watch", "--every", "100ms"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut headers = 0;
    let mut seen = String::new();
    // Three snapshots; node 1's daemon stopped after the first: the next
    // say it cannot be reached, and the watch goes on.
    while headers < 4 {
        let line = lines.next().expect("watch ended").unwrap();
        if line.starts_with("every 100ms; Ctrl-C to stop; ") {
            headers += 1;
            if headers == 2 {
                cluster.kill(1);
            }
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen.contains("NODE   NAME"), "{seen}");
    assert!(
        !seen.contains('\x1b'),
        "piped: no colour, no redraw codes\n{seen}"
    );
    assert!(
        seen.contains("cannot reach the heartline daemon"),
        "a daemon that went away is shown:\n{seen}"
    );
}
