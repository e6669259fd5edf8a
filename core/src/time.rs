//! Time as a value: the core never reads a clock.
//!
//! The caller passes the current [`Instant`] into every `handle_*` and `poll_*`
//! call; it is a count of microseconds from any monotonic origin the caller
//! chooses (boot, process start, a simulator's zero). Only differences between
//! instants of the same origin mean anything.

use core::fmt;
use core::ops::{Add, AddAssign, Mul, Sub};

/// A point in time, in microseconds from the caller's monotonic origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant(u64);

/// A span of time in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Duration(u64);

impl Instant {
    /// The origin.
    pub const ZERO: Instant = Instant(0);

    /// An instant `micros` microseconds after the origin.
    #[must_use]
    pub const fn from_micros(micros: u64) -> Self {
        Instant(micros)
    }

    /// An instant `millis` milliseconds after the origin.
    #[must_use]
    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis.saturating_mul(1_000))
    }

    /// Microseconds since the origin.
    #[must_use]
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    #[must_use]
    pub const fn saturating_since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl Duration {
    /// No time at all.
    pub const ZERO: Duration = Duration(0);
    /// The longest representable span; used as "never".
    pub const MAX: Duration = Duration(u64::MAX);

    /// A span of `micros` microseconds.
    #[must_use]
    pub const fn from_micros(micros: u64) -> Self {
        Duration(micros)
    }

    /// A span of `millis` milliseconds.
    #[must_use]
    pub const fn from_millis(millis: u64) -> Self {
        Duration(millis.saturating_mul(1_000))
    }

    /// A span of `secs` seconds.
    #[must_use]
    pub const fn from_secs(secs: u64) -> Self {
        Duration(secs.saturating_mul(1_000_000))
    }

    /// The span in microseconds.
    #[must_use]
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The span in whole milliseconds.
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, rhs: Duration) -> Duration {
        Duration(self.0.saturating_add(rhs.0))
    }
}

impl Sub for Duration {
    type Output = Duration;
    fn sub(self, rhs: Duration) -> Duration {
        Duration(self.0.saturating_sub(rhs.0))
    }
}

impl Mul<u32> for Duration {
    type Output = Duration;
    fn mul(self, rhs: u32) -> Duration {
        Duration(self.0.saturating_mul(u64::from(rhs)))
    }
}

impl From<core::time::Duration> for Duration {
    fn from(d: core::time::Duration) -> Self {
        Duration(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

impl From<Duration> for core::time::Duration {
    fn from(d: Duration) -> Self {
        core::time::Duration::from_micros(d.0)
    }
}

impl fmt::Display for Duration {
    /// Seconds, milliseconds or microseconds, as people write them: up to
    /// three decimals, none that are zeros (`1.5s`, `12.345ms`, `200ms`);
    /// honours width and alignment (`{:>10}`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use core::fmt::Write;
        let mut text: heapless::String<32> = heapless::String::new();
        let (whole, mut fraction, unit) = if self.0 >= 1_000_000 {
            (self.0 / 1_000_000, (self.0 / 1_000) % 1_000, "s")
        } else if self.0 >= 1_000 {
            (self.0 / 1_000, self.0 % 1_000, "ms")
        } else {
            (self.0, 0, "us")
        };
        write!(text, "{whole}")?;
        if fraction != 0 {
            let mut digits = 3;
            while fraction % 10 == 0 {
                fraction /= 10;
                digits -= 1;
            }
            write!(text, ".{fraction:0digits$}")?;
        }
        write!(text, "{unit}")?;
        f.pad(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        assert_eq!(
            Instant::from_micros(u64::MAX) + Duration::from_secs(1),
            Instant::from_micros(u64::MAX)
        );
        assert_eq!(
            Duration::from_millis(5) - Duration::from_millis(7),
            Duration::ZERO
        );
        assert_eq!(
            Instant::from_millis(1).saturating_since(Instant::from_millis(3)),
            Duration::ZERO
        );
        assert_eq!(Duration::from_millis(100) * 5, Duration::from_millis(500));
    }

    #[test]
    fn displays_in_readable_units() {
        use core::fmt::Write;
        let mut s: heapless::String<16> = heapless::String::new();
        write!(s, "{}", Duration::from_micros(1_234_567)).unwrap();
        assert_eq!(s, "1.234s");
        s.clear();
        write!(s, "{}", Duration::from_micros(12_345)).unwrap();
        assert_eq!(s, "12.345ms");
        s.clear();
        write!(s, "{:>8}", Duration::from_micros(7)).unwrap();
        assert_eq!(s, "     7us");
        for (micros, text) in [
            (200_000, "200ms"),
            (1_500_000, "1.5s"),
            (1_050_000, "1.05s"),
            (1_000_000, "1s"),
            (100_500, "100.5ms"),
            (1_001, "1.001ms"),
        ] {
            s.clear();
            write!(s, "{}", Duration::from_micros(micros)).unwrap();
            assert_eq!(s, text);
        }
    }
}
