//! `heartline`: the cluster daemon and its command-line interface.
//!
//! Invoked as `snd_msg`, `rcv_msg` or `can_talk` (a link to this binary) it
//! behaves as the matching LCMI command.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use heartline::comm;
use heartline::config::{self, Config};
use heartline::control::client::{self, ClientError};
use heartline::control::server;
use heartline::control::{Request, Response};
use heartline::sys::system;
use heartline::{appmon, lcdi, resources, status};

/// Exit codes, documented in the README.
mod exit {
    /// The operation failed (not delivered, not reachable).
    pub const FAILED: u8 = 1;
    /// Bad usage or a bad configuration.
    pub const USAGE: u8 = 2;
    /// No daemon answers on the control socket.
    pub const NO_DAEMON: u8 = 3;
    /// The timeout passed first.
    pub const TIMEOUT: u8 = 4;
}

#[derive(Parser)]
#[command(version, about = "heartline: high-availability cluster manager")]
struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, env = "HEARTLINE_SOCKET", default_value = config::DEFAULT_CONTROL_SOCKET)]
    socket: PathBuf,
    /// Run the command on another node of the cluster, through this node's
    /// daemon (status, resource and configuration commands).
    #[arg(long, global = true, value_name = "NODE")]
    on: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a configuration file without starting anything.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
    /// Write a new random cluster secret (mode 0600) for `cluster.key_file`.
    Keygen {
        /// Where to write it; must not exist.
        file: PathBuf,
    },
    /// Show nodes, paths and their counters.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print every event as it happens, until interrupted.
    Watch,
    /// Send standard input to a mailbox on a node; exit 0 once delivered.
    SndMsg {
        /// Destination node id.
        #[arg(long)]
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
        /// The node id.
        #[arg(long)]
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
        #[arg(long)]
        to: u16,
    },
    /// Check that every node agrees on the configuration and that every
    /// hierarchy is sane; exit 1 listing the problems if not.
    Verify,
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
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
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
            ClientError::Protocol(_) => exit::FAILED,
        };
        Failure::new(code, e.to_string())
    }
}

/// Arguments with an LCMI alias (`snd_msg ...`) turned into a subcommand.
fn arguments() -> Vec<std::ffi::OsString> {
    let mut args: Vec<_> = std::env::args_os().collect();
    let invoked = args
        .first()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let alias = match invoked.as_deref() {
        Some("snd_msg") => Some("snd-msg"),
        Some("rcv_msg") => Some("rcv-msg"),
        Some("can_talk") => Some("can-talk"),
        _ => None,
    };
    if let Some(subcommand) = alias {
        args.insert(1, subcommand.into());
    }
    args
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(arguments());
    // These run their own runtimes and end with their own exit codes.
    match cli.command {
        Command::Appserver(args) => return appmon::cli::appserver(args),
        Command::Appmgr(args) => return appmon::cli::appmgr(*args),
        #[cfg(unix)]
        Command::AppserverLaunch(args) => return appmon::cli::launch(args),
        _ => {}
    }
    #[cfg(unix)]
    if let Command::Demo = cli.command {
        let program = match std::env::current_exe() {
            Ok(program) => program,
            Err(e) => {
                eprintln!("heartline: cannot find my own executable: {e}");
                return ExitCode::from(exit::FAILED);
            }
        };
        return match heartline::demo::run(&program) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("heartline demo: {e}");
                ExitCode::from(exit::FAILED)
            }
        };
    }
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
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("heartline: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
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
        Command::Appserver(_) | Command::Appmgr(_) => unreachable!("handled in main"),
        Command::Daemon { config } => run_daemon(&config).await,
        Command::SampleHttp { port, name } => {
            heartline::demo::sample_app::serve_http(port, &format!("hello from {name}"))
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
        Command::Keygen { file } => {
            config::write_new_key(&file).map_err(|e| Failure::new(exit::FAILED, e))?;
            println!(
                "wrote a new 256-bit cluster secret to {} (mode 0600); copy it to every node",
                file.display()
            );
            Ok(())
        }
        Command::Status { json } => match client::ask(&socket, on.wrap(Request::Status)).await? {
            Response::Status(mut status) => {
                if let Response::Resources { resources } =
                    client::ask(&socket, on.wrap(Request::Resources)).await?
                {
                    status.resources = resources;
                }
                if json {
                    let text = serde_json::to_string_pretty(&status)
                        .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
                    println!("{text}");
                } else {
                    print!("{}", status::render(&status.comm, &status.resources));
                }
                Ok(())
            }
            other => Err(unexpected(other)),
        },
        Command::Watch => {
            let mut connection = client::Connection::open(&socket, Request::Watch).await?;
            while let Some(response) = connection.next().await? {
                match response {
                    Response::Event { at_ms, text } => {
                        let line = format!("{:>10.3}s {text}", at_ms as f64 / 1000.0);
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
            Response::Verified { summary, problems } => {
                println!("{summary}");
                for problem in &problems {
                    println!("problem: {problem}");
                }
                if problems.is_empty() {
                    println!("ok: every node agrees and every hierarchy is sane");
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
        Response::Status(status) => Ok(status.comm.node),
        other => Err(response_failure(other)),
    }
}

/// Prints a listing or makes a change.
async fn carry_out(socket: &std::path::Path, on: Target, plan: lcdi::Plan) -> Result<(), Failure> {
    match plan {
        lcdi::Plan::List(listing) => match client::ask(socket, on.wrap(Request::Lcd)).await? {
            Response::Lcd(model) => {
                let text = lcdi::render(&model, listing)
                    .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
                print!("{text}");
                if !text.ends_with('\n') {
                    println!();
                }
                Ok(())
            }
            other => Err(response_failure(other)),
        },
        lcdi::Plan::Change(change) => {
            match client::ask(socket, Request::Change { change }).await? {
                Response::Changed { generation } => {
                    println!("done; the configuration is at generation {generation}");
                    Ok(())
                }
                other => Err(response_failure(other)),
            }
        }
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

fn unexpected(response: Response) -> Failure {
    Failure::new(
        exit::FAILED,
        format!("unexpected answer from the daemon: {response:?}"),
    )
}

async fn run_daemon(path: &std::path::Path) -> Result<(), Failure> {
    let _log = heartline::sys::logging::init(
        None,
        #[cfg(unix)]
        None,
    );
    let config = Config::load(path).map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
    match system::lock_memory() {
        Ok(()) => tracing::info!("memory locked"),
        Err(e) => tracing::warn!("memory not locked, paging may delay heartbeats: {e}"),
    }
    let incarnation = comm::incarnation::next_incarnation(&config.state_dir)
        .map_err(|e| Failure::new(exit::FAILED, e))?;
    let socket = config.control_socket.clone();
    let handle =
        comm::start(config.clone(), incarnation).map_err(|e| Failure::new(exit::USAGE, e))?;
    let resources = resources::start(&config, &handle).map_err(|e| Failure::new(exit::USAGE, e))?;
    server::serve(&socket, handle, resources)
        .await
        .map_err(|e| Failure::new(exit::FAILED, e))?;
    tracing::info!(socket = %socket.display(), "control socket ready");
    system::notify("READY=1");
    system::shutdown_signal().await;
    tracing::info!("stopping");
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
