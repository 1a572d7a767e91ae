//! The database file and the threads that own its connections: one writer that commits
//! whatever has queued up as one transaction (group commit, one savepoint per call), and a
//! few readers. Async callers never block: they queue a closure and await its answer.

use std::path::{Path, PathBuf};
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
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Process,
            readers: 2,
        }
    }
}

/// One queued call: runs on a connection thread, answers after its transaction ended.
trait Job: Send {
    fn run(&mut self, conn: &Connection) -> Result<(), SqliteError>;
    fn finish(self: Box<Self>, outcome: Result<(), SqliteError>);
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
        // Checkpoints (which sync the disk) run on their own thread, never in a commit.
        writer_conn
            .execute_batch("PRAGMA wal_autocheckpoint = 0")
            .map_err(|e| SqliteError::from(e).at(path))?;
        let (checkpoints, stop) = mpsc::channel::<()>();
        let checkpoint_conn = connect(path, options.durability)?;
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpoint_conn, &stop))
            .map_err(at)?;
        let (writer, writer_rx) = mpsc::channel::<Box<dyn Job>>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(&writer_conn, &writer_rx))
            .map_err(at)?;
        let (readers, readers_rx) = mpsc::channel::<Box<dyn Job>>();
        let readers_rx = Arc::new(Mutex::new(readers_rx));
        for n in 0..options.readers.max(1) {
            let conn = connect(path, options.durability)?;
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
fn write_loop(conn: &Connection, queue: &mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
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
fn checkpoint_loop(conn: &Connection, stop: &mpsc::Receiver<()>) {
    loop {
        let last = matches!(
            stop.recv_timeout(CHECKPOINT_EVERY),
            Err(mpsc::RecvTimeoutError::Disconnected) | Ok(())
        );
        if let Err(err) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
            tracing::warn!(error = %err, "sqlite: checkpoint failed");
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
