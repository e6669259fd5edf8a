//! What may run as root: the daemon runs recovery-kit scripts, and the
//! user scripts a resource names, with its own privileges, so whoever can
//! change one of those files, or replace it, runs what they like as root.
//! As keepalived's `enable_script_security`, every such file is checked at
//! load and again before each run, and refused unless it is safe.
//!
//! # The rule
//!
//! A path is safe when every component of it, from `/` down to the file,
//! is
//!
//! - owned by root, or by the daemon's own (effective) user, and
//! - not writable by group or others: a writable directory lets its
//!   writers rename or replace the entries below it, so a safe file in an
//!   unsafe directory is not safe. The one exception is a directory with
//!   the sticky bit (`/tmp`, mode 1777), which others may write but in
//!   which only an entry's owner (or the directory's) can remove or rename
//!   it: a root-owned entry there cannot be swapped. The sticky directory
//!   itself must still be owned by root or the daemon's user.
//!
//! Every component is checked, up to `/` (as keepalived does): the file's
//! own directory is not enough, since `mv` on any writable ancestor
//! replaces the whole subtree below it. A symbolic link is checked as the
//! link itself (its owner: in a sticky directory the owner can replace
//! it; its mode means nothing) and again along its resolved path, so both
//! the links and what they point at must be safe. A component that does
//! not exist ends the walk: a missing script is reported by the kit's own
//! checks, and nobody can create it in a directory that is safe.
//!
//! Each refusal names the path, says what is wrong, and gives the command
//! that fixes it (`chown root PATH`, `chmod go-w PATH`).
//!
//! Windows has no owners and modes in this sense: there the checks find
//! nothing (the service's files are protected by their ACLs).

use std::fmt;
use std::path::{Path, PathBuf};

/// A path the daemon will not run, or run through: what is wrong with it
/// and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsafe {
    /// The component that is unsafe (the file, or a directory above it).
    pub path: PathBuf,
    /// What is wrong, e.g. "writable by group and others (mode 0777)".
    pub problem: String,
    /// The command that fixes it, e.g. `chmod go-w /srv/app`.
    pub fix: String,
}

impl fmt::Display for Unsafe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {}: heartline runs what is there as root, so it refuses it ({})",
            self.path.display(),
            self.problem,
            self.fix
        )
    }
}

/// What a component of a path is, for [`judge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file (or anything that is neither a directory nor a link).
    File,
    /// A symbolic link (judged by its owner only).
    Symlink,
}

/// The verdict on one component of a path: `owner` and `mode` (with the
/// file type bits or without) as `lstat` gives them, `me` the daemon's
/// effective uid, `owner_name` the owner's user name when known. `None`
/// when it is safe. Pure: the rule of the module's documentation.
#[must_use]
pub fn judge(
    path: &Path,
    kind: Kind,
    owner: u32,
    mode: u32,
    me: u32,
    owner_name: Option<&str>,
) -> Option<Unsafe> {
    let foreign = owner != 0 && owner != me;
    let writers = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => Some("group and others"),
        (true, false) => Some("group"),
        (false, true) => Some("others"),
        (false, false) => None,
    };
    let sticky = mode & 0o1000 != 0;
    let writable = match kind {
        Kind::Symlink => None,
        Kind::Dir if sticky => None,
        Kind::Dir | Kind::File => writers,
    };
    if !foreign && writable.is_none() {
        return None;
    }
    let shown = quote(path);
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    if foreign {
        let who = match owner_name {
            Some(name) => format!("uid {owner} ({name})"),
            None => format!("uid {owner}"),
        };
        let allowed = if me == 0 {
            "root".to_string()
        } else {
            format!("root or the daemon's user (uid {me})")
        };
        problems.push(format!("owned by {who}, not {allowed}"));
        fixes.push(format!(
            "chown {}root {shown}",
            if kind == Kind::Symlink { "-h " } else { "" }
        ));
    }
    if let Some(writers) = writable {
        problems.push(format!(
            "writable by {writers} (mode {:04o})",
            mode & 0o7777
        ));
        fixes.push(format!("chmod go-w {shown}"));
    }
    Some(Unsafe {
        path: path.to_path_buf(),
        problem: problems.join(" and "),
        fix: fixes.join(" && "),
    })
}

/// `path` as a shell word.
fn quote(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c));
    if plain {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Every unsafe component of `path` (the rule above); empty when it is safe
/// to run. A relative path is taken from the daemon's working directory,
/// as a script would resolve it.
#[must_use]
pub fn check(path: &Path) -> Vec<Unsafe> {
    let mut walker = Walker::new();
    walker.path(path);
    walker.found
}

/// As [`check`] for the directory `dir`, and every file and directory
/// inside it (a kit: its manifest, its action scripts, and any helper
/// they source), following symbolic links.
#[must_use]
pub fn check_tree(dir: &Path) -> Vec<Unsafe> {
    let mut walker = Walker::new();
    walker.path(dir);
    walker.tree(dir, 0);
    walker.found
}

/// Most levels below a kit's directory that are looked at.
#[cfg(unix)]
const MAX_DEPTH: usize = 8;
/// Most entries of a kit looked at: a kit is a handful of files.
#[cfg(unix)]
const MAX_ENTRIES: usize = 4096;

struct Walker {
    #[cfg(unix)]
    me: u32,
    #[cfg(unix)]
    seen: std::collections::HashSet<PathBuf>,
    #[cfg(unix)]
    entries: usize,
    found: Vec<Unsafe>,
}

#[cfg(not(unix))]
impl Walker {
    fn new() -> Walker {
        Walker { found: Vec::new() }
    }

    fn path(&mut self, _path: &Path) {}

    fn tree(&mut self, _dir: &Path, _depth: usize) {}
}

#[cfg(unix)]
impl Walker {
    fn new() -> Walker {
        Walker {
            me: effective_uid(),
            seen: std::collections::HashSet::new(),
            entries: 0,
            found: Vec::new(),
        }
    }

    /// Checks every component of `path` as written, then of its resolved
    /// form when that differs (symbolic links).
    fn path(&mut self, path: &Path) {
        let Ok(absolute) = std::path::absolute(path) else {
            return;
        };
        let mut prefix = PathBuf::new();
        for part in absolute.components() {
            prefix.push(part);
            if !self.component(&prefix) {
                break;
            }
        }
        if let Ok(real) = std::fs::canonicalize(&absolute) {
            if real != absolute {
                let mut prefix = PathBuf::new();
                for part in real.components() {
                    prefix.push(part);
                    if !self.component(&prefix) {
                        break;
                    }
                }
            }
        }
    }

    /// Checks one component (once); false when it does not exist, so
    /// nothing below it can.
    fn component(&mut self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        if self.seen.contains(path) {
            return true;
        }
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
            Err(e) => {
                self.found.push(Unsafe {
                    path: path.to_path_buf(),
                    problem: format!("not checkable ({e})"),
                    fix: format!(
                        "make it readable by the daemon's user: ls -ld {}",
                        quote(path)
                    ),
                });
                return false;
            }
        };
        self.seen.insert(path.to_path_buf());
        let kind = if meta.file_type().is_symlink() {
            Kind::Symlink
        } else if meta.is_dir() {
            Kind::Dir
        } else {
            Kind::File
        };
        let owner = meta.uid();
        let name = if owner != 0 && owner != self.me {
            user_name(owner)
        } else {
            None
        };
        if let Some(found) = judge(path, kind, owner, meta.mode(), self.me, name.as_deref()) {
            self.found.push(found);
        }
        if kind == Kind::Symlink {
            // What it points at, along its own path.
            self.path(path);
        }
        true
    }

    /// Checks everything below `dir`.
    fn tree(&mut self, dir: &Path, depth: usize) {
        if depth >= MAX_DEPTH {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                return;
            }
            let known = self.seen.contains(&path);
            self.component(&path);
            if !known && path.is_dir() {
                self.tree(&path, depth + 1);
            }
        }
    }
}

/// The daemon's effective uid.
#[cfg(unix)]
fn effective_uid() -> u32 {
    #[cfg(target_os = "linux")]
    {
        nix::unistd::geteuid().as_raw()
    }
    #[cfg(not(target_os = "linux"))]
    {
        // Without a way to ask here, only root is trusted: stricter.
        0
    }
}

/// The name of user `uid`, when the user database has one.
#[cfg(unix)]
fn user_name(uid: u32) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = uid;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(kind: Kind, owner: u32, mode: u32, me: u32) -> Option<String> {
        judge(
            Path::new("/srv/app/start"),
            kind,
            owner,
            mode,
            me,
            Some("alice"),
        )
        .map(|u| u.to_string())
    }

    #[test]
    fn safe_owners_and_modes_pass() {
        for (kind, owner, mode, me) in [
            (Kind::File, 0, 0o100_755, 0),
            (Kind::File, 0, 0o700, 0),
            (Kind::Dir, 0, 0o40_755, 0),
            // /tmp: root-owned, world-writable, sticky.
            (Kind::Dir, 0, 0o41_777, 0),
            (Kind::Dir, 0, 0o1_777, 0),
            // The daemon's own user, when it is not root.
            (Kind::File, 990, 0o755, 990),
            (Kind::Dir, 990, 0o1_777, 990),
            // A link's mode is always 0777 and means nothing.
            (Kind::Symlink, 0, 0o120_777, 0),
            (Kind::Symlink, 990, 0o777, 990),
        ] {
            assert_eq!(
                verdict(kind, owner, mode, me),
                None,
                "{kind:?} {owner} {mode:o}"
            );
        }
    }

    #[test]
    fn writable_by_group_or_others_is_refused_with_chmod() {
        assert_eq!(
            verdict(Kind::File, 0, 0o100_777, 0).unwrap(),
            "/srv/app/start is writable by group and others (mode 0777): heartline runs \
             what is there as root, so it refuses it (chmod go-w /srv/app/start)"
        );
        let said = verdict(Kind::File, 0, 0o775, 0).unwrap();
        assert!(said.contains("writable by group (mode 0775)"), "{said}");
        let said = verdict(Kind::Dir, 0, 0o40_757, 0).unwrap();
        assert!(said.contains("writable by others (mode 0757)"), "{said}");
        assert!(said.ends_with("(chmod go-w /srv/app/start)"), "{said}");
        // The sticky bit protects a directory's entries, not a file.
        let said = verdict(Kind::File, 0, 0o1_777, 0).unwrap();
        assert!(said.contains("mode 1777"), "{said}");
    }

    #[test]
    fn another_owner_is_refused_with_chown() {
        assert_eq!(
            verdict(Kind::File, 1001, 0o755, 0).unwrap(),
            "/srv/app/start is owned by uid 1001 (alice), not root: heartline runs \
             what is there as root, so it refuses it (chown root /srv/app/start)"
        );
        // Even a sticky directory: its owner can replace anything in it.
        let said = verdict(Kind::Dir, 1001, 0o1_777, 0).unwrap();
        assert!(said.contains("owned by uid 1001"), "{said}");
        assert!(!said.contains("writable"), "{said}");
        // A link owned by another user in a sticky directory can be swapped.
        let said = verdict(Kind::Symlink, 1001, 0o777, 0).unwrap();
        assert!(said.ends_with("(chown -h root /srv/app/start)"), "{said}");
        // A daemon running as another user trusts root and itself only.
        let said = verdict(Kind::File, 1001, 0o755, 990).unwrap();
        assert!(
            said.contains("not root or the daemon's user (uid 990)"),
            "{said}"
        );
        assert_eq!(verdict(Kind::File, 0, 0o755, 990), None);
    }

    #[test]
    fn both_problems_give_both_fixes() {
        let found = judge(Path::new("/home/al ice/x"), Kind::File, 7, 0o666, 0, None).unwrap();
        assert_eq!(
            found.problem,
            "owned by uid 7, not root and writable by group and others (mode 0666)"
        );
        assert_eq!(
            found.fix,
            "chown root '/home/al ice/x' && chmod go-w '/home/al ice/x'"
        );
    }

    #[cfg(unix)]
    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn check_walks_every_directory_and_links() {
        // Test temporary directories live under /tmp (sticky, root-owned):
        // accepted.
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("app");
        std::fs::create_dir(&dir).unwrap();
        let script = dir.join("start");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        chmod(&script, 0o755);
        chmod(&dir, 0o755);
        assert_eq!(check(&script), Vec::new());
        assert_eq!(check_tree(root.path()), Vec::new());
        // Missing: nothing to say (the kit reports it); its directory still
        // counts.
        assert_eq!(check(&dir.join("missing")), Vec::new());

        // A world-writable directory above the file.
        chmod(&dir, 0o777);
        let found = check(&script);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, dir);
        assert_eq!(found[0].fix, format!("chmod go-w {}", dir.display()));
        assert_eq!(check(&dir.join("missing")).len(), 1);
        chmod(&dir, 0o755);

        // The file itself, found through a link and in a tree.
        chmod(&script, 0o757);
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&script, &link).unwrap();
        let found = check(&link);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, script);
        let found = check_tree(root.path());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, script);
        chmod(&script, 0o755);
        assert_eq!(check_tree(root.path()), Vec::new());

        // Relative paths are taken from the working directory.
        assert_eq!(
            check(Path::new(".")),
            check(&std::env::current_dir().unwrap())
        );
    }

    #[cfg(unix)]
    #[test]
    fn another_owner_is_found_on_disk() {
        use std::os::unix::fs::MetadataExt;
        if effective_uid() != 0 {
            eprintln!("skipped: chown needs root");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let script = root.path().join("start");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        chmod(&script, 0o755);
        std::os::unix::fs::chown(&script, Some(65534), None).unwrap();
        assert_eq!(std::fs::metadata(&script).unwrap().uid(), 65534);
        let found = check(&script);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].problem.starts_with("owned by uid 65534"),
            "{found:?}"
        );
        assert_eq!(found[0].fix, format!("chown root {}", script.display()));
    }
}
