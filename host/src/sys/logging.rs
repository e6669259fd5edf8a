//! Where heartline's long-running commands log: standard error always
//! (through a queue and a writer thread, so a slow terminal, pipe or
//! journal never delays the caller; lines are dropped if it overflows),
//! plus, for `appmgr`, a log file and syslog. `RUST_LOG` filters
//! (default `info`); under systemd the journal stamps lines itself.

use std::fs::File;
use std::sync::Mutex;

use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Lines the standard-error queue holds before it drops new ones. Its
/// slots are allocated and touched at start (and, with memory locked,
/// stay resident): the library's default of 128,000 took 4 MB, more than
/// a fifth of the idle daemon; 8,192 lines is 256 KiB, and more than a
/// failover's worth of lines waiting on a stalled journal.
const QUEUED_LINES: usize = 8192;

/// Keeps the standard-error writer thread alive; drop it last.
#[derive(Debug)]
pub struct Guard {
    _writer: tracing_appender::non_blocking::WorkerGuard,
}

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the logger: standard error, plus every line to `file` and
/// warnings and errors to `syslog` when given.
pub fn init(file: Option<File>, #[cfg(unix)] syslog: Option<crate::sys::syslog::Syslog>) -> Guard {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .lossy(true)
        .finish(std::io::stderr());
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    let mut layers: Vec<Boxed> = vec![if std::env::var_os("JOURNAL_STREAM").is_some() {
        stderr.without_time().with_filter(filter()).boxed()
    } else {
        stderr.with_filter(filter()).boxed()
    }];
    if let Some(file) = file {
        layers.push(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .with_filter(filter())
                .boxed(),
        );
    }
    #[cfg(unix)]
    if let Some(syslog) = syslog {
        layers.push(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_target(false)
                .with_writer(syslog)
                .with_filter(tracing_subscriber::filter::LevelFilter::WARN)
                .boxed(),
        );
    }
    tracing_subscriber::registry().with(layers).init();
    Guard { _writer: guard }
}
