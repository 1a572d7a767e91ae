//! What a session plays: a script or one of the synthetic scenarios.

use std::sync::Arc;
use std::time::Duration;

use crate::script::Script;

/// The synthetic scenarios, as listed by `scenario_names` (`stream` as its pattern).
/// (The listed pattern leaves out the optional trailing `:ts` flag; see [`StreamSpec`].)
pub(crate) const SYNTHETIC: &[&str] = &["controls", "crash", "echo", "stream:N[:ms[:bytes]]"];

/// The full `stream` grammar, as quoted in parse errors.
pub(crate) const STREAM_GRAMMAR: &str = "stream:N[:ms[:bytes]][:ts]";

/// Largest `bytes` accepted in `stream:N:ms:bytes` (per message).
pub(crate) const MAX_STREAM_BYTES: usize = 16 * 1024 * 1024;

/// A resolved scenario.
#[derive(Debug, Clone)]
pub(crate) enum Scenario {
    /// A script (built-in fixture or loaded file).
    Script(Arc<Script>),
    /// Echo the user's content back.
    Echo,
    /// Report the control calls received since the last reply.
    Controls,
    /// Die after the first user message.
    Crash,
    /// N assistant messages per turn.
    Stream(StreamSpec),
}

impl Scenario {
    /// Whether the agent must record control calls (only `controls` reads them).
    pub(crate) fn records_controls(&self) -> bool {
        matches!(self, Scenario::Controls)
    }

    /// A short name for logs.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Scenario::Script(_) => "script",
            Scenario::Echo => "echo",
            Scenario::Controls => "controls",
            Scenario::Crash => "crash",
            Scenario::Stream(_) => "stream",
        }
    }
}

/// `stream:N[:ms[:bytes]][:ts]`: a trailing `ts` flag stamps each message with its emission
/// time (`chunk <i> t=<unix µs>`), for latency measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamSpec {
    /// Messages per turn.
    pub(crate) count: u64,
    /// Pause between two messages.
    pub(crate) interval: Duration,
    /// Text size of each message (0: short).
    pub(crate) bytes: usize,
    /// Whether each message's text carries its emission time (` t=<unix µs>` after `chunk <i>`).
    pub(crate) timestamps: bool,
}

impl StreamSpec {
    /// Parses the part after `stream:`.
    pub(crate) fn parse(spec: &str) -> Result<Self, String> {
        let mut parts: Vec<&str> = spec.split(':').collect();
        // `ts` is a flag after N (and the optional ms and bytes), never N itself.
        let timestamps = parts.len() > 1 && parts.last() == Some(&"ts");
        if timestamps {
            parts.pop();
        }
        if parts.len() > 3 {
            return Err("too many fields".into());
        }
        let field = |index: usize, what: &str| -> Result<Option<u64>, String> {
            parts
                .get(index)
                .map(|s| {
                    // Digits only (`parse` alone would take a leading `+`), like the Python fake.
                    s.bytes()
                        .all(|b| b.is_ascii_digit())
                        .then(|| s.parse::<u64>().ok())
                        .flatten()
                        .ok_or_else(|| format!("{what} must be a non-negative integer, got {s:?}"))
                })
                .transpose()
        };
        let count = field(0, "N")?.unwrap_or_default();
        let ms = field(1, "ms")?.unwrap_or(0);
        let bytes = field(2, "bytes")?.unwrap_or(0);
        let bytes = usize::try_from(bytes)
            .ok()
            .filter(|b| *b <= MAX_STREAM_BYTES)
            .ok_or_else(|| format!("bytes must be at most {MAX_STREAM_BYTES}"))?;
        Ok(Self {
            count,
            interval: Duration::from_millis(ms),
            bytes,
            timestamps,
        })
    }
}

/// `stream:` arguments the parser must refuse (shared with the Python cross-check test).
#[cfg(test)]
pub(crate) const BAD_STREAM_SPECS: &[&str] = &[
    "",
    "x",
    "1:",
    "1:2:3:4",
    "-1",
    "1:2:x",
    "1:0:99999999999",
    "ts",
    "1:ts:2",
    "1:2:3:4:ts",
    "1:2:3:ts:ts",
    "1:TS",
    "1:2:3:ts:",
    "+1",
    "1:+2",
    " 1",
    "18446744073709551616",
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn stream_specs() {
        assert_eq!(
            StreamSpec::parse("5").unwrap(),
            StreamSpec {
                count: 5,
                interval: Duration::ZERO,
                bytes: 0,
                timestamps: false,
            }
        );
        assert_eq!(
            StreamSpec::parse("3:10:100").unwrap(),
            StreamSpec {
                count: 3,
                interval: Duration::from_millis(10),
                bytes: 100,
                timestamps: false,
            }
        );
        assert_eq!(
            StreamSpec::parse("10000:1:200:ts").unwrap(),
            StreamSpec {
                count: 10000,
                interval: Duration::from_millis(1),
                bytes: 200,
                timestamps: true,
            }
        );
        let short = StreamSpec::parse("4:ts").unwrap();
        assert_eq!((short.count, short.bytes, short.timestamps), (4, 0, true));
        assert!(StreamSpec::parse("4:2:ts").unwrap().timestamps);
        assert_eq!(StreamSpec::parse("0:1").unwrap().count, 0);
        for bad in BAD_STREAM_SPECS {
            assert!(StreamSpec::parse(bad).is_err(), "{bad:?}");
        }
    }
}
