//! Fuzzes the receive path: arbitrary bytes into the stream splitter, the
//! frame decoder and an endpoint must give a value or a typed error, never a
//! panic.
//!
//! The first input byte picks the mode. Even: the rest is a byte stream off a
//! wire. Odd: the rest is a raw frame that the target signs with the cluster
//! key and checksums before encoding, so the fuzzer reaches the body decoder
//! and the endpoint's logic behind authentication, which it could never
//! forge its way through.
#![no_main]

use crc::{CRC_32_ISO_HDLC, Crc};
use heartline_core::wire::{self, FrameReader, Key, MAX_ENCODED_LEN};
use heartline_core::{
    ClusterId, Endpoint, EndpointConfig, Incarnation, Instant, NodeId, PathConfig, PathId, PathRef,
    PeerConfig,
};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzzing-cluster-secret-0123456789";

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let key = Key::new(SECRET).unwrap();
    let mut endpoint = Endpoint::<2, 2, 4, 4, 32>::new(EndpointConfig {
        cluster: ClusterId(7),
        node: NodeId(1),
        incarnation: Incarnation(1),
        name: "fuzz",
        kind: wire::NodeKind::Host,
        capabilities: 0,
        key: key.clone(),
    })
    .unwrap();
    endpoint
        .add_peer(
            Instant::ZERO,
            PeerConfig::new(NodeId(2)),
            &[PathConfig::default(); 2],
        )
        .unwrap();

    let mut stream = [0u8; 2 * MAX_ENCODED_LEN];
    let bytes: &[u8] = if mode % 2 == 0 {
        rest
    } else {
        let mut raw = [0u8; 2 * MAX_ENCODED_LEN];
        let body = &rest[..rest.len().min(wire::MAX_FRAME_LEN)];
        raw[..body.len()].copy_from_slice(body);
        let tag = key.tag(body);
        raw[body.len()..body.len() + 16].copy_from_slice(&tag);
        let crc = Crc::<u32>::new(&CRC_32_ISO_HDLC).checksum(&raw[..body.len() + 16]);
        raw[body.len() + 16..body.len() + 20].copy_from_slice(&crc.to_le_bytes());
        let n = cobs::encode(&raw[..body.len() + 20], &mut stream);
        &stream[..n + 1]
    };

    let mut copy = [0u8; 2 * MAX_ENCODED_LEN];
    let mut reader = FrameReader::<MAX_ENCODED_LEN>::new();
    let mut now = Instant::ZERO;
    let mut out = [0u8; MAX_ENCODED_LEN];
    reader.push(bytes, |frame| {
        let Ok(frame) = frame else { return };
        copy[..frame.len()].copy_from_slice(frame);
        let _ = wire::decode(&mut copy[..frame.len()], &key, ClusterId(7));
        now = Instant::from_micros(now.as_micros() + 1_000);
        let path = PathRef {
            node: NodeId(2),
            path: PathId(frame.first().copied().unwrap_or(0) % 3),
        };
        let _ = endpoint.handle_frame(now, path, frame);
        while endpoint.poll_transmit(now, &mut out).is_some() {}
        while endpoint.poll_event().is_some() {}
        while endpoint.poll_message().is_some() {}
    });
});
