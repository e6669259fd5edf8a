//! The systemd journal's native protocol: each log line sent as one
//! datagram of fields (`PRIORITY`, `SYSLOG_IDENTIFIER`, `MESSAGE`) to
//! journald's socket, so `journalctl -p warning` filters by the level each
//! line was logged at and the entries are stored as the journal's own
//! (`_TRANSPORT=journal`). Used when standard error is the journal's
//! stream (`$JOURNAL_STREAM`, as systemd.exec(5) says to check); lines are
//! written from the logger's writer thread, never from the caller's, and a
//! line the socket refuses goes to standard error instead.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

/// journald's native socket.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// The longest message sent whole; a longer one is cut there (a datagram
/// must fit the socket's send buffer, about 200 KiB by default).
const MAX_MESSAGE: usize = 64 * 1024;

/// Whether standard error is the journal's stream: `$JOURNAL_STREAM` holds
/// the device and inode of the stream systemd connected, and they are
/// standard error's (not a stream inherited by a child whose output was
/// redirected).
#[must_use]
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream.to_str() == Some(format!("{}:{}", stderr.dev(), stderr.ino()).as_str())
}

/// Writes each line it is given (`<4> WARN ...`, the syslog priority
/// first, as [`super::logging`] formats lines for the journal) as one
/// journal entry; `fallback` takes the line as it is if the socket
/// refuses it.
#[derive(Debug)]
pub struct Journal<W> {
    socket: UnixDatagram,
    identifier: String,
    fallback: W,
}

impl<W: Write> Journal<W> {
    /// Connects to the journal's socket at `path`. A send waits at most a
    /// second (journald busy), then the line goes to `fallback`.
    pub fn connect(path: &Path, identifier: &str, fallback: W) -> std::io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        socket.set_write_timeout(Some(Duration::from_secs(1)))?;
        Ok(Journal {
            socket,
            identifier: identifier.to_string(),
            fallback,
        })
    }
}

impl<W: Write> Write for Journal<W> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let entry = entry(&self.identifier, line);
        if self.socket.send(&entry).is_err() {
            self.fallback.write_all(line)?;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.fallback.flush()
    }
}

/// The datagram for one line: its `<N>` prefix as `PRIORITY` (6, info,
/// without one), the rest without its final newline and leading spaces as
/// `MESSAGE`.
#[must_use]
pub fn entry(identifier: &str, line: &[u8]) -> Vec<u8> {
    let (priority, text) = match line {
        [b'<', p @ b'0'..=b'7', b'>', rest @ ..] => (*p, rest),
        _ => (b'6', line),
    };
    // The level's word is padded (` INFO`); the journal has no columns.
    let text = text.strip_suffix(b"\n").unwrap_or(text).trim_ascii_start();
    let text = &text[..text.len().min(MAX_MESSAGE)];
    let mut entry = Vec::with_capacity(text.len() + identifier.len() + 64);
    field(&mut entry, "PRIORITY", &[priority]);
    field(&mut entry, "SYSLOG_IDENTIFIER", identifier.as_bytes());
    field(&mut entry, "MESSAGE", text);
    entry
}

/// One field: `NAME=value` on a line, or, for a value with a newline in
/// it, the name on its line, the value's length (64-bit little-endian),
/// the value and a newline.
fn field(entry: &mut Vec<u8>, name: &str, value: &[u8]) {
    entry.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        entry.push(b'=');
    }
    entry.extend_from_slice(value);
    entry.push(b'\n');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_line_becomes_priority_identifier_and_message() {
        assert_eq!(
            entry("heartline", b"<4> WARN heartline::comm: path down\n"),
            b"PRIORITY=4\nSYSLOG_IDENTIFIER=heartline\nMESSAGE=WARN heartline::comm: path down\n"
        );
        // No prefix: info.
        assert_eq!(
            entry("heartline", b"plain\n"),
            b"PRIORITY=6\nSYSLOG_IDENTIFIER=heartline\nMESSAGE=plain\n"
        );
    }

    #[test]
    fn a_message_with_newlines_is_sent_with_its_length() {
        let sent = entry("heartline", b"<3>first\nsecond\n");
        let mut want = b"PRIORITY=3\nSYSLOG_IDENTIFIER=heartline\nMESSAGE\n".to_vec();
        want.extend_from_slice(&12u64.to_le_bytes());
        want.extend_from_slice(b"first\nsecond\n");
        assert_eq!(sent, want);
    }

    #[test]
    fn a_huge_line_is_cut() {
        let mut line = b"<6>".to_vec();
        line.extend(std::iter::repeat_n(b'x', MAX_MESSAGE * 2));
        assert!(entry("heartline", &line).len() < MAX_MESSAGE + 100);
    }

    /// Over a real datagram socket: each line one datagram; a line the
    /// socket refuses (its reader gone) goes to the fallback as it was.
    #[test]
    fn lines_go_to_the_socket_and_to_the_fallback_when_it_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let journald = UnixDatagram::bind(&path).unwrap();
        let mut journal = Journal::connect(&path, "heartline", Vec::new()).unwrap();
        journal.write_all(b"<4>one\n").unwrap();
        journal.write_all(b"<6>two\n").unwrap();
        let mut buf = [0u8; 256];
        let n = journald.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            b"PRIORITY=4\nSYSLOG_IDENTIFIER=heartline\nMESSAGE=one\n"
        );
        let n = journald.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            b"PRIORITY=6\nSYSLOG_IDENTIFIER=heartline\nMESSAGE=two\n"
        );
        drop(journald);
        journal.write_all(b"<3>three\n").unwrap();
        assert_eq!(journal.fallback, b"<3>three\n");
    }
}
