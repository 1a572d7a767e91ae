//! The watchdog that makes sure no CLI outlives the server, even when the server is killed
//! with SIGKILL and runs no cleanup at all.
//!
//! One `/bin/sh` per factory reads process-group ids from a pipe (`+PGID` registers a CLI's
//! group, `-PGID` forgets a reaped one). Only the server holds the pipe's write end (Rust opens
//! pipes close-on-exec, so no CLI or tool inherits it): when the server dies, for whatever
//! reason, the kernel closes it, the shell reads EOF and SIGKILLs every group still registered
//! — the CLI and every tool it started. The shell runs in its own process group and ignores
//! SIGINT/SIGHUP/SIGTERM, so a signal aimed at the server's group does not take it first.
//! A CLI idle on stdin would exit on EOF anyway; one in the middle of a turn would not.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Stdio;

use parking_lot::Mutex;

/// The watchdog's program: register/forget groups until EOF, then kill what is registered.
const SCRIPT: &str = r#"trap '' INT HUP TERM
groups=' '
while IFS= read -r line; do
  case "$line" in
    +*) groups="$groups${line#+} " ;;
    -*) gone=${line#-}; kept=' '
        for g in $groups; do [ "$g" = "$gone" ] || kept="$kept$g "; done
        groups=$kept ;;
  esac
done
for g in $groups; do kill -KILL "-$g" 2>/dev/null; done
"#;

/// One watchdog process, started on first use and restarted if it died.
#[derive(Default)]
pub struct Watchdog {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The write end of the watchdog's stdin (`None`: not running).
    pipe: Option<std::fs::File>,
    /// Its process (reaped by tokio once dropped).
    child: Option<tokio::process::Child>,
    /// Registered process groups (re-sent to a restarted watchdog).
    groups: BTreeSet<u32>,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("Watchdog")
            .field("pid", &state.child.as_ref().and_then(|c| c.id()))
            .field("groups", &state.groups.len())
            .finish()
    }
}

impl Watchdog {
    /// A watchdog that starts its process on the first [`register`](Self::register).
    pub fn new() -> Self {
        Self::default()
    }

    /// The process groups registered now (for tests).
    #[cfg(test)]
    pub(crate) fn registered(&self) -> Vec<u32> {
        self.state.lock().groups.iter().copied().collect()
    }

    /// Kill process group `pgid` if the server dies before [`forget`](Self::forget).
    pub fn register(&self, pgid: u32) {
        let mut state = self.state.lock();
        state.groups.insert(pgid);
        if state.pipe.is_none() {
            state.start();
            return; // start() sends every registered group.
        }
        state.send(&format!("+{pgid}\n"));
    }

    /// Process group `pgid` is gone (reaped): never kill it (its id may be reused).
    pub fn forget(&self, pgid: u32) {
        let mut state = self.state.lock();
        if state.groups.remove(&pgid) && state.pipe.is_some() {
            state.send(&format!("-{pgid}\n"));
        }
    }

    /// The watchdog's process id, once started.
    pub fn pid(&self) -> Option<u32> {
        self.state.lock().child.as_ref().and_then(|c| c.id())
    }
}

impl State {
    /// Starts the shell and sends it every registered group. Logs and gives up on failure
    /// (the CLIs still run; they are only unprotected against a killed server).
    fn start(&mut self) {
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .args(["-c", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(false);
        #[cfg(unix)]
        command.process_group(0);
        let spawned = command.spawn().and_then(|mut child| {
            let stdin = child
                .stdin
                .take()
                .ok_or_else(|| std::io::Error::other("watchdog stdin not captured"))?;
            let fd = stdin.into_owned_fd()?;
            Ok((child, std::fs::File::from(fd)))
        });
        match spawned {
            Ok((child, pipe)) => {
                tracing::debug!(pid = child.id(), "CLI watchdog started");
                self.child = Some(child);
                self.pipe = Some(pipe);
                let all: String = self.groups.iter().map(|g| format!("+{g}\n")).collect();
                if !all.is_empty() {
                    self.send(&all);
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot start the CLI watchdog: CLIs may outlive a killed server");
            }
        }
    }

    /// Writes to the watchdog; restarts it once if it is gone.
    fn send(&mut self, text: &str) {
        let Some(pipe) = self.pipe.as_mut() else {
            return;
        };
        // A few bytes into a pipe the shell keeps draining: does not block in practice.
        if let Err(err) = pipe.write_all(text.as_bytes()) {
            tracing::warn!(error = %err, "the CLI watchdog is gone; restarting it");
            self.pipe = None;
            self.child = None;
            self.start();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::{Duration, Instant};

    /// A `sleep` in its own process group, with a child of its own in that group.
    fn group() -> std::process::Child {
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "sleep 600 & sleep 600"]);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.spawn().unwrap()
    }

    /// Waits (bounded) for our child to exit; `None` if it is still running.
    fn exited_within(child: &mut std::process::Child, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[tokio::test]
    async fn registered_groups_die_with_the_pipe_and_forgotten_ones_do_not() {
        let mut kept = group();
        let mut forgotten = group();
        let watchdog = Watchdog::new();
        watchdog.register(kept.id());
        watchdog.register(forgotten.id());
        watchdog.forget(forgotten.id());
        assert!(watchdog.pid().is_some());
        // The server "dies": its end of the pipe closes.
        drop(watchdog);
        assert!(exited_within(&mut kept, Duration::from_secs(10)));
        assert!(!exited_within(&mut forgotten, Duration::from_millis(300)));
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(i32::try_from(forgotten.id()).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
        assert!(exited_within(&mut forgotten, Duration::from_secs(10)));
    }

    #[tokio::test]
    async fn a_dead_watchdog_is_restarted_with_every_group() {
        let mut child = group();
        let watchdog = Watchdog::new();
        watchdog.register(child.id());
        let first = watchdog.pid().unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(first).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
        // Writes fail once the shell is gone (EPIPE); the next one restarts it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while watchdog.pid() == Some(first) {
            assert!(Instant::now() < deadline, "watchdog not restarted");
            watchdog.register(u32::MAX - 1);
            watchdog.forget(u32::MAX - 1);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(watchdog);
        assert!(exited_within(&mut child, Duration::from_secs(10)));
    }
}
