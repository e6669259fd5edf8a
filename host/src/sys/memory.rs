//! Giving back the memory the start-up or a burst of connections took.
//!
//! The start-up runs code nothing runs again (parsing the configuration,
//! opening the database, building the endpoint), and the kernel maps 64 KiB
//! around each page of code first touched (fault-around): locked as
//! touched, the daemon held 5.6 MB of its 6.4 MB of code although its
//! steady state touches 0.9 MB of it (12.1 MB resident). Once, [`AFTER_START`]
//! after the daemon is ready, and after each burst, the release also drops
//! the mappings of code and read-only data that are the file's own
//! ([`clean_file_mappings`]); what is in use is mapped again from the page
//! cache at its next touch and locked then (7.2 to 7.4 MB resident). Code
//! first run later (a takeover on a node that never ran one, a command)
//! takes a minor page fault on its first run, as before for code the
//! start-up had not run.
//!
//! After a burst: glibc keeps the
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

/// How long after the daemon is ready its start-up is over: the memory
/// it took then (its code among it) is given back once, at this point.
pub const AFTER_START: Duration = Duration::from_secs(30);

/// Gives back, [`AFTER_START`] from now and once, what the start-up took
/// and no longer uses: free heap pages, and the code and read-only data
/// only the start-up ran (mapped again, and locked, when next used). Needs
/// a tokio runtime.
pub fn release_after_start() {
    tokio::spawn(async {
        tokio::time::sleep(AFTER_START).await;
        let (released, took) = release_at_realtime_priority().await;
        tracing::info!("start-up over: {released} (in {} µs)", took.as_micros());
    });
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
    said.push_str(&drop_clean_pages());
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

/// Unmaps the pages of code and read-only data (of the binary and its
/// libraries) that are not in use: the start-up's code, and the
/// neighbours the kernel mapped around each page touched (fault-around).
/// Pages in use are mapped again at their next touch, from the page cache,
/// and locked then. Only mappings that cannot be written and hold no
/// private copy of a page qualify, so nothing but a mapping is dropped:
/// the contents are the file's. Says what it gave back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn drop_clean_pages() -> String {
    let smaps = match std::fs::read_to_string("/proc/self/smaps") {
        Ok(smaps) => smaps,
        Err(e) => return format!("; code pages kept: cannot read /proc/self/smaps: {e}"),
    };
    let mut dropped = 0;
    let mut failed = None;
    for mapping in clean_file_mappings(&smaps) {
        match unmap_pages(mapping.start, mapping.len) {
            Ok(()) => dropped += mapping.resident,
            Err(e) => failed = Some(e),
        }
    }
    let mut said = format!(
        "; {} KiB of code and read-only data unmapped until next used",
        dropped / 1024
    );
    if let Some(e) = failed {
        said.push_str(&format!(" (some kept: {e})"));
    }
    said
}

/// `madvise(MADV_DONTNEED)` on one clean file mapping (see
/// [`clean_file_mappings`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn unmap_pages(start: usize, len: usize) -> Result<(), nix::Error> {
    use nix::sys::mman::{MmapAdvise, madvise};
    let Some(addr) = std::ptr::NonNull::new(start as *mut std::ffi::c_void) else {
        return Ok(());
    };
    // SAFETY: the range is one whole mapping of this process, read from
    // /proc/self/smaps, file-backed, without write permission and with no
    // anonymous (privately copied) page: MADV_DONTNEED only drops its page
    // table entries, and the next access maps the same bytes from the
    // file's page cache. No Rust object lives in such a mapping as owned
    // memory; references into it (code, string constants) stay valid. A
    // mapping that went away since it was read makes madvise fail with
    // ENOMEM, or (if replaced by another) is checked the same way by the
    // kernel's own rules: DONTNEED on locked pages fails with EINVAL.
    unsafe { madvise(addr, len, MmapAdvise::MADV_DONTNEED) }
}

/// One mapping [`drop_clean_pages`] may drop.
#[cfg(any(test, all(target_os = "linux", target_env = "gnu")))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CleanMapping {
    start: usize,
    len: usize,
    /// Bytes resident when read.
    resident: usize,
}

/// The mappings in `smaps` (the text of `/proc/self/smaps`) whose pages
/// are all the file's own: backed by a file (a path, not `[vdso]` or
/// anonymous memory), not writable, and holding no anonymous page (a
/// relocated read-only segment, RELRO, holds private copies and is left
/// alone). Only those with a resident page are listed.
#[cfg(any(test, all(target_os = "linux", target_env = "gnu")))]
fn clean_file_mappings(smaps: &str) -> Vec<CleanMapping> {
    /// The mapping being read: its range, whether its permissions and
    /// path qualify, and whether its `Anonymous:` and `Swap:` lines said 0
    /// (both must be seen: a mapping not known to be clean is kept).
    struct Reading {
        mapping: CleanMapping,
        qualifies: bool,
        anonymous_zero: bool,
        private_pages: bool,
    }
    let mut found = Vec::new();
    let mut current: Option<Reading> = None;
    let mut finish = |reading: Option<Reading>| {
        if let Some(r) = reading {
            if r.qualifies && r.anonymous_zero && !r.private_pages && r.mapping.resident > 0 {
                found.push(r.mapping);
            }
        }
    };
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-') {
            finish(current.take());
            let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) else {
                continue;
            };
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            current = Some(Reading {
                mapping: CleanMapping {
                    start,
                    len: end.saturating_sub(start),
                    resident: 0,
                },
                qualifies: perms.len() == 4
                    && !perms.contains('w')
                    && path.starts_with('/')
                    && end > start,
                anonymous_zero: false,
                private_pages: false,
            });
            continue;
        }
        let Some(reading) = current.as_mut() else {
            continue;
        };
        let kib = fields.next().and_then(|v| v.parse::<usize>().ok());
        match (first, kib) {
            ("Rss:", Some(kib)) => reading.mapping.resident = kib * 1024,
            ("Anonymous:", Some(0)) => reading.anonymous_zero = true,
            ("Swap:", Some(0)) => {}
            ("Anonymous:" | "Swap:", _) => reading.private_pages = true,
            _ => {}
        }
    }
    finish(current.take());
    found
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

    /// The test binary's own code is unmapped by the release and mapped
    /// again as this test (and every other one) runs on.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn release_unmaps_code_that_runs_on_after_it() {
        let (said, _) = release();
        let kib: usize = said
            .split("; ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no unmapped size in {said:?}"));
        assert!(kib > 0, "{said}");
        // Code that ran before it, run again.
        let (again, _) = release();
        assert!(again.contains("unmapped until next used"), "{again}");
    }

    const SMAPS: &str = "\
55d698000000-55d698100000 r--p 00000000 fd:01 123 /usr/bin/heartline
Size:               1024 kB
Rss:                 512 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd mr mw me lo
55d698100000-55d698700000 r-xp 00100000 fd:01 123 /usr/bin/heartline
Size:               6144 kB
Rss:                5644 kB
Anonymous:             0 kB
Swap:                  0 kB
55d698700000-55d698730000 r--p 00700000 fd:01 123 /usr/bin/heartline
Rss:                 188 kB
Anonymous:           188 kB
55d698730000-55d698740000 rw-p 00730000 fd:01 123 /usr/bin/heartline
Rss:                  64 kB
Anonymous:            60 kB
7f1627c50000-7f1627d87000 rw-p 00000000 00:00 0
Rss:                1232 kB
Anonymous:          1232 kB
7f1628000000-7f1628001000 r--p 00000000 00:00 0
Rss:                   4 kB
Anonymous:             0 kB
7f162c000000-7f162c100000 r-xp 00000000 fd:01 456 /usr/lib/x86_64-linux-gnu/libm.so.6
Rss:                   0 kB
Anonymous:             0 kB
7f162d000000-7f162d200000 r-xp 00000000 fd:01 789 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                1368 kB
Anonymous:             0 kB
Swap:                  4 kB
7f162e000000-7f162e100000 r--s 00000000 fd:01 999 /var/lib/heartline/a file.db
Rss:                  16 kB
Anonymous:             0 kB
7ffdab3e2000-7ffdab403000 rw-p 00000000 00:00 0 [stack]
Rss:                 112 kB
7ffdab5f0000-7ffdab5f2000 r-xp 00000000 00:00 0 [vdso]
Rss:                   8 kB
Anonymous:             0 kB
";

    #[test]
    fn only_unwritable_file_mappings_without_private_pages_are_clean() {
        let found = clean_file_mappings(SMAPS);
        let mapping = |start: usize, end: usize, kib: usize| CleanMapping {
            start,
            len: end - start,
            resident: kib * 1024,
        };
        assert_eq!(
            found,
            vec![
                // The binary's read-only data and its code.
                mapping(0x55d6_9800_0000, 0x55d6_9810_0000, 512),
                mapping(0x55d6_9810_0000, 0x55d6_9870_0000, 5644),
                // A read-only shared file mapping (a path with a space).
                mapping(0x7f16_2e00_0000, 0x7f16_2e10_0000, 16),
            ],
            "not the relocated data (private copies), writable data, anonymous \
             memory, a mapping with nothing resident, one with a swapped page, \
             the stack or the vDSO"
        );
    }

    #[test]
    fn damaged_smaps_text_yields_nothing_it_cannot_read() {
        assert!(clean_file_mappings("").is_empty());
        assert!(clean_file_mappings("zz-yy r-xp 0 0 0 /bin/x\nRss: 4 kB\n").is_empty());
        assert!(clean_file_mappings("Rss: 4 kB\n").is_empty());
        // Without its Anonymous line (a truncated read) a mapping is not
        // known to be clean.
        let truncated = "1000-2000 r-xp 0 0 0 /bin/x\nRss: 4 kB\n";
        assert!(clean_file_mappings(truncated).is_empty());
        let whole = "1000-2000 r-xp 0 0 0 /bin/x\nRss: 4 kB\nAnonymous: 0 kB\n";
        assert_eq!(clean_file_mappings(whole).len(), 1);
    }
}
