//! The virtual IP's failover, measured as a client sees it (issue 14):
//! two daemons and a client, each in a network namespace of its own, on
//! one bridge; a VIP (`ip/vip`) in service on one node; a TCP listener on
//! both nodes; the client opening a TCP connection to the VIP every 2 ms.
//! Each trial sets the link of the node holding the VIP down and measures
//! the client's outage: the gap between the last connection that succeeded
//! before the cut and the first after it. Then the link comes back and the
//! next trial cuts the other node.
//!
//! With `--paths 1` the nodes share only the bridge, so the cut node is
//! lost to its peer (detection: the profile's interval × misses); with
//! `--paths 2` (the default) they also have a link of their own, the cut
//! node stays up, and its link monitor moves the VIP.
//!
//! `--load SECONDS` instead runs the false-takeover measurement: the VIP
//! stays put for that long under 4 CPU hogs and an fsync'd disk storm, and
//! the nodes declared down and the VIP's moves are counted; with
//! `--with-admin`, configuration changes (a resource made and removed) run
//! in a loop meanwhile.
//!
//! Needs root and `ip` (iproute2). Usage:
//! `cargo bench -p heartline --bench vip_failover -- [--trials N]
//! [--profiles 100ms,20ms,10ms] [--paths 1|2] [--probe-timeout T]
//! [--load SECONDS [--with-admin]]`; `HEARTLINE_BIN` names another daemon
//! binary to measure.
//! (The binary also runs, inside the namespaces, as the listener
//! `--listen PORT` and the probe `--probe ADDRESS:PORT`.)

#![allow(clippy::unwrap_used)] // a benchmark that cannot set up should panic

#[path = "../tests/common/netns.rs"]
#[allow(dead_code)]
mod netns;
#[path = "../tests/common/vip_lab.rs"]
#[allow(dead_code)]
mod vip_lab;

use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heartline::control::client::ask_blocking;
use heartline::control::{Request, Response};
use heartline::demo::local_cluster::wait_for;
use netns::{cannot_run, must_in, run};
use vip_lab::{Spec, TwoNodes};

/// The daemon measured: this build's, or `HEARTLINE_BIN` (to compare
/// another build in the same run).
fn bin() -> String {
    std::env::var("HEARTLINE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_heartline").into())
}
const VIP: &str = "10.77.0.100";
const PORT: u16 = 8080;
/// The client's probes: one every 2 ms, each given up after 1 s.
const PROBE_EVERY: Duration = Duration::from_millis(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(port) = value("--listen") {
        listen(port.parse().unwrap());
        return;
    }
    if let Some(target) = value("--probe") {
        probe(target.parse().unwrap());
        return;
    }
    if let Some(why) = cannot_run() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let trials: usize = value("--trials").map_or(50, |t| t.parse().unwrap());
    let paths: u8 = value("--paths").map_or(2, |p| p.parse().unwrap());
    let profiles = value("--profiles").unwrap_or_else(|| "100ms,20ms,10ms".into());
    let load: Option<u64> = value("--load").map(|s| s.parse().unwrap());
    // The IP kit's conflict probe before it adds the address (its
    // `probe_timeout`; the kit's default when not given).
    let probe_timeout = value("--probe-timeout");
    let admin = args.iter().any(|a| a == "--with-admin");
    println!(
        "VIP failover, {paths} path(s) between the nodes, the client's probes every {PROBE_EVERY:?}, the kit's conflict probe {}",
        probe_timeout.as_deref().unwrap_or("at its default")
    );
    for interval in profiles.split(',') {
        let lab = Lab::new(interval, paths, probe_timeout.as_deref());
        match load {
            Some(seconds) => lab.under_load(Duration::from_secs(seconds), admin),
            None => lab.outages(trials),
        }
    }
}

/// Accepts TCP connections on `port` (any address, the VIP's included)
/// and closes each at once.
fn listen(port: u16) {
    let listener = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
    for stream in listener.incoming() {
        drop(stream);
    }
}

/// Opens a TCP connection to `target` every [`PROBE_EVERY`], each on its
/// own, and prints for each when it began (µs since the epoch) and whether
/// it connected within [`PROBE_TIMEOUT`].
fn probe(target: std::net::SocketAddr) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u128, bool)>();
        tokio::spawn(async move {
            let mut out = std::io::stdout();
            while let Some((at, ok)) = rx.recv().await {
                if writeln!(out, "{at} {}", u8::from(ok))
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    std::process::exit(0);
                }
            }
        });
        let mut every = tokio::time::interval(PROBE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let at = micros_now();
            let tx = tx.clone();
            tokio::spawn(async move {
                let ok = matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(target))
                        .await,
                    Ok(Ok(_))
                );
                let _ = tx.send((at, ok));
            });
        }
    });
}

fn micros_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

/// The shared two-node lab, with a listener on both nodes and the probe.
struct Lab {
    two: TwoNodes,
    interval: String,
    /// The probe's results so far: (start, µs since the epoch; connected).
    probes: Arc<Mutex<Vec<(u128, bool)>>>,
}

impl std::ops::Deref for Lab {
    type Target = TwoNodes;
    fn deref(&self) -> &TwoNodes {
        &self.two
    }
}

impl Lab {
    fn new(interval: &str, paths: u8, probe_timeout: Option<&str>) -> Lab {
        let mut two = TwoNodes::new(&Spec {
            prefix: "hb",
            net: 77,
            interval,
            paths,
            ipv6: false,
            bin: bin(),
        });
        let me = std::env::current_exe().unwrap().display().to_string();
        for node in [1u16, 2] {
            two.spawn_in(
                &format!("n{node}"),
                &[&me, "--listen", &PORT.to_string()],
                "listener.log",
            );
        }
        two.start_both();
        let mut lab = Lab {
            two,
            interval: interval.to_string(),
            probes: Arc::default(),
        };
        for node in [1u16, 2] {
            let node_s = node.to_string();
            let interface = format!("interface={}", lab.dev(&format!("n{node}")));
            let address = format!("address={VIP}/24");
            let probe = probe_timeout.map(|t| format!("probe_timeout={t}"));
            let probe = probe.iter().flat_map(|p| ["--prop", p.as_str()]);
            lab.cli(
                1,
                &[
                    "ins",
                    "create",
                    "--node",
                    &node_s,
                    "--priority",
                    &node_s,
                    "--tag",
                    "vip",
                    "--id",
                    "vip",
                    "--app",
                    "ip",
                    "--type",
                    "vip",
                    "--prop",
                    &address,
                    "--prop",
                    &interface,
                ]
                .into_iter()
                .chain(probe)
                .collect::<Vec<_>>(),
            );
        }
        lab.cli(
            1,
            &[
                "eqv",
                "create",
                "--tag",
                "vip",
                "--other-node",
                "2",
                "--other-tag",
                "vip",
            ],
        );
        lab.cli(1, &["in-service", "vip"]);
        wait_for(Duration::from_secs(10), "the VIP on node 1", || {
            lab.where_is() == [1]
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
        lab.start_probe();
        lab
    }

    fn start_probe(&mut self) {
        let me = std::env::current_exe().unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns("c")])
            .arg(me)
            .args(["--probe", &format!("{VIP}:{PORT}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let probes = self.probes.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let mut words = line.split_whitespace();
                let (Some(Ok(at)), Some(ok)) = (words.next().map(str::parse), words.next()) else {
                    continue;
                };
                probes.lock().unwrap().push((at, ok == "1"));
            }
        });
        self.two.children.push(child);
        wait_for(
            Duration::from_secs(10),
            "the client reaching the VIP",
            || self.probes.lock().unwrap().iter().any(|(_, ok)| *ok),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
    }

    /// How late `node`'s communication manager woke for its timer.
    fn timer(&self, node: u16) -> Option<heartline::comm::report::TimerReport> {
        match ask_blocking(&self.socket(node), Request::Status) {
            Ok(Response::Status(status)) => Some(status.comm.timer),
            _ => None,
        }
    }

    /// Both nodes' timer lateness, in words.
    fn timers(&self) -> String {
        [1u16, 2]
            .iter()
            .filter_map(|n| self.timer(*n).map(|t| (n, t)))
            .map(|(n, t)| {
                format!(
                    "node {n}: {} wake-ups, the latest {:.1} ms late, {} over 2 ms, {} over 10 ms",
                    t.wakes,
                    t.max_late_us as f64 / 1000.0,
                    t.over_2ms,
                    t.over_10ms
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The nodes holding the VIP, by their kernels.
    fn where_is(&self) -> Vec<u16> {
        self.two.where_is(VIP)
    }

    /// Nodes declared down so far, by both daemons' logs.
    fn downs(&self) -> usize {
        self.logs().matches("down: every path silent").count()
    }

    /// Paths declared down so far, by both daemons' logs.
    fn path_downs(&self) -> usize {
        self.logs()
            .matches("down: silent for interval x misses")
            .count()
    }

    /// `trials` cuts of the holder's link: the client's outage each time.
    fn outages(&self, trials: usize) {
        let mut outages = Vec::new();
        let mut both = 0;
        for trial in 0..trials {
            let holder = match self.where_is().as_slice() {
                [one] => *one,
                other => panic!("trial {trial}: the VIP on {other:?}\n{}", self.logs()),
            };
            let other = 3 - holder;
            let dev = self.dev(&format!("n{holder}"));
            let cut = micros_now();
            must_in(
                &self.ns(&format!("n{holder}")),
                &["ip", "link", "set", &dev, "down"],
            );
            wait_for(Duration::from_secs(20), "the VIP on the other node", || {
                self.where_is().contains(&other)
            })
            .unwrap_or_else(|e| panic!("trial {trial}: {e}\n{}", self.logs()));
            if self.where_is().len() > 1 {
                both += 1;
            }
            // Every probe begun before the move has had its time out.
            std::thread::sleep(PROBE_TIMEOUT + Duration::from_millis(200));
            let outage = self.outage_after(cut);
            outages.push(outage);
            must_in(
                &self.ns(&format!("n{holder}")),
                &["ip", "link", "set", &dev, "up"],
            );
            wait_for(
                Duration::from_secs(30),
                "the cut node back, the VIP on one node",
                || {
                    self.sees_up(holder, other)
                        && self.sees_up(other, holder)
                        && self.where_is() == [other]
                },
            )
            .unwrap_or_else(|e| panic!("trial {trial}: {e}\n{}", self.logs()));
            // The cut node's copy must be ready to take over again: its
            // failure cleared, its checks passing.
            // (Refused when there is nothing to clear.)
            let _ = Command::new(bin())
                .arg("--socket")
                .arg(self.socket(other))
                .args(["cleanup", "vip", "--node", &holder.to_string()])
                .output();
        }
        outages.sort_by(f64::total_cmp);
        let at = |q: f64| outages[((outages.len() as f64 - 1.0) * q).round() as usize];
        let downs = self.downs();
        println!(
            "  {} x 5: {} trials, client outage p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, min {:.0} ms; nodes declared down {downs}; the VIP on both nodes after a move: {both}",
            self.interval,
            outages.len(),
            at(0.5),
            at(0.99),
            at(1.0),
            at(0.0)
        );
    }

    /// The client's outage around `cut`, in ms: from the last probe that
    /// connected before the first that failed, to the first that connected
    /// after the last that failed (by when they began), successes in
    /// between included: the whole window in which the client could not
    /// count on the service.
    fn outage_after(&self, cut: u128) -> f64 {
        let mut probes: Vec<(u128, bool)> = self
            .probes
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|(at, _)| *at + 100_000 >= cut)
            .collect();
        probes.sort_unstable();
        let (Some(first_fail), Some(last_fail)) = (
            probes.iter().position(|(_, ok)| !ok),
            probes.iter().rposition(|(_, ok)| !ok),
        ) else {
            return 0.0;
        };
        let before = probes[..first_fail]
            .iter()
            .rev()
            .find(|(_, ok)| *ok)
            .map_or(cut, |(at, _)| *at);
        let after = probes[last_fail..]
            .iter()
            .find(|(_, ok)| *ok)
            .map_or(u128::MAX, |(at, _)| *at);
        if std::env::var_os("VIP_BENCH_DEBUG").is_some() {
            let fails = probes.iter().filter(|(_, ok)| !ok).count();
            eprintln!(
                "cut {cut}: {} probes, {fails} failed, from +{} ms to +{} ms; last success before +{} ms, first after +{} ms",
                probes.len(),
                (probes[first_fail].0 as f64 - cut as f64) / 1000.0,
                (probes[last_fail].0 as f64 - cut as f64) / 1000.0,
                (before as f64 - cut as f64) / 1000.0,
                (after as f64 - cut as f64) / 1000.0
            );
        }
        after.saturating_sub(before) as f64 / 1000.0
    }

    /// The VIP left alone for `length` under 4 CPU hogs and a disk storm
    /// (4 KiB writes, each fsync'd): nodes declared down, and moves.
    fn under_load(&self, length: Duration, admin: bool) {
        let (downs_before, path_downs_before) = (self.downs(), self.path_downs());
        println!(
            "  {} x 5, idle so far: timer {}",
            self.interval,
            self.timers()
        );
        let storm = self.path("storm");
        let mut hogs: Vec<Child> = (0..4)
            .map(|_| {
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .unwrap()
            })
            .collect();
        if admin {
            // An administrator at work: a resource made and removed again
            // and again, each change a committed, fsync'd transaction on
            // every node.
            let cli = format!("{} --socket {}", bin(), self.socket(1).display());
            let dev = self.dev("n1");
            hogs.push(
                Command::new("sh")
                    .arg("-c")
                    .arg(format!(
                        "while :; do {cli} ins create --node 1 --tag extra --id extra --app ip --type vip --prop address=10.77.5.1/24 --prop interface={dev} >/dev/null 2>&1; {cli} ins remove extra >/dev/null 2>&1; done"
                    ))
                    .spawn()
                    .unwrap(),
            );
        }
        hogs.push(
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "while :; do dd if=/dev/zero of={} bs=4k count=256 oflag=dsync status=none; done",
                    storm.display()
                ))
                .spawn()
                .unwrap(),
        );
        let began = Instant::now();
        let mut moves = 0;
        let mut holder = self.where_is();
        while began.elapsed() < length {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.where_is();
            if now != holder {
                moves += 1;
                holder = now;
            }
        }
        for hog in &mut hogs {
            let _ = hog.kill();
            let _ = hog.wait();
        }
        run(&["pkill", "-f", &format!("of={}", storm.display())]);
        let (downs, path_downs) = (self.downs(), self.path_downs());
        let failed = self
            .probes
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, ok)| !ok)
            .count();
        println!(
            "  {} x 5, {:?} under 4 CPU hogs and an fsync'd disk storm{}: nodes declared down {} (paths {}), the VIP's changes of place {moves}, failed probes {failed}",
            self.interval,
            length,
            if admin {
                " and configuration changes"
            } else {
                ""
            },
            downs - downs_before,
            path_downs - path_downs_before
        );
        let timers = self.timers();
        println!("    timer since start: {timers}");
        if failed > 0 || moves > 0 || timers.is_empty() {
            // Something went wrong: the end of each daemon's log says what.
            for log in ["n1.log", "n2.log"] {
                let text = std::fs::read_to_string(self.path(log)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                println!("    --- the last lines of {log}:");
                for line in &lines[lines.len().saturating_sub(40)..] {
                    println!("    {line}");
                }
            }
        }
    }
}
