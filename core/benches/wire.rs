//! Heartbeat frames through the whole wire path: encode, tag, COBS, then
//! COBS-decode, CRC, verify, parse. The README quotes these figures.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use heartline_core::wire::{self, Header, Heartbeat, Key, Kind, MAX_ENCODED_LEN, Message};
use heartline_core::{ClusterId, Incarnation, NodeId, PathId};

fn header(seq: u64) -> Header {
    Header {
        kind: Kind::Heartbeat,
        path: PathId(0),
        cluster: ClusterId(7),
        src: NodeId(1),
        dst: NodeId(2),
        src_incarnation: Incarnation(1_700_000_000),
        dst_incarnation: Incarnation(1_700_000_001),
        seq,
    }
}

fn heartbeat(now: u64) -> Message<'static> {
    Message::Heartbeat(Heartbeat {
        sent_at: now,
        echo: now - 1_234,
        echo_age: 87,
    })
}

fn bench(c: &mut Criterion) {
    let key = Key::new(b"benchmark cluster secret 32 byte").expect("valid key");
    let mut group = c.benchmark_group("heartbeat");
    group.throughput(Throughput::Elements(1));

    group.bench_function("encode+tag", |b| {
        let mut buf = [0u8; MAX_ENCODED_LEN];
        let mut seq = 0u64;
        b.iter(|| {
            seq += 1;
            black_box(
                wire::encode(&header(seq), &heartbeat(1_000_000 + seq), &key, &mut buf)
                    .expect("fits"),
            )
        });
    });

    group.bench_function("decode+verify", |b| {
        let mut buf = [0u8; MAX_ENCODED_LEN];
        let len = wire::encode(&header(1), &heartbeat(1_000_000), &key, &mut buf).expect("fits");
        let mut frame = [0u8; MAX_ENCODED_LEN];
        b.iter(|| {
            frame[..len - 1].copy_from_slice(&buf[..len - 1]);
            let (h, _) = wire::decode(&mut frame[..len - 1], &key, ClusterId(7)).expect("valid");
            black_box(h.seq)
        });
    });

    group.bench_function("encode+tag+decode+verify", |b| {
        let mut buf = [0u8; MAX_ENCODED_LEN];
        let mut seq = 0u64;
        b.iter(|| {
            seq += 1;
            let len = wire::encode(&header(seq), &heartbeat(1_000_000 + seq), &key, &mut buf)
                .expect("fits");
            let (h, _) = wire::decode(&mut buf[..len - 1], &key, ClusterId(7)).expect("valid");
            black_box(h.seq)
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
