//! The SQLite index: the only module that speaks SQL. It opens the database (WAL, busy
//! timeout, synchronous level to match the durability setting), applies the embedded
//! migrations, records received instances through one writer thread ([`writer`]), and answers
//! the read queries of the CLI.

pub mod audit;
pub mod forward;
pub mod naming;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

use crate::config::Durability;

pub use writer::{IndexHandle, IndexedInstance, RecordOutcome, WriterContext};

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
];

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
    #[error("database commit failed")]
    Commit(#[source] std::sync::Arc<rusqlite::Error>),
    #[error("the index writer has stopped")]
    WriterGone,
}

/// Opens (creating if needed) and migrates the database for the server.
pub fn open(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("cannot create folder {}: {e}", dir.display())),
            ),
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
    Ok(conn)
}

/// Opens an existing database for the CLI's queries.
pub fn open_existing(path: &Path) -> Result<Connection, StoreError> {
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
    Ok(conn)
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
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (index + 1) as i64)?;
            tx.commit()
        };
        apply().map_err(|source| StoreError::Migration { name, source })?;
        tracing::info!(migration = name, "applied database migration");
    }
    Ok(())
}

/// One row of `simgate studies`.
#[derive(Debug, Clone, Serialize)]
pub struct StudySummary {
    pub study_instance_uid: String,
    pub patient_id: String,
    pub patient_name: String,
    pub study_date: String,
    pub study_description: String,
    pub station_names: Vec<String>,
    pub series_count: i64,
    pub instance_count: i64,
    pub first_received_at: String,
    pub last_received_at: String,
}

/// One series in `simgate study UID`.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesSummary {
    pub series_instance_uid: String,
    pub series_number: Option<i64>,
    pub modality: String,
    pub series_description: String,
    pub protocol_name: String,
    pub station_name: String,
    pub manufacturer: String,
    pub manufacturer_model_name: String,
    pub frame_of_reference_uid: String,
    pub instance_count: i64,
    pub bytes: i64,
    pub last_received_at: String,
    /// The series kind of the site's conventions, '' when none.
    pub kind: String,
    /// `conforming`, `nonstandard`, `not-judged`, or '' before any verdict.
    pub verdict: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CodeRow {
    pub sequence: String,
    pub code_value: String,
    pub coding_scheme_designator: String,
    pub code_meaning: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StudyDetail {
    #[serde(flatten)]
    pub summary: StudySummary,
    pub accession_number: String,
    pub study_time: String,
    pub requested_procedure_description: String,
    pub procedure_codes: Vec<CodeRow>,
    pub series: Vec<SeriesSummary>,
    /// The naming verdict, reasons and status history; absent before the first verdict.
    pub naming: Option<naming::StudyNaming>,
}

const STUDY_SUMMARY_SQL: &str = "
    SELECT s.study_instance_uid, s.patient_id, s.patient_name, s.study_date, s.study_description,
           (SELECT group_concat(DISTINCT station_name) FROM series
             WHERE study_instance_uid = s.study_instance_uid AND station_name <> ''),
           (SELECT count(*) FROM series WHERE study_instance_uid = s.study_instance_uid),
           (SELECT count(*) FROM instances i JOIN series se USING (series_instance_uid)
             WHERE se.study_instance_uid = s.study_instance_uid),
           s.first_received_at, s.last_received_at
    FROM studies s";

fn study_summary(row: &rusqlite::Row<'_>) -> rusqlite::Result<StudySummary> {
    let stations: Option<String> = row.get(5)?;
    Ok(StudySummary {
        study_instance_uid: row.get(0)?,
        patient_id: row.get(1)?,
        patient_name: row.get(2)?,
        study_date: row.get(3)?,
        study_description: row.get(4)?,
        station_names: stations
            .map(|s| s.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        series_count: row.get(6)?,
        instance_count: row.get(7)?,
        first_received_at: row.get(8)?,
        last_received_at: row.get(9)?,
    })
}

pub fn study_detail(
    conn: &Connection,
    study_instance_uid: &str,
) -> Result<Option<StudyDetail>, StoreError> {
    let summary = conn
        .query_row(
            &format!("{STUDY_SUMMARY_SQL} WHERE s.study_instance_uid = ?1"),
            [study_instance_uid],
            study_summary,
        )
        .optional()?;
    let Some(summary) = summary else {
        return Ok(None);
    };
    let (accession_number, study_time, requested_procedure_description) = conn.query_row(
        "SELECT accession_number, study_time, requested_procedure_description FROM studies
         WHERE study_instance_uid = ?1",
        [study_instance_uid],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    let mut stmt = conn.prepare(
        "SELECT sequence, code_value, coding_scheme_designator, code_meaning
         FROM study_procedure_codes WHERE study_instance_uid = ?1 ORDER BY rowid",
    )?;
    let procedure_codes = stmt
        .query_map([study_instance_uid], |row| {
            Ok(CodeRow {
                sequence: row.get(0)?,
                code_value: row.get(1)?,
                coding_scheme_designator: row.get(2)?,
                code_meaning: row.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare(
        "SELECT se.series_instance_uid, se.series_number, se.modality, se.series_description,
                se.protocol_name, se.station_name, se.manufacturer, se.manufacturer_model_name,
                se.frame_of_reference_uid, count(i.sop_instance_uid), coalesce(sum(i.file_size), 0),
                se.last_received_at, se.kind, se.verdict
         FROM series se LEFT JOIN instances i USING (series_instance_uid)
         WHERE se.study_instance_uid = ?1
         GROUP BY se.series_instance_uid
         ORDER BY se.series_number IS NULL, se.series_number, se.first_received_at",
    )?;
    let series = stmt
        .query_map(params![study_instance_uid], |row| {
            Ok(SeriesSummary {
                series_instance_uid: row.get(0)?,
                series_number: row.get(1)?,
                modality: row.get(2)?,
                series_description: row.get(3)?,
                protocol_name: row.get(4)?,
                station_name: row.get(5)?,
                manufacturer: row.get(6)?,
                manufacturer_model_name: row.get(7)?,
                frame_of_reference_uid: row.get(8)?,
                instance_count: row.get(9)?,
                bytes: row.get(10)?,
                last_received_at: row.get(11)?,
                kind: row.get(12)?,
                verdict: row.get(13)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(StudyDetail {
        summary,
        accession_number,
        study_time,
        requested_procedure_description,
        procedure_codes,
        series,
        naming: naming::study_naming(conn, study_instance_uid)?,
    }))
}

/// One stored instance, as the tests look it up.
#[cfg(test)]
#[derive(Debug, Clone, Serialize)]
pub struct InstanceRow {
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub file_path: String,
    pub content_hash: String,
    pub file_size: i64,
}

#[cfg(test)]
pub fn instances(conn: &Connection) -> Result<Vec<InstanceRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT sop_instance_uid, series_instance_uid, sop_class_uid, transfer_syntax_uid,
                file_path, content_hash, file_size FROM instances ORDER BY rowid",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok(InstanceRow {
            sop_instance_uid: row.get(0)?,
            series_instance_uid: row.get(1)?,
            sop_class_uid: row.get(2)?,
            transfer_syntax_uid: row.get(3)?,
            file_path: row.get(4)?,
            content_hash: row.get(5)?,
            file_size: row.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_to_a_fresh_database_and_are_not_reapplied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("simgate.db");
        let conn = open(&path, Durability::Fsync).expect("open");
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
        drop(conn);
        // Opening again runs nothing new and keeps the version.
        let conn = open(&path, Durability::Os).expect("reopen");
        let again: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(again, version);
    }

    #[test]
    fn pragmas_are_in_force_when_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open(&dir.path().join("simgate.db"), Durability::Fsync).expect("open");
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
        let synchronous: i64 = os
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .expect("sync");
        assert_eq!(synchronous, 1, "NORMAL");
    }

    #[test]
    fn a_database_from_a_newer_simgate_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("simgate.db");
        let conn = open(&path, Durability::Os).expect("open");
        conn.pragma_update(None, "user_version", 99).expect("bump");
        drop(conn);
        assert!(matches!(
            open(&path, Durability::Os),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }
}
