//! Attachments through the **real** Claude Code CLI on the mock Messages API, on both
//! adapters: a text file uploaded to a session is read by the agent's Read tool at the path the
//! agent was given, without a permission prompt (default mode), and its bytes reach the model
//! in the `tool_result`; an image reaches the model as an image block; the refusals (too big —
//! nothing stored —, too many, bad names, unknown attachment id, another principal's session)
//! carry their codes; deleting the session removes its files. A warm spare (started before the
//! session existed) gets the session's directory too. Skips loudly (fails in CI) when the real
//! CLI is unavailable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use agent_webkit_testkit::jwt_keys::{claims, hs256, SECRET};
use agent_webkit_testkit::mock_api::MockAnthropicApi;
use agent_webkit_testkit::real_cli::{offline_env, TempDir};
use agent_webkit_testkit::{
    claude_children, require_real_cli, Client, ServerProcess, SseFrame, SseStream,
};
use reqwest::Method;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const T: Duration = Duration::from_secs(60);

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0xF8, 0xCF, 0xC0, 0xF0,
    0x1F, 0x00, 0x05, 0x00, 0x01, 0xFF, 0x89, 0x99, 0x3D, 0x1D, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

struct Fixture {
    mock: MockAnthropicApi,
    _home: TempDir,
    work: TempDir,
    attachments: TempDir,
    server: ServerProcess,
    alice: String,
    bob: String,
}

async fn start(cli: &Path, extra: &[&str]) -> Fixture {
    let mock = MockAnthropicApi::start().await.unwrap();
    let home = TempDir::new("att-home").unwrap();
    let work = TempDir::new("att-work").unwrap();
    let attachments = TempDir::new("att-dir").unwrap();
    let env = offline_env(&mock, home.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut args = vec![
        "--jwt-secret",
        SECRET,
        "--agent",
        "claude",
        "--claude-path",
        cli.to_str().unwrap(),
        "--claude-setting-sources=",
        "--store",
        "memory",
        "--allowed-root",
        work.path().to_str().unwrap(),
        "--attachments-dir",
        attachments.path().to_str().unwrap(),
        "--max-attachment-bytes",
        "1000",
        "--max-attachments-per-session",
        "3",
    ];
    args.extend_from_slice(extra);
    let server = ServerProcess::spawn_with_env(BIN, &args, &env)
        .await
        .unwrap();
    Fixture {
        mock,
        _home: home,
        work,
        attachments,
        server,
        alice: hs256(&claims("alice")).unwrap(),
        bob: hs256(&claims("bob")).unwrap(),
    }
}

impl Fixture {
    fn client(&self, token: &str) -> Client {
        self.server.client(Some(token))
    }

    async fn create(&self) -> String {
        self.client(&self.alice)
            .create(&json!({"cwd": self.work.path().to_str().unwrap()}))
            .await
            .unwrap()
    }
}

async fn upload(
    client: &Client,
    id: &str,
    name: &str,
    media_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let response = client
        .request(Method::POST, &format!("/sessions/{id}/attachments"))
        .query(&[("name", name)])
        .header("content-type", media_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

async fn call(client: &Client, method: Method, path: &str) -> (u16, Value) {
    let response = client.request(method, path).send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// Sends `content` and collects the turn up to its `result` from `stream`, answering
/// nothing: a `permission_request` fails the test.
async fn turn(client: &Client, id: &str, stream: &mut SseStream, content: Value) -> Vec<SseFrame> {
    let r = client
        .input(id, &json!({"type": "user_message", "content": content}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    let mut frames = Vec::new();
    loop {
        let frame = stream
            .next_event_within(T)
            .await
            .unwrap()
            .expect("the stream ended");
        assert_ne!(
            frame.event, "permission_request",
            "no permission prompt is needed to read an attachment: {}",
            frame.data
        );
        let done = frame.event == "result";
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Every content block of every user message the model was sent.
fn user_blocks(mock: &MockAnthropicApi) -> Vec<Value> {
    mock.messages()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_array().cloned())
        .flatten()
        .collect()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn scenario(cli: &Path, framework: &str) {
    let f = start(cli, &["--framework", framework]).await;
    let alice = f.client(&f.alice);
    let id = f.create().await;
    let session_dir = f.attachments.path().canonicalize().unwrap().join(&id);
    let mut stream = alice.stream(&id, None).await.unwrap();

    // Upload: 201 with the stored file's description; the file is private and whole.
    let bytes = "hello from an attachment ✓ 42\n".as_bytes().to_vec();
    let (status, text) = upload(&alice, &id, "notes v1.txt", "text/plain", bytes.clone()).await;
    assert_eq!(status, 201, "{text}");
    let path = text["path"].as_str().unwrap().to_owned();
    assert_eq!(text["name"], "notes v1.txt");
    assert_eq!(text["size"], bytes.len());
    assert_eq!(text["media_type"], "text/plain");
    assert_eq!(Path::new(&path), session_dir.join("notes v1.txt"));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    #[cfg(unix)]
    {
        assert_eq!(mode(Path::new(&path)), 0o600);
        assert_eq!(mode(&session_dir), 0o700);
    }
    let (status, list) = call(&alice, Method::GET, &format!("/sessions/{id}/attachments")).await;
    assert_eq!(status, 200);
    assert_eq!(list["attachments"], json!([text.clone()]));

    // The agent is told where the file is, and reads it without a prompt.
    let text_id = text["attachment_id"].as_str().unwrap().to_owned();
    let frames = turn(
        &alice,
        &id,
        &mut stream,
        json!([
            {"type": "attachment", "attachment_id": text_id},
            {"type": "text", "text": format!("[[read: {path}]]")},
        ]),
    )
    .await;
    let result = frames.last().unwrap().json();
    assert_eq!(result["subtype"], "success", "{result}");
    let blocks = user_blocks(&f.mock);
    let given = blocks
        .iter()
        .filter_map(|b| b["text"].as_str())
        .find(|t| t.contains("attached a file"))
        .expect("the model was told about the attachment");
    assert!(given.contains(&path), "{given}");
    assert!(given.contains("notes v1.txt") && given.contains(&format!("{} bytes", bytes.len())));
    assert!(given.contains("text/plain"), "{given}");
    assert!(
        !blocks.iter().any(|b| b["type"] == "attachment"),
        "the attachment block itself never reaches the model"
    );
    let output = blocks
        .iter()
        .find(|b| b["type"] == "tool_result")
        .map(|b| text_of(&b["content"]))
        .expect("the Read tool ran");
    assert!(
        output.contains("hello from an attachment ✓ 42"),
        "the file's bytes reached the model: {output}"
    );
    let read = frames
        .iter()
        .find(|fr| fr.event == "tool_use")
        .map(SseFrame::json)
        .expect("a Read tool_use");
    assert_eq!(read["tool_name"], "Read");
    assert_eq!(read["input"]["file_path"], path);

    // An image reaches the model as an image block.
    let (status, image) = upload(&alice, &id, "dot.png", "image/png", PNG.to_vec()).await;
    assert_eq!(status, 201, "{image}");
    let requests_before = f.mock.streaming_requests().len();
    turn(
        &alice,
        &id,
        &mut stream,
        json!([
            {"type": "text", "text": "what is in this picture?"},
            {"type": "attachment", "attachment_id": image["attachment_id"]},
        ]),
    )
    .await;
    let request = &f.mock.streaming_requests()[requests_before];
    let last_user = request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .unwrap();
    let image_block = last_user["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "image")
        .unwrap_or_else(|| panic!("no image block in {last_user}"));
    assert_eq!(image_block["source"]["type"], "base64");
    assert_eq!(image_block["source"]["media_type"], "image/png");
    assert!(image_block["source"]["data"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));

    // Refusals.
    let (status, body) = upload(
        &alice,
        &id,
        "big.bin",
        "application/octet-stream",
        vec![7; 1001],
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("attachment_too_large")),
        "{body}"
    );
    assert!(!session_dir.join("big.bin").exists(), "nothing stored");
    for bad in ["../x", "", "a\u{1}b", ".hidden", "a/b"] {
        let (status, body) = upload(&alice, &id, bad, "text/plain", b"x".to_vec()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_attachment_name")),
            "{bad:?}: {body}"
        );
    }
    let (status, third) = upload(&alice, &id, "notes v1.txt", "text/plain", b"3".to_vec()).await;
    assert_eq!(status, 201);
    assert_eq!(
        third["name"], "notes v1-2.txt",
        "a taken name gets a suffix"
    );
    let (status, body) = upload(&alice, &id, "four.txt", "text/plain", b"4".to_vec()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("too_many_attachments"))
    );
    let requests = f.mock.streaming_requests().len();
    let r = alice
        .input(
            &id,
            &json!({"type": "user_message", "content": [
                {"type": "text", "text": "hi"},
                {"type": "attachment", "attachment_id": "att_0000000000000000"},
            ]}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "unknown_attachment"
    );
    // Bob sees none of it: every answer is the unknown-session answer.
    let bob = f.client(&f.bob);
    let (status, _) = upload(&bob, &id, "b.txt", "text/plain", b"b".to_vec()).await;
    assert_eq!(status, 404);
    let (status, _) = call(&bob, Method::GET, &format!("/sessions/{id}/attachments")).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &bob,
        Method::DELETE,
        &format!("/sessions/{id}/attachments/{text_id}"),
    )
    .await;
    assert_eq!(status, 404);
    assert!(Path::new(&path).exists());

    // Delete one, then the session: its directory goes with it.
    let (status, _) = call(
        &alice,
        Method::DELETE,
        &format!("/sessions/{id}/attachments/{text_id}"),
    )
    .await;
    assert_eq!(status, 204);
    assert!(!Path::new(&path).exists());
    let (status, body) = call(
        &alice,
        Method::DELETE,
        &format!("/sessions/{id}/attachments/{text_id}"),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("unknown_attachment"))
    );
    assert_eq!(alice.delete(&id).await.unwrap(), 204);
    assert!(
        !session_dir.exists(),
        "the session's attachments are removed with it"
    );
    assert_eq!(
        f.mock.streaming_requests().len(),
        requests,
        "the refused message never reached the model"
    );
}

#[tokio::test]
async fn attachments_axum() {
    let cli = require_real_cli!("attachments_axum");
    scenario(&cli, "axum").await;
}

#[tokio::test]
async fn attachments_actix() {
    let cli = require_real_cli!("attachments_actix");
    scenario(&cli, "actix").await;
}

/// A warm spare was started before its session existed (no `--add-dir`); it is given the
/// session's directory when it is handed over, and reads the attachment without a prompt.
#[tokio::test]
async fn a_warm_spare_reads_attachments_without_a_prompt() {
    let cli = require_real_cli!("a_warm_spare_reads_attachments_without_a_prompt");
    let f = start(&cli, &["--claude-warm-spares", "1"]).await;
    let pid = f.server.pid().unwrap();
    let alice = f.client(&f.alice);
    // Ready (started and initialized): /healthz counts it.
    let ready = async {
        loop {
            let (_, health) = call(&alice, Method::GET, "/healthz").await;
            if health["agents"]["warm_spares"] == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(T, ready).await.unwrap();
    let children = claude_children(pid);
    assert_eq!(children.len(), 1, "{children:?}");
    let spare = children[0].0;
    // The spare serves sessions in the default working directory.
    let id = alice.create(&json!({})).await.unwrap();
    let cmdline = claude_children(pid)
        .into_iter()
        .find(|(child, _)| *child == spare)
        .map(|(_, cmdline)| cmdline)
        .expect("the spare runs the session");
    assert!(!cmdline.contains("--add-dir"), "{cmdline}");
    assert!(
        !claude_children(pid)
            .iter()
            .any(|(_, cmdline)| cmdline.contains(&id)),
        "no CLI was started for the session"
    );
    let (status, text) = upload(
        &alice,
        &id,
        "spare.txt",
        "text/plain",
        b"spare bytes".to_vec(),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let path = text["path"].as_str().unwrap();
    let mut stream = alice.stream(&id, None).await.unwrap();
    turn(
        &alice,
        &id,
        &mut stream,
        json!([
            {"type": "attachment", "attachment_id": text["attachment_id"]},
            {"type": "text", "text": format!("[[read: {path}]]")},
        ]),
    )
    .await;
    let output = user_blocks(&f.mock)
        .iter()
        .find(|b| b["type"] == "tool_result")
        .map(|b| text_of(&b["content"]))
        .unwrap();
    assert!(output.contains("spare bytes"), "{output}");
}

/// With the default store (SQLite in `--data-dir`) the attachments live in
/// `<data dir>/attachments` and survive a restart: the list is rebuilt from the directory and a
/// user message may still name them. (The replay agent: no model is involved.)
#[tokio::test]
async fn attachments_survive_a_restart_with_the_sqlite_store() {
    let dir = TempDir::new("att-restart").unwrap();
    let data = dir.path().join("data");
    let args = [
        "--no-auth",
        "--agent",
        "replay",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let mut first = ServerProcess::spawn(BIN, &args).await.unwrap();
    let client = first.client(None);
    let id = client.create(&json!({"model": "echo"})).await.unwrap();
    let (status, kept) = upload(&client, &id, "kept.txt", "text/plain", b"kept".to_vec()).await;
    assert_eq!(status, 201, "{kept}");
    let expected = data
        .canonicalize()
        .unwrap()
        .join("attachments")
        .join(&id)
        .join("kept.txt");
    assert_eq!(kept["path"], expected.to_str().unwrap());
    first.terminate(T).await.unwrap();

    let second = ServerProcess::spawn(BIN, &args).await.unwrap();
    let client = second.client(None);
    let (status, list) = call(&client, Method::GET, &format!("/sessions/{id}/attachments")).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["attachments"], json!([kept.clone()]));
    let r = client
        .input(
            &id,
            &json!({"type": "user_message", "content": [
                {"type": "attachment", "attachment_id": kept["attachment_id"]},
            ]}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert_eq!(client.delete(&id).await.unwrap(), 204);
    assert!(!expected.parent().unwrap().exists());
}
