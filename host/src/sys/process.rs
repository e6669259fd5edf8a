//! Supervising child processes, for the recovery kits' scripts and the
//! appserver's monitored commands alike: starting a command in a process
//! group of its own ([`new_group`]), signalling that group as a whole
//! ([`Group`]: stopped with SIGTERM then SIGKILL after a grace, killed,
//! waited on until gone), and keeping the bounded tail of a process's
//! output ([`Tail`]).
//!
//! Process groups are signalled on Linux only. Elsewhere [`Group`]'s
//! signals do nothing and a group counts as gone at once; a caller that
//! must stop something there kills its child itself.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use tokio::process::Command;

/// Starts `command`'s process in a new process group, which it leads: the
/// group's id is its pid (see [`Group::led_by`]). On systems without
/// process groups this does nothing.
pub fn new_group(command: &mut Command) -> &mut Command {
    #[cfg(unix)]
    command.process_group(0);
    command
}

/// A process group: the one a process started with [`new_group`] leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group(u32);

impl Group {
    /// The group led by the process `pid`.
    #[must_use]
    pub fn led_by(pid: u32) -> Group {
        Group(pid)
    }

    /// The group's id (its leader's pid).
    #[must_use]
    pub fn id(self) -> u32 {
        self.0
    }

    /// Asks every process of the group to stop (SIGTERM).
    pub fn terminate(self) {
        #[cfg(target_os = "linux")]
        self.signal(Some(nix::sys::signal::Signal::SIGTERM));
    }

    /// Kills every process of the group (SIGKILL). Once no member is left
    /// this finds nothing (ESRCH), which is the wanted result.
    pub fn kill(self) {
        #[cfg(target_os = "linux")]
        self.signal(Some(nix::sys::signal::Signal::SIGKILL));
    }

    /// Stops the group: SIGTERM, and if `ended` has not resolved `grace`
    /// later, `on_kill` (for the caller to say so) and SIGKILL. Returns
    /// once `ended` resolves.
    pub async fn stop(
        self,
        grace: Duration,
        ended: impl Future<Output = ()>,
        on_kill: impl FnOnce(),
    ) {
        self.terminate();
        tokio::pin!(ended);
        if tokio::time::timeout(grace, &mut ended).await.is_err() {
            on_kill();
            self.kill();
            ended.await;
        }
    }

    /// Waits, for at most `within`, until no process of the group is left
    /// running (zombies left for init to reap do not count); false when
    /// some still are. Processes stuck in the kernel (an unreachable NFS
    /// server) can outlast SIGKILL; this does not wait longer for them.
    pub async fn gone(self, within: Duration) -> bool {
        #[cfg(target_os = "linux")]
        {
            let Some(pgid) = self.pgid() else {
                return true;
            };
            let until = tokio::time::Instant::now() + within;
            loop {
                // Signal "none" only asks whether the group has members;
                // zombies count, and init may be slow to reap them, so a
                // member left means looking closer.
                if nix::sys::signal::killpg(pgid, None).is_err() {
                    return true;
                }
                let running = tokio::task::spawn_blocking(move || group_running(pgid.as_raw()))
                    .await
                    .unwrap_or(true);
                if !running {
                    return true;
                }
                if tokio::time::Instant::now() >= until {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = within;
            true
        }
    }

    /// The id as the kernel takes it; `None` for one that cannot be a
    /// group's (0 would mean this process's own group).
    #[cfg(target_os = "linux")]
    fn pgid(self) -> Option<nix::unistd::Pid> {
        i32::try_from(self.0)
            .ok()
            .filter(|&g| g > 0)
            .map(nix::unistd::Pid::from_raw)
    }

    #[cfg(target_os = "linux")]
    fn signal(self, signal: Option<nix::sys::signal::Signal>) {
        if let Some(pgid) = self.pgid() {
            let _ = nix::sys::signal::killpg(pgid, signal);
        }
    }
}

/// Whether some process of group `pgid` is not yet a zombie.
#[cfg(target_os = "linux")]
fn group_running(pgid: i32) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        // Without /proc, assume the worst; the caller only waits longer.
        return true;
    };
    procs.flatten().any(|entry| {
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid {
            return false;
        }
        // Gone since the listing: not running.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // After the command's closing parenthesis: state, ppid, pgrp.
        let mut fields = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_ascii_whitespace())
            .into_iter()
            .flatten();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
        pgrp == Some(pgid) && !matches!(state, Some("Z" | "X" | "x"))
    })
}

/// The last `limit` bytes of a process's output, and how many it wrote in
/// all: older output is dropped from the front.
#[derive(Debug)]
pub struct Tail {
    kept: VecDeque<u8>,
    end: u64,
    limit: usize,
}

impl Tail {
    /// An empty tail keeping at most `limit` bytes.
    #[must_use]
    pub fn new(limit: usize) -> Tail {
        Tail {
            kept: VecDeque::new(),
            end: 0,
            limit,
        }
    }

    /// Adds `bytes` at the end.
    pub fn push(&mut self, bytes: &[u8]) {
        self.end += bytes.len() as u64;
        let bytes = &bytes[bytes.len().saturating_sub(self.limit)..];
        let overflow = (self.kept.len() + bytes.len()).saturating_sub(self.limit);
        self.kept.drain(..overflow);
        self.kept.extend(bytes);
    }

    /// How many bytes were pushed in all: the offset just past the last.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.end
    }

    /// How many bytes were dropped from the front.
    #[must_use]
    pub fn cut(&self) -> u64 {
        self.end - self.kept.len() as u64
    }

    /// The kept bytes from offset `from` on, and the offset of the first.
    #[must_use]
    pub fn from(&self, from: u64) -> (u64, Vec<u8>) {
        let start = self.cut();
        let first = from.clamp(start, self.end);
        let skip = (first - start) as usize;
        (first, self.kept.iter().skip(skip).copied().collect())
    }

    /// The kept bytes (the ones from offset [`Tail::cut`] on).
    #[must_use]
    pub fn into_bytes(self) -> Vec<u8> {
        self.kept.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_bytes_and_counts_them_all() {
        let mut output = Tail::new(8);
        output.push(b"hello ");
        output.push(b"world, again");
        assert_eq!(output.end(), 18);
        assert_eq!(output.cut(), 10);
        assert_eq!(output.from(0), (10, b"d, again".to_vec()));
        assert_eq!(output.into_bytes(), b"d, again".to_vec());
    }

    #[test]
    fn reading_from_an_offset_returns_only_newer_bytes() {
        let mut output = Tail::new(100);
        output.push(b"one\n");
        let (from, bytes) = output.from(0);
        assert_eq!((from, bytes.as_slice()), (0, &b"one\n"[..]));
        output.push(b"two\n");
        let (from, bytes) = output.from(4);
        assert_eq!((from, bytes.as_slice()), (4, &b"two\n"[..]));
        let (from, bytes) = output.from(99);
        assert_eq!(
            (from, bytes.len()),
            (8, 0),
            "an offset past the end reads nothing"
        );
    }

    #[test]
    fn a_single_write_larger_than_the_limit_keeps_its_end() {
        let mut output = Tail::new(4);
        output.push(b"abcdefgh");
        assert_eq!(output.from(0), (4, b"efgh".to_vec()));
        assert_eq!(output.cut(), 4);
    }

    #[test]
    fn nothing_is_cut_below_the_limit() {
        let mut output = Tail::new(16);
        output.push(b"line\n");
        output.push(b"");
        assert_eq!((output.end(), output.cut()), (5, 0));
        assert_eq!(output.into_bytes(), b"line\n".to_vec());
    }

    /// A group whose shell ignores SIGTERM: stopped, it gets SIGKILL after
    /// the grace, and is gone.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_group_ignoring_term_is_killed_after_the_grace() {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("trap '' TERM; sleep 30 & wait")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = new_group(&mut command).spawn().unwrap();
        let group = Group::led_by(child.id().unwrap());
        // Let the shell install its trap and start the sleep.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let begun = std::time::Instant::now();
        let mut killed = false;
        group
            .stop(
                Duration::from_millis(300),
                async {
                    let _ = child.wait().await;
                },
                || killed = true,
            )
            .await;
        assert!(killed, "SIGTERM was ignored, so SIGKILL must follow");
        assert!(begun.elapsed() >= Duration::from_millis(300));
        assert!(
            group.gone(Duration::from_secs(2)).await,
            "the sleep survived"
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_group_that_obeys_term_is_not_killed() {
        let mut command = Command::new("sleep");
        command.arg("30").kill_on_drop(true);
        let mut child = new_group(&mut command).spawn().unwrap();
        let group = Group::led_by(child.id().unwrap());
        let mut killed = false;
        group
            .stop(
                Duration::from_secs(10),
                async {
                    let _ = child.wait().await;
                },
                || killed = true,
            )
            .await;
        assert!(!killed);
        assert!(group.gone(Duration::from_secs(2)).await);
    }
}
