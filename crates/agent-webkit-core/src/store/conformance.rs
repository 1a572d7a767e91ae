//! A reusable conformance suite for [`SessionStore`] implementations: the SDK's 14 contracts
//! (`docs/claude-cli-protocol.md` §5.8) plus uuid idempotency, concurrent appends and large
//! entries. Optional contracts run only when the store's capabilities claim them and they are
//! not skipped.

use std::future::Future;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{SessionKey, SessionStore, StoreError};

/// The first contract a store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store conformance contract {contract:?} failed: {reason}")]
pub struct ConformanceFailure {
    /// Contract name.
    pub contract: &'static str,
    /// What went wrong.
    pub reason: String,
}

fn e(n: i64) -> Value {
    json!({"type": "x", "n": n})
}

fn key(pk: &str, sid: &str) -> SessionKey {
    SessionKey::main(pk, sid)
}

struct Run {
    contract: &'static str,
}

impl Run {
    fn fail(&self, reason: impl Into<String>) -> ConformanceFailure {
        ConformanceFailure {
            contract: self.contract,
            reason: reason.into(),
        }
    }
    fn store<T>(&self, r: Result<T, StoreError>) -> Result<T, ConformanceFailure> {
        r.map_err(|err| self.fail(format!("store error: {err}")))
    }
    fn eq<T: PartialEq + std::fmt::Debug>(
        &self,
        what: &str,
        got: T,
        want: T,
    ) -> Result<(), ConformanceFailure> {
        if got == want {
            Ok(())
        } else {
            Err(self.fail(format!("{what}: got {got:?}, want {want:?}")))
        }
    }
}

/// Runs the suite; `make_store` builds a fresh store per contract. `skip_optional` may name
/// `list_sessions`, `list_session_summaries`, `delete`, `list_subkeys`. Returns how many
/// contracts ran.
pub async fn run_session_store_conformance<S, F, Fut>(
    make_store: F,
    skip_optional: &[&str],
) -> Result<usize, ConformanceFailure>
where
    S: SessionStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let mut ran = 0;
    let k = key("proj", "sess");

    macro_rules! contract {
        ($name:literal, $needs:expr, |$s:ident, $r:ident| $body:block) => {{
            let $s = Arc::new(make_store().await);
            let caps = $s.capabilities();
            let needs: &[&str] = $needs;
            let enabled = needs.iter().all(|n| {
                !skip_optional.contains(n)
                    && match *n {
                        "list_sessions" => caps.list_sessions,
                        "list_session_summaries" => caps.list_session_summaries,
                        "delete" => caps.delete,
                        "list_subkeys" => caps.list_subkeys,
                        _ => true,
                    }
            });
            if enabled {
                let $r = Run { contract: $name };
                $body
                ran += 1;
            }
        }};
    }

    contract!("append_then_load", &[], |s, r| {
        r.store(s.append(&k, vec![e(1), e(2)]).await)?;
        r.eq("load", r.store(s.load(&k).await)?, Some(vec![e(1), e(2)]))?;
    });
    contract!("load_unknown_is_none", &[], |s, r| {
        r.eq(
            "unknown",
            r.store(s.load(&key("proj", "never")).await)?,
            None,
        )?;
        r.store(s.append(&k, vec![e(1)]).await)?;
        r.eq(
            "unknown subpath",
            r.store(s.load(&k.with_subpath("nope")).await)?,
            None,
        )?;
    });
    contract!("appends_concatenate_in_order", &[], |s, r| {
        r.store(s.append(&k, vec![e(1)]).await)?;
        r.store(s.append(&k, vec![e(2), e(3)]).await)?;
        r.store(s.append(&k, vec![e(4)]).await)?;
        r.eq(
            "load",
            r.store(s.load(&k).await)?,
            Some(vec![e(1), e(2), e(3), e(4)]),
        )?;
    });
    contract!("empty_append_is_noop", &[], |s, r| {
        r.store(s.append(&k, vec![e(1)]).await)?;
        r.store(s.append(&k, vec![]).await)?;
        r.eq("load", r.store(s.load(&k).await)?, Some(vec![e(1)]))?;
    });
    contract!("subpath_keys_are_independent", &[], |s, r| {
        let sub = k.with_subpath("subagents/agent-1");
        r.store(s.append(&k, vec![e(1)]).await)?;
        r.store(s.append(&sub, vec![e(2)]).await)?;
        r.eq("main", r.store(s.load(&k).await)?, Some(vec![e(1)]))?;
        r.eq("sub", r.store(s.load(&sub).await)?, Some(vec![e(2)]))?;
    });
    contract!("projects_are_independent", &[], |s, r| {
        r.store(s.append(&key("A", "sess"), vec![e(1)]).await)?;
        r.store(s.append(&key("B", "sess"), vec![e(2)]).await)?;
        r.eq(
            "A",
            r.store(s.load(&key("A", "sess")).await)?,
            Some(vec![e(1)]),
        )?;
        r.eq(
            "B",
            r.store(s.load(&key("B", "sess")).await)?,
            Some(vec![e(2)]),
        )?;
        if s.capabilities().list_sessions && !skip_optional.contains(&"list_sessions") {
            r.eq("A listed", r.store(s.list_sessions("A").await)?.len(), 1)?;
            r.eq("B listed", r.store(s.list_sessions("B").await)?.len(), 1)?;
        }
    });
    contract!("list_sessions", &["list_sessions"], |s, r| {
        r.store(s.append(&key("proj", "a"), vec![e(1)]).await)?;
        r.store(s.append(&key("proj", "b"), vec![e(1)]).await)?;
        r.store(s.append(&key("other", "c"), vec![e(1)]).await)?;
        let listed = r.store(s.list_sessions("proj").await)?;
        let mut ids: Vec<_> = listed.iter().map(|l| l.session_id.clone()).collect();
        ids.sort();
        r.eq("ids", ids, vec!["a".to_owned(), "b".to_owned()])?;
        if listed.iter().any(|l| l.mtime <= 1_000_000_000_000) {
            return Err(r.fail("mtime must be epoch milliseconds"));
        }
        r.eq(
            "unknown project",
            r.store(s.list_sessions("nope").await)?.len(),
            0,
        )?;
    });
    contract!("list_sessions_main_only", &["list_sessions"], |s, r| {
        let m = key("proj", "main");
        r.store(s.append(&m, vec![e(1)]).await)?;
        r.store(
            s.append(&m.with_subpath("subagents/agent-1"), vec![e(1)])
                .await,
        )?;
        let ids: Vec<_> = r
            .store(s.list_sessions("proj").await)?
            .into_iter()
            .map(|l| l.session_id)
            .collect();
        r.eq("ids", ids, vec!["main".to_owned()])?;
    });
    contract!("delete_basic", &["delete"], |s, r| {
        r.store(s.delete(&key("proj", "never")).await)?;
        r.store(s.append(&k, vec![e(1)]).await)?;
        r.store(s.delete(&k).await)?;
        r.eq("after delete", r.store(s.load(&k).await)?, None)?;
    });
    contract!("delete_main_cascades", &["delete"], |s, r| {
        let (a1, a2) = (
            k.with_subpath("subagents/agent-1"),
            k.with_subpath("subagents/agent-2"),
        );
        for key in [
            &k,
            &a1,
            &a2,
            &key("proj", "sess2"),
            &key("other-proj", "sess"),
        ] {
            r.store(s.append(key, vec![e(1)]).await)?;
        }
        r.store(s.delete(&k).await)?;
        for gone in [&k, &a1, &a2] {
            r.eq("deleted", r.store(s.load(gone).await)?, None)?;
        }
        r.eq(
            "sibling",
            r.store(s.load(&key("proj", "sess2")).await)?
                .map(|v| v.len()),
            Some(1),
        )?;
        r.eq(
            "other project",
            r.store(s.load(&key("other-proj", "sess")).await)?
                .map(|v| v.len()),
            Some(1),
        )?;
        if s.capabilities().list_subkeys && !skip_optional.contains(&"list_subkeys") {
            r.eq(
                "subkeys",
                r.store(s.list_subkeys(&k).await)?,
                Vec::<String>::new(),
            )?;
        }
        if s.capabilities().list_sessions && !skip_optional.contains(&"list_sessions") {
            let ids: Vec<_> = r
                .store(s.list_sessions("proj").await)?
                .into_iter()
                .map(|l| l.session_id)
                .collect();
            r.eq("listed", ids, vec!["sess2".to_owned()])?;
        }
    });
    contract!("delete_subkey_only", &["delete"], |s, r| {
        let (a1, a2) = (
            k.with_subpath("subagents/agent-1"),
            k.with_subpath("subagents/agent-2"),
        );
        for key in [&k, &a1, &a2] {
            r.store(s.append(key, vec![e(1)]).await)?;
        }
        r.store(s.delete(&a1).await)?;
        r.eq("a1", r.store(s.load(&a1).await)?, None)?;
        r.eq("a2", r.store(s.load(&a2).await)?.map(|v| v.len()), Some(1))?;
        r.eq("main", r.store(s.load(&k).await)?.map(|v| v.len()), Some(1))?;
        if s.capabilities().list_subkeys && !skip_optional.contains(&"list_subkeys") {
            r.eq(
                "subkeys",
                r.store(s.list_subkeys(&k).await)?,
                vec!["subagents/agent-2".to_owned()],
            )?;
        }
    });
    contract!("list_subkeys", &["list_subkeys"], |s, r| {
        r.store(
            s.append(&k.with_subpath("subagents/agent-2"), vec![e(1)])
                .await,
        )?;
        r.store(
            s.append(&k.with_subpath("subagents/agent-1"), vec![e(1)])
                .await,
        )?;
        r.store(
            s.append(
                &key("proj", "x").with_subpath("subagents/agent-x"),
                vec![e(1)],
            )
            .await,
        )?;
        let mut subkeys = r.store(s.list_subkeys(&k).await)?;
        subkeys.sort();
        r.eq(
            "subkeys",
            subkeys,
            vec![
                "subagents/agent-1".to_owned(),
                "subagents/agent-2".to_owned(),
            ],
        )?;
    });
    contract!("list_subkeys_empty", &["list_subkeys"], |s, r| {
        r.store(s.append(&k, vec![e(1)]).await)?;
        r.eq(
            "main only",
            r.store(s.list_subkeys(&k).await)?,
            Vec::<String>::new(),
        )?;
        r.eq(
            "never",
            r.store(s.list_subkeys(&key("proj", "never")).await)?,
            Vec::<String>::new(),
        )?;
    });
    contract!(
        "list_session_summaries",
        &["list_session_summaries"],
        |s, r| {
            let sk = key("proj", "summ-sess");
            r.store(s.append(&sk, vec![
            json!({"type": "x", "timestamp": "2024-01-01T00:00:00.000Z", "customTitle": "first"}),
            json!({"type": "x", "timestamp": "2024-01-01T00:00:01.000Z"}),
        ]).await)?;
            r.store(s.append(&sk, vec![json!({"type": "x", "timestamp": "2024-01-01T00:00:02.000Z", "customTitle": "second"})]).await)?;
            r.store(s.append(&key("other", "o"), vec![e(1)]).await)?;
            let summaries = r.store(s.list_session_summaries("proj").await)?;
            r.eq(
                "ids",
                summaries
                    .iter()
                    .map(|x| x.session_id.clone())
                    .collect::<Vec<_>>(),
                vec!["summ-sess".to_owned()],
            )?;
            let summary = &summaries[0];
            if summary.mtime <= 1_000_000_000_000 {
                return Err(r.fail("summary mtime must be epoch milliseconds"));
            }
            r.eq(
                "custom_title",
                summary.data.get("custom_title").cloned(),
                Some(json!("second")),
            )?;
            if s.capabilities().list_sessions && !skip_optional.contains(&"list_sessions") {
                let listed = r.store(s.list_sessions("proj").await)?;
                let mtime = listed
                    .iter()
                    .find(|l| l.session_id == "summ-sess")
                    .map(|l| l.mtime);
                if mtime.is_none_or(|m| summary.mtime < m) {
                    return Err(r.fail("summary.mtime must be >= list_sessions mtime"));
                }
            }
            let refolded = super::fold_session_summary(Some(summary), &sk, &[e(9)]);
            r.eq("fold keeps id", refolded.session_id.as_str(), "summ-sess")?;
            r.eq("fold keeps mtime", refolded.mtime, summary.mtime)?;
            r.store(
                s.append(
                    &sk.with_subpath("subagents/agent-1"),
                    vec![json!({"type": "x", "customTitle": "sub"})],
                )
                .await,
            )?;
            let after = r.store(s.list_session_summaries("proj").await)?;
            r.eq(
                "subkey leaves data alone",
                after[0].data.clone(),
                summary.data.clone(),
            )?;
            r.eq(
                "unknown project",
                r.store(s.list_session_summaries("nope").await)?.len(),
                0,
            )?;
            if s.capabilities().delete && !skip_optional.contains(&"delete") {
                r.store(s.delete(&sk).await)?;
                r.eq(
                    "after delete",
                    r.store(s.list_session_summaries("proj").await)?.len(),
                    0,
                )?;
            }
        }
    );
    contract!("uuid_idempotency", &[], |s, r| {
        let a = json!({"type": "user", "uuid": "u-1"});
        let b = json!({"type": "user", "uuid": "u-2"});
        let plain = json!({"type": "mode"});
        r.store(s.append(&k, vec![a.clone(), plain.clone()]).await)?;
        r.store(
            s.append(&k, vec![a.clone(), b.clone(), plain.clone()])
                .await,
        )?;
        r.eq(
            "load",
            r.store(s.load(&k).await)?,
            Some(vec![a, plain.clone(), b, plain]),
        )?;
    });
    contract!("concurrent_appends", &[], |s, r| {
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let s = Arc::clone(&s);
                let k = k.clone();
                async move {
                    for i in 0..25 {
                        s.append(&k, vec![json!({"type": "x", "t": t, "i": i})])
                            .await?;
                    }
                    Ok::<_, StoreError>(())
                }
            })
            .collect();
        for result in futures_util::future::join_all(tasks).await {
            r.store(result)?;
        }
        let all = r.store(s.load(&k).await)?.unwrap_or_default();
        r.eq("count", all.len(), 200)?;
        for t in 0..8 {
            let mine: Vec<i64> = all
                .iter()
                .filter(|v| v["t"] == t)
                .filter_map(|v| v["i"].as_i64())
                .collect();
            r.eq("per-task order", mine, (0..25).collect::<Vec<_>>())?;
        }
    });
    contract!("large_entry", &[], |s, r| {
        let big = json!({"type": "assistant", "text": "é".repeat(1 << 20), "nested": {"a": [1, 2.5, null, true]}});
        r.store(s.append(&k, vec![big.clone()]).await)?;
        r.eq("load", r.store(s.load(&k).await)?, Some(vec![big]))?;
    });
    Ok(ran)
}
