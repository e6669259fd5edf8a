//! Two daemons and a `heartline witness`, each in a network namespace of
//! its own on one bridge, and a client in a fourth that probes the
//! protected service on both nodes' addresses every 2 ms. The network
//! between the nodes is cut (iptables in node 1's namespace; both still
//! reach the witness and the client): the service moves to the witness's
//! side and never answers from both; after the heal it stays; with the
//! witness killed and then node 1's machine, node 2 alone starts nothing.
//! Three daemons without a witness, partitioned 2|1: the single node stops
//! the service within its lease, the pair starts it after, never both.
//! The test creates and removes its namespaces; without root, `ip`,
//! `iptables`, `socat` or `python3` it says it was skipped.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{bridge, cannot_run, host_on_bridge, must_in, run};
use heartline::control::client::ask_blocking;
use heartline::control::{Request, Response};
use heartline::demo::local_cluster::wait_for;
use heartline::demo::sample_app::{SampleApp, copy_kit};

const BIN: &str = env!("CARGO_BIN_EXE_heartline");
const NET: &str = "10.78.0";
const WITNESS: u16 = 100;

/// A client probing port 8080 of `NET.N` for each node N given every 2 ms:
/// a line at every change of who answers, and `BOTH` whenever more than
/// one did in one round.
const PROBER: &str = r#"
import socket, sys, time
hosts = sys.argv[3:]
addrs = [(sys.argv[2] + "." + h, 8080) for h in hosts]
out = open(sys.argv[1], "w", buffering=1)
last = None
while True:
    up = []
    for h, a in zip(hosts, addrs):
        s = socket.socket()
        s.settimeout(0.05)
        try:
            s.connect(a)
            up.append(h)
        except Exception:
            pass
        finally:
            s.close()
    t = time.monotonic()
    if len(up) > 1:
        out.write("BOTH %.3f\n" % t)
    if up != last:
        out.write("%.3f %s\n" % (t, ",".join(up) or "none"))
        last = up
    time.sleep(0.002)
"#;

/// The namespaces (a bridge, the nodes `n1`, `n2`, ..., the witness `w`
/// if any, the client `c`), the processes in them; all removed on drop.
struct Lab {
    tag: String,
    dir: tempfile::TempDir,
    nodes: Vec<u16>,
    witness: bool,
    daemons: std::collections::BTreeMap<u16, Child>,
    others: Vec<Child>,
}

impl Lab {
    fn ns(&self, name: &str) -> String {
        format!("hq{}{name}", self.tag)
    }

    /// The namespaces' names: the bridge's last, so it goes last.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.nodes.iter().map(|n| format!("n{n}")).collect();
        if self.witness {
            names.push("w".into());
        }
        names.extend(["c".to_string(), "b".to_string()]);
        names
    }

    /// Nodes `nodes` (at `NET.N`), a witness (at `NET.9`) if `witness`,
    /// and the client (`NET.50`), on one bridge.
    fn new(nodes: &[u16], witness: bool) -> Lab {
        // Unique per lab: the tests of this file run at once in one process.
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let lab = LABS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let tag = format!("{}{lab}", std::process::id() % 10_000);
        let lab = Lab {
            tag,
            dir: tempfile::tempdir().unwrap(),
            nodes: nodes.to_vec(),
            witness,
            daemons: std::collections::BTreeMap::new(),
            others: Vec::new(),
        };
        let hub = lab.ns("b");
        bridge(&hub);
        let mut hosts: Vec<(String, u16)> = nodes.iter().map(|&n| (format!("n{n}"), n)).collect();
        if witness {
            hosts.push(("w".into(), 9));
        }
        hosts.push(("c".into(), 50));
        for (name, host) in hosts {
            let dev = format!("hq{}{name}", lab.tag);
            host_on_bridge(&hub, &lab.ns(&name), &dev, &[&format!("{NET}.{host}/24")]);
        }
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn_in(&self, ns: &str, args: &[&str], log: &str) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(ns)])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path(log)).unwrap())
            .spawn()
            .unwrap()
    }

    fn start(&mut self, node: u16) {
        let config = self.path(&format!("n{node}.toml")).display().to_string();
        let child = self.spawn_in(
            &format!("n{node}"),
            &[BIN, "daemon", "--config", &config],
            &format!("n{node}.log"),
        );
        self.daemons.insert(node, child);
    }

    fn kill(&mut self, node: u16) {
        if let Some(mut child) = self.daemons.remove(&node) {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn socket(&self, node: u16) -> PathBuf {
        self.path(&format!("n{node}.sock"))
    }

    fn cli(&self, node: u16, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .arg("--socket")
            .arg(self.socket(node))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "heartline {args:?} on node {node}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// (quorate, the witness's vote counted) as node `node`'s brain says.
    fn quorum(&self, node: u16) -> Option<(bool, Option<bool>)> {
        match ask_blocking(&self.socket(node), Request::Resources) {
            Ok(Response::Resources(report)) => report.quorum.map(|q| (q.quorate, q.witness)),
            _ => None,
        }
    }

    /// Cuts the network between `node` and each of `from`, in `node`'s
    /// namespace: it still reaches the witness and the client.
    fn cut(&self, node: u16, from: &[u16]) {
        let ns = self.ns(&format!("n{node}"));
        for other in from {
            let addr = format!("{NET}.{other}");
            must_in(&ns, &["iptables", "-A", "INPUT", "-s", &addr, "-j", "DROP"]);
            must_in(
                &ns,
                &["iptables", "-A", "OUTPUT", "-d", &addr, "-j", "DROP"],
            );
        }
    }

    /// Heals what [`Lab::cut`] cut at `node`.
    fn heal(&self, node: u16) {
        must_in(&self.ns(&format!("n{node}")), &["iptables", "-F"]);
    }

    /// Starts the client probing every node's service.
    fn probe(&mut self) {
        let probe = self.path("probe.log").display().to_string();
        let mut args: Vec<String> = ["python3", "-c", PROBER, &probe, NET]
            .iter()
            .map(ToString::to_string)
            .collect();
        args.extend(self.nodes.iter().map(u16::to_string));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let prober = self.spawn_in("c", &args, "prober.err");
        self.others.push(prober);
    }

    fn probes(&self) -> String {
        std::fs::read_to_string(self.path("probe.log")).unwrap_or_default()
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("n{n}.log"))
            .chain(self.witness.then(|| "witness.log".to_string()))
            .map(|l| {
                format!(
                    "--- {l}\n{}",
                    std::fs::read_to_string(self.path(&l)).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in self.daemons.values_mut().chain(&mut self.others) {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Applications the daemons started, and anything left in the
        // namespaces.
        let _ = Command::new("pkill")
            .args(["-9", "-f", &self.dir.path().display().to_string()])
            .status();
        for name in self.names() {
            run(&["ip", "netns", "del", &self.ns(&name)]);
        }
    }
}

/// The hosts whose instance of web runs.
fn running(apps: &[SampleApp]) -> Vec<u16> {
    apps.iter()
        .filter(|a| a.running())
        .map(|a| a.node)
        .collect()
}

impl Lab {
    /// Web on every node (a socat listener on the node's address, the
    /// instances equivalent to node 1's), in service on `at`, and the
    /// client probing it there.
    fn web_on(&mut self, at: u16) -> Vec<SampleApp> {
        let events = self.path("events");
        let apps: Vec<SampleApp> = self
            .nodes
            .iter()
            .map(|&n| {
                let command = format!(
                    "exec socat TCP-LISTEN:8080,bind={NET}.{n},reuseaddr,fork SYSTEM:'echo ok'"
                );
                SampleApp::write(self.dir.path(), n, "web", &events, &command).unwrap()
            })
            .collect();
        for app in &apps {
            let args = app.create_args(app.node);
            self.cli(1, &args.iter().map(String::as_str).collect::<Vec<_>>());
        }
        for other in self.nodes.iter().filter(|&&n| n != 1) {
            let other = other.to_string();
            self.cli(
                1,
                &[
                    "eqv",
                    "create",
                    "--tag",
                    "web",
                    "--other-node",
                    &other,
                    "--other-tag",
                    "web",
                ],
            );
        }
        self.cli(at, &["in-service", "web"]);
        wait_for(
            Duration::from_secs(10),
            &format!("web on node {at}"),
            || running(&apps) == [at],
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        self.probe();
        let tail = format!(" {at}");
        wait_for(
            Duration::from_secs(10),
            &format!("the client reaching node {at}"),
            || {
                self.probes()
                    .lines()
                    .last()
                    .is_some_and(|l| l.ends_with(&tail))
            },
        )
        .unwrap_or_else(|e| panic!("{e}: {}", self.probes()));
        apps
    }
}

fn write_configs(lab: &Lab, kits: &Path) {
    let status = Command::new(BIN)
        .arg("keygen")
        .arg(lab.path("cluster.key"))
        .status()
        .unwrap();
    assert!(status.success());
    let mut witness_nodes = String::new();
    for &node in &lab.nodes {
        let port = 7500 + node;
        let mut text = format!(
            "[cluster]\nname = \"nq\"\nid = 6\nkey_file = \"cluster.key\"\n[node]\nid = {node}\nname = \"n{node}\"\ncontrol_socket = \"n{node}.sock\"\nstate_dir = \"n{node}.state\"\n\
             [resources]\nkits = [\"{}\"]\n[quorum]\nenabled = true\nlease = \"2s\"\nstop_bound = \"1s\"\n",
            kits.display()
        );
        for &peer in lab.nodes.iter().filter(|&&p| p != node) {
            // One TCP path per pair, on a port of the pair's own.
            let port = 7400 + node.min(peer) * 10 + node.max(peer);
            text.push_str(&format!(
                "[[peers]]\nid = {peer}\n  [[peers.paths]]\n  kind = \"tcp\"\n  local = \"{NET}.{node}:{port}\"\n  remote = \"{NET}.{peer}:{port}\"\n"
            ));
        }
        if !lab.witness {
            std::fs::write(lab.path(&format!("n{node}.toml")), text).unwrap();
            continue;
        }
        text.push_str(&format!(
            "[[peers]]\nid = {WITNESS}\nname = \"witness\"\nkind = \"witness\"\n  [[peers.paths]]\n  kind = \"tcp\"\n  local = \"{NET}.{node}:{port}\"\n  remote = \"{NET}.9:{port}\"\n"
        ));
        std::fs::write(lab.path(&format!("n{node}.toml")), text).unwrap();
        witness_nodes.push_str(&format!(
            "  [[clusters.nodes]]\n  id = {node}\n  local = \"{NET}.9:{port}\"\n  remote = \"{NET}.{node}:{port}\"\n"
        ));
    }
    std::fs::write(
        lab.path("witness.toml"),
        format!(
            "[witness]\nid = {WITNESS}\nname = \"witness\"\nstate_dir = \"witness.state\"\n\n[[clusters]]\nname = \"nq\"\nid = 6\nkey_file = \"cluster.key\"\nlease = \"2s\"\n{witness_nodes}"
        ),
    )
    .unwrap();
}

#[test]
fn two_nodes_and_a_witness_in_namespaces_a_cut_never_has_both_answer() {
    if let Some(why) = cannot_run() {
        eprintln!("SKIPPED: network namespace quorum test: {why}");
        return;
    }
    for tool in ["socat", "python3"] {
        if !run(&["sh", "-c", &format!("command -v {tool}")]) {
            eprintln!("SKIPPED: network namespace quorum test: {tool} is not installed");
            return;
        }
    }
    let mut lab = Lab::new(&[1, 2], true);
    let kits = lab.path("kits");
    copy_kit(
        &kits,
        "gen/app",
        "description = \"Generic Application, checked often\"\nquick_check_interval = \"200ms\"\n",
    )
    .unwrap();
    write_configs(&lab, &kits);
    let witness_config = lab.path("witness.toml").display().to_string();
    let witness = lab.spawn_in(
        "w",
        &[BIN, "witness", "--config", &witness_config],
        "witness.log",
    );
    lab.others.push(witness);
    lab.start(1);
    lab.start(2);
    wait_for(
        Duration::from_secs(20),
        "both nodes quorate with the witness",
        || {
            [1, 2]
                .iter()
                .all(|&n| lab.quorum(n) == Some((true, Some(true))))
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));

    let apps = lab.web_on(2);

    // The cut: the witness's vote goes to node 1 (the lower id); node 2
    // stops web within its lease, node 1 starts it after node 2's lease.
    lab.cut(1, &[2]);
    let cut = Instant::now();
    wait_for(
        Duration::from_secs(20),
        "web answering from node 1 only",
        || {
            running(&apps) == [1]
                && lab
                    .probes()
                    .lines()
                    .last()
                    .is_some_and(|l| l.ends_with(" 1"))
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}\n{}\n{}",
            running(&apps),
            lab.probes(),
            lab.logs()
        )
    });
    let moved = cut.elapsed();
    assert_eq!(lab.quorum(2).map(|q| q.0), Some(false));
    // The partition lasts: node 1 keeps the witness's vote and web.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(
            running(&apps),
            [1],
            "web left node 1 in a lasting partition\n{}\n{}",
            lab.probes(),
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Healed: web stays on node 1.
    lab.heal(1);
    wait_for(Duration::from_secs(10), "both quorate again", || {
        [1, 2]
            .iter()
            .all(|&n| lab.quorum(n) == Some((true, Some(true))))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(
            running(&apps),
            [1],
            "after the heal\n{}\n{}",
            lab.probes(),
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The witness dies, then node 1's machine: node 2 alone holds 1 of 3
    // votes and starts nothing.
    let mut witness = lab.others.remove(0);
    witness.kill().unwrap();
    witness.wait().unwrap();
    lab.kill(1);
    apps[0].kill();
    wait_for(Duration::from_secs(5), "node 1's application gone", || {
        !apps[0].running()
    })
    .unwrap();
    let alone = Instant::now();
    while alone.elapsed() < Duration::from_secs(6) {
        assert!(
            running(&apps).is_empty(),
            "node 2 started web without quorum\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(lab.quorum(2).map(|q| q.0), Some(false));

    let probes = lab.probes();
    assert!(!probes.contains("BOTH"), "both answered:\n{probes}");
    let changes: Vec<&str> = probes.lines().collect();
    eprintln!(
        "netns witness: after the cut web answered from node 1 {moved:?} later; the client saw: {changes:?}"
    );
}

#[test]
fn three_nodes_in_namespaces_partitioned_2_1_the_single_node_stops_before_the_pair_starts() {
    if let Some(why) = cannot_run() {
        eprintln!("SKIPPED: network namespace 2|1 partition test: {why}");
        return;
    }
    for tool in ["socat", "python3"] {
        if !run(&["sh", "-c", &format!("command -v {tool}")]) {
            eprintln!("SKIPPED: network namespace 2|1 partition test: {tool} is not installed");
            return;
        }
    }
    let nodes = [1u16, 2, 3];
    let mut lab = Lab::new(&nodes, false);
    let kits = lab.path("kits");
    copy_kit(
        &kits,
        "gen/app",
        "description = \"Generic Application, checked often\"\nquick_check_interval = \"200ms\"\n",
    )
    .unwrap();
    write_configs(&lab, &kits);
    for n in nodes {
        lab.start(n);
    }
    wait_for(Duration::from_secs(20), "every node quorate", || {
        nodes.iter().all(|&n| lab.quorum(n).is_some_and(|q| q.0))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let apps = lab.web_on(3);

    // Node 3 cut off from the pair (the client still reaches every node):
    // it stops web within its lease (2 s); the pair starts it after.
    lab.cut(3, &[1, 2]);
    let cut = Instant::now();
    let mut stopped = None;
    let started = loop {
        let now = running(&apps);
        assert!(
            now.len() <= 1,
            "web runs on {now:?} {:?} after the cut\n{}",
            cut.elapsed(),
            lab.logs()
        );
        if stopped.is_none() && !now.contains(&3) {
            stopped = Some(cut.elapsed());
        }
        if now == [1] {
            break cut.elapsed();
        }
        assert!(
            cut.elapsed() < Duration::from_secs(20),
            "web not on node 1: {now:?}\n{}\n{}",
            lab.probes(),
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    let stopped = stopped.unwrap();
    assert!(
        stopped < started,
        "stopped {stopped:?}, started {started:?}"
    );
    assert!(
        stopped < Duration::from_secs(2),
        "node 3 ran web past its lease: stopped {stopped:?} after the cut"
    );
    wait_for(Duration::from_secs(5), "the client reaching node 1", || {
        lab.probes()
            .lines()
            .last()
            .is_some_and(|l| l.ends_with(" 1"))
    })
    .unwrap_or_else(|e| panic!("{e}: {}", lab.probes()));
    assert_eq!(lab.quorum(3).map(|q| q.0), Some(false));

    // Healed: node 3 rejoins, web stays on node 1.
    lab.heal(3);
    wait_for(Duration::from_secs(10), "node 3 quorate again", || {
        lab.quorum(3).is_some_and(|q| q.0)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(running(&apps), [1], "after the heal\n{}", lab.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let probes = lab.probes();
    assert!(!probes.contains("BOTH"), "two answered:\n{probes}");
    let changes: Vec<&str> = probes.lines().collect();
    eprintln!(
        "netns 2|1: node 3 cut off stopped web {stopped:?} after the cut, node 1 ran it {started:?} after (lease 2 s); the client saw: {changes:?}"
    );
}

impl Lab {
    /// Whether node `node`'s kernel holds `address` on its link.
    fn holds(&self, node: u16, address: &str) -> bool {
        let name = format!("n{node}");
        let dev = format!("hq{}{name}", self.tag);
        let out = Command::new("ip")
            .args(["-n", &self.ns(&name), "-o", "addr", "show", "dev", &dev])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {address}/"))
    }

    /// A virtual IP `tag` for `address` on every node (priority: its id),
    /// the instances equivalent to node 1's.
    fn vip(&self, tag: &str, address: &str) {
        for &node in &self.nodes {
            let node_s = node.to_string();
            let address = format!("address={address}/24");
            let interface = format!("interface=hq{}n{node}", self.tag);
            self.cli(
                1,
                &[
                    "ins",
                    "create",
                    "--node",
                    &node_s,
                    "--priority",
                    &node_s,
                    "--tag",
                    tag,
                    "--id",
                    tag,
                    "--app",
                    "ip",
                    "--type",
                    "vip",
                    "--prop",
                    &address,
                    "--prop",
                    &interface,
                ],
            );
        }
        for other in self.nodes.iter().filter(|&&n| n != 1) {
            let other = other.to_string();
            self.cli(
                1,
                &[
                    "eqv",
                    "create",
                    "--tag",
                    tag,
                    "--other-node",
                    &other,
                    "--other-tag",
                    tag,
                ],
            );
        }
    }
}

#[test]
fn three_nodes_in_namespaces_a_virtual_ip_moves_at_its_fast_lease_and_an_application_at_the_lease()
{
    if let Some(why) = cannot_run() {
        eprintln!("SKIPPED: network namespace fast lease test: {why}");
        return;
    }
    for tool in ["socat", "python3"] {
        if !run(&["sh", "-c", &format!("command -v {tool}")]) {
            eprintln!("SKIPPED: network namespace fast lease test: {tool} is not installed");
            return;
        }
    }
    const VIP: &str = "10.78.0.77";
    let nodes = [1u16, 2, 3];
    let mut lab = Lab::new(&nodes, false);
    let kits = lab.path("kits");
    copy_kit(
        &kits,
        "gen/app",
        "description = \"Generic Application, checked often\"\nquick_check_interval = \"200ms\"\n",
    )
    .unwrap();
    write_configs(&lab, &kits);
    for n in nodes {
        lab.start(n);
    }
    wait_for(Duration::from_secs(20), "every node quorate", || {
        nodes.iter().all(|&n| lab.quorum(n).is_some_and(|q| q.0))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let apps = lab.web_on(3);
    lab.vip("vip", VIP);
    lab.cli(3, &["in-service", "vip"]);
    wait_for(Duration::from_secs(10), "the address on node 3", || {
        lab.holds(3, VIP)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));

    // Node 3 cut off from the pair. The lease is 2 s, its stop bound 1 s;
    // the address's hierarchy has the fast lease: 0.5 s to notice at
    // 100 ms x 5, two heartbeats, an echo step and its stop bound of
    // 0.2 s, 0.95 s. Node 3 drops the address first, the pair takes it
    // over at the fast lease, and the application after the lease.
    lab.cut(3, &[1, 2]);
    let cut = Instant::now();
    let (mut dropped, mut taken, mut web_stopped) = (None, None, None);
    let web_started = loop {
        let holders: Vec<u16> = nodes
            .iter()
            .copied()
            .filter(|&n| lab.holds(n, VIP))
            .collect();
        assert!(
            holders.len() <= 1,
            "the address on {holders:?} {:?} after the cut\n{}",
            cut.elapsed(),
            lab.logs()
        );
        let web = running(&apps);
        assert!(
            web.len() <= 1,
            "web runs on {web:?} {:?} after the cut\n{}",
            cut.elapsed(),
            lab.logs()
        );
        let at = cut.elapsed();
        if dropped.is_none() && !holders.contains(&3) {
            dropped = Some(at);
        }
        if taken.is_none() && holders.iter().any(|&n| n != 3) {
            taken = Some(at);
        }
        if web_stopped.is_none() && !web.contains(&3) {
            web_stopped = Some(at);
        }
        if web == [1] && taken.is_some() {
            break at;
        }
        assert!(
            at < Duration::from_secs(20),
            "not moved: address on {holders:?}, web on {web:?}\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    let (dropped, taken, web_stopped) = (dropped.unwrap(), taken.unwrap(), web_stopped.unwrap());
    assert!(dropped < taken, "dropped {dropped:?}, taken {taken:?}");
    assert!(
        taken < Duration::from_millis(2_000),
        "the address waited for the lease: taken over {taken:?} after the cut\n{}",
        lab.logs()
    );
    assert!(
        taken < web_started,
        "the address {taken:?}, the application {web_started:?}"
    );
    assert!(
        web_stopped < web_started,
        "web stopped {web_stopped:?}, started {web_started:?}"
    );
    let log = std::fs::read_to_string(lab.path("n3.log")).unwrap_or_default();
    assert!(log.contains("fast lease was not renewed"), "{log}");
    // The guard on the real-time thread acted at the same instant as the
    // brain's stop: it removed the address, or found the brain's removal
    // had come first.
    let guard = log
        .lines()
        .find(|l| l.contains("fast lease ran out unrenewed: vip: "))
        .unwrap_or_else(|| panic!("the guard did not act:\n{log}"));
    eprintln!(
        "netns fast lease: after the cut node 3 dropped the address {dropped:?} later, the pair took it over {taken:?} after (fast lease 0.95 s); node 3 stopped web {web_stopped:?} after, node 1 ran it {web_started:?} after (lease 2 s); the guard: {guard}"
    );
}
