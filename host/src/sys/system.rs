//! What the daemon asks of the operating system: memory locked once
//! touched, so a page is never paged out under a heartbeat; real-time scheduling for the
//! communication manager's thread, so a busy machine does not starve it;
//! and systemd's readiness and watchdog notifications (`Type=notify`).
//! Each is best effort: the daemon says in one log line what it could not
//! get and why, and runs on.

use std::time::Duration;

/// Locks all current and future memory of the process, each page once it
/// is first touched (`MCL_ONFAULT`, Linux 4.4 and later; on older kernels
/// every page mapped): a page in use is never paged out, and the parts of
/// thread stacks and heap reservations never touched take no memory.
pub fn lock_memory() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::mman::{MlockAllFlags, mlockall};
        let all = MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE;
        let on_fault = all | MlockAllFlags::from_bits_retain(nix::libc::MCL_ONFAULT);
        mlockall(on_fault).or_else(|_| mlockall(all)).map_err(|e| {
            format!("{e} (run as root, or give the service CAP_IPC_LOCK and LimitMEMLOCK=infinity)")
        })?;
        super::memory::set_locked();
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err("not supported on this operating system".into())
    }
}

/// The wall clock, in milliseconds since the Unix epoch (0 before it).
#[must_use]
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The communication manager's real-time priority (SCHED_FIFO).
pub const MANAGER_PRIORITY: u8 = 50;

/// Puts the calling thread in the SCHED_FIFO real-time class at the
/// communication manager's priority.
pub fn realtime_priority() -> Result<(), String> {
    realtime_priority_at(MANAGER_PRIORITY)
}

/// Puts the calling thread in the SCHED_FIFO real-time class at
/// `priority` (1 to 99).
pub fn realtime_priority_at(priority: u8) -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            RealtimeThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue,
            ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
        };
        let priority = ThreadPriorityValue::try_from(priority).map_err(|e| e.to_string())?;
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Crossplatform(priority),
            ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
        )
        .map_err(|e| {
            format!("{e:?} (run as root, or give the service CAP_SYS_NICE / LimitRTPRIO=50)")
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = priority;
        Err("not supported on this operating system".into())
    }
}

/// Tells systemd `state` (e.g. `READY=1`), if it started us with
/// `NOTIFY_SOCKET`; otherwise does nothing.
pub fn notify(state: &str) {
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return;
        };
        let path = path.to_string_lossy().into_owned();
        let address = match path.strip_prefix('@') {
            Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
            None => SocketAddr::from_pathname(&path),
        };
        let sent = address
            .and_then(|address| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &address));
        if let Err(e) = sent {
            tracing::warn!("cannot notify systemd ({state}): {e}");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = state;
}

/// How often to tell systemd we are alive: half its `WatchdogSec`, if set.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT). The handlers are installed
/// when this is called (inside the runtime), not when the future is first
/// awaited, so a signal that comes in between is not lost.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::terminate())
            .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)))
    };
    #[cfg(windows)]
    let handlers = tokio::signal::windows::ctrl_c();
    async move {
        #[cfg(unix)]
        if let Ok((mut term, mut interrupt)) = handlers {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
            return;
        }
        #[cfg(windows)]
        if let Ok(mut ctrl_c) = handlers {
            ctrl_c.recv().await;
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
