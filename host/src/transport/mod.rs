//! The communication paths: bytes in and out of the protocol core over
//! TCP ([`tcp`]), UDP ([`udp`]) and serial lines ([`serial`]), with
//! redialling and reopening. Each path runs as a task of its own: it takes
//! frames to send from the communication manager ([`ToPath`]) and hands
//! upwards what it reads ([`Inbound`]), knowing nothing of what is above.
//! Shared here too: TCP's [`Role`], and splitting a byte stream (a TCP
//! connection, a serial line) into frames.

pub mod serial;
pub mod tcp;
pub mod udp;

use std::time::Duration;

use heartline_core::PathRef;
use heartline_core::wire::{FrameReader, MAX_ENCODED_LEN};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tracing::debug;

/// The hosts' names by id, set once at the daemon's start, so that log
/// lines name a path's node as everything else does (`bravo (2) path 0`).
static NAMES: std::sync::OnceLock<std::collections::BTreeMap<u16, String>> =
    std::sync::OnceLock::new();

/// Sets the names [`Named`] shows (the first call wins).
pub fn set_names(names: std::collections::BTreeMap<u16, String>) {
    let _ = NAMES.set(names);
}

/// A path as log lines show it: its node by name and id, and its index.
#[derive(Debug, Clone, Copy)]
pub struct Named(pub PathRef);

impl std::fmt::Display for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let node = self.0.node.0;
        let name = NAMES.get().and_then(|n| n.get(&node)).map(String::as_str);
        write!(
            f,
            "{} {}",
            heartline_brain::api::node_name(node, name),
            self.0.path
        )
    }
}

/// A write that cannot finish within this drops the connection.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Which end of the connection this node takes.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// Accept on `local`.
    Listen,
    /// Connect to `remote` from `local`'s IP.
    Dial,
}

/// What the communication manager tells a path.
#[derive(Debug)]
pub enum ToPath {
    /// Send this encoded frame.
    Frame(Vec<u8>),
    /// A frame from this connection was authentic: write to it from now on.
    Confirmed(u64),
    /// The protocol declared the path down; the connection that last
    /// carried it (if known) is closed, and a dialler redials at once.
    Down(Option<u64>),
}

/// A connection's reader ended.
#[derive(Debug)]
pub(crate) struct Closed {
    /// Which connection.
    pub(crate) connection: u64,
    /// Why, for the log ("closed by peer", "lost: ...").
    pub(crate) why: String,
}

/// What a path hands the communication manager.
#[derive(Debug)]
pub enum Inbound {
    /// A frame (COBS bytes, no delimiter) arrived on a path.
    Frame {
        /// Where it arrived.
        path: PathRef,
        /// Which of the path's connections carried it.
        connection: u64,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// A path's stream reader discarded an over-long run of bytes.
    Overflow {
        /// Where.
        path: PathRef,
    },
}

/// Which path a frame read from a stream belongs to.
#[derive(Clone, Debug)]
pub(crate) enum Route {
    /// Every frame belongs to this path.
    Fixed(PathRef),
    /// A serial line carrying paths to several nodes (a dongle, and hosts
    /// through it): by the frame's source node. A frame whose source cannot
    /// be read or is unknown is charged to the first path, which counts it.
    BySource(Vec<PathRef>),
}

impl Route {
    /// The path a frame is charged to when no other can be told.
    pub(crate) fn first(&self) -> PathRef {
        match self {
            Route::Fixed(path) => *path,
            Route::BySource(paths) => paths.first().copied().unwrap_or(PathRef {
                node: heartline_core::NodeId(0),
                path: heartline_core::PathId(0),
            }),
        }
    }

    fn path_of(&self, frame: &[u8]) -> PathRef {
        match self {
            Route::Fixed(path) => *path,
            Route::BySource(paths) => heartline_core::wire::route_of(frame)
                .and_then(|(src, _)| paths.iter().find(|p| p.node == src).copied())
                .unwrap_or_else(|| self.first()),
        }
    }
}

/// Splits one connection's bytes into frames for the manager until it ends.
pub(crate) async fn read_frames(
    route: Route,
    connection: u64,
    mut read: impl AsyncRead + Unpin,
    incoming: mpsc::Sender<Inbound>,
    closed: mpsc::Sender<Closed>,
) {
    let path = route.first();
    // The caller logs the end of a connection that mattered (strangers'
    // connections are only counted); here it is debug.
    let why;
    let mut frames = FrameReader::<MAX_ENCODED_LEN>::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match read.read(&mut buf).await {
            Ok(0) => {
                why = "closed by peer".to_string();
                break;
            }
            Ok(n) => n,
            Err(e) => {
                why = format!("lost: {e}");
                break;
            }
        };
        let mut batch = Vec::new();
        frames.push(&buf[..n], |frame| {
            batch.push(frame.map(|bytes| bytes.to_vec()))
        });
        for frame in batch {
            let input = match frame {
                Ok(bytes) => Inbound::Frame {
                    path: route.path_of(&bytes),
                    connection,
                    bytes,
                },
                Err(_) => Inbound::Overflow { path },
            };
            if incoming.send(input).await.is_err() {
                return;
            }
        }
    }
    debug!(path = %Named(path), connection, "connection {why}");
    let _ = closed.send(Closed { connection, why }).await;
}
