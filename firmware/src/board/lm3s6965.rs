//! Texas Instruments LM3S6965 (Cortex-M3), as emulated by QEMU's
//! `lm3s6965evb`: UART0 and UART1 are the dongle's two RS-232 ports, SysTick
//! (12 MHz core clock) counts milliseconds, PF0/PF1 are the hosts' reset
//! outputs, and the free stack is painted at boot so its peak use can be
//! measured.

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use heapless::Deque;
use heartline_core::Instant;

const UART_BASES: [usize; 2] = [0x4000_C000, 0x4000_D000];
const DR: usize = 0x000;
const FR: usize = 0x018;
const CTL: usize = 0x030;
const FR_RXFE: u32 = 1 << 4;
const FR_TXFF: u32 = 1 << 5;
const CTL_ENABLE_RX_TX: u32 = (1 << 0) | (1 << 8) | (1 << 9);
const RCGC1: usize = 0x400F_E104;
const RCGC2: usize = 0x400F_E108;
/// GPIO port F: PF0 and PF1 are the reset outputs for the hosts on UART0
/// and UART1 (active high, to drive each server's reset line through a
/// transistor or an opto-coupler).
const GPIO_F: usize = 0x4002_5000;
const GPIO_DIR: usize = 0x400;
const GPIO_DEN: usize = 0x51C;
const CORE_CLOCK_HZ: u32 = 12_000_000;

static MILLIS: AtomicU32 = AtomicU32::new(0);

/// Fills the free stack at boot, so the deepest the stack ever reached can
/// be read back as the first word no longer holding it.
const STACK_PAINT: u32 = 0xCAFE_F00D;

unsafe extern "C" {
    /// Top of the stack (cortex-m-rt): the end of RAM.
    static _stack_start: u32;
    /// End of the statics (cortex-m-rt): the stack may grow down to here.
    static __sheap: u32;
}

fn stack_bounds() -> (usize, usize) {
    (
        core::ptr::addr_of!(__sheap) as usize,
        core::ptr::addr_of!(_stack_start) as usize,
    )
}

/// Paints the stack below the caller's frame, leaving a margin for this
/// function's own. Call before interrupts are enabled.
fn paint_stack() {
    let (bottom, _) = stack_bounds();
    let below_caller = cortex_m::register::msp::read() as usize - 256;
    let mut at = bottom;
    while at < below_caller {
        // SAFETY: `at` is word-aligned RAM between the end of the statics
        // and below the live stack, which nothing uses yet.
        unsafe { write_volatile(at as *mut u32, STACK_PAINT) };
        at += 4;
    }
}

/// The most stack ever used since boot, in bytes.
pub fn stack_high_water() -> usize {
    let (bottom, top) = stack_bounds();
    let mut at = bottom;
    // SAFETY: as in `paint_stack`, word-aligned RAM below the stack top.
    while at < top && unsafe { read_volatile(at as *const u32) } == STACK_PAINT {
        at += 4;
    }
    top - at
}

#[exception]
fn SysTick() {
    MILLIS.fetch_add(1, Ordering::Relaxed);
}

fn read(address: usize) -> u32 {
    // SAFETY: `address` is one of this chip's memory-mapped UART or system
    // control registers, valid for a 32-bit volatile read.
    unsafe { read_volatile(address as *const u32) }
}

fn write(address: usize, value: u32) {
    // SAFETY: as in `read`, for a 32-bit volatile write.
    unsafe { write_volatile(address as *mut u32, value) }
}

/// One UART with software ring buffers on both sides of its hardware FIFO.
/// The receive ring holds 11 ms of a 115200-baud line, many times the
/// longest pass of the dongle's loop; the transmit ring holds the largest
/// frame ([`heartline_core::wire::MAX_ENCODED_LEN`], 580 bytes) and then
/// some.
#[derive(Debug)]
pub struct Uart {
    base: usize,
    rx: Deque<u8, 128>,
    tx: Deque<u8, 640>,
}

impl Uart {
    /// Moves bytes between the hardware FIFOs and the rings; call often.
    /// A full receive ring leaves bytes in the hardware FIFO, so a line
    /// that outruns the loop loses them there, never half a ring.
    pub fn poll(&mut self) {
        while !self.rx.is_full() && read(self.base + FR) & FR_RXFE == 0 {
            let byte = (read(self.base + DR) & 0xff) as u8;
            let _ = self.rx.push_back(byte);
        }
        while read(self.base + FR) & FR_TXFF == 0 {
            let Some(byte) = self.tx.pop_front() else {
                break;
            };
            write(self.base + DR, u32::from(byte));
        }
    }

    /// Room left in the transmit ring.
    pub fn tx_room(&self) -> usize {
        self.tx.capacity() - self.tx.len()
    }
}

impl embedded_io::ErrorType for Uart {
    type Error = core::convert::Infallible;
}

impl embedded_io::Read for Uart {
    /// Takes what the receive ring holds (possibly nothing: poll first).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let mut n = 0;
        while n < buf.len() {
            let Some(byte) = self.rx.pop_front() else {
                break;
            };
            buf[n] = byte;
            n += 1;
        }
        Ok(n)
    }
}

impl embedded_io::Write for Uart {
    /// Queues as much as the transmit ring takes.
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let mut n = 0;
        for &byte in buf {
            if self.tx.push_back(byte).is_err() {
                break;
            }
            n += 1;
        }
        self.poll();
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        while !self.tx.is_empty() {
            self.poll();
        }
        Ok(())
    }
}

/// The board's resources.
#[derive(Debug)]
pub struct Board {
    /// The two RS-232 ports: UART0 to host A, UART1 to host B.
    pub uarts: [Uart; 2],
}

impl Board {
    /// Sets up the clock and the UARTs. Call once.
    pub fn take() -> Option<Board> {
        let mut core = cortex_m::Peripherals::take()?;
        paint_stack();
        write(RCGC1, read(RCGC1) | 0b11);
        write(RCGC2, read(RCGC2) | (1 << 5));
        write(GPIO_F + GPIO_DIR, read(GPIO_F + GPIO_DIR) | 0b11);
        write(GPIO_F + GPIO_DEN, read(GPIO_F + GPIO_DEN) | 0b11);
        for base in UART_BASES {
            write(base + CTL, CTL_ENABLE_RX_TX);
        }
        core.SYST.set_clock_source(SystClkSource::Core);
        core.SYST.set_reload(CORE_CLOCK_HZ / 1000 - 1);
        core.SYST.clear_current();
        core.SYST.enable_interrupt();
        core.SYST.enable_counter();
        let uart = |base| Uart {
            base,
            rx: Deque::new(),
            tx: Deque::new(),
        };
        Some(Board {
            uarts: [uart(UART_BASES[0]), uart(UART_BASES[1])],
        })
    }

    /// Time since boot.
    pub fn now(&self) -> Instant {
        Instant::from_millis(u64::from(MILLIS.load(Ordering::Relaxed)))
    }

    /// Drives the reset output of the host on `port` (0 or 1).
    pub fn set_host_reset(&mut self, port: usize, asserted: bool) {
        let bit = 1u32 << (port & 1);
        // The data register is addressed through a bit mask: only `bit`
        // changes.
        write(GPIO_F + (bit as usize) * 4, if asserted { bit } else { 0 });
    }

    /// Resets the chip.
    pub fn reset() -> ! {
        cortex_m::peripheral::SCB::sys_reset()
    }
}
