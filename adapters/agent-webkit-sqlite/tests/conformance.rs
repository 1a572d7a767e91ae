//! The core's store and persistence conformance suites against SQLite files (a fresh file per
//! store contract; the persistence suite on a store's shared threads).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use agent_webkit_core::persist::run_persistence_conformance;
use agent_webkit_core::store::run_session_store_conformance;
use agent_webkit_sqlite::SqliteSessionStore;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_every_contract() {
    let dir = Arc::new(common::TempDir::new("conformance"));
    let n = Arc::new(AtomicUsize::new(0));
    let ran = run_session_store_conformance(
        || {
            let path = dir
                .path()
                .join(format!("store-{}.db", n.fetch_add(1, Ordering::Relaxed)));
            async move { SqliteSessionStore::open(path).unwrap() }
        },
        &[],
    )
    .await
    .unwrap();
    assert_eq!(ran, 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_persistence_passes_every_contract() {
    let dir = common::TempDir::new("persist-conformance");
    let store = SqliteSessionStore::open(dir.path().join("sessions.db")).unwrap();
    assert_eq!(
        run_persistence_conformance(&store.persistence(), "conf")
            .await
            .unwrap(),
        7
    );
    // Reopened: the same file, a second run with other ids.
    drop(store);
    let store = SqliteSessionStore::open(dir.path().join("sessions.db")).unwrap();
    assert_eq!(
        run_persistence_conformance(&store.persistence(), "again")
            .await
            .unwrap(),
        7
    );
}
