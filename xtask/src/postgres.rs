//! A throwaway PostgreSQL for the test run: `initdb` in a fresh temp folder, a server on a free
//! loopback port, stopped (and the folder removed) when the [`PgHandle`] is stopped or dropped.
//!
//! Server binaries come from `PATH`, `/usr/lib/postgresql/*/bin` (newest first) or
//! `/usr/local/bin`; when none are found and we are root, `apt-get install -y postgresql`.
//! As root, the server runs as the `postgres` OS user (it refuses to run as root).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Environment variable through which the tests receive the admin DSN.
pub const DSN_ENV: &str = "AGENT_WEBKIT_PG_DSN";

/// Environment variable through which the tests learn why PostgreSQL is unavailable.
pub const SKIP_ENV: &str = "AGENT_WEBKIT_PG_SKIP";

/// Environment variable through which the tests receive a shell command line (for `sh -c`)
/// that restarts the throwaway server (`pg_ctl restart -m fast -w`, same port and options).
pub const RESTART_ENV: &str = "AGENT_WEBKIT_PG_RESTART";

const DIR_PREFIX: &str = "agent-webkit-pg-";
const SERVER_USER: &str = "postgres";

/// A running throwaway server. Stopped by [`PgHandle::stop`] or on drop.
pub struct PgHandle {
    dir: PathBuf,
    bin: PathBuf,
    as_user: Option<&'static str>,
    dsn: String,
    version: String,
    stopped: bool,
}

impl PgHandle {
    /// `postgres://postgres:<password>@127.0.0.1:<port>/postgres`.
    pub fn dsn(&self) -> &str {
        &self.dsn
    }

    /// The server's `postgres --version`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// A shell command line (for `sh -c`) that restarts the server the way xtask runs
    /// `pg_ctl`: as the same OS user, in the server folder, `-m fast`, waiting (up to 60 s)
    /// until it accepts connections again. `pg_ctl restart` reuses the previous start's
    /// options (`postmaster.opts`), so the port and settings stay the same.
    pub fn restart_command(&self) -> String {
        let mut words: Vec<String> = vec![
            "cd".into(),
            shell_quote(&self.dir.to_string_lossy()),
            "&&".into(),
            "exec".into(),
            "env".into(),
            "-u".into(),
            "PGDATA".into(),
            "LC_ALL=C".into(),
        ];
        if let Some(user) = self.as_user {
            words.extend(["runuser", "-u", user, "--"].map(String::from));
        }
        words.push(shell_quote(&self.bin.join("pg_ctl").to_string_lossy()));
        words.push("-D".into());
        words.push(shell_quote(&self.dir.join("data").to_string_lossy()));
        words.push("-l".into());
        words.push(shell_quote(&self.dir.join("server.log").to_string_lossy()));
        words.extend(["-m", "fast", "-w", "-t", "60", "restart"].map(String::from));
        words.join(" ")
    }

    /// `pg_ctl stop -m fast`, then removes the folder. Idempotent.
    pub fn stop(&mut self) -> Result<(), String> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let data = self.dir.join("data");
        let result = if data.join("postmaster.pid").exists() {
            pg_ctl_stop(&self.bin, self.as_user, &self.dir, "fast")
        } else {
            Ok(())
        };
        let removed = std::fs::remove_dir_all(&self.dir)
            .map_err(|e| format!("cannot remove {}: {e}", self.dir.display()));
        result.and(removed)
    }
}

impl Drop for PgHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("xtask: stopping the throwaway PostgreSQL: {e}");
        }
    }
}

/// `s` as one POSIX shell word (single-quoted).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs `cmd` with its output captured, killing it after `limit`.
pub(crate) fn run_bounded(mut cmd: Command, what: &str, limit: Duration) -> Result<Output, String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
            Err(format!("{what}: timed out after {limit:?}"))
        }
    }
}

pub(crate) fn text(output: &Output) -> String {
    format!(
        "{} {}",
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
    .trim()
    .to_owned()
}

/// A command for a server binary, as the `postgres` OS user when we are root.
fn server_cmd(bin: &Path, name: &str, as_user: Option<&str>, cwd: &Path) -> Command {
    let program = bin.join(name);
    let mut cmd = match as_user {
        Some(user) => {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", user, "--"]).arg(program);
            cmd
        }
        None => Command::new(program),
    };
    cmd.current_dir(cwd).env("LC_ALL", "C").env_remove("PGDATA");
    cmd
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|name| dir.join(name).is_file())
}

/// Folders holding `initdb`, `pg_ctl` and `postgres`, in order of preference.
fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                    Some((version, e.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
    dirs.extend(versioned.into_iter().map(|(_, dir)| dir));
    dirs.push(PathBuf::from("/usr/local/bin"));
    dirs.retain(|dir| has_server_binaries(dir));
    dirs
}

/// The first folder whose `postgres --version` works; `(bin dir, version)`.
fn find_binaries() -> Result<(PathBuf, String), String> {
    let mut problems = Vec::new();
    for dir in candidate_dirs() {
        let mut cmd = Command::new(dir.join("postgres"));
        cmd.arg("--version");
        match run_bounded(cmd, "postgres --version", Duration::from_secs(20)) {
            Ok(out) if out.status.success() => {
                // `initdb` refuses a `postgres` of another version; resolve symlinks so that
                // /usr/local/bin links lead to the real folder.
                let real = dir
                    .join("postgres")
                    .canonicalize()
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .filter(|d| has_server_binaries(d))
                    .unwrap_or(dir);
                return Ok((real, String::from_utf8_lossy(&out.stdout).trim().to_owned()));
            }
            Ok(out) => problems.push(format!("{}: {}", dir.display(), text(&out))),
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Err(
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found in PATH, \
             /usr/lib/postgresql/*/bin or /usr/local/bin"
                .into(),
        )
    } else {
        Err(problems.join("; "))
    }
}

fn apt_install() -> Result<(), String> {
    eprintln!("xtask: no PostgreSQL server binaries; apt-get install -y postgresql");
    for args in [
        &["update"][..],
        &["install", "-y", "--no-install-recommends", "postgresql"][..],
    ] {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        let out = run_bounded(cmd, "apt-get", Duration::from_secs(600))?;
        if !out.status.success() {
            let all = text(&out);
            let tail: String = all
                .chars()
                .rev()
                .take(600)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(format!(
                "apt-get {} failed ({}): {tail}",
                args[0], out.status
            ));
        }
    }
    Ok(())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !filled {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = nanos ^ u128::from(std::process::id());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

fn chown_to(user: &str, dir: &Path) -> Result<(), String> {
    let out = run_bounded(
        {
            let mut cmd = Command::new("chown");
            cmd.arg("-R").arg(format!("{user}:")).arg(dir);
            cmd
        },
        "chown",
        Duration::from_secs(30),
    )?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("chown {user} {}: {}", dir.display(), text(&out)))
    }
}

fn pg_ctl_stop(bin: &Path, as_user: Option<&str>, dir: &Path, mode: &str) -> Result<(), String> {
    let mut cmd = server_cmd(bin, "pg_ctl", as_user, dir);
    cmd.arg("-D")
        .arg(dir.join("data"))
        .args(["-m", mode, "-w", "-t", "30", "stop"]);
    let out = run_bounded(cmd, "pg_ctl stop", Duration::from_secs(40))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("pg_ctl stop failed: {}", text(&out)))
    }
}

/// Stops and removes servers left behind by xtask runs that died (e.g. Ctrl-C): folders
/// `agent-webkit-pg-<pid>-…` whose xtask pid no longer exists.
fn sweep_stale(bin: &Path, as_user: Option<&str>) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = entry.path();
        if dir.join("data/postmaster.pid").exists() {
            let _ = pg_ctl_stop(bin, as_user, &dir, "immediate");
        }
        if std::fs::remove_dir_all(&dir).is_ok() {
            eprintln!(
                "xtask: removed a stale throwaway PostgreSQL: {}",
                dir.display()
            );
        }
    }
}

/// Starts a throwaway server; see the module docs.
pub fn start() -> Result<PgHandle, String> {
    let root = is_root();
    let (bin, version) = match find_binaries() {
        Ok(found) => found,
        Err(reason) if root => {
            apt_install().map_err(|e| format!("{reason}; installing failed: {e}"))?;
            find_binaries()?
        }
        Err(reason) => return Err(format!("{reason} (and not root, so no apt-get install)")),
    };
    let as_user = if root {
        let known = Command::new("id")
            .arg(SERVER_USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !known {
            return Err(format!(
                "running as root but there is no `{SERVER_USER}` OS user to run the server as"
            ));
        }
        Some(SERVER_USER)
    } else {
        None
    };
    sweep_stale(&bin, as_user);

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // From here on the handle owns the folder: an early return removes it (and stops the
    // server once there is one).
    let mut handle = PgHandle {
        dir: dir.clone(),
        bin: bin.clone(),
        as_user,
        dsn: String::new(),
        version,
        stopped: false,
    };
    let password = random_hex(16);
    let pwfile = dir.join("pwfile");
    std::fs::write(&pwfile, format!("{password}\n"))
        .map_err(|e| format!("cannot write {}: {e}", pwfile.display()))?;
    if let Some(user) = as_user {
        chown_to(user, &dir)?;
    }

    let mut initdb = server_cmd(&bin, "initdb", as_user, &dir);
    initdb
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync"])
        .args(["--auth=scram-sha-256", "--pwfile"])
        .arg(&pwfile);
    let out = run_bounded(initdb, "initdb", Duration::from_secs(120))?;
    if !out.status.success() {
        return Err(format!("initdb failed ({}): {}", out.status, text(&out)));
    }

    let port = free_port()?;
    let options = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
         -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
         -c shared_buffers=32MB -c max_connections=200 -c max_wal_size=256MB",
        dir.display()
    );
    let mut pg_ctl = server_cmd(&bin, "pg_ctl", as_user, &dir);
    pg_ctl
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-l")
        .arg(dir.join("server.log"))
        .args(["-w", "-t", "60", "-o", &options, "start"]);
    let out = run_bounded(pg_ctl, "pg_ctl start", Duration::from_secs(70))?;
    if !out.status.success() {
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        return Err(format!(
            "pg_ctl start failed ({}): {} {}",
            out.status,
            text(&out),
            log.trim()
        ));
    }
    // pg_ctl -w waited for "ready"; also make sure TCP accepts (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("the server does not accept connections on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    handle.dsn = format!("postgres://postgres:{password}@127.0.0.1:{port}/postgres");
    Ok(handle)
}

/// The loud line printed when the Postgres tests cannot run.
pub fn skip_banner(reason: &str) -> String {
    let line = "=".repeat(78);
    format!("{line}\nPOSTGRES TESTS: SKIPPED — {reason}\n{line}")
}
