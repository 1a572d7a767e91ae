//! The listing's opaque cursor: the sort key `(last_activity_ms, session_id)` of the last
//! session of a page, hex-encoded so clients treat it as a token (and it needs no escaping).

/// Encodes a sort key.
pub(super) fn encode((ms, id): &(i64, String)) -> String {
    let plain = format!("{ms}:{id}");
    let mut out = String::with_capacity(plain.len() * 2);
    for byte in plain.bytes() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Decodes a cursor; `None` if it is not one this module made.
pub(super) fn decode(cursor: &str) -> Option<(i64, String)> {
    if !cursor.len().is_multiple_of(2) || cursor.len() > 512 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect();
    let plain = String::from_utf8(bytes?).ok()?;
    let (ms, id) = plain.split_once(':')?;
    Some((ms.parse().ok()?, id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let key = (1_700_000_000_123, "3f1c-ab".to_owned());
        assert_eq!(decode(&encode(&key)), Some(key));
        assert_eq!(
            decode(&encode(&(-5, String::new()))),
            Some((-5, String::new()))
        );
        for bad in ["", "zz", "abc", "3132", "ff", "3a"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
