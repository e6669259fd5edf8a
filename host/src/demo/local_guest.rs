//! A guest on this machine for the tests, the benchmark and the demo: keys
//! made by the real keygen commands in a scratch directory, and a real
//! `heartline appserver` process on loopback that can be killed and
//! restarted on the same port. Its log is collected line by line.

use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::local_cluster::wait_for;

/// A local appserver and the keys of both sides.
#[derive(Debug)]
pub struct LocalGuest {
    program: PathBuf,
    dir: tempfile::TempDir,
    server: Option<Child>,
    port: u16,
    extra: Vec<String>,
    log: Arc<Mutex<Vec<String>>>,
}

fn run(command: &mut Command) -> io::Result<()> {
    let output = command.output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// Runs `program SIDE keygen --dir DIR` (`side` is `appserver` or
/// `appmgr`).
pub fn keygen(program: &Path, side: &str, dir: &Path) -> io::Result<()> {
    run(Command::new(program)
        .args([side, "keygen", "--dir"])
        .arg(dir))
}

impl LocalGuest {
    /// Makes both sides' keys with `program` (the heartline binary) and
    /// starts an appserver on a free loopback port with `extra` arguments.
    pub fn start(program: &Path, extra: &[&str]) -> io::Result<LocalGuest> {
        let dir = tempfile::tempdir()?;
        for side in ["appserver", "appmgr"] {
            keygen(program, side, dir.path())?;
        }
        let mut guest = LocalGuest {
            program: program.to_path_buf(),
            dir,
            server: None,
            port: 0,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: Arc::new(Mutex::new(Vec::new())),
        };
        guest.restart()?;
        Ok(guest)
    }

    /// The directory holding both sides' keys (`--dir` for either).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where managers connect: `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The appserver's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// Starts the appserver (again, on the same port once it has one) and
    /// waits until it listens.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        let listen = format!("127.0.0.1:{}", self.port);
        let mut child = Command::new(&self.program)
            .args(["appserver", "--listen", &listen, "--dir"])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("no stderr"))?;
        let log = self.log.clone();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.split("listening on ").nth(1) {
                    let port = at
                        .split(' ')
                        .next()
                        .and_then(|a| a.rsplit(':').next())
                        .and_then(|p| p.parse::<u16>().ok());
                    let _ = ready_tx.send(port);
                }
                log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        self.server = Some(child);
        match ready.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(port)) => {
                self.port = port;
                Ok(())
            }
            _ => Err(io::Error::other(format!(
                "the appserver did not start listening; its log:\n{}",
                self.log_text()
            ))),
        }
    }

    /// Kills the appserver with SIGKILL and collects it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the appserver with SIGTERM and waits for it to end.
    pub fn terminate(&mut self) -> io::Result<std::process::ExitStatus> {
        let mut child = self
            .server
            .take()
            .ok_or_else(|| io::Error::other("not running"))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .map_err(io::Error::other)?;
        child.wait()
    }

    /// Everything the appserver logged so far.
    pub fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// Waits until the appserver logs a line containing `text`.
    pub fn wait_for_log(&self, text: &str, limit: Duration) -> Result<(), String> {
        wait_for(limit, &format!("the appserver to log {text:?}"), || {
            self.log_text().contains(text)
        })
        .map_err(|e| format!("{e}; its log:\n{}", self.log_text()))
    }

    /// `heartline appmgr` aimed at this guest, with `args` before `--` and
    /// `command` after it.
    pub fn appmgr(&self, args: &[&str], command: &[&str]) -> Command {
        let mut appmgr = Command::new(&self.program);
        appmgr
            .args(["appmgr", "--node", &self.address(), "--dir"])
            .arg(self.dir.path())
            .args(args)
            .arg("--")
            .args(command);
        appmgr
    }
}

impl LocalGuest {
    /// The `ins create` arguments of a Guest Application resource `tag` on
    /// `node` with `priority`, running `command` on this guest, watched
    /// closely (polls every 200 ms, contact lost after 3 s, started once up
    /// for 0.3 s).
    pub fn resource_args(&self, node: u16, priority: u16, tag: &str, command: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "ins",
            "create",
            "--node",
            &node.to_string(),
            "--priority",
            &priority.to_string(),
            "--tag",
            tag,
            "--id",
            &format!("guest/{tag}"),
            "--app",
            "gen",
            "--type",
            "appmon",
        ]
        .map(str::to_string)
        .to_vec();
        for prop in [
            format!("guest={}", self.address()),
            format!("command={command}"),
            format!("dir={}", self.dir().display()),
            "poll_interval=200ms".to_string(),
            "timeout=3s".to_string(),
            "settle=0.3".to_string(),
        ] {
            args.extend(["--prop".to_string(), prop]);
        }
        args
    }
}

/// The guest pid an `appmgr --state-file` recorded, while it says the
/// application runs.
pub fn recorded_pid(state_file: &Path) -> Option<u32> {
    std::fs::read_to_string(state_file)
        .ok()?
        .strip_prefix("running ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

impl Drop for LocalGuest {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether process `pid` exists and is not a zombie, from `/proc`.
pub fn process_alive(pid: u32) -> bool {
    proc_state(pid).is_some_and(|(state, _)| state != 'Z')
}

/// A process's state letter (`Z` for a zombie) and its parent, from
/// `/proc`, if it exists.
pub fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: read after it.
    let after = stat.rsplit_once(')')?.1;
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}
