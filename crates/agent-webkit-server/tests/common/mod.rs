//! Helpers shared by the PostgreSQL-backed server tests (`failover_pg`, `failover_real_cli`,
//! `postgres_outage`): the admin DSN exported by xtask (or a loud skip), fresh databases, and
//! seq extraction. Each test binary uses a subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use agent_webkit_postgres::deadpool_postgres::tokio_postgres;
use agent_webkit_testkit::SseFrame;

/// Environment variable holding the admin DSN (exported by `cargo xtask test` / `with-postgres`).
pub const DSN_ENV: &str = "AGENT_WEBKIT_PG_DSN";
/// Environment variable holding why xtask could not provide PostgreSQL.
pub const SKIP_ENV: &str = "AGENT_WEBKIT_PG_SKIP";

fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Prints the loud skip line straight to stderr (libtest captures `eprintln!` of passing tests).
pub fn skip_loudly(test: &str, what: &str, reason: &str) {
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n*** {test}: SKIPPED ({what}): {reason} ***\n"
    );
}

/// The admin DSN, or `None` after printing `<test>: SKIPPED (postgres): <reason>`. Panics in CI
/// when xtask did not report why PostgreSQL is missing.
pub fn dsn_or_skip(test: &str) -> Option<String> {
    if let Some(dsn) = std::env::var(DSN_ENV).ok().filter(|v| !v.is_empty()) {
        return Some(dsn);
    }
    let reason = std::env::var(SKIP_ENV).ok().filter(|v| !v.is_empty());
    if in_ci() && reason.is_none() {
        panic!("{DSN_ENV} is not set in CI (run the tests through `cargo xtask test`)");
    }
    skip_loudly(
        test,
        "postgres",
        &reason.unwrap_or_else(|| format!("{DSN_ENV} is not set")),
    );
    None
}

/// A connected client (its connection driven by a spawned task).
pub async fn connect(dsn: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A fresh database on the admin DSN; returns its URL.
pub async fn fresh_database(admin: &str) -> String {
    let client = connect(admin).await;
    let name = format!("aw_failover_{}", uuid_like());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let rest = admin
        .strip_prefix("postgres://")
        .or_else(|| admin.strip_prefix("postgresql://"))
        .expect("a postgres:// URL");
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = before_query.split('/').next().unwrap_or("");
    if query.is_empty() {
        format!("postgres://{authority}/{name}")
    } else {
        format!("postgres://{authority}/{name}?{query}")
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The `id:` of every event frame, in order.
pub fn seqs(frames: &[SseFrame]) -> Vec<u64> {
    frames.iter().filter_map(|f| f.id).collect()
}
