//! Hardware-in-the-loop harness for the heartline dongle: the firmware image
//! under `qemu-system-arm -machine lm3s6965evb`, its UART0 and UART1 on
//! ptys, attached to real host daemons. The checks are in `tests/qemu.rs`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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

/// QEMU running the firmware, killed on drop.
#[derive(Debug)]
pub struct Qemu {
    child: Child,
    /// The pty of UART0 and of UART1.
    pub ports: [PathBuf; 2],
}

impl Qemu {
    /// Boots `image` with both UARTs on ptys.
    pub fn start(image: &Path) -> Result<Qemu, String> {
        let mut child = Command::new("qemu-system-arm")
            .args([
                "-machine",
                "lm3s6965evb",
                "-display",
                "none",
                "-monitor",
                "none",
                "-serial",
                "pty",
                "-serial",
                "pty",
                "-kernel",
            ])
            .arg(image)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start qemu-system-arm: {e}"))?;
        let (tx, rx) = mpsc::channel();
        // QEMU announces each pty on one of its output streams.
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(at) = line.find("/dev/pts/") {
                        let device: String = line[at..]
                            .chars()
                            .take_while(|c| !c.is_whitespace())
                            .collect();
                        let label = if line.contains("serial1") { 1 } else { 0 };
                        let _ = tx.send((label, PathBuf::from(device)));
                    }
                }
            });
        }
        let mut ports = [PathBuf::new(), PathBuf::new()];
        for _ in 0..2 {
            let (label, device) = rx
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| "QEMU did not report its ptys".to_string())?;
            ports[label] = device;
        }
        Ok(Qemu { child, ports })
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
