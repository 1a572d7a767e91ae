//! Recording mode (`--model recording:<name>`): replays a real CLI recording, substituting ids.

use std::path::PathBuf;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

use super::config::Config;
use super::out::{eprint, Out};

/// Directory holding `<name>.annotated.jsonl` files.
fn fixtures_dir() -> PathBuf {
    match std::env::var_os(super::FIXTURES_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => super::fixtures_dir(),
    }
}

struct Recording {
    frames: Vec<(String, Value)>,
    exit_code: i32,
}

fn load(name: &str) -> Result<Recording, String> {
    let path = fixtures_dir().join(format!("{name}.annotated.jsonl"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut frames = Vec::new();
    let mut exit_code = 0;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
        let dir = v.get("dir").and_then(Value::as_str).unwrap_or_default();
        let frame = v.get("frame").cloned().unwrap_or(Value::Null);
        if dir == "meta" {
            if let Some(code) = frame.get("exit_code").and_then(Value::as_i64) {
                exit_code = code as i32;
            }
            continue;
        }
        frames.push((dir.to_owned(), frame));
    }
    Ok(Recording { frames, exit_code })
}

/// What must match between a recorded host frame and the one actually written.
fn kind(frame: &Value) -> String {
    let t = frame.get("type").and_then(Value::as_str).unwrap_or("?");
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("?").to_owned();
    match t {
        "control_request" => format!(
            "control_request/{}",
            s(frame.get("request").and_then(|r| r.get("subtype")))
        ),
        "control_response" => {
            let resp = frame.get("response");
            let mut k = format!(
                "control_response/{}",
                s(resp.and_then(|r| r.get("subtype")))
            );
            if let Some(b) = resp
                .and_then(|r| r.get("response"))
                .and_then(|r| r.get("behavior"))
                .and_then(Value::as_str)
            {
                k.push('/');
                k.push_str(b);
            }
            k
        }
        other => other.to_owned(),
    }
}

fn is_idle(frame: &Value) -> bool {
    frame.get("subtype").and_then(Value::as_str) == Some("session_state_changed")
        && frame.get("state").and_then(Value::as_str) == Some("idle")
}

fn substitute(v: &mut Value, subs: &[(String, String)]) {
    match v {
        Value::String(s) => {
            for (from, to) in subs {
                if !from.is_empty() && s.contains(from.as_str()) {
                    *s = s.replace(from.as_str(), to);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| substitute(i, subs)),
        Value::Object(map) => map.values_mut().for_each(|i| substitute(i, subs)),
        _ => {}
    }
}

/// Next host frame (keep_alive and blank lines skipped); `None` at EOF.
async fn next_frame(lines: &mut Lines<BufReader<Stdin>>, out: &Out) -> Option<Value> {
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            _ => return None,
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(v) if v.get("type").and_then(Value::as_str) == Some("keep_alive") => continue,
            Ok(v) => return Some(v),
            Err(e) => {
                let shown: String = line.chars().take(200).collect();
                eprint(&format!(
                    "Error parsing streaming input line ({shown}): SyntaxError: {e}"
                ))
                .await;
                out.exit(1).await;
            }
        }
    }
}

/// Replays recording `name`; never returns (exits with the recorded exit code, or 2).
pub(crate) async fn run(cfg: &Config, out: Out, name: &str) -> i32 {
    let rec = match load(name) {
        Ok(rec) => rec,
        Err(e) => {
            eprint(&format!("fake-claude: recording {name} unavailable: {e}")).await;
            return 2;
        }
    };
    let frames = rec.frames;
    let mut subs: Vec<(String, String)> = Vec::new();
    let wanted_session = cfg
        .args
        .session_id
        .clone()
        .or_else(|| cfg.args.resume.clone().filter(|r| !r.is_empty()));
    if let Some(actual) = wanted_session {
        let recorded = frames.iter().find_map(|(dir, f)| {
            (dir == "cli->host")
                .then(|| f.get("session_id").and_then(Value::as_str))
                .flatten()
        });
        if let Some(recorded) = recorded {
            subs.push((recorded.to_owned(), actual));
        }
    }

    // Frames after the last idle that follows the last host frame were written after EOF.
    let last_host = frames.iter().rposition(|(d, _)| d == "host->cli");
    let post_eof_start = frames
        .iter()
        .rposition(|(d, f)| d == "cli->host" && is_idle(f))
        .filter(|&i| last_host.is_none_or(|h| i > h))
        .map_or(frames.len(), |i| i + 1);

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut emitted = vec![false; frames.len()];
    let emit = |frame: &Value, subs: &[(String, String)]| {
        let mut f = frame.clone();
        substitute(&mut f, subs);
        out.send(&f);
    };
    for i in 0..post_eof_start {
        let (dir, recorded) = &frames[i];
        match dir.as_str() {
            "cli->host" if !emitted[i] => emit(recorded, &subs),
            "host->cli" => {
                if recorded.get("type").and_then(Value::as_str) == Some("keep_alive") {
                    continue;
                }
                // An `idle` recorded right after a host frame belongs to the previous turn (the
                // host merely wrote first): emit it now so hosts that wait for idle don't stall.
                let mut j = i + 1;
                while j < post_eof_start && frames[j].0 == "cli->host" && is_idle(&frames[j].1) {
                    emit(&frames[j].1, &subs);
                    emitted[j] = true;
                    j += 1;
                }
                let expected = kind(recorded);
                let Some(got) = next_frame(&mut lines, &out).await else {
                    eprint(&format!(
                        "fake-claude: recording {name} expected {expected} got EOF"
                    ))
                    .await;
                    out.exit(2).await;
                };
                let actual = kind(&got);
                if actual != expected {
                    eprint(&format!(
                        "fake-claude: recording {name} expected {expected} got {actual}"
                    ))
                    .await;
                    out.exit(2).await;
                }
                let str_at =
                    |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
                for key in ["request_id", "uuid"] {
                    if let (Some(from), Some(to)) = (str_at(recorded, key), str_at(&got, key)) {
                        if from != to {
                            subs.push((from, to));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    // Wait for EOF (anything else the host writes is ignored), then the post-EOF tail.
    while next_frame(&mut lines, &out).await.is_some() {}
    for (dir, frame) in &frames[post_eof_start..] {
        if dir == "cli->host" {
            emit(frame, &subs);
        }
    }
    out.exit(rec.exit_code).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds() {
        assert_eq!(
            kind(&json!({"type":"control_request","request":{"subtype":"initialize"}})),
            "control_request/initialize"
        );
        assert_eq!(
            kind(
                &json!({"type":"control_response","response":{"subtype":"success","response":{"behavior":"allow"}}})
            ),
            "control_response/success/allow"
        );
        assert_eq!(kind(&json!({"type":"user"})), "user");
    }

    #[test]
    fn all_fixtures_load() {
        for name in ["a_plain_text", "g_session_mirror", "i_api_error"] {
            let rec = load(name).unwrap_or_else(|e| panic!("{e}"));
            assert!(!rec.frames.is_empty());
        }
        assert_eq!(load("i_api_error").map(|r| r.exit_code).ok(), Some(1));
    }
}
