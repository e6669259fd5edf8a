//! Serial paths: an RS-232 line (or a USB-serial adapter, or a pty) carrying
//! frames both ways. One line may carry several paths: to a dongle and,
//! relayed by it, to the host on its other port; frames read are told apart
//! by their source node. The device is reopened with backoff when it
//! fails or disappears, and a lone delimiter is sent first after each open
//! so the far end discards any half-received frame.

use std::time::Duration;

use heartline_core::PathRef;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_serial::SerialPortBuilderExt;
use tracing::{info, warn};

use super::{Inbound, Route, ToPath, WRITE_TIMEOUT, read_frames};

const REOPEN: Duration = Duration::from_millis(500);

/// Runs one serial path until the daemon stops.
pub async fn run_path(
    paths: Vec<PathRef>,
    device: String,
    baud: u32,
    mut outgoing: mpsc::Receiver<ToPath>,
    incoming: mpsc::Sender<Inbound>,
) {
    let route = Route::BySource(paths);
    let path = route.first();
    let mut reported = false;
    let mut connection = 0u64;
    loop {
        let port = match tokio_serial::new(&device, baud).open_native_async() {
            Ok(port) => port,
            Err(e) => {
                if !reported {
                    warn!(path = %super::Named(path), %device, "cannot open serial device: {e}; retrying every {REOPEN:?}");
                    reported = true;
                }
                // Frames meant for a closed line are dropped, as on a cut cable.
                while outgoing.try_recv().is_ok() {}
                tokio::time::sleep(REOPEN).await;
                continue;
            }
        };
        reported = false;
        info!(path = %super::Named(path), %device, baud, "serial device open");
        connection += 1;
        let (read, mut write) = tokio::io::split(port);
        let (closed_tx, mut closed_rx) = mpsc::channel(1);
        let reader = tokio::spawn(read_frames(
            route.clone(),
            connection,
            read,
            incoming.clone(),
            closed_tx,
        ));
        let _ = write.write_all(&[0]).await;
        loop {
            tokio::select! {
                closed = closed_rx.recv() => {
                    if let Some(closed) = closed {
                        info!(path = %super::Named(path), %device, "serial device {}", closed.why);
                    }
                    break;
                }
                message = outgoing.recv() => match message {
                    Some(ToPath::Frame(frame)) => {
                        match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&frame)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => { info!(path = %super::Named(path), %device, "serial write failed: {e}"); break; }
                            Err(_) => { warn!(path = %super::Named(path), %device, "serial line stalled for {WRITE_TIMEOUT:?}"); break; }
                        }
                    }
                    Some(ToPath::Confirmed(_) | ToPath::Down(_)) => {}
                    None => { reader.abort(); return; }
                },
            }
        }
        reader.abort();
        info!(path = %super::Named(path), %device, "serial device closed; reopening");
        tokio::time::sleep(REOPEN).await;
    }
}
