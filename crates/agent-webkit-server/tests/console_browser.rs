//! The web console in a real browser: headless Chromium (Debian's `chromium` +
//! `chromium-driver`, provisioned by `cargo xtask test`) drives the page the server serves at
//! `/`, against the server binary on both adapters. One Chromium for the whole binary: the
//! scenarios run one after another in one test, each in a fresh page, each leaving a
//! screenshot in `target/console-screenshots/`. Every wait is on a condition in the page.
//! Skips loudly without Chromium (fails in CI); the real-CLI scenario skips the same way
//! without the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agent_webkit_testkit::browser::{browser_or_skip, Browser};
use agent_webkit_testkit::cut_proxy::CutProxy;
use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::{offline_env, real_cli_or_skip, TempDir};
use agent_webkit_testkit::ServerProcess;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
/// Generous for replay scenarios on a busy CI box.
const T: Duration = Duration::from_secs(20);
const TOKEN: &str = "console-test-token";

/// `target/console-screenshots/<name>.png` (next to the test binary's `target/<profile>`).
fn shot(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target
        .join("console-screenshots")
        .join(format!("{name}.png"))
}

async fn replay_server(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--agent", "replay", "--store", "memory"];
    args.extend_from_slice(extra);
    ServerProcess::spawn(BIN, &args).await.unwrap()
}

/// Loads the console at `base`, waits for it to be ready, and enters `token` if any.
async fn open(b: &Browser, base: &str, token: Option<&str>) {
    b.client().goto(&format!("{base}/")).await.unwrap();
    b.wait_js(
        "console ready",
        "return document.body.dataset.ready === 'true'",
        T,
    )
    .await
    .unwrap();
    if let Some(token) = token {
        b.type_into("#token", token, T).await.unwrap();
        b.click("#token-form button", T).await.unwrap();
    }
}

/// Picks `scenario` in the create form's list (or types it, for a `stream:…` one), creates
/// the session and waits for `session_ready`.
async fn create(b: &Browser, scenario: &str) {
    if scenario.starts_with("stream:") {
        b.type_into("#create-model", scenario, T).await.unwrap();
    } else {
        b.click(&format!("#create-scenario option[value='{scenario}']"), T)
            .await
            .unwrap();
    }
    b.click("#create-button", T).await.unwrap();
    b.wait_js(
        "session live and ready",
        "return document.getElementById('conn').dataset.state === 'live' && \
         [...document.querySelectorAll('#transcript .note')].some(n => n.textContent.startsWith('session ready'))",
        T,
    )
    .await
    .unwrap();
}

async fn say(b: &Browser, text: &str) {
    b.type_into("#message", text, T).await.unwrap();
    b.click("#send", T).await.unwrap();
}

/// Waits for the turn's `result` line; returns its text.
async fn result_line(b: &Browser, subtype: &str, timeout: Duration) -> String {
    let script = format!(
        "const r = document.querySelector('#transcript .note.result[data-subtype=\"{subtype}\"]'); \
         return r ? r.textContent : null"
    );
    b.wait_js(&format!("result {subtype}"), &script, timeout)
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// The texts of the completed assistant messages, in order.
async fn assistant_texts(b: &Browser) -> Vec<String> {
    let texts = b
        .js(
            "return [...document.querySelectorAll('#transcript .msg.assistant.complete .body')].map(e => e.textContent)",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(texts).unwrap()
}

async fn read_allow(b: &Browser, base: &str, adapter: &str, token: Option<&str>) {
    open(b, base, token).await;
    create(b, "read_allow").await;
    say(b, "Read the README").await;
    b.click("#transcript .card.permission button.allow", T)
        .await
        .unwrap();
    let line = result_line(b, "success", T).await;
    assert!(line.contains("$0.0020"), "{line}");
    let tool = b
        .js(
            "const c = document.querySelector('#transcript .card.tool'); \
             return {name: c.querySelector('.tool-name').textContent, \
                     state: c.querySelector('.tool-state').textContent, \
                     input: c.querySelector('.tool-input').textContent, \
                     result: c.querySelector('.tool-result').textContent}",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(tool["name"], "Read", "{tool}");
    assert_eq!(tool["state"], "done", "{tool}");
    assert!(
        tool["input"].as_str().unwrap().contains("README.md"),
        "{tool}"
    );
    assert_eq!(tool["result"], "first line", "{tool}");
    let answered = b
        .js(
            "return document.querySelector('#transcript .card.permission .prompt-status').textContent",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(answered, "answered: allowed");
    assert_eq!(
        assistant_texts(b).await.last().map(String::as_str),
        Some("First line: first line")
    );
    b.screenshot(&shot(&format!("read_allow_{adapter}")))
        .await
        .unwrap();
}

async fn ask_user_question(b: &Browser, base: &str) {
    open(b, base, None).await;
    create(b, "ask_user_question").await;
    say(b, "Ask me something").await;
    b.click("#transcript .card.question input[data-option='blue']", T)
        .await
        .unwrap();
    b.click("#transcript .card.question button.answer", T)
        .await
        .unwrap();
    result_line(b, "success", T).await;
    let status = b
        .js(
            "return document.querySelector('#transcript .card.question .prompt-status').textContent",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, "answered: blue");
    assert_eq!(
        assistant_texts(b).await.last().map(String::as_str),
        Some("You picked a color.")
    );
    b.screenshot(&shot("ask_user_question")).await.unwrap();
}

async fn interrupt(b: &Browser, base: &str) {
    open(b, base, None).await;
    create(b, "stream:400:25").await;
    say(b, "Stream for a while").await;
    b.wait_js(
        "a few streamed messages",
        "return document.querySelectorAll('#transcript .msg.assistant').length >= 3",
        T,
    )
    .await
    .unwrap();
    b.click("#interrupt", T).await.unwrap();
    result_line(b, "interrupted", T).await;
    let count = assistant_texts(b).await.len();
    assert!(
        (3..400).contains(&count),
        "{count} messages before the interrupt"
    );
    let idle = b
        .js(
            "return document.getElementById('session').dataset.turn",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(idle, "idle");
    b.screenshot(&shot("interrupt")).await.unwrap();
}

async fn model_switch(b: &Browser, base: &str) {
    open(b, base, None).await;
    create(b, "echo").await;
    b.type_into("#model-input", "claude-console-test", T)
        .await
        .unwrap();
    b.click("#model-form button", T).await.unwrap();
    b.wait_js(
        "model switch acknowledged",
        "return [...document.querySelectorAll('#transcript .note')].some(n => n.textContent === 'model set to claude-console-test')",
        T,
    )
    .await
    .unwrap();
    // By keyboard: Enter in the composer sends.
    b.type_into("#message", "which model?\u{E007}", T)
        .await
        .unwrap();
    let model = b
        .wait_js(
            "the echo's model",
            "const m = document.querySelector('#transcript .msg.assistant.complete'); return m && m.dataset.model",
            T,
        )
        .await
        .unwrap();
    assert_eq!(model, "claude-console-test");
    b.click("#mode-select option[value='plan']", T)
        .await
        .unwrap();
    b.click("#mode-form button", T).await.unwrap();
    b.wait_js(
        "permission mode switch acknowledged",
        "return [...document.querySelectorAll('#transcript .note')].some(n => n.textContent === 'permission mode set to plan')",
        T,
    )
    .await
    .unwrap();
    b.screenshot(&shot("model_switch")).await.unwrap();
    // A narrow screen: the same page stacks its panels.
    b.client().set_window_size(390, 844).await.unwrap();
    b.screenshot(&shot("narrow")).await.unwrap();
    // Dark mode follows the system setting.
    b.prefer_dark(true).await.unwrap();
    b.wait_js(
        "dark colours",
        "return getComputedStyle(document.body).backgroundColor === 'rgb(22, 23, 26)'",
        T,
    )
    .await
    .unwrap();
    b.screenshot(&shot("narrow_dark")).await.unwrap();
    b.prefer_dark(false).await.unwrap();
    b.wait_js(
        "light colours",
        "return getComputedStyle(document.body).backgroundColor === 'rgb(247, 247, 248)'",
        T,
    )
    .await
    .unwrap();
    b.client().set_window_size(1280, 900).await.unwrap();
    b.click("#delete", T).await.unwrap();
    b.wait_js(
        "deleted",
        "const n = document.getElementById('notice'); return !n.hidden && n.textContent.startsWith('Deleted session')",
        T,
    )
    .await
    .unwrap();
}

/// An agent that dies shows as an error, and the session as ended.
async fn agent_exited(b: &Browser, base: &str) {
    open(b, base, None).await;
    create(b, "crash").await;
    say(b, "crash now").await;
    b.wait_js(
        "agent_exited error and end",
        "return !!document.querySelector('#transcript .error-banner[data-code=\"agent_exited\"]') && \
         !!document.querySelector('#transcript .note.ended') && \
         document.getElementById('conn').dataset.state === 'closed'",
        T,
    )
    .await
    .unwrap();
    b.screenshot(&shot("agent_exited")).await.unwrap();
}

/// Hostile markup in model output shows as text: no element is created from it, no handler
/// or script runs, the `javascript:` link is not a link.
async fn untrusted_markup(b: &Browser, base: &str) {
    open(b, base, None).await;
    create(b, "untrusted_markup").await;
    say(b, "Show me markup").await;
    result_line(b, "success", T).await;
    let page = b
        .js(
            "const t = document.getElementById('transcript'); \
             return {elements: t.querySelectorAll('img, script, iframe, b').length, \
                     links: [...t.querySelectorAll('a')].map(a => a.href), \
                     pwned: document.body.dataset.pwned || null, \
                     text: t.textContent, \
                     headings: t.querySelectorAll('.msg h3').length, \
                     bold: t.querySelectorAll('.msg strong').length}",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(page["elements"], 0, "{page}");
    assert_eq!(page["pwned"], Value::Null, "{page}");
    assert_eq!(
        page["links"],
        json!(["https://example.invalid/docs"]),
        "{page}"
    );
    let text = page["text"].as_str().unwrap();
    for shown in [
        "<img src=x onerror=",
        "<script>document.body.dataset.pwned='script'</script>",
        "<b>tags</b>",
        "<iframe src=\"javascript:alert(2)\"></iframe>",
        "[javascript: link](javascript:alert(1))",
    ] {
        assert!(
            text.contains(shown),
            "{shown:?} not shown as text in {text}"
        );
    }
    // The markdown around it still renders.
    assert_eq!(page["headings"], 1, "{page}");
    assert!(page["bold"].as_u64().unwrap() >= 1, "{page}");
    assert!(
        b.client().get_alert_text().await.is_err(),
        "an alert is open"
    );
    b.screenshot(&shot("untrusted_markup")).await.unwrap();
}

/// The proxy between browser and server cuts every connection mid-turn: the page reconnects
/// with Last-Event-ID and shows each of the 60 messages exactly once.
async fn reconnect(b: &Browser, server: &ServerProcess) {
    let upstream: SocketAddr = server
        .base_url
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = CutProxy::start(upstream).await.unwrap();
    open(b, &proxy.base_url, None).await;
    create(b, "stream:60:50").await;
    say(b, "Stream through a bad network").await;
    b.wait_js(
        "ten messages before the cut",
        "return document.querySelectorAll('#transcript .msg.assistant').length >= 10",
        T,
    )
    .await
    .unwrap();
    assert!(proxy.cut() >= 1, "no connection to cut");
    result_line(b, "success", T).await;
    let reconnects = b
        .js(
            "return Number(document.getElementById('conn').dataset.reconnects)",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        reconnects.as_u64().unwrap() >= 1,
        "reconnects: {reconnects}"
    );
    let texts = assistant_texts(b).await;
    let expected: Vec<String> = (1..=60).map(|i| format!("chunk {i}")).collect();
    assert_eq!(texts, expected);
    // Every event once: one `session_ready` line, the user's message, 60 messages, one result.
    let items = b
        .js(
            "return [...document.querySelectorAll('#transcript > li')].map(li => li.className)",
            vec![],
        )
        .await
        .unwrap();
    let items: Vec<String> = serde_json::from_value(items).unwrap();
    assert_eq!(items.len(), 63, "{items:?}");
    assert_eq!(items.iter().filter(|c| c.contains("result")).count(), 1);
    assert_eq!(items[0], "note", "{items:?}");
    let state = b
        .js(
            "return document.getElementById('conn').dataset.state",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(state, "live");
    b.screenshot(&shot("reconnect")).await.unwrap();
}

/// The real Claude CLI on the mock Messages API (with a PreToolUse hook on Bash): text streams
/// in as deltas and is replaced by the complete message; a Bash call goes through the hook card
/// (no opinion) and the permission card, allowed with an edited command — the edited one is
/// what runs; the turn's usage and cost are shown.
async fn real_cli(b: &Browser) {
    let Some(cli) = real_cli_or_skip("console_browser::real_cli") else {
        return;
    };
    let mock = MockAnthropicApi::start().await.unwrap();
    let home = TempDir::new("console-home").unwrap();
    let work = TempDir::new("console-work").unwrap();
    let env = offline_env(&mock, home.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let root = work.path().to_str().unwrap();
    let args = [
        "--agent",
        "claude",
        "--no-auth",
        "--store",
        "memory",
        "--claude-path",
        cli.to_str().unwrap(),
        "--claude-setting-sources=",
        "--claude-hook",
        "PreToolUse:Bash",
        "--allowed-root",
        root,
    ];
    let server = ServerProcess::spawn_with_env(BIN, &args, &env)
        .await
        .unwrap();
    let slow = Duration::from_secs(60);
    open(b, &server.base_url, None).await;
    b.type_into("#create-cwd", root, T).await.unwrap();
    b.click("#create-button", T).await.unwrap();
    b.wait_js(
        "session live and ready",
        "return [...document.querySelectorAll('#transcript .note')].some(n => n.textContent.startsWith('session ready'))",
        slow,
    )
    .await
    .unwrap();

    say(b, "[[slow: 12]]").await;
    let partial = b
        .wait_js(
            "streamed text on screen before the message completes",
            "const s = document.querySelector('#transcript .msg.assistant.is-streaming .streaming'); \
             return s && s.textContent.length > 0 ? s.textContent : null",
            slow,
        )
        .await
        .unwrap();
    result_line(b, "success", slow).await;
    let settled = b
        .js(
            "const m = [...document.querySelectorAll('#transcript .msg.assistant')]; \
             return {streaming: document.querySelectorAll('#transcript .streaming').length, \
                     complete: m.filter(e => e.classList.contains('complete')).length, \
                     text: m.map(e => e.querySelector('.body').textContent).join('|')}",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(settled["streaming"], 0, "{settled}");
    assert_eq!(settled["complete"], 1, "{settled}");
    let text = settled["text"].as_str().unwrap();
    assert!(
        text.starts_with(partial.as_str().unwrap()),
        "final {text:?} does not extend the streamed {partial}"
    );

    say(b, "[[bash: touch made-in-browser]]").await;
    b.click("#transcript .card.hook button.primary", slow)
        .await
        .unwrap();
    b.click("#transcript .card.permission details.edit summary", slow)
        .await
        .unwrap();
    b.type_into(
        "#transcript .card.permission .edit-input",
        r#"{"command": "touch edited-in-browser", "description": "run"}"#,
        T,
    )
    .await
    .unwrap();
    b.click("#transcript .card.permission .allow-edited", T)
        .await
        .unwrap();
    b.wait_js(
        "second result",
        "return document.querySelectorAll('#transcript .note.result[data-subtype=\"success\"]').length === 2",
        slow,
    )
    .await
    .unwrap();
    let line = b
        .js(
            "const r = document.querySelectorAll('#transcript .note.result'); return r[r.length - 1].textContent",
            vec![],
        )
        .await
        .unwrap();
    let line = line.as_str().unwrap();
    assert!(line.contains("tokens"), "no usage in {line}");
    assert!(line.contains('$'), "no cost in {line}");
    assert!(work.path().join("edited-in-browser").exists());
    assert!(!work.path().join("made-in-browser").exists());
    let texts = assistant_texts(b).await;
    assert!(
        texts.iter().any(|t| t.starts_with("Tool result seen")),
        "{texts:?}"
    );
    let tool = b
        .js(
            "const c = document.querySelector('#transcript .card.tool'); \
             return [c.querySelector('.tool-name').textContent, c.querySelector('.tool-state').textContent]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(tool, json!(["Bash", "done"]));
    b.screenshot(&shot("real_cli")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    let Some((chromium, driver)) = browser_or_skip("console_in_a_real_browser") else {
        return;
    };
    let b = Browser::start(&chromium, &driver).await.unwrap();
    let axum = replay_server(&["--token", TOKEN]).await;
    let actix = replay_server(&["--no-auth", "--framework", "actix"]).await;
    let steps = async {
        eprintln!("console: read_allow (axum, with a token)");
        read_allow(&b, &axum.base_url, "axum", Some(TOKEN)).await;
        eprintln!("console: read_allow (actix)");
        read_allow(&b, &actix.base_url, "actix", None).await;
        eprintln!("console: ask_user_question");
        ask_user_question(&b, &actix.base_url).await;
        eprintln!("console: interrupt");
        interrupt(&b, &actix.base_url).await;
        eprintln!("console: model switch");
        model_switch(&b, &actix.base_url).await;
        eprintln!("console: agent exited");
        agent_exited(&b, &actix.base_url).await;
        eprintln!("console: untrusted markup");
        untrusted_markup(&b, &actix.base_url).await;
        eprintln!("console: reconnect after a cut");
        reconnect(&b, &actix).await;
        eprintln!("console: real CLI");
        real_cli(&b).await;
    };
    steps.await;
    b.close().await.unwrap();
}

/// No browser needed: the page and its modules are served with the strict headers (without a
/// token even when auth is on: they hold no data), the config lists the replay scenarios, and
/// `--no-console` turns it all into 404s.
#[tokio::test]
async fn console_is_served_with_strict_headers_and_can_be_turned_off() {
    let on = replay_server(&["--token", TOKEN]).await;
    let http = reqwest::Client::new();
    for (path, kind) in [
        ("/", "text/html; charset=utf-8"),
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
    ] {
        let response = http
            .get(format!("{}{path}", on.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], kind, "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
    }
    let config: Value = http
        .get(format!("{}/console/config.json", on.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["agent"], "replay");
    let scenarios = config["scenarios"].as_array().unwrap();
    for name in [
        "read_allow",
        "ask_user_question",
        "untrusted_markup",
        "echo",
    ] {
        assert!(scenarios.contains(&json!(name)), "{name} in {config}");
    }
    // The API itself still wants the token.
    let api = http
        .post(format!("{}/sessions", on.base_url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);

    let off = replay_server(&["--no-auth", "--no-console"]).await;
    for path in ["/", "/console/app.js", "/console/config.json"] {
        let response = http
            .get(format!("{}{path}", off.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
}
