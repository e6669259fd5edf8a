//! A TCP relay in front of a path's listener that can black-hole the path on
//! demand: the connection stays open and nothing gets through, as with a
//! cable pulled between two switches. The demo and the tests cut paths with
//! it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// A relay to one address.
#[derive(Debug)]
pub struct Relay {
    /// Where to connect instead of the target.
    pub addr: SocketAddr,
    blocked: Arc<AtomicBool>,
    /// The first bytes the dialing side sent, for replay tests.
    recorded: Arc<Mutex<Vec<u8>>>,
}

/// How much of the dialer's stream a relay keeps.
const RECORD_LIMIT: usize = 64 * 1024;

impl Relay {
    /// Starts relaying connections on a free loopback port to `target`.
    pub fn start(target: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let blocked = Arc::new(AtomicBool::new(false));
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let (flag, record) = (blocked.clone(), recorded.clone());
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let (Ok(client_copy), Ok(server_copy)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                pump(client_copy, server_copy, flag.clone(), Some(record.clone()));
                pump(server, client, flag.clone(), None);
            }
        });
        Ok(Relay {
            addr,
            blocked,
            recorded,
        })
    }

    /// Swallows everything from now on.
    pub fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
    }

    /// Lets traffic through again.
    pub fn restore(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }

    /// The first bytes (up to 64 KiB) the dialing side sent through.
    pub fn recorded(&self) -> Vec<u8> {
        self.recorded.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    blocked: Arc<AtomicBool>,
    record: Option<Arc<Mutex<Vec<u8>>>>,
) {
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
                Ok(n) => {
                    if let Some(Ok(mut record)) = record.as_ref().map(|r| r.lock()) {
                        let room = RECORD_LIMIT.saturating_sub(record.len());
                        record.extend_from_slice(&buf[..n.min(room)]);
                    }
                    if !blocked.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
}
