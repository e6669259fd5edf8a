//! The configuration database (LCD): the cluster's protected resources,
//! their dependencies, equivalencies and priorities, in a SQLite file and
//! cached in memory.
//!
//! Every change is checked against the rules in [`model`], then written in
//! one transaction (WAL, synchronous = FULL: a change the caller was told
//! about survives a kill -9 or a power cut), then applied to the cache. The
//! schema is versioned with `PRAGMA user_version` and migrated forward on
//! open.

pub mod model;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

pub use model::{Change, Init, LcdError, Model, PRIORITIES, Place, Resource, State};

/// Schema migrations, in order: entry `i` takes the schema from version `i`
/// to `i + 1`. Never edit one that has shipped; add another.
const MIGRATIONS: &[&str] = &[r"
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
"];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// The open database and its cache.
#[derive(Debug)]
pub struct Lcd {
    conn: Connection,
    model: Model,
}

fn storage(e: rusqlite::Error) -> LcdError {
    LcdError::Storage(format!("configuration database: {e}"))
}

impl Lcd {
    /// Opens (creating if needed) the database at `path`, migrates it to
    /// this build's schema and loads it.
    pub fn open(path: &Path) -> Result<Lcd, LcdError> {
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
        migrate(&mut conn, path)?;
        let model = load(&conn)?;
        Ok(Lcd { conn, model })
    }

    /// Everything, as cached.
    #[must_use]
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Checks and makes one change; returns the new generation.
    pub fn apply(&mut self, change: &Change) -> Result<u64, LcdError> {
        self.model.check(change)?;
        let mut after = self.model.clone();
        after.apply(change);
        let tx = self.conn.transaction().map_err(storage)?;
        write(&tx, change, &after)?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'generation'",
            params![after.generation.to_string()],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)?;
        self.model = after;
        Ok(self.model.generation)
    }
}

impl Lcd {
    /// Replaces the whole database with `model` (another node's, when this
    /// one catches up), in one transaction.
    pub fn replace(&mut self, model: Model) -> Result<(), LcdError> {
        let tx = self.conn.transaction().map_err(storage)?;
        tx.execute_batch(
            "DELETE FROM equivalencies; DELETE FROM dependencies; DELETE FROM resources; DELETE FROM nodes;",
        )
        .map_err(storage)?;
        for (id, name) in &model.nodes {
            write(
                &tx,
                &Change::SetNode {
                    id: *id,
                    name: name.clone(),
                },
                &model,
            )?;
        }
        for resource in model.resources.values() {
            write(&tx, &Change::CreateResource(resource.clone()), &model)?;
        }
        for (node, parent, child) in &model.dependencies {
            let change = Change::CreateDependency {
                node: *node,
                parent: parent.clone(),
                child: child.clone(),
            };
            write(&tx, &change, &model)?;
        }
        for (a, b) in &model.equivalencies {
            let change = Change::CreateEquivalency {
                a: a.clone(),
                b: b.clone(),
            };
            write(&tx, &change, &model)?;
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'generation'",
            params![model.generation.to_string()],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)?;
        self.model = model;
        Ok(())
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), LcdError> {
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
    Ok(())
}

fn load(conn: &Connection) -> Result<Model, LcdError> {
    let mut model = Model::default();
    let generation: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'generation'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(storage)?;
    model.generation = generation.and_then(|g| g.parse().ok()).unwrap_or(0);
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
    let mut resources = conn
        .prepare("SELECT node, tag, id, app, rtype, state, init, flags, info, props, priority FROM resources")
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
                ],
                row.get::<_, u16>(10)?,
            ))
        })
        .map_err(storage)?;
    for row in rows {
        let (place, [id, app, rtype, state, init, flags, info, props], priority) =
            row.map_err(storage)?;
        let props: BTreeMap<String, String> = serde_json::from_str(&props)
            .map_err(|e| LcdError::Storage(format!("properties of {place} are damaged: {e}")))?;
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
    Ok(model)
}

/// Writes the rows `change` touched, as they are in `after`.
fn write(tx: &Transaction<'_>, change: &Change, after: &Model) -> Result<(), LcdError> {
    let upsert = |place: &Place| -> Result<(), LcdError> {
        let r = after.resource(place)?;
        let flags: Vec<&str> = r.flags.iter().map(String::as_str).collect();
        let props = serde_json::to_string(&r.props).map_err(|e| {
            LcdError::Storage(format!("cannot store the properties of {place}: {e}"))
        })?;
        tx.execute(
            "INSERT INTO resources (node, tag, id, app, rtype, state, init, flags, info, props, priority)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (node, tag) DO UPDATE SET id = ?3, app = ?4, rtype = ?5, state = ?6,
                 init = ?7, flags = ?8, info = ?9, props = ?10, priority = ?11",
            params![
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
                r.priority
            ],
        )
        .map_err(storage)?;
        Ok(())
    };
    match change {
        Change::SetNode { id, name } => {
            tx.execute(
                "INSERT INTO nodes (id, name) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET name = ?2",
                params![id, name],
            )
            .map_err(storage)?;
        }
        Change::CreateResource(r) => upsert(&r.place)?,
        Change::SetState { place, .. } | Change::SetInit { place, .. } => upsert(place)?,
        Change::RemoveResource(place) => {
            tx.execute(
                "DELETE FROM resources WHERE node = ?1 AND tag = ?2",
                params![place.node, place.tag],
            )
            .map_err(storage)?;
        }
        Change::CreateDependency {
            node,
            parent,
            child,
        } => {
            tx.execute(
                "INSERT INTO dependencies (node, parent, child) VALUES (?1, ?2, ?3)",
                params![node, parent, child],
            )
            .map_err(storage)?;
        }
        Change::RemoveDependency {
            node,
            parent,
            child,
        } => {
            tx.execute(
                "DELETE FROM dependencies WHERE node = ?1 AND parent = ?2 AND child = ?3",
                params![node, parent, child],
            )
            .map_err(storage)?;
        }
        Change::CreateEquivalency { a, b } | Change::RemoveEquivalency { a, b } => {
            let (a, b) = if a <= b { (a, b) } else { (b, a) };
            let sql = if matches!(change, Change::CreateEquivalency { .. }) {
                "INSERT INTO equivalencies (node_a, tag_a, node_b, tag_b) VALUES (?1, ?2, ?3, ?4)"
            } else {
                "DELETE FROM equivalencies WHERE node_a = ?1 AND tag_a = ?2 AND node_b = ?3 AND tag_b = ?4"
            };
            tx.execute(sql, params![a.node, a.tag, b.node, b.tag])
                .map_err(storage)?;
        }
        Change::SetPriority { place, .. } => {
            for tag in after.hierarchy(place) {
                upsert(&Place {
                    node: place.node,
                    tag,
                })?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
        }
    }

    #[test]
    fn changes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lcd.sqlite");
        let mut lcd = Lcd::open(&path).unwrap();
        lcd.apply(&Change::SetNode {
            id: 1,
            name: "alpha".into(),
        })
        .unwrap();
        lcd.apply(&Change::CreateResource(resource("web"))).unwrap();
        lcd.apply(&Change::CreateResource(resource("data")))
            .unwrap();
        lcd.apply(&Change::CreateDependency {
            node: 1,
            parent: "web".into(),
            child: "data".into(),
        })
        .unwrap();
        let generation = lcd
            .apply(&Change::SetPriority {
                place: resource("web").place,
                priority: 7,
            })
            .unwrap();
        assert_eq!(generation, 5);
        let before = lcd.model().clone();
        drop(lcd);
        let lcd = Lcd::open(&path).unwrap();
        assert_eq!(*lcd.model(), before);
        assert_eq!(lcd.model().resources[&resource("data").place].priority, 7);
    }

    #[test]
    fn a_refused_change_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lcd.sqlite");
        let mut lcd = Lcd::open(&path).unwrap();
        lcd.apply(&Change::CreateResource(resource("web"))).unwrap();
        assert!(lcd.apply(&Change::CreateResource(resource("web"))).is_err());
        drop(lcd);
        assert_eq!(Lcd::open(&path).unwrap().model().generation, 1);
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
