//! The local transport of the control API: a Unix socket on Unix, a named
//! pipe on Windows (`control_socket = '\\.\pipe\heartline'`). Everything
//! above this module sees a pair of byte streams.

use std::io;
use std::path::Path;

use tokio::io::{AsyncRead, AsyncWrite};

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
    /// steal one a running daemon answers on.
    pub async fn bind(path: &Path) -> Result<Listener, String> {
        #[cfg(unix)]
        {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
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
            Ok(Listener { inner })
        }
        #[cfg(windows)]
        {
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

    /// The next client.
    pub async fn accept(&mut self) -> io::Result<(Reader, Writer)> {
        #[cfg(unix)]
        {
            let (stream, _) = self.inner.accept().await?;
            let (read, write) = stream.into_split();
            Ok((Box::new(read), Box::new(write)))
        }
        #[cfg(windows)]
        {
            self.next.connect().await?;
            let fresh = tokio::net::windows::named_pipe::ServerOptions::new().create(&self.path)?;
            let connected = std::mem::replace(&mut self.next, fresh);
            let (read, write) = tokio::io::split(connected);
            Ok((Box::new(read), Box::new(write)))
        }
    }
}
