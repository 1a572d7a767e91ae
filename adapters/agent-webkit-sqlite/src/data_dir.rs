//! [`DataDir`]: the directory a single server keeps its state in — the database, an exclusive
//! lock (one server per directory) and the host id that outlives restarts.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::{private_dir, OpenOptions, SqliteError, SqliteSessionStore};

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "sessions.db";
/// The lock file's name: held (`flock`, exclusive) while a server uses the directory.
pub const LOCK_FILE: &str = "agent-webkit.lock";
/// The file holding this host's id in session leases.
pub const HOST_ID_FILE: &str = "host-id";

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory or one of its files could not be created, opened or written.
    #[error("data directory {}: cannot use {}: {source}{}", dir.display(), path.display(), hint(source))]
    Io {
        /// The data directory.
        dir: PathBuf,
        /// The file or directory that failed.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process holds the directory's lock.
    #[error("data directory {} is in use by another agent-webkit-server (lock {} is held{}); stop it or choose another --data-dir", dir.display(), lock.display(), holder.as_deref().map(|p| format!(" by pid {p}")).unwrap_or_default())]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The pid the holder wrote into the lock file, if readable.
        holder: Option<String>,
    },
    /// The database cannot be opened or migrated.
    #[error("data directory {}: cannot open the database: {source}{}", dir.display(), if source.is_disk_full() { " (is the disk full?)" } else { "" })]
    Database {
        /// The data directory.
        dir: PathBuf,
        /// Why.
        source: SqliteError,
    },
}

fn hint(err: &std::io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(28) => " (the disk is full)",
        Some(13 | 30) => " (is the directory writable by this user?)",
        _ => "",
    }
}

/// An open data directory: the store (and its persistence) on `sessions.db`, this host's id,
/// and the exclusive lock, held until this value is dropped (or the process dies: the kernel
/// releases it, so a killed server's successor starts at once).
#[derive(Debug)]
pub struct DataDir {
    dir: PathBuf,
    host_id: String,
    store: SqliteSessionStore,
    _lock: std::fs::File,
}

impl DataDir {
    /// Creates `dir` (`0700`) if needed, takes its lock, reads or creates the host id and opens
    /// the database (created `0600`).
    pub fn open(dir: impl AsRef<Path>, options: OpenOptions) -> Result<Self, DataDirError> {
        let dir = dir.as_ref().to_owned();
        let io = |path: &Path| {
            let (dir, path) = (dir.clone(), path.to_owned());
            move |source| DataDirError::Io { dir, path, source }
        };
        private_dir(&dir).map_err(io(&dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = take_lock(&dir, &lock_path)?;
        let host_path = dir.join(HOST_ID_FILE);
        let host_id = host_id(&host_path).map_err(io(&host_path))?;
        let store =
            SqliteSessionStore::open_with(dir.join(DATABASE_FILE), options).map_err(|source| {
                DataDirError::Database {
                    dir: dir.clone(),
                    source,
                }
            })?;
        Ok(Self {
            dir,
            host_id,
            store,
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// This host's id, the same after every restart on this directory.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// The store on the directory's database.
    pub fn store(&self) -> &SqliteSessionStore {
        &self.store
    }
}

fn take_lock(dir: &Path, lock_path: &Path) -> Result<std::fs::File, DataDirError> {
    let io = |source| DataDirError::Io {
        dir: dir.to_owned(),
        path: lock_path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(lock_path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(DataDirError::InUse {
                dir: dir.to_owned(),
                lock: lock_path.to_owned(),
                holder: (!pid.is_empty()).then(|| pid.to_owned()),
            });
        }
        Err(std::fs::TryLockError::Error(err)) => return Err(io(err)),
    }
    // Who holds it, for the next one's error message.
    file.set_len(0).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}

/// Reads the host id, or writes a fresh one (to a temporary file renamed into place).
fn host_id(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let id = uuid::Uuid::new_v4().to_string();
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    writeln!(file, "{id}")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(id)
}
