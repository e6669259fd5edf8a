//! heartline-brain: the resource brain, sans-IO.
//!
//! Everything heartline decides about resources lives here, as a state
//! machine in the shape of `heartline-core`'s `Endpoint`: the configuration
//! and its rules ([`model`]), hierarchy groups ([`groups`]), what brains
//! tell each other ([`message`]) and how those messages are cut into
//! mailbox messages ([`link`]), and the [`brain`] itself: placement, the
//! coordinator and configuration versions, the start-up plan, local
//! recovery against failover, switchover, fail-counts, clean stops.
//!
//! The crate has no runtime, clock, socket, file or process: it cannot
//! depend on one (see its `Cargo.toml`). The daemon's resource shell feeds
//! it and carries out what it asks; the simulator in `heartline-tests`
//! drives the brains of many nodes over the real protocol core through
//! thousands of seeded faults.

#![forbid(unsafe_code)]

pub mod action;
pub mod api;
pub mod brain;
pub mod groups;
pub mod link;
pub mod message;
pub mod model;
pub mod port;

pub use brain::{
    Brain, BrainConfig, Decision, FastGuard, FastLease, FenceAction, FenceConfig, FenceId,
    FenceStatus, Input, JobId, KitInfo, Level, Membership, NoQuorum, OnStop, Output, Persist,
    QuorumConfig, QuorumStatus, Stats, Stored, default_margin,
};
