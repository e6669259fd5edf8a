//! Hierarchy groups: every resource instance connected by dependencies (on
//! one node) or equivalencies (across nodes). A group is the unit of
//! placement: it runs on at most one node, as that node's hierarchy.
//!
//! Built in one pass (union-find) from a configuration and kept until the
//! configuration changes, so that deciding is linear in the resources.

use std::collections::BTreeMap;

use crate::model::{Model, Place, Role};

/// One group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its smallest member: the group's name in orders and logs.
    pub key: Place,
    /// Its members on each node.
    pub members: BTreeMap<u16, Vec<Place>>,
    /// Each member's slot (see [`Groups::slot`]), in `members` order.
    pub slots: BTreeMap<u16, Vec<usize>>,
    /// Each node's priority for it: the best (lowest) of its members there.
    pub priorities: BTreeMap<u16, u16>,
    /// Started if any member's role is.
    pub role: Role,
}

impl Group {
    /// The nodes it is extended to.
    pub fn nodes(&self) -> impl Iterator<Item = u16> + '_ {
        self.members.keys().copied()
    }

    /// Its members on `node`.
    #[must_use]
    pub fn on(&self, node: u16) -> &[Place] {
        self.members.get(&node).map_or(&[], Vec::as_slice)
    }

    /// The slots of its members on `node`.
    #[must_use]
    pub fn on_slots(&self, node: u16) -> &[usize] {
        self.slots.get(&node).map_or(&[], Vec::as_slice)
    }

    /// The tag of its first member on `node`.
    #[must_use]
    pub fn tag_on(&self, node: u16) -> Option<&str> {
        self.on(node).first().map(|p| p.tag.as_str())
    }

    /// Every member.
    pub fn places(&self) -> impl Iterator<Item = &Place> + '_ {
        self.members.values().flatten()
    }

    /// `node`'s priority for it: the best (lowest) of its members there.
    #[must_use]
    pub fn priority(&self, node: u16) -> u16 {
        self.priorities.get(&node).copied().unwrap_or(u16::MAX)
    }
}

/// Every group of a configuration.
#[derive(Debug, Clone, Default)]
pub struct Groups {
    groups: Vec<Group>,
    /// Each place's group, and its slot: its index in the configuration's
    /// resources in order.
    of: BTreeMap<Place, (usize, usize)>,
}

impl Groups {
    /// The groups of `model`.
    #[must_use]
    pub fn build(model: &Model) -> Groups {
        let places: Vec<&Place> = model.resources.keys().collect();
        let index: BTreeMap<&Place, usize> =
            places.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        let mut parent: Vec<usize> = (0..places.len()).collect();
        fn find(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        let mut union = |a: Option<&usize>, b: Option<&usize>| {
            if let (Some(&a), Some(&b)) = (a, b) {
                let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
                if ra != rb {
                    parent[ra.max(rb)] = ra.min(rb);
                }
            }
        };
        for (node, p, c) in &model.dependencies {
            let pp = Place {
                node: *node,
                tag: p.clone(),
            };
            let cp = Place {
                node: *node,
                tag: c.clone(),
            };
            union(index.get(&pp), index.get(&cp));
        }
        for (a, b) in &model.equivalencies {
            union(index.get(a), index.get(b));
        }
        let mut groups: Vec<Group> = Vec::new();
        let mut by_root: BTreeMap<usize, usize> = BTreeMap::new();
        let mut of = BTreeMap::new();
        for (i, place) in places.iter().enumerate() {
            let root = find(&mut parent, i);
            let g = *by_root.entry(root).or_insert_with(|| {
                groups.push(Group {
                    key: (*place).clone(),
                    members: BTreeMap::new(),
                    slots: BTreeMap::new(),
                    priorities: BTreeMap::new(),
                    role: Role::Stopped,
                });
                groups.len() - 1
            });
            // Places are visited in order, so the first is the smallest.
            let group = &mut groups[g];
            group
                .members
                .entry(place.node)
                .or_default()
                .push((*place).clone());
            group.slots.entry(place.node).or_default().push(i);
            if let Some(r) = model.resources.get(*place) {
                let best = group.priorities.entry(place.node).or_insert(r.priority);
                *best = (*best).min(r.priority);
                if r.role == Role::Started {
                    group.role = Role::Started;
                }
            }
            of.insert((*place).clone(), (g, i));
        }
        Groups { groups, of }
    }

    /// The group `place` belongs to.
    #[must_use]
    pub fn of(&self, place: &Place) -> Option<&Group> {
        self.of.get(place).map(|&(g, _)| &self.groups[g])
    }

    /// The slot of `place`: its index among the configuration's resources
    /// in order, for tables kept beside the groups.
    #[must_use]
    pub fn slot(&self, place: &Place) -> Option<usize> {
        self.of.get(place).map(|&(_, slot)| slot)
    }

    /// The group named `key`.
    #[must_use]
    pub fn by_key(&self, key: &Place) -> Option<&Group> {
        self.of(key).filter(|g| g.key == *key)
    }

    /// Every group, by key.
    pub fn iter(&self) -> impl Iterator<Item = &Group> {
        self.groups.iter()
    }

    /// How many there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}
