//! Identity (docs/auth.md): JWT principals, ownership without an oracle, refusals of bad
//! tokens, key rotation through a JWKS, per-user quotas, the `agent_webkit` claim's
//! restrictions.

use reqwest::Method;
use serde_json::{json, Value};

use super::{complete_text, expect_session_ready, Reply, Server, Target, T};
use crate::jwt_keys::{self, claims, hs256, restricted, TestKeys, SECRET};
use crate::{Client, Result};
use agent_webkit_core::auth::jwt::ClaimRestrictions;
use agent_webkit_core::auth::mint::now_secs;

/// Every answer an intruder could get about session `id`: stream (fresh and resumed), inputs
/// (valid, and a body that does not parse) and DELETE, as (status, content-type, connection,
/// body), the session id replaced so answers about two ids compare.
/// The session ids `GET /sessions` shows `client`.
async fn listed_ids(client: &Client) -> Result<Vec<String>> {
    let page = Reply::read(client.request(Method::GET, "/sessions").send().await?).await?;
    ensure_eq!(page.status, 200, "GET /sessions: {}", page.body);
    let page: Value = serde_json::from_str(&page.body)
        .map_err(|e| crate::TestkitError::Unexpected(format!("GET /sessions: {e}")))?;
    Ok(page["sessions"]
        .as_array()
        .map(|sessions| {
            sessions
                .iter()
                .filter_map(|s| s["session_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

async fn probe(client: &Client, id: &str) -> Result<Vec<(u16, String)>> {
    let answer = |label: &str, reply: Reply| {
        let header = |name: &str| reply.header(name).unwrap_or("-").to_owned();
        (
            reply.status,
            format!(
                "{label}: content-type={} connection={} body={}",
                header("content-type"),
                header("connection"),
                reply.body.replace(id, "<id>")
            ),
        )
    };
    let mut answers = Vec::new();
    for (label, last) in [("stream", None), ("stream from 0", Some("0"))] {
        let response = client.stream_raw(id, last).await?;
        if response.status() == 200 {
            // An open stream: its body never ends; that it opened is the answer.
            answers.push((200, format!("{label}: an SSE stream")));
            continue;
        }
        answers.push(answer(label, Reply::read(response).await?));
    }
    let message = json!({"type": "user_message", "content": "let me in"});
    let inputs = [
        ("input", client.input(id, &message).await?),
        (
            "interrupt",
            client.input(id, &json!({"type": "interrupt"})).await?,
        ),
        ("input (bad body)", client.input_raw(id, "{nope").await?),
    ];
    for (label, response) in inputs {
        answers.push(answer(label, Reply::read(response).await?));
    }
    let detail = client
        .request(Method::GET, &format!("/sessions/{id}"))
        .send()
        .await?;
    answers.push(answer("detail", Reply::read(detail).await?));
    let delete = client
        .request(Method::DELETE, &format!("/sessions/{id}"))
        .send()
        .await?;
    answers.push(answer("delete", Reply::read(delete).await?));
    Ok(answers)
}

fn token_client(server: &Server, token: &str) -> Client {
    server.client.with_token(Some(token))
}

/// Two principals never see each other's sessions: on stream, input and DELETE another user's
/// session (and a shared-token caller's view of a user's session) is answered exactly like an
/// unknown id, and the session is untouched; its owner keeps driving it; an admin sees it.
pub async fn check_jwt_sessions_are_private(target: &Target) -> Result<()> {
    let server = target.start(&["--jwt-secret", SECRET]).await?;
    let alice = token_client(&server, &hs256(&claims("alice"))?);
    let bob = token_client(&server, &hs256(&claims("bob"))?);
    let admin = token_client(
        &server,
        &hs256(&restricted(
            "ops",
            ClaimRestrictions {
                admin: true,
                ..ClaimRestrictions::default()
            },
        ))?,
    );
    let turn = target.echo_turn("only for alice");
    let id = alice.create(&server.session_body(&turn)).await?;
    let mut stream = alice.stream(&id, None).await?;
    expect_session_ready(&mut stream, &id).await?;
    let bobs = bob.create(&server.session_body(&turn)).await?;
    let unknown = uuid::Uuid::new_v4().to_string();
    let not_found = json!({"detail": "Session not found"}).to_string();
    for (name, intruder, foreign) in [
        ("bob", &bob, &id),
        ("shared token", &server.client, &id),
        ("alice", &alice, &bobs),
    ] {
        let theirs = probe(intruder, foreign).await?;
        let none = probe(intruder, &unknown).await?;
        ensure_eq!(
            theirs,
            none,
            "{name}: another user's session is answered like an unknown one"
        );
        ensure_eq!(theirs[0].0, 404, "{name}: stream {:?}", theirs[0]);
        ensure!(theirs[0].1.ends_with(&not_found), "{:?}", theirs[0]);
    }
    // Each lists only its own; the shared token none of them; an admin both.
    for (name, client, expected) in [
        ("alice", &alice, vec![id.clone()]),
        ("bob", &bob, vec![bobs.clone()]),
        ("shared token", &server.client, vec![]),
    ] {
        ensure_eq!(listed_ids(client).await?, expected, "{name}'s listing");
    }
    let mut all = listed_ids(&admin).await?;
    all.sort();
    let mut both = vec![id.clone(), bobs.clone()];
    both.sort();
    ensure_eq!(all, both, "the admin's listing");
    // Nothing reached Alice's session (an intruder's message would have run first): her
    // turn is the first, and the only one.
    let reply = Reply::read(alice.input(&id, &turn.message()).await?).await?;
    ensure_eq!(reply.status, 204, "alice's own input: {}", reply.body);
    let frames = stream.until("result", T).await?;
    let texts: Vec<String> = frames.iter().filter_map(complete_text).collect();
    ensure!(
        texts.contains(&target.echo_reply("only for alice"))
            && !frames.iter().any(|f| f.raw.contains("let me in")),
        "alice's turn ran, and only hers: {texts:?}"
    );
    // An admin sees every session.
    let replay = admin.stream(&id, Some("0")).await?;
    drop(replay);
    // The owner deletes hers.
    ensure_eq!(alice.delete(&id).await?, 204);
    stream.until("done", T).await?;
    Ok(())
}

/// Tokens that must not authenticate: expired, not yet valid, wrong audience, wrong or missing
/// issuer, bad signature, `alg: none`, HS256 signed with the RSA public key (algorithm
/// confusion), another key's RS256 — each a plain 401 `Invalid token`; the valid ones (HS256,
/// RS256, and an `exp` within the leeway) are accepted.
pub async fn check_jwt_refusals(target: &Target) -> Result<()> {
    let keys = TestKeys::new()?;
    let rsa = keys.rsa("rsa")?;
    let other = keys.rsa("other")?;
    let public = rsa.public.display().to_string();
    let server = target
        .start(&[
            "--jwt-secret",
            SECRET,
            "--jwt-public-key",
            &public,
            "--jwt-audience",
            "agent-webkit-test",
            "--jwt-issuer",
            "app-test",
            "--jwt-leeway",
            "30",
        ])
        .await?;
    let body = server.session_body(&target.echo_turn("x"));
    let now = now_secs();
    let good = || agent_webkit_core::auth::mint::TokenClaims {
        aud: Some("agent-webkit-test".into()),
        iss: Some("app-test".into()),
        ..claims("alice")
    };
    let rs = rsa.signer()?;
    let accepted = [
        ("HS256", hs256(&good())?),
        ("RS256", jwt_keys::sign(&rs, &good())?),
        (
            "expired within the leeway",
            hs256(&agent_webkit_core::auth::mint::TokenClaims {
                exp: now - 5,
                ..good()
            })?,
        ),
    ];
    for (name, token) in &accepted {
        let reply = Reply::read(token_client(&server, token).create_raw(&body).await?).await?;
        ensure_eq!(reply.status, 200, "{name}: {}", reply.body);
    }
    let pem = std::fs::read(&rsa.public)?;
    let mut tampered = jwt_keys::sign(&rs, &good())?;
    let forged_payload = jwt_keys::base64url(
        serde_json::to_string(&agent_webkit_core::auth::mint::TokenClaims {
            sub: "mallory".into(),
            ..good()
        })
        .unwrap_or_default()
        .as_bytes(),
    );
    let parts: Vec<&str> = tampered.split('.').collect();
    tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    let refused = [
        (
            "expired",
            hs256(&agent_webkit_core::auth::mint::TokenClaims {
                exp: now - 120,
                ..good()
            })?,
        ),
        (
            "not yet valid",
            hs256(&agent_webkit_core::auth::mint::TokenClaims {
                nbf: Some(now + 120),
                ..good()
            })?,
        ),
        (
            "wrong audience",
            hs256(&agent_webkit_core::auth::mint::TokenClaims {
                aud: Some("someone-else".into()),
                ..good()
            })?,
        ),
        (
            "no audience",
            hs256(&agent_webkit_core::auth::mint::TokenClaims {
                aud: None,
                ..good()
            })?,
        ),
        (
            "wrong issuer",
            hs256(&agent_webkit_core::auth::mint::TokenClaims {
                iss: Some("evil".into()),
                ..good()
            })?,
        ),
        (
            "no issuer",
            hs256(&agent_webkit_core::auth::mint::TokenClaims {
                iss: None,
                ..good()
            })?,
        ),
        (
            "bad HS256 signature",
            jwt_keys::hs256_with(b"not-the-secret-not-the-secret", &good())?,
        ),
        ("tampered RS256 payload", tampered),
        (
            "RS256 by another key",
            jwt_keys::sign(&other.signer()?, &good())?,
        ),
        ("alg none", jwt_keys::alg_none(&good())?),
        (
            "HS256 keyed with the RSA public key",
            jwt_keys::hs256_with(&pem, &good())?,
        ),
        (
            "unknown restriction",
            jwt_keys::hs256_json(&json!({
                "sub": "alice", "exp": now + 600, "aud": "agent-webkit-test", "iss": "app-test",
                "agent_webkit": {"max_session": 100}
            }))?,
        ),
        (
            "empty sub",
            hs256(&agent_webkit_core::auth::mint::TokenClaims {
                sub: String::new(),
                ..good()
            })?,
        ),
        ("not a JWT", "a.b.c".to_owned()),
    ];
    for (name, token) in &refused {
        let reply = Reply::read(token_client(&server, token).create_raw(&body).await?).await?;
        reply.expect_error(401, &json!({"detail": "Invalid token"}))?;
        ensure_eq!(reply.header("www-authenticate"), Some("Bearer"), "{name}");
    }
    // With only the RSA key configured, the confusion token has no key to be checked against.
    drop(server);
    let server = target.start(&["--jwt-public-key", &public]).await?;
    let body = server.session_body(&target.echo_turn("x"));
    let confused = jwt_keys::hs256_with(&pem, &claims("alice"))?;
    Reply::read(token_client(&server, &confused).create_raw(&body).await?)
        .await?
        .expect_error(401, &json!({"detail": "Invalid token"}))?;
    let rs256 = jwt_keys::sign(&rs, &claims("alice"))?;
    let reply = Reply::read(token_client(&server, &rs256).create_raw(&body).await?).await?;
    ensure_eq!(reply.status, 200, "RS256 only: {}", reply.body);
    Ok(())
}

/// Key rotation through a JWKS file with two keys: tokens signed by either (RSA `old`, EC
/// `new`) are accepted and name the same principal, so a session created under the old key is
/// the user's under the new one; a `kid` naming the wrong key, or a key outside the set, is
/// refused; once the old key leaves the set, its tokens are refused.
pub async fn check_jwks_rotation(target: &Target) -> Result<()> {
    let keys = TestKeys::new()?;
    let old = keys.rsa("old")?;
    let new = keys.ec("new")?;
    let stranger = keys.ec("stranger")?;
    let both = keys.jwks("both.json", &[old.jwk("old")?, new.jwk("new")?])?;
    let server = target
        .start(&["--jwt-jwks", &both.display().to_string()])
        .await?;
    let body = server.session_body(&target.echo_turn("x"));
    let by_old = jwt_keys::sign(&old.signer()?.with_kid("old"), &claims("alice"))?;
    let by_new = jwt_keys::sign(&new.signer()?.with_kid("new"), &claims("alice"))?;
    let by_new_no_kid = jwt_keys::sign(&new.signer()?, &claims("alice"))?;
    let id = token_client(&server, &by_old).create(&body).await?;
    for token in [&by_new, &by_new_no_kid] {
        let mut stream = token_client(&server, token).stream(&id, None).await?;
        expect_session_ready(&mut stream, &id).await?;
    }
    for (name, token) in [
        (
            "kid of another key",
            jwt_keys::sign(&new.signer()?.with_kid("old"), &claims("alice"))?,
        ),
        (
            "key outside the set",
            jwt_keys::sign(&stranger.signer()?.with_kid("stranger"), &claims("alice"))?,
        ),
        (
            "key outside the set, no kid",
            jwt_keys::sign(&stranger.signer()?, &claims("alice"))?,
        ),
    ] {
        let reply = Reply::read(token_client(&server, &token).create_raw(&body).await?).await?;
        ensure_eq!(reply.status, 401, "{name}: {}", reply.body);
    }
    drop(server);
    let only_new = keys.jwks("new.json", &[new.jwk("new")?])?;
    let server = target
        .start(&["--jwt-jwks", &only_new.display().to_string()])
        .await?;
    let body = server.session_body(&target.echo_turn("x"));
    let reply = Reply::read(token_client(&server, &by_old).create_raw(&body).await?).await?;
    ensure_eq!(reply.status, 401, "retired key: {}", reply.body);
    let reply = Reply::read(token_client(&server, &by_new).create_raw(&body).await?).await?;
    ensure_eq!(reply.status, 200, "current key: {}", reply.body);
    Ok(())
}

async fn create_status(client: &Client, body: &Value) -> Result<Reply> {
    Reply::read(client.create_raw(body).await?).await
}

/// Per-user quotas: `--max-sessions-per-user 2` caps each user at two concurrent sessions
/// (429 `quota_exceeded`), other users are not affected, a `max_sessions` claim lowers the cap
/// but cannot raise it, and deleting a session frees its place.
pub async fn check_session_quota(target: &Target) -> Result<()> {
    let server = target
        .start(&["--jwt-secret", SECRET, "--max-sessions-per-user", "2"])
        .await?;
    let body = server.session_body(&target.echo_turn("x"));
    let with_max = |sub: &str, n: usize| {
        hs256(&restricted(
            sub,
            ClaimRestrictions {
                max_sessions: Some(n),
                ..ClaimRestrictions::default()
            },
        ))
    };
    let alice = token_client(&server, &hs256(&claims("alice"))?);
    let first = alice.create(&body).await?;
    alice.create(&body).await?;
    let over = create_status(&alice, &body).await?;
    let detail = over.expect_error_code(429, Some("quota_exceeded"))?;
    ensure!(detail.contains('2'), "the limit is named: {detail}");
    let bob = token_client(&server, &hs256(&claims("bob"))?);
    bob.create(&body).await?;
    let carol = token_client(&server, &with_max("carol", 1)?);
    carol.create(&body).await?;
    create_status(&carol, &body)
        .await?
        .expect_error_code(429, Some("quota_exceeded"))?;
    let dave = token_client(&server, &with_max("dave", 5)?);
    dave.create(&body).await?;
    dave.create(&body).await?;
    create_status(&dave, &body)
        .await?
        .expect_error_code(429, Some("quota_exceeded"))?;
    ensure_eq!(alice.delete(&first).await?, 204);
    let reply = create_status(&alice, &body).await?;
    ensure_eq!(reply.status, 200, "after a delete: {}", reply.body);
    // The shared token is not a user: only --max-sessions bounds it.
    for _ in 0..3 {
        server.client.create(&body).await?;
    }
    Ok(())
}

/// The `agent_webkit` claim's restrictions: `permission_modes` limits create and
/// `set_permission_mode` (403 `permission_mode_forbidden`; a create without a mode counts as
/// `default`); `cwd_root` confines the cwd (relative paths resolve under it, no cwd starts in
/// it, anything outside is the uniform 400 `invalid_cwd`), and intersects with the server's
/// allowed roots.
pub async fn check_claim_restrictions(target: &Target) -> Result<()> {
    let server = target.start(&["--jwt-secret", SECRET]).await?;
    let work = std::path::Path::new(server.work_dir());
    std::fs::create_dir_all(work.join("alice/project"))?;
    std::fs::create_dir_all(work.join("bob"))?;
    let base = server.session_body(&target.echo_turn("x"));
    let with = |fields: Value| {
        let mut body = base.clone();
        if let (Some(body), Some(fields)) = (body.as_object_mut(), fields.as_object()) {
            for (k, v) in fields {
                if v.is_null() {
                    body.remove(k);
                } else {
                    body.insert(k.clone(), v.clone());
                }
            }
        }
        body
    };
    let planner = token_client(
        &server,
        &hs256(&restricted(
            "planner",
            ClaimRestrictions {
                permission_modes: Some(vec!["plan".into()]),
                ..ClaimRestrictions::default()
            },
        ))?,
    );
    for body in [
        with(json!({"permission_mode": "acceptEdits"})),
        with(json!({})),
    ] {
        let detail = create_status(&planner, &body)
            .await?
            .expect_error_code(403, Some("permission_mode_forbidden"))?;
        ensure!(
            detail.contains("plan"),
            "the allowed modes are named: {detail}"
        );
    }
    let id = planner
        .create(&with(json!({"permission_mode": "plan"})))
        .await?;
    let reply = Reply::read(
        planner
            .input(
                &id,
                &json!({"type": "set_permission_mode", "mode": "acceptEdits"}),
            )
            .await?,
    )
    .await?;
    reply.expect_error_code(403, Some("permission_mode_forbidden"))?;
    let reply = Reply::read(
        planner
            .input(&id, &json!({"type": "set_permission_mode", "mode": "plan"}))
            .await?,
    )
    .await?;
    ensure_eq!(reply.status, 204, "an allowed mode: {}", reply.body);

    let rooted = |root: &std::path::Path| {
        hs256(&restricted(
            "alice",
            ClaimRestrictions {
                cwd_root: Some(root.display().to_string()),
                ..ClaimRestrictions::default()
            },
        ))
    };
    let alice = token_client(&server, &rooted(&work.join("alice"))?);
    for cwd in [
        json!(work.join("bob").display().to_string()),
        json!(work.display().to_string()),
        json!("../bob"),
        json!(work.join("alice/missing").display().to_string()),
    ] {
        create_status(&alice, &with(json!({ "cwd": cwd })))
            .await?
            .expect_error(
                400,
                &json!({"detail": "cwd is not a directory this server allows", "code": "invalid_cwd"}),
            )?;
    }
    for cwd in [
        json!("project"),
        json!(work.join("alice/project").display().to_string()),
        Value::Null,
    ] {
        let reply = create_status(&alice, &with(json!({ "cwd": cwd }))).await?;
        ensure_eq!(reply.status, 200, "cwd {cwd}: {}", reply.body);
    }
    // A root wider than the server's: only the server's allowed roots remain usable.
    let wide = token_client(&server, &rooted(std::path::Path::new("/"))?);
    create_status(&wide, &with(json!({"cwd": null})))
        .await?
        .expect_error_code(400, Some("invalid_cwd"))?;
    let reply = create_status(&wide, &base).await?;
    ensure_eq!(reply.status, 200, "inside both: {}", reply.body);
    Ok(())
}
