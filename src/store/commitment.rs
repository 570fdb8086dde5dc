//! The Storage Commitment table family: requests as they arrived (transaction, requester,
//! referenced instances), kept until their N-EVENT-REPORT is answered; and what the index
//! knows of each referenced instance when the report is made.

use rusqlite::{OptionalExtension, params};

use super::{Db, StoreError};

/// A request to store, as N-ACTION brought it.
#[derive(Debug, Clone)]
pub struct NewCommitment {
    pub transaction_uid: String,
    pub calling_ae_title: String,
    pub peer_address: String,
    /// (Referenced SOP Class UID, Referenced SOP Instance UID), in request order.
    pub items: Vec<(String, String)>,
}

/// A request whose report has not been answered yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCommitment {
    pub id: i64,
    pub transaction_uid: String,
    pub calling_ae_title: String,
    pub attempts: i64,
    pub items: Vec<(String, String)>,
}

/// What the index holds of one referenced instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldInstance {
    pub sop_class_uid: String,
    /// Retention removed the spool file.
    pub file_deleted: bool,
    /// (destination, queue state) of each queue row.
    pub deliveries: Vec<(String, String)>,
}

impl Db<'_> {
    /// Records a request; its report is due at `due_at`.
    pub fn insert_commitment(
        &self,
        request: &NewCommitment,
        received_at: &str,
        due_at: &str,
    ) -> Result<i64, StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO commitment_requests (transaction_uid, calling_ae_title, peer_address,
                     received_at, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                request.transaction_uid,
                request.calling_ae_title,
                request.peer_address,
                received_at,
                due_at
            ])?;
        let id = self.conn.last_insert_rowid();
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO commitment_items (request_id, position, sop_class_uid, sop_instance_uid)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (position, (class, instance)) in request.items.iter().enumerate() {
            insert.execute(params![id, position as i64, class, instance])?;
        }
        Ok(id)
    }

    /// One request, if it is still pending.
    pub fn pending_commitment(&self, id: i64) -> Result<Option<PendingCommitment>, StoreError> {
        let head = self
            .conn
            .prepare_cached(
                "SELECT id, transaction_uid, calling_ae_title, attempts FROM commitment_requests
                 WHERE id = ?1 AND state = 'pending'",
            )?
            .query_row([id], |r| {
                Ok(PendingCommitment {
                    id: r.get(0)?,
                    transaction_uid: r.get(1)?,
                    calling_ae_title: r.get(2)?,
                    attempts: r.get(3)?,
                    items: Vec::new(),
                })
            })
            .optional()?;
        let Some(mut request) = head else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT sop_class_uid, sop_instance_uid FROM commitment_items
             WHERE request_id = ?1 ORDER BY position",
        )?;
        request.items = stmt
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(Some(request))
    }

    /// Ids of pending requests whose next attempt is due, oldest first.
    pub fn due_commitments(&self, now: &str, limit: usize) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM commitment_requests
             WHERE state = 'pending' AND next_attempt_at <= ?1 ORDER BY id LIMIT ?2",
        )?;
        let ids = stmt
            .query_map(params![now, limit as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(ids)
    }

    /// What the index holds of an instance, or `None` when it never arrived.
    pub fn held_instance(
        &self,
        sop_instance_uid: &str,
    ) -> Result<Option<HeldInstance>, StoreError> {
        let head = self
            .conn
            .prepare_cached(
                "SELECT sop_class_uid, file_deleted_at IS NOT NULL FROM instances
                 WHERE sop_instance_uid = ?1",
            )?
            .query_row([sop_instance_uid], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((sop_class_uid, file_deleted)) = head else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT destination, state FROM forward_queue WHERE sop_instance_uid = ?1",
        )?;
        let deliveries = stmt
            .query_map([sop_instance_uid], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(Some(HeldInstance {
            sop_class_uid,
            file_deleted,
            deliveries,
        }))
    }

    /// The report was answered with success.
    pub fn mark_commitment_reported(&self, id: i64, at: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE commitment_requests SET state = 'reported', reported_at = ?2,
                     last_error = '' WHERE id = ?1",
            )?
            .execute(params![id, at])?;
        Ok(())
    }

    /// The report could not be made or delivered now: try again at `next_attempt_at`.
    /// `counts` is false when the report was only not decided yet (instances still on
    /// their way to a destination).
    pub fn defer_commitment(
        &self,
        id: i64,
        error: &str,
        next_attempt_at: &str,
        counts: bool,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE commitment_requests SET last_error = ?2, next_attempt_at = ?3,
                     attempts = attempts + ?4 WHERE id = ?1 AND state = 'pending'",
            )?
            .execute(params![id, error, next_attempt_at, counts as i64])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_kept_until_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::open(&dir.path().join("t.db"), crate::config::Durability::Os)
            .expect("open");
        let db = Db::new(&store.conn);
        let id = db
            .insert_commitment(
                &NewCommitment {
                    transaction_uid: "1.2.3".into(),
                    calling_ae_title: "CTSIM".into(),
                    peer_address: "127.0.0.1:4000".into(),
                    items: vec![("1.2.840.10008.5.1.4.1.1.2".into(), "1.2.3.4".into())],
                },
                "2026-01-01T00:00:00.000Z",
                "2026-01-01T00:00:00.000Z",
            )
            .expect("insert");
        assert_eq!(
            db.due_commitments("2026-01-01T00:00:01.000Z", 10)
                .expect("due"),
            vec![id]
        );
        let pending = db.pending_commitment(id).expect("read").expect("pending");
        assert_eq!(pending.items.len(), 1);
        assert_eq!(db.held_instance("1.2.3.4").expect("held"), None);
        db.defer_commitment(id, "no route", "2026-01-01T00:01:00.000Z", true)
            .expect("defer");
        assert!(
            db.due_commitments("2026-01-01T00:00:01.000Z", 10)
                .expect("due")
                .is_empty()
        );
        db.mark_commitment_reported(id, "2026-01-01T00:02:00.000Z")
            .expect("mark");
        assert_eq!(db.pending_commitment(id).expect("read"), None);
    }
}
