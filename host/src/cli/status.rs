//! `heartline status` as a table a person can read, coloured on a
//! terminal.

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
        "{:<6} {:<16} {:<7} {:<8} {:<12} {:>6}  PATHS",
        "NODE", "NAME", "KIND", "STATE", "INCARNATION", "QUEUED"
    );
    for peer in &report.peers {
        let incarnation = peer
            .incarnation
            .map_or_else(|| "-".to_string(), |i| i.to_string());
        let _ = writeln!(
            out,
            "{:<6} {:<16} {:<7} {:<8} {:<12} {:>6}  {}",
            peer.node,
            peer.name,
            peer.kind.as_deref().unwrap_or("-"),
            peer.state,
            incarnation,
            peer.queued,
            paths_summary(&peer.paths)
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
        render_resources(&mut out, cluster, &|n| name_in(report, n));
    }
    out
}

/// A peer's paths in a few words, the worst flagged: `3/3 up`, or
/// `2/3 up; DOWN: path 1` (with the rejection counts that say why, when
/// frames on it are being rejected).
fn paths_summary(paths: &[crate::comm::report::PathReport]) -> String {
    if paths.is_empty() {
        return "-".to_string();
    }
    let up = paths.iter().filter(|p| p.state == "up").count();
    let mut text = format!("{up}/{} up", paths.len());
    let down: Vec<String> = paths
        .iter()
        .filter(|p| p.state != "up")
        .map(|p| {
            if p.rejected > 0 {
                format!("path {} (frames rejected)", p.index)
            } else {
                format!("path {}", p.index)
            }
        })
        .collect();
    if !down.is_empty() {
        let _ = write!(text, "; DOWN: {}", down.join(", "));
    }
    text
}

/// Node `node` as named in `report` (this node and its peers): `bravo
/// (2)`, or `node 2`.
pub(crate) fn name_in(report: &StatusReport, node: u16) -> String {
    let name = if report.node == node {
        Some(report.name.as_str())
    } else {
        report
            .peers
            .iter()
            .find(|p| p.node == node)
            .map(|p| p.name.as_str())
    };
    heartline_brain::api::node_name(node, name)
}

/// The cluster as the resource brain sees it, then this node's resources.
fn render_resources(out: &mut String, r: &NodeReport, name: &dyn Fn(u16) -> String) {
    let _ = writeln!(out);
    if r.maintenance {
        let _ = writeln!(
            out,
            "*** MAINTENANCE MODE: nothing is checked, recovered, started or stopped by the cluster (heartline maintenance off) ***"
        );
    }
    let members: Vec<String> = r.members.iter().map(|n| name(*n)).collect();
    let _ = writeln!(
        out,
        "coordinator {}; nodes up {}; configuration {}",
        name(r.coordinator),
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
                "*** REFUSED TO START: {} announces {theirs} expected votes, this node's configuration {}: make the [quorum] sections (and votes) agree on every node, then restart this one; it starts nothing until then ***",
                name(node),
                q.expected
            );
        }
        Some(q) if q.undecided.is_some() => {
            let (node, theirs) = q.undecided.unwrap_or_default();
            let _ = writeln!(
                out,
                "*** NO QUORUM: {} announces {theirs} expected votes, this node's configuration {}: the [quorum] sections differ, and the nodes heard so far do not tell which is configured apart; make them agree on every node ***",
                name(node),
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
            format!("{} FENCED (confirmed since it was lost)", name(f.node))
        } else if f.running {
            format!(
                "{} being fenced: level {}, {} failed attempt(s) of it",
                name(f.node),
                f.level,
                f.failed
            )
        } else {
            format!(
                "{} NOT YET FENCED: level {} next, {} failed attempt(s) of it; what it ran waits for a fence or its lease",
                name(f.node),
                f.level,
                f.failed
            )
        };
        let _ = writeln!(out, "fencing: {text}");
    }
    if !r.standby.is_empty() {
        let standby: Vec<String> = r.standby.iter().map(|n| name(*n)).collect();
        let _ = writeln!(out, "in standby: {}", standby.join(", "));
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

/// Failed and blocked resources across the cluster, and those with
/// failures counted: this node's and every other node's up, each with its
/// state, its fail-count (failures in its failure window) and its last
/// failure (how long ago, the script, how it ended, the last lines it
/// wrote); and the nodes that could not be asked, with why. Empty when
/// there is nothing to say.
#[must_use]
pub fn render_failures(status: &crate::control::NodeStatus) -> String {
    let who = |node: u16, name: &str| heartline_brain::api::node_name(node, Some(name));
    let mut nodes = Vec::new();
    if let Some(here) = &status.resources {
        nodes.push((who(status.comm.node, &status.comm.name), Ok(&**here)));
    }
    for other in &status.other_nodes {
        let report = match (&other.resources, &other.error) {
            (Some(report), _) => Ok(&**report),
            (None, Some(error)) => Err(error.as_str()),
            (None, None) => Err("no answer"),
        };
        nodes.push((who(other.node, &other.name), report));
    }
    let mut lines = Vec::new();
    for (node, report) in nodes {
        let report = match report {
            Ok(report) => report,
            Err(error) => {
                lines.push(format!("  {node}: not asked ({error})"));
                continue;
            }
        };
        for res in &report.resources {
            if !res.state.failed() && res.failures == 0 && res.last_failure.is_none() {
                continue;
            }
            let mut line = format!("  {} on {node}: {}", res.tag, res.state.as_str());
            let _ = write!(
                line,
                ", {} failure{} counted",
                res.failures,
                if res.failures == 1 { "" } else { "s" }
            );
            if let (Some(failure), Some(ago)) = (&res.last_failure, res.last_failure_ago_ms) {
                // To the second ("3m 12s"), under a second "0s".
                let ago = humantime::format_duration(std::time::Duration::from_secs(ago / 1000));
                let _ = write!(line, "; last failed {ago} ago: {failure}");
            }
            lines.push(line);
        }
    }
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "\nfailures across the cluster (state, failures in the failure window, the last failure; heartline cleanup TAG --node NODE clears them):\n{}\n",
        lines.join("\n")
    )
}

/// Every hierarchy across the cluster (its resources, on each node it is
/// extended to): where it runs, which of its resources failed where, and
/// its state on each node, a `?` marking the last known state of a node
/// that is down; and where it would go next (`next`, from the node's
/// report: the node that would take it over if it were lost where it
/// runs). Nodes by name and id.
#[must_use]
pub fn render_cluster(
    report: &StatusReport,
    model: &crate::resources::lcd::Model,
    next: &[heartline_brain::api::NextReport],
) -> String {
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
    let name = |n: u16| heartline_brain::api::node_name(n, names.get(&n).map(String::as_str));
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
        match next.iter().find(|n| n.key == g.key) {
            Some(heartline_brain::api::NextReport { node: Some(n), .. }) => {
                let _ = write!(summary, "; next: {}", name(*n));
            }
            Some(heartline_brain::api::NextReport {
                node: None,
                why: Some(why),
                ..
            }) => {
                let _ = write!(summary, "; next: none ({why})");
            }
            _ => {}
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

/// When `status` colours its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Colour {
    /// On a terminal, unless `NO_COLOR` is set (no-color.org).
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl Colour {
    /// Whether to colour what goes to standard output.
    #[must_use]
    pub fn on_stdout(self) -> bool {
        match self {
            Colour::Always => true,
            Colour::Never => false,
            Colour::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::io::IsTerminal::is_terminal(&std::io::stdout())
            }
        }
    }
}

const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[1;31m";
const RESET: &str = "\x1b[0m";

/// The colour of a state word as `status` prints it: healthy green, on
/// the way yellow, failed or lost red; `None`: left plain.
fn colour_of(word: &str) -> Option<&'static str> {
    match word {
        "up" | "ISP" => Some(GREEN),
        "ISU" | "joining" | "unknown" | "ISP?" => Some(YELLOW),
        "down" | "OSF" | "BLOCKED" | "FAILED:" | "DOWN:" | "LOST" => Some(RED),
        _ => None,
    }
}

/// `text` (from [`render`] and [`render_cluster`]) with its state words
/// coloured when `on`: a node's and a path's state, a resource's state,
/// failures. Only whole words in the columns that hold them are coloured,
/// and the colour codes take no room, so the columns stay aligned.
#[must_use]
pub fn paint(text: &str, on: bool) -> String {
    if !on {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 256);
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        // Node rows start with the node's id, path rows with "path",
        // resource rows are under RESOURCE; in hierarchy lines, FAILED.
        let node_row = trimmed.starts_with(|c: char| c.is_ascii_digit()) && line == trimmed;
        let path_row = trimmed.starts_with("path ");
        let resource_row = !node_row
            && !path_row
            && line == trimmed
            && trimmed
                .split_whitespace()
                .nth(1)
                .is_some_and(|t| t.contains('/'));
        let hierarchy_row = line.starts_with("  ") && !path_row && trimmed.contains(" runs ");
        let wanted: &[usize] = if node_row {
            &[3]
        } else if path_row {
            &[5, 6]
        } else if resource_row {
            &[2]
        } else {
            &[]
        };
        let mut index = 0;
        let mut rest = line;
        while !rest.is_empty() {
            let space = rest.len() - rest.trim_start().len();
            out.push_str(&rest[..space]);
            rest = &rest[space..];
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let word = &rest[..end];
            match colour_of(word) {
                Some(colour)
                    if wanted.contains(&index)
                        || (hierarchy_row && word == "FAILED:")
                        || (node_row && word == "DOWN:") =>
                {
                    out.push_str(colour);
                    out.push_str(word);
                    out.push_str(RESET);
                }
                _ => out.push_str(word),
            }
            rest = &rest[end..];
            if !word.is_empty() {
                index += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod paint_tests {
    use super::*;

    #[test]
    fn state_words_are_coloured_in_their_columns_only_and_keep_the_alignment() {
        let text = "cluster c  node 1 (alpha)  incarnation 1  up 3s\n\
                    NODE   NAME             KIND    STATE    INCARNATION  QUEUED\n\
                    2      bravo            host    up       5                 0\n  \
                    path 0 tcp 1.2.3.4:1 -> 1.2.3.5:1   down  rtt 1ms\n\
                    3      charlie          host    down     5                 0\n\
                    web                  gen/app    OSF     started    1     1  -\n\
                    db                   gen/app    ISP     started    1     0  -\n  \
                    web  runs on bravo (2); FAILED: web on alpha (1)\n\
                    the node is up, it said; the link went down\n";
        assert_eq!(paint(text, false), text);
        let painted = paint(text, true);
        let plain = painted
            .replace(GREEN, "")
            .replace(RED, "")
            .replace(YELLOW, "")
            .replace(RESET, "");
        assert_eq!(plain, text, "only colour codes are added");
        assert!(painted.contains(&format!("host    {GREEN}up{RESET}       5")));
        assert!(painted.contains(&format!("{RED}down{RESET}  rtt")));
        assert!(painted.contains(&format!("host    {RED}down{RESET}     5")));
        assert!(painted.contains(&format!("gen/app    {RED}OSF{RESET}")));
        assert!(painted.contains(&format!("gen/app    {GREEN}ISP{RESET}")));
        assert!(painted.contains(&format!("(2); {RED}FAILED:{RESET} web")));
        // Words in the header and in sentences stay plain.
        assert!(painted.contains("incarnation 1  up 3s"));
        assert!(painted.contains("the node is up, it said; the link went down"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::report::{StatusReport, TimerReport};
    use crate::control::{NodeStatus, OtherNode};
    use heartline_brain::api::ResourceStatus;
    use heartline_brain::model::State;

    fn resource(tag: &str, state: State, failures: u32, last: Option<&str>) -> ResourceStatus {
        ResourceStatus {
            tag: tag.into(),
            kind: "gen/app".into(),
            state,
            priority: 1,
            role: "started".into(),
            failures,
            busy: None,
            last: None,
            last_failure: last.map(Into::into),
            last_failure_ago_ms: last.map(|_| 192_400),
            props: std::collections::BTreeMap::new(),
        }
    }

    fn node(node: u16, resources: Vec<ResourceStatus>) -> Box<NodeReport> {
        Box::new(NodeReport {
            node,
            resources,
            ..NodeReport::default()
        })
    }

    /// A peer's paths summarised, the down ones named, those whose frames
    /// are rejected said so.
    #[test]
    fn paths_are_summarised_with_the_worst_flagged() {
        let path = |index: u8, state: &str, rejected: u64| crate::comm::report::PathReport {
            index,
            transport: "tcp".into(),
            state: state.into(),
            rtt_us: None,
            last_heard_ms_ago: None,
            frames_in: 0,
            frames_out: 0,
            rejected,
            errors: Vec::new(),
        };
        assert_eq!(paths_summary(&[]), "-");
        assert_eq!(
            paths_summary(&[path(0, "up", 0), path(1, "up", 0)]),
            "2/2 up"
        );
        assert_eq!(
            paths_summary(&[path(0, "up", 0), path(1, "down", 0), path(2, "down", 7)]),
            "1/3 up; DOWN: path 1, path 2 (frames rejected)"
        );
        let row =
            "2      bravo            host    up       5                 0  1/2 up; DOWN: path 1\n";
        assert!(paint(row, true).contains(&format!("{RED}DOWN:{RESET}")));
    }

    /// Failures of every node, this one's and the others' asked, with
    /// state, fail-count and last failure; healthy resources left out; a
    /// node that could not be asked said so; nothing at all when nothing
    /// failed.
    #[test]
    fn the_failures_of_every_node_are_listed_with_count_and_last_failure() {
        let mut status = NodeStatus {
            comm: StatusReport {
                cluster: "prod".into(),
                node: 1,
                name: "alpha".into(),
                incarnation: 1,
                uptime_ms: 1,
                timer: TimerReport::default(),
                peers: Vec::new(),
            },
            resources: Some(node(1, vec![resource("web", State::Isp, 0, None)])),
            other_nodes: vec![OtherNode {
                node: 2,
                name: "bravo".into(),
                resources: Some(node(2, vec![resource("web", State::Isp, 0, None)])),
                error: None,
            }],
        };
        assert_eq!(render_failures(&status), "");

        status.resources = Some(node(
            1,
            vec![
                resource(
                    "app",
                    State::Osf,
                    3,
                    Some("quickCheck exited with code 1 in 4 ms"),
                ),
                resource("web", State::Isp, 0, None),
            ],
        ));
        status.other_nodes[0].resources = Some(node(
            2,
            vec![
                resource(
                    "db",
                    State::Isp,
                    1,
                    Some("recover exited with code 2 in 1 ms"),
                ),
                resource("fs", State::Blocked, 0, None),
            ],
        ));
        status.other_nodes.push(OtherNode {
            node: 3,
            name: String::new(),
            resources: None,
            error: Some("no answer within 3s".into()),
        });
        let text = render_failures(&status);
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(
            lines,
            [
                "  app on alpha (1): OSF, 3 failures counted; last failed 3m 12s ago: quickCheck exited with code 1 in 4 ms",
                "  db on bravo (2): ISP, 1 failure counted; last failed 3m 12s ago: recover exited with code 2 in 1 ms",
                "  fs on bravo (2): BLOCKED, 0 failures counted",
                "  node 3: not asked (no answer within 3s)",
            ],
            "{text}"
        );
        assert!(
            text.starts_with("\nfailures across the cluster ("),
            "{text}"
        );
    }
}
