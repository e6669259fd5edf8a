//! What the communication manager reports of the cluster for `heartline
//! status`: this node, each peer, each path and each dongle, with their
//! states and counters. The control protocol carries these as they are
//! (serde), with this node's resources added beside them.

use serde::{Deserialize, Serialize};

/// The communication manager's view of the cluster, for `heartline
/// status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Cluster name.
    pub cluster: String,
    /// This node's id.
    pub node: u16,
    /// This node's name.
    pub name: String,
    /// This node's incarnation.
    pub incarnation: u64,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// How late the communication manager's timer (heartbeats, path
    /// checks) woke: its thread's scheduling latency, as lived.
    #[serde(default)]
    pub timer: TimerReport,
    /// Every peer.
    pub peers: Vec<PeerReport>,
}

/// How late the communication manager woke for its timer, since the
/// daemon started: what the machine's load cost the heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerReport {
    /// Wake-ups for the timer.
    pub wakes: u64,
    /// The latest of them, in microseconds after the instant asked for
    /// (the timer's own millisecond granularity included).
    pub max_late_us: u64,
    /// Wake-ups more than 2 ms late.
    pub over_2ms: u64,
    /// Wake-ups more than 10 ms late.
    pub over_10ms: u64,
}

impl TimerReport {
    /// Records a wake-up `late` after its instant.
    pub fn record(&mut self, late: std::time::Duration) {
        let us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        self.wakes += 1;
        self.max_late_us = self.max_late_us.max(us);
        self.over_2ms += u64::from(us > 2_000);
        self.over_10ms += u64::from(us > 10_000);
    }
}

/// One peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerReport {
    /// Its id.
    pub node: u16,
    /// Its name, as it announced it (or as configured).
    pub name: String,
    /// `host` or `dongle`, as it announced itself.
    pub kind: Option<String>,
    /// `up`, `down` or `unknown`.
    pub state: String,
    /// Its incarnation, once heard.
    pub incarnation: Option<u64>,
    /// Messages queued to it, unacknowledged.
    pub queued: usize,
    /// Its paths.
    pub paths: Vec<PathReport>,
    /// For a dongle: its roles and its watchdog.
    #[serde(default)]
    pub dongle: Option<DongleReport>,
}

/// A heartbeat dongle's roles and watchdog, as this node knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DongleReport {
    /// What it announced it does: `relay`, `watchdog`.
    pub roles: Vec<String>,
    /// The hosts it watches: this node and the host on its other port.
    pub hosts: Vec<u16>,
    /// The watchdog time this node provisions, in ms; `None`: no watchdog.
    pub watchdog_ms: Option<u64>,
    /// How long a trip holds a host's reset line, in ms; `None`: never.
    pub reset_pulse_ms: Option<u64>,
    /// Hosts it reported its watchdog tripped on, not re-armed since.
    pub tripped: Vec<u16>,
}

/// One path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathReport {
    /// Path number.
    pub index: u8,
    /// How it travels, e.g. `tcp 127.0.0.1:7000 -> 127.0.0.1:7001`.
    pub transport: String,
    /// `up` or `down`.
    pub state: String,
    /// Smoothed round trip in microseconds, once measured.
    pub rtt_us: Option<u64>,
    /// Milliseconds since a frame last arrived.
    pub last_heard_ms_ago: Option<u64>,
    /// Frames accepted.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Frames rejected, for any reason.
    pub rejected: u64,
    /// Rejections by reason, only the non-zero ones.
    pub errors: Vec<(String, u32)>,
}

/// What a rejection counter says about the configuration, in words, for
/// the reasons that point at one (`None` for the others).
#[must_use]
pub fn rejection_meaning(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "bad_tag" => {
            "they failed authentication: the nodes' cluster keys differ (key_file), or a stranger is sending"
        }
        "wrong_cluster" => {
            "they are for another cluster id: the nodes' [cluster] id differs, or two clusters share this address"
        }
        "path_mismatch" => {
            "the peer numbers its paths differently: the nodes' [[peers.paths]] lists differ (same order on both ends)"
        }
        "unknown_version" => {
            "they speak another protocol version: a heartline of another release is at the other end"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::TimerReport;
    use std::time::Duration;

    #[test]
    fn the_timer_report_keeps_the_latest_wake_and_counts_the_late_ones() {
        let mut timer = TimerReport::default();
        for ms in [0, 1, 3, 12, 2] {
            timer.record(Duration::from_millis(ms));
        }
        timer.record(Duration::from_micros(2_001));
        assert_eq!(
            timer,
            TimerReport {
                wakes: 6,
                max_late_us: 12_000,
                over_2ms: 3,
                over_10ms: 1,
            }
        );
        // A report from a daemon without the field reads as none.
        let old: super::StatusReport = serde_json::from_str(
            r#"{"cluster":"c","node":1,"name":"a","incarnation":1,"uptime_ms":5,"peers":[]}"#,
        )
        .unwrap();
        assert_eq!(old.timer, TimerReport::default());
    }
}
