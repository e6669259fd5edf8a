//! Running one recovery-kit action script: its process group, its timeout,
//! its output (logged line by line and kept as a bounded tail) and its
//! outcome.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::sys::process::{self, Group, Tail};

/// Most bytes of output kept; older output is cut from the front.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// How long output is still read once the script has exited (or was
/// killed): enough to drain the pipes, short enough that a background
/// process holding them cannot stall the caller.
const READ_GRACE: Duration = Duration::from_millis(100);

/// How long killed processes get to be gone (and reaped by init). Ones
/// stuck in the kernel (an unreachable NFS server) can outlast SIGKILL; the
/// caller is not held up by them for longer than this.
const GROUP_GONE: Duration = Duration::from_secs(1);

/// How often a spawn that fails with "text file busy" is retried.
const BUSY_RETRIES: u32 = 5;

/// What came of running a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It exited with status 0.
    Succeeded,
    /// It exited with another status, or a signal ended it.
    Failed {
        /// The exit code, when it exited.
        code: Option<i32>,
        /// The signal that ended it, when one did.
        signal: Option<i32>,
    },
    /// It ran past its timeout; its whole process group was killed.
    TimedOut,
    /// It could not be started; the text is one line naming the path.
    CannotRun(String),
    /// It could not be started for want of the node's resources (file
    /// descriptors, processes, memory): nothing ran, and nothing is known
    /// of the resource. The text is one line naming the path.
    Exhausted(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Succeeded => write!(f, "exited 0"),
            Outcome::Failed {
                code: Some(code), ..
            } => write!(f, "exited with code {code}"),
            Outcome::Failed {
                signal: Some(signal),
                ..
            } => write!(f, "killed by signal {signal}"),
            Outcome::Failed { .. } => write!(f, "failed"),
            Outcome::TimedOut => write!(f, "timed out and was killed"),
            Outcome::CannotRun(reason) | Outcome::Exhausted(reason) => write!(f, "{reason}"),
        }
    }
}

/// One run of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptRun {
    /// How it ended.
    pub outcome: Outcome,
    /// Its standard output and standard error, interleaved as they arrived;
    /// at most the last [`MAX_OUTPUT`] bytes, after a `[... N bytes cut]`
    /// line when older output was dropped.
    pub output: String,
    /// From the start until it exited or was killed.
    pub elapsed: Duration,
}

impl ScriptRun {
    /// Whether the script exited with status 0.
    pub fn succeeded(&self) -> bool {
        self.outcome == Outcome::Succeeded
    }

    /// What the resource brain is told of the run: how it ended, and for
    /// a run that failed, the last line of its output (usually the cause).
    #[must_use]
    pub fn summary(&self) -> String {
        let last = self
            .output
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty());
        match last {
            Some(line) if !self.succeeded() => format!("{self}: {line}"),
            _ => self.to_string(),
        }
    }

    /// A run that never started, for `reason`.
    #[must_use]
    pub fn cannot_run(reason: String) -> ScriptRun {
        ScriptRun {
            outcome: Outcome::CannotRun(reason),
            output: String::new(),
            elapsed: Duration::ZERO,
        }
    }
}

impl fmt::Display for ScriptRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::TimedOut => write!(
                f,
                "timed out after {} and was killed",
                Elapsed(self.elapsed)
            ),
            Outcome::CannotRun(reason) | Outcome::Exhausted(reason) => write!(f, "{reason}"),
            outcome => write!(f, "{outcome} in {}", Elapsed(self.elapsed)),
        }
    }
}

/// A duration as people read it in a log line: "12 ms", "2.0 s".
struct Elapsed(Duration);

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < Duration::from_secs(1) {
            write!(f, "{} ms", self.0.as_millis())
        } else {
            write!(f, "{:.1} s", self.0.as_secs_f64())
        }
    }
}

/// Runs `script` with `args`, adding `env` to the daemon's environment,
/// and kills its whole process group if it is still running after
/// `timeout`. Never fails: every problem is an [`Outcome`].
///
/// Whatever the script leaves running in its process group is killed soon
/// after it exits; something meant to outlive the script (a daemon it
/// starts) must leave the group (`setsid`) and the output pipes.
pub async fn run(
    script: &Path,
    args: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> ScriptRun {
    run_with_input(script, args, env, &[], timeout).await
}

/// As [`run`], writing `input` to the script's standard input (then
/// closing it); with no input, standard input is `/dev/null`. The input is
/// never logged (fence agents read passwords from it).
pub async fn run_with_input(
    script: &Path,
    args: &[String],
    env: &[(String, String)],
    input: &[u8],
    timeout: Duration,
) -> ScriptRun {
    if let Err(reason) = check_runnable(script) {
        return ScriptRun::cannot_run(format!("cannot run {}: {reason}", script.display()));
    }
    let name = script.file_name().map_or_else(
        || script.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );

    let start = Instant::now();
    let mut child = match spawn(script, args, env, !input.is_empty()).await {
        Ok(child) => child,
        Err(e) => {
            let reason = if e.kind() == io::ErrorKind::NotFound {
                // The file exists (checked above), so it is the interpreter.
                "its interpreter (the #! line) was not found".to_string()
            } else {
                e.to_string()
            };
            let reason = format!("cannot run {}: {reason}", script.display());
            if crate::sys::perms::exhausted(&e) {
                return ScriptRun {
                    outcome: Outcome::Exhausted(reason),
                    ..ScriptRun::cannot_run(String::new())
                };
            }
            return ScriptRun::cannot_run(reason);
        }
    };
    let group = child.id().map(Group::led_by);

    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let mut guard = Guard {
        group,
        readers: Vec::new(),
    };
    if let Some(out) = child.stdout.take() {
        guard
            .readers
            .push(tokio::spawn(read_lines(out, tx.clone())));
    }
    if let Some(err) = child.stderr.take() {
        guard
            .readers
            .push(tokio::spawn(read_lines(err, tx.clone())));
    }
    // Only the readers hold senders now, so the channel closes once both
    // pipes are at end of file.
    drop(tx);
    if let Some(mut stdin) = child.stdin.take() {
        // A writer of its own: a script that never reads must not hold up
        // the timeout (the pipe's buffer holds any sensible input anyway).
        let input = input.to_vec();
        guard.readers.push(tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        }));
    }

    let mut tail = Tail::new(MAX_OUTPUT);
    let deadline = tokio::time::sleep_until(start + timeout);
    tokio::pin!(deadline);
    let mut open = true;
    let ended: Option<io::Result<ExitStatus>> = loop {
        tokio::select! {
            line = rx.recv(), if open => match line {
                Some(line) => keep(&mut tail, &name, line),
                None => open = false,
            },
            status = child.wait() => break Some(status),
            () = &mut deadline => break None,
        }
    };

    let outcome = match ended {
        Some(Ok(status)) => outcome_of(status),
        Some(Err(e)) => Outcome::CannotRun(format!(
            "cannot run {}: lost track of it: {e}",
            script.display()
        )),
        None => {
            kill_group(&mut child, group);
            // Reaps it: a killed script must not stay a zombie.
            let _ = child.wait().await;
            Outcome::TimedOut
        }
    };
    let elapsed = start.elapsed();

    drain(&mut rx, &mut tail, &name).await;
    // Leftovers in the group (background jobs) die with the action, and
    // are gone when the caller hears of its end.
    kill_group(&mut child, group);
    let gone = match group {
        Some(group) => group.gone(GROUP_GONE).await,
        None => true,
    };
    if !gone {
        tracing::warn!(
            script = %name,
            "processes of group {} still run after SIGKILL",
            group.map_or(0, Group::id)
        );
    }
    // Their ends of the pipes are closed now: this picks up their last
    // output without waiting, unless something that left the group kept
    // the pipes.
    drain(&mut rx, &mut tail, &name).await;
    guard.disarm();

    ScriptRun {
        outcome,
        output: output_text(tail),
        elapsed,
    }
}

/// Cleans up after a run, also when its future is dropped half-way:
/// `kill_on_drop` reaches only the script itself, not its group, and the
/// readers would otherwise wait on pipes that leftovers hold open.
#[derive(Debug)]
struct Guard {
    group: Option<Group>,
    readers: Vec<JoinHandle<()>>,
}

impl Guard {
    /// For a run that ended: its group is already dealt with, and killing
    /// it again could reach a new group that reused the number.
    fn disarm(&mut self) {
        self.group = None;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(group) = self.group {
            group.kill();
        }
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// Why `script` cannot be run, when that shows before trying.
fn check_runnable(script: &Path) -> Result<(), String> {
    let meta = match std::fs::metadata(script) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err("no such file".into()),
        Err(e) => return Err(e.to_string()),
    };
    if meta.is_dir() {
        return Err("is a directory".into());
    }
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err("not executable".into());
        }
    }
    Ok(())
}

async fn spawn(
    script: &Path,
    args: &[String],
    env: &[(String, String)],
    piped_input: bool,
) -> io::Result<Child> {
    // A bare file name would be looked up in PATH instead.
    let program: PathBuf = if script.components().count() == 1 && script.is_relative() {
        Path::new(".").join(script)
    } else {
        script.to_path_buf()
    };
    let mut command = Command::new(&program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(if piped_input {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    process::new_group(&mut command);

    let mut tries = 0;
    loop {
        match command.spawn() {
            // A file just written can stay "busy" for a moment while another
            // thread's fork still holds it open for writing.
            Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy && tries < BUSY_RETRIES => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            result => return result,
        }
    }
}

fn outcome_of(status: ExitStatus) -> Outcome {
    if status.success() {
        return Outcome::Succeeded;
    }
    #[cfg(unix)]
    let signal = {
        use std::os::unix::process::ExitStatusExt;
        status.signal()
    };
    #[cfg(not(unix))]
    let signal = None;
    Outcome::Failed {
        code: status.code(),
        signal,
    }
}

/// Kills the script's process group, or on systems without one here, the
/// script alone.
#[cfg(target_os = "linux")]
fn kill_group(_child: &mut Child, group: Option<Group>) {
    if let Some(group) = group {
        group.kill();
    }
}

#[cfg(not(target_os = "linux"))]
fn kill_group(child: &mut Child, _group: Option<Group>) {
    let _ = child.start_kill();
}

/// Adds lines until the readers are done or [`READ_GRACE`] has passed.
async fn drain(rx: &mut mpsc::Receiver<Vec<u8>>, tail: &mut Tail, name: &str) {
    let grace = tokio::time::sleep(READ_GRACE);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => keep(tail, name, line),
                None => return,
            },
            () = &mut grace => return,
        }
    }
}

/// Sends each line of `pipe` (with its newline; overlong lines in pieces
/// of [`MAX_OUTPUT`] bytes, so a line without end cannot grow unbounded).
async fn read_lines<R: AsyncRead + Unpin>(pipe: R, tx: mpsc::Sender<Vec<u8>>) {
    let mut pipe = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        let buf = match pipe.fill_buf().await {
            Ok(buf) if !buf.is_empty() => buf,
            _ => break,
        };
        let room = MAX_OUTPUT - line.len();
        let (take, complete) = match buf.iter().take(room).position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len().min(room), buf.len() >= room),
        };
        line.extend_from_slice(&buf[..take]);
        pipe.consume(take);
        if complete && tx.send(std::mem::take(&mut line)).await.is_err() {
            return;
        }
    }
    if !line.is_empty() {
        let _ = tx.send(line).await;
    }
}

/// Logs one line of the script's output and adds it to the tail.
fn keep(tail: &mut Tail, name: &str, line: Vec<u8>) {
    let text = String::from_utf8_lossy(&line);
    let text = text.trim_end_matches(['\n', '\r']);
    tracing::info!(script = %name, "{text}");
    tail.push(&line);
}

/// The output kept, as text: after a `[... N bytes cut]` line when older
/// output was dropped, and then from the first whole line.
fn output_text(tail: Tail) -> String {
    let mut cut = tail.cut();
    let mut bytes = tail.into_bytes();
    if cut == 0 {
        return String::from_utf8_lossy(&bytes).into_owned();
    }
    // Start at a whole line when the cut fell inside one.
    if let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
        if newline + 1 < bytes.len() {
            bytes.drain(..=newline);
            cut += newline as u64 + 1;
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    format!("[... {cut} bytes cut]\n{text}")
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Dead means gone or a zombie: the test process is not the reaper of
    /// a killed script's orphans.
    fn alive(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => false,
            Ok(stat) => {
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next());
                !matches!(state, Some('Z' | 'X' | 'x'))
            }
        }
    }

    fn read_pid(path: &Path) -> i32 {
        std::fs::read_to_string(path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn success_captures_output() {
        let dir = tempfile::tempdir().unwrap();
        let script = write_script(dir.path(), "ok", "echo hello \"$1\"\necho oops >&2\nexit 0");
        let run = run(&script, &["world".into()], &[], Duration::from_secs(10)).await;
        assert!(run.succeeded(), "{run}");
        assert_eq!(run.outcome, Outcome::Succeeded);
        assert!(run.output.contains("hello world\n"), "{:?}", run.output);
        assert!(run.output.contains("oops\n"), "{:?}", run.output);
        assert!(run.to_string().starts_with("exited 0 in "), "{run}");
    }

    #[tokio::test]
    async fn nonzero_exit_code_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let script = write_script(dir.path(), "fail", "echo failing\nexit 3");
        let run = run(&script, &[], &[], Duration::from_secs(10)).await;
        assert!(!run.succeeded());
        assert_eq!(
            run.outcome,
            Outcome::Failed {
                code: Some(3),
                signal: None
            }
        );
        assert!(
            run.to_string().starts_with("exited with code 3 in "),
            "{run}"
        );
        assert_eq!(run.output, "failing\n");
    }

    #[tokio::test]
    async fn signal_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let script = write_script(dir.path(), "selfkill", "kill -9 $$");
        let run = run(&script, &[], &[], Duration::from_secs(10)).await;
        assert_eq!(
            run.outcome,
            Outcome::Failed {
                code: None,
                signal: Some(9)
            }
        );
        assert!(run.to_string().starts_with("killed by signal 9"), "{run}");
    }

    #[tokio::test]
    async fn env_is_visible() {
        let dir = tempfile::tempdir().unwrap();
        let script = write_script(dir.path(), "env", "echo \"tag=$HEARTLINE_TAG\"");
        let env = [("HEARTLINE_TAG".to_string(), "db-1".to_string())];
        let run = run(&script, &[], &env, Duration::from_secs(10)).await;
        assert!(run.succeeded(), "{run}");
        assert_eq!(run.output, "tag=db-1\n");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("bg.pid");
        let script = write_script(
            dir.path(),
            "hang",
            &format!(
                "sleep 300 &\necho $! > '{}'\necho started\nsleep 300",
                pidfile.display()
            ),
        );
        let timeout = Duration::from_millis(500);
        let begun = std::time::Instant::now();
        let run = run(&script, &[], &[], timeout).await;
        let took = begun.elapsed();
        assert_eq!(run.outcome, Outcome::TimedOut, "{run}");
        assert!(run.elapsed >= timeout, "{run}");
        assert!(took < timeout + Duration::from_secs(2), "took {took:?}");
        assert!(run.output.contains("started"), "{:?}", run.output);
        assert!(run.to_string().starts_with("timed out after "), "{run}");
        let pid = read_pid(&pidfile);
        assert!(!alive(pid), "background sleep {pid} survived");
    }

    #[tokio::test]
    async fn leftovers_are_killed_after_exit() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("bg.pid");
        let script = write_script(
            dir.path(),
            "leave",
            &format!("sleep 300 &\necho $! > '{}'\nexit 0", pidfile.display()),
        );
        let begun = std::time::Instant::now();
        let run = run(&script, &[], &[], Duration::from_secs(30)).await;
        assert!(run.succeeded(), "{run}");
        assert!(begun.elapsed() < Duration::from_secs(5));
        let pid = read_pid(&pidfile);
        assert!(!alive(pid), "background sleep {pid} survived");
    }

    #[tokio::test]
    async fn missing_script_cannot_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope");
        let run = run(&path, &[], &[], Duration::from_secs(1)).await;
        let Outcome::CannotRun(reason) = &run.outcome else {
            panic!("{run:?}");
        };
        assert_eq!(
            reason,
            &format!("cannot run {}: no such file", path.display())
        );
        assert!(!run.succeeded());
    }

    #[tokio::test]
    async fn non_executable_script_cannot_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_script(dir.path(), "plain", "exit 0");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let run = run(&path, &[], &[], Duration::from_secs(1)).await;
        assert_eq!(
            run.to_string(),
            format!("cannot run {}: not executable", path.display())
        );
    }

    #[tokio::test]
    async fn bad_interpreter_cannot_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("badshebang");
        std::fs::write(&path, "#!/nonexistent/interpreter\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let run = run(&path, &[], &[], Duration::from_secs(1)).await;
        let Outcome::CannotRun(reason) = &run.outcome else {
            panic!("{run:?}");
        };
        assert!(reason.contains("interpreter"), "{reason}");
        assert!(reason.contains(&path.display().to_string()), "{reason}");
    }

    #[tokio::test]
    async fn long_output_keeps_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        // 3000 numbered lines, 123000 bytes in all.
        let script = write_script(
            dir.path(),
            "loud",
            "i=0\nwhile [ $i -lt 3000 ]; do printf 'line %05d .............................\\n' $i; i=$((i+1)); done",
        );
        let run = run(&script, &[], &[], Duration::from_secs(30)).await;
        assert!(run.succeeded(), "{run}");
        let (first, rest) = run.output.split_once('\n').unwrap();
        let cut: usize = first
            .strip_prefix("[... ")
            .and_then(|s| s.strip_suffix(" bytes cut]"))
            .unwrap()
            .parse()
            .unwrap();
        assert!(rest.len() <= MAX_OUTPUT);
        let line = rest.lines().last().unwrap().len() + 1;
        assert_eq!(cut + rest.len(), 3000 * line);
        assert!(rest.starts_with("line "), "{:?}", &rest[..40]);
        assert!(rest.ends_with("line 02999 .............................\n"));
        assert!(cut > 0 && cut + rest.len() > MAX_OUTPUT);
    }

    #[test]
    fn outcome_lines() {
        let run = ScriptRun {
            outcome: Outcome::TimedOut,
            output: String::new(),
            elapsed: Duration::from_millis(2003),
        };
        assert_eq!(run.to_string(), "timed out after 2.0 s and was killed");
        let run = ScriptRun {
            outcome: Outcome::Succeeded,
            output: String::new(),
            elapsed: Duration::from_millis(12),
        };
        assert_eq!(run.to_string(), "exited 0 in 12 ms");
    }
}
