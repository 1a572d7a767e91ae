//! Logs and traces: the stderr log (`--log-format text|json`, colours only on a terminal) and,
//! with the `otlp` feature and the standard `OTEL_*` variables, trace export over OTLP
//! (http/protobuf), with the bridge that lets core honour an incoming `traceparent`.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (colours only when stderr is a terminal).
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, `span`).
    Json,
}

/// What must outlive the server for traces to be flushed: drop it (or call
/// [`Telemetry::shutdown`]) after the server stopped.
#[derive(Debug, Default)]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops trace export (a no-op without it).
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider {
            if let Err(err) = provider.shutdown() {
                eprintln!("agent-webkit-server: trace export did not shut down cleanly: {err}");
            }
        }
    }
}

/// Installs the global subscriber: stderr in `format`, filtered by `RUST_LOG` (default
/// `info`), plus OTLP export when the environment asks for it (see `docs/operations.md`).
pub fn init(format: LogFormat) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter));
    #[cfg(feature = "otlp")]
    {
        let (layer, provider) = match otlp::start() {
            Ok(Some((layer, provider))) => (Some(layer), Some(provider)),
            Ok(None) => (None, None),
            Err(err) => {
                eprintln!("agent-webkit-server: traces are not exported: {err}");
                (None, None)
            }
        };
        registry.with(layer).init();
        if provider.is_some() {
            tracing::info!("exporting traces over OTLP (http/protobuf)");
        }
        Telemetry { provider }
    }
    #[cfg(not(feature = "otlp"))]
    {
        registry.init();
        Telemetry::default()
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    //! OTLP export and the core's trace bridge.

    use std::collections::HashMap;

    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::{TraceContextExt, TracerProvider};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::filter::filter_fn;
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::Layer;

    /// The spans exported: this project's, at `info` and above (never the HTTP client's that
    /// does the exporting).
    fn exported(meta: &tracing::Metadata<'_>) -> bool {
        meta.target().starts_with("agent_webkit") && *meta.level() <= tracing::Level::INFO
    }

    fn var(name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }

    /// Whether the environment asks for OTLP trace export.
    fn wanted() -> Result<bool, String> {
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(false);
        }
        if let Some(exporter) = var("OTEL_TRACES_EXPORTER") {
            match exporter.as_str() {
                "none" => return Ok(false),
                "otlp" => {}
                other => {
                    return Err(format!(
                        "OTEL_TRACES_EXPORTER={other} is not supported (otlp or none)"
                    ))
                }
            }
        }
        let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(protocol) = protocol.filter(|p| p != "http/protobuf") {
            return Err(format!(
                "OTLP protocol {protocol} is not supported; this server exports http/protobuf"
            ));
        }
        Ok(var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some())
    }

    /// The OpenTelemetry layer and its provider, when the environment asks for export.
    #[allow(clippy::type_complexity)]
    pub(super) fn start<S>(
    ) -> Result<Option<(Box<dyn Layer<S> + Send + Sync + 'static>, SdkTracerProvider)>, String>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        if !wanted()? {
            return Ok(None);
        }
        // Endpoint, headers, timeout and compression come from the OTEL_EXPORTER_OTLP_* variables.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| e.to_string())?;
        let mut resource = Resource::builder();
        if var("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("agent-webkit-server");
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("agent-webkit-server");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(filter_fn(exported))
            .boxed();
        agent_webkit_core::trace::install_bridge(Box::new(Bridge));
        Ok(Some((layer, provider)))
    }

    /// W3C trace context between `tracing` spans and OpenTelemetry.
    struct Bridge;

    impl agent_webkit_core::trace::TraceBridge for Bridge {
        fn set_parent(&self, span: &tracing::Span, traceparent: &str) {
            let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
            let parent = TraceContextPropagator::new().extract(&carrier);
            if let Err(err) = span.set_parent(parent) {
                tracing::debug!(error = %err, "traceparent not applied");
            }
        }

        fn traceparent(&self, span: &tracing::Span) -> Option<String> {
            let context = span.context();
            let span = context.span();
            let sc = span.span_context();
            sc.is_valid().then(|| {
                format!(
                    "00-{}-{}-{:02x}",
                    sc.trace_id(),
                    sc.span_id(),
                    sc.trace_flags().to_u8()
                )
            })
        }
    }
}
