//! The heartline heartbeat dongle.
//!
//! A small board on the RS-232 ports of two servers, running
//! [`heartline_core::dongle::Dongle`]: it waits unprovisioned until a host
//! provisions it, then is a cluster node of kind "dongle" to both hosts,
//! relays frames between its ports so the hosts have a serial path to each
//! other through it, and watches each host like a hardware watchdog: a
//! silent host is reported to the other and its reset output is pulsed.
//!
//! This file is the board loop only: bytes from the UARTs and the time go
//! into the dongle, frames and reset levels come out, and what it notes is
//! logged with defmt.
#![no_std]
#![no_main]

mod board;
mod log;

use core::panic::PanicInfo;

use board::{Board, Uart};
use cortex_m_rt::entry;
#[cfg(feature = "log-rtt")]
use defmt_rtt as _;
#[cfg(feature = "log-semihosting")]
use defmt_semihosting as _;
use embedded_io::{Read, Write};
use heartline_core::dongle::{Dongle, PORTS};
use heartline_core::wire::MAX_ENCODED_LEN;
use heartline_core::{Duration, Instant};
use static_cell::StaticCell;

/// The dongle lives in a static, so its RAM shows in `.bss` (not `.data`,
/// which would cost its size in flash too) and the stack holds only the
/// loop's buffers.
static DONGLE: StaticCell<Dongle> = StaticCell::new();

/// How often the stack's high-water mark and the relay's dropped frames
/// are checked and, when they grew, logged.
const STACK_CHECK: Duration = Duration::from_secs(1);

#[entry]
fn main() -> ! {
    let Some(mut board) = Board::take() else {
        Board::reset()
    };
    let dongle = DONGLE.init_with(Dongle::new);
    defmt::info!(
        "heartline dongle {} up: unprovisioned, waiting for a host on UART0 or UART1",
        env!("CARGO_PKG_VERSION")
    );
    let mut chunk = [0u8; 64];
    let mut out = [0u8; MAX_ENCODED_LEN];
    let mut resets = [false; PORTS];
    let mut dropped = [0u32; PORTS];
    let mut dropped_reported = dropped;
    let mut stack_peak = 0;
    let mut next_stack_check = Instant::ZERO;
    loop {
        let now = board.now();
        for port in 0..PORTS {
            loop {
                let n = {
                    let uart = &mut board.uarts[port];
                    uart.poll();
                    let Ok(n) = uart.read(&mut chunk);
                    n
                };
                if n == 0 {
                    break;
                }
                dongle.handle_bytes(now, port, &chunk[..n], |to, frame| {
                    if !relay(&mut board.uarts[to], frame) {
                        dropped[to] = dropped[to].wrapping_add(1);
                    }
                });
            }
        }
        dongle.handle_timeout(now);
        while let Some(note) = dongle.poll_note() {
            log::note(&note);
        }
        for (port, level) in resets.iter_mut().enumerate() {
            let asserted = dongle.reset_asserted(port);
            if asserted != *level {
                board.set_host_reset(port, asserted);
                log::reset_output(port, asserted);
                *level = asserted;
            }
        }
        while let Some((port, len)) = dongle.poll_transmit(now, &mut out) {
            let uart = &mut board.uarts[port];
            // A full ring drops the frame, as a slow line would: heartbeats
            // repeat and reports are retransmitted.
            if uart.tx_room() >= len {
                let _ = uart.write(&out[..len]);
            }
        }
        if now >= next_stack_check {
            next_stack_check = now + STACK_CHECK;
            if dropped != dropped_reported {
                dropped_reported = dropped;
                defmt::warn!(
                    "relay: {} frames dropped so far for a full line (UART0, UART1)",
                    dropped
                );
            }
            let used = board::stack_high_water();
            if used > stack_peak {
                stack_peak = used;
                defmt::info!(
                    "stack high-water mark {=usize} bytes; {} frames relayed so far (to UART0, UART1)",
                    used,
                    [dongle.relayed(0), dongle.relayed(1)]
                );
            }
        }
    }
}

/// Queues a relayed frame and its delimiter if the line has room for both.
fn relay(uart: &mut Uart, frame: &[u8]) -> bool {
    if uart.tx_room() < frame.len() + 1 {
        return false;
    }
    let _ = uart.write(frame);
    let _ = uart.write(&[0]);
    true
}

/// Logs where it panicked and resets. The message is left out: formatting it
/// would bring `core::fmt` into the image, several KiB of flash.
#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => defmt::error!("panic at {=str}:{=u32}; resetting", at.file(), at.line()),
        None => defmt::error!("panic; resetting"),
    }
    Board::reset()
}
