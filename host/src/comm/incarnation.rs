//! This node's incarnation: a number that grows with every start of the
//! daemon, sent in every frame, so peers tell a restarted node from a
//! slow one. It is kept in the state directory.
//!
//! It is the larger of the recorded one plus one and the Unix time in
//! seconds, so it grows even if the state directory is lost; 64 bits, so a
//! clock set far ahead cannot bring it near its end. If a run took it from
//! a clock that was ahead and the record is lost, peers that remember that
//! run name it in their frames and the core takes the next one at once
//! ([`heartline_core::Event::Reincarnated`]); [`record`] keeps it for the
//! next start.

use std::path::Path;

use heartline_core::Incarnation;

const FILE: &str = "incarnation";

/// This run's incarnation: larger than the last one recorded in
/// `state_dir`, and at least the current Unix time in seconds.
pub fn next_incarnation(state_dir: &Path) -> Result<Incarnation, String> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| format!("cannot create state directory {}: {e}", state_dir.display()))?;
    let last = recorded(state_dir);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let next = last
        .checked_add(1)
        .ok_or_else(|| {
            format!(
                "{} holds {last}, the largest incarnation there is: delete it (the peers that remember that run make this node take the next one at once)",
                state_dir.join(FILE).display()
            )
        })?
        .max(clock)
        .max(1);
    write(state_dir, next)?;
    Ok(Incarnation(next))
}

/// Records `incarnation`, taken while running, unless a larger one is
/// recorded already.
pub fn record(state_dir: &Path, incarnation: Incarnation) -> Result<(), String> {
    if recorded(state_dir) >= incarnation.0 {
        return Ok(());
    }
    write(state_dir, incarnation.0)
}

/// The incarnation recorded in `state_dir` (0: none, or unreadable).
fn recorded(state_dir: &Path) -> u64 {
    std::fs::read_to_string(state_dir.join(FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write(state_dir: &Path, incarnation: u64) -> Result<(), String> {
    let file = state_dir.join(FILE);
    let temp = state_dir.join("incarnation.new");
    std::fs::write(&temp, format!("{incarnation}\n"))
        .and_then(|()| std::fs::rename(&temp, &file))
        .map_err(|e| format!("cannot record incarnation in {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn each_start_takes_a_larger_one_at_least_the_clock() {
        let d = dir();
        let first = next_incarnation(d.path()).unwrap();
        let second = next_incarnation(d.path()).unwrap();
        assert!(second > first);
        assert!(first.0 > 1_700_000_000, "{first:?}");
    }

    #[test]
    fn a_record_at_the_old_32_bit_end_is_passed() {
        let d = dir();
        std::fs::write(d.path().join(FILE), format!("{}\n", u32::MAX)).unwrap();
        let next = next_incarnation(d.path()).unwrap();
        assert_eq!(next.0, u64::from(u32::MAX) + 1);
        assert_eq!(recorded(d.path()), next.0);
    }

    #[test]
    fn the_very_last_one_is_an_error_that_says_what_to_do() {
        let d = dir();
        std::fs::write(d.path().join(FILE), format!("{}\n", u64::MAX)).unwrap();
        let e = next_incarnation(d.path()).unwrap_err();
        assert!(e.contains("delete it"), "{e}");
    }

    #[test]
    fn a_reincarnation_is_recorded_only_if_larger() {
        let d = dir();
        let now = next_incarnation(d.path()).unwrap();
        record(d.path(), Incarnation(now.0 + 1_000)).unwrap();
        assert_eq!(recorded(d.path()), now.0 + 1_000);
        record(d.path(), Incarnation(now.0 + 5)).unwrap();
        assert_eq!(recorded(d.path()), now.0 + 1_000);
        assert_eq!(next_incarnation(d.path()).unwrap().0, now.0 + 1_001);
    }
}
