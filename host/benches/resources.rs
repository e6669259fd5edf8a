//! Protected resources, measured with real daemons on loopback, printing
//! its figures: failover time from kill -9 of the primary's daemon and
//! application to the application running on the backup (fast heartbeat
//! profile; then with quorum and leases on 3 nodes, at the fast and the
//! default profile, and at the default profile with a fence device per
//! node), local recovery time from a killed application to it
//! running again, and configuration database operations per second.
//!
//! `cargo bench -p heartline --bench resources` (TRIALS=N to change the
//! number of trials, default 20).

#![allow(clippy::unwrap_used)] // a benchmark that cannot set up should panic

use std::path::Path;
use std::time::{Duration, Instant};

use heartline::control::client::ask_blocking;
use heartline::control::{Request, Response};
use heartline::demo::local_cluster::{LocalCluster, wait_for};
use heartline::demo::sample_app::{SampleApp, install_kits};
use heartline::resources::lcd::{Change, Init, Place, Resource, Role, State};

const BIN: &str = env!("CARGO_BIN_EXE_heartline");

/// The fast heartbeat profile: 20 ms × 5 misses, a dead node noticed in
/// 100 to 120 ms.
const FAST: &str = "\n[timing]\ninterval = \"20ms\"\nmisses = 5\n";

/// Quorum with the fast profile: a stop bound of 0.5 s; the lease is the
/// default, the slowest path's 100 ms + the stop bound + 1 s.
const QUORUM_FAST: &str = "\n[quorum]\nenabled = true\nstop_bound = \"500ms\"\n";

/// Quorum with every default: 0.5 s detection, a stop bound of 3 s, a
/// lease of 4.5 s.
const QUORUM_DEFAULT: &str = "\n[quorum]\nenabled = true\n";

/// How the node running the hierarchy is lost.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// kill -9 of its daemon and application.
    Kill,
    /// Its links to every other node cut (its daemon must stop the
    /// application itself).
    Cut,
}

/// The node running the hierarchy is lost (`loss`), `trials` times, on
/// `nodes` nodes configured with `extra`: the time until another node runs
/// it.
fn failover(trials: usize, nodes: u16, extra: &str, what: &str) {
    failover_by(Loss::Kill, trials, nodes, extra, what);
}

fn failover_by(loss: Loss, trials: usize, nodes: u16, extra: &str, what: &str) {
    let mut site = Site::start(nodes, extra, "1s");
    let apps: Vec<SampleApp> = (1..=nodes).map(|n| site.app(n)).collect();
    for (i, app) in apps.iter().enumerate() {
        site.create(app, u16::try_from(i + 1).unwrap());
    }
    for n in 2..=nodes {
        site.ask(
            1,
            Request::Change {
                change: Change::CreateEquivalency {
                    a: Place {
                        node: 1,
                        tag: "app".into(),
                    },
                    b: Place {
                        node: n,
                        tag: "app".into(),
                    },
                },
            },
        );
    }
    assert!(matches!(
        site.ask(1, Request::InService { tag: "app".into() }),
        Response::Done { .. }
    ));
    let mut owner = 1u16;
    let mut failovers = Vec::new();
    for _ in 0..trials {
        let others: Vec<u16> = (1..=nodes).filter(|&n| n != owner).collect();
        // The others take over what they know runs on the owner.
        wait_for(
            Duration::from_secs(20),
            "the others knowing where it runs",
            || {
                others
                    .iter()
                    .all(|&n| site.state(n, owner) == Some(State::Isp))
            },
        )
        .unwrap();
        let killed = Instant::now();
        if loss == Loss::Kill {
            site.cluster.kill(owner);
            apps[usize::from(owner - 1)].kill();
        } else {
            for &n in &others {
                site.cluster.link(owner, n, 0).unwrap().relay.block();
            }
        }
        let next = loop {
            if let Some(&n) = others.iter().find(|&&n| apps[usize::from(n - 1)].running()) {
                break n;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(20),
                "{what}: no takeover within 20 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        failovers.push(killed.elapsed());
        if loss == Loss::Kill {
            site.cluster.start(owner).unwrap();
        } else {
            assert!(
                !apps[usize::from(owner - 1)].running(),
                "{what}: the cut-off node still runs it"
            );
            for &n in &others {
                site.cluster.link(owner, n, 0).unwrap().relay.restore();
            }
        }
        wait_for(
            Duration::from_secs(20),
            "the killed node back, leaving the application where it is",
            || {
                site.cluster.all_up()
                    && site.state(owner, next) == Some(State::Isp)
                    && site.state(owner, owner) == Some(State::Osu)
            },
        )
        .unwrap();
        owner = next;
    }
    report(what, failovers);
}

struct Site {
    cluster: LocalCluster,
    work: tempfile::TempDir,
}

impl Site {
    fn start(nodes: u16, extra: &str, check_every: &str) -> Site {
        let paths = usize::from(nodes > 1);
        let mut cluster = LocalCluster::new(Path::new(BIN), nodes, paths).unwrap();
        let work = tempfile::tempdir().unwrap();
        let manifest = format!("quick_check_interval = \"{check_every}\"\nrecover_attempts = 1\n");
        install_kits(&cluster, &[("gen/app", &manifest)]).unwrap();
        cluster.add_config(extra).unwrap();
        cluster.start_all().unwrap();
        wait_for(Duration::from_secs(10), "every node up", || {
            cluster.all_up()
        })
        .unwrap();
        Site { cluster, work }
    }

    fn ask(&self, at: u16, request: Request) -> Response {
        ask_blocking(&self.cluster.socket(at), request).unwrap()
    }

    fn app(&self, node: u16) -> SampleApp {
        let events = self.work.path().join(format!("node{node}.log"));
        SampleApp::write(self.work.path(), node, "app", &events, "exec sleep 100000").unwrap()
    }

    fn create(&self, app: &SampleApp, priority: u16) {
        let change = Change::CreateResource(Resource {
            place: Place {
                node: app.node,
                tag: app.tag.clone(),
            },
            id: "/srv/app".into(),
            app: "gen".into(),
            rtype: "app".into(),
            state: State::Osu,
            init: Init::Autores,
            flags: Default::default(),
            info: String::new(),
            props: [
                ("start", &app.start),
                ("stop", &app.stop),
                ("check", &app.check),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.display().to_string()))
            // Every trial kills it: none may count towards a failover.
            .chain([("max_failures".to_string(), u32::MAX.to_string())])
            .collect(),
            priority,
            role: Role::Stopped,
        });
        assert!(matches!(
            self.ask(1, Request::Change { change }),
            Response::Changed { .. }
        ));
    }

    fn state(&self, at: u16, of: u16) -> Option<State> {
        match self.ask(at, Request::Lcd) {
            Response::Lcd(model) => model
                .resources
                .get(&Place {
                    node: of,
                    tag: "app".into(),
                })
                .map(|r| r.state),
            _ => None,
        }
    }
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    println!(
        "{what}: {} trials, p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms",
        samples.len(),
        at(0.5),
        at(0.99),
        at(0.0),
        at(1.0)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; this program takes no arguments.
    let trials: usize = std::env::var("TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(20);

    // Failover: the hierarchy runs on one node; kill -9 its daemon and its
    // application; another node runs it. Then the killed node returns (and
    // leaves it where it is), and the next trial kills the new owner.
    failover(
        trials,
        2,
        FAST,
        "failover, kill -9 of the primary's daemon and application to the application running on the backup (20 ms x 5 heartbeats)",
    );
    // The price of safety: the same with quorum and leases, on 3 nodes.
    failover(
        trials,
        3,
        &format!("{FAST}{QUORUM_FAST}"),
        "failover with quorum, 3 nodes (20 ms x 5 heartbeats, lease 1.6 s: stop bound 0.5 s)",
    );
    failover(
        trials,
        3,
        QUORUM_DEFAULT,
        "failover with quorum, 3 nodes (default 100 ms x 5 heartbeats, lease 4.5 s: stop bound 3 s)",
    );
    // With a fence device per node: an agent that confirms at once (it
    // reads its parameters and exits 0), so this is heartline's own cost
    // of fencing; a real agent adds its own time (fence_ipmilan against
    // ipmi_sim: about 0.6 s).
    let agents = tempfile::tempdir().unwrap();
    let agent = agents.path().join("fence_instant");
    std::fs::write(&agent, "#!/bin/sh\ncat >/dev/null\nexit 0\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let devices: String = (1..=3)
        .map(|n| {
            format!(
                "\n[[fence]]\nname = \"instant-{n}\"\nnode = {n}\nagent = \"{}\"\n",
                agent.display()
            )
        })
        .collect();
    // Link loss: the owner cut off from both others stops the application
    // itself within its lease; the others start it after the lease.
    failover_by(
        Loss::Cut,
        trials,
        3,
        &format!("{FAST}{QUORUM_FAST}"),
        "failover with quorum after link loss, 3 nodes (20 ms x 5 heartbeats, lease 1.6 s: stop bound 0.5 s)",
    );
    failover_by(
        Loss::Cut,
        trials,
        3,
        QUORUM_DEFAULT,
        "failover with quorum after link loss, 3 nodes (default 100 ms x 5 heartbeats, lease 4.5 s: stop bound 3 s)",
    );
    failover(
        trials,
        3,
        &format!("{QUORUM_DEFAULT}{devices}"),
        "failover with quorum and a fence device, 3 nodes (default 100 ms x 5 heartbeats, lease 4.5 s; an agent that confirms at once)",
    );
    failover(
        trials,
        3,
        &format!("{FAST}{QUORUM_FAST}{devices}"),
        "failover with quorum and a fence device, 3 nodes (20 ms x 5 heartbeats, lease 1.6 s; an agent that confirms at once)",
    );

    // Local recovery: kill the application; quickCheck (every 100 ms)
    // fails, recover (stop, start) brings it back.
    let site = Site::start(1, "", "100ms");
    let app = site.app(1);
    site.create(&app, 1);
    site.ask(1, Request::InService { tag: "app".into() });
    let mut recoveries = Vec::new();
    for _ in 0..trials {
        let old = app.pid();
        app.kill();
        let killed = Instant::now();
        while app.pid() == old || !app.running() {
            assert!(killed.elapsed() < Duration::from_secs(10), "not recovered");
            std::thread::sleep(Duration::from_millis(1));
        }
        recoveries.push(killed.elapsed());
    }
    report(
        "local recovery, kill -9 of the application to it running again (quickCheck every 100 ms)",
        recoveries,
    );

    // The configuration database through the control socket.
    let creates = 500;
    let start = Instant::now();
    for i in 0..creates {
        let change = Change::CreateResource(Resource {
            place: Place {
                node: 1,
                tag: format!("r{i}"),
            },
            id: format!("r{i}"),
            app: "gen".into(),
            rtype: "app".into(),
            state: State::Osu,
            init: Init::OutOfService,
            flags: Default::default(),
            info: String::new(),
            props: Default::default(),
            priority: 1,
            role: Role::Stopped,
        });
        assert!(matches!(
            site.ask(1, Request::Change { change }),
            Response::Changed { .. }
        ));
    }
    let elapsed = start.elapsed();
    println!(
        "ins create: {creates} in {:.2} s, {:.0} per second (each a committed SQLite transaction, synchronous = FULL)",
        elapsed.as_secs_f64(),
        f64::from(creates) / elapsed.as_secs_f64()
    );
    let lists = 500;
    let start = Instant::now();
    for _ in 0..lists {
        assert!(matches!(site.ask(1, Request::Lcd), Response::Lcd(_)));
    }
    let elapsed = start.elapsed();
    println!(
        "ins list ({} resources): {lists} in {:.2} s, {:.0} per second",
        creates + 1,
        elapsed.as_secs_f64(),
        f64::from(lists) / elapsed.as_secs_f64()
    );
}
