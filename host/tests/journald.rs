//! The daemon under systemd logs to the journal natively (issue 15): a
//! real `systemd-journald` runs in a mount namespace of the test's own
//! (a tmpfs over `/run`, so the machine's journal is untouched), the
//! daemon runs with its standard error on the journal's stream as systemd
//! starts a service (`systemd-cat`, with `$JOURNAL_STREAM` naming that
//! stream), and `journalctl` then shows every line as a native entry
//! (`_TRANSPORT=journal`) with its level as the priority:
//! `journalctl -p warning` gives the warnings only. Without root, unshare
//! or journald it says it was skipped.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::process::Command;

const JOURNALD: &str = "/lib/systemd/systemd-journald";

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs in the namespace: journald on a fresh `/run`; the daemon on the
/// journal's stream until its control socket is ready (seen in the
/// journal, within 20 s); then SIGTERM, and the daemon's entries as JSON,
/// then a line `--`, then `journalctl -p warning`'s.
const SCRIPT: &str = r#"
set -eu
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal /run/log/journal
"$JOURNALD" &
journald=$!
trap 'kill $journald' EXIT
for _ in $(seq 200); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
journal() { journalctl -D /run/log/journal --no-pager "$@"; }
systemd-cat -t heartline-stream sh -c \
  'export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2); exec "$0" daemon --config "$1"' \
  "$HEARTLINE" "$CONFIG" &
daemon=$!
ready=no
for _ in $(seq 400); do
  if journal -o cat | grep -q 'control socket ready'; then ready=yes; break; fi
  sleep 0.05
done
kill -TERM $daemon
wait $daemon || true
[ $ready = yes ] || { echo "the daemon's control socket never showed ready in the journal" >&2; journal -o cat >&2; exit 1; }
journal -o json SYSLOG_IDENTIFIER=heartline + SYSLOG_IDENTIFIER=heartline-stream
echo --
journal -o cat -p warning SYSLOG_IDENTIFIER=heartline + SYSLOG_IDENTIFIER=heartline-stream
"#;

#[test]
fn under_systemd_every_line_is_a_journal_entry_with_its_priority() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: the journal test needs root (journald in a mount namespace)");
        return;
    }
    for program in ["unshare", "journalctl", "systemd-cat", JOURNALD] {
        if !have(program) {
            eprintln!("SKIPPED: the journal test: {program} is missing (apt install systemd)");
            return;
        }
    }
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
    // A peer that is never there: the daemon warns that it cannot connect
    // and that quorum is off, and logs the rest at INFO.
    let config = dir.path().join("alpha.toml");
    std::fs::write(
        &config,
        "[cluster]\nname = \"journal\"\nid = 1\nkey_file = \"k\"\n\
         [node]\nid = 1\nname = \"alpha\"\ncontrol_socket = \"alpha.sock\"\nstate_dir = \"state\"\n\
         [[peers]]\nid = 2\nname = \"bravo\"\n\
         [[peers.paths]]\nkind = \"tcp\"\nlocal = \"127.0.0.1:7791\"\nremote = \"127.0.0.2:7791\"\n",
    )
    .unwrap();
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", SCRIPT])
        .env("JOURNALD", JOURNALD)
        .env("HEARTLINE", bin)
        .env("CONFIG", &config)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (entries, warnings) = stdout.split_once("\n--\n").unwrap();
    let entries: Vec<serde_json::Value> = entries
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let field = |e: &serde_json::Value, name: &str| e[name].as_str().unwrap_or("").to_string();
    // Every line native: none came through the stream as text.
    assert!(!entries.is_empty(), "{stdout}");
    for e in &entries {
        assert_eq!(field(e, "_TRANSPORT"), "journal", "{e}");
        assert_eq!(field(e, "SYSLOG_IDENTIFIER"), "heartline", "{e}");
        let message = field(e, "MESSAGE");
        assert!(!message.starts_with('<'), "priority left in the text: {e}");
        let want = if message.starts_with("WARN") {
            "4"
        } else if message.starts_with("ERROR") {
            "3"
        } else {
            "6"
        };
        assert_eq!(field(e, "PRIORITY"), want, "{e}");
    }
    let with = |text: &str| entries.iter().any(|e| field(e, "MESSAGE").contains(text));
    assert!(with("control socket ready") && with("stopped"), "{stdout}");
    // `journalctl -p warning`: the warnings, and nothing else.
    let warnings: Vec<&str> = warnings.lines().collect();
    assert!(
        warnings.iter().any(|l| l.contains("quorum is off")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .all(|l| l.starts_with("WARN") || l.starts_with("ERROR")),
        "{warnings:?}"
    );
}
