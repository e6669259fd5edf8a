//! The resource manager: owns this node's view of the configuration
//! database and runs the recovery kits' scripts on its resources (LRACI).
//!
//! It takes administrative changes (checked against the database's rules
//! and against the kits installed here), brings hierarchies in service
//! children first and takes them out parents first, runs each in-service
//! resource's `quickCheck` at its kit's interval, and answers a failure (a
//! failed check, or `sendevent`) with the kit's `recover`, up to the kit's
//! attempts.
//!
//! It runs on a thread of its own, so database writes (fsync) and script
//! runs never delay the communication manager. Scripts run as tasks; one
//! hierarchy has at most one action at a time, and the database is changed
//! only here, as each step reports back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::control::{Request, Response};
use crate::kit::{Action, Kits};
use crate::lcd::{Change, Init, Lcd, LcdError, Place, Resource, State};
use crate::script::{self, ScriptRun};

/// What the resource manager is told.
#[derive(Debug)]
pub enum Input {
    /// A CLI request, with where to answer.
    Control {
        /// The request.
        request: Request,
        /// The answer goes here.
        reply: oneshot::Sender<Response>,
    },
    /// One script of an action finished.
    Step {
        /// The action it belongs to.
        job: u64,
        /// The resource.
        place: Place,
        /// The script.
        action: Action,
        /// How it went.
        run: ScriptRun,
    },
    /// Every script of an action ran, or one failed.
    Finished {
        /// The action.
        job: u64,
    },
}

/// Handle on the resource manager.
#[derive(Debug, Clone)]
pub struct Handle {
    /// Inputs to it.
    pub inputs: mpsc::Sender<Input>,
}

/// What an action is for, which decides what its steps do to the states.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Purpose {
    InService,
    OutOfService,
    Check,
    /// Local recovery of a resource, after `event`; `attempt` counts from 1.
    Recover {
        event: String,
        attempt: u32,
    },
}

/// An action under way on one hierarchy.
#[derive(Debug)]
struct Job {
    purpose: Purpose,
    /// The resource the action was asked for.
    subject: String,
    /// The tags of the hierarchy it holds.
    tags: BTreeSet<String>,
    /// One line per step, for the CLI.
    steps: Vec<String>,
    failed: bool,
    reply: Option<oneshot::Sender<Response>>,
}

struct Manager {
    lcd: Lcd,
    kits: Kits,
    node: u16,
    jobs: BTreeMap<u64, Job>,
    next_job: u64,
    /// When each in-service resource is next checked.
    checks: BTreeMap<String, Instant>,
    inputs: mpsc::Sender<Input>,
}

/// Opens the database, loads the kits and starts the manager; brings in
/// service what the init strategies say.
pub fn start(config: &Config) -> Result<Handle, String> {
    let mut lcd = Lcd::open(&config.database).map_err(|e| e.to_string())?;
    let kits = Kits::load(&config.kits).map_err(|e| e.to_string())?;
    let node = config.node.0;
    let known = std::iter::once((node, config.name.clone())).chain(
        config.peers.iter().filter(|p| p.dongle.is_none()).map(|p| {
            (
                p.id.0,
                p.name.clone().unwrap_or_else(|| format!("node{}", p.id.0)),
            )
        }),
    );
    for (id, name) in known {
        if lcd.model().nodes.get(&id) != Some(&name) {
            lcd.apply(&Change::SetNode { id, name })
                .map_err(|e| e.to_string())?;
        }
    }
    let kit_names: Vec<String> = kits
        .iter()
        .map(|k| format!("{}/{}", k.app, k.rtype))
        .collect();
    info!(
        database = %config.database.display(),
        generation = lcd.model().generation,
        resources = lcd.model().resources.values().filter(|r| r.place.node == node).count(),
        kits = %kit_names.join(", "),
        "resource manager started"
    );
    let (inputs, rx) = mpsc::channel(1024);
    let mut manager = Manager {
        lcd,
        kits,
        node,
        jobs: BTreeMap::new(),
        next_job: 1,
        checks: BTreeMap::new(),
        inputs: inputs.clone(),
    };
    std::thread::Builder::new()
        .name("resource-manager".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(async move {
                    manager.init();
                    manager.run(rx).await;
                }),
                Err(e) => error!("cannot start the resource manager: {e}"),
            }
        })
        .map_err(|e| format!("cannot start the resource manager thread: {e}"))?;
    Ok(Handle { inputs })
}

impl Manager {
    fn place(&self, tag: &str) -> Place {
        Place {
            node: self.node,
            tag: tag.to_string(),
        }
    }

    /// Brings in service, once each, the hierarchies whose init strategy
    /// says so.
    fn init(&mut self) {
        let mut started = BTreeSet::new();
        let due: Vec<String> = self
            .lcd
            .model()
            .resources
            .values()
            .filter(|r| r.place.node == self.node)
            .filter(|r| match r.init {
                Init::InService => true,
                Init::Autores => r.state.in_service(),
                Init::OutOfService => false,
            })
            .map(|r| r.place.tag.clone())
            .collect();
        for tag in due {
            if started.contains(&tag) {
                continue;
            }
            started.extend(self.lcd.model().hierarchy(&self.place(&tag)));
            info!(%tag, "bringing in service at start (init strategy)");
            if let Err(e) = self.begin(&tag, Purpose::InService, None) {
                warn!(%tag, "cannot bring in service at start: {e}");
            }
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        loop {
            let next_check = self.checks.values().min().copied();
            let wake = next_check.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => self.handle(input),
                    None => return,
                },
                () = tokio::time::sleep_until(wake) => self.run_checks(),
            }
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Control { request, reply } => self.control(request, reply),
            Input::Step {
                job,
                place,
                action,
                run,
            } => self.step(job, &place, action, &run),
            Input::Finished { job } => self.finished(job),
        }
    }

    fn control(&mut self, request: Request, reply: oneshot::Sender<Response>) {
        let response = match request {
            Request::Lcd => Response::Lcd(self.lcd.model().clone()),
            Request::Change { change } => match self.change(&change) {
                Ok(generation) => Response::Changed { generation },
                Err(e) => error_response(e.to_string()),
            },
            Request::InService { tag } => {
                return self.start_or_answer(&tag, Purpose::InService, reply);
            }
            Request::OutOfService { tag } => {
                return self.start_or_answer(&tag, Purpose::OutOfService, reply);
            }
            Request::SendEvent { class, event, tag } => {
                info!(%tag, %class, %event, "event raised (sendevent)");
                let purpose = Purpose::Recover {
                    event: format!("{class},{event}"),
                    attempt: 1,
                };
                return self.start_or_answer(&tag, purpose, reply);
            }
            other => error_response(format!("{other:?} is not a resource request")),
        };
        let _ = reply.send(response);
    }

    fn start_or_answer(&mut self, tag: &str, purpose: Purpose, reply: oneshot::Sender<Response>) {
        if let Err(e) = self
            .begin(tag, purpose, Some(reply))
            .map_err(|e| e.to_string())
        {
            // `begin` only keeps the reply when it starts a job.
            warn!(%tag, "{e}");
        }
    }

    /// An administrative change, with the checks that need this node's
    /// kits.
    fn change(&mut self, change: &Change) -> Result<u64, LcdError> {
        if let Change::CreateResource(resource) = change {
            let Some(kit) = self.kits.get(&resource.app, &resource.rtype) else {
                let known: Vec<String> = self
                    .kits
                    .iter()
                    .map(|k| format!("{}/{}", k.app, k.rtype))
                    .collect();
                return Err(LcdError::Invalid(format!(
                    "no recovery kit for resource type {}/{} on node {}; installed: {}",
                    resource.app,
                    resource.rtype,
                    self.node,
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                )));
            };
            if resource.place.node == self.node {
                let problems = kit.problems();
                if !problems.is_empty() {
                    return Err(LcdError::Invalid(problems.join("; ")));
                }
            }
        }
        if let Some(tags) = self.busy_tags(change) {
            return Err(LcdError::Invalid(format!(
                "{tags} is busy with an action; try again when it ends"
            )));
        }
        let generation = self.lcd.apply(change)?;
        info!(generation, ?change, "configuration changed");
        Ok(generation)
    }

    /// The tag a change touches on this node, if an action holds it.
    fn busy_tags(&self, change: &Change) -> Option<String> {
        let place = match change {
            Change::RemoveResource(place)
            | Change::SetState { place, .. }
            | Change::SetPriority { place, .. } => place,
            Change::CreateDependency { node, parent, .. }
            | Change::RemoveDependency { node, parent, .. } => {
                return (*node == self.node && self.is_busy(parent)).then(|| parent.clone());
            }
            _ => return None,
        };
        (place.node == self.node && self.is_busy(&place.tag)).then(|| place.tag.clone())
    }

    fn is_busy(&self, tag: &str) -> bool {
        self.jobs.values().any(|job| job.tags.contains(tag))
    }

    /// Starts an action on the hierarchy of `tag`: its scripts in order, as
    /// a task that reports each step back.
    fn begin(
        &mut self,
        tag: &str,
        purpose: Purpose,
        reply: Option<oneshot::Sender<Response>>,
    ) -> Result<(), String> {
        let place = self.place(tag);
        let refuse = |reply: Option<oneshot::Sender<Response>>, why: String| {
            if let Some(reply) = reply {
                let _ = reply.send(error_response(why.clone()));
            }
            Err(why)
        };
        let model = self.lcd.model();
        if let Err(e) = model.resource(&place) {
            return refuse(reply, e.to_string());
        }
        let tags = model.hierarchy(&place);
        if let Some(busy) = tags.iter().find(|t| self.is_busy(t)) {
            return refuse(
                reply,
                format!("{busy} is busy with another action; try again when it ends"),
            );
        }
        let order: Vec<(String, Action)> = match &purpose {
            Purpose::InService => model
                .restore_order(&place)
                .into_iter()
                .filter(|t| {
                    model
                        .resources
                        .get(&self.place(t))
                        .is_some_and(|r| r.state != State::Isp)
                })
                .map(|t| (t, Action::Restore))
                .collect(),
            Purpose::OutOfService => model
                .remove_order(&place)
                .into_iter()
                .filter(|t| {
                    model
                        .resources
                        .get(&self.place(t))
                        .is_some_and(|r| r.state.in_service())
                })
                .map(|t| (t, Action::Remove))
                .collect(),
            Purpose::Check => vec![(tag.to_string(), Action::QuickCheck)],
            Purpose::Recover { .. } => vec![(tag.to_string(), Action::Recover)],
        };
        let mut steps = Vec::new();
        for (tag, action) in order {
            let Ok(resource) = model.resource(&self.place(&tag)) else {
                continue;
            };
            let Some(kit) = self.kits.get(&resource.app, &resource.rtype) else {
                return refuse(
                    reply,
                    format!(
                        "no recovery kit for {}/{} (resource {tag}) on this node",
                        resource.app, resource.rtype
                    ),
                );
            };
            let event = match &purpose {
                Purpose::Recover { event, .. } => event.clone(),
                _ => String::new(),
            };
            steps.push((
                resource.place.clone(),
                action,
                kit.script(action),
                kit.manifest.timeout(action),
                script_env(resource, action, &event),
            ));
        }
        let job = self.next_job;
        self.next_job += 1;
        if matches!(purpose, Purpose::InService | Purpose::OutOfService) {
            info!(%tag, ?purpose, steps = steps.len(), "hierarchy action starts");
        }
        self.jobs.insert(
            job,
            Job {
                purpose,
                subject: tag.to_string(),
                tags,
                steps: Vec::new(),
                failed: false,
                reply,
            },
        );
        let inputs = self.inputs.clone();
        tokio::spawn(async move {
            for (place, action, path, timeout, env) in steps {
                let run = script::run(&path, &[], &env, timeout).await;
                let ok = run.succeeded();
                let _ = inputs
                    .send(Input::Step {
                        job,
                        place,
                        action,
                        run,
                    })
                    .await;
                if !ok {
                    break;
                }
            }
            let _ = inputs.send(Input::Finished { job }).await;
        });
        Ok(())
    }

    /// Records one script's outcome in the database.
    fn step(&mut self, job: u64, place: &Place, action: Action, run: &ScriptRun) {
        let ok = run.succeeded();
        let line = format!("{action} {}: {run}", place.tag);
        if ok {
            info!(tag = %place.tag, %action, "{run}");
        } else {
            warn!(tag = %place.tag, %action, "{run}");
        }
        let purpose = self.jobs.get(&job).map(|j| j.purpose.clone());
        let state = match (action, ok, &purpose) {
            (Action::Restore, true, _) => Some(State::Isp),
            (Action::Restore, false, _) => Some(State::Osf),
            (Action::Remove, true, _) => Some(State::Osu),
            (Action::Remove, false, _) => Some(State::Osf),
            (Action::Recover, true, _) => Some(State::Isp),
            _ => None,
        };
        if let Some(state) = state {
            self.set_state(place, state);
        }
        if let Some(job) = self.jobs.get_mut(&job) {
            job.steps.push(line);
            job.failed |= !ok;
        }
    }

    fn set_state(&mut self, place: &Place, state: State) {
        let change = Change::SetState {
            place: place.clone(),
            state,
        };
        match self.lcd.apply(&change) {
            Ok(_) => {
                if state == State::Isp {
                    self.schedule_check(&place.tag);
                } else {
                    self.checks.remove(&place.tag);
                }
            }
            Err(e) => error!(tag = %place.tag, "cannot record state {state}: {e}"),
        }
    }

    fn schedule_check(&mut self, tag: &str) {
        let interval = self
            .lcd
            .model()
            .resources
            .get(&self.place(tag))
            .and_then(|r| self.kits.get(&r.app, &r.rtype))
            .and_then(|k| k.manifest.quick_check_interval);
        match interval {
            Some(every) => {
                self.checks.insert(tag.to_string(), Instant::now() + every);
            }
            None => {
                self.checks.remove(tag);
            }
        }
    }

    /// An action ended: answer the CLI, and follow a failed check with
    /// recovery and a failed recovery with another attempt.
    fn finished(&mut self, job: u64) {
        let Some(job) = self.jobs.remove(&job) else {
            return;
        };
        let tag = job.subject.clone();
        match (&job.purpose, job.failed) {
            (Purpose::Check, false) => self.schedule_check(&tag),
            (Purpose::Check, true) => {
                warn!(%tag, "quickCheck failed: recovering");
                let purpose = Purpose::Recover {
                    event: "quickCheck,failed".into(),
                    attempt: 1,
                };
                if let Err(e) = self.begin(&tag, purpose, None) {
                    warn!(%tag, "{e}");
                }
            }
            (Purpose::Recover { event, attempt }, true) => {
                let recovering = tag;
                let attempts = self
                    .lcd
                    .model()
                    .resources
                    .get(&self.place(&recovering))
                    .and_then(|r| self.kits.get(&r.app, &r.rtype))
                    .map_or(1, |k| k.manifest.recover_attempts);
                if *attempt < attempts {
                    warn!(tag = %recovering, attempt, attempts, "local recovery failed; trying again");
                    let purpose = Purpose::Recover {
                        event: event.clone(),
                        attempt: attempt + 1,
                    };
                    if let Err(e) = self.begin(&recovering, purpose, job.reply) {
                        warn!(tag = %recovering, "{e}");
                    }
                    return;
                }
                error!(
                    tag = %recovering,
                    attempts,
                    "local recovery failed; the resource is in service unprotected (ISU): failing over to another node is not implemented yet"
                );
                self.set_state(&self.place(&recovering), State::Isu);
            }
            _ => {}
        }
        if let Some(reply) = job.reply {
            let response = if job.failed {
                error_response(format!(
                    "{} failed: {}",
                    purpose_name(&job.purpose),
                    job.steps.last().cloned().unwrap_or_default()
                ))
            } else {
                Response::Done { steps: job.steps }
            };
            let _ = reply.send(response);
        }
    }

    /// Starts the quickCheck of every in-service resource that is due and
    /// not busy.
    fn run_checks(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .checks
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(tag, _)| tag.clone())
            .collect();
        for tag in due {
            self.checks.remove(&tag);
            if self.is_busy(&tag) {
                // The action holding it reschedules it when it ends well.
                continue;
            }
            if let Err(e) = self.begin(&tag, Purpose::Check, None) {
                warn!(%tag, "cannot check: {e}");
            }
        }
    }
}

fn purpose_name(purpose: &Purpose) -> &'static str {
    match purpose {
        Purpose::InService => "in-service",
        Purpose::OutOfService => "out-of-service",
        Purpose::Check => "quickCheck",
        Purpose::Recover { .. } => "recovery",
    }
}

/// The environment a kit's script sees: who it acts on and why, and the
/// resource's properties as `HEARTLINE_PROP_<NAME>`.
fn script_env(resource: &Resource, action: Action, event: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("HEARTLINE_TAG".to_string(), resource.place.tag.clone()),
        ("HEARTLINE_ID".to_string(), resource.id.clone()),
        ("HEARTLINE_APP".to_string(), resource.app.clone()),
        ("HEARTLINE_TYPE".to_string(), resource.rtype.clone()),
        (
            "HEARTLINE_NODE".to_string(),
            resource.place.node.to_string(),
        ),
        ("HEARTLINE_ACTION".to_string(), action.to_string()),
        ("HEARTLINE_INFO".to_string(), resource.info.clone()),
    ];
    if !event.is_empty() {
        env.push(("HEARTLINE_EVENT".to_string(), event.to_string()));
    }
    for (name, value) in &resource.props {
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        env.push((format!("HEARTLINE_PROP_{name}"), value.clone()));
    }
    env
}

fn error_response(message: String) -> Response {
    Response::Error {
        message,
        timed_out: false,
    }
}
