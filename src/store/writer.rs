//! The index writer: one thread owns the write connection and runs every write of the gateway.
//! Jobs that arrive while a commit is under way are committed together (group commit), so
//! parallel associations share one WAL sync; each job still gets its own outcome, because
//! each runs in its own savepoint. What a job does is the caller's business (see
//! `crate::service`); this file only batches, commits and answers.
//!
//! Relaxed jobs commit without waiting for the disk (`synchronous = NORMAL`); a flush
//! ([`IndexHandle::flush`]) makes every commit so far durable by syncing the WAL file, and
//! the gateway asks for one every second, so a power failure loses at most that much.

use std::sync::Arc;
use std::thread;

use tokio::sync::{mpsc, oneshot, watch};

use super::{Db, Store, StoreError};

/// At most this many jobs go into one transaction.
const MAX_BATCH: usize = 256;

/// What to do once the batch transaction has committed (or failed to).
type Finish = Box<dyn FnOnce(Option<Arc<rusqlite::Error>>) + Send>;

/// A write for the writer thread: runs inside the batch transaction (or learns that none
/// could be started) and returns how to answer once the transaction has committed.
type Work = Box<dyn FnOnce(Result<&Db<'_>, Arc<rusqlite::Error>>) -> Finish + Send>;

/// A write and whether its commit must be flushed to disk before it is answered.
struct Job {
    work: Work,
    /// False for writes whose loss in a power failure costs nothing but a repeat (a forward
    /// outcome: the instance is sent again, as after any crash). A batch of only such jobs
    /// commits without the WAL sync; the next durable commit flushes them with it.
    durable: bool,
}

/// What the writer thread is asked to do.
enum Request {
    Job(Job),
    /// Make every commit so far durable; answered with whether the WAL had to be synced.
    Flush(oneshot::Sender<std::io::Result<bool>>),
}

/// The async side's handle on the writer thread. Cloning it is cheap.
#[derive(Debug, Clone)]
pub struct IndexHandle {
    jobs: mpsc::Sender<Request>,
}

impl IndexHandle {
    /// Starts the writer thread on an open, migrated database. `queue_changed` is bumped
    /// after every commit in which a job wrote to the forward queue. The thread ends when
    /// every handle is dropped.
    pub fn spawn(
        store: Store,
        queue_capacity: usize,
        queue_changed: watch::Sender<u64>,
    ) -> std::io::Result<(IndexHandle, thread::JoinHandle<()>)> {
        let (jobs, receiver) = mpsc::channel(queue_capacity.max(1));
        let thread = thread::Builder::new()
            .name("index-writer".into())
            .spawn(move || run(store, receiver, queue_changed))?;
        Ok((IndexHandle { jobs }, thread))
    }

    /// Runs a write on the writer thread; returns its result once it has committed (and,
    /// with durability "fsync", been flushed). A job that fails undoes only its own writes.
    pub async fn execute<T, E>(
        &self,
        work: impl FnOnce(&Db<'_>) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.submit(work, true).await
    }

    /// As [`execute`](Self::execute), for a write that may be lost in a power failure (never
    /// in a process crash: WAL keeps every commit) without harm, because what follows repeats
    /// it: forward outcomes, rows taken or given back, series checks. A batch of only these
    /// commits without waiting for the disk.
    pub async fn execute_relaxed<T, E>(
        &self,
        work: impl FnOnce(&Db<'_>) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.submit(work, false).await
    }

    /// Returns once every commit made so far is on disk: syncs the WAL file when a relaxed
    /// commit has happened since the last durable one (true), else does nothing (false).
    /// Anything that acts outside the index on a relaxed commit's word (removes a file it
    /// no longer refers to) flushes first.
    pub async fn flush(&self) -> Result<bool, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.jobs
            .send(Request::Flush(reply))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        outcome
            .await
            .map_err(|_| StoreError::WriterGone)?
            .map_err(StoreError::Flush)
    }

    async fn submit<T, E>(
        &self,
        work: impl FnOnce(&Db<'_>) -> Result<T, E> + Send + 'static,
        durable: bool,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, outcome) = oneshot::channel::<Result<T, E>>();
        let job = move |db: Result<&Db<'_>, Arc<rusqlite::Error>>| -> Finish {
            let result = match db {
                Ok(db) => with_savepoint(db, work),
                Err(e) => Err(StoreError::Begin(e).into()),
            };
            Box::new(move |commit_error: Option<Arc<rusqlite::Error>>| {
                let result = match commit_error {
                    Some(e) => Err(StoreError::Commit(e).into()),
                    None => result,
                };
                // The requester may have gone (association aborted): nothing to tell then.
                let _ = reply.send(result);
            })
        };
        self.jobs
            .send(Request::Job(Job {
                work: Box::new(job),
                durable,
            }))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        outcome.await.map_err(|_| StoreError::WriterGone)?
    }
}

/// Runs `work` in a savepoint of the batch transaction: its failure undoes only its own writes.
fn with_savepoint<T, E: From<StoreError>>(
    db: &Db<'_>,
    work: impl FnOnce(&Db<'_>) -> Result<T, E>,
) -> Result<T, E> {
    let savepoint = |sql: &str| {
        db.conn
            .execute_batch(sql)
            .map_err(|e| E::from(StoreError::Sql(e)))
    };
    savepoint("SAVEPOINT job")?;
    match work(db) {
        Ok(value) => {
            savepoint("RELEASE job")?;
            Ok(value)
        }
        Err(e) => {
            savepoint("ROLLBACK TO job; RELEASE job")?;
            Err(e)
        }
    }
}

fn run(store: Store, mut receiver: mpsc::Receiver<Request>, queue_changed: watch::Sender<u64>) {
    // FULL (2) with durability "fsync": then a batch of relaxed jobs commits with NORMAL.
    let full = store
        .conn
        .pragma_query_value(None, "synchronous", |r| r.get::<_, i64>(0))
        .is_ok_and(|level| level >= 2);
    let wal = store
        .conn
        .path()
        .filter(|path| !path.is_empty())
        .map(|path| std::path::PathBuf::from(format!("{path}-wal")));
    // A relaxed batch has committed since the WAL was last synced.
    let mut unflushed = false;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut flushes = Vec::new();
    while let Some(first) = receiver.blocking_recv() {
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Job(job) => batch.push(job),
                Request::Flush(reply) => flushes.push(reply),
            }
            if batch.len() < MAX_BATCH {
                next = receiver.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let relax = full && !batch.iter().any(|job| job.durable);
            if relax {
                let _ = store.conn.execute_batch("PRAGMA synchronous = NORMAL");
            }
            let touched = run_batch(&store, &mut batch);
            if relax {
                let _ = store.conn.execute_batch("PRAGMA synchronous = FULL");
            }
            // A FULL commit syncs the WAL, and with it every frame written before.
            unflushed = relax || (unflushed && !full);
            if touched {
                queue_changed.send_modify(|version| *version += 1);
            }
        }
        if !flushes.is_empty() {
            let synced = match (&wal, unflushed) {
                (Some(wal), true) => sync_wal(wal).map(|()| true),
                _ => Ok(false),
            };
            if synced.is_ok() {
                unflushed = false;
            }
            for reply in flushes.drain(..) {
                let _ = reply.send(match &synced {
                    Ok(synced) => Ok(*synced),
                    Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                });
            }
        }
    }
}

/// Syncs the WAL file through a descriptor of its own: `fdatasync` flushes the file, not the
/// descriptor, so what SQLite wrote through its own is on disk after it.
fn sync_wal(wal: &std::path::Path) -> std::io::Result<()> {
    match std::fs::File::open(wal) {
        Ok(file) => file.sync_data(),
        // No WAL file: nothing was written since the last checkpoint removed it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs one batch in one transaction and answers every job; true when the forward queue
/// changed and the commit went through.
fn run_batch(store: &Store, batch: &mut Vec<Job>) -> bool {
    let db = Db::new(&store.conn);
    if let Err(e) = store.conn.execute_batch("BEGIN IMMEDIATE") {
        let e = Arc::new(e);
        tracing::error!(cause = %e, jobs = batch.len(), "cannot start an index transaction");
        for job in batch.drain(..) {
            (job.work)(Err(Arc::clone(&e)))(None);
        }
        return false;
    }
    let finishes: Vec<Finish> = batch.drain(..).map(|job| (job.work)(Ok(&db))).collect();
    match store.conn.execute_batch("COMMIT") {
        Ok(()) => {
            for finish in finishes {
                finish(None);
            }
            db.queue_touched()
        }
        Err(e) => {
            tracing::error!(cause = %e, jobs = finishes.len(), "index transaction failed");
            let _ = store.conn.execute_batch("ROLLBACK");
            let e = Arc::new(e);
            for finish in finishes {
                finish(Some(Arc::clone(&e)));
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::store::instances::tests::instance;

    #[tokio::test]
    async fn a_failing_job_undoes_only_its_own_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("simgate.db");
        let store = crate::store::open(&path, Durability::Os).expect("open");
        let (queue_changed, mut changed) = watch::channel(0);
        let (index, thread) = IndexHandle::spawn(store, 8, queue_changed).expect("spawn");
        let kept = index.execute(|db| {
            let recorded = db.record_instance(&instance("1.2.3.4.1", "aa11"))?;
            db.enqueue(
                &[("tps", crate::store::queue::Entry::Pending)],
                &instance("1.2.3.4.1", "aa11"),
                "1.2.3",
            )?;
            Ok::<_, StoreError>(recorded.outcome)
        });
        let undone = index.execute(|db| {
            db.record_instance(&instance("1.2.3.4.2", "bb22"))?;
            Err::<(), _>(StoreError::WriterGone)
        });
        let (kept, undone) = tokio::join!(kept, undone);
        assert!(kept.is_ok());
        assert!(matches!(undone, Err(StoreError::WriterGone)));
        changed.changed().await.expect("the forwarders are woken");
        drop(index);
        thread.join().expect("join");
        let store = crate::store::open_existing(&path).expect("reopen");
        let instances: i64 = store
            .conn
            .query_row("SELECT count(*) FROM instances", [], |r| r.get(0))
            .expect("count");
        assert_eq!(
            instances, 1,
            "the failed job's instance was rolled back, the other kept"
        );
    }

    #[tokio::test]
    async fn a_relaxed_batch_commits_and_durable_ones_stay_flushed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("simgate.db");
        let store = crate::store::open(&path, Durability::Fsync).expect("open");
        let (queue_changed, _changed) = watch::channel(0);
        let (index, thread) = IndexHandle::spawn(store, 8, queue_changed).expect("spawn");
        let during = index
            .execute_relaxed(|db| {
                db.record_instance(&instance("1.2.3.4.1", "aa11"))?;
                Ok::<_, StoreError>(
                    db.conn
                        .pragma_query_value(None, "synchronous", |r| r.get::<_, i64>(0))?,
                )
            })
            .await
            .expect("relaxed job");
        assert_eq!(
            during, 1,
            "a relaxed batch commits with synchronous = NORMAL"
        );
        let after = index
            .execute(|db| {
                Ok::<_, StoreError>(
                    db.conn
                        .pragma_query_value(None, "synchronous", |r| r.get::<_, i64>(0))?,
                )
            })
            .await
            .expect("durable job");
        assert_eq!(after, 2, "then FULL again for durable jobs");
        drop(index);
        thread.join().expect("join");
        let store = crate::store::open_existing(&path).expect("reopen");
        let instances: i64 = store
            .conn
            .query_row("SELECT count(*) FROM instances", [], |r| r.get(0))
            .expect("count");
        assert_eq!(instances, 1, "the relaxed job's write committed");
    }

    #[tokio::test]
    async fn a_flush_syncs_the_wal_only_after_a_relaxed_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            crate::store::open(&dir.path().join("simgate.db"), Durability::Fsync).expect("open");
        let (queue_changed, _changed) = watch::channel(0);
        let (index, thread) = IndexHandle::spawn(store, 8, queue_changed).expect("spawn");
        assert!(
            !index.flush().await.expect("flush"),
            "nothing to flush at first"
        );
        index
            .execute_relaxed(|db| db.record_instance(&instance("1.2.3.4.1", "aa11")))
            .await
            .expect("relaxed job");
        assert!(
            index.flush().await.expect("flush"),
            "a relaxed commit is synced"
        );
        assert!(!index.flush().await.expect("flush"), "and only once");
        index
            .execute_relaxed(|db| db.record_instance(&instance("1.2.3.4.2", "bb22")))
            .await
            .expect("relaxed job");
        index
            .execute(|db| db.record_instance(&instance("1.2.3.4.3", "cc33")))
            .await
            .expect("durable job");
        assert!(
            !index.flush().await.expect("flush"),
            "a durable commit synced the relaxed one before it"
        );
        drop(index);
        thread.join().expect("join");
    }

    #[tokio::test]
    async fn with_durability_os_a_flush_never_syncs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            crate::store::open(&dir.path().join("simgate.db"), Durability::Os).expect("open");
        let (queue_changed, _changed) = watch::channel(0);
        let (index, thread) = IndexHandle::spawn(store, 8, queue_changed).expect("spawn");
        index
            .execute_relaxed(|db| db.record_instance(&instance("1.2.3.4.1", "aa11")))
            .await
            .expect("relaxed job");
        assert!(!index.flush().await.expect("flush"));
        drop(index);
        thread.join().expect("join");
    }
}
