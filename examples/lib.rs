//! Examples of embedding and extending agent-webkit: the `[[example]]` targets embed the
//! shipped adapters; [`jsonl_store`] is a third `SessionStore`, and the `hyper_server` binary a
//! third adapter (plain hyper), both run through their conformance suites in `tests/`.

pub mod jsonl_store;
