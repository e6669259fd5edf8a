//! The brain's decision time: a coordinator of 32 nodes and 1,000
//! hierarchies (each a resource extended to 3 nodes, 3,000 instances) loses
//! a node; once every node has reported the new view, how long it takes
//! to decide where that node's hierarchies go (orders out), and how long a
//! plan of the whole cluster takes.

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use heartline_brain::message::{BrainMsg, Flags, View};
use heartline_brain::model::{Change, Epoch, Init, Model, Place, Resource, Role, State};
use heartline_brain::{Brain, BrainConfig, Input, KitInfo, Membership, Output, Stored};
use heartline_core::{Duration, Instant};

const NODES: u16 = 32;
const GROUPS: u16 = 1000;

fn model() -> Model {
    let mut model = Model::default();
    let mut apply = |c: Change| {
        model.check(&c).expect("valid");
        model.apply(&c);
    };
    for g in 0..GROUPS {
        let nodes: Vec<u16> = (0..3).map(|i| (g + i * 7) % NODES + 1).collect();
        let tag = format!("r{g}");
        for (rank, node) in nodes.iter().enumerate() {
            apply(Change::CreateResource(Resource {
                place: Place {
                    node: *node,
                    tag: tag.clone(),
                },
                id: tag.clone(),
                app: "gen".into(),
                rtype: "app".into(),
                state: if rank == 0 { State::Isp } else { State::Osu },
                init: Init::Autores,
                flags: BTreeSet::new(),
                info: String::new(),
                props: BTreeMap::new(),
                priority: u16::try_from(rank + 1).unwrap_or(1),
                role: Role::Started,
            }));
        }
        for w in nodes.windows(2) {
            apply(Change::CreateEquivalency {
                a: Place {
                    node: w[0],
                    tag: tag.clone(),
                },
                b: Place {
                    node: w[1],
                    tag: tag.clone(),
                },
            });
        }
    }
    model.epoch = Epoch { term: 1, node: 1 };
    model
}

fn config() -> BrainConfig {
    let mut cfg = BrainConfig::new(1, 1, (1..=NODES).collect());
    cfg.kits.insert(
        "gen/app".into(),
        KitInfo {
            quick_check_interval: None,
            recover_attempts: 1,
            problems: Vec::new(),
        },
    );
    cfg
}

/// Node 1's brain with every peer reported, and `lost` then lost and the
/// rest reporting the new view, but for the last peer's report, which is
/// returned to be handed in.
fn cluster(model: &Model, lost: u16) -> (Brain, Instant, Input) {
    let mut now = Instant::from_millis(1);
    let mut brain = Brain::new(
        config(),
        Stored {
            model: model.clone(),
            ..Stored::default()
        },
        now,
    );
    // Probes: every local resource's quickCheck says what the model says.
    loop {
        let pending: Vec<Output> = std::iter::from_fn(|| brain.poll_output()).collect();
        if pending.is_empty() {
            break;
        }
        for o in pending {
            if let Output::Run { job, resource, .. } = o {
                let ok = resource.state.in_service();
                brain.handle(
                    now,
                    Input::ScriptDone {
                        job,
                        ok,
                        summary: String::new(),
                    },
                );
            }
        }
    }
    assert!(!brain.probing());
    let digest = model.digest();
    let full: View = (1..=NODES).map(|n| (n, 1)).collect();
    for node in 2..=NODES {
        brain.handle(
            now,
            Input::Membership(Membership::Up {
                node,
                incarnation: 1,
            }),
        );
    }
    let states = |node: u16| -> BTreeMap<String, State> {
        model
            .resources
            .values()
            .filter(|r| r.place.node == node)
            .map(|r| (r.place.tag.clone(), r.state))
            .collect()
    };
    let flags = |view: &View| Flags {
        view: view.clone(),
        version: model.version(),
        digest,
        kits: BTreeSet::from(["gen/app".to_string()]),
        ..Flags::default()
    };
    for node in 2..=NODES {
        let msg = BrainMsg::Hello {
            reply: true,
            flags: flags(&full),
            busy: BTreeMap::new(),
            states: states(node),
        };
        brain.handle(now, Input::Message { from: node, msg });
    }
    now += Duration::from_secs(2);
    brain.handle_timeout(now);
    while brain.poll_output().is_some() {}
    brain.handle(now, Input::Membership(Membership::Down { node: lost }));
    let mut view = full.clone();
    view.remove(&lost);
    let peers: Vec<u16> = (2..=NODES).filter(|n| *n != lost).collect();
    let (last, rest) = peers.split_last().expect("peers");
    for node in rest {
        let msg = BrainMsg::Update {
            flags: Some(flags(&view)),
            busy: Vec::new(),
            states: Vec::new(),
            refused: Vec::new(),
        };
        brain.handle(now, Input::Message { from: *node, msg });
    }
    while brain.poll_output().is_some() {}
    let msg = BrainMsg::Update {
        flags: Some(flags(&view)),
        busy: Vec::new(),
        states: Vec::new(),
        refused: Vec::new(),
    };
    (brain, now, Input::Message { from: *last, msg })
}

fn decide(c: &mut Criterion) {
    let model = model();
    let mut group = c.benchmark_group("brain");
    group.sample_size(20);
    group.bench_function(
        "node loss, 32 nodes, 1000 hierarchies: last report to orders out",
        |b| {
            b.iter_batched(
                || cluster(&model, 5),
                |(mut brain, now, input)| {
                    brain.handle(now, input);
                    let orders = std::iter::from_fn(|| brain.poll_output())
                        .filter(|o| {
                            matches!(
                                o,
                                Output::Send {
                                    msg: BrainMsg::Order { .. },
                                    ..
                                }
                            )
                        })
                        .count();
                    assert!(orders > 0, "the lost node's hierarchies are placed");
                    // Returned, so that dropping the brain is not timed.
                    (brain, orders)
                },
                BatchSize::LargeInput,
            );
        },
    );
    let (mut brain, _, _) = cluster(&model, 5);
    let flags = brain.flags();
    let busy = brain.busy();
    group.bench_function("whole-cluster plan, 32 nodes, 1000 hierarchies", |b| {
        b.iter(|| black_box(brain.plan(&flags, &busy).len()));
    });
    group.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
