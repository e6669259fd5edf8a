//! The resource simulator: the brains of every node, on the real protocol
//! core and admin channel, through seeded crashes (of daemons, or of whole
//! nodes), clean stops, stalls, partitions, failing applications and
//! scripts, and administrators' requests on random nodes; see [`world`]
//! for the promises checked after every step. A failing seed prints the
//! command that replays it:
//! `cargo run --release -p heartline-tests --bin heartline-sim -- --resources --seed N --trace`.

pub mod scenario;
pub mod world;

pub use scenario::{Admin, Fault, GroupSpec, Scenario, Scripts};
pub use world::{Report, SplitBrain, Violation, run, run_traced};
