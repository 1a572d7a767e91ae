//! `deploy/nginx.conf` as shipped (only the upstream and listen addresses replaced), run by the
//! distribution's nginx in front of two servers (axum and actix, the fake `claude` behind
//! both) sharing a throwaway PostgreSQL. Through nginx: events are not buffered (a turn's
//! first `message_delta` reaches the client while the turn waits on the client's own answer),
//! `Last-Event-ID` resumes exactly, a session created on one server continues on the other
//! when its server stops, and the stream ends with `done`.
//!
//! Needs nginx (`AGENT_WEBKIT_NGINX`, exported by `cargo xtask test`, else found on `PATH` or
//! in `/usr/sbin`) and `AGENT_WEBKIT_PG_DSN`; skips loudly without them, and fails in CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_webkit_testkit::fake_claude::fake_claude_path;
use agent_webkit_testkit::real_cli::TempDir;
use agent_webkit_testkit::{Client, ServerProcess, SseFrame, SseStream};
use common::{dsn_or_skip, fresh_database, skip_loudly};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/nginx.conf");
const TOKEN: &str = "nginx-test-token";
const T: Duration = Duration::from_secs(20);

/// The nginx executable, or `None` after a loud skip (a panic in CI).
fn nginx_or_skip() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("AGENT_WEBKIT_NGINX").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let reason = std::env::var("AGENT_WEBKIT_NGINX_SKIP").ok();
    let found = reason.is_none().then(|| {
        std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain([PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join("nginx"))
            .find(|path| path.is_file())
    });
    if let Some(Some(path)) = found {
        return Some(path);
    }
    let reason = reason.unwrap_or_else(|| "no nginx on PATH or in /usr/sbin".into());
    assert!(
        std::env::var_os("CI").is_none(),
        "nginx is required in CI: {reason}"
    );
    skip_loudly("nginx_proxy", "nginx", &reason);
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `text` with `from` replaced by `to`, which must occur exactly once (so a change to the
/// shipped configuration cannot silently escape this test).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "deploy/nginx.conf must contain `{from}` exactly once"
    );
    text.replacen(from, to, 1)
}

/// nginx running `deploy/nginx.conf` in front of `upstreams`; stopped on drop.
struct Nginx {
    _child: tokio::process::Child,
    base_url: String,
    dir: TempDir,
}

impl Nginx {
    async fn start(bin: &Path, upstreams: [&str; 2]) -> Self {
        let dir = TempDir::new("nginx").unwrap();
        let port = free_port();
        let shipped = std::fs::read_to_string(CONFIG).unwrap();
        let site = replace_once(
            &shipped,
            "server 127.0.0.1:8001 ",
            &format!("server {} ", upstreams[0]),
        );
        let site = replace_once(
            &site,
            "server 127.0.0.1:8002 ",
            &format!("server {} ", upstreams[1]),
        );
        let site = replace_once(&site, "listen 80;", &format!("listen 127.0.0.1:{port};"));
        let d = dir.path().display();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("agent-webkit.conf"), site).unwrap();
        // The http {} block of a distribution's nginx.conf, reduced to what a test needs.
        let main = format!(
            "master_process off;\npid {d}/nginx.pid;\nevents {{ worker_connections 512; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/tmp/body;\n  \
             proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  \
             uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n  \
             include {d}/agent-webkit.conf;\n}}\n"
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, main).unwrap();
        let mut child = tokio::process::Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let up = async {
            loop {
                if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                    return;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(dir.path().join("error.log"));
                    panic!("nginx exited ({status}): {log:?}");
                }
                // Bounded poll: nginx announces nothing when it listens.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(T, up).await.expect("nginx listens");
        Self {
            _child: child,
            base_url: format!("http://{addr}"),
            dir,
        }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

async fn server(framework: &str, db: &str, dir: &TempDir, name: &str) -> ServerProcess {
    let fake = fake_claude_path();
    let config = format!("CLAUDE_CONFIG_DIR={}", dir.path().join(name).display());
    let work = dir.path().join("work").display().to_string();
    ServerProcess::spawn(
        BIN,
        &[
            "--token",
            TOKEN,
            "--framework",
            framework,
            "--agent",
            "claude",
            "--claude-path",
            fake.to_str().unwrap(),
            "--claude-env",
            &config,
            "--allowed-root",
            &work,
            "--database-url",
            db,
            "--host-id",
            name,
            "--lease",
            "2",
            // No keepalive comment within the test's waits: only the events themselves can
            // push a buffering proxy's buffer out.
            "--keepalive",
            "60",
        ],
    )
    .await
    .unwrap()
}

/// Whether `server` holds session `id`: the owner parses the (bad) input and says 400, the
/// other says 503 `session_owned_elsewhere` without doing anything.
async fn holds(server: &ServerProcess, id: &str) -> bool {
    let status = server
        .client(Some(TOKEN))
        .input_raw(id, "{")
        .await
        .unwrap()
        .status()
        .as_u16();
    assert!(status == 400 || status == 503, "probe: {status}");
    status == 400
}

async fn say(client: &Client, id: &str, body: Value) {
    let response = client.input(id, &body).await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 204, "input {body} through nginx: {text}");
}

/// Opens the stream through nginx (asking for gzip, which must not be applied).
async fn open(client: &Client, id: &str, last_event_id: Option<u64>) -> SseStream {
    let mut request = client
        .request(reqwest::Method::GET, &format!("/sessions/{id}/stream"))
        .header("accept", "text/event-stream")
        .header("accept-encoding", "gzip");
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(
        headers.get("content-encoding").is_none(),
        "the event stream must not be compressed: {headers:?}"
    );
    SseStream::new(response)
}

fn ids(frames: &[SseFrame]) -> Vec<u64> {
    frames.iter().filter_map(|f| f.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_behind_the_shipped_nginx_config() {
    let Some(nginx_bin) = nginx_or_skip() else {
        return;
    };
    let Some(admin) = dsn_or_skip("nginx_proxy") else {
        return;
    };
    let db = fresh_database(&admin).await;
    let dir = TempDir::new("nginx-proxy").unwrap();
    std::fs::create_dir_all(dir.path().join("work")).unwrap();
    let mut servers = vec![
        server("axum", &db, &dir, "host-a").await,
        server("actix", &db, &dir, "host-b").await,
    ];
    let upstreams: Vec<String> = servers
        .iter()
        .map(|s| s.base_url.trim_start_matches("http://").to_owned())
        .collect();
    let nginx = Nginx::start(&nginx_bin, [&upstreams[0], &upstreams[1]]).await;
    let client = Client::new(&nginx.base_url, Some(TOKEN));
    let work = dir.path().join("work").display().to_string();

    let id = client.create(&json!({"cwd": work})).await.unwrap();
    let owner = if holds(&servers[0], &id).await { 0 } else { 1 };
    assert!(holds(&servers[owner], &id).await);
    assert!(!holds(&servers[1 - owner], &id).await);

    // Not buffered: the turn streams two deltas, then asks for a permission and waits for
    // this client's answer. The client can answer only what reached it, so the deltas (a few
    // hundred bytes) must arrive while the turn is still open.
    let mut stream = open(&client, &id, None).await;
    say(
        &client,
        &id,
        json!({"type": "user_message", "content": "[[slow: 2]][[bash: ls]]"}),
    )
    .await;
    let first = stream
        .until("permission_request", T)
        .await
        .unwrap_or_else(|e| panic!("events held back by the proxy? {e}\n{}", nginx.error_log()));
    let names: Vec<&str> = first.iter().map(|f| f.event.as_str()).collect();
    let delta = first
        .iter()
        .position(|f| f.event == "message_delta")
        .unwrap_or_else(|| panic!("no delta before the prompt: {names:?}"));
    assert_eq!(names[0], "session_ready");
    assert!(!names.contains(&"result"), "{names:?}");
    let prompt = first.last().unwrap().json();
    let delta_seq = first[delta].id.unwrap();

    // Resume through nginx: exactly the events after the cursor.
    drop(stream);
    let mut resumed = open(&client, &id, Some(delta_seq)).await;
    let again = resumed.until("permission_request", T).await.unwrap();
    let raws = |frames: &[SseFrame]| frames.iter().map(|f| f.raw.clone()).collect::<Vec<_>>();
    assert_eq!(raws(&again), raws(&first[delta + 1..]));
    // Only now does the turn go on: the answer travels through nginx too.
    say(
        &client,
        &id,
        json!({"type": "permission_response", "correlation_id": prompt["correlation_id"], "behavior": "allow"}),
    )
    .await;
    let rest = resumed.until("result", T).await.unwrap();
    let mut seen: Vec<SseFrame> = first.clone();
    seen.extend(rest);
    let last = *ids(&seen).last().unwrap();

    // The session's server stops (graceful: it hands its sessions off). Its stream ends without
    // `done`; the client reconnects through nginx with its cursor and lands on the other one.
    let status = servers[owner]
        .terminate(Duration::from_secs(15))
        .await
        .unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let tail = resumed.collect_to_end(T).await.unwrap();
    assert!(
        tail.iter().all(|f| f.event != "done"),
        "a hand-off is not the end: {tail:?}"
    );
    let last = ids(&tail).last().copied().unwrap_or(last);
    let mut moved = open(&client, &id, Some(last)).await;
    let other = &servers[1 - owner];
    assert!(holds(other, &id).await, "the other server took the session");
    say(
        &client,
        &id,
        json!({"type": "user_message", "content": "still there?"}),
    )
    .await;
    let after = moved.until("result", T).await.unwrap();
    assert_eq!(
        ids(&after),
        (last + 1..last + 1 + ids(&after).len() as u64).collect::<Vec<_>>(),
        "seqs continue densely on the other server"
    );
    assert!(
        after
            .iter()
            .any(|f| f.event == "message_complete" && f.data.contains("echo: still there?")),
        "{after:?}"
    );

    // DELETE through nginx ends the stream with `done`.
    let deleted = client.delete(&id).await.unwrap();
    assert_eq!(deleted, 204);
    let end = moved.collect_to_end(T).await.unwrap();
    assert_eq!(
        end.last().map(|f| f.event.as_str()),
        Some("done"),
        "{end:?}"
    );
    drop(servers);
}
