//! Operations: Prometheus `/metrics` values after a scripted session (replay agent, both
//! frameworks; the fake `claude` for agent processes, their memory and the stores), the
//! separate `--metrics-listen` address, `/readyz` flipping with a missing CLI, while draining
//! for shutdown (SIGTERM with `--drain-delay`), and with the session database refusing
//! connections (PostgreSQL; skips loudly without `AGENT_WEBKIT_PG_DSN`), and the log format.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use agent_webkit_testkit::fake_claude::{fake_claude_path, fake_claude_server};
use agent_webkit_testkit::real_cli::TempDir;
use agent_webkit_testkit::{Client, ServerProcess};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(30);
const TOKEN: &str = "ops-test-token";

/// Samples of a Prometheus text page: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn metrics(client: &Client) -> HashMap<String, f64> {
    let response = client
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    samples(&response.text().await.unwrap())
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no sample {series} in {samples:#?}"))
}

async fn readyz(client: &Client) -> (u16, Value) {
    let response = client
        .request(reqwest::Method::GET, "/readyz")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Polls `/readyz` (the verdict is cached for a second) until it answers `status`.
async fn readyz_until(client: &Client, status: u16) -> Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let (now, body) = readyz(client).await;
        if now == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {now} {body}, expected {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `metrics on http://ADDR/metrics` line is printed after `listening on`: the testkit
/// drains stdout, so the test asks the OS for a free port and passes it.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn scripted_session_counts(framework: &str) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = ServerProcess::spawn(
        BIN,
        &[
            "--framework",
            framework,
            "--agent",
            "replay",
            "--store",
            "memory",
            "--token",
            TOKEN,
            "--metrics-listen",
            &listen,
        ],
    )
    .await
    .unwrap();
    let client = server.client(Some(TOKEN));
    let anonymous = server.client(None);
    let response = anonymous
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "/metrics needs the token");

    let id = client.create(&json!({"model": "stream:5"})).await.unwrap();
    let mut stream = client.stream(&id, None).await.unwrap();
    assert_eq!(
        client
            .input(&id, &json!({"type": "user_message", "content": "hi"}))
            .await
            .unwrap()
            .status(),
        204
    );
    let frames = stream.until("result", T).await.unwrap();
    let events = frames.iter().filter(|f| f.id.is_some()).count() as f64;
    let messages = frames
        .iter()
        .filter(|f| f.event == "message_complete")
        .count();
    assert_eq!(messages, 5, "stream:5 sends five messages: {frames:?}");
    let missing = client
        .input(
            "00000000-0000-4000-8000-000000000000",
            &json!({"type": "interrupt"}),
        )
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let m = metrics(&client).await;
    let http = |method: &str, route: &str, status: u16| {
        format!(
            "agent_webkit_http_responses_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
        )
    };
    assert_eq!(value(&m, &http("POST", "/sessions", 200)), 1.0);
    assert_eq!(value(&m, &http("GET", "/sessions/{id}/stream", 200)), 1.0);
    assert_eq!(value(&m, &http("POST", "/sessions/{id}/input", 204)), 1.0);
    assert_eq!(value(&m, &http("POST", "/sessions/{id}/input", 404)), 1.0);
    assert_eq!(value(&m, &http("GET", "/metrics", 401)), 1.0);
    assert!(
        !m.keys().any(|k| k.contains(&id) || k.contains("00000000-")),
        "no session id in any label"
    );
    assert_eq!(
        value(&m, "agent_webkit_agent_starts_total{outcome=\"ok\"}"),
        1.0
    );
    assert_eq!(value(&m, "agent_webkit_agent_start_seconds_count"), 1.0);
    assert_eq!(value(&m, "agent_webkit_turns_total{outcome=\"ok\"}"), 1.0);
    assert_eq!(value(&m, "agent_webkit_turn_seconds_count"), 1.0);
    assert_eq!(value(&m, "agent_webkit_first_delta_seconds_count"), 1.0);
    // Every event the stream delivered was appended (and nothing else was: one session).
    assert_eq!(value(&m, "agent_webkit_events_appended_total"), events);
    assert!(value(&m, "agent_webkit_sse_bytes_written_total") > 0.0);
    assert_eq!(value(&m, "agent_webkit_sessions{state=\"live\"}"), 1.0);
    assert_eq!(value(&m, "agent_webkit_live_agents"), 1.0);
    assert_eq!(value(&m, "agent_webkit_subscribers"), 1.0);
    assert_eq!(value(&m, "agent_webkit_lagged_subscribers_cut_total"), 0.0);

    // The metrics listener: no token, same numbers, nothing else served.
    let other = Client::new(&format!("http://{listen}"), None);
    let page = other
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = samples(&page.text().await.unwrap());
    assert_eq!(value(&page, &http("POST", "/sessions", 200)), 1.0);
    let status = other
        .request(reqwest::Method::POST, "/sessions")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404, "the metrics listener serves /metrics only");

    assert_eq!(client.delete(&id).await.unwrap(), 204);
    drop(stream);
    let m = metrics(&client).await;
    assert_eq!(value(&m, "agent_webkit_sessions{state=\"live\"}"), 0.0);
    assert_eq!(value(&m, &http("DELETE", "/sessions/{id}", 204)), 1.0);
    // `done` was appended by the delete.
    assert_eq!(
        value(&m, "agent_webkit_events_appended_total"),
        events + 1.0
    );
}

#[tokio::test]
async fn metrics_count_a_scripted_session_axum() {
    scripted_session_counts("axum").await;
}

#[tokio::test]
async fn metrics_count_a_scripted_session_actix() {
    scripted_session_counts("actix").await;
}

/// With the fake `claude`: a live CLI's memory is counted, the transcript store and the event
/// persistence (the default SQLite) are timed, and a hibernated session is counted as such.
#[tokio::test]
async fn metrics_count_agent_processes_and_stores() {
    let dir = TempDir::new("ops-metrics").unwrap();
    let (server, work) =
        fake_claude_server(BIN, "axum", dir.path(), &["--claude-warm-spares", "0"], &[])
            .await
            .unwrap();
    let client = server.client(None);
    let id = client.create(&json!({"cwd": work})).await.unwrap();
    let mut stream = client.stream(&id, None).await.unwrap();
    client
        .input(&id, &json!({"type": "user_message", "content": "hello"}))
        .await
        .unwrap();
    stream.until("result", T).await.unwrap();
    let m = metrics(&client).await;
    assert_eq!(value(&m, "agent_webkit_live_agents"), 1.0);
    let live_memory = value(&m, "agent_webkit_agent_memory_bytes");
    assert!(
        live_memory > 1_000_000.0,
        "the fake CLI's resident memory is counted: {live_memory}"
    );
    assert_eq!(value(&m, "agent_webkit_turns_total{outcome=\"ok\"}"), 1.0);
    assert!(value(&m, "agent_webkit_store_writes_total{outcome=\"ok\"}") >= 1.0);
    assert!(value(&m, "agent_webkit_store_write_seconds_count") >= 1.0);
    assert!(value(&m, "agent_webkit_persist_writes_total{outcome=\"ok\"}") >= 1.0);
    assert_eq!(client.delete(&id).await.unwrap(), 204);
    // The CLI is gone once the session is.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let m = metrics(&client).await;
        // What remains is the watchdog shell at most.
        if value(&m, "agent_webkit_agent_memory_bytes") + 500_000.0 < live_memory {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "CLI memory still counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/readyz` is 503 `agent_unavailable` while `--claude-path` names nothing executable, and
/// turns 200 once it does; `/healthz` stays 200 throughout.
#[tokio::test]
async fn readiness_follows_the_cli() {
    let dir = TempDir::new("ops-ready-cli").unwrap();
    let cli = dir.path().join("claude");
    let cli_arg = cli.display().to_string();
    let server = ServerProcess::spawn(
        BIN,
        &[
            "--no-auth",
            "--agent",
            "claude",
            "--store",
            "memory",
            "--claude-path",
            &cli_arg,
        ],
    )
    .await
    .unwrap();
    let client = server.client(None);
    let body = readyz_until(&client, 503).await;
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["reason"], "agent_unavailable");
    let health = client
        .request(reqwest::Method::GET, "/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "liveness is not readiness");
    // Indeed no session starts, and the failed start is counted.
    assert_eq!(client.create_raw(&json!({})).await.unwrap().status(), 503);
    let m = metrics(&client).await;
    assert_eq!(
        value(&m, "agent_webkit_agent_starts_total{outcome=\"error\"}"),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "agent_webkit_http_responses_total{method=\"POST\",route=\"/sessions\",status=\"503\"}"
        ),
        1.0
    );

    // Present but not executable: still not ready.
    std::fs::copy(fake_claude_path(), &cli).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o644)).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the 1 s cache
    assert_eq!(readyz(&client).await.0, 503);
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(readyz_until(&client, 200).await, json!({"status": "ready"}));
}

/// SIGTERM with `--drain-delay`: `/readyz` answers 503 `draining` at once while sessions keep
/// working (a turn runs to its result), then the server shuts down and exits.
async fn readiness_drains(framework: &str) {
    let mut server = ServerProcess::spawn(
        BIN,
        &[
            "--no-auth",
            "--framework",
            framework,
            "--agent",
            "replay",
            "--store",
            "memory",
            "--drain-delay",
            "3",
        ],
    )
    .await
    .unwrap();
    let client = server.client(None);
    assert_eq!(readyz(&client).await, (200, json!({"status": "ready"})));
    let id = client.create(&json!({})).await.unwrap();
    let mut stream = client.stream(&id, None).await.unwrap();
    let pid = server.pid().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let body = readyz_until(&client, 503).await;
    assert_eq!(body["reason"], "draining");
    // Still serving while the load balancer takes it out of rotation.
    let sent = client
        .input(
            &id,
            &json!({"type": "user_message", "content": "still here"}),
        )
        .await
        .unwrap();
    assert_eq!(sent.status(), 204);
    let frames = stream.until("result", T).await.unwrap();
    assert!(frames.iter().any(|f| f.data.contains("still here")));
    // Then the shutdown proper: the stream ends with `done` and the process exits.
    let rest = stream.collect_to_end(T).await.unwrap();
    assert_eq!(rest.last().map(|f| f.event.as_str()), Some("done"));
    let status = server.terminate(T).await.unwrap().expect("exited");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn readiness_drains_on_sigterm_axum() {
    readiness_drains("axum").await;
}

#[tokio::test]
async fn readiness_drains_on_sigterm_actix() {
    readiness_drains("actix").await;
}

/// `/readyz` is 503 `persistence_unavailable` while the session database refuses connections
/// (`ALLOW CONNECTIONS false` and its sessions terminated), and 200 again once it accepts them.
#[tokio::test]
async fn readiness_follows_the_database() {
    let Some(admin) = common::dsn_or_skip("readiness_follows_the_database") else {
        return;
    };
    let url = common::fresh_database(&admin).await;
    let name = url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let server = ServerProcess::spawn(
        BIN,
        &["--no-auth", "--agent", "replay", "--database-url", &url],
    )
    .await
    .unwrap();
    let client = server.client(None);
    assert_eq!(readyz(&client).await.0, 200);
    let id = client.create(&json!({})).await.unwrap();
    let pg = common::connect(&admin).await;
    pg.batch_execute(&format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .await
    .unwrap();
    let body = readyz_until(&client, 503).await;
    assert_eq!(body["reason"], "persistence_unavailable");
    let created = client.create_raw(&json!({})).await.unwrap();
    assert_eq!(
        created.status(),
        503,
        "and indeed no session can be created"
    );
    // The live session's events cannot be written meanwhile: the failed writes are counted.
    let sent = client
        .input(
            &id,
            &json!({"type": "user_message", "content": "during the outage"}),
        )
        .await
        .unwrap();
    assert_eq!(sent.status(), 204);
    let deadline = tokio::time::Instant::now() + T;
    let failed = "agent_webkit_persist_writes_total{outcome=\"error\"}";
    while !metrics(&client)
        .await
        .get(failed)
        .is_some_and(|n| *n >= 1.0)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed write counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pg.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    readyz_until(&client, 200).await;
    client.create(&json!({})).await.unwrap();
}

/// Starts the server with stderr piped, waits for it to listen, makes one request, stops it,
/// and returns what it logged.
async fn logged(extra: &[&str]) -> String {
    let mut child = tokio::process::Command::new(BIN)
        .args(["--no-auth", "--agent", "replay", "--store", "memory"])
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(extra)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(T, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.split("listening on ").nth(1) {
                return url.trim().to_owned();
            }
        }
        panic!("no listening line");
    })
    .await
    .unwrap();
    Client::new(&url, None).create(&json!({})).await.unwrap();
    let pid = child.id().unwrap().to_string();
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    child.wait().await.unwrap();
    stderr
}

#[tokio::test]
async fn log_format_json_lines_and_no_colours_off_a_terminal() {
    let text = logged(&[]).await;
    assert!(text.contains("session created"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escapes in a piped log:\n{text}"
    );

    let json_log = logged(&["--log-format", "json"]).await;
    let lines: Vec<Value> = json_log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let created = lines
        .iter()
        .find(|l| l["fields"]["message"] == "session created")
        .unwrap_or_else(|| panic!("{json_log}"));
    assert_eq!(created["level"], "INFO");
    assert!(created["fields"]["session_id"].is_string(), "{created}");
    assert_eq!(created["span"]["name"], "request");
    assert_eq!(created["span"]["http.route"], "/sessions");
}
