//! The heartline wire format, version 2.
//!
//! This doc comment is the specification. Every frame on every path (TCP
//! stream, serial line, UDP datagram) has this shape; a peer that implements
//! this page interoperates.
//!
//! # Framing
//!
//! A frame on the wire is the [COBS] encoding of a *raw frame*, followed by a
//! single `0x00` delimiter. COBS removes every zero byte from the encoding, so a
//! receiver that loses sync (line noise, a half-read buffer, junk injected into
//! a TCP port) discards bytes up to the next `0x00` and is back in step with
//! the next frame. A datagram path sends exactly one encoded frame and its
//! delimiter per datagram. An encoded frame longer than [`MAX_ENCODED_LEN`]
//! bytes is discarded unread (`Oversize`).
//!
//! # Raw frame
//!
//! ```text
//! offset size field            meaning
//!      0    1 version          2 for this spec; see "Versions" below
//!      1    1 kind             what the body is: see "Kinds"
//!      2    1 path             which path of the sender/receiver pair this frame was sent on
//!      3    1 flags            reserved; senders write 0, receivers ignore it
//!      4    4 cluster id       u32 little-endian
//!      8    2 source node      u16 LE, never 0
//!     10    2 destination node u16 LE, never 0
//!     12    8 src incarnation  u64 LE: the sender's current run; larger after every restart
//!     20    8 dst incarnation  u64 LE: the receiver's run as the sender last heard it; 0 = unknown
//!     28    8 sequence         u64 LE: per (sender run, path), starts at 1, +1 every frame
//!     36    n body             postcard encoding of the kind's body (below)
//!   36+n   16 tag              HMAC-SHA256(cluster key, bytes 0 .. 36+n), first 16 bytes
//!   52+n    4 crc              CRC-32/ISO-HDLC (the Ethernet CRC) of bytes 0 .. 52+n, LE
//! ```
//!
//! All multi-byte header fields are little-endian. The body uses postcard:
//! unsigned integers are LEB128-style varints, `&[u8]` and `&str` are a varint
//! length then the bytes, enums are a varint index. A body is at most
//! [`MAX_BODY_LEN`] bytes; a raw frame at most [`MAX_FRAME_LEN`].
//!
//! # Kinds
//!
//! | kind | name      | body                                                                 |
//! |------|-----------|----------------------------------------------------------------------|
//! | 1    | hello     | name: str (≤ 32 bytes), node kind: u8 (1 host, 2 dongle), capabilities: u32 bit set, then a heartbeat body |
//! | 2    | heartbeat | sent_at: u64 µs on the sender's clock; echo: u64, the last `sent_at` received from this peer on this path (0 = none); echo_age: u32 µs the echo was held before this frame was sent |
//! | 3    | data      | seq: u32 channel sequence; base: u32, every sequence before it is settled at the sender; mailbox: u16; payload: bytes (≤ [`MAX_PAYLOAD`] = 512) |
//! | 4    | ack       | cumulative: u32, every channel sequence up to and including it has been delivered (0 = none) |
//! | 5    | event     | seq: u32 and base: u32 as in data; code: u16; subject: u16 node id; detail: u32 (codes: 1 watchdog tripped, detail = ms of silence; 2 watchdog re-armed; 3 mailbox full and 4 mailbox has room again, detail = mailbox) |
//! | 6    | provision | incarnation: u64, the dongle's run from now on; other_host: u16 (0 = none); secret: 32 bytes; interval_ms: u32; misses: u32; rise: u32; watchdog_ms: u32 (0 = none); reset_pulse_ms: u32 (0 = never). See "Provisioning" |
//!
//! Hello and heartbeat prove a path alive and carry round-trip timing: the
//! sender of an echo measures `rtt = now - echo - echo_age` on its own clock.
//! Data and event share one reliable channel per ordered pair of nodes (see
//! [`crate::channel`]); their sequence numbers start at 1 for every pair of
//! incarnations, and a data, event or ack frame whose dst incarnation is not
//! the receiver's current one is dropped.
//!
//! # Provisioning
//!
//! A dongle (see [`crate::dongle`]) ships knowing nothing: one image serves
//! every cluster. A host attached to it sends a provision frame on its serial
//! path about once a second while the dongle is not up: the header names
//! the cluster, the host (src) and the dongle (dst); the body gives the
//! dongle its run, the host on its other port, its timings and its secret.
//!
//! The secret is not the cluster key. Each host derives it as
//! `HMAC-SHA256(cluster key, "heartline dongle key v1" ‖ cluster id LE ‖
//! dongle id LE)`, so both hosts give the same dongle the same secret, every
//! frame between the dongle and a host is tagged with it, and the dongle
//! never holds the cluster key. Frames between the two hosts that the
//! dongle relays stay tagged with the cluster key end to end.
//!
//! The provision frame's tag is made with the secret it carries:
//! - An unprovisioned dongle takes the first provision frame whose CRC and
//!   tag verify (trust on first use). The tag proves only that the frame is
//!   whole, not who sent it: whoever holds the other end of the cable first
//!   provisions the dongle. The cable is the trust boundary; the secret
//!   crosses it in clear, so anyone who can read the line at that moment
//!   learns the dongle's secret, which lets them impersonate the dongle
//!   (fake its heartbeats and watchdog reports) but not a host.
//! - A provisioned dongle takes a provision frame only if it carries the same
//!   secret, is newer (sender incarnation, then sequence) than the last one
//!   taken from that host, and names the same hosts on the same ports. New
//!   timings are applied by restarting the dongle's node with a larger
//!   incarnation. A different secret (another cluster, a rotated key) is
//!   refused until the dongle is reset, which only someone at the board can
//!   do.
//!
//! The dongle keeps its provisioning in RAM; a reset or power cycle returns
//! it to unprovisioned, and the hosts provision it again within a second.
//!
//! # Checks, in order
//!
//! A receiver applies these checks in this order and stops at the first that
//! fails; each has its own error ([`WireError`]) and counter:
//!
//! 1. encoded length ≤ [`MAX_ENCODED_LEN`] (`Oversize`), COBS valid (`Framing`);
//! 2. raw length ≥ 56, header plus tag plus crc (`Truncated`);
//! 3. CRC-32 matches (`BadCrc`): line noise, not an attack;
//! 4. version is 2 (`UnknownVersion`);
//! 5. cluster id is ours (`WrongCluster`);
//! 6. kind is known (`UnknownKind`);
//! 7. tag verifies under the cluster key (`BadTag`): a wrong key or a forgery;
//! 8. body decodes (`Malformed`);
//!
//! and then the endpoint checks the destination, the sender, the path, and the
//! replay window (see [`crate::replay`]).
//!
//! # Incarnations
//!
//! A node's incarnation grows with every run, so a receiver tells a
//! restarted node (a larger src incarnation: its paths and channel start
//! over) from frames of an earlier run (smaller: `StaleIncarnation`,
//! dropped). A host takes the larger of its recorded incarnation plus one
//! and the Unix time in seconds; 64 bits leave both far from their end
//! whatever the clock says. If a run took its incarnation from a clock that
//! was ahead and its record is lost, the next run's is smaller, and peers
//! that remember the earlier one drop its frames as stale; but their frames
//! name that earlier run as the dst incarnation. A node that receives an
//! authentic, fresh frame (after the replay check) whose dst incarnation is
//! larger than its own therefore takes that value plus one as its
//! incarnation at once, and starts its paths and channels over as a restart
//! would: its peers accept it within a round trip.
//!
//! # Versions and extension
//!
//! Every version starts with the version byte and ends with a CRC-32 over all
//! the bytes before it, so a receiver can always tell noise from a newer peer.
//! Version 2 widened the two incarnations from 32 to 64 bits (version 1's
//! were u32: a clock set past 2106, or a record at `u32::MAX`, left a
//! restarted node unable to take a larger one); a version 1 frame is
//! `UnknownVersion` to it, so every node, witness and dongle of a cluster
//! runs the same version. Within a version:
//! - a new message kind takes the next kind number; older receivers reject it
//!   as `UnknownKind`, count it, and carry on;
//! - a body may grow new fields at its end; receivers ignore trailing bytes
//!   they do not understand;
//! - a change to the header or to the meaning of an existing field is a new
//!   version.
//!
//! # Why HMAC-SHA256/128
//!
//! HMAC-SHA256 truncated to 128 bits needs no nonce, so a node that restarts
//! with a reused incarnation (a dongle without a clock, a restored VM) weakens
//! replay protection only, never the key. A Poly1305 AEAD would leak its
//! one-time key on a repeated nonce and allow forgeries. The key's inner and
//! outer pads are hashed once when the key is loaded, so each tag costs two
//! SHA-256 compressions for any frame of up to 55 bytes before the tag (a
//! heartbeat is 48), and one more per further 64 bytes. On a Cortex-M3 a
//! compression is on the order of 4,000 to 5,000 cycles in portable Rust:
//! about 0.2 ms per heartbeat at 50 MHz, against 6 ms to send the same frame at
//! 115200 baud. On x86-64 with SHA extensions the full encode, tag, decode,
//! verify cycle of a heartbeat is measured in the README.
//!
//! [COBS]: https://en.wikipedia.org/wiki/Consistent_Overhead_Byte_Stuffing

mod auth;
mod error;
mod frame;
mod header;
mod message;
mod reader;

pub use auth::{Key, KeyError, MIN_KEY_LEN, TAG_LEN};
pub use error::{EncodeError, WireError};
pub use frame::{decode, decode_provision, encode};
pub use header::{CRC_LEN, HEADER_LEN, Header, Kind, VERSION, kind_of, peek_route, route_of};
pub use message::{
    Ack, CAP_MAILBOX, CAP_RELAY, CAP_WATCHDOG, DONGLE_SECRET_LEN, Data, EventCode, EventReport,
    Heartbeat, Hello, MAX_NAME_LEN, MAX_PAYLOAD, Message, NodeKind, Provision,
};
pub use reader::{FrameReader, Overflow};

/// Largest body of any kind: a data body with a full payload.
pub const MAX_BODY_LEN: usize = MAX_PAYLOAD + 16;
/// Largest raw frame: header, body, tag, crc.
pub const MAX_FRAME_LEN: usize = HEADER_LEN + MAX_BODY_LEN + TAG_LEN + CRC_LEN;
/// Largest encoded frame on the wire, including the `0x00` delimiter. A
/// transmit buffer of this size always suffices.
pub const MAX_ENCODED_LEN: usize = cobs::max_encoding_length(MAX_FRAME_LEN) + 1;
/// Smallest raw frame: an empty body.
pub const MIN_FRAME_LEN: usize = HEADER_LEN + TAG_LEN + CRC_LEN;
