//! The lowest layer: what heartline asks of the operating system, knowing
//! nothing of clusters. Where logs go ([`logging`], and [`syslog`] and
//! the systemd journal's native protocol, [`journal`], on Unix), and what the daemon asks of the system: locked memory,
//! real-time priority, systemd's notifications, shutdown signals
//! ([`system`]); supervising child processes by process group, with the
//! tails of their output ([`process`]); and feeding the watchdog device
//! ([`watchdog`]); users, groups, private modes and the descriptor limit
//! ([`perms`]); giving memory back after a burst of connections
//! ([`memory`]).

#[cfg(unix)]
pub mod journal;
pub mod logging;
pub mod memory;
pub mod perms;
pub mod process;
#[cfg(unix)]
pub mod syslog;
pub mod system;
pub mod watchdog;
