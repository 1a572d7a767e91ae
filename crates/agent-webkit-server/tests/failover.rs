//! Cross-host failover, in one process: two "hosts" (each an `Api` served over HTTP on its own
//! port, each in its own Tokio runtime so one can die abruptly) share one `SessionPersistence`.
//! The two-process Postgres version lives with the Postgres store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_webkit_core::auth::AuthConfig;
use agent_webkit_core::config::AppConfig;
use agent_webkit_core::http::Api;
use agent_webkit_core::persist::{InMemoryPersistence, SessionPersistence};
use agent_webkit_core::registry::RegistryConfig;
use agent_webkit_replay::ReplayAgentFactory;
use agent_webkit_testkit::{Client, SseFrame};
use serde_json::json;

const T: Duration = Duration::from_secs(10);

/// One host: its own runtime (dropping it is a crash: no hand-off, no lease renewal).
struct Host {
    runtime: Option<tokio::runtime::Runtime>,
    url: String,
    api: Api,
}

impl Host {
    fn start(name: &str, persistence: Arc<dyn SessionPersistence>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (api, url) = runtime.block_on(async {
            let config = AppConfig::new(Arc::new(ReplayAgentFactory::new()))
                .with_auth(AuthConfig::disabled())
                .with_registry(RegistryConfig {
                    lease: Duration::from_millis(600),
                    ..RegistryConfig::default()
                })
                .with_failover(persistence, name);
            let api = Api::new(config).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let serving = api.clone();
            tokio::spawn(async move {
                let _ = agent_webkit_axum::serve(listener, serving, std::future::pending()).await;
            });
            (api, url)
        });
        Self {
            runtime: Some(runtime),
            url,
            api,
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.url, None)
    }

    /// Graceful shutdown: sessions are handed off (streams end without `done`).
    async fn shutdown(&mut self) {
        if let Some(runtime) = &self.runtime {
            let api = self.api.clone();
            runtime
                .spawn(async move { api.shutdown().await })
                .await
                .unwrap();
        }
        self.crash();
    }

    /// Abrupt end: every task of this host stops where it is.
    fn crash(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.crash();
    }
}

fn seqs(frames: &[SseFrame]) -> Vec<u64> {
    frames.iter().filter_map(|f| f.id).collect()
}

async fn turn(client: &Client, id: &str, text: &str) {
    let r = client
        .input(id, &json!({"type": "user_message", "content": text}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

/// Tries a stream on `host` until it is served (the old owner's lease has to expire first).
async fn stream_when_free(
    client: &Client,
    id: &str,
    last: u64,
) -> (agent_webkit_testkit::SseStream, Duration) {
    let started = Instant::now();
    loop {
        let r = client
            .stream_raw(id, Some(&last.to_string()))
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => return (agent_webkit_testkit::SseStream::new(r), started.elapsed()),
            503 => {
                assert!(r.headers().contains_key("retry-after"));
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["code"], "session_owned_elsewhere", "{body}");
                assert!(started.elapsed() < T, "never released");
                // Bounded poll: a lease expiry is not an event we can await.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
        }
    }
}

#[test]
fn a_handed_off_session_continues_on_the_other_host_with_the_clients_cursor() {
    let persistence: Arc<dyn SessionPersistence> = Arc::new(InMemoryPersistence::new(10_000));
    let mut a = Host::start("host-a", Arc::clone(&persistence));
    let b = Host::start("host-b", Arc::clone(&persistence));
    let test = tokio::runtime::Runtime::new().unwrap();
    test.block_on(async {
        let (ca, cb) = (a.client(), b.client());
        let id = ca.create(&json!({"model": "echo"})).await.unwrap();
        let mut stream = ca.stream(&id, None).await.unwrap();
        turn(&ca, &id, "first").await;
        let seen = stream.until("result", T).await.unwrap();
        let last = *seqs(&seen).last().unwrap();
        assert_eq!(seqs(&seen), (1..=last).collect::<Vec<_>>());

        // While A is alive, B refuses (the lease is A's) with a clear, retryable status.
        let r = cb.stream_raw(&id, Some(&last.to_string())).await.unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));

        // A shuts down gracefully: its stream ends *without* `done` (the session lives on).
        a.shutdown().await;
        let rest = stream.collect_to_end(T).await.unwrap_or_default();
        assert!(rest.iter().all(|f| f.event != "done"), "{rest:?}");

        // The client reconnects to B with its cursor: nothing missed, nothing repeated.
        let (mut resumed, _) = stream_when_free(&cb, &id, last).await;
        turn(&cb, &id, "second").await;
        let more = resumed.until("result", T).await.unwrap();
        let ids = seqs(&more);
        assert_eq!(
            ids,
            (last + 1..=last + ids.len() as u64).collect::<Vec<_>>()
        );
        assert!(more.iter().any(|f| f.event == "message_complete"
            && f.json()["message"]["content"][0]["text"] == "second"));

        // DELETE on B ends it everywhere.
        assert_eq!(cb.delete(&id).await.unwrap(), 204);
        let end = resumed.collect_to_end(T).await.unwrap();
        assert_eq!(end.last().unwrap().event, "done");
        assert!(persistence.load(&id, 10).await.unwrap().is_none());
    });
}

#[test]
fn a_crashed_hosts_session_is_taken_over_after_its_lease() {
    let persistence: Arc<dyn SessionPersistence> = Arc::new(InMemoryPersistence::new(10_000));
    let mut a = Host::start("host-a", Arc::clone(&persistence));
    let b = Host::start("host-b", Arc::clone(&persistence));
    let test = tokio::runtime::Runtime::new().unwrap();
    test.block_on(async {
        let (ca, cb) = (a.client(), b.client());
        let id = ca.create(&json!({"model": "echo"})).await.unwrap();
        let mut stream = ca.stream(&id, None).await.unwrap();
        turn(&ca, &id, "before the crash").await;
        let seen = stream.until("result", T).await.unwrap();
        // The client got to seq `last`, then loses the connection.
        let last = *seqs(&seen).last().unwrap();
        drop(stream);
        // Another turn that this client never saw, then A dies without a word.
        turn(&ca, &id, "unseen").await;
        let mut watcher = ca.stream(&id, Some(&last.to_string())).await.unwrap();
        let unseen = watcher.until("result", T).await.unwrap();
        a.crash();

        let (mut resumed, waited) = stream_when_free(&cb, &id, last).await;
        eprintln!("FAILOVER: B served the reconnect {waited:?} after the first try (lease 600 ms)");
        // Exactly the missed events (delivered only once persisted), then B's own.
        let mut replay = Vec::new();
        for _ in 0..unseen.len() {
            replay.push(resumed.next_event_within(T).await.unwrap().unwrap());
        }
        assert_eq!(
            replay
                .iter()
                .map(|f| (&f.id, &f.event, &f.data))
                .collect::<Vec<_>>(),
            unseen
                .iter()
                .map(|f| (&f.id, &f.event, &f.data))
                .collect::<Vec<_>>()
        );
        turn(&cb, &id, "after").await;
        let after = resumed.until("result", T).await.unwrap();
        let first_new = after[0].id.unwrap();
        assert_eq!(first_new, unseen.last().unwrap().id.unwrap() + 1);
        assert!(after.iter().any(|f| f.event == "message_complete"
            && f.json()["message"]["content"][0]["text"] == "after"));
        // An old cursor from before the crash still works on B.
        let mut again = cb.stream(&id, Some(&last.to_string())).await.unwrap();
        let frame = again.next_event_within(T).await.unwrap().unwrap();
        assert_eq!(frame.id, Some(last + 1));
    });
}

#[test]
fn delete_on_another_host_ends_the_session_on_its_owner() {
    let persistence: Arc<dyn SessionPersistence> = Arc::new(InMemoryPersistence::new(10_000));
    let a = Host::start("host-a", Arc::clone(&persistence));
    let b = Host::start("host-b", Arc::clone(&persistence));
    let test = tokio::runtime::Runtime::new().unwrap();
    test.block_on(async {
        let (ca, cb) = (a.client(), b.client());
        let id = ca.create(&json!({"model": "echo"})).await.unwrap();
        let mut stream = ca.stream(&id, None).await.unwrap();
        stream.until("session_ready", T).await.unwrap();
        // B does not hold it, but DELETE there is global and idempotent.
        assert_eq!(cb.delete(&id).await.unwrap(), 204);
        assert_eq!(cb.delete(&id).await.unwrap(), 204);
        // A notices at its next lease renewal and ends the stream with `done`.
        let rest = stream.collect_to_end(T).await.unwrap();
        assert_eq!(rest.last().unwrap().event, "done");
        let r = ca.stream_raw(&id, None).await.unwrap();
        assert_eq!(r.status(), 404);
        let r = cb.stream_raw(&id, None).await.unwrap();
        assert_eq!(r.status(), 404);
    });
}

#[test]
fn an_ended_session_stays_readable_on_its_host_and_is_gone_elsewhere() {
    let persistence: Arc<dyn SessionPersistence> = Arc::new(InMemoryPersistence::new(10_000));
    let a = Host::start("host-a", Arc::clone(&persistence));
    let b = Host::start("host-b", Arc::clone(&persistence));
    let test = tokio::runtime::Runtime::new().unwrap();
    test.block_on(async {
        let (ca, cb) = (a.client(), b.client());
        let id = ca.create(&json!({"model": "crash"})).await.unwrap();
        let mut stream = ca.stream(&id, None).await.unwrap();
        turn(&ca, &id, "boom").await;
        let live = stream.collect_to_end(T).await.unwrap();
        assert_eq!(live.last().unwrap().event, "done");
        // Another host never takes it over: its stored log ends with `done` (503 only while
        // A's last lease runs and the `done` is still being stored).
        let started = Instant::now();
        loop {
            let r = cb.stream_raw(&id, None).await.unwrap();
            match r.status().as_u16() {
                404 => break,
                503 => {
                    assert!(started.elapsed() < T, "never gone on B");
                    // Bounded poll: storing `done` / a lease expiry is not an event we can await.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
            }
        }
        // A keeps it readable past several lease renewals (a bounded wait for something that
        // must NOT happen: A losing it because its record is gone).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut replay = ca.stream(&id, None).await.unwrap();
        let frames = replay.collect_to_end(T).await.unwrap();
        let kinds: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
        assert_eq!(kinds.first(), Some(&"session_ready"));
        assert_eq!(&kinds[kinds.len() - 2..], ["error", "done"]);
        assert_eq!(seqs(&frames), seqs(&live));
        let r = ca.input(&id, &json!({"type": "interrupt"})).await.unwrap();
        assert_eq!(r.status(), 409);
        assert_eq!(ca.delete(&id).await.unwrap(), 204);
        assert_eq!(ca.stream_raw(&id, None).await.unwrap().status(), 404);
    });
}
