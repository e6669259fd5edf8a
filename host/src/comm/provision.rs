//! The host's side of dongle provisioning: the key a dongle shares with this
//! node, and the provision frame sent to each dongle that is not up, once a
//! second, until it answers (see "Provisioning" in `heartline_core::wire`).
//! A dongle keeps its provisioning in RAM only, so this also re-provisions
//! one that was reset or power-cycled.

use std::time::{SystemTime, UNIX_EPOCH};

use heartline_core::dongle::{dongle_secret, encode_provision};
use heartline_core::wire::{
    DONGLE_SECRET_LEN, Header, Key, KeyError, Kind, MAX_ENCODED_LEN, Provision,
};
use heartline_core::{ClusterId, Duration, Incarnation, Instant, NodeId, PathId, PathRef};
use tracing::info;

use crate::config::{Config, DongleSpec, PeerSpec, Transport};

/// How often a dongle that is not up is sent its provisioning.
pub const PROVISION_EVERY: Duration = Duration::from_secs(1);

/// The key this node and dongle `dongle` share.
pub fn dongle_key(config: &Config, dongle: NodeId) -> Result<Key, KeyError> {
    Key::new(&dongle_secret(&config.key, config.cluster, dongle))
}

/// One dongle this node provisions.
#[derive(Debug)]
struct Attachment {
    path: PathRef,
    device: String,
    secret: [u8; DONGLE_SECRET_LEN],
    spec: DongleSpec,
    timing: heartline_core::PathConfig,
    next: Instant,
    /// Whether the "not answering" line was logged since it was last up.
    announced: bool,
}

/// Every dongle this node provisions, and when each is next due.
#[derive(Debug)]
pub struct Provisioner {
    cluster: ClusterId,
    node: NodeId,
    attachments: Vec<Attachment>,
    seq: u64,
}

impl Provisioner {
    /// The dongles among `config`'s peers.
    #[must_use]
    pub fn new(config: &Config) -> Provisioner {
        let attachments = config
            .peers
            .iter()
            .filter_map(|peer: &PeerSpec| {
                let spec = peer.dongle?;
                let path = peer.paths.first()?;
                let Transport::Serial { device, .. } = &path.transport else {
                    return None;
                };
                Some(Attachment {
                    path: PathRef {
                        node: peer.id,
                        path: PathId(0),
                    },
                    device: device.clone(),
                    secret: dongle_secret(&config.key, config.cluster, peer.id),
                    spec,
                    timing: path.timing,
                    next: Instant::ZERO,
                    announced: false,
                })
            })
            .collect();
        Provisioner {
            cluster: config.cluster,
            node: config.node,
            attachments,
            seq: 0,
        }
    }

    /// When [`Provisioner::poll`] next has something to send.
    #[must_use]
    pub fn next_due(&self) -> Option<Instant> {
        self.attachments.iter().map(|a| a.next).min()
    }

    /// The provision frames due at `now` for dongles that are not up: each
    /// with the path to send it on. `dongle` tells whether a dongle is up
    /// and its run as last heard.
    pub fn poll(
        &mut self,
        now: Instant,
        incarnation: Incarnation,
        dongle: impl Fn(NodeId) -> (bool, Option<Incarnation>),
    ) -> Vec<(PathRef, Vec<u8>)> {
        let mut frames = Vec::new();
        for attachment in &mut self.attachments {
            let id = attachment.path.node;
            let (up, known) = dongle(id);
            if up {
                attachment.announced = false;
                attachment.next = now + PROVISION_EVERY;
                continue;
            }
            if now < attachment.next {
                continue;
            }
            attachment.next = now + PROVISION_EVERY;
            if !attachment.announced {
                attachment.announced = true;
                info!(
                    "dongle {} on {} is not up: sending it its provisioning every {} ms until it answers",
                    id.0,
                    attachment.device,
                    PROVISION_EVERY.as_millis()
                );
            }
            self.seq += 1;
            let header = Header {
                kind: Kind::Provision,
                path: attachment.path.path,
                cluster: self.cluster,
                src: self.node,
                dst: id,
                src_incarnation: incarnation,
                dst_incarnation: Incarnation::UNKNOWN,
                seq: self.seq,
            };
            let millis = |d: Option<std::time::Duration>| {
                d.map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
            };
            let body = Provision {
                // The dongle keeps nothing across a reset: its next run must
                // be larger than any this node heard, and than any the
                // other host heard (the clock).
                incarnation: unix_seconds()
                    .max(known.map_or(0, |k| k.0.saturating_add(1)))
                    .max(1),
                other_host: attachment.spec.other_host.unwrap_or(NodeId(0)),
                secret: &attachment.secret,
                interval_ms: u32::try_from(attachment.timing.interval.as_millis())
                    .unwrap_or(u32::MAX),
                misses: attachment.timing.misses,
                rise: attachment.timing.rise,
                watchdog_ms: millis(attachment.spec.watchdog),
                reset_pulse_ms: millis(attachment.spec.reset_pulse),
            };
            let mut out = [0u8; MAX_ENCODED_LEN];
            // Cannot fail: a provision frame is far below the largest.
            if let Ok(len) = encode_provision(&header, &body, &mut out) {
                frames.push((attachment.path, out[..len].to_vec()));
            }
        }
        frames
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
