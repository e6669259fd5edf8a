//! The `[[fence]]` devices and the `[fencing]` section: which fence agent
//! powers each node off, in which level, with which parameters, and how
//! failures are retried. The same on every node (any node may be the one
//! that fences).
//!
//! ```toml
//! [fencing]              # optional
//! action = "reboot"      # or "off"
//! attempts = 2           # per level, before the next level
//! retry_delay = "1s"
//!
//! [[fence]]
//! name = "bmc-bravo"
//! node = 2               # the node it fences
//! level = 1              # levels are tried in order; every device of a level must confirm
//! agent = "fence_ipmilan"
//! timeout = "60s"
//! [fence.params]         # key=value lines on the agent's standard input
//! ip = "10.0.0.12"
//! username = "admin"
//! password = "secret"
//! lanplus = true
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration as StdDuration;

use serde::Deserialize;
use toml::Spanned;

use super::{Checker, ConfigError};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFencing {
    action: Option<Spanned<String>>,
    attempts: Option<Spanned<u32>>,
    retry_delay: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFence {
    name: Spanned<String>,
    node: Spanned<u16>,
    level: Option<Spanned<u32>>,
    agent: Spanned<String>,
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    params: BTreeMap<String, Spanned<toml::Value>>,
}

/// One fence device: an agent and what it is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceDevice {
    /// Its name, in logs and levels.
    pub name: String,
    /// The node it fences.
    pub node: u16,
    /// Its level for that node (from 1).
    pub level: u32,
    /// The agent: a path, or a name looked for in [`AGENT_DIRS`], or
    /// [`DONGLE_AGENT`].
    pub agent: String,
    /// How long a run may take before it is killed (and fails).
    pub timeout: StdDuration,
    /// Parameters, written as `key=value` lines on the agent's standard
    /// input after `action=`.
    pub params: Vec<(String, String)>,
}

/// The agent name of the dongle's reset output: no program, the daemon
/// asks the dongle (the cluster's witness) over its serial line.
pub const DONGLE_AGENT: &str = "dongle";

/// Where an agent named without a path is looked for, in order (ClusterLabs
/// packages put theirs in `/usr/sbin`).
pub const AGENT_DIRS: [&str; 5] = [
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/usr/local/sbin",
    "/usr/local/bin",
];

impl FenceDevice {
    /// The agent's program: the path given, or the first of
    /// [`AGENT_DIRS`] that holds it (`None`: found nowhere).
    #[must_use]
    pub fn program(&self) -> Option<PathBuf> {
        if self.agent == DONGLE_AGENT {
            return None;
        }
        if self.agent.contains('/') {
            return Some(PathBuf::from(&self.agent));
        }
        AGENT_DIRS
            .iter()
            .map(|d| PathBuf::from(d).join(&self.agent))
            .find(|p| p.is_file())
    }
}

/// Fencing, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FencingSpec {
    /// Every device.
    pub devices: Vec<FenceDevice>,
    /// What the devices are asked to do.
    pub action: heartline_brain::FenceAction,
    /// Attempts of a level before the next.
    pub attempts: u32,
    /// Pause after a failed attempt.
    pub retry_delay: StdDuration,
}

/// Default `[[fence]] timeout`: fence_ipmilan's own waits add up to about
/// this at their defaults.
pub const DEFAULT_FENCE_TIMEOUT: StdDuration = StdDuration::from_secs(60);

impl FencingSpec {
    /// The brain's view: per node, its levels of device names.
    #[must_use]
    pub fn brain_config(&self) -> heartline_brain::FenceConfig {
        let mut levels: BTreeMap<u16, BTreeMap<u32, Vec<String>>> = BTreeMap::new();
        for d in &self.devices {
            levels
                .entry(d.node)
                .or_default()
                .entry(d.level)
                .or_default()
                .push(d.name.clone());
        }
        heartline_brain::FenceConfig {
            levels: levels
                .into_iter()
                .map(|(n, l)| (n, l.into_values().collect()))
                .collect(),
            attempts: self.attempts,
            retry_delay: self.retry_delay.into(),
            action: self.action,
        }
    }

    /// A device by name.
    #[must_use]
    pub fn device(&self, name: &str) -> Option<&FenceDevice> {
        self.devices.iter().find(|d| d.name == name)
    }
}

impl Checker<'_> {
    /// The fence devices and their settings (`None`: no device).
    pub(super) fn fencing(
        &self,
        raw: Option<&Spanned<RawFencing>>,
        devices: &[RawFence],
        nodes: &[u16],
        quorum: bool,
        dongle_hosts: &[u16],
    ) -> Result<Option<FencingSpec>, ConfigError> {
        if devices.is_empty() {
            if let Some(raw) = raw {
                return Err(self.error(
                    raw,
                    "fencing",
                    "a [fencing] section without any [[fence]] device",
                    "add a [[fence]] device for each node, or remove the section",
                ));
            }
            return Ok(None);
        }
        if !quorum {
            return Err(self.error(
                &devices[0].name,
                "fence",
                "fence devices without quorum",
                "fencing is done by a quorate partition only: set [quorum] enabled = true",
            ));
        }
        let settings = raw.map(Spanned::get_ref);
        let action = match settings
            .and_then(|s| s.action.as_ref())
            .map(|a| (a, a.get_ref().as_str()))
        {
            None | Some((_, "reboot")) => heartline_brain::FenceAction::Reboot,
            Some((_, "off")) => heartline_brain::FenceAction::Off,
            Some((a, other)) => {
                return Err(self.error(
                    a,
                    "fencing.action",
                    format!("`{other}` is not a fence action"),
                    "use \"reboot\" (power off, then on) or \"off\" (stays off)",
                ));
            }
        };
        let attempts = match settings.and_then(|s| s.attempts.as_ref()) {
            Some(a) if *a.get_ref() == 0 => {
                return Err(self.error(
                    a,
                    "fencing.attempts",
                    "0 attempts would never fence",
                    "use 1 or more (2 is the default)",
                ));
            }
            Some(a) => *a.get_ref(),
            None => 2,
        };
        let retry_delay = match settings.and_then(|s| s.retry_delay.as_ref()) {
            Some(d) => self.duration(d, "fencing.retry_delay")?,
            None => StdDuration::from_secs(1),
        };
        let mut out: Vec<FenceDevice> = Vec::new();
        for (i, d) in devices.iter().enumerate() {
            let field = format!("fence[{i}]");
            let name = d.name.get_ref();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(self.error(
                    &d.name,
                    &format!("{field}.name"),
                    format!("`{name}` is not a device name"),
                    "use a short name without spaces, such as \"bmc-bravo\"",
                ));
            }
            if out.iter().any(|o| o.name == *name) {
                return Err(self.error(
                    &d.name,
                    &format!("{field}.name"),
                    format!("device {name} is listed twice"),
                    "give every [[fence]] device its own name",
                ));
            }
            let node = *d.node.get_ref();
            if !nodes.contains(&node) {
                return Err(self.error(
                    &d.node,
                    &format!("{field}.node"),
                    format!("{node} is not a host node of this cluster"),
                    format!("name one of the nodes {nodes:?}"),
                ));
            }
            let level = d.level.as_ref().map_or(1, |l| *l.get_ref());
            if level == 0 {
                let at = d.level.as_ref().map_or(d.name.span(), Spanned::span);
                return Err(ConfigError {
                    file: self.file.to_path_buf(),
                    line: Some(self.line_of(at.start)),
                    field: format!("{field}.level"),
                    problem: "levels count from 1".into(),
                    hint: "use level = 1 for the device tried first".into(),
                });
            }
            let agent = d.agent.get_ref();
            let base = agent.rsplit('/').next().unwrap_or(agent);
            if agent == DONGLE_AGENT && !dongle_hosts.contains(&node) {
                return Err(self.error(
                    &d.agent,
                    &format!("{field}.agent"),
                    format!("no dongle here can reset node {node}"),
                    "the dongle resets a host on its ports, as the cluster's witness (witness = true) with reset_pulse set",
                ));
            }
            if agent != DONGLE_AGENT && !base.starts_with("fence_") && !agent.contains('/') {
                return Err(self.error(
                    &d.agent,
                    &format!("{field}.agent"),
                    format!("`{agent}` is not a fence agent's name"),
                    "name a ClusterLabs agent such as \"fence_ipmilan\", give a path, or \"dongle\" for the dongle's reset output",
                ));
            }
            let timeout = match &d.timeout {
                Some(t) => self.duration(t, &format!("{field}.timeout"))?,
                None => DEFAULT_FENCE_TIMEOUT,
            };
            let mut params = Vec::new();
            for (key, value) in &d.params {
                let text = match value.get_ref() {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::Boolean(b) => if *b { "1" } else { "0" }.to_string(),
                    _ => {
                        return Err(self.error(
                            value,
                            &format!("{field}.params.{key}"),
                            "not a string, a number or true/false",
                            "fence agents take text values: quote it",
                        ));
                    }
                };
                if key == "action" || key.contains(['=', '\n']) || text.contains('\n') {
                    return Err(self.error(
                        value,
                        &format!("{field}.params.{key}"),
                        "cannot be passed to the agent",
                        "heartline gives the action itself; keys and values are one line without `=` in the key",
                    ));
                }
                params.push((key.clone(), text));
            }
            out.push(FenceDevice {
                name: name.clone(),
                node,
                level,
                agent: agent.clone(),
                timeout,
                params,
            });
        }
        Ok(Some(FencingSpec {
            devices: out,
            action,
            attempts,
            retry_delay,
        }))
    }
}
