//! Trace context: every request runs in a span `request` (method, route template, status,
//! session id) whose parent is the caller's W3C `traceparent` when a [`TraceBridge`] is
//! installed (the server installs one when it exports traces over OTLP), and agents learn the
//! trace they start in through [`current_traceparent`] (the Claude bridge passes it to the CLI
//! as `TRACEPARENT`, as the Python Agent SDK does).
//!
//! Core depends on no OpenTelemetry crate: the bridge is the only thing that knows how a
//! `tracing` span maps to an OpenTelemetry context. Without one, the incoming `traceparent`
//! (when well-formed) is what agents get.

use std::future::Future;
use std::sync::OnceLock;

use tracing::Instrument;

/// Maps `tracing` spans to W3C trace context; installed once per process.
pub trait TraceBridge: Send + Sync + 'static {
    /// Makes `span` a child of the remote span `traceparent` (already validated).
    fn set_parent(&self, span: &tracing::Span, traceparent: &str);
    /// The `traceparent` naming `span`, when it is recorded in a trace.
    fn traceparent(&self, span: &tracing::Span) -> Option<String>;
}

static BRIDGE: OnceLock<Box<dyn TraceBridge>> = OnceLock::new();

/// Installs the process's bridge; `false` when one was installed already.
pub fn install_bridge(bridge: Box<dyn TraceBridge>) -> bool {
    BRIDGE.set(bridge).is_ok()
}

tokio::task_local! {
    /// The well-formed `traceparent` of the request this task serves.
    static INCOMING: Option<String>;
}

/// `value` if it is a well-formed W3C `traceparent` (version 00 layout; trace and parent ids
/// not all zero), lower-cased.
pub fn parse_traceparent(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let parts: Vec<&str> = text.split('-').collect();
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    match parts.as_slice() {
        [version, trace, parent, flags, ..]
            if hex(version, 2)
                && !version.eq_ignore_ascii_case("ff")
                && (parts.len() == 4 || *version != "00")
                && hex(trace, 32)
                && nonzero(trace)
                && hex(parent, 16)
                && nonzero(parent)
                && hex(flags, 2) =>
        {
            Some(format!("00-{trace}-{parent}-{flags}").to_ascii_lowercase())
        }
        _ => None,
    }
}

/// The `traceparent` an agent started now should carry: the current span's when a bridge
/// records it, else the incoming one of the request being served.
pub fn current_traceparent() -> Option<String> {
    if let Some(bridge) = BRIDGE.get() {
        if let Some(traceparent) = bridge.traceparent(&tracing::Span::current()) {
            return Some(traceparent);
        }
    }
    INCOMING.try_with(Clone::clone).ok().flatten()
}

/// Puts `span` (a span with no `tracing` parent, so it does not keep the request's span open)
/// in the trace of the current span, when a bridge is installed.
pub(crate) fn adopt_current(span: &tracing::Span) {
    if let Some(bridge) = BRIDGE.get() {
        if let Some(traceparent) = current_traceparent() {
            bridge.set_parent(span, &traceparent);
        }
    }
}

/// The current `traceparent` when a bridge is installed (for a later [`set_remote_parent`]).
pub(crate) fn capture() -> Option<String> {
    BRIDGE.get().and_then(|_| current_traceparent())
}

/// Makes `span` a child of `traceparent` in the exported trace (its `tracing` parent stays).
pub(crate) fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    if let Some(bridge) = BRIDGE.get() {
        bridge.set_parent(span, traceparent);
    }
}

/// Runs one request's handling in its span (a child of the incoming `traceparent` through the
/// bridge) with the incoming `traceparent` known to [`current_traceparent`].
pub(crate) async fn in_request_span<F: Future>(
    span: tracing::Span,
    traceparent: Option<&[u8]>,
    handling: F,
) -> F::Output {
    let incoming = traceparent.and_then(parse_traceparent);
    if let (Some(bridge), Some(parent)) = (BRIDGE.get(), &incoming) {
        bridge.set_parent(&span, parent);
    }
    INCOMING.scope(incoming, handling.instrument(span)).await
}

#[cfg(test)]
mod tests {
    use super::parse_traceparent;

    #[test]
    fn traceparent_validation() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(ok.as_bytes()).as_deref(), Some(ok));
        assert_eq!(
            parse_traceparent(ok.to_ascii_uppercase().as_bytes()).as_deref(),
            Some(ok)
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad}");
        }
        // A later version may append fields.
        assert!(parse_traceparent(
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"
        )
        .is_some());
    }
}
