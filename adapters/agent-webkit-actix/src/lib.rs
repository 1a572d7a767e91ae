//! # agent-webkit-actix
//!
//! actix-web glue for [`agent_webkit_core`]: every request under the mount point goes to
//! [`Api::handle`], which decides everything (routes, auth, status codes, SSE). This crate only
//! translates requests and responses, following the adapter contract in
//! [`agent_webkit_core::http`] — the same contract, and the same size, as `agent-webkit-axum`.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use actix_web::{web, App, HttpServer};
//! use agent_webkit_core::config::AppConfig;
//! use agent_webkit_core::http::Api;
//! # let factory: Arc<dyn agent_webkit_core::agent::AgentClientFactory> = todo!();
//! actix_web::rt::System::new().block_on(async move {
//!     let api = Api::new(AppConfig::new(factory)).map_err(std::io::Error::other)?;
//!     HttpServer::new(move || {
//!         App::new().service(web::scope("/agent").configure(agent_webkit_actix::configure(api.clone())))
//!     })
//!     .bind("127.0.0.1:8000")?
//!     .run()
//!     .await
//! })
//! # }
//! ```
//! Use [`serve`] instead of `HttpServer::run` to get graceful shutdown that ends every stream
//! with `done`.

use std::convert::Infallible;
use std::future::Future;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::ConnectionType;
use actix_web::http::{StatusCode, Version};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use agent_webkit_core::config::{AppConfig, ConfigError};
use agent_webkit_core::http::{Api, ApiResponse};
use agent_webkit_core::http::{BodyError, RequestBody, RequestHeaders, ResponseBody};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

pub use agent_webkit_core;

/// Registers the agent-webkit routes (a catch-all handing every request to `api`). Mount it at
/// the root with `App::configure`, or under a prefix with `web::scope(prefix).configure(...)`.
pub fn configure(api: Api) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(api))
            .service(web::resource("/{tail:.*}").to(handle));
    }
}

/// Builds the [`Api`] from a configuration (starts the idle reaper; call inside the actix
/// runtime) and returns it with a [`configure`] function for it.
pub fn create_app(
    config: AppConfig,
) -> Result<(Api, impl Fn(&mut web::ServiceConfig) + Clone), ConfigError> {
    let api = Api::new(config)?;
    let shared = api.clone();
    Ok((api, move |cfg: &mut web::ServiceConfig| {
        configure(shared.clone())(cfg)
    }))
}

/// Serves `api` on `listener` (inside an actix `System`) until `signal` completes, then closes
/// every session (streams end with `done`) and stops the server gracefully, dropping
/// connections still open after [`ServerLimits::shutdown_drain`]. Applies the connection
/// limits of [`Api::limits`]: the header read timeout (actix's client request timeout) and the
/// connection cap (split evenly over the workers, as actix counts per worker).
///
/// [`ServerLimits::shutdown_drain`]: agent_webkit_core::limits::ServerLimits::shutdown_drain
pub async fn serve(
    listener: std::net::TcpListener,
    api: Api,
    signal: impl Future<Output = ()> + 'static,
) -> std::io::Result<()> {
    let limits = api.limits().clone();
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let app_api = api.clone();
    let server = HttpServer::new(move || App::new().configure(configure(app_api.clone())))
        .disable_signals()
        .workers(workers)
        .client_request_timeout(limits.header_read_timeout)
        .max_connections(limits.max_connections.div_ceil(workers).max(1))
        // actix counts whole seconds; round up so a short drain is not "no drain at all".
        .shutdown_timeout(limits.shutdown_drain.as_secs_f64().ceil() as u64)
        // SSE writes many small frames: without TCP_NODELAY, Nagle's algorithm holds a frame
        // back until the previous one is acknowledged.
        .tcp_nodelay(true)
        .listen(listener)?
        .run();
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        signal.await;
        api.shutdown().await;
        handle.stop(true).await;
    });
    server.await
}

async fn handle(api: web::Data<Api>, request: HttpRequest, payload: web::Payload) -> HttpResponse {
    let mut path = format!("/{}", request.match_info().get("tail").unwrap_or_default());
    if !request.query_string().is_empty() {
        path = format!("{path}?{}", request.query_string());
    }
    let response = api
        .handle(
            request.method().as_str(),
            &path,
            &ActixHeaders(request.headers()),
            ActixBody::new(payload),
        )
        .await;
    into_response(response, request.version())
}

struct ActixHeaders<'a>(&'a HeaderMap);

impl RequestHeaders for ActixHeaders<'_> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(HeaderValue::as_bytes)
    }
}

/// actix's payload is `!Send`; the core reads bodies through a `Send` handle. A local task
/// forwards the payload's chunks once (and only if) the core asks for the body.
struct ActixBody {
    start: oneshot::Sender<()>,
    chunks: mpsc::Receiver<Result<Bytes, String>>,
}

impl ActixBody {
    fn new(mut payload: web::Payload) -> Self {
        let (start, started) = oneshot::channel();
        let (tx, chunks) = mpsc::channel(8);
        actix_web::rt::spawn(async move {
            if started.await.is_err() {
                return; // never asked for (the core then answers with `connection: close`)
            }
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| e.to_string());
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    return; // the reader stopped (limit reached) or the read failed
                }
            }
        });
        Self { start, chunks }
    }
}

impl RequestBody for ActixBody {
    async fn collect(mut self, limit: usize) -> Result<Bytes, BodyError> {
        let _ = self.start.send(());
        let mut body = Vec::new();
        while let Some(chunk) = self.chunks.recv().await {
            let chunk = chunk.map_err(BodyError::Read)?;
            if body.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(body))
    }
}

fn into_response(response: ApiResponse, version: Version) -> HttpResponse {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = HttpResponse::build(status);
    for (name, value) in &response.headers {
        if *name == "connection" {
            // actix owns the Connection header; this is how to ask it to close.
            if value.eq_ignore_ascii_case("close") {
                builder.force_close();
            }
            continue;
        }
        match HeaderValue::try_from(value.as_ref()) {
            Ok(value) => {
                builder.insert_header((HeaderName::from_static(name), value));
            }
            Err(_) => tracing::warn!(header = name, "dropping invalid header value"),
        }
    }
    match response.body {
        ResponseBody::Empty => builder.finish(),
        ResponseBody::Full(bytes) => builder.body(bytes),
        ResponseBody::Sse(stream) => {
            let mut response = builder.streaming(stream.map(Ok::<_, Infallible>));
            if version == Version::HTTP_10 {
                // HTTP/1.0 has no chunked encoding: the stream ends when the connection does.
                response.head_mut().no_chunking(true);
                response
                    .head_mut()
                    .set_connection_type(ConnectionType::Close);
            }
            response
        }
    }
}
