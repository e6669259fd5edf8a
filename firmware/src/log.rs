//! The dongle's log lines: what each [`Note`] says to an operator.

use heartline_core::dongle::{Note, Refusal};

pub fn note(note: &Note) {
    match *note {
        Note::Provisioned {
            port,
            by,
            cluster,
            node,
            incarnation,
        } => defmt::info!(
            "provisioned by host {=u16} on UART{=usize}: node {=u16} of cluster {=u32}, incarnation {=u64}",
            by.0,
            port,
            node.0,
            cluster.0,
            incarnation.0
        ),
        Note::Reprovisioned {
            port,
            by,
            incarnation,
        } => defmt::info!(
            "new settings from host {=u16} on UART{=usize}: restarted as incarnation {=u64}",
            by.0,
            port,
            incarnation.0
        ),
        Note::Refused { port, reason } => refused(port, reason),
        Note::HostUp { host } => defmt::info!("host {=u16} up", host.0),
        Note::HostDown { host } => defmt::warn!("host {=u16} down", host.0),
        Note::Tripped { host, silent_for } => defmt::warn!(
            "watchdog tripped for host {=u16} after {=u64} ms of silence",
            host.0,
            silent_for.as_millis()
        ),
        Note::Rearmed { host } => {
            defmt::info!("watchdog re-armed: host {=u16} heard again", host.0);
        }
        Note::Fence { by, host, done } => {
            if done {
                defmt::warn!(
                    "fencing: host {=u16} asked for a reset of host {=u16}: reset line pulsed",
                    by.0,
                    host.0
                );
            } else {
                defmt::warn!(
                    "fencing: host {=u16} asked for a reset of host {=u16}: refused (it does not hold the witness vote without it, or no reset pulse is configured)",
                    by.0,
                    host.0
                );
            }
        }
        Note::VoteHolder { holder } => {
            defmt::info!(
                "witness vote held by hosts {=u64:b} (bit n-1: host n)",
                holder.0
            );
        }
    }
}

fn refused(port: usize, reason: Refusal) {
    match reason {
        Refusal::OtherKey => defmt::warn!(
            "provisioning on UART{=usize} refused: another key than this dongle's (another cluster, or a rotated key); reset the dongle to provision it afresh",
            port
        ),
        Refusal::Replayed => defmt::warn!(
            "provisioning on UART{=usize} refused: not newer than the last one from that host (a replay)",
            port
        ),
        Refusal::Cabling {
            port: at,
            serving,
            named,
        } => defmt::warn!(
            "provisioning on UART{=usize} refused: it puts host {=u16} on UART{=usize}, where this dongle serves host {=u16}; check the cables and both hosts' configurations",
            port,
            named.0,
            at,
            serving.0
        ),
        Refusal::Frame(error) => {
            defmt::warn!("provisioning on UART{=usize} refused: {}", port, error)
        }
        Refusal::Invalid(error) => defmt::warn!(
            "provisioning on UART{=usize} refused: invalid settings: {}",
            port,
            error
        ),
    }
}

pub fn reset_output(port: usize, asserted: bool) {
    if asserted {
        defmt::warn!("reset output of the host on UART{=usize} asserted", port);
    } else {
        defmt::info!("reset output of the host on UART{=usize} released", port);
    }
}
