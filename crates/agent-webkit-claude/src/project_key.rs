//! The CLI's project directory name for a working directory (docs/claude-cli-protocol.md §5.1):
//! the key under which its transcripts live in `$CLAUDE_CONFIG_DIR/projects/` and, through the
//! mirror, in the `SessionStore`.
//!
//! Rule of CLI 2.1.330 (not the Python SDK's, which iterates code points): every UTF-16 code
//! unit of the **real** path that is not `[A-Za-z0-9]` becomes `-`; a result longer than 200
//! units is cut to 200 and suffixed with `-` + base 36 of `|h|`, where `h` is a 32-bit signed
//! djb2-style hash (`h = (h << 5) - h + unit`) over the units of the unsanitized path.

use std::path::Path;

/// Longest key kept as is.
pub const MAX_SANITIZED_LENGTH: usize = 200;

/// The project key of an already resolved (real) path.
pub fn project_key(path: &Path) -> String {
    project_key_of_str(&path.to_string_lossy())
}

/// The project key of `dir` after resolving symlinks (the CLI files sessions under the real
/// path). Fails when `dir` cannot be resolved.
pub fn project_key_for_directory(dir: &Path) -> std::io::Result<String> {
    Ok(project_key(&dir.canonicalize()?))
}

/// The project key of a path given as text.
pub fn project_key_of_str(path: &str) -> String {
    let units: Vec<u16> = path.encode_utf16().collect();
    // Every unit maps to exactly one ASCII byte, so byte length == unit count below.
    let sanitized: String = units
        .iter()
        .map(|&u| match u8::try_from(u) {
            Ok(b) if b.is_ascii_alphanumeric() => char::from(b),
            _ => '-',
        })
        .collect();
    if sanitized.len() <= MAX_SANITIZED_LENGTH {
        return sanitized;
    }
    let mut h: i32 = 0;
    for &u in &units {
        h = (h << 5).wrapping_sub(h).wrapping_add(i32::from(u));
    }
    format!(
        "{}-{}",
        &sanitized[..MAX_SANITIZED_LENGTH],
        base36(h.unsigned_abs())
    )
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn short_paths_are_sanitized_per_utf16_unit() {
        assert_eq!(
            project_key(Path::new("/srv/agent/a_plain_text/work")),
            "-srv-agent-a-plain-text-work"
        );
        // U+1F600 is two UTF-16 units → two dashes; `é` is one (verified against the CLI).
        assert_eq!(
            project_key(Path::new("/srv/scratch/work/e😀é")),
            "-srv-scratch-work-e---"
        );
        assert_eq!(project_key_of_str(""), "");
        let exactly = format!("/{}", "a".repeat(199));
        assert_eq!(project_key_of_str(&exactly).len(), 200);
        assert!(!project_key_of_str(&exactly).contains("--"));
    }

    /// Independent reference: i64 arithmetic, reduced to int32 like JavaScript's `| 0`.
    fn reference_hash(path: &str) -> i64 {
        let mut h: i64 = 0;
        for u in path.encode_utf16() {
            h = (h * 31 + i64::from(u)).rem_euclid(1 << 32);
        }
        if h >= 1 << 31 {
            h - (1 << 32)
        } else {
            h
        }
    }

    #[test]
    fn long_paths_get_the_cli_hash_suffix() {
        // 252 characters whose int32 hash is -1688311705 → suffix `rx6dnd` (the length and
        // suffix of the path verified against the real CLI; this path was built to hit it).
        let path = format!(
            "/srv/scratch/{}{}0cvjlnl",
            "nested-directory/".repeat(13),
            "x".repeat(11)
        );
        assert_eq!(path.encode_utf16().count(), 252);
        assert_eq!(reference_hash(&path), -1_688_311_705);
        let key = project_key(Path::new(&path));
        let sanitized: String = path
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        assert_eq!(key, format!("{}-rx6dnd", &sanitized[..200]));
        assert_eq!(key.len(), 207);

        // The hash runs over the unsanitized path: `_` and `-` give the same prefix but
        // different suffixes.
        let a = format!("/{}_tail", "d".repeat(220));
        let b = format!("/{}-tail", "d".repeat(220));
        let (ka, kb) = (project_key_of_str(&a), project_key_of_str(&b));
        assert_eq!(ka[..201], kb[..201]);
        assert_ne!(ka, kb);
        assert_eq!(
            ka[201..],
            *base36(u32::try_from(reference_hash(&a).abs()).unwrap())
        );

        // Non-BMP characters count as two units both in the cut and in the hash.
        let emoji = format!("/{}", "😀".repeat(110));
        let key = project_key_of_str(&emoji);
        assert!(key.starts_with(&"-".repeat(200)));
        assert_eq!(
            key[201..],
            *base36(u32::try_from(reference_hash(&emoji).abs()).unwrap())
        );
    }

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(1_688_311_705), "rx6dnd");
        assert_eq!(base36(i32::MIN.unsigned_abs()), "zik0zk");
    }

    #[test]
    fn directories_are_resolved_first() {
        let dir = std::env::temp_dir();
        let real = dir.canonicalize().unwrap();
        assert_eq!(project_key_for_directory(&dir).unwrap(), project_key(&real));
        assert!(project_key_for_directory(Path::new("/nonexistent/x/y")).is_err());
    }
}
