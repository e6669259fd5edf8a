//! A thousand random clusters of resource brains in simulated time, each
//! checked after every step (see `heartline_tests::sim::resources`). A
//! failure names its seed and the one command that replays it.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use heartline_tests::sim::resources::{self, Scenario};

/// Seeds checked on every test run, in four parts so both cores work.
const SEEDS: u64 = 1000;

fn check(seeds: std::ops::Range<u64>) {
    let failures: Vec<String> = seeds
        .filter_map(|seed| resources::run(&Scenario::from_seed(seed)).err())
        .map(|violation| violation.to_string())
        .collect();
    assert!(
        failures.is_empty(),
        "{} resource seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn resource_clusters_first_quarter() {
    check(0..SEEDS / 4);
}

#[test]
fn resource_clusters_second_quarter() {
    check(SEEDS / 4..SEEDS / 2);
}

#[test]
fn resource_clusters_third_quarter() {
    check(SEEDS / 2..SEEDS * 3 / 4);
}

#[test]
fn resource_clusters_fourth_quarter() {
    check(SEEDS * 3 / 4..SEEDS);
}

#[test]
fn the_same_resource_seed_replays_the_same_run() {
    let a = resources::run(&Scenario::from_seed(11)).unwrap();
    let b = resources::run(&Scenario::from_seed(11)).unwrap();
    assert_eq!(
        (a.steps, a.scripts, a.messages, a.takeovers),
        (b.steps, b.scripts, b.messages, b.takeovers)
    );
}

#[test]
fn partitions_are_counted_not_hidden() {
    // Without quorum, both sides of a partition run what they lost sight
    // of: the simulator must see it happen, and count it.
    let total: u64 = (0..40)
        .filter_map(|seed| resources::run(&Scenario::from_seed(seed)).ok())
        .map(|r| r.split_brain.partition)
        .sum();
    assert!(
        total > 0,
        "no split-brain start in 40 seeds: the check cannot see them"
    );
}
