//! What a simulation run does, generated from a seed.

use heartline_core::{Duration, Instant, PathConfig};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One path between a pair of nodes, with its faults (both directions alike).
#[derive(Clone, Debug)]
pub struct LinkSpec {
    /// Heartbeat timing, the same at both ends.
    pub config: PathConfig,
    /// Probability a frame is lost.
    pub loss: f64,
    /// Probability a frame is delivered twice.
    pub duplicate: f64,
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra random delay, uniform in `0..jitter`; frames overtake each other.
    pub jitter: Duration,
    /// Spans during which the link delivers nothing.
    pub cuts: Vec<(Instant, Instant)>,
}

impl LinkSpec {
    /// Whether the link is cut at `at`.
    #[must_use]
    pub fn is_cut(&self, at: Instant) -> bool {
        self.cuts.iter().any(|&(from, to)| from <= at && at < to)
    }
}

/// A node crash: at `at` the node's endpoint vanishes; `restart_after` later
/// it starts again with a new incarnation.
#[derive(Clone, Copy, Debug)]
pub struct Crash {
    /// Index of the node (0-based).
    pub node: usize,
    /// When it crashes.
    pub at: Instant,
    /// How long it stays dead.
    pub restart_after: Duration,
    /// It restarts with its incarnation's record lost and its clock behind
    /// the one that gave the earlier run its number: with an incarnation
    /// smaller than any it used, which peers that remember the earlier run
    /// drop as stale until the core takes the next one after it.
    pub forgets: bool,
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The seed it was made from (also seeds the faults).
    pub seed: u64,
    /// Number of nodes, 2..=32.
    pub nodes: usize,
    /// For each pair `(a, b)` with `a < b`, in [`Scenario::pair_index`] order,
    /// its paths.
    pub links: Vec<Vec<LinkSpec>>,
    /// Crashes during the faulty phase.
    pub crashes: Vec<Crash>,
    /// Length of the faulty phase, with traffic.
    pub faulty: Duration,
    /// Then a quiet phase without faults or traffic, after which everything
    /// must be up and every message settled.
    pub heal: Duration,
    /// Mean mailbox messages sent per node per second.
    pub messages_per_second: f64,
}

/// The index of the pair of nodes `a` and `b` (either order) among the
/// `nodes * (nodes - 1) / 2` pairs of `nodes` nodes, in order `(0, 1),
/// (0, 2), ..., (1, 2), ...`.
#[must_use]
pub fn pair_index(nodes: usize, a: usize, b: usize) -> usize {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    lo * nodes - lo * (lo + 1) / 2 + (hi - lo - 1)
}

impl Scenario {
    /// The index of pair `(a, b)` in [`Scenario::links`].
    #[must_use]
    pub fn pair_index(&self, a: usize, b: usize) -> usize {
        pair_index(self.nodes, a, b)
    }

    /// The paths between `a` and `b`.
    #[must_use]
    pub fn paths(&self, a: usize, b: usize) -> &[LinkSpec] {
        &self.links[self.pair_index(a, b)]
    }

    /// When the run ends.
    #[must_use]
    pub fn end(&self) -> Instant {
        Instant::ZERO + self.faulty + self.heal
    }

    /// A random scenario: 2 to 8 nodes (one seed in 20 has 16 to 32), 1 to 4
    /// paths per pair, random timing and faults, crashes and restarts.
    #[must_use]
    pub fn from_seed(seed: u64) -> Scenario {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let nodes = if rng.random_ratio(1, 20) {
            rng.random_range(16..=32)
        } else {
            rng.random_range(2..=8)
        };
        // Large clusters get a shorter run: their cost grows with the square
        // of the node count.
        let faulty = Duration::from_secs(if nodes > 8 {
            rng.random_range(4..=8)
        } else {
            rng.random_range(10..=30)
        });
        let mut scenario = Scenario {
            seed,
            nodes,
            links: Vec::new(),
            crashes: Vec::new(),
            faulty,
            heal: Duration::ZERO,
            messages_per_second: if nodes > 8 {
                2.0
            } else {
                rng.random_range(0.0..50.0)
            },
        };
        let mut longest_detection = Duration::ZERO;
        for _ in 0..nodes * (nodes - 1) / 2 {
            let paths = rng.random_range(1..=4);
            let pair: Vec<LinkSpec> = (0..paths).map(|_| random_link(&mut rng, faulty)).collect();
            for link in &pair {
                let c = link.config;
                longest_detection = longest_detection.max(c.interval * (c.misses + c.rise + 1));
            }
            scenario.links.push(pair);
        }
        // Drawn apart, so that the rest of a seed's scenario stays as it was
        // before restarts could forget.
        let mut forgetting = ChaCha8Rng::seed_from_u64(seed ^ 0xf0_4e75);
        for node in 0..nodes {
            if rng.random_ratio(1, 4) {
                let at = Instant::from_millis(rng.random_range(500..faulty.as_millis()));
                let restart_after = Duration::from_millis(rng.random_range(10..5_000));
                scenario.crashes.push(Crash {
                    node,
                    at,
                    restart_after,
                    forgets: forgetting.random_ratio(1, 3),
                });
            }
        }
        // Long enough for every path to rise again and every message to be
        // resent at the longest backoff.
        scenario.heal = Duration::from_secs(8) + longest_detection + Duration::from_secs(5);
        scenario
    }

    /// The benchmark: `nodes` nodes, `paths` paths per pair at the default
    /// timing, 1% loss and a little jitter, light traffic, no crashes.
    #[must_use]
    pub fn benchmark(nodes: usize, paths: usize, seconds: u64) -> Scenario {
        let link = LinkSpec {
            config: PathConfig::default(),
            loss: 0.01,
            duplicate: 0.0,
            delay: Duration::from_micros(200),
            jitter: Duration::from_micros(300),
            cuts: Vec::new(),
        };
        Scenario {
            seed: 0,
            nodes,
            links: vec![vec![link; paths]; nodes * (nodes - 1) / 2],
            crashes: Vec::new(),
            faulty: Duration::from_secs(seconds),
            heal: Duration::ZERO,
            messages_per_second: 1.0,
        }
    }
}

fn random_link(rng: &mut impl Rng, faulty: Duration) -> LinkSpec {
    let config = PathConfig {
        interval: Duration::from_millis(rng.random_range(20..=250)),
        misses: rng.random_range(2..=6),
        rise: rng.random_range(1..=3),
        priority: rng.random_range(1..=3),
    };
    let mut cuts = Vec::new();
    for _ in 0..rng.random_range(0..=3) {
        let start = rng.random_range(0..faulty.as_millis());
        let length = rng.random_range(10..4_000);
        cuts.push((
            Instant::from_millis(start),
            Instant::from_millis((start + length).min(faulty.as_millis())),
        ));
    }
    let slow_line = rng.random_ratio(1, 4);
    LinkSpec {
        config,
        loss: if rng.random_ratio(1, 3) {
            0.0
        } else {
            rng.random_range(0.0..0.3)
        },
        duplicate: if rng.random_ratio(1, 2) {
            0.0
        } else {
            rng.random_range(0.0..0.05)
        },
        // A serial line at 115200 baud takes about 6 ms per heartbeat.
        delay: Duration::from_micros(if slow_line {
            rng.random_range(5_000..20_000)
        } else {
            rng.random_range(50..2_000)
        }),
        jitter: Duration::from_micros(rng.random_range(0..10_000)),
        cuts,
    }
}

impl Scenario {
    /// The demonstration: 3 nodes, 2 paths per pair. Path 0 between nodes 1
    /// and 2 is cut from 4 s to 8 s (the nodes stay up over path 1); node 3
    /// crashes at 10 s (nodes 1 and 2 declare it down) and restarts at 13 s
    /// (they see the new incarnation); mailbox traffic runs throughout.
    #[must_use]
    pub fn demo() -> Scenario {
        let link = LinkSpec {
            config: PathConfig::default(),
            loss: 0.02,
            duplicate: 0.01,
            delay: Duration::from_micros(300),
            jitter: Duration::from_micros(500),
            cuts: Vec::new(),
        };
        let mut links = vec![vec![link.clone(), link]; 3];
        links[0][0]
            .cuts
            .push((Instant::from_millis(4_000), Instant::from_millis(8_000)));
        Scenario {
            seed: 0,
            nodes: 3,
            links,
            crashes: vec![Crash {
                node: 2,
                at: Instant::from_millis(10_000),
                restart_after: Duration::from_secs(3),
                forgets: false,
            }],
            faulty: Duration::from_secs(16),
            heal: Duration::from_secs(4),
            messages_per_second: 20.0,
        }
    }
}
