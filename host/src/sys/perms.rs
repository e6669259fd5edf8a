//! Who the local users are and what the daemon's own files allow them:
//! groups and their members (for the control socket's credential check),
//! explicit modes for the directories and files the daemon creates, set
//! whatever the umask, and the descriptor limit raised at start. Unix
//! only; on Windows every function is a harmless no-op.

use std::path::Path;

/// A group of the system's group database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Its name.
    pub name: String,
    /// Its id.
    pub gid: u32,
}

/// The group named `name`, if the system has one.
#[must_use]
pub fn group(name: &str) -> Option<GroupInfo> {
    #[cfg(target_os = "linux")]
    {
        nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| GroupInfo {
                name: g.name,
                gid: g.gid.as_raw(),
            })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = name;
        None
    }
}

/// The name of group `gid`, if it has one.
#[must_use]
pub fn group_name(gid: u32) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
            .ok()
            .flatten()
            .map(|g| g.name)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = gid;
        None
    }
}

/// A local user, as the control socket sees a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The user's name (`uid N` when the database has none).
    pub name: String,
    /// Every group the user is a member of, primary and supplementary, by
    /// the group database.
    pub groups: Vec<u32>,
}

/// User `uid`, with the groups the group database gives them (plus
/// `gid`, the group its process runs with). May block on the name
/// service (LDAP, sssd): call it off the async threads.
#[must_use]
pub fn user(uid: u32, gid: u32) -> UserInfo {
    #[cfg(target_os = "linux")]
    {
        let mut groups = vec![gid];
        let name = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(Some(user)) => {
                if let Ok(cname) = std::ffi::CString::new(user.name.clone()) {
                    if let Ok(list) = nix::unistd::getgrouplist(&cname, user.gid) {
                        groups.extend(list.into_iter().map(nix::unistd::Gid::as_raw));
                    }
                }
                groups.push(user.gid.as_raw());
                user.name
            }
            _ => format!("uid {uid}"),
        };
        groups.sort_unstable();
        groups.dedup();
        UserInfo { name, groups }
    }
    #[cfg(not(target_os = "linux"))]
    {
        UserInfo {
            name: format!("uid {uid}"),
            groups: vec![gid],
        }
    }
}

/// The daemon's own user id (0 on Windows).
#[must_use]
pub fn my_uid() -> u32 {
    #[cfg(target_os = "linux")]
    {
        nix::unistd::geteuid().as_raw()
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Sets `path`'s mode to `mode` (and, with `gid`, its group), whatever
/// the umask was when it was made.
pub fn set_mode(path: &Path, mode: u32, gid: Option<u32>) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(path, None, Some(gid))
                .map_err(|e| format!("cannot give {} to group {gid}: {e}", path.display()))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
            format!(
                "cannot set the mode of {} to {mode:04o}: {e}",
                path.display()
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode, gid);
        Ok(())
    }
}

/// `path`'s mode bits and owner, if it exists (Unix).
#[must_use]
pub fn mode_of(path: &Path) -> Option<(u32, u32, u32)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.mode() & 0o7777, m.uid(), m.gid()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Makes `dir` a private directory of the daemon: created if missing,
/// mode 0700 whatever the umask. An existing directory is tightened only
/// if it is plainly heartline's (owned by the daemon's user, and empty or
/// already holding the daemon's files, `marker`); one holding other things
/// and open to others is refused, with the `chmod` to run.
pub fn private_dir(dir: &Path, markers: &[&str]) -> Result<(), String> {
    let existed = dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        let Some((mode, owner, _)) = mode_of(dir) else {
            return Err(format!("cannot read {}'s mode", dir.display()));
        };
        if mode & 0o7777 == 0o700 {
            return Ok(());
        }
        let ours = !existed || owned_and_ours(dir, owner, markers);
        if !ours {
            return Err(format!(
                "{} is mode {mode:04o} and holds files other than heartline's: the state directory must be private; run `chmod 700 {}` or choose another node.state_dir",
                dir.display(),
                dir.display()
            ));
        }
        set_mode(dir, 0o700, None)?;
    }
    #[cfg(not(unix))]
    let _ = (existed, markers);
    Ok(())
}

#[cfg(unix)]
fn owned_and_ours(dir: &Path, owner: u32, markers: &[&str]) -> bool {
    if owner != my_uid() {
        return false;
    }
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.is_empty() || names.iter().any(|n| markers.contains(&n.as_str()))
        }
        Err(_) => false,
    }
}

/// What became of the control socket's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketDir {
    /// It is the daemon's own: mode 0750, group as asked.
    Own,
    /// It is shared (like `/run` or `/tmp`) and left as it is; the
    /// socket's own mode protects it.
    Shared(String),
}

/// Prepares the directory of the control socket `socket`: created if
/// missing, and set to 0750 with group `gid` (the daemon's group if
/// `None`) when it is the daemon's own (owned by it, and empty, private
/// already, or holding only the socket); a shared directory (`/run`,
/// `/tmp`) is left as it is.
pub fn socket_dir(socket: &Path, gid: Option<u32>) -> Result<SocketDir, String> {
    let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(SocketDir::Shared(".".into()));
    };
    let existed = dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        let Some((mode, owner, _)) = mode_of(dir) else {
            return Err(format!("cannot read {}'s mode", dir.display()));
        };
        let socket_name = socket
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let only_socket = std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .all(|e| e.file_name().to_string_lossy() == socket_name)
        });
        let private = mode & 0o7027 == 0;
        if existed && (owner != my_uid() || !(only_socket || private)) {
            return Ok(SocketDir::Shared(format!(
                "{} (mode {mode:04o}, owner uid {owner})",
                dir.display()
            )));
        }
        if set_mode(dir, 0o750, gid).is_err() {
            // Not allowed to give it to the group (a daemon not run as
            // root): private to the daemon's user then.
            set_mode(dir, 0o700, None)?;
        }
    }
    #[cfg(not(unix))]
    let _ = (existed, gid);
    Ok(SocketDir::Own)
}

/// Makes the file `path` readable and writable by its owner only
/// (0600), whatever the umask; creates it empty if `create` and it is
/// missing (so that what is written next never was readable by others).
pub fn private_file(path: &Path, create: bool) -> Result<(), String> {
    #[cfg(unix)]
    {
        if create && !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        }
        match mode_of(path) {
            Some((0o600, _, _)) => Ok(()),
            Some(_) => set_mode(path, 0o600, None),
            None => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, create);
        Ok(())
    }
}

/// Raises the soft limit on open files to the hard limit; the limits
/// before and after, or why not.
pub fn raise_nofile() -> Result<(u64, u64), String> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (soft, hard) =
            getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit: {e}"))?;
        if soft < hard {
            setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|e| {
                format!("cannot raise the open-files limit from {soft} to {hard}: {e}")
            })?;
        }
        Ok((soft, hard))
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err("not on this system".into())
    }
}

/// Whether an error of spawning or opening means the node ran out of
/// resources (file descriptors, processes, memory) rather than that the
/// thing itself is wrong.
#[must_use]
pub fn exhausted(e: &std::io::Error) -> bool {
    // EMFILE 24, ENFILE 23, EAGAIN 11 (fork: too many processes),
    // ENOMEM 12: the same on every Linux architecture.
    #[cfg(target_os = "linux")]
    {
        matches!(e.raw_os_error(), Some(24 | 23 | 11 | 12))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = e;
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn modes_are_explicit_whatever_was_there() {
        let top = tempfile::tempdir().unwrap();
        // A fresh state directory is 0700; an open one of heartline's is
        // tightened; one holding other files is refused with the fix.
        let state = top.path().join("state");
        private_dir(&state, &["incarnation"]).unwrap();
        assert_eq!(mode_of(&state).unwrap().0, 0o700);
        set_mode(&state, 0o755, None).unwrap();
        std::fs::write(state.join("incarnation"), "1\n").unwrap();
        private_dir(&state, &["incarnation"]).unwrap();
        assert_eq!(mode_of(&state).unwrap().0, 0o700);
        let other = top.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("photos"), "").unwrap();
        set_mode(&other, 0o755, None).unwrap();
        let e = private_dir(&other, &["incarnation"]).unwrap_err();
        assert!(e.contains("chmod 700"), "{e}");
        assert_eq!(mode_of(&other).unwrap().0, 0o755);

        // A file is 0600, created so or tightened.
        let db = top.path().join("lcd.sqlite");
        private_file(&db, true).unwrap();
        assert_eq!(mode_of(&db).unwrap().0, 0o600);
        set_mode(&db, 0o644, None).unwrap();
        private_file(&db, false).unwrap();
        assert_eq!(mode_of(&db).unwrap().0, 0o600);
        // Not created when not asked.
        private_file(&top.path().join("lcd.sqlite-wal"), false).unwrap();
        assert!(!top.path().join("lcd.sqlite-wal").exists());
    }

    #[test]
    fn the_socket_directory_is_set_only_when_it_is_the_daemons() {
        let top = tempfile::tempdir().unwrap();
        let fresh = top.path().join("run/heartline");
        assert_eq!(
            socket_dir(&fresh.join("heartline.sock"), None).unwrap(),
            SocketDir::Own
        );
        assert_eq!(mode_of(&fresh).unwrap().0, 0o750);
        // A shared directory (here: open, with other files) is left.
        let shared = top.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::write(shared.join("x"), "").unwrap();
        set_mode(&shared, 0o1777, None).unwrap();
        assert!(matches!(
            socket_dir(&shared.join("h.sock"), None).unwrap(),
            SocketDir::Shared(_)
        ));
        assert_eq!(mode_of(&shared).unwrap().0, 0o1777);
    }

    #[test]
    fn running_out_of_descriptors_or_processes_is_told_apart() {
        for errno in [24, 23, 11, 12] {
            assert!(
                exhausted(&std::io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        for errno in [2, 8, 13] {
            assert!(
                !exhausted(&std::io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
    }

    #[test]
    fn root_is_in_its_own_group() {
        let root = group("root").unwrap();
        assert_eq!(root.gid, 0);
        assert_eq!(group_name(0).as_deref(), Some("root"));
        assert!(group("no-such-group-heartline").is_none());
        let user = user(0, 0);
        assert_eq!(user.name, "root");
        assert!(user.groups.contains(&0));
    }
}
