//! The smallest program that uses all of heartline-core the way the dongle
//! will: an endpoint with two peers (its two hosts) over one path each, a
//! watchdog on each, the stream reader, and the full poll loop. Built only
//! so `size` can report what the core costs in flash and RAM.
#![no_std]
#![no_main]

use core::ptr::{addr_of, read_volatile, write_volatile};

use cortex_m_rt::entry;
use heartline_core::wire::{FrameReader, Key, MAX_ENCODED_LEN, NodeKind};
use heartline_core::{
    ClusterId, Duration, Endpoint, EndpointConfig, Incarnation, Instant, NodeId, PathConfig,
    PathId, PathRef, PeerConfig,
};
use panic_halt as _;

/// Stands in for a UART data register, so nothing is optimised away.
static mut WIRE: u8 = 0;

fn read_byte() -> u8 {
    // SAFETY: a plain static read; single-threaded program.
    unsafe { read_volatile(addr_of!(WIRE)) }
}

fn write_bytes(bytes: &[u8]) {
    for &b in bytes {
        // SAFETY: as above.
        unsafe { write_volatile(&raw mut WIRE, b) };
    }
}

#[entry]
fn main() -> ! {
    let secret = [read_byte(); 32];
    let Ok(key) = Key::new(&secret) else { loop {} };
    let config = EndpointConfig {
        cluster: ClusterId(1),
        node: NodeId(100),
        incarnation: Incarnation(1),
        name: "dongle",
        kind: NodeKind::Dongle,
        capabilities: 0,
        key,
    };
    let Ok(mut endpoint) = Endpoint::<2, 1, 1, 1, 8>::new(config) else {
        loop {}
    };
    let watch = PeerConfig {
        watchdog: Some(Duration::from_secs(2)),
        ..PeerConfig::new(NodeId(1))
    };
    let _ = endpoint.add_peer(Instant::ZERO, watch, &[PathConfig::default()]);
    let watch = PeerConfig {
        node: NodeId(2),
        ..watch
    };
    let _ = endpoint.add_peer(Instant::ZERO, watch, &[PathConfig::default()]);

    let mut reader = FrameReader::<MAX_ENCODED_LEN>::new();
    let mut out = [0u8; MAX_ENCODED_LEN];
    let mut now = 0u64;
    loop {
        now += 1_000;
        let now = Instant::from_micros(now);
        let byte = [read_byte()];
        let from = PathRef {
            node: NodeId(1 + u16::from(byte[0] & 1)),
            path: PathId(0),
        };
        reader.push(&byte, |frame| {
            if let Ok(frame) = frame {
                let _ = endpoint.handle_frame(now, from, frame);
            }
        });
        endpoint.handle_timeout(now);
        while let Some(t) = endpoint.poll_transmit(now, &mut out) {
            write_bytes(&out[..t.len]);
        }
        while let Some(event) = endpoint.poll_event() {
            write_bytes(&[event_code(&event)]);
        }
        while let Some(message) = endpoint.poll_message() {
            write_bytes(&message.payload);
        }
    }
}

fn event_code(event: &heartline_core::Event) -> u8 {
    match event {
        heartline_core::Event::NodeDown { .. } => 1,
        heartline_core::Event::WatchdogTripped { .. } => 2,
        _ => 0,
    }
}
