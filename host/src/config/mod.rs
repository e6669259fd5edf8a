//! The daemon's configuration file: TOML, read and checked in full before
//! anything starts, so every mistake is reported with the file, the line,
//! the field, what is wrong and what to do. This folder owns the format,
//! its defaults and its checks, the cluster key file, and ([`locate`])
//! placing a mistake in TOML text, which the recovery kits' manifests use
//! too.

pub mod fencing;
pub mod locate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use heartline_core::wire::{Key, MAX_NAME_LEN, MIN_KEY_LEN};
use heartline_core::{ClusterId, NodeId, PathConfig};
use serde::Deserialize;
use toml::Spanned;

pub use fencing::{FenceDevice, FencingSpec};

/// Most paths between one pair of nodes.
pub const MAX_PATHS: usize = 4;
/// Most peers of one node.
pub const MAX_PEERS: usize = 31;

/// A configuration mistake, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when the mistake has one.
    pub line: Option<usize>,
    /// The field, as a path (`peers[0].paths[1].remote`).
    pub field: String,
    /// What is wrong.
    pub problem: String,
    /// What to do about it.
    pub hint: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.problem)?;
        if !self.hint.is_empty() {
            write!(f, " ({})", self.hint)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster: RawCluster,
    node: RawNode,
    #[serde(default)]
    timing: RawTiming,
    #[serde(default)]
    resources: RawResources,
    #[serde(default)]
    control: RawControl,
    quorum: Option<Spanned<RawQuorum>>,
    fencing: Option<Spanned<fencing::RawFencing>>,
    #[serde(default)]
    fence: Vec<fencing::RawFence>,
    #[serde(default)]
    peers: Vec<RawPeer>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawQuorum {
    enabled: Option<Spanned<bool>>,
    votes: Option<Spanned<u32>>,
    expected_votes: Option<Spanned<u32>>,
    wait_for_all: Option<Spanned<bool>>,
    no_quorum: Option<Spanned<String>>,
    lease: Option<Spanned<String>>,
    stop_bound: Option<Spanned<String>>,
    fast_stop_bound: Option<Spanned<String>>,
    watchdog: Option<Spanned<String>>,
    watchdog_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawResources {
    database: Option<Spanned<String>>,
    kits: Option<Vec<Spanned<String>>>,
    on_stop: Option<Spanned<String>>,
    failure_window: Option<Spanned<String>>,
    max_failures: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    group: Option<Spanned<String>>,
    admin_group: Option<Spanned<String>>,
    max_connections: Option<Spanned<u32>>,
    idle_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: Spanned<String>,
    id: Spanned<u32>,
    key_file: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: Spanned<u16>,
    name: Spanned<String>,
    control_socket: Option<Spanned<String>>,
    state_dir: Option<Spanned<String>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawTiming {
    interval: Option<Spanned<String>>,
    misses: Option<Spanned<u32>>,
    rise: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    id: Spanned<u16>,
    name: Option<Spanned<String>>,
    /// `host` (the default) or `dongle`.
    kind: Option<Spanned<String>>,
    /// A dongle's watchdog over this node.
    watchdog: Option<Spanned<String>>,
    /// How long a dongle's trip holds this node's reset line.
    reset_pulse: Option<Spanned<String>>,
    /// A host's votes for quorum (1 unless given).
    votes: Option<Spanned<u32>>,
    /// A dongle that is also the quorum witness.
    witness: Option<Spanned<bool>>,
    paths: Spanned<Vec<RawPath>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPath {
    kind: Spanned<String>,
    local: Option<Spanned<String>>,
    remote: Option<Spanned<String>>,
    device: Option<Spanned<String>>,
    baud: Option<Spanned<u32>>,
    priority: Option<Spanned<u8>>,
    // The timing overrides repeat `RawTiming`'s fields rather than flatten
    // it: serde's flatten buffers values and loses the spans that locate
    // errors.
    interval: Option<Spanned<String>>,
    misses: Option<Spanned<u32>>,
    rise: Option<Spanned<u32>>,
}

impl RawPath {
    /// The path's own timing overrides.
    fn timing(&self) -> RawTiming {
        RawTiming {
            interval: self.interval.clone(),
            misses: self.misses.clone(),
            rise: self.rise.clone(),
        }
    }
}

/// How a path reaches the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A TCP connection of its own: the node with the higher id listens on
    /// its `local` address, the other connects to its `remote` from the IP
    /// of its `local` address.
    Tcp {
        /// This node's end.
        local: SocketAddr,
        /// The peer's end.
        remote: SocketAddr,
    },
    /// UDP datagrams, one frame each, from `local` to `remote`.
    Udp {
        /// This node's end.
        local: SocketAddr,
        /// The peer's end.
        remote: SocketAddr,
    },
    /// A serial line (RS-232, USB-serial, or a pty).
    Serial {
        /// The device, e.g. `/dev/ttyS0` or `COM3`.
        device: String,
        /// Line speed in baud.
        baud: u32,
    },
}

/// Default serial line speed: the fastest rate every RS-232 port supports.
pub const DEFAULT_BAUD: u32 = 115_200;

/// One path to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSpec {
    /// How it travels.
    pub transport: Transport,
    /// Its timing and priority.
    pub timing: PathConfig,
}

/// One peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// Its node id.
    pub id: NodeId,
    /// Its name in this file (the peer announces its own too).
    pub name: Option<String>,
    /// Its paths, numbered from 0 in this order at both ends.
    pub paths: Vec<PathSpec>,
    /// Set when the peer is a heartbeat dongle this node provisions.
    pub dongle: Option<DongleSpec>,
    /// Set when the peer is a quorum witness (`heartline witness`).
    pub witness: bool,
}

impl PeerSpec {
    /// Whether it is another host of the cluster (not a dongle or a
    /// witness).
    #[must_use]
    pub fn is_host(&self) -> bool {
        self.dongle.is_none() && !self.witness
    }
}

/// What this node provisions a heartbeat dongle with, besides its path's
/// timing and the key derived from the cluster's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DongleSpec {
    /// The host on the dongle's other port: the peer with a serial path on
    /// the same device, if any.
    pub other_host: Option<NodeId>,
    /// Silence from a host before the dongle trips its watchdog.
    pub watchdog: Option<StdDuration>,
    /// How long a trip holds the silent host's reset line; `None`: the
    /// dongle reports trips but never resets anyone.
    pub reset_pulse: Option<StdDuration>,
}

/// Default dongle watchdog: four times the default path's failure time,
/// so a host is long declared down by its peers before the dongle acts.
pub const DEFAULT_DONGLE_WATCHDOG: StdDuration = StdDuration::from_secs(2);

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Cluster name, for logs.
    pub cluster_name: String,
    /// Cluster id on the wire.
    pub cluster: ClusterId,
    /// The shared secret, loaded.
    pub key: Key,
    /// This node.
    pub node: NodeId,
    /// This node's name.
    pub name: String,
    /// The CLI's Unix socket.
    pub control_socket: PathBuf,
    /// Who may use the control socket, and how many at once.
    pub control: ControlSpec,
    /// Where the daemon keeps its incarnation counter.
    pub state_dir: PathBuf,
    /// The configuration database file.
    pub database: PathBuf,
    /// Directories of recovery kits, later ones overriding earlier ones.
    pub kits: Vec<PathBuf>,
    /// How resources are recovered, and what a clean stop does with them.
    pub policy: Policy,
    /// Quorum and leases (`None`: off, as by default for now).
    pub quorum: Option<QuorumSpec>,
    /// Fence devices (`None`: none; lost nodes are waited out by their
    /// lease).
    pub fencing: Option<FencingSpec>,
    /// The peers.
    pub peers: Vec<PeerSpec>,
}

/// The `[control]` section, checked: who may use the control socket and
/// how many clients it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSpec {
    /// The group whose members may use the control socket at all (read
    /// requests: `status`, `watch`, listings): the socket's group (0660)
    /// and its directory's (0750). If the system has no such group, only
    /// root (and the daemon's user) may connect (socket 0600).
    pub group: String,
    /// The group whose members may also change things (root and the
    /// daemon's user always may).
    pub admin_group: String,
    /// Most control connections open at once (`watch` and `rcv-msg`
    /// included).
    pub max_connections: usize,
    /// How long a client may take to send its request.
    pub idle_timeout: StdDuration,
}

/// The default `[control] group` and `admin_group`.
pub const DEFAULT_CONTROL_GROUP: &str = "heartline";
/// The default `[control] max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// The default `[control] idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: StdDuration = StdDuration::from_secs(10);

impl Default for ControlSpec {
    fn default() -> Self {
        ControlSpec {
            group: DEFAULT_CONTROL_GROUP.into(),
            admin_group: DEFAULT_CONTROL_GROUP.into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// The `[quorum]` section, checked: the same on every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumSpec {
    /// The witness peer's id, if there is one (it holds one vote, counted
    /// in `expected`).
    pub witness: Option<u16>,
    /// Every host node's votes, this one included.
    pub votes: std::collections::BTreeMap<u16, u32>,
    /// The cluster's expected votes: a partition needs more than half.
    pub expected: u32,
    /// Start nothing at a cold start until every node was seen once.
    pub wait_for_all: bool,
    /// What a node without quorum does with what it runs.
    pub no_quorum: heartline_brain::NoQuorum,
    /// How long quorum holds after the last proof a majority heard this
    /// node.
    pub lease: StdDuration,
    /// How long this node's stops may take: it gives quorum up this long
    /// before its lease ends.
    pub stop_bound: StdDuration,
    /// The fastest path's `interval × misses`: a peer declared down was
    /// heard last at least this long before.
    pub detect_floor: StdDuration,
    /// The fast lease for hierarchies of virtual IPs alone, and their stop
    /// bound (`None`: it would not be shorter than `lease`).
    pub fast: Option<(StdDuration, StdDuration)>,
    /// What resets this node by its lease's end if what it runs has not
    /// stopped (`None`: nothing; its daemon's death is then covered only
    /// by fence devices).
    pub self_fence: Option<SelfFence>,
}

/// What resets a node whose lease ended while anything still ran there, or
/// whose daemon died or stalled: the daemon keeps it from firing only until
/// its lease's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelfFence {
    /// The Linux watchdog device (`quorum.watchdog`) and its timeout: fed
    /// while a feed cannot outlive the lease.
    Device {
        /// The device.
        path: PathBuf,
        /// Its timeout.
        timeout: StdDuration,
    },
    /// A dongle's watchdog over this node, when no device is configured:
    /// the daemon sends the dongle nothing once a frame could keep the
    /// node alive past its lease, so the dongle's watchdog trips and pulses
    /// this node's reset line by then.
    Dongle {
        /// The dongle.
        node: NodeId,
        /// The dongle's watchdog plus its reset pulse: how long the node
        /// may live after the last frame the dongle heard from it.
        within: StdDuration,
    },
}

impl SelfFence {
    /// How long the node may live after the last feed.
    #[must_use]
    pub fn within(&self) -> StdDuration {
        match self {
            SelfFence::Device { timeout, .. } => *timeout,
            SelfFence::Dongle { within, .. } => *within,
        }
    }
}

/// Whether quorum is on when `[quorum] enabled` is not set: wherever it
/// can work, that is when the cluster holds three votes or more (three
/// nodes, or two and a witness). A 2-node cluster without a witness would
/// never fail over with it (one node of two is no majority), so it is off
/// there, and the daemon and `status` say what that risks.
fn quorum_by_default(q: &RawQuorum, raw_peers: &[RawPeer], peers: &[PeerSpec]) -> bool {
    let own = q.votes.as_ref().map_or(1, |v| *v.get_ref());
    let others: u32 = raw_peers
        .iter()
        .zip(peers)
        .map(|(raw, peer)| {
            if peer.witness {
                1
            } else if peer.is_host() {
                raw.votes.as_ref().map_or(1, |v| *v.get_ref())
            } else {
                0
            }
        })
        .sum();
    own.saturating_add(others) >= 3
}

/// Added to a dongle's watchdog and reset pulse when it is the self-fence:
/// the last frame's way down the line, and the dongle's own tick, so the
/// reset comes a little before the lease's end rather than just at it.
pub const DONGLE_SLACK: StdDuration = StdDuration::from_millis(200);

/// Default `quorum.stop_bound`.
pub const DEFAULT_STOP_BOUND: StdDuration = StdDuration::from_secs(3);

/// Default `quorum.fast_stop_bound`: how long stopping a hierarchy of
/// virtual IPs alone may take (an address removal takes microseconds; this
/// is the resource thread's latency, with room).
pub const DEFAULT_FAST_STOP_BOUND: StdDuration = StdDuration::from_millis(200);

/// Resource kinds whose stop is bounded by `quorum.fast_stop_bound`.
pub const FAST_KINDS: &[&str] = &["ip/vip"];

/// How far, in ms, a peer's echo of this node's heartbeats must advance
/// before the resource brain is told again (the communication manager's
/// step, and part of the fast lease).
pub const ECHO_STEP_MS: u64 = 50;

/// The `[resources]` rules for failures and stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// What a clean stop (SIGTERM) does with this node's hierarchies.
    pub on_stop: OnStop,
    /// Failures of a resource counted together.
    pub failure_window: StdDuration,
    /// Local recoveries of a resource within its window before its
    /// hierarchy fails over instead.
    pub max_failures: u32,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            on_stop: OnStop::Switchover,
            failure_window: StdDuration::from_secs(600),
            max_failures: 3,
        }
    }
}

pub use heartline_brain::OnStop;

/// Default Unix socket of the control API.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/heartline/heartline.sock";

/// Where the daemon and `check-config` look for the configuration when
/// none is named.
pub const DEFAULT_CONFIG: &str = "/etc/heartline/heartline.toml";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/heartline";
/// The configuration database's file name in the state directory, unless
/// `resources.database` names another.
pub const DEFAULT_DATABASE: &str = "lcd.sqlite";

/// Where recovery kits are looked for unless `resources.kits` says: the
/// packaged kits, then the administrator's (which override them). Never a
/// build's source tree: a binary copied elsewhere must not run scripts
/// from where it was built (the demo and the tests give their kits in
/// `resources.kits`).
pub fn default_kit_dirs() -> Vec<PathBuf> {
    vec![
        PathBuf::from("/usr/share/heartline/kits"),
        PathBuf::from("/etc/heartline/kits"),
    ]
}

/// Places mistakes in a TOML file: the configuration's, and the witness's.
pub(crate) struct Checker<'a> {
    pub(crate) file: &'a Path,
    pub(crate) text: &'a str,
}

impl Checker<'_> {
    /// The 1-based line of byte `offset`.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        locate::line_of(self.text, offset)
    }

    /// A mistake at `at`.
    pub(crate) fn error<T>(
        &self,
        at: &Spanned<T>,
        field: &str,
        problem: impl Into<String>,
        hint: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: Some(self.line_of(at.span().start)),
            field: field.to_string(),
            problem: problem.into(),
            hint: hint.into(),
        }
    }

    fn timing(
        &self,
        base: &PathConfig,
        raw: &RawTiming,
        field: &str,
    ) -> Result<PathConfig, ConfigError> {
        let mut timing = *base;
        if let Some(interval) = &raw.interval {
            timing.interval = self
                .duration(interval, &format!("{field}.interval"))?
                .into();
        }
        if let Some(misses) = &raw.misses {
            timing.misses = *misses.get_ref();
        }
        if let Some(rise) = &raw.rise {
            timing.rise = *rise.get_ref();
        }
        let at = raw
            .interval
            .as_ref()
            .map(|s| s.span())
            .or(raw.misses.as_ref().map(|s| s.span()))
            .or(raw.rise.as_ref().map(|s| s.span()));
        timing.validate().map_err(|e| ConfigError {
            file: self.file.to_path_buf(),
            line: at.map(|span| self.line_of(span.start)),
            field: field.to_string(),
            problem: e.to_string(),
            hint: "heartline's defaults are interval 100ms, misses 5, rise 2".into(),
        })?;
        Ok(timing)
    }

    /// A witness peer: TCP or UDP paths, only one witness.
    fn witness_peer(
        &self,
        peer: &RawPeer,
        paths: &[PathSpec],
        field: &str,
        another: bool,
    ) -> Result<(), ConfigError> {
        if another {
            return Err(self.error(
                &peer.id,
                &format!("{field}.kind"),
                "a second witness",
                "a cluster has one witness",
            ));
        }
        if let Some(setting) = [&peer.watchdog, &peer.reset_pulse]
            .into_iter()
            .flatten()
            .next()
        {
            return Err(self.error(
                setting,
                field,
                "only a dongle has this setting",
                "remove it from the witness",
            ));
        }
        if paths
            .iter()
            .any(|p| matches!(p.transport, Transport::Serial { .. }))
        {
            return Err(self.error(
                &peer.paths,
                &format!("{field}.paths"),
                "a witness is reached over TCP or UDP",
                "give it kind = \"tcp\" paths to the machine running heartline witness",
            ));
        }
        Ok(())
    }

    /// Without a watchdog device, the first dongle that resets the hosts it
    /// watches (a `reset_pulse`) is this node's self-fence, if its watchdog
    /// and pulse, with [`DONGLE_SLACK`], fit in three quarters of the
    /// lease: a healthy node's lease is renewed at least every eighth of
    /// it (the witness is asked that often), so it never starves the
    /// dongle.
    fn dongle_self_fence(
        &self,
        raw_peers: &[RawPeer],
        peers: &[PeerSpec],
        lease: StdDuration,
    ) -> Result<Option<SelfFence>, ConfigError> {
        let found = raw_peers
            .iter()
            .zip(peers)
            .enumerate()
            .find_map(|(i, (raw, peer))| {
                let dongle = peer.dongle?;
                Some((i, raw, peer.id, dongle.watchdog?, dongle.reset_pulse?))
            });
        let Some((i, raw, node, watchdog, pulse)) = found else {
            return Ok(None);
        };
        let within = watchdog + pulse + DONGLE_SLACK;
        if within * 4 > lease * 3 {
            let at = raw.watchdog.as_ref().or(raw.reset_pulse.as_ref());
            return Err(ConfigError {
                file: self.file.to_path_buf(),
                line: at.map(|a| self.line_of(a.span().start)),
                field: format!("peers[{i}].watchdog"),
                problem: format!(
                    "dongle {node} is this node's self-fence (no quorum.watchdog), and its watchdog plus reset pulse plus 200ms ({}) is more than three quarters of the lease ({})",
                    humantime::format_duration(within),
                    humantime::format_duration(lease)
                ),
                hint: "a healthy node must feed it well within its lease: shorten the dongle's watchdog, lengthen quorum.lease, or name a watchdog device".into(),
            });
        }
        Ok(Some(SelfFence::Dongle { node, within }))
    }

    /// The `[quorum]` section (`None`: absent), if quorum is on: as
    /// `enabled` says, else wherever it can work (see [`quorum_by_default`]).
    fn quorum(
        &self,
        section: Option<&Spanned<RawQuorum>>,
        node: u16,
        raw_peers: &[RawPeer],
        peers: &[PeerSpec],
    ) -> Result<Option<QuorumSpec>, ConfigError> {
        let absent = RawQuorum::default();
        let q = section.map_or(&absent, Spanned::get_ref);
        let on = match &q.enabled {
            Some(e) => *e.get_ref(),
            None => quorum_by_default(q, raw_peers, peers),
        };
        if !on {
            return Ok(None);
        }
        // Where an error about the whole section points: the section, or
        // (quorum on by default) the witness that turned it on, or the node.
        let whole = |problem: String, hint: &str| match section {
            Some(raw) => self.error(raw, "quorum", problem, hint),
            None => match peers.iter().position(|p| p.witness) {
                Some(w) => self.error(&raw_peers[w].id, &format!("peers[{w}].kind"), problem, hint),
                None => ConfigError {
                    file: self.file.to_path_buf(),
                    line: None,
                    field: "quorum".into(),
                    problem,
                    hint: hint.into(),
                },
            },
        };
        let mut votes = std::collections::BTreeMap::new();
        votes.insert(node, q.votes.as_ref().map_or(1, |v| *v.get_ref()));
        for (raw_peer, peer) in raw_peers.iter().zip(peers) {
            if !peer.is_host() {
                if let Some(v) = &raw_peer.votes {
                    return Err(self.error(
                        v,
                        "peers.votes",
                        "a dongle or a witness has no votes to set here (a witness holds one)",
                        "give votes to host peers only",
                    ));
                }
                continue;
            }
            votes.insert(
                peer.id.0,
                raw_peer.votes.as_ref().map_or(1, |v| *v.get_ref()),
            );
        }
        let witness = peers.iter().find(|p| p.witness).map(|p| p.id.0);
        let dongle_witness = peers.iter().any(|p| p.witness && p.dongle.is_some());
        if dongle_witness {
            let hosts = votes.len();
            let big = votes
                .keys()
                .find(|n| **n > heartline_core::witness::EVENT_IDS);
            if hosts != 2 || big.is_some() {
                return Err(whole(
                    format!(
                        "a dongle is the witness of a 2-node cluster with ids 1 to 16; this one has {hosts} nodes{}",
                        big.map(|b| format!(", node {b} among them"))
                            .unwrap_or_default()
                    ),
                    "use heartline witness (kind = \"witness\") for other clusters",
                ));
            }
        }
        if witness.is_some() {
            if let Some(big) = votes
                .keys()
                .find(|n| !heartline_core::witness::NodeSet::fits(**n))
            {
                return Err(whole(
                    format!("node {big} has an id above 64, which a witness cannot name"),
                    "number the cluster's hosts from 1 to 64 to use a witness",
                ));
            }
        }
        let total: u32 = votes.values().sum::<u32>() + u32::from(witness.is_some());
        if total == 0 {
            return Err(whole(
                "no node has a vote".into(),
                "give each node 1 vote (the default)",
            ));
        }
        let expected = match &q.expected_votes {
            Some(e) if *e.get_ref() < total => {
                return Err(self.error(
                    e,
                    "quorum.expected_votes",
                    format!(
                        "{} is less than the votes of the nodes in this file ({total})",
                        e.get_ref()
                    ),
                    "leave it out (it defaults to the total), or give a total at least as large",
                ));
            }
            Some(e) => *e.get_ref(),
            None => total,
        };
        let no_quorum = match q.no_quorum.as_ref().map(|n| (n, n.get_ref().as_str())) {
            None | Some((_, "stop")) => heartline_brain::NoQuorum::Stop,
            Some((_, "freeze")) => heartline_brain::NoQuorum::Freeze,
            Some((n, other)) => {
                return Err(self.error(
                    n,
                    "quorum.no_quorum",
                    format!("`{other}` is not a policy"),
                    "use \"stop\" (stop this node's hierarchies) or \"freeze\" (keep them until the lease ends, start nothing)",
                ));
            }
        };
        let hosts = peers.iter().filter(|p| p.is_host());
        let downs: Vec<StdDuration> = hosts
            .flat_map(|p| p.paths.iter())
            .map(|p| StdDuration::from(p.timing.down_after()))
            .collect();
        let detect_floor = downs.iter().min().copied().unwrap_or_default();
        let detect_max = downs.iter().max().copied().unwrap_or_default();
        let stop_bound = match &q.stop_bound {
            Some(b) => self.duration(b, "quorum.stop_bound")?,
            None => DEFAULT_STOP_BOUND,
        };
        let least = detect_max + stop_bound;
        let lease = match &q.lease {
            Some(l) => {
                let lease = self.duration(l, "quorum.lease")?;
                if lease <= least {
                    return Err(self.error(
                        l,
                        "quorum.lease",
                        format!(
                            "{} is too short: a node cut off may notice only after {} (its slowest path's interval × misses) and then needs stop_bound ({}) to stop",
                            humantime::format_duration(lease),
                            humantime::format_duration(detect_max),
                            humantime::format_duration(stop_bound)
                        ),
                        format!("make it more than {}", humantime::format_duration(least)),
                    ));
                }
                lease
            }
            None => least + StdDuration::from_secs(1),
        };
        let watchdog = match &q.watchdog {
            Some(device) => {
                let timeout = match &q.watchdog_timeout {
                    Some(t) => self.duration(t, "quorum.watchdog_timeout")?,
                    None => StdDuration::from_secs(1),
                };
                // Held within two timeouts of the lease's end, the device is
                // let go after each feed (see `sys::watchdog`): a third of
                // the lease keeps a healthy node holding it.
                if timeout * 3 > lease {
                    let at = q
                        .watchdog_timeout
                        .as_ref()
                        .map_or(device.span(), Spanned::span);
                    return Err(ConfigError {
                        file: self.file.to_path_buf(),
                        line: Some(self.line_of(at.start)),
                        field: "quorum.watchdog_timeout".into(),
                        problem: format!(
                            "{} is more than a third of the lease ({})",
                            humantime::format_duration(timeout),
                            humantime::format_duration(lease)
                        ),
                        hint: "a healthy node must feed it well within its lease: shorten it or lengthen the lease".into(),
                    });
                }
                Some(SelfFence::Device {
                    path: PathBuf::from(device.get_ref()),
                    timeout,
                })
            }
            None => self.dongle_self_fence(raw_peers, peers, lease)?,
        };
        // The fast lease: noticing (the slowest path's interval × misses),
        // two heartbeats and an echo step for the last echo to come back,
        // and the fast stop bound; never shorter than the self-fence needs.
        let fast_stop_bound = match &q.fast_stop_bound {
            Some(b) => self.duration(b, "quorum.fast_stop_bound")?,
            None => DEFAULT_FAST_STOP_BOUND,
        };
        let slowest = peers
            .iter()
            .filter(|p| p.is_host())
            .flat_map(|p| p.paths.iter())
            .map(|p| StdDuration::from(p.timing.interval))
            .max()
            .unwrap_or_default();
        let mut fast_lease =
            detect_max + slowest * 2 + StdDuration::from_millis(ECHO_STEP_MS) + fast_stop_bound;
        match &watchdog {
            Some(SelfFence::Device { timeout, .. }) => fast_lease = fast_lease.max(*timeout * 3),
            Some(SelfFence::Dongle { within, .. }) => {
                fast_lease = fast_lease.max((*within + DONGLE_SLACK) * 4 / 3);
            }
            None => {}
        }
        let fast = (fast_lease < lease).then_some((fast_lease, fast_stop_bound));
        Ok(Some(QuorumSpec {
            self_fence: watchdog,
            fast,
            witness,
            votes,
            expected,
            wait_for_all: q.wait_for_all.as_ref().is_none_or(|w| *w.get_ref()),
            no_quorum,
            lease,
            stop_bound,
            detect_floor,
        }))
    }

    /// A duration, or where and why it is not one.
    /// The `[control]` section.
    fn control(&self, raw: &RawControl) -> Result<ControlSpec, ConfigError> {
        let mut spec = ControlSpec::default();
        let group = |value: &Spanned<String>, field: &str| -> Result<String, ConfigError> {
            let name = value.get_ref();
            let valid = !name.is_empty()
                && name.len() <= 32
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid {
                return Err(self.error(
                    value,
                    field,
                    format!("`{name}` is not a group name"),
                    "use a group of /etc/group, like \"heartline\"",
                ));
            }
            // A group named here must exist (the defaults may not: then
            // only root uses the socket).
            #[cfg(target_os = "linux")]
            if crate::sys::perms::group(name).is_none() {
                return Err(self.error(
                    value,
                    field,
                    format!("there is no group `{name}` on this system"),
                    format!("create it (`groupadd --system {name}`) or remove the line"),
                ));
            }
            Ok(name.clone())
        };
        if let Some(g) = &raw.group {
            spec.group = group(g, "control.group")?;
            spec.admin_group = spec.group.clone();
        }
        if let Some(g) = &raw.admin_group {
            spec.admin_group = group(g, "control.admin_group")?;
        }
        if let Some(max) = &raw.max_connections {
            let n = *max.get_ref();
            if !(8..=65_536).contains(&n) {
                return Err(self.error(
                    max,
                    "control.max_connections",
                    format!("{n} is out of range"),
                    "give 8 to 65536 (default 256)",
                ));
            }
            spec.max_connections = n as usize;
        }
        if let Some(idle) = &raw.idle_timeout {
            let d = self.duration(idle, "control.idle_timeout")?;
            if d < StdDuration::from_millis(100) || d > StdDuration::from_secs(3600) {
                return Err(self.error(
                    idle,
                    "control.idle_timeout",
                    format!("{} is out of range", humantime::format_duration(d)),
                    "give 100ms to 1h (default 10s)",
                ));
            }
            spec.idle_timeout = d;
        }
        Ok(spec)
    }

    pub(crate) fn duration(
        &self,
        raw: &Spanned<String>,
        field: &str,
    ) -> Result<StdDuration, ConfigError> {
        humantime::parse_duration(raw.get_ref()).map_err(|e| {
            self.error(
                raw,
                field,
                format!("`{}` is not a duration: {e}", raw.get_ref()),
                "write it like \"100ms\" or \"1s\"",
            )
        })
    }

    /// The dongle settings of `peer`, or an error if it has dongle settings
    /// without being a dongle, or a dongle's paths are not one serial path.
    fn dongle(
        &self,
        peer: &RawPeer,
        paths: &[PathSpec],
        field: &str,
    ) -> Result<Option<DongleSpec>, ConfigError> {
        let kind = peer.kind.as_ref().map_or("host", |k| k.get_ref().as_str());
        match kind {
            "host" => {
                for (name, value) in [
                    ("watchdog", &peer.watchdog),
                    ("reset_pulse", &peer.reset_pulse),
                ] {
                    if let Some(value) = value {
                        return Err(self.error(
                            value,
                            &format!("{field}.{name}"),
                            "only a dongle has this setting",
                            "add kind = \"dongle\" to the peer, or remove the setting",
                        ));
                    }
                }
                return Ok(None);
            }
            "dongle" => {}
            "witness" => return Ok(None),
            other => {
                let Some(at) = &peer.kind else {
                    return Ok(None);
                };
                return Err(self.error(
                    at,
                    &format!("{field}.kind"),
                    format!("unknown peer kind `{other}`"),
                    "use kind = \"host\" (the default), \"dongle\" or \"witness\"",
                ));
            }
        }
        if paths.len() != 1 || !matches!(paths[0].transport, Transport::Serial { .. }) {
            return Err(self.error(
                &peer.paths,
                &format!("{field}.paths"),
                "a dongle is reached over exactly one serial path",
                "give the dongle one path with kind = \"serial\" and the device it is cabled to",
            ));
        }
        let watchdog = match &peer.watchdog {
            Some(raw) => {
                Some(self.duration(raw, &format!("{field}.watchdog"))?).filter(|d| !d.is_zero())
            }
            None => Some(DEFAULT_DONGLE_WATCHDOG),
        };
        let reset_pulse = match &peer.reset_pulse {
            Some(raw) => {
                Some(self.duration(raw, &format!("{field}.reset_pulse"))?).filter(|d| !d.is_zero())
            }
            None => None,
        };
        if let (Some(pulse), None, Some(at)) = (reset_pulse, watchdog, &peer.reset_pulse) {
            return Err(self.error(
                at,
                &format!("{field}.reset_pulse"),
                format!(
                    "a reset pulse of {} without a watchdog",
                    humantime::format_duration(pulse)
                ),
                "a dongle resets a host only when its watchdog trips; set watchdog too",
            ));
        }
        let limit = StdDuration::from_millis(u64::from(u32::MAX));
        for (name, value, raw) in [
            ("watchdog", watchdog, &peer.watchdog),
            ("reset_pulse", reset_pulse, &peer.reset_pulse),
        ] {
            if let (Some(value), Some(raw)) = (value, raw) {
                if value > limit {
                    return Err(self.error(
                        raw,
                        &format!("{field}.{name}"),
                        "too long",
                        "keep it under 49 days",
                    ));
                }
            }
        }
        Ok(Some(DongleSpec {
            other_host: None,
            watchdog,
            reset_pulse,
        }))
    }

    /// Finds, for each dongle, the host on its other port: the one host
    /// peer with a serial path on the dongle's device.
    fn hosts_beyond_dongles(
        &self,
        raw: &[RawPeer],
        peers: &mut [PeerSpec],
    ) -> Result<(), ConfigError> {
        let device_of = |path: &PathSpec| match &path.transport {
            Transport::Serial { device, .. } => Some(device.clone()),
            _ => None,
        };
        for d in 0..peers.len() {
            if peers[d].dongle.is_none() {
                continue;
            }
            let device = peers[d].paths.first().and_then(device_of);
            let beyond: Vec<NodeId> = peers
                .iter()
                .filter(|p| p.dongle.is_none())
                .filter(|p| p.paths.iter().any(|path| device_of(path) == device))
                .map(|p| p.id)
                .collect();
            if beyond.len() > 1 {
                return Err(self.error(
                    &raw[d].paths,
                    &format!("peers[{d}].paths[0].device"),
                    format!(
                        "nodes {} all have serial paths on this dongle's device",
                        beyond
                            .iter()
                            .map(|n| n.0.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    "a dongle has two ports: this node on one, one other host on the other",
                ));
            }
            // A dongle that is the witness sits between the cluster's two
            // hosts: without a relayed path it still names the other one, so
            // both hosts give it the same settings.
            let hosts: Vec<NodeId> = peers.iter().filter(|p| p.is_host()).map(|p| p.id).collect();
            let other = beyond
                .first()
                .copied()
                .or_else(|| (peers[d].witness && hosts.len() == 1).then(|| hosts[0]));
            if let Some(dongle) = &mut peers[d].dongle {
                dongle.other_host = other;
            }
        }
        Ok(())
    }

    fn address(
        &self,
        raw: &Option<Spanned<String>>,
        at: &Spanned<String>,
        field: &str,
    ) -> Result<SocketAddr, ConfigError> {
        let Some(value) = raw else {
            return Err(self.error(
                at,
                field,
                "missing",
                "a tcp path needs both `local` and `remote` as \"IP:port\"",
            ));
        };
        value.get_ref().parse().map_err(|_| {
            self.error(
                value,
                field,
                format!("`{}` is not an IP:port address", value.get_ref()),
                "write it like \"10.0.0.1:7400\" or \"[fe80::1]:7400\"",
            )
        })
    }
}

impl Config {
    /// The hosts' names by id, this node's included (a peer configured
    /// without a name is left out): what messages name nodes by.
    #[must_use]
    pub fn host_names(&self) -> std::collections::BTreeMap<u16, String> {
        let mut names = std::collections::BTreeMap::from([(self.node.0, self.name.clone())]);
        for peer in self.peers.iter().filter(|p| p.is_host()) {
            if let Some(name) = &peer.name {
                names.insert(peer.id.0, name.clone());
            }
        }
        names
    }

    /// Reads and checks the file at `file`.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            line: None,
            field: String::new(),
            problem: format!("cannot read: {e}"),
            hint: "check the path and its permissions".into(),
        })?;
        Config::parse(file, &text)
    }

    /// Checks `text` as if read from `file` (relative paths in it are
    /// relative to the file's directory).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let checker = Checker { file, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let located = locate::toml_error(text, &e);
            // Without a field name from the parser, quote the offending line.
            let field = located.source.map(|l| format!("`{l}`")).unwrap_or_default();
            ConfigError {
                file: file.to_path_buf(),
                line: located.line,
                field,
                problem: located.message,
                hint: "see the configuration section of docs/admin.md (installed: /usr/share/doc/heartline/admin.md)".into(),
            }
        })?;
        let dir = file.parent().unwrap_or(Path::new("."));
        let relative = |p: &str| {
            if Path::new(p).is_absolute() {
                PathBuf::from(p)
            } else {
                dir.join(p)
            }
        };

        let cluster = &raw.cluster;
        if *cluster.id.get_ref() == 0 {
            return Err(checker.error(
                &cluster.id,
                "cluster.id",
                "0 is reserved",
                "pick any other number, the same on every node",
            ));
        }
        let node = NodeId(*raw.node.id.get_ref());
        if !node.is_valid() {
            return Err(checker.error(
                &raw.node.id,
                "node.id",
                "0 is reserved",
                "number the nodes from 1",
            ));
        }
        let name = raw.node.name.get_ref().clone();
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(checker.error(
                &raw.node.name,
                "node.name",
                format!("must be 1 to {MAX_NAME_LEN} bytes"),
                "use the host name",
            ));
        }
        let key_path = relative(cluster.key_file.get_ref());
        let key = load_key(&key_path).map_err(|problem| {
            checker.error(
                &cluster.key_file,
                "cluster.key_file",
                problem,
                format!("create one with `heartline keygen {}`", key_path.display()),
            )
        })?;

        let defaults = checker.timing(&PathConfig::default(), &raw.timing, "timing")?;
        if raw.peers.len() > MAX_PEERS {
            return Err(checker.error(
                &raw.peers[MAX_PEERS].id,
                "peers",
                format!("more than {MAX_PEERS} peers"),
                "a cluster has at most 32 nodes",
            ));
        }
        let mut peers: Vec<PeerSpec> = Vec::new();
        for (p, peer) in raw.peers.iter().enumerate() {
            let field = format!("peers[{p}]");
            let id = NodeId(*peer.id.get_ref());
            if !id.is_valid() || id == node {
                return Err(checker.error(
                    &peer.id,
                    &format!("{field}.id"),
                    format!("{} cannot be a peer", id.0),
                    "a peer's id is not 0 and not this node's own id",
                ));
            }
            if peers.iter().any(|q| q.id == id) {
                return Err(checker.error(
                    &peer.id,
                    &format!("{field}.id"),
                    format!("peer {} is listed twice", id.0),
                    "list each peer once, with all its paths",
                ));
            }
            let paths = peer.paths.get_ref();
            if paths.is_empty() || paths.len() > MAX_PATHS {
                return Err(checker.error(
                    &peer.paths,
                    &format!("{field}.paths"),
                    format!("{} paths given", paths.len()),
                    format!("give 1 to {MAX_PATHS} paths per peer"),
                ));
            }
            let mut specs = Vec::new();
            for (i, path) in paths.iter().enumerate() {
                let field = format!("{field}.paths[{i}]");
                let transport = match path.kind.get_ref().as_str() {
                    "tcp" => Transport::Tcp {
                        local: checker.address(
                            &path.local,
                            &path.kind,
                            &format!("{field}.local"),
                        )?,
                        remote: checker.address(
                            &path.remote,
                            &path.kind,
                            &format!("{field}.remote"),
                        )?,
                    },
                    "serial" => {
                        let Some(device) = &path.device else {
                            return Err(checker.error(
                                &path.kind,
                                &format!("{field}.device"),
                                "missing",
                                "a serial path needs device = \"/dev/ttyS0\" (or COM1 on Windows)",
                            ));
                        };
                        let baud = path.baud.as_ref().map_or(DEFAULT_BAUD, |b| *b.get_ref());
                        if baud == 0 {
                            let at = path.baud.as_ref().map_or(path.kind.span(), |b| b.span());
                            return Err(ConfigError {
                                file: file.to_path_buf(),
                                line: Some(checker.line_of(at.start)),
                                field: format!("{field}.baud"),
                                problem: "0 is not a line speed".into(),
                                hint: "use 115200 unless the line needs less".into(),
                            });
                        }
                        Transport::Serial {
                            device: device.get_ref().clone(),
                            baud,
                        }
                    }
                    "udp" => Transport::Udp {
                        local: checker.address(
                            &path.local,
                            &path.kind,
                            &format!("{field}.local"),
                        )?,
                        remote: checker.address(
                            &path.remote,
                            &path.kind,
                            &format!("{field}.remote"),
                        )?,
                    },
                    other => {
                        return Err(checker.error(
                            &path.kind,
                            &format!("{field}.kind"),
                            format!("unknown path kind `{other}`"),
                            "use kind = \"tcp\", \"udp\" or \"serial\"",
                        ));
                    }
                };
                let mut timing = checker.timing(&defaults, &path.timing(), &field)?;
                if let Some(priority) = &path.priority {
                    timing.priority = *priority.get_ref();
                }
                specs.push(PathSpec { transport, timing });
            }
            let dongle = checker.dongle(peer, &specs, &field)?;
            let mut witness = peer.kind.as_ref().is_some_and(|k| k.get_ref() == "witness");
            if witness {
                checker.witness_peer(peer, &specs, &field, peers.iter().any(|p| p.witness))?;
            }
            if let Some(w) = &peer.witness {
                if dongle.is_none() {
                    return Err(checker.error(
                        w,
                        &format!("{field}.witness"),
                        "only a dongle is made the witness this way",
                        "for heartline witness, give the peer kind = \"witness\"",
                    ));
                }
                if *w.get_ref() && peers.iter().any(|p| p.witness) {
                    return Err(checker.error(
                        w,
                        &format!("{field}.witness"),
                        "a second witness",
                        "a cluster has one witness",
                    ));
                }
                witness = *w.get_ref();
            }
            peers.push(PeerSpec {
                id,
                name: peer.name.as_ref().map(|n| n.get_ref().clone()),
                paths: specs,
                dongle,
                witness,
            });
        }
        checker.hosts_beyond_dongles(&raw.peers, &mut peers)?;
        let state_dir = raw.node.state_dir.as_ref().map_or_else(
            || PathBuf::from(DEFAULT_STATE_DIR),
            |s| relative(s.get_ref()),
        );
        let database = raw.resources.database.as_ref().map_or_else(
            || state_dir.join(DEFAULT_DATABASE),
            |s| relative(s.get_ref()),
        );
        let kits = raw
            .resources
            .kits
            .as_ref()
            .map_or_else(default_kit_dirs, |dirs| {
                dirs.iter().map(|d| relative(d.get_ref())).collect()
            });
        let mut policy = Policy::default();
        if let Some(on_stop) = &raw.resources.on_stop {
            policy.on_stop = match on_stop.get_ref().as_str() {
                "switchover" => OnStop::Switchover,
                "stop" => OnStop::Stop,
                other => {
                    return Err(checker.error(
                        on_stop,
                        "resources.on_stop",
                        format!("`{other}` is not a way to stop"),
                        "use \"switchover\" (the next node takes each hierarchy) or \"stop\" (they stay out of service)",
                    ));
                }
            };
        }
        if let Some(window) = &raw.resources.failure_window {
            policy.failure_window = checker.duration(window, "resources.failure_window")?;
        }
        if let Some(max) = &raw.resources.max_failures {
            policy.max_failures = *max.get_ref();
        }
        let quorum = checker.quorum(
            raw.quorum.as_ref(),
            *raw.node.id.get_ref(),
            &raw.peers,
            &peers,
        )?;
        if quorum.is_none() {
            if let Some(w) = peers.iter().position(|p| p.witness) {
                return Err(checker.error(
                    &raw.peers[w].id,
                    &format!("peers[{w}].kind"),
                    "a witness without quorum",
                    "a witness only votes with quorum on: remove [quorum] enabled = false",
                ));
            }
        }
        let control = checker.control(&raw.control)?;
        let hosts: Vec<u16> = std::iter::once(node.0)
            .chain(peers.iter().filter(|p| p.is_host()).map(|p| p.id.0))
            .collect();
        // A dongle that is the witness sits between the cluster's two
        // hosts (checked with [quorum]): it can reset either.
        let resetting_dongle = peers
            .iter()
            .any(|p| p.witness && p.dongle.as_ref().is_some_and(|d| d.reset_pulse.is_some()));
        let dongle_hosts: Vec<u16> = if resetting_dongle {
            hosts.clone()
        } else {
            Vec::new()
        };
        let fencing = checker.fencing(
            raw.fencing.as_ref(),
            &raw.fence,
            &hosts,
            quorum.is_some(),
            &dongle_hosts,
        )?;
        Ok(Config {
            cluster_name: cluster.name.get_ref().clone(),
            cluster: ClusterId(*cluster.id.get_ref()),
            key,
            node,
            name,
            control_socket: raw.node.control_socket.as_ref().map_or_else(
                || PathBuf::from(DEFAULT_CONTROL_SOCKET),
                |s| relative(s.get_ref()),
            ),
            control,
            state_dir,
            database,
            kits,
            policy,
            quorum,
            fencing,
            peers,
        })
    }
}

/// Reads the cluster secret, refusing a file others can read.
pub fn load_key(path: &Path) -> Result<Key, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} is readable by others (mode {mode:03o}); run `chmod 600 {}`",
                path.display(),
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = bytes.trim_ascii();
    if secret.len() < MIN_KEY_LEN {
        return Err(format!(
            "{} holds {} bytes; at least {MIN_KEY_LEN} are required",
            path.display(),
            secret.len()
        ));
    }
    Key::new(secret).map_err(|e| e.to_string())
}

/// Writes a new random secret to `path`, readable by its owner only.
pub fn write_new_key(path: &Path) -> Result<(), String> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| format!("no randomness available: {e}"))?;
    let text = format!("{}\n", hex::encode(secret));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            write_new_key(&dir.path().join("cluster.key")).unwrap();
            Fixture { dir }
        }

        fn parse(&self, text: &str) -> Result<Config, ConfigError> {
            Config::parse(&self.dir.path().join("node.toml"), text)
        }
    }

    const GOOD: &str = r#"
[cluster]
name = "prod"
id = 7
key_file = "cluster.key"

[node]
id = 1
name = "alpha"

[timing]
interval = "200ms"

[[peers]]
id = 2
name = "bravo"
  [[peers.paths]]
  kind = "tcp"
  local = "10.0.0.1:7400"
  remote = "10.0.0.2:7400"
  [[peers.paths]]
  kind = "tcp"
  local = "10.0.1.1:7400"
  remote = "10.0.1.2:7400"
  priority = 2
  misses = 8
"#;

    fn error(text: &str) -> ConfigError {
        Fixture::new().parse(text).unwrap_err()
    }

    #[test]
    fn a_good_file_parses_with_defaults_and_overrides() {
        let config = Fixture::new().parse(GOOD).unwrap();
        assert_eq!(
            (config.cluster.0, config.node.0, config.name.as_str()),
            (7, 1, "alpha")
        );
        assert_eq!(config.control_socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
        let paths = &config.peers[0].paths;
        assert_eq!(paths.len(), 2);
        assert_eq!(
            paths[0].timing.interval,
            heartline_core::Duration::from_millis(200)
        );
        assert_eq!(
            (
                paths[0].timing.misses,
                paths[0].timing.rise,
                paths[0].timing.priority
            ),
            (5, 2, 1)
        );
        assert_eq!((paths[1].timing.misses, paths[1].timing.priority), (8, 2));
    }

    /// GOOD plus a dongle on /dev/ttyS0, with bravo's second path through it.
    fn with_dongle(dongle_extra: &str) -> String {
        let through = GOOD.replace(
            "kind = \"tcp\"\n  local = \"10.0.1.1:7400\"\n  remote = \"10.0.1.2:7400\"",
            "kind = \"serial\"\n  device = \"/dev/ttyS0\"",
        );
        format!(
            "{through}\n[[peers]]\nid = 100\nkind = \"dongle\"\n{dongle_extra}  [[peers.paths]]\n  kind = \"serial\"\n  device = \"/dev/ttyS0\"\n"
        )
    }

    #[test]
    fn a_dongle_gets_its_defaults_and_the_host_beyond_it() {
        let config = Fixture::new().parse(&with_dongle("")).unwrap();
        let dongle = config.peers[1].dongle.unwrap();
        assert_eq!(dongle.other_host, Some(NodeId(2)));
        assert_eq!(dongle.watchdog, Some(DEFAULT_DONGLE_WATCHDOG));
        assert_eq!(dongle.reset_pulse, None, "no reset unless asked for");
        assert_eq!(config.peers[0].dongle, None);

        let config = Fixture::new()
            .parse(&with_dongle("watchdog = \"3s\"\nreset_pulse = \"250ms\"\n"))
            .unwrap();
        let dongle = config.peers[1].dongle.unwrap();
        assert_eq!(dongle.watchdog, Some(StdDuration::from_secs(3)));
        assert_eq!(dongle.reset_pulse, Some(StdDuration::from_millis(250)));
    }

    #[test]
    fn dongle_mistakes_are_located() {
        let e = error(&GOOD.replace(
            "name = \"bravo\"\n",
            "name = \"bravo\"\nwatchdog = \"2s\"\n",
        ));
        assert_eq!((e.field.as_str(), e.line), ("peers[0].watchdog", Some(17)));
        assert!(e.hint.contains("kind = \"dongle\""), "{e}");

        let e = error(&with_dongle("watchdog = \"0s\"\nreset_pulse = \"200ms\"\n"));
        assert_eq!(e.field, "peers[1].reset_pulse");
        assert!(e.problem.contains("without a watchdog"), "{e}");

        let e = error(&with_dongle("watchdog = \"a while\"\n"));
        assert_eq!(e.field, "peers[1].watchdog");

        let e = error(&GOOD.replace(
            "name = \"bravo\"\n",
            "name = \"bravo\"\nkind = \"router\"\n",
        ));
        assert!(e.problem.contains("unknown peer kind `router`"), "{e}");

        // A dongle is one serial path.
        let e = error(&GOOD.replace(
            "name = \"bravo\"\n",
            "name = \"bravo\"\nkind = \"dongle\"\n",
        ));
        assert_eq!(e.field, "peers[0].paths");
        assert!(e.problem.contains("exactly one serial path"), "{e}");

        // Two hosts on one dongle's line.
        let two = with_dongle("").replace(
            "[[peers]]\nid = 100",
            "[[peers]]\nid = 3\n  [[peers.paths]]\n  kind = \"serial\"\n  device = \"/dev/ttyS0\"\n[[peers]]\nid = 100",
        );
        let e = error(&two);
        assert_eq!(e.field, "peers[2].paths[0].device");
        assert!(e.problem.contains("nodes 2, 3"), "{e}");
    }

    #[test]
    fn mistakes_name_the_line_the_field_and_the_fix() {
        let e = error(&GOOD.replace("remote = \"10.0.1.2:7400\"", "remote = \"10.0.1.2\""));
        assert_eq!(e.line, Some(24));
        assert_eq!(e.field, "peers[0].paths[1].remote");
        assert!(
            e.to_string().contains(
                "node.toml:24: peers[0].paths[1].remote: `10.0.1.2` is not an IP:port address"
            ),
            "{e}"
        );

        let e = error(&GOOD.replace("id = 2\n", "id = 1\n"));
        assert_eq!((e.field.as_str(), e.line), ("peers[0].id", Some(15)));

        let e = error(&GOOD.replace("interval = \"200ms\"", "interval = \"soon\""));
        assert_eq!((e.field.as_str(), e.line), ("timing.interval", Some(12)));
        assert!(e.hint.contains("100ms"));

        let e = error(&GOOD.replace("misses = 8", "misses = 0"));
        assert_eq!(e.field, "peers[0].paths[1]");
        assert!(e.problem.contains("misses"));

        let second_path = "kind = \"tcp\"\n  local = \"10.0.1.1";
        let udp = GOOD.replace(second_path, "kind = \"udp\"\n  local = \"10.0.1.1");
        let config = Fixture::new().parse(&udp).unwrap();
        assert!(matches!(
            config.peers[0].paths[1].transport,
            Transport::Udp { .. }
        ));

        let e = error(&GOOD.replace(
            second_path,
            "kind = \"carrier-pigeon\"\n  local = \"10.0.1.1",
        ));
        assert!(
            e.problem.contains("unknown path kind `carrier-pigeon`"),
            "{e}"
        );

        let e = error(&GOOD.replace(second_path, "kind = \"serial\"\n  local = \"10.0.1.1"));
        assert_eq!(
            (e.field.as_str(), e.line),
            ("peers[0].paths[1].device", Some(22))
        );

        let serial = GOOD.replace(
            second_path,
            "kind = \"serial\"\n  device = \"/dev/ttyS1\"\n  local = \"10.0.1.1",
        );
        let config = Fixture::new().parse(&serial).unwrap();
        let expected = Transport::Serial {
            device: "/dev/ttyS1".into(),
            baud: DEFAULT_BAUD,
        };
        assert_eq!(config.peers[0].paths[1].transport, expected);

        let e = error(&GOOD.replace("[node]\n", "[node]\ncolour = \"blue\"\n"));
        assert_eq!(e.line, Some(8));
        assert!(e.problem.contains("colour"), "{e}");

        let e = error(&GOOD.replace("[[peers]]\nid = 2", "[[peers]]\nid = 2\n  [[peers.paths]]\n  kind = \"tcp\"\n  local = \"1.1.1.1:1\"\n  remote = \"1.1.1.1:1\"\n[[peers]]\nid = 2"));
        assert!(e.problem.contains("listed twice"), "{e}");

        let e = error(&GOOD.replace("id = 1\nname = \"alpha\"", "id = 0\nname = \"alpha\""));
        assert_eq!(e.field, "node.id");
    }

    #[test]
    fn the_key_file_must_exist_be_private_and_long_enough() {
        let fixture = Fixture::new();
        let key = fixture.dir.path().join("cluster.key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = fixture.parse(GOOD).unwrap_err();
            assert_eq!(e.field, "cluster.key_file");
            assert!(
                e.problem.contains("readable by others") && e.problem.contains("chmod 600"),
                "{e}"
            );
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(&key, "short\n").unwrap();
        assert!(
            fixture
                .parse(GOOD)
                .unwrap_err()
                .problem
                .contains("at least 16")
        );
        std::fs::remove_file(&key).unwrap();
        let e = fixture.parse(GOOD).unwrap_err();
        assert!(
            e.problem.contains("cannot read") && e.hint.contains("heartline keygen"),
            "{e}"
        );
    }

    #[test]
    fn quorum_is_on_by_default_wherever_it_can_work() {
        const CHARLIE: &str = "\n[[peers]]\nid = 3\nname = \"charlie\"\n  [[peers.paths]]\n  kind = \"tcp\"\n  local = \"10.0.0.1:7401\"\n  remote = \"10.0.0.3:7400\"\n";
        const WITNESS: &str = "\n[[peers]]\nid = 100\nkind = \"witness\"\n  [[peers.paths]]\n  kind = \"tcp\"\n  local = \"10.0.0.1:7402\"\n  remote = \"10.0.0.9:7400\"\n";
        let parse = |text: &str| Fixture::new().parse(text).unwrap().quorum;
        // Two nodes: one of two is no majority, so quorum would never let
        // the survivor take over; off (and said at start and in status).
        assert_eq!(parse(GOOD), None);
        // Three nodes, or two and a witness: on, with its defaults.
        let three = parse(&format!("{GOOD}{CHARLIE}")).expect("on with three nodes");
        assert_eq!(three.expected, 3);
        assert!(three.wait_for_all);
        assert_eq!(three.no_quorum, heartline_brain::NoQuorum::Stop);
        let witnessed = parse(&format!("{GOOD}{WITNESS}")).expect("on with a witness");
        assert_eq!((witnessed.expected, witnessed.witness), (3, Some(100)));
        // Two nodes with three votes between them: on.
        let weighted = GOOD.replace("name = \"bravo\"", "name = \"bravo\"\nvotes = 2");
        assert_eq!(parse(&weighted).map(|q| q.expected), Some(3));
        // Said off, off; a witness then has no vote to give.
        let off =
            |text: &str| text.replacen("[[peers]]", "[quorum]\nenabled = false\n\n[[peers]]", 1);
        assert_eq!(parse(&off(&format!("{GOOD}{CHARLIE}"))), None);
        let e = error(&off(&format!("{GOOD}{WITNESS}")));
        assert_eq!(e.field, "peers[1].kind");
        assert!(e.hint.contains("enabled = false"), "{e}");
        // Other quorum settings without `enabled` follow the same rule.
        let lease =
            |text: &str| text.replacen("[[peers]]", "[quorum]\nlease = \"9s\"\n\n[[peers]]", 1);
        assert_eq!(parse(&lease(GOOD)), None);
        assert_eq!(
            parse(&lease(&format!("{GOOD}{CHARLIE}"))).map(|q| q.lease),
            Some(StdDuration::from_secs(9))
        );
    }

    #[test]
    fn enabled_quorum_takes_its_defaults_from_the_paths() {
        assert_eq!(Fixture::new().parse(GOOD).unwrap().quorum, None);
        let text = GOOD.replace(
            "[[peers]]",
            "[quorum]\nenabled = true\n\n[[peers]]\nvotes = 2",
        );
        let q = Fixture::new().parse(&text).unwrap().quorum.unwrap();
        assert_eq!(q.votes.into_iter().collect::<Vec<_>>(), [(1, 1), (2, 2)]);
        assert_eq!(q.expected, 3);
        assert!(q.wait_for_all);
        assert_eq!(q.no_quorum, heartline_brain::NoQuorum::Stop);
        // Paths: 200 ms × 5 and 200 ms × 8: noticed after 1 s at best,
        // 1.6 s at worst; the lease covers the worst, the stop bound and
        // a second.
        assert_eq!(q.detect_floor, StdDuration::from_secs(1));
        assert_eq!(q.stop_bound, DEFAULT_STOP_BOUND);
        assert_eq!(q.lease, StdDuration::from_millis(1_600 + 3_000 + 1_000));
        // The fast lease: the worst noticing, two of the slowest
        // heartbeats, an echo step and the fast stop bound.
        assert_eq!(
            q.fast,
            Some((
                StdDuration::from_millis(1_600 + 400 + 50 + 200),
                DEFAULT_FAST_STOP_BOUND
            ))
        );
        // A watchdog's timeout sets a floor (three of them), as it does
        // for the lease; a stop bound as long as the lease's leaves none.
        let with = |extra: &str| {
            let text = text.replace("[quorum]\n", &format!("[quorum]\n{extra}\n"));
            Fixture::new().parse(&text).unwrap().quorum.unwrap()
        };
        let q = with("watchdog = \"/dev/watchdog\"\nwatchdog_timeout = \"1s\"");
        assert_eq!(q.fast.map(|f| f.0), Some(StdDuration::from_secs(3)));
        assert_eq!(with("fast_stop_bound = \"5s\"").fast, None);
        let e = Fixture::new()
            .parse(&text.replace("[quorum]\n", "[quorum]\nfast_stop_bound = \"quick\"\n"))
            .unwrap_err();
        assert_eq!(e.field, "quorum.fast_stop_bound");
    }

    #[test]
    fn control_settings_have_defaults_and_located_mistakes() {
        let config = Fixture::new().parse(GOOD).unwrap();
        assert_eq!(config.control, ControlSpec::default());
        assert_eq!(config.control.group, "heartline");
        assert_eq!(config.control.admin_group, "heartline");
        assert_eq!(config.control.max_connections, 256);
        let with =
            |section: &str| GOOD.replace("[[peers]]", &format!("[control]\n{section}\n[[peers]]"));
        // `root` is a group on every Linux system; a group alone makes the
        // admin group the same.
        let config = Fixture::new()
            .parse(&with(
                "group = \"root\"\nmax_connections = 64\nidle_timeout = \"2s\"",
            ))
            .unwrap();
        assert_eq!(config.control.group, "root");
        assert_eq!(config.control.admin_group, "root");
        assert_eq!(config.control.max_connections, 64);
        assert_eq!(config.control.idle_timeout, StdDuration::from_secs(2));
        let e = error(&with("group = \"bad name\""));
        assert_eq!((e.field.as_str(), e.line), ("control.group", Some(15)));
        assert!(e.problem.contains("not a group name"), "{e}");
        #[cfg(target_os = "linux")]
        {
            let e = error(&with("admin_group = \"no-such-group-hl\""));
            assert_eq!(e.field, "control.admin_group");
            assert!(
                e.problem.contains("no group `no-such-group-hl`")
                    && e.hint.contains("groupadd --system no-such-group-hl"),
                "{e}"
            );
        }
        let e = error(&with("max_connections = 2"));
        assert_eq!(e.field, "control.max_connections");
        let e = error(&with("idle_timeout = \"0s\""));
        assert_eq!(e.field, "control.idle_timeout");
        let e = error(&with("groups = \"x\""));
        assert!(e.to_string().contains("groups"), "{e}");
    }

    #[test]
    fn quorum_mistakes_are_located() {
        let with = |section: &str| {
            GOOD.replace(
                "[[peers]]",
                &format!("[quorum]\nenabled = true\n{section}\n[[peers]]"),
            )
        };
        let e = error(&with("expected_votes = 1"));
        assert_eq!(
            (e.field.as_str(), e.line),
            ("quorum.expected_votes", Some(16))
        );
        assert!(e.problem.contains("less than the votes"), "{e}");
        let e = error(&with("no_quorum = \"ignore\""));
        assert_eq!(e.field, "quorum.no_quorum");
        assert!(e.hint.contains("freeze"), "{e}");
        let e = error(&with("lease = \"2s\""));
        assert_eq!(e.field, "quorum.lease");
        assert!(
            e.problem.contains("too short") && e.hint.contains("4s 600ms"),
            "{e}"
        );
        let e = error(&with(
            "watchdog = \"/dev/watchdog\"\nwatchdog_timeout = \"3s\"",
        ));
        assert_eq!(e.field, "quorum.watchdog_timeout");
        assert!(e.problem.contains("more than a third of the lease"), "{e}");
        // A third: 2 s of a 5.6 s lease is too long, 1.8 s is not.
        let e = error(&with(
            "watchdog = \"/dev/watchdog\"\nwatchdog_timeout = \"2s\"",
        ));
        assert_eq!(e.field, "quorum.watchdog_timeout");
        let fine = Fixture::new().parse(&with(
            "watchdog = \"/dev/watchdog\"\nwatchdog_timeout = \"1800ms\"",
        ));
        assert!(fine.is_ok());
        let e = error(&with("stop_bound = \"soon\""));
        assert_eq!(e.field, "quorum.stop_bound");
        let e = error(&with("votes = 0").replace("[[peers]]", "[[peers]]\nvotes = 0"));
        assert!(e.problem.contains("no node has a vote"), "{e}");
    }

    #[test]
    fn a_dongle_that_resets_is_the_self_fence_without_a_watchdog_device() {
        let quorate =
            |text: String| text.replacen("[[peers]]", "[quorum]\nenabled = true\n\n[[peers]]", 1);
        let config = Fixture::new()
            .parse(&quorate(with_dongle("reset_pulse = \"200ms\"\n")))
            .unwrap();
        assert_eq!(
            config.quorum.unwrap().self_fence,
            Some(SelfFence::Dongle {
                node: NodeId(100),
                within: StdDuration::from_millis(2_400)
            })
        );
        let config = Fixture::new().parse(&quorate(with_dongle(""))).unwrap();
        assert_eq!(
            config.quorum.unwrap().self_fence,
            None,
            "a dongle without a reset pulse resets nobody"
        );
        let device = with_dongle("reset_pulse = \"200ms\"\n").replacen(
            "[[peers]]",
            "[quorum]\nenabled = true\nwatchdog = \"/dev/watchdog\"\n\n[[peers]]",
            1,
        );
        assert!(matches!(
            Fixture::new()
                .parse(&device)
                .unwrap()
                .quorum
                .unwrap()
                .self_fence,
            Some(SelfFence::Device { .. })
        ));
        let e = Fixture::new()
            .parse(&quorate(with_dongle(
                "watchdog = \"4s\"\nreset_pulse = \"200ms\"\n",
            )))
            .unwrap_err();
        assert_eq!(e.field, "peers[1].watchdog");
        assert!(e.line.is_some(), "{e}");
        assert!(
            e.problem.contains("self-fence") && e.problem.contains("more than three quarters"),
            "{e}"
        );
    }

    const FENCE: &str = r#"
[[fence]]
name = "bmc-bravo"
node = 2
agent = "fence_ipmilan"
timeout = "20s"
  [fence.params]
  ip = "10.0.9.2"
  ipport = 623
  lanplus = true
  username = "admin"

[[fence]]
name = "pdu-bravo"
node = 2
level = 2
agent = "/opt/fence/fence_pdu"
"#;

    #[test]
    fn fence_devices_become_levels_per_node() {
        let text = GOOD.replace("[[peers]]", "[quorum]\nenabled = true\n\n[[peers]]") + FENCE;
        let f = Fixture::new().parse(&text).unwrap().fencing.unwrap();
        assert_eq!(f.action, heartline_brain::FenceAction::Reboot);
        assert_eq!((f.attempts, f.retry_delay), (2, StdDuration::from_secs(1)));
        let bmc = f.device("bmc-bravo").unwrap();
        assert_eq!(bmc.timeout, StdDuration::from_secs(20));
        assert_eq!(
            bmc.params,
            [
                ("ip".to_string(), "10.0.9.2".to_string()),
                ("ipport".into(), "623".into()),
                ("lanplus".into(), "1".into()),
                ("username".into(), "admin".into())
            ]
        );
        let brain = f.brain_config();
        assert_eq!(
            brain.levels[&2],
            [vec!["bmc-bravo".to_string()], vec!["pdu-bravo".to_string()]]
        );
        assert_eq!(
            f.device("pdu-bravo").unwrap().program(),
            Some(PathBuf::from("/opt/fence/fence_pdu"))
        );
    }

    #[test]
    fn fencing_mistakes_are_located() {
        let quorate = GOOD.replace("[[peers]]", "[quorum]\nenabled = true\n\n[[peers]]");
        let e = error(&(GOOD.to_string() + FENCE));
        assert!(e.hint.contains("[quorum] enabled = true"), "{e}");
        let e = error(&(quorate.clone() + &FENCE.replace("node = 2\nlevel", "node = 5\nlevel")));
        assert_eq!(e.field, "fence[1].node");
        assert!(e.problem.contains("not a host node"), "{e}");
        let e = error(&(quorate.clone() + &FENCE.replace("fence_ipmilan", "ipmitool")));
        assert_eq!(e.field, "fence[0].agent");
        let e = error(&(quorate.clone() + &FENCE.replace("pdu-bravo", "bmc-bravo")));
        assert!(e.problem.contains("listed twice"), "{e}");
        let e = error(&(quorate.clone() + &FENCE.replace("ipport = 623", "action = \"on\"")));
        assert_eq!(e.field, "fence[0].params.action");
        let e = error(&(quorate.clone() + "\n[fencing]\naction = \"cycle\"\n" + FENCE));
        assert_eq!(e.field, "fencing.action");
        assert!(e.line.is_some());
        let e = error(&(quorate + "\n[fencing]\nattempts = 1\n"));
        assert!(e.problem.contains("without any [[fence]]"), "{e}");
    }

    #[test]
    fn keygen_refuses_to_overwrite() {
        let fixture = Fixture::new();
        let e = write_new_key(&fixture.dir.path().join("cluster.key")).unwrap_err();
        assert!(e.contains("cannot create"), "{e}");
    }
}
