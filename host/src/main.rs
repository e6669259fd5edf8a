//! `heartline`: the cluster daemon and its command-line interface.
//!
//! Invoked as `snd_msg`, `rcv_msg` or `can_talk` (a link to this binary) it
//! behaves as the matching LCMI command.
//!
//! This file only dispatches: the commands that run on their own
//! (`appserver`, `appmgr`, the demo and its application) to their modules,
//! every other to [`heartline::cli::run`].

use std::path::PathBuf;
use std::process::ExitCode;

use heartline::appmon;
use heartline::cli::{self, Command, Failure, exit};

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
    let cli = cli::parse(arguments());
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
    // The demo's application (with `--on`, the CLI refuses it).
    if let (Command::SampleHttp { port, name }, None) = (&cli.command, cli.on) {
        let (port, text) = (*port, format!("hello from {name}"));
        return cli::block_on(async move {
            heartline::demo::sample_app::serve_http(port, &text)
                .await
                .map_err(|e| Failure::new(exit::FAILED, e))
        });
    }
    cli::run(cli)
}
