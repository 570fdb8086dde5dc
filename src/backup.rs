//! `simgate backup` and `simgate restore`: a copy of the storage folder that is consistent
//! while the gateway runs. The index is copied first, in one step of SQLite's online backup
//! (one read transaction: the snapshot of one moment; the writer goes on meanwhile), then
//! every spool file, with a manifest of their SHA-256. Files that arrived after the snapshot
//! are copied too: at start the reconciliation indexes them, as after a crash. Blocking.
//!
//! A backup folder: `simgate.db`, `spool/<aa>/<sha256>.dcm`, `manifest.json`.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// The manifest's name in a backup folder.
pub const MANIFEST: &str = "manifest.json";
const DATABASE: &str = "simgate.db";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the index {path}")]
    Sql {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{0} is not empty: back up into a new folder")]
    DestinationNotEmpty(PathBuf),
    #[error(
        "{backup} and the storage folder {storage} are one inside the other: keep backups in a folder of their own"
    )]
    Overlaps { backup: PathBuf, storage: PathBuf },
    #[error(
        "{0} is not empty: restore into an empty storage folder, or add --force to replace what is there"
    )]
    StorageNotEmpty(PathBuf),
    #[error("{0} is not a backup made by `simgate backup` (it has no manifest.json)")]
    NotABackup(PathBuf),
    #[error("a gateway is running on {0}: stop it before restoring")]
    GatewayRunning(PathBuf),
    #[error("{path} is not what the manifest says (SHA-256 {found}, expected {expected})")]
    Corrupt {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("the manifest {path}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the manifest names {0}, which is not a spool file")]
    BadEntry(String),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BackupError + 'a {
    move |source| BackupError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn sql(path: &Path) -> impl FnOnce(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Sql {
        path: path.to_path_buf(),
        source,
    }
}

/// What a backup holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub simgate_version: String,
    pub created_at: String,
    /// The storage folder it was taken from.
    pub source: PathBuf,
    pub database: Entry,
    /// Instances in the index snapshot.
    pub indexed_instances: u64,
    pub files: Vec<Entry>,
    /// Files the snapshot refers to that were gone by the time they were copied (retention
    /// or a replacement removed them in between).
    pub missing: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the folder, `/`-separated.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Backs up `config`'s storage folder into `destination` (new or empty).
pub fn backup(config: &Config, destination: &Path) -> Result<Manifest, BackupError> {
    let destination = &crate::config::absolute(destination);
    refuse_overlap(destination, &config.storage.dir)?;
    if destination.exists()
        && fs::read_dir(destination)
            .map_err(io("list", destination))?
            .next()
            .is_some()
    {
        return Err(BackupError::DestinationNotEmpty(destination.to_path_buf()));
    }
    fs::create_dir_all(destination).map_err(io("create", destination))?;
    let storage = &config.storage.dir;
    let source_db = config.storage.database_path();
    let copy_db = destination.join(DATABASE);
    let source = Connection::open_with_flags(&source_db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sql(&source_db))?;
    source
        .busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sql(&source_db))?;
    {
        let mut copy = Connection::open(&copy_db).map_err(sql(&copy_db))?;
        let backup = rusqlite::backup::Backup::new(&source, &mut copy).map_err(sql(&copy_db))?;
        // Every page in one step: one read transaction, so one consistent moment.
        backup.step(-1).map_err(sql(&copy_db))?;
    }
    drop(source);
    let copy = Connection::open(&copy_db).map_err(sql(&copy_db))?;
    let indexed: Vec<String> = copy
        .prepare("SELECT file_path FROM instances WHERE file_deleted_at IS NULL")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(sql(&copy_db))?;
    let indexed_instances = copy
        .query_row("SELECT count(*) FROM instances", [], |r| r.get::<_, i64>(0))
        .map_err(sql(&copy_db))? as u64;
    // A self-contained file: no WAL beside it.
    copy.pragma_update(None, "journal_mode", "DELETE")
        .map_err(sql(&copy_db))?;
    drop(copy);
    let database = copy_file(&copy_db, None)?;

    let on_disk = crate::spool::final_files_in(storage).map_err(|e| BackupError::Io {
        action: "list",
        path: storage.join("spool"),
        source: std::io::Error::other(crate::error_chain(&e)),
    })?;
    let mut files = Vec::new();
    for relative in &on_disk {
        let from = storage.join(relative);
        match copy_file(&from, Some(&destination.join(relative))) {
            Ok(entry) => files.push(Entry {
                path: relative.clone(),
                ..entry
            }),
            // Removed since it was listed: what the snapshot lacks is reported below.
            Err(BackupError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let copied: std::collections::BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let missing = indexed
        .into_iter()
        .filter(|path| !copied.contains(path.as_str()))
        .collect();
    sync_tree(destination)?;
    let manifest = Manifest {
        simgate_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at: crate::clock::now_rfc3339(),
        source: storage.clone(),
        database: Entry {
            path: DATABASE.into(),
            ..database
        },
        indexed_instances,
        files,
        missing,
    };
    let path = destination.join(MANIFEST);
    let text = serde_json::to_vec_pretty(&manifest).map_err(|source| BackupError::Manifest {
        path: path.clone(),
        source,
    })?;
    write_synced(&path, &text)?;
    sync_dir(destination)?;
    Ok(manifest)
}

/// Restores a backup into `config`'s storage folder, which must be empty (or `force`: what is
/// there is replaced) and not in use by a running gateway. Every file is checked against the
/// manifest as it is copied.
pub fn restore(config: &Config, source: &Path, force: bool) -> Result<Manifest, BackupError> {
    let source = &crate::config::absolute(source);
    // `--force` empties the storage folder: a backup inside it would go with it.
    refuse_overlap(source, &config.storage.dir)?;
    let manifest_path = source.join(MANIFEST);
    let text = fs::read(&manifest_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BackupError::NotABackup(source.clone())
        } else {
            io("read", &manifest_path)(e)
        }
    })?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|source| BackupError::Manifest {
            path: manifest_path.clone(),
            source,
        })?;
    let storage = &config.storage.dir;
    let _lock = crate::spool::lock_storage(storage)
        .map_err(io("lock", storage))?
        .ok_or_else(|| BackupError::GatewayRunning(storage.clone()))?;
    // The whole backup is checked before anything in the folder is replaced.
    for entry in manifest_entries(&manifest) {
        if !safe_relative(&entry.path) {
            return Err(BackupError::BadEntry(entry.path.clone()));
        }
        check(
            source,
            entry,
            &copy_file(&source.join(&entry.path), None)?.sha256,
        )?;
    }
    // The lock file and folders without a file in them (`tmp/` and the shard folders a
    // `doctor` or a failed start made) hold nothing to lose.
    let occupied: Vec<PathBuf> = fs::read_dir(storage)
        .map_err(io("list", storage))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n != crate::spool::LOCK_FILE))
        .filter(|p| !p.is_dir() || holds_a_file(p))
        .collect();
    if !occupied.is_empty() {
        if !force {
            return Err(BackupError::StorageNotEmpty(storage.clone()));
        }
        for path in occupied {
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(io("remove", &path))?;
        }
    }
    for entry in manifest_entries(&manifest) {
        let to = storage.join(&entry.path);
        let copied = copy_file(&source.join(&entry.path), Some(&to))?;
        // Checked before anything was replaced (below); this catches a read that went wrong.
        check(source, entry, &copied.sha256)?;
    }
    sync_tree(storage)?;
    Ok(manifest)
}

/// Refuses a backup folder inside the storage folder or around it (either would copy a
/// folder into itself, and a forced restore would empty the backup it reads from).
fn refuse_overlap(backup: &Path, storage: &Path) -> Result<(), BackupError> {
    let (b, s) = (resolved(backup), resolved(storage));
    if b.starts_with(&s) || s.starts_with(&b) {
        return Err(BackupError::Overlaps {
            backup: backup.to_path_buf(),
            storage: storage.to_path_buf(),
        });
    }
    Ok(())
}

/// `path` with symbolic links resolved as far as it exists (a new backup folder does not yet).
fn resolved(path: &Path) -> PathBuf {
    if let Ok(real) = path.canonicalize() {
        return real;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => resolved(parent).join(name),
        _ => path.to_path_buf(),
    }
}

/// Whether a file is anywhere under `dir`.
fn holds_a_file(dir: &Path) -> bool {
    fs::read_dir(dir).map_or(true, |entries| {
        entries.filter_map(Result::ok).any(|e| {
            let path = e.path();
            !path.is_dir() || holds_a_file(&path)
        })
    })
}

fn manifest_entries(manifest: &Manifest) -> impl Iterator<Item = &Entry> {
    std::iter::once(&manifest.database).chain(&manifest.files)
}

/// The file read from the backup is the one the manifest describes.
fn check(source: &Path, entry: &Entry, sha256: &str) -> Result<(), BackupError> {
    if sha256 == entry.sha256 {
        Ok(())
    } else {
        Err(BackupError::Corrupt {
            path: source.join(&entry.path),
            found: sha256.to_string(),
            expected: entry.sha256.clone(),
        })
    }
}

/// `simgate.db` or `spool/<2 hex>/<64 hex>.dcm`: nothing a manifest could use to write
/// elsewhere.
fn safe_relative(path: &str) -> bool {
    if path == DATABASE {
        return true;
    }
    let parts: Vec<&str> = path.split('/').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    matches!(parts.as_slice(), ["spool", shard, name]
        if hex(shard, 2) && name.strip_suffix(".dcm").is_some_and(|h| hex(h, 64)))
}

/// Reads `from` (hashing it) and, with `to`, writes a flushed copy there.
fn copy_file(from: &Path, to: Option<&Path>) -> Result<Entry, BackupError> {
    let mut input = File::open(from).map_err(io("read", from))?;
    let mut output = match to {
        Some(to) => {
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(io("create", parent))?;
            }
            Some(File::create(to).map_err(io("create", to))?)
        }
        None => None,
    };
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = input.read(&mut buffer).map_err(io("read", from))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        if let (Some(output), Some(to)) = (output.as_mut(), to) {
            output.write_all(&buffer[..n]).map_err(io("write", to))?;
        }
        bytes += n as u64;
    }
    if let (Some(output), Some(to)) = (output, to) {
        output.sync_all().map_err(io("flush", to))?;
    }
    Ok(Entry {
        path: String::new(),
        bytes,
        sha256: hex::encode(hasher.finalize()),
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let mut file = File::create(path).map_err(io("create", path))?;
    file.write_all(bytes).map_err(io("write", path))?;
    file.sync_all().map_err(io("flush", path))
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("flush", dir))
}

/// Flushes a folder and the folders below it (the new names in them).
fn sync_tree(dir: &Path) -> Result<(), BackupError> {
    for entry in fs::read_dir(dir).map_err(io("list", dir))? {
        let path = entry.map_err(io("list", dir))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        }
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::safe_relative;

    #[test]
    fn a_manifest_entry_names_only_the_index_or_a_spool_file() {
        assert!(safe_relative("simgate.db"));
        assert!(safe_relative(&format!("spool/ab/{}.dcm", "ab".repeat(32))));
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "spool/../../x",
            "spool/ab/../../simgate.lock",
            "spool/zz/x.dcm",
            "tmp/1.part",
            "",
        ] {
            assert!(!safe_relative(bad), "{bad}");
        }
    }
}
