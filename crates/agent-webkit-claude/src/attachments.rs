//! A session's attachment directory for the CLI: `--add-dir` at launch (`crate::options`),
//! or, for a warm spare started before the session existed, the same directory added at
//! hand-over through the `apply_flag_settings` control request
//! (`permissions.additionalDirectories`), so the agent reads the session's attachments
//! without a permission prompt either way.

use std::path::Path;

use serde_json::{json, Value};

/// The control request that adds `dir` to the CLI's working directories.
pub(crate) fn add_directory_request(dir: &Path) -> Value {
    json!({
        "subtype": "apply_flag_settings",
        "settings": {"permissions": {"additionalDirectories": [dir.to_string_lossy()]}},
    })
}
