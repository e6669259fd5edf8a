//! Protected resources, measured with real daemons on loopback, printing
//! its figures: failover time from kill -9 of the primary's daemon and
//! application to the application running on the backup (fast heartbeat
//! profile), local recovery time from a killed application to it running
//! again, and configuration database operations per second.
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
        for node in 1..=nodes {
            let config = cluster.config_path(node);
            let mut text = std::fs::read_to_string(&config).unwrap();
            text.push_str(extra);
            std::fs::write(&config, text).unwrap();
        }
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

/// Waits, polling every millisecond, until `app` runs; how long it took
/// from `since`.
fn until_running(app: &SampleApp, since: Instant, limit: Duration) -> Duration {
    while !app.running() {
        assert!(since.elapsed() < limit, "not running within {limit:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
    since.elapsed()
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
    // application; the other node runs it. Then the killed node returns
    // (and leaves it where it is), and the next trial kills the other one.
    let mut site = Site::start(2, FAST, "1s");
    let apps = [site.app(1), site.app(2)];
    site.create(&apps[0], 1);
    site.create(&apps[1], 2);
    site.ask(
        1,
        Request::Change {
            change: Change::CreateEquivalency {
                a: Place {
                    node: 1,
                    tag: "app".into(),
                },
                b: Place {
                    node: 2,
                    tag: "app".into(),
                },
            },
        },
    );
    assert!(matches!(
        site.ask(1, Request::InService { tag: "app".into() }),
        Response::Done { .. }
    ));
    let mut owner = 1u16;
    let mut failovers = Vec::new();
    for _ in 0..trials {
        let backup = 3 - owner;
        // The backup takes over what it knows runs on the owner.
        wait_for(
            Duration::from_secs(10),
            "the backup knowing where it runs",
            || site.state(backup, owner) == Some(State::Isp),
        )
        .unwrap();
        site.cluster.kill(owner);
        let killed = Instant::now();
        apps[usize::from(owner - 1)].kill();
        failovers.push(until_running(
            &apps[usize::from(backup - 1)],
            killed,
            Duration::from_secs(10),
        ));
        site.cluster.start(owner).unwrap();
        wait_for(
            Duration::from_secs(10),
            "the killed node back, leaving the application where it is",
            || {
                site.cluster.all_up()
                    && site.state(owner, backup) == Some(State::Isp)
                    && site.state(owner, owner) == Some(State::Osu)
            },
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e}: node {owner} sees {:?} and {:?}; the backup's log:\n{}",
                site.state(owner, owner),
                site.state(owner, backup),
                site.cluster.log(backup)
            )
        });
        owner = backup;
    }
    report(
        "failover, kill -9 of the primary's daemon and application to the application running on the backup (20 ms x 5 heartbeats)",
        failovers,
    );
    drop(site);

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
