//! heartline's host side: the daemon (communication manager, TCP paths,
//! control socket), the CLI's client, and a local cluster on loopback for
//! the demo and the tests.

pub mod appmon;
pub mod comm;
pub mod config;
pub mod control;
pub mod demo;
pub mod lcdi;
pub mod resources;
pub mod status;
pub mod sys;
pub mod transport;
