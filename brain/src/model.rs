//! The configuration database's contents and rules, in memory: resource
//! instances, dependencies, equivalencies, priorities and roles for every
//! node of the cluster, the nodes in standby, maintenance mode, and every
//! change that can be made to them. Each change is checked here against the
//! whole model before it is applied, so the same rules hold whether a change
//! comes from this node's CLI or from another node.
//!
//! The configuration is versioned: a [`Version`] is the [`Epoch`] of the
//! coordinator that ordered the change (a term number and that
//! coordinator's node id, so two partitions never share one) and the
//! generation, one more after every configuration change. Resource states
//! are not configuration: each is a fact its own node reports.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a resource instance lives: a node and the tag naming it there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Place {
    /// The node.
    pub node: u16,
    /// The resource's tag on that node.
    pub tag: String,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on node {}", self.tag, self.node)
    }
}

/// A resource's state, in LifeKeeper's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    /// In service, protected: running and watched.
    Isp,
    /// In service, unprotected: running, but its last check or recovery
    /// failed.
    Isu,
    /// Out of service, failed.
    Osf,
    /// Out of service, unimpaired: stopped on purpose, or never started.
    Osu,
    /// Its stop failed or timed out: it may still be running. Its
    /// hierarchy is started nowhere until an administrator has made sure it
    /// is stopped and runs `heartline cleanup`.
    Blocked,
}

impl State {
    /// Whether the resource is running here.
    #[must_use]
    pub fn in_service(self) -> bool {
        matches!(self, State::Isp | State::Isu)
    }

    /// Whether it may be running: in service, or blocked in a failed stop.
    #[must_use]
    pub fn maybe_running(self) -> bool {
        matches!(self, State::Isp | State::Isu | State::Blocked)
    }

    /// Whether its node may not run it until an administrator cleans it up.
    #[must_use]
    pub fn failed(self) -> bool {
        matches!(self, State::Osf | State::Blocked)
    }

    /// As stored and shown.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            State::Isp => "ISP",
            State::Isu => "ISU",
            State::Osf => "OSF",
            State::Osu => "OSU",
            State::Blocked => "BLOCKED",
        }
    }

    /// From its stored form.
    pub fn parse(text: &str) -> Result<State, LcdError> {
        Ok(match text.to_ascii_uppercase().as_str() {
            "ISP" => State::Isp,
            "ISU" => State::Isu,
            "OSF" => State::Osf,
            "OSU" => State::Osu,
            "BLOCKED" => State::Blocked,
            _ => {
                return Err(LcdError::Invalid(format!(
                    "`{text}` is not a state; use ISP, ISU, OSF, OSU or BLOCKED"
                )));
            }
        })
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the daemon does with a resource when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// Bring it in service again if it was in service when the daemon
    /// stopped (LifeKeeper's AUTORES_ISP).
    Autores,
    /// Always bring it in service.
    InService,
    /// Leave it out of service until an administrator acts.
    OutOfService,
}

impl Init {
    /// As stored and shown.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Init::Autores => "autores",
            Init::InService => "in-service",
            Init::OutOfService => "out-of-service",
        }
    }

    /// From its stored form.
    pub fn parse(text: &str) -> Result<Init, LcdError> {
        Ok(match text {
            "autores" => Init::Autores,
            "in-service" => Init::InService,
            "out-of-service" => Init::OutOfService,
            _ => {
                return Err(LcdError::Invalid(format!(
                    "`{text}` is not an init strategy; use autores, in-service or out-of-service"
                )));
            }
        })
    }
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the cluster is to keep a hierarchy running: the role of every
/// resource in it, on every node (Pacemaker's target-role).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Keep it in service on one node: the one running it, else the best
    /// by priority that can.
    Started,
    /// Keep it out of service everywhere.
    #[default]
    Stopped,
}

impl Role {
    /// As stored and shown.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Started => "started",
            Role::Stopped => "stopped",
        }
    }

    /// From its stored form.
    pub fn parse(text: &str) -> Result<Role, LcdError> {
        match text {
            "started" => Ok(Role::Started),
            "stopped" => Ok(Role::Stopped),
            _ => Err(LcdError::Invalid(format!(
                "`{text}` is not a role; use started or stopped"
            ))),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A coordinator's term: a number that grows with every new term, and the
/// coordinator's node id, so that coordinators of two partitions never
/// share one. Ordered by number, then node.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch {
    /// The term's number.
    pub term: u64,
    /// The coordinator of the term.
    pub node: u16,
}

/// Which configuration a node holds: the epoch of the coordinator that
/// made its last change, and the generation. Ordered by epoch, then
/// generation: of two diverged copies, the greater wins.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    /// The term it was made in.
    pub epoch: Epoch,
    /// Configuration changes since the database was created.
    pub generation: u64,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "generation {} (term {} of node {})",
            self.generation, self.epoch.term, self.epoch.node
        )
    }
}

/// Lowest (most preferred) and highest priority numbers.
pub const PRIORITIES: std::ops::RangeInclusive<u16> = 1..=1024;

/// One resource instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// Where it is.
    pub place: Place,
    /// What it is, unique on its node (e.g. a path, an address).
    pub id: String,
    /// The application of its recovery kit (`gen`).
    pub app: String,
    /// Its resource type within the application (`app`).
    pub rtype: String,
    /// Its state.
    pub state: State,
    /// What happens to it when the daemon starts.
    pub init: Init,
    /// Free-form flags for its kit.
    pub flags: BTreeSet<String>,
    /// Free-form information for its kit.
    pub info: String,
    /// Per-type properties, passed to its scripts as `HEARTLINE_PROP_*`.
    pub props: BTreeMap<String, String>,
    /// Its node's priority for it: 1 is the first choice to run it.
    pub priority: u16,
    /// Whether the cluster keeps its hierarchy in service (the same for
    /// every resource of a hierarchy, on every node).
    #[serde(default)]
    pub role: Role,
}

/// Every change the database takes. The same value travels between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// Records a cluster node.
    SetNode {
        /// Its id.
        id: u16,
        /// Its name.
        name: String,
    },
    /// A new resource instance.
    CreateResource(Resource),
    /// Removes an instance and its dependencies and equivalencies.
    RemoveResource(Place),
    /// Sets an instance's state.
    SetState {
        /// The instance.
        place: Place,
        /// Its new state.
        state: State,
    },
    /// Sets an instance's init strategy.
    SetInit {
        /// The instance.
        place: Place,
        /// Its new strategy.
        init: Init,
    },
    /// `parent` needs `child`: the child is brought in service first and
    /// taken out last.
    CreateDependency {
        /// The node.
        node: u16,
        /// The dependent.
        parent: String,
        /// What it depends on.
        child: String,
    },
    /// Removes a dependency.
    RemoveDependency {
        /// The node.
        node: u16,
        /// The dependent.
        parent: String,
        /// What it depended on.
        child: String,
    },
    /// `a` and `b` are the same resource on two nodes.
    CreateEquivalency {
        /// One instance.
        a: Place,
        /// Its counterpart on another node.
        b: Place,
    },
    /// Removes an equivalency.
    RemoveEquivalency {
        /// One instance.
        a: Place,
        /// Its counterpart.
        b: Place,
    },
    /// Sets the priority of `node` for the whole hierarchy containing
    /// `tag` there.
    SetPriority {
        /// An instance in the hierarchy.
        place: Place,
        /// The priority, 1 (first choice) to 1024.
        priority: u16,
    },
    /// Sets the role of the whole hierarchy containing `place`, on every
    /// node it is extended to.
    SetRole {
        /// An instance in the hierarchy.
        place: Place,
        /// Started or stopped.
        role: Role,
    },
    /// Sets (or with `None` removes) a property of one instance.
    SetProp {
        /// The instance.
        place: Place,
        /// The property's name.
        name: String,
        /// Its value.
        value: Option<String>,
    },
    /// Puts a node in standby (it runs no hierarchy) or takes it out.
    SetStandby {
        /// The node.
        node: u16,
        /// In standby.
        on: bool,
    },
    /// Turns cluster-wide maintenance mode on or off: while on, nothing is
    /// checked, recovered, started or stopped by the cluster.
    SetMaintenance {
        /// On.
        on: bool,
    },
}

impl Change {
    /// Whether it changes the configuration (and its generation), rather
    /// than one node's facts.
    #[must_use]
    pub fn is_configuration(&self) -> bool {
        !matches!(self, Change::SetState { .. })
    }
}

impl fmt::Display for Change {
    /// The change in words, for logs and `verify`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::SetNode { id, name } => write!(f, "name node {id} {name}"),
            Change::CreateResource(r) => write!(
                f,
                "create {} ({}/{}, id {}, priority {})",
                r.place, r.app, r.rtype, r.id, r.priority
            ),
            Change::RemoveResource(p) => write!(f, "remove {p}"),
            Change::SetState { place, state } => write!(f, "set {place} {state}"),
            Change::SetInit { place, init } => write!(f, "set init of {place} to {init}"),
            Change::CreateDependency {
                node,
                parent,
                child,
            } => write!(f, "make {parent} depend on {child} on node {node}"),
            Change::RemoveDependency {
                node,
                parent,
                child,
            } => write!(f, "remove dependency of {parent} on {child} on node {node}"),
            Change::CreateEquivalency { a, b } => write!(f, "make {a} and {b} equivalent"),
            Change::RemoveEquivalency { a, b } => {
                write!(f, "remove equivalency of {a} and {b}")
            }
            Change::SetPriority { place, priority } => {
                write!(f, "set priority of {place}'s hierarchy to {priority}")
            }
            Change::SetRole { place, role } => {
                write!(f, "set role of {place}'s hierarchy to {role}")
            }
            Change::SetProp {
                place,
                name,
                value: Some(value),
            } => write!(f, "set property {name}={value} of {place}"),
            Change::SetProp {
                place,
                name,
                value: None,
            } => write!(f, "remove property {name} of {place}"),
            Change::SetStandby { node, on: true } => write!(f, "put node {node} in standby"),
            Change::SetStandby { node, on: false } => {
                write!(f, "take node {node} out of standby")
            }
            Change::SetMaintenance { on: true } => write!(f, "turn maintenance mode on"),
            Change::SetMaintenance { on: false } => write!(f, "turn maintenance mode off"),
        }
    }
}

/// Why the database refused or failed a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LcdError {
    /// The named instance does not exist.
    NoSuchResource(Place),
    /// An instance with that tag already exists there.
    Exists(Place),
    /// The change would make a dependency cycle.
    Cycle {
        /// The node.
        node: u16,
        /// The resources around the cycle, from the new parent back to it.
        path: Vec<String>,
    },
    /// Two nodes would have the same priority in one hierarchy.
    DuplicatePriority {
        /// The instance whose equivalency class already has it.
        holder: Place,
        /// The priority.
        priority: u16,
    },
    /// The change breaks another rule; the text says which and what to do.
    Invalid(String),
    /// The database file failed.
    Storage(String),
}

impl fmt::Display for LcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LcdError::NoSuchResource(place) => write!(
                f,
                "no resource {place}; `heartline ins list` shows what exists"
            ),
            LcdError::Exists(place) => write!(f, "resource {place} already exists"),
            LcdError::Cycle { node, path } => write!(
                f,
                "that dependency would make a cycle on node {node}: {}",
                path.join(" -> ")
            ),
            LcdError::DuplicatePriority { holder, priority } => write!(
                f,
                "priority {priority} is already {holder}'s in this hierarchy; each node needs its own priority (heartline hry setpri)"
            ),
            LcdError::Invalid(why) | LcdError::Storage(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for LcdError {}

/// The whole database, in memory. On the wire (the control socket, other
/// nodes) it travels as lists, since JSON keys are strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ModelLists", from = "ModelLists")]
pub struct Model {
    /// The cluster configuration generation: one more after every change
    /// but a state change.
    pub generation: u64,
    /// The term of the coordinator that made the last change.
    pub epoch: Epoch,
    /// Nodes in standby: they run no hierarchy.
    pub standby: BTreeSet<u16>,
    /// Cluster-wide maintenance mode.
    pub maintenance: bool,
    /// Cluster nodes by id.
    pub nodes: BTreeMap<u16, String>,
    /// Every instance.
    pub resources: BTreeMap<Place, Resource>,
    /// `(node, parent, child)`.
    pub dependencies: BTreeSet<(u16, String, String)>,
    /// Unordered pairs, stored with the smaller place first.
    pub equivalencies: BTreeSet<(Place, Place)>,
}

/// [`Model`] as it travels.
#[derive(Serialize, Deserialize)]
struct ModelLists {
    generation: u64,
    #[serde(default)]
    epoch: Epoch,
    #[serde(default)]
    standby: Vec<u16>,
    #[serde(default)]
    maintenance: bool,
    nodes: Vec<(u16, String)>,
    resources: Vec<Resource>,
    dependencies: Vec<(u16, String, String)>,
    equivalencies: Vec<(Place, Place)>,
}

impl From<Model> for ModelLists {
    fn from(model: Model) -> ModelLists {
        ModelLists {
            generation: model.generation,
            epoch: model.epoch,
            standby: model.standby.into_iter().collect(),
            maintenance: model.maintenance,
            nodes: model.nodes.into_iter().collect(),
            resources: model.resources.into_values().collect(),
            dependencies: model.dependencies.into_iter().collect(),
            equivalencies: model.equivalencies.into_iter().collect(),
        }
    }
}

impl From<ModelLists> for Model {
    fn from(lists: ModelLists) -> Model {
        Model {
            generation: lists.generation,
            epoch: lists.epoch,
            standby: lists.standby.into_iter().collect(),
            maintenance: lists.maintenance,
            nodes: lists.nodes.into_iter().collect(),
            resources: lists
                .resources
                .into_iter()
                .map(|r| (r.place.clone(), r))
                .collect(),
            dependencies: lists.dependencies.into_iter().collect(),
            equivalencies: lists.equivalencies.into_iter().collect(),
        }
    }
}

fn place(node: u16, tag: &str) -> Place {
    Place {
        node,
        tag: tag.to_string(),
    }
}

fn ordered(a: &Place, b: &Place) -> (Place, Place) {
    if a <= b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

/// Tags are names on a command line and in paths: keep them plain.
fn check_tag(tag: &str) -> Result<(), LcdError> {
    let plain = tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if tag.is_empty() || tag.len() > 64 || !plain || tag.starts_with('-') {
        return Err(LcdError::Invalid(format!(
            "`{tag}` is not a valid tag: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '-'"
        )));
    }
    Ok(())
}

impl Model {
    /// Which configuration this is.
    #[must_use]
    pub fn version(&self) -> Version {
        Version {
            epoch: self.epoch,
            generation: self.generation,
        }
    }

    /// The configuration alone: every state set to OSU (states are each
    /// node's facts, not configuration).
    #[must_use]
    pub fn configuration(&self) -> Model {
        let mut copy = self.clone();
        for r in copy.resources.values_mut() {
            r.state = State::Osu;
        }
        copy
    }

    /// A fingerprint of the configuration (FNV-1a of its canonical JSON,
    /// states aside): two nodes with the same version and digest hold the
    /// same configuration.
    #[must_use]
    pub fn digest(&self) -> u64 {
        let bytes = serde_json::to_vec(&self.configuration()).unwrap_or_default();
        bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    /// Every instance connected to `place` by dependencies (on its node) or
    /// equivalencies (across nodes), and itself: its hierarchy on every
    /// node it is extended to.
    #[must_use]
    pub fn group(&self, place: &Place) -> BTreeSet<Place> {
        let mut members = BTreeSet::from([place.clone()]);
        let mut frontier = vec![place.clone()];
        while let Some(at) = frontier.pop() {
            let mut next: Vec<Place> = self
                .children(at.node, &at.tag)
                .chain(self.parents(at.node, &at.tag))
                .map(|tag| Place {
                    node: at.node,
                    tag: tag.to_string(),
                })
                .collect();
            for (a, b) in &self.equivalencies {
                if *a == at {
                    next.push(b.clone());
                } else if *b == at {
                    next.push(a.clone());
                }
            }
            for other in next {
                if members.insert(other.clone()) {
                    frontier.push(other);
                }
            }
        }
        members
    }

    /// The instance at `place`.
    pub fn resource(&self, place: &Place) -> Result<&Resource, LcdError> {
        self.resources
            .get(place)
            .ok_or_else(|| LcdError::NoSuchResource(place.clone()))
    }

    /// What `tag` on `node` directly depends on.
    pub fn children<'a>(&'a self, node: u16, tag: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.dependencies
            .iter()
            .filter(move |(n, p, _)| *n == node && p == tag)
            .map(|(_, _, c)| c.as_str())
    }

    /// What directly depends on `tag` on `node`.
    pub fn parents<'a>(&'a self, node: u16, tag: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.dependencies
            .iter()
            .filter(move |(n, _, c)| *n == node && c == tag)
            .map(|(_, p, _)| p.as_str())
    }

    /// The instances equivalent to `place`, on other nodes, and itself.
    pub fn equivalents(&self, place: &Place) -> BTreeSet<Place> {
        let mut class = BTreeSet::from([place.clone()]);
        let mut frontier = vec![place.clone()];
        while let Some(at) = frontier.pop() {
            for (a, b) in &self.equivalencies {
                let other = if *a == at {
                    b
                } else if *b == at {
                    a
                } else {
                    continue;
                };
                if class.insert(other.clone()) {
                    frontier.push(other.clone());
                }
            }
        }
        class
    }

    /// Every instance on `place`'s node connected to it by dependencies,
    /// either way: its hierarchy there.
    pub fn hierarchy(&self, place: &Place) -> BTreeSet<String> {
        let mut members = BTreeSet::from([place.tag.clone()]);
        let mut frontier = vec![place.tag.clone()];
        while let Some(tag) = frontier.pop() {
            let next: Vec<String> = self
                .children(place.node, &tag)
                .chain(self.parents(place.node, &tag))
                .map(str::to_string)
                .collect();
            for other in next {
                if members.insert(other.clone()) {
                    frontier.push(other);
                }
            }
        }
        members
    }

    /// The hierarchy of `place` in the order to bring it in service:
    /// every resource after everything it depends on.
    pub fn restore_order(&self, place: &Place) -> Vec<String> {
        let members = self.hierarchy(place);
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        fn visit(
            model: &Model,
            node: u16,
            tag: &str,
            done: &mut BTreeSet<String>,
            order: &mut Vec<String>,
        ) {
            if !done.insert(tag.to_string()) {
                return;
            }
            let children: Vec<String> = model.children(node, tag).map(str::to_string).collect();
            for child in children {
                visit(model, node, &child, done, order);
            }
            order.push(tag.to_string());
        }
        for tag in &members {
            visit(self, place.node, tag, &mut done, &mut order);
        }
        order
    }

    /// The hierarchy of `place` in the order to take it out of service:
    /// every resource before everything it depends on.
    pub fn remove_order(&self, place: &Place) -> Vec<String> {
        let mut order = self.restore_order(place);
        order.reverse();
        order
    }

    /// Checks `change` against every rule, without applying it.
    pub fn check(&self, change: &Change) -> Result<(), LcdError> {
        match change {
            Change::SetNode { name, .. } => {
                if name.is_empty() {
                    return Err(LcdError::Invalid("a node needs a name".into()));
                }
            }
            Change::CreateResource(resource) => {
                check_tag(&resource.place.tag)?;
                if self.resources.contains_key(&resource.place) {
                    return Err(LcdError::Exists(resource.place.clone()));
                }
                for (what, value) in [
                    ("id", &resource.id),
                    ("app", &resource.app),
                    ("type", &resource.rtype),
                ] {
                    if value.trim().is_empty() {
                        return Err(LcdError::Invalid(format!("a resource needs a {what}")));
                    }
                }
                let same_id = self
                    .resources
                    .values()
                    .find(|r| r.place.node == resource.place.node && r.id == resource.id);
                if let Some(other) = same_id {
                    return Err(LcdError::Invalid(format!(
                        "id `{}` is already {}'s on node {}; ids are unique on a node",
                        resource.id, other.place.tag, other.place.node
                    )));
                }
                if !PRIORITIES.contains(&resource.priority) {
                    return Err(priority_range(resource.priority));
                }
                for (name, value) in &resource.props {
                    check_property(name, value)?;
                }
            }
            Change::RemoveResource(place) => {
                let resource = self.resource(place)?;
                if resource.state.maybe_running() {
                    return Err(LcdError::Invalid(format!(
                        "{place} is {}; take it out of service first (heartline out-of-service {})",
                        resource.state, place.tag
                    )));
                }
            }
            Change::SetState { place, .. } | Change::SetInit { place, .. } => {
                self.resource(place)?;
            }
            Change::SetRole { .. }
            | Change::SetProp { .. }
            | Change::SetStandby { .. }
            | Change::SetMaintenance { .. } => self.check_more(change)?,
            Change::CreateDependency {
                node,
                parent,
                child,
            } => {
                let (p, c) = (place(*node, parent), place(*node, child));
                self.resource(&p)?;
                self.resource(&c)?;
                if parent == child {
                    return Err(LcdError::Invalid(format!("{p} cannot depend on itself")));
                }
                if self
                    .dependencies
                    .contains(&(*node, parent.clone(), child.clone()))
                {
                    return Err(LcdError::Invalid(format!(
                        "{parent} already depends on {child} on node {node}"
                    )));
                }
                if let Some(mut path) = self.path_down(*node, child, parent) {
                    path.insert(0, parent.clone());
                    return Err(LcdError::Cycle { node: *node, path });
                }
            }
            Change::RemoveDependency {
                node,
                parent,
                child,
            } => {
                if !self
                    .dependencies
                    .contains(&(*node, parent.clone(), child.clone()))
                {
                    return Err(LcdError::Invalid(format!(
                        "{parent} does not depend on {child} on node {node}; `heartline dep list` shows the dependencies"
                    )));
                }
            }
            Change::CreateEquivalency { a, b } => {
                let (ra, rb) = (self.resource(a)?, self.resource(b)?);
                if a.node == b.node {
                    return Err(LcdError::Invalid(format!(
                        "{a} and {b} are on the same node; an equivalency links a resource to its counterpart on another node"
                    )));
                }
                if (ra.app.as_str(), ra.rtype.as_str()) != (rb.app.as_str(), rb.rtype.as_str()) {
                    return Err(LcdError::Invalid(format!(
                        "{a} is {}/{} and {b} is {}/{}; equivalent resources have the same type",
                        ra.app, ra.rtype, rb.app, rb.rtype
                    )));
                }
                if self.equivalencies.contains(&ordered(a, b)) {
                    return Err(LcdError::Invalid(format!(
                        "{a} and {b} are already equivalent"
                    )));
                }
                let (class_a, class_b) = (self.equivalents(a), self.equivalents(b));
                for x in &class_a {
                    for y in &class_b {
                        if x.node == y.node {
                            return Err(LcdError::Invalid(format!(
                                "node {} would hold two instances of this resource ({} and {})",
                                x.node, x.tag, y.tag
                            )));
                        }
                        let (px, py) = (self.resource(x)?.priority, self.resource(y)?.priority);
                        if px == py {
                            return Err(LcdError::DuplicatePriority {
                                holder: x.clone(),
                                priority: px,
                            });
                        }
                    }
                }
            }
            Change::RemoveEquivalency { a, b } => {
                if !self.equivalencies.contains(&ordered(a, b)) {
                    return Err(LcdError::Invalid(format!(
                        "{a} and {b} are not equivalent; `heartline eqv list` shows the equivalencies"
                    )));
                }
            }
            Change::SetPriority { place, priority } => {
                self.resource(place)?;
                if !PRIORITIES.contains(priority) {
                    return Err(priority_range(*priority));
                }
                for tag in self.hierarchy(place) {
                    let member = Place {
                        node: place.node,
                        tag,
                    };
                    for other in self.equivalents(&member) {
                        if other.node != place.node && self.resource(&other)?.priority == *priority
                        {
                            return Err(LcdError::DuplicatePriority {
                                holder: other,
                                priority: *priority,
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn check_more(&self, change: &Change) -> Result<(), LcdError> {
        match change {
            Change::SetRole { place, .. } => {
                self.resource(place)?;
            }
            Change::SetProp { place, name, value } => {
                self.resource(place)?;
                let plain = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if name.is_empty() || name.len() > 64 || !plain {
                    return Err(LcdError::Invalid(format!(
                        "`{name}` is not a valid property name: use 1 to 64 letters, digits or '_'"
                    )));
                }
                if let Some(value) = value {
                    check_property(name, value)?;
                }
            }
            Change::SetStandby { node: 0, .. } => {
                return Err(LcdError::Invalid("node 0 does not exist".into()));
            }
            _ => {}
        }
        Ok(())
    }

    /// A dependency path from `from` down to `to` on `node`, if any.
    fn path_down(&self, node: u16, from: &str, to: &str) -> Option<Vec<String>> {
        if from == to {
            return Some(vec![to.to_string()]);
        }
        for child in self.children(node, from) {
            if let Some(mut rest) = self.path_down(node, child, to) {
                rest.insert(0, from.to_string());
                return Some(rest);
            }
        }
        None
    }

    /// Applies a change that [`Model::check`] accepted.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::SetNode { id, name } => {
                self.nodes.insert(*id, name.clone());
            }
            Change::CreateResource(resource) => {
                self.resources
                    .insert(resource.place.clone(), resource.clone());
            }
            Change::RemoveResource(at) => {
                self.resources.remove(at);
                self.dependencies
                    .retain(|(n, p, c)| !(*n == at.node && (*p == at.tag || *c == at.tag)));
                self.equivalencies.retain(|(a, b)| a != at && b != at);
            }
            Change::SetState { place, state } => {
                if let Some(r) = self.resources.get_mut(place) {
                    r.state = *state;
                }
            }
            Change::SetInit { place, init } => {
                if let Some(r) = self.resources.get_mut(place) {
                    r.init = *init;
                }
            }
            Change::CreateDependency {
                node,
                parent,
                child,
            } => {
                self.dependencies
                    .insert((*node, parent.clone(), child.clone()));
            }
            Change::RemoveDependency {
                node,
                parent,
                child,
            } => {
                self.dependencies
                    .remove(&(*node, parent.clone(), child.clone()));
            }
            Change::CreateEquivalency { a, b } => {
                self.equivalencies.insert(ordered(a, b));
            }
            Change::RemoveEquivalency { a, b } => {
                self.equivalencies.remove(&ordered(a, b));
            }
            Change::SetPriority { place, priority } => {
                for tag in self.hierarchy(place) {
                    let member = Place {
                        node: place.node,
                        tag,
                    };
                    if let Some(r) = self.resources.get_mut(&member) {
                        r.priority = *priority;
                    }
                }
            }
            Change::SetRole { place, role } => {
                for member in self.group(place) {
                    if let Some(r) = self.resources.get_mut(&member) {
                        r.role = *role;
                    }
                }
            }
            Change::SetProp { place, name, value } => {
                if let Some(r) = self.resources.get_mut(place) {
                    match value {
                        Some(value) => r.props.insert(name.clone(), value.clone()),
                        None => r.props.remove(name),
                    };
                }
            }
            Change::SetStandby { node, on } => {
                if *on {
                    self.standby.insert(*node);
                } else {
                    self.standby.remove(node);
                }
            }
            Change::SetMaintenance { on } => self.maintenance = *on,
        }
        // A state is its node's fact, reported as it changes; the
        // generation counts the configuration, which every node must agree
        // on in the same order.
        if change.is_configuration() {
            self.generation += 1;
        }
    }
}

/// Checks a property's value; the error says what is wrong.
pub type PropertyRule = fn(&str) -> Result<(), String>;

/// Properties the daemon itself reads, with what their values must be.
/// Any other property is the kit's (its scripts see it).
pub const PROPERTY_RULES: &[(&str, PropertyRule)] = &[
    ("quick_check_interval", check_interval),
    ("failure_window", check_interval),
    ("max_failures", check_count),
];

/// Checks a property the daemon reads; any other is the kit's business.
fn check_property(name: &str, value: &str) -> Result<(), LcdError> {
    match PROPERTY_RULES.iter().find(|(known, _)| *known == name) {
        Some((_, rule)) => {
            rule(value).map_err(|why| LcdError::Invalid(format!("property {name}: {why}")))
        }
        None => Ok(()),
    }
}

fn check_interval(value: &str) -> Result<(), String> {
    humantime::parse_duration(value)
        .map(|_| ())
        .map_err(|e| format!("`{value}` is not a duration such as 30s or 10m ({e})"))
}

fn check_count(value: &str) -> Result<(), String> {
    value
        .parse::<u32>()
        .map(|_| ())
        .map_err(|_| format!("`{value}` is not a whole number"))
}

fn priority_range(priority: u16) -> LcdError {
    LcdError::Invalid(format!(
        "priority {priority} is out of range; use 1 (first choice) to 1024"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(node: u16, tag: &str, priority: u16) -> Resource {
        Resource {
            place: place(node, tag),
            id: format!("/srv/{tag}"),
            app: "gen".into(),
            rtype: "app".into(),
            state: State::Osu,
            init: Init::Autores,
            flags: BTreeSet::new(),
            info: String::new(),
            props: BTreeMap::new(),
            priority,
            role: Role::Stopped,
        }
    }

    fn apply(model: &mut Model, change: Change) -> Result<(), LcdError> {
        model.check(&change)?;
        model.apply(&change);
        Ok(())
    }

    fn dep(node: u16, parent: &str, child: &str) -> Change {
        Change::CreateDependency {
            node,
            parent: parent.into(),
            child: child.into(),
        }
    }

    /// web needs app, app needs data, on node 1.
    fn stack() -> Model {
        let mut model = Model::default();
        for tag in ["web", "app", "data"] {
            apply(&mut model, Change::CreateResource(resource(1, tag, 1))).unwrap();
        }
        apply(&mut model, dep(1, "web", "app")).unwrap();
        apply(&mut model, dep(1, "app", "data")).unwrap();
        model
    }

    #[test]
    fn hierarchies_come_up_children_first_and_go_down_parents_first() {
        let model = stack();
        assert_eq!(
            model.restore_order(&place(1, "app")),
            ["data", "app", "web"]
        );
        assert_eq!(
            model.remove_order(&place(1, "data")),
            ["web", "app", "data"]
        );
        assert_eq!(model.generation, 5);
    }

    #[test]
    fn a_dependency_cycle_is_refused_with_its_path() {
        let mut model = stack();
        let before = model.clone();
        let e = apply(&mut model, dep(1, "data", "web")).unwrap_err();
        assert_eq!(
            e,
            LcdError::Cycle {
                node: 1,
                path: vec!["data".into(), "web".into(), "app".into(), "data".into()]
            }
        );
        assert!(e.to_string().contains("data -> web -> app -> data"), "{e}");
        assert_eq!(model, before, "nothing changed");
        assert!(apply(&mut model, dep(1, "web", "web")).is_err());
    }

    #[test]
    fn priorities_are_unique_across_a_hierarchys_nodes() {
        let mut model = Model::default();
        apply(&mut model, Change::CreateResource(resource(1, "db", 1))).unwrap();
        apply(&mut model, Change::CreateResource(resource(2, "db", 1))).unwrap();
        let eqv = Change::CreateEquivalency {
            a: place(1, "db"),
            b: place(2, "db"),
        };
        let e = apply(&mut model, eqv.clone()).unwrap_err();
        assert!(
            matches!(e, LcdError::DuplicatePriority { priority: 1, .. }),
            "{e}"
        );
        apply(
            &mut model,
            Change::SetPriority {
                place: place(2, "db"),
                priority: 10,
            },
        )
        .unwrap();
        apply(&mut model, eqv).unwrap();
        let e = apply(
            &mut model,
            Change::SetPriority {
                place: place(2, "db"),
                priority: 1,
            },
        )
        .unwrap_err();
        assert!(matches!(e, LcdError::DuplicatePriority { .. }), "{e}");
        let e = apply(
            &mut model,
            Change::SetPriority {
                place: place(2, "db"),
                priority: 0,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("1 (first choice) to 1024"), "{e}");
    }

    #[test]
    fn equivalencies_link_the_same_type_on_different_nodes_once_per_node() {
        let mut model = Model::default();
        apply(&mut model, Change::CreateResource(resource(1, "a", 1))).unwrap();
        apply(&mut model, Change::CreateResource(resource(1, "b", 2))).unwrap();
        apply(&mut model, Change::CreateResource(resource(2, "a", 2))).unwrap();
        apply(&mut model, Change::CreateResource(resource(3, "a", 3))).unwrap();
        let mut other = resource(3, "ip", 3);
        other.app = "net".into();
        apply(&mut model, Change::CreateResource(other)).unwrap();
        let link = |a: (u16, &str), b: (u16, &str)| Change::CreateEquivalency {
            a: place(a.0, a.1),
            b: place(b.0, b.1),
        };
        assert!(
            apply(&mut model, link((1, "a"), (1, "b"))).is_err(),
            "same node"
        );
        assert!(
            apply(&mut model, link((1, "a"), (3, "ip"))).is_err(),
            "other type"
        );
        apply(&mut model, link((1, "a"), (2, "a"))).unwrap();
        apply(&mut model, link((2, "a"), (3, "a"))).unwrap();
        assert_eq!(model.equivalents(&place(1, "a")).len(), 3);
        let e = apply(&mut model, link((1, "b"), (3, "a"))).unwrap_err();
        assert!(e.to_string().contains("two instances"), "{e}");
    }

    #[test]
    fn removing_a_resource_takes_its_links_but_not_while_in_service() {
        let mut model = stack();
        apply(
            &mut model,
            Change::SetState {
                place: place(1, "app"),
                state: State::Isp,
            },
        )
        .unwrap();
        let e = apply(&mut model, Change::RemoveResource(place(1, "app"))).unwrap_err();
        assert!(e.to_string().contains("out-of-service app"), "{e}");
        apply(
            &mut model,
            Change::SetState {
                place: place(1, "app"),
                state: State::Osu,
            },
        )
        .unwrap();
        apply(&mut model, Change::RemoveResource(place(1, "app"))).unwrap();
        assert!(model.dependencies.is_empty());
        assert_eq!(model.hierarchy(&place(1, "web")).len(), 1);
    }

    #[test]
    fn bad_names_and_duplicates_are_refused() {
        let mut model = stack();
        for tag in ["", "-x", "a b", "ä", &"x".repeat(65)] {
            assert!(
                apply(&mut model, Change::CreateResource(resource(1, tag, 1))).is_err(),
                "{tag:?}"
            );
        }
        let e = apply(&mut model, Change::CreateResource(resource(1, "web", 1))).unwrap_err();
        assert_eq!(e, LcdError::Exists(place(1, "web")));
        let mut same_id = resource(1, "web2", 1);
        same_id.id = "/srv/web".into();
        assert!(apply(&mut model, Change::CreateResource(same_id)).is_err());
        assert!(State::parse("up").is_err());
        assert_eq!(State::parse("isp").unwrap(), State::Isp);
    }
}
