//! The `heartline appserver`, `heartline appmgr` and (internal)
//! `heartline appserver-launch` commands: their arguments, help, logging
//! and exit codes, around the server, the manager and keygen.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::manager::{self, Monitor, Outcome, Progress, Target, exit};
use super::proto::{DEFAULT_PORT, StartSpec};
use super::tls::{self, Role, TlsFiles};

/// Exit code of `appserver` when it cannot run as configured.
const SERVER_SETUP: u8 = 2;
/// Exit code of `appserver` when it fails while running.
const SERVER_FAILED: u8 = 1;

/// Keys and certificates for one side.
#[derive(Debug, Subcommand)]
pub enum Keygen {
    /// Make this side's authority, key and certificate (one command per
    /// side), then copy the printed authority file to the other side.
    Keygen {
        /// Where to write them.
        #[arg(long, default_value = tls::DEFAULT_DIR)]
        dir: PathBuf,
        /// A DNS name or IP address managers use to reach this guest
        /// (repeatable; default: this host's name, localhost, 127.0.0.1,
        /// ::1). Ignored by `appmgr keygen`.
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// Replace existing keys.
        #[arg(long)]
        force: bool,
    },
}

/// `heartline appserver`: run and watch commands for managers.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AppserverArgs {
    #[command(subcommand)]
    keygen: Option<Keygen>,
    /// The address and port to listen on.
    #[arg(long, default_value_t = format!("0.0.0.0:{DEFAULT_PORT}"))]
    listen: String,
    /// The directory of keys and certificates (from `appserver keygen`).
    #[arg(long, default_value = tls::DEFAULT_DIR)]
    dir: PathBuf,
    /// The authorities whose managers may connect (PEM, one or more);
    /// default DIR/appmgr-ca.crt.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Processes monitored at once, running or ended and not yet collected.
    #[arg(long, default_value_t = 1024)]
    max_processes: usize,
    /// Of those, at most this many for one manager connection (default: a
    /// quarter of --max-processes), so that one cannot take every slot.
    #[arg(long, value_name = "N")]
    max_per_manager: Option<usize>,
    /// Output bytes kept per process (older output is dropped).
    #[arg(long, default_value_t = 64 * 1024)]
    output_limit: usize,
}

/// `heartline appmgr`: have a command run on a guest and watch it.
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Exit codes: the application's own; 128+N if signal N killed it; \
240 lost contact with the appserver for --appserver-timeout (or never reached it); \
241 the appserver restarted and the application ended with it; \
242 the appserver refused to start the command; 243 bad arguments, keys or certificates."
)]
pub struct AppmgrArgs {
    #[command(subcommand)]
    keygen: Option<Keygen>,
    /// The guest's appserver: HOST or HOST:PORT.
    #[arg(long, required = true)]
    node: Option<String>,
    /// How often to ask for the application's status.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// How long the appserver may be silent before contact counts as lost.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    appserver_timeout: Duration,
    /// How long the application may go unmanaged (this manager gone)
    /// before the appserver stops it; default twice the appserver timeout.
    #[arg(long, value_parser = humantime::parse_duration)]
    orphan_timeout: Option<Duration>,
    /// When this manager is stopped (SIGTERM, Ctrl-C), how long the
    /// application gets between SIGTERM and SIGKILL.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    stop_grace: Duration,
    /// A variable for the application's environment (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// The application's working directory on the guest.
    #[arg(long)]
    cwd: Option<String>,
    /// The directory of keys and certificates (from `appmgr keygen`).
    #[arg(long, default_value = tls::DEFAULT_DIR)]
    dir: PathBuf,
    /// The authorities whose appservers are trusted (PEM, one or more);
    /// default DIR/appserver-ca.crt.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The name the appserver's certificate must hold; default the host
    /// of --node.
    #[arg(long)]
    server_name: Option<String>,
    /// Append this manager's log here too (created if missing).
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Keep this file saying where monitoring stands: `running PID
    /// PROCESS`, then `ended CODE: WHY`.
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
    /// The syslog socket warnings and errors go to.
    #[arg(long, default_value = "/dev/log", hide = true)]
    syslog_socket: PathBuf,
    /// The command to run on the guest, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

fn keygen(role: Role, keygen: Keygen) -> ExitCode {
    let Keygen::Keygen { dir, names, force } = keygen;
    let names = match role {
        Role::Appserver if names.is_empty() => tls::default_server_names(),
        Role::Appserver => names,
        Role::Appmgr => Vec::new(),
    };
    match tls::generate(&dir, role, &names, force) {
        Ok(made) => {
            let peer = match role {
                Role::Appserver => "cluster node that manages this guest",
                Role::Appmgr => "guest this node manages",
            };
            println!(
                "wrote {} (mode 0600), {} and {}",
                made.files.key.display(),
                made.files.cert.display(),
                made.authority.display()
            );
            if role == Role::Appserver {
                println!("the certificate is valid for: {}", names.join(", "));
            }
            println!(
                "copy {} to each {peer}, into its appmon directory; and put the other side's authority here as {}",
                made.authority.display(),
                made.files.trust.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("heartline {} keygen: {e}", role.name());
            ExitCode::from(SERVER_FAILED)
        }
    }
}

fn runtime(threaded: bool) -> std::io::Result<tokio::runtime::Runtime> {
    if threaded {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
}

/// Runs `heartline appserver`.
#[cfg(unix)]
pub fn appserver(args: AppserverArgs) -> ExitCode {
    if let Some(command) = args.keygen {
        return keygen(Role::Appserver, command);
    }
    let _log = crate::sys::logging::init(None, None);
    let fail = |code: u8, message: String| {
        tracing::error!("{message}");
        ExitCode::from(code)
    };
    let mut files = TlsFiles::in_dir(&args.dir, Role::Appserver);
    if let Some(ca) = args.ca {
        files = files.trusting(ca);
    }
    let tls = match tls::server_config(&files) {
        Ok(tls) => tls,
        Err(e) => return fail(SERVER_SETUP, format!("cannot set up TLS: {e}")),
    };
    let launcher = match std::env::current_exe() {
        Ok(path) => path,
        Err(e) => return fail(SERVER_FAILED, format!("cannot find my own executable: {e}")),
    };
    if args.max_processes == 0 {
        return fail(SERVER_SETUP, "--max-processes must be at least 1".into());
    }
    raise_descriptor_limit();
    let instance = match getrandom::u64() {
        Ok(n) => n,
        Err(e) => {
            return fail(
                SERVER_FAILED,
                format!("no randomness for the instance id: {e}"),
            );
        }
    };
    let per_manager = args
        .max_per_manager
        .unwrap_or(args.max_processes / 4)
        .clamp(1, args.max_processes);
    let limits = super::table::Limits {
        max_processes: args.max_processes,
        per_manager,
        output_bytes: args.output_limit,
    };
    let runtime = match runtime(true) {
        Ok(runtime) => runtime,
        Err(e) => {
            return fail(
                SERVER_FAILED,
                format!("cannot start the async runtime: {e}"),
            );
        }
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(&args.listen).await {
            Ok(listener) => listener,
            Err(e) => return fail(SERVER_FAILED, format!("cannot listen on {}: {e}", args.listen)),
        };
        let address = listener
            .local_addr()
            .map_or(args.listen.clone(), |a| a.to_string());
        tracing::info!(
            "appserver listening on {address} (instance {instance:016x}, at most {} processes, {} per manager, {} output bytes kept each, managers trusted from {})",
            limits.max_processes,
            limits.per_manager,
            limits.output_bytes,
            files.trust.display()
        );
        let table = super::table::Table::new(instance, limits, launcher);
        super::server::serve(listener, tls, table, crate::sys::system::shutdown_signal()).await;
        tracing::info!("appserver stopped");
        ExitCode::SUCCESS
    })
}

/// A thousand monitored processes need a few thousand descriptors (two
/// pipes each, plus their managers' connections): the soft limit goes up
/// to the hard one.
#[cfg(unix)]
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("open files stay limited to {soft}: {e}");
            }
        }
    }
}

/// Runs `heartline appserver` where it cannot run.
#[cfg(not(unix))]
pub fn appserver(args: AppserverArgs) -> ExitCode {
    if let Some(command) = args.keygen {
        return keygen(Role::Appserver, command);
    }
    eprintln!("heartline appserver: runs on Unix-like guests only");
    ExitCode::from(SERVER_SETUP)
}

/// `heartline appserver-launch`: what the appserver runs to start a
/// command, so that the command dies with the appserver.
#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// The appserver's pid.
    #[arg(long)]
    parent: u32,
    /// The command.
    #[arg(last = true, required = true)]
    argv: Vec<std::ffi::OsString>,
}

/// Runs `heartline appserver-launch`: asks for SIGKILL when the appserver
/// dies (so an appserver killed outright leaves no application running
/// unwatched), then becomes the command.
#[cfg(unix)]
pub fn launch(args: LaunchArgs) -> ExitCode {
    use std::os::unix::process::CommandExt;
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        eprintln!("heartline appserver: cannot tie the command to the appserver's life: {e}");
    }
    // The appserver may have died before the request above took effect.
    if nix::unistd::getppid().as_raw() as u32 != args.parent {
        eprintln!("heartline appserver: the appserver is gone; not starting the command");
        return ExitCode::from(1);
    }
    let error = std::process::Command::new(&args.argv[0])
        .args(&args.argv[1..])
        .exec();
    eprintln!(
        "heartline appserver: cannot run {}: {error}",
        args.argv[0].to_string_lossy()
    );
    ExitCode::from(127)
}

/// Runs `heartline appmgr`; its exit code is the application's, or one of
/// [`exit`].
pub fn appmgr(args: AppmgrArgs) -> ExitCode {
    if let Some(command) = args.keygen {
        return keygen(Role::Appmgr, command);
    }
    let setup_failure = |message: String| {
        eprintln!("heartline appmgr: {message}");
        ExitCode::from(exit::SETUP)
    };
    let target: Target = match args.node.as_deref().unwrap_or_default().parse() {
        Ok(target) => target,
        Err(e) => return setup_failure(format!("--node {e}")),
    };
    if args.command.is_empty() {
        return setup_failure(
            "no command given: put it after --, e.g. `-- /usr/bin/myapp --serve`".into(),
        );
    }
    if args.poll_interval.is_zero() || args.appserver_timeout < args.poll_interval {
        return setup_failure(format!(
            "--appserver-timeout ({:?}) must be at least --poll-interval ({:?}), which must be above 0",
            args.appserver_timeout, args.poll_interval
        ));
    }
    let orphan_timeout = args.orphan_timeout.unwrap_or(args.appserver_timeout * 2);
    if orphan_timeout < args.appserver_timeout {
        return setup_failure(format!(
            "--orphan-timeout ({orphan_timeout:?}) must be at least --appserver-timeout ({:?}), or the appserver could stop the application while this manager still reconnects",
            args.appserver_timeout
        ));
    }
    let log_file = match &args.log_file {
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => Some(file),
            Err(e) => {
                return setup_failure(format!("cannot open the log file {}: {e}", path.display()));
            }
        },
        None => None,
    };
    #[cfg(unix)]
    let (syslog, no_syslog) =
        match crate::sys::syslog::Syslog::open(args.syslog_socket.clone(), "heartline-appmgr") {
            Ok(syslog) => (Some(syslog), None),
            Err(e) => (None, Some(e)),
        };
    let _log = crate::sys::logging::init(
        log_file,
        #[cfg(unix)]
        syslog,
    );
    #[cfg(unix)]
    if let Some(e) = no_syslog {
        tracing::info!("no syslog at {}: {e}", args.syslog_socket.display());
    }
    let mut files = TlsFiles::in_dir(&args.dir, Role::Appmgr);
    if let Some(ca) = args.ca {
        files = files.trusting(ca);
    }
    let tls = match tls::client_config(&files) {
        Ok(tls) => tls,
        Err(e) => {
            tracing::error!("cannot set up TLS: {e}");
            return ExitCode::from(exit::SETUP);
        }
    };
    let monitor = Monitor {
        target,
        server_name: args.server_name,
        tls,
        poll_interval: args.poll_interval,
        timeout: args.appserver_timeout,
        stop_grace: args.stop_grace,
        spec: StartSpec {
            argv: args.command,
            env: args.env,
            cwd: args.cwd,
            orphan_timeout_ms: orphan_timeout.as_millis() as u64,
        },
    };
    let runtime = match runtime(false) {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(exit::SETUP);
        }
    };
    let state_file = args.state_file;
    let outcome = runtime.block_on(watch(&monitor, state_file.as_deref()));
    let code = outcome.exit_code();
    match &outcome {
        Outcome::Ended { stopped: true, .. } => tracing::info!("{outcome}; exit {code}"),
        _ => tracing::error!("{outcome}; exit {code}"),
    }
    record(state_file.as_deref(), &format!("ended {code}: {outcome}"));
    ExitCode::from(code)
}

async fn watch(monitor: &Monitor, state_file: Option<&Path>) -> Outcome {
    tracing::info!(
        "asking {} to run {:?} (poll every {:?}, contact lost after {:?})",
        monitor.target,
        monitor.spec.argv,
        monitor.poll_interval,
        monitor.timeout
    );
    let mut stdout = std::io::stdout();
    let mut progress = |event: Progress<'_>| match event {
        Progress::Started { process, pid } => {
            tracing::info!(%process, pid, "the application runs on {}", monitor.target);
            record(state_file, &format!("running {pid} {process}"));
        }
        Progress::Reattached { process } => {
            tracing::info!(%process, "re-attached to the application");
        }
        Progress::Output(bytes) => {
            let _ = stdout.write_all(bytes);
            let _ = stdout.flush();
        }
    };
    manager::run(
        monitor,
        crate::sys::system::shutdown_signal(),
        &mut progress,
    )
    .await
}

/// Replaces the state file's content (written aside, then renamed, so a
/// reader never sees half a line).
fn record(state_file: Option<&Path>, line: &str) {
    let Some(path) = state_file else {
        return;
    };
    let aside = path.with_extension("new");
    let written =
        std::fs::write(&aside, format!("{line}\n")).and_then(|()| std::fs::rename(&aside, path));
    if let Err(e) = written {
        tracing::warn!("cannot write the state file {}: {e}", path.display());
    }
}
