//! Start-up reconciliation of the spool with the index. A file renamed into place whose index
//! transaction never committed (the process was killed between the two) was never
//! acknowledged, but it is a complete instance: it is indexed and queued like a new arrival
//! (at least once). A file whose content does not match its name, or that is not a readable
//! instance, goes to `quarantine/`; a leftover of a replaced instance (its SOP Instance UID
//! now points at another file) is removed. Partial files are removed by `Spool::open`.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::dicom::part10::{self, StoredMeta};
use crate::error_chain;
use crate::scp::header::InstanceHeader;
use crate::scp::scan::DatasetScanner;
use crate::service::Service;
use crate::spool::Spool;
use crate::store::instances::IndexedInstance;
use crate::store::{IndexHandle, StoreError};

/// Spool files looked up in the index per writer job.
const LOOKUP_CHUNK: usize = 1000;

/// What the reconciliation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub files: usize,
    pub indexed: usize,
    pub quarantined: usize,
    pub removed: usize,
}

/// Why a spool file cannot be indexed.
#[derive(Debug, thiserror::Error)]
enum Unusable {
    #[error("cannot read it")]
    Read(#[from] std::io::Error),
    #[error(transparent)]
    Part10(#[from] part10::Part10Error),
    #[error("its data set's SHA-256 is {0}, not its name")]
    HashMismatch(String),
    #[error("transfer syntax {0} cannot be walked")]
    TransferSyntax(String),
    #[error("malformed data set")]
    Scan(#[from] crate::scp::scan::ScanError),
    #[error(transparent)]
    Header(#[from] crate::scp::header::HeaderError),
}

/// Looks at every spool file no instance row points at.
pub async fn run(
    spool: &Arc<Spool>,
    index: &IndexHandle,
    service: &Service,
    called_ae_title: &str,
) -> Result<Reconciled, StoreError> {
    let started = std::time::Instant::now();
    let listed = Arc::clone(spool);
    let files = match tokio::task::spawn_blocking(move || listed.final_files()).await {
        Ok(Ok(files)) => files,
        Ok(Err(e)) => {
            tracing::error!(cause = %error_chain(&e), "reconciliation: cannot list the spool");
            return Ok(Reconciled::default());
        }
        Err(e) => {
            tracing::error!(cause = %e, "reconciliation: cannot list the spool");
            return Ok(Reconciled::default());
        }
    };
    let mut done = Reconciled {
        files: files.len(),
        ..Reconciled::default()
    };
    // One lookup job per chunk of files, not per file: start-up stays quick with a full spool.
    let mut unindexed = Vec::new();
    for chunk in files.chunks(LOOKUP_CHUNK) {
        let chunk = chunk.to_vec();
        unindexed.extend(index.execute(move |db| db.unindexed_files(&chunk)).await?);
    }
    for file in unindexed {
        let reader = Arc::clone(spool);
        let relative = file.clone();
        let read = tokio::task::spawn_blocking(move || read_instance(&reader, &relative))
            .await
            .unwrap_or_else(|e| Err(Unusable::Read(std::io::Error::other(e))));
        let (meta, header, content_hash, file_size, received_at) = match read {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(file = %file, cause = %error_chain(&e), "reconciliation: an unusable spool file goes to quarantine");
                quarantine(spool, &file).await;
                done.quarantined += 1;
                continue;
            }
        };
        let uid = header.sop_instance_uid.clone();
        if let Some(current) = index.execute(move |db| db.instance_file(&uid)).await? {
            tracing::info!(file = %file, current = %current, "reconciliation: removing the leftover of a replaced instance");
            let remover = Arc::clone(spool);
            let path = file.clone();
            let _ = tokio::task::spawn_blocking(move || remover.remove(&path)).await;
            done.removed += 1;
            continue;
        }
        let instance = IndexedInstance {
            header,
            transfer_syntax_uid: meta.transfer_syntax_uid,
            calling_ae_title: meta.source_ae_title,
            called_ae_title: called_ae_title.to_string(),
            peer_address: "reconciled at start".into(),
            received_at,
            file_size,
            file_path: file.clone(),
            content_hash,
        };
        service.record_instance(instance).await?;
        done.indexed += 1;
    }
    tracing::info!(
        files = done.files,
        indexed = done.indexed,
        quarantined = done.quarantined,
        removed = done.removed,
        duration_ms = started.elapsed().as_millis() as u64,
        "spool reconciled with the index"
    );
    Ok(done)
}

async fn quarantine(spool: &Arc<Spool>, file: &str) {
    let mover = Arc::clone(spool);
    let path = file.to_string();
    match tokio::task::spawn_blocking(move || mover.quarantine(&path)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::error!(file = %file, cause = %error_chain(&e), "reconciliation: cannot quarantine")
        }
        Err(e) => tracing::error!(file = %file, cause = %e, "reconciliation: cannot quarantine"),
    }
}

type ReadInstance = (StoredMeta, InstanceHeader, String, u64, String);

/// Reads a stored file as the receive path would have: meta, hash of the data set (it must be
/// the file's name), and the header through the same length-checked walk. Blocking.
fn read_instance(spool: &Spool, relative: &str) -> Result<ReadInstance, Unusable> {
    let path = spool.storage_dir().join(relative);
    let mut file = std::fs::File::open(&path)?;
    let metadata = file.metadata()?;
    let mut head = vec![0u8; (64 * 1024).min(metadata.len() as usize)];
    file.read_exact(&mut head)?;
    let meta = part10::read_meta(&head)?;
    let mut scanner = DatasetScanner::for_transfer_syntax(&meta.transfer_syntax_uid)
        .ok_or_else(|| Unusable::TransferSyntax(meta.transfer_syntax_uid.clone()))?;
    file.seek(SeekFrom::Start(meta.dataset_offset))?;
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 1024 * 1024];
    loop {
        let read = file.read(&mut chunk)?;
        if read == 0 {
            break;
        }
        hasher.update(&chunk[..read]);
        scanner.feed(&chunk[..read])?;
    }
    let content_hash = hex::encode(hasher.finalize());
    if Path::new(relative).file_stem().and_then(|s| s.to_str()) != Some(content_hash.as_str()) {
        return Err(Unusable::HashMismatch(content_hash));
    }
    let header = InstanceHeader::parse(&scanner.finish()?, &meta.transfer_syntax_uid)?;
    let received_at = metadata
        .modified()
        .map(|t| humantime::format_rfc3339_millis(t).to_string())
        .unwrap_or_else(|_| crate::clock::now_rfc3339());
    Ok((meta, header, content_hash, metadata.len(), received_at))
}
