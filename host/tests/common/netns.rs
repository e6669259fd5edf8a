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

/// Makes namespace `hub` with a bridge `br0` in it, up.
pub fn bridge(hub: &str) {
    must(&["ip", "netns", "add", hub]);
    must_in(hub, &["ip", "link", "add", "br0", "type", "bridge"]);
    must_in(hub, &["ip", "link", "set", "br0", "up"]);
}

/// Makes namespace `ns` (loopback up) joined to `hub`'s bridge by a veth
/// pair whose end in `ns` is `dev` (the bridge's end `{dev}h`), with
/// `addresses` on `dev` (each an address and prefix, then any flags for
/// `ip addr add`, as `2001:db8::1/64 nodad`), up.
pub fn host_on_bridge(hub: &str, ns: &str, dev: &str, addresses: &[&str]) {
    let end = format!("{dev}h");
    must(&["ip", "netns", "add", ns]);
    must_in(ns, &["ip", "link", "set", "lo", "up"]);
    must(&[
        "ip", "link", "add", dev, "type", "veth", "peer", "name", &end,
    ]);
    must(&["ip", "link", "set", dev, "netns", ns]);
    must(&["ip", "link", "set", &end, "netns", hub]);
    must_in(hub, &["ip", "link", "set", &end, "master", "br0"]);
    must_in(hub, &["ip", "link", "set", &end, "up"]);
    for address in addresses {
        let mut words = address.split_whitespace();
        let mut args = vec!["ip", "addr", "add"];
        args.extend(words.next());
        args.extend(["dev", dev]);
        args.extend(words);
        must_in(ns, &args);
    }
    must_in(ns, &["ip", "link", "set", dev, "up"]);
}
