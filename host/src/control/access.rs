//! Who may do what on the control socket. Every request is a read (it
//! changes nothing: `status`, `watch`, listings, `verify`) or a change;
//! every client, known by its credentials (`SO_PEERCRED`), is an
//! administrator (root, the daemon's own user, a member of
//! `[control] admin_group`), a reader (a member of `[control] group`), or
//! a stranger. Administrators may do everything, readers may read,
//! strangers nothing; each refusal says who was refused and why.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Request;
use crate::config::ControlSpec;
use crate::sys::perms::{self, GroupInfo};

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Changes nothing.
    Read,
    /// Changes resources, the configuration or a mailbox.
    Change,
}

/// What `request` does. Taking a message from a mailbox (`rcv-msg`) is a
/// change: the message is gone for its application.
#[must_use]
pub fn class_of(request: &Request) -> Class {
    match request {
        Request::Status
        | Request::Watch
        | Request::CanTalk { .. }
        | Request::Lcd
        | Request::Verify
        | Request::Resources => Class::Read,
        Request::Send { .. }
        | Request::Receive { .. }
        | Request::Change { .. }
        | Request::InService { .. }
        | Request::OutOfService { .. }
        | Request::SendEvent { .. }
        | Request::Switchover { .. }
        | Request::Cleanup { .. }
        | Request::Standby { .. }
        | Request::Maintenance { .. }
        | Request::Resync => Class::Change,
        Request::Remote { request, .. } => class_of(request),
    }
}

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Reads only.
    Reader,
    /// Nothing.
    Stranger,
}

/// A client of the control socket, by its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Its user id (`None`: unknown, as on Windows, where the pipe's own
    /// security decides who connects).
    pub uid: Option<u32>,
    /// Its user's name, for messages.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// The groups of `[control]`, resolved on this system.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `[control] group`, if it exists.
    pub group: Option<GroupInfo>,
    /// `[control] admin_group`, if it exists.
    pub admin_group: Option<GroupInfo>,
    /// Their names, as configured, for messages.
    pub names: (String, String),
    /// The daemon's own user.
    pub daemon_uid: u32,
}

impl Policy {
    /// The policy of `spec` on this system.
    #[must_use]
    pub fn resolve(spec: &ControlSpec) -> Policy {
        Policy {
            group: perms::group(&spec.group),
            admin_group: perms::group(&spec.admin_group),
            names: (spec.group.clone(), spec.admin_group.clone()),
            daemon_uid: perms::my_uid(),
        }
    }

    /// The role of user `uid`, member of `groups`.
    #[must_use]
    pub fn role(&self, uid: u32, groups: &[u32]) -> Role {
        let member = |g: &Option<GroupInfo>| g.as_ref().is_some_and(|g| groups.contains(&g.gid));
        if uid == 0 || uid == self.daemon_uid || member(&self.admin_group) {
            Role::Admin
        } else if member(&self.group) {
            Role::Reader
        } else {
            Role::Stranger
        }
    }

    /// Whether `client` may make a request of `class`; if not, the one
    /// line it is told.
    pub fn allow(&self, client: &Client, class: Class) -> Result<(), String> {
        let (group, admin) = (&self.names.0, &self.names.1);
        let who = match client.uid {
            Some(uid) => format!("user {} (uid {uid})", client.name),
            None => "this client".to_string(),
        };
        match (client.role, class) {
            (Role::Admin, _) | (Role::Reader, Class::Read) => Ok(()),
            (Role::Reader, Class::Change) => Err(format!(
                "permission denied: {who} may read but not change anything here; changes are for root and members of group `{admin}`"
            )),
            (Role::Stranger, _) => Err(format!(
                "permission denied: {who} may not use heartline's control socket; it is for root, members of group `{admin}` (changes) and of group `{group}` (status and other reads)"
            )),
        }
    }
}

/// Clients looked up, by user and group id, with when.
type Known = HashMap<(u32, u32), (Instant, Client)>;

/// How long a user's groups are remembered.
const REMEMBERED: Duration = Duration::from_secs(10);

/// Users' roles, looked up in the user and group databases (which may be
/// slow: LDAP, sssd) off the async threads and remembered a few seconds,
/// so a flood of connections from one user costs one lookup.
#[derive(Debug, Clone)]
pub struct Roles {
    policy: Arc<Policy>,
    known: Arc<Mutex<Known>>,
}

impl Roles {
    /// Roles under `policy`.
    #[must_use]
    pub fn new(policy: Policy) -> Roles {
        Roles {
            policy: Arc::new(policy),
            known: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The client whose process runs as `uid`, with group `gid`.
    pub async fn client(&self, uid: u32, gid: u32) -> Client {
        if let Some((at, client)) = self.lock().get(&(uid, gid)) {
            if at.elapsed() < REMEMBERED {
                return client.clone();
            }
        }
        let policy = self.policy.clone();
        let client = tokio::task::spawn_blocking(move || {
            let user = perms::user(uid, gid);
            Client {
                uid: Some(uid),
                role: policy.role(uid, &user.groups),
                name: user.name,
            }
        })
        .await
        .unwrap_or_else(|_| Client {
            uid: Some(uid),
            name: format!("uid {uid}"),
            role: if uid == 0 {
                Role::Admin
            } else {
                Role::Stranger
            },
        });
        let mut known = self.lock();
        if known.len() > 1024 {
            known.clear();
        }
        known.insert((uid, gid), (Instant::now(), client.clone()));
        client
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            group: Some(GroupInfo {
                name: "heartline".into(),
                gid: 900,
            }),
            admin_group: Some(GroupInfo {
                name: "heartline-admin".into(),
                gid: 901,
            }),
            names: ("heartline".into(), "heartline-admin".into()),
            daemon_uid: 0,
        }
    }

    fn client(role: Role) -> Client {
        Client {
            uid: Some(1001),
            name: "mallory".into(),
            role,
        }
    }

    #[test]
    fn requests_are_reads_or_changes() {
        use crate::resources::lcd::Change;
        for read in [
            Request::Status,
            Request::Watch,
            Request::CanTalk { node: 2 },
            Request::Lcd,
            Request::Verify,
            Request::Resources,
            Request::Remote {
                node: 2,
                request: Box::new(Request::Status),
            },
        ] {
            assert_eq!(class_of(&read), Class::Read, "{read:?}");
        }
        let tag = || "web".to_string();
        for change in [
            Request::Send {
                node: 2,
                mailbox: 1,
                payload: vec![],
                timeout_ms: 1,
            },
            Request::Receive {
                mailbox: 1,
                timeout_ms: 1,
            },
            Request::Change {
                change: Change::RemoveResource(crate::resources::lcd::Place {
                    node: 1,
                    tag: tag(),
                }),
            },
            Request::InService { tag: tag() },
            Request::OutOfService { tag: tag() },
            Request::SendEvent {
                class: "gen".into(),
                event: "down".into(),
                tag: tag(),
            },
            Request::Switchover { tag: tag(), to: 2 },
            Request::Cleanup {
                tag: tag(),
                node: None,
            },
            Request::Standby { node: 2, on: true },
            Request::Maintenance { on: true },
            Request::Resync,
            // A change on another node is a change.
            Request::Remote {
                node: 2,
                request: Box::new(Request::OutOfService { tag: tag() }),
            },
        ] {
            assert_eq!(class_of(&change), Class::Change, "{change:?}");
        }
    }

    #[test]
    fn roles_follow_uid_and_groups() {
        let p = policy();
        assert_eq!(p.role(0, &[]), Role::Admin, "root");
        assert_eq!(p.role(1001, &[1001, 901]), Role::Admin, "admin group");
        assert_eq!(p.role(1001, &[1001, 900, 901]), Role::Admin, "both");
        assert_eq!(p.role(1001, &[1001, 900]), Role::Reader, "group");
        assert_eq!(p.role(1001, &[1001]), Role::Stranger);
        // The daemon's own user administers it.
        let own = Policy {
            daemon_uid: 1001,
            ..policy()
        };
        assert_eq!(own.role(1001, &[]), Role::Admin);
        // Groups missing from the system admit nobody but root.
        let bare = Policy {
            group: None,
            admin_group: None,
            ..policy()
        };
        assert_eq!(bare.role(1001, &[900, 901]), Role::Stranger);
        assert_eq!(bare.role(0, &[]), Role::Admin);
    }

    #[test]
    fn refusals_say_who_and_why() {
        let p = policy();
        assert!(p.allow(&client(Role::Admin), Class::Change).is_ok());
        assert!(p.allow(&client(Role::Reader), Class::Read).is_ok());
        let e = p.allow(&client(Role::Reader), Class::Change).unwrap_err();
        assert!(
            e.starts_with("permission denied: user mallory (uid 1001) may read")
                && e.contains("`heartline-admin`"),
            "{e}"
        );
        for class in [Class::Read, Class::Change] {
            let e = p.allow(&client(Role::Stranger), class).unwrap_err();
            assert!(
                e.contains("may not use heartline's control socket") && e.contains("`heartline`"),
                "{e}"
            );
        }
    }
}
