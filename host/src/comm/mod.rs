//! The communication manager (LCM): the protocol endpoint driven on a
//! real-time thread of its own ([`manager`]), the mailboxes, node and path
//! status, and provisioning the heartbeat dongles ([`provision`]).

pub mod manager;
pub mod provision;
