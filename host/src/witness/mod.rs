//! `heartline witness`: a small server on a third machine that holds one
//! quorum vote for each cluster it serves (several at once, like
//! corosync-qnetd), for clusters of two (or an even number of) nodes
//! without a dongle. Each cluster's nodes reach it as a peer of kind
//! `witness` over the protocol's own TCP paths, with frames authenticated
//! by that cluster's key; they ask for the vote on a reserved mailbox and
//! the core's [`heartline_core::witness::Witness`] decides who gets it.
//! [`config`] owns its configuration file, [`server`] runs it.

pub mod config;
pub mod server;
