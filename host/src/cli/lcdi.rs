//! The configuration database's command-line interface (LCDI), in
//! LifeKeeper's vocabulary: `ins`, `dep`, `eqv` and `hry` subcommands, each
//! turned into one database change or one listing.

use std::fmt::Write;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::node_id;
use crate::resources::lcd::{Change, Init, Model, Place, Resource, State};

/// `heartline ins ...`: resource instances.
#[derive(Debug, Subcommand)]
pub enum Ins {
    /// List resource instances.
    List {
        /// Only this node's.
        #[arg(long, value_parser = node_id)]
        node: Option<u16>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a resource instance.
    Create {
        /// Its tag (its name on its node).
        #[arg(long)]
        tag: String,
        /// What it is, unique on its node (a path, an address, ...).
        #[arg(long)]
        id: String,
        /// Its recovery kit's application (e.g. gen).
        #[arg(long)]
        app: String,
        /// Its recovery kit's resource type (e.g. app).
        #[arg(long = "type")]
        rtype: String,
        /// What the daemon does with it at start: autores, in-service,
        /// out-of-service.
        #[arg(long, default_value = "autores")]
        init: String,
        /// This node's priority for it, 1 (first choice) to 1024.
        #[arg(long, default_value_t = 1)]
        priority: u16,
        /// Free-form information for the kit.
        #[arg(long, default_value = "")]
        info: String,
        /// A property for the kit's scripts, NAME=VALUE (repeatable);
        /// scripts see it as HEARTLINE_PROP_NAME.
        #[arg(long = "prop", value_parser = parse_prop)]
        props: Vec<(String, String)>,
        /// A flag for the kit (repeatable).
        #[arg(long = "flag")]
        flags: Vec<String>,
        /// The node it is on (default: this one).
        #[arg(long, value_parser = node_id)]
        node: Option<u16>,
    },
    /// Remove a resource instance (out of service), with its dependencies
    /// and equivalencies.
    Remove {
        /// Its tag.
        tag: String,
        /// Its node (default: this one).
        #[arg(long, value_parser = node_id)]
        node: Option<u16>,
    },
    /// Set a resource's recorded state (ISP, ISU, OSF, OSU) without running
    /// anything.
    Setstate {
        /// Its tag.
        tag: String,
        /// The state.
        state: String,
        /// Its node (default: this one).
        #[arg(long, value_parser = node_id)]
        node: Option<u16>,
    },
    /// Set (or, without VALUE, remove) a property of a resource. Scripts
    /// see it as HEARTLINE_PROP_NAME; the daemon itself reads
    /// quick_check_interval (e.g. 2s, overriding the kit's),
    /// failure_window (e.g. 10m) and max_failures (e.g. 3).
    Setprop {
        /// Its tag.
        tag: String,
        /// The property's name.
        name: String,
        /// Its value; none removes it.
        value: Option<String>,
        /// Its node (default: this one).
        #[arg(long, value_parser = node_id)]
        node: Option<u16>,
    },
    /// Set a resource's init strategy (autores, in-service, out-of-service).
    Setinit {
        /// Its tag.
        tag: String,
        /// The strategy.
        init: String,
        /// Its node (default: this one).
        #[arg(long, value_parser = node_id)]
        node: Option<u16>,
    },
}

/// `heartline dep ...`: dependencies between resources on one node.
#[derive(Debug, Subcommand)]
pub enum Dep {
    /// PARENT depends on CHILD: the child comes up first, goes down last.
    Create(DepArgs),
    /// Remove a dependency.
    Remove(DepArgs),
    /// List dependencies.
    List {
        /// Only this node's.
        #[arg(long, value_parser = node_id)]
        node: Option<u16>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which dependency a `dep create` or `dep remove` names.
#[derive(Debug, Args)]
pub struct DepArgs {
    /// The dependent resource.
    #[arg(long)]
    parent: String,
    /// What it depends on.
    #[arg(long)]
    child: String,
    /// The node (default: this one).
    #[arg(long, value_parser = node_id)]
    node: Option<u16>,
}

/// Which equivalency an `eqv create` or `eqv remove` names.
#[derive(Debug, Args)]
pub struct EqvArgs {
    /// The resource here.
    #[arg(long)]
    tag: String,
    /// The other node.
    #[arg(long, value_parser = node_id)]
    other_node: u16,
    /// The resource there.
    #[arg(long)]
    other_tag: String,
    /// The node of TAG (default: this one).
    #[arg(long, value_parser = node_id)]
    node: Option<u16>,
}

impl EqvArgs {
    /// Its two places, with `here` for an unnamed node.
    fn places(&self, here: u16) -> (Place, Place) {
        (
            at(self.node, here, &self.tag),
            at(Some(self.other_node), here, &self.other_tag),
        )
    }
}

/// `heartline eqv ...`: a resource and its counterpart on another node.
#[derive(Debug, Subcommand)]
pub enum Eqv {
    /// TAG (on --node) and OTHER_TAG on OTHER_NODE are the same resource.
    Create(EqvArgs),
    /// Remove an equivalency.
    Remove(EqvArgs),
    /// List equivalencies.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `heartline hry ...`: whole hierarchies.
#[derive(Debug, Subcommand)]
pub enum Hry {
    /// Set a node's priority for the hierarchy containing TAG there.
    Setpri {
        /// A resource of the hierarchy.
        tag: String,
        /// 1 (first choice) to 1024, unique among the hierarchy's nodes.
        priority: u16,
        /// The node (default: this one).
        #[arg(long, value_parser = node_id)]
        node: Option<u16>,
    },
}

/// What a command asks of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Read the database and print this.
    List(Listing),
    /// Make this change.
    Change(Change),
}

/// A listing, and how to print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Resource instances.
    Resources {
        /// Only this node's.
        node: Option<u16>,
        /// As JSON.
        json: bool,
    },
    /// Dependencies.
    Dependencies {
        /// Only this node's.
        node: Option<u16>,
        /// As JSON.
        json: bool,
    },
    /// Equivalencies.
    Equivalencies {
        /// As JSON.
        json: bool,
    },
}

fn parse_prop(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    if name.is_empty() {
        return Err(format!("`{text}` has no name before '='"));
    }
    Ok((name.to_string(), value.to_string()))
}

fn at(node: Option<u16>, here: u16, tag: &str) -> Place {
    Place {
        node: node.unwrap_or(here),
        tag: tag.to_string(),
    }
}

impl Ins {
    /// The plan of this command on node `here`.
    pub fn plan(self, here: u16) -> Result<Plan, String> {
        Ok(match self {
            Ins::List { node, json } => Plan::List(Listing::Resources { node, json }),
            Ins::Create {
                tag,
                id,
                app,
                rtype,
                init,
                priority,
                info,
                props,
                flags,
                node,
            } => Plan::Change(Change::CreateResource(Resource {
                place: at(node, here, &tag),
                id,
                app,
                rtype,
                state: State::Osu,
                init: Init::parse(&init).map_err(|e| e.to_string())?,
                flags: flags.into_iter().collect(),
                info,
                props: props.into_iter().collect(),
                priority,
                role: crate::resources::lcd::Role::Stopped,
            })),
            Ins::Remove { tag, node } => Plan::Change(Change::RemoveResource(at(node, here, &tag))),
            Ins::Setstate { tag, state, node } => Plan::Change(Change::SetState {
                place: at(node, here, &tag),
                state: State::parse(&state).map_err(|e| e.to_string())?,
            }),
            Ins::Setprop {
                tag,
                name,
                value,
                node,
            } => Plan::Change(Change::SetProp {
                place: at(node, here, &tag),
                name,
                value,
            }),
            Ins::Setinit { tag, init, node } => Plan::Change(Change::SetInit {
                place: at(node, here, &tag),
                init: Init::parse(&init).map_err(|e| e.to_string())?,
            }),
        })
    }
}

impl Dep {
    /// The plan of this command on node `here`.
    #[must_use]
    pub fn plan(self, here: u16) -> Plan {
        match self {
            Dep::Create(d) => Plan::Change(Change::CreateDependency {
                node: d.node.unwrap_or(here),
                parent: d.parent,
                child: d.child,
            }),
            Dep::Remove(d) => Plan::Change(Change::RemoveDependency {
                node: d.node.unwrap_or(here),
                parent: d.parent,
                child: d.child,
            }),
            Dep::List { node, json } => Plan::List(Listing::Dependencies { node, json }),
        }
    }
}

impl Eqv {
    /// The plan of this command on node `here`.
    #[must_use]
    pub fn plan(self, here: u16) -> Plan {
        match self {
            Eqv::Create(e) => {
                let (a, b) = e.places(here);
                Plan::Change(Change::CreateEquivalency { a, b })
            }
            Eqv::Remove(e) => {
                let (a, b) = e.places(here);
                Plan::Change(Change::RemoveEquivalency { a, b })
            }
            Eqv::List { json } => Plan::List(Listing::Equivalencies { json }),
        }
    }
}

impl Hry {
    /// The plan of this command on node `here`.
    #[must_use]
    pub fn plan(self, here: u16) -> Plan {
        match self {
            Hry::Setpri {
                tag,
                priority,
                node,
            } => Plan::Change(Change::SetPriority {
                place: at(node, here, &tag),
                priority,
            }),
        }
    }
}

#[derive(Serialize)]
struct DependencyRow<'a> {
    node: u16,
    parent: &'a str,
    child: &'a str,
}

/// Prints `listing` of `model`, nodes named by `name` (`bravo (2)`); the
/// states of resources on the nodes in `down` are marked as only the last
/// known. The JSON keeps the ids.
pub fn render(
    model: &Model,
    listing: Listing,
    down: &std::collections::BTreeSet<u16>,
    name: &dyn Fn(u16) -> String,
) -> Result<String, serde_json::Error> {
    let keep = |node: Option<u16>, n: u16| node.is_none_or(|only| only == n);
    let mut out = String::new();
    match listing {
        Listing::Resources { node, json } => {
            let rows: Vec<&Resource> = model
                .resources
                .values()
                .filter(|r| keep(node, r.place.node))
                .collect();
            if json {
                return serde_json::to_string_pretty(&rows);
            }
            // Columns as wide as their widest cell (the states' and roles'
            // Display do not pad themselves, so each is made a string).
            let cells: Vec<[String; 8]> = rows
                .iter()
                .map(|r| {
                    [
                        name(r.place.node),
                        r.place.tag.clone(),
                        format!("{}/{}", r.app, r.rtype),
                        if down.contains(&r.place.node) {
                            format!("{}?", r.state)
                        } else {
                            r.state.to_string()
                        },
                        r.role.to_string(),
                        r.init.to_string(),
                        r.priority.to_string(),
                        r.id.clone(),
                    ]
                })
                .collect();
            let header = ["NODE", "TAG", "TYPE", "STATE", "ROLE", "INIT", "PRI", "ID"];
            let mut widths = header.map(str::len);
            for row in &cells {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            let line = |out: &mut String, row: [&str; 8]| {
                let mut text = String::new();
                for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                    if i == 7 {
                        text.push_str(cell);
                    } else if i == 6 {
                        let _ = write!(text, "{cell:>w$}  ");
                    } else {
                        let _ = write!(text, "{cell:<w$} ");
                    }
                }
                let _ = writeln!(out, "{}", text.trim_end());
            };
            line(&mut out, header);
            for row in &cells {
                line(&mut out, row.each_ref().map(String::as_str));
            }
            let marked: Vec<String> = down
                .iter()
                .filter(|n| rows.iter().any(|r| r.place.node == **n))
                .map(|n| name(*n))
                .collect();
            if !marked.is_empty() {
                let _ = writeln!(
                    out,
                    "? {} {} down: the state shown is the last known, and may no longer hold",
                    marked.join(", "),
                    if marked.len() == 1 { "is" } else { "are" }
                );
            }
        }
        Listing::Dependencies { node, json } => {
            let rows: Vec<DependencyRow<'_>> = model
                .dependencies
                .iter()
                .filter(|(n, _, _)| keep(node, *n))
                .map(|(node, parent, child)| DependencyRow {
                    node: *node,
                    parent,
                    child,
                })
                .collect();
            if json {
                return serde_json::to_string_pretty(&rows);
            }
            let nodes: Vec<String> = rows.iter().map(|r| name(r.node)).collect();
            let width = nodes
                .iter()
                .map(|n| n.chars().count())
                .max()
                .unwrap_or(0)
                .max(4);
            let _ = writeln!(out, "{:<width$} {:<20} CHILD", "NODE", "PARENT");
            for (row, node) in rows.iter().zip(&nodes) {
                let _ = writeln!(out, "{node:<width$} {:<20} {}", row.parent, row.child);
            }
        }
        Listing::Equivalencies { json } => {
            let pairs: Vec<&(Place, Place)> = model.equivalencies.iter().collect();
            if json {
                return serde_json::to_string_pretty(&pairs);
            }
            let priority = |p: &Place| model.resources.get(p).map_or(0, |r| r.priority);
            let place = |p: &Place| format!("{} on {}", p.tag, name(p.node));
            let _ = writeln!(out, "{:<28} {:<28} PRIORITIES", "RESOURCE", "EQUIVALENT");
            for (a, b) in pairs {
                let _ = writeln!(
                    out,
                    "{:<28} {:<28} {} / {}",
                    place(a),
                    place(b),
                    priority(a),
                    priority(b)
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_resource_listing_keeps_its_columns_whatever_the_lengths() {
        let mut model = Model::default();
        for (node, tag, state) in [
            (1, "web", State::Isp),
            (2, "a-rather-long-resource-tag-indeed", State::Osu),
        ] {
            let resource = Resource {
                place: Place {
                    node,
                    tag: tag.into(),
                },
                id: format!("/srv/{tag}"),
                app: "gen".into(),
                rtype: "app".into(),
                state,
                init: Init::Autores,
                flags: std::collections::BTreeSet::new(),
                info: String::new(),
                props: std::collections::BTreeMap::new(),
                priority: node,
                role: crate::resources::lcd::Role::Started,
            };
            model.resources.insert(resource.place.clone(), resource);
        }
        // Node 1 named, node 2 not.
        let named = |n: u16| heartline_brain::api::node_name(n, (n == 1).then_some("alpha"));
        let text = render(
            &model,
            Listing::Resources {
                node: None,
                json: false,
            },
            &std::collections::BTreeSet::new(),
            &named,
        )
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[1].starts_with("alpha (1) ") && lines[2].starts_with("node 2 "),
            "{text}"
        );
        // Every column starts where its header does.
        for header in ["TAG", "TYPE", "STATE", "ROLE", "INIT", "ID"] {
            let at = lines[0].find(header).unwrap();
            for line in &lines[1..] {
                assert!(
                    line[at..].starts_with(|c: char| c != ' ') && line[..at].ends_with(' '),
                    "{header} at {at}:\n{text}"
                );
            }
        }
        // Node 2 down: its state is the last known, and said to be.
        let text = render(
            &model,
            Listing::Resources {
                node: None,
                json: false,
            },
            &std::collections::BTreeSet::from([2]),
            &named,
        )
        .unwrap();
        assert!(text.contains(" ISP ") && text.contains(" OSU? "), "{text}");
        assert!(
            text.ends_with(
                "? node 2 is down: the state shown is the last known, and may no longer hold\n"
            ),
            "{text}"
        );
    }
}
