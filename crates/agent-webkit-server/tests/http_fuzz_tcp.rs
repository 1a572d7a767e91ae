//! Request fuzzer over raw TCP, once per adapter (`--framework axum|actix`, replay agent): the
//! hostile requests of `agent_webkit_testkit::http_fuzz`, written in pieces on fresh
//! connections (broken framing then half-closes). Each must be answered — a status line, or for
//! broken framing or control bytes in a header at least a closed connection — within the
//! timeout, with no 5xx but the documented ones; the server must stay healthy throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use agent_webkit_testkit::http_fuzz::proptest::test_runner::{TestCaseError, TestRunner};
use agent_webkit_testkit::http_fuzz::{self, Answer};
use agent_webkit_testkit::ServerProcess;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");

/// Cases per adapter per run (`PROPTEST_CASES` overrides).
const CASES: u32 = 1500;

async fn healthy(server: &ServerProcess) -> Result<String, String> {
    let client = server.client(Some(http_fuzz::TOKEN));
    let health = client
        .request(reqwest::Method::GET, "/healthz")
        .send()
        .await
        .map_err(|e| format!("healthz: {e}"))?;
    if health.status() != 200 {
        return Err(format!("healthz: {}", health.status()));
    }
    client
        .create(&json!({}))
        .await
        .map_err(|e| format!("create: {e}"))
}

fn fuzz(framework: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let max_body = http_fuzz::MAX_BODY.to_string();
    let args = [
        "--framework",
        framework,
        "--agent",
        "replay",
        "--token",
        http_fuzz::TOKEN,
        "--max-body-bytes",
        &max_body,
    ];
    let (server, session) = runtime.block_on(async {
        // Quiet: actix logs every malformed request at error level, and sessions at info.
        let env = [("RUST_LOG", "warn,actix_http=off,agent_webkit_replay=off")];
        let server = ServerProcess::spawn_with_env(BIN, &args, &env)
            .await
            .unwrap();
        let session = healthy(&server).await.unwrap();
        (server, session)
    });
    let addr = server
        .base_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let started = Instant::now();
    let closed = AtomicUsize::new(0);
    let statuses = Mutex::new(BTreeMap::<u16, usize>::new());
    let live = Mutex::new(session);
    let mut runner = TestRunner::new(http_fuzz::config(CASES));
    let outcome = runner.run(&http_fuzz::request(), |request| {
        runtime.block_on(async {
            let session = live.lock().map(|s| s.clone()).unwrap_or_default();
            let answer = http_fuzz::send_raw(&addr, &request, &session)
                .await
                .map_err(TestCaseError::fail)?;
            match answer {
                Answer::Status(status) => {
                    if let Ok(mut seen) = statuses.lock() {
                        *seen.entry(status).or_default() += 1;
                    }
                    if request.ends_session(status) {
                        let fresh = healthy(&server).await.map_err(TestCaseError::fail)?;
                        if let Ok(mut live) = live.lock() {
                            *live = fresh;
                        }
                    }
                    http_fuzz::check_status(status).map_err(TestCaseError::fail)
                }
                Answer::Closed(why) if request.well_formed() => Err(TestCaseError::fail(format!(
                    "a well-formed request got no response: {why}"
                ))),
                Answer::Closed(_) | Answer::ClosedEarly(_) => {
                    closed.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
            }
        })
    });
    if let Err(failure) = outcome {
        panic!("{framework}: {failure}");
    }
    eprintln!(
        "http_fuzz_tcp {framework}: {} requests in {:.1}s ({} closed without a response); statuses: {:?}",
        runner.config().cases,
        started.elapsed().as_secs_f64(),
        closed.load(Ordering::Relaxed),
        statuses.lock().map(|s| s.clone()).unwrap_or_default()
    );
    runtime.block_on(async {
        healthy(&server)
            .await
            .unwrap_or_else(|e| panic!("{framework}: unhealthy after fuzzing: {e}"));
        drop(server);
    });
}

#[test]
fn fuzzed_requests_over_tcp_axum() {
    fuzz("axum");
}

#[test]
fn fuzzed_requests_over_tcp_actix() {
    fuzz("actix");
}
