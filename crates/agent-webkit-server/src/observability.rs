//! The operator-facing flags (`--log-format`, `--metrics-listen`, `--drain-delay`) and what
//! they start: the metrics listener, and the drain that takes the server out of a load
//! balancer's rotation (`/readyz` 503 `draining`) before it shuts down.

use std::future::Future;
use std::time::Duration;

use agent_webkit_core::http::Api;

use crate::telemetry::LogFormat;

/// Logs, metrics and shutdown behaviour for operators.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Operations")]
pub struct ObservabilityArgs {
    /// Log line format on stderr (colours only when stderr is a terminal and NO_COLOR is
    /// unset).
    #[arg(long, env = "AGENT_WEBKIT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Also serve `GET /metrics` (Prometheus) on this address (`host:port`), without auth.
    /// `/metrics` on the main address always needs the token.
    #[arg(long, env = "AGENT_WEBKIT_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Seconds between the shutdown signal and the start of shutdown, while `/readyz` answers
    /// 503 `draining` and everything else keeps working (so a load balancer stops sending new
    /// clients first).
    #[arg(long, env = "AGENT_WEBKIT_DRAIN_DELAY", default_value_t = 0.0)]
    pub drain_delay: f64,
}

impl ObservabilityArgs {
    /// Binds `--metrics-listen` (if set) and serves `/metrics` of `api` there in a task.
    pub async fn start_metrics_listener(&self, api: &Api) -> Result<(), String> {
        let Some(addr) = &self.metrics_listen else {
            return Ok(());
        };
        let listener = crate::bind_listener(addr)
            .await
            .map_err(|e| format!("cannot bind --metrics-listen {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(%local, "serving /metrics");
        println!("agent-webkit-server metrics on http://{local}/metrics");
        tokio::spawn(crate::metrics_listener::serve(listener, api.clone()));
        Ok(())
    }

    /// `signal`, then `/readyz` reports draining for `--drain-delay`, then shutdown may begin.
    pub fn drain_after(
        &self,
        api: &Api,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<impl Future<Output = ()> + Send + 'static, String> {
        let delay = Duration::try_from_secs_f64(self.drain_delay)
            .map_err(|_| "--drain-delay must be a non-negative number of seconds".to_owned())?;
        let api = api.clone();
        Ok(async move {
            signal.await;
            api.start_draining();
            if !delay.is_zero() {
                tracing::info!(
                    delay_s = delay.as_secs_f64(),
                    "draining: /readyz answers 503 until shutdown starts"
                );
                tokio::time::sleep(delay).await;
            }
        })
    }
}
