//! One communication path to one peer: when to send heartbeats, when the path
//! is up or down, and how long a round trip takes.
//!
//! A path is up once `rise` heartbeats have been heard with no silence longer
//! than `interval × misses` between them, and goes down when nothing at all
//! (heartbeat or any other authenticated frame) has been heard for
//! `interval × misses`. Rising slower than falling is the hysteresis that keeps
//! a flapping cable from flapping the node.

use core::fmt;

use crate::counters::Counters;
use crate::replay::ReplayWindow;
use crate::rtt::RttEstimator;
use crate::time::{Duration, Instant};
use crate::wire::Heartbeat;

/// Timing of one path. Both ends of a path should use the same values: each
/// end detects failure on its own clock assuming the other sends every
/// `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PathConfig {
    /// Time between heartbeats sent on this path.
    pub interval: Duration,
    /// Intervals of silence after which the path is down.
    pub misses: u32,
    /// Heartbeats needed, each within `interval × misses` of the last, before a
    /// down path is up.
    pub rise: u32,
    /// Preference for carrying mailbox traffic: 1 is most preferred.
    pub priority: u8,
}

impl Default for PathConfig {
    /// 100 ms × 5 misses: a dead path is noticed within 0.5 s, while a host
    /// that stalls for 400 ms (a long GC pause, a busy hypervisor) never
    /// looks dead. Rise 2: one stray frame does not bring a path up.
    fn default() -> Self {
        PathConfig {
            interval: Duration::from_millis(100),
            misses: 5,
            rise: 2,
            priority: 1,
        }
    }
}

/// What is wrong with a [`PathConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PathConfigError {
    /// `interval` is below 1 ms.
    IntervalTooShort,
    /// `misses` is 0.
    NoMisses,
    /// `rise` is 0.
    NoRise,
}

impl fmt::Display for PathConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathConfigError::IntervalTooShort => "interval must be at least 1 ms",
            PathConfigError::NoMisses => "misses must be at least 1",
            PathConfigError::NoRise => "rise must be at least 1",
        })
    }
}

impl core::error::Error for PathConfigError {}

impl PathConfig {
    /// Checks the values make sense.
    pub fn validate(&self) -> Result<(), PathConfigError> {
        if self.interval < Duration::from_millis(1) {
            return Err(PathConfigError::IntervalTooShort);
        }
        if self.misses == 0 {
            return Err(PathConfigError::NoMisses);
        }
        if self.rise == 0 {
            return Err(PathConfigError::NoRise);
        }
        Ok(())
    }

    /// Silence after which the path is down: `interval × misses`.
    #[must_use]
    pub fn down_after(&self) -> Duration {
        self.interval * self.misses
    }
}

/// Whether a path carries frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PathState {
    /// Not (yet, or no longer) heard from.
    Down,
    /// Heard from recently.
    Up,
}

/// A change of [`PathState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    Up,
    Down,
}

/// One path's state machine.
#[derive(Clone, Debug)]
pub(crate) struct Path {
    pub(crate) config: PathConfig,
    state: PathState,
    last_heard: Option<Instant>,
    /// Something was heard within `interval × misses`: the peer is alive on
    /// this path, even while it is still rising.
    audible: bool,
    rising: u32,
    next_heartbeat: Instant,
    tx_seq: u64,
    pub(crate) replay: ReplayWindow,
    pub(crate) rtt: RttEstimator,
    /// The peer's last `sent_at` and when it arrived, to echo back.
    echo: Option<(u64, Instant)>,
    /// The latest of our heartbeats of this run the peer echoed: proof it
    /// heard us at least that recently (what quorum leases are renewed by).
    echoed: Option<Instant>,
    pub(crate) counters: Counters,
}

impl Path {
    pub(crate) fn new(config: PathConfig, now: Instant) -> Path {
        Path {
            config,
            state: PathState::Down,
            last_heard: None,
            audible: false,
            rising: 0,
            next_heartbeat: now,
            tx_seq: 0,
            replay: ReplayWindow::default(),
            rtt: RttEstimator::default(),
            echo: None,
            echoed: None,
            counters: Counters::default(),
        }
    }

    pub(crate) fn state(&self) -> PathState {
        self.state
    }

    pub(crate) fn is_up(&self) -> bool {
        self.state == PathState::Up
    }

    /// Heard within `interval × misses`, whether up or still rising: proof
    /// the peer is alive, though not yet trusted to carry traffic.
    pub(crate) fn is_audible(&self) -> bool {
        self.audible
    }

    pub(crate) fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }

    /// When we sent the latest heartbeat the peer echoed back on this path:
    /// the peer heard from us at or after that instant.
    pub(crate) fn echoed(&self) -> Option<Instant> {
        self.echoed
    }

    /// An authenticated, fresh frame arrived on this path at `now`.
    pub(crate) fn heard(
        &mut self,
        now: Instant,
        heartbeat: Option<&Heartbeat>,
    ) -> Option<Transition> {
        let quiet_too_long = self
            .last_heard
            .is_none_or(|last| now.saturating_since(last) >= self.config.down_after());
        self.last_heard = Some(now);
        self.audible = true;
        if let Some(hb) = heartbeat {
            self.echo = Some((hb.sent_at, now));
        }
        if self.state == PathState::Up || heartbeat.is_none() {
            return None;
        }
        self.rising = if quiet_too_long { 1 } else { self.rising + 1 };
        if self.rising < self.config.rise {
            return None;
        }
        self.state = PathState::Up;
        Some(Transition::Up)
    }

    /// Folds in the round trip that `hb` (arrived at `now`) measures, if it
    /// echoes one of our heartbeats of this run.
    pub(crate) fn measure(&mut self, now: Instant, hb: &Heartbeat) {
        if hb.echo == 0 || hb.echo > now.as_micros() {
            return;
        }
        let sent = Instant::from_micros(hb.echo);
        self.echoed = Some(self.echoed.map_or(sent, |e| e.max(sent)));
        let elapsed = now.as_micros() - hb.echo;
        if let Some(rtt) = elapsed.checked_sub(u64::from(hb.echo_age)) {
            self.rtt.sample(Duration::from_micros(rtt));
        }
    }

    /// Marks the path silent, and takes it down if it was up, once nothing
    /// has been heard for `interval × misses`.
    pub(crate) fn expire(&mut self, now: Instant) -> Option<Transition> {
        let deadline = self.silence_deadline()?;
        if now < deadline {
            return None;
        }
        self.audible = false;
        self.rising = 0;
        let was_up = self.state == PathState::Up;
        self.state = PathState::Down;
        was_up.then_some(Transition::Down)
    }

    /// When the path falls silent (and goes down, if up) unless heard from.
    pub(crate) fn silence_deadline(&self) -> Option<Instant> {
        match (self.audible, self.last_heard) {
            (true, Some(last)) => Some(last + self.config.down_after()),
            _ => None,
        }
    }

    pub(crate) fn next_heartbeat(&self) -> Instant {
        self.next_heartbeat
    }

    /// The heartbeat to send now, and schedules the next one.
    pub(crate) fn make_heartbeat(&mut self, now: Instant) -> Heartbeat {
        self.next_heartbeat += self.config.interval;
        if self.next_heartbeat <= now {
            // Fell behind (the caller was late): resume the rhythm from now
            // rather than sending a burst.
            self.next_heartbeat = now + self.config.interval;
        }
        // Echoed only while the path is up: an echo is the peer's proof
        // that this node hears it (its quorum lease is renewed by it), so
        // it must not outlive this node's declaring it down (a stray frame
        // heard afterwards makes the path audible, not up).
        let echo = self.echo.filter(|_| self.state == PathState::Up);
        let (echo, echo_age) = match echo {
            Some((sent_at, at)) => {
                let age = now.saturating_since(at).as_micros();
                (sent_at, u32::try_from(age).unwrap_or(u32::MAX))
            }
            None => (0, 0),
        };
        Heartbeat {
            sent_at: now.as_micros(),
            echo,
            echo_age,
        }
    }

    /// The sequence number for the next frame sent on this path.
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.tx_seq += 1;
        self.tx_seq
    }

    /// The peer restarted: its numbering and timestamps start over.
    pub(crate) fn peer_restarted(&mut self) {
        self.replay.reset();
        self.echo = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    const HB: Heartbeat = Heartbeat {
        sent_at: 1,
        echo: 0,
        echo_age: 0,
    };

    fn config() -> PathConfig {
        PathConfig {
            interval: Duration::from_millis(100),
            misses: 3,
            rise: 2,
            priority: 1,
        }
    }

    #[test]
    fn rises_after_rise_heartbeats_and_falls_after_misses_intervals() {
        let mut p = Path::new(config(), ms(0));
        assert_eq!(p.heard(ms(0), Some(&HB)), None);
        assert_eq!(p.heard(ms(100), Some(&HB)), Some(Transition::Up));
        assert_eq!(p.silence_deadline(), Some(ms(400)));
        assert_eq!(p.expire(ms(399)), None);
        assert_eq!(p.expire(ms(400)), Some(Transition::Down));
        assert_eq!(p.state(), PathState::Down);
    }

    #[test]
    fn silence_between_heartbeats_restarts_the_rise_count() {
        let mut p = Path::new(config(), ms(0));
        assert_eq!(p.heard(ms(0), Some(&HB)), None);
        assert_eq!(
            p.heard(ms(300), Some(&HB)),
            None,
            "gap of interval × misses resets"
        );
        assert_eq!(p.heard(ms(350), Some(&HB)), Some(Transition::Up));
    }

    #[test]
    fn other_frames_keep_an_up_path_up_but_do_not_raise_a_down_one() {
        let mut p = Path::new(config(), ms(0));
        assert_eq!(p.heard(ms(0), None), None);
        assert_eq!(p.heard(ms(10), None), None);
        assert!(!p.is_up());
        assert!(p.is_audible(), "heard, so the peer is alive on it");
        p.heard(ms(20), Some(&HB));
        assert_eq!(p.heard(ms(30), Some(&HB)), Some(Transition::Up));
        p.heard(ms(250), None);
        assert_eq!(p.expire(ms(500)), None);
        assert_eq!(p.expire(ms(550)), Some(Transition::Down));
    }

    #[test]
    fn a_rising_path_falls_silent_without_a_transition() {
        let mut p = Path::new(config(), ms(0));
        assert_eq!(p.heard(ms(0), Some(&HB)), None);
        assert!(p.is_audible());
        assert_eq!(p.silence_deadline(), Some(ms(300)));
        assert_eq!(p.expire(ms(300)), None);
        assert!(!p.is_audible());
        assert_eq!(p.silence_deadline(), None, "no timer once silent");
    }

    #[test]
    fn heartbeats_keep_rhythm_and_do_not_burst_after_a_stall() {
        let mut p = Path::new(config(), ms(0));
        let _ = p.make_heartbeat(ms(0));
        assert_eq!(p.next_heartbeat(), ms(100));
        let _ = p.make_heartbeat(ms(105));
        assert_eq!(p.next_heartbeat(), ms(200));
        let _ = p.make_heartbeat(ms(1_000));
        assert_eq!(p.next_heartbeat(), ms(1_100));
    }

    #[test]
    fn round_trip_excludes_the_time_the_peer_held_the_echo() {
        let mut p = Path::new(config(), ms(0));
        let sent = p.make_heartbeat(ms(1_000));
        // The peer held our timestamp 3 ms; total elapsed 5 ms: 2 ms on the wire.
        let reply = Heartbeat {
            sent_at: 77,
            echo: sent.sent_at,
            echo_age: 3_000,
        };
        p.measure(ms(1_005), &reply);
        assert_eq!(p.rtt.latest(), Duration::from_millis(2));
        // An echo from the future (the peer is confused) is ignored.
        p.measure(ms(900), &reply);
        assert_eq!(p.rtt.latest(), Duration::from_millis(2));
    }

    #[test]
    fn remembers_the_latest_send_the_peer_echoed() {
        let mut p = Path::new(config(), ms(0));
        assert_eq!(p.echoed(), None);
        let first = p.make_heartbeat(ms(1_000));
        let second = p.make_heartbeat(ms(1_100));
        let echo = |hb: &Heartbeat| Heartbeat {
            sent_at: 5,
            echo: hb.sent_at,
            echo_age: 0,
        };
        p.measure(ms(1_110), &echo(&second));
        assert_eq!(p.echoed(), Some(ms(1_100)));
        // A late echo of an older send does not move it back.
        p.measure(ms(1_120), &echo(&first));
        assert_eq!(p.echoed(), Some(ms(1_100)));
        // Nor does an echo of an instant not yet reached.
        p.measure(
            ms(1_130),
            &echo(&Heartbeat {
                sent_at: 9_000_000,
                echo: 0,
                echo_age: 0,
            }),
        );
        assert_eq!(p.echoed(), Some(ms(1_100)));
    }

    #[test]
    fn rejects_nonsense_config() {
        let bad = PathConfig {
            misses: 0,
            ..config()
        };
        assert_eq!(bad.validate(), Err(PathConfigError::NoMisses));
        let bad = PathConfig {
            interval: Duration::from_micros(10),
            ..config()
        };
        assert_eq!(bad.validate(), Err(PathConfigError::IntervalTooShort));
        let bad = PathConfig {
            rise: 0,
            ..config()
        };
        assert_eq!(bad.validate(), Err(PathConfigError::NoRise));
        assert_eq!(PathConfig::default().validate(), Ok(()));
    }
}
