//! The web console's issue-19 features in a real browser, through the real Claude CLI on the
//! mock Messages API: fork from a user message (the fork opens with the earlier turn, and its
//! next model request carries exactly that history), rewind (later turns leave the view, also
//! when another client rewound; the edited file is restored; the message's text comes back to
//! the composer), attachments (an attached file read by the agent shows in a tool card; a
//! refused upload shows its code), and the context and cost panel. One scenario per test, one
//! at a time, each in its own Chromium against its own server, each leaving a
//! screenshot in `target/console-screenshots/`. Every wait is on a condition in the page (or
//! on the mock's recorded requests). Skips loudly without Chromium or the CLI (fails in CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_webkit_testkit::browser::{browser_or_skip, Browser};
use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::{offline_env, real_cli_or_skip, TempDir};
use agent_webkit_testkit::ServerProcess;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
/// The real CLI on a busy box.
const T: Duration = Duration::from_secs(60);

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

/// A server running the real CLI on its own mock API, rooted at a fresh work directory.
struct CliServer {
    server: ServerProcess,
    mock: MockAnthropicApi,
    work: TempDir,
    _home: TempDir,
}

impl CliServer {
    async fn start(cli: &Path, framework: &str, extra: &[&str]) -> Self {
        let mock = MockAnthropicApi::start().await.unwrap();
        let home = TempDir::new("console-ext-home").unwrap();
        let work = TempDir::new("console-ext-work").unwrap();
        let env = offline_env(&mock, home.path());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let root = work.path().to_str().unwrap().to_owned();
        let mut args = vec![
            "--agent",
            "claude",
            "--no-auth",
            "--store",
            "memory",
            "--framework",
            framework,
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
        Self {
            server,
            mock,
            work,
            _home: home,
        }
    }

    fn root(&self) -> &str {
        self.work.path().to_str().unwrap()
    }
}

/// Loads the console, creates a session in the work directory (with `mode`, if any), and
/// waits for it to be ready; returns its id.
async fn open_session(b: &Browser, s: &CliServer, mode: Option<&str>) -> String {
    b.client()
        .goto(&format!("{}/", s.server.base_url))
        .await
        .unwrap();
    b.wait_js(
        "console ready",
        "return document.body.dataset.ready === 'true'",
        T,
    )
    .await
    .unwrap();
    b.type_into("#create-cwd", s.root(), T).await.unwrap();
    if let Some(mode) = mode {
        b.click(&format!("#create-mode option[value='{mode}']"), T)
            .await
            .unwrap();
    }
    b.click("#create-button", T).await.unwrap();
    wait_ready(b).await
}

/// Waits for the open session's `session_ready`; returns its id.
async fn wait_ready(b: &Browser) -> String {
    let id = b
        .wait_js(
            "session live and ready",
            "return document.getElementById('conn').dataset.state === 'live' && \
             [...document.querySelectorAll('#transcript .note')].some(n => n.textContent.startsWith('session ready')) && \
             document.getElementById('session-id').textContent",
            T,
        )
        .await
        .unwrap();
    id.as_str().unwrap().to_owned()
}

/// Sends `text` and waits until the transcript shows `results` successful turns.
async fn turn(b: &Browser, text: &str, results: usize) {
    b.type_into("#message", text, T).await.unwrap();
    b.click("#send", T).await.unwrap();
    wait_results(b, results).await;
}

async fn wait_results(b: &Browser, results: usize) {
    b.wait_js(
        &format!("{results} results"),
        &format!(
            "return document.querySelectorAll('#transcript .note.result[data-subtype=\"success\"]').length === {results} \
             && document.getElementById('session').dataset.turn === 'idle'"
        ),
        T,
    )
    .await
    .unwrap();
}

/// The user messages on screen: `[{text, uuid}]` (uuid null until anchored).
async fn user_messages(b: &Browser) -> Vec<Value> {
    let v = b
        .js(
            "return [...document.querySelectorAll('#transcript li.msg.user')].map(li => \
             ({text: li.querySelector('.body').textContent, uuid: li.dataset.uuid || null}))",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

/// Waits until `n` user messages are anchored (their `user_message` event arrived).
async fn wait_anchors(b: &Browser, n: usize) -> Vec<Value> {
    b.wait_js(
        &format!("{n} anchored user messages"),
        &format!(
            "return document.querySelectorAll('#transcript li.msg.user[data-uuid] .fork-here').length === {n}"
        ),
        T,
    )
    .await
    .unwrap();
    user_messages(b).await
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

/// A request's conversation as `(role, text)`: user and assistant turns, text blocks only,
/// without `<system-reminder>`s (the CLI's environment message has the role `system`).
fn conversation(messages: &[Value]) -> Vec<(String, String)> {
    messages
        .iter()
        .filter_map(|m| {
            let role = m["role"]
                .as_str()
                .filter(|r| *r == "user" || *r == "assistant")?;
            let role = role.to_owned();
            let text = match &m["content"] {
                Value::String(s) => s.clone(),
                Value::Array(blocks) => blocks
                    .iter()
                    .filter(|b| b["type"] == "text")
                    .filter_map(|b| b["text"].as_str())
                    .filter(|t| !t.trim_start().starts_with("<system-reminder>"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => String::new(),
            };
            (!text.is_empty()).then_some((role, text))
        })
        .collect()
}

fn pair(role: &str, text: &str) -> (String, String) {
    (role.to_owned(), text.to_owned())
}

/// Fork from the first of two turns: the fork opens with that turn only, the source keeps both,
/// and the fork's next model request carries exactly the first turn's history. "Fork session"
/// copies the whole conversation.
async fn fork(b: &Browser, cli: &Path) {
    let s = CliServer::start(cli, "axum", &[]).await;
    let source = open_session(b, &s, None).await;
    turn(b, "first question", 1).await;
    turn(b, "second question", 2).await;
    let users = wait_anchors(b, 2).await;
    assert_eq!(users[0]["text"], "first question", "{users:?}");

    b.click("#transcript li.msg.user[data-uuid] .fork-here", T)
        .await
        .unwrap();
    let forked = b
        .wait_js(
            "the fork opens",
            &format!(
                "const id = document.getElementById('session-id').textContent; \
                 return id !== '{source}' && document.getElementById('conn').dataset.state === 'live' && id"
            ),
            T,
        )
        .await
        .unwrap();
    assert_ne!(forked, json!(source));
    // The earlier turn shows in the fork; the later one does not.
    b.wait_js(
        "the fork shows the first turn",
        "return [...document.querySelectorAll('#transcript .msg.assistant.complete .body')].some(e => e.textContent === 'Echo: first question')",
        T,
    )
    .await
    .unwrap();
    let texts: Vec<String> = user_messages(b)
        .await
        .iter()
        .map(|u| u["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["first question"]);
    assert!(
        !assistant_texts(b)
            .await
            .iter()
            .any(|t| t.contains("second")),
        "the later turn shows in the fork"
    );

    let before = s.mock.streaming_requests().len();
    b.type_into("#message", "third question", T).await.unwrap();
    b.click("#send", T).await.unwrap();
    b.wait_js(
        "the fork's answer",
        "return [...document.querySelectorAll('#transcript .msg.assistant.complete .body')].some(e => e.textContent === 'Echo: third question') \
         && document.getElementById('session').dataset.turn === 'idle'",
        T,
    )
    .await
    .unwrap();
    let requests = s.mock.streaming_requests();
    let request = requests[before..]
        .iter()
        .find(|r| {
            conversation(r["messages"].as_array().unwrap())
                .last()
                .is_some_and(|(_, t)| t == "third question")
        })
        .expect("the fork's request");
    assert_eq!(
        conversation(request["messages"].as_array().unwrap()),
        [
            pair("user", "first question"),
            pair("assistant", "Echo: first question"),
            pair("user", "third question"),
        ]
    );
    b.screenshot(&shot("ext_fork")).await.unwrap();

    // "Fork session": the whole conversation of the fork, opened in turn.
    b.click("#fork-session", T).await.unwrap();
    b.wait_js(
        "the second fork opens with both turns",
        &format!(
            "const id = document.getElementById('session-id').textContent; \
             return id !== {forked} && id !== '{source}' && \
             [...document.querySelectorAll('#transcript li.msg.user .body')].map(e => e.textContent).join('|') === 'first question|third question'"
        ),
        T,
    )
    .await
    .unwrap();
}

/// The context and cost panel: the cumulative cost per model after a turn (the `usage` event),
/// the context usage on demand, and the same cost again when the page is reloaded.
async fn cost_and_context(b: &Browser, cli: &Path) {
    let s = CliServer::start(cli, "actix", &[]).await;
    let id = open_session(b, &s, None).await;
    turn(b, "what does it cost", 1).await;
    b.click("#usage summary", T).await.unwrap();
    let usd = b
        .wait_js(
            "cost in the panel",
            "const t = document.getElementById('usage-total'); \
             return document.querySelector('#usage-models tr[data-model]') && Number(t.dataset.usd) > 0 && t.dataset.usd",
            T,
        )
        .await
        .unwrap();
    assert!(usd.as_str().unwrap().parse::<f64>().unwrap() > 0.0);
    b.click("#context-button", T).await.unwrap();
    let ctx = b
        .wait_js(
            "context usage",
            "const l = document.querySelector('#context .context-line'); \
             return l && {total: Number(l.dataset.total), max: Number(l.dataset.max), text: l.textContent}",
            T,
        )
        .await
        .unwrap();
    assert!(ctx["total"].as_u64().unwrap() > 0, "{ctx}");
    assert!(
        ctx["max"].as_u64().unwrap() >= ctx["total"].as_u64().unwrap(),
        "{ctx}"
    );
    b.screenshot(&shot("ext_cost_context")).await.unwrap();

    // Reopened: the same totals.
    assert_eq!(
        b.js("return location.hash", vec![]).await.unwrap(),
        json!(format!("#{id}"))
    );
    b.client().refresh().await.unwrap();
    b.click("#usage summary", T).await.unwrap();
    let again = b
        .wait_js(
            "cost after a reload",
            "const t = document.getElementById('usage-total'); return Number(t.dataset.usd) > 0 && t.dataset.usd",
            T,
        )
        .await
        .unwrap();
    assert_eq!(again, usd);
}

/// Rewind: a turn rewound by another client leaves the view (the `rewound` event); then the
/// console's own rewind of the turn that wrote a file: the dry run lists the file and what cannot
/// be restored, the confirm restores the file's bytes, drops the turn, and puts its text back in
/// the composer.
async fn rewind(b: &Browser, cli: &Path) {
    let s = CliServer::start(cli, "actix", &[]).await;
    let file = s.work.path().join("notes.txt");
    std::fs::write(&file, "original line\n").unwrap();
    let path = file.to_str().unwrap();
    let id = open_session(b, &s, Some("acceptEdits")).await;
    turn(b, &format!("[[read: {path}]]"), 1).await;
    let write = format!("[[write: {path} | rewritten by the agent]]");
    turn(b, &write, 2).await;
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "rewritten by the agent"
    );
    turn(b, "one more thing", 3).await;
    let users = wait_anchors(b, 3).await;

    // Another client rewinds the last turn's conversation: it leaves this view.
    let http = reqwest::Client::new();
    let answer: Value = http
        .post(format!("{}/sessions/{id}/input", s.server.base_url))
        .json(&json!({"type": "rewind", "message_uuid": users[2]["uuid"], "files": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["conversation"]["rewound"], true, "{answer}");
    b.wait_js(
        "the other client's rewind shows",
        "return document.querySelectorAll('#transcript li.msg.user').length === 2 && \
         !!document.querySelector('#transcript .note.rewound')",
        T,
    )
    .await
    .unwrap();
    assert!(
        !assistant_texts(b)
            .await
            .iter()
            .any(|t| t.contains("one more thing")),
        "the rewound turn's answer is still shown"
    );
    assert_eq!(
        b.js("return document.getElementById('message').value", vec![])
            .await
            .unwrap(),
        "",
        "another client's rewind fills this composer"
    );

    // This console rewinds the turn that wrote the file.
    let write_uuid = users[1]["uuid"].as_str().unwrap();
    b.click(
        &format!("#transcript li.msg.user[data-uuid='{write_uuid}'] .rewind-here"),
        T,
    )
    .await
    .unwrap();
    let plan = b
        .wait_js(
            "the dry run",
            "const p = document.querySelector('#transcript .rewind-panel'); \
             return p && p.querySelector('.rewind-confirm') && \
             {files: [...p.querySelectorAll('.rewind-files li')].map(l => l.textContent), \
              warning: (p.querySelector('.rewind-not-restored') || {}).textContent || ''}",
            T,
        )
        .await
        .unwrap();
    assert!(
        plan["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().ends_with("notes.txt")),
        "{plan}"
    );
    assert!(plan["warning"].as_str().unwrap().contains("Bash"), "{plan}");
    // A dry run changes nothing.
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "rewritten by the agent"
    );
    b.screenshot(&shot("ext_rewind_dry_run")).await.unwrap();
    b.click("#transcript .rewind-panel .rewind-confirm", T)
        .await
        .unwrap();
    let composer = b
        .wait_js(
            "the rewind done",
            "return document.querySelectorAll('#transcript li.msg.user').length === 1 && \
             document.getElementById('message').value",
            T,
        )
        .await
        .unwrap();
    assert_eq!(composer, json!(write));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "original line\n");
    let tools = b
        .js(
            "return [...document.querySelectorAll('#transcript .card.tool .tool-name')].map(e => e.textContent)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(tools, json!(["Read"]));
    b.screenshot(&shot("ext_rewind")).await.unwrap();
}

/// Attachments: a picked text file uploads as a chip, is sent with the message, and the agent's
/// Read of it shows its content in a tool card; a file over the server's limit is refused on
/// its chip with the code.
async fn attachments(b: &Browser, cli: &Path, limit_flag: &[&str]) {
    let s = CliServer::start(cli, "axum", limit_flag).await;
    open_session(b, &s, Some("acceptEdits")).await;

    // Picked: the file input's files, as the picker sets them.
    b.js(
        "const input = document.getElementById('attach-input'); \
         const dt = new DataTransfer(); \
         dt.items.add(new File(['attached content 42\\n'], 'report.txt', {type: 'text/plain'})); \
         input.files = dt.files; \
         input.dispatchEvent(new Event('change', {bubbles: true}));",
        vec![],
    )
    .await
    .unwrap();
    let chip = b
        .wait_js(
            "the chip is ready",
            "const c = document.querySelector('#attachments .chip.ready'); \
             return c && {name: c.querySelector('.chip-name').textContent, \
                          size: c.querySelector('.chip-size').textContent, path: c.title}",
            T,
        )
        .await
        .unwrap();
    assert_eq!(chip["name"], "report.txt", "{chip}");
    assert_eq!(chip["size"], "20 B", "{chip}");
    let attached = chip["path"].as_str().unwrap().to_owned();
    assert!(attached.ends_with("report.txt"), "{chip}");

    // Dropped on the composer: a file over the server's limit.
    b.js(
        "const dt = new DataTransfer(); \
         dt.items.add(new File(['x'.repeat(64 * 1024)], 'big.txt', {type: 'text/plain'})); \
         const zone = document.getElementById('composer'); \
         zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true})); \
         zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));",
        vec![],
    )
    .await
    .unwrap();
    let refused = b
        .wait_js(
            "the refusal",
            "const c = document.querySelector('#attachments .chip.refused'); \
             return c && {code: c.dataset.code, text: c.textContent}",
            T,
        )
        .await
        .unwrap();
    assert_eq!(refused["code"], "attachment_too_large", "{refused}");
    assert!(
        refused["text"].as_str().unwrap().contains("too large"),
        "{refused}"
    );
    b.screenshot(&shot("ext_attachment_refused")).await.unwrap();
    b.click("#attachments .chip.refused .chip-remove", T)
        .await
        .unwrap();

    b.type_into("#message", &format!("[[read: {attached}]]"), T)
        .await
        .unwrap();
    b.click("#send", T).await.unwrap();
    // Reading outside the work directory may ask first.
    let seen = b
        .wait_js(
            "the Read card or its permission",
            "const p = document.querySelector('#transcript .card.permission:not(.answered) button.allow'); \
             const r = document.querySelector('#transcript .card.tool .tool-result:not([hidden])'); \
             return r ? 'result' : p ? 'ask' : null",
            T,
        )
        .await
        .unwrap();
    if seen == "ask" {
        b.click("#transcript .card.permission button.allow", T)
            .await
            .unwrap();
    }
    let tool = b
        .wait_js(
            "the Read result",
            "const c = document.querySelector('#transcript .card.tool'); \
             const r = c && c.querySelector('.tool-result'); \
             return r && !r.hidden && {name: c.querySelector('.tool-name').textContent, \
                     state: c.querySelector('.tool-state').textContent, result: r.textContent}",
            T,
        )
        .await
        .unwrap();
    assert_eq!(tool["name"], "Read", "{tool}");
    assert_eq!(tool["state"], "done", "{tool}");
    assert!(
        tool["result"]
            .as_str()
            .unwrap()
            .contains("attached content 42"),
        "{tool}"
    );
    let sent = b
        .js(
            "return [...document.querySelectorAll('#transcript li.msg.user .chip.sent')].map(c => c.textContent)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(sent, json!(["report.txt"]));
    let chips = b
        .js(
            "return document.querySelectorAll('#attachments .chip').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(chips, 0, "chips left after the send");
    b.screenshot(&shot("ext_attachment")).await.unwrap();
}

/// One scenario at a time (each runs a Chromium and a CLI).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `scenario` in a fresh Chromium, unless the browser or the CLI is missing (loud skip).
async fn with_browser<F, Fut>(test: &str, scenario: F)
where
    F: FnOnce(Browser, PathBuf) -> Fut,
    Fut: std::future::Future<Output = Browser>,
{
    let Some((chromium, driver)) = browser_or_skip(test) else {
        return;
    };
    let Some(cli) = real_cli_or_skip(test) else {
        return;
    };
    let _turn = ONE_AT_A_TIME.lock().await;
    let b = Browser::start(&chromium, &driver).await.unwrap();
    eprintln!("console: {test}");
    let b = scenario(b, cli).await;
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_fork_from_a_user_message() {
    with_browser("console_fork_from_a_user_message", |b, cli| async move {
        fork(&b, &cli).await;
        b
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_rewind_to_a_user_message() {
    with_browser("console_rewind_to_a_user_message", |b, cli| async move {
        rewind(&b, &cli).await;
        b
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_attachments() {
    with_browser("console_attachments", |b, cli| async move {
        attachments(&b, &cli, &["--max-attachment-bytes", "1024"]).await;
        b
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_cost_and_context() {
    with_browser("console_cost_and_context", |b, cli| async move {
        cost_and_context(&b, &cli).await;
        b
    })
    .await;
}
