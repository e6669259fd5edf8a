//! The daemon, `heartline daemon`: reads the configuration, locks its
//! memory, takes its next incarnation, starts the communication manager
//! and the resource manager, serves the control socket, tells systemd it
//! is ready, and runs until SIGTERM or Ctrl-C. The wiring only; each part
//! is its own module's job.

use std::fmt;
use std::path::Path;

use crate::config::Config;
use crate::control::server;
use crate::sys::{logging, system};
use crate::{comm, resources};

/// Why the daemon could not start or run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The configuration, or something it names (paths, the database, the
    /// kits), is wrong: fix it and start again.
    BadConfig(String),
    /// Anything else (the state directory, the control socket).
    Failed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadConfig(message) | Error::Failed(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

/// Runs the daemon with the configuration file at `path` until it is told
/// to stop.
pub async fn run(path: &Path) -> Result<(), Error> {
    let _log = logging::init(
        None,
        #[cfg(unix)]
        None,
    );
    let config = Config::load(path).map_err(|e| Error::BadConfig(e.to_string()))?;
    match system::lock_memory() {
        Ok(()) => tracing::info!("memory locked"),
        Err(e) => tracing::warn!("memory not locked, paging may delay heartbeats: {e}"),
    }
    let incarnation =
        comm::incarnation::next_incarnation(&config.state_dir).map_err(Error::Failed)?;
    let socket = config.control_socket.clone();
    let handle = comm::start(config.clone(), incarnation).map_err(Error::BadConfig)?;
    let resources = resources::start(&config, &handle).map_err(Error::BadConfig)?;
    server::serve(&socket, handle, resources)
        .await
        .map_err(Error::Failed)?;
    tracing::info!(socket = %socket.display(), "control socket ready");
    system::notify("READY=1");
    system::shutdown_signal().await;
    tracing::info!("stopping");
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
