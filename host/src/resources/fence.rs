//! Running fence devices: ClusterLabs' fence agents (`fence_ipmilan`, ...)
//! unmodified, as Pacemaker runs them. The agent reads its parameters as
//! `key=value` lines on its standard input, the first being `action=`;
//! it exits 0 only once the device confirmed the action (for `off` and
//! `reboot`, that the node's power is off). Anything else (another exit
//! code, a signal, the timeout, an agent that is missing or cannot run) is
//! a failure, reported with the agent's last line of output.

use heartline_brain::FenceAction;

use super::script::{self, Outcome, ScriptRun};
use crate::config::FenceDevice;
use crate::config::fencing::AGENT_DIRS;

/// What came of one run of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceRun {
    /// Whether the agent confirmed the action.
    pub confirmed: bool,
    /// How it went, in one line.
    pub summary: String,
}

/// The agent's standard input: the action, then the device's parameters.
#[must_use]
pub fn agent_input(device: &FenceDevice, action: &str) -> String {
    let mut input = format!("action={action}\n");
    for (key, value) in &device.params {
        input.push_str(key);
        input.push('=');
        input.push_str(value);
        input.push('\n');
    }
    input
}

/// Runs `device`'s agent with `action` (`off`, `reboot`, `status`,
/// `monitor`...), killing it after the device's timeout.
pub async fn run(device: &FenceDevice, action: &str) -> FenceRun {
    let Some(program) = device.program() else {
        return FenceRun {
            confirmed: false,
            summary: format!(
                "agent {} not found in {}: install it (Debian and Ubuntu: apt install fence-agents) or give its path",
                device.agent,
                AGENT_DIRS.join(", ")
            ),
        };
    };
    let input = agent_input(device, action);
    // The Python agents warn on every run about a deprecated module; that
    // says nothing about the fence.
    let env = [(
        "PYTHONWARNINGS".to_string(),
        "ignore::DeprecationWarning".to_string(),
    )];
    let run = script::run_with_input(&program, &[], &env, input.as_bytes(), device.timeout).await;
    FenceRun {
        confirmed: run.succeeded(),
        summary: summarise(&device.agent, &run),
    }
}

/// Fences with `device`: `action` on its node.
pub async fn fence(device: &FenceDevice, action: FenceAction) -> FenceRun {
    run(device, action.as_str()).await
}

/// Fences with the dongle's reset output: the communication manager asks
/// the dongle (the cluster's witness) to reset the device's node; the
/// dongle does only for the side holding its vote without that node, and
/// confirms once it held the reset line for its pulse.
pub async fn dongle(
    device: &FenceDevice,
    commands: &tokio::sync::mpsc::Sender<crate::comm::Command>,
) -> FenceRun {
    let started = std::time::Instant::now();
    let (reply, answer) = tokio::sync::oneshot::channel();
    let asked = commands
        .send(crate::comm::Command::DongleFence {
            target: device.node,
            reply,
        })
        .await;
    let outcome = if asked.is_err() {
        Err("the communication manager is gone".to_string())
    } else {
        match tokio::time::timeout(device.timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the communication manager dropped the request".into()),
            Err(_) => Err(format!(
                "no answer from the dongle within {}",
                humantime::format_duration(device.timeout)
            )),
        }
    };
    let took = started.elapsed().as_millis();
    match outcome {
        Ok(true) => FenceRun {
            confirmed: true,
            summary: format!(
                "the dongle held node {}'s reset line for its pulse ({took} ms)",
                device.node
            ),
        },
        Ok(false) => FenceRun {
            confirmed: false,
            summary: format!(
                "the dongle refused to reset node {}: this node's side does not hold its witness vote without it, or the dongle has no reset_pulse",
                device.node
            ),
        },
        Err(why) => FenceRun {
            confirmed: false,
            summary: why,
        },
    }
}

/// One line: the outcome, and on a failure the agent's last line of output
/// that says something.
fn summarise(agent: &str, run: &ScriptRun) -> String {
    let mut line = format!("{agent} {run}");
    if !run.succeeded() && !matches!(run.outcome, Outcome::CannotRun(_)) {
        let last = run.output.lines().rev().map(str::trim).find(|l| {
            !l.is_empty() && !l.contains("DeprecationWarning") && !l.starts_with("from ")
        });
        if let Some(last) = last {
            line.push_str(": ");
            line.push_str(last);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use super::*;

    fn device(agent: &str, timeout: Duration) -> FenceDevice {
        FenceDevice {
            name: "d".into(),
            node: 2,
            level: 1,
            agent: agent.into(),
            timeout,
            params: vec![
                ("ip".into(), "10.0.0.2".into()),
                ("password".into(), "s3cret".into()),
            ],
        }
    }

    fn agent(dir: &std::path::Path, name: &str, body: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    #[tokio::test]
    async fn the_agent_reads_its_parameters_on_stdin_and_success_is_exit_0() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen");
        let a = agent(dir.path(), "fence_ok", &format!("cat > {}", seen.display()));
        let run = fence(&device(&a, Duration::from_secs(5)), FenceAction::Reboot).await;
        assert!(run.confirmed, "{run:?}");
        assert_eq!(
            std::fs::read_to_string(&seen).unwrap(),
            "action=reboot\nip=10.0.0.2\npassword=s3cret\n"
        );
    }

    #[tokio::test]
    async fn failing_hanging_and_missing_agents_are_never_success() {
        let dir = tempfile::tempdir().unwrap();
        let failing = agent(
            dir.path(),
            "fence_no",
            "echo 'Failed: Unable to obtain correct plug status or plug is not available' >&2; exit 1",
        );
        let run = fence(&device(&failing, Duration::from_secs(5)), FenceAction::Off).await;
        assert!(!run.confirmed);
        assert!(
            run.summary.contains("exited with code 1"),
            "{}",
            run.summary
        );
        assert!(
            run.summary.contains("Unable to obtain correct plug status"),
            "{}",
            run.summary
        );

        let hanging = agent(dir.path(), "fence_hang", "exec sleep 100000");
        let run = fence(
            &device(&hanging, Duration::from_millis(300)),
            FenceAction::Off,
        )
        .await;
        assert!(!run.confirmed);
        assert!(run.summary.contains("timed out"), "{}", run.summary);

        let run = fence(
            &device("fence_no_such_agent", Duration::from_secs(1)),
            FenceAction::Off,
        )
        .await;
        assert!(!run.confirmed);
        assert!(
            run.summary.contains("not found in /usr/sbin"),
            "{}",
            run.summary
        );

        let run = fence(
            &device("/nonexistent/fence_x", Duration::from_secs(1)),
            FenceAction::Off,
        )
        .await;
        assert!(!run.confirmed);
        assert!(run.summary.contains("no such file"), "{}", run.summary);
    }
}
