//! A small application for the Generic Application kit to protect, with its
//! start, stop and check scripts, for the demo, the tests and the
//! benchmarks: a process that records its pid, and a log of what its
//! scripts did; and the tiny HTTP responder the demo protects
//! (`heartline sample-http`, [`serve_http`]).

use std::io;
use std::path::{Path, PathBuf};

#[cfg(unix)]
use super::local_cluster::LocalCluster;

/// One instance of the application, on one node.
#[derive(Debug, Clone)]
pub struct SampleApp {
    /// The node it belongs to.
    pub node: u16,
    /// Its resource tag.
    pub tag: String,
    /// Where its process records its pid.
    pub pid_file: PathBuf,
    /// Its start script.
    pub start: PathBuf,
    /// Its stop script.
    pub stop: PathBuf,
    /// Its check script.
    pub check: PathBuf,
    /// Where its process records when it started (nanoseconds since the
    /// Unix epoch, from `date +%s%N`), before the command runs.
    pub started_file: PathBuf,
    /// Where its stop script records when the process was gone.
    pub stopped_file: PathBuf,
}

fn script(path: &Path, body: &str) -> io::Result<()> {
    std::fs::write(path, format!("#!/bin/sh\n{body}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

impl SampleApp {
    /// Writes the scripts of `tag` for `node` under `dir`. The application
    /// runs `command` (a shell command that stays in the foreground, e.g.
    /// `exec sleep 100000`) in a session of its own; start and stop append
    /// a line to `events`. The process records when it started
    /// ([`SampleApp::started_at`]); stop returns once it is gone, and
    /// records when ([`SampleApp::stopped_at`]).
    pub fn write(
        dir: &Path,
        node: u16,
        tag: &str,
        events: &Path,
        command: &str,
    ) -> io::Result<SampleApp> {
        let dir = dir.join(format!("node{node}")).join(tag);
        std::fs::create_dir_all(&dir)?;
        let pid_file = dir.join("pid");
        let app = SampleApp {
            node,
            tag: tag.to_string(),
            start: dir.join("start"),
            stop: dir.join("stop"),
            check: dir.join("check"),
            pid_file: pid_file.clone(),
            started_file: dir.join("started_at"),
            stopped_file: dir.join("stopped_at"),
        };
        let (pid, events) = (pid_file.display(), events.display());
        let (started, stopped) = (app.started_file.display(), app.stopped_file.display());
        // The application leaves the action's process group (setsid) and
        // its output, as a daemon does; start returns once it runs.
        script(
            &app.start,
            &format!(
                "echo start {tag} >> {events}\nrm -f {pid}\nsetsid sh -c 'date +%s%N > {started}; echo $$ > {pid}; {command}' </dev/null >/dev/null 2>&1 &\nfor i in $(seq 1 100); do [ -s {pid} ] && exit 0; sleep 0.01; done\nexit 1\n"
            ),
        )?;
        // Stop returns once the process is gone (a zombie is gone; SIGKILL
        // after 5 s), having recorded when.
        script(
            &app.stop,
            &format!(
                "echo stop {tag} >> {events}\nif [ -s {pid} ]; then\n  p=$(cat {pid})\n  kill $p 2>/dev/null\n  for i in $(seq 1 500); do\n    state=$(awk '/^State:/ {{print $2}}' /proc/$p/status 2>/dev/null)\n    {{ [ -z \"$state\" ] || [ \"$state\" = Z ]; }} && break\n    [ $i = 500 ] && kill -9 $p 2>/dev/null\n    sleep 0.01\n  done\n  date +%s%N > {stopped}\nfi\nrm -f {pid}\nexit 0\n"
            ),
        )?;
        // A killed process may linger as a zombie until it is reaped; a
        // zombie is not running.
        script(
            &app.check,
            &format!(
                "pid=$(cat {pid} 2>/dev/null) || exit 1\nstate=$(awk '/^State:/ {{print $2}}' /proc/$pid/status 2>/dev/null)\n[ -n \"$state\" ] && [ \"$state\" != Z ]\n"
            ),
        )?;
        Ok(app)
    }

    /// The pid its process recorded.
    #[must_use]
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether its process is alive (a zombie is not).
    #[must_use]
    pub fn running(&self) -> bool {
        self.pid().is_some_and(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
                !status
                    .lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z'))
            })
        })
    }

    /// When its process last started, as it recorded.
    #[must_use]
    pub fn started_at(&self) -> Option<std::time::SystemTime> {
        read_instant(&self.started_file)
    }

    /// When its stop script last saw its process gone.
    #[must_use]
    pub fn stopped_at(&self) -> Option<std::time::SystemTime> {
        read_instant(&self.stopped_file)
    }

    /// Kills its process with SIGKILL, if it runs, and returns once it is
    /// gone (or a zombie), at most 2 s later: a signal is delivered
    /// asynchronously, and a caller checking at once could see it alive.
    pub fn kill(&self) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while self.running() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }

    /// The arguments of `heartline ins create` for it, at `priority`.
    #[must_use]
    pub fn create_args(&self, priority: u16) -> Vec<String> {
        [
            "ins",
            "create",
            "--node",
            &self.node.to_string(),
            "--priority",
            &priority.to_string(),
            "--tag",
            &self.tag,
            "--id",
            &format!("/srv/{}", self.tag),
            "--app",
            "gen",
            "--type",
            "app",
            "--prop",
            &format!("start={}", self.start.display()),
            "--prop",
            &format!("stop={}", self.stop.display()),
            "--prop",
            &format!("check={}", self.check.display()),
        ]
        .map(str::to_string)
        .to_vec()
    }
}

/// An instant recorded by `date +%s%N` in `path`.
fn read_instant(path: &Path) -> Option<std::time::SystemTime> {
    let nanos: u64 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos))
}

/// Gives every daemon of `cluster` (before they start) the kits shipped
/// with this build named in `kits` (`app/type`), each with the settings of
/// its manifest given (e.g. a shorter check interval; see [`copy_kit`]), in
/// the cluster's directory, named in their `resources.kits`.
#[cfg(unix)]
pub fn install_kits(cluster: &LocalCluster, kits: &[(&str, &str)]) -> io::Result<()> {
    let dir = cluster.dir().join("kits");
    for (kit, manifest) in kits {
        copy_kit(&dir, kit, manifest)?;
    }
    for node in 1..=cluster.nodes() {
        let config = cluster.config_path(node);
        let mut text = std::fs::read_to_string(&config)?;
        text.push_str(&format!("\n[resources]\nkits = [\"{}\"]\n", dir.display()));
        std::fs::write(&config, text)?;
    }
    Ok(())
}

/// Writes the kit `kit` (`app/type`) shipped with this build (built into
/// it: [`super::kits`]) into `kits`, its manifest's settings replaced by
/// those `manifest` sets (the others, such as the Generic Application's
/// `user_scripts`, kept), with modes safe to run as root.
pub fn copy_kit(kits: &Path, kit: &str, manifest: &str) -> io::Result<()> {
    let invalid = |e: toml::de::Error| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let shipped = super::kits::text(&format!("{kit}/manifest.toml")).unwrap_or_default();
    let mut merged: toml::Table = toml::from_str(shipped).map_err(invalid)?;
    let changes: toml::Table = toml::from_str(manifest).map_err(invalid)?;
    merged.extend(changes);
    let merged = toml::to_string(&merged)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    super::kits::write_kit(kits, kit, &merged)
}

/// Answers every connection to 127.0.0.1:`port` with `text` as an HTTP
/// response, until the process ends; an error (in one line) only if it
/// cannot listen.
pub async fn serve_http(port: u16, text: &str) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot listen on port {port}: {e}"))?;
    let response = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    );
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let response = response.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await;
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
