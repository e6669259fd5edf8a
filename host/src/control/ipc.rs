//! The local transport of the control API: a Unix socket on Unix, a named
//! pipe on Windows (`control_socket = '\\.\pipe\heartline'`). Everything
//! above this module sees a pair of byte streams.
//!
//! Who may connect: on Unix the socket's mode and every connection's
//! credentials (`SO_PEERCRED`, judged by the control server); on Windows
//! the pipe's security descriptor ([`PIPE_SECURITY`]), set on every
//! instance of the pipe, which lets in only LocalSystem, the built-in
//! Administrators and the daemon's own user, and no remote client.

use std::io;
use std::path::Path;

use tokio::io::{AsyncRead, AsyncWrite};

#[cfg(unix)]
use crate::sys::perms;

/// The control pipe's security descriptor on Windows, in SDDL: a protected
/// DACL (nothing inherited) that denies network logons and gives full
/// access to LocalSystem (`SY`), the built-in Administrators (`BA`) and the
/// pipe's owner (`OW`, the daemon's user); everyone else is refused by
/// Windows before the daemon sees them. Compiled on every platform so that
/// its tests run here.
#[cfg_attr(not(windows), allow(dead_code))]
pub const PIPE_SECURITY: &str = "D:P(D;;GA;;;NU)(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;OW)";

/// The reading half of a control connection.
pub type Reader = Box<dyn AsyncRead + Unpin + Send>;
/// The writing half of a control connection.
pub type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// Connects to the daemon listening at `path`.
pub async fn connect(path: &Path) -> io::Result<(Reader, Writer)> {
    #[cfg(unix)]
    {
        let (read, write) = tokio::net::UnixStream::connect(path).await?.into_split();
        Ok((Box::new(read), Box::new(write)))
    }
    #[cfg(windows)]
    {
        let pipe = tokio::net::windows::named_pipe::ClientOptions::new().open(path)?;
        let (read, write) = tokio::io::split(pipe);
        Ok((Box::new(read), Box::new(write)))
    }
}

/// Connects without an async runtime, for the demo and the tests.
pub fn connect_blocking(
    path: &Path,
) -> io::Result<(Box<dyn io::Read + Send>, Box<dyn io::Write + Send>)> {
    #[cfg(unix)]
    {
        let stream = std::os::unix::net::UnixStream::connect(path)?;
        Ok((Box::new(stream.try_clone()?), Box::new(stream)))
    }
    #[cfg(windows)]
    {
        let pipe = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok((Box::new(pipe.try_clone()?), Box::new(pipe)))
    }
}

/// Who is at the other end of a control connection, by the kernel's
/// word (`SO_PEERCRED`); unknown on Windows, where the pipe's own security
/// decides who may open it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The client process's user id.
    pub uid: u32,
    /// Its group id.
    pub gid: u32,
}

/// A listening control endpoint.
#[derive(Debug)]
pub struct Listener {
    #[cfg(unix)]
    inner: tokio::net::UnixListener,
    #[cfg(windows)]
    inner: interprocess::os::windows::named_pipe::tokio::PipeListener<
        interprocess::os::windows::named_pipe::pipe_mode::Bytes,
        interprocess::os::windows::named_pipe::pipe_mode::Bytes,
    >,
}

impl Listener {
    /// Listens at `path`, replacing a stale socket file but refusing to
    /// steal one a running daemon answers on. On Unix the socket is mode
    /// 0660 with group `gid`, or 0600 without one, whatever the umask; its
    /// directory, when it is the daemon's own, 0750 with that group (see
    /// [`perms::socket_dir`]).
    pub async fn bind(path: &Path, gid: Option<u32>) -> Result<Listener, String> {
        #[cfg(unix)]
        {
            match perms::socket_dir(path, gid)? {
                perms::SocketDir::Own => {}
                perms::SocketDir::Shared(dir) => tracing::warn!(
                    "the control socket's directory {dir} is shared, so its mode is left as it is (the socket's own mode and the credential check protect it): a directory of its own, such as /run/heartline, is better"
                ),
            }
            if path.exists() {
                if connect(path).await.is_ok() {
                    return Err(format!(
                        "{} is in use: is another heartline daemon running?",
                        path.display()
                    ));
                }
                let _ = std::fs::remove_file(path);
            }
            let inner = tokio::net::UnixListener::bind(path)
                .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
            // Connecting needs write permission on the socket. Every
            // connection is checked by its credentials anyway, so the
            // moment between bind and this is no opening.
            match gid {
                Some(gid) => {
                    if let Err(e) = perms::set_mode(path, 0o660, Some(gid)) {
                        // A daemon not run as root, outside the group.
                        tracing::warn!("{e}: only the daemon's user may use the control socket");
                        perms::set_mode(path, 0o600, None)?;
                    }
                }
                None => perms::set_mode(path, 0o600, None)?,
            }
            Ok(Listener { inner })
        }
        #[cfg(windows)]
        {
            use interprocess::os::windows::named_pipe::{PipeListenerOptions, pipe_mode};
            use interprocess::os::windows::security_descriptor::SecurityDescriptor;
            // Groups are a Unix matter; on Windows the descriptor decides.
            let _ = gid;
            let sddl = widestring::U16CString::from_str(PIPE_SECURITY)
                .map_err(|e| format!("the control pipe's security descriptor: {e}"))?;
            let security = SecurityDescriptor::deserialize(&sddl).map_err(|e| {
                format!("the control pipe's security descriptor {PIPE_SECURITY}: {e}")
            })?;
            let inner = PipeListenerOptions::new()
                .path(path)
                .security_descriptor(Some(security))
                .accept_remote(false)
                .create_tokio_duplex::<pipe_mode::Bytes>()
                .map_err(|e| {
                    format!(
                        "cannot create the named pipe {}: {e} (is another heartline daemon running?)",
                        path.display()
                    )
                })?;
            Ok(Listener { inner })
        }
    }

    /// The next client, and who it is (`None` if the system cannot say).
    pub async fn accept(&mut self) -> io::Result<(Reader, Writer, Option<Peer>)> {
        #[cfg(unix)]
        {
            let (stream, _) = self.inner.accept().await?;
            let peer = stream.peer_cred().ok().map(|c| Peer {
                uid: c.uid(),
                gid: c.gid(),
            });
            let (read, write) = stream.into_split();
            Ok((Box::new(read), Box::new(write), peer))
        }
        #[cfg(windows)]
        {
            let connected = self.inner.accept().await?;
            let (read, write) = tokio::io::split(connected);
            Ok((Box::new(read), Box::new(write), None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PIPE_SECURITY;

    /// The descriptor as Windows reads SDDL: a protected DACL, the deny
    /// first (Windows stops at the first entry that matches), and an allow
    /// for exactly LocalSystem, the Administrators and the owner.
    #[test]
    fn the_pipe_admits_only_the_system_administrators_and_the_daemon_user() {
        let dacl = PIPE_SECURITY.strip_prefix("D:P").expect("a protected DACL");
        let aces: Vec<&str> = dacl
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(")(")
            .collect();
        assert_eq!(
            aces.first(),
            Some(&"D;;GA;;;NU"),
            "network logons denied first"
        );
        let allowed: Vec<&str> = aces
            .iter()
            .filter_map(|ace| ace.strip_prefix("A;;GA;;;"))
            .collect();
        assert_eq!(allowed, ["SY", "BA", "OW"]);
        assert_eq!(aces.len(), 4, "nothing else: {aces:?}");
        assert!(
            !PIPE_SECURITY.contains("WD") && !PIPE_SECURITY.contains("AU"),
            "neither Everyone nor Authenticated Users"
        );
    }
}
