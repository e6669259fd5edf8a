//! The daemon, `heartline daemon`: reads the configuration, locks its
//! memory, takes its next incarnation, starts the communication manager
//! and the resource brain, serves the control socket, tells systemd it is
//! ready, and runs until SIGTERM or Ctrl-C. Then it stops cleanly: the
//! brain takes this node's hierarchies out of service (handing them to the
//! next nodes, or keeping them stopped, as `resources.on_stop` says), and
//! the daemon exits once its last messages to the other nodes are out. The
//! wiring only; each part is its own module's job.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::control::remote::Remote;
use crate::control::server::{self, Services};
use crate::sys::{logging, memory, perms, system};
use crate::{comm, resources};

/// Why the daemon could not start or run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The configuration, or something it names (paths, the database, the
    /// kits), is wrong: fix it and start again.
    BadConfig(String),
    /// Anything else (the state directory, the control socket).
    Failed(String),
    /// The configuration database is damaged, emptied or missing committed
    /// changes: the message says how to recover it.
    Database(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadConfig(message) | Error::Failed(message) | Error::Database(message) => {
                f.write_str(message)
            }
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
    // Before anything joins the cluster: a database that lost committed
    // changes is refused, never started empty.
    resources::lcd::guard::inspect(&config.database)
        .map_err(|r| Error::Database(r.message(Some(path))))?;
    match perms::raise_nofile() {
        Ok((soft, hard)) if soft < hard => {
            tracing::info!("open-files limit raised from {soft} to {hard}");
        }
        Ok((soft, _)) => tracing::info!("open-files limit {soft}"),
        Err(e) => tracing::warn!("open-files limit not raised: {e}"),
    }
    // The state directory and the database are the daemon's alone,
    // whatever the umask it was started with.
    perms::private_dir(&config.state_dir, &["incarnation", "lcd.sqlite"]).map_err(Error::Failed)?;
    if config.database.parent().is_none_or(Path::exists) {
        perms::private_file(&config.database, true).map_err(Error::Failed)?;
    }
    let incarnation =
        comm::incarnation::next_incarnation(&config.state_dir).map_err(Error::Failed)?;
    let socket = config.control_socket.clone();
    crate::transport::set_names(config.host_names());
    let (comm, to_brain) = comm::start(config.clone(), incarnation).map_err(Error::BadConfig)?;
    // Locked once the protocol endpoint is built: the thread that builds
    // it has a stack large enough to hold it (64 MiB), gone by now, which
    // locking first would have made resident (91 MB at start instead of
    // 30). Everything mapped from here on is locked as it is mapped.
    match system::lock_memory() {
        Ok(()) => tracing::info!("memory locked"),
        Err(e) => tracing::warn!("memory not locked, paging may delay heartbeats: {e}"),
    }
    let (forwards, forwarded) = mpsc::unbounded_channel();
    let resources = resources::start(&config, &comm, incarnation.0, to_brain, forwards)
        .map_err(Error::BadConfig)?;
    // SQLite gives its -wal and -shm files the database's mode; ones left
    // by an older release are tightened here.
    for suffix in ["-wal", "-shm"] {
        let mut path = config.database.clone().into_os_string();
        path.push(suffix);
        perms::private_file(Path::new(&path), false).map_err(Error::Failed)?;
    }
    let services = Services {
        remote: Remote::new(config.node.0, config.host_names(), &comm),
        comm: comm.clone(),
        resources: resources.clone(),
    };
    Remote::serve(services.clone(), forwarded);
    server::serve(&socket, services, &config.control)
        .await
        .map_err(Error::Failed)?;
    tracing::info!(socket = %socket.display(), "control socket ready");
    system::notify("READY=1");
    memory::release_after_start();
    system::shutdown_signal().await;
    tracing::info!("stopping: taking this node's hierarchies out of service first");
    system::notify("STOPPING=1");
    let stopping = resources.shutdown();
    tokio::pin!(stopping);
    // A second signal does not cut the stop short (what runs here would
    // run on unwatched, and another node could start it): it is said.
    loop {
        tokio::select! {
            () = &mut stopping => break,
            () = system::shutdown_signal() => tracing::warn!(
                "already stopping: the hierarchies here are being taken out of service; SIGKILL abandons that, leaving them running unwatched"
            ),
        }
    }
    // The last messages (the states that say this node runs nothing) reach
    // the other nodes before it goes.
    let (reply, idle) = oneshot::channel();
    if comm
        .commands
        .send(comm::Command::AdminIdle { reply })
        .await
        .is_ok()
    {
        let _ = tokio::time::timeout(Duration::from_secs(2), idle).await;
    }
    tracing::info!("stopped");
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
