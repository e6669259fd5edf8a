//! Protected resources on a real daemon: the configuration database and its
//! CLI, a hierarchy of Generic Application resources brought in service
//! children first and out parents first, local recovery of a killed
//! application, the refusals of bad input, and the database through kill -9.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{BIN, CHECKED_OFTEN, Site};
use heartline::demo::local_cluster::wait_for;
use heartline::demo::sample_app::{SampleApp as App, copy_kit};

#[test]
fn a_hierarchy_comes_up_in_order_recovers_locally_and_goes_down_in_order() {
    let node = Site::start(1);
    let apps: Vec<App> = ["data", "app", "web"]
        .iter()
        .map(|t| node.app(1, t))
        .collect();
    for app in &apps {
        node.create(1, app, 1);
    }
    node.ok(1, &["dep", "create", "--parent", "web", "--child", "app"]);
    node.ok(1, &["dep", "create", "--parent", "app", "--child", "data"]);
    let listed = node.ok(1, &["dep", "list"]);
    assert!(
        listed.contains("web") && listed.contains("data"),
        "{listed}"
    );

    let steps = node.ok(1, &["in-service", "web"]);
    assert_eq!(
        steps
            .lines()
            .map(|l| l.split(':').next().unwrap())
            .collect::<Vec<_>>(),
        ["restore data", "restore app", "restore web"],
        "{steps}"
    );
    assert_eq!(node.events(1), ["start data", "start app", "start web"]);
    assert!(apps.iter().all(App::running));
    assert!(
        ["data", "app", "web"]
            .iter()
            .all(|t| node.state(t) == "ISP")
    );

    // Kill the middle application: its quickCheck fails and recover
    // (stop, then start) brings it back here.
    let app = &apps[1];
    let old = app.pid().unwrap();
    let killed = Instant::now();
    app.kill();
    wait_for(Duration::from_secs(10), "app recovered locally", || {
        app.pid().is_some_and(|pid| pid != old) && app.running()
    })
    .unwrap();
    eprintln!(
        "local recovery: app answering again {:?} after kill -9 (quickCheck every 200 ms)",
        killed.elapsed()
    );
    wait_for(Duration::from_secs(5), "app ISP again", || {
        node.state("app") == "ISP"
    })
    .unwrap();
    assert!(
        node.cluster.log(1).contains("recover"),
        "{}",
        node.cluster.log(1)
    );

    // A recovery that cannot work: the start script now fails, so after
    // two attempts the hierarchy is taken out of service here (parents
    // first) and the application marked failed, for another node to take.
    let good_start = std::fs::read_to_string(&app.start).unwrap();
    std::fs::write(&app.start, "#!/bin/sh\necho cannot start >&2\nexit 1\n").unwrap();
    app.kill();
    wait_for(
        Duration::from_secs(10),
        "app OSF after failed recovery",
        || node.state("app") == "OSF",
    )
    .unwrap_or_else(|e| panic!("{e}: {}", node.cluster.log(1)));
    assert_eq!(node.state("web"), "OSU");
    assert_eq!(node.state("data"), "OSU");
    let log = node.cluster.log(1);
    assert!(log.contains("recovery of app failed"), "{log}");

    // Repaired, it comes back in service; sendevent (the alarm interface)
    // runs recovery on demand.
    std::fs::write(&app.start, good_start).unwrap();
    node.ok(1, &["in-service", "web"]);
    assert!(
        ["data", "app", "web"]
            .iter()
            .all(|t| node.state(t) == "ISP")
    );
    let old = app.pid().unwrap();
    node.ok(
        1,
        &["sendevent", "-C", "gen/app", "-E", "down", "-i", "app"],
    );
    assert_eq!(node.state("app"), "ISP");
    assert!(
        app.running() && app.pid() != Some(old),
        "recover restarted it"
    );

    let before = node.events(1).len();
    let steps = node.ok(1, &["out-of-service", "data"]);
    assert_eq!(steps.lines().count(), 3, "{steps}");
    assert_eq!(
        node.events(1)[before..],
        ["stop web", "stop app", "stop data"]
    );
    assert!(
        ["data", "app", "web"]
            .iter()
            .all(|t| node.state(t) == "OSU")
    );
    assert!(!apps.iter().any(App::running));
}

#[test]
fn bad_input_is_refused_with_a_reason_and_changes_nothing() {
    let mut node = Site::start(1);
    for tag in ["web", "db"] {
        node.create(1, &node.app(1, tag), 1);
    }
    node.ok(1, &["dep", "create", "--parent", "web", "--child", "db"]);
    let generation = node.generation(1);

    let e = node.refused(1, &["dep", "create", "--parent", "db", "--child", "web"]);
    assert!(e.contains("cycle on node 1: db -> web -> db"), "{e}");

    let e = node.refused(
        1,
        &[
            "ins", "create", "--tag", "x", "--id", "x", "--app", "nope", "--type", "thing",
        ],
    );
    assert!(
        e.contains("no recovery kit for resource type nope/thing"),
        "{e}"
    );

    // A kit whose restore script is not executable.
    let kits = node.cluster.dir().join("kits");
    let broken = node.work.path().join("broken");
    copy_kit(&broken, "gen/app", CHECKED_OFTEN).unwrap();
    std::fs::rename(broken.join("gen/app"), kits.join("broken/app")).unwrap_or_else(|_| {
        std::fs::create_dir_all(kits.join("broken")).unwrap();
        std::fs::rename(broken.join("gen/app"), kits.join("broken/app")).unwrap();
    });
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        kits.join("broken/app/actions/restore"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    // Kits are read at start.
    node.cluster.kill(1);
    node.cluster.start(1).unwrap();
    let e = node.refused(
        1,
        &[
            "ins", "create", "--tag", "y", "--id", "y", "--app", "broken", "--type", "app",
        ],
    );
    assert!(e.contains("restore") && e.contains("chmod +x"), "{e}");

    // The same resource on node 2 with the same priority.
    node.ok(
        1,
        &[
            "ins", "create", "--tag", "db", "--id", "db", "--app", "gen", "--type", "app",
            "--node", "2",
        ],
    );
    let generation = generation.max(node.generation(1));
    let e = node.refused(
        1,
        &[
            "eqv",
            "create",
            "--tag",
            "db",
            "--other-node",
            "2",
            "--other-tag",
            "db",
        ],
    );
    assert!(e.contains("priority 1 is already"), "{e}");
    let e = node.refused(1, &["hry", "setpri", "db", "0"]);
    assert!(e.contains("1 (first choice) to 1024"), "{e}");
    let e = node.refused(1, &["ins", "remove", "nothing"]);
    assert!(e.contains("no resource nothing on node 1"), "{e}");
    let e = node.refused(1, &["in-service", "nothing"]);
    assert!(e.contains("no resource nothing"), "{e}");
    assert_eq!(node.generation(1), generation, "nothing changed");

    // verify reports a hierarchy extended to node 2 without its dependency.
    node.ok(
        1,
        &[
            "ins",
            "create",
            "--tag",
            "web",
            "--id",
            "web",
            "--app",
            "gen",
            "--type",
            "app",
            "--node",
            "2",
            "--priority",
            "2",
        ],
    );
    node.ok(
        1,
        &[
            "eqv",
            "create",
            "--tag",
            "web",
            "--other-node",
            "2",
            "--other-tag",
            "web",
        ],
    );
    let out = node.cli(1, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("but its dependency db"), "{report}");
    node.ok(
        1,
        &[
            "eqv",
            "remove",
            "--tag",
            "web",
            "--other-node",
            "2",
            "--other-tag",
            "web",
        ],
    );
    node.ok(1, &["ins", "remove", "web", "--node", "2"]);

    // With distinct priorities the equivalency is made.
    node.ok(1, &["hry", "setpri", "db", "2", "--node", "2"]);
    node.ok(
        1,
        &[
            "eqv",
            "create",
            "--tag",
            "db",
            "--other-node",
            "2",
            "--other-tag",
            "db",
        ],
    );
    // Node 2 is not in this one-node cluster's configuration: no name.
    assert!(node.ok(1, &["eqv", "list"]).contains("db on node 2"));
}

#[test]
fn every_acknowledged_change_survives_kill_9_of_the_daemon() {
    let mut node = Site::start(1);
    let socket = node.cluster.socket(1);
    let writer = std::thread::spawn(move || {
        let mut acknowledged = Vec::new();
        for i in 0..10_000 {
            let tag = format!("r{i}");
            let out = Command::new(BIN)
                .arg("--socket")
                .arg(&socket)
                .args([
                    "ins", "create", "--tag", &tag, "--id", &tag, "--app", "gen", "--type", "app",
                ])
                .output()
                .unwrap();
            if !out.status.success() {
                break;
            }
            acknowledged.push(tag);
        }
        acknowledged
    });
    wait_for(Duration::from_secs(60), "50 changes acknowledged", || {
        node.generation(1) >= 51
    })
    .unwrap();
    node.cluster.kill(1);
    let acknowledged = writer.join().unwrap();
    node.cluster.start(1).unwrap();
    let tags: Vec<String> = node
        .resources(1)
        .into_iter()
        .map(|r| r["place"]["tag"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|t| !tags.contains(t)).collect();
    eprintln!(
        "{} changes acknowledged before kill -9, {} in the database after restart",
        acknowledged.len(),
        tags.len()
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(acknowledged.len() >= 50);
}

/// The same three resources, web on app on data, on nodes 1, 2 and 3 with
/// priorities 1, 2 and 3, all configured from node 1 and extended to the
/// other nodes by equivalencies.
fn three_node_hierarchy(site: &Site) -> Vec<Vec<App>> {
    let tags = ["data", "app", "web"];
    let apps: Vec<Vec<App>> = (1..=3)
        .map(|node| tags.iter().map(|t| site.app(node, t)).collect())
        .collect();
    for (node, node_apps) in (1u16..).zip(&apps) {
        for app in node_apps {
            site.create(1, app, node);
        }
        let n = node.to_string();
        site.ok(
            1,
            &[
                "dep", "create", "--parent", "web", "--child", "app", "--node", &n,
            ],
        );
        site.ok(
            1,
            &[
                "dep", "create", "--parent", "app", "--child", "data", "--node", &n,
            ],
        );
    }
    for tag in tags {
        for other in ["2", "3"] {
            site.ok(
                1,
                &[
                    "eqv",
                    "create",
                    "--tag",
                    tag,
                    "--other-node",
                    other,
                    "--other-tag",
                    tag,
                ],
            );
        }
    }
    apps
}

fn running(apps: &[App]) -> bool {
    apps.iter().all(App::running)
}

#[test]
fn three_nodes_share_one_configuration_and_fail_over_by_priority() {
    let mut site = Site::start(3);
    let apps = three_node_hierarchy(&site);
    let generation = site.generation(1);
    wait_for(
        Duration::from_secs(5),
        "every node at the same generation",
        || (2..=3).all(|n| site.generation(n) == generation),
    )
    .unwrap();
    let verified = site.ok(3, &["verify"]);
    assert!(verified.contains("ok: every node agrees"), "{verified}");

    // A change made on node 3 is seen on 1 and 2.
    site.ok(
        3,
        &["ins", "setinit", "web", "out-of-service", "--node", "3"],
    );
    wait_for(Duration::from_secs(5), "node 3's change everywhere", || {
        (1..=2).all(|n| {
            site.resources(n).iter().any(|r| {
                r["place"]["node"] == 3
                    && r["place"]["tag"] == "web"
                    && r["init"] == "out-of-service"
            })
        })
    })
    .unwrap();

    // Two nodes make the same change at once: the coordinator takes one
    // and refuses the other.
    let racers: Vec<_> = [2u16, 3]
        .into_iter()
        .map(|at| {
            let socket = site.cluster.socket(at);
            std::thread::spawn(move || {
                Command::new(BIN)
                    .arg("--socket")
                    .arg(socket)
                    .args([
                        "ins", "create", "--tag", "dup", "--id", "dup", "--app", "gen", "--type",
                        "app", "--node", "1",
                    ])
                    .output()
                    .unwrap()
            })
        })
        .collect();
    let outcomes: Vec<Output> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    assert_eq!(outcomes.iter().filter(|o| o.status.success()).count(), 1);
    let loser = outcomes.iter().find(|o| !o.status.success()).unwrap();
    assert!(
        String::from_utf8_lossy(&loser.stderr).contains("resource dup on node 1 already exists"),
        "{}",
        String::from_utf8_lossy(&loser.stderr)
    );

    // --on runs a command on another node through this one.
    let status = site.ok(1, &["--on", "2", "status"]);
    assert!(status.contains("node 2 (bravo)"), "{status}");

    // A switchover needs the hierarchy on the node it goes to.
    let e = site.refused(1, &["switchover", "dup", "--to", "2"]);
    assert!(e.contains("bravo (2) has no instance"), "{e}");

    // In service on node 1; nodes 2 and 3 know it, and status shows it.
    site.ok(1, &["in-service", "web"]);
    assert!(running(&apps[0]));
    let status = site.ok(1, &["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("web ") && l.contains("ISP") && l.contains("restore exited 0")),
        "{status}"
    );
    wait_for(Duration::from_secs(5), "node 1's states everywhere", || {
        site.state_of(3, 1, "web") == "ISP"
    })
    .unwrap();
    let e = site.refused(2, &["in-service", "web"]);
    assert!(e.contains("runs on alpha (1)"), "{e}");

    // Recovery that cannot work on node 1: it gives the hierarchy up and
    // node 2, next by priority, brings it in service, children first.
    std::fs::write(&apps[0][1].start, "#!/bin/sh\nexit 1\n").unwrap();
    let killed = Instant::now();
    apps[0][1].kill();
    wait_for(
        Duration::from_secs(15),
        "the hierarchy running on node 2",
        || running(&apps[1]),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nnode 1:\n{}\nnode 2:\n{}",
            site.cluster.log(1),
            site.cluster.log(2)
        )
    });
    eprintln!(
        "failover after failed local recovery: running on node 2 {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(site.events(2), ["start data", "start app", "start web"]);
    assert_eq!(site.state_of(1, 1, "app"), "OSF");
    assert!(
        !apps[0].iter().any(App::running),
        "node 1 took it out of service"
    );

    // Switchover to node 3 by its name, asked on node 1; a name no node
    // has is refused with the names there are.
    let out = site.cli(1, &["switchover", "web", "--to", "zulu"]);
    let error = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{error}");
    assert!(
        error.contains(
            "no node named `zulu` in this cluster; its nodes: alpha (1), bravo (2), charlie (3)"
        ),
        "{error}"
    );
    let steps = site.ok(1, &["switchover", "web", "--to", "charlie"]);
    // --on and --node by name too.
    let listed = site.ok(1, &["--on", "bravo", "ins", "list", "--node", "charlie"]);
    let nodes: Vec<&str> = listed
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        !nodes.is_empty() && nodes.iter().all(|n| *n == "charlie"),
        "{listed}"
    );
    assert!(
        steps.contains("bravo (2): remove web") && steps.contains("charlie (3): restore web"),
        "{steps}"
    );
    assert!(running(&apps[2]) && !apps[1].iter().any(App::running));

    // kill -9 of node 3's daemon and its application: node 2 (priority 2;
    // node 1 failed it) brings it in service.
    site.cluster.kill(3);
    let killed = Instant::now();
    for app in &apps[2] {
        app.kill();
    }
    wait_for(
        Duration::from_secs(10),
        "node 2 taking over from node 3",
        || running(&apps[1]),
    )
    .unwrap_or_else(|e| panic!("{e}\nnode 2:\n{}", site.cluster.log(2)));
    eprintln!(
        "failover after kill -9 of node 3's daemon and application: running on node 2 {:?} later",
        killed.elapsed()
    );

    // Refused: a switchover to a node that is down.
    let e = site.refused(1, &["switchover", "web", "--to", "3"]);
    assert!(e.contains("charlie (3) is not up"), "{e}");
    // Status shows every hierarchy across the cluster: it runs on bravo,
    // charlie's state is only its last known, and app failed on alpha.
    // Node 1 learns bravo's states from its reports, a moment after the
    // applications run: wait for the report, not for a time.
    let mut status = String::new();
    let shown = wait_for(
        Duration::from_secs(10),
        "status showing bravo's takeover",
        || {
            status = site.ok(1, &["status"]);
            status
                .lines()
                .find(|l| l.trim_start().starts_with("app+data+web "))
                .is_some_and(|web| {
                    web.contains("runs on bravo (2), charlie (3)?; FAILED: app on alpha (1)")
                        && web.contains("charlie (3) in service?")
                        && web.contains("alpha (1) out of service, app OSF")
                        // Where it would go if bravo were lost: nowhere,
                        // and why, node by node.
                        && web.contains("; next: none (")
                        && web.contains("app is OSF on alpha (1)")
                        && web.contains("charlie (3) is not up")
                })
        },
    );
    assert!(shown.is_ok(), "{status}");
    // The failures across the cluster: app's on alpha, its state, its
    // fail-count and its last failure, when and what; the same from bravo,
    // which asks alpha for it.
    for (node, status) in [(1, status.clone()), (2, site.ok(2, &["status"]))] {
        let failed = status
            .lines()
            .find(|l| l.trim_start().starts_with("app on alpha (1): OSF, "))
            .unwrap_or_else(|| panic!("node {node}: no failure of app: {status}"));
        assert!(
            failed.contains(" counted; last failed ") && failed.contains(" ago: "),
            "node {node}: {failed}"
        );
    }
    // What node 3 ran is listed as only the last known while it is down.
    let listed = site.ok(1, &["ins", "list", "--node", "charlie"]);
    assert!(
        listed.contains("ISP?")
            && listed.contains("? charlie (3) is down: the state shown is the last known"),
        "{listed}"
    );

    // A change while node 3 is down reaches it when it returns, and it does
    // not start what node 2 runs.
    site.ok(
        2,
        &["ins", "setinit", "data", "out-of-service", "--node", "3"],
    );
    site.cluster.start(3).unwrap();
    wait_for(Duration::from_secs(10), "node 3 caught up", || {
        site.generation(3) == site.generation(1)
            && site.resources(3).iter().any(|r| {
                r["place"]["node"] == 3
                    && r["place"]["tag"] == "data"
                    && r["init"] == "out-of-service"
            })
    })
    .unwrap_or_else(|e| panic!("{e}\nnode 3:\n{}", site.cluster.log(3)));
    let verified = site.ok(1, &["verify"]);
    assert!(verified.contains("ok: every node agrees"), "{verified}");
    assert!(running(&apps[1]) && !apps[2].iter().any(App::running));
    // Dropping the site kills the daemons, then the applications: killed
    // first, they would be recovered by a daemon about to die.
}

/// `watch --json --tag web`: one JSON object per line with the wall-clock
/// time, only the events that name `web` (not `web2`).
#[test]
fn watch_prints_wall_clock_json_lines_filtered_by_tag() {
    use std::io::BufRead;
    let site = Site::start(1);
    let web = site.app(1, "web");
    let web2 = site.app(1, "web2");
    site.create(1, &web, 1);
    site.create(1, &web2, 1);
    let mut watch = Command::new(BIN)
        .arg("--socket")
        .arg(site.cluster.socket(1))
        .args(["watch", "--json", "--tag", "web"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (lines, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    // Events for web2 (filtered out) and web, until the watcher, once
    // connected, prints one.
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        site.ok(1, &["in-service", "web2"]);
        site.ok(1, &["in-service", "web"]);
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
            break line;
        }
        assert!(Instant::now() < deadline, "no event naming web");
        site.ok(1, &["out-of-service", "web"]);
        site.ok(1, &["out-of-service", "web2"]);
    };
    let _ = watch.kill();
    let _ = watch.wait();
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    let text = event["text"].as_str().unwrap();
    assert!(text.contains("web") && !text.contains("web2"), "{line}");
    let time = event["time"].as_str().unwrap();
    let year: u32 = time[..4].parse().unwrap();
    assert!(year >= 2024 && time.ends_with('Z'), "{line}");
    assert!(event["uptime_ms"].as_u64().is_some(), "{line}");
}
