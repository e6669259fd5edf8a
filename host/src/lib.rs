//! heartline's host side: the daemon, its command-line interface, guest
//! application monitoring, and the demo. The source is laid out by job,
//! one folder per job, in layers: a module uses its own layer and the ones
//! below it, never one above (checked by a test, `layering.rs`).
//! Lowest first:
//!
//! | layer | owns |
//! |-------|------|
//! | [`sys`] | logging, syslog, OS settings, process supervision |
//! | [`config`] | the configuration file and its checks |
//! | [`transport`] | TCP, UDP and serial paths: bytes in and out |
//! | [`comm`] | the communication manager: endpoint, mailboxes, status, dongles |
//! | [`witness`] | `heartline witness`: a third machine's quorum vote for clusters |
//! | `ip` (Linux) | the IP kit: virtual addresses through netlink, ARP and neighbour discovery |
//! | [`resources`] | the resource manager, kits, scripts, the configuration database |
//! | [`appmon`] | guest application monitoring: appserver, appmgr, TLS |
//! | [`control`] | the CLI protocol, its server, its client, the socket or pipe |
//! | [`daemon`] | wiring the daemon together |
//! | [`cli`] | the commands and their output |
//! | [`demo`] | the demo, and the local cluster the tests and benchmarks use |
//!
//! The binary (`main.rs`) stands outside the layers: it dispatches each
//! command to its module.

// Lowest layer first; the blank lines keep rustfmt from sorting them.
pub mod sys;

pub mod config;

pub mod transport;

pub mod comm;

pub mod witness;

#[cfg(target_os = "linux")]
pub mod ip;

pub mod resources;

pub mod appmon;

pub mod control;

pub mod daemon;

pub mod cli;

pub mod demo;

#[cfg(test)]
mod layering;
