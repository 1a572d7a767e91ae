//! Attachment file names: what a client may call a file (a plain base name) and how a name
//! already taken in the session is made unique.

/// Longest accepted name, in bytes of UTF-8 (file systems allow 255; room is left for the
/// suffix that makes a name unique).
pub const MAX_NAME_BYTES: usize = 200;

/// Why a file name was refused (HTTP 400 `invalid_attachment_name`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// No name, or only white space.
    #[error("the file name is empty")]
    Empty,
    /// Longer than [`MAX_NAME_BYTES`].
    #[error("the file name is longer than {MAX_NAME_BYTES} bytes")]
    TooLong,
    /// Holds a path separator: only a base name is accepted.
    #[error("the file name must be a base name, without '/' or '\\'")]
    Separator,
    /// Starts with a dot (hidden files, `.` and `..`).
    #[error("the file name must not start with '.'")]
    LeadingDot,
    /// Holds a control character or a text-direction override.
    #[error("the file name holds a control character")]
    Control,
    /// Not valid percent-encoded UTF-8.
    #[error("the file name is not valid percent-encoded UTF-8")]
    Encoding,
}

/// Bidirectional-text controls: they make a name read differently from what it is.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Checks a client's file name; the name is kept as given when it passes (nothing is
/// silently rewritten, so what the client sees is what the agent reads).
pub fn check_name(name: &str) -> Result<&str, NameError> {
    if name.trim().is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong);
    }
    if name.contains(['/', '\\']) {
        return Err(NameError::Separator);
    }
    if name.starts_with('.') {
        return Err(NameError::LeadingDot);
    }
    if name.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return Err(NameError::Control);
    }
    Ok(name)
}

/// Decodes a `name=` query value (percent-encoding, `+` as a space) and checks it.
pub fn name_from_query(value: &str) -> Result<String, NameError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(NameError::Encoding)?;
                let hex = std::str::from_utf8(hex).map_err(|_| NameError::Encoding)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| NameError::Encoding)?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    let name = String::from_utf8(out).map_err(|_| NameError::Encoding)?;
    check_name(&name)?;
    Ok(name)
}

/// `name` if `taken` says it is free, else `stem-2.ext`, `stem-3.ext`, ... (the extension is
/// kept so the type stays recognisable).
pub fn unique_name(name: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(name) {
        return name.to_owned();
    }
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    };
    (2u32..)
        .map(|n| format!("{stem}-{n}{ext}"))
        .find(|candidate| !taken(candidate))
        .unwrap_or_else(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_unchanged() {
        for name in [
            "report.pdf",
            "a",
            "Ünïcode ✓.txt",
            "with space.md",
            "x.tar.gz",
            "a..b",
        ] {
            assert_eq!(check_name(name), Ok(name));
        }
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(check_name("   "), Err(NameError::Empty));
        assert_eq!(check_name("../x"), Err(NameError::Separator));
        assert_eq!(check_name("a/b"), Err(NameError::Separator));
        assert_eq!(check_name("a\\b"), Err(NameError::Separator));
        assert_eq!(check_name(".."), Err(NameError::LeadingDot));
        assert_eq!(check_name("."), Err(NameError::LeadingDot));
        assert_eq!(check_name(".env"), Err(NameError::LeadingDot));
        assert_eq!(check_name("a\nb"), Err(NameError::Control));
        assert_eq!(check_name("a\0b"), Err(NameError::Control));
        assert_eq!(check_name("a\u{7f}"), Err(NameError::Control));
        assert_eq!(check_name("evil\u{202E}fdp.exe"), Err(NameError::Control));
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(check_name(&long), Err(NameError::TooLong));
        assert!(check_name(&"x".repeat(MAX_NAME_BYTES)).is_ok());
    }

    #[test]
    fn query_values_are_decoded_then_checked() {
        assert_eq!(
            name_from_query("my+file%20v2.txt"),
            Ok("my file v2.txt".to_owned())
        );
        assert_eq!(name_from_query("%C3%BC.txt"), Ok("ü.txt".to_owned()));
        assert_eq!(name_from_query("..%2Fx"), Err(NameError::Separator));
        assert_eq!(name_from_query("a%0Ab"), Err(NameError::Control));
        assert_eq!(name_from_query("a%2"), Err(NameError::Encoding));
        assert_eq!(name_from_query("a%zz"), Err(NameError::Encoding));
        assert_eq!(name_from_query("%FF"), Err(NameError::Encoding));
        assert_eq!(name_from_query(""), Err(NameError::Empty));
    }

    #[test]
    fn taken_names_get_a_suffix_before_the_extension() {
        let taken = ["a.txt", "a-2.txt", "noext", "x.tar.gz"];
        let is_taken = |n: &str| taken.contains(&n);
        assert_eq!(unique_name("b.txt", is_taken), "b.txt");
        assert_eq!(unique_name("a.txt", is_taken), "a-3.txt");
        assert_eq!(unique_name("noext", is_taken), "noext-2");
        assert_eq!(unique_name("x.tar.gz", is_taken), "x.tar-2.gz");
    }
}
