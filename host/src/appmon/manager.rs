//! The manager's side: connects to an appserver, has a command started,
//! polls it, re-attaches after a dropped connection, and ends with an
//! [`Outcome`] that tells the application's own end apart from losing
//! the guest. `heartline appmgr` is this plus logging and an exit code.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::WriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::proto::{
    ClientFrame, DEFAULT_PORT, ErrorKind, FrameError, MAX_REPLY, ProcessId, ProcessState, Refusal,
    Reply, Request, ServerFrame, StartSpec, Status, VERSION, read_frame, write_frame,
};

/// Exit codes of `heartline appmgr` other than the application's own.
pub mod exit {
    /// The appserver did not answer for the whole `--appserver-timeout`
    /// (or could not be reached at all).
    pub const LOST_CONTACT: u8 = 240;
    /// The appserver restarted, and the application ended with it.
    pub const APPSERVER_RESTARTED: u8 = 241;
    /// The appserver refused to start the command.
    pub const CANNOT_START: u8 = 242;
    /// Bad arguments, keys or certificates: nothing was started.
    pub const SETUP: u8 = 243;
}

/// An appserver's address: host (DNS name or IP) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host, also the name its certificate must hold.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl std::str::FromStr for Target {
    type Err = String;

    /// `HOST`, `HOST:PORT`, `[IPV6]:PORT` or a bare IPv6 address.
    fn from_str(text: &str) -> Result<Target, String> {
        let bad = || format!("{text:?} is not HOST[:PORT] (e.g. guest1, guest1:5315, [::1]:5315)");
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(bad()),
            }
        } else if text.matches(':').count() == 1 {
            let (host, port) = text.split_once(':').ok_or_else(bad)?;
            (host, Some(port))
        } else {
            (text, None)
        };
        if host.is_empty() {
            return Err(bad());
        }
        let port = match port {
            Some(port) => port.parse().map_err(|_| bad())?,
            None => DEFAULT_PORT,
        };
        Ok(Target {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What to monitor, where, and how closely.
#[derive(Debug, Clone)]
pub struct Monitor {
    /// The appserver.
    pub target: Target,
    /// The name the appserver's certificate must hold; the target's host
    /// when `None`.
    pub server_name: Option<String>,
    /// This side's TLS.
    pub tls: Arc<ClientConfig>,
    /// How often to poll.
    pub poll_interval: Duration,
    /// How long the appserver may stay silent before contact is lost.
    pub timeout: Duration,
    /// How long a stopped application gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// The command.
    pub spec: StartSpec,
}

/// What happened along the way, for the caller to log or record.
#[derive(Debug)]
pub enum Progress<'a> {
    /// The command runs on the guest.
    Started {
        /// Its id.
        process: ProcessId,
        /// Its pid on the guest.
        pid: u32,
    },
    /// Contact was lost and is back.
    Reattached {
        /// The process.
        process: ProcessId,
    },
    /// Output the application wrote.
    Output(&'a [u8]),
}

/// How monitoring ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The application ended (by itself, or stopped on request).
    Ended {
        /// Its last status.
        status: Status,
        /// Whether this manager asked for the stop.
        stopped: bool,
    },
    /// The appserver did not answer for the timeout.
    LostContact {
        /// Whether it was ever reached.
        reached: bool,
        /// The last error seen.
        error: String,
    },
    /// The appserver restarted; the application ended with it.
    AppserverRestarted(String),
    /// The appserver refused to start the command.
    CannotStart(Refusal),
    /// TLS failed over a certificate: one side does not trust the other.
    Refused(String),
}

impl Outcome {
    /// The exit code `heartline appmgr` ends with: the application's own,
    /// 128 + the signal that killed it, or one of [`exit`].
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Ended { status, .. } => match status.state {
                ProcessState::Exited { code } => (code & 0xff) as u8,
                ProcessState::Killed { signal } => 128u8.wrapping_add(signal as u8),
                ProcessState::Running => exit::LOST_CONTACT,
            },
            Outcome::LostContact { .. } => exit::LOST_CONTACT,
            Outcome::AppserverRestarted(_) => exit::APPSERVER_RESTARTED,
            Outcome::CannotStart(_) => exit::CANNOT_START,
            Outcome::Refused(_) => exit::SETUP,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ended { status, stopped } => {
                let why = if *stopped { ", stopped on request" } else { "" };
                write!(
                    f,
                    "the application (pid {}) {}{why}",
                    status.pid, status.state
                )
            }
            Outcome::LostContact {
                reached: false,
                error,
            } => write!(
                f,
                "lost contact: the appserver could not be reached ({error})"
            ),
            Outcome::LostContact {
                reached: true,
                error,
            } => write!(f, "lost contact: the appserver stopped answering ({error})"),
            Outcome::AppserverRestarted(message) => {
                write!(f, "the appserver restarted: {message}")
            }
            Outcome::CannotStart(refusal) => write!(f, "not started: {refusal}"),
            Outcome::Refused(error) => write!(
                f,
                "refused over certificates: {error} (check that each side holds the other's authority file from keygen, and the names the appserver's certificate holds)"
            ),
        }
    }
}

/// Why the connection could not be used.
#[derive(Debug)]
enum Lost {
    /// The appserver could not be heard; it may come back.
    Silent(String),
    /// TLS failed over a certificate: waiting will not mend it.
    Certificate(String),
}

impl Lost {
    fn io(context: &str, error: &std::io::Error) -> Lost {
        let message = format!("{context}: {error}");
        let tls = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if tls.is_some_and(is_certificate_error) {
            Lost::Certificate(message)
        } else {
            Lost::Silent(message)
        }
    }

    fn silent(message: impl Into<String>) -> Lost {
        Lost::Silent(message.into())
    }

    /// What monitoring comes to when this ends it.
    fn outcome(self, reached: bool) -> Outcome {
        match self {
            Lost::Silent(error) => Outcome::LostContact { reached, error },
            Lost::Certificate(error) => Outcome::Refused(error),
        }
    }
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::Silent(message) | Lost::Certificate(message) => f.write_str(message),
        }
    }
}

/// Whether TLS failed because one side did not accept the other's
/// certificate (or had none to show).
fn is_certificate_error(error: &rustls::Error) -> bool {
    use rustls::AlertDescription as Alert;
    matches!(
        error,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::AlertReceived(
                Alert::BadCertificate
                    | Alert::UnknownCA
                    | Alert::CertificateRequired
                    | Alert::CertificateUnknown
                    | Alert::UnsupportedCertificate
                    | Alert::CertificateExpired
                    | Alert::CertificateRevoked
                    | Alert::AccessDenied
                    // A client certificate whose signature does not verify.
                    | Alert::DecryptError
            )
    )
}

/// One TLS connection to the appserver: requests go out through `writer`,
/// frames come in through a reader task (so waiting for one can be
/// cancelled without losing half a frame).
struct Session {
    writer: WriteHalf<TlsStream<TcpStream>>,
    incoming: mpsc::Receiver<Result<ServerFrame, Lost>>,
    reader: tokio::task::JoinHandle<()>,
    next_id: u32,
    /// Exits pushed while a reply was awaited.
    exits: Vec<Status>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Session {
    async fn open(monitor: &Monitor, deadline: Instant) -> Result<Session, Lost> {
        let name = monitor
            .server_name
            .as_deref()
            .unwrap_or(&monitor.target.host);
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|e| Lost::Certificate(format!("{name:?} is not a valid server name: {e}")))?;
        let connect = async {
            let tcp = TcpStream::connect((monitor.target.host.as_str(), monitor.target.port))
                .await
                .map_err(|e| Lost::io(&format!("cannot connect to {}", monitor.target), &e))?;
            let _ = tcp.set_nodelay(true);
            TlsConnector::from(monitor.tls.clone())
                .connect(server_name, tcp)
                .await
                .map_err(|e| Lost::io(&format!("TLS with {} failed", monitor.target), &e))
        };
        let stream = tokio::time::timeout_at(deadline, connect)
            .await
            .map_err(|_| Lost::silent(format!("no connection to {} in time", monitor.target)))??;
        let (mut reader, writer) = tokio::io::split(stream);
        let (sender, incoming) = mpsc::channel(16);
        let reader = tokio::spawn(async move {
            loop {
                let frame = match read_frame::<_, ServerFrame>(&mut reader, MAX_REPLY).await {
                    Ok(Some(frame)) => Ok(frame),
                    Ok(None) => Err(Lost::silent("the appserver closed the connection")),
                    Err(FrameError::Io(e)) => Err(Lost::io("reading from the appserver", &e)),
                    Err(e) => Err(Lost::silent(format!("reading from the appserver: {e}"))),
                };
                let last = frame.is_err();
                if sender.send(frame).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Session {
            writer,
            incoming,
            reader,
            next_id: 1,
            exits: Vec::new(),
        })
    }

    /// Sends `request` and waits until `deadline` for its reply.
    async fn ask(
        &mut self,
        request: Request,
        deadline: Instant,
    ) -> Result<Result<Reply, Refusal>, Lost> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let frame = ClientFrame {
            version: VERSION,
            id,
            request,
        };
        let exchange = async {
            write_frame(&mut self.writer, &frame)
                .await
                .map_err(|e| Lost::io("writing to the appserver", &e))?;
            loop {
                match self.incoming.recv().await {
                    Some(Ok(ServerFrame::Reply { id: got, result })) if got == id => {
                        return Ok(result);
                    }
                    Some(Ok(ServerFrame::Reply {
                        result: Err(refusal),
                        ..
                    })) if refusal.kind == ErrorKind::Malformed => {
                        return Err(Lost::silent(format!(
                            "the appserver refused a request: {refusal}"
                        )));
                    }
                    Some(Ok(ServerFrame::Reply { .. })) => {}
                    Some(Ok(ServerFrame::Exited(status))) => self.exits.push(status),
                    Some(Err(e)) => return Err(e),
                    None => return Err(Lost::silent("the connection ended")),
                }
            }
        };
        tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| Lost::silent("no answer in time"))?
    }

    /// The next frame the server pushes.
    async fn pushed(&mut self) -> Result<Status, Lost> {
        if let Some(status) = self.exits.pop() {
            return Ok(status);
        }
        loop {
            match self.incoming.recv().await {
                Some(Ok(ServerFrame::Exited(status))) => return Ok(status),
                Some(Ok(ServerFrame::Reply { .. })) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(Lost::silent("the connection ended")),
            }
        }
    }
}

/// Where monitoring stands between polls.
struct Watch<'m> {
    monitor: &'m Monitor,
    process: ProcessId,
    output_from: u64,
    last_heard: Instant,
}

impl Watch<'_> {
    fn deadline(&self) -> Instant {
        self.last_heard + self.monitor.timeout
    }

    /// Records a status heard; the outcome if the process has ended.
    fn heard(
        &mut self,
        status: Status,
        progress: &mut (dyn FnMut(Progress<'_>) + Send),
    ) -> Option<Status> {
        self.last_heard = Instant::now();
        let fresh = self.output_from.saturating_sub(status.output_from) as usize;
        if let Some(bytes) = status.output.get(fresh..).filter(|b| !b.is_empty()) {
            progress(Progress::Output(bytes));
        }
        self.output_from = self.output_from.max(status.output_end);
        status.state.ended().then_some(status)
    }

    /// Collects the last output and releases the process after an exit
    /// was pushed; what it hears replaces the pushed status.
    async fn finish(
        &mut self,
        session: &mut Session,
        pushed: Status,
        progress: &mut (dyn FnMut(Progress<'_>) + Send),
    ) -> Status {
        let deadline = Instant::now() + self.monitor.timeout;
        let poll = Request::Poll {
            process: self.process,
            output_from: self.output_from,
        };
        let status = match session.ask(poll, deadline).await {
            Ok(Ok(Reply::Status(status))) => self.heard(status, progress).unwrap_or(pushed),
            _ => pushed,
        };
        let _ = session
            .ask(
                Request::Release {
                    process: self.process,
                },
                deadline,
            )
            .await;
        status
    }

    /// Connects again and re-attaches until the deadline.
    async fn reattach(
        &mut self,
        mut error: Lost,
        progress: &mut (dyn FnMut(Progress<'_>) + Send),
    ) -> Result<(Session, Option<Status>), Outcome> {
        tracing::warn!(process = %self.process, "contact with the appserver interrupted ({error}): reconnecting");
        let pause = self.monitor.poll_interval.min(Duration::from_millis(250));
        while Instant::now() < self.deadline() {
            let attempt = async {
                let mut session = Session::open(self.monitor, self.deadline()).await?;
                let answer = session
                    .ask(
                        Request::Attach {
                            process: self.process,
                        },
                        self.deadline(),
                    )
                    .await?;
                Ok::<_, Lost>((session, answer))
            };
            match attempt.await {
                Ok((session, Ok(Reply::Status(status)))) => {
                    progress(Progress::Reattached {
                        process: self.process,
                    });
                    tracing::warn!(process = %self.process, "contact with the appserver is back");
                    return Ok((session, self.heard(status, progress)));
                }
                Ok((_, Ok(other))) => error = Lost::silent(format!("unexpected answer {other:?}")),
                Ok((_, Err(refusal))) => return Err(Outcome::AppserverRestarted(refusal.message)),
                Err(Lost::Certificate(e)) => return Err(Outcome::Refused(e)),
                Err(lost) => error = lost,
            }
            tokio::time::sleep(
                pause.min(self.deadline().saturating_duration_since(Instant::now())),
            )
            .await;
        }
        Err(error.outcome(true))
    }
}

/// Starts `monitor.spec` on the appserver and watches it until it ends,
/// contact is lost, or `stop` resolves (then the application is stopped).
pub async fn run(
    monitor: &Monitor,
    stop: impl Future<Output = ()>,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Outcome {
    let deadline = Instant::now() + monitor.timeout;
    let mut session = match Session::open(monitor, deadline).await {
        Ok(session) => session,
        Err(e) => return e.outcome(false),
    };
    let (process, pid) = match session
        .ask(Request::Start(monitor.spec.clone()), deadline)
        .await
    {
        Ok(Ok(Reply::Started { process, pid })) => (process, pid),
        Ok(Ok(other)) => return Lost::silent(format!("unexpected answer {other:?}")).outcome(true),
        Ok(Err(refusal)) => return Outcome::CannotStart(refusal),
        Err(e) => return e.outcome(true),
    };
    progress(Progress::Started { process, pid });
    let mut watch = Watch {
        monitor,
        process,
        output_from: 0,
        last_heard: Instant::now(),
    };
    let ended = |status, stopped| Outcome::Ended { status, stopped };
    let mut polls = tokio::time::interval(monitor.poll_interval);
    polls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        let trouble = tokio::select! {
            () = &mut stop => {
                let deadline = Instant::now() + monitor.stop_grace + monitor.timeout;
                let request = Request::Stop { process, grace_ms: monitor.stop_grace.as_millis() as u64 };
                return match session.ask(request, deadline).await {
                    Ok(Ok(Reply::Status(status))) => {
                        let status = watch.finish(&mut session, status, progress).await;
                        ended(status, true)
                    }
                    Ok(Ok(other)) => Lost::silent(format!("unexpected answer {other:?}")).outcome(true),
                    Ok(Err(refusal)) => Outcome::AppserverRestarted(refusal.message),
                    Err(e) => e.outcome(true),
                };
            }
            pushed = session.pushed() => match pushed {
                Ok(status) if status.process == process => {
                    let status = watch.finish(&mut session, status, progress).await;
                    return ended(status, false);
                }
                Ok(_) => continue,
                Err(e) => e,
            },
            _ = polls.tick() => {
                let poll = Request::Poll { process, output_from: watch.output_from };
                match session.ask(poll, watch.deadline()).await {
                    Ok(Ok(Reply::Status(status))) => match watch.heard(status, progress) {
                        Some(status) => {
                            let status = watch.finish(&mut session, status, progress).await;
                            return ended(status, false);
                        }
                        None => continue,
                    },
                    Ok(Ok(other)) => Lost::silent(format!("unexpected answer {other:?}")),
                    Ok(Err(refusal)) => return Outcome::AppserverRestarted(refusal.message),
                    Err(e) => e,
                }
            }
        };
        match watch.reattach(trouble, progress).await {
            Ok((mut fresh, Some(status))) => {
                let status = watch.finish(&mut fresh, status, progress).await;
                return ended(status, false);
            }
            Ok((fresh, None)) => session = fresh,
            Err(outcome) => return outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn targets_parse_with_and_without_port() {
        let t: Target = "guest1".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("guest1", DEFAULT_PORT));
        let t: Target = "10.0.0.5:6000".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.5", 6000));
        let t: Target = "[::1]:7000".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 7000));
        assert_eq!(t.to_string(), "[::1]:7000");
        let t: Target = "::1".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", DEFAULT_PORT));
        for bad in ["", ":5315", "guest:port", "guest:70000", "[::1", "[::1]x"] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?} parsed");
        }
    }

    fn status(state: ProcessState) -> Status {
        Status {
            process: ProcessId {
                server: 1,
                serial: 1,
            },
            pid: 10,
            state,
            output_from: 0,
            output: Vec::new(),
            output_end: 0,
        }
    }

    #[test]
    fn exit_codes_follow_the_application_and_name_lost_contact_apart() {
        let ended = |state| Outcome::Ended {
            status: status(state),
            stopped: false,
        };
        assert_eq!(ended(ProcessState::Exited { code: 0 }).exit_code(), 0);
        assert_eq!(ended(ProcessState::Exited { code: 7 }).exit_code(), 7);
        assert_eq!(ended(ProcessState::Killed { signal: 9 }).exit_code(), 137);
        let lost = Outcome::LostContact {
            reached: true,
            error: "x".into(),
        };
        assert_eq!(lost.exit_code(), exit::LOST_CONTACT);
        assert_eq!(
            Outcome::AppserverRestarted("x".into()).exit_code(),
            exit::APPSERVER_RESTARTED
        );
    }
}
