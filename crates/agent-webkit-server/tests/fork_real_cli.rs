//! Fork (`POST /sessions` with `fork`) with the **real** Claude CLI against the mock Messages
//! API, on axum and actix: a fork at a user message whose next model request carries exactly
//! the history up to that message's turn while the source continues unchanged; a whole-session
//! fork; the refusals (unknown source, unknown message, another principal's source). Skips
//! loudly (fails in CI) when the real CLI is unavailable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod anchors;

use agent_webkit_testkit::require_real_cli;
use anchors::{last_user_texts, refused, rig, turn, T};
use serde_json::json;

async fn fork_at_a_message_and_whole(framework: &str) {
    let cli = require_real_cli!("fork_at_a_message_and_whole");
    let rig = rig(&cli, framework, &[]).await;
    let root = rig.work.path().to_str().unwrap();
    let alice = &rig.alice;
    let source = alice
        .create(&json!({"cwd": root, "model": "claude-haiku-4-5"}))
        .await
        .unwrap();
    let mut s = alice.stream(&source, None).await.unwrap();
    let (_u1, _) = turn(alice, &source, &mut s, "first ALPHA").await;
    let (u2, _) = turn(alice, &source, &mut s, "second BRAVO").await;
    let (_u3, _) = turn(alice, &source, &mut s, "third CHARLIE").await;

    // Fork at the second message: its turn is kept, the third is not.
    let r = alice
        .create_raw(&json!({"fork": {"session_id": source, "message_uuid": u2}}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["forked_from"],
        json!({"session_id": source, "message_uuid": u2})
    );
    let fork = body["session_id"].as_str().unwrap().to_owned();
    assert_ne!(fork, source);
    let mut f = alice.stream(&fork, None).await.unwrap();
    turn(alice, &fork, &mut f, "fork DELTA").await;
    assert_eq!(
        last_user_texts(&rig.mock),
        ["first ALPHA", "second BRAVO", "fork DELTA"]
    );
    let last = rig.mock.streaming_requests();
    let last = last.last().unwrap();
    assert!(last["messages"].to_string().contains("Echo: second BRAVO"));
    // Inherited from the source's record.
    assert_eq!(last["body"]["model"], "claude-haiku-4-5");

    // The source goes on as if nothing happened.
    turn(alice, &source, &mut s, "source ECHO").await;
    assert_eq!(
        last_user_texts(&rig.mock),
        [
            "first ALPHA",
            "second BRAVO",
            "third CHARLIE",
            "source ECHO"
        ]
    );

    // A whole-session fork carries all of it.
    let whole = alice
        .create(&json!({"fork": {"session_id": source}}))
        .await
        .unwrap();
    let mut w = alice.stream(&whole, None).await.unwrap();
    turn(alice, &whole, &mut w, "whole FOXTROT").await;
    assert_eq!(
        last_user_texts(&rig.mock),
        [
            "first ALPHA",
            "second BRAVO",
            "third CHARLIE",
            "source ECHO",
            "whole FOXTROT"
        ]
    );

    // Refusals.
    let r = alice
        .create_raw(&json!({"fork": {"session_id": "00000000-0000-4000-8000-000000000000"}}))
        .await
        .unwrap();
    refused(r, 404, Some("session_not_found")).await;
    let r = alice
        .create_raw(&json!({"fork": {"session_id": source, "message_uuid": "00000000-0000-4000-8000-000000000000"}}))
        .await
        .unwrap();
    refused(r, 400, Some("unknown_message")).await;
    let r = rig
        .bob
        .create_raw(&json!({"fork": {"session_id": source, "message_uuid": u2}}))
        .await
        .unwrap();
    refused(r, 404, Some("session_not_found")).await;
    let r = alice
        .create_raw(&json!({"fork": {"message_uuid": u2}}))
        .await
        .unwrap();
    refused(r, 400, None).await;
    drop(rig.server);
    let _ = T;
}

#[tokio::test]
async fn fork_on_axum() {
    fork_at_a_message_and_whole("axum").await;
}

#[tokio::test]
async fn fork_on_actix() {
    fork_at_a_message_and_whole("actix").await;
}

/// A fork keeps its source's user messages as its own: it can be forked again, and rewound, at
/// a message it inherited.
#[tokio::test]
async fn a_fork_can_be_forked_and_rewound_at_inherited_messages() {
    let cli = require_real_cli!("a_fork_can_be_forked_and_rewound_at_inherited_messages");
    let rig = rig(&cli, "axum", &[]).await;
    let root = rig.work.path().to_str().unwrap();
    let alice = &rig.alice;
    let source = alice.create(&json!({"cwd": root})).await.unwrap();
    let mut s = alice.stream(&source, None).await.unwrap();
    let (u1, _) = turn(alice, &source, &mut s, "first ALPHA").await;
    let (u2, _) = turn(alice, &source, &mut s, "second BRAVO").await;
    turn(alice, &source, &mut s, "third CHARLIE").await;

    let fork = alice
        .create(&json!({"fork": {"session_id": source, "message_uuid": u2}}))
        .await
        .unwrap();
    let mut f = alice.stream(&fork, None).await.unwrap();
    turn(alice, &fork, &mut f, "fork DELTA").await;

    // Forked again at the first message, which the fork inherited.
    let again = alice
        .create(&json!({"fork": {"session_id": fork, "message_uuid": u1}}))
        .await
        .unwrap();
    let mut g = alice.stream(&again, None).await.unwrap();
    turn(alice, &again, &mut g, "again ECHO").await;
    assert_eq!(last_user_texts(&rig.mock), ["first ALPHA", "again ECHO"]);

    // Rewound at the second one: the fork's conversation is the first turn only.
    let r = alice
        .input(
            &fork,
            &json!({"type": "rewind", "message_uuid": u2, "files": false}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let done: serde_json::Value = r.json().await.unwrap();
    assert_eq!(done["conversation"]["rewound"], true, "{done}");
    turn(alice, &fork, &mut f, "fork FOXTROT").await;
    assert_eq!(last_user_texts(&rig.mock), ["first ALPHA", "fork FOXTROT"]);
}
