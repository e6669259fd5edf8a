//! `heartline status` as a table a person can read.

use std::fmt::Write;

use crate::comm::report::StatusReport;
use crate::control::ResourceReport;

/// Renders the report, and this node's resources, as aligned text.
pub fn render(report: &StatusReport, resources: &[ResourceReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {}  node {} ({})  incarnation {}  up {}",
        report.cluster,
        report.node,
        report.name,
        report.incarnation,
        humantime::format_duration(std::time::Duration::from_secs(report.uptime_ms / 1000))
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<6} {:<16} {:<7} {:<8} {:<12} {:>6}",
        "NODE", "NAME", "KIND", "STATE", "INCARNATION", "QUEUED"
    );
    for peer in &report.peers {
        let incarnation = peer
            .incarnation
            .map_or_else(|| "-".to_string(), |i| i.to_string());
        let _ = writeln!(
            out,
            "{:<6} {:<16} {:<7} {:<8} {:<12} {:>6}",
            peer.node,
            peer.name,
            peer.kind.as_deref().unwrap_or("-"),
            peer.state,
            incarnation,
            peer.queued
        );
        if let Some(dongle) = &peer.dongle {
            let roles = if dongle.roles.is_empty() {
                "-".to_string()
            } else {
                dongle.roles.join(", ")
            };
            let hosts: Vec<String> = dongle.hosts.iter().map(u16::to_string).collect();
            let millis = |ms: Option<u64>| {
                ms.map(|ms| {
                    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
                })
            };
            let watchdog = match millis(dongle.watchdog_ms) {
                Some(time) => format!("watchdog {time} over nodes {}", hosts.join(", ")),
                None => "no watchdog".to_string(),
            };
            let reset = millis(dongle.reset_pulse_ms)
                .map_or_else(|| "no reset".to_string(), |p| format!("reset pulse {p}"));
            let tripped = if dongle.tripped.is_empty() {
                "none tripped".to_string()
            } else {
                let nodes: Vec<String> = dongle.tripped.iter().map(u16::to_string).collect();
                format!("TRIPPED on node {}", nodes.join(", "))
            };
            let _ = writeln!(
                out,
                "  dongle: roles {roles}; {watchdog}, {reset}; {tripped}"
            );
        }
        for path in &peer.paths {
            let rtt = path.rtt_us.map_or_else(
                || "-".to_string(),
                |us| format!("{:.2}ms", us as f64 / 1000.0),
            );
            let heard = path
                .last_heard_ms_ago
                .map_or_else(|| "never".to_string(), |ms| format!("{ms}ms ago"));
            let _ = write!(
                out,
                "  path {} {:<40} {:<5} rtt {:<9} heard {:<12} in {} out {}",
                path.index, path.transport, path.state, rtt, heard, path.frames_in, path.frames_out
            );
            if path.rejected > 0 {
                let reasons: Vec<String> = path
                    .errors
                    .iter()
                    .map(|(name, n)| format!("{name} {n}"))
                    .collect();
                let _ = write!(out, "  rejected {} ({})", path.rejected, reasons.join(", "));
            }
            let _ = writeln!(out);
        }
    }
    if !resources.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<20} {:<10} {:<5} {:>4}  LAST SCRIPT",
            "RESOURCE", "TYPE", "STATE", "PRI"
        );
        for r in resources {
            let _ = writeln!(
                out,
                "{:<20} {:<10} {:<5} {:>4}  {}",
                r.tag,
                r.kind,
                r.state,
                r.priority,
                r.last.as_deref().unwrap_or("-")
            );
        }
    }
    out
}
