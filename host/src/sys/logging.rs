//! Where heartline's long-running commands log: standard error always
//! (through a queue and a writer thread, so a slow terminal, pipe or
//! journal never delays the caller; lines are dropped if it overflows),
//! plus, for `appmgr`, a log file and syslog. `RUST_LOG` filters
//! (default `info`). Under systemd (standard error is the journal's
//! stream) each line is sent to the journal natively, as an entry with its
//! priority ([`super::journal`]), from the writer thread; should the
//! journal's socket refuse one, it goes to standard error starting with
//! its syslog priority (`<4>` for a warning, as sd-daemon(3) has it),
//! which journald reads the same way. Either way the journal stamps lines
//! itself and `journalctl -p warning` shows warnings and errors only.

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
        .finish(destination());
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    let mut layers: Vec<Boxed> = vec![if std::env::var_os("JOURNAL_STREAM").is_some() {
        stderr
            .event_format(Priority(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false),
            ))
            .with_filter(filter())
            .boxed()
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

/// Where the writer thread writes lines: the journal's socket when
/// standard error is the journal's stream and the socket takes a
/// connection, else standard error.
fn destination() -> Box<dyn std::io::Write + Send> {
    #[cfg(unix)]
    if crate::sys::journal::stderr_is_journal() {
        let socket = std::path::Path::new(crate::sys::journal::SOCKET);
        if let Ok(journal) =
            crate::sys::journal::Journal::connect(socket, "heartline", std::io::stderr())
        {
            return Box::new(journal);
        }
    }
    Box::new(std::io::stderr())
}

/// A line format for the journal: the syslog priority of the event's level
/// first (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug and trace),
/// which journald takes as the line's priority and removes.
#[derive(Debug)]
struct Priority<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Priority<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn journal_lines_start_with_their_priority() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(Priority(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false),
            ))
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("quorum lost");
            tracing::warn!("path down");
            tracing::info!("path up");
            tracing::debug!("detail");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let starts: Vec<&str> = text.lines().map(|l| &l[..3]).collect();
        assert_eq!(starts, ["<3>", "<4>", "<6>", "<7>"], "{text}");
        assert!(
            text.contains("<4> WARN") && text.contains("path down"),
            "{text}"
        );
    }
}
