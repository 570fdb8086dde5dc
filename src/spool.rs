//! The durable spool: each received instance becomes one Part-10 file, written under a
//! temporary name, flushed, and renamed into place under a name derived from the SHA-256 of
//! its data set. A name never comes from a tag value. Everything here is blocking I/O: the
//! async side calls it through `spawn_blocking`.
//!
//! Layout under `storage.dir`: `tmp/*.part` (in progress, removed at start), and
//! `spool/<first two hex digits>/<sha256>.dcm` (final).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Durability;
use crate::dicom::part10::{Part10Error, PartTenMeta};

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Meta(#[from] Part10Error),
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Where an instance's file ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// Relative to the storage folder, with `/` separators: what the index records.
    pub relative_path: String,
    /// Size of the whole Part-10 file.
    pub file_size: u64,
    /// True when a file with the same data set was already in place (an identical re-send).
    pub already_present: bool,
}

#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    tmp: PathBuf,
    durability: Durability,
    counter: AtomicU64,
    /// Content hashes whose final file an instance being recorded relies on (from `commit`
    /// until `unpin`): `remove` leaves these files alone, so neither retention nor the removal
    /// of a replaced file can delete a file a success is about to be answered for.
    pinned: Mutex<HashMap<String, u32>>,
    /// The last free-space figure and when it was measured (ms since the Unix epoch, 0:
    /// never), kept by a background task so the receive path never calls statvfs itself.
    free: AtomicU64,
    free_measured_ms: AtomicU64,
}

impl Spool {
    /// Creates the folders if needed and removes what a previous run left half-written.
    pub fn open(storage_dir: &Path, durability: Durability) -> Result<Spool, SpoolError> {
        let root = storage_dir.join("spool");
        let tmp = storage_dir.join("tmp");
        for dir in [storage_dir, &root, &tmp] {
            fs::create_dir_all(dir).map_err(io_error("create folder", dir))?;
        }
        create_shards(&root, durability)?;
        let mut removed = 0usize;
        for entry in fs::read_dir(&tmp).map_err(io_error("list", &tmp))? {
            let entry = entry.map_err(io_error("list", &tmp))?;
            if entry.path().extension().is_some_and(|ext| ext == "part") {
                fs::remove_file(entry.path()).map_err(io_error("remove", &entry.path()))?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed unfinished files left by an earlier run");
        }
        Ok(Spool {
            root,
            tmp,
            durability,
            counter: AtomicU64::new(0),
            pinned: Mutex::new(HashMap::new()),
            free: AtomicU64::new(0),
            free_measured_ms: AtomicU64::new(0),
        })
    }

    pub fn storage_dir(&self) -> &Path {
        self.root.parent().unwrap_or(&self.root)
    }

    /// Every file under its final name, relative to the storage folder (`spool/aa/<hash>.dcm`).
    pub fn final_files(&self) -> Result<Vec<String>, SpoolError> {
        final_files_in(self.storage_dir())
    }

    /// Moves a stored file that cannot be indexed out of the spool, into `quarantine/`.
    pub fn quarantine(&self, relative_path: &str) -> Result<PathBuf, SpoolError> {
        let from = self.storage_dir().join(relative_path);
        let dir = self.storage_dir().join("quarantine");
        fs::create_dir_all(&dir).map_err(io_error("create folder", &dir))?;
        let to = dir.join(from.file_name().unwrap_or_default());
        fs::rename(&from, &to).map_err(io_error("move into quarantine", &from))?;
        Ok(to)
    }

    /// Proves the storage takes writes now: a small file in `tmp/` written, flushed to disk
    /// and removed. Blocks as long as the storage does (a frozen or hung file system).
    pub fn probe_write(&self) -> Result<(), SpoolError> {
        probe_write_in(self.storage_dir(), "health.probe")
    }

    /// Measures free space (blocking: statvfs) and keeps the figure for
    /// [`recent_free_bytes`](Self::recent_free_bytes).
    pub fn measure_free_bytes(&self) -> Result<u64, SpoolError> {
        let free = self.free_bytes()?;
        self.free.store(free, Ordering::Relaxed);
        self.free_measured_ms.store(now_ms(), Ordering::Release);
        Ok(free)
    }

    /// The free space last measured, if that was less than `max_age` ago. No I/O.
    pub fn recent_free_bytes(&self, max_age: std::time::Duration) -> Option<u64> {
        let measured = self.free_measured_ms.load(Ordering::Acquire);
        (measured > 0 && now_ms().saturating_sub(measured) <= max_age.as_millis() as u64)
            .then(|| self.free.load(Ordering::Relaxed))
    }

    /// Bytes available to simgate on the storage file system.
    pub fn free_bytes(&self) -> Result<u64, SpoolError> {
        free_bytes_in(&self.root)
    }

    /// Starts a new file: the preamble and meta header are written at once, the data set
    /// bytes follow through [`PartialFile::write`].
    pub fn begin(&self, meta: &PartTenMeta<'_>) -> Result<PartialFile, SpoolError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!("{}-{n}.part", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_error("create", &path))?;
        let mut partial = PartialFile {
            file: Some(file),
            path,
            written: 0,
        };
        let head = meta.encode()?;
        partial.write(&head)?;
        Ok(partial)
    }

    /// Makes a finished file durable and visible under its final name, and pins it: the caller
    /// calls [`unpin`](Self::unpin) once the index has recorded it (or failed to).
    pub fn commit(
        &self,
        partial: PartialFile,
        content_hash: &str,
    ) -> Result<StoredFile, SpoolError> {
        self.pins()
            .entry(content_hash.to_string())
            .and_modify(|n| *n += 1)
            .or_insert(1);
        let committed = self.commit_pinned(partial, content_hash);
        if committed.is_err() {
            self.unpin(content_hash);
        }
        committed
    }

    /// The index has recorded (or failed to record) the instance committed under this hash.
    pub fn unpin(&self, content_hash: &str) {
        let mut pins = self.pins();
        if let Some(count) = pins.get_mut(content_hash) {
            *count -= 1;
            if *count == 0 {
                pins.remove(content_hash);
            }
        }
    }

    fn pins(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.pinned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn commit_pinned(
        &self,
        mut partial: PartialFile,
        content_hash: &str,
    ) -> Result<StoredFile, SpoolError> {
        let file = partial
            .file
            .take()
            .expect("a partial file is committed once");
        if self.durability == Durability::Fsync {
            file.sync_data().map_err(io_error("flush", &partial.path))?;
        }
        drop(file);
        let shard = &content_hash[..2];
        let shard_dir = self.root.join(shard);
        if !shard_dir.is_dir() {
            fs::create_dir_all(&shard_dir).map_err(io_error("create folder", &shard_dir))?;
            self.sync_dir(&self.root)?;
        }
        let file_name = format!("{content_hash}.dcm");
        let final_path = shard_dir.join(&file_name);
        let relative_path = format!("spool/{shard}/{file_name}");
        let file_size = partial.written;
        if final_path.exists() {
            // Same data set bytes as a file already in place: keep that one.
            fs::remove_file(&partial.path).map_err(io_error("remove", &partial.path))?;
            return Ok(StoredFile {
                relative_path,
                file_size,
                already_present: true,
            });
        }
        fs::rename(&partial.path, &final_path)
            .map_err(io_error("rename into place", &final_path))?;
        self.sync_dir(&shard_dir)?;
        Ok(StoredFile {
            relative_path,
            file_size,
            already_present: false,
        })
    }

    /// Removes a file the index no longer refers to (a replaced instance).
    /// Removes a stored file; `false` when it was left because an instance being recorded
    /// relies on it (a later sweep or start-up reconciliation looks again).
    pub fn remove(&self, relative_path: &str) -> Result<bool, SpoolError> {
        let path = self.storage_dir().join(relative_path);
        let hash = Path::new(relative_path)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        // Held while unlinking, so no commit can pin this file in between.
        let pins = self.pins();
        if pins.contains_key(hash) {
            return Ok(false);
        }
        let removed = match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("remove", &path)(e)),
            _ => Ok(true),
        };
        drop(pins);
        removed
    }

    fn sync_dir(&self, dir: &Path) -> Result<(), SpoolError> {
        if self.durability == Durability::Fsync {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error("flush folder", dir))?;
        }
        Ok(())
    }
}

/// Free space for an unprivileged writer on the file system of `dir` (blocking: statvfs).
pub fn free_bytes_in(dir: &Path) -> Result<u64, SpoolError> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| SpoolError::Io {
        action: "read free space of",
        path: dir.to_path_buf(),
        source: e.into(),
    })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Writes a small file `name` in the storage folder's `tmp/`, flushes and removes it: the
/// storage takes writes now. Not a `.part` name, which a starting gateway removes.
pub fn probe_write_in(storage_dir: &Path, name: &str) -> Result<(), SpoolError> {
    let dir = storage_dir.join("tmp");
    fs::create_dir_all(&dir).map_err(io_error("create folder", &dir))?;
    let path = dir.join(name);
    let mut file = File::create(&path).map_err(io_error("create", &path))?;
    file.write_all(b"simgate")
        .map_err(io_error("write", &path))?;
    file.sync_all().map_err(io_error("flush", &path))?;
    drop(file);
    fs::remove_file(&path).map_err(io_error("remove", &path))
}

/// The storage folder's lock file: a running gateway holds an exclusive `flock` on it for
/// its whole life (the kernel drops it when the process ends, however it ends).
pub const LOCK_FILE: &str = "simgate.lock";

/// Takes the storage folder's lock, creating the folder and the file if needed; `None` when
/// another process holds it (a gateway runs, or a restore).
pub fn lock_storage(storage_dir: &Path) -> io::Result<Option<File>> {
    fs::create_dir_all(storage_dir)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(storage_dir.join(LOCK_FILE))?;
    Ok(
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .is_ok()
            .then_some(file),
    )
}

/// Whether a process holds the storage folder's lock, without taking it for longer than the
/// look (read-only: no write access needed); `None` when no gateway ever ran there.
pub fn storage_in_use(storage_dir: &Path) -> Option<bool> {
    let file = File::open(storage_dir.join(LOCK_FILE)).ok()?;
    Some(rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared).is_err())
}

/// The files under their final names in a storage folder, relative to it, sorted; without
/// opening a [`Spool`] (which would remove the partial files of uploads in progress).
pub fn final_files_in(storage_dir: &Path) -> Result<Vec<String>, SpoolError> {
    let root = storage_dir.join("spool");
    let mut files = Vec::new();
    for shard in fs::read_dir(&root).map_err(io_error("list", &root))? {
        let shard = shard.map_err(io_error("list", &root))?.path();
        if !shard.is_dir() {
            continue;
        }
        for entry in fs::read_dir(&shard).map_err(io_error("list", &shard))? {
            let path = entry.map_err(io_error("list", &shard))?.path();
            if path.extension().is_some_and(|ext| ext == "dcm")
                && let (Some(shard), Some(name)) = (
                    shard.file_name().and_then(|n| n.to_str()),
                    path.file_name().and_then(|n| n.to_str()),
                )
            {
                files.push(format!("spool/{shard}/{name}"));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Creates the 256 shard folders (`spool/00` to `spool/ff`) a storage folder lacks, and
/// flushes `spool/` once if any was made: the first instance of each shard then waits for no
/// folder creation and no extra flush (one in six of the first 1,400 instances did).
fn create_shards(root: &Path, durability: Durability) -> Result<(), SpoolError> {
    let mut created = false;
    for shard in 0..=255u8 {
        let dir = root.join(format!("{shard:02x}"));
        match fs::create_dir(&dir) {
            Ok(()) => created = true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("create folder", &dir)(e)),
        }
    }
    if created && durability == Durability::Fsync {
        File::open(root)
            .and_then(|d| d.sync_all())
            .map_err(io_error("flush folder", root))?;
    }
    Ok(())
}

/// A file being written under its temporary name; removed if dropped before commit.
#[derive(Debug)]
pub struct PartialFile {
    file: Option<File>,
    path: PathBuf,
    written: u64,
}

impl PartialFile {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        let file = self.file.as_mut().expect("not committed");
        file.write_all(bytes)
            .map_err(io_error("write", &self.path))?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> PartTenMeta<'static> {
        PartTenMeta {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2",
            sop_instance_uid: "1.2.3.4",
            transfer_syntax_uid: "1.2.840.10008.1.2.1",
            source_ae_title: "CTSIM",
        }
    }

    #[test]
    fn unfinished_files_are_removed_at_open_and_never_visible_under_a_final_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), Durability::Fsync).expect("open");
        let mut partial = spool.begin(&meta()).expect("begin");
        partial.write(b"half").expect("write");
        std::mem::forget(partial); // as if the process died here
        let spool = Spool::open(dir.path(), Durability::Fsync).expect("reopen");
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0
        );
        assert!(
            spool.final_files().expect("final files").is_empty(),
            "nothing under a final name"
        );
        assert_eq!(
            fs::read_dir(dir.path().join("spool"))
                .expect("spool")
                .count(),
            256,
            "only the shard folders"
        );
        drop(spool);
    }

    #[test]
    fn a_committed_file_is_named_by_hash_and_an_identical_one_is_deduplicated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), Durability::Os).expect("open");
        let hash = "ab".repeat(32);
        let mut first = spool.begin(&meta()).expect("begin");
        first
            .write(b"\x08\x00\x16\x00UI\x02\x001\0")
            .expect("write");
        let stored = spool.commit(first, &hash).expect("commit");
        assert_eq!(stored.relative_path, format!("spool/ab/{hash}.dcm"));
        assert!(!stored.already_present);
        let bytes = fs::read(dir.path().join(&stored.relative_path)).expect("read");
        assert_eq!(&bytes[128..132], b"DICM");
        let second = spool.begin(&meta()).expect("begin");
        let again = spool.commit(second, &hash).expect("commit");
        assert!(again.already_present);
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0
        );
    }

    #[test]
    fn a_pinned_file_is_not_removed_until_it_is_unpinned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), Durability::Os).expect("open");
        let hash = "cd".repeat(32);
        let partial = spool.begin(&meta()).expect("begin");
        let stored = spool.commit(partial, &hash).expect("commit");
        assert!(
            !spool.remove(&stored.relative_path).expect("remove"),
            "removed while pinned"
        );
        assert!(dir.path().join(&stored.relative_path).exists());
        spool.unpin(&hash);
        assert!(spool.remove(&stored.relative_path).expect("remove"));
        assert!(!dir.path().join(&stored.relative_path).exists());
    }
}
