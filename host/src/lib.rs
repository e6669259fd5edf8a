//! heartline's host side: the daemon (communication manager, TCP paths,
//! control socket), the CLI's client, and a local cluster on loopback for
//! the demo and the tests.

pub mod appmon;
pub mod cli;
pub mod comm;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod resources;
pub mod sys;
pub mod transport;
