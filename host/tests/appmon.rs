//! Guest application monitoring with real processes and real TLS on
//! loopback: a real `heartline appserver`, real `heartline appmgr`
//! processes (and, for hundreds at once, the same manager code in-process),
//! exit codes, killed applications, a killed or restarted appserver, a
//! dropped connection, bad certificates, garbage on the port, limits,
//! orphans and zombies.

#![cfg(unix)]
#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use heartline::appmon::manager::{self, Monitor, Outcome, Progress, exit};
use heartline::appmon::proto::{
    ClientFrame, ErrorKind, MAX_REPLY, ProcessState, Request, ServerFrame, StartSpec, VERSION,
    read_frame, write_frame,
};
use heartline::appmon::tls::{self, Role, TlsFiles};
use heartline::demo::local_cluster::wait_for;
use heartline::demo::local_guest::{
    LocalGuest, keygen, proc_state, process_alive as alive, recorded_pid,
};

const BIN: &str = env!("CARGO_BIN_EXE_heartline");

fn guest(extra: &[&str]) -> LocalGuest {
    LocalGuest::start(Path::new(BIN), extra).unwrap()
}

/// A lock held by the test until opened: applications that run
/// `flock -s FILE true` wait at it, so the test decides when they exit.
struct Gate {
    path: PathBuf,
    held: Option<nix::fcntl::Flock<std::fs::File>>,
    _dir: tempfile::TempDir,
}

impl Gate {
    fn closed() -> Gate {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate");
        let file = std::fs::File::create(&path).unwrap();
        let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .unwrap();
        Gate {
            path,
            held: Some(held),
            _dir: dir,
        }
    }

    /// A shell command that waits at the gate, then exits with `code`.
    fn then_exit(&self, code: u8) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            format!("flock -s \"$0\" true; exit {code}"),
            self.path.display().to_string(),
        ]
    }

    fn open(&mut self) {
        self.held = None;
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let mut status = None;
    wait_for(limit, "a process to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    })
    .unwrap();
    status.unwrap()
}

/// Zombie children of `parent`.
fn zombies_of(parent: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_state(pid) == Some(('Z', parent)))
        .count()
}

fn assert_no_zombies(guest: &LocalGuest) {
    let pid = guest.pid().unwrap();
    wait_for(Duration::from_secs(10), "no zombie children", || {
        zombies_of(pid) == 0
    })
    .unwrap();
}

/// The pid `appmgr --state-file` recorded once the application runs.
fn running_pid(state_file: &Path) -> u32 {
    let mut pid = None;
    wait_for(Duration::from_secs(20), "the application to run", || {
        pid = recorded_pid(state_file);
        pid.is_some()
    })
    .unwrap();
    pid.unwrap()
}

/// `appmgr ARGS --state-file WORK/NAME -- sleep 1000` (its log dropped),
/// once the application runs: the appmgr, the application's pid and the
/// state file.
fn monitored_sleep(
    guest: &LocalGuest,
    work: &Path,
    name: &str,
    args: &[&str],
) -> (Child, u32, PathBuf) {
    let state = work.join(name);
    let mut args = args.to_vec();
    args.extend(["--state-file", state.to_str().unwrap()]);
    let appmgr = guest
        .appmgr(&args, &["sleep", "1000"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = running_pid(&state);
    (appmgr, pid, state)
}

fn client_tls(dir: &Path) -> Arc<rustls::ClientConfig> {
    tls::client_config(&TlsFiles::in_dir(dir, Role::Appmgr)).unwrap()
}

fn monitor(guest: &LocalGuest, address: &str, argv: Vec<String>, timeout: Duration) -> Monitor {
    Monitor {
        target: address.parse().unwrap(),
        server_name: Some("127.0.0.1".into()),
        tls: client_tls(guest.dir()),
        poll_interval: Duration::from_millis(200),
        timeout,
        stop_grace: Duration::from_secs(5),
        spec: StartSpec {
            argv,
            env: Vec::new(),
            cwd: None,
            orphan_timeout_ms: 20_000,
        },
    }
}

fn code_of(outcome: &Outcome) -> Option<i32> {
    match outcome {
        Outcome::Ended {
            status:
                heartline::appmon::proto::Status {
                    state: ProcessState::Exited { code },
                    ..
                },
            ..
        } => Some(*code),
        _ => None,
    }
}

#[test]
fn thirty_appmgrs_at_once_each_exit_with_their_applications_code() {
    let guest = guest(&[]);
    let mut gate = Gate::closed();
    let states = tempfile::tempdir().unwrap();
    let mut managers: Vec<(u8, PathBuf, Child)> = (0..30u8)
        .map(|code| {
            let state = states.path().join(format!("{code}.state"));
            let argv = gate.then_exit(code);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let child = guest
                .appmgr(
                    &[
                        "--poll-interval",
                        "200ms",
                        "--state-file",
                        state.to_str().unwrap(),
                    ],
                    &argv,
                )
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            (code, state, child)
        })
        .collect();
    let pids: Vec<u32> = managers
        .iter()
        .map(|(_, state, _)| running_pid(state))
        .collect();
    assert!(pids.iter().all(|&pid| alive(pid)), "all 30 run at once");
    gate.open();
    for (code, state, child) in &mut managers {
        let status = wait_exit(child, Duration::from_secs(30));
        assert_eq!(status.code(), Some(i32::from(*code)));
        let recorded = std::fs::read_to_string(state).unwrap();
        assert!(
            recorded.starts_with(&format!("ended {code}: ")),
            "{recorded}"
        );
    }
    assert_no_zombies(&guest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_processes_at_once_report_their_exit_codes() {
    let guest = guest(&[]);
    let mut gate = Gate::closed();
    let started = Arc::new(AtomicUsize::new(0));
    let mut managers = tokio::task::JoinSet::new();
    for i in 0..300usize {
        let code = (i % 256) as u8;
        let monitor = monitor(
            &guest,
            &guest.address(),
            gate.then_exit(code),
            Duration::from_secs(30),
        );
        let started = started.clone();
        managers.spawn(async move {
            let mut progress = |event: Progress<'_>| {
                if let Progress::Started { .. } = event {
                    started.fetch_add(1, Ordering::SeqCst);
                }
            };
            let outcome = manager::run(&monitor, std::future::pending(), &mut progress).await;
            (code, outcome)
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while started.load(Ordering::SeqCst) < 300 {
        assert!(
            Instant::now() < deadline,
            "only {} of 300 started",
            started.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gate.open();
    let mut ended = 0;
    while let Some(joined) = tokio::time::timeout(Duration::from_secs(60), managers.join_next())
        .await
        .unwrap()
    {
        let (code, outcome) = joined.unwrap();
        assert_eq!(code_of(&outcome), Some(i32::from(code)), "{outcome}");
        ended += 1;
    }
    assert_eq!(ended, 300);
    assert_no_zombies(&guest);
}

#[test]
fn killing_the_application_makes_appmgr_exit_with_its_status_and_log_it() {
    let guest = guest(&[]);
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("appmgr.log");
    let syslog_path = work.path().join("syslog");
    let syslog = std::os::unix::net::UnixDatagram::bind(&syslog_path).unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut appmgr, pid, _) = monitored_sleep(
        &guest,
        work.path(),
        "state",
        &[
            "--poll-interval",
            "5s",
            "--log-file",
            log.to_str().unwrap(),
            "--syslog-socket",
            syslog_path.to_str().unwrap(),
        ],
    );
    let killed_at = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = wait_exit(&mut appmgr, Duration::from_secs(10));
    assert_eq!(status.code(), Some(128 + 9));
    // Pushed, not polled: the exit arrives well before the 5 s poll.
    assert!(
        killed_at.elapsed() < Duration::from_secs(4),
        "took {:?}",
        killed_at.elapsed()
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("killed by signal 9; exit 137"), "{logged}");
    let mut datagram = [0u8; 1024];
    let n = syslog.recv(&mut datagram).unwrap();
    let line = String::from_utf8_lossy(&datagram[..n]);
    assert!(line.starts_with("<27>heartline-appmgr["), "{line}");
    assert!(line.contains("killed by signal 9"), "{line}");
    assert_no_zombies(&guest);
}

#[test]
fn killing_the_appserver_makes_appmgr_report_lost_contact_within_the_timeout() {
    let mut guest = guest(&[]);
    let work = tempfile::tempdir().unwrap();
    let (mut appmgr, pid, state) = monitored_sleep(
        &guest,
        work.path(),
        "state",
        &["--poll-interval", "200ms", "--appserver-timeout", "2s"],
    );
    let killed_at = Instant::now();
    guest.kill();
    let status = wait_exit(&mut appmgr, Duration::from_secs(20));
    let took = killed_at.elapsed();
    assert_eq!(status.code(), Some(i32::from(exit::LOST_CONTACT)));
    assert!(
        took < Duration::from_secs(2) + Duration::from_secs(3),
        "took {took:?}"
    );
    let recorded = std::fs::read_to_string(&state).unwrap();
    assert!(
        recorded.starts_with("ended 240: lost contact"),
        "{recorded}"
    );
    // The application does not outlive its appserver.
    wait_for(
        Duration::from_secs(10),
        "the application to die with the appserver",
        || !alive(pid),
    )
    .unwrap();
}

#[test]
fn after_an_appserver_restart_appmgr_reports_that_the_application_ended_with_it() {
    let mut guest = guest(&[]);
    let work = tempfile::tempdir().unwrap();
    let (mut appmgr, _, state) = monitored_sleep(
        &guest,
        work.path(),
        "state",
        &["--poll-interval", "200ms", "--appserver-timeout", "20s"],
    );
    guest.restart().unwrap();
    let status = wait_exit(&mut appmgr, Duration::from_secs(30));
    assert_eq!(status.code(), Some(i32::from(exit::APPSERVER_RESTARTED)));
    let recorded = std::fs::read_to_string(&state).unwrap();
    assert!(recorded.contains("the appserver restarted"), "{recorded}");
}

/// Forwards connections to `to` until its tasks are aborted.
async fn proxy(
    listener: tokio::net::TcpListener,
    to: String,
    cut: tokio::sync::watch::Receiver<u32>,
) {
    loop {
        let (mut inbound, _) = listener.accept().await.unwrap();
        let to = to.clone();
        let mut cut = cut.clone();
        cut.borrow_and_update();
        tokio::spawn(async move {
            let mut outbound = tokio::net::TcpStream::connect(to).await.unwrap();
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = cut.changed() => {}
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_reattached_and_monitoring_goes_on() {
    let guest = guest(&[]);
    let mut gate = Gate::closed();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let through = listener.local_addr().unwrap().to_string();
    let (cut, cuts) = tokio::sync::watch::channel(0u32);
    tokio::spawn(proxy(listener, guest.address(), cuts));
    let monitor = monitor(
        &guest,
        &through,
        gate.then_exit(42),
        Duration::from_secs(10),
    );
    let (events, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let managing = tokio::spawn(async move {
        let mut progress = |event: Progress<'_>| {
            let name = match event {
                Progress::Started { .. } => "started",
                Progress::Reattached { .. } => "reattached",
                Progress::Output(_) => "output",
            };
            let _ = events.send(name);
        };
        manager::run(&monitor, std::future::pending(), &mut progress).await
    });
    assert_eq!(next(&mut seen).await, "started");
    cut.send(1).unwrap();
    assert_eq!(next(&mut seen).await, "reattached");
    gate.open();
    let outcome = tokio::time::timeout(Duration::from_secs(20), managing)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code_of(&outcome), Some(42), "{outcome}");
    guest
        .wait_for_log("manager re-attached", Duration::from_secs(5))
        .unwrap();
}

#[test]
fn a_manager_whose_certificate_no_trusted_authority_signed_is_refused() {
    let guest = guest(&[]);
    // A manager with keys of its own making, which the guest never trusted
    // (it does trust the guest).
    let stranger = tempfile::tempdir().unwrap();
    keygen(Path::new(BIN), "appmgr", stranger.path()).unwrap();
    std::fs::copy(
        guest.dir().join("appserver-ca.crt"),
        stranger.path().join("appserver-ca.crt"),
    )
    .unwrap();
    let output = Command::new(BIN)
        .args([
            "appmgr",
            "--node",
            &guest.address(),
            "--appserver-timeout",
            "2s",
            "--dir",
        ])
        .arg(stranger.path())
        .args(["--", "true"])
        .output()
        .unwrap();
    // Refused at once as a setup problem, not waited out as lost contact.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(i32::from(exit::SETUP)),
        "{stderr}"
    );
    assert!(stderr.contains("refused over certificates"), "{stderr}");
    guest
        .wait_for_log(
            "refused a client: TLS handshake failed",
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(
        !guest.log_text().contains("started"),
        "{}",
        guest.log_text()
    );
}

#[test]
fn a_manager_checks_the_appservers_certificate_and_name() {
    let guest = guest(&[]);
    // Another guest's authority: the real guest's certificate does not
    // chain to it.
    let other = tempfile::tempdir().unwrap();
    keygen(Path::new(BIN), "appserver", other.path()).unwrap();
    let output = guest
        .appmgr(
            &[
                "--ca",
                other.path().join("appserver-ca.crt").to_str().unwrap(),
            ],
            &["true"],
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(i32::from(exit::SETUP)));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refused over certificates"), "{stderr}");
    assert!(stderr.contains("invalid peer certificate"), "{stderr}");
    // The right authority, but a name the certificate does not hold.
    let output = guest
        .appmgr(&["--server-name", "elsewhere.example"], &["true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(i32::from(exit::SETUP)));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not valid for name \"elsewhere.example\""),
        "{stderr}"
    );
    assert!(
        !guest.log_text().contains("started"),
        "{}",
        guest.log_text()
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let guest = guest(&[]);
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in
            rustls::pki_types::CertificateDer::pem_file_iter(guest.dir().join("appserver-ca.crt"))
                .unwrap()
        {
            roots.add(cert.unwrap()).unwrap();
        }
        roots
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(guest.address())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let outcome = async {
        let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        let start = ClientFrame {
            version: VERSION,
            id: 1,
            request: Request::Start(StartSpec {
                argv: vec!["true".into()],
                env: Vec::new(),
                cwd: None,
                orphan_timeout_ms: 1000,
            }),
        };
        write_frame(&mut stream, &start).await?;
        read_frame::<_, ServerFrame>(&mut stream, MAX_REPLY)
            .await
            .map_err(std::io::Error::other)
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), outcome)
        .await
        .unwrap();
    assert!(
        answer.is_err(),
        "an unauthenticated client got an answer: {answer:?}"
    );
    guest
        .wait_for_log(
            "refused a client: TLS handshake failed",
            Duration::from_secs(5),
        )
        .unwrap();
}

/// A TLS connection with the guest's own manager keys.
async fn authenticated(
    guest: &LocalGuest,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(guest.address())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(client_tls(guest.dir()))
        .connect(name, tcp)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_port_disturbs_no_other_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let guest = guest(&[]);
    let mut gate = Gate::closed();
    let monitor = monitor(
        &guest,
        &guest.address(),
        gate.then_exit(7),
        Duration::from_secs(10),
    );
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let managing = tokio::spawn(async move {
        let mut started_tx = Some(started_tx);
        let mut progress = |event: Progress<'_>| {
            if let (Progress::Started { .. }, Some(tx)) = (event, started_tx.take()) {
                let _ = tx.send(());
            }
        };
        manager::run(&monitor, std::future::pending(), &mut progress).await
    });
    tokio::time::timeout(Duration::from_secs(20), started)
        .await
        .unwrap()
        .unwrap();

    // Plain bytes where a TLS handshake belongs.
    let mut raw = tokio::net::TcpStream::connect(guest.address())
        .await
        .unwrap();
    let noise: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let _ = raw.write_all(&noise).await;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut sink))
        .await
        .unwrap();

    // An authenticated client sending a body that is no request, then one
    // announcing a frame far over the limit: each is told, then closed.
    for frame in [
        vec![0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0x7f, 0xff, 0xff, 0xff],
    ] {
        let mut stream = authenticated(&guest).await;
        stream.write_all(&frame).await.unwrap();
        let answer: ServerFrame = read_frame(&mut stream, MAX_REPLY).await.unwrap().unwrap();
        match answer {
            ServerFrame::Reply {
                id: 0,
                result: Err(refusal),
            } => {
                assert_eq!(refusal.kind, ErrorKind::Malformed, "{refusal}")
            }
            other => panic!("expected a malformed-request error, got {other:?}"),
        }
        let after: Result<Option<ServerFrame>, _> = read_frame(&mut stream, MAX_REPLY).await;
        assert!(
            matches!(after, Ok(None) | Err(_)),
            "the connection stays open: {after:?}"
        );
    }
    // A request of another protocol version is refused, the connection kept.
    let mut stream = authenticated(&guest).await;
    let future = ClientFrame {
        version: VERSION + 1,
        id: 9,
        request: Request::Release {
            process: heartline::appmon::proto::ProcessId {
                server: 1,
                serial: 1,
            },
        },
    };
    write_frame(&mut stream, &future).await.unwrap();
    match read_frame(&mut stream, MAX_REPLY).await.unwrap().unwrap() {
        ServerFrame::Reply {
            id: 9,
            result: Err(refusal),
        } => assert_eq!(refusal.kind, ErrorKind::Version),
        other => panic!("expected a version error, got {other:?}"),
    }

    gate.open();
    let outcome = tokio::time::timeout(Duration::from_secs(20), managing)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code_of(&outcome), Some(7), "{outcome}");
    guest
        .wait_for_log("malformed request", Duration::from_secs(5))
        .unwrap();
}

#[tokio::test]
async fn a_manager_that_falls_silent_is_dropped_and_its_application_stopped() {
    let guest = guest(&[]);
    let mut stream = authenticated(&guest).await;
    let start = ClientFrame {
        version: VERSION,
        id: 1,
        request: Request::Start(StartSpec {
            argv: vec!["sleep".into(), "1000".into()],
            env: Vec::new(),
            cwd: None,
            orphan_timeout_ms: 500,
        }),
    };
    write_frame(&mut stream, &start).await.unwrap();
    let pid = match read_frame(&mut stream, MAX_REPLY).await.unwrap().unwrap() {
        ServerFrame::Reply {
            id: 1,
            result: Ok(heartline::appmon::proto::Reply::Started { pid, .. }),
        } => pid,
        other => panic!("expected Started, got {other:?}"),
    };
    // Silent past the orphan timeout (500 ms asked, the 1 s minimum given):
    // the server closes the connection (as it would one whose host
    // vanished), then stops the orphan.
    let closed = tokio::time::timeout(
        Duration::from_secs(10),
        read_frame::<_, ServerFrame>(&mut stream, MAX_REPLY),
    )
    .await
    .unwrap();
    assert!(matches!(closed, Ok(None) | Err(_)), "{closed:?}");
    guest
        .wait_for_log("no request for 1s", Duration::from_secs(5))
        .unwrap();
    wait_for(Duration::from_secs(10), "the orphan to be stopped", || {
        !alive(pid)
    })
    .unwrap();
}

#[test]
fn limits_on_processes_and_output_are_enforced_with_clear_errors() {
    let guest = guest(&["--max-processes", "2", "--output-limit", "1000"]);
    let mut gate = Gate::closed();
    let states = tempfile::tempdir().unwrap();
    let argv = gate.then_exit(0);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut running: Vec<Child> = (0..2)
        .map(|i| {
            let state = states.path().join(format!("{i}"));
            let child = guest
                .appmgr(&["--state-file", state.to_str().unwrap()], &argv)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            running_pid(&state);
            child
        })
        .collect();
    let third = guest.appmgr(&[], &["true"]).output().unwrap();
    assert_eq!(third.status.code(), Some(i32::from(exit::CANNOT_START)));
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(
        stderr.contains("already monitors 2 processes, its limit (raise it with --max-processes)"),
        "{stderr}"
    );
    gate.open();
    for child in &mut running {
        assert_eq!(wait_exit(child, Duration::from_secs(20)).code(), Some(0));
    }

    // 5000 bytes written at the end: the last 1000 reach the manager.
    let chatty = guest
        .appmgr(&[], &["sh", "-c", "sleep 0.5; i=0; while [ $i -lt 500 ]; do printf '%09d\\n' $i; i=$((i+1)); done; exit 3"])
        .output()
        .unwrap();
    assert_eq!(chatty.status.code(), Some(3));
    assert_eq!(chatty.stdout.len(), 1000);
    assert!(chatty.stdout.ends_with(b"000000499\n"));
}

#[test]
fn a_command_the_guest_cannot_run_is_refused_with_the_reason() {
    let guest = guest(&[]);
    let output = guest.appmgr(&[], &["/no/such/program"]).output().unwrap();
    assert_eq!(output.status.code(), Some(i32::from(exit::CANNOT_START)));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot start /no/such/program: no such executable on the guest"),
        "{stderr}"
    );
    let output = guest
        .appmgr(&["--cwd", "/no/such/dir"], &["true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(i32::from(exit::CANNOT_START)));
    let output = guest
        .appmgr(&["--env", "noequals"], &["true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "clap's usage error");
}

#[test]
fn environment_and_working_directory_reach_the_application() {
    let guest = guest(&[]);
    let dir = tempfile::tempdir().unwrap();
    let output = guest
        .appmgr(
            &[
                "--env",
                "GREETING=hello there",
                "--cwd",
                dir.path().to_str().unwrap(),
            ],
            &["sh", "-c", "echo \"$GREETING from $(pwd)\""],
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let expected = format!(
        "hello there from {}\n",
        dir.path().canonicalize().unwrap().display()
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
}

#[test]
fn stopping_appmgr_stops_the_application_and_a_lost_manager_leaves_no_orphan() {
    let guest = guest(&[]);
    let work = tempfile::tempdir().unwrap();

    // SIGTERM to the manager: the application gets SIGTERM and both end.
    let (mut appmgr, pid, _) = monitored_sleep(&guest, work.path(), "stopped", &[]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(appmgr.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(
        wait_exit(&mut appmgr, Duration::from_secs(20)).code(),
        Some(128 + 15)
    );
    assert!(!alive(pid));

    // SIGKILL to the manager: the appserver stops the orphan after its timeout.
    let (mut appmgr, pid, _) = monitored_sleep(
        &guest,
        work.path(),
        "orphaned",
        &[
            "--poll-interval",
            "200ms",
            "--appserver-timeout",
            "1s",
            "--orphan-timeout",
            "1s",
        ],
    );
    appmgr.kill().unwrap();
    appmgr.wait().unwrap();
    wait_for(Duration::from_secs(15), "the orphan to be stopped", || {
        !alive(pid)
    })
    .unwrap();
    guest
        .wait_for_log(
            "stopping it so that it cannot run twice",
            Duration::from_secs(5),
        )
        .unwrap();
    assert_no_zombies(&guest);
}

#[test]
fn an_appserver_stopped_with_sigterm_stops_what_it_runs() {
    let mut guest = guest(&[]);
    let work = tempfile::tempdir().unwrap();
    let (mut appmgr, pid, _) =
        monitored_sleep(&guest, work.path(), "state", &["--appserver-timeout", "2s"]);
    assert!(guest.terminate().unwrap().success());
    assert!(!alive(pid));
    // The exit is pushed before the connection closes.
    assert_eq!(
        wait_exit(&mut appmgr, Duration::from_secs(20)).code(),
        Some(128 + 15)
    );
}

#[test]
fn missing_keys_are_a_setup_error_naming_the_file_and_the_fix() {
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["appmgr", "--node", "127.0.0.1:1", "--dir"])
        .arg(empty.path())
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(i32::from(exit::SETUP)));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("appserver-ca.crt: cannot read it (copy it from the appserver side"),
        "{stderr}"
    );
    let output = Command::new(BIN)
        .args(["appserver", "--listen", "127.0.0.1:0", "--dir"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("appmgr-ca.crt: cannot read it"), "{stderr}");
    let output = Command::new(BIN)
        .args(["appmgr", "--node", "host:notaport", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(i32::from(exit::SETUP)));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not HOST[:PORT]"));
    let output = Command::new(BIN)
        .args([
            "appmgr",
            "--node",
            "127.0.0.1:1",
            "--appserver-timeout",
            "10s",
        ])
        .args(["--orphan-timeout", "1s", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(i32::from(exit::SETUP)));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--orphan-timeout (1s) must be at least")
    );
}

/// The next progress event the manager reported, waiting at most 20 s.
async fn next(seen: &mut tokio::sync::mpsc::UnboundedReceiver<&'static str>) -> &'static str {
    tokio::time::timeout(Duration::from_secs(20), seen.recv())
        .await
        .unwrap()
        .unwrap()
}

/// Starts `sleep 1000` on `stream` as request `id`: the reply.
async fn start_sleep(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    id: u32,
) -> Result<heartline::appmon::proto::Reply, heartline::appmon::proto::Refusal> {
    let start = ClientFrame {
        version: VERSION,
        id,
        request: Request::Start(StartSpec {
            argv: vec!["sleep".into(), "1000".into()],
            env: Vec::new(),
            cwd: None,
            orphan_timeout_ms: 1_000,
        }),
    };
    write_frame(stream, &start).await.unwrap();
    match read_frame(stream, MAX_REPLY).await.unwrap().unwrap() {
        ServerFrame::Reply { id: got, result } if got == id => result,
        other => panic!("expected the reply to {id}, got {other:?}"),
    }
}

#[tokio::test]
async fn one_manager_gets_a_share_of_the_process_slots_not_all_of_them() {
    let guest = guest(&["--max-processes", "8", "--max-per-manager", "3"]);
    let mut greedy = authenticated(&guest).await;
    for id in 1..=3 {
        assert!(start_sleep(&mut greedy, id).await.is_ok());
    }
    let refusal = start_sleep(&mut greedy, 4).await.unwrap_err();
    assert_eq!(refusal.kind, ErrorKind::TooManyProcesses);
    assert!(
        refusal
            .message
            .contains("this manager already has 3 processes here, its share of the appserver's 8 (--max-per-manager)"),
        "{refusal}"
    );
    // Another manager still gets a slot.
    let mut other = authenticated(&guest).await;
    assert!(start_sleep(&mut other, 1).await.is_ok());
}

/// 5,000 idle plain TCP connections (no TLS) from another address while
/// the appserver may hold 1,024 descriptors: it closes all but its share
/// at once, and a real `appmgr` runs a command in well under its timeout.
#[test]
fn idle_strangers_cannot_keep_a_real_manager_out() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let guest = guest(&[]);
    let pid = guest.pid().unwrap();
    let limited = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=1024:1024"])
        .status()
        .is_ok_and(|s| s.success());
    if !limited {
        eprintln!("SKIPPED: prlimit (util-linux) cannot limit the appserver's descriptors");
        return;
    }
    // This process needs 5,000 descriptors for the strangers.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if hard < 6_000 {
        eprintln!("SKIPPED: this process may open only {hard} files");
        return;
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard.max(soft), hard).unwrap();
    let target: std::net::SocketAddr = guest.address().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let strangers: Vec<tokio::net::TcpStream> = runtime.block_on(async {
        let mut held = Vec::new();
        for _ in 0..5_000 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            if let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(2), socket.connect(target)).await
            {
                held.push(stream);
            }
        }
        held
    });
    let opened = strangers.len();
    // All but one address's share of the handshakes (an eighth of the
    // descriptors) are closed at once, not after the deadline (3 s).
    let still_open = |strangers: &[tokio::net::TcpStream]| {
        let mut buf = [0u8; 1];
        strangers
            .iter()
            .filter(|s| {
                matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            })
            .count()
    };
    let share = heartline::appmon::gate::Caps::for_limit(1024).per_source;
    let closed_at_once = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let open = still_open(&strangers);
            if open <= share || Instant::now() > deadline {
                break open;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert!(
        closed_at_once <= share,
        "{closed_at_once} of {opened} strangers still open"
    );
    let before = Instant::now();
    let output = guest.appmgr(&[], &["true"]).output().unwrap();
    let took = before.elapsed();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!(
        "appserver limited to 1,024 descriptors, {opened} idle stranger connections opened: appmgr ran `true` in {took:?}"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    // The log sums the strangers up rather than a line each.
    guest
        .wait_for_log(
            "unauthenticated connections at once",
            Duration::from_secs(15),
        )
        .unwrap();
    let log = guest.log_text();
    assert!(
        log.len() < 200_000,
        "{} bytes of log for {opened} strangers",
        log.len()
    );
    drop(strangers);
}
