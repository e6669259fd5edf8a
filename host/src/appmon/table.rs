//! The appserver's monitored processes: starting them (each in a process
//! group of its own, through a launcher that ties its life to the
//! appserver's), collecting each one's exit status the moment it ends (so
//! none is left a zombie), keeping the tail of its output, and knowing
//! which connection manages it. Limits on the number of processes and on
//! the output kept are enforced here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use super::proto::{ErrorKind, ProcessId, ProcessState, Refusal, ServerFrame, StartSpec, Status};
use crate::sys::process::{self, Group, Tail};

/// The appserver's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Processes (running, or ended and not yet collected) at once.
    pub max_processes: usize,
    /// Of those, at most this many managed by one connection.
    pub per_manager: usize,
    /// Output bytes kept per process; older output is dropped.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_processes: 1024,
            per_manager: 256,
            output_bytes: 64 * 1024,
        }
    }
}

/// The connection a process reports to: its id and the queue of frames
/// its writer sends.
#[derive(Debug, Clone)]
pub struct Manager {
    /// Which connection.
    pub connection: u64,
    /// Frames to send it.
    pub frames: mpsc::Sender<ServerFrame>,
}

#[derive(Debug)]
struct Entry {
    pid: u32,
    state: watch::Sender<ProcessState>,
    output: Tail,
    manager: Option<Manager>,
    /// When it lost its manager, for the orphan timeout.
    orphaned_at: Option<Instant>,
    orphan_timeout: Duration,
    /// When the server began stopping it, if it did.
    stopping_since: Option<Instant>,
}

impl Entry {
    fn status(&self, process: ProcessId, output_from: u64) -> Status {
        let (output_from, output) = self.output.from(output_from);
        Status {
            process,
            pid: self.pid,
            state: *self.state.borrow(),
            output_from,
            output,
            output_end: self.output.end(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    server: u64,
    next_serial: u64,
    entries: HashMap<u64, Entry>,
}

/// The processes of one appserver instance, shared by its connections.
#[derive(Debug, Clone)]
pub struct Table {
    inner: Arc<Mutex<Inner>>,
    limits: Limits,
    launcher: PathBuf,
}

/// How long after SIGTERM an orphan, or every process at shutdown, gets
/// SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// The shortest orphan timeout honoured: a manager asking for less gets
/// this, so its connection is not closed between two of its requests.
pub const MIN_ORPHAN_TIMEOUT: Duration = Duration::from_secs(1);

fn refusal(kind: ErrorKind, message: impl Into<String>) -> Refusal {
    Refusal {
        kind,
        message: message.into(),
    }
}

impl Table {
    /// An empty table for a new server instance `server`, starting commands
    /// through `launcher` (this program, run as `appserver-launch`).
    pub fn new(server: u64, limits: Limits, launcher: PathBuf) -> Table {
        Table {
            inner: Arc::new(Mutex::new(Inner {
                server,
                next_serial: 1,
                entries: HashMap::new(),
            })),
            limits,
            launcher,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; serving
        // on is better than refusing every manager.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many processes the table holds.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the table holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts `spec`, managed by `manager`. Must be called on a runtime
    /// worker thread (see `launch_command`).
    pub fn start(&self, spec: &StartSpec, manager: Manager) -> Result<(ProcessId, u32), Refusal> {
        let Some(program) = spec.argv.first() else {
            return Err(refusal(ErrorKind::CannotStart, "the command is empty"));
        };
        if let Some(cwd) = &spec.cwd {
            if !std::path::Path::new(cwd).is_dir() {
                return Err(refusal(
                    ErrorKind::CannotStart,
                    format!(
                        "cannot start {program}: working directory {cwd} is not a directory on the guest"
                    ),
                ));
            }
        }
        if find_program(program, spec.cwd.as_deref()).is_none() {
            return Err(refusal(
                ErrorKind::CannotStart,
                format!(
                    "cannot start {program}: no such executable on the guest (not a file with execute permission, nor found in the appserver's PATH)"
                ),
            ));
        }
        let mut inner = self.lock();
        let managed = inner
            .entries
            .values()
            .filter(|e| {
                e.manager
                    .as_ref()
                    .is_some_and(|m| m.connection == manager.connection)
            })
            .count();
        if managed >= self.limits.per_manager {
            return Err(refusal(
                ErrorKind::TooManyProcesses,
                format!(
                    "this manager already has {managed} processes here, its share of the appserver's {} (--max-per-manager)",
                    self.limits.max_processes
                ),
            ));
        }
        if inner.entries.len() >= self.limits.max_processes {
            return Err(refusal(
                ErrorKind::TooManyProcesses,
                format!(
                    "the appserver already monitors {} processes, its limit (raise it with --max-processes)",
                    inner.entries.len()
                ),
            ));
        }
        let mut child = self.launch_command(spec).spawn().map_err(|e| {
            refusal(
                ErrorKind::CannotStart,
                format!("cannot start {program}: {e}"),
            )
        })?;
        let Some(pid) = child.id() else {
            return Err(refusal(
                ErrorKind::CannotStart,
                format!("{program} ended at once"),
            ));
        };
        let process = ProcessId {
            server: inner.server,
            serial: inner.next_serial,
        };
        inner.next_serial += 1;
        let (state, _) = watch::channel(ProcessState::Running);
        inner.entries.insert(
            process.serial,
            Entry {
                pid,
                state,
                output: Tail::new(self.limits.output_bytes),
                manager: Some(manager),
                orphaned_at: None,
                orphan_timeout: Duration::from_millis(spec.orphan_timeout_ms)
                    .max(MIN_ORPHAN_TIMEOUT),
                stopping_since: None,
            },
        );
        drop(inner);
        let readers = [
            child
                .stdout
                .take()
                .map(|out| self.collect_output(process, out)),
            child
                .stderr
                .take()
                .map(|err| self.collect_output(process, err)),
        ];
        let table = self.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            // Output written just before the end belongs with it.
            for reader in readers.into_iter().flatten() {
                let _ = reader.await;
            }
            table.ended(process, pid, status);
        });
        Ok((process, pid))
    }

    /// The command that runs `spec`: the launcher, which ties the program's
    /// life to this process and then becomes it. The parent-death signal
    /// follows the thread that forked, so this must run on a runtime worker
    /// (they live as long as the server), never on a blocking-pool thread
    /// (they end when idle).
    fn launch_command(&self, spec: &StartSpec) -> Command {
        let mut command = Command::new(&self.launcher);
        process::new_group(&mut command)
            .arg("appserver-launch")
            .arg("--parent")
            .arg(std::process::id().to_string())
            .arg("--")
            .args(&spec.argv)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(cwd) = &spec.cwd {
            command.current_dir(cwd);
        }
        command
    }

    fn collect_output(
        &self,
        process: ProcessId,
        mut stream: impl AsyncRead + Unpin + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let table = self.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok(n) = stream.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                let mut inner = table.lock();
                let Some(entry) = inner.entries.get_mut(&process.serial) else {
                    break;
                };
                entry.output.push(&buffer[..n]);
            }
        })
    }

    fn ended(
        &self,
        process: ProcessId,
        pid: u32,
        status: std::io::Result<std::process::ExitStatus>,
    ) {
        use std::os::unix::process::ExitStatusExt;
        let state = match status {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => ProcessState::Exited { code },
                (None, Some(signal)) => ProcessState::Killed { signal },
                (None, None) => ProcessState::Exited { code: -1 },
            },
            Err(e) => {
                tracing::error!(%process, pid, "cannot collect the exit status: {e}");
                ProcessState::Exited { code: -1 }
            }
        };
        // What the program left behind in its group goes with it. The
        // group's id is the program's pid, already collected; another
        // process could only take that id as its group by setsid/setpgid
        // on a reused pid in this instant.
        Group::led_by(pid).kill();
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(&process.serial) else {
            return;
        };
        entry.state.send_replace(state);
        tracing::info!(%process, pid, "{state}");
        let status = entry.status(process, entry.output.end());
        if let Some(manager) = &entry.manager {
            // A full or closed queue loses only the push: the state stays
            // here for the next poll or attach.
            let _ = manager.frames.try_send(ServerFrame::Exited(status));
        }
    }

    /// The status of `process`, with output from `output_from`.
    pub fn status(&self, process: ProcessId, output_from: u64) -> Result<Status, Refusal> {
        let mut inner = self.lock();
        let entry = Self::entry(&mut inner, process)?;
        Ok(entry.status(process, output_from))
    }

    fn entry(inner: &mut Inner, process: ProcessId) -> Result<&mut Entry, Refusal> {
        if process.server != inner.server {
            return Err(refusal(
                ErrorKind::AppserverRestarted,
                format!(
                    "process {process} belonged to an earlier run of this appserver, which restarted (this run is {:016x}); it ended with it",
                    inner.server
                ),
            ));
        }
        inner.entries.get_mut(&process.serial).ok_or_else(|| {
            refusal(
                ErrorKind::UnknownProcess,
                format!("no process {process} here (released, or stopped as an orphan)"),
            )
        })
    }

    /// Makes `manager` the process's manager; its status with all kept
    /// output.
    pub fn attach(&self, process: ProcessId, manager: Manager) -> Result<Status, Refusal> {
        let mut inner = self.lock();
        let entry = Self::entry(&mut inner, process)?;
        entry.manager = Some(manager);
        entry.orphaned_at = None;
        Ok(entry.status(process, 0))
    }

    /// How long `process` may go without a manager.
    pub fn orphan_timeout(&self, process: ProcessId) -> Option<Duration> {
        let mut inner = self.lock();
        Self::entry(&mut inner, process)
            .ok()
            .map(|entry| entry.orphan_timeout)
    }

    /// Every process managed by `connection` becomes an orphan.
    pub fn detach_all(&self, connection: u64) {
        let now = Instant::now();
        for entry in self.lock().entries.values_mut() {
            if entry
                .manager
                .as_ref()
                .is_some_and(|m| m.connection == connection)
            {
                entry.manager = None;
                entry.orphaned_at = Some(now);
            }
        }
    }

    /// Forgets an ended process.
    pub fn release(&self, process: ProcessId) -> Result<(), Refusal> {
        let mut inner = self.lock();
        let entry = Self::entry(&mut inner, process)?;
        if !entry.state.borrow().ended() {
            return Err(refusal(
                ErrorKind::UnknownProcess,
                format!("process {process} is still running; stop it before releasing it"),
            ));
        }
        inner.entries.remove(&process.serial);
        Ok(())
    }

    /// Sends SIGTERM to the process's group, SIGKILL after `grace`, and
    /// returns its status once it has ended.
    pub async fn stop(&self, process: ProcessId, grace: Duration) -> Result<Status, Refusal> {
        let (pid, mut state) = {
            let mut inner = self.lock();
            let entry = Self::entry(&mut inner, process)?;
            (entry.pid, entry.state.subscribe())
        };
        if !state.borrow().ended() {
            let ended = async {
                let _ = state.wait_for(ProcessState::ended).await;
            };
            Group::led_by(pid)
                .stop(grace, ended, || {
                    tracing::warn!(%process, pid, "still running {grace:?} after SIGTERM: SIGKILL");
                })
                .await;
        }
        self.status(process, u64::MAX)
    }

    /// Stops orphans whose timeout has passed and forgets ended ones;
    /// called periodically by the server.
    pub fn reap_orphans(&self, now: Instant) {
        let mut inner = self.lock();
        let server = inner.server;
        inner.entries.retain(|&serial, entry| {
            let Some(since) = entry.orphaned_at else {
                return true;
            };
            if now.duration_since(since) < entry.orphan_timeout {
                return true;
            }
            let process = ProcessId { server, serial };
            if entry.state.borrow().ended() {
                tracing::info!(%process, "forgotten: ended, and no manager came back for it");
                return false;
            }
            let group = Group::led_by(entry.pid);
            match entry.stopping_since {
                None => {
                    tracing::warn!(
                        %process, pid = entry.pid,
                        "no manager for {:?}: stopping it so that it cannot run twice",
                        entry.orphan_timeout
                    );
                    group.terminate();
                    entry.stopping_since = Some(now);
                }
                Some(since) if now.duration_since(since) >= STOP_GRACE => group.kill(),
                Some(_) => {}
            }
            true
        });
    }

    /// Stops every running process (SIGTERM, SIGKILL after `grace`), for
    /// the appserver's shutdown.
    pub async fn stop_all(&self, grace: Duration) {
        let processes: Vec<ProcessId> = {
            let inner = self.lock();
            inner
                .entries
                .keys()
                .map(|&serial| ProcessId {
                    server: inner.server,
                    serial,
                })
                .collect()
        };
        let mut stops = tokio::task::JoinSet::new();
        for process in processes {
            let table = self.clone();
            stops.spawn(async move { table.stop(process, grace).await });
        }
        while stops.join_next().await.is_some() {}
    }
}

/// Where `program` would be found: itself if it names a path (a relative
/// one from the working directory `cwd`, when given), else the first
/// executable of that name on `PATH`.
fn find_program(program: &str, cwd: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &std::path::Path| {
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = match cwd {
            Some(cwd) => Path::new(cwd).join(program),
            None => PathBuf::from(program),
        };
        return executable(&path).then_some(path);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| executable(path))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_path_or_by_their_path() {
        assert!(find_program("sh", None).is_some());
        assert!(find_program("/bin/sh", None).is_some());
        assert!(find_program("no-such-program-heartline", None).is_none());
        assert!(
            find_program("/etc/passwd", None).is_none(),
            "not executable"
        );
        assert!(
            find_program("./sh", Some("/bin")).is_some(),
            "relative to the working directory"
        );
        assert!(find_program("./sh", Some("/etc")).is_none());
    }
}
