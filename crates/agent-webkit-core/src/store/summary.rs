//! The session summary fold (`docs/claude-cli-protocol.md` §6): a pure function stores call
//! inside `append` for main keys, so listings need no transcript reads.

use serde_json::{Map, Value};

use super::{SessionKey, SessionSummary};

const FIRST_PROMPT_MAX: usize = 200;
const SKIPPED_PREFIXES: [&str; 5] = [
    "<local-command-stdout>",
    "<session-start-hook>",
    "<tick>",
    "<goal>",
    "[Request interrupted by user",
];
const WHOLE_ELEMENTS: [&str; 2] = ["ide_opened_file", "ide_selection"];
const LAST_WINS: [(&str, &str); 5] = [
    ("customTitle", "custom_title"),
    ("aiTitle", "ai_title"),
    ("lastPrompt", "last_prompt"),
    ("summary", "summary_hint"),
    ("gitBranch", "git_branch"),
];

/// Folds `entries` into the previous summary of `key`'s session. Never changes `mtime` (the
/// store stamps it after persisting).
pub fn fold_session_summary(
    prev: Option<&SessionSummary>,
    key: &SessionKey,
    entries: &[Value],
) -> SessionSummary {
    let mut summary = prev.cloned().unwrap_or_else(|| SessionSummary {
        session_id: key.session_id.clone(),
        mtime: 0,
        data: Map::new(),
    });
    let data = &mut summary.data;
    for entry in entries {
        let ms = entry
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(parse_iso8601_ms);
        if !data.contains_key("is_sidechain") {
            let sidechain = entry.get("isSidechain") == Some(&Value::Bool(true));
            data.insert("is_sidechain".into(), Value::Bool(sidechain));
        }
        if let (false, Some(ms)) = (data.contains_key("created_at"), ms) {
            data.insert("created_at".into(), Value::from(ms));
        }
        if !data.contains_key("cwd") {
            if let Some(cwd) = entry
                .get("cwd")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
            {
                data.insert("cwd".into(), Value::from(cwd));
            }
        }
        if data.get("first_prompt_locked") != Some(&Value::Bool(true)) {
            scan_first_prompt(entry, data);
        }
        for (from, to) in LAST_WINS {
            if let Some(Value::String(s)) = entry.get(from) {
                data.insert(to.into(), Value::from(s.as_str()));
            }
        }
        if entry.get("type").and_then(Value::as_str) == Some("tag") {
            match entry
                .get("tag")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                Some(tag) => {
                    data.insert("tag".into(), Value::from(tag));
                }
                None => {
                    data.remove("tag");
                }
            }
        }
    }
    summary
}

fn scan_first_prompt(entry: &Value, data: &mut Map<String, Value>) {
    let flag = |name: &str| entry.get(name) == Some(&Value::Bool(true));
    if entry.get("type").and_then(Value::as_str) != Some("user")
        || flag("isMeta")
        || flag("isCompactSummary")
    {
        return;
    }
    let texts: Vec<&str> = match entry.get("message").and_then(|m| m.get("content")) {
        Some(Value::String(text)) => vec![text.as_str()],
        Some(Value::Array(blocks)) => {
            let is = |b: &Value, ty: &str| b.get("type").and_then(Value::as_str) == Some(ty);
            if blocks.iter().any(|b| is(b, "tool_result")) {
                return;
            }
            blocks
                .iter()
                .filter(|b| is(b, "text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect()
        }
        _ => return,
    };
    for raw in texts {
        let text = raw.replace('\n', " ");
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if let Some(command) = between(text, "<command-name>", "</command-name>") {
            if !data.contains_key("command_fallback") {
                data.insert("command_fallback".into(), Value::from(command));
            }
            continue;
        }
        if SKIPPED_PREFIXES.iter().any(|p| text.starts_with(p)) || is_whole_element(text) {
            continue;
        }
        let prompt = if text.chars().count() > FIRST_PROMPT_MAX {
            let cut: String = text.chars().take(FIRST_PROMPT_MAX).collect();
            format!("{}\u{2026}", cut.trim_end())
        } else {
            text.to_owned()
        };
        data.insert("first_prompt".into(), Value::from(prompt));
        data.insert("first_prompt_locked".into(), Value::Bool(true));
        return;
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}

fn is_whole_element(text: &str) -> bool {
    WHOLE_ELEMENTS.iter().any(|name| {
        let (open, close) = (format!("<{name}>"), format!("</{name}>"));
        text.starts_with(&open)
            && text.ends_with(&close)
            && text[open.len()..text.len() - close.len()]
                .find(&close)
                .is_none()
    })
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff…][Z|±HH:MM]` to epoch milliseconds. A time without an
/// offset is read as UTC (the SDK reads it as local time; CLI timestamps always end in `Z`).
fn parse_iso8601_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(range)?;
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded: String = frac[..digits]
            .chars()
            .chain("000".chars())
            .take(3)
            .collect();
        millis = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_minutes = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let body = &rest[1..];
            let (h, m) = match body.len() {
                5 if body.as_bytes()[2] == b':' => (body.get(0..2)?, body.get(3..5)?),
                4 => (body.get(0..2)?, body.get(2..4)?),
                _ => return None,
            };
            sign * (h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(secs * 1000 + millis)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn fold(entries: &[Value]) -> Map<String, Value> {
        fold_session_summary(None, &SessionKey::main("p", "s"), entries).data
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_iso8601_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_iso8601_ms("2024-01-01T00:00:01.5Z"),
            Some(1_704_067_201_500)
        );
        assert_eq!(
            parse_iso8601_ms("2024-01-01T01:00:00+01:00"),
            Some(1_704_067_200_000)
        );
        assert_eq!(
            parse_iso8601_ms("2024-02-29T12:00:00.123Z"),
            Some(1_709_208_000_123)
        );
        assert_eq!(parse_iso8601_ms("nope"), None);
        assert_eq!(parse_iso8601_ms("2024-13-01T00:00:00Z"), None);
    }

    #[test]
    fn first_prompt_rules() {
        let user = |content: Value| json!({"type": "user", "message": {"content": content}});
        let d = fold(&[
            json!({"type": "queue-operation", "timestamp": "2024-01-01T00:00:00.000Z"}),
            user(json!("<command-name>/review</command-name>")),
            user(json!([{"type": "tool_result", "content": "x"}])),
            json!({"type": "user", "isMeta": true, "message": {"content": "meta"}}),
            user(json!("<local-command-stdout>out</local-command-stdout>")),
            user(json!("  <ide_selection>sel</ide_selection>  ")),
            user(json!([{"type": "text", "text": "  hello\nworld "}])),
            user(json!("later prompt")),
        ]);
        assert_eq!(d["is_sidechain"], false);
        assert_eq!(d["created_at"], 1_704_067_200_000i64);
        assert_eq!(d["command_fallback"], "/review");
        assert_eq!(d["first_prompt"], "hello world");
        assert_eq!(d["first_prompt_locked"], true);
        let long = "a ".repeat(150);
        let d = fold(&[user(json!(long))]);
        let fp = d["first_prompt"].as_str().unwrap();
        assert!(fp.ends_with('\u{2026}'));
        assert_eq!(fp.chars().count(), 200);
    }

    #[test]
    fn last_wins_tags_and_latches() {
        let d = fold(&[
            json!({"type": "x", "isSidechain": true, "cwd": "/a", "customTitle": "one", "gitBranch": "main"}),
            json!({"type": "x", "isSidechain": false, "cwd": "/b", "customTitle": "two", "summary": "s"}),
            json!({"type": "tag", "tag": "t1"}),
        ]);
        assert_eq!(d["is_sidechain"], true);
        assert_eq!(d["cwd"], "/a");
        assert_eq!(d["custom_title"], "two");
        assert_eq!(d["summary_hint"], "s");
        assert_eq!(d["git_branch"], "main");
        assert_eq!(d["tag"], "t1");
        let prev = fold_session_summary(
            None,
            &SessionKey::main("p", "s"),
            &[json!({"type": "tag", "tag": "t"})],
        );
        let next = fold_session_summary(
            Some(&prev),
            &SessionKey::main("p", "s"),
            &[json!({"type": "tag", "tag": ""})],
        );
        assert!(!next.data.contains_key("tag"));
        assert_eq!(next.mtime, prev.mtime);
    }
}
