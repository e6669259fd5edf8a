//! Giving back the memory a burst of connections took. glibc keeps the
//! pages freed inside its per-thread arenas, and pages locked by
//! [`super::system::lock_memory`] cannot be given back at all (`madvise`
//! refuses locked pages): after a storm of 10,000 control connections the
//! daemon would stay at its peak for good. Each connection's task holds a
//! [`Held`] from one [`Bursts`]; once at least [`BURST`] connections came
//! since the last release and they are over (at most [`QUIET`] left, and
//! [`SETTLE`] later still so), the
//! daemon unlocks its memory, asks glibc for every whole free page back
//! (`malloc_trim(0)`), and locks it again as before.
//!
//! While unlocked, for the millisecond or two this takes, a page could in
//! principle be paged out under memory pressure; it is locked again when
//! next touched. That is the whole price, paid once per storm.
//!
//! The release holds the allocator's arena locks (the trim) and the
//! kernel's lock on the address space (unlocking and locking), which the
//! communication manager's real-time thread needs for its own allocations
//! and page faults. Run at normal priority, a busy machine preempted it
//! midway and the heartbeat thread waited behind it (priority inversion:
//! with an administrator's script opening a control connection after
//! another under 4 CPU hogs, the heartbeat timer woke up to 93 ms late and
//! nodes were declared down at 8 ms x 5). So it runs on a thread of its
//! own at real-time priority just below the manager's ([`RELEASE_PRIORITY`]),
//! which nothing of normal priority preempts, and only after a storm
//! ([`BURST`]), not after every few commands.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Connections since the last release that make a burst worth releasing
/// after. (Counted, not measured at their peak: a storm of connections
/// closed by their clients at once is served one after the other, never
/// many live at a time, and still leaves its pages behind.)
pub const BURST: usize = 512;

/// The SCHED_FIFO priority the release runs at: above everything of
/// normal priority, below the communication manager, which preempts it
/// whenever it needs none of the locks the release holds.
pub const RELEASE_PRIORITY: u8 = super::system::MANAGER_PRIORITY - 1;
/// At most this many connections left: the burst is over.
pub const QUIET: usize = 8;
/// How long the burst must stay over (the last tasks finish closing).
pub const SETTLE: Duration = Duration::from_secs(1);

/// Whether [`super::system::lock_memory`] locked the process's memory, so
/// [`release`] must unlock and lock again around the trim.
static LOCKED: AtomicBool = AtomicBool::new(false);

/// Records that the process's memory is locked (all current and future
/// pages, on fault).
pub fn set_locked() {
    LOCKED.store(true, Ordering::Relaxed);
}

/// Counts the live connections of one server and, after each burst, gives
/// the memory it took back to the system.
#[derive(Debug, Clone)]
pub struct Bursts {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// What for, in the log line.
    what: &'static str,
    live: AtomicUsize,
    /// Connections since the last release.
    since: AtomicUsize,
    over: Notify,
    /// Told each time a connection ends.
    ended: Notify,
}

/// One live connection; dropping it ends it.
#[derive(Debug)]
pub struct Held {
    inner: Arc<Inner>,
}

impl Bursts {
    /// A counter for `what` (`control connections`), with its task that
    /// releases memory after each burst, for the life of the process.
    /// Needs a tokio runtime.
    #[must_use]
    pub fn new(what: &'static str) -> Bursts {
        let inner = Arc::new(Inner {
            what,
            live: AtomicUsize::new(0),
            since: AtomicUsize::new(0),
            over: Notify::new(),
            ended: Notify::new(),
        });
        let task = inner.clone();
        tokio::spawn(async move {
            let inner = task;
            loop {
                // A notification that came before this wait is kept.
                inner.over.notified().await;
                tokio::time::sleep(SETTLE).await;
                if inner.live.load(Ordering::Relaxed) > QUIET {
                    continue;
                }
                if inner.since.load(Ordering::Relaxed) < BURST {
                    continue;
                }
                let since = inner.since.swap(0, Ordering::Relaxed);
                let (released, took) = release_at_realtime_priority().await;
                tracing::info!(
                    "after a burst of {since} {}: {released} (in {} µs)",
                    inner.what,
                    took.as_micros()
                );
            }
        });
        Bursts { inner }
    }

    /// Counts one more live connection until the returned value is dropped.
    #[must_use]
    pub fn enter(&self) -> Held {
        self.inner.live.fetch_add(1, Ordering::Relaxed);
        self.inner.since.fetch_add(1, Ordering::Relaxed);
        Held {
            inner: self.inner.clone(),
        }
    }

    /// Connections live now.
    #[must_use]
    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Waits until fewer than `most` connections are live.
    pub async fn below(&self, most: usize) {
        loop {
            let ended = self.inner.ended.notified();
            tokio::pin!(ended);
            // Registered before the count is read: an end in between is
            // not missed.
            ended.as_mut().enable();
            if self.live() < most {
                return;
            }
            ended.await;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let live = self.inner.live.fetch_sub(1, Ordering::Relaxed) - 1;
        self.inner.ended.notify_waiters();
        if live <= QUIET && self.inner.since.load(Ordering::Relaxed) >= BURST {
            self.inner.over.notify_one();
        }
    }
}

/// [`release`] on a thread of its own at [`RELEASE_PRIORITY`] (at the
/// caller's priority if that cannot be had: not root, no `LimitRTPRIO`).
async fn release_at_realtime_priority() -> (String, Duration) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("memory-release".into())
        .spawn(move || {
            let priority = super::system::realtime_priority_at(RELEASE_PRIORITY);
            let (mut said, took) = release();
            if let Err(e) = priority {
                said.push_str(&format!(
                    " (at normal priority: cannot get SCHED_FIFO: {e})"
                ));
            }
            let _ = tx.send((said, took));
        });
    match spawned {
        Ok(_) => rx.await.unwrap_or_else(|_| {
            (
                "memory not released: its thread ended".into(),
                Duration::ZERO,
            )
        }),
        Err(e) => (
            format!("memory not released: cannot start its thread: {e}"),
            Duration::ZERO,
        ),
    }
}

/// Gives the allocator's free pages back to the system: unlocks memory if
/// it was locked, trims, locks again. Says in words what it did, and how
/// long it took.
#[must_use]
pub fn release() -> (String, Duration) {
    let started = Instant::now();
    let said = release_pages();
    (said, started.elapsed())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_pages() -> String {
    use nix::sys::mman::{MlockAllFlags, mlockall, munlockall};
    let locked = LOCKED.load(Ordering::Relaxed);
    if locked {
        if let Err(e) = munlockall() {
            return format!("memory not released: cannot unlock it: {e}");
        }
    }
    let trimmed = trim();
    let mut said = if trimmed {
        "freed memory given back to the system".to_string()
    } else {
        "no whole free page to give back".to_string()
    };
    if locked {
        // As system::lock_memory locked it: what is resident now is
        // locked again, the rest as it is touched.
        let all = MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE;
        let on_fault = all | MlockAllFlags::from_bits_retain(nix::libc::MCL_ONFAULT);
        if let Err(e) = mlockall(on_fault).or_else(|_| mlockall(all)) {
            LOCKED.store(false, Ordering::Relaxed);
            tracing::warn!("memory could not be locked again, paging may delay heartbeats: {e}");
            said.push_str("; memory NOT locked again");
        }
    }
    said
}

/// glibc's `malloc_trim(0)`: every arena's whole free pages back to the
/// system. Whether anything came back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() -> bool {
    // SAFETY: malloc_trim takes no pointer and has no precondition; glibc
    // takes each arena's own lock while it walks it, so it is safe to call
    // while other threads allocate.
    unsafe { nix::libc::malloc_trim(0) == 1 }
}

/// Elsewhere the allocator has no such call (musl, Windows) or gives
/// memory back itself.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_pages() -> String {
    "nothing to do on this platform".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn counts_live_connections_and_those_since_the_last_release() {
        let bursts = Bursts::new("test connections");
        let held: Vec<Held> = (0..10).map(|_| bursts.enter()).collect();
        assert_eq!(bursts.live(), 10);
        drop(held);
        drop(bursts.enter());
        assert_eq!(bursts.live(), 0);
        // Below a burst: nothing released, the count is kept.
        tokio::time::sleep(SETTLE * 2).await;
        assert_eq!(bursts.inner.since.load(Ordering::Relaxed), 11);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_released_once_it_is_over() {
        let bursts = Bursts::new("test connections");
        // One after the other, never more than one live: still a burst.
        for _ in 0..BURST {
            drop(bursts.enter());
        }
        let busy: Vec<Held> = (0..=QUIET).map(|_| bursts.enter()).collect();
        tokio::time::sleep(SETTLE * 2).await;
        // Not over while more than QUIET are live.
        assert_eq!(
            bursts.inner.since.load(Ordering::Relaxed),
            BURST + QUIET + 1
        );
        drop(busy);
        tokio::time::sleep(SETTLE * 2).await;
        // Released: the count starts again from nothing.
        assert_eq!(bursts.inner.since.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn below_waits_for_connections_to_end() {
        let bursts = Bursts::new("test connections");
        let mut held: Vec<Held> = (0..3).map(|_| bursts.enter()).collect();
        let waiting = tokio::spawn({
            let bursts = bursts.clone();
            async move { bursts.below(2).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        held.pop();
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        held.pop();
        tokio::time::timeout(SETTLE, waiting)
            .await
            .expect("told once fewer than 2 are live")
            .unwrap();
    }

    #[test]
    fn release_says_what_it_did() {
        let (said, _) = release();
        assert!(!said.is_empty());
    }
}
