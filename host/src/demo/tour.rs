//! `heartline demo`: a 3-node cluster on loopback, on defaults, with no
//! setup. It shows the cluster converge, cuts one path (the node stays up),
//! sends a mailbox message, kills a node (the others declare it down, and
//! the detection time is measured), restarts it (the others see its new
//! incarnation), protects an application (recovered in place, failed
//! over once the lost node's quorum lease ends: quorum is on by default
//! with three nodes), protects an application on a guest through its appserver
//! (recovered in place), and ends with a summary.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use heartline_core::PathConfig;

use super::local_cluster::{ExtraPath, INTERRUPTED, LocalCluster, PathEnds, wait_for};
use super::local_guest::{LocalGuest, process_alive, recorded_pid};
use super::sample_app::{SampleApp, install_kits};
use crate::cli::status;
use crate::control::{Request, Response};
use crate::control::{client, ipc};

const ALPHA: u16 = 1;
const BRAVO: u16 = 2;
const CHARLIE: u16 = 3;

/// The demo's kits: checked every 200 ms, one local recovery.
const QUICK_KIT: &str = "quick_check_interval = \"200ms\"\nrecover_attempts = 1\n";

/// Runs the demonstration with `program` as the daemon binary. Ctrl-C or
/// SIGTERM ends it early, with every process it started stopped.
pub fn run(program: &Path) -> Result<(), String> {
    catch_interrupts();
    let result = tour(program);
    // Everything the tour started is stopped by now: dropped as it
    // returned.
    if INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
        return Err("interrupted; every process it started is stopped".into());
    }
    result
}

/// Catches Ctrl-C and SIGTERM for the demo's length: they are blocked in
/// this thread and the threads it starts (the programs it runs get a clean
/// mask: std resets it), and a thread waits for them and sets
/// [`INTERRUPTED`], which ends the wait under way.
fn catch_interrupts() {
    use nix::sys::signal::{SigSet, Signal};
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    if signals.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        if let Ok(signal) = signals.wait() {
            INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
            eprintln!("heartline demo: {signal} received: stopping what it started...");
        }
    });
}

/// The tour itself; what it starts is stopped when it returns, however.
fn tour(program: &Path) -> Result<(), String> {
    let defaults = PathConfig::default();
    // As people write durations (`100ms`).
    let human = |d: heartline_core::Duration| {
        humantime::format_duration(std::time::Duration::from(d)).to_string()
    };
    let bound_low = human(defaults.down_after());
    let bound_high = human(defaults.interval * (defaults.misses + 1));
    say(format_args!(
        "heartline demo: 3 daemons on loopback (alpha, bravo, charlie), 2 TCP paths between each pair,\n\
         heartbeats every {} with {} misses allowed (defaults).\n",
        human(defaults.interval),
        defaults.misses
    ));
    let serial = SerialPair::start();
    let lines = match &serial {
        Some(pair) => {
            say(format_args!(
                "Alpha and bravo also share a serial line: a socat pty pair standing in for an RS-232 cable."
            ));
            vec![ExtraPath {
                a: ALPHA,
                b: BRAVO,
                ends: PathEnds::Serial {
                    a_device: pair.a.clone(),
                    b_device: pair.b.clone(),
                },
            }]
        }
        None => {
            say(format_args!(
                "(socat is not installed, so this run has no serial path.)"
            ));
            Vec::new()
        }
    };
    let mut cluster = LocalCluster::with_extra_paths(program, 3, 2, lines)?;
    // On the daemon's defaults: with three nodes, quorum is on.
    cluster.default_quorum()?;
    say(format_args!(
        "Configs and logs (removed at the end): {}",
        cluster.dir().display()
    ));
    // The Generic and Guest Application kits, checked every 200 ms.
    install_kits(
        &cluster,
        &[("gen/app", QUICK_KIT), ("gen/appmon", QUICK_KIT)],
    )
    .map_err(|e| format!("cannot install the demo's kit: {e}"))?;
    cluster.start_all()?;
    let started = Instant::now();
    wait_for(Duration::from_secs(15), "the cluster to converge", || {
        cluster.all_up()
    })?;
    say(format_args!(
        "All three nodes see each other up after {:.0?}.\n",
        started.elapsed()
    ));
    say(format_args!(
        "{}",
        status::render(&cluster.status(ALPHA)?, None)
    ));

    let events = watch(&cluster.socket(ALPHA))?;

    say(format_args!(
        "1. Cutting path 0 between alpha and bravo (frames silently dropped)..."
    ));
    let cut = cluster
        .link(ALPHA, BRAVO, 0)
        .ok_or("no path 0 between alpha and bravo")?;
    cut.relay.block();
    wait_for(
        Duration::from_secs(5),
        "path 0 to go down at both ends",
        || {
            cluster.path_state(ALPHA, BRAVO, 0) == "down"
                && cluster.path_state(BRAVO, ALPHA, 0) == "down"
        },
    )?;
    let still_up = cluster.view(ALPHA, BRAVO).0 == "up" && cluster.view(BRAVO, ALPHA).0 == "up";
    say(format_args!(
        "   path 0 is down at both ends; alpha and bravo still see each other {} over their other paths.",
        if still_up { "up" } else { "DOWN" }
    ));
    if !still_up {
        return Err("losing one path took a node down".into());
    }
    cut.relay.restore();
    wait_for(Duration::from_secs(5), "path 0 to come back", || {
        cluster.path_state(ALPHA, BRAVO, 0) == "up"
    })?;
    say(format_args!("   path 0 restored and up again.\n"));

    say(format_args!(
        "2. Mailbox: alpha sends a message to bravo's mailbox 1..."
    ));
    let text = b"hello bravo, this is alpha".to_vec();
    match cluster.ask(
        ALPHA,
        Request::Send {
            node: BRAVO,
            mailbox: 1,
            payload: text.clone(),
            timeout_ms: 5_000,
        },
    ) {
        Ok(Response::Delivered) => {}
        other => return Err(format!("the message was not delivered: {other:?}")),
    }
    match cluster.ask(
        BRAVO,
        Request::Receive {
            mailbox: 1,
            timeout_ms: 5_000,
        },
    ) {
        Ok(Response::Message { from, payload, .. }) if payload == text => say(format_args!(
            "   delivered; bravo's rcv-msg got \"{}\" from node {from}.\n   \
             (The demo asks the daemons directly; from a shell: `echo hello | heartline --socket alpha.sock\n   \
             snd-msg --node bravo --mailbox 1` and `heartline --socket bravo.sock rcv-msg --mailbox 1`.)\n",
            String::from_utf8_lossy(&payload)
        )),
        other => return Err(format!("bravo did not receive it: {other:?}")),
    }

    say(format_args!("3. Killing charlie's daemon with SIGKILL..."));
    while events.try_recv().is_ok() {}
    let killed = Instant::now();
    cluster.kill(CHARLIE);
    let detected = wait_event(&events, "charlie (3) down", Duration::from_secs(5))?;
    let detection = detected.saturating_duration_since(killed);
    wait_for(
        Duration::from_secs(5),
        "bravo to declare charlie down",
        || cluster.view(BRAVO, CHARLIE).0 == "down",
    )?;
    say(format_args!(
        "   alpha declared charlie down {:.0?} after the kill (last heartbeat up to one interval before;\n   \
         the bound from the last heartbeat is {bound_low} to {bound_high}); bravo agrees.\n",
        detection
    ));

    say(format_args!("4. Restarting charlie..."));
    let (_, old) = cluster.view(ALPHA, CHARLIE);
    cluster.start(CHARLIE)?;
    wait_event(&events, "charlie (3) restarted", Duration::from_secs(10))?;
    wait_for(Duration::from_secs(15), "charlie up everywhere", || {
        cluster.all_up()
    })?;
    let (_, new) = cluster.view(ALPHA, CHARLIE);
    say(format_args!(
        "   alpha saw charlie restart: incarnation {} -> {}; all nodes up again.\n",
        old.map_or("?".into(), |i| i.to_string()),
        new.map_or("?".into(), |i| i.to_string())
    ));

    let (recovered, failed_over) = protect(program, &mut cluster)?;
    let guest_recovered = protect_on_guest(program, &cluster)?;

    drop(serial);
    say(format_args!(
        "Summary: one path cut without losing a node; a mailbox message delivered and acknowledged;\n\
         a crashed node detected in {detection:.0?}; its restart recognised by its new incarnation;\n\
         a protected application recovered in place in {recovered:.0?} and failed over to another node in {failed_over:.1?} (after alpha's lease);\n\
         an application on a guest, watched over mutual TLS, recovered in place in {guest_recovered:.0?}."
    ));
    Ok(())
}

/// The demo's applications, each killed (if it runs) when dropped.
struct KilledOnDrop(Vec<SampleApp>);

impl std::ops::Deref for KilledOnDrop {
    type Target = [SampleApp];
    fn deref(&self) -> &[SampleApp] {
        &self.0
    }
}

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        for app in &self.0 {
            app.kill();
        }
    }
}

/// Steps 5 to 7: a tiny HTTP responder protected on alpha and bravo;
/// killed, it is recovered in place; alpha killed, bravo runs it. Returns
/// how long each took until the application answered again.
fn protect(program: &Path, cluster: &mut LocalCluster) -> Result<(Duration, Duration), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    say(format_args!(
        "5. Protecting an application: a tiny HTTP responder on 127.0.0.1:{port}, resource `web`\n   \
         (Generic Application kit) on alpha (priority 1) and bravo (priority 2), configured on alpha."
    ));
    let events = cluster.dir().join("app-events.log");
    let apps: Vec<SampleApp> = [(ALPHA, "alpha"), (BRAVO, "bravo")]
        .into_iter()
        .map(|(node, name)| {
            let command = format!(
                "exec {} sample-http --port {port} --name {name}",
                program.display()
            );
            SampleApp::write(cluster.dir(), node, "web", &events, &command)
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot write the application's scripts: {e}"))?;
    // Killed when this step ends early (an error, Ctrl-C): the daemons
    // started them, and a daemon killed first leaves them running.
    let apps = KilledOnDrop(apps);
    // Changes need quorum: its lease comes from the peers' echoes, a few
    // heartbeats after charlie's restart.
    wait_for(Duration::from_secs(15), "quorum on alpha", || {
        matches!(
            cluster.ask(ALPHA, Request::Resources),
            Ok(Response::Resources(report)) if report.quorum.is_none_or(|q| q.quorate)
        )
    })?;
    for (app, priority) in apps.iter().zip([1, 2]) {
        admin(program, cluster, ALPHA, &app.create_args(priority))?;
    }
    admin(
        program,
        cluster,
        ALPHA,
        &[
            "eqv",
            "create",
            "--tag",
            "web",
            "--other-node",
            "2",
            "--other-tag",
            "web",
        ]
        .map(str::to_string),
    )?;
    admin(
        program,
        cluster,
        ALPHA,
        &["in-service".to_string(), "web".to_string()],
    )?;
    // Its start script returns once the process runs; the responder then
    // takes a moment to listen.
    wait_for(Duration::from_secs(10), "the application to answer", || {
        http_get(port).is_some()
    })?;
    let answer = http_get(port).ok_or("the application does not answer")?;
    say(format_args!(
        "   in service on alpha; it answers \"{answer}\".\n"
    ));

    say(format_args!(
        "6. Killing the responder's process (kill -9)..."
    ));
    let killed = Instant::now();
    apps[0].kill();
    let old = apps[0].pid();
    wait_for(
        Duration::from_secs(10),
        "the application recovered on alpha",
        || apps[0].running() && apps[0].pid() != old && http_get(port).is_some(),
    )?;
    let recovered = killed.elapsed();
    say(format_args!(
        "   its quickCheck failed and recover restarted it on alpha: answering again {recovered:.0?} after the kill.\n"
    ));

    say(format_args!(
        "7. Killing alpha's daemon and the responder (kill -9)..."
    ));
    cluster.kill(ALPHA);
    let killed = Instant::now();
    apps[0].kill();
    let lease = match cluster.ask(BRAVO, Request::Resources) {
        Ok(Response::Resources(report)) => report.quorum.map(|q| q.lease_ms),
        _ => None,
    };
    wait_for(
        Duration::from_secs(20),
        "bravo to take the application over",
        || http_get(port).is_some_and(|a| a.contains("bravo")),
    )?;
    let failed_over = killed.elapsed();
    say(format_args!(
        "   bravo (next by priority) brought it in service: \"{}\" {failed_over:.1?} after the kill.",
        http_get(port).unwrap_or_default()
    ));
    if let Some(lease) = lease {
        say(format_args!(
            "   It waited for alpha's quorum lease ({} ms) to run out: unheard, alpha might have run it until then.\n   \
             A fence device ([[fence]]) confirming alpha is off ends the wait sooner; a watchdog device on alpha\n   \
             ([quorum] watchdog) resets it by then if its daemon dies with the application running (the demo killed both).",
            lease
        ));
    }
    cluster.start(ALPHA)?;
    let alpha_web = crate::resources::lcd::Place {
        node: ALPHA,
        tag: "web".into(),
    };
    wait_for(
        Duration::from_secs(10),
        "alpha back, leaving the application on bravo",
        || {
            let state = match cluster.ask(ALPHA, Request::Lcd) {
                Ok(Response::Lcd(model)) => model.resources.get(&alpha_web).map(|r| r.state),
                _ => None,
            };
            state == Some(crate::resources::lcd::State::Osu)
                && http_get(port).is_some_and(|a| a.contains("bravo"))
        },
    )?;
    say(format_args!(
        "   alpha restarted, saw bravo running it, and left it there (its own instance out of service).\n"
    ));
    // Out of service rather than killed: a killed responder would be
    // recovered by bravo and outlive the demo.
    admin(
        program,
        cluster,
        BRAVO,
        &["out-of-service".to_string(), "web".to_string()],
    )?;
    if apps.iter().any(SampleApp::running) {
        return Err("the responder still runs after out-of-service".into());
    }
    Ok((recovered, failed_over))
}

/// Step 8: an appserver on this machine stands in for a guest; a Guest
/// Application resource on bravo runs a command there through appmgr;
/// killed on the guest, it is restarted. Returns how long that took.
fn protect_on_guest(program: &Path, cluster: &LocalCluster) -> Result<Duration, String> {
    let guest =
        LocalGuest::start(program, &[]).map_err(|e| format!("cannot start the guest: {e}"))?;
    say(format_args!(
        "8. Guest monitoring: an appserver on {} stands in for a guest (a VM, a container);\n   \
         `appserver keygen` and `appmgr keygen` made each side's keys (mutual TLS 1.3). Resource `guestapp`\n   \
         (Guest Application kit) on bravo has it run `sleep` there, watched by an appmgr.",
        guest.address()
    ));
    let create = guest.resource_args(BRAVO, 1, "guestapp", "exec sleep 100000");
    admin(program, cluster, BRAVO, &create)?;
    admin(
        program,
        cluster,
        BRAVO,
        &["in-service".into(), "guestapp".into()],
    )?;
    let state_file = cluster.dir().join("bravo.state/appmon/guestapp.state");
    let guest_pid =
        |not: u32| recorded_pid(&state_file).filter(|&pid| pid != not && process_alive(pid));
    let first = guest_pid(0).ok_or("the guest application is not running")?;
    say(format_args!("   in service: pid {first} on the guest."));
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|e| format!("cannot kill the guest application: {e}"))?;
    wait_for(
        Duration::from_secs(15),
        "the guest application restarted",
        || guest_pid(first).is_some(),
    )?;
    let recovered = killed.elapsed();
    say(format_args!(
        "   killed on the guest: the appserver pushed its exit (137) to appmgr at once, bravo's quickCheck failed,\n   \
         and recover started it again (pid {}): {recovered:.0?} after the kill.",
        guest_pid(first).unwrap_or_default()
    ));
    admin(
        program,
        cluster,
        BRAVO,
        &["out-of-service".into(), "guestapp".into()],
    )?;
    say(format_args!(
        "   taken out of service: appmgr stopped it on the guest.\n"
    ));
    Ok(recovered)
}

/// Runs a configuration or resource command on `node`'s daemon.
/// Runs `heartline ARGS` against `node`'s daemon, showing the command as
/// an operator would type it (the socket named relative to the demo's
/// directory).
fn admin(program: &Path, cluster: &LocalCluster, node: u16, args: &[String]) -> Result<(), String> {
    let socket = cluster.socket(node);
    let shown = socket
        .strip_prefix(cluster.dir())
        .unwrap_or(&socket)
        .display()
        .to_string();
    let words: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect();
    say(format_args!(
        "   $ heartline --socket {shown} {}",
        words.join(" ")
    ));
    let output = Command::new(program)
        .arg("--socket")
        .arg(cluster.socket(node))
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "heartline {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The body of an HTTP GET of 127.0.0.1:`port`, if it answers.
fn http_get(port: u16) -> Option<String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split("\r\n\r\n").nth(1).map(str::to_string)
}

/// A pty pair from socat, removed on drop.
struct SerialPair {
    socat: Child,
    a: PathBuf,
    b: PathBuf,
    _dir: tempfile::TempDir,
}

impl SerialPair {
    fn start() -> Option<SerialPair> {
        let dir = tempfile::Builder::new()
            .prefix("heartline-tty-")
            .tempdir()
            .ok()?;
        let (a, b) = (dir.path().join("ttyA"), dir.path().join("ttyB"));
        let socat = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut pair = SerialPair {
            socat,
            a,
            b,
            _dir: dir,
        };
        match wait_for(Duration::from_secs(3), "socat's ptys", || {
            pair.a.exists() && pair.b.exists()
        }) {
            Ok(()) => Some(pair),
            Err(_) => {
                let _ = pair.socat.kill();
                None
            }
        }
    }
}

impl Drop for SerialPair {
    fn drop(&mut self) {
        let _ = self.socat.kill();
        let _ = self.socat.wait();
    }
}

fn say(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stdout(), "{args}");
}

/// Alpha's event stream, each line with the instant it arrived.
fn watch(socket: &Path) -> Result<mpsc::Receiver<(Instant, String)>, String> {
    let (stream, mut write) = ipc::connect_blocking(socket).map_err(|e| e.to_string())?;
    write
        .write_all(&client::request_line(Request::Watch).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if let Ok(Response::Event { text, .. }) = client::response_of(&line) {
                if tx.send((Instant::now(), text)).is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// Waits for an event containing `text`; returns when it arrived.
fn wait_event(
    events: &mpsc::Receiver<(Instant, String)>,
    text: &str,
    limit: Duration,
) -> Result<Instant, String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok((at, line)) if line.contains(text) => return Ok(at),
            Ok(_) => {}
            Err(_) => {
                return Err(format!(
                    "no \"{text}\" event within {}",
                    humantime::format_duration(limit)
                ));
            }
        }
    }
}
