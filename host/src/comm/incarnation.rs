//! This node's incarnation: a number that grows with every start of the
//! daemon, sent in every frame, so peers tell a restarted node from a
//! slow one. It is kept in the state directory.

use heartline_core::Incarnation;

/// This run's incarnation: larger than the last one recorded in
/// `state_dir`, and at least the current Unix time in seconds, so it grows
/// even if the state directory is lost.
pub fn next_incarnation(state_dir: &std::path::Path) -> Result<Incarnation, String> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| format!("cannot create state directory {}: {e}", state_dir.display()))?;
    let file = state_dir.join("incarnation");
    let last: u32 = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0);
    let next = last.saturating_add(1).max(clock).max(1);
    let temp = state_dir.join("incarnation.new");
    std::fs::write(&temp, format!("{next}\n"))
        .and_then(|()| std::fs::rename(&temp, &file))
        .map_err(|e| format!("cannot record incarnation in {}: {e}", file.display()))?;
    Ok(Incarnation(next))
}
