//! Hundreds of random clusters in simulated time, each checked after every
//! step (see `heartline_tests::sim`). A failure names its seed and the one
//! command that replays it.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use heartline_core::Duration;
use heartline_tests::sim::{self, Scenario};

/// Seeds checked on every test run, split in two so both cores work.
const SEEDS: u64 = 400;

fn check(seeds: std::ops::Range<u64>) {
    let failures: Vec<String> = seeds
        .filter_map(|seed| sim::run(&Scenario::from_seed(seed)).err())
        .map(|violation| violation.to_string())
        .collect();
    assert!(
        failures.is_empty(),
        "{} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn random_clusters_first_half() {
    check(0..SEEDS / 2);
}

#[test]
fn random_clusters_second_half() {
    check(SEEDS / 2..SEEDS);
}

#[test]
fn demo_scenario_detects_the_crash_keeps_nodes_up_through_the_cut_and_sees_the_restart() {
    let report = sim::run(&Scenario::demo()).expect("invariants hold");
    // Node 3 crashed once: nodes 1 and 2 each declared it down once; the cut
    // of one path between 1 and 2 took no node down.
    assert_eq!(report.tally.node_downs, 2);
    assert_eq!(report.restarts_seen, 2);
    let default = heartline_core::PathConfig::default();
    for detection in &report.tally.detection {
        assert!(
            *detection >= default.down_after()
                && *detection <= default.interval * (default.misses + 1)
        );
    }
    assert!(report.tally.delivered > 0);
    assert!(
        report.path_downs >= 2 + 4,
        "the cut path at both ends, and node 3's four paths"
    );
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let a = sim::run(&Scenario::from_seed(7)).expect("seed 7 passes");
    let b = sim::run(&Scenario::from_seed(7)).expect("seed 7 passes");
    assert_eq!(
        (a.steps, a.net.sent, a.tally.sent, a.path_downs),
        (b.steps, b.net.sent, b.tally.sent, b.path_downs)
    );
}

#[test]
fn thirty_two_nodes_with_four_paths_each_converge() {
    let mut scenario = Scenario::benchmark(32, 4, 3);
    scenario.heal = Duration::from_secs(1);
    let report = sim::run(&scenario).expect("invariants hold");
    assert_eq!(report.paths, 32 * 31 / 2 * 4);
    assert_eq!(report.tally.node_downs, 0);
}
