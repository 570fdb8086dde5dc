//! The append-only audit log of writes made by people: documented reasons, queue actions,
//! imports, from the web pages, the API and the CLI alike.

use rusqlite::params;
use serde::Serialize;

use super::{Db, StoreError};

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub at: String,
    pub user_name: String,
    pub action: String,
    pub study_instance_uid: Option<String>,
    pub detail: String,
    /// The web client's address, or `cli` for a command on the gateway's machine.
    pub remote_address: String,
}

impl Db<'_> {
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO audit_log (at, user_name, action, study_instance_uid, detail, remote_address)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                entry.at,
                entry.user_name,
                entry.action,
                entry.study_instance_uid,
                entry.detail,
                entry.remote_address
            ])?;
        Ok(())
    }

    /// Entries of one study (or all), newest first, at most `limit`.
    pub fn audit_entries(
        &self,
        study: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT at, user_name, action, study_instance_uid, detail, remote_address FROM audit_log
             WHERE (?1 IS NULL OR study_instance_uid = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![study, limit as i64], |r| {
            Ok(AuditEntry {
                at: r.get(0)?,
                user_name: r.get(1)?,
                action: r.get(2)?,
                study_instance_uid: r.get(3)?,
                detail: r.get(4)?,
                remote_address: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
