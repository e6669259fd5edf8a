//! Hardware-in-the-loop harness for the heartline dongle: the firmware image
//! under `qemu-system-arm -machine lm3s6965evb`, its UART0 and UART1 on
//! ptys, attached to real host daemons, with the dongle's defmt log decoded
//! from QEMU's semihosting output. The checks are in `tests/qemu.rs`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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
}

impl Qemu {
    /// Boots `image` with both UARTs on ptys and its defmt log on
    /// semihosting, decoded with the image's own table.
    pub fn start(image: &Path) -> Result<Qemu, String> {
        let elf = std::fs::read(image)
            .map_err(|e| format!("cannot read the firmware image {}: {e}", image.display()))?;
        let table = defmt_decoder::Table::parse(&elf)
            .map_err(|e| format!("cannot read the defmt table of {}: {e}", image.display()))?
            .ok_or_else(|| format!("{} has no defmt table", image.display()))?;
        let mut child = Command::new("qemu-system-arm")
            .args([
                "-machine",
                "lm3s6965evb",
                "-display",
                "none",
                "-monitor",
                "none",
                "-semihosting-config",
                "enable=on,target=native",
                "-serial",
                "pty",
                "-serial",
                "pty",
                // A reset (the panic handler's) ends QEMU rather than
                // rebooting it, so a test sees it.
                "-no-reboot",
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
        Ok(Qemu { child, ports, log })
    }

    /// Whether QEMU is still running (a reset or a crash ends it).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
