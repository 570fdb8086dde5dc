//! One C-STORE, from its command to its status: the data set bytes are walked and hashed as
//! they arrive ([`scan`](super::scan)), written to the partial file in pieces, made
//! durable ([`spool`](crate::spool)), recorded with its verdict and queue rows
//! ([`Service::record_instance`]), and only then answered with success.
//! Every failure becomes a DIMSE failure status with a reason; nothing fails silently.

use std::net::SocketAddr;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::header::InstanceHeader;
use super::scan::DatasetScanner;
use crate::config::ReloadablePolicy;
use crate::dicom::dimse::Status;
use crate::dicom::part10::PartTenMeta;
use crate::error_chain;
use crate::service::Service;
use crate::spool::{PartialFile, Spool, SpoolError, StoredFile};
use crate::store::instances::{IndexedInstance, RecordOutcome};

/// What the receive path shares across associations.
#[derive(Debug, Clone)]
pub struct ReceiveContext {
    pub spool: Arc<Spool>,
    pub service: Service,
    pub policy: watch::Receiver<Arc<ReloadablePolicy>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Reads for Storage Commitment reports and queries (never the writer).
    pub reads: Arc<crate::store::ReadPool>,
    /// Storage Commitment requests whose report an association is carrying.
    pub claims: Arc<crate::commitment::Claims>,
}

/// Who sent an instance and how.
#[derive(Debug, Clone)]
pub struct Origin {
    pub calling_ae_title: String,
    pub called_ae_title: String,
    pub peer: SocketAddr,
}

/// The identifying fields of a C-STORE request, already checked.
#[derive(Debug, Clone)]
pub struct StoreRequest {
    pub affected_sop_class_uid: String,
    pub affected_sop_instance_uid: String,
    pub transfer_syntax_uid: String,
}

/// The answer to one C-STORE, with what happened for the association's log line.
#[derive(Debug, Clone)]
pub struct StoreResult {
    pub status: Status,
    pub error_comment: Option<String>,
    pub outcome: Option<RecordOutcome>,
    pub data_set_bytes: u64,
}

impl StoreResult {
    fn failure(status: Status, comment: impl Into<String>, data_set_bytes: u64) -> Self {
        Self {
            status,
            error_comment: Some(comment.into()),
            outcome: None,
            data_set_bytes,
        }
    }
}

/// Why an instance is refused, as the sender will read it.
#[derive(Debug, Clone)]
struct Refusal {
    status: Status,
    comment: String,
}

impl Refusal {
    /// The data set itself is wrong: a 0xC000-range status, which senders do not retry.
    fn data(comment: String) -> Refusal {
        Refusal {
            status: Status::CANNOT_UNDERSTAND,
            comment,
        }
    }

    /// Storage or the database failed (full disk, I/O error, permissions, a read-only file
    /// system, a lock held too long): 0xA700, which tells the sender to try again, with the
    /// operating system's or SQLite's own words (the Error Comment holds 64 characters).
    fn storage(error: &(dyn std::error::Error + 'static)) -> Refusal {
        Refusal {
            status: Status::OUT_OF_RESOURCES,
            comment: format!("storage failure: {}", root_cause(error)),
        }
    }
}

/// The innermost cause of an error: the OS error or SQLite's message.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Checks the free-space reserve; `Some(result)` when the instance must be refused.
/// The free space figure is measured every half second by `app`; older than this, the
/// storage is taken as not answering.
const FREE_SPACE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(5);

/// Checks the free-space reserve; `Some(result)` when the instance must be refused. No I/O:
/// reads the figure the free-space monitor keeps.
pub fn check_reserve(context: &ReceiveContext) -> Option<(Status, String)> {
    let reserve = context.policy.borrow().reserve_free_bytes;
    match context.spool.recent_free_bytes(FREE_SPACE_MAX_AGE) {
        Some(free) if free < reserve => Some((
            Status::OUT_OF_RESOURCES,
            format!("free space {free} bytes is below the reserve of {reserve} bytes"),
        )),
        Some(_) => None,
        None => Some((
            Status::OUT_OF_RESOURCES,
            "storage failure: free space not measured for 5 s".to_string(),
        )),
    }
}

/// Data set bytes are collected up to this much before they are written: a typical image
/// (a 512x512 CT slice is 526 KB) reaches the disk in one write with the commit, one hand-off
/// to the blocking pool instead of one per PDV. Larger instances are written in pieces of this
/// size (plus the PDV that completes one) while the rest arrives, so an association holds at
/// most two such pieces (one collecting, one being written) besides its PDU buffer, whatever
/// the instance size.
const WRITE_PIECE: usize = 1 << 20;

/// A Data PDV up to this size is hashed on the association's task as it arrives (about 60 µs
/// for 128 KiB with SHA extensions), overlapping the sender's next PDU; a larger one on the
/// blocking pool, so the async workers never compute for long.
const HASH_INLINE_MAX: usize = 256 << 10;

/// A write of collected bytes under way on the blocking pool; it hands the file back.
type PendingWrite = tokio::task::JoinHandle<Result<PartialFile, SpoolError>>;

/// An instance whose data set is arriving. The bytes are hashed as each Data PDV arrives and
/// collected into pieces of [`WRITE_PIECE`]; a full piece is written to the partial file on
/// the blocking pool while the next one is being received, so disk and network overlap and
/// memory stays bounded whatever the instance size.
#[derive(Debug)]
pub struct InstanceReceiver {
    request: StoreRequest,
    origin: Arc<Origin>,
    context: ReceiveContext,
    scanner: Option<DatasetScanner>,
    /// The first problem found; the rest of the data set is then discarded.
    refused: Option<Refusal>,
    /// Every byte fed so far, in order.
    hasher: Sha256,
    /// Bytes not yet handed to a write.
    piece: Vec<u8>,
    /// The partial file, once a piece has been written (and not while a write holds it).
    file: Option<PartialFile>,
    pending: Option<PendingWrite>,
    bytes: u64,
    started: std::time::Instant,
}

impl InstanceReceiver {
    pub fn new(request: StoreRequest, origin: Arc<Origin>, context: ReceiveContext) -> Self {
        let scanner = DatasetScanner::for_transfer_syntax(&request.transfer_syntax_uid);
        let refused = scanner.is_none().then(|| {
            Refusal::data(format!(
                "transfer syntax {} cannot be stored",
                request.transfer_syntax_uid
            ))
        });
        Self {
            request,
            origin,
            context,
            scanner,
            refused,
            hasher: Sha256::new(),
            piece: Vec::new(),
            file: None,
            pending: None,
            bytes: 0,
            started: std::time::Instant::now(),
        }
    }

    /// Takes the next Data PDV's bytes.
    pub async fn feed(&mut self, data: Vec<u8>) {
        self.bytes += data.len() as u64;
        if self.refused.is_some() {
            return;
        }
        if let Some(scanner) = self.scanner.as_mut()
            && let Err(e) = scanner.feed(&data)
        {
            self.refuse(Refusal::data(e.to_string())).await;
            return;
        }
        let data = if data.len() <= HASH_INLINE_MAX {
            self.hasher.update(&data);
            data
        } else {
            let mut hasher = std::mem::take(&mut self.hasher);
            match tokio::task::spawn_blocking(move || {
                hasher.update(&data);
                (hasher, data)
            })
            .await
            {
                Ok((hasher, data)) => {
                    self.hasher = hasher;
                    data
                }
                Err(e) => {
                    let e = blocking_failed(e);
                    self.refuse(Refusal::storage(&e)).await;
                    return;
                }
            }
        };
        if self.piece.is_empty() {
            if data.len() >= WRITE_PIECE {
                self.piece = data;
            } else {
                // Room for the piece and the PDV that completes it (PDVs of an instance are
                // mostly one size), so it is not grown by doubling.
                self.piece = Vec::with_capacity(WRITE_PIECE + data.len());
                self.piece.extend_from_slice(&data);
            }
        } else {
            self.piece.reserve_exact(data.len());
            self.piece.extend_from_slice(&data);
        }
        if self.piece.len() >= WRITE_PIECE
            && let Err(e) = self.write_piece().await
        {
            tracing::error!(cause = %error_chain(&e), "cannot write an instance");
            self.refuse(Refusal::storage(&e)).await;
        }
    }

    /// Waits for the write under way (usually done by now), then starts writing the collected
    /// piece.
    async fn write_piece(&mut self) -> Result<(), SpoolError> {
        let file = self.settle().await?;
        let piece = std::mem::take(&mut self.piece);
        let spool = Arc::clone(&self.context.spool);
        let meta = self.meta_owned();
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let mut file = match file {
                Some(file) => file,
                None => spool.begin(&meta.as_meta())?,
            };
            file.write(&piece)?;
            Ok(file)
        }));
        Ok(())
    }

    /// Waits for the write under way, if any, and returns the partial file.
    async fn settle(&mut self) -> Result<Option<PartialFile>, SpoolError> {
        if let Some(pending) = self.pending.take() {
            return joined(pending.await).map(Some);
        }
        Ok(self.file.take())
    }

    async fn refuse(&mut self, why: Refusal) {
        self.refused = Some(why);
        self.piece = Vec::new();
        // Dropping the partial file removes it.
        let _ = self.settle().await;
        self.file = None;
    }

    fn meta_owned(&self) -> OwnedMeta {
        OwnedMeta {
            sop_class_uid: self.request.affected_sop_class_uid.clone(),
            sop_instance_uid: self.request.affected_sop_instance_uid.clone(),
            transfer_syntax_uid: self.request.transfer_syntax_uid.clone(),
            source_ae_title: self.origin.calling_ae_title.clone(),
        }
    }

    /// The last Data PDV has arrived: check, store, index, and say how it went.
    pub async fn finish(mut self) -> StoreResult {
        let result = self.complete().await;
        if !result.status.is_success() {
            // A refused instance leaves no partial file behind by the time it is answered.
            let file = self.settle().await.ok().flatten();
            let _ = tokio::task::spawn_blocking(move || drop(file)).await;
        }
        result
    }

    async fn complete(&mut self) -> StoreResult {
        let bytes = self.bytes;
        let received_at = std::time::Instant::now();
        if let Some(refusal) = self.refused.take() {
            return StoreResult::failure(refusal.status, refusal.comment, bytes);
        }
        let header_bytes = match self.scanner.take().map(DatasetScanner::finish) {
            Some(Ok(header)) => header,
            Some(Err(e)) => {
                return StoreResult::failure(
                    Status::CANNOT_UNDERSTAND,
                    format!("malformed data set: {e}"),
                    bytes,
                );
            }
            None => {
                return StoreResult::failure(
                    Status::CANNOT_UNDERSTAND,
                    "data set cannot be walked",
                    bytes,
                );
            }
        };
        let header = match InstanceHeader::parse(&header_bytes, &self.request.transfer_syntax_uid) {
            Ok(header) => header,
            Err(e) => {
                return StoreResult::failure(
                    Status::CANNOT_UNDERSTAND,
                    crate::error_chain(&e),
                    bytes,
                );
            }
        };
        if header.sop_class_uid != self.request.affected_sop_class_uid {
            return StoreResult::failure(
                Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                "SOP Class UID in the data set differs from the command",
                bytes,
            );
        }
        if header.sop_instance_uid != self.request.affected_sop_instance_uid {
            return StoreResult::failure(
                Status::CANNOT_UNDERSTAND,
                "SOP Instance UID in the data set differs from the command",
                bytes,
            );
        }
        if let Some((status, why)) = check_reserve(&self.context) {
            return StoreResult::failure(status, why, bytes);
        }

        let parsed_at = std::time::Instant::now();
        let (stored, content_hash) = match self.persist().await {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(cause = %error_chain(&e), "cannot store an instance");
                let refusal = Refusal::storage(&e);
                return StoreResult::failure(refusal.status, refusal.comment, bytes);
            }
        };
        let instance = IndexedInstance {
            header,
            transfer_syntax_uid: self.request.transfer_syntax_uid.clone(),
            calling_ae_title: self.origin.calling_ae_title.clone(),
            called_ae_title: self.origin.called_ae_title.clone(),
            peer_address: self.origin.peer.to_string(),
            received_at: crate::clock::now_rfc3339(),
            file_size: stored.file_size,
            file_path: stored.relative_path.clone(),
            content_hash: content_hash.clone(),
        };
        let persisted_at = std::time::Instant::now();
        let recorded = self.context.service.record_instance(instance).await;
        self.context.spool.unpin(&content_hash);
        let outcome = match recorded {
            Ok(recorded) => {
                crate::service::report_findings(
                    &self.context.metrics,
                    &recorded.study_instance_uid,
                    &recorded.series_instance_uid,
                    &recorded.findings,
                );
                if !recorded.held_for.is_empty() {
                    tracing::warn!(
                        sop_instance_uid = %self.request.affected_sop_instance_uid,
                        destinations = %recorded.held_for.join(", "),
                        "instance held by the safety gate: an admin releases or rejects it"
                    );
                }
                recorded.outcome
            }
            Err(e) => {
                tracing::error!(cause = %error_chain(&e), "cannot index an instance");
                let refusal = Refusal::storage(&e);
                return StoreResult::failure(refusal.status, refusal.comment, bytes);
            }
        };
        if let RecordOutcome::Replaced { old_file_path } = &outcome {
            tracing::info!(
                sop_instance_uid = %self.request.affected_sop_instance_uid,
                "re-sent instance with different content replaced the stored one"
            );
            // The index must say "replaced" on disk before the old file goes: else a power
            // failure could leave a row pointing at nothing.
            match self.context.service.flush_index().await {
                Ok(_) => {
                    let spool = Arc::clone(&self.context.spool);
                    let old = old_file_path.clone();
                    if let Err(e) = run_blocking(move || spool.remove(&old)).await {
                        tracing::warn!(cause = %error_chain(&e), "replaced file could not be removed");
                    }
                }
                Err(e) => {
                    tracing::warn!(cause = %error_chain(&e), "replaced file left in place: the index could not be flushed (the start-up reconciliation removes it)")
                }
            }
        }
        self.context.metrics.store_latency(received_at.elapsed());
        tracing::debug!(
            receive_us = (received_at - self.started).as_micros() as u64,
            parse_us = (parsed_at - received_at).as_micros() as u64,
            persist_us = (persisted_at - parsed_at).as_micros() as u64,
            index_us = persisted_at.elapsed().as_micros() as u64,
            "instance stored"
        );
        StoreResult {
            status: Status::SUCCESS,
            error_comment: None,
            outcome: Some(outcome),
            data_set_bytes: bytes,
        }
    }

    /// Waits for the last write, writes the rest, flushes and renames the file into place:
    /// for an instance within one piece, the only hand-off to the blocking pool.
    async fn persist(&mut self) -> Result<(StoredFile, String), SpoolError> {
        let spool = Arc::clone(&self.context.spool);
        let meta = self.meta_owned();
        let file = self.settle().await?;
        let rest = std::mem::take(&mut self.piece);
        let content_hash = hex::encode(std::mem::take(&mut self.hasher).finalize());
        run_blocking(move || {
            // No piece written yet (or an empty data set): the file starts here.
            let mut file = match file {
                Some(file) => file,
                None => spool.begin(&meta.as_meta())?,
            };
            file.write(&rest)?;
            let stored = spool.commit(file, &content_hash)?;
            Ok((stored, content_hash))
        })
        .await
    }
}

#[derive(Debug, Clone)]
struct OwnedMeta {
    sop_class_uid: String,
    sop_instance_uid: String,
    transfer_syntax_uid: String,
    source_ae_title: String,
}

impl OwnedMeta {
    fn as_meta(&self) -> PartTenMeta<'_> {
        PartTenMeta {
            sop_class_uid: &self.sop_class_uid,
            sop_instance_uid: &self.sop_instance_uid,
            transfer_syntax_uid: &self.transfer_syntax_uid,
            source_ae_title: &self.source_ae_title,
        }
    }
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    joined(tokio::task::spawn_blocking(work).await)
}

fn joined<T>(
    result: Result<Result<T, SpoolError>, tokio::task::JoinError>,
) -> Result<T, SpoolError> {
    result.map_err(blocking_failed)?
}

/// Blocking work that did not finish (a panic, or the runtime shutting down).
fn blocking_failed(join: tokio::task::JoinError) -> SpoolError {
    SpoolError::Io {
        action: "finish blocking work for",
        path: "spool".into(),
        source: std::io::Error::other(join.to_string()),
    }
}
