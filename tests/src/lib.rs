//! heartline's test support: the deterministic cluster simulator that drives
//! many `heartline-core` endpoints over faulty simulated links in simulated
//! time, checking the protocol's promises after every step.
//!
//! Multi-process integration tests against the real daemon live beside it in
//! `tests/tests/` as the daemon grows.

pub mod sim;
