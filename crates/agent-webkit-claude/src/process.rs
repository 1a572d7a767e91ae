//! The CLI child process: spawn in its own process group, one stdin writer, a size-limited
//! stdout line reader, a stderr drain with a bounded tail, and teardown
//! (close stdin → wait → SIGTERM the group → SIGKILL the group),
//! docs/claude-cli-protocol.md §1.6–1.8.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

use crate::env::Secrets;
use crate::options::LaunchSpec;
use crate::resume::ResumeDir;
use crate::watchdog::Watchdog;

/// Bytes of stderr kept for error messages.
const STDERR_TAIL_BYTES: usize = 8 * 1024;
/// Longest stderr line logged as one line.
const STDERR_LINE_MAX: usize = 64 * 1024;

/// The last few KiB of the CLI's stderr, redacted of configured secrets.
#[derive(Debug, Default)]
pub struct StderrTail {
    lines: Mutex<(VecDeque<String>, usize)>,
    secrets: Secrets,
}

impl StderrTail {
    /// A tail redacting `secrets` from every line.
    pub fn new(secrets: Secrets) -> Self {
        Self {
            lines: Mutex::default(),
            secrets,
        }
    }

    /// Keeps `line` (redacted), dropping the oldest lines beyond the size bound; returns the
    /// redacted line.
    fn push(&self, line: String) -> String {
        let line = self.secrets.redact(&line);
        let kept = line.clone();
        let mut guard = self.lines.lock();
        let (lines, bytes) = &mut *guard;
        *bytes += line.len() + 1;
        lines.push_back(line);
        while *bytes > STDERR_TAIL_BYTES && lines.len() > 1 {
            if let Some(old) = lines.pop_front() {
                *bytes -= old.len() + 1;
            }
        }
        kept
    }

    /// The kept lines joined by newlines (empty when the CLI wrote nothing).
    pub fn text(&self) -> String {
        let guard = self.lines.lock();
        guard.0.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// What the writer task does next.
#[derive(Debug)]
pub enum Outgoing {
    /// Write one JSON line (a newline is appended).
    Line(String),
    /// Close stdin (the CLI finishes its turn and exits).
    Close,
}

/// Why a stdout line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// A line exceeded the configured limit.
    #[error("a stdout line exceeded the limit of {0} bytes")]
    TooLong(usize),
    /// Reading failed.
    #[error("reading stdout failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Splits a byte stream into lines without ever buffering more than `max` bytes of one line.
pub struct LineReader<R> {
    inner: BufReader<R>,
    max: usize,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// A reader enforcing `max` bytes per line.
    pub fn new(inner: R, max: usize) -> Self {
        Self {
            inner: BufReader::with_capacity(64 * 1024, inner),
            max,
            buf: Vec::new(),
        }
    }

    /// The next line without its newline; `None` at EOF (a trailing partial line is returned
    /// as a last line).
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineError> {
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(std::mem::take(&mut self.buf)));
            }
            let (chunk, found, used) = match available.iter().position(|b| *b == b'\n') {
                Some(pos) => (&available[..pos], true, pos + 1),
                None => (available, false, available.len()),
            };
            if self.buf.len() + chunk.len() > self.max {
                return Err(LineError::TooLong(self.max));
            }
            self.buf.extend_from_slice(chunk);
            self.inner.consume(used);
            if found {
                let mut line = std::mem::take(&mut self.buf);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
        }
    }
}

/// A running CLI process (the child itself; stdout is handed to the caller).
pub struct CliProcess {
    child: tokio::sync::Mutex<Child>,
    pid: Option<u32>,
    writer: mpsc::Sender<Outgoing>,
    stderr: Arc<StderrTail>,
    status: Mutex<Option<ExitStatus>>,
    reaped: AtomicBool,
    live: Arc<AtomicUsize>,
    session_id: String,
    /// The materialized config dir of a resumed session, deleted once the child is reaped.
    resume_dir: tokio::sync::Mutex<Option<ResumeDir>>,
    /// Kills the process group if the server dies first.
    watchdog: Arc<Watchdog>,
}

impl std::fmt::Debug for CliProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CliProcess")
            .field("pid", &self.pid)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

impl Drop for CliProcess {
    /// Dropped without being reaped (a failed start, an abandoned session): the child itself is
    /// killed by `kill_on_drop`; its group is killed here while the unreaped leader still pins
    /// the group id, and then forgotten by the watchdog — a registration that outlived its
    /// process could, once the id is reused, make the watchdog kill an unrelated process group.
    fn drop(&mut self) {
        if self.reaped.load(Ordering::Acquire) {
            return;
        }
        self.signal_group(Signal::Kill);
        if let Some(pid) = self.pid {
            self.watchdog.forget(pid);
        }
    }
}

impl CliProcess {
    /// Spawns the CLI described by `spec`. `live` counts processes not yet reaped; `secrets`
    /// are redacted from its stderr before it is logged or kept; `watchdog` kills its process
    /// group should the server die before reaping it.
    pub fn spawn(
        spec: &LaunchSpec,
        session_id: &str,
        live: Arc<AtomicUsize>,
        secrets: &Secrets,
        watchdog: Arc<Watchdog>,
    ) -> std::io::Result<(Arc<Self>, ChildStdout)> {
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .current_dir(&spec.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd.env_clear().envs(&spec.env);
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd.spawn()?;
        live.fetch_add(1, Ordering::AcqRel);
        let pid = child.id();
        if let Some(pid) = pid {
            // Its own process group: the group id is its pid.
            watchdog.register(pid);
        }
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (Some(stdin), Some(stdout), Some(stderr)) = (stdin, stdout, stderr) else {
            // Unreachable with piped stdio; the child is killed on drop.
            live.fetch_sub(1, Ordering::AcqRel);
            return Err(std::io::Error::other("child stdio was not captured"));
        };
        let tail = Arc::new(StderrTail::new(secrets.clone()));
        tokio::spawn(drain_stderr(
            stderr,
            Arc::clone(&tail),
            session_id.to_owned(),
        ));
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(write_stdin(stdin, rx, session_id.to_owned()));
        tracing::info!(session_id, pid, program = %spec.program.display(), "Claude CLI started");
        Ok((
            Arc::new(Self {
                child: tokio::sync::Mutex::new(child),
                pid,
                writer: tx,
                stderr: tail,
                status: Mutex::new(None),
                reaped: AtomicBool::new(false),
                live,
                session_id: session_id.to_owned(),
                resume_dir: tokio::sync::Mutex::new(None),
                watchdog,
            }),
            stdout,
        ))
    }

    /// The OS process id.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The tail of stderr (redacted).
    pub fn stderr_tail(&self) -> String {
        self.stderr.text()
    }

    /// `text` redacted of the secrets this process was started with.
    pub fn redact(&self, text: &str) -> String {
        self.stderr.secrets.redact(text)
    }

    /// The exit status, once reaped.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.status.lock()
    }

    /// Queues one line for stdin. Fails once stdin is closed or the writer died.
    pub async fn send(&self, line: String) -> Result<(), ()> {
        self.writer.send(Outgoing::Line(line)).await.map_err(|_| ())
    }

    /// Closes stdin after every queued line is written.
    pub async fn close_stdin(&self) {
        let _ = self.writer.send(Outgoing::Close).await;
    }

    fn mark_reaped(&self, status: ExitStatus) {
        *self.status.lock() = Some(status);
        if !self.reaped.swap(true, Ordering::AcqRel) {
            self.live.fetch_sub(1, Ordering::AcqRel);
            tracing::info!(session_id = %self.session_id, pid = self.pid, %status, "Claude CLI exited");
        }
        // Tools the CLI started (bash, ...) share its process group: make sure none survive.
        self.signal_group(Signal::Kill);
        if let Some(pid) = self.pid {
            self.watchdog.forget(pid);
        }
    }

    /// Hands over a materialized resume directory: it is deleted once the process has been
    /// reaped (by whichever [`wait_for`](Self::wait_for) sees the exit), or when this is
    /// dropped.
    pub async fn attach_resume_dir(&self, dir: ResumeDir) {
        *self.resume_dir.lock().await = Some(dir);
    }

    /// Waits up to `timeout` for the process to exit; returns its status if it did. Once it
    /// has exited, the resume directory (if any) is gone when this returns.
    pub async fn wait_for(&self, timeout: Duration) -> Option<ExitStatus> {
        let status = self.reap(timeout).await?;
        // Held while deleting, so a concurrent waiter returns only once the directory is gone.
        let mut slot = self.resume_dir.lock().await;
        if let Some(dir) = slot.take() {
            dir.remove().await;
        }
        Some(status)
    }

    async fn reap(&self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exit_status() {
            return Some(status);
        }
        let mut child = self.child.lock().await;
        if let Some(status) = self.exit_status() {
            return Some(status);
        }
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => {
                self.mark_reaped(status);
                Some(status)
            }
            Ok(Err(err)) => {
                tracing::warn!(session_id = %self.session_id, error = %err, "waiting for the CLI failed");
                None
            }
            Err(_) => None,
        }
    }

    fn signal_group(&self, signal: Signal) {
        #[cfg(unix)]
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            use nix::sys::signal::{killpg, Signal as S};
            let sig = match signal {
                Signal::Term => S::SIGTERM,
                Signal::Kill => S::SIGKILL,
            };
            let _ = killpg(nix::unistd::Pid::from_raw(pid), sig);
        }
        #[cfg(not(unix))]
        let _ = signal;
    }

    /// Ends the process: stdin is assumed closed by the caller (and stdout drained); waits
    /// `graceful`, then SIGTERMs the process group and waits `terminate`, then SIGKILLs it.
    pub async fn terminate(&self, graceful: Duration, terminate: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.wait_for(graceful).await {
            return Some(status);
        }
        tracing::warn!(session_id = %self.session_id, pid = self.pid, "Claude CLI did not exit after stdin closed; sending SIGTERM");
        self.signal_group(Signal::Term);
        if let Some(status) = self.wait_for(terminate).await {
            return Some(status);
        }
        tracing::warn!(session_id = %self.session_id, pid = self.pid, "Claude CLI ignored SIGTERM; sending SIGKILL");
        self.signal_group(Signal::Kill);
        {
            let mut child = self.child.lock().await;
            let _ = child.start_kill();
        }
        self.wait_for(terminate).await
    }

    /// Kills the process group at once (unreadable output, failed start).
    pub async fn kill(&self) -> Option<ExitStatus> {
        self.signal_group(Signal::Kill);
        {
            let mut child = self.child.lock().await;
            let _ = child.start_kill();
        }
        self.wait_for(Duration::from_secs(5)).await
    }
}

#[derive(Clone, Copy)]
enum Signal {
    Term,
    Kill,
}

async fn write_stdin(mut stdin: ChildStdin, mut rx: mpsc::Receiver<Outgoing>, session_id: String) {
    while let Some(out) = rx.recv().await {
        match out {
            Outgoing::Line(mut line) => {
                line.push('\n');
                let written = async {
                    stdin.write_all(line.as_bytes()).await?;
                    stdin.flush().await
                }
                .await;
                if let Err(err) = written {
                    tracing::debug!(session_id, error = %err, "CLI stdin closed");
                    break;
                }
            }
            Outgoing::Close => break,
        }
    }
    // Dropping stdin sends EOF; later sends fail because the receiver is gone.
    drop(stdin);
    rx.close();
}

async fn drain_stderr(
    stderr: tokio::process::ChildStderr,
    tail: Arc<StderrTail>,
    session_id: String,
) {
    let mut reader = LineReader::new(stderr, STDERR_LINE_MAX);
    loop {
        match reader.next_line().await {
            Ok(Some(line)) => {
                let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                if line.is_empty() {
                    continue;
                }
                let line = tail.push(line);
                tracing::debug!(session_id, line = %line, "claude stderr");
            }
            Ok(None) => break,
            Err(LineError::TooLong(_)) => {
                // Keep draining: an undrained pipe would block the CLI.
                let _ = tail.push("[stderr line too long, truncated]".into());
                reader.buf.clear();
                let mut sink = [0u8; 8192];
                loop {
                    use tokio::io::AsyncReadExt;
                    match reader.inner.read(&mut sink).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) if sink[..n].contains(&b'\n') => break,
                        Ok(_) => {}
                    }
                }
            }
            Err(LineError::Io(_)) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn lines_are_split_and_limited() {
        let data: &[u8] = b"{\"a\":1}\r\n\n{\"b\":2}\npartial";
        let mut r = LineReader::new(data, 100);
        assert_eq!(r.next_line().await.unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(r.next_line().await.unwrap().unwrap(), b"");
        assert_eq!(r.next_line().await.unwrap().unwrap(), b"{\"b\":2}");
        assert_eq!(r.next_line().await.unwrap().unwrap(), b"partial");
        assert!(r.next_line().await.unwrap().is_none());

        let long = vec![b'x'; 300];
        let mut r = LineReader::new(&long[..], 100);
        assert!(matches!(r.next_line().await, Err(LineError::TooLong(100))));
    }

    #[tokio::test]
    async fn a_process_dropped_unreaped_leaves_the_watchdog_and_takes_its_group() {
        let spec = LaunchSpec {
            program: "/bin/sh".into(),
            // A member of the group that would outlive the leader.
            args: vec!["-c".into(), "sleep 30 & exec sleep 30".into()],
            cwd: std::env::temp_dir(),
            env: [("PATH".into(), "/usr/bin:/bin".into())]
                .into_iter()
                .collect(),
            config_dir: std::env::temp_dir(),
        };
        let watchdog = Arc::new(Watchdog::new());
        let live = Arc::new(AtomicUsize::new(0));
        let (process, _stdout) = CliProcess::spawn(
            &spec,
            "s",
            Arc::clone(&live),
            &Secrets::default(),
            Arc::clone(&watchdog),
        )
        .unwrap();
        let pgid = process.pid.unwrap();
        assert_eq!(watchdog.registered(), vec![pgid]);
        drop(process);
        assert!(
            watchdog.registered().is_empty(),
            "a dropped process stays registered: the watchdog would kill its id once reused"
        );
        // The whole group is gone (the background `sleep` too), bounded.
        let group = nix::unistd::Pid::from_raw(i32::try_from(pgid).unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while nix::sys::signal::killpg(group, None).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the group outlived the drop"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn stderr_tail_is_redacted() {
        let tail = StderrTail::new(Secrets::new(["hunter2"]));
        assert_eq!(
            tail.push("password=hunter2!".into()),
            "password=[redacted]!"
        );
        assert_eq!(tail.text(), "password=[redacted]!");
    }

    #[test]
    fn stderr_tail_is_bounded() {
        let tail = StderrTail::default();
        for i in 0..2000 {
            tail.push(format!("line {i} {}", "y".repeat(20)));
        }
        let text = tail.text();
        assert!(text.len() <= STDERR_TAIL_BYTES + 64);
        assert!(text.ends_with(&format!("line 1999 {}", "y".repeat(20))));
    }
}
