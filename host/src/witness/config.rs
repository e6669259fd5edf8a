//! The witness's configuration file: the clusters it serves, each with its
//! key, its quorum lease and where each of its nodes reaches the witness.
//! Mistakes are reported with the file, the line and the field, as for the
//! daemon's configuration.
//!
//! ```toml
//! [witness]
//! id = 65000                 # its node id in every cluster (above the hosts')
//! name = "witness"
//! state_dir = "/var/lib/heartline-witness"
//!
//! [[clusters]]
//! name = "prod"
//! id = 7                     # the cluster's id
//! key_file = "prod.key"      # the cluster's key
//! lease = "4.6s"             # the cluster's [quorum] lease
//!   [[clusters.nodes]]
//!   id = 1
//!   local = "10.0.0.9:7501"  # the witness's end (it listens: its id is higher)
//!   remote = "10.0.0.1:7501" # the node's end
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use heartline_core::wire::Key;
use heartline_core::{ClusterId, NodeId, PathConfig};
use serde::Deserialize;
use toml::Spanned;

use crate::config::{Checker, ConfigError, locate};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    witness: RawWitness,
    clusters: Vec<RawCluster>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWitness {
    id: Spanned<u16>,
    name: Option<Spanned<String>>,
    state_dir: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: Spanned<String>,
    id: Spanned<u32>,
    key_file: Spanned<String>,
    lease: Spanned<String>,
    interval: Option<Spanned<String>>,
    misses: Option<Spanned<u32>>,
    nodes: Vec<RawNode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: Spanned<u16>,
    local: Spanned<String>,
    remote: Spanned<String>,
}

/// The witness's configuration, checked.
#[derive(Debug, Clone)]
pub struct WitnessFile {
    /// Its node id in every cluster.
    pub id: NodeId,
    /// Its name, announced to the nodes.
    pub name: String,
    /// Where it keeps its incarnation.
    pub state_dir: PathBuf,
    /// The clusters it serves.
    pub clusters: Vec<ClusterSpec>,
}

/// One cluster served.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Its name, for logs.
    pub name: String,
    /// Its id on the wire.
    pub id: ClusterId,
    /// Its key.
    pub key: Key,
    /// Its quorum lease.
    pub lease: Duration,
    /// The paths' timing.
    pub timing: PathConfig,
    /// Its nodes: id, the witness's end, the node's end.
    pub nodes: Vec<(NodeId, SocketAddr, SocketAddr)>,
}

impl WitnessFile {
    /// Reads and checks `file`.
    pub fn load(file: &Path) -> Result<WitnessFile, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            line: None,
            field: String::new(),
            problem: format!("cannot read it: {e}"),
            hint: "give the witness's configuration file".into(),
        })?;
        Self::parse(file, &text)
    }

    /// Checks `text` as if read from `file`.
    pub fn parse(file: &Path, text: &str) -> Result<WitnessFile, ConfigError> {
        let checker = Checker { file, text };
        let error =
            |span: Option<std::ops::Range<usize>>, field: &str, problem: String, hint: &str| {
                ConfigError {
                    file: file.to_path_buf(),
                    line: span.map(|s| checker.line_of(s.start)),
                    field: field.to_string(),
                    problem,
                    hint: hint.to_string(),
                }
            };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let located = locate::toml_error(text, &e);
            ConfigError {
                file: file.to_path_buf(),
                line: located.line,
                field: located.source.map(|l| format!("`{l}`")).unwrap_or_default(),
                problem: located.message,
                hint: "see `heartline witness --help` and the witness section of docs/admin.md"
                    .into(),
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
        let id = NodeId(*raw.witness.id.get_ref());
        if !id.is_valid() {
            return Err(error(
                Some(raw.witness.id.span()),
                "witness.id",
                "0 is reserved".into(),
                "use a number above every host's id, e.g. 65000",
            ));
        }
        if raw.clusters.is_empty() {
            return Err(error(
                None,
                "clusters",
                "no cluster to serve".into(),
                "add a [[clusters]] table for each cluster",
            ));
        }
        let mut clusters = Vec::new();
        for (c, cluster) in raw.clusters.iter().enumerate() {
            let field = format!("clusters[{c}]");
            let key_path = relative(cluster.key_file.get_ref());
            let key = crate::config::load_key(&key_path).map_err(|problem| {
                error(
                    Some(cluster.key_file.span()),
                    &format!("{field}.key_file"),
                    problem,
                    "copy the cluster's key file here (mode 600)",
                )
            })?;
            let duration = |raw: &Spanned<String>, name: &str| {
                checker.duration(raw, &format!("{field}.{name}"))
            };
            let lease = duration(&cluster.lease, "lease")?;
            let mut timing = PathConfig::default();
            if let Some(interval) = &cluster.interval {
                timing.interval = duration(interval, "interval")?.into();
            }
            if let Some(misses) = &cluster.misses {
                timing.misses = *misses.get_ref();
            }
            timing
                .validate()
                .map_err(|e| error(None, &field, e.to_string(), "use the cluster's [timing]"))?;
            let mut nodes = Vec::new();
            for (n, node) in cluster.nodes.iter().enumerate() {
                let field = format!("{field}.nodes[{n}]");
                let node_id = *node.id.get_ref();
                if !heartline_core::witness::NodeSet::fits(node_id) || node_id >= id.0 {
                    return Err(error(
                        Some(node.id.span()),
                        &format!("{field}.id"),
                        format!("node {node_id} cannot be served"),
                        "a witness serves hosts numbered 1 to 64, below its own id",
                    ));
                }
                let address = |raw: &Spanned<String>, name: &str| {
                    raw.get_ref().parse::<SocketAddr>().map_err(|_| {
                        error(
                            Some(raw.span()),
                            &format!("{field}.{name}"),
                            format!("`{}` is not an IP:port address", raw.get_ref()),
                            "write it like \"10.0.0.9:7501\"",
                        )
                    })
                };
                nodes.push((
                    NodeId(node_id),
                    address(&node.local, "local")?,
                    address(&node.remote, "remote")?,
                ));
            }
            clusters.push(ClusterSpec {
                name: cluster.name.get_ref().clone(),
                id: ClusterId(*cluster.id.get_ref()),
                key,
                lease,
                timing,
                nodes,
            });
        }
        Ok(WitnessFile {
            id,
            name: raw
                .witness
                .name
                .map_or_else(|| "witness".to_string(), |n| n.get_ref().clone()),
            state_dir: raw.witness.state_dir.as_ref().map_or_else(
                || PathBuf::from("/var/lib/heartline-witness"),
                |s| relative(s.get_ref()),
            ),
            clusters,
        })
    }
}
