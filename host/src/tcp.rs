//! TCP paths: each path is a TCP connection of its own. The node with the
//! higher id listens on the path's local address; the other dials the
//! path's remote address from the local IP, reconnecting with backoff. A
//! connection carries the path's frames both ways until it breaks.

use std::net::SocketAddr;
use std::time::Duration;

use heartline_core::PathRef;
use heartline_core::wire::{FrameReader, MAX_ENCODED_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::daemon::Input;

/// First wait before redialling; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Which end of the connection this node takes.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// Accept on `local`.
    Listen,
    /// Connect to `remote` from `local`'s IP.
    Dial,
}

/// Runs one TCP path until the daemon stops.
pub async fn run_path(
    path: PathRef,
    role: Role,
    local: SocketAddr,
    remote: SocketAddr,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    incoming: mpsc::Sender<Input>,
) {
    match role {
        Role::Listen => {
            let listener = loop {
                match TcpListener::bind(local).await {
                    Ok(listener) => break listener,
                    Err(e) => {
                        warn!(%path, %local, "cannot listen: {e}; retrying in {MAX_BACKOFF:?}");
                        tokio::time::sleep(MAX_BACKOFF).await;
                    }
                }
            };
            loop {
                let (stream, from) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        warn!(%path, "accept failed: {e}");
                        tokio::time::sleep(MIN_BACKOFF).await;
                        continue;
                    }
                };
                info!(%path, %from, "connection accepted");
                // A newer connection replaces the current one: the peer
                // redials when it sees the old one fail.
                carry(path, stream, &mut outgoing, &incoming, Some(&listener)).await;
            }
        }
        Role::Dial => {
            let mut backoff = MIN_BACKOFF;
            loop {
                match dial(local, remote).await {
                    Ok(stream) => {
                        info!(%path, %remote, "connected");
                        backoff = MIN_BACKOFF;
                        carry(path, stream, &mut outgoing, &incoming, None).await;
                    }
                    Err(e) => debug!(%path, %remote, "connect failed: {e}"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn dial(local: SocketAddr, remote: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if remote.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(local.ip(), 0))?;
    let stream = tokio::time::timeout(MAX_BACKOFF, socket.connect(remote))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Moves frames between one connection and the daemon until the connection
/// breaks or, when listening, a newer connection arrives.
async fn carry(
    path: PathRef,
    stream: TcpStream,
    outgoing: &mut mpsc::Receiver<Vec<u8>>,
    incoming: &mpsc::Sender<Input>,
    listener: Option<&TcpListener>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut frames = FrameReader::<MAX_ENCODED_LEN>::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(0) => { info!(%path, "connection closed by peer"); return; }
                    Ok(n) => n,
                    Err(e) => { info!(%path, "connection lost: {e}"); return; }
                };
                let mut batch = Vec::new();
                frames.push(&buf[..n], |frame| batch.push(frame.map(|bytes| bytes.to_vec())));
                for frame in batch {
                    let input = match frame {
                        Ok(bytes) => Input::Frame { path, bytes },
                        Err(_) => Input::Overflow { path },
                    };
                    if incoming.send(input).await.is_err() {
                        return;
                    }
                }
            }
            frame = outgoing.recv() => {
                let Some(frame) = frame else { return };
                if let Err(e) = writer.write_all(&frame).await {
                    info!(%path, "connection lost: {e}");
                    return;
                }
            }
            accepted = async {
                match listener {
                    Some(listener) => listener.accept().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Ok((stream, from)) = accepted {
                    info!(%path, %from, "newer connection replaces the current one");
                    return Box::pin(carry(path, stream, outgoing, incoming, listener)).await;
                }
            }
        }
    }
}
