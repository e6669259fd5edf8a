//! Recovery kits: one directory per resource type (`<app>/<type>/`) with a
//! `manifest.toml` and an `actions/` directory of scripts, loaded from an
//! ordered list of kit directories so that users can override shipped kits.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::trust;
use crate::config::locate;

/// The manifest's file name inside a kit.
pub const MANIFEST: &str = "manifest.toml";
/// The directory of action scripts inside a kit.
pub const ACTIONS: &str = "actions";

use heartline_brain::KitInfo;
pub use heartline_brain::action::Action;

/// A kit's settings, from its `manifest.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// What the kit protects; `<app>/<type>` when the manifest has none.
    pub description: String,
    /// How often quickCheck runs; `None` ("0s" in the file) for never.
    pub quick_check_interval: Option<Duration>,
    /// How long quickCheck may run.
    pub quick_check_timeout: Duration,
    /// How long restore may run.
    pub restore_timeout: Duration,
    /// How long remove may run.
    pub remove_timeout: Duration,
    /// How long recover may run.
    pub recover_timeout: Duration,
    /// How long delete may run.
    pub delete_timeout: Duration,
    /// Local recover attempts before the resource fails over; 0 fails over
    /// at once.
    pub recover_attempts: u32,
    /// By action, the resource properties that name programs the action
    /// runs (the Generic Application's restore runs `start`): each one a
    /// resource sets is checked as the kit's own scripts are, before every
    /// run of that action ([`Kit::refusals`]).
    pub user_scripts: BTreeMap<Action, Vec<String>>,
}

impl Default for Manifest {
    fn default() -> Manifest {
        Manifest {
            description: String::new(),
            quick_check_interval: Some(Duration::from_secs(5)),
            quick_check_timeout: Duration::from_secs(5),
            restore_timeout: Duration::from_secs(30),
            remove_timeout: Duration::from_secs(30),
            recover_timeout: Duration::from_secs(30),
            delete_timeout: Duration::from_secs(10),
            recover_attempts: 1,
            user_scripts: BTreeMap::new(),
        }
    }
}

impl Manifest {
    /// How long `action`'s script may run.
    pub fn timeout(&self, action: Action) -> Duration {
        match action {
            Action::Restore => self.restore_timeout,
            Action::Remove => self.remove_timeout,
            Action::QuickCheck => self.quick_check_timeout,
            Action::Recover => self.recover_timeout,
            Action::Delete => self.delete_timeout,
        }
    }

    /// Checks `text` as the manifest in `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Manifest, KitError> {
        let error = |span: Option<std::ops::Range<usize>>, problem: String| KitError::Manifest {
            file: file.to_path_buf(),
            line: span.map(|s| locate::line_of(text, s.start)),
            problem,
        };
        let raw: RawManifest = toml::from_str(text).map_err(|e| {
            let located = locate::toml_error(text, &e);
            // The parser's message does not always name the field: quote
            // the line.
            let problem = match located.source.filter(|l| !l.is_empty()) {
                Some(l) => format!("`{l}`: {}", located.message),
                None => located.message,
            };
            KitError::Manifest {
                file: file.to_path_buf(),
                line: located.line,
                problem,
            }
        })?;

        let duration = |raw: &Spanned<String>, field: &str| {
            humantime::parse_duration(raw.get_ref()).map_err(|e| {
                error(
                    Some(raw.span()),
                    format!(
                        "{field}: `{}` is not a duration ({e}); write it like \"5s\" or \"500ms\"",
                        raw.get_ref()
                    ),
                )
            })
        };
        // A zero timeout would fail every run; a zero interval has a meaning.
        let timeout = |raw: &Option<Spanned<String>>, field: &str, default: Duration| match raw {
            None => Ok(default),
            Some(raw) => match duration(raw, field)? {
                Duration::ZERO => Err(error(
                    Some(raw.span()),
                    format!("{field}: must be more than 0s"),
                )),
                d => Ok(d),
            },
        };

        let default = Manifest::default();
        let mut user_scripts = BTreeMap::new();
        if let Some(table) = &raw.user_scripts {
            for (name, props) in table.get_ref() {
                let Some(action) = Action::ALL.into_iter().find(|a| a.file_name() == name) else {
                    return Err(error(
                        Some(table.span()),
                        format!(
                            "user_scripts: `{name}` is not an action (restore, remove, quickCheck, recover, delete)"
                        ),
                    ));
                };
                user_scripts.insert(action, props.clone());
            }
        }
        let quick_check_interval = match &raw.quick_check_interval {
            None => default.quick_check_interval,
            Some(raw) => Some(duration(raw, "quick_check_interval")?).filter(|d| !d.is_zero()),
        };
        Ok(Manifest {
            description: raw.description.unwrap_or_default(),
            quick_check_interval,
            quick_check_timeout: timeout(
                &raw.quick_check_timeout,
                "quick_check_timeout",
                default.quick_check_timeout,
            )?,
            restore_timeout: timeout(
                &raw.restore_timeout,
                "restore_timeout",
                default.restore_timeout,
            )?,
            remove_timeout: timeout(
                &raw.remove_timeout,
                "remove_timeout",
                default.remove_timeout,
            )?,
            recover_timeout: timeout(
                &raw.recover_timeout,
                "recover_timeout",
                default.recover_timeout,
            )?,
            delete_timeout: timeout(
                &raw.delete_timeout,
                "delete_timeout",
                default.delete_timeout,
            )?,
            recover_attempts: raw.recover_attempts.unwrap_or(default.recover_attempts),
            user_scripts,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    description: Option<String>,
    quick_check_interval: Option<Spanned<String>>,
    quick_check_timeout: Option<Spanned<String>>,
    restore_timeout: Option<Spanned<String>>,
    remove_timeout: Option<Spanned<String>>,
    recover_timeout: Option<Spanned<String>>,
    delete_timeout: Option<Spanned<String>>,
    recover_attempts: Option<u32>,
    user_scripts: Option<Spanned<BTreeMap<String, Vec<String>>>>,
}

/// The kit for one application and resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kit {
    /// The application (`gen`).
    pub app: String,
    /// The resource type (`app`).
    pub rtype: String,
    /// The kit's directory.
    pub dir: PathBuf,
    /// Its settings.
    pub manifest: Manifest,
}

impl Kit {
    /// Where `action`'s script is (whether or not it is there).
    pub fn script(&self, action: Action) -> PathBuf {
        self.dir.join(ACTIONS).join(action.file_name())
    }

    /// Each action script that is missing or cannot be run, and each file
    /// or directory of the kit (or above it) that is not safe to run as
    /// root ([`trust`]), one line each, naming the path and the fix. Empty
    /// when the kit is complete and safe.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.unsafe_files();
        for action in Action::ALL {
            let path = self.script(action);
            let shown = path.display();
            let meta = match std::fs::metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    problems.push(format!(
                        "{shown}: the {action} script of kit {}/{} is missing \
                         (write it; a kit with nothing to do there can use `exit 0`)",
                        self.app, self.rtype
                    ));
                    continue;
                }
                Err(e) => {
                    problems.push(format!(
                        "{shown}: cannot read it: {e} (check its permissions)"
                    ));
                    continue;
                }
            };
            if !meta.is_file() {
                problems.push(format!(
                    "{shown}: not a regular file (put the {action} script there)"
                ));
                continue;
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o111 == 0 {
                    problems.push(format!("{shown}: not executable (chmod +x {shown})"));
                }
            }
        }
        problems
    }

    /// Each file or directory of the kit, or on the way to it, that is not
    /// safe to run as root, one line each with the fix.
    pub fn unsafe_files(&self) -> Vec<String> {
        trust::check_tree(&self.dir)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Why `action` of this kit on a resource with properties `props` must
    /// not run now, checked just before each run: the kit's files, and the
    /// user scripts the manifest's `user_scripts` names for `action` that
    /// `props` sets, each with every directory above it. Empty when it may
    /// run.
    pub fn refusals(&self, action: Action, props: &BTreeMap<String, String>) -> Vec<String> {
        let mut refusals = self.unsafe_files();
        refusals.extend(self.unsafe_user_scripts(&[action], props));
        refusals
    }

    /// Each user script that `props` names for one of `actions` (by the
    /// manifest's `user_scripts`) and that is not safe to run as root, one
    /// line each with the fix.
    pub fn unsafe_user_scripts(
        &self,
        actions: &[Action],
        props: &BTreeMap<String, String>,
    ) -> Vec<String> {
        let mut names: Vec<&String> = actions
            .iter()
            .filter_map(|a| self.manifest.user_scripts.get(a))
            .flatten()
            .collect();
        names.sort();
        names.dedup();
        let mut refusals = Vec::new();
        for name in names {
            let Some(value) = props.get(name).filter(|v| !v.is_empty()) else {
                continue;
            };
            refusals.extend(trust::check(Path::new(value)).iter().map(|u| {
                if u.path == Path::new(value) {
                    format!("{name} script {u}")
                } else {
                    format!("{name} script {value}: {u}")
                }
            }));
        }
        refusals
    }
}

/// A mistake that stops the kits from loading.
#[derive(Debug)]
pub enum KitError {
    /// A kit directory or manifest could not be read.
    Read {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A manifest is not valid.
    Manifest {
        /// The manifest.
        file: PathBuf,
        /// 1-based line, when the mistake has one.
        line: Option<usize>,
        /// What is wrong, and what to write instead when that is clear.
        problem: String,
    },
    /// A directory's name is not UTF-8, so it cannot name an app or type.
    Name {
        /// The directory.
        path: PathBuf,
    },
}

impl fmt::Display for KitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KitError::Read { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            KitError::Manifest {
                file,
                line,
                problem,
            } => {
                write!(f, "{}", file.display())?;
                if let Some(line) = line {
                    write!(f, ":{line}")?;
                }
                write!(f, ": {problem}")
            }
            KitError::Name { path } => write!(
                f,
                "{}: kit directory names must be UTF-8 (rename it)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for KitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KitError::Read { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Every kit found, by application and resource type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kits {
    by_app: BTreeMap<String, BTreeMap<String, Kit>>,
}

impl Kits {
    /// Loads the kits under each of `dirs` in order; a kit in a later
    /// directory replaces the same app/type from an earlier one. Missing
    /// directories are skipped. A subdirectory `<app>/<type>` is a kit when
    /// it has a manifest or an `actions/` directory; without a manifest it
    /// takes the defaults.
    pub fn load(dirs: &[PathBuf]) -> Result<Kits, KitError> {
        let mut kits = Kits::default();
        for dir in dirs {
            let Some(apps) = subdirs(dir)? else {
                continue;
            };
            for (app, app_dir) in apps {
                for (rtype, kit_dir) in subdirs(&app_dir)?.unwrap_or_default() {
                    if let Some(kit) = load_kit(&app, &rtype, kit_dir)? {
                        kits.by_app
                            .entry(app.clone())
                            .or_default()
                            .insert(rtype, kit);
                    }
                }
            }
        }
        Ok(kits)
    }

    /// The kit for `app`/`rtype`.
    pub fn get(&self, app: &str, rtype: &str) -> Option<&Kit> {
        self.by_app.get(app)?.get(rtype)
    }

    /// Every kit, ordered by app then type.
    pub fn iter(&self) -> impl Iterator<Item = &Kit> {
        self.by_app.values().flat_map(BTreeMap::values)
    }

    /// What the brain needs to know of each kit, by `app/type`.
    #[must_use]
    pub fn brain_info(&self) -> BTreeMap<String, KitInfo> {
        self.iter()
            .map(|kit| {
                let info = KitInfo {
                    quick_check_interval: kit.manifest.quick_check_interval.map(Into::into),
                    recover_attempts: kit.manifest.recover_attempts,
                    problems: kit.problems(),
                };
                (format!("{}/{}", kit.app, kit.rtype), info)
            })
            .collect()
    }
}

fn load_kit(app: &str, rtype: &str, dir: PathBuf) -> Result<Option<Kit>, KitError> {
    let file = dir.join(MANIFEST);
    let manifest = match std::fs::read_to_string(&file) {
        Ok(text) => Manifest::parse(&file, &text)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !dir.join(ACTIONS).is_dir() {
                return Ok(None);
            }
            Manifest::default()
        }
        Err(error) => return Err(KitError::Read { path: file, error }),
    };
    let mut manifest = manifest;
    if manifest.description.is_empty() {
        manifest.description = format!("{app}/{rtype}");
    }
    Ok(Some(Kit {
        app: app.to_string(),
        rtype: rtype.to_string(),
        dir,
        manifest,
    }))
}

/// The visible subdirectories of `dir` by name, sorted; `None` when `dir`
/// does not exist.
fn subdirs(dir: &Path) -> Result<Option<Vec<(String, PathBuf)>>, KitError> {
    let read_error = |error| KitError::Read {
        path: dir.to_path_buf(),
        error,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_error)?;
        let path = entry.path();
        // Follows symlinks, so a kit can be linked in from elsewhere.
        if !path.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            return Err(KitError::Name { path });
        };
        if name.starts_with('.') {
            continue;
        }
        found.push((name, path));
    }
    found.sort();
    Ok(Some(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[cfg(unix)]
    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A complete kit with executable scripts that exit 0.
    fn make_kit(root: &Path, app: &str, rtype: &str, manifest: &str) -> PathBuf {
        let dir = root.join(app).join(rtype);
        write(&dir.join(MANIFEST), manifest);
        for action in Action::ALL {
            let script = dir.join(ACTIONS).join(action.file_name());
            write(&script, "#!/bin/sh\nexit 0\n");
            #[cfg(unix)]
            chmod(&script, 0o755);
        }
        dir
    }

    #[test]
    fn loads_a_valid_kit() {
        let root = tempfile::tempdir().unwrap();
        let dir = make_kit(
            root.path(),
            "db",
            "pg",
            "description = \"PostgreSQL\"\n\
             quick_check_interval = \"10s\"\n\
             quick_check_timeout = \"2s\"\n\
             restore_timeout = \"1m\"\n\
             remove_timeout = \"45s\"\n\
             recover_timeout = \"20s\"\n\
             delete_timeout = \"500ms\"\n\
             recover_attempts = 3\n\
             [user_scripts]\n\
             restore = [\"start\"]\n\
             recover = [\"stop\", \"start\"]\n",
        );
        let kits = Kits::load(&[root.path().to_path_buf()]).unwrap();
        let kit = kits.get("db", "pg").unwrap();
        assert_eq!(kit.app, "db");
        assert_eq!(kit.rtype, "pg");
        assert_eq!(kit.dir, dir);
        let m = &kit.manifest;
        assert_eq!(m.description, "PostgreSQL");
        assert_eq!(m.quick_check_interval, Some(Duration::from_secs(10)));
        assert_eq!(m.timeout(Action::QuickCheck), Duration::from_secs(2));
        assert_eq!(m.timeout(Action::Restore), Duration::from_secs(60));
        assert_eq!(m.timeout(Action::Remove), Duration::from_secs(45));
        assert_eq!(m.timeout(Action::Recover), Duration::from_secs(20));
        assert_eq!(m.timeout(Action::Delete), Duration::from_millis(500));
        assert_eq!(m.recover_attempts, 3);
        assert_eq!(
            m.user_scripts,
            BTreeMap::from([
                (Action::Restore, vec!["start".to_string()]),
                (
                    Action::Recover,
                    vec!["stop".to_string(), "start".to_string()]
                ),
            ])
        );
        assert_eq!(
            kit.script(Action::QuickCheck),
            dir.join("actions").join("quickCheck")
        );
        assert!(kit.problems().is_empty(), "{:?}", kit.problems());
        assert_eq!(kits.iter().count(), 1);
        assert!(kits.get("db", "mysql").is_none());
        assert!(kits.get("pg", "db").is_none());
    }

    #[test]
    fn defaults_apply() {
        let root = tempfile::tempdir().unwrap();
        make_kit(root.path(), "gen", "app", "");
        // No manifest at all, but actions: a kit on defaults.
        make_kit(root.path(), "gen", "bare", "");
        std::fs::remove_file(root.path().join("gen/bare").join(MANIFEST)).unwrap();
        // Neither: not a kit.
        std::fs::create_dir_all(root.path().join("gen/notes")).unwrap();
        make_kit(
            root.path(),
            "gen",
            "nocheck",
            "quick_check_interval = \"0s\"\n",
        );

        let kits = Kits::load(&[root.path().to_path_buf()]).unwrap();
        let expected = Manifest {
            description: "gen/app".into(),
            ..Manifest::default()
        };
        assert_eq!(kits.get("gen", "app").unwrap().manifest, expected);
        assert_eq!(expected.quick_check_interval, Some(Duration::from_secs(5)));
        assert_eq!(expected.timeout(Action::QuickCheck), Duration::from_secs(5));
        assert_eq!(expected.timeout(Action::Restore), Duration::from_secs(30));
        assert_eq!(expected.timeout(Action::Remove), Duration::from_secs(30));
        assert_eq!(expected.timeout(Action::Recover), Duration::from_secs(30));
        assert_eq!(expected.timeout(Action::Delete), Duration::from_secs(10));
        assert_eq!(expected.recover_attempts, 1);
        assert_eq!(
            kits.get("gen", "bare").unwrap().manifest.description,
            "gen/bare"
        );
        assert!(kits.get("gen", "notes").is_none());
        assert_eq!(
            kits.get("gen", "nocheck")
                .unwrap()
                .manifest
                .quick_check_interval,
            None
        );
        let names: Vec<_> = kits.iter().map(|k| k.rtype.as_str()).collect();
        assert_eq!(names, ["app", "bare", "nocheck"]);
    }

    #[test]
    fn later_dir_overrides_earlier() {
        let shipped = tempfile::tempdir().unwrap();
        let local = tempfile::tempdir().unwrap();
        make_kit(shipped.path(), "gen", "app", "description = \"shipped\"\n");
        make_kit(shipped.path(), "db", "pg", "");
        let mine = make_kit(local.path(), "gen", "app", "description = \"mine\"\n");
        let missing = shipped.path().join("no-such-dir");

        let kits = Kits::load(&[
            shipped.path().to_path_buf(),
            missing,
            local.path().to_path_buf(),
        ])
        .unwrap();
        let kit = kits.get("gen", "app").unwrap();
        assert_eq!(kit.manifest.description, "mine");
        assert_eq!(kit.dir, mine);
        assert!(kits.get("db", "pg").is_some());
        assert_eq!(kits.iter().count(), 2);

        let kits = Kits::load(&[local.path().to_path_buf(), shipped.path().to_path_buf()]).unwrap();
        assert_eq!(
            kits.get("gen", "app").unwrap().manifest.description,
            "shipped"
        );
    }

    #[test]
    fn bad_manifest_names_file_and_line() {
        let cases = [
            (
                "description = \"x\"\n\nrestore_timeout = \"soon\"\n",
                3,
                "restore_timeout: `soon` is not a duration",
            ),
            (
                "description = \"x\"\ncolour = \"blue\"\n",
                2,
                "unknown field `colour`",
            ),
            ("recover_attempts = -1\n", 1, "recover_attempts"),
            (
                "\nquick_check_timeout = \"0s\"\n",
                2,
                "must be more than 0s",
            ),
            ("description = \n", 1, ""),
            (
                "\n[user_scripts]\nstart = [\"start\"]\n",
                2,
                "user_scripts: `start` is not an action",
            ),
        ];
        for (text, line, problem) in cases {
            let root = tempfile::tempdir().unwrap();
            let dir = make_kit(root.path(), "gen", "app", text);
            let err = Kits::load(&[root.path().to_path_buf()]).unwrap_err();
            let file = dir.join(MANIFEST);
            let KitError::Manifest {
                file: at,
                line: got,
                problem: said,
            } = &err
            else {
                panic!("{err:?}");
            };
            assert_eq!(at, &file);
            assert_eq!(*got, Some(line), "{err}");
            assert!(said.contains(problem), "{err}");
            let shown = err.to_string();
            assert!(
                shown.starts_with(&format!("{}:{line}: ", file.display())),
                "{shown}"
            );
            assert!(!shown.contains('\n'), "{shown}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn problems_report_missing_and_non_executable() {
        let root = tempfile::tempdir().unwrap();
        let dir = make_kit(root.path(), "gen", "app", "");
        let quick_check = dir.join("actions/quickCheck");
        let delete = dir.join("actions/delete");
        std::fs::remove_file(&quick_check).unwrap();
        chmod(&delete, 0o644);

        let kits = Kits::load(&[root.path().to_path_buf()]).unwrap();
        let problems = kits.get("gen", "app").unwrap().problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!("{}: ", quick_check.display()))
                && problems[0].contains("missing"),
            "{}",
            problems[0]
        );
        assert_eq!(
            problems[1],
            format!(
                "{}: not executable (chmod +x {})",
                delete.display(),
                delete.display()
            )
        );
    }

    #[cfg(unix)]
    #[test]
    fn an_unsafe_kit_has_problems_naming_the_path_and_the_fix() {
        let root = tempfile::tempdir().unwrap();
        let dir = make_kit(root.path(), "gen", "app", "");
        let restore = dir.join("actions/restore");
        let kits = Kits::load(&[root.path().to_path_buf()]).unwrap();
        let kit = kits.get("gen", "app").unwrap();
        assert!(kit.problems().is_empty(), "{:?}", kit.problems());

        chmod(&restore, 0o757);
        chmod(&dir, 0o775);
        let problems = kit.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!(
                "{} is writable by group (mode 0775)",
                dir.display()
            )) && problems[0].ends_with(&format!("(chmod go-w {})", dir.display())),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].contains(&format!(
                "{} is writable by others (mode 0757)",
                restore.display()
            )) && problems[1].ends_with(&format!("(chmod go-w {})", restore.display())),
            "{}",
            problems[1]
        );
        assert_eq!(kit.refusals(Action::Remove, &BTreeMap::new()), problems);
        // So is a helper the actions source, and the manifest.
        chmod(&restore, 0o755);
        chmod(&dir, 0o755);
        let helper = dir.join("common.sh");
        write(&helper, "x=1\n");
        chmod(&helper, 0o666);
        let problems = kit.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains(&helper.display().to_string()));
        chmod(&helper, 0o644);
        chmod(&dir.join(MANIFEST), 0o646);
        assert_eq!(kit.problems().len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn refusals_check_the_user_scripts_the_manifest_names() {
        let root = tempfile::tempdir().unwrap();
        make_kit(
            root.path(),
            "gen",
            "app",
            "[user_scripts]\nrestore = [\"start\"]\nquickCheck = [\"check\"]\nrecover = [\"start\"]\n",
        );
        let kits = Kits::load(&[root.path().to_path_buf()]).unwrap();
        let kit = kits.get("gen", "app").unwrap();
        let work = tempfile::tempdir().unwrap();
        let start = work.path().join("start");
        write(&start, "#!/bin/sh\nexit 0\n");
        chmod(&start, 0o755);
        let other = work.path().join("other");
        write(&other, "#!/bin/sh\nexit 0\n");
        chmod(&other, 0o777);
        let props: BTreeMap<String, String> = [
            ("start".to_string(), start.display().to_string()),
            // Not named by the manifest: not a script the kit runs.
            ("other".to_string(), other.display().to_string()),
            // Set but empty, or naming nothing: the kit says so itself.
            ("check".to_string(), String::new()),
        ]
        .into();
        assert_eq!(kit.refusals(Action::Restore, &props), Vec::<String>::new());

        chmod(&start, 0o775);
        let refusals = kit.refusals(Action::Restore, &props);
        assert_eq!(refusals.len(), 1, "{refusals:?}");
        assert_eq!(kit.refusals(Action::Recover, &props), refusals);
        // Actions that do not run it are not refused.
        assert!(kit.refusals(Action::QuickCheck, &props).is_empty());
        assert!(kit.refusals(Action::Remove, &props).is_empty());
        let shown = start.display();
        assert!(
            refusals[0].starts_with(&format!("start script {shown} is writable by group"))
                && refusals[0].ends_with(&format!("(chmod go-w {shown})")),
            "{}",
            refusals[0]
        );
        chmod(&start, 0o755);
        chmod(work.path(), 0o777);
        let refusals = kit.refusals(Action::Restore, &props);
        assert_eq!(refusals.len(), 1, "{refusals:?}");
        assert!(
            refusals[0].ends_with(&format!("(chmod go-w {})", work.path().display())),
            "{}",
            refusals[0]
        );
        chmod(work.path(), 0o700);
    }

    #[test]
    fn action_names() {
        let names: Vec<String> = Action::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            ["restore", "remove", "quickCheck", "recover", "delete"]
        );
    }

    fn shipped() -> Kits {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kits");
        Kits::load(&[dir]).unwrap()
    }

    #[cfg(unix)]
    #[test]
    fn shipped_generic_app_kit_is_complete() {
        let kits = shipped();
        let kit = kits.get("gen", "app").unwrap();
        assert_eq!(kit.problems(), Vec::<String>::new());
        assert_eq!(kit.manifest.description, "Generic Application");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn generic_app_restore_runs_the_start_script() {
        use crate::resources::script;
        let kits = shipped();
        let kit = kits.get("gen", "app").unwrap();
        let work = tempfile::tempdir().unwrap();
        let start = work.path().join("start");
        write(&start, "#!/bin/sh\necho \"starting $HEARTLINE_TAG\"\n");
        chmod(&start, 0o755);
        let env = |vars: &[(&str, &Path)]| -> Vec<(String, String)> {
            let mut env = vec![("HEARTLINE_TAG".to_string(), "app1".to_string())];
            env.extend(
                vars.iter()
                    .map(|(k, v)| (k.to_string(), v.display().to_string())),
            );
            env
        };
        let timeout = kit.manifest.timeout(Action::Restore);

        let run = script::run(
            &kit.script(Action::Restore),
            &[],
            &env(&[("HEARTLINE_PROP_START", &start)]),
            timeout,
        )
        .await;
        assert!(run.succeeded(), "{run}: {}", run.output);
        assert_eq!(run.output, "starting app1\n");

        let run = script::run(&kit.script(Action::Restore), &[], &env(&[]), timeout).await;
        assert_eq!(
            run.outcome,
            script::Outcome::Failed {
                code: Some(2),
                signal: None
            },
            "{}",
            run.output
        );
        assert!(
            run.output.contains("HEARTLINE_PROP_START"),
            "{}",
            run.output
        );

        let plain = work.path().join("plain");
        write(&plain, "#!/bin/sh\nexit 0\n");
        chmod(&plain, 0o644);
        let run = script::run(
            &kit.script(Action::Restore),
            &[],
            &env(&[("HEARTLINE_PROP_START", &plain)]),
            timeout,
        )
        .await;
        assert_eq!(
            run.outcome,
            script::Outcome::Failed {
                code: Some(2),
                signal: None
            },
            "{}",
            run.output
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn generic_app_recover_without_script_stops_then_starts() {
        use crate::resources::script;
        let kits = shipped();
        let kit = kits.get("gen", "app").unwrap();
        let work = tempfile::tempdir().unwrap();
        let log = work.path().join("log");
        let mut env = Vec::new();
        for (var, word) in [
            ("HEARTLINE_PROP_START", "start"),
            ("HEARTLINE_PROP_STOP", "stop"),
        ] {
            let path = work.path().join(word);
            write(
                &path,
                &format!("#!/bin/sh\necho {word} >> '{}'\n", log.display()),
            );
            chmod(&path, 0o755);
            env.push((var.to_string(), path.display().to_string()));
        }
        let run = script::run(
            &kit.script(Action::Recover),
            &[],
            &env,
            kit.manifest.timeout(Action::Recover),
        )
        .await;
        assert!(run.succeeded(), "{run}: {}", run.output);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "stop\nstart\n");
    }
}
