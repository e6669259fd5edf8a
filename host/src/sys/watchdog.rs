//! The Linux watchdog device (`/dev/watchdog`): while it is open and armed
//! the kernel resets the machine unless something is written to it within
//! its timeout. The resource brain says until when the machine may live
//! while anything may run on it (its quorum lease's end); [`Watchdog`]
//! feeds the device only while the next feed's deadline falls before
//! that, and disarms it (the "magic close": `V`, then close) when nothing
//! runs. So a node that could not stop in time, or whose daemon died or
//! stalled with applications running, is reset by the end of its lease.
//!
//! One more rule comes from the kernel: a watchdog closed without the
//! magic character is pinged once as it closes (`watchdog did not stop!`),
//! and a dying process closes it. So a daemon that died holding the device
//! would give the machine one more timeout from its death. It holds the
//! device only while the deadline is at least two timeouts away (its death
//! then still resets the machine in time: it dies within a timeout of its
//! last feed, or the device fired before); nearer, each feed opens the
//! device, writes and closes it again without the magic character, so that
//! every ping falls at an instant the deadline allows and a death pings
//! nothing. The kernel logs a line for each such close.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The device, and what was last done with it.
#[derive(Debug)]
pub struct Watchdog {
    path: PathBuf,
    timeout: Duration,
    /// Held open (far from the deadline).
    file: Option<File>,
    /// Armed: fed since it was last disarmed, so the kernel resets the
    /// machine at the last feed + `timeout`, held open or not.
    running: bool,
}

/// What [`Watchdog::tend`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tended {
    /// Fed, and held open: the deadline is two timeouts away or more.
    Fed,
    /// Fed and closed without the magic character (which pings it once
    /// more, now): the deadline is near, so a daemon that died holding the
    /// device must not ping it later.
    Released,
    /// Not fed: feeding would let the machine live past the deadline; it
    /// resets when the last feed runs out unless the deadline moves.
    Starved,
    /// Nothing may run here: disarmed (or never armed).
    Disarmed,
}

impl Watchdog {
    /// The device at `path`, whose timeout is `timeout`: the device's own
    /// must not be longer (it is checked in sysfs where the kernel shows
    /// it; heartline does not set it).
    #[must_use]
    pub fn new(path: &Path, timeout: Duration) -> Watchdog {
        Watchdog {
            path: path.to_path_buf(),
            timeout,
            file: None,
            running: false,
        }
    }

    /// How often [`Watchdog::tend`] should run while it is armed.
    #[must_use]
    pub fn period(&self) -> Duration {
        self.timeout / 4
    }

    /// Whether it is armed: the machine resets unless it is fed in time.
    #[must_use]
    pub fn armed(&self) -> bool {
        self.running
    }

    /// Feeds the device if the machine may live `timeout` past `now`
    /// without outliving `deadline`, holding it open only while `deadline`
    /// is two timeouts away or more; disarms it when `deadline` is `None`.
    pub fn tend(&mut self, now: Instant, deadline: Option<Instant>) -> std::io::Result<Tended> {
        let Some(deadline) = deadline else {
            if self.running {
                let mut file = match self.file.take() {
                    Some(file) => file,
                    None => self.open()?,
                };
                file.write_all(b"V")?;
                file.flush()?;
                self.running = false;
            }
            return Ok(Tended::Disarmed);
        };
        if !may_feed(now, self.timeout, deadline) {
            // Held or not, it stays as it is: closing it now would ping it
            // past the deadline.
            return Ok(Tended::Starved);
        }
        if self.file.is_none() {
            if !self.running
                && let Some(own) = device_timeout(&self.path).filter(|own| *own > self.timeout)
            {
                return Err(std::io::Error::other(format!(
                    "{}'s timeout is {} s, longer than watchdog_timeout ({} ms): the machine could outlive its lease; set the device's timeout (softdog: soft_margin) or raise watchdog_timeout",
                    self.path.display(),
                    own.as_secs(),
                    self.timeout.as_millis()
                )));
            }
            self.file = Some(self.open()?);
        }
        if let Some(file) = self.file.as_mut() {
            file.write_all(b"\0")?;
            file.flush()?;
        }
        self.running = true;
        if may_feed(now + self.timeout, self.timeout, deadline) {
            Ok(Tended::Fed)
        } else {
            // Closed without `V`: the kernel pings it once more, now.
            self.file = None;
            Ok(Tended::Released)
        }
    }

    /// Opens the device for writing (appending, so that a regular file
    /// standing in for it records every feed).
    fn open(&self) -> std::io::Result<File> {
        std::fs::OpenOptions::new().append(true).open(&self.path)
    }
}

/// Whether a feed at `now`, which keeps the machine alive `within` more,
/// lets it live no later than `deadline`: the one rule of every self-fence
/// (this device, and a dongle's watchdog fed by the daemon's frames).
#[must_use]
pub fn may_feed(now: Instant, within: Duration, deadline: Instant) -> bool {
    now + within <= deadline
}

/// The device's own timeout, from sysfs (`/sys/class/watchdog/NAME/timeout`),
/// when the kernel says: a device whose timeout exceeds the configured one
/// would let the machine outlive its lease, so it is refused.
fn device_timeout(path: &Path) -> Option<Duration> {
    let name = std::fs::canonicalize(path).ok()?;
    let name = name.file_name()?.to_str()?;
    let text = std::fs::read_to_string(format!("/sys/class/watchdog/{name}/timeout")).ok()?;
    text.trim().parse().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn feeds_while_the_deadline_allows_then_starves_then_disarms() {
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("watchdog");
        std::fs::write(&device, b"").unwrap();
        let mut w = Watchdog::new(&device, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(w.tend(t0, None).unwrap(), Tended::Disarmed);
        assert!(!w.armed(), "nothing runs: never armed");
        let deadline = t0 + Duration::from_secs(3);
        assert_eq!(w.tend(t0, Some(deadline)).unwrap(), Tended::Fed);
        assert!(w.armed());
        assert_eq!(
            w.tend(t0 + Duration::from_secs(2), Some(deadline)).unwrap(),
            Tended::Released,
            "2 s + 1 s is the deadline itself: fed, and let go"
        );
        assert_eq!(
            w.tend(t0 + Duration::from_millis(2_100), Some(deadline))
                .unwrap(),
            Tended::Starved,
            "a feed now would outlive the deadline"
        );
        assert_eq!(
            w.tend(t0 + Duration::from_millis(2_200), None).unwrap(),
            Tended::Disarmed
        );
        assert!(!w.armed());
        assert_eq!(std::fs::read(&device).unwrap(), b"\0\0V");
    }

    #[test]
    fn it_is_held_open_only_while_a_death_could_not_outlive_the_deadline() {
        // The kernel pings a watchdog closed without `V`, and a dying
        // daemon closes it: held within two timeouts of the deadline, a
        // death there would give the machine a timeout past it.
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("watchdog");
        std::fs::write(&device, b"").unwrap();
        let second = Duration::from_secs(1);
        let mut w = Watchdog::new(&device, second);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let deadline = at(5_000);
        for ms in [0, 250, 2_750, 3_000] {
            assert_eq!(w.tend(at(ms), Some(deadline)).unwrap(), Tended::Fed);
            assert!(w.file.is_some(), "held at {ms} ms");
        }
        for ms in [3_250, 3_500, 4_000] {
            assert_eq!(w.tend(at(ms), Some(deadline)).unwrap(), Tended::Released);
            assert!(w.file.is_none() && w.armed(), "let go at {ms} ms, armed");
        }
        assert_eq!(w.tend(at(4_250), Some(deadline)).unwrap(), Tended::Starved);
        assert!(w.file.is_none() && w.armed());
        // The lease renewed: held again.
        assert_eq!(w.tend(at(4_500), Some(at(9_000))).unwrap(), Tended::Fed);
        assert!(w.file.is_some());
        // Nothing to run: the magic close, whether held or not.
        assert_eq!(
            w.tend(at(4_750), Some(at(6_000))).unwrap(),
            Tended::Released
        );
        assert_eq!(w.tend(at(5_000), None).unwrap(), Tended::Disarmed);
        assert!(!w.armed());
        // Every feed was written, the last byte is the magic character.
        assert_eq!(std::fs::read(&device).unwrap(), b"\0\0\0\0\0\0\0\0\0V");
    }

    #[test]
    fn a_missing_device_is_an_error() {
        let mut w = Watchdog::new(Path::new("/nonexistent/watchdog"), Duration::from_secs(1));
        let now = Instant::now();
        assert!(w.tend(now, Some(now + Duration::from_secs(5))).is_err());
    }
}
