//! The index writer: one thread owns the write connection and records instances in batches.
//! Requests that arrive while a commit is under way are committed together (group commit),
//! so parallel associations share one WAL sync; each request still gets its own outcome,
//! because each runs in its own savepoint.

use std::thread;

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use tokio::sync::watch;

use super::StoreError;
use crate::config::DestinationConfig;
use crate::header::{CodeItem, InstanceHeader};
use crate::naming::Naming;

/// At most this many instances go into one transaction.
const MAX_BATCH: usize = 256;

/// Everything the index records about one stored instance.
#[derive(Debug, Clone)]
pub struct IndexedInstance {
    pub header: InstanceHeader,
    pub transfer_syntax_uid: String,
    pub calling_ae_title: String,
    pub called_ae_title: String,
    pub peer_address: String,
    /// RFC 3339 UTC.
    pub received_at: String,
    pub file_size: u64,
    pub file_path: String,
    pub content_hash: String,
}

/// What recording an instance did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// A SOP Instance UID not seen before.
    New,
    /// The same SOP Instance UID with the same bytes: nothing changed.
    Identical,
    /// The same SOP Instance UID with different bytes: the index now points at the new file;
    /// the old file (this path) is no longer referenced.
    Replaced { old_file_path: String },
}

/// What to do once the batch transaction has committed (or failed to).
type Finish = Box<dyn FnOnce(Option<Arc<rusqlite::Error>>) + Send>;

/// Work for the writer thread.
enum Request {
    Record {
        instance: Box<IndexedInstance>,
        reply: oneshot::Sender<Result<RecordOutcome, StoreError>>,
    },
    /// Any other write (forward queue updates, ...): runs inside the batch transaction and
    /// returns how to answer once the transaction has committed.
    Execute(Box<dyn FnOnce(&Connection) -> Finish + Send>),
}

/// What the writer thread works with besides the connection.
pub struct WriterContext {
    /// With naming rules, each instance that brings new evidence (a new study or series, new
    /// procedure codes, respiratory attributes) re-evaluates its study's verdict in the same
    /// transaction.
    pub naming: Option<watch::Receiver<Arc<Naming>>>,
    /// Each new or replaced instance is queued for every destination that accepts it.
    pub destinations: Arc<Vec<DestinationConfig>>,
    /// Bumped after a commit that queued something, to wake the forwarders.
    pub queue_changed: watch::Sender<u64>,
}

impl WriterContext {
    /// No naming, no destinations: only the index.
    pub fn index_only() -> Self {
        Self {
            naming: None,
            destinations: Arc::new(Vec::new()),
            queue_changed: watch::channel(0).0,
        }
    }
}

/// The async side's handle on the writer thread. Cloning it is cheap.
#[derive(Debug, Clone)]
pub struct IndexHandle {
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Record { instance, .. } => {
                write!(f, "Record({})", instance.header.sop_instance_uid)
            }
            Request::Execute(_) => f.write_str("Execute"),
        }
    }
}

impl IndexHandle {
    /// Starts the writer thread on an open, migrated connection. The thread ends when every
    /// handle is dropped.
    pub fn spawn(
        conn: Connection,
        queue_capacity: usize,
        context: WriterContext,
    ) -> std::io::Result<(IndexHandle, thread::JoinHandle<()>)> {
        let (requests, receiver) = mpsc::channel(queue_capacity.max(1));
        let thread = thread::Builder::new()
            .name("index-writer".into())
            .spawn(move || run(conn, receiver, context))?;
        Ok((IndexHandle { requests }, thread))
    }

    /// Records one instance; returns once the transaction holding it has committed.
    pub async fn record(&self, instance: IndexedInstance) -> Result<RecordOutcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.requests
            .send(Request::Record {
                instance: Box::new(instance),
                reply,
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        outcome.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Runs a write on the writer thread; returns its result once it has committed.
    pub async fn execute<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let job = move |conn: &Connection| -> Finish {
            let result = with_savepoint(conn, work);
            Box::new(move |commit_error: Option<Arc<rusqlite::Error>>| {
                let result = match commit_error {
                    Some(e) => Err(StoreError::Commit(e)),
                    None => result,
                };
                let _ = reply.send(result);
            })
        };
        self.requests
            .send(Request::Execute(Box::new(job)))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        outcome.await.map_err(|_| StoreError::WriterGone)?
    }
}

/// Runs `work` in a savepoint of the batch transaction: its failure undoes only its own writes.
fn with_savepoint<T>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("SAVEPOINT job")?;
    match work(conn) {
        Ok(value) => {
            conn.execute_batch("RELEASE job")?;
            Ok(value)
        }
        Err(e) => {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(e)
        }
    }
}

fn run(mut conn: Connection, mut receiver: mpsc::Receiver<Request>, context: WriterContext) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let naming = context.naming.as_ref().map(|n| Arc::clone(&n.borrow()));
        let queued = run_batch(
            &mut conn,
            &mut batch,
            naming.as_deref(),
            &context.destinations,
        );
        if queued {
            context.queue_changed.send_modify(|version| *version += 1);
        }
    }
}

/// Runs one batch in one transaction and answers every request; true when rows were queued.
fn run_batch(
    conn: &mut Connection,
    batch: &mut Vec<Request>,
    naming: Option<&Naming>,
    destinations: &[DestinationConfig],
) -> bool {
    let mut tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            finish_all(
                batch.drain(..).map(Pending::Unstarted).collect(),
                Some(Arc::new(e)),
            );
            return false;
        }
    };
    let mut pending = Vec::with_capacity(batch.len());
    let mut queued = false;
    for request in batch.drain(..) {
        match request {
            Request::Record { instance, reply } => {
                let result = (|| -> Result<RecordOutcome, StoreError> {
                    let savepoint = tx.savepoint()?;
                    let (outcome, new_evidence) = record(&savepoint, &instance)?;
                    if let (Some(naming), Some(cause)) = (naming, new_evidence) {
                        super::naming::refresh_verdict(
                            &savepoint,
                            naming,
                            &instance.header.study_instance_uid,
                            &cause,
                            &instance.received_at,
                        )?;
                    }
                    if outcome != RecordOutcome::Identical
                        && super::forward::enqueue(&savepoint, destinations, &instance)? > 0
                    {
                        queued = true;
                    }
                    savepoint.commit()?;
                    Ok(outcome)
                })();
                pending.push(Pending::Recorded(reply, result));
            }
            Request::Execute(job) => {
                queued = true; // queue actions (retry, forward) may have made rows due
                pending.push(Pending::Executed(job(&tx)));
            }
        }
    }
    match tx.commit() {
        Ok(()) => {
            finish_all(pending, None);
            queued
        }
        Err(e) => {
            tracing::error!(cause = %e, requests = pending.len(), "index transaction failed");
            finish_all(pending, Some(Arc::new(e)));
            false
        }
    }
}

// Lives only for one batch; boxing the result would cost an allocation per instance.
#[allow(clippy::large_enum_variant)]
enum Pending {
    Unstarted(Request),
    Recorded(
        oneshot::Sender<Result<RecordOutcome, StoreError>>,
        Result<RecordOutcome, StoreError>,
    ),
    Executed(Finish),
}

fn finish_all(pending: Vec<Pending>, commit_error: Option<Arc<rusqlite::Error>>) {
    for item in pending {
        // A requester may have gone (association aborted): nothing to tell then.
        match item {
            Pending::Recorded(reply, result) => {
                let _ = reply.send(match &commit_error {
                    Some(e) => Err(StoreError::Commit(Arc::clone(e))),
                    None => result,
                });
            }
            Pending::Executed(finish) => finish(commit_error.clone()),
            Pending::Unstarted(Request::Record { reply, .. }) => {
                let e = commit_error.clone().expect("unstarted only on failure");
                let _ = reply.send(Err(StoreError::Commit(e)));
            }
            Pending::Unstarted(Request::Execute(_)) => {
                // Dropping the job drops its reply sender: the caller sees WriterGone.
            }
        }
    }
}

/// Records one instance; also says what new evidence it brought for the study's verdict.
fn record(
    tx: &Connection,
    instance: &IndexedInstance,
) -> rusqlite::Result<(RecordOutcome, Option<String>)> {
    let h = &instance.header;
    let previous: Option<(String, String)> = tx
        .prepare_cached(
            "SELECT content_hash, file_path FROM instances WHERE sop_instance_uid = ?1",
        )?
        .query_row([&h.sop_instance_uid], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    if let Some((hash, _)) = &previous
        && *hash == instance.content_hash
    {
        // The re-send put the file back if retention had removed it.
        tx.prepare_cached(
            "UPDATE instances SET file_deleted_at = NULL WHERE sop_instance_uid = ?1 AND file_deleted_at IS NOT NULL",
        )?
        .execute([&h.sop_instance_uid])?;
        return Ok((RecordOutcome::Identical, None));
    }
    let study_known = tx
        .prepare_cached("SELECT 1 FROM studies WHERE study_instance_uid = ?1")?
        .query_row([&h.study_instance_uid], |_| Ok(()))
        .optional()?
        .is_some();
    let series_respiratory: Option<bool> = tx
        .prepare_cached("SELECT respiratory_attributes FROM series WHERE series_instance_uid = ?1")?
        .query_row([&h.series_instance_uid], |r| Ok(r.get::<_, i64>(0)? != 0))
        .optional()?;
    let mut new_evidence = match (study_known, series_respiratory) {
        (false, _) => Some("first instance of the study".to_string()),
        (true, None) => Some(format!("new series {:?}", h.series_description)),
        (true, Some(false)) if h.respiratory_attributes => {
            Some("respiratory attributes".to_string())
        }
        _ => None,
    };

    tx.prepare_cached(
        "INSERT INTO studies (study_instance_uid, patient_id, patient_name, accession_number,
             study_date, study_time, study_description, requested_procedure_description,
             first_received_at, last_received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
         ON CONFLICT (study_instance_uid) DO UPDATE SET
             last_received_at = excluded.last_received_at,
             patient_id = coalesce(nullif(patient_id, ''), excluded.patient_id),
             patient_name = coalesce(nullif(patient_name, ''), excluded.patient_name),
             accession_number = coalesce(nullif(accession_number, ''), excluded.accession_number),
             study_date = coalesce(nullif(study_date, ''), excluded.study_date),
             study_time = coalesce(nullif(study_time, ''), excluded.study_time),
             study_description = coalesce(nullif(study_description, ''), excluded.study_description),
             requested_procedure_description = coalesce(nullif(requested_procedure_description, ''),
                 excluded.requested_procedure_description)",
    )?
    .execute(params![
        h.study_instance_uid,
        h.patient_id,
        h.patient_name,
        h.accession_number,
        h.study_date,
        h.study_time,
        h.study_description,
        h.requested_procedure_description,
        instance.received_at,
    ])?;
    insert_codes(tx, &h.study_instance_uid, "procedure", &h.procedure_codes)?;
    insert_codes(
        tx,
        &h.study_instance_uid,
        "requested_procedure",
        &h.requested_procedure_codes,
    )?;

    tx.prepare_cached(
        "INSERT INTO series (series_instance_uid, study_instance_uid, modality, series_number,
             series_description, protocol_name, station_name, manufacturer, manufacturer_model_name,
             frame_of_reference_uid, first_received_at, last_received_at, respiratory_attributes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12)
         ON CONFLICT (series_instance_uid) DO UPDATE SET
             last_received_at = excluded.last_received_at,
             respiratory_attributes = max(respiratory_attributes, excluded.respiratory_attributes),
             series_description = coalesce(nullif(series_description, ''), excluded.series_description),
             protocol_name = coalesce(nullif(protocol_name, ''), excluded.protocol_name),
             station_name = coalesce(nullif(station_name, ''), excluded.station_name),
             frame_of_reference_uid = coalesce(nullif(frame_of_reference_uid, ''), excluded.frame_of_reference_uid)",
    )?
    .execute(params![
        h.series_instance_uid,
        h.study_instance_uid,
        h.modality,
        h.series_number,
        h.series_description,
        h.protocol_name,
        h.station_name,
        h.manufacturer,
        h.manufacturer_model_name,
        h.frame_of_reference_uid,
        instance.received_at,
        h.respiratory_attributes,
    ])?;

    let image_type = h.image_type.join("\\");
    let position = h
        .image_position_patient
        .map(|[x, y, z]| format!("{x}\\{y}\\{z}"))
        .unwrap_or_default();
    tx.prepare_cached(
        "INSERT INTO instances (sop_instance_uid, series_instance_uid, sop_class_uid, instance_number,
             image_type, image_position_patient, frame_of_reference_uid, image_comments,
             transfer_syntax_uid, calling_ae_title, called_ae_title, peer_address, received_at,
             file_size, file_path, content_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
         ON CONFLICT (sop_instance_uid) DO UPDATE SET
             series_instance_uid = excluded.series_instance_uid,
             sop_class_uid = excluded.sop_class_uid,
             instance_number = excluded.instance_number,
             image_type = excluded.image_type,
             image_position_patient = excluded.image_position_patient,
             frame_of_reference_uid = excluded.frame_of_reference_uid,
             image_comments = excluded.image_comments,
             transfer_syntax_uid = excluded.transfer_syntax_uid,
             calling_ae_title = excluded.calling_ae_title,
             called_ae_title = excluded.called_ae_title,
             peer_address = excluded.peer_address,
             received_at = excluded.received_at,
             file_size = excluded.file_size,
             file_path = excluded.file_path,
             content_hash = excluded.content_hash",
    )?
    .execute(params![
        h.sop_instance_uid,
        h.series_instance_uid,
        h.sop_class_uid,
        h.instance_number,
        image_type,
        position,
        h.frame_of_reference_uid,
        h.image_comments,
        instance.transfer_syntax_uid,
        instance.calling_ae_title,
        instance.called_ae_title,
        instance.peer_address,
        instance.received_at,
        instance.file_size as i64,
        instance.file_path,
        instance.content_hash,
    ])?;

    let outcome = match previous {
        None => RecordOutcome::New,
        Some((old_hash, old_file_path)) => {
            tx.prepare_cached(
                "INSERT INTO instance_replacements (sop_instance_uid, replaced_at, old_content_hash,
                     new_content_hash, calling_ae_title, peer_address)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                h.sop_instance_uid,
                instance.received_at,
                old_hash,
                instance.content_hash,
                instance.calling_ae_title,
                instance.peer_address,
            ])?;
            // A replaced instance may carry different names: judge the study again.
            new_evidence.get_or_insert_with(|| "instance replaced".to_string());
            RecordOutcome::Replaced { old_file_path }
        }
    };
    Ok((outcome, new_evidence))
}

/// Inserts code items not yet recorded; returns how many were new.
fn insert_codes(
    tx: &Connection,
    study: &str,
    sequence: &str,
    codes: &[CodeItem],
) -> rusqlite::Result<usize> {
    if codes.is_empty() {
        return Ok(0);
    }
    let mut added = 0;
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO study_procedure_codes
             (study_instance_uid, sequence, code_value, coding_scheme_designator, code_meaning)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for code in codes {
        added += stmt.execute(params![
            study,
            sequence,
            code.code_value,
            code.coding_scheme_designator,
            code.code_meaning
        ])?;
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;

    fn instance(sop: &str, hash: &str) -> IndexedInstance {
        IndexedInstance {
            header: InstanceHeader {
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                sop_instance_uid: sop.into(),
                study_instance_uid: "1.2.3".into(),
                series_instance_uid: "1.2.3.4".into(),
                study_description: "CT SIM".into(),
                procedure_codes: vec![CodeItem {
                    code_value: "RPID6010".into(),
                    coding_scheme_designator: "RADLEX".into(),
                    code_meaning: "CT Treatment Planning Simple".into(),
                }],
                ..InstanceHeader::default()
            },
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            calling_ae_title: "CTSIM".into(),
            called_ae_title: "SIMGATE".into(),
            peer_address: "127.0.0.1:5000".into(),
            received_at: "2026-11-29T10:00:00Z".into(),
            file_size: 10,
            file_path: format!("spool/{}/{hash}.dcm", &hash[..2]),
            content_hash: hash.into(),
        }
    }

    #[tokio::test]
    async fn new_identical_and_replaced_instances_are_told_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn =
            super::super::open(&dir.path().join("simgate.db"), Durability::Os).expect("open");
        let (index, thread) =
            IndexHandle::spawn(conn, 8, WriterContext::index_only()).expect("spawn");
        assert_eq!(
            index
                .record(instance("1.2.3.4.1", "aa11"))
                .await
                .expect("record"),
            RecordOutcome::New
        );
        assert_eq!(
            index
                .record(instance("1.2.3.4.1", "aa11"))
                .await
                .expect("record"),
            RecordOutcome::Identical
        );
        assert_eq!(
            index
                .record(instance("1.2.3.4.1", "bb22"))
                .await
                .expect("record"),
            RecordOutcome::Replaced {
                old_file_path: "spool/aa/aa11.dcm".into()
            }
        );
        drop(index);
        thread.join().expect("join");
        let conn = super::super::open_existing(&dir.path().join("simgate.db")).expect("open");
        let rows = super::super::instances(&conn).expect("rows");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].content_hash, "bb22");
        let replacements: i64 = conn
            .query_row("SELECT count(*) FROM instance_replacements", [], |r| {
                r.get(0)
            })
            .expect("count");
        assert_eq!(replacements, 1);
        let codes: i64 = conn
            .query_row("SELECT count(*) FROM study_procedure_codes", [], |r| {
                r.get(0)
            })
            .expect("count");
        assert_eq!(codes, 1, "the same code from every instance is kept once");
    }
}
