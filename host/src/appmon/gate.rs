//! Admission of connections that have not authenticated yet: of the
//! appserver's descriptor limit, at most an eighth from one address and a
//! quarter in all may be in their TLS handshake at once ([`Caps`]); one
//! more is closed as soon as it is accepted. So strangers hold a bounded
//! share of the descriptors however many connections they open, and the
//! rest stay for real managers and their processes (a connection, once
//! authenticated, no longer counts). What was refused is not logged one
//! connection at a time but summed up every [`SUMMARY_EVERY`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How many connections may be in their handshake at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// From one address.
    pub per_source: usize,
    /// From anywhere.
    pub in_all: usize,
}

impl Caps {
    /// The caps for a process that may hold `descriptors` files: an eighth
    /// of them per address and a quarter in all (at least 8 and 32).
    #[must_use]
    pub fn for_limit(descriptors: u64) -> Caps {
        let of = |part: u64, least: usize| {
            usize::try_from(descriptors / part)
                .unwrap_or(usize::MAX)
                .max(least)
        };
        Caps {
            per_source: of(8, 8),
            in_all: of(4, 32),
        }
    }
}
/// How often refusals are summed up in the log.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// Failed handshakes logged one by one in each period (a manager with the
/// wrong certificate is worth a line of its own); the rest are counted.
pub const FAILURES_LOGGED: u64 = 5;

#[derive(Debug, Default)]
struct Counts {
    /// In handshake now, per address.
    open: HashMap<IpAddr, usize>,
    /// In handshake now.
    total: usize,
    /// Refused since the last summary, per address.
    refused: HashMap<IpAddr, u64>,
    /// Handshakes that failed or ran out of time since the last summary.
    failed: u64,
    /// When the last summary was due.
    summarised: Option<Instant>,
    /// The caps last applied.
    caps: Caps,
}

impl Default for Caps {
    fn default() -> Self {
        Caps::for_limit(1024)
    }
}

/// The gate, shared by the accept loop and the handshakes.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<Mutex<Counts>>);

/// A connection let through: counted until it is dropped (its handshake
/// finished, one way or the other).
#[derive(Debug)]
pub struct Ticket {
    gate: Gate,
    source: IpAddr,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets a connection from `source` into its handshake under `caps`,
    /// or refuses it (`None`: close it now).
    #[must_use]
    pub fn admit(&self, source: IpAddr, caps: Caps) -> Option<Ticket> {
        let mut counts = self.lock();
        counts.caps = caps;
        let from_source = counts.open.get(&source).copied().unwrap_or(0);
        if from_source >= caps.per_source || counts.total >= caps.in_all {
            *counts.refused.entry(source).or_default() += 1;
            return None;
        }
        counts.open.insert(source, from_source + 1);
        counts.total += 1;
        Some(Ticket {
            gate: self.clone(),
            source,
        })
    }

    /// A handshake failed or ran out of time: whether it is among the
    /// first [`FAILURES_LOGGED`] of the period, to be logged on its own.
    pub fn failed(&self) -> bool {
        let mut counts = self.lock();
        counts.failed += 1;
        counts.failed <= FAILURES_LOGGED
    }

    /// The summary of what was refused since the last one, when one is due
    /// at `now` and there is something to say; the count starts again.
    pub fn summary(&self, now: Instant) -> Option<String> {
        let mut counts = self.lock();
        let due = counts
            .summarised
            .is_none_or(|at| now.duration_since(at) >= SUMMARY_EVERY);
        if !due {
            return None;
        }
        let since = counts.summarised.map(|at| now.duration_since(at));
        counts.summarised = Some(now);
        let refused: u64 = counts.refused.values().sum();
        let failed = std::mem::take(&mut counts.failed);
        let sources = counts.refused.len();
        counts.refused.clear();
        if refused == 0 && failed == 0 {
            return None;
        }
        let window = since.map_or_else(String::new, |d| {
            format!(" in the last {} s", d.as_secs().max(1))
        });
        let caps = counts.caps;
        Some(format!(
            "closed {refused} unauthenticated connections at once from {sources} address(es) (at most {} per address and {} in all may be in their TLS handshake), and {failed} handshakes failed or ran out of time{window}",
            caps.per_source, caps.in_all
        ))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self.gate.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.open.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.open.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const CAPS: Caps = Caps {
        per_source: 16,
        in_all: 128,
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn caps_follow_the_descriptor_limit() {
        let caps = Caps::for_limit(1024);
        assert_eq!((caps.per_source, caps.in_all), (128, 256));
        let caps = Caps::for_limit(20);
        assert_eq!((caps.per_source, caps.in_all), (8, 32));
    }

    #[test]
    fn one_address_cannot_take_every_slot_and_tickets_give_theirs_back() {
        let gate = Gate::default();
        let held: Vec<Ticket> = (0..CAPS.per_source)
            .map(|_| gate.admit(ip(1), CAPS).unwrap())
            .collect();
        assert!(gate.admit(ip(1), CAPS).is_none(), "over its share");
        let other = gate.admit(ip(2), CAPS);
        assert!(other.is_some(), "another address still gets in");
        drop(held);
        assert!(gate.admit(ip(1), CAPS).is_some(), "slots come back");
    }

    #[test]
    fn the_total_is_bounded_across_addresses() {
        let gate = Gate::default();
        let held: Vec<Ticket> = (0..CAPS.in_all)
            .map(|i| {
                let source = ip(u8::try_from(i / CAPS.per_source).unwrap());
                gate.admit(source, CAPS).unwrap()
            })
            .collect();
        assert!(gate.admit(ip(200), CAPS).is_none());
        assert_eq!(held.len(), CAPS.in_all);
    }

    #[test]
    fn refusals_are_summed_up_once_per_period() {
        let gate = Gate::default();
        let t0 = Instant::now();
        assert_eq!(gate.summary(t0), None, "nothing to say");
        let _held: Vec<Ticket> = (0..CAPS.per_source)
            .map(|_| gate.admit(ip(1), CAPS).unwrap())
            .collect();
        for _ in 0..1000 {
            assert!(gate.admit(ip(1), CAPS).is_none());
        }
        assert!(gate.failed(), "the first failures are logged one by one");
        assert_eq!(gate.summary(t0 + Duration::from_secs(1)), None, "not due");
        let text = gate.summary(t0 + SUMMARY_EVERY).unwrap();
        assert!(
            text.starts_with("closed 1000 unauthenticated connections at once from 1 address(es) (at most 16 per address and 128 in all")
                && text.contains("1 handshakes failed")
                && text.ends_with("in the last 10 s"),
            "{text}"
        );
        assert_eq!(gate.summary(t0 + SUMMARY_EVERY * 2), None, "counted afresh");
    }
}
