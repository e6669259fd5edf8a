//! The local transport of the control API: a Unix socket on Unix, a named
//! pipe on Windows (`control_socket = '\\.\pipe\heartline'`). Everything
//! above this module sees a pair of byte streams.

use std::io;
use std::path::Path;

use tokio::io::{AsyncRead, AsyncWrite};

#[cfg(unix)]
use crate::sys::perms;

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
    path: std::path::PathBuf,
    #[cfg(windows)]
    next: tokio::net::windows::named_pipe::NamedPipeServer,
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
            let _ = gid;
            let next = tokio::net::windows::named_pipe::ServerOptions::new()
                .first_pipe_instance(true)
                .create(path)
                .map_err(|e| format!("cannot create the named pipe {}: {e} (is another heartline daemon running?)", path.display()))?;
            Ok(Listener {
                path: path.to_path_buf(),
                next,
            })
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
            self.next.connect().await?;
            let fresh = tokio::net::windows::named_pipe::ServerOptions::new().create(&self.path)?;
            let connected = std::mem::replace(&mut self.next, fresh);
            let (read, write) = tokio::io::split(connected);
            Ok((Box::new(read), Box::new(write), None))
        }
    }
}
