//! The live-agent bound with the **real** Claude CLI against the mock Messages API: under
//! `--max-live-agents` the least recently active session's CLI is the one stopped, a create that
//! finds every agent busy gets 503 `at_capacity`, a hibernated session's message waits for a
//! slot and then continues its conversation (or says it was not sent), and concurrent creates
//! never share a warm spare. A sampler checks that live CLI processes never exceed the bound.
//! Skips loudly (fails in CI) when the real CLI is unavailable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::{offline_env, TempDir};
use agent_webkit_testkit::{
    claude_children, require_real_cli, Client, ServerProcess, SseFrame, SseStream,
};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(60);

/// A server running the real CLI offline, and a sampler of its live CLI processes.
struct Fixture {
    mock: MockAnthropicApi,
    _home: TempDir,
    work: TempDir,
    server: ServerProcess,
    client: Client,
    most_live: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    started: Instant,
}

impl Fixture {
    async fn start(cli: &std::path::Path, extra: &[&str]) -> Self {
        let mock = MockAnthropicApi::start().await.unwrap();
        let home = TempDir::new("cap-home").unwrap();
        let work = TempDir::new("cap-work").unwrap();
        let env = offline_env(&mock, home.path());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let root = work.path().to_str().unwrap().to_owned();
        let mut args = vec![
            "--no-auth",
            "--agent",
            "claude",
            "--claude-path",
            cli.to_str().unwrap(),
            "--claude-setting-sources=",
            "--allowed-root",
            &root,
        ];
        args.extend_from_slice(extra);
        let server = ServerProcess::spawn_with_env(BIN, &args, &env)
            .await
            .unwrap();
        let client = server.client(None);
        // No event announces a process starting or exiting: sample /proc.
        let most_live = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let server_pid = server.pid().unwrap();
        {
            let (most_live, stop) = (Arc::clone(&most_live), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let live = claude_children(server_pid).len();
                    most_live.fetch_max(live, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
        Self {
            mock,
            _home: home,
            work,
            server,
            client,
            most_live,
            stop,
            started: Instant::now(),
        }
    }

    /// A session in the work directory (no warm spare serves it) and its stream.
    async fn session(&self) -> (String, SseStream) {
        let id = self
            .client
            .create(&json!({"cwd": self.work.path()}))
            .await
            .unwrap();
        let stream = self.client.stream(&id, None).await.unwrap();
        (id, stream)
    }

    async fn send(&self, id: &str, body: Value) {
        let r = self.client.input(id, &body).await.unwrap();
        assert_eq!(r.status(), 204, "{body}: {}", r.text().await.unwrap());
    }

    async fn say(&self, id: &str, text: &str) {
        self.send(id, json!({"type": "user_message", "content": text}))
            .await;
    }

    fn children(&self) -> Vec<(u32, String)> {
        claude_children(self.server.pid().unwrap())
    }

    /// The live CLI started for session `id` (fresh or resumed), if any.
    fn pid_of(&self, id: &str) -> Option<u32> {
        self.children()
            .into_iter()
            .find(|(_, cmd)| {
                cmd.contains(&format!("--session-id={id}"))
                    || cmd.contains(&format!("--resume={id}"))
            })
            .map(|(pid, _)| pid)
    }

    fn alive(&self, pid: u32) -> bool {
        self.children().iter().any(|(p, _)| *p == pid)
    }

    /// Waits (bounded) until `done` holds: processes exiting signal nothing we could await.
    async fn wait_for(&self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + T;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.children()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `agents` object of `/healthz`.
    async fn agents(&self) -> Value {
        let url = format!("{}/healthz", self.client.base_url);
        let health: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        health["agents"].clone()
    }

    /// Waits (bounded) until `/healthz` reports `live` sessions' agents and `spares` idle
    /// spares (nothing on the wire announces a spare).
    async fn agents_settle(&self, live: u64, spares: u64) -> Value {
        let deadline = Instant::now() + T;
        loop {
            let agents = self.agents().await;
            if agents["live"] == live && agents["warm_spares"] == spares {
                return agents;
            }
            assert!(Instant::now() < deadline, "{agents}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The history the model was sent with the turn whose last prompt is `prompt`.
    fn history_of(&self, prompt: &str) -> String {
        self.mock
            .streaming_requests()
            .iter()
            .map(|r| r["messages"].to_string())
            .rfind(|m| m.contains(prompt))
            .unwrap_or_else(|| panic!("the model never saw {prompt:?}"))
    }

    /// Asserts the bound held at every sample, and prints the test's runtime.
    fn finish(self, test: &str, bound: usize) {
        self.stop.store(true, Ordering::Relaxed);
        let most = self.most_live.load(Ordering::Relaxed);
        eprintln!(
            "TIMING {test}: {:?}, at most {most} live CLI processes (bound {bound})",
            self.started.elapsed()
        );
        assert!(
            most <= bound,
            "{most} live CLI processes under --max-live-agents {bound}"
        );
    }
}

async fn until_success(stream: &mut SseStream) -> Vec<SseFrame> {
    let frames = stream.until("result", T).await.unwrap();
    let result = frames.last().unwrap().json();
    assert_eq!(result["subtype"], "success", "{result}");
    frames
}

/// (a) eviction order, (b) 503 `at_capacity`, (c) a queued wake-up that runs once a slot frees.
#[tokio::test]
async fn the_least_recently_active_makes_room_then_503_then_a_queued_wake_up_continues() {
    let cli = require_real_cli!(
        "the_least_recently_active_makes_room_then_503_then_a_queued_wake_up_continues"
    );
    let f = Fixture::start(&cli, &["--max-live-agents", "2", "--hibernate-after", "0"]).await;
    let (a, mut sa) = f.session().await;
    let (b, mut sb) = f.session().await;
    // `a` was created first but is the most recently active.
    f.say(&b, "Remember the word BRAVO").await;
    until_success(&mut sb).await;
    f.say(&a, "Remember the word ALPHA").await;
    until_success(&mut sa).await;
    let (pa, pb) = (f.pid_of(&a).unwrap(), f.pid_of(&b).unwrap());

    let (c, mut sc) = f.session().await;
    f.wait_for("b's CLI to be stopped", |f| !f.alive(pb)).await;
    assert!(
        f.alive(pa),
        "the most recently active session lost its agent"
    );
    let pc = f.pid_of(&c).unwrap();
    assert_eq!(f.children().len(), 2, "{:?}", f.children());
    let agents = f.agents().await;
    assert_eq!(
        agents,
        json!({"live": 2, "warm_spares": 0, "hibernated": 1, "max_live": 2})
    );

    // No agent can be hibernated: `a` holds a permission prompt, `c` is mid-turn.
    f.say(&a, "[[bash: touch held]]").await;
    let prompt = sa.until("permission_request", T).await.unwrap();
    let correlation_id = prompt.last().unwrap().json()["correlation_id"].clone();
    f.say(&c, "[[slow: 600]]").await;
    sc.until("message_delta", T).await.unwrap();
    let r = f
        .client
        .create_raw(&json!({"cwd": f.work.path()}))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "at_capacity", "{body}");

    // `b`'s message waits for a slot; answering `a`'s prompt ends its turn, which frees one.
    f.say(&b, "Which word was it?").await;
    assert_eq!(f.pid_of(&b), None, "b woke beyond the bound");
    f.send(
        &a,
        json!({"type": "permission_response", "correlation_id": correlation_id, "behavior": "deny", "message": "not now"}),
    )
    .await;
    until_success(&mut sa).await;
    let woken = until_success(&mut sb).await;
    assert!(woken.iter().all(|fr| fr.event != "error"));
    assert!(!f.alive(pa), "a's CLI should have made room for b");
    assert!(f.alive(pc), "c's CLI was stopped mid-turn");
    let pb2 = f.pid_of(&b).unwrap();
    assert!(f
        .children()
        .iter()
        .any(|(p, cmd)| *p == pb2 && cmd.contains(&format!("--resume={b}"))));
    let history = f.history_of("Which word was it?");
    assert!(
        history.contains("Remember the word BRAVO")
            && history.contains("Echo: Remember the word BRAVO")
            && !history.contains("ALPHA"),
        "{history}"
    );
    f.finish("eviction order + 503 + queued wake-up", 2);
}

/// (c) the queued wake-up that finds no slot within `--capacity-wait`: an error naming the
/// message as not sent; the session stays usable once a slot frees.
#[tokio::test]
async fn a_queued_wake_up_without_a_slot_in_time_says_the_message_was_not_sent() {
    let cli =
        require_real_cli!("a_queued_wake_up_without_a_slot_in_time_says_the_message_was_not_sent");
    let f = Fixture::start(
        &cli,
        &[
            "--max-live-agents",
            "1",
            "--hibernate-after",
            "0",
            "--capacity-wait",
            "0.5",
        ],
    )
    .await;
    let (x, mut sx) = f.session().await;
    f.say(&x, "Remember the word XRAY").await;
    until_success(&mut sx).await;
    let px = f.pid_of(&x).unwrap();
    let (y, mut sy) = f.session().await;
    f.wait_for("x's CLI to be stopped", |f| !f.alive(px)).await;
    f.say(&y, "[[slow: 600]]").await;
    sy.until("message_delta", T).await.unwrap();

    f.say(&x, "Which word was it?").await;
    let frames = sx.until("error", T).await.unwrap();
    let error = frames.last().unwrap().json();
    assert_eq!(error["code"], "at_capacity", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("Which word was it?") && message.contains("not sent"),
        "{message}"
    );
    assert_eq!(f.pid_of(&x), None, "a CLI was started beyond the bound");

    // Once `y`'s turn ends, the same message goes through and the conversation continues.
    f.send(&y, json!({"type": "interrupt"})).await;
    sy.until("result", T).await.unwrap();
    f.say(&x, "Which word was it, again?").await;
    until_success(&mut sx).await;
    let history = f.history_of("Which word was it, again?");
    assert!(
        history.contains("Remember the word XRAY")
            && history.contains("Echo: Remember the word XRAY"),
        "{history}"
    );
    f.finish("queued wake-up timing out", 1);
}

/// (d) concurrent creates each take their own warm spare; each session's transcript is stored
/// under its own id (a resumed CLI sees only its own conversation).
#[tokio::test]
async fn concurrent_creates_never_share_a_warm_spare() {
    let cli = require_real_cli!("concurrent_creates_never_share_a_warm_spare");
    let f = Fixture::start(
        &cli,
        &[
            "--max-live-agents",
            "3",
            "--warm-spares",
            "2",
            "--hibernate-after",
            "1",
        ],
    )
    .await;
    f.agents_settle(0, 2).await;
    let spares: Vec<u32> = f.children().iter().map(|(p, _)| *p).collect();
    // Sessions in the server's directory, as its spares are.
    let here = json!({});
    let (a, b) = tokio::join!(f.client.create(&here), f.client.create(&here));
    let (a, b) = (a.unwrap(), b.unwrap());
    // No CLI was started under either session's own id: each got a spare (which runs under
    // the spare's id) — none was released to make room for the other.
    assert_eq!(f.pid_of(&a), None, "{:?}", f.children());
    assert_eq!(f.pid_of(&b), None, "{:?}", f.children());
    assert!(spares.iter().all(|p| f.alive(*p)));
    let (mut sa, mut sb) = (
        f.client.stream(&a, None).await.unwrap(),
        f.client.stream(&b, None).await.unwrap(),
    );
    f.say(&a, "Remember the word ALPHA").await;
    f.say(&b, "Remember the word BRAVO").await;
    until_success(&mut sa).await;
    until_success(&mut sb).await;
    // Only a session's agent hibernates: both spares went away, so each served a session.
    f.wait_for("both spares' CLIs to be hibernated", |f| {
        spares.iter().all(|p| !f.alive(*p))
    })
    .await;
    assert_eq!(f.pid_of(&a), None);
    assert_eq!(f.pid_of(&b), None);

    f.say(&a, "Which word did I give you, A?").await;
    until_success(&mut sa).await;
    f.say(&b, "Which word did I give you, B?").await;
    until_success(&mut sb).await;
    let (ha, hb) = (
        f.history_of("Which word did I give you, A?"),
        f.history_of("Which word did I give you, B?"),
    );
    assert!(
        ha.contains("Remember the word ALPHA") && !ha.contains("BRAVO"),
        "{ha}"
    );
    assert!(
        hb.contains("Remember the word BRAVO") && !hb.contains("ALPHA"),
        "{hb}"
    );
    f.finish("concurrent creates with warm spares", 3);
}
