//! Request fuzzer, in process: a few thousand hostile requests (methods, paths, headers, bodies,
//! Last-Event-ID, framing; `agent_webkit_testkit::http_fuzz`) straight into `Api::handle` over
//! the replay agent. Each must be answered within the timeout, without a panic anywhere (request
//! or session tasks), with no 5xx but the documented ones and a JSON `detail` on every error;
//! the API must still serve a session afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_webkit_core::auth::AuthConfig;
use agent_webkit_core::config::AppConfig;
use agent_webkit_core::http::{
    Api, ApiResponse, BodyError, RequestBody, RequestHeaders, ResponseBody,
};
use agent_webkit_testkit::http_fuzz::{self, BrokenFraming, Framing, FuzzRequest};
use agent_webkit_testkit::replay::ReplayAgentFactory;
use bytes::Bytes;
use futures_util::StreamExt;
use proptest::test_runner::{TestCaseError, TestRunner};

/// Cases per run (`PROPTEST_CASES` overrides).
const CASES: u32 = 2000;

/// Headers as the fuzzer made them: raw bytes, duplicates kept (first one wins, as adapters do).
struct Headers(Vec<(String, Vec<u8>)>);

impl RequestHeaders for Headers {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// The body as an adapter would deliver it: what arrived, a read error when the framing lied
/// about it, after yielding to the runtime (a body arrives over time).
struct Body {
    bytes: Bytes,
    fails: bool,
}

impl RequestBody for Body {
    async fn collect(self, limit: usize) -> Result<Bytes, BodyError> {
        tokio::task::yield_now().await;
        if self.fails {
            return Err(BodyError::Read("connection closed mid-body".into()));
        }
        if self.bytes.len() > limit {
            return Err(BodyError::TooLarge);
        }
        Ok(self.bytes)
    }
}

fn body_of(request: &FuzzRequest) -> Body {
    let fails = matches!(
        request.framing,
        Framing::Broken(
            BrokenFraming::Truncated | BrokenFraming::BadChunk | BrokenFraming::LengthAndChunked
        )
    );
    Body {
        bytes: Bytes::from(request.body.clone()),
        fails,
    }
}

/// Counts panics on any thread (request handling and the sessions' own tasks).
fn count_panics() -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    count
}

/// The verdict on one answer (see the module docs); counts the statuses seen.
async fn judge(response: ApiResponse, seen: &Mutex<BTreeMap<u16, usize>>) -> Result<(), String> {
    if let Ok(mut seen) = seen.lock() {
        *seen.entry(response.status).or_default() += 1;
    }
    http_fuzz::check_status(response.status)?;
    match response.body {
        ResponseBody::Full(bytes) if response.status >= 400 => {
            let body: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("error body is not JSON ({e}): {bytes:?}"))?;
            if !body["detail"].is_string() {
                return Err(format!("error body without a string detail: {body}"));
            }
        }
        ResponseBody::Sse(mut stream) => {
            // Read what is there now (a replay or session_ready), then leave like a client.
            let _ = tokio::time::timeout(Duration::from_millis(20), stream.next()).await;
        }
        _ => {}
    }
    Ok(())
}

async fn create_session(api: &Api) -> String {
    let auth = format!("Bearer {}", http_fuzz::TOKEN);
    let headers = [("authorization", auth.as_str())];
    let response = api
        .handle("POST", "/sessions", &headers[..], Bytes::new())
        .await;
    assert_eq!(response.status, 200, "{:?}", response.body_bytes());
    let body: serde_json::Value = serde_json::from_slice(response.body_bytes()).unwrap();
    body["session_id"].as_str().unwrap().to_owned()
}

#[test]
fn fuzzed_requests_into_api_handle() {
    let panics = count_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (api, first) = runtime.block_on(async {
        let mut config = AppConfig::new(Arc::new(ReplayAgentFactory::new()))
            .with_auth(AuthConfig::with_token(http_fuzz::TOKEN.to_owned()));
        config.max_body_bytes = http_fuzz::MAX_BODY;
        let api = Api::new(config).unwrap();
        let session = create_session(&api).await;
        (api, session)
    });
    let started = Instant::now();
    let statuses = Mutex::new(BTreeMap::new());
    let session = Mutex::new(first);
    let mut runner = TestRunner::new(http_fuzz::config(CASES));
    let outcome = runner.run(&http_fuzz::request(), |request| {
        runtime.block_on(async {
            let mut headers = request.headers.clone();
            headers.extend(request.framing_headers());
            let headers = Headers(headers);
            let live = session.lock().map(|s| s.clone()).unwrap_or_default();
            let path = request.path_for(&live);
            let answer = tokio::time::timeout(
                http_fuzz::ANSWER_TIMEOUT,
                api.handle(&request.method, &path, &headers, body_of(&request)),
            )
            .await
            .map_err(|_| TestCaseError::fail("no answer: Api::handle hung"))?;
            if request.ends_session(answer.status) {
                let fresh = create_session(&api).await;
                if let Ok(mut live) = session.lock() {
                    *live = fresh;
                }
            }
            judge(answer, &statuses).await.map_err(TestCaseError::fail)
        })
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    eprintln!(
        "http_fuzz: {} requests in {:.1}s; statuses: {:?}",
        runner.config().cases,
        started.elapsed().as_secs_f64(),
        statuses.lock().map(|s| s.clone()).unwrap_or_default()
    );
    // Still healthy: health answers, and the session created first still takes a message.
    runtime.block_on(async {
        let auth = format!("Bearer {}", http_fuzz::TOKEN);
        let no_headers: [(&str, &str); 0] = [];
        let health = api
            .handle("GET", "/healthz", &no_headers[..], Bytes::new())
            .await;
        assert_eq!(health.status, 200);
        let fresh = create_session(&api).await;
        let headers = [("authorization", auth.as_str())];
        let input = api
            .handle(
                "POST",
                &format!("/sessions/{fresh}/input"),
                &headers[..],
                Bytes::from_static(br#"{"type":"user_message","content":"hi"}"#),
            )
            .await;
        assert_eq!(input.status, 204, "{:?}", input.body_bytes());
        api.shutdown().await;
    });
    assert_eq!(
        panics.load(Ordering::SeqCst),
        0,
        "a task panicked (see the panic message above)"
    );
}
