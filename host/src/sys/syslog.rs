//! A `tracing` writer that sends each log line to the local syslog socket
//! (`/dev/log`, which journald also serves) as one datagram in the
//! traditional `<PRI>TAG[PID]: MESSAGE` form, facility daemon. Best
//! effort: a missing socket is reported once by [`Syslog::open`] and
//! lines are then dropped, never delayed.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The default socket.
pub const DEFAULT_SOCKET: &str = "/dev/log";

/// Where lines go.
#[derive(Debug)]
pub struct Syslog {
    socket: UnixDatagram,
    path: PathBuf,
    tag: String,
}

impl Syslog {
    /// A writer to `path`, tagging lines with `tag`; an error if nothing
    /// listens there.
    pub fn open(path: PathBuf, tag: &str) -> io::Result<Syslog> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(&path)?;
        Ok(Syslog {
            socket,
            path,
            tag: format!("{tag}[{}]", std::process::id()),
        })
    }
}

/// One log line being written; sent when dropped.
#[derive(Debug)]
pub struct Line<'a> {
    syslog: &'a Syslog,
    severity: u8,
    text: Vec<u8>,
}

impl io::Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.text.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        const FACILITY_DAEMON: u8 = 3;
        let text = String::from_utf8_lossy(&self.text);
        let datagram = format!(
            "<{}>{}: {}",
            FACILITY_DAEMON * 8 + self.severity,
            self.syslog.tag,
            text.trim_end()
        );
        if self.syslog.socket.send(datagram.as_bytes()).is_err() {
            // The listener may have restarted: one fresh try, then drop.
            let _ = self
                .syslog
                .socket
                .send_to(datagram.as_bytes(), &self.syslog.path);
        }
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        self.line(6)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a> {
        let severity = match *meta.level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        self.line(severity)
    }
}

impl Syslog {
    fn line(&self, severity: u8) -> Line<'_> {
        Line {
            syslog: self,
            severity,
            text: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::io::Write;

    #[test]
    fn a_line_is_one_datagram_with_priority_and_tag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let listener = UnixDatagram::bind(&path).unwrap();
        let syslog = Syslog::open(path, "heartline-appmgr").unwrap();
        {
            let mut line = syslog.line(3);
            write!(line, "lost contact").unwrap();
            writeln!(line, " with guest1").unwrap();
        }
        let mut buffer = [0u8; 256];
        let n = listener.recv(&mut buffer).unwrap();
        let text = std::str::from_utf8(&buffer[..n]).unwrap();
        let expected = format!(
            "<27>heartline-appmgr[{}]: lost contact with guest1",
            std::process::id()
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn opening_a_missing_socket_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Syslog::open(dir.path().join("none"), "x").is_err());
    }
}
