//! The single stdout writer, plus small helpers (timestamps, ids, stderr, exit).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

enum Msg {
    Line(String),
    Flush(oneshot::Sender<()>),
}

/// Handle to the writer task. Every line goes through one channel, so lines never interleave.
#[derive(Clone)]
pub(crate) struct Out {
    tx: mpsc::UnboundedSender<Msg>,
}

impl Out {
    /// Spawns the writer task on the current runtime.
    pub(crate) fn spawn() -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        tokio::spawn(async move {
            let mut stdout = tokio::io::stdout();
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Line(mut line) => {
                        line.push('\n');
                        if stdout.write_all(line.as_bytes()).await.is_err()
                            || stdout.flush().await.is_err()
                        {
                            // Host closed our stdout: nothing sensible left to do.
                            std::process::exit(141);
                        }
                    }
                    Msg::Flush(ack) => {
                        let _ = stdout.flush().await;
                        let _ = ack.send(());
                    }
                }
            }
        });
        Self { tx }
    }

    /// Writes one frame as a compact JSON line.
    pub(crate) fn send(&self, frame: &Value) {
        self.raw(frame.to_string());
    }

    /// Writes a raw line (no validation).
    pub(crate) fn raw(&self, line: String) {
        let _ = self.tx.send(Msg::Line(line));
    }

    /// Waits until everything queued so far is written.
    pub(crate) async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.await;
        }
    }

    /// Flushes stdout and exits the process with `code`.
    pub(crate) async fn exit(&self, code: i32) -> ! {
        self.flush().await;
        std::process::exit(code)
    }
}

/// Writes `text` (plus a newline) to stderr, awaiting the write (blocks if nobody drains it).
pub(crate) async fn eprint(text: &str) {
    let mut err = tokio::io::stderr();
    let _ = err.write_all(format!("{text}\n").as_bytes()).await;
    let _ = err.flush().await;
}

/// A fresh v4 UUID string.
pub(crate) fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `len` random lowercase hex characters.
pub(crate) fn hex(len: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..len.min(32)].to_owned()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The current time as `YYYY-MM-DDTHH:MM:SS.mmmZ`, like the CLI's timestamps.
pub(crate) fn timestamp() -> String {
    let ms = now_ms();
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_shape() {
        let t = super::timestamp();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }
}
