//! `heartline backup`, `restore` and `discard-database`: this node's
//! configuration database, found through the daemon's configuration file.
//! The work is [`crate::resources::lcd::guard`]'s; here are the checks
//! that the daemon is stopped, the output and the exit codes (a damaged
//! database or backup: [`exit::DATABASE`]).

use std::path::Path;

use super::{Failure, exit};
use crate::config::Config;
use crate::control::Request;
use crate::control::client::{self, ClientError};
use crate::resources::lcd::guard::{self, GuardError};

fn load(config: &Path) -> Result<Config, Failure> {
    Config::load(config).map_err(|e| Failure::new(exit::USAGE, e.to_string()))
}

fn failure(e: GuardError, config: &Path) -> Failure {
    match e {
        GuardError::Refused(refusal) => Failure::new(exit::DATABASE, refusal.message(Some(config))),
        GuardError::Failed(why) => Failure::new(exit::FAILED, why),
    }
}

/// Refuses while a daemon answers on the configuration's control socket.
async fn stopped(config: &Config, what: &str) -> Result<(), Failure> {
    match client::ask(&config.control_socket, Request::Status).await {
        Err(ClientError::NoDaemon(_)) => Ok(()),
        _ => Err(Failure::new(
            exit::FAILED,
            format!(
                "a daemon answers on {}: stop it before {what} (systemctl stop heartline)",
                config.control_socket.display()
            ),
        )),
    }
}

/// `heartline backup --config CONFIG FILE`.
pub(super) fn backup(config_path: &Path, file: &Path) -> Result<(), Failure> {
    let config = load(config_path)?;
    let summary = guard::backup(&config.database, file).map_err(|e| failure(e, config_path))?;
    println!(
        "backed up {} to {}: generation {}, {} resources, checked",
        config.database.display(),
        file.display(),
        summary.generation,
        summary.resources
    );
    Ok(())
}

/// `heartline restore --config CONFIG FILE`.
pub(super) async fn restore(config_path: &Path, file: &Path) -> Result<(), Failure> {
    let config = load(config_path)?;
    stopped(&config, "restoring its database").await?;
    let (summary, aside) =
        guard::restore(&config.database, file).map_err(|e| failure(e, config_path))?;
    println!(
        "restored {} from {}: generation {}, {} resources, checked",
        config.database.display(),
        file.display(),
        summary.generation,
        summary.resources
    );
    if let Some(dir) = aside {
        println!("the files it replaced are in {}", dir.display());
    }
    println!(
        "start the daemon: a newer configuration held by the other nodes (the greater version) replaces this one when it joins them"
    );
    Ok(())
}

/// `heartline discard-database --config CONFIG`.
pub(super) async fn discard(config_path: &Path) -> Result<(), Failure> {
    let config = load(config_path)?;
    stopped(&config, "discarding its database").await?;
    match guard::discard(&config.database).map_err(|e| failure(e, config_path))? {
        Some(dir) => println!(
            "moved {} and its files to {}; start the daemon while the other nodes are up: it joins with an empty database and takes the cluster's configuration (check with heartline verify)",
            config.database.display(),
            dir.display()
        ),
        None => println!(
            "no configuration database at {}: nothing to discard",
            config.database.display()
        ),
    }
    Ok(())
}
