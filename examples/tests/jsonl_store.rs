//! The file store example (`examples/jsonl_store.rs`) against the store conformance suite, plus
//! what only a file store can get wrong: key parts that try to leave the directory, a restart
//! (a new store on the same directory), a crash in the middle of an append.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use agent_webkit_core::store::{run_session_store_conformance, SessionKey, SessionStore};
use agent_webkit_core::store::{StoreCapabilities, StoreError};
use agent_webkit_examples::jsonl_store::JsonlSessionStore;
use agent_webkit_testkit::real_cli::TempDir;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_store_conformance_suite() {
    let dir = TempDir::new("jsonl-store").unwrap();
    let n = AtomicUsize::new(0);
    // A fresh directory per contract.
    let fresh = || {
        let root = dir
            .path()
            .join(n.fetch_add(1, Ordering::SeqCst).to_string());
        async move { JsonlSessionStore::new(root) }
    };
    assert_eq!(
        JsonlSessionStore::new(dir.path()).capabilities(),
        StoreCapabilities::ALL
    );
    let ran = run_session_store_conformance(fresh, &[]).await.unwrap();
    assert_eq!(ran, 17, "every contract, optional ones included");
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn key_parts_never_leave_the_directory() {
    let dir = TempDir::new("jsonl-store-paths").unwrap();
    // Deep enough that even a broken encoding (the test must be able to fail) only escapes
    // into `dir`; the absolute key part points into `dir` too.
    let root = dir.path().join("a/b/c/d/store");
    let absolute = dir.path().join("absolute").display().to_string();
    let store = JsonlSessionStore::new(&root);
    let hostile = [
        SessionKey::main("..", ".."),
        SessionKey::main("../..", "../../escaped"),
        SessionKey::main(absolute.as_str(), "x"),
        SessionKey::main("p", "s").with_subpath("../../../escaped"),
        SessionKey::main("P", "s").with_subpath("sub/./.."),
        SessionKey::main("p", "S%2E%2E"),
    ];
    for (i, key) in hostile.iter().enumerate() {
        store.append(key, vec![json!({"n": i})]).await.unwrap();
    }
    // Each key kept its own transcript (no two mapped to one file), ...
    for (i, key) in hostile.iter().enumerate() {
        assert_eq!(
            store.load(key).await.unwrap(),
            Some(vec![json!({"n": i})]),
            "{key:?}"
        );
    }
    // ... every file is inside `root`, with a name the store chose, ...
    for file in files(dir.path()) {
        assert!(file.starts_with(&root), "{}", file.display());
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(
            ["main.jsonl", "summary.json"].contains(&name) || name.ends_with(".jsonl"),
            "{}",
            file.display()
        );
    }
    // ... and ids come back as they went in.
    let listed = store.list_sessions("../..").await.unwrap();
    assert_eq!(listed[0].session_id, "../../escaped");
    assert_eq!(
        store
            .list_subkeys(&SessionKey::main("p", "s"))
            .await
            .unwrap(),
        vec!["../../../escaped".to_owned()]
    );
    let empty = store
        .append(&SessionKey::main("", "s"), vec![json!(1)])
        .await;
    assert!(matches!(empty, Err(StoreError::InvalidKey(_))), "{empty:?}");
    let long = SessionKey::main("p", "x".repeat(300));
    assert!(matches!(
        store.load(&long).await,
        Err(StoreError::InvalidKey(_))
    ));
}

fn entry(uuid: &str) -> Value {
    json!({"type": "user", "uuid": uuid, "timestamp": "2024-01-01T00:00:00.000Z",
           "message": {"content": format!("prompt {uuid}")}})
}

#[tokio::test]
async fn a_restarted_store_reads_what_was_written_and_drops_a_torn_line() {
    let dir = TempDir::new("jsonl-store-restart").unwrap();
    let key = SessionKey::main("proj", "sess");
    let before = JsonlSessionStore::new(dir.path());
    before
        .append(&key, vec![entry("u-1"), entry("u-2")])
        .await
        .unwrap();
    drop(before);
    // A crash in the middle of the next append: half a line, no newline.
    let main = dir.path().join("proj").join("sess").join("main.jsonl");
    let mut bytes = std::fs::read(&main).unwrap();
    bytes.extend_from_slice(br#"{"type":"user","uuid":"u-3","mess"#);
    std::fs::write(&main, bytes).unwrap();

    let after = JsonlSessionStore::new(dir.path());
    assert_eq!(
        after.load(&key).await.unwrap(),
        Some(vec![entry("u-1"), entry("u-2")])
    );
    // The retried batch: u-2 is already stored (the new process read the file), u-3 is not.
    after
        .append(&key, vec![entry("u-2"), entry("u-3")])
        .await
        .unwrap();
    assert_eq!(
        after.load(&key).await.unwrap(),
        Some(vec![entry("u-1"), entry("u-2"), entry("u-3")])
    );
    let text = std::fs::read_to_string(&main).unwrap();
    assert_eq!(text.lines().count(), 3, "the torn line is gone:\n{text}");
    let summaries = after.list_session_summaries("proj").await.unwrap();
    assert_eq!(summaries[0].data["first_prompt"], "prompt u-1");
}

#[cfg(unix)]
#[tokio::test]
async fn files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("jsonl-store-mode").unwrap();
    let root = dir.path().join("store");
    let store = JsonlSessionStore::new(&root);
    store
        .append(&SessionKey::main("p", "s"), vec![entry("u")])
        .await
        .unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("p").join("s")), 0o700);
    assert_eq!(mode(&root.join("p").join("s").join("main.jsonl")), 0o600);
    assert_eq!(mode(&root.join("p").join("s").join("summary.json")), 0o600);
}
