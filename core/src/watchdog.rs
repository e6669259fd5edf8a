//! The dongle's watchdog over one host: fed by the host's frames, it trips
//! when the host falls silent for the configured time, and re-arms when the
//! host is heard again.
//!
//! A watchdog that has never been fed is idle: a host that was never attached
//! cannot be declared dead, and a dongle powered up before its hosts does not
//! trip on them.

use crate::time::{Duration, Instant};

/// Where a watchdog stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WatchdogState {
    /// Never fed.
    Idle,
    /// Fed recently; trips at `last_fed + timeout`.
    Armed {
        /// When it was last fed.
        last_fed: Instant,
    },
    /// Tripped; re-arms when fed.
    Tripped {
        /// When it was last fed before tripping.
        last_fed: Instant,
    },
}

/// A transition worth reporting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WatchdogEvent {
    /// The host fell silent.
    Tripped {
        /// Time from the last feed to the trip.
        silent_for: Duration,
    },
    /// The host was heard again after a trip.
    Rearmed,
}

/// A watchdog over one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Watchdog {
    timeout: Duration,
    state: WatchdogState,
}

impl Watchdog {
    /// An idle watchdog that trips after `timeout` of silence once fed.
    #[must_use]
    pub const fn new(timeout: Duration) -> Self {
        Watchdog {
            timeout,
            state: WatchdogState::Idle,
        }
    }

    /// The host was heard at `now`.
    #[must_use]
    pub fn feed(&mut self, now: Instant) -> Option<WatchdogEvent> {
        let was_tripped = matches!(self.state, WatchdogState::Tripped { .. });
        self.state = WatchdogState::Armed { last_fed: now };
        was_tripped.then_some(WatchdogEvent::Rearmed)
    }

    /// Trips if the deadline has passed.
    #[must_use]
    pub fn handle_timeout(&mut self, now: Instant) -> Option<WatchdogEvent> {
        let deadline = self.poll_timeout()?;
        let WatchdogState::Armed { last_fed } = self.state else {
            return None;
        };
        if now < deadline {
            return None;
        }
        self.state = WatchdogState::Tripped { last_fed };
        Some(WatchdogEvent::Tripped {
            silent_for: now.saturating_since(last_fed),
        })
    }

    /// When it will trip if not fed, while armed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            WatchdogState::Armed { last_fed } => Some(last_fed + self.timeout),
            WatchdogState::Idle | WatchdogState::Tripped { .. } => None,
        }
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> WatchdogState {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(500);

    #[test]
    fn idle_until_fed_then_trips_after_silence_and_rearms() {
        let mut w = Watchdog::new(T);
        assert_eq!(w.handle_timeout(Instant::from_millis(10_000)), None);
        assert_eq!(w.poll_timeout(), None);
        assert_eq!(w.feed(Instant::from_millis(1_000)), None);
        assert_eq!(w.poll_timeout(), Some(Instant::from_millis(1_500)));
        assert_eq!(w.handle_timeout(Instant::from_millis(1_499)), None);
        assert_eq!(
            w.handle_timeout(Instant::from_millis(1_500)),
            Some(WatchdogEvent::Tripped { silent_for: T })
        );
        assert_eq!(
            w.handle_timeout(Instant::from_millis(3_000)),
            None,
            "trips once"
        );
        assert_eq!(
            w.feed(Instant::from_millis(4_000)),
            Some(WatchdogEvent::Rearmed)
        );
        assert_eq!(w.feed(Instant::from_millis(4_100)), None);
        assert_eq!(
            w.state(),
            WatchdogState::Armed {
                last_fed: Instant::from_millis(4_100)
            }
        );
    }
}
