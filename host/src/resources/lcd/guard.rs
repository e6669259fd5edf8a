//! The database is never silently lost: the record of its last commit
//! beside it, the checks at open, and the operator's way out (backup,
//! restore, discard).
//!
//! **The record.** Every transaction the daemon commits bumps a counter in
//! the database (`meta.commits`); after the commit, the counter is written
//! beside the database (`lcd.sqlite.committed`, a temporary file written,
//! fsynced and renamed over the old one). The record is written *after*
//! the commit and before the change is reported done, so a crash between
//! the two leaves it older than the database (by a change nobody was told
//! of), which is accepted; a database older than its record has lost
//! committed changes (its `-wal` was lost, or an old copy was put back),
//! and one missing or empty while its record says it held commits was
//! deleted or truncated.
//!
//! **At open** ([`inspect`]), read-only and before anything is written:
//! `PRAGMA quick_check`, then the counter against the record. A refusal
//! ([`Refusal`]) is one line saying what is wrong and how to recover:
//! restore a backup ([`restore`], `heartline restore`) or move the files
//! aside ([`discard`], `heartline discard-database`) so the daemon starts
//! empty and, joining the cluster, takes the cluster's configuration (the
//! greater version wins; an empty database is version 0).
//!
//! **Backups** ([`backup`]) use SQLite's online backup API from a separate
//! read-only connection, in one step (one read transaction: a consistent
//! copy while the daemon writes), then check the copy with `quick_check`.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::SCHEMA_VERSION;

/// The key of the commit counter in the `meta` table.
pub(super) const COMMITS: &str = "commits";

/// What the record beside the database says: the counter and the
/// configuration's generation at the last commit it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record {
    /// Transactions committed to the database.
    pub commits: u64,
    /// The configuration's generation then (for messages).
    pub generation: u64,
}

/// The record's path: beside the database, its name plus `.committed`.
#[must_use]
pub fn record_path(database: &Path) -> PathBuf {
    sibling(database, ".committed")
}

fn sibling(database: &Path, suffix: &str) -> PathBuf {
    let mut name = database.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    database.with_file_name(name)
}

/// Reads the record; `None` if there is none (a new node, or a database
/// of a release before records).
pub fn read_record(database: &Path) -> Result<Option<Record>, Refusal> {
    let path = record_path(database);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Refusal::Record {
                path,
                detail: e.to_string(),
            });
        }
    };
    let mut record = Record::default();
    let mut seen = false;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        let value = value.parse::<u64>().map_err(|_| Refusal::Record {
            path: path.clone(),
            detail: format!("unreadable line {line:?}"),
        });
        match key {
            "commits" => {
                record.commits = value?;
                seen = true;
            }
            "generation" => record.generation = value?,
            _ => {}
        }
    }
    if !seen {
        return Err(Refusal::Record {
            path,
            detail: "no commit count in it".into(),
        });
    }
    Ok(Some(record))
}

/// Writes the record atomically: a temporary file beside it, fsynced, then
/// renamed over the old one.
pub fn write_record(database: &Path, record: Record) -> io::Result<()> {
    let path = record_path(database);
    let temp = sibling(database, ".committed.tmp");
    let text = format!(
        "# heartline: the last commit to {} (do not edit; see docs/admin.md, The configuration database)\ncommits {}\ngeneration {}\n",
        database
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        record.commits,
        record.generation
    );
    let mut file = private_file(&temp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, &path)
}

/// Creates (truncating) a file readable by its owner only.
fn private_file(path: &Path) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Why a database (or a backup) must not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// SQLite or `quick_check` finds it damaged.
    Damaged {
        /// The database.
        path: PathBuf,
        /// What SQLite says.
        detail: String,
    },
    /// It is missing, or holds nothing, where its record says it held
    /// committed changes (deleted or truncated).
    Empty {
        /// The database.
        path: PathBuf,
        /// What the record says was committed.
        record: Record,
    },
    /// It holds fewer commits than its record: committed changes are
    /// missing (its `-wal` file was lost, or an older copy was put back).
    Behind {
        /// The database.
        path: PathBuf,
        /// Commits it holds.
        holds: u64,
        /// The generation it holds.
        generation: u64,
        /// What the record says was committed.
        record: Record,
    },
    /// The record beside it cannot be read.
    Record {
        /// The record.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// It cannot be opened or read at all (permissions, I/O errors).
    Unreadable {
        /// The database.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A file given as a backup is damaged or not a heartline configuration
    /// database.
    BadBackup {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

impl Refusal {
    /// The one-line message, naming `config` (the daemon's configuration
    /// file) in the commands to run, if known.
    #[must_use]
    pub fn message(&self, config: Option<&Path>) -> String {
        let config = config.map_or_else(|| "FILE".to_string(), |c| c.display().to_string());
        let recover = format!(
            "to recover, with the daemon stopped: restore a backup (heartline restore --config {config} BACKUP), or move the damaged files aside and take the cluster's configuration (heartline discard-database --config {config}, then start the daemon while the other nodes are up; it joins with an empty database and takes theirs)"
        );
        match self {
            Refusal::Damaged { path, detail } => format!(
                "the configuration database {} is damaged ({detail}); {recover}",
                path.display()
            ),
            Refusal::Empty { path, record } => format!(
                "the configuration database {} is missing or empty, but {} says it held {} commits (generation {}): it was deleted or truncated; {recover}",
                path.display(),
                record_path(path).display(),
                record.commits,
                record.generation
            ),
            Refusal::Behind {
                path,
                holds,
                generation,
                record,
            } => format!(
                "the configuration database {} is missing committed changes: it holds {holds} commits (generation {generation}) but {} says {} (generation {}): its -wal file was lost or an older copy was put back; {recover}",
                path.display(),
                record_path(path).display(),
                record.commits,
                record.generation
            ),
            Refusal::Record { path, detail } => format!(
                "the record of the configuration database's last commit {} cannot be read ({detail}); if the database is known to be good, delete the record (it is written again at the next change); otherwise {recover}",
                path.display()
            ),
            Refusal::Unreadable { path, detail } => format!(
                "cannot read the configuration database {} ({detail}): check its permissions and the disk; if it is lost, {recover}",
                path.display()
            ),
            Refusal::BadBackup { path, detail } => format!(
                "{} cannot be restored: {detail}; nothing was changed",
                path.display()
            ),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message(None))
    }
}

impl std::error::Error for Refusal {}

/// Why backup, restore or discard failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardError {
    /// A database or backup that must not be used.
    Refused(Refusal),
    /// Anything else (the disk, SQLite busy, a bad destination).
    Failed(String),
}

impl fmt::Display for GuardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardError::Refused(r) => r.fmt(f),
            GuardError::Failed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for GuardError {}

impl From<Refusal> for GuardError {
    fn from(r: Refusal) -> Self {
        GuardError::Refused(r)
    }
}

/// What a database holds, as far as the checks go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Its commit counter.
    pub commits: u64,
    /// Its configuration's generation.
    pub generation: u64,
    /// Its resource instances.
    pub resources: u64,
    /// Its schema version (0: empty).
    pub schema: usize,
}

fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Runs `PRAGMA quick_check` and reads what the database holds. `Err` is
/// what SQLite or the check said.
fn check(conn: &Connection) -> Result<Summary, String> {
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut s| {
            s.query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(|e| e.to_string())?;
    if problems != ["ok"] {
        let mut detail: Vec<&str> = problems.iter().take(3).map(String::as_str).collect();
        if problems.len() > 3 {
            detail.push("...");
        }
        return Err(format!("quick_check: {}", detail.join("; ")));
    }
    let schema = conn
        .pragma_query_value(None, "user_version", |row| row.get::<_, i64>(0))
        .map_err(|e| e.to_string())?;
    let schema = usize::try_from(schema).unwrap_or(usize::MAX);
    if schema == 0 {
        return Ok(Summary::default());
    }
    let meta = |key: &str| -> Result<u64, String> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
            row.get::<_, String>(0)
        })
        .optional()
        .map(|v| v.and_then(|v| v.parse().ok()).unwrap_or(0))
        .map_err(|e| e.to_string())
    };
    let resources = conn
        .query_row("SELECT COUNT(*) FROM resources", [], |row| {
            row.get::<_, i64>(0)
        })
        .map_err(|e| e.to_string())?;
    Ok(Summary {
        commits: meta(COMMITS)?,
        generation: meta("generation")?,
        resources: u64::try_from(resources).unwrap_or(0),
        schema,
    })
}

/// Checks the database at `path` before it is opened for writing: refused
/// if damaged, missing or empty where its record says it held commits, or
/// holding fewer commits than its record. Opens it read-only and writes
/// nothing. A missing file with no record is a new node.
pub fn inspect(path: &Path) -> Result<(Summary, Option<Record>), Refusal> {
    let record = read_record(path)?;
    let expected = record.unwrap_or_default();
    let length = match fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => {
            return Err(Refusal::Unreadable {
                path: path.to_path_buf(),
                detail: e.to_string(),
            });
        }
    };
    if length == 0 {
        if expected.commits > 0 {
            return Err(Refusal::Empty {
                path: path.to_path_buf(),
                record: expected,
            });
        }
        return Ok((Summary::default(), record));
    }
    let conn = open_read_only(path).map_err(|e| Refusal::Unreadable {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let summary = check(&conn).map_err(|detail| Refusal::Damaged {
        path: path.to_path_buf(),
        detail,
    })?;
    drop(conn);
    if summary.schema == 0 && expected.commits > 0 {
        return Err(Refusal::Empty {
            path: path.to_path_buf(),
            record: expected,
        });
    }
    if summary.commits < expected.commits {
        return Err(Refusal::Behind {
            path: path.to_path_buf(),
            holds: summary.commits,
            generation: summary.generation,
            record: expected,
        });
    }
    Ok((summary, record))
}

fn failed(what: &str, path: &Path, e: impl fmt::Display) -> GuardError {
    GuardError::Failed(format!("{what} {}: {e}", path.display()))
}

/// Copies `conn`'s main database into `to` in one step of the online
/// backup API (one read transaction: a consistent copy), retrying while the
/// source is busy.
fn copy(from: &Connection, to: &mut Connection) -> rusqlite::Result<()> {
    let backup = Backup::new(from, to)?;
    for _ in 0..100 {
        match backup.step(-1)? {
            StepResult::Done => return Ok(()),
            StepResult::More | StepResult::Busy | StepResult::Locked => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {}
        }
    }
    Err(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
        Some("the database stayed busy for 5 s".into()),
    ))
}

fn same_file(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| {
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = parent.map_or_else(|| Path::new(".").canonicalize(), Path::canonicalize);
        dir.ok().map(|d| d.join(p.file_name().unwrap_or_default()))
    };
    match (canonical(a), canonical(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

fn sync_file(path: &Path) -> io::Result<()> {
    fs::OpenOptions::new().write(true).open(path)?.sync_all()
}

/// Best effort: the directory's entries on disk (Unix).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Copies the database at `database` (a running daemon's, or a stopped
/// one's) to `to`, replacing it atomically if it exists; the copy is one
/// self-contained file (no `-wal`), mode 0600, checked with
/// `quick_check`.
pub fn backup(database: &Path, to: &Path) -> Result<Summary, GuardError> {
    for own in [
        database.to_path_buf(),
        sibling(database, "-wal"),
        sibling(database, "-shm"),
        record_path(database),
    ] {
        if same_file(&own, to) {
            return Err(GuardError::Failed(format!(
                "{} is the database's own file: back up to another file",
                to.display()
            )));
        }
    }
    if !database.is_file() {
        return Err(failed(
            "no configuration database at",
            database,
            "nothing to back up",
        ));
    }
    let source = open_read_only(database).map_err(|e| failed("cannot read", database, e))?;
    let temp = {
        let mut name = to.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp-{}", std::process::id()));
        to.with_file_name(name)
    };
    let _ = fs::remove_file(&temp);
    drop(private_file(&temp).map_err(|e| failed("cannot create", &temp, e))?);
    let result = (|| {
        let mut copy_conn = Connection::open(&temp).map_err(|e| failed("cannot open", &temp, e))?;
        copy(&source, &mut copy_conn).map_err(|e| failed("cannot copy", database, e))?;
        copy_conn
            .pragma_update(None, "journal_mode", "DELETE")
            .map_err(|e| failed("cannot write", &temp, e))?;
        let summary = check(&copy_conn).map_err(|detail| Refusal::Damaged {
            path: database.to_path_buf(),
            detail,
        })?;
        drop(copy_conn);
        sync_file(&temp).map_err(|e| failed("cannot write", &temp, e))?;
        fs::rename(&temp, to).map_err(|e| failed("cannot write", to, e))?;
        Ok(summary)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// A new folder beside `database` for files moved aside: its name plus
/// `.{what}-{unix time}`.
fn aside_dir(database: &Path, what: &str) -> Result<PathBuf, GuardError> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut dir = sibling(database, &format!(".{what}-{stamp}"));
    let mut n = 1;
    while dir.exists() {
        dir = sibling(database, &format!(".{what}-{stamp}-{n}"));
        n += 1;
    }
    fs::create_dir(&dir).map_err(|e| failed("cannot create", &dir, e))?;
    Ok(dir)
}

/// Moves `files` that exist into `dir`, in order.
fn move_aside(files: &[PathBuf], dir: &Path) -> Result<usize, GuardError> {
    let mut moved = 0;
    for file in files {
        if fs::symlink_metadata(file).is_err() {
            continue;
        }
        let target = dir.join(file.file_name().unwrap_or_default());
        fs::rename(file, &target).map_err(|e| failed("cannot move aside", file, e))?;
        moved += 1;
    }
    Ok(moved)
}

/// Replaces the database at `database` (its daemon stopped) with the backup
/// `from`, after checking it with `quick_check`. The files it replaces are
/// moved into a folder beside it (returned). The restored database's
/// commit counter is set above everything the record saw, so that it is
/// accepted at start.
pub fn restore(database: &Path, from: &Path) -> Result<(Summary, Option<PathBuf>), GuardError> {
    let bad = |detail: String| {
        GuardError::Refused(Refusal::BadBackup {
            path: from.to_path_buf(),
            detail,
        })
    };
    if same_file(database, from) {
        return Err(GuardError::Failed(format!(
            "{} is the database itself",
            from.display()
        )));
    }
    if !from.is_file() {
        return Err(bad("no such file".into()));
    }
    let source = open_read_only(from).map_err(|e| bad(e.to_string()))?;
    let summary = check(&source).map_err(bad)?;
    if summary.schema == 0 {
        return Err(bad("it is not a heartline configuration database".into()));
    }
    if summary.schema > SCHEMA_VERSION {
        return Err(bad(format!(
            "it has schema version {}, newer than this build's {SCHEMA_VERSION}: restore it with the release that wrote it",
            summary.schema
        )));
    }
    // Above the record and whatever the old database holds.
    let record = read_record(database).ok().flatten().unwrap_or_default();
    let old = open_read_only(database)
        .ok()
        .and_then(|c| check(&c).ok())
        .unwrap_or_default();
    let commits = summary
        .commits
        .max(record.commits)
        .max(old.commits)
        .saturating_add(1);
    let temp = sibling(database, ".restoring");
    let _ = fs::remove_file(&temp);
    drop(private_file(&temp).map_err(|e| failed("cannot create", &temp, e))?);
    let prepared = (|| {
        let mut conn = Connection::open(&temp).map_err(|e| failed("cannot open", &temp, e))?;
        copy(&source, &mut conn).map_err(|e| failed("cannot copy", from, e))?;
        conn.pragma_update(None, "journal_mode", "DELETE")
            .map_err(|e| failed("cannot write", &temp, e))?;
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
            rusqlite::params![COMMITS, commits.to_string()],
        )
        .map_err(|e| failed("cannot write", &temp, e))?;
        let written = check(&conn).map_err(|e| failed("cannot check", &temp, e))?;
        drop(conn);
        sync_file(&temp).map_err(|e| failed("cannot write", &temp, e))?;
        Ok(written)
    })();
    let written = match prepared {
        Ok(written) => written,
        Err(e) => {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
    };
    // The old -wal and -shm go first: a -wal left beside another database
    // would be replayed into it.
    let old_files = [
        sibling(database, "-wal"),
        sibling(database, "-shm"),
        database.to_path_buf(),
    ];
    let aside = if old_files.iter().any(|f| f.exists()) {
        let dir = aside_dir(database, "before-restore")?;
        move_aside(&old_files, &dir)?;
        Some(dir)
    } else {
        None
    };
    fs::rename(&temp, database).map_err(|e| failed("cannot put in place", database, e))?;
    if let Some(dir) = database.parent() {
        sync_dir(dir);
    }
    write_record(
        database,
        Record {
            commits: written.commits,
            generation: written.generation,
        },
    )
    .map_err(|e| failed("cannot write", &record_path(database), e))?;
    Ok((written, aside))
}

/// Moves the database at `database` (its daemon stopped), its `-wal`,
/// `-shm` and record into a folder beside it (returned, `None` if there
/// was nothing), so that the daemon starts with an empty database. The
/// record goes last: stopped halfway, the start is still refused.
pub fn discard(database: &Path) -> Result<Option<PathBuf>, GuardError> {
    let files = [
        sibling(database, "-wal"),
        sibling(database, "-shm"),
        database.to_path_buf(),
        record_path(database),
    ];
    if !files.iter().any(|f| f.exists()) {
        return Ok(None);
    }
    let dir = aside_dir(database, "discarded")?;
    move_aside(&files, &dir)?;
    if let Some(parent) = database.parent() {
        sync_dir(parent);
    }
    Ok(Some(dir))
}

/// Writes the record after each commit, before the commit is reported
/// done: a change the CLI was told is made is always in the record, so a
/// lost `-wal` holding even the last commit alone is seen at the next
/// start. It is only ever given a commit already made, so the record on
/// disk is never ahead of the database; a crash between the commit and the
/// record leaves it one behind, which is safe (that change was never
/// acknowledged).
#[derive(Debug)]
pub(super) struct Recorder {
    database: PathBuf,
    /// The last write failed (logged once until one succeeds).
    failed: bool,
}

impl Recorder {
    /// The writer of `database`'s record.
    pub(super) fn new(database: &Path) -> Recorder {
        Recorder {
            database: database.to_path_buf(),
            failed: false,
        }
    }

    /// Writes `record`. A failure is logged (once in a row) and leaves
    /// the record older, which is safe.
    pub(super) fn write(&mut self, record: Record) {
        match write_record(&self.database, record) {
            Ok(()) => self.failed = false,
            Err(e) => {
                if !self.failed {
                    tracing::warn!(
                        "cannot write {}: {e}; a lost -wal file would go unnoticed until it is written",
                        record_path(&self.database).display()
                    );
                }
                self.failed = true;
            }
        }
    }
}
