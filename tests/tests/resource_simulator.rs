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
fn without_quorum_the_check_sees_both_sides_run_it() {
    // Without quorum and leases, both sides of a partition run what they
    // lost sight of: the simulator must see it happen, and count it, or
    // its "never twice" with quorum proves nothing.
    let total: u64 = (0..40)
        .filter_map(|seed| {
            let mut scenario = Scenario::from_seed(seed);
            scenario.quorum = false;
            resources::run(&scenario).ok()
        })
        .map(|r| r.split_brain.partition + r.split_brain.unwatched)
        .sum();
    assert!(
        total > 0,
        "no split-brain start in 40 seeds without quorum: the check cannot see them"
    );
}

#[test]
fn with_quorum_watchdogs_reset_nodes_that_could_not_stop() {
    // Daemons killed or stalled with applications running, and stops that
    // hang, are ended by the watchdog: it must happen in the seeds, and
    // nothing ever runs twice (each run checks it).
    let resets: u64 = (0..40)
        .filter_map(|seed| resources::run(&Scenario::from_seed(seed)).ok())
        .map(|r| r.resets)
        .sum();
    assert!(resets > 0, "no watchdog reset in 40 seeds");
}
