//! The core's store conformance suite, against PostgreSQL (a fresh schema per contract).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use agent_webkit_core::store::run_session_store_conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_every_contract() {
    let admin = require_pg!();
    let ran = run_session_store_conformance(
        || {
            let admin = admin.clone();
            async move { common::fresh_store(&admin, 4).await.0 }
        },
        &[],
    )
    .await
    .unwrap();
    assert_eq!(ran, 17);
}
