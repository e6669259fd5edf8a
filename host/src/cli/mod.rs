//! The command-line interface: the commands and their arguments ([`Cli`]),
//! carrying each out ([`run`]) by asking the daemon over the control
//! socket, starting the daemon itself, or checking a configuration, and
//! their output: one line on standard error and an exit code for a
//! failure ([`Failure`], [`exit`]), the status table ([`status`]), and the
//! configuration database's commands and listings ([`lcdi`]).
//!
//! The binary (`main.rs`) parses the arguments and hands the commands that
//! run on their own (`appserver`, `appmgr`, the demo and its application)
//! to their modules, and every other to [`run`].

mod database;
pub mod lcdi;
pub mod status;

use std::future::Future;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{self, Config};
use crate::control::client::{self, ClientError};
use crate::control::{Request, Response};
use crate::{appmon, daemon};

/// Exit codes, documented in docs/admin.md.
pub mod exit {
    /// The operation failed (not delivered, not reachable).
    pub const FAILED: u8 = 1;
    /// Bad usage or a bad configuration.
    pub const USAGE: u8 = 2;
    /// No daemon answers on the control socket.
    pub const NO_DAEMON: u8 = 3;
    /// The timeout passed first.
    pub const TIMEOUT: u8 = 4;
    /// The configuration database is damaged, emptied or missing committed
    /// changes (the daemon refuses to start), or a backup to restore is
    /// damaged: the message says how to recover.
    pub const DATABASE: u8 = 5;
}

/// The version of `status --json`'s layout (its `schema` field): fields
/// are added without changing it; one removed, renamed or changed in
/// meaning raises it.
pub const STATUS_SCHEMA: u32 = 1;

/// The command line.
#[derive(Debug, Parser)]
#[command(version, about = "heartline: high-availability cluster manager")]
pub struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, env = "HEARTLINE_SOCKET", default_value = config::DEFAULT_CONTROL_SOCKET)]
    pub socket: PathBuf,
    /// Run the command on another node of the cluster (its id or name),
    /// through this node's daemon (status, resource and configuration
    /// commands). Every node argument takes a name or an id.
    #[arg(long, global = true, value_name = "NODE", value_parser = node_id)]
    pub on: Option<u16>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The control socket named on the command line (or by
/// `HEARTLINE_SOCKET`, or the default), for [`node_id`] to ask the daemon
/// for node names while the command line is parsed.
static SOCKET: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The cluster's node names and ids, as the daemon knows them: asked once,
/// the first time a node is named rather than numbered.
static NAMES: std::sync::OnceLock<Result<std::collections::BTreeMap<String, u16>, String>> =
    std::sync::OnceLock::new();

/// Parses the command line; a node may be given by name or id wherever
/// one is asked for (`--to bravo`, `--on 2`).
#[must_use]
pub fn parse(args: Vec<std::ffi::OsString>) -> Cli {
    let named = args.iter().enumerate().find_map(|(i, a)| {
        let a = a.to_string_lossy();
        if let Some(path) = a.strip_prefix("--socket=") {
            Some(PathBuf::from(path))
        } else if a == "--socket" {
            args.get(i + 1).map(PathBuf::from)
        } else {
            None
        }
    });
    let socket = named
        .or_else(|| std::env::var_os("HEARTLINE_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONTROL_SOCKET));
    let _ = SOCKET.set(socket);
    Cli::parse_from(args)
}

/// A node given on the command line: its id, or its name as the daemon
/// knows it (this node's and its peers').
pub fn node_id(text: &str) -> Result<u16, String> {
    if let Ok(id) = text.parse::<u16>() {
        return Ok(id);
    }
    if text.is_empty()
        || !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!("`{text}` is neither a node id nor a node name"));
    }
    let names = NAMES.get_or_init(|| {
        let socket = SOCKET
            .get()
            .cloned()
            .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONTROL_SOCKET));
        match client::ask_blocking(&socket, Request::Status) {
            Ok(Response::Status(status)) => {
                let report = &status.comm;
                let mut names = std::collections::BTreeMap::new();
                names.insert(report.name.clone(), report.node);
                for peer in &report.peers {
                    names.entry(peer.name.clone()).or_insert(peer.node);
                }
                Ok(names)
            }
            Ok(other) => Err(unexpected(other).message),
            Err(e) => Err(e.to_string()),
        }
    });
    let names = names
        .as_ref()
        .map_err(|e| format!("cannot look up node `{text}`: {e}"))?;
    names.get(text).copied().ok_or_else(|| {
        let known: Vec<String> = names.iter().map(|(n, id)| format!("{n} ({id})")).collect();
        format!(
            "no node named `{text}` in this cluster; its nodes: {}",
            known.join(", ")
        )
    })
}

/// heartline's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a 3-node cluster on this machine and show what heartline does:
    /// a path cut, a mailbox message, a node killed and restarted.
    Demo,
    /// A tiny HTTP responder answering "hello from NAME" on
    /// 127.0.0.1:PORT: the application the demo protects.
    #[command(hide = true)]
    SampleHttp {
        /// The port.
        #[arg(long)]
        port: u16,
        /// Who answers.
        #[arg(long)]
        name: String,
    },
    /// Run the daemon.
    Daemon {
        /// The configuration file.
        #[arg(long, default_value = config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Run a quorum witness for clusters of two (or an even number of)
    /// nodes, on a third machine: it holds one vote per cluster served and
    /// grants it to one partition at a time. See docs/admin.md's witness
    /// section for its configuration file.
    Witness {
        /// The witness's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Check the file and exit.
        #[arg(long)]
        check: bool,
    },
    /// Check a configuration file without starting anything.
    CheckConfig {
        /// The configuration file.
        #[arg(default_value = config::DEFAULT_CONFIG)]
        file: PathBuf,
    },
    /// Write a new random cluster secret (mode 0600) for `cluster.key_file`.
    Keygen {
        /// Where to write it; must not exist.
        file: PathBuf,
    },
    /// Show nodes, paths and their counters.
    Status {
        /// Print JSON instead of a table (its fields: docs/admin.md,
        /// "status --json").
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Redraw the status every `--every` until interrupted (in place on
        /// a terminal, as crm_mon; one snapshot after another when piped).
        #[arg(long)]
        watch: bool,
        /// How often `--watch` redraws.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, requires = "watch")]
        every: std::time::Duration,
        /// Colour: `auto` (on a terminal, unless NO_COLOR is set), `always`
        /// or `never`.
        #[arg(long, value_enum, default_value_t = status::Colour::Auto)]
        colour: status::Colour,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell), as
    /// `heartline completions bash > /etc/bash_completion.d/heartline`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), as `heartline manpage >
    /// /usr/share/man/man1/heartline.1`, or read it with `heartline
    /// manpage | man -l -`.
    Manpage {
        /// Write the pages into this directory instead: `heartline.1` and
        /// one per command (`heartline-status.1`, `heartline-ins-create.1`,
        /// ...), as packages install them.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
    /// Print every event as it happens, until interrupted, each with its
    /// wall-clock time (UTC).
    Watch {
        /// One JSON object per line: `time` (RFC 3339, UTC), `uptime_ms`
        /// (since the daemon started), `text`.
        #[arg(long)]
        json: bool,
        /// Only events that name this node (`node 2`, or its name).
        #[arg(long, value_parser = node_id)]
        node: Option<u16>,
        /// Only events that name this resource tag.
        #[arg(long)]
        tag: Option<String>,
    },
    /// Send standard input to a mailbox on a node; exit 0 once delivered.
    SndMsg {
        /// Destination node (id or name).
        #[arg(long, value_parser = node_id)]
        node: u16,
        /// Destination mailbox.
        #[arg(long)]
        mailbox: u16,
        /// Give up after this long (e.g. 5s).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Print one message from a mailbox, waiting for one to arrive.
    RcvMsg {
        /// The mailbox.
        #[arg(long)]
        mailbox: u16,
        /// Give up after this long (e.g. 5s).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Exit 0 if the node is reachable over some path, 1 if not.
    CanTalk {
        /// The node (id or name).
        #[arg(long, value_parser = node_id)]
        node: u16,
    },
    /// Resource instances in the configuration database.
    #[command(subcommand)]
    Ins(lcdi::Ins),
    /// Dependencies between resources.
    #[command(subcommand)]
    Dep(lcdi::Dep),
    /// Equivalencies: a resource and its counterpart on another node.
    #[command(subcommand)]
    Eqv(lcdi::Eqv),
    /// Whole hierarchies.
    #[command(subcommand)]
    Hry(lcdi::Hry),
    /// Bring the hierarchy containing TAG in service on this node, children
    /// first.
    InService {
        /// A resource of the hierarchy.
        tag: String,
    },
    /// Take the hierarchy containing TAG out of service on this node,
    /// parents first.
    OutOfService {
        /// A resource of the hierarchy.
        tag: String,
    },
    /// Move the hierarchy containing TAG to another node: out of service
    /// where it runs, then in service there.
    Switchover {
        /// A resource of the hierarchy, on this node.
        tag: String,
        /// The node to run it.
        #[arg(long, value_parser = node_id)]
        to: u16,
    },
    /// Check that every node agrees on the configuration, that every
    /// hierarchy is sane and runs where it should, once; exit 1 listing the
    /// problems if not.
    Verify,
    /// Clear a resource's failure (OSF, or BLOCKED after a failed stop:
    /// make sure it is stopped first) and its fail-count.
    Cleanup {
        /// The resource.
        tag: String,
        /// Its node (default: this one).
        #[arg(long, value_parser = node_id)]
        node: Option<u16>,
    },
    /// Put a node in standby: its hierarchies move to other nodes and it is
    /// given none until `unstandby`.
    Standby {
        /// The node.
        #[arg(value_parser = node_id)]
        node: u16,
    },
    /// Take a node out of standby (nothing moves back to it by itself).
    Unstandby {
        /// The node.
        #[arg(value_parser = node_id)]
        node: u16,
    },
    /// Cluster-wide maintenance mode: while on, nothing is checked,
    /// recovered, started or stopped by the cluster (for upgrades).
    Maintenance {
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        mode: String,
    },
    /// Take the coordinator's configuration, whatever this node holds (when
    /// `verify` says this node's differs).
    Resync,
    /// Copy this node's configuration database to FILE (SQLite's online
    /// backup: the daemon may run), checked with quick_check.
    Backup {
        /// The daemon's configuration file (it names the database).
        #[arg(long)]
        config: PathBuf,
        /// Where to write the copy (replaced if it exists).
        file: PathBuf,
    },
    /// Put the backup FILE in place of this node's configuration database,
    /// with the daemon stopped; the replaced files are moved aside.
    Restore {
        /// The daemon's configuration file (it names the database).
        #[arg(long)]
        config: PathBuf,
        /// A file written by `heartline backup`.
        file: PathBuf,
    },
    /// Move this node's configuration database aside, with the daemon
    /// stopped: it starts empty and takes the cluster's configuration when
    /// it joins the other nodes.
    DiscardDatabase {
        /// The daemon's configuration file (it names the database).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run and watch commands for appmgr on cluster nodes, over mutual TLS
    /// (on the guest).
    Appserver(appmon::cli::AppserverArgs),
    /// Have a command run on a guest's appserver and watch it; exits with
    /// its exit code (on the cluster node).
    Appmgr(Box<appmon::cli::AppmgrArgs>),
    /// What the appserver runs to start a command.
    #[command(hide = true)]
    AppserverLaunch(appmon::cli::LaunchArgs),
    /// Raise a failure event for a resource: the daemon recovers it.
    Sendevent {
        /// The event's class (e.g. the resource type).
        #[arg(short = 'C', long)]
        class: String,
        /// The event (e.g. down).
        #[arg(short = 'E', long)]
        event: String,
        /// The failed resource's tag.
        #[arg(short = 'i', long = "instance")]
        tag: String,
    },
}

/// A failure, as one line and an exit code.
#[derive(Debug)]
pub struct Failure {
    /// The exit code (see [`exit`]).
    pub code: u8,
    /// What went wrong, in one line.
    pub message: String,
}

impl Failure {
    /// A failure with exit code `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match e {
            ClientError::NoDaemon(_) => exit::NO_DAEMON,
            ClientError::Protocol(_) | ClientError::Denied(_) => exit::FAILED,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<daemon::Error> for Failure {
    fn from(e: daemon::Error) -> Self {
        match e {
            daemon::Error::BadConfig(message) => Failure::new(exit::USAGE, message),
            daemon::Error::Failed(message) => Failure::new(exit::FAILED, message),
            daemon::Error::Database(message) => Failure::new(exit::DATABASE, message),
        }
    }
}

/// Carries out `cli` and returns the process's exit code, having printed a
/// failure as one line on standard error.
pub fn run(cli: Cli) -> ExitCode {
    block_on(execute(cli))
}

/// Runs `work` on a new multi-thread runtime and returns the process's
/// exit code, having printed a failure as one line on standard error.
pub fn block_on(work: impl Future<Output = Result<(), Failure>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("heartline: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("heartline: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn execute(cli: Cli) -> Result<(), Failure> {
    let socket = cli.socket;
    let on = Target(cli.on);
    let remote_ok = matches!(
        cli.command,
        Command::Status { .. }
            | Command::Ins(_)
            | Command::Dep(_)
            | Command::Eqv(_)
            | Command::Hry(_)
            | Command::InService { .. }
            | Command::OutOfService { .. }
            | Command::Switchover { .. }
            | Command::Verify
            | Command::Sendevent { .. }
            | Command::Cleanup { .. }
            | Command::Standby { .. }
            | Command::Unstandby { .. }
            | Command::Maintenance { .. }
            | Command::Resync
    );
    if on.0.is_some() && !remote_ok {
        return Err(Failure::new(
            exit::USAGE,
            "--on runs status, resource and configuration commands only",
        ));
    }
    match cli.command {
        Command::Demo => Err(Failure::new(
            exit::USAGE,
            "the demo runs on Unix-like systems only",
        )),
        Command::AppserverLaunch(_) => Err(Failure::new(
            exit::USAGE,
            "appserver-launch runs on Unix-like systems only",
        )),
        Command::Appserver(_) | Command::Appmgr(_) | Command::SampleHttp { .. } => {
            unreachable!("handled in main")
        }
        Command::Daemon { config } => daemon::run(&config).await.map_err(Failure::from),
        Command::Witness { config, check } => {
            let file = crate::witness::config::WitnessFile::load(&config)
                .map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
            if check {
                println!(
                    "{}: ok: witness {} ({}), {} clusters",
                    config.display(),
                    file.id.0,
                    file.name,
                    file.clusters.len()
                );
                return Ok(());
            }
            crate::witness::server::run(file)
                .await
                .map_err(|e| Failure::new(exit::FAILED, e))
        }
        Command::CheckConfig { file } => {
            let config =
                Config::load(&file).map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
            let paths: usize = config.peers.iter().map(|p| p.paths.len()).sum();
            println!(
                "{}: ok: cluster {} (id {}), node {} ({}), {} peers, {} paths",
                file.display(),
                config.cluster_name,
                config.cluster.0,
                config.node.0,
                config.name,
                config.peers.len(),
                paths
            );
            Ok(())
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut command, "heartline", &mut text);
            print_all(&text)
        }
        Command::Manpage { dir: Some(dir) } => {
            std::fs::create_dir_all(&dir)
                .and_then(|()| {
                    clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &dir)
                })
                .map_err(|e| {
                    Failure::new(
                        exit::FAILED,
                        format!("cannot write the manual pages to {}: {e}", dir.display()),
                    )
                })?;
            Ok(())
        }
        Command::Manpage { dir: None } => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut page)
                .map_err(|e| {
                    Failure::new(exit::FAILED, format!("cannot render the manual page: {e}"))
                })?;
            print_all(&page)
        }
        Command::Keygen { file } => {
            config::write_new_key(&file).map_err(|e| Failure::new(exit::FAILED, e))?;
            println!(
                "wrote a new 256-bit cluster secret to {} (mode 0600); copy it to every node",
                file.display()
            );
            Ok(())
        }
        Command::Status { json: true, .. } => {
            let report = status_report(&socket, on).await?;
            let mut value = serde_json::to_value(&report)
                .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
            if let Some(object) = value.as_object_mut() {
                object.insert("schema".into(), STATUS_SCHEMA.into());
            }
            let text = serde_json::to_string_pretty(&value)
                .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
            println!("{text}");
            Ok(())
        }
        Command::Status {
            watch: false,
            colour,
            ..
        } => {
            let text = status_text(&socket, on).await?;
            print!("{}", status::paint(&text, colour.on_stdout()));
            Ok(())
        }
        Command::Status { every, colour, .. } => {
            let painted = colour.on_stdout();
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
                // A daemon that went away is shown as such, and asked
                // again at the next redraw (as while a node restarts).
                let text = match status_text(&socket, on).await {
                    Ok(text) => status::paint(&text, painted),
                    Err(e) => format!("{}\n", e.message),
                };
                let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
                let header = format!(
                    "every {}; Ctrl-C to stop; {now}\n\n",
                    humantime::format_duration(every)
                );
                let frame = if terminal {
                    // Home and clear the screen, as crm_mon redraws.
                    format!("\x1b[H\x1b[2J{header}{text}")
                } else {
                    format!("{header}{text}\n")
                };
                print!("{frame}");
                let _ = std::io::Write::flush(&mut std::io::stdout());
            }
        }
        Command::Watch { json, node, tag } => {
            let names = match node {
                Some(n) => Some(node_words(&socket, n).await),
                None => None,
            };
            let mut connection = client::Connection::open(&socket, Request::Watch).await?;
            while let Some(response) = connection.next().await? {
                match response {
                    Response::Event {
                        at_ms,
                        text,
                        wall_ms,
                    } => {
                        let wanted = names
                            .as_ref()
                            .is_none_or(|words| words.iter().any(|w| names_word(&text, w)))
                            && tag.as_ref().is_none_or(|t| names_word(&text, t));
                        if !wanted {
                            continue;
                        }
                        let line = event_line(json, at_ms, wall_ms, &text);
                        if writeln!(std::io::stdout(), "{line}").is_err() {
                            return Ok(());
                        }
                    }
                    Response::Error { message, .. } => eprintln!("heartline: {message}"),
                    other => return Err(unexpected(other)),
                }
            }
            Err(Failure::new(
                exit::FAILED,
                "the daemon closed the event stream",
            ))
        }
        Command::SndMsg {
            node,
            mailbox,
            timeout,
        } => {
            refuse_reserved(mailbox)?;
            let mut payload = Vec::new();
            std::io::stdin().read_to_end(&mut payload).map_err(|e| {
                Failure::new(exit::FAILED, format!("cannot read standard input: {e}"))
            })?;
            let max = heartline_core::wire::MAX_PAYLOAD;
            if payload.len() > max {
                return Err(Failure::new(
                    exit::USAGE,
                    format!(
                        "the message is {} bytes; a mailbox message is at most {max}",
                        payload.len()
                    ),
                ));
            }
            let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            match client::ask(
                &socket,
                Request::Send {
                    node,
                    mailbox,
                    payload,
                    timeout_ms,
                },
            )
            .await?
            {
                Response::Delivered => Ok(()),
                other => Err(response_failure(other)),
            }
        }
        Command::RcvMsg { mailbox, timeout } => {
            refuse_reserved(mailbox)?;
            let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            match client::ask(
                &socket,
                Request::Receive {
                    mailbox,
                    timeout_ms,
                },
            )
            .await?
            {
                Response::Message { payload, .. } => {
                    std::io::stdout()
                        .write_all(&payload)
                        .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
                    Ok(())
                }
                other => Err(response_failure(other)),
            }
        }
        Command::Ins(command) => {
            let here = this_node(&socket, on).await?;
            let plan = command
                .plan(here)
                .map_err(|e| Failure::new(exit::USAGE, e))?;
            carry_out(&socket, on, plan).await
        }
        Command::Dep(command) => {
            let here = this_node(&socket, on).await?;
            carry_out(&socket, on, command.plan(here)).await
        }
        Command::Eqv(command) => {
            let here = this_node(&socket, on).await?;
            carry_out(&socket, on, command.plan(here)).await
        }
        Command::Hry(command) => {
            let here = this_node(&socket, on).await?;
            carry_out(&socket, on, command.plan(here)).await
        }
        Command::InService { tag } => act(&socket, on.wrap(Request::InService { tag })).await,
        Command::OutOfService { tag } => act(&socket, on.wrap(Request::OutOfService { tag })).await,
        Command::Switchover { tag, to } => {
            act(&socket, on.wrap(Request::Switchover { tag, to })).await
        }
        Command::Verify => match client::ask(&socket, on.wrap(Request::Verify)).await? {
            Response::Verified {
                summary,
                problems,
                warnings,
            } => {
                println!("{summary}");
                for problem in &problems {
                    println!("problem: {problem}");
                }
                for warning in &warnings {
                    println!("warning: {warning}");
                }
                if problems.is_empty() {
                    println!(
                        "ok: every node agrees, every hierarchy is sane and runs where it should"
                    );
                    Ok(())
                } else {
                    Err(Failure::new(
                        exit::FAILED,
                        format!("{} problems found", problems.len()),
                    ))
                }
            }
            other => Err(response_failure(other)),
        },
        Command::Sendevent { class, event, tag } => {
            act(&socket, on.wrap(Request::SendEvent { class, event, tag })).await
        }
        Command::Cleanup { tag, node } => {
            act(&socket, on.wrap(Request::Cleanup { tag, node })).await
        }
        Command::Standby { node } => {
            change(&socket, on.wrap(Request::Standby { node, on: true })).await
        }
        Command::Unstandby { node } => {
            change(&socket, on.wrap(Request::Standby { node, on: false })).await
        }
        Command::Maintenance { mode } => {
            let on_ = mode == "on";
            change(&socket, on.wrap(Request::Maintenance { on: on_ })).await
        }
        Command::Resync => act(&socket, on.wrap(Request::Resync)).await,
        Command::Backup { config, file } => database::backup(&config, &file),
        Command::Restore { config, file } => database::restore(&config, &file).await,
        Command::DiscardDatabase { config } => database::discard(&config).await,
        Command::CanTalk { node } => match client::ask(&socket, Request::CanTalk { node }).await? {
            Response::CanTalk { reachable: true } => Ok(()),
            Response::CanTalk { reachable: false } => Err(Failure::new(
                exit::FAILED,
                format!("node {node} is not reachable over any path"),
            )),
            other => Err(response_failure(other)),
        },
    }
}

/// Mailboxes 0xFF00 and up are heartline's own: a usage error.
fn refuse_reserved(mailbox: u16) -> Result<(), Failure> {
    if heartline_brain::message::RESERVED.contains(&mailbox) {
        return Err(Failure::new(
            exit::USAGE,
            crate::comm::manager::reserved(mailbox),
        ));
    }
    Ok(())
}

/// Where a command runs: this node's daemon, or through it another node.
#[derive(Clone, Copy)]
struct Target(Option<u16>);

impl Target {
    fn wrap(self, request: Request) -> Request {
        match self.0 {
            Some(node) => Request::Remote {
                node,
                request: Box::new(request),
            },
            None => request,
        }
    }
}

/// The id of the node the command runs on.
async fn this_node(socket: &std::path::Path, on: Target) -> Result<u16, Failure> {
    match client::ask(socket, on.wrap(Request::Status)).await? {
        Response::Status(report) => Ok(report.comm.node),
        other => Err(response_failure(other)),
    }
}

/// Prints a listing or makes a change.
async fn carry_out(socket: &std::path::Path, on: Target, plan: lcdi::Plan) -> Result<(), Failure> {
    match plan {
        lcdi::Plan::List(listing) => match client::ask(socket, on.wrap(Request::Lcd)).await? {
            Response::Lcd(model) => {
                // The nodes down, whose resources' states are only the last
                // known (a status that cannot be had marks none).
                // And the nodes' names.
                let status = match client::ask(socket, on.wrap(Request::Status)).await {
                    Ok(Response::Status(status)) => Some(status.comm),
                    _ => None,
                };
                let down: std::collections::BTreeSet<u16> = status
                    .iter()
                    .flat_map(|s| s.peers.iter())
                    .filter(|p| p.state != "up")
                    .map(|p| p.node)
                    .collect();
                let name = |node: u16| match &status {
                    Some(report) => status::name_in(report, node),
                    None => heartline_brain::api::node_name(node, None),
                };
                let text = lcdi::render(&model, listing, &down, &name)
                    .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
                print!("{text}");
                if !text.ends_with('\n') {
                    println!();
                }
                Ok(())
            }
            other => Err(response_failure(other)),
        },
        lcdi::Plan::Change(change) => self::change(socket, Request::Change { change }).await,
    }
}

/// Makes a configuration change and says whether every node took it: exit
/// 1 naming those that did not confirm it (they take it when they are back
/// or answer again; `heartline verify` shows when).
async fn change(socket: &std::path::Path, request: Request) -> Result<(), Failure> {
    match client::ask(socket, request).await? {
        Response::Changed {
            generation,
            unconfirmed,
        } => {
            if unconfirmed.is_empty() {
                println!("done; the configuration is at generation {generation}");
                return Ok(());
            }
            println!("made; the configuration is at generation {generation}");
            // Named as this daemon knows the nodes.
            let known = match client::ask(socket, Request::Status).await {
                Ok(Response::Status(status)) => Some(status.comm),
                _ => None,
            };
            let nodes: Vec<String> = unconfirmed
                .iter()
                .map(|(node, why)| {
                    let who = known.as_ref().map_or_else(
                        || format!("node {node}"),
                        |report| status::name_in(report, *node),
                    );
                    format!("{who} {why}")
                })
                .collect();
            Err(Failure::new(
                exit::FAILED,
                format!(
                    "not confirmed everywhere: {}; it is applied there once the node answers again (heartline verify shows when)",
                    nodes.join("; ")
                ),
            ))
        }
        other => Err(response_failure(other)),
    }
}

/// Runs an action on resources and prints its steps.
async fn act(socket: &std::path::Path, request: Request) -> Result<(), Failure> {
    match client::ask(socket, request).await? {
        Response::Done { steps } => {
            for step in steps {
                println!("{step}");
            }
            Ok(())
        }
        other => Err(response_failure(other)),
    }
}

fn response_failure(response: Response) -> Failure {
    match response {
        Response::Error {
            message,
            timed_out: true,
        } => Failure::new(exit::TIMEOUT, message),
        Response::Error {
            message,
            timed_out: false,
        } => Failure::new(exit::FAILED, message),
        other => unexpected(other),
    }
}

/// The daemon's status with this node's resources (for `--on`, that
/// node's).
async fn status_report(
    socket: &std::path::Path,
    on: Target,
) -> Result<crate::control::NodeStatus, Failure> {
    match client::ask(socket, on.wrap(Request::Status)).await? {
        Response::Status(mut report) => {
            if let Response::Resources(resources) =
                client::ask(socket, on.wrap(Request::Resources)).await?
            {
                report.resources = Some(resources);
            }
            report.other_nodes = other_nodes(socket, on, &report.comm).await;
            Ok(report)
        }
        other => Err(unexpected(other)),
    }
}

/// How long `status` waits for another node's resources before it shows
/// the rest without them.
const OTHER_NODE_WAIT: Duration = Duration::from_secs(3);

/// Every other node up (of the node `report` is from), asked for its
/// resources through this node's daemon, all at once.
async fn other_nodes(
    socket: &std::path::Path,
    on: Target,
    report: &crate::comm::report::StatusReport,
) -> Vec<crate::control::OtherNode> {
    // The node this daemon is: asked directly, not through itself.
    let here = match on.0 {
        None => Some(report.node),
        Some(_) => this_node(socket, Target(None)).await.ok(),
    };
    let asks = report
        .peers
        .iter()
        .filter(|p| p.state == "up" && p.kind.as_deref() != Some("dongle") && p.dongle.is_none())
        .map(|peer| async move {
            let target = Target((Some(peer.node) != here).then_some(peer.node));
            let asked = client::ask(socket, target.wrap(Request::Resources));
            let (resources, error) = match tokio::time::timeout(OTHER_NODE_WAIT, asked).await {
                Ok(Ok(Response::Resources(resources))) => (Some(resources), None),
                Ok(Ok(other)) => (None, Some(response_failure(other).message)),
                Ok(Err(e)) => (None, Some(e.to_string())),
                Err(_) => (
                    None,
                    Some(format!(
                        "no answer within {}",
                        humantime::format_duration(OTHER_NODE_WAIT)
                    )),
                ),
            };
            crate::control::OtherNode {
                node: peer.node,
                name: peer.name.clone(),
                resources,
                error,
            }
        });
    futures_util::future::join_all(asks).await
}

/// `status` as a table: nodes, paths, this node's resources, and every
/// hierarchy across the cluster.
async fn status_text(socket: &std::path::Path, on: Target) -> Result<String, Failure> {
    let report = status_report(socket, on).await?;
    let mut text = status::render(&report.comm, report.resources.as_deref());
    if let Ok(Response::Lcd(model)) = client::ask(socket, on.wrap(Request::Lcd)).await {
        let next = report.resources.as_ref().map_or(&[][..], |r| &r.next[..]);
        text.push_str(&status::render_cluster(&report.comm, &model, next));
    }
    text.push_str(&status::render_failures(&report));
    Ok(text)
}

/// How `watch` prints one event: the wall-clock time (UTC, to the
/// millisecond; the daemon's uptime for a daemon of an earlier release)
/// and the text, or one JSON object.
fn event_line(json: bool, at_ms: u64, wall_ms: u64, text: &str) -> String {
    let time = (wall_ms > 0).then(|| {
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(wall_ms))
            .to_string()
    });
    if json {
        serde_json::json!({ "time": time, "uptime_ms": at_ms, "text": text }).to_string()
    } else {
        match time {
            Some(time) => format!("{time} {text}"),
            None => format!("{:>10.3}s {text}", at_ms as f64 / 1000.0),
        }
    }
}

/// The words an event names node `node` by: `node N`, and its name as
/// the daemon at `socket` knows it.
async fn node_words(socket: &std::path::Path, node: u16) -> Vec<String> {
    let mut words = vec![format!("node {node}")];
    if let Ok(Response::Status(status)) = client::ask(socket, Request::Status).await {
        let report = &status.comm;
        if report.node == node {
            words.push(report.name.clone());
        }
        words.extend(
            report
                .peers
                .iter()
                .filter(|p| p.node == node)
                .map(|p| p.name.clone()),
        );
    }
    words
}

/// Whether `text` holds `word` as a whole (not inside a longer word or
/// number: `node 2` is not in `node 21`).
fn names_word(text: &str, word: &str) -> bool {
    let inside = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-');
    text.match_indices(word).any(|(at, _)| {
        !inside(text[..at].chars().next_back()) && !inside(text[at + word.len()..].chars().next())
    })
}

/// Writes `bytes` to standard output; a reader that stopped early (`|
/// head`) is no failure.
fn print_all(bytes: &[u8]) -> Result<(), Failure> {
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::new(exit::FAILED, format!("cannot write: {e}")))
        }
        _ => Ok(()),
    }
}

/// An answer that is not the one asked for: an error is told as itself
/// (`--on 3 status` to a node that cannot be reached says why); anything
/// else by its kind, not as a debug dump.
fn unexpected(response: Response) -> Failure {
    if let Response::Error { .. } = response {
        return response_failure(response);
    }
    let debug = format!("{response:?}");
    let kind = debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("?")
        .to_string();
    Failure::new(
        exit::FAILED,
        format!(
            "unexpected answer from the daemon ({kind}): is it of another release? use the heartline binary of the same release"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_the_manual_page_cover_the_commands() {
        let mut command = <Cli as clap::CommandFactory>::command();
        let mut bash = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut command,
            "heartline",
            &mut bash,
        );
        let bash = String::from_utf8(bash).unwrap();
        assert!(
            bash.contains("switchover") && bash.contains("--socket"),
            "{bash}"
        );
        let mut page = Vec::new();
        clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
            .render(&mut page)
            .unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH heartline"),
            "{page}"
        );
        assert!(page.contains("switchover"), "{page}");
    }

    #[test]
    fn watch_lines_carry_the_wall_clock_and_filters_match_whole_words() {
        assert_eq!(
            event_line(false, 1_500, 1_796_268_512_345, "node 2 up"),
            "2026-12-03T03:28:32.345Z node 2 up"
        );
        assert_eq!(
            event_line(false, 1_500, 0, "node 2 up"),
            "     1.500s node 2 up"
        );
        let json: serde_json::Value =
            serde_json::from_str(&event_line(true, 1_500, 1_796_268_512_345, "x")).unwrap();
        assert_eq!(json["time"], "2026-12-03T03:28:32.345Z");
        assert_eq!(json["uptime_ms"], 1_500);
        assert!(names_word("node 2 down: every path silent", "node 2"));
        assert!(names_word(
            "decision: bravo (2) starts web: alpha (1) ran it and is down",
            "bravo"
        ));
        assert!(!names_word("node 21 up", "node 2"));
        assert!(names_word("restore web: exited 0", "web"));
        assert!(!names_word("restore web2: exited 0", "web"));
        assert!(!names_word("restore my-web: exited 0", "web"));
    }

    #[test]
    fn a_node_is_an_id_or_a_name() {
        assert_eq!(node_id("3"), Ok(3));
        // Refused before any daemon is asked.
        assert_eq!(
            node_id("no such"),
            Err("`no such` is neither a node id nor a node name".to_string())
        );
        assert!(node_id("").is_err());
    }

    #[test]
    fn an_unexpected_answer_is_told_as_its_error_or_its_kind_never_as_a_dump() {
        let failure = unexpected(Response::Error {
            message: "node 3 is not up".into(),
            timed_out: false,
        });
        assert_eq!(
            (failure.code, failure.message.as_str()),
            (exit::FAILED, "node 3 is not up")
        );
        let failure = unexpected(Response::Error {
            message: "timed out after 10s".into(),
            timed_out: true,
        });
        assert_eq!(failure.code, exit::TIMEOUT);
        let failure = unexpected(Response::CanTalk { reachable: true });
        assert_eq!(
            failure.message,
            "unexpected answer from the daemon (CanTalk): is it of another release? use the heartline binary of the same release"
        );
    }
}
