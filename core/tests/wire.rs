//! The wire format: round trips, every rejection as its own typed error, and
//! the decoder's behaviour on arbitrary, split and noisy input.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use heartline_core::dongle::encode_provision;
use heartline_core::wire::{
    self, Ack, Data, EventReport, FrameReader, Header, Heartbeat, Hello, Key, Kind,
    MAX_ENCODED_LEN, MAX_PAYLOAD, Message, NodeKind, Provision, WireError,
};
use heartline_core::{ClusterId, Incarnation, NodeId, PathId};
use proptest::prelude::*;

const CLUSTER: ClusterId = ClusterId(0x4854_4c31);

fn key() -> Key {
    Key::new(b"an example cluster secret, 32 b.").unwrap()
}

fn header() -> Header {
    Header {
        kind: Kind::Heartbeat,
        path: PathId(1),
        cluster: CLUSTER,
        src: NodeId(3),
        dst: NodeId(4),
        src_incarnation: Incarnation(0x1_0000_0009),
        dst_incarnation: Incarnation(0),
        seq: 77,
    }
}

fn encode(header: &Header, message: &Message<'_>, key: &Key) -> Vec<u8> {
    let mut buf = [0u8; MAX_ENCODED_LEN];
    let n = wire::encode(header, message, key, &mut buf).unwrap();
    buf[..n].to_vec()
}

/// The frames a stream yields, each decoded into an owned debug string.
fn decode_stream(chunks: &[&[u8]], key: &Key) -> Vec<Result<String, WireError>> {
    let mut reader = FrameReader::<MAX_ENCODED_LEN>::new();
    let mut out = Vec::new();
    for chunk in chunks {
        reader.push(chunk, |frame| match frame {
            Ok(frame) => out.push(wire::decode(frame, key, CLUSTER).map(|m| format!("{m:?}"))),
            Err(_) => out.push(Err(WireError::Oversize)),
        });
    }
    out
}

fn heartbeat() -> Message<'static> {
    Message::Heartbeat(Heartbeat {
        sent_at: 1_000,
        echo: 900,
        echo_age: 50,
    })
}

/// Decodes the COBS bytes of `frame` (delimiter stripped).
fn decode_one(mut frame: Vec<u8>, key: &Key, cluster: ClusterId) -> Result<String, WireError> {
    assert_eq!(frame.pop(), Some(0), "frames end with the delimiter");
    wire::decode(&mut frame, key, cluster).map(|m| format!("{m:?}"))
}

/// Re-encodes a raw frame after `edit` with a fresh CRC, so that the checks
/// behind the CRC are reached.
fn edit_raw(frame: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut raw = cobs::decode_vec(&frame[..frame.len() - 1]).unwrap();
    raw.truncate(raw.len() - 4);
    edit(&mut raw);
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&raw);
    raw.extend_from_slice(&crc.to_le_bytes());
    let mut out = cobs::encode_vec(&raw);
    out.push(0);
    out
}

#[test]
fn heartbeat_frame_layout_matches_the_spec() {
    let frame = encode(&header(), &heartbeat(), &key());
    let raw = cobs::decode_vec(&frame[..frame.len() - 1]).unwrap();
    assert_eq!(raw[0], 2, "version");
    assert_eq!(raw[1], 2, "kind heartbeat");
    assert_eq!(raw[2], 1, "path");
    assert_eq!(&raw[4..8], &CLUSTER.0.to_le_bytes());
    assert_eq!(&raw[8..10], &3u16.to_le_bytes());
    assert_eq!(&raw[10..12], &4u16.to_le_bytes());
    assert_eq!(&raw[12..20], &0x1_0000_0009u64.to_le_bytes());
    assert_eq!(&raw[20..28], &0u64.to_le_bytes());
    assert_eq!(&raw[28..36], &77u64.to_le_bytes());
    // Body: three varints (1000 = 2 bytes, 900 = 2 bytes, 50 = 1 byte).
    assert_eq!(raw.len(), 36 + 5 + 16 + 4);
    assert!(
        !frame[..frame.len() - 1].contains(&0),
        "COBS leaves no zero inside a frame"
    );
}

#[test]
fn each_rejection_is_its_own_error() {
    let key = key();
    let good = encode(&header(), &heartbeat(), &key);
    assert!(decode_one(good.clone(), &key, CLUSTER).is_ok());

    let other_key = Key::new(b"another cluster's secret, 32 by.").unwrap();
    assert_eq!(
        decode_one(good.clone(), &other_key, CLUSTER),
        Err(WireError::BadTag)
    );

    let other_cluster = ClusterId(1);
    assert_eq!(
        decode_one(good.clone(), &key, other_cluster),
        Err(WireError::WrongCluster(CLUSTER))
    );

    let mut raw = cobs::decode_vec(&good[..good.len() - 1]).unwrap();
    raw[38] ^= 0x40; // one bit flipped in the body by line noise
    let mut noisy = cobs::encode_vec(&raw);
    noisy.push(0);
    assert_eq!(decode_one(noisy, &key, CLUSTER), Err(WireError::BadCrc));

    assert_eq!(
        decode_one(vec![3, 1, 2, 0], &key, CLUSTER),
        Err(WireError::Truncated)
    );
    assert_eq!(
        decode_one(vec![0], &key, CLUSTER),
        Err(WireError::Truncated)
    );

    let huge = vec![0xffu8; MAX_ENCODED_LEN + 10];
    let mut frame = huge.clone();
    assert_eq!(
        wire::decode(&mut frame, &key, CLUSTER),
        Err(WireError::Oversize)
    );

    let future = edit_raw(&good, |raw| raw[0] = 3);
    assert_eq!(
        decode_one(future, &key, CLUSTER),
        Err(WireError::UnknownVersion(3))
    );
    // Version 1 (32-bit incarnations) is not read as version 2.
    let past = edit_raw(&good, |raw| raw[0] = 1);
    assert_eq!(
        decode_one(past, &key, CLUSTER),
        Err(WireError::UnknownVersion(1))
    );

    let new_kind = edit_raw(&good, |raw| raw[1] = 42);
    assert_eq!(
        decode_one(new_kind, &key, CLUSTER),
        Err(WireError::UnknownKind(42))
    );

    // A kind-1 body that is not a hello, correctly tagged: malformed.
    let bad_body = edit_raw(&good, |raw| {
        raw[1] = 1;
        raw.truncate(raw.len() - 16);
        raw.truncate(wire::HEADER_LEN);
        raw.push(200); // name length 200 with no bytes behind it
        let tag = key.tag(raw);
        raw.extend_from_slice(&tag);
    });
    assert_eq!(
        decode_one(bad_body, &key, CLUSTER),
        Err(WireError::Malformed)
    );

    let mut broken_cobs = good.clone();
    broken_cobs[0] = 0xff;
    assert_eq!(
        decode_one(broken_cobs, &key, CLUSTER),
        Err(WireError::Framing)
    );
}

#[test]
fn a_relay_can_read_the_route_without_the_key() {
    let frame = encode(&header(), &heartbeat(), &key());
    let raw = cobs::decode_vec(&frame[..frame.len() - 1]).unwrap();
    assert_eq!(wire::peek_route(&raw), Some((NodeId(3), NodeId(4))));
    assert_eq!(wire::peek_route(&raw[..10]), None);
    assert_eq!(
        wire::route_of(&frame[..frame.len() - 1]),
        Some((NodeId(3), NodeId(4)))
    );
    assert_eq!(wire::route_of(b"\x05ab"), None);
}

#[test]
fn trailing_body_fields_from_a_newer_peer_are_ignored() {
    let key = key();
    let good = encode(&header(), &heartbeat(), &key);
    let extended = edit_raw(&good, |raw| {
        raw.truncate(raw.len() - 16);
        raw.extend_from_slice(&[1, 2, 3]);
        let tag = key.tag(raw);
        raw.extend_from_slice(&tag);
    });
    assert_eq!(
        decode_one(extended, &key, CLUSTER),
        decode_one(good, &key, CLUSTER)
    );
}

#[test]
fn oversized_payloads_and_names_are_refused_at_encode() {
    let mut buf = [0u8; MAX_ENCODED_LEN];
    let payload = [7u8; MAX_PAYLOAD + 1];
    let data = Message::Data(Data {
        seq: 1,
        base: 1,
        mailbox: 1,
        payload: &payload,
    });
    assert_eq!(
        wire::encode(&header(), &data, &key(), &mut buf),
        Err(wire::EncodeError::TooLarge)
    );
    let long_name = "x".repeat(33);
    let hello = Message::Hello(Hello {
        name: &long_name,
        node_kind: NodeKind::Host,
        capabilities: 0,
        heartbeat: Heartbeat::default(),
    });
    assert_eq!(
        wire::encode(&header(), &hello, &key(), &mut buf),
        Err(wire::EncodeError::TooLarge)
    );
    let mut small = [0u8; 20];
    assert_eq!(
        wire::encode(&header(), &heartbeat(), &key(), &mut small),
        Err(wire::EncodeError::BufferTooSmall)
    );
}

#[test]
fn a_full_payload_fits_the_documented_maximum() {
    let payload = [0u8; MAX_PAYLOAD];
    let data = Message::Data(Data {
        seq: u32::MAX,
        base: u32::MAX,
        mailbox: u16::MAX,
        payload: &payload,
    });
    let frame = encode(&header(), &data, &key());
    assert!(frame.len() <= MAX_ENCODED_LEN);
    assert!(decode_one(frame, &key(), CLUSTER).is_ok());
}

#[derive(Debug, Clone)]
enum OwnedMessage {
    Hello(String, u8, u32, Heartbeat),
    Heartbeat(Heartbeat),
    Data(u32, u32, u16, Vec<u8>),
    Ack(u32),
    Event(u32, u32, u16, u16, u32),
    Provision(u64, u16, [u8; 32], (u32, u32, u32, u32, u32)),
}

impl OwnedMessage {
    fn borrow(&self) -> Message<'_> {
        match self {
            OwnedMessage::Hello(name, kind, caps, hb) => Message::Hello(Hello {
                name,
                node_kind: NodeKind::from(*kind),
                capabilities: *caps,
                heartbeat: *hb,
            }),
            OwnedMessage::Heartbeat(hb) => Message::Heartbeat(*hb),
            OwnedMessage::Data(seq, base, mailbox, payload) => Message::Data(Data {
                seq: *seq,
                base: *base,
                mailbox: *mailbox,
                payload,
            }),
            OwnedMessage::Ack(c) => Message::Ack(Ack { cumulative: *c }),
            OwnedMessage::Event(seq, base, code, subject, detail) => Message::Event(EventReport {
                seq: *seq,
                base: *base,
                code: *code,
                subject: NodeId(*subject),
                detail: *detail,
            }),
            OwnedMessage::Provision(
                incarnation,
                other,
                secret,
                (interval_ms, misses, rise, watchdog_ms, reset_pulse_ms),
            ) => Message::Provision(Provision {
                incarnation: *incarnation,
                other_host: NodeId(*other),
                secret,
                interval_ms: *interval_ms,
                misses: *misses,
                rise: *rise,
                watchdog_ms: *watchdog_ms,
                reset_pulse_ms: *reset_pulse_ms,
            }),
        }
    }
}

fn heartbeat_strategy() -> impl Strategy<Value = Heartbeat> {
    (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(sent_at, echo, echo_age)| Heartbeat {
        sent_at,
        echo,
        echo_age,
    })
}

fn message_strategy() -> impl Strategy<Value = OwnedMessage> {
    prop_oneof![
        ("\\PC{0,8}", any::<u8>(), any::<u32>(), heartbeat_strategy())
            .prop_filter("name fits", |(n, ..)| n.len() <= 32)
            .prop_map(|(n, k, c, h)| OwnedMessage::Hello(n, k, c, h)),
        heartbeat_strategy().prop_map(OwnedMessage::Heartbeat),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            prop::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD)
        )
            .prop_map(|(s, b, m, p)| OwnedMessage::Data(s, b, m, p)),
        any::<u32>().prop_map(OwnedMessage::Ack),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            any::<u16>(),
            any::<u32>()
        )
            .prop_map(|(s, b, c, n, d)| OwnedMessage::Event(s, b, c, n, d)),
        (
            any::<u64>(),
            any::<u16>(),
            any::<[u8; 32]>(),
            any::<(u32, u32, u32, u32, u32)>()
        )
            .prop_map(|(i, o, s, t)| OwnedMessage::Provision(i, o, s, t)),
    ]
}

fn header_strategy() -> impl Strategy<Value = Header> {
    (
        any::<u8>(),
        1..=u16::MAX,
        1..=u16::MAX,
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(path, src, dst, si, di, seq)| Header {
            kind: Kind::Ack,
            path: PathId(path),
            cluster: CLUSTER,
            src: NodeId(src),
            dst: NodeId(dst),
            src_incarnation: Incarnation(si),
            dst_incarnation: Incarnation(di),
            seq,
        })
}

proptest! {
    #[test]
    fn every_message_kind_round_trips(header in header_strategy(), message in message_strategy()) {
        let key = key();
        let mut frame = encode(&header, &message.borrow(), &key);
        frame.pop();
        prop_assert_eq!(wire::route_of(&frame), Some((header.src, header.dst)));
        prop_assert_eq!(wire::kind_of(&frame), Some(message.borrow().kind()));
        let (got_header, got) = wire::decode(&mut frame, &key, CLUSTER).unwrap();
        prop_assert_eq!(got_header, Header { kind: message.borrow().kind(), ..header });
        prop_assert_eq!(got, message.borrow());
    }

    #[test]
    fn a_provision_frame_verifies_under_the_secret_it_carries(header in header_strategy(), secret in any::<[u8; 32]>()) {
        let body = Provision {
            incarnation: 9,
            other_host: NodeId(2),
            secret: &secret,
            interval_ms: 100,
            misses: 5,
            rise: 2,
            watchdog_ms: 2_000,
            reset_pulse_ms: 0,
        };
        let mut out = [0u8; wire::MAX_ENCODED_LEN];
        let len = encode_provision(&header, &body, &mut out).unwrap();
        let mut frame = out[..len - 1].to_vec();
        let mut forged = encode(&header, &Message::Provision(body), &key());
        forged.pop();
        let (got_header, got) = wire::decode_provision(&mut frame).unwrap();
        prop_assert_eq!(got_header, Header { kind: Kind::Provision, ..header });
        prop_assert_eq!(got, body);
        prop_assert_eq!(wire::decode_provision(&mut forged), Err(WireError::BadTag));
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(mut bytes in prop::collection::vec(any::<u8>(), 0..1200)) {
        let _ = wire::decode(&mut bytes, &key(), CLUSTER);
        let mut reader = FrameReader::<MAX_ENCODED_LEN>::new();
        reader.push(&bytes, |frame| {
            if let Ok(frame) = frame {
                let _ = wire::decode(frame, &key(), CLUSTER);
            }
        });
    }

    #[test]
    fn a_stream_split_at_any_byte_decodes_the_same(messages in prop::collection::vec(message_strategy(), 1..4), split in any::<prop::sample::Index>()) {
        let key = key();
        let stream: Vec<u8> = messages.iter().flat_map(|m| encode(&header(), &m.borrow(), &key)).collect();
        let whole = decode_stream(&[&stream], &key);
        prop_assert_eq!(whole.len(), messages.len());
        prop_assert!(whole.iter().all(Result::is_ok));
        let at = split.index(stream.len() + 1);
        let (a, b) = stream.split_at(at);
        prop_assert_eq!(decode_stream(&[a, b], &key), whole);
    }

    #[test]
    fn frames_survive_garbage_between_them(messages in prop::collection::vec(message_strategy(), 1..4), garbage in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 4)) {
        let key = key();
        let mut stream = Vec::new();
        for (m, junk) in messages.iter().zip(&garbage) {
            stream.extend_from_slice(junk);
            stream.push(0); // junk ends at a delimiter, as any line noise eventually does
            stream.extend_from_slice(&encode(&header(), &m.borrow(), &key));
        }
        let decoded: Vec<String> = decode_stream(&[&stream], &key).into_iter().filter_map(Result::ok).collect();
        let expected: Vec<String> = messages.iter().map(|m| format!("{:?}", (Header { kind: m.borrow().kind(), ..header() }, m.borrow()))).collect();
        prop_assert_eq!(decoded, expected);
    }
}

#[test]
fn every_split_point_of_a_three_frame_stream_decodes_the_same() {
    let key = key();
    let payload = [0u8, 1, 0, 2, 0, 0, 3];
    let stream: Vec<u8> = [
        heartbeat(),
        Message::Data(Data {
            seq: 1,
            base: 1,
            mailbox: 9,
            payload: &payload,
        }),
        Message::Ack(Ack { cumulative: 1 }),
    ]
    .iter()
    .flat_map(|m| encode(&header(), m, &key))
    .collect();
    let whole = decode_stream(&[&stream], &key);
    assert_eq!(whole.len(), 3);
    for at in 0..=stream.len() {
        let (a, b) = stream.split_at(at);
        assert_eq!(decode_stream(&[a, b], &key), whole, "split at {at}");
    }
}
