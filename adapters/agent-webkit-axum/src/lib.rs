//! # agent-webkit-axum
//!
//! axum glue for [`agent_webkit_core`]: every request under the mount point goes to
//! [`Api::handle`], which decides everything (routes, auth, status codes, SSE). This crate only
//! translates requests and responses, following the adapter contract in
//! [`agent_webkit_core::http`].
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use agent_webkit_core::config::AppConfig;
//! # let factory: Arc<dyn agent_webkit_core::agent::AgentClientFactory> = todo!();
//! let app = agent_webkit_axum::create_app(AppConfig::new(factory))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//! Use [`serve`] instead of `axum::serve` to get graceful shutdown that ends every stream
//! with `done`.

use std::convert::Infallible;
use std::future::Future;

use agent_webkit_core::config::{AppConfig, ConfigError};
use agent_webkit_core::http::{Api, ApiResponse};
use agent_webkit_core::http::{BodyError, RequestBody, RequestHeaders, ResponseBody};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{HeaderMap, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::Response;
use axum::serve::ListenerExt;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};

pub use agent_webkit_core;

/// Builds the agent-webkit router from a configuration (starts the idle reaper; call inside a
/// Tokio runtime). Mount it at the root or under a prefix with [`Router::nest`].
pub fn create_app(config: AppConfig) -> Result<Router, ConfigError> {
    Ok(router(Api::new(config)?))
}

/// The router for an existing [`Api`] (keep a clone of the `Api` to call
/// [`Api::shutdown`] yourself).
pub fn router(api: Api) -> Router {
    Router::new().fallback(handle).with_state(api)
}

/// Serves `api` on `listener` until `signal` completes, then closes every session (streams end
/// with `done`) and waits for connections to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(api.clone());
    // SSE writes many small frames: without TCP_NODELAY, Nagle's algorithm holds a frame back
    // until the previous one is acknowledged (tens of milliseconds with delayed ACKs).
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            signal.await;
            api.shutdown().await;
        })
        .await
}

async fn handle(State(api): State<Api>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let response = api
        .handle(
            parts.method.as_str(),
            parts.uri.path(),
            &AxumHeaders(&parts.headers),
            AxumBody(body),
        )
        .await;
    into_response(response)
}

struct AxumHeaders<'a>(&'a HeaderMap);

impl RequestHeaders for AxumHeaders<'_> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(HeaderValue::as_bytes)
    }
}

struct AxumBody(Body);

impl RequestBody for AxumBody {
    async fn collect(self, limit: usize) -> Result<Bytes, BodyError> {
        match Limited::new(self.0, limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(err) if err.is::<LengthLimitError>() => Err(BodyError::TooLarge),
            Err(err) => Err(BodyError::Read(err.to_string())),
        }
    }
}

fn into_response(response: ApiResponse) -> Response {
    let body = match response.body {
        ResponseBody::Empty => Body::empty(),
        ResponseBody::Full(bytes) => Body::from(bytes),
        ResponseBody::Sse(stream) => Body::from_stream(stream.map(Ok::<_, Infallible>)),
    };
    let mut out = Response::new(body);
    *out.status_mut() =
        StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in response.headers {
        match HeaderValue::try_from(value.as_ref()) {
            Ok(value) => {
                out.headers_mut()
                    .insert(HeaderName::from_static(name), value);
            }
            Err(_) => tracing::warn!(header = name, "dropping invalid header value"),
        }
    }
    out
}
