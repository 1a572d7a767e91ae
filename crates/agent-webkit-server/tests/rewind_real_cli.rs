//! Rewind (inbound `rewind`) with the **real** Claude CLI against the mock Messages API, on axum
//! and actix: a file the agent wrote through the Write tool gets its bytes back, the
//! conversation no longer contains the rewound turns in the next model request, other tabs get
//! a `rewound` event; the refusals (unknown message, turn running, checkpointing off). Skips
//! loudly (fails in CI) when the real CLI is unavailable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod anchors;

use agent_webkit_testkit::require_real_cli;
use anchors::{last_user_texts, refused, rig, turn, T};
use serde_json::{json, Value};

/// Alice's session in `acceptEdits` in the rig's work directory, which holds `notes.txt`
/// ("version one"); returns the file, the session and its stream.
async fn notes_session(
    rig: &anchors::Rig,
) -> (std::path::PathBuf, String, agent_webkit_testkit::SseStream) {
    let file = rig.work.path().join("notes.txt");
    std::fs::write(&file, "version one\n").unwrap();
    let root = rig.work.path().to_str().unwrap();
    let id = rig
        .alice
        .create(&json!({"cwd": root, "permission_mode": "acceptEdits"}))
        .await
        .unwrap();
    let stream = rig.alice.stream(&id, None).await.unwrap();
    (file, id, stream)
}

async fn rewind_files_and_conversation(framework: &str) {
    let cli = require_real_cli!("rewind_files_and_conversation");
    let rig = rig(&cli, framework, &[]).await;
    let (file, id, mut s) = notes_session(&rig).await;
    let alice = &rig.alice;
    let (u1, _) = turn(alice, &id, &mut s, "hello ALPHA").await;
    let write = format!("[[write: {} | version two]]", file.display());
    let (u2, _) = turn(alice, &id, &mut s, &write).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "version two");
    let (_u3, _) = turn(alice, &id, &mut s, "third CHARLIE").await;

    // A dry run reports and changes nothing.
    let rewind = |body: Value| {
        let (alice, id) = (alice, &id);
        async move { alice.input(id, &body).await.unwrap() }
    };
    let r = rewind(json!({"type": "rewind", "message_uuid": u2, "dry_run": true})).await;
    assert_eq!(r.status(), 200);
    let dry: Value = r.json().await.unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["files"]["rewound"], true, "{dry}");
    assert_eq!(
        dry["files"]["files_changed"],
        json!([file.to_str().unwrap()])
    );
    assert_eq!(dry["conversation"]["rewound"], true);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "version two");

    // The real one: the file's bytes come back, the turns from u2 on are gone.
    let r = rewind(json!({"type": "rewind", "message_uuid": u2})).await;
    assert_eq!(r.status(), 200);
    let done: Value = r.json().await.unwrap();
    assert_eq!(done["message_uuid"], u2);
    assert_eq!(done["dry_run"], false);
    assert_eq!(done["files"]["rewound"], true, "{done}");
    assert_eq!(done["conversation"]["rewound"], true, "{done}");
    assert!(done["not_restored"].as_str().unwrap().contains("Bash"));
    assert_eq!(std::fs::read(&file).unwrap(), b"version one\n");
    let event = s.until("rewound", T).await.unwrap();
    assert_eq!(event.last().unwrap().json(), done);

    turn(alice, &id, &mut s, "after GOLF").await;
    assert_eq!(last_user_texts(&rig.mock), ["hello ALPHA", "after GOLF"]);

    // Refusals: a rewound message is gone, an unknown one never was.
    let r = rewind(json!({"type": "rewind", "message_uuid": u2})).await;
    refused(r, 400, Some("unknown_message")).await;
    let r =
        rewind(json!({"type": "rewind", "message_uuid": "00000000-0000-4000-8000-000000000000"}))
            .await;
    refused(r, 400, Some("unknown_message")).await;
    let r = rewind(
        json!({"type": "rewind", "message_uuid": u1, "files": false, "conversation": false}),
    )
    .await;
    refused(r, 400, None).await;
    // While a turn runs.
    let r = alice
        .input(
            &id,
            &json!({"type": "user_message", "content": "[[slow: 20]]"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    s.until("message_delta", T).await.unwrap();
    let r = rewind(json!({"type": "rewind", "message_uuid": u1})).await;
    refused(r, 409, Some("turn_running")).await;
    s.until("result", T).await.unwrap();
    // Another principal's session is an unknown one.
    let r = rig
        .bob
        .input(&id, &json!({"type": "rewind", "message_uuid": u1}))
        .await
        .unwrap();
    refused(r, 404, None).await;

    // Checkpointing off for a session: files cannot be rewound, the conversation can.
    let off = alice
        .create(&json!({"cwd": rig.work.path(), "file_checkpointing": false}))
        .await
        .unwrap();
    let mut o = alice.stream(&off, None).await.unwrap();
    let (v1, _) = turn(alice, &off, &mut o, "unchecked INDIA").await;
    let r = alice
        .input(&off, &json!({"type": "rewind", "message_uuid": v1}))
        .await
        .unwrap();
    refused(r, 409, Some("checkpointing_disabled")).await;
    let r = alice
        .input(
            &off,
            &json!({"type": "rewind", "message_uuid": v1, "files": false}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["files"], Value::Null);
    assert_eq!(body["conversation"]["rewound"], true, "{body}");
}

#[tokio::test]
async fn rewind_on_axum() {
    rewind_files_and_conversation("axum").await;
}

#[tokio::test]
async fn rewind_on_actix() {
    rewind_files_and_conversation("actix").await;
}

/// The server flag turns checkpointing off by default; a create can turn it back on.
#[tokio::test]
async fn checkpointing_off_by_flag_on_by_create() {
    let cli = require_real_cli!("checkpointing_off_by_flag_on_by_create");
    let rig = rig(&cli, "axum", &["--file-checkpointing", "off"]).await;
    let root = rig.work.path().to_str().unwrap();
    let alice = &rig.alice;
    for (create, status) in [
        (json!({"cwd": root}), 409),
        (json!({"cwd": root, "file_checkpointing": true}), 200),
    ] {
        let id = alice.create(&create).await.unwrap();
        let mut s = alice.stream(&id, None).await.unwrap();
        let (u, _) = turn(alice, &id, &mut s, "plain KILO").await;
        let r = alice
            .input(
                &id,
                &json!({"type": "rewind", "message_uuid": u, "dry_run": true}),
            )
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{create}");
    }
}

/// A rewind of a hibernated session wakes its agent: the conversation is rewound (the next
/// model request has no trace of the later turns), and the files are reported as not rewound —
/// their checkpoints went with the CLI process that made them.
#[tokio::test]
async fn rewind_wakes_a_hibernated_session() {
    let cli = require_real_cli!("rewind_wakes_a_hibernated_session");
    let rig = rig(&cli, "axum", &["--hibernate-after", "1"]).await;
    let (file, id, mut s) = notes_session(&rig).await;
    let alice = &rig.alice;
    turn(alice, &id, &mut s, "hello ALPHA").await;
    let write = format!("[[write: {} | version two]]", file.display());
    let (u2, _) = turn(alice, &id, &mut s, &write).await;
    turn(alice, &id, &mut s, "third CHARLIE").await;
    agent_webkit_testkit::until_no_claude_children(rig.server.pid().unwrap(), T)
        .await
        .unwrap();

    let r = alice
        .input(&id, &json!({"type": "rewind", "message_uuid": u2}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let done: Value = r.json().await.unwrap();
    assert_eq!(done["conversation"]["rewound"], true, "{done}");
    assert_eq!(done["files"]["rewound"], false, "{done}");
    assert!(done["files"]["error"].as_str().is_some(), "{done}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "version two");
    turn(alice, &id, &mut s, "after GOLF").await;
    assert_eq!(last_user_texts(&rig.mock), ["hello ALPHA", "after GOLF"]);
}
