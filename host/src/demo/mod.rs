//! The demonstration, `heartline demo` (a guided tour of a 3-node cluster
//! on loopback: [`run`], Unix only), and what it shares with the
//! integration tests and the benchmarks: a whole cluster of real daemons on
//! this machine ([`local_cluster`]), a TCP relay that can cut a path
//! ([`relay`]), a small application to protect ([`sample_app`], with the
//! HTTP responder of the hidden `sample-http` command, which builds
//! everywhere as that command always has), a stand-in guest running a
//! real appserver ([`local_guest`]), and the shipped recovery kits built in
//! ([`kits`]), which they install in their own directories.

pub mod kits;
#[cfg(unix)]
pub mod local_cluster;
#[cfg(unix)]
pub mod local_guest;
pub mod relay;
pub mod sample_app;
#[cfg(unix)]
mod tour;

#[cfg(unix)]
pub use tour::run;
