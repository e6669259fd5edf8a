//! Round-trip time estimation (RFC 6298 smoothing) and the retransmission
//! timeout derived from it.

use crate::time::Duration;

/// Shortest retransmission timeout: below this, scheduling noise on a busy
/// host would cause spurious resends.
pub const MIN_RTO: Duration = Duration::from_millis(20);
/// Longest retransmission timeout, also the cap of exponential backoff.
pub const MAX_RTO: Duration = Duration::from_secs(2);
/// Timeout before any sample: conservative for a 115200-baud serial line.
const INITIAL_RTO: Duration = Duration::from_millis(200);

/// Smoothed round-trip time of one path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RttEstimator {
    smoothed: Option<Duration>,
    variation: Duration,
    latest: Duration,
}

impl RttEstimator {
    /// Folds in one measured round trip.
    pub fn sample(&mut self, rtt: Duration) {
        self.latest = rtt;
        match self.smoothed {
            None => {
                self.smoothed = Some(rtt);
                self.variation = Duration::from_micros(rtt.as_micros() / 2);
            }
            Some(srtt) => {
                let diff = srtt.as_micros().abs_diff(rtt.as_micros());
                self.variation = Duration::from_micros((3 * self.variation.as_micros() + diff) / 4);
                self.smoothed = Some(Duration::from_micros(
                    (7 * srtt.as_micros() + rtt.as_micros()) / 8,
                ));
            }
        }
    }

    /// The smoothed estimate, once there has been a sample.
    #[must_use]
    pub fn smoothed(&self) -> Option<Duration> {
        self.smoothed
    }

    /// The most recent sample.
    #[must_use]
    pub fn latest(&self) -> Duration {
        self.latest
    }

    /// Retransmission timeout: smoothed + 4 × variation, within
    /// [`MIN_RTO`]..=[`MAX_RTO`].
    #[must_use]
    pub fn rto(&self) -> Duration {
        match self.smoothed {
            None => INITIAL_RTO,
            Some(srtt) => (srtt + self.variation * 4).clamp(MIN_RTO, MAX_RTO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_towards_steady_samples() {
        let mut rtt = RttEstimator::default();
        assert_eq!(rtt.rto(), INITIAL_RTO);
        rtt.sample(Duration::from_millis(10));
        assert_eq!(rtt.smoothed(), Some(Duration::from_millis(10)));
        for _ in 0..50 {
            rtt.sample(Duration::from_millis(2));
        }
        let srtt = rtt.smoothed().unwrap();
        assert!(srtt < Duration::from_micros(2_100), "{srtt:?}");
        assert_eq!(rtt.rto(), MIN_RTO);
        assert_eq!(rtt.latest(), Duration::from_millis(2));
    }
}
