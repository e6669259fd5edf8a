//! `heartline status` as a table a person can read.

use std::fmt::Write;

use crate::comm::report::StatusReport;
use heartline_brain::api::NodeReport;

/// Renders the report, and this node's resources, as aligned text.
pub fn render(report: &StatusReport, resources: Option<&NodeReport>) -> String {
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
    let timer = &report.timer;
    if timer.wakes > 0 {
        let _ = writeln!(
            out,
            "heartbeat timer: {} wake-ups, the latest {:.1} ms late; {} more than 2 ms late, {} more than 10 ms",
            timer.wakes,
            timer.max_late_us as f64 / 1000.0,
            timer.over_2ms,
            timer.over_10ms
        );
    }
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
                    .map(
                        |(name, n)| match crate::comm::report::rejection_meaning(name) {
                            Some(meaning) => format!("{name} {n}: {meaning}"),
                            None => format!("{name} {n}"),
                        },
                    )
                    .collect();
                let _ = write!(out, "  rejected {} ({})", path.rejected, reasons.join(", "));
            }
            let _ = writeln!(out);
        }
    }
    if let Some(cluster) = resources {
        render_resources(&mut out, cluster);
    }
    out
}

/// The cluster as the resource brain sees it, then this node's resources.
fn render_resources(out: &mut String, r: &NodeReport) {
    let _ = writeln!(out);
    if r.maintenance {
        let _ = writeln!(
            out,
            "*** MAINTENANCE MODE: nothing is checked, recovered, started or stopped by the cluster (heartline maintenance off) ***"
        );
    }
    let members: Vec<String> = r.members.iter().map(u16::to_string).collect();
    let _ = writeln!(
        out,
        "coordinator node {}; nodes up {}; configuration {}",
        r.coordinator,
        members.join(", "),
        r.version
    );
    match &r.quorum {
        Some(q) if q.quorate => {
            let _ = writeln!(
                out,
                "quorum: yes, {} of {} expected votes{} (lease {} ms left){}",
                q.votes,
                q.expected,
                match q.witness {
                    Some(true) => ", the witness's included",
                    Some(false) => ", without the witness's",
                    None => "",
                },
                q.lease_left_ms.unwrap_or(0),
                if q.waiting_for_all {
                    "; waiting to see every node once before starting anything (wait_for_all)"
                } else {
                    ""
                }
            );
        }
        Some(q) if q.refused.is_some() => {
            let (node, theirs) = q.refused.unwrap_or_default();
            let _ = writeln!(
                out,
                "*** REFUSED TO START: node {node} announces {theirs} expected votes, this node's configuration {}: make the [quorum] sections (and votes) agree on every node, then restart this one; it starts nothing until then ***",
                q.expected
            );
        }
        Some(q) if q.undecided.is_some() => {
            let (node, theirs) = q.undecided.unwrap_or_default();
            let _ = writeln!(
                out,
                "*** NO QUORUM: node {node} announces {theirs} expected votes, this node's configuration {}: the [quorum] sections differ, and the nodes heard so far do not tell which is configured apart; make them agree on every node ***",
                q.expected
            );
        }
        Some(q) => {
            let _ = writeln!(
                out,
                "*** NO QUORUM: this node sees {} of {} expected votes{} (more than half needed): it starts nothing, stops what it ran, and refuses configuration changes ***",
                q.votes,
                q.expected,
                if q.witness == Some(false) {
                    ", the witness's vote not among them"
                } else {
                    ""
                }
            );
        }
        None if r.members.len() > 1 => {
            let _ = writeln!(
                out,
                "quorum: off (two nodes without a witness, or [quorum] enabled = false): a network partition can run a hierarchy on both sides"
            );
        }
        None => {}
    }
    for f in &r.fencing {
        let text = if f.confirmed {
            format!("node {} FENCED (confirmed since it was lost)", f.node)
        } else if f.running {
            format!(
                "node {} being fenced: level {}, {} failed attempt(s) of it",
                f.node, f.level, f.failed
            )
        } else {
            format!(
                "node {} NOT YET FENCED: level {} next, {} failed attempt(s) of it; what it ran waits for a fence or its lease",
                f.node, f.level, f.failed
            )
        };
        let _ = writeln!(out, "fencing: {text}");
    }
    if !r.standby.is_empty() {
        let standby: Vec<String> = r.standby.iter().map(u16::to_string).collect();
        let _ = writeln!(out, "in standby: node {}", standby.join(", "));
    }
    if r.leaving {
        let _ = writeln!(
            out,
            "this node is stopping: its hierarchies are being taken out of service"
        );
    }
    if r.probing {
        let _ = writeln!(out, "this node is still probing what runs here");
    }
    if r.multi_active > 0 {
        let _ = writeln!(
            out,
            "hierarchies found running on several nodes and stopped on all but one since start: {}",
            r.multi_active
        );
    }
    if r.resources.is_empty() {
        return;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<20} {:<10} {:<7} {:<7} {:>4} {:>5}  {:<10} LAST SCRIPT",
        "RESOURCE", "TYPE", "STATE", "ROLE", "PRI", "FAILS", "ACTION"
    );
    for res in &r.resources {
        let _ = writeln!(
            out,
            "{:<20} {:<10} {:<7} {:<7} {:>4} {:>5}  {:<10} {}",
            res.tag,
            res.kind,
            res.state.as_str(),
            res.role,
            res.priority,
            res.failures,
            res.busy.as_deref().unwrap_or("-"),
            res.last.as_deref().unwrap_or("-")
        );
    }
    let blocked: Vec<&str> = r
        .resources
        .iter()
        .filter(|res| res.state == heartline_brain::model::State::Blocked)
        .map(|res| res.tag.as_str())
        .collect();
    if !blocked.is_empty() {
        let _ = writeln!(
            out,
            "*** BLOCKED: {} failed to stop and may still run; no node starts their hierarchies until they are stopped and cleaned up (heartline cleanup TAG) ***",
            blocked.join(", ")
        );
    }
}

/// Every hierarchy across the cluster (its resources, on each node it is
/// extended to): where it runs, which of its resources failed where, and
/// its state on each node, a `?` marking the last known state of a node
/// that is down. Nodes by name and id.
#[must_use]
pub fn render_cluster(report: &StatusReport, model: &crate::resources::lcd::Model) -> String {
    let mut out = String::new();
    let groups = heartline_brain::groups::Groups::build(model);
    if groups.is_empty() {
        return out;
    }
    let mut names = std::collections::BTreeMap::from([(report.node, report.name.clone())]);
    let mut down = std::collections::BTreeSet::new();
    for peer in &report.peers {
        names.insert(peer.node, peer.name.clone());
        if peer.state != "up" {
            down.insert(peer.node);
        }
    }
    let name = |n: u16| match names.get(&n) {
        Some(name) if !name.is_empty() => format!("{name} ({n})"),
        _ => format!("node {n}"),
    };
    let _ = writeln!(out, "\nhierarchies across the cluster:");
    let title = |g: &heartline_brain::groups::Group| {
        let mut tags: Vec<&str> = g.places().map(|p| p.tag.as_str()).collect();
        tags.sort_unstable();
        tags.dedup();
        tags.join("+")
    };
    let width = groups
        .iter()
        .map(|g| title(g).chars().count())
        .max()
        .unwrap_or(0);
    for g in groups.iter() {
        let mut running = Vec::new();
        let mut failed = Vec::new();
        let mut states = Vec::new();
        for node in g.nodes() {
            let mark = if down.contains(&node) { "?" } else { "" };
            let members: Vec<&crate::resources::lcd::Resource> = g
                .on(node)
                .iter()
                .filter_map(|p| model.resources.get(p))
                .collect();
            let up = members.iter().filter(|r| r.state.in_service()).count();
            let state = if members.is_empty() || up == 0 {
                "out of service".to_string()
            } else if up == members.len() {
                running.push(format!("{}{mark}", name(node)));
                "in service".to_string()
            } else {
                running.push(format!("{}{mark} (partly)", name(node)));
                format!("{up} of {} in service", members.len())
            };
            for r in members.iter().filter(|r| r.state.failed()) {
                failed.push(format!("{} on {}{mark}", r.place.tag, name(node)));
            }
            let bad: Vec<String> = members
                .iter()
                .filter(|r| r.state.failed())
                .map(|r| format!("{} {}", r.place.tag, r.state))
                .collect();
            if bad.is_empty() {
                states.push(format!("{} {state}{mark}", name(node)));
            } else {
                states.push(format!("{} {state}{mark}, {}", name(node), bad.join(", ")));
            }
        }
        let mut summary = if running.is_empty() {
            match g.role {
                crate::resources::lcd::Role::Started => "runs NOWHERE (it should run)".to_string(),
                _ => "runs nowhere (role stopped)".to_string(),
            }
        } else {
            format!("runs on {}", running.join(", "))
        };
        if !failed.is_empty() {
            let _ = write!(summary, "; FAILED: {}", failed.join(", "));
        }
        let _ = writeln!(
            out,
            "  {:<width$}  {summary}  [{}]",
            title(g),
            states.join("; ")
        );
    }
    if !down.is_empty() && groups.iter().any(|g| g.nodes().any(|n| down.contains(&n))) {
        let _ = writeln!(
            out,
            "  ? the last known state of a node that is down; it may no longer hold"
        );
    }
    out
}
