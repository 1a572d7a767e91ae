//! `GET /sessions` and `GET /sessions/{id}` across process boundaries: after a restart on the
//! same data directory (SQLite, the default store) the sessions are listed as hibernated with
//! their title, usage and last seq; with PostgreSQL a second host lists the first host's
//! sessions as `remote`, then, once the first host is killed and its leases expire, as
//! `hibernated`, and after taking one over as live. Also: the audit table receives the rows of
//! the actions taken, and `--audit-retention-days` prunes old ones. The PostgreSQL tests need
//! `AGENT_WEBKIT_PG_DSN` (exported by `cargo xtask test`); they skip loudly otherwise. And
//! ownership: after a restart and across hosts, a JWT principal sees and resumes only its own
//! sessions; another principal gets the unknown-id answers and takes nothing over.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use agent_webkit_testkit::jwt_keys::{claims, hs256, SECRET};
use agent_webkit_testkit::real_cli::TempDir;
use agent_webkit_testkit::{Client, ServerProcess};
use common::{connect, dsn_or_skip, fresh_database};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(20);

async fn server(args: &[&str]) -> ServerProcess {
    let mut all = vec!["--no-auth", "--agent", "replay"];
    all.extend_from_slice(args);
    ServerProcess::spawn(BIN, &all).await.unwrap()
}

async fn get(client: &Client, path: &str) -> Value {
    let r = client
        .request(reqwest::Method::GET, path)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    r.json().await.unwrap()
}

fn entry<'a>(page: &'a Value, id: &str) -> &'a Value {
    page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["session_id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {page}"))
}

/// Runs one echo turn on `id` and returns the seq of its `result`.
async fn echo_turn(client: &Client, id: &str, text: &str) -> u64 {
    let mut stream = client.stream(id, None).await.unwrap();
    let r = client
        .input(id, &json!({"type": "user_message", "content": text}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let frames = stream.until("result", T).await.unwrap();
    frames.last().unwrap().id.unwrap()
}

/// Polls `GET /sessions` (bounded) until `id`'s state is `state`: lease expiry is a deadline
/// on the database clock, not an event a test can await.
async fn until_state(client: &Client, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let page = get(client, "/sessions").await;
        if entry(&page, id)["state"] == state {
            return page;
        }
        assert!(Instant::now() < deadline, "{id} never {state}: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sessions_are_listed_after_a_restart() {
    let dir = TempDir::new("listing-restart").unwrap();
    let data = dir.path().join("data").display().to_string();
    let mut a = server(&["--data-dir", &data]).await;
    let ca = a.client(None);
    let first = ca.create(&json!({"model": "echo"})).await.unwrap();
    // A mode change is persisted with the next event batch.
    let mode = json!({"type": "set_permission_mode", "mode": "plan"});
    assert_eq!(ca.input(&first, &mode).await.unwrap().status(), 204);
    let last_seq = echo_turn(&ca, &first, "remember the kiwi").await;
    let second = ca.create(&json!({"model": "echo"})).await.unwrap();
    let before = get(&ca, "/sessions").await;
    assert_eq!(entry(&before, &first)["state"], "idle");
    a.terminate(T).await.unwrap();

    let b = server(&["--data-dir", &data]).await;
    let cb = b.client(None);
    let after = get(&cb, "/sessions").await;
    let ids: Vec<&str> = after["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()], "{after}");
    let listed = entry(&after, &first);
    assert_eq!(listed["state"], "hibernated", "{listed}");
    assert_eq!(listed["title"], "remember the kiwi", "{listed}");
    assert_eq!(listed["usage"]["turns"], 1, "{listed}");
    assert_eq!(listed["model"], "echo", "{listed}");
    assert_eq!(listed["permission_mode"], "plan", "{listed}");
    for field in ["created_at", "last_activity_at", "title", "usage"] {
        assert_eq!(
            listed[field],
            entry(&before, &first)[field],
            "{field} survives"
        );
    }
    let detail = get(&cb, &format!("/sessions/{first}")).await;
    assert_eq!(detail["last_seq"], last_seq, "{detail}");
    assert_eq!(detail["prompts"], json!([]), "{detail}");
    // Taken over by its next request: live again, totals continued.
    echo_turn(&cb, &first, "again").await;
    // The order comes from the stored rows, whose activity is written with the session's
    // event batches: bounded poll until the resumed session's row leads.
    let deadline = Instant::now() + T;
    let live = loop {
        let page = get(&cb, "/sessions").await;
        if page["sessions"][0]["session_id"] == first.as_str() {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "the newest activity is first: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let listed = entry(&live, &first);
    assert_eq!(listed["state"], "idle", "{listed}");
    assert_eq!(listed["usage"]["turns"], 2, "{listed}");
    assert_eq!(listed["title"], "remember the kiwi", "{listed}");
    assert_eq!(
        listed["permission_mode"], "plan",
        "resumed with the mode last set: {listed}"
    );
}

#[tokio::test]
async fn another_host_lists_sessions_through_failover() {
    let Some(admin) = dsn_or_skip("listing_failover") else {
        return;
    };
    let db = fresh_database(&admin).await;
    let host = |name: &'static str| {
        let db = db.clone();
        async move { server(&["--database-url", &db, "--host-id", name, "--lease", "1"]).await }
    };
    let a = host("host-a").await;
    let b = host("host-b").await;
    let (ca, cb) = (a.client(None), b.client(None));
    let id = ca.create(&json!({"model": "echo"})).await.unwrap();
    let last_seq = echo_turn(&ca, &id, "hello from a").await;

    let page = get(&cb, "/sessions").await;
    let listed = entry(&page, &id);
    assert_eq!(listed["state"], "remote", "{listed}");
    assert_eq!(listed["pending_prompts"], Value::Null, "{listed}");
    assert_eq!(listed["title"], "hello from a", "{listed}");
    assert_eq!(listed["usage"]["turns"], 1, "{listed}");
    let detail = get(&cb, &format!("/sessions/{id}")).await;
    assert_eq!(detail["last_seq"], last_seq, "{detail}");
    assert_eq!(
        detail["prompts"],
        Value::Null,
        "unknown on another host: {detail}"
    );

    drop(a); // SIGKILL: its lease runs out within a second
    until_state(&cb, &id, "hibernated").await;
    echo_turn(&cb, &id, "hello from b").await;
    let page = until_state(&cb, &id, "idle").await;
    let listed = entry(&page, &id);
    assert_eq!(listed["usage"]["turns"], 2, "{listed}");
    assert_eq!(listed["title"], "hello from a", "{listed}");
}

#[tokio::test]
async fn audit_rows_land_in_postgres_and_old_ones_are_pruned() {
    let Some(admin) = dsn_or_skip("listing_audit") else {
        return;
    };
    let db = fresh_database(&admin).await;
    let a = server(&["--database-url", &db, "--host-id", "audit-host"]).await;
    let c = a.client(None);
    let id = c.create(&json!({"model": "read_allow"})).await.unwrap();
    let mut stream = c.stream(&id, None).await.unwrap();
    let send = |body: Value| {
        let c = c.clone();
        let id = id.clone();
        async move {
            let r = c.input(&id, &body).await.unwrap();
            assert_eq!(r.status(), 204, "{body}");
        }
    };
    send(json!({"type": "user_message", "content": "first line?"})).await;
    let frames = stream.until("permission_request", T).await.unwrap();
    let corr = frames.last().unwrap().json()["correlation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    send(json!({"type": "permission_response", "correlation_id": corr, "behavior": "allow"})).await;
    stream.until("result", T).await.unwrap();
    send(json!({"type": "set_model", "model": "echo"})).await;
    send(json!({"type": "set_permission_mode", "mode": "plan"})).await;
    send(json!({"type": "interrupt"})).await;
    assert_eq!(c.delete(&id).await.unwrap(), 204);

    let pg = connect(&db).await;
    let expected = [
        "create",
        "approve",
        "set_model",
        "set_permission_mode",
        "interrupt",
        "delete",
    ];
    let deadline = Instant::now() + T;
    let rows = loop {
        // The sink writes in the background: poll the table (bounded).
        let rows = pg
            .query(
                "SELECT action, actor, correlation_id, detail, host_id FROM agent_webkit_audit
                 WHERE session_id = $1 ORDER BY id",
                &[&id],
            )
            .await
            .unwrap();
        if rows.len() >= expected.len() || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let actions: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(actions, expected);
    let approve = &rows[1];
    assert_eq!(
        approve.get::<_, Option<String>>(2).as_deref(),
        Some(corr.as_str())
    );
    assert_eq!(
        approve.get::<_, Option<String>>(1),
        None,
        "auth disabled: no actor"
    );
    let detail: Value = rows[2].get(3);
    assert_eq!(detail["model"], "echo");
    assert_eq!(
        rows[0].get::<_, Option<String>>(4).as_deref(),
        Some("audit-host")
    );

    // Retention: a row older than the retention goes at the next start.
    pg.execute(
        "INSERT INTO agent_webkit_audit (at, session_id, action)
         VALUES (now() - interval '3 days', 'old', 'create')",
        &[],
    )
    .await
    .unwrap();
    drop(a);
    let _b = server(&["--database-url", &db, "--audit-retention-days", "2"]).await;
    let deadline = Instant::now() + T;
    loop {
        let old: i64 = pg
            .query_one(
                "SELECT count(*) FROM agent_webkit_audit WHERE session_id = 'old'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if old == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the old row was not pruned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kept: i64 = pg
        .query_one(
            "SELECT count(*) FROM agent_webkit_audit WHERE session_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 6, "recent rows are kept");
}

/// Ownership is persisted: after a restart on the same data directory, each JWT principal
/// lists only its own sessions, another principal's session answers exactly like an unknown one
/// on every endpoint (and a DELETE of it does nothing), and its owner resumes it.
#[tokio::test]
async fn ownership_survives_a_restart() {
    let dir = TempDir::new("listing-owner-restart").unwrap();
    let data = dir.path().join("data").display().to_string();
    let args = [
        "--jwt-secret",
        SECRET,
        "--agent",
        "replay",
        "--data-dir",
        &data,
    ];
    let alice = hs256(&claims("alice")).unwrap();
    let bob = hs256(&claims("bob")).unwrap();
    let mut a = ServerProcess::spawn(BIN, &args).await.unwrap();
    let mine = a
        .client(Some(&alice))
        .create(&json!({"model": "echo"}))
        .await
        .unwrap();
    echo_turn(&a.client(Some(&alice)), &mine, "alice's secret").await;
    let theirs = a
        .client(Some(&bob))
        .create(&json!({"model": "echo"}))
        .await
        .unwrap();
    a.terminate(T).await.unwrap();

    let b = ServerProcess::spawn(BIN, &args).await.unwrap();
    let (ca, cb) = (b.client(Some(&alice)), b.client(Some(&bob)));
    assert_eq!(ids(&get(&ca, "/sessions").await), [mine.as_str()]);
    assert_eq!(ids(&get(&cb, "/sessions").await), [theirs.as_str()]);
    // Bob probes alice's session: every answer is the unknown-id answer.
    assert_invisible(&cb, &mine).await;
    // Still alice's, and she resumes it.
    assert_eq!(ids(&get(&ca, "/sessions").await), [mine.as_str()]);
    let detail = get(&ca, &format!("/sessions/{mine}")).await;
    assert_eq!(detail["title"], "alice's secret", "{detail}");
    echo_turn(&ca, &mine, "again").await;
    assert_eq!(ids(&get(&cb, "/sessions").await), [theirs]);
}

/// The ids a listing page shows, in order.
fn ids(page: &Value) -> Vec<String> {
    page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["session_id"].as_str().unwrap().to_owned())
        .collect()
}

/// `client`'s principal gets, for session `id`, exactly the answers of an unknown id: 404 on
/// detail, stream and input; 204 on DELETE (which does nothing).
async fn assert_invisible(client: &Client, id: &str) {
    let unknown = "00000000-0000-4000-8000-000000000000";
    for id in [id, unknown] {
        let detail = client
            .request(reqwest::Method::GET, &format!("/sessions/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(detail.status(), 404, "detail of {id}");
        let stream = client.stream_raw(id, Some("0")).await.unwrap();
        assert_eq!(stream.status(), 404, "stream of {id}");
        let input = client
            .input(id, &json!({"type": "user_message", "content": "hi"}))
            .await
            .unwrap();
        assert_eq!(input.status(), 404, "input to {id}");
        assert_eq!(client.delete(id).await.unwrap(), 204, "delete of {id}");
    }
}

/// Ownership across hosts sharing PostgreSQL: another host lists each principal's sessions to
/// it alone, before and after the first host dies; another principal's probes neither see nor
/// take over the session (it stays hibernated), and its owner resumes it there.
#[tokio::test]
async fn ownership_survives_failover_to_another_host() {
    let Some(admin) = dsn_or_skip("listing_owner_failover") else {
        return;
    };
    let db = fresh_database(&admin).await;
    let host = |name: &'static str| {
        let db = db.clone();
        async move {
            let args = [
                "--jwt-secret",
                SECRET,
                "--agent",
                "replay",
                "--database-url",
                &db,
                "--host-id",
                name,
                "--lease",
                "1",
            ];
            ServerProcess::spawn(BIN, &args).await.unwrap()
        }
    };
    let alice = hs256(&claims("alice")).unwrap();
    let bob = hs256(&claims("bob")).unwrap();
    let a = host("host-a").await;
    let b = host("host-b").await;
    let mine = a
        .client(Some(&alice))
        .create(&json!({"model": "echo"}))
        .await
        .unwrap();
    echo_turn(&a.client(Some(&alice)), &mine, "alice on a").await;
    let theirs = a
        .client(Some(&bob))
        .create(&json!({"model": "echo"}))
        .await
        .unwrap();
    let (ca, cb) = (b.client(Some(&alice)), b.client(Some(&bob)));
    assert_eq!(ids(&get(&ca, "/sessions").await), [mine.as_str()]);
    assert_eq!(ids(&get(&cb, "/sessions").await), [theirs.as_str()]);
    assert_invisible(&cb, &mine).await;

    drop(a); // SIGKILL: its leases run out within a second
    until_state(&ca, &mine, "hibernated").await;
    assert_invisible(&cb, &mine).await;
    let page = get(&ca, "/sessions").await;
    assert_eq!(
        entry(&page, &mine)["state"],
        "hibernated",
        "bob's probes took nothing over: {page}"
    );
    echo_turn(&ca, &mine, "alice on b").await;
    let page = until_state(&ca, &mine, "idle").await;
    assert_eq!(entry(&page, &mine)["usage"]["turns"], 2, "{page}");
    assert_eq!(ids(&get(&cb, "/sessions").await), [theirs.as_str()]);
}
