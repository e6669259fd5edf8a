//! The communication paths: bytes in and out of the protocol core over
//! TCP ([`tcp`]), UDP ([`udp`]) and serial lines ([`serial`]), with
//! redialling and reopening. Each path runs as a task of its own, takes
//! frames to send from the communication manager, and hands upwards what
//! it reads.

pub mod serial;
pub mod tcp;
pub mod udp;
