//! The demonstration, `heartline demo` (a guided tour of a 3-node cluster
//! on loopback: [`run`], Unix only), and what it shares with the
//! integration tests and the benchmarks: a whole cluster of real daemons on
//! this machine ([`local_cluster`]), a TCP relay that can cut a path
//! ([`relay`]), a small application to protect ([`sample_app`]), and a
//! stand-in guest running a real appserver ([`local_guest`]).

#[cfg(unix)]
pub mod local_cluster;
#[cfg(unix)]
pub mod local_guest;
pub mod relay;
#[cfg(unix)]
pub mod sample_app;
#[cfg(unix)]
mod tour;

#[cfg(unix)]
pub use tour::run;
