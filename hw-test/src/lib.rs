//! Hardware-in-the-loop harness for the heartline dongle: the firmware image
//! under `qemu-system-arm -machine lm3s6965evb`, its UART0 and UART1 on
//! ptys, attached to real host daemons, with the dongle's defmt log decoded
//! from QEMU's semihosting output. The checks are in `tests/qemu.rs`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use heartline_core::dongle::{dongle_secret, encode_provision};
use heartline_core::wire::{
    self, FrameReader, Header, Heartbeat, Key, Kind, MAX_ENCODED_LEN, Message, Provision,
};
use heartline_core::{ClusterId, Incarnation, NodeId, PathId};

/// The firmware image `./test.sh` builds.
pub fn firmware_image() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../firmware/target/thumbv7m-none-eabi/release/heartline-firmware")
}

/// The `heartline` binary of this build, beside the test executable.
pub fn heartline_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("heartline");
    candidate.exists().then_some(candidate)
}

/// The dongle's log, as decoded lines (`INFO provisioned by host 1 ...`),
/// each with when it arrived.
#[derive(Debug, Clone, Default)]
pub struct DongleLog(Arc<(Mutex<Vec<Line>>, Condvar)>);

/// A log line and when the harness decoded it.
type Line = (Instant, String);

impl DongleLog {
    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.0
            .0
            .lock()
            .map(|l| l.iter().map(|(_, line)| line.clone()).collect())
            .unwrap_or_default()
    }

    /// Every line so far, each after the UTC minute and second it arrived
    /// (`48:04.134`), to set beside a daemon's log.
    pub fn timed_lines(&self) -> Vec<String> {
        let (now, wall) = (Instant::now(), std::time::SystemTime::now());
        self.0
            .0
            .lock()
            .map(|l| {
                l.iter()
                    .map(|(at, line)| {
                        let at = wall - now.saturating_duration_since(*at);
                        let t = at
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_secs_f64();
                        format!("{:02}:{:06.3} {line}", (t / 60.0) as u64 % 60, t % 60.0)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first line containing `text` and when it arrived, waiting up to
    /// `limit` for it.
    pub fn wait_for(&self, text: &str, limit: Duration) -> Result<(Instant, String), String> {
        let (lines, arrived) = &*self.0;
        let deadline = Instant::now() + limit;
        let mut guard = lines.lock().map_err(|_| "the log reader panicked")?;
        loop {
            if let Some(found) = guard.iter().find(|(_, l)| l.contains(text)) {
                return Ok(found.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let all: Vec<&str> = guard.iter().map(|(_, l)| l.as_str()).collect();
                return Err(format!(
                    "the dongle did not log {text:?} within {limit:?}; its log:\n{}",
                    all.join("\n")
                ));
            }
            guard = arrived
                .wait_timeout(guard, left)
                .map_err(|_| "the log reader panicked")?
                .0;
        }
    }

    fn push(&self, line: String) {
        let (lines, arrived) = &*self.0;
        if let Ok(mut lines) = lines.lock() {
            lines.push((Instant::now(), line));
        }
        arrived.notify_all();
    }
}

/// QEMU running the firmware, killed on drop.
#[derive(Debug)]
pub struct Qemu {
    child: Child,
    /// The pty of UART0 and of UART1.
    pub ports: [PathBuf; 2],
    /// The dongle's decoded log.
    pub log: DongleLog,
    monitor: PathBuf,
    _dir: tempfile::TempDir,
    /// Held while this QEMU runs: one emulated dongle at a time.
    _one: std::sync::MutexGuard<'static, ()>,
}

impl Qemu {
    /// Boots `image` with both UARTs on ptys and its defmt log on
    /// semihosting, decoded with the image's own table.
    ///
    /// One at a time in a process: the emulated firmware polls its UARTs
    /// and takes a whole core, and the dongle's safety rests on its timing
    /// (a watchdog that trips within its time), which two emulations and
    /// their daemons on a 2-core machine do not keep (a CI run saw the
    /// dongle reset a host over a second late, and a relay slowed to a
    /// third of its speed).
    pub fn start(image: &Path) -> Result<Qemu, String> {
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        // A test that panicked while it held the lock is over; its QEMU is
        // gone with it.
        let one = ONE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let elf = std::fs::read(image)
            .map_err(|e| format!("cannot read the firmware image {}: {e}", image.display()))?;
        let table = defmt_decoder::Table::parse(&elf)
            .map_err(|e| format!("cannot read the defmt table of {}: {e}", image.display()))?
            .ok_or_else(|| format!("{} has no defmt table", image.display()))?;
        let dir = tempfile::tempdir().map_err(|e| format!("cannot make a directory: {e}"))?;
        let monitor = dir.path().join("monitor.sock");
        // Ahead of the tests' own load: the dongle keeps time by its 1 ms
        // tick, which QEMU delivers late (and the guest's clock runs slow)
        // when it waits for a core. `nice` runs QEMU as it is where it may
        // not raise its priority (not root).
        let mut child = Command::new("nice")
            .args([
                "-n",
                "-10",
                "qemu-system-arm",
                "-machine",
                "lm3s6965evb",
                "-display",
                "none",
                "-monitor",
                &format!("unix:{},server=on,wait=off", monitor.display()),
                "-semihosting-config",
                "enable=on,target=native",
                "-serial",
                "pty",
                "-serial",
                "pty",
                "-kernel",
            ])
            .arg(image)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start qemu-system-arm: {e}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or("QEMU's standard output is not piped")?;
        // QEMU names each pty on a line of its standard output before the
        // guest runs; everything after is the guest's semihosting output.
        let mut stdout = BufReader::new(stdout);
        let mut ports = [PathBuf::new(), PathBuf::new()];
        for _ in 0..2 {
            let mut line = String::new();
            stdout
                .read_line(&mut line)
                .map_err(|e| format!("reading QEMU's output: {e}"))?;
            let at = line
                .find("/dev/pts/")
                .ok_or_else(|| format!("QEMU did not report its ptys; it said {line:?}"))?;
            let device: String = line[at..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            let port = usize::from(line.contains("serial1"));
            ports[port] = PathBuf::from(device);
        }
        let log = DongleLog::default();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut decoder = table.new_stream_decoder();
            let mut buf = [0u8; 1024];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                decoder.received(&buf[..n]);
                loop {
                    match decoder.decode() {
                        Ok(frame) => sink.push(frame.display(false).to_string()),
                        Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
                        Err(defmt_decoder::DecodeError::Malformed) => {
                            sink.push("(malformed defmt frame)".into());
                        }
                    }
                }
            }
        });
        Ok(Qemu {
            child,
            ports,
            log,
            monitor,
            _dir: dir,
            _one: one,
        })
    }

    /// Times the firmware has booted (a panic resets it, so more boots than
    /// resets asked for means a crash).
    pub fn boots(&self) -> usize {
        self.log
            .lines()
            .iter()
            .filter(|l| l.contains(BOOT_LINE))
            .count()
    }

    /// Resets the board, as its reset button would: the dongle forgets its
    /// provisioning.
    pub fn reset(&self) -> Result<(), String> {
        use std::io::Write;
        let mut monitor = std::os::unix::net::UnixStream::connect(&self.monitor)
            .map_err(|e| format!("cannot reach QEMU's monitor: {e}"))?;
        monitor
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        monitor
            .write_all(b"system_reset\n")
            .map_err(|e| format!("cannot talk to QEMU's monitor: {e}"))?;
        // The monitor prompts once on connecting and again once the command
        // has run.
        let mut said = Vec::new();
        let mut buf = [0u8; 256];
        while said.windows(6).filter(|w| w == b"(qemu)").count() < 2 {
            let n = monitor
                .read(&mut buf)
                .map_err(|e| format!("QEMU's monitor did not answer: {e}"))?;
            if n == 0 {
                break;
            }
            said.extend_from_slice(&buf[..n]);
        }
        Ok(())
    }
}

/// What the firmware logs when it boots.
pub const BOOT_LINE: &str = "up: unprovisioned, waiting for a host";

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens a serial device (or pty) raw at `baud`.
fn open_line(device: &Path, baud: u32) -> Result<Box<dyn serialport::SerialPort>, String> {
    serialport::new(device.to_string_lossy(), baud)
        .timeout(Duration::from_millis(50))
        .open()
        .map_err(|e| format!("cannot open {}: {e}", device.display()))
}

/// What a line's reader saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// A frame on the watched route that decoded under its key: when, and
    /// its sequence number.
    Frame(Instant, u64),
    /// A frame from the dongle (any content): the dongle speaks on this
    /// line, and the line carries what it sends.
    Dongle,
}

/// Reads `line` on a thread until `stop` is set, sending the arrival time
/// of every frame from `src` to `dst` that decodes under `key`, and a
/// notice for every frame from `dongle` (when given); every other frame is
/// read and ignored, so the line never pushes back on its sender.
fn watch_arrivals(
    mut line: Box<dyn serialport::SerialPort>,
    route: (NodeId, NodeId),
    dongle: Option<NodeId>,
    key: Key,
    cluster: ClusterId,
    stop: Arc<AtomicBool>,
) -> (mpsc::Receiver<Arrival>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut reader = FrameReader::<MAX_ENCODED_LEN>::new();
        let mut buf = [0u8; 1024];
        while !stop.load(Ordering::Relaxed) {
            let n = match line.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(_) => break,
            };
            reader.push(&buf[..n], |frame| {
                let Ok(frame) = frame else { return };
                let Some(seen) = wire::route_of(frame) else {
                    return;
                };
                if Some(seen.0) == dongle {
                    let _ = tx.send(Arrival::Dongle);
                } else if seen == route {
                    if let Ok((header, _)) = wire::decode(frame, &key, cluster) {
                        let _ = tx.send(Arrival::Frame(Instant::now(), header.seq));
                    }
                }
            });
        }
    });
    (rx, reader)
}

/// Heartbeat frames from `src` to `dst` under `key`, back to back, one for
/// each sequence number in `seqs`.
fn numbered_heartbeats(
    src: NodeId,
    dst: NodeId,
    key: &Key,
    cluster: ClusterId,
    seqs: std::ops::RangeInclusive<u64>,
) -> Vec<u8> {
    let mut stream = Vec::new();
    let mut out = [0u8; MAX_ENCODED_LEN];
    for seq in seqs {
        let header = Header {
            kind: Kind::Heartbeat,
            path: PathId(0),
            cluster,
            src,
            dst,
            src_incarnation: Incarnation(1),
            dst_incarnation: Incarnation::UNKNOWN,
            seq,
        };
        let beat = Message::Heartbeat(Heartbeat {
            sent_at: seq,
            echo: 0,
            echo_age: 0,
        });
        if let Ok(len) = wire::encode(&header, &beat, key, &mut out) {
            stream.extend_from_slice(&out[..len]);
        }
    }
    stream
}

/// How the frames are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// All at once, as fast as the line takes them.
    AtOnce,
    /// One at a time at the line rate of the run's baud, as a host on a
    /// real line at that speed would send them (a pty has no line rate of
    /// its own).
    AtLineRate,
}

/// Frames through a line and how fast they went.
#[derive(Debug, Clone)]
pub struct LineRun {
    /// Frames written.
    pub sent: usize,
    /// Frames that came out intact (each once, however often it came).
    pub intact: usize,
    /// Bytes of each frame on the wire, delimiter included.
    pub frame_len: usize,
    /// From the first byte written to the last intact frame read.
    pub elapsed: Duration,
    /// The line speed, in baud.
    pub baud: u32,
    /// The sequence numbers (from 1, in the order written) of the frames
    /// that did not come out intact.
    pub missing: Vec<u64>,
}

impl LineRun {
    /// Intact frames per second, from the first byte written to the last
    /// frame read.
    pub fn per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.intact as f64 / seconds
        } else {
            0.0
        }
    }

    /// The most frames of this size a line at `baud` carries per second
    /// (8N1: ten bits a byte).
    pub fn line_limit(&self) -> f64 {
        f64::from(self.baud) / 10.0 / self.frame_len as f64
    }
}

impl std::fmt::Display for LineRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} frames of {} bytes intact, {:.0} frames/s; a {} baud line carries at most {:.0} frames/s of this size",
            self.intact,
            self.sent,
            self.frame_len,
            self.per_second(),
            self.baud,
            self.line_limit()
        )?;
        if !self.missing.is_empty() {
            let shown: Vec<String> = self.missing.iter().take(20).map(u64::to_string).collect();
            write!(f, "; missing: frames {}", shown.join(", "))?;
            if self.missing.len() > 20 {
                write!(f, " and {} more", self.missing.len() - 20)?;
            }
        }
        Ok(())
    }
}

/// Writes heartbeat frames numbered `seqs` from `src` to `dst` into
/// `out_line` and counts those that `arrivals` reports (read from the same
/// device for a looped cable).
fn run_frames(
    out_line: &mut dyn serialport::SerialPort,
    arrivals: &mpsc::Receiver<Arrival>,
    (src, dst): (NodeId, NodeId),
    baud: u32,
    seqs: std::ops::RangeInclusive<u64>,
    feed: Feed,
) -> Result<LineRun, String> {
    let (key, cluster) = line_test_key()?;
    let (first, frames) = (*seqs.start(), seqs.clone().count());
    let stream = numbered_heartbeats(src, dst, &key, cluster, seqs);
    let frame_len = stream.len() / frames.max(1);
    let started = Instant::now();
    match feed {
        Feed::AtOnce => out_line
            .write_all(&stream)
            .map_err(|e| format!("writing the frames: {e}"))?,
        Feed::AtLineRate => {
            // One frame each time the line would have finished the last.
            let frame_time = Duration::from_secs_f64(frame_len as f64 * 10.0 / f64::from(baud));
            for (i, frame) in stream.chunks(frame_len.max(1)).enumerate() {
                let due = started + frame_time * u32::try_from(i).unwrap_or(u32::MAX);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                out_line
                    .write_all(frame)
                    .map_err(|e| format!("writing frame {i}: {e}"))?;
            }
        }
    }
    // Until every frame is in, or the line has been quiet for longer than
    // the whole stream takes at its speed (and a second more): the rest
    // were lost. (The dongle's own frames do not count as the line
    // speaking.)
    let quiet = Duration::from_secs_f64(stream.len() as f64 * 10.0 / f64::from(baud))
        + Duration::from_secs(1);
    let (mut last, mut intact) = (None, 0);
    let mut seen = vec![false; frames];
    let mut deadline = Instant::now() + quiet;
    while intact < frames {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(arrival) = arrivals.recv_timeout(left) else {
            break;
        };
        let Arrival::Frame(at, seq) = arrival else {
            continue;
        };
        deadline = Instant::now() + quiet;
        // Each frame counted once: a duplicate is not a frame relayed.
        let fresh = seq
            .checked_sub(first)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| seen.get_mut(i))
            .is_some_and(|seen| !std::mem::replace(seen, true));
        if fresh {
            last = Some(at);
            intact += 1;
        }
    }
    let missing = seen
        .iter()
        .enumerate()
        .filter(|(_, seen)| !**seen)
        .map(|(i, _)| i as u64 + 1)
        .collect();
    Ok(LineRun {
        sent: frames,
        intact,
        frame_len,
        elapsed: last.map_or(Duration::ZERO, |last| last - started),
        baud,
        missing,
    })
}

/// The key and cluster the line tests' heartbeats are sealed with.
fn line_test_key() -> Result<(Key, ClusterId), String> {
    let key = Key::new(b"heartline hw-test line test key!").map_err(|e| e.to_string())?;
    Ok((key, ClusterId(4242)))
}

/// A looped cable (transmit wired to receive) on `device`: every frame
/// written comes back intact, at what rate.
pub fn check_loopback(device: &Path, baud: u32, frames: usize) -> Result<LineRun, String> {
    let mut line = open_line(device, baud)?;
    let reader = line
        .try_clone()
        .map_err(|e| format!("cannot share {}: {e}", device.display()))?;
    let (key, cluster) = line_test_key()?;
    let route = (NodeId(1), NodeId(2));
    let stop = Arc::new(AtomicBool::new(false));
    let (arrivals, reader) = watch_arrivals(reader, route, None, key, cluster, stop.clone());
    let run = run_frames(
        &mut *line,
        &arrivals,
        route,
        baud,
        1..=frames as u64,
        Feed::AtOnce,
    );
    stop.store(true, Ordering::Relaxed);
    // The reader must be gone before anyone opens the line again, or it
    // could take what the next reader is waiting for.
    reader.join().map_err(|_| "the line reader panicked")?;
    run
}

/// The dongle's relay: provisions it from port A as host 1 (with host 2
/// beyond, no watchdog), waits until the dongle speaks on port B (so that
/// port B carries what it sends), then for each of `runs` writes that many
/// frames from host 1 to host 2 into port A as `Feed` says and counts those
/// that come out of port B. Both ports stay open from the first run to the
/// last: an emulator's pty reopened between runs may drop what the dongle
/// sends before it notices the reopen.
pub fn measure_relay(
    ports: &[PathBuf; 2],
    baud: u32,
    provisioning: &ProvisionAs,
    runs: &[(usize, Feed)],
) -> Result<Vec<LineRun>, String> {
    let mut a = open_line(&ports[0], baud)?;
    let b = open_line(&ports[1], baud)?;
    // The dongle also heartbeats to host 1; read and drop it, or a pty
    // would push back on the dongle.
    let stop = Arc::new(AtomicBool::new(false));
    let drain = {
        let mut a = a
            .try_clone()
            .map_err(|e| format!("cannot share {}: {e}", ports[0].display()))?;
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while !stop.load(Ordering::Relaxed) {
                let _ = a.read(&mut buf);
            }
        })
    };
    let (key, cluster) = line_test_key()?;
    let route = (NodeId(1), NodeId(2));
    let dongle = NodeId(provisioning.dongle);
    let (arrivals, reader) = watch_arrivals(b, route, Some(dongle), key, cluster, stop.clone());
    let measured = (|| {
        a.write_all(&provisioning.frame()?)
            .map_err(|e| format!("writing the provisioning: {e}"))?;
        // Provisioned, the dongle heartbeats host 2 on port B.
        let limit = Duration::from_secs(5);
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match arrivals.recv_timeout(left) {
                Ok(Arrival::Dongle) => break,
                Ok(Arrival::Frame(..)) => {}
                Err(_) => {
                    return Err(format!(
                        "the dongle sent nothing on port B ({}) within {limit:?} of its provisioning: is it provisioned, and is port B its second line?",
                        ports[1].display()
                    ));
                }
            }
        }
        let mut next = 1u64;
        let mut measured = Vec::new();
        for &(frames, feed) in runs {
            let seqs = next..=next + frames as u64 - 1;
            next += frames as u64;
            measured.push(run_frames(&mut *a, &arrivals, route, baud, seqs, feed)?);
        }
        Ok(measured)
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = drain.join();
    reader.join().map_err(|_| "the line reader panicked")?;
    measured
}

static PROVISION_SEQ: AtomicU64 = AtomicU64::new(1);

/// The cluster and dongle the harness provisions: as host 1 on the
/// dongle's port A for [`measure_relay`], as any host with
/// [`ProvisionAs::frame_from`].
#[derive(Debug, Clone)]
pub struct ProvisionAs {
    /// The cluster.
    pub cluster: u32,
    /// The cluster's secret, from which the dongle's is derived.
    pub cluster_secret: Vec<u8>,
    /// The dongle's node id.
    pub dongle: u16,
}

/// Who sends a provisioning and the settings it gives the dongle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProvisionFrom {
    /// The sending host.
    pub host: u16,
    /// The host on the dongle's other port; 0 names none.
    pub other_host: u16,
    /// Heartbeat interval, in milliseconds.
    pub interval_ms: u32,
    /// The watchdog time; 0: no watchdog.
    pub watchdog_ms: u32,
    /// The reset pulse; 0: none.
    pub reset_pulse_ms: u32,
}

impl ProvisionFrom {
    /// Host 1 naming host 2, heartbeats every 100 ms, no watchdog: what
    /// [`measure_relay`] sends.
    pub const RELAY: ProvisionFrom = ProvisionFrom {
        host: 1,
        other_host: 2,
        interval_ms: 100,
        watchdog_ms: 0,
        reset_pulse_ms: 0,
    };
}

impl ProvisionAs {
    fn frame(&self) -> Result<Vec<u8>, String> {
        self.frame_from(&ProvisionFrom::RELAY)
    }

    /// Heartbeats from `host` to the dongle under the secret it is
    /// provisioned with, one for each sequence number in `seqs` (which must
    /// grow from one call to the next, or the dongle takes them for
    /// replays).
    pub fn heartbeats_from(
        &self,
        host: u16,
        seqs: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<u8>, String> {
        let (cluster, secret) = self.dongle_secret()?;
        let key = Key::new(&secret).map_err(|e| e.to_string())?;
        Ok(numbered_heartbeats(
            NodeId(host),
            NodeId(self.dongle),
            &key,
            cluster,
            seqs,
        ))
    }

    fn dongle_secret(&self) -> Result<(ClusterId, [u8; wire::DONGLE_SECRET_LEN]), String> {
        let key = Key::new(&self.cluster_secret).map_err(|e| e.to_string())?;
        let cluster = ClusterId(self.cluster);
        Ok((cluster, dongle_secret(&key, cluster, NodeId(self.dongle))))
    }

    /// A provision frame from `from.host` with `from`'s settings, fresh
    /// (never a replay of an earlier one).
    pub fn frame_from(&self, from: &ProvisionFrom) -> Result<Vec<u8>, String> {
        let (cluster, secret) = self.dongle_secret()?;
        // Later than any run a host daemon gave it: the clock, plus a margin.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs());
        let header = Header {
            kind: Kind::Provision,
            path: PathId(0),
            cluster,
            src: NodeId(from.host),
            dst: NodeId(self.dongle),
            src_incarnation: Incarnation(now.saturating_add(1_000)),
            dst_incarnation: Incarnation::UNKNOWN,
            // Fresh every time, so a second provisioning is not a replay.
            seq: PROVISION_SEQ.fetch_add(1, Ordering::Relaxed),
        };
        let body = Provision {
            incarnation: now.saturating_add(1_000),
            other_host: NodeId(from.other_host),
            secret: &secret,
            interval_ms: from.interval_ms,
            misses: 5,
            rise: 2,
            watchdog_ms: from.watchdog_ms,
            reset_pulse_ms: from.reset_pulse_ms,
        };
        let mut out = [0u8; MAX_ENCODED_LEN];
        let len = encode_provision(&header, &body, &mut out).map_err(|e| e.to_string())?;
        Ok(out[..len].to_vec())
    }
}

/// The dongle's two lines, opened raw, with everything the dongle sends
/// on them read and dropped (as hosts would read it), so that neither pty
/// pushes back on it. Closed on drop.
pub struct Lines {
    writers: Vec<Box<dyn serialport::SerialPort>>,
    stop: Arc<AtomicBool>,
    drains: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines")
            .field("lines", &self.writers.len())
            .finish_non_exhaustive()
    }
}

impl Lines {
    /// Opens `ports` at `baud` and starts draining them.
    pub fn open(ports: &[PathBuf; 2], baud: u32) -> Result<Lines, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        let mut drains = Vec::new();
        for port in ports {
            let line = open_line(port, baud)?;
            let mut reader = line
                .try_clone()
                .map_err(|e| format!("cannot share {}: {e}", port.display()))?;
            let stop = stop.clone();
            drains.push(std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while !stop.load(Ordering::Relaxed) {
                    let _ = reader.read(&mut buf);
                }
            }));
            writers.push(line);
        }
        Ok(Lines {
            writers,
            stop,
            drains,
        })
    }

    /// Writes `bytes` to the dongle's port `port`.
    pub fn write(&mut self, port: usize, bytes: &[u8]) -> Result<(), String> {
        let line = self
            .writers
            .get_mut(port)
            .ok_or_else(|| format!("no port {port}"))?;
        line.write_all(bytes)
            .map_err(|e| format!("writing to port {port}: {e}"))
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for drain in self.drains.drain(..) {
            let _ = drain.join();
        }
    }
}

/// The size in bytes of each allocated section of a 32-bit little-endian
/// ELF image (the firmware's), by name: `.text`, `.data`, `.bss`, ...
pub fn elf_sections(image: &Path) -> Result<Vec<(String, u64)>, String> {
    let elf = std::fs::read(image).map_err(|e| format!("cannot read {}: {e}", image.display()))?;
    let bad = || format!("{} is not a 32-bit little-endian ELF file", image.display());
    if elf.get(..6) != Some(&[0x7F, b'E', b'L', b'F', 1, 1][..]) {
        return Err(bad());
    }
    let u16_at = |at: usize| -> Result<usize, String> {
        let b = elf.get(at..at + 2).ok_or_else(bad)?;
        Ok(usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u32_at = |at: usize| -> Result<usize, String> {
        let b = elf.get(at..at + 4).ok_or_else(bad)?;
        usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).map_err(|_| bad())
    };
    let (shoff, shentsize, shnum, shstrndx) =
        (u32_at(0x20)?, u16_at(0x2E)?, u16_at(0x30)?, u16_at(0x32)?);
    let header = |index: usize| shoff + index * shentsize;
    let names = u32_at(header(shstrndx) + 0x10)?;
    let mut sections = Vec::new();
    for index in 0..shnum {
        let at = header(index);
        const SHF_ALLOC: usize = 0x2;
        if u32_at(at + 0x08)? & SHF_ALLOC == 0 {
            continue;
        }
        let name_at = names + u32_at(at)?;
        let name = elf
            .get(name_at..)
            .and_then(|rest| rest.split(|&b| b == 0).next())
            .ok_or_else(bad)?;
        let size = u32_at(at + 0x14)?;
        sections.push((String::from_utf8_lossy(name).into_owned(), size as u64));
    }
    Ok(sections)
}

/// The dongle's RAM budget: its statics (`.bss`, `.data`) and its stack
/// together, the RAM of a small board.
pub const RAM_BUDGET: usize = 8 * 1024;

/// What the dongle must leave free of [`RAM_BUDGET`] at its peak.
pub const RAM_HEADROOM: usize = 256;

/// The statics of `image` in RAM: its `.bss` and `.data` sizes.
pub fn static_ram(image: &Path) -> Result<(usize, usize), String> {
    let sections = elf_sections(image)?;
    let size = |name: &str| {
        sections
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |&(_, size)| usize::try_from(size).unwrap_or(usize::MAX))
    };
    Ok((size(".bss"), size(".data")))
}
