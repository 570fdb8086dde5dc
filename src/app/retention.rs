//! Retention: deletes spool files that every destination has, once `storage.retention` has
//! passed since they were received; the index rows stay. Sweeps every minute (more often for
//! a short retention).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error_chain;
use crate::spool::Spool;
use crate::store::IndexHandle;

/// Files looked at per sweep.
const SWEEP: usize = 1000;

pub async fn run(
    spool: Arc<Spool>,
    index: IndexHandle,
    keep: Duration,
    shutdown: CancellationToken,
) {
    let every = (keep / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let cutoff = crate::clock::rfc3339_before(keep);
        let expired = match index
            .execute(move |db| db.expired_files(&cutoff, SWEEP))
            .await
        {
            Ok(expired) => expired,
            Err(e) => {
                tracing::error!(cause = %error_chain(&e), "retention: cannot list expired files");
                continue;
            }
        };
        for file in expired {
            let remover = Arc::clone(&spool);
            let path = file.file_path.clone();
            match tokio::task::spawn_blocking(move || remover.remove(&path)).await {
                // Left for now: an instance being recorded relies on it.
                Ok(Ok(false)) => {}
                Ok(Ok(true)) => {
                    let now = crate::clock::now_rfc3339();
                    let uid = file.sop_instance_uid;
                    if let Err(e) = index
                        .execute(move |db| db.mark_file_deleted(&uid, &now))
                        .await
                    {
                        tracing::warn!(cause = %error_chain(&e), "retention: cannot record a removed file");
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(cause = %error_chain(&e), "retention: cannot remove a file")
                }
                Err(e) => tracing::warn!(cause = %e, "retention task failed"),
            }
        }
    }
}
