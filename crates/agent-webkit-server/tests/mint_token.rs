//! `agent-webkit-server mint-token`: the token it prints is accepted by a server with the same
//! secret and carries the claims asked for; without a key it fails with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_webkit_testkit::ServerProcess;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const SECRET: &str = "mint-token-test-secret-0123456789";

fn mint(args: &[&str], secret: Option<&str>) -> std::process::Output {
    let mut command = std::process::Command::new(BIN);
    command
        .arg("mint-token")
        .args(args)
        .env_remove("AGENT_WEBKIT_JWT_SECRET")
        .env_remove("AGENT_WEBKIT_JWT_AUDIENCE")
        .env_remove("AGENT_WEBKIT_JWT_ISSUER");
    if let Some(secret) = secret {
        command.env("AGENT_WEBKIT_JWT_SECRET", secret);
    }
    command.output().expect("run mint-token")
}

#[tokio::test]
async fn minted_token_is_accepted_with_its_claims() {
    let out = mint(
        &[
            "--sub",
            "alice",
            "--ttl",
            "600",
            "--permission-mode",
            "plan",
            "--audience",
            "aw",
        ],
        Some(SECRET),
    );
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");

    let server = ServerProcess::spawn(
        BIN,
        &[
            "--agent",
            "replay",
            "--jwt-secret",
            SECRET,
            "--jwt-audience",
            "aw",
        ],
    )
    .await
    .unwrap();
    let client = server.client(Some(&token));
    let plan = client
        .create_raw(&json!({"model": "echo", "permission_mode": "plan"}))
        .await
        .unwrap();
    assert_eq!(plan.status(), 200);
    let other = client
        .create_raw(&json!({"model": "echo", "permission_mode": "acceptEdits"}))
        .await
        .unwrap();
    assert_eq!(other.status(), 403, "the permission_modes claim was minted");
    let body: serde_json::Value = other.json().await.unwrap();
    assert_eq!(body["code"], "permission_mode_forbidden");
}

#[test]
fn mint_token_without_a_key_fails_clearly() {
    let out = mint(&["--sub", "alice"], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--secret"), "{stderr}");
}
