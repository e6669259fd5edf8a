//! UDP paths: each end binds its local address and sends every frame as one
//! datagram to the peer's remote address. No connection, no reconnecting:
//! a lost datagram is a missed heartbeat (or a retransmitted message), which
//! is what the protocol is built for.

use std::net::SocketAddr;
use std::time::Duration;

use heartline_core::PathRef;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{Inbound, ToPath};

const REBIND: Duration = Duration::from_millis(500);

/// Runs one UDP path until the daemon stops.
pub async fn run_path(
    path: PathRef,
    local: SocketAddr,
    remote: SocketAddr,
    mut outgoing: mpsc::Receiver<ToPath>,
    incoming: mpsc::Sender<Inbound>,
) {
    let socket = loop {
        match UdpSocket::bind(local).await {
            Ok(socket) => break socket,
            Err(e) => {
                warn!(path = %super::Named(path), %local, "cannot bind: {e}; retrying in {REBIND:?}");
                tokio::time::sleep(REBIND).await;
            }
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, from)) => {
                    // One frame per datagram; its delimiter is optional.
                    let frame = buf[..n].strip_suffix(&[0]).unwrap_or(&buf[..n]).to_vec();
                    debug!(path = %super::Named(path), %from, bytes = n, "datagram");
                    if incoming.send(Inbound::Frame { path, connection: 0, bytes: frame }).await.is_err() {
                        return;
                    }
                }
                // ICMP port unreachable and the like: the peer is not there yet.
                Err(e) => debug!(path = %super::Named(path), "receive failed: {e}"),
            },
            message = outgoing.recv() => match message {
                Some(ToPath::Frame(frame)) => {
                    if let Err(e) = socket.send_to(&frame, remote).await {
                        debug!(path = %super::Named(path), %remote, "send failed: {e}");
                    }
                }
                Some(ToPath::Confirmed(_) | ToPath::Down(_)) => {}
                None => return,
            },
        }
    }
}
