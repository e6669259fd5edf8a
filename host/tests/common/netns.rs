//! Network namespaces for the tests that need several hosts: running
//! commands, inside a namespace or not, and whether this machine can.

use std::process::{Command, Stdio};

/// Runs `args`; whether it succeeded.
pub fn run(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `args`, which must succeed.
pub fn must(args: &[&str]) {
    assert!(run(args), "failed: {}", args.join(" "));
}

/// Runs `args` inside namespace `ns`, which must succeed.
pub fn must_in(ns: &str, args: &[&str]) {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    must(&all);
}

/// Why namespace tests cannot run here, if they cannot.
pub fn cannot_run() -> Option<String> {
    if String::from_utf8_lossy(&Command::new("id").arg("-u").output().ok()?.stdout).trim() != "0" {
        return Some("not root".into());
    }
    for tool in ["ip", "iptables"] {
        if !run(&["sh", "-c", &format!("command -v {tool}")]) {
            return Some(format!("{tool} is not installed (./test.sh installs it)"));
        }
    }
    None
}
