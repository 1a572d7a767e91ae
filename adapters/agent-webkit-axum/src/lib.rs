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
//! with `done`, and the connection limits of [`Api::limits`] (`axum::serve` has no header read
//! timeout, connection cap or drain deadline).

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use agent_webkit_core::config::{AppConfig, ConfigError};
use agent_webkit_core::http::{Api, ApiResponse};
use agent_webkit_core::http::{BodyError, RequestBody, RequestHeaders, ResponseBody};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{HeaderMap, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

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
/// with `done`) and waits for connections to finish, at most [`ServerLimits::shutdown_drain`]
/// (then they are dropped). Applies the connection limits of [`Api::limits`]: a connection
/// that does not send a complete request head within `header_read_timeout` is closed, and at
/// most `max_connections` are open (further ones wait in the listen backlog).
///
/// [`ServerLimits::shutdown_drain`]: agent_webkit_core::limits::ServerLimits::shutdown_drain
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = api.limits().clone();
    let app =
        router(api.clone()).map_request(|req: Request<hyper::body::Incoming>| req.map(Body::new));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(None);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Dropped (closed) to ask every connection to finish gracefully.
    let (stop_tx, stop_rx) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut signal = pin!(signal);
    loop {
        let permit = tokio::select! {
            () = &mut signal => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, remote) = tokio::select! {
            () = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // SSE writes many small frames: without TCP_NODELAY, Nagle's algorithm holds a frame
        // back until the previous one is acknowledged (tens of milliseconds with delayed ACKs).
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        // hyper's header read timeout starts once HTTP/1 is detected: a client that sends
        // nothing (or part of the HTTP/2 preface) would never meet it. So the first request
        // must arrive within the same timeout, whatever the protocol.
        let first_request = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&first_request);
        let service = TowerToHyperService::new(app.clone().map_request(
            move |req: Request<hyper::body::Incoming>| {
                seen.store(true, Ordering::Release);
                req
            },
        ));
        let builder = Arc::clone(&builder);
        let mut stop = stop_rx.clone();
        let header_timeout = limits.header_read_timeout;
        connections.spawn(async move {
            let _permit = permit;
            let mut conn = pin!(builder.serve_connection_with_upgrades(TokioIo::new(tcp), service));
            let mut stopping = false;
            let mut deadline = pin!(tokio::time::sleep(header_timeout));
            let mut waiting_for_first = true;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(err) = result {
                            tracing::trace!(%remote, error = %err, "connection ended with an error");
                        }
                        break;
                    }
                    _ = stop.changed(), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    () = &mut deadline, if waiting_for_first => {
                        waiting_for_first = false;
                        if !first_request.load(Ordering::Acquire) {
                            tracing::debug!(%remote, "no request within the header read timeout; closing");
                            break;
                        }
                    }
                }
            }
        });
        // Forget finished connections as we go.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    api.shutdown().await;
    drop(stop_tx);
    drop(stop_rx);
    let drained = tokio::time::timeout(limits.shutdown_drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the shutdown drain deadline; dropping them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

async fn handle(State(api): State<Api>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let response = api
        .handle(
            parts.method.as_str(),
            parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
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
