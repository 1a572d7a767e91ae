//! Shared test helpers: the admin DSN from `cargo xtask test` (or a loud skip), a fresh
//! database per test binary, and a fresh schema per store.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use agent_webkit_postgres::{PgSessionStore, PoolOptions};
use tokio::sync::OnceCell;
use tokio_postgres::{Client, NoTls};

/// The admin DSN xtask exports.
pub const DSN_ENV: &str = "AGENT_WEBKIT_PG_DSN";
/// Why xtask could not provide PostgreSQL.
pub const SKIP_ENV: &str = "AGENT_WEBKIT_PG_SKIP";

/// The admin DSN, or `None` after printing `SKIPPED (postgres): <reason>`. Panics instead of
/// skipping when `CI` is set and xtask did not report why PostgreSQL is missing.
#[allow(clippy::panic)]
pub fn pg_or_skip(test: &str) -> Option<String> {
    if let Some(dsn) = std::env::var(DSN_ENV).ok().filter(|v| !v.is_empty()) {
        return Some(dsn);
    }
    let reported = std::env::var(SKIP_ENV).ok().filter(|v| !v.is_empty());
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    if ci && reported.is_none() {
        panic!("{test}: {DSN_ENV} is not set in CI (run the tests through `cargo xtask test`)");
    }
    let reason = reported.unwrap_or_else(|| {
        format!("{DSN_ENV} is not set (run `cargo xtask test`, or `cargo xtask with-postgres cargo test -p agent-webkit-postgres`)")
    });
    // Straight to the stderr handle: libtest captures `eprintln!` of passing tests.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n*** {test}: SKIPPED (postgres): {reason} ***\n"
    );
    None
}

/// `let admin = require_pg!();` — the admin DSN, or a loud skip and `return`.
#[macro_export]
macro_rules! require_pg {
    () => {
        match common::pg_or_skip(module_path!()) {
            Some(dsn) => dsn,
            None => return,
        }
    };
}

/// Prints past libtest's capture.
pub fn report(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// `dsn` with another database and, optionally, a `search_path`.
pub fn with_db(dsn: &str, db: &str, search_path: Option<&str>) -> String {
    if let Some(rest) = dsn
        .strip_prefix("postgres://")
        .or_else(|| dsn.strip_prefix("postgresql://"))
    {
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = before_query.split('/').next().unwrap_or("");
        let mut params: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("dbname=") && !p.starts_with("options="))
            .map(str::to_owned)
            .collect();
        if let Some(schema) = search_path {
            params.push(format!("options=-c%20search_path%3D{schema}"));
        }
        let mut out = format!("postgres://{authority}/{db}");
        if !params.is_empty() {
            out.push('?');
            out.push_str(&params.join("&"));
        }
        out
    } else {
        let mut out = format!("{dsn} dbname={db}");
        if let Some(schema) = search_path {
            out.push_str(&format!(" options='-c search_path={schema}'"));
        }
        out
    }
}

/// A plain connection (its driver task runs on the current runtime).
pub async fn connect(dsn: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls).await.expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

static TEST_DB: OnceCell<String> = OnceCell::const_new();

/// The name of a fresh database for this test binary, created once via `CREATE DATABASE` on
/// the admin DSN.
pub async fn test_db(admin: &str) -> String {
    TEST_DB
        .get_or_init(|| async {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let name = format!("aw_test_{}_{nanos}", std::process::id());
            // A separate thread and runtime: each test has its own runtime, and this
            // connection must not be tied to whichever test got here first.
            let admin = admin.to_owned();
            let db = name.clone();
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async {
                        let client = connect(&admin).await;
                        client
                            .batch_execute(&format!("CREATE DATABASE {db}"))
                            .await
                            .expect("CREATE DATABASE");
                    })
            })
            .join()
            .unwrap();
            name
        })
        .await
        .clone()
}

static SCHEMAS: AtomicUsize = AtomicUsize::new(0);

/// Creates a fresh schema in the test database; returns `(schema, dsn with search_path)`.
pub async fn fresh_schema(admin: &str) -> (String, String) {
    let db = test_db(admin).await;
    let n = SCHEMAS.fetch_add(1, Ordering::SeqCst);
    let schema = format!("s{n}");
    let client = connect(&with_db(admin, &db, None)).await;
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("CREATE SCHEMA");
    let dsn = with_db(admin, &db, Some(&schema));
    (schema, dsn)
}

/// A store on a fresh schema.
pub async fn fresh_store(admin: &str, max_size: usize) -> (PgSessionStore, String) {
    let (_, dsn) = fresh_schema(admin).await;
    let store = PgSessionStore::connect(
        &dsn,
        PoolOptions {
            min_size: 1,
            max_size,
        },
    )
    .await
    .expect("connect store");
    (store, dsn)
}
