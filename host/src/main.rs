//! `heartline`: the cluster daemon and its command-line interface.
//!
//! Placeholder until the daemon lands: it says so and points at what runs
//! today.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "heartline: the daemon and CLI are not built yet.\n\
         Run the protocol in a simulated cluster: cargo run --release -p heartline-tests --bin heartline-sim"
    );
    ExitCode::from(2)
}
