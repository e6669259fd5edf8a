//! The deterministic simulator.
//!
//! A [`Scenario`] (built from a seed) names the nodes, the paths between each
//! pair with their timing and faults (loss, delay, jitter that reorders,
//! duplication, cuts), node crashes and restarts, and the mailbox traffic.
//! [`run`] plays it out in simulated time: no clock is read and nothing
//! sleeps, so the same seed gives the same run on every machine, and a
//! failing seed is replayed with `cargo run -p heartline-tests --bin
//! heartline-sim -- --seed N`.
//!
//! After every step the [`oracle`] checks that no node was declared down
//! while a path to it still delivered, that a silent node was declared down
//! within `interval × (misses + 1)`, that mailbox messages arrived exactly
//! once and in order, and that memory stayed bounded.
//!
//! [`resources`] runs the resource brain of every node on top of the same
//! network and endpoints, with its own scenarios and promises.

mod net;
pub mod oracle;
pub mod resources;
mod scenario;
mod world;

pub use oracle::Violation;
pub use scenario::{Crash, LinkSpec, Scenario};
pub use world::{Report, SimEndpoint, run, run_traced};
