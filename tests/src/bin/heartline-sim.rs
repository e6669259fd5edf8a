//! Runs the deterministic cluster simulator and prints what happened.
//!
//! With no arguments it plays the demonstration scenario (a path cut, a
//! node crash, a restart, mailbox traffic) and narrates it. `--seed N`
//! replays one random scenario, `--seeds N` checks many, and `--nodes`,
//! `--paths`, `--seconds` time a large uniform cluster. With
//! `--resources`, `--seed` and `--seeds` run the resource simulator
//! instead: every node's resource brain through crashes, stops, stalls,
//! partitions and administrators' requests, with quorum, leases and
//! watchdogs (`--no-quorum`: without, counting split-brain starts).

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant as WallClock;

use clap::Parser;
use heartline_tests::sim::{self, Scenario, resources};

/// Prints a line; a closed pipe (`| head`) ends the program quietly.
macro_rules! say {
    ($($arg:tt)*) => {
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    };
}

#[derive(Parser)]
#[command(version, about = "heartline's deterministic cluster simulator")]
struct Args {
    /// Replay the random scenario of this seed.
    #[arg(long, conflicts_with_all = ["seeds", "nodes"])]
    seed: Option<u64>,
    /// Check this many random seeds, starting at --first.
    #[arg(long, conflicts_with = "nodes")]
    seeds: Option<u64>,
    /// First seed for --seeds.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Time a uniform cluster of this many nodes (2 to 32).
    #[arg(long, value_parser = clap::value_parser!(u16).range(2..=32))]
    nodes: Option<u16>,
    /// Paths per pair for --nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=4))]
    paths: u8,
    /// Simulated seconds for --nodes.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Print every event.
    #[arg(long)]
    trace: bool,
    /// Run the resource simulator (with --seed or --seeds).
    #[arg(long, conflicts_with = "nodes")]
    resources: bool,
    /// With --resources: the nodes run without quorum, leases and
    /// watchdogs (split-brain starts are counted, not violations).
    #[arg(long, requires = "resources")]
    no_quorum: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.resources {
        return match (args.seed, args.seeds) {
            (Some(seed), _) => replay_resources(seed, args.trace, !args.no_quorum),
            (None, count) => {
                check_resource_seeds(args.first, count.unwrap_or(100), !args.no_quorum)
            }
        };
    }
    if let Some(count) = args.seeds {
        return check_seeds(args.first, count);
    }
    let (scenario, narrate_all) = match (args.seed, args.nodes) {
        (Some(seed), _) => (Scenario::from_seed(seed), args.trace),
        (None, Some(nodes)) => (
            Scenario::benchmark(usize::from(nodes), usize::from(args.paths), args.seconds),
            args.trace,
        ),
        (None, None) => {
            say!(
                "heartline simulator: 3 nodes, 2 paths between each pair, 2% loss, in simulated time."
            );
            say!(
                "Path 0 of nodes 1-2 is cut at 4 s; node 3 crashes at 10 s and restarts at 13 s.\n"
            );
            (Scenario::demo(), args.trace)
        }
    };
    let started = WallClock::now();
    let mut narrate = |line: String| {
        let notable = [" up", " down:", "restarted", "crashes", "restarts as"];
        if narrate_all || notable.iter().any(|w| line.contains(w)) {
            say!("{line}");
        }
    };
    let result = if args.nodes.is_some() && !args.trace {
        sim::run(&scenario)
    } else {
        sim::run_traced(&scenario, &mut narrate)
    };
    let wall = started.elapsed();
    match result {
        Ok(report) => {
            say!("\n{report}");
            say!("  wall time: {:.3} s", wall.as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(violation) => {
            eprintln!("\nFAILED: {violation}");
            ExitCode::FAILURE
        }
    }
}

fn check_seeds(first: u64, count: u64) -> ExitCode {
    let started = WallClock::now();
    let mut failed = 0u64;
    let (mut crashes, mut forgot, mut reincarnations) = (0, 0, 0);
    for seed in first..first.saturating_add(count) {
        match sim::run(&Scenario::from_seed(seed)) {
            Ok(report) => {
                crashes += report.crashes;
                forgot += report.forgot;
                reincarnations += report.reincarnations;
            }
            Err(violation) => {
                eprintln!("FAILED: {violation}");
                failed += 1;
            }
        }
    }
    say!(
        "{} passed, {failed} failed ({count} seeds from {first} in {:.2} s); {crashes} crashes, {forgot} of them restarted with a smaller incarnation (record lost, clock behind), {reincarnations} reincarnations",
        count - failed,
        started.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn replay_resources(seed: u64, trace: bool, quorum: bool) -> ExitCode {
    let mut scenario = resources::Scenario::from_seed(seed);
    scenario.quorum = quorum;
    let started = WallClock::now();
    let result = if trace {
        resources::run_traced(&scenario, &mut |line| say!("{line}"))
    } else {
        resources::run(&scenario)
    };
    match result {
        Ok(report) => {
            say!("{report}");
            say!("  wall time: {:.3} s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(violation) => {
            eprintln!("\nFAILED: {violation}");
            ExitCode::FAILURE
        }
    }
}

fn check_resource_seeds(first: u64, count: u64, quorum: bool) -> ExitCode {
    let started = WallClock::now();
    let mut failed = 0u64;
    let mut total = resources::Report::default();
    // Takeovers in the seeds with fence devices.
    let mut fenced = Vec::new();
    let mut apart = 0u64;
    for seed in first..first.saturating_add(count) {
        let mut scenario = resources::Scenario::from_seed(seed);
        scenario.quorum = quorum;
        match resources::run(&scenario) {
            Ok(report) => {
                total.resets += report.resets;
                total.fences += report.fences;
                total.fence_failures += report.fence_failures;
                if scenario.fencing.is_some() {
                    fenced.extend(report.takeovers.iter().copied());
                }
                apart += u64::from(scenario.quorum && scenario.apart.is_some());
                total.steps += report.steps;
                total.faults += report.faults;
                total.split_brain.partition += report.split_brain.partition;
                total.split_brain.unwatched += report.split_brain.unwatched;
                total.multi_active += report.multi_active;
                total.changes += report.changes;
                total.discarded += report.discarded;
                total.hints += report.hints;
                total.takeovers.extend(report.takeovers);
            }
            Err(violation) => {
                eprintln!("FAILED: {violation}");
                failed += 1;
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    say!(
        "{} passed, {failed} failed ({count} resource seeds from {first} in {wall:.2} s, {:.1} seeds/s)",
        count - failed,
        count as f64 / wall.max(1e-9)
    );
    let mut takeovers = total.takeovers.clone();
    takeovers.sort();
    fenced.sort();
    let quantile = |list: &[heartline_core::Duration], q: f64| {
        list.get(((list.len() as f64 - 1.0) * q).round() as usize)
            .map_or_else(|| "-".to_string(), ToString::to_string)
    };
    let at = |q: f64| quantile(&takeovers, q);
    say!(
        "  {} faults, {} takeovers (p50 {}, p99 {}, max {}), {} multiple-active resolved, {} changes acknowledged, {} discarded at heals",
        total.faults,
        takeovers.len(),
        at(0.5),
        at(0.99),
        at(1.0),
        total.multi_active,
        total.changes,
        total.discarded
    );
    say!(
        "  {}: {} watchdog resets; split-brain starts: {} across partitions, {} beside applications whose daemon was dead or stalled",
        if quorum {
            "with quorum and leases"
        } else {
            "without quorum (--no-quorum)"
        },
        total.resets,
        total.split_brain.partition,
        total.split_brain.unwatched
    );
    say!(
        "  fence devices: {} nodes fenced, {} fence runs failed or hung; {} takeovers in seeds with fence devices (p50 {}, p99 {})",
        total.fences,
        total.fence_failures,
        fenced.len(),
        quantile(&fenced, 0.5),
        quantile(&fenced, 0.99)
    );
    say!(
        "  {} link monitor hints (check now), after the application died or for nothing",
        total.hints
    );
    if quorum {
        say!(
            "  {apart} passing seeds with a node whose [quorum] is configured apart: it started nothing, the others ran without it"
        );
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
