//! The witness server: for each cluster served, a protocol endpoint with a
//! TCP path to each node, and the core's vote state machine fed by the
//! requests that arrive on the witness mailbox. It keeps no state across
//! restarts but its incarnation: a restarted witness grants its vote only
//! by the rules, from scratch (a holder that keeps asking gets it back at
//! once; no other partition before the holder's lease has run out).

use std::collections::HashMap;
use std::time::Duration as StdDuration;

use heartline_core::wire::NodeKind;
use heartline_core::witness::{NodeSet, Witness, WitnessConfig};
use heartline_core::{EndpointConfig, Event, Incarnation, Instant, PathId, PathRef, PeerConfig};
use tokio::sync::mpsc;
use tokio::time::Instant as TokioInstant;
use tracing::{info, warn};

use super::config::{ClusterSpec, WitnessFile};
use crate::comm::manager::{HostEndpoint, new_endpoint};
use crate::comm::witness::{VERSION, VoteAnswer, VoteRequest, WITNESS_MAILBOX, decode, encode};
use crate::transport::{self, Inbound, Role, ToPath};

/// Serves every cluster of `file` until the process is stopped.
pub async fn run(file: WitnessFile) -> Result<(), String> {
    let _log = crate::sys::logging::init(
        None,
        #[cfg(unix)]
        None,
    );
    let incarnation = crate::comm::incarnation::next_incarnation(&file.state_dir)?;
    let mut tasks = Vec::new();
    for cluster in file.clusters.clone() {
        let served = Served::start(&file, cluster, incarnation)?;
        tasks.push(tokio::spawn(served.run()));
    }
    info!(
        clusters = file.clusters.len(),
        id = file.id.0,
        "witness started"
    );
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

/// One cluster served.
struct Served {
    name: String,
    /// Where the incarnation is recorded.
    state_dir: std::path::PathBuf,
    endpoint: Box<HostEndpoint>,
    witness: Witness,
    started: TokioInstant,
    paths: HashMap<PathRef, (mpsc::Sender<ToPath>, Option<u64>)>,
    inbound: mpsc::Receiver<Inbound>,
    holder: NodeSet,
}

impl Served {
    fn start(
        file: &WitnessFile,
        cluster: ClusterSpec,
        incarnation: Incarnation,
    ) -> Result<Served, String> {
        let mut endpoint = new_endpoint(EndpointConfig {
            cluster: cluster.id,
            node: file.id,
            incarnation,
            name: &file.name,
            kind: NodeKind::Host,
            capabilities: 0,
            key: cluster.key.clone(),
        })?;
        let (inbound_tx, inbound) = mpsc::channel(1024);
        let mut paths = HashMap::new();
        for (node, local, remote) in &cluster.nodes {
            endpoint
                .add_peer(Instant::ZERO, PeerConfig::new(*node), &[cluster.timing])
                .map_err(|e| format!("cluster {}: node {}: {e}", cluster.name, node.0))?;
            let path = PathRef {
                node: *node,
                path: PathId(0),
            };
            let (tx, rx) = mpsc::channel(64);
            let role = if file.id > *node {
                Role::Listen
            } else {
                Role::Dial
            };
            tokio::spawn(transport::tcp::run_path(
                path,
                role,
                *local,
                *remote,
                rx,
                inbound_tx.clone(),
            ));
            paths.insert(path, (tx, None));
        }
        let lease = heartline_core::Duration::from(cluster.lease);
        Ok(Served {
            name: cluster.name.clone(),
            state_dir: file.state_dir.clone(),
            endpoint,
            witness: Witness::new(WitnessConfig {
                lease,
                margin: heartline_brain::default_margin(lease),
                settle: heartline_core::Duration::from(
                    StdDuration::from(cluster.timing.down_after()) + StdDuration::from_millis(500),
                ),
            }),
            started: TokioInstant::now(),
            paths,
            inbound,
            holder: NodeSet::EMPTY,
        })
    }

    fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    async fn run(mut self) {
        loop {
            let wake = self
                .endpoint
                .poll_timeout()
                .map(|at| self.started + StdDuration::from_micros(at.as_micros()))
                .unwrap_or_else(|| TokioInstant::now() + StdDuration::from_secs(1));
            tokio::select! {
                inbound = self.inbound.recv() => match inbound {
                    Some(inbound) => self.on_inbound(inbound),
                    None => return,
                },
                () = tokio::time::sleep_until(wake) => {
                    let now = self.now();
                    self.endpoint.handle_timeout(now);
                }
            }
            self.drain();
        }
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        let now = self.now();
        match inbound {
            Inbound::Frame {
                path,
                connection,
                mut bytes,
            } => {
                let accepted = self.endpoint.handle_frame(now, path, &mut bytes).is_ok();
                if let Some((frames, confirmed)) = self
                    .paths
                    .get_mut(&path)
                    .filter(|(_, c)| accepted && *c != Some(connection))
                {
                    *confirmed = Some(connection);
                    let _ = frames.try_send(ToPath::Confirmed(connection));
                }
            }
            Inbound::Overflow { path } => self.endpoint.handle_overflow(path),
        }
    }

    fn drain(&mut self) {
        let now = self.now();
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                Event::NodeUp { .. } | Event::NodeDown { .. } | Event::NodeRestarted { .. } => {
                    info!(cluster = %self.name, "{event}");
                }
                Event::PathDown(at) => {
                    // The connection that carried it is dropped and
                    // redialled, rather than left in the kernel's backoff.
                    if let Some((frames, confirmed)) = self.paths.get_mut(&at) {
                        let _ = frames.try_send(ToPath::Down(confirmed.take()));
                    }
                }
                Event::Reincarnated { new, .. } => {
                    warn!(cluster = %self.name, "{event}");
                    if let Err(e) = crate::comm::incarnation::record(&self.state_dir, new) {
                        warn!(cluster = %self.name, "{e}");
                    }
                }
                _ => {}
            }
        }
        while let Some(message) = self.endpoint.poll_message() {
            if message.mailbox != WITNESS_MAILBOX {
                continue;
            }
            let from = message.from;
            let request = match decode::<VoteRequest>(&message.payload) {
                Ok(request) => request,
                Err(e) => {
                    warn!(cluster = %self.name, node = from.0, "request refused: {e}");
                    continue;
                }
            };
            let view = NodeSet::of(request.view.iter().copied());
            let answer = self.witness.request(now, from.0, view);
            if answer.holder != self.holder {
                self.holder = answer.holder;
                let nodes: Vec<String> = answer.holder.iter().map(|n| n.to_string()).collect();
                info!(cluster = %self.name, "the vote is now held by nodes [{}]", nodes.join(", "));
            }
            let reply = VoteAnswer {
                version: VERSION,
                view: request.view,
                sent_us: request.sent_us,
                granted: answer.granted,
                holder: answer.holder.iter().collect(),
            };
            if let Err(e) = self.endpoint.send(from, WITNESS_MAILBOX, &encode(&reply)) {
                warn!(cluster = %self.name, node = from.0, "cannot answer: {e}");
            }
        }
        let mut buf = [0u8; heartline_core::wire::MAX_ENCODED_LEN];
        while let Some(transmit) = self.endpoint.poll_transmit(now, &mut buf) {
            if let Some((frames, _)) = self.paths.get(&transmit.path) {
                let _ = frames.try_send(ToPath::Frame(buf[..transmit.len].to_vec()));
            }
        }
    }
}
