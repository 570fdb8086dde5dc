//! The SQLite index: the only module that speaks SQL. It opens the database (WAL, busy
//! timeout, synchronous level to match the durability setting) and applies the embedded
//! migrations; every query is a method of [`Db`], one file per table family, returning typed
//! rows. Writes of the running gateway go through one writer thread ([`writer`]); reads use
//! their own connections ([`ReadPool`]), which WAL lets run beside the writer.

pub mod audit;
pub mod commitment;
pub mod instances;
pub mod query;
pub mod queue;
pub mod safety;
pub mod studies;
pub mod verdicts;
pub mod writer;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::config::Durability;

pub use writer::IndexHandle;

/// Embedded migrations, applied in order; `PRAGMA user_version` says how many have run.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_receive",
        include_str!("../../migrations/0001_receive.sql"),
    ),
    (
        "0002_naming",
        include_str!("../../migrations/0002_naming.sql"),
    ),
    (
        "0003_forward",
        include_str!("../../migrations/0003_forward.sql"),
    ),
    (
        "0004_audit",
        include_str!("../../migrations/0004_audit.sql"),
    ),
    (
        "0005_verdict_rows",
        include_str!("../../migrations/0005_verdict_rows.sql"),
    ),
    (
        "0006_file_path_index",
        include_str!("../../migrations/0006_file_path_index.sql"),
    ),
    (
        "0007_sent_as",
        include_str!("../../migrations/0007_sent_as.sql"),
    ),
    (
        "0008_commitment_and_query",
        include_str!("../../migrations/0008_commitment_and_query.sql"),
    ),
    (
        "0009_safety",
        include_str!("../../migrations/0009_safety.sql"),
    ),
    (
        "0010_instance_counts",
        include_str!("../../migrations/0010_instance_counts.sql"),
    ),
];

/// How much of the database a reader maps (SQLite's own limit is about 2 GiB).
const READER_MMAP_BYTES: i64 = 1 << 30;

/// How long a connection waits for another one's lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot create the database folder {path}")]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no database at {0}: has `simgate serve` run with this config?")]
    Missing(PathBuf),
    #[error("database migration {name} failed")]
    Migration {
        name: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database is at schema version {found}, newer than this simgate ({known})")]
    TooNew { found: i64, known: usize },
    #[error("database query failed")]
    Sql(#[from] rusqlite::Error),
    #[error("cannot start a database transaction")]
    Begin(#[source] Arc<rusqlite::Error>),
    #[error("database commit failed")]
    Commit(#[source] Arc<rusqlite::Error>),
    #[error("the index writer has stopped")]
    WriterGone,
    #[error("cannot flush the database log to disk")]
    Flush(#[source] std::io::Error),
    #[error("a database read could not finish")]
    ReadTask(#[source] tokio::task::JoinError),
}

/// An open, migrated database connection.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

impl Store {
    /// The queries, on this connection.
    pub fn db(&self) -> Db<'_> {
        Db::new(&self.conn)
    }
}

/// The queries of the index on one connection: reads anywhere, writes inside the writer
/// thread's transaction (or a test's). Each table family adds its methods in its own file.
pub struct Db<'c> {
    conn: &'c Connection,
    /// Set by writes to the forward queue, so the writer wakes the forwarders after commit.
    queue_touched: Cell<bool>,
}

impl<'c> Db<'c> {
    /// The queries, on a connection of the caller's (a read-only one for `simgate doctor`).
    pub fn new(conn: &'c Connection) -> Self {
        Db {
            conn,
            queue_touched: Cell::new(false),
        }
    }

    /// Whether a write since this `Db` was made changed the forward queue.
    pub fn queue_touched(&self) -> bool {
        self.queue_touched.get()
    }

    fn touch_queue(&self) {
        self.queue_touched.set(true);
    }
}

/// Opens (creating if needed) and migrates the database for the server.
pub fn open(path: &Path, durability: Durability) -> Result<Store, StoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Folder {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    configure(&conn, durability).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    migrate(&conn)?;
    Ok(Store { conn })
}

/// Opens an existing database for the CLI.
pub fn open_existing(path: &Path) -> Result<Store, StoreError> {
    if !path.exists() {
        return Err(StoreError::Missing(path.to_path_buf()));
    }
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(|source| {
            StoreError::Open {
                path: path.to_path_buf(),
                source,
            }
        })?;
    configure(&conn, Durability::Fsync).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    migrate(&conn)?;
    Ok(Store { conn })
}

/// Read-only connections for the HTTP side, opened on demand and kept for the next request.
/// Every read runs on the blocking pool, never on the async workers.
#[derive(Debug)]
pub struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// Connections kept idle; more may be open at a busy moment, and are closed after use.
const IDLE_READERS: usize = 4;

impl ReadPool {
    /// For a database the gateway has opened (and so migrated) already.
    pub fn new(path: PathBuf) -> ReadPool {
        ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `work` on a read-only connection.
    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Db<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || pool.read_blocking(work))
            .await
            .map_err(StoreError::ReadTask)?
    }

    /// Runs `work` on a read-only connection, on this thread (which may block).
    pub fn read_blocking<T>(
        &self,
        work: impl FnOnce(&Db<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.take()?;
        let result = work(&Db::new(&conn));
        self.give_back(conn);
        result
    }

    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            return Ok(conn);
        }
        let open_error = |source| StoreError::Open {
            path: self.path.clone(),
            source,
        };
        let conn = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(open_error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        // A reader that tried to write would be a bug: SQLite refuses it on this connection.
        conn.pragma_update(None, "query_only", "ON")
            .map_err(open_error)?;
        // Readers map the database instead of copying each page out of the OS cache with a
        // read call (a third of a whole-list query's time on a 1.2 GB index), and share those
        // pages with every other reader and the CLI. Readers only: the writer's pages, and so
        // what is acknowledged, go through ordinary writes. An I/O error on a mapped page
        // would end the process instead of failing one query.
        conn.pragma_update(None, "mmap_size", READER_MMAP_BYTES)
            .map_err(open_error)?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < IDLE_READERS
        {
            idle.push(conn);
        }
    }
}

fn configure(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // In WAL mode, FULL syncs the log at every commit (survives power loss); NORMAL only at
    // checkpoints (survives a crash of the process, which is what "os" promises).
    let synchronous = match durability {
        Durability::Fsync => "FULL",
        Durability::Os => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let applied: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if applied as usize > MIGRATIONS.len() {
        return Err(StoreError::TooNew {
            found: applied,
            known: MIGRATIONS.len(),
        });
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let apply = || -> rusqlite::Result<()> {
            // IMMEDIATE: take the write lock first (waiting up to the busy timeout) rather than
            // fail when a read transaction cannot be upgraded.
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let applied = conn
                .execute_batch(sql)
                .and_then(|()| conn.pragma_update(None, "user_version", (index + 1) as i64));
            match applied {
                Ok(()) => conn.execute_batch("COMMIT"),
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    Err(e)
                }
            }
        };
        apply().map_err(|source| StoreError::Migration { name, source })?;
        tracing::info!(migration = name, "applied database migration");
    }
    Ok(())
}

/// Splits a `group_concat` column back into its values.
fn split_list(text: Option<String>) -> Vec<String> {
    text.map(|s| {
        s.split(',')
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// Text values as a JSON array, for `json_each` in SQL (no serde_json here: JSON is the
/// edge's business, and strings need only these escapes).
fn json_array(values: &[impl AsRef<str>]) -> String {
    let mut json = String::from("[");
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push('"');
        for c in value.as_ref().chars() {
            match c {
                '"' => json.push_str("\\\""),
                '\\' => json.push_str("\\\\"),
                c if (c as u32) < 0x20 => json.push_str(&format!("\\u{:04x}", c as u32)),
                c => json.push(c),
            }
        }
        json.push('"');
    }
    json.push(']');
    json
}

/// Splits a multi-valued attribute as the index keeps it (backslash-separated).
fn split_values(text: &str) -> Vec<String> {
    text.split('\\')
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_to_a_fresh_database_and_are_not_reapplied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("simgate.db");
        let store = open(&path, Durability::Fsync).expect("open");
        let conn = &store.conn;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version as usize, MIGRATIONS.len());
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        for table in [
            "instance_replacements",
            "instances",
            "series",
            "studies",
            "study_procedure_codes",
            "nomenclature_sources",
            "nomenclature_names",
            "study_verdicts",
            "study_status_history",
            "study_reasons",
            "forward_queue",
            "audit_log",
            "commitment_requests",
            "commitment_items",
            "study_findings",
            "study_suggestions",
            "study_evidence",
        ] {
            assert!(
                tables.iter().any(|t| t == table),
                "{table} missing from {tables:?}"
            );
        }
        let problems: Vec<String> = conn
            .prepare("PRAGMA foreign_key_check")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert!(problems.is_empty());
        drop(store);
        // Opening again runs nothing new and keeps the version.
        let store = open(&path, Durability::Os).expect("reopen");
        let conn = &store.conn;
        let again: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(again, version);
    }

    #[test]
    fn pragmas_are_in_force_when_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir.path().join("simgate.db"), Durability::Fsync).expect("open");
        let conn = &store.conn;
        let journal: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("journal");
        let busy: i64 = conn
            .pragma_query_value(None, "busy_timeout", |r| r.get(0))
            .expect("busy");
        let synchronous: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .expect("sync");
        let foreign_keys: i64 = conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .expect("fk");
        assert_eq!(journal, "wal");
        assert_eq!(busy, BUSY_TIMEOUT.as_millis() as i64);
        assert_eq!(synchronous, 2, "FULL");
        assert_eq!(foreign_keys, 1);
        let os = open(&dir.path().join("os.db"), Durability::Os).expect("open");
        let os = &os.conn;
        let synchronous: i64 = os
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .expect("sync");
        assert_eq!(synchronous, 1, "NORMAL");
    }

    #[test]
    fn a_database_from_a_newer_simgate_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("simgate.db");
        let store = open(&path, Durability::Os).expect("open");
        store
            .conn
            .pragma_update(None, "user_version", 99)
            .expect("bump");
        drop(store);
        assert!(matches!(
            open(&path, Durability::Os),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn verdicts_stored_as_json_by_an_older_simgate_move_to_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = Connection::open(dir.path().join("simgate.db")).expect("open");
        for (_, sql) in &MIGRATIONS[..4] {
            conn.execute_batch(sql).expect("older migration");
        }
        conn.pragma_update(None, "user_version", 4)
            .expect("version");
        conn.execute_batch(
            r#"INSERT INTO studies (study_instance_uid, first_received_at, last_received_at)
                 VALUES ('1.2', 't', 't');
               INSERT INTO study_verdicts (study_instance_uid, status, findings, suggestions,
                   rt_planning, evidence, evaluated_at)
                 VALUES ('1.2', 'needs-reason',
                   '[{"code":"study-name-nonstandard","subject":"LUNG SIM","detail":"no match"}]',
                   '[{"scheme":"radlex","code":"RPID6008","name":"CT Treatment Planning Complex","score":0.41},
                     {"scheme":"radlex","code":"RPID6010","name":"CT Treatment Planning Simple","score":0.4}]',
                   1, '[{"kind":"planning-name","detail":"SIM"}]', 't');"#,
        )
        .expect("an older verdict");
        migrate(&conn).expect("migrate");
        let naming = Db::new(&conn)
            .study_detail("1.2")
            .expect("detail")
            .expect("study")
            .naming
            .expect("verdict");
        assert_eq!(naming.items.findings[0].subject, "LUNG SIM");
        let codes: Vec<&str> = naming
            .items
            .suggestions
            .iter()
            .map(|s| s.code.as_str())
            .collect();
        assert_eq!(codes, ["RPID6008", "RPID6010"], "order kept");
        assert_eq!(naming.items.suggestions[0].score, 0.41);
        assert_eq!(naming.items.evidence[0].kind, "planning-name");
        assert!(naming.rt_planning);
    }

    #[tokio::test]
    async fn read_pool_connections_refuse_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("simgate.db");
        drop(open(&path, Durability::Os).expect("create"));
        let pool = Arc::new(ReadPool::new(path));
        let write = pool
            .read(|db| {
                Ok(db
                    .conn
                    .execute("DELETE FROM studies", [])
                    .map_err(StoreError::Sql))
            })
            .await
            .expect("read runs");
        assert!(write.is_err(), "a pooled reader wrote");
        assert_eq!(pool.read(|db| db.study_count()).await.expect("read"), 0);
    }
}
