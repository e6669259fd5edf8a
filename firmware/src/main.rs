//! The heartline heartbeat dongle.
//!
//! A small board on the RS-232 ports of two servers. It is a cluster node of
//! kind "dongle": it answers each host's heartbeats, so each host has a
//! serial path to it and sees its status; it relays frames between its two
//! ports, so the two hosts have a serial path to each other through it; and
//! it watches each host like a hardware watchdog, reporting a silent host to
//! the other one.
//!
//! A trip also pulses that host's reset output for 200 ms.
//!
//! This image carries its provisioning (cluster, key, node ids) compiled in
//! for the QEMU harness; the provisioning exchange that lets one image serve
//! every cluster is still to come.
#![no_std]
#![no_main]

mod board;

use core::panic::PanicInfo;

use board::Board;
use cortex_m_rt::entry;
use embedded_io::{Read, Write};
use heapless::Vec;
use heartline_core::wire::{
    CAP_RELAY, CAP_WATCHDOG, EventCode, FrameReader, Key, MAX_ENCODED_LEN, NodeKind, route_of,
};
use heartline_core::{
    ClusterId, Duration, Endpoint, EndpointConfig, Event, Incarnation, Instant, NodeId, PathConfig,
    PathId, PathRef, PeerConfig, RemoteEvent,
};

/// Provisioning of the QEMU test image.
mod provisioning {
    pub const CLUSTER: u32 = 4242;
    pub const SECRET: &[u8] = b"heartline qemu dongle test key!!";
    pub const DONGLE: u16 = 100;
    /// The host on UART0 and the host on UART1.
    pub const HOSTS: [u16; 2] = [1, 2];
    pub const WATCHDOG_MS: u64 = 2_000;
    /// How long a trip holds the host's reset output.
    pub const RESET_PULSE_MS: u64 = 200;
}

type DongleEndpoint = Endpoint<2, 1, 2, 1, 16>;

#[entry]
fn main() -> ! {
    let Some(mut board) = Board::take() else {
        Board::reset()
    };
    let Ok(key) = Key::new(provisioning::SECRET) else {
        Board::reset()
    };
    let config = EndpointConfig {
        cluster: ClusterId(provisioning::CLUSTER),
        node: NodeId(provisioning::DONGLE),
        incarnation: Incarnation(1),
        name: "dongle",
        kind: NodeKind::Dongle,
        capabilities: CAP_WATCHDOG | CAP_RELAY,
        key,
    };
    let Ok(mut endpoint) = DongleEndpoint::new(config) else {
        Board::reset()
    };
    let watchdog = Some(Duration::from_millis(provisioning::WATCHDOG_MS));
    for host in provisioning::HOSTS {
        let peer = PeerConfig {
            watchdog,
            ..PeerConfig::new(NodeId(host))
        };
        if endpoint
            .add_peer(board.now(), peer, &[PathConfig::default()])
            .is_err()
        {
            Board::reset();
        }
    }

    let mut readers = [FrameReader::<MAX_ENCODED_LEN>::new(), FrameReader::new()];
    let mut reset_until: [Option<Instant>; 2] = [None, None];
    let mut chunk = [0u8; 64];
    let mut out = [0u8; MAX_ENCODED_LEN];
    loop {
        let now = board.now();
        for (port, reader) in readers.iter_mut().enumerate() {
            let n = {
                let uart = &mut board.uarts[port];
                uart.poll();
                let Ok(n) = uart.read(&mut chunk);
                n
            };
            let at = PathRef {
                node: NodeId(provisioning::HOSTS[port]),
                path: PathId(0),
            };
            let beyond = NodeId(provisioning::HOSTS[1 - port]);
            let mut relay: Vec<u8, { 2 * MAX_ENCODED_LEN }> = Vec::new();
            reader.push(&chunk[..n], |frame| match frame {
                // A frame for the host on the other port goes there as it
                // came: it stays authenticated end to end between the hosts.
                Ok(frame) if route_of(frame).is_some_and(|(_, dst)| dst == beyond) => {
                    if relay.extend_from_slice(frame).is_err() || relay.push(0).is_err() {
                        relay.clear();
                    }
                }
                // Rejections are counted by the endpoint.
                Ok(frame) => {
                    let _ = endpoint.handle_frame(now, at, frame);
                }
                Err(_) => endpoint.handle_overflow(at),
            });
            let other = &mut board.uarts[1 - port];
            // A full ring drops the frames, as a slow line would.
            if !relay.is_empty() && other.tx_room() >= relay.len() {
                let _ = other.write(&relay);
            }
        }
        endpoint.handle_timeout(now);
        while let Some(event) = endpoint.poll_event() {
            if let Event::WatchdogTripped { node, .. } = event {
                let port = provisioning::HOSTS
                    .iter()
                    .position(|&h| h == node.0)
                    .unwrap_or(0);
                board.set_host_reset(port, true);
                reset_until[port] = Some(now + Duration::from_millis(provisioning::RESET_PULSE_MS));
            }
            report(&mut endpoint, event);
        }
        for (port, until) in reset_until.iter_mut().enumerate() {
            if until.is_some_and(|at| now >= at) {
                board.set_host_reset(port, false);
                *until = None;
            }
        }
        while endpoint.poll_message().is_some() {}
        while let Some(transmit) = endpoint.poll_transmit(now, &mut out) {
            let port = provisioning::HOSTS
                .iter()
                .position(|&h| h == transmit.path.node.0)
                .unwrap_or(0);
            let uart = &mut board.uarts[port];
            // A full ring drops the frame, as a slow line would: heartbeats
            // repeat and reports are retransmitted.
            if uart.tx_room() >= transmit.len {
                let _ = uart.write(&out[..transmit.len]);
            }
        }
    }
}

/// Tells the other host when one host's watchdog trips or re-arms.
fn report(endpoint: &mut DongleEndpoint, event: Event) {
    let (code, subject, detail) = match event {
        Event::WatchdogTripped { node, silent_for } => (
            EventCode::WatchdogTripped,
            node,
            u32::try_from(silent_for.as_millis()).unwrap_or(u32::MAX),
        ),
        Event::WatchdogRearmed { node } => (EventCode::WatchdogRearmed, node, 0),
        _ => return,
    };
    for other in provisioning::HOSTS
        .into_iter()
        .map(NodeId)
        .filter(|&h| h != subject)
    {
        // If the other host is unreachable too, there is nobody to tell.
        let _ = endpoint.send_event(
            other,
            RemoteEvent {
                code,
                subject,
                detail,
            },
        );
    }
}

#[panic_handler]
fn panic(_: &PanicInfo<'_>) -> ! {
    Board::reset()
}
