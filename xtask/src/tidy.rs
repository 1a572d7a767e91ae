//! `cargo xtask tidy`: repository invariants no compiler checks, rust-analyzer style.
//!
//! Each check is one function returning `Err(message)` that says what is wrong and how to fix
//! it; [`tidy`] runs them all and fails if any failed (so one run lists every problem):
//!
//! - [`doc_links`] — every relative link in a `*.md` file resolves to a file or folder in the
//!   repository (links to the web and `#anchors` are not followed), and every document cited
//!   by name in Markdown or Rust comments (`docs/wire-protocol.md`, or just `wire-protocol.md`)
//!   is in the repository;
//! - [`core_framework_free`] — `agent-webkit-core` depends on no web framework or HTTP stack,
//!   neither in its Cargo.toml nor anywhere in `cargo tree -e normal`;
//! - [`adapter_budget`] — the adapters stay glue: their `src` stays under [`ADAPTER_BUDGET`];
//! - [`rustdoc`] — `cargo doc --workspace --no-deps` with `-D warnings`;
//! - [`msrv`] — the workspace `rust-version` is at least every locked dependency's (for this
//!   host), and the README states the same version;
//! - [`module_docs`] — every `.rs` file under `crates/`, `adapters/`, `xtask/` and `examples/`
//!   opens with a `//!` line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Most lines (all of them, comments included) in each adapter's `src`. About 25 lines above
/// their size when the check was written (axum 126, actix 185): room for a fix, not a feature.
/// Behaviour belongs in `agent_webkit_core::http`; raise this only with a reason.
pub const ADAPTER_BUDGET: &[(&str, usize)] = &[
    // axum's own `serve` has no header-read timeout, connection cap or drain deadline, so the
    // adapter drives hyper-util's connection builder itself (~100 lines of transport glue).
    ("adapters/agent-webkit-axum/src", 250),
    ("adapters/agent-webkit-actix/src", 210),
];

/// Crates that make a web framework or an HTTP stack; none may reach `agent-webkit-core`.
const WEB_CRATES: &[&str] = &["axum", "actix", "hyper", "tower", "http", "warp", "rocket"];

/// Folders never searched (build output, installed packages, VCS data).
const SKIP_DIRS: &[&str] = &["target", "node_modules", ".git"];

/// Folders whose `.rs` files must open with a `//!` line.
const MODULE_DOC_ROOTS: &[&str] = &["crates", "adapters", "xtask", "examples"];

type Check = (&'static str, fn(&Path) -> Result<(), String>);

/// Runs every check against the repository at `root`; lists every failure.
pub fn tidy(root: &Path) -> Result<(), String> {
    let checks: &[Check] = &[
        ("doc links", doc_links),
        ("core is framework-free", core_framework_free),
        ("adapter line budget", adapter_budget),
        ("module docs", module_docs),
        ("MSRV", msrv),
        ("cargo doc -D warnings", rustdoc),
    ];
    let mut failed = Vec::new();
    for (name, check) in checks {
        let started = Instant::now();
        let outcome = check(root);
        let took = started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => eprintln!("xtask: tidy: {name}: ok ({took:.1}s)"),
            Err(why) => {
                eprintln!("xtask: tidy: {name}: FAILED ({took:.1}s)\n{why}");
                failed.push(*name);
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("tidy failed: {}", failed.join(", ")))
    }
}

/// Every file under `dir` whose name ends with `suffix`, skipping [`SKIP_DIRS`]; sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if !SKIP_DIRS.contains(&name.as_ref()) {
                    stack.push(path);
                }
            } else if name.ends_with(suffix) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Runs `cmd` and returns its stdout, or its stderr when it fails.
fn output(what: &str, cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

// ---- doc links ----------------------------------------------------------------------------

/// The targets of the inline Markdown links (`[text](target)`, images too) in `text` that
/// point into the repository: web links (`scheme:`), pure `#anchors` and links inside code
/// (fenced blocks, `code spans`) are left out; a `#fragment` or `"title"` is cut off.
pub fn relative_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop `code spans` (an odd backtick leaves the rest of the line as code).
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else {
                break;
            };
            let target = after[..end].split_whitespace().next().unwrap_or("");
            let target = target.trim_start_matches('<').trim_end_matches('>');
            let target = target.split('#').next().unwrap_or("");
            let external = target
                .split_once(':')
                .is_some_and(|(scheme, _)| !scheme.contains('/'));
            if !target.is_empty() && !external {
                links.push(target.to_owned());
            }
            rest = &after[end..];
        }
    }
    links
}

/// Top-level folders whose files prose cites by path (`docs/wire-protocol.md`).
const CITED_ROOTS: &[&str] = &[
    "docs/",
    "crates/",
    "adapters/",
    "tests/",
    "bench/",
    "examples/",
    "xtask/",
];
/// Extensions of cited files that must exist (`target/…` output is never cited as a source).
const CITED_EXTENSIONS: &[&str] = &[".md", ".rs", ".toml", ".json", ".jsonl", ".py"];
/// Documents cited by bare name that are build output, not sources: `cargo xtask bench` writes
/// `target/bench/report.md`.
const GENERATED_DOCS: &[&str] = &["report.md"];

/// The files `text` cites by name in prose: any `*.md` (`wire-protocol.md`,
/// `docs/ARCHITECTURE.md`), and paths under [`CITED_ROOTS`] with a known extension. In Rust
/// source (`rust`), only comment lines count. Web addresses and `target/` output are skipped.
pub fn cited_paths(text: &str, rust: bool) -> Vec<String> {
    let mut cited = Vec::new();
    for line in text.lines() {
        if rust && !line.trim_start().starts_with("//") {
            continue;
        }
        let is_path_char = |c: char| c.is_ascii_alphanumeric() || "_./-".contains(c);
        let mut rest = line;
        while !rest.is_empty() {
            let start = rest.find(is_path_char).unwrap_or(rest.len());
            let after = &rest[start..];
            let end = after.find(|c| !is_path_char(c)).unwrap_or(after.len());
            let token = after[..end].trim_end_matches('.');
            let web = rest[..start].ends_with(':') || rest[start + end..].starts_with(':');
            rest = &after[end..];
            let token = token.strip_prefix("./").unwrap_or(token);
            if web || token.starts_with('/') || token.starts_with("target/") || token.contains("..")
            {
                continue;
            }
            let under_root = CITED_ROOTS.iter().any(|r| token.starts_with(r))
                && CITED_EXTENSIONS.iter().any(|e| token.ends_with(e));
            let markdown = token.ends_with(".md") && token.len() > 3;
            if under_root || markdown {
                cited.push(token.to_owned());
            }
        }
    }
    cited
}

/// The nearest folder at or above `file` holding a Cargo.toml, below `root`.
fn crate_dir(root: &Path, file: &Path) -> Option<PathBuf> {
    file.ancestors()
        .skip(1)
        .take_while(|dir| dir.starts_with(root) && *dir != root)
        .find(|dir| dir.join("Cargo.toml").is_file())
        .map(Path::to_path_buf)
}

/// Relative links in Markdown files resolve, and every file cited by name in Markdown or in
/// Rust comments exists (a path: from the root, the citing crate or folder; a bare `*.md`
/// name: anywhere in the repository).
pub fn doc_links(root: &Path) -> Result<(), String> {
    let markdown = files(root, ".md");
    let names: std::collections::BTreeSet<String> = markdown
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let mut broken = Vec::new();
    for file in &markdown {
        let text = read(file)?;
        let dir = file.parent().unwrap_or(root);
        for link in relative_links(&text) {
            let target = if let Some(from_root) = link.strip_prefix('/') {
                root.join(from_root)
            } else {
                dir.join(&link)
            };
            if !target.exists() {
                broken.push(format!("  {}: link ({link})", relative(root, file)));
            }
        }
    }
    let mut sources = markdown.clone();
    for dir in MODULE_DOC_ROOTS {
        sources.extend(files(&root.join(dir), ".rs"));
    }
    for file in &sources {
        let text = read(file)?;
        let rust = file.extension().is_some_and(|e| e == "rs");
        let dir = file.parent().unwrap_or(root);
        let own_crate = crate_dir(root, file);
        for cited in cited_paths(&text, rust) {
            let found = if cited.contains('/') {
                [Some(root), own_crate.as_deref(), Some(dir)]
                    .into_iter()
                    .flatten()
                    .any(|base| base.join(&cited).exists())
            } else {
                names.contains(&cited) || GENERATED_DOCS.contains(&cited.as_str())
            };
            if !found {
                broken.push(format!("  {}: cites {cited}", relative(root, file)));
            }
        }
    }
    broken.dedup();
    if broken.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "links to, or citations of, files not in the repository (fix the path, add the \
             document under docs/, or link to the web):\n{}",
            broken.join("\n")
        ))
    }
}

// ---- core is framework-free ---------------------------------------------------------------

/// Whether crate `name` belongs to a web framework or HTTP stack ([`WEB_CRATES`], or one of
/// their family: `axum-core`, `actix-web`, `tower-http`, `http-body`, `hyper-util`, …).
pub fn is_web_crate(name: &str) -> bool {
    WEB_CRATES
        .iter()
        .any(|web| name == *web || name.strip_prefix(web).is_some_and(|r| r.starts_with('-')))
}

/// The dependency names in a Cargo.toml's `[dependencies]`-like tables (dev- and
/// build-dependencies excluded: they do not ship).
pub fn manifest_dependencies(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut section = String::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned();
            // `[dependencies.foo]` names the dependency in the header.
            if let Some(name) = section.strip_prefix("dependencies.") {
                names.push(name.trim_matches('"').to_owned());
            }
            continue;
        }
        let runtime = section == "dependencies"
            || (section.starts_with("target.") && section.ends_with(".dependencies"));
        if !runtime || line.starts_with('#') {
            continue;
        }
        if let Some((name, _)) = line.split_once('=') {
            let name = name.trim().trim_matches('"');
            let name = name.split('.').next().unwrap_or(name);
            if !name.is_empty() {
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// `agent-webkit-core` reaches no web framework, directly or through its dependencies.
pub fn core_framework_free(root: &Path) -> Result<(), String> {
    let manifest = read(&root.join("crates/agent-webkit-core/Cargo.toml"))?;
    let mut found: Vec<String> = manifest_dependencies(&manifest)
        .into_iter()
        .filter(|name| is_web_crate(name))
        .map(|name| format!("  Cargo.toml: {name}"))
        .collect();
    let mut tree = crate::cargo();
    tree.args([
        "tree",
        "-p",
        "agent-webkit-core",
        "-e",
        "normal",
        "--prefix",
        "none",
        "--format",
        "{p}",
    ]);
    let tree = output("cargo tree -p agent-webkit-core", &mut tree)?;
    let mut seen = std::collections::BTreeSet::new();
    for name in tree.lines().filter_map(|l| l.split_whitespace().next()) {
        if is_web_crate(name) && seen.insert(name.to_owned()) {
            found.push(format!("  cargo tree: {name}"));
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "agent-webkit-core must stay framework-free (HTTP glue belongs in adapters/), but it \
             depends on:\n{}\n  (see which path pulls it in: cargo tree -p agent-webkit-core -e normal -i <crate>)",
            found.join("\n")
        ))
    }
}

// ---- adapter line budget ------------------------------------------------------------------

/// The adapters' `src` folders stay within [`ADAPTER_BUDGET`].
pub fn adapter_budget(root: &Path) -> Result<(), String> {
    let mut over = Vec::new();
    for (dir, budget) in ADAPTER_BUDGET {
        let mut lines = 0;
        for file in files(&root.join(dir), ".rs") {
            lines += read(&file)?.lines().count();
        }
        if lines == 0 {
            over.push(format!(
                "  {dir}: no Rust source found (moved? update ADAPTER_BUDGET)"
            ));
        } else if lines > *budget {
            over.push(format!("  {dir}: {lines} lines, budget {budget}"));
        }
    }
    if over.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "an adapter outgrew its budget: adapters only translate requests and responses \
             (the contract in agent_webkit_core::http); move behaviour into core, or raise \
             ADAPTER_BUDGET in xtask/src/tidy.rs with a reason:\n{}",
            over.join("\n")
        ))
    }
}

// ---- module docs --------------------------------------------------------------------------

/// Every `.rs` file opens with a `//!` line.
pub fn module_docs(root: &Path) -> Result<(), String> {
    let mut missing = Vec::new();
    for dir in MODULE_DOC_ROOTS {
        for file in files(&root.join(dir), ".rs") {
            let text = read(&file)?;
            if !text.starts_with("//!") {
                missing.push(format!("  {}", relative(root, &file)));
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "files that do not open with a `//!` line saying what they are for:\n{}",
            missing.join("\n")
        ))
    }
}

// ---- MSRV ---------------------------------------------------------------------------------

/// A `rust-version` (`1.89`, `1.89.0`) as `(major, minor, patch)`.
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.trim().split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().unwrap_or(Some(0))?;
    let patch = parts.next().unwrap_or(Some(0))?;
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

/// The `rust-version` in the `[workspace.package]` table of the root Cargo.toml.
pub fn workspace_rust_version(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if in_package {
            if let Some((key, value)) = line.split_once('=') {
                if key.trim() == "rust-version" {
                    return Some(value.trim().trim_matches('"').to_owned());
                }
            }
        }
    }
    None
}

/// The highest `rust-version` among the packages `cargo metadata` resolved (workspace members
/// excluded), with the package that asks for it.
fn locked_rust_version(metadata: &serde_json::Value) -> Option<((u32, u32, u32), String)> {
    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()?
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    let resolved: Vec<&str> = metadata["resolve"]["nodes"]
        .as_array()?
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    metadata["packages"]
        .as_array()?
        .iter()
        .filter(|p| {
            p["id"]
                .as_str()
                .is_some_and(|id| resolved.contains(&id) && !members.contains(&id))
        })
        .filter_map(|p| {
            let version = parse_version(p["rust_version"].as_str()?)?;
            let name = format!(
                "{} {}",
                p["name"].as_str().unwrap_or("?"),
                p["version"].as_str().unwrap_or("?")
            );
            Some((version, name))
        })
        .max()
}

fn host_triple() -> Result<String, String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let info = output("rustc -vV", Command::new(rustc).arg("-vV"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| "rustc -vV printed no host".into())
}

/// The workspace MSRV covers the locked dependencies, and the README says the same.
pub fn msrv(root: &Path) -> Result<(), String> {
    let manifest = read(&root.join("Cargo.toml"))?;
    let declared = workspace_rust_version(&manifest)
        .ok_or("Cargo.toml: no rust-version in [workspace.package]")?;
    let ours = parse_version(&declared)
        .ok_or_else(|| format!("Cargo.toml: rust-version {declared:?} is not a version"))?;
    let mut meta = crate::cargo();
    meta.args([
        "metadata",
        "--format-version",
        "1",
        "--locked",
        "--filter-platform",
        &host_triple()?,
    ]);
    let meta = output("cargo metadata", &mut meta)?;
    let meta: serde_json::Value =
        serde_json::from_str(&meta).map_err(|e| format!("cargo metadata: bad JSON: {e}"))?;
    let mut problems = Vec::new();
    if let Some(((major, minor, patch), package)) = locked_rust_version(&meta) {
        if (major, minor, patch) > ours {
            problems.push(format!(
                "  Cargo.toml says rust-version = \"{declared}\", but the locked {package} needs \
                 {major}.{minor}.{patch}: raise rust-version (and the README) to it"
            ));
        }
    }
    let readme = read(&root.join("README.md"))?;
    let stated = format!("Rust toolchain ({declared}+");
    if !readme.contains(&stated) {
        problems.push(format!(
            "  README.md does not say \"{stated}\" (the rust-version in Cargo.toml)"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

// ---- cargo doc ----------------------------------------------------------------------------

/// `cargo doc --workspace --no-deps` builds without a warning.
pub fn rustdoc(_root: &Path) -> Result<(), String> {
    let mut doc = crate::cargo();
    doc.args(["doc", "--workspace", "--no-deps", "--keep-going"])
        .env("RUSTDOCFLAGS", "-D warnings");
    output(
        "cargo doc --workspace --no-deps (RUSTDOCFLAGS=-D warnings)",
        &mut doc,
    )
    .map(|_| ())
    .map_err(|report| {
        // The diagnostics, not cargo's progress lines.
        const PROGRESS: &[&str] = &["Checking ", "Compiling ", "Documenting ", "Finished "];
        report
            .lines()
            .filter(|l| !PROGRESS.iter().any(|p| l.trim_start().starts_with(p)))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links_skip_web_anchors_and_code() {
        let text = "\
See [the map](docs/ARCHITECTURE.md#code-map) and ![chart](img/a.png \"title\").
[web](https://example.com) [mail](mailto:a@b.c) [here](#top) [root](/README.md)
`[not a link](nowhere.md)` but [after code](after.md)
```
[in a fence](fenced.md)
```
[a](one.md)[b](../two.md)
";
        assert_eq!(
            relative_links(text),
            [
                "docs/ARCHITECTURE.md",
                "img/a.png",
                "/README.md",
                "after.md",
                "one.md",
                "../two.md"
            ]
        );
    }

    #[test]
    fn cited_paths_in_prose_and_comments() {
        let md = "See docs/wire-protocol.md, `crates/x/src/lib.rs` and README.md.\n\
                  Output: target/bench/report.md; web: https://example.com/a.md; ../up.md\n";
        assert_eq!(
            cited_paths(md, false),
            ["docs/wire-protocol.md", "crates/x/src/lib.rs", "README.md"]
        );
        let rust = "//! Frames (claude-cli-protocol.md §5.1), tests/http_fuzz.rs.\nlet p = \"docs/gone.md\";\n";
        assert_eq!(
            cited_paths(rust, true),
            ["claude-cli-protocol.md", "tests/http_fuzz.rs"]
        );
    }

    #[test]
    fn web_crates_by_family() {
        for name in [
            "axum",
            "axum-core",
            "actix-web",
            "hyper-util",
            "http",
            "http-body",
        ] {
            assert!(is_web_crate(name), "{name}");
        }
        for name in ["httparse2", "tokio", "bytes", "towerish", "serde_json"] {
            assert!(!is_web_crate(name), "{name}");
        }
    }

    #[test]
    fn manifest_dependencies_only_runtime_tables() {
        let manifest = r#"
[package]
name = "x"
[dependencies]
bytes.workspace = true
"axum" = { version = "0.8" }
# hyper = "1"
[dev-dependencies]
reqwest = "0.12"
[target.'cfg(unix)'.dependencies]
nix = "0.30"
[dependencies.tower]
version = "0.5"
"#;
        assert_eq!(
            manifest_dependencies(manifest),
            ["bytes", "axum", "nix", "tower"]
        );
    }

    #[test]
    fn versions_and_workspace_msrv() {
        assert_eq!(parse_version("1.89"), Some((1, 89, 0)));
        assert_eq!(parse_version("1.89.1"), Some((1, 89, 1)));
        assert!(parse_version("1.89") < parse_version("1.89.1"));
        assert!(parse_version("1.9") < parse_version("1.89"));
        assert_eq!(parse_version("1.x"), None);
        assert_eq!(parse_version("1.2.3.4"), None);
        let manifest = "[package]\nrust-version = \"1.70\"\n[workspace.package]\nedition = \"2021\"\nrust-version = \"1.89\"\n";
        assert_eq!(workspace_rust_version(manifest).as_deref(), Some("1.89"));
    }
}
