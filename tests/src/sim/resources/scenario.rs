//! What a resource simulation does, generated from a seed: the nodes and
//! their paths, the hierarchy groups and where each is extended, the
//! scripts' behaviour, and the faults: daemon crashes (with or without
//! their applications), clean stops, stalls, partitions, failing
//! applications, and administrators' requests made on random nodes.

use heartline_core::{Duration, Instant, PathConfig};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::sim::LinkSpec;

/// One hierarchy group: a resource (and maybe a child it depends on) on
/// each of `nodes`, priorities in that order.
#[derive(Clone, Debug)]
pub struct GroupSpec {
    /// Its resource's tag on every node (the child's is this and "-data").
    pub name: String,
    /// The nodes it is extended to (indices), best priority first.
    pub nodes: Vec<usize>,
    /// Whether it has a child resource.
    pub child: bool,
    /// Whether its role is started when the cluster boots.
    pub started: bool,
}

/// An administrator's request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admin {
    /// `in-service` of a group on the node asked.
    InService(usize),
    /// `out-of-service` of a group.
    OutOfService(usize),
    /// `switchover` of a group to a node.
    Switchover(usize, usize),
    /// Standby on or off for a node.
    Standby(usize, bool),
    /// Maintenance mode on, then off after the span.
    Maintenance(Duration),
    /// A new resource (unique tag) on the node asked: a configuration
    /// change whose acknowledgement is checked.
    Create(String),
    /// Make sure every failed or blocked resource is stopped, then clean
    /// it up.
    Cleanup,
}

/// A fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The daemon dies (kill -9); with `apps`, the node dies and its
    /// applications with it. It starts again after `down_for`.
    Crash {
        /// The node.
        node: usize,
        /// Whether its applications die too.
        apps: bool,
        /// How long until it starts again.
        down_for: Duration,
    },
    /// A clean stop (SIGTERM); it starts again `down_for` after it exited.
    Stop {
        /// The node.
        node: usize,
        /// How long until it starts again.
        down_for: Duration,
    },
    /// The daemon is stopped (SIGSTOP) for a while, its applications run.
    Stall {
        /// The node.
        node: usize,
        /// For how long.
        span: Duration,
    },
    /// Every path between `side` and the other nodes is cut for a span
    /// (already in the links' cuts; here for the trace).
    Partition {
        /// One side.
        side: Vec<usize>,
        /// For how long.
        span: Duration,
    },
    /// A group's application dies wherever it runs.
    KillApp(usize),
    /// A link monitor's hint ([`heartline_brain::Input::CheckNow`]) to
    /// `node` for a group's resources: after its application died there
    /// (`kill`), or for nothing (a spurious event).
    Hint {
        /// The group.
        group: usize,
        /// The node told.
        node: usize,
        /// Whether the group's application died first, wherever it ran.
        kill: bool,
    },
    /// An administrator's request on a node.
    Admin {
        /// The node asked.
        node: usize,
        /// The request.
        request: Admin,
    },
}

/// How the simulated scripts behave.
#[derive(Clone, Copy, Debug)]
pub struct Scripts {
    /// Longest a script takes (each run is uniform up to it).
    pub longest: Duration,
    /// Probability a restore fails.
    pub restore_fails: f64,
    /// Probability a remove fails.
    pub remove_fails: f64,
    /// Probability a recover fails.
    pub recover_fails: f64,
    /// Probability a script hangs until its timeout.
    pub hangs: f64,
    /// The kits' timeout.
    pub timeout: Duration,
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The seed it was made from.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Each pair's paths, in `pair_index` order.
    pub links: Vec<Vec<LinkSpec>>,
    /// The groups.
    pub groups: Vec<GroupSpec>,
    /// The faults, in time order.
    pub faults: Vec<(Instant, Fault)>,
    /// The span with faults.
    pub faulty: Duration,
    /// Then a quiet span, after which everything must have converged.
    pub quiet: Duration,
    /// The scripts.
    pub scripts: Scripts,
    /// Whether the nodes hold quorum under leases, with watchdogs (the
    /// default). Without, a partition runs a hierarchy on both sides and
    /// the simulator counts it.
    pub quorum: bool,
    /// Whether a witness holds one more vote (clusters of an even number of
    /// nodes).
    pub witness: bool,
    /// When the witness is unreachable from every node.
    pub witness_outages: Vec<(Instant, Instant)>,
    /// Fence devices (with quorum): every node has two levels, its BMC
    /// then its PDU.
    pub fencing: Option<Fencing>,
    /// Each node's clock rate, in parts per million off true time (within
    /// the ±1% the brain's drift margin allows for).
    pub drift_ppm: Vec<i32>,
    /// A node whose `[quorum]` gives other expected votes than the rest's
    /// (a misconfiguration), and the number it gives: it must never start
    /// anything, and the others run without its vote. On a fifth of the
    /// seeds of three nodes or more: one or two votes more than there are,
    /// or a majority of its own (1).
    pub apart: Option<(usize, u32)>,
}

/// How the simulated fence devices behave.
#[derive(Clone, Copy, Debug)]
pub struct Fencing {
    /// Longest a fence takes (each run is uniform up to it).
    pub longest: Duration,
    /// Probability a run fails (the node runs on).
    pub fails: f64,
    /// Probability a run hangs until its timeout (and fails).
    pub hangs: f64,
    /// The agents' timeout.
    pub timeout: Duration,
}

impl Scenario {
    /// The index of pair `(a, b)` in [`Scenario::links`].
    #[must_use]
    pub fn pair_index(&self, a: usize, b: usize) -> usize {
        crate::sim::scenario::pair_index(self.nodes, a, b)
    }

    /// The paths between `a` and `b`.
    #[must_use]
    pub fn paths(&self, a: usize, b: usize) -> &[LinkSpec] {
        &self.links[self.pair_index(a, b)]
    }

    /// When the run ends.
    #[must_use]
    pub fn end(&self) -> Instant {
        Instant::ZERO + self.faulty + self.quiet
    }

    /// How long after two nodes' paths or daemons last changed they must
    /// have seen each other for certain.
    #[must_use]
    pub fn settle_time(&self, a: usize, b: usize) -> Duration {
        self.paths(a, b)
            .iter()
            .map(|l| l.config.interval * (l.config.misses + l.config.rise + 2))
            .fold(Duration::ZERO, |a, b| if b > a { b } else { a })
            + Duration::from_millis(500)
    }

    /// The shortest time, on any path, from the last frame heard to a
    /// node-down (`interval × misses`).
    #[must_use]
    pub fn detection_floor(&self) -> Duration {
        self.links
            .iter()
            .flatten()
            .map(|l| l.config.interval * l.config.misses)
            .fold(None, |a: Option<Duration>, b| {
                Some(a.map_or(b, |a| if b < a { b } else { a }))
            })
            .unwrap_or(Duration::ZERO)
    }

    /// Whether the witness is unreachable at `at`.
    #[must_use]
    pub fn witness_down(&self, at: Instant) -> bool {
        self.witness_outages
            .iter()
            .any(|(from, to)| *from <= at && at < *to)
    }

    /// The longest it takes any node to declare another down.
    #[must_use]
    pub fn detection(&self) -> Duration {
        self.links
            .iter()
            .flatten()
            .map(|l| l.config.interval * (l.config.misses + 1))
            .fold(Duration::ZERO, |a, b| if b > a { b } else { a })
    }

    /// A random scenario.
    #[must_use]
    pub fn from_seed(seed: u64) -> Scenario {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0b0a_1ce5);
        let nodes = if rng.random_ratio(1, 10) {
            rng.random_range(6..=8)
        } else {
            rng.random_range(2..=5)
        };
        let faulty = Duration::from_secs(rng.random_range(15..=30));
        let mut links = Vec::new();
        for _ in 0..nodes * (nodes - 1) / 2 {
            let paths = rng.random_range(1..=3);
            links.push(
                (0..paths)
                    .map(|_| random_link(&mut rng))
                    .collect::<Vec<_>>(),
            );
        }
        let mut scenario = Scenario {
            seed,
            nodes,
            links,
            groups: Vec::new(),
            faults: Vec::new(),
            faulty,
            quiet: Duration::ZERO,
            quorum: true,
            witness: nodes % 2 == 0,
            witness_outages: Vec::new(),
            fencing: None,
            drift_ppm: vec![0; nodes],
            apart: None,
            scripts: Scripts {
                longest: Duration::from_millis(rng.random_range(2..=60)),
                restore_fails: if rng.random_ratio(1, 3) { 0.0 } else { 0.02 },
                remove_fails: if rng.random_ratio(1, 2) { 0.0 } else { 0.01 },
                recover_fails: 0.1,
                hangs: if rng.random_ratio(1, 2) { 0.0 } else { 0.005 },
                timeout: Duration::from_millis(300),
            },
        };
        for g in 0..rng.random_range(1..=4) {
            let mut members: Vec<usize> = (0..nodes).collect();
            shuffle(&mut rng, &mut members);
            members.truncate(rng.random_range(2..=nodes));
            scenario.groups.push(GroupSpec {
                name: format!("g{g}"),
                nodes: members,
                child: rng.random_ratio(1, 3),
                started: !rng.random_ratio(1, 5),
            });
        }
        let start = 4_000;
        let end = faulty.as_millis();
        // Leave the last seconds for restarts.
        let last = end.saturating_sub(6_000).max(start + 1);
        let faults = rng.random_range(3..=12);
        let mut created = 0;
        for _ in 0..faults {
            let at = Instant::from_millis(rng.random_range(start..last));
            let node = rng.random_range(0..nodes);
            let span = |rng: &mut ChaCha8Rng, lo: u64, hi: u64| {
                Duration::from_millis(rng.random_range(lo..=hi))
            };
            let fault = match rng.random_range(0..100) {
                0..=14 => Fault::Crash {
                    node,
                    apps: rng.random_bool(0.6),
                    down_for: span(&mut rng, 200, 4_000),
                },
                15..=24 => Fault::Stop {
                    node,
                    down_for: span(&mut rng, 200, 3_000),
                },
                25..=34 => Fault::Stall {
                    node,
                    span: span(&mut rng, 100, 1_500),
                },
                35..=46 => {
                    let mut all: Vec<usize> = (0..nodes).collect();
                    shuffle(&mut rng, &mut all);
                    let side = all[..rng.random_range(1..nodes)].to_vec();
                    Fault::Partition {
                        side,
                        span: span(&mut rng, 300, 5_000),
                    }
                }
                47..=55 => Fault::KillApp(rng.random_range(0..scenario.groups.len())),
                56..=61 => Fault::Hint {
                    group: rng.random_range(0..scenario.groups.len()),
                    node,
                    kill: rng.random_bool(0.5),
                },
                _ => {
                    let group = rng.random_range(0..scenario.groups.len());
                    let request = match rng.random_range(0..100) {
                        0..=14 => Admin::InService(group),
                        15..=24 => Admin::OutOfService(group),
                        25..=44 => {
                            let to = scenario.groups[group].nodes
                                [rng.random_range(0..scenario.groups[group].nodes.len())];
                            Admin::Switchover(group, to)
                        }
                        45..=59 => Admin::Standby(rng.random_range(0..nodes), rng.random_bool(0.5)),
                        60..=64 => Admin::Maintenance(span(&mut rng, 200, 2_000)),
                        65..=84 => {
                            created += 1;
                            Admin::Create(format!("c{created}"))
                        }
                        _ => Admin::Cleanup,
                    };
                    Fault::Admin { node, request }
                }
            };
            scenario.faults.push((at, fault));
        }
        // At the end of the faulty span: standby off everywhere, and every
        // failure cleaned up, so that what should run can run. Asked of a
        // node configured like the rest (see `apart` below, drawn from a
        // stream of its own so that the other faults stay as they were).
        let mut arng = ChaCha8Rng::seed_from_u64(seed ^ 0xa9a7_0ff5);
        if nodes >= 3 && arng.random_ratio(1, 5) {
            let total = u32::try_from(nodes).unwrap_or(u32::MAX) + u32::from(scenario.witness);
            let expected = [total + 1, total + 2, 1][arng.random_range(0..3)];
            scenario.apart = Some((arng.random_range(0..nodes), expected));
        }
        let tidier = usize::from(scenario.apart.is_some_and(|(n, _)| n == 0));
        let tidy = Instant::from_millis(last);
        for node in 0..nodes {
            scenario.faults.push((
                tidy,
                Fault::Admin {
                    node: tidier,
                    request: Admin::Standby(node, false),
                },
            ));
        }
        scenario.faults.push((
            tidy + Duration::from_millis(2_000),
            Fault::Admin {
                node: tidier,
                request: Admin::Cleanup,
            },
        ));
        scenario.faults.sort_by_key(|(at, _)| *at);
        // Partitions become cuts on every path across.
        let partitions: Vec<(Instant, Vec<usize>, Duration)> = scenario
            .faults
            .iter()
            .filter_map(|(at, f)| match f {
                Fault::Partition { side, span } => Some((*at, side.clone(), *span)),
                _ => None,
            })
            .collect();
        for (at, side, span) in partitions {
            for a in 0..nodes {
                for b in (a + 1)..nodes {
                    if side.contains(&a) != side.contains(&b) {
                        let i = scenario.pair_index(a, b);
                        for link in &mut scenario.links[i] {
                            link.cuts.push((at, at + span));
                        }
                    }
                }
            }
        }
        // Witness outages, from a stream of their own (the other faults
        // stay what they were for each seed).
        if scenario.witness {
            let mut wrng = ChaCha8Rng::seed_from_u64(seed ^ 0x717e_55ed);
            for _ in 0..wrng.random_range(0..=2) {
                let at = Instant::from_millis(wrng.random_range(start..last));
                let span = Duration::from_millis(wrng.random_range(300..=4_000));
                scenario.witness_outages.push((at, at + span));
            }
        }
        // Fence devices on half the seeds, from a stream of their own.
        let mut frng = ChaCha8Rng::seed_from_u64(seed ^ 0xfe4c_e5e7);
        if frng.random_bool(0.5) {
            scenario.fencing = Some(Fencing {
                longest: Duration::from_millis(frng.random_range(50..=1_500)),
                fails: [0.0, 0.2, 0.5][frng.random_range(0..3)],
                hangs: [0.0, 0.1][frng.random_range(0..2)],
                timeout: Duration::from_secs(3),
            });
        }
        // Clock rates, from a stream of their own: on most seeds every
        // node's clock is off by up to 1% either way, on some by exactly
        // 1% (the worst the drift margin allows for), half fast, half slow.
        let mut crng = ChaCha8Rng::seed_from_u64(seed ^ 0xc10c_d41f);
        let extreme = crng.random_ratio(1, 4);
        scenario.drift_ppm = (0..nodes)
            .map(|_| {
                if extreme {
                    if crng.random_bool(0.5) {
                        10_000
                    } else {
                        -10_000
                    }
                } else {
                    crng.random_range(-10_000..=10_000)
                }
            })
            .collect();
        scenario.quiet = Duration::from_secs(12) + scenario.detection() * 2;
        scenario
    }

    /// Whether node `index` is configured apart (see [`Scenario::apart`]).
    #[must_use]
    pub fn is_apart(&self, index: usize) -> bool {
        self.quorum && self.apart.is_some_and(|(n, _)| n == index)
    }
}

fn shuffle(rng: &mut ChaCha8Rng, items: &mut [usize]) {
    for i in (1..items.len()).rev() {
        let j = rng.random_range(0..=i);
        items.swap(i, j);
    }
}

fn random_link(rng: &mut impl Rng) -> LinkSpec {
    LinkSpec {
        config: PathConfig {
            interval: Duration::from_millis(rng.random_range(20..=100)),
            misses: rng.random_range(3..=5),
            rise: rng.random_range(1..=2),
            priority: rng.random_range(1..=2),
        },
        loss: if rng.random_ratio(1, 2) {
            0.0
        } else {
            rng.random_range(0.0..0.02)
        },
        duplicate: 0.0,
        delay: Duration::from_micros(rng.random_range(50..2_000)),
        jitter: Duration::from_micros(rng.random_range(0..1_000)),
        cuts: Vec::new(),
    }
}
