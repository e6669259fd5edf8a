//! The Linux watchdog device (`/dev/watchdog`): while it is open and armed
//! the kernel resets the machine unless something is written to it within
//! its timeout. The resource brain says until when the machine may live
//! while anything may run on it (its quorum lease's end); [`Watchdog`]
//! feeds the device only while the next feed's deadline falls before
//! that, and disarms it (the "magic close": `V`, then close) when nothing
//! runs. So a node that could not stop in time, or whose daemon died or
//! stalled with applications running, is reset by the end of its lease.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The device, and what was last done with it.
#[derive(Debug)]
pub struct Watchdog {
    path: PathBuf,
    timeout: Duration,
    file: Option<File>,
    /// When it was last fed: the machine lives until this + `timeout`.
    fed: Option<Instant>,
}

/// What [`Watchdog::tend`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tended {
    /// Fed: the machine lives at least `timeout` more.
    Fed,
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
            fed: None,
        }
    }

    /// How often [`Watchdog::tend`] should run while it is armed.
    #[must_use]
    pub fn period(&self) -> Duration {
        self.timeout / 4
    }

    /// Whether it is armed.
    #[must_use]
    pub fn armed(&self) -> bool {
        self.file.is_some()
    }

    /// Feeds the device if the machine may live `timeout` past `now`
    /// without outliving `deadline`; disarms it when `deadline` is `None`.
    pub fn tend(&mut self, now: Instant, deadline: Option<Instant>) -> std::io::Result<Tended> {
        let Some(deadline) = deadline else {
            if let Some(mut file) = self.file.take() {
                file.write_all(b"V")?;
                file.flush()?;
                self.fed = None;
            }
            return Ok(Tended::Disarmed);
        };
        if !may_feed(now, self.timeout, deadline) {
            return Ok(Tended::Starved);
        }
        if self.file.is_none() {
            if let Some(own) = device_timeout(&self.path).filter(|own| *own > self.timeout) {
                return Err(std::io::Error::other(format!(
                    "{}'s timeout is {} s, longer than watchdog_timeout ({} ms): the machine could outlive its lease; set the device's timeout (softdog: soft_margin) or raise watchdog_timeout",
                    self.path.display(),
                    own.as_secs(),
                    self.timeout.as_millis()
                )));
            }
            let file = std::fs::OpenOptions::new().write(true).open(&self.path)?;
            self.file = Some(file);
        }
        if let Some(file) = self.file.as_mut() {
            file.write_all(b"\0")?;
            file.flush()?;
        }
        self.fed = Some(now);
        Ok(Tended::Fed)
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
            Tended::Fed,
            "2 s + 1 s is the deadline itself"
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
    fn a_missing_device_is_an_error() {
        let mut w = Watchdog::new(Path::new("/nonexistent/watchdog"), Duration::from_secs(1));
        let now = Instant::now();
        assert!(w.tend(now, Some(now + Duration::from_secs(5))).is_err());
    }
}
