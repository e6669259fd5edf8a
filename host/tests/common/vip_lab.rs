//! Two daemons and a client, each in a network namespace of its own, on one
//! bridge (`{net}.0/24`): the lab the IP kit's tests (`tests/vip.rs`) and
//! its failover benchmark (`benches/vip_failover.rs`) share. With two
//! paths, the nodes are also joined by a direct link of their own
//! (`{net}.1.0/24`, a second heartbeat path). Everything the lab started is
//! killed, and its namespaces removed, on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use heartline::control::client::ask_blocking;
use heartline::control::{Request, Response};
use heartline::demo::local_cluster::wait_for;

use super::netns::{bridge, host_on_bridge, must, must_in, run};

/// How to build a lab.
pub struct Spec<'a> {
    /// The namespaces' and interfaces' prefix, different per user of the
    /// lab so that a test and the benchmark can run at once.
    pub prefix: &'a str,
    /// The IPv4 networks: `10.{net}.0.0/24` on the bridge, `10.{net}.1.0/24`
    /// on the direct link.
    pub net: u8,
    /// The heartbeat interval (misses: 5).
    pub interval: &'a str,
    /// 1: the bridge only; 2: the direct link as well.
    pub paths: u8,
    /// Also `2001:db8:{net}::/64` on the bridge.
    pub ipv6: bool,
    /// The daemon binary.
    pub bin: String,
}

/// The namespaces `b` (the bridge), `n1`, `n2` and `c` (the client).
pub struct TwoNodes {
    pub tag: String,
    pub prefix: String,
    pub net: u8,
    pub bin: String,
    pub dir: tempfile::TempDir,
    /// Everything started in the namespaces (killing `ip netns exec`
    /// kills what it runs: it execs it).
    pub children: Vec<Child>,
}

impl TwoNodes {
    /// The namespaces, links, key and configuration; no daemon yet.
    pub fn new(spec: &Spec<'_>) -> TwoNodes {
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let lab = LABS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let two = TwoNodes {
            tag: format!("{}{lab}", std::process::id() % 10_000),
            prefix: spec.prefix.to_string(),
            net: spec.net,
            bin: spec.bin.clone(),
            dir: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        };
        let hub = two.ns("b");
        bridge(&hub);
        for (host, last) in [("n1", 1), ("n2", 2), ("c", 50)] {
            let mut addresses = vec![format!("{}.{last}/24", two.net())];
            if spec.ipv6 {
                addresses.push(format!("{}::{last}/64", two.net6()));
            }
            let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
            host_on_bridge(&hub, &two.ns(host), &two.dev(host), &addresses);
        }
        if spec.paths > 1 {
            let (x1, x2) = (two.dev("x1"), two.dev("x2"));
            must(&[
                "ip", "link", "add", &x1, "type", "veth", "peer", "name", &x2,
            ]);
            for (dev, host, last) in [(&x1, "n1", 1), (&x2, "n2", 2)] {
                let ns = two.ns(host);
                let address = format!("10.{}.1.{last}/24", two.net);
                must(&["ip", "link", "set", dev, "netns", &ns]);
                must_in(&ns, &["ip", "addr", "add", &address, "dev", dev]);
                must_in(&ns, &["ip", "link", "set", dev, "up"]);
            }
        }
        two.configure(spec);
        two
    }

    /// The bridge's network, as `10.79.0`.
    pub fn net(&self) -> String {
        format!("10.{}.0", self.net)
    }

    /// The bridge's IPv6 network, as `2001:db8:79`.
    pub fn net6(&self) -> String {
        format!("2001:db8:{}", self.net)
    }

    pub fn ns(&self, host: &str) -> String {
        format!("{}{}{host}", self.prefix, self.tag)
    }

    /// The interface of `host` on the bridge (`n1`, `n2` or `c`), or of a
    /// node on the direct link (`x1`, `x2`).
    pub fn dev(&self, host: &str) -> String {
        format!("{}{}{host}", self.prefix, self.tag)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn configure(&self, spec: &Spec<'_>) {
        assert!(
            Command::new(&self.bin)
                .arg("keygen")
                .arg(self.path("cluster.key"))
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success()
        );
        let (net, interval) = (self.net(), spec.interval);
        for node in [1u16, 2] {
            let peer = 3 - node;
            let mut text = format!(
                "[cluster]\nname = \"vip\"\nid = 7\nkey_file = \"cluster.key\"\n[node]\nid = {node}\nname = \"n{node}\"\ncontrol_socket = \"n{node}.sock\"\nstate_dir = \"n{node}.state\"\n\
                 [timing]\ninterval = \"{interval}\"\nmisses = 5\n\
                 [[peers]]\nid = {peer}\n\
                 \x20 [[peers.paths]]\n  kind = \"tcp\"\n  local = \"{net}.{node}:7500\"\n  remote = \"{net}.{peer}:7500\"\n"
            );
            if spec.paths > 1 {
                let link = format!("10.{}.1", self.net);
                text.push_str(&format!(
                    "  [[peers.paths]]\n  kind = \"tcp\"\n  local = \"{link}.{node}:7501\"\n  remote = \"{link}.{peer}:7501\"\n"
                ));
            }
            std::fs::write(self.path(&format!("n{node}.toml")), text).unwrap();
        }
    }

    /// Starts `args` in `host`'s namespace, in the lab's directory, its
    /// output appended to `log`.
    pub fn spawn_in(&mut self, host: &str, args: &[&str], log: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(log))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(args)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    /// Starts `node`'s daemon (its log `n{node}.log`).
    pub fn start(&mut self, node: u16) {
        let config = self.path(&format!("n{node}.toml")).display().to_string();
        let bin = self.bin.clone();
        self.spawn_in(
            &format!("n{node}"),
            &[&bin, "daemon", "--config", &config],
            &format!("n{node}.log"),
        );
    }

    /// Starts both daemons and waits until each sees the other up.
    pub fn start_both(&mut self) {
        for node in [1, 2] {
            self.start(node);
        }
        wait_for(Duration::from_secs(20), "both nodes up", || {
            self.sees_up(1, 2) && self.sees_up(2, 1)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
    }

    pub fn socket(&self, node: u16) -> PathBuf {
        self.path(&format!("n{node}.sock"))
    }

    /// Whether `node` sees `peer` up.
    pub fn sees_up(&self, node: u16, peer: u16) -> bool {
        match ask_blocking(&self.socket(node), Request::Status) {
            Ok(Response::Status(status)) => status
                .comm
                .peers
                .iter()
                .any(|p| p.node == peer && p.state == "up"),
            _ => false,
        }
    }

    fn cli_output(&self, node: u16, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .arg("--socket")
            .arg(self.socket(node))
            .args(args)
            .output()
            .unwrap()
    }

    /// The CLI on `node`, which must succeed: what it printed.
    pub fn cli(&self, node: u16, args: &[&str]) -> String {
        let out = self.cli_output(node, args);
        assert!(
            out.status.success(),
            "heartline {args:?} on node {node}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The CLI on `node`, which must fail: its error.
    pub fn cli_error(&self, node: u16, args: &[&str]) -> String {
        let out = self.cli_output(node, args);
        assert!(!out.status.success(), "heartline {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Whether `host`'s bridge interface holds `address`.
    pub fn holds(&self, host: &str, address: &str) -> bool {
        let out = Command::new("ip")
            .args(["-n", &self.ns(host), "-o", "addr", "show", "dev"])
            .arg(self.dev(host))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {address}/"))
    }

    /// The nodes holding `address`, by their kernels.
    pub fn where_is(&self, address: &str) -> Vec<u16> {
        [1u16, 2]
            .into_iter()
            .filter(|n| self.holds(&format!("n{n}"), address))
            .collect()
    }

    /// The daemons' logs, then the lab's files named in `more`.
    pub fn logs_with(&self, more: &[&str]) -> String {
        ["n1.log", "n2.log"]
            .iter()
            .chain(more)
            .map(|l| {
                format!(
                    "--- {l}\n{}",
                    std::fs::read_to_string(self.path(l)).unwrap_or_default()
                )
            })
            .collect()
    }

    /// The daemons' logs.
    pub fn logs(&self) -> String {
        self.logs_with(&[])
    }
}

impl Drop for TwoNodes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for host in ["n1", "n2", "c", "b"] {
            run(&["ip", "netns", "del", &self.ns(host)]);
        }
    }
}
