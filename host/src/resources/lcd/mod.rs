//! The configuration database (LCD) on disk: the cluster's configuration
//! and every node's last known resource states, the journal of recent
//! changes and the changes discarded at heals, in one SQLite file.
//!
//! The brain ([`heartline_brain`]) keeps the database in memory and decides
//! every change; this module writes what it says changed
//! ([`Persist`]), all of it in one transaction (WAL, synchronous = FULL:
//! a change the caller was told about survives a kill -9 or a power cut),
//! before anything that depends on it is done. The schema is versioned
//! with `PRAGMA user_version` and migrated forward on open.
//!
//! The WAL is checkpointed once it holds [`CHECKPOINT_PAGES`] pages (and
//! cut back to [`WAL_LIMIT`] bytes), so it stays small and the database
//! file holds nearly everything. Every commit is counted, and the count
//! written beside the database after it; at open the database is checked
//! (`quick_check`) and its count compared with that record, and a
//! database that is damaged, emptied or missing committed changes is
//! refused with how to recover it ([`guard`]).

pub mod guard;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use heartline_brain::brain::DISCARDED;
use heartline_brain::groups::Groups;
use heartline_brain::{Persist, Stored};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

pub use heartline_brain::model::{
    Change, Epoch, Init, LcdError, Model, PRIORITIES, Place, Resource, Role, State, Version,
};

/// Schema migrations, in order: entry `i` takes the schema from version `i`
/// to `i + 1`. Never edit one that has shipped; add another.
const MIGRATIONS: &[&str] = &[
    r"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    INSERT INTO meta (key, value) VALUES ('generation', '0');
    CREATE TABLE nodes (
        id   INTEGER PRIMARY KEY,
        name TEXT NOT NULL
    );
    CREATE TABLE resources (
        node     INTEGER NOT NULL,
        tag      TEXT NOT NULL,
        id       TEXT NOT NULL,
        app      TEXT NOT NULL,
        rtype    TEXT NOT NULL,
        state    TEXT NOT NULL,
        init     TEXT NOT NULL,
        flags    TEXT NOT NULL,
        info     TEXT NOT NULL,
        props    TEXT NOT NULL,
        priority INTEGER NOT NULL,
        PRIMARY KEY (node, tag)
    );
    CREATE TABLE dependencies (
        node   INTEGER NOT NULL,
        parent TEXT NOT NULL,
        child  TEXT NOT NULL,
        PRIMARY KEY (node, parent, child),
        FOREIGN KEY (node, parent) REFERENCES resources (node, tag) ON DELETE CASCADE,
        FOREIGN KEY (node, child) REFERENCES resources (node, tag) ON DELETE CASCADE
    );
    CREATE TABLE equivalencies (
        node_a INTEGER NOT NULL,
        tag_a  TEXT NOT NULL,
        node_b INTEGER NOT NULL,
        tag_b  TEXT NOT NULL,
        PRIMARY KEY (node_a, tag_a, node_b, tag_b),
        FOREIGN KEY (node_a, tag_a) REFERENCES resources (node, tag) ON DELETE CASCADE,
        FOREIGN KEY (node_b, tag_b) REFERENCES resources (node, tag) ON DELETE CASCADE
    );
",
    // 2: roles, the coordinator's epoch, maintenance mode, standby nodes,
    // the journal of changes and the changes discarded at heals.
    r"
    ALTER TABLE resources ADD COLUMN role TEXT NOT NULL DEFAULT 'stopped';
    INSERT INTO meta (key, value) VALUES ('epoch_term', '0'), ('epoch_node', '0'), ('maintenance', '0');
    CREATE TABLE standby (
        node INTEGER PRIMARY KEY
    );
    CREATE TABLE journal (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        term       INTEGER NOT NULL,
        node       INTEGER NOT NULL,
        generation INTEGER NOT NULL,
        change     TEXT NOT NULL
    );
    CREATE TABLE discarded (
        seq  INTEGER PRIMARY KEY AUTOINCREMENT,
        text TEXT NOT NULL
    );
",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Journal entries kept.
const JOURNAL: usize = 256;

/// The WAL is checkpointed into the database (PASSIVE, by SQLite, after
/// the commit that reaches it) once it holds this many pages.
pub const CHECKPOINT_PAGES: i64 = 32;

/// The WAL file is cut back to this many bytes when it restarts after a
/// checkpoint.
pub const WAL_LIMIT: i64 = 256 * 1024;

/// The open database.
#[derive(Debug)]
pub struct Lcd {
    conn: Connection,
    /// Transactions committed (`meta.commits`), written to the record
    /// beside the database after each.
    commits: u64,
    /// Writes the record beside the database after each commit, before
    /// [`Lcd::save`] returns.
    recorder: guard::Recorder,
}

fn storage(e: rusqlite::Error) -> LcdError {
    LcdError::Storage(format!("configuration database: {e}"))
}

impl Lcd {
    /// Opens (creating if needed) the database at `path`, migrates it to
    /// this build's schema and loads it. Refused, writing nothing, if it
    /// is damaged, missing or empty while its record says it held
    /// commits, or older than its record ([`guard::inspect`]).
    pub fn open(path: &Path) -> Result<(Lcd, Stored), LcdError> {
        let (summary, record) =
            guard::inspect(path).map_err(|r| LcdError::Storage(r.to_string()))?;
        let mut conn = Connection::open(path).map_err(|e| {
            LcdError::Storage(format!(
                "cannot open the configuration database {}: {e}",
                path.display()
            ))
        })?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(storage)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(storage)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(storage)?;
        conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)
            .map_err(storage)?;
        conn.pragma_update(None, "journal_size_limit", WAL_LIMIT)
            .map_err(storage)?;
        let from = migrate(&mut conn, path)?;
        let mut lcd = Lcd {
            conn,
            commits: summary.commits,
            recorder: guard::Recorder::new(path),
        };
        let mut stored = lcd.load()?;
        if from < 2 && from > 0 {
            // A database of the first schema: hierarchies that were in
            // service keep running, so their role is started.
            let groups = Groups::build(&stored.model);
            let mut persist = Persist::default();
            for group in groups.iter() {
                let running = group
                    .places()
                    .filter_map(|p| stored.model.resources.get(p))
                    .any(|r| r.state.in_service());
                if running {
                    for place in group.places() {
                        if let Some(r) = stored.model.resources.get_mut(place) {
                            r.role = Role::Started;
                            persist.resources.insert(place.clone());
                        }
                    }
                }
            }
            lcd.save(&persist, &stored.model)?;
            stored = lcd.load()?;
        }
        let now = guard::Record {
            commits: lcd.commits,
            generation: stored.model.generation,
        };
        if record != Some(now) {
            lcd.write_record(stored.model.generation);
        }
        Ok((lcd, stored))
    }

    /// Writes the record of the last commit beside the database (a
    /// failure is logged: the record stays older, which is safe).
    fn write_record(&mut self, generation: u64) {
        self.recorder.write(guard::Record {
            commits: self.commits,
            generation,
        });
    }

    /// Writes what `persist` names, as it is in `model`, in one
    /// transaction.
    pub fn save(&mut self, persist: &Persist, model: &Model) -> Result<(), LcdError> {
        let tx = self.conn.transaction().map_err(storage)?;
        if persist.all {
            tx.execute_batch(
                "DELETE FROM equivalencies; DELETE FROM dependencies; DELETE FROM resources; DELETE FROM nodes;",
            )
            .map_err(storage)?;
            for r in model.resources.values() {
                upsert(&tx, r)?;
            }
            for dep in &model.dependencies {
                insert_dependency(&tx, dep)?;
            }
            for pair in &model.equivalencies {
                insert_equivalency(&tx, pair)?;
            }
        } else {
            for place in &persist.resources {
                match model.resources.get(place) {
                    Some(r) => upsert(&tx, r)?,
                    None => {
                        tx.execute(
                            "DELETE FROM resources WHERE node = ?1 AND tag = ?2",
                            params![place.node, place.tag],
                        )
                        .map_err(storage)?;
                    }
                }
            }
            for dep in &persist.dependencies {
                if model.dependencies.contains(dep) {
                    insert_dependency(&tx, dep)?;
                } else {
                    tx.execute(
                        "DELETE FROM dependencies WHERE node = ?1 AND parent = ?2 AND child = ?3",
                        params![dep.0, dep.1, dep.2],
                    )
                    .map_err(storage)?;
                }
            }
            for pair in &persist.equivalencies {
                if model.equivalencies.contains(pair) {
                    insert_equivalency(&tx, pair)?;
                } else {
                    tx.execute(
                        "DELETE FROM equivalencies WHERE node_a = ?1 AND tag_a = ?2 AND node_b = ?3 AND tag_b = ?4",
                        params![pair.0.node, pair.0.tag, pair.1.node, pair.1.tag],
                    )
                    .map_err(storage)?;
                }
            }
        }
        if persist.all || persist.meta {
            let meta = [
                ("generation", model.generation.to_string()),
                ("epoch_term", model.epoch.term.to_string()),
                ("epoch_node", model.epoch.node.to_string()),
                ("maintenance", u8::from(model.maintenance).to_string()),
            ];
            for (key, value) in meta {
                tx.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
                )
                .and_then(|mut statement| statement.execute(params![key, value]))
                .map_err(storage)?;
            }
        }
        if persist.all || persist.nodes {
            tx.execute("DELETE FROM standby", []).map_err(storage)?;
            for node in &model.standby {
                tx.execute("INSERT INTO standby (node) VALUES (?1)", params![node])
                    .map_err(storage)?;
            }
            tx.execute("DELETE FROM nodes", []).map_err(storage)?;
            for (id, name) in &model.nodes {
                tx.execute(
                    "INSERT INTO nodes (id, name) VALUES (?1, ?2)",
                    params![id, name],
                )
                .map_err(storage)?;
            }
        }
        if persist.journal_replaced {
            tx.execute("DELETE FROM journal", []).map_err(storage)?;
        }
        for (version, text) in &persist.journal {
            tx.prepare_cached(
                "INSERT INTO journal (term, node, generation, change) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    i64::try_from(version.epoch.term).unwrap_or(i64::MAX),
                    version.epoch.node,
                    i64::try_from(version.generation).unwrap_or(i64::MAX),
                    text
                ])
            })
            .map_err(storage)?;
        }
        if !persist.journal.is_empty() {
            tx.prepare_cached(
                "DELETE FROM journal WHERE seq <= (SELECT MAX(seq) FROM journal) - ?1",
            )
            .and_then(|mut statement| {
                statement.execute(params![i64::try_from(JOURNAL).unwrap_or(i64::MAX)])
            })
            .map_err(storage)?;
        }
        let commits = self.commits.saturating_add(1);
        tx.prepare_cached(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
        )
        .and_then(|mut statement| statement.execute(params![guard::COMMITS, commits.to_string()]))
        .map_err(storage)?;
        for text in &persist.discarded {
            tx.execute("INSERT INTO discarded (text) VALUES (?1)", params![text])
                .map_err(storage)?;
        }
        if !persist.discarded.is_empty() {
            tx.execute(
                "DELETE FROM discarded WHERE seq <= (SELECT MAX(seq) FROM discarded) - ?1",
                params![i64::try_from(DISCARDED).unwrap_or(i64::MAX)],
            )
            .map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        self.commits = commits;
        self.write_record(model.generation);
        Ok(())
    }

    fn load(&self) -> Result<Stored, LcdError> {
        let conn = &self.conn;
        let meta = |key: &str| -> Result<Option<String>, LcdError> {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()
            .map_err(storage)
        };
        let number = |key: &str| -> Result<u64, LcdError> {
            Ok(meta(key)?.and_then(|v| v.parse().ok()).unwrap_or(0))
        };
        let mut model = Model {
            generation: number("generation")?,
            epoch: Epoch {
                term: number("epoch_term")?,
                node: u16::try_from(number("epoch_node")?).unwrap_or(0),
            },
            maintenance: number("maintenance")? != 0,
            ..Model::default()
        };
        let mut nodes = conn
            .prepare("SELECT id, name FROM nodes")
            .map_err(storage)?;
        for row in nodes
            .query_map([], |row| {
                Ok((row.get::<_, u16>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(storage)?
        {
            let (id, name) = row.map_err(storage)?;
            model.nodes.insert(id, name);
        }
        let mut standby = conn.prepare("SELECT node FROM standby").map_err(storage)?;
        for row in standby
            .query_map([], |row| row.get::<_, u16>(0))
            .map_err(storage)?
        {
            model.standby.insert(row.map_err(storage)?);
        }
        let mut resources = conn
            .prepare("SELECT node, tag, id, app, rtype, state, init, flags, info, props, priority, role FROM resources")
            .map_err(storage)?;
        let rows = resources
            .query_map([], |row| {
                Ok((
                    Place {
                        node: row.get(0)?,
                        tag: row.get(1)?,
                    },
                    [
                        row.get::<_, String>(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                        row.get(7)?,
                        row.get(8)?,
                        row.get(9)?,
                        row.get(11)?,
                    ],
                    row.get::<_, u16>(10)?,
                ))
            })
            .map_err(storage)?;
        for row in rows {
            let (place, [id, app, rtype, state, init, flags, info, props, role], priority) =
                row.map_err(storage)?;
            let props: BTreeMap<String, String> = serde_json::from_str(&props).map_err(|e| {
                LcdError::Storage(format!("properties of {place} are damaged: {e}"))
            })?;
            let resource = Resource {
                place: place.clone(),
                id,
                app,
                rtype,
                state: State::parse(&state)?,
                init: Init::parse(&init)?,
                flags: flags
                    .split(',')
                    .filter(|f| !f.is_empty())
                    .map(str::to_string)
                    .collect::<BTreeSet<_>>(),
                info,
                props,
                priority,
                role: Role::parse(&role)?,
            };
            model.resources.insert(place, resource);
        }
        let mut deps = conn
            .prepare("SELECT node, parent, child FROM dependencies")
            .map_err(storage)?;
        for row in deps
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .map_err(storage)?
        {
            model.dependencies.insert(row.map_err(storage)?);
        }
        let mut eqvs = conn
            .prepare("SELECT node_a, tag_a, node_b, tag_b FROM equivalencies")
            .map_err(storage)?;
        for row in eqvs
            .query_map([], |row| {
                Ok((
                    Place {
                        node: row.get(0)?,
                        tag: row.get(1)?,
                    },
                    Place {
                        node: row.get(2)?,
                        tag: row.get(3)?,
                    },
                ))
            })
            .map_err(storage)?
        {
            model.equivalencies.insert(row.map_err(storage)?);
        }
        let mut journal = Vec::new();
        let mut rows = conn
            .prepare("SELECT term, node, generation, change FROM journal ORDER BY seq")
            .map_err(storage)?;
        for row in rows
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, u16>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })
            .map_err(storage)?
        {
            let (term, node, generation, text) = row.map_err(storage)?;
            let version = Version {
                epoch: Epoch {
                    term: u64::try_from(term).unwrap_or(0),
                    node,
                },
                generation: u64::try_from(generation).unwrap_or(0),
            };
            journal.push((version, text));
        }
        let mut discarded = Vec::new();
        let mut rows = conn
            .prepare("SELECT text FROM discarded ORDER BY seq")
            .map_err(storage)?;
        for row in rows
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(storage)?
        {
            discarded.push(row.map_err(storage)?);
        }
        Ok(Stored {
            model,
            journal,
            discarded,
        })
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<usize, LcdError> {
    let version: usize = conn
        .pragma_query_value(None, "user_version", |row| row.get::<_, i64>(0))
        .map_err(storage)?
        .try_into()
        .unwrap_or(usize::MAX);
    if version > SCHEMA_VERSION {
        return Err(LcdError::Storage(format!(
            "{} has schema version {version}, newer than this build's {SCHEMA_VERSION}: run the heartline release that wrote it",
            path.display()
        )));
    }
    for (from, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction().map_err(storage)?;
        tx.execute_batch(migration).map_err(storage)?;
        let next = i64::try_from(from + 1).unwrap_or(i64::MAX);
        tx.pragma_update(None, "user_version", next)
            .map_err(storage)?;
        tx.commit().map_err(storage)?;
    }
    Ok(version)
}

fn upsert(tx: &Transaction<'_>, r: &Resource) -> Result<(), LcdError> {
    let flags: Vec<&str> = r.flags.iter().map(String::as_str).collect();
    let props = serde_json::to_string(&r.props).map_err(|e| {
        LcdError::Storage(format!("cannot store the properties of {}: {e}", r.place))
    })?;
    let mut statement = tx
        .prepare_cached(
            "INSERT INTO resources (node, tag, id, app, rtype, state, init, flags, info, props, priority, role)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (node, tag) DO UPDATE SET id = ?3, app = ?4, rtype = ?5, state = ?6,
             init = ?7, flags = ?8, info = ?9, props = ?10, priority = ?11, role = ?12",
        )
        .map_err(storage)?;
    statement
        .execute(params![
            r.place.node,
            r.place.tag,
            r.id,
            r.app,
            r.rtype,
            r.state.as_str(),
            r.init.as_str(),
            flags.join(","),
            r.info,
            props,
            r.priority,
            r.role.as_str()
        ])
        .map_err(storage)?;
    Ok(())
}

fn insert_dependency(tx: &Transaction<'_>, dep: &(u16, String, String)) -> Result<(), LcdError> {
    tx.execute(
        "INSERT OR IGNORE INTO dependencies (node, parent, child) VALUES (?1, ?2, ?3)",
        params![dep.0, dep.1, dep.2],
    )
    .map_err(storage)?;
    Ok(())
}

fn insert_equivalency(tx: &Transaction<'_>, pair: &(Place, Place)) -> Result<(), LcdError> {
    tx.execute(
        "INSERT OR IGNORE INTO equivalencies (node_a, tag_a, node_b, tag_b) VALUES (?1, ?2, ?3, ?4)",
        params![pair.0.node, pair.0.tag, pair.1.node, pair.1.tag],
    )
    .map_err(storage)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn resource(tag: &str) -> Resource {
        Resource {
            place: Place {
                node: 1,
                tag: tag.into(),
            },
            id: tag.into(),
            app: "gen".into(),
            rtype: "app".into(),
            state: State::Osu,
            init: Init::Autores,
            flags: BTreeSet::from(["quiet".to_string()]),
            info: "some info".into(),
            props: BTreeMap::from([("START".to_string(), "/bin/true".to_string())]),
            priority: 1,
            role: Role::Stopped,
        }
    }

    /// Applies `changes` to `model` and saves what they touched, as the
    /// brain would.
    fn change(lcd: &mut Lcd, model: &mut Model, changes: &[Change]) {
        let mut persist = Persist::default();
        for c in changes {
            model.check(c).unwrap();
            match c {
                Change::CreateResource(r) => {
                    persist.resources.insert(r.place.clone());
                }
                Change::RemoveResource(p) | Change::SetState { place: p, .. } => {
                    persist.resources.insert(p.clone());
                }
                Change::CreateDependency {
                    node,
                    parent,
                    child,
                } => {
                    persist
                        .dependencies
                        .insert((*node, parent.clone(), child.clone()));
                }
                _ => {}
            }
            model.apply(c);
        }
        persist.meta = true;
        persist.nodes = true;
        persist.journal.push((model.version(), "test".into()));
        lcd.save(&persist, model).unwrap();
    }

    #[test]
    fn what_the_brain_saves_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lcd.sqlite");
        let (mut lcd, stored) = Lcd::open(&path).unwrap();
        let mut model = stored.model;
        model.epoch = Epoch { term: 3, node: 2 };
        model.maintenance = true;
        model.standby.insert(4);
        change(
            &mut lcd,
            &mut model,
            &[
                Change::CreateResource(resource("web")),
                Change::CreateResource(resource("data")),
                Change::CreateDependency {
                    node: 1,
                    parent: "web".into(),
                    child: "data".into(),
                },
                Change::SetState {
                    place: resource("web").place,
                    state: State::Blocked,
                },
            ],
        );
        drop(lcd);
        let (_, stored) = Lcd::open(&path).unwrap();
        assert_eq!(stored.model, model);
        assert_eq!(stored.journal.len(), 1);
        assert_eq!(
            stored.model.resources[&resource("web").place].state,
            State::Blocked
        );
    }

    #[test]
    fn a_snapshot_rewrites_everything_and_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lcd.sqlite");
        let (mut lcd, stored) = Lcd::open(&path).unwrap();
        let mut model = stored.model;
        change(
            &mut lcd,
            &mut model,
            &[Change::CreateResource(resource("old"))],
        );
        let mut other = Model::default();
        other.apply(&Change::CreateResource(resource("new")));
        other.generation = 9;
        let persist = Persist {
            all: true,
            meta: true,
            journal: vec![(other.version(), "from node 2".into())],
            journal_replaced: true,
            discarded: vec!["create old on node 1".into()],
            ..Persist::default()
        };
        lcd.save(&persist, &other).unwrap();
        drop(lcd);
        let (_, stored) = Lcd::open(&path).unwrap();
        assert_eq!(stored.model, other);
        assert_eq!(
            stored.journal,
            vec![(other.version(), "from node 2".to_string())]
        );
        assert_eq!(stored.discarded, vec!["create old on node 1".to_string()]);
    }

    #[test]
    fn a_first_schema_database_is_migrated_with_running_hierarchies_started() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lcd.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        for (tag, state) in [("up", "ISP"), ("down", "OSU")] {
            conn.execute(
                "INSERT INTO resources VALUES (1, ?1, ?1, 'gen', 'app', ?2, 'autores', '', '', '{}', 1)",
                params![tag, state],
            )
            .unwrap();
        }
        drop(conn);
        let (_, stored) = Lcd::open(&path).unwrap();
        let role = |tag: &str| {
            stored.model.resources[&Place {
                node: 1,
                tag: tag.into(),
            }]
                .role
        };
        assert_eq!(role("up"), Role::Started);
        assert_eq!(role("down"), Role::Stopped);
    }

    /// A database with `n` resources created one change at a time, still
    /// open.
    fn filled(path: &Path, n: usize) -> (Lcd, Model) {
        let (mut lcd, stored) = Lcd::open(path).unwrap();
        let mut model = stored.model;
        for i in 0..n {
            let mut r = resource(&format!("r{i}"));
            r.info = "x".repeat(200);
            change(&mut lcd, &mut model, &[Change::CreateResource(r)]);
        }
        (lcd, model)
    }

    fn wal(path: &Path) -> u64 {
        std::fs::metadata(guard_sibling(path, "-wal")).map_or(0, |m| m.len())
    }

    fn guard_sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
        let mut name = path.file_name().unwrap().to_os_string();
        name.push(suffix);
        path.with_file_name(name)
    }

    #[test]
    fn the_wal_stays_small_and_the_record_follows_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lcd.sqlite");
        let (lcd, _) = filled(&path, 300);
        let size = wal(&path);
        let bound = u64::try_from(WAL_LIMIT).unwrap();
        assert!(size <= bound, "the WAL is {size} bytes after 300 changes");
        let record = guard::read_record(&path).unwrap().unwrap();
        assert_eq!(record.commits, lcd.commits);
        assert_eq!(record.commits, 300);
        assert_eq!(record.generation, 300);
        drop(lcd);
        let (lcd, stored) = Lcd::open(&path).unwrap();
        assert_eq!(stored.model.resources.len(), 300);
        assert_eq!(lcd.commits, 300);
    }

    #[test]
    fn a_database_that_lost_its_wal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lcd.sqlite");
        let (lcd, _) = filled(&path, 40);
        assert!(wal(&path) > 0, "the last changes are in the WAL");
        // What a kill -9 and a lost -wal leave: the database file alone.
        let copy = dir.path().join("copy");
        std::fs::create_dir(&copy).unwrap();
        let lost = copy.join("lcd.sqlite");
        std::fs::copy(&path, &lost).unwrap();
        std::fs::copy(guard::record_path(&path), guard::record_path(&lost)).unwrap();
        drop(lcd);
        let before = std::fs::read(&lost).unwrap();
        let e = Lcd::open(&lost).unwrap_err().to_string();
        assert!(e.contains("missing committed changes"), "{e}");
        assert!(e.contains("says 40"), "{e}");
        assert!(e.contains("heartline restore"), "{e}");
        assert!(e.contains("heartline discard-database"), "{e}");
        // Nothing was written to it.
        assert_eq!(std::fs::read(&lost).unwrap(), before);
        assert_eq!(wal(&lost), 0);
    }

    /// The WAL holds the last change alone (everything before was
    /// checkpointed): losing it is seen, because the record was written
    /// before `save` returned, that is before the change was reported.
    #[test]
    fn a_lost_wal_holding_only_the_last_change_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lcd.sqlite");
        let (mut lcd, mut model) = filled(&path, 10);
        lcd.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        assert_eq!(wal(&path), 0);
        change(
            &mut lcd,
            &mut model,
            &[Change::CreateResource(resource("last"))],
        );
        assert!(wal(&path) > 0, "the last change is in the WAL");
        // At once, as a kill -9 right after the answer would leave it,
        // then the -wal lost: the database file and the record.
        let copy = dir.path().join("copy");
        std::fs::create_dir(&copy).unwrap();
        let lost = copy.join("lcd.sqlite");
        std::fs::copy(&path, &lost).unwrap();
        std::fs::copy(guard::record_path(&path), guard::record_path(&lost)).unwrap();
        drop(lcd);
        let e = Lcd::open(&lost).unwrap_err().to_string();
        assert!(e.contains("missing committed changes"), "{e}");
        assert!(e.contains("holds 10 commits"), "{e}");
        assert!(e.contains("says 11"), "{e}");
    }

    #[test]
    fn a_truncated_or_deleted_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lcd.sqlite");
        drop(filled(&path, 3));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        let e = Lcd::open(&path).unwrap_err().to_string();
        assert!(e.contains("missing or empty"), "{e}");
        assert!(e.contains("held 3 commits"), "{e}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        std::fs::remove_file(&path).unwrap();
        let e = Lcd::open(&path).unwrap_err().to_string();
        assert!(e.contains("missing or empty"), "{e}");
        assert!(!path.exists());
    }

    #[test]
    fn a_damaged_page_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lcd.sqlite");
        drop(filled(&path, 100));
        assert_eq!(wal(&path), 0, "closed: everything is in the database");
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len >= 10 * 4096, "{len}");
        // A page in the middle, its header overwritten.
        let mut bytes = std::fs::read(&path).unwrap();
        let page = usize::try_from(len / 4096 / 2).unwrap() * 4096;
        bytes[page..page + 64].fill(0xA5);
        std::fs::write(&path, bytes).unwrap();
        let e = Lcd::open(&path).unwrap_err().to_string();
        assert!(e.contains("is damaged"), "{e}");
        assert!(e.contains("heartline restore"), "{e}");
    }

    #[test]
    fn a_backup_restores_and_is_accepted_above_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lcd.sqlite");
        let (lcd, model) = filled(&path, 20);
        let file = dir.path().join("backup.sqlite");
        // Online: the database is open and its WAL holds changes.
        let summary = guard::backup(&path, &file).unwrap();
        assert_eq!((summary.generation, summary.resources), (20, 20));
        assert!(!guard_sibling(&file, "-wal").exists());
        // More changes after the backup, then the database is lost.
        let (mut lcd, mut later) = (lcd, model.clone());
        change(
            &mut lcd,
            &mut later,
            &[Change::CreateResource(resource("later"))],
        );
        drop(lcd);
        std::fs::write(&path, b"").unwrap();
        assert!(Lcd::open(&path).is_err());
        let (restored, aside) = guard::restore(&path, &file).unwrap();
        assert_eq!(restored.generation, 20);
        assert!(restored.commits > 21, "{restored:?}");
        assert!(aside.unwrap().join("lcd.sqlite").exists());
        let (_, stored) = Lcd::open(&path).unwrap();
        assert_eq!(stored.model, model);
        // The backup itself is refused as a target, and a damaged one as a
        // source.
        assert!(guard::backup(&path, &path).is_err());
        std::fs::write(&file, b"not a database at all, not even close").unwrap();
        let e = guard::restore(&path, &file).unwrap_err();
        assert!(
            matches!(
                e,
                guard::GuardError::Refused(guard::Refusal::BadBackup { .. })
            ),
            "{e}"
        );
    }

    #[test]
    fn a_discarded_database_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lcd.sqlite");
        drop(filled(&path, 5));
        std::fs::write(&path, b"").unwrap();
        assert!(Lcd::open(&path).is_err());
        let aside = guard::discard(&path).unwrap().unwrap();
        assert!(aside.join("lcd.sqlite.committed").exists());
        let (lcd, stored) = Lcd::open(&path).unwrap();
        assert!(stored.model.resources.is_empty());
        assert_eq!(lcd.commits, 0);
    }

    /// The cost of the checkpoints and the record, printed:
    /// `cargo test -p heartline --lib lcd::tests::cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement"]
    fn cost() {
        let n = 300;
        let dir = tempfile::tempdir().unwrap();
        let round = std::cell::Cell::new(0);
        let timed = |name: &str, setup: &dyn Fn(&mut Lcd)| {
            round.set(round.get() + 1);
            let path = dir.path().join(format!("{name}-{}", round.get()));
            let (mut lcd, stored) = Lcd::open(&path).unwrap();
            setup(&mut lcd);
            let mut model = stored.model;
            let start = std::time::Instant::now();
            for i in 0..n {
                change(
                    &mut lcd,
                    &mut model,
                    &[Change::CreateResource(resource(&format!("r{i}")))],
                );
            }
            let t = start.elapsed();
            println!(
                "{name}: {n} saves in {t:?}, {:.0} per second; WAL {} bytes",
                f64::from(n) / t.as_secs_f64(),
                wal(&path)
            );
        };
        for _ in 0..2 {
            timed("now", &|_| {});
            timed("no-record", &|lcd| {
                lcd.recorder = guard::Recorder::new(Path::new("/nonexistent/dir/lcd"));
            });
            timed("default-checkpoint", &|lcd| {
                lcd.conn
                    .pragma_update(None, "wal_autocheckpoint", 1000)
                    .unwrap();
            });
            timed("checkpoint-every-commit", &|lcd| {
                lcd.conn
                    .pragma_update(None, "wal_autocheckpoint", 1)
                    .unwrap();
            });
        }
    }

    #[test]
    fn a_database_from_a_newer_release_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lcd.sqlite");
        drop(Lcd::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let e = Lcd::open(&path).unwrap_err();
        assert!(e.to_string().contains("schema version 99"), "{e}");
    }
}
