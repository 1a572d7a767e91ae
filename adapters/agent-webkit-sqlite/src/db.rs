//! The database file and the threads that own its connections: one writer that commits
//! whatever has queued up as one transaction (group commit, one savepoint per call), and a
//! few readers. Async callers never block: they queue a closure and await its answer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::{schema, SqliteError};

/// Most calls committed in one transaction.
const MAX_GROUP: usize = 512;
/// How long a connection waits for a lock another connection holds (only other processes
/// that ignore the data directory's lock file can hold one for long).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How hard a commit pushes data to the disk (SQLite's `synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = NORMAL`: a commit is in the write-ahead log when the call returns, so it
    /// survives the process being killed; the WAL is synced at checkpoints, so an operating
    /// system crash or power loss may roll back the newest commits (never corrupting the file).
    #[default]
    Process,
    /// `synchronous = FULL`: every commit (one per group of calls) is synced to the disk
    /// before the calls return: survives power loss, at one `fsync` per group.
    Full,
}

/// Options for [`crate::SqliteSessionStore::open_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// See [`Durability`].
    pub durability: Durability,
    /// Reader threads (each with its own connection); at least 1.
    pub readers: usize,
    /// Bytes the write-ahead log may grow to before it is checkpointed and truncated
    /// ([`DEFAULT_WAL_LIMIT`]; see the crate README, "The WAL stays bounded"). The writer truncates
    /// it itself, whatever the checkpointer managed, at [`WAL_HARD_FACTOR`] times this.
    pub wal_limit: u64,
    /// Bytes of the database file each reader maps into memory (`PRAGMA mmap_size`;
    /// [`DEFAULT_READER_MMAP`]; 0: none). Loads then read pages in place instead of copying
    /// each one through `pread` into the connection's page cache (a restart loads every
    /// session's ring). Mapped pages are the kernel's page cache, shared and reclaimable; only
    /// the readers map (the writer and the checkpointer do not).
    pub reader_mmap: u64,
}

/// Default [`OpenOptions::reader_mmap`]: 1 GiB (address space; what is touched is page cache).
pub const DEFAULT_READER_MMAP: u64 = 1 << 30;

/// Default [`OpenOptions::wal_limit`]: 64 MiB.
pub const DEFAULT_WAL_LIMIT: u64 = 64 << 20;

/// The writer truncates the WAL itself (copying what the checkpointer has not) once the file
/// is this many times [`OpenOptions::wal_limit`]: the hard bound under any write load.
pub const WAL_HARD_FACTOR: u64 = 4;

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Process,
            readers: 2,
            wal_limit: DEFAULT_WAL_LIMIT,
            reader_mmap: DEFAULT_READER_MMAP,
        }
    }
}

/// One queued call: runs on a connection thread, answers after its transaction ended.
trait Job: Send {
    fn run(&mut self, conn: &Connection) -> Result<(), SqliteError>;
    fn finish(self: Box<Self>, outcome: Result<(), SqliteError>);
    /// Runs outside any transaction, after the calls queued before it committed (only
    /// [`Truncate`]).
    fn outside_transaction(&self) -> bool {
        false
    }
}

/// A `wal_checkpoint(TRUNCATE)` queued on the writer: see [`Db::checkpoint_truncate`].
struct Truncate {
    reply: oneshot::Sender<Result<(), SqliteError>>,
}

impl Job for Truncate {
    fn run(&mut self, conn: &Connection) -> Result<(), SqliteError> {
        if truncate_wal(conn, BUSY_TIMEOUT)? {
            Ok(())
        } else {
            Err(SqliteError::WalBusy)
        }
    }

    fn finish(self: Box<Self>, outcome: Result<(), SqliteError>) {
        let _ = self.reply.send(outcome);
    }

    fn outside_transaction(&self) -> bool {
        true
    }
}

struct Call<T, F> {
    op: Option<F>,
    value: Option<T>,
    reply: oneshot::Sender<Result<T, SqliteError>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, SqliteError> + Send,
{
    fn run(&mut self, conn: &Connection) -> Result<(), SqliteError> {
        let op = self
            .op
            .take()
            .ok_or_else(|| SqliteError::Closed("call ran twice".into()))?;
        self.value = Some(op(conn)?);
        Ok(())
    }

    fn finish(self: Box<Self>, outcome: Result<(), SqliteError>) {
        let answer = match (outcome, self.value) {
            (Ok(()), Some(value)) => Ok(value),
            (Ok(()), None) => Err(SqliteError::Closed("call did not run".into())),
            (Err(err), _) => Err(err),
        };
        // The caller may have gone away (cancelled); the work is done either way.
        let _ = self.reply.send(answer);
    }
}

type Queue = mpsc::Sender<Box<dyn Job>>;

/// The open database: its path and the queues of its connection threads. The threads end
/// when the last handle is dropped (after finishing what was queued).
#[derive(Debug)]
pub(crate) struct Db {
    path: PathBuf,
    writer: Queue,
    readers: Queue,
    /// Dropped with the handle: tells the checkpointer to stop.
    _checkpoints: mpsc::Sender<()>,
}

/// What the checkpointer tells the writer: the WAL is over its limit and everything a passive
/// checkpoint could copy has been copied, so truncate it before the next group.
#[derive(Debug, Default)]
struct WalSignal {
    truncate: AtomicBool,
}

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

impl Db {
    /// Opens (creating it if needed, `0600`, in a directory created `0700`) and migrates the
    /// database at `path`, then starts its connection threads.
    pub(crate) fn open(path: &Path, options: OpenOptions) -> Result<Arc<Self>, SqliteError> {
        let at = |source: std::io::Error| SqliteError::Io {
            path: path.to_owned(),
            source: Arc::new(source),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private_dir(dir).map_err(|source| SqliteError::Io {
                path: dir.to_owned(),
                source: Arc::new(source),
            })?;
        }
        crate::private_file(path).map_err(at)?;
        let writer_conn = connect(path, options.durability)?;
        schema::migrate(&writer_conn).map_err(|e| e.at(path))?;
        // Checkpoints (which sync the disk) run on their own thread, never in a commit; a WAL
        // reset (when the writer starts after a full checkpoint) truncates the file to the limit.
        let limit = options.wal_limit.max(1);
        writer_conn
            .execute_batch(&format!(
                "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {limit};"
            ))
            .map_err(|e| SqliteError::from(e).at(path))?;
        let signal = Arc::new(WalSignal::default());
        let (checkpoints, stop) = mpsc::channel::<()>();
        let checkpoint_conn = connect(path, options.durability)?;
        let to_writer = Arc::clone(&signal);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpoint_conn, &stop, &to_writer, limit))
            .map_err(at)?;
        let (writer, writer_rx) = mpsc::channel::<Box<dyn Job>>();
        let wal = Wal {
            file: wal_path(path),
            hard_limit: limit.saturating_mul(WAL_HARD_FACTOR),
            signal,
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(&writer_conn, &writer_rx, &wal))
            .map_err(at)?;
        let (readers, readers_rx) = mpsc::channel::<Box<dyn Job>>();
        let readers_rx = Arc::new(Mutex::new(readers_rx));
        for n in 0..options.readers.max(1) {
            let conn = connect(path, options.durability)?;
            conn.execute_batch(&format!("PRAGMA mmap_size = {};", options.reader_mmap))
                .map_err(|e| SqliteError::from(e).at(path))?;
            let rx = Arc::clone(&readers_rx);
            std::thread::Builder::new()
                .name(format!("sqlite-reader-{n}"))
                .spawn(move || read_loop(&conn, &rx))
                .map_err(at)?;
        }
        Ok(Arc::new(Self {
            path: path.to_owned(),
            writer,
            readers,
            _checkpoints: checkpoints,
        }))
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `op` on the writer, inside the group's transaction (in its own savepoint: an error
    /// undoes only this call). Answers once the transaction committed.
    pub(crate) async fn write<T, F>(&self, op: F) -> Result<T, SqliteError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, SqliteError> + Send + 'static,
    {
        Self::call(&self.writer, op).await
    }

    /// Waits for every write queued before it, then checkpoints the whole WAL into the
    /// database file and truncates the WAL to zero bytes (blocking writes while it runs): a
    /// clean stop leaves nothing for the next start to read.
    pub(crate) async fn checkpoint_truncate(&self) -> Result<(), SqliteError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Box::new(Truncate { reply }))
            .map_err(|_| SqliteError::Closed("the database threads stopped".into()))?;
        answer
            .await
            .map_err(|_| SqliteError::Closed("the database thread dropped the call".into()))?
    }

    /// Runs `op` on a reader, in a read transaction (one consistent snapshot).
    pub(crate) async fn read<T, F>(&self, op: F) -> Result<T, SqliteError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, SqliteError> + Send + 'static,
    {
        Self::call(&self.readers, op).await
    }

    async fn call<T, F>(queue: &Queue, op: F) -> Result<T, SqliteError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, SqliteError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        queue
            .send(Box::new(Call {
                op: Some(op),
                value: None,
                reply,
            }))
            .map_err(|_| SqliteError::Closed("the database threads stopped".into()))?;
        answer
            .await
            .map_err(|_| SqliteError::Closed("the database thread dropped the call".into()))?
    }
}

fn connect(path: &Path, durability: Durability) -> Result<Connection, SqliteError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(path, flags).map_err(|e| SqliteError::from(e).at(path))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| SqliteError::from(e).at(path))?;
    let synchronous = match durability {
        Durability::Process => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {synchronous};
         PRAGMA foreign_keys = ON;"
    ))
    .map_err(|e| SqliteError::from(e).at(path))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .map_err(|e| SqliteError::from(e).at(path))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SqliteError::Corrupt(format!(
            "{}: could not switch to WAL mode (journal_mode is {mode})",
            path.display()
        )));
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Group commit: takes whatever is queued (up to [`MAX_GROUP`]) and runs it in one
/// `BEGIN IMMEDIATE … COMMIT`, each call in a savepoint, answering every call after the commit.
/// Between groups it truncates the WAL when the checkpointer asks (the WAL is over its limit
/// and a passive checkpoint copied what it could: little is left, so the writer waits little)
/// or when the file passed the hard limit. A queued [`Truncate`] runs alone, in order.
fn write_loop(conn: &Connection, queue: &mpsc::Receiver<Box<dyn Job>>, wal: &Wal) {
    let mut pending = None;
    loop {
        let first = match pending.take() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        if first.outside_transaction() {
            let mut job = first;
            let outcome = job.run(conn);
            job.finish(outcome);
            continue;
        }
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) if job.outside_transaction() => {
                    pending = Some(job);
                    break;
                }
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        wal.bound(conn);
        if let Err(err) = conn.execute_batch("BEGIN IMMEDIATE") {
            let err = SqliteError::from(err);
            for job in group {
                job.finish(Err(err.clone()));
            }
            continue;
        }
        let mut done = Vec::with_capacity(group.len());
        let mut jobs = group.into_iter();
        let mut aborted = None;
        for mut job in jobs.by_ref() {
            match run_in_savepoint(conn, job.as_mut()) {
                Ok(()) => done.push(job),
                Err(err) if conn.is_autocommit() => {
                    // SQLite rolled the whole transaction back (disk full, I/O error).
                    job.finish(Err(err.clone()));
                    aborted = Some(err);
                    break;
                }
                // Undone by its savepoint; the others still commit.
                Err(err) => job.finish(Err(err)),
            }
        }
        if let Some(err) = aborted {
            tracing::warn!(error = %err, "sqlite: transaction rolled back");
            done.into_iter()
                .chain(jobs)
                .for_each(|job| job.finish(Err(err.clone())));
            continue;
        }
        match conn.execute_batch("COMMIT") {
            Ok(()) => done.into_iter().for_each(|job| job.finish(Ok(()))),
            Err(err) => {
                let err = SqliteError::from(err);
                tracing::warn!(error = %err, calls = done.len(), "sqlite: commit failed");
                let _ = conn.execute_batch("ROLLBACK");
                for job in done {
                    job.finish(Err(err.clone()));
                }
            }
        }
    }
}

/// The writer's view of the WAL.
struct Wal {
    file: PathBuf,
    hard_limit: u64,
    signal: Arc<WalSignal>,
}

impl Wal {
    /// Truncates the WAL if the checkpointer asked or the file is past the hard limit.
    fn bound(&self, conn: &Connection) {
        let asked = self.signal.truncate.swap(false, Ordering::AcqRel);
        let over = || std::fs::metadata(&self.file).is_ok_and(|meta| meta.len() > self.hard_limit);
        if !asked && !over() {
            return;
        }
        match truncate_wal(conn, TRUNCATE_WAIT) {
            Ok(true) => {}
            Ok(false) => tracing::debug!("sqlite: WAL not truncated yet (a reader is on it)"),
            Err(err) => tracing::warn!(error = %err, "sqlite: WAL truncation failed"),
        }
    }
}

/// How long the writer waits for readers to leave the WAL when truncating it between groups.
const TRUNCATE_WAIT: Duration = Duration::from_millis(100);

/// `PRAGMA wal_checkpoint(TRUNCATE)`, waiting at most `wait` for readers; `false` when a reader
/// kept it from completing.
fn truncate_wal(conn: &Connection, wait: Duration) -> Result<bool, SqliteError> {
    conn.busy_timeout(wait)?;
    let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    });
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(busy? == 0)
}

/// The WAL file next to the database file.
fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

fn run_in_savepoint(conn: &Connection, job: &mut dyn Job) -> Result<(), SqliteError> {
    conn.execute_batch("SAVEPOINT call")?;
    match job.run(conn) {
        Ok(()) => {
            conn.execute_batch("RELEASE call")?;
            Ok(())
        }
        Err(err) => {
            conn.execute_batch("ROLLBACK TO call; RELEASE call")?;
            Err(err)
        }
    }
}

/// Every [`CHECKPOINT_EVERY`], a passive checkpoint (it never blocks the writer or readers);
/// a last one when the store is dropped.
///
/// A passive checkpoint alone does not bound the WAL under a steady write load: SQLite only
/// rewinds the WAL when a write transaction starts while every frame in it has been copied,
/// and the writer keeps committing while the checkpoint copies, so that never happens (the
/// WAL grew to 708 MB filling 1 000 sessions). So when the WAL is over `limit` after a passive
/// checkpoint, the writer is asked to finish the job between two groups (see [`Wal::bound`]).
fn checkpoint_loop(conn: &Connection, stop: &mpsc::Receiver<()>, signal: &WalSignal, limit: u64) {
    let page_size = conn
        .query_row("PRAGMA page_size", [], |row| row.get::<_, i64>(0))
        .unwrap_or(4096);
    // A WAL frame is a page and a 24-byte header.
    let frame = u64::try_from(page_size).unwrap_or(4096) + 24;
    loop {
        let last = matches!(
            stop.recv_timeout(CHECKPOINT_EVERY),
            Err(mpsc::RecvTimeoutError::Disconnected) | Ok(())
        );
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            row.get::<_, i64>(1)
        }) {
            Ok(frames) => {
                if u64::try_from(frames).unwrap_or(0).saturating_mul(frame) > limit {
                    signal.truncate.store(true, Ordering::Release);
                }
            }
            Err(err) => tracing::warn!(error = %err, "sqlite: checkpoint failed"),
        }
        if last {
            return;
        }
    }
}

fn read_loop(conn: &Connection, queue: &Mutex<mpsc::Receiver<Box<dyn Job>>>) {
    loop {
        let next = match queue.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(mut job) = next else {
            return;
        };
        let outcome = conn
            .execute_batch("BEGIN")
            .map_err(SqliteError::from)
            .and_then(|()| job.run(conn));
        let _ = conn.execute_batch("COMMIT");
        job.finish(outcome);
    }
}
