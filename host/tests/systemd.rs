//! The daemon as a systemd `Type=notify` service: it reports READY=1 once
//! its control socket is up, then feeds the watchdog (WATCHDOG=1) at half
//! of `WATCHDOG_USEC`.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn notifies_ready_and_feeds_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_heartline");
    assert!(
        Command::new(bin)
            .arg("keygen")
            .arg(dir.path().join("k"))
            .status()
            .unwrap()
            .success()
    );
    let config = dir.path().join("solo.toml");
    std::fs::write(
        &config,
        "[cluster]\nname = \"solo\"\nid = 1\nkey_file = \"k\"\n[node]\nid = 1\nname = \"solo\"\ncontrol_socket = \"solo.sock\"\nstate_dir = \"state\"\n",
    )
    .unwrap();
    let notify = dir.path().join("notify");
    let socket = UnixDatagram::bind(&notify).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut daemon = Command::new(bin)
        .args(["daemon", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "200000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !(seen.iter().any(|m| m == "READY=1")
        && seen.iter().filter(|m| *m == "WATCHDOG=1").count() >= 3)
    {
        let n = socket.recv(&mut buf).expect("a notification within 10 s");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let unexpected: Vec<_> = seen
        .iter()
        .filter(|m| *m != "READY=1" && *m != "WATCHDOG=1")
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected notifications: {unexpected:?}"
    );
}
