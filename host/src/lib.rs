//! heartline's host side: the daemon (communication manager, TCP paths,
//! control socket), the CLI's client, and a local cluster on loopback for
//! the demo and the tests.

pub mod appmon;
pub mod comm;
pub mod config;
pub mod control;
#[cfg(unix)]
pub mod demo;
pub mod lcdi;
#[cfg(unix)]
pub mod local_cluster;
pub mod relay;
pub mod resources;
#[cfg(unix)]
pub mod sample_app;
pub mod status;
pub mod sys;
pub mod transport;
