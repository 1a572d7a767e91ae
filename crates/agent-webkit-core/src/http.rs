//! The HTTP behaviour of wire protocol 1.0, framework-free.
//!
//! [`Api::handle`] takes a method, a path, the request headers and a lazily read body, and
//! returns an [`ApiResponse`]: status, headers, and either a full body or an SSE byte stream.
//! Routing, auth, limits, status codes, error bodies, SSE framing and keepalive are all decided
//! here, so every web framework behaves byte for byte the same.
//!
//! # The adapter contract
//!
//! An adapter for a web framework does exactly this, and nothing else:
//!
//! 1. At startup, build one [`Api`] from an [`AppConfig`] with [`Api::new`] (inside the Tokio
//!    runtime; it starts the idle reaper) and share it with every request.
//! 2. Route **every** request under the mount point to [`Api::handle`] (a catch-all route), so
//!    404 / 405 answers come from here too. Pass the method as an upper-case string and the
//!    path relative to the mount point with its query string, if any (e.g.
//!    `/sessions/abc/stream`, `/sessions?limit=20`).
//! 3. Pass the headers through a [`RequestHeaders`] view (lookup by lower-case name, first value
//!    wins) and the body through a [`RequestBody`] that reads at most `limit` bytes and reports
//!    [`BodyError::TooLarge`] beyond it. Do not read the body before `handle` asks for it.
//! 4. Write [`ApiResponse::status`] and every header in [`ApiResponse::headers`] unchanged.
//! 5. For [`ResponseBody::Sse`], stream each `Bytes` chunk to the client as soon as it is
//!    produced (no buffering, no compression), and drop the stream when the client goes away:
//!    dropping it is what unregisters the subscriber.
//! 6. On graceful shutdown, call [`Api::shutdown`] *before* waiting for connections to drain:
//!    it closes every session, which ends every SSE stream with `done`.
//! 7. Apply the connection-level limits of [`Api::limits`] in `serve`: close a connection
//!    that has not sent a complete request head within `header_read_timeout`, hold at most
//!    `max_connections` open, and drop connections still open `shutdown_drain` after the
//!    shutdown signal. (Body read timeouts, subscriber caps and CORS are applied here.)

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use serde_json::json;

use crate::agent::{AgentError, SessionConfig};
use crate::audit::{AuditAction, AuditEvent, AuditSink};
use crate::auth::principal::{ModeForbidden, Principal};
use crate::auth::quota::Quotas;
use crate::auth::AuthConfig;
use crate::config::{AllowedRoots, AppConfig, ConfigError};
use crate::cors::Cors;
use crate::event_log::{LoggedEvent, SubscribeError};
use crate::limits::{ServerLimits, SubscriberCaps, SubscriberPermit};
use crate::models::{
    AgentCounts, CreateSessionRequest, CreateSessionResponse, ErrorBody, ErrorData, EventKind,
    HealthResponse, InboundMessage,
};
use crate::policy::ClientPolicy;
use crate::registry::{CreateError, ResumeError, SessionRegistry};
use crate::session::{Probe, Session, SessionError, SessionSubscriber};
use crate::PROTOCOL_VERSION;

mod anchors;
mod attachments;
mod context;
mod mcp;

/// The SSE keepalive comment frame.
pub(crate) const KEEPALIVE_FRAME: &[u8] = b": keepalive\n\n";
/// Most events written to a socket in one chunk.
const MAX_BATCH: usize = 256;

/// Read access to request headers, by lower-case name (first value wins).
pub trait RequestHeaders {
    /// The raw value of header `name`, if present.
    fn get(&self, name: &str) -> Option<&[u8]>;
}

impl RequestHeaders for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }
}

impl<const N: usize> RequestHeaders for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<&[u8]> {
        RequestHeaders::get(self.as_slice(), name)
    }
}

/// Whether the request announces a body (a non-zero `Content-Length`, or chunked).
fn declares_body<H: RequestHeaders + ?Sized>(headers: &H) -> bool {
    content_length(headers).is_some_and(|n| n > 0) || headers.get("transfer-encoding").is_some()
}

/// The request's `Content-Length`, when present and valid.
fn content_length<H: RequestHeaders + ?Sized>(headers: &H) -> Option<u64> {
    headers
        .get("content-length")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Records whether the whole body was read.
struct TrackedBody<B> {
    inner: B,
    read: Arc<AtomicBool>,
}

impl<B: RequestBody> RequestBody for TrackedBody<B> {
    async fn collect(self, limit: usize) -> Result<Bytes, BodyError> {
        let body = self.inner.collect(limit).await?;
        self.read.store(true, Ordering::Release);
        Ok(body)
    }
}

/// Why a request body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Larger than the limit (HTTP 413).
    #[error("request body too large")]
    TooLarge,
    /// The connection failed while reading (HTTP 400).
    #[error("could not read request body: {0}")]
    Read(String),
}

/// A request body that is read only when the API needs it, up to a limit.
pub trait RequestBody: Send {
    /// Reads the whole body; more than `limit` bytes is [`BodyError::TooLarge`].
    fn collect(self, limit: usize) -> impl Future<Output = Result<Bytes, BodyError>> + Send;
}

impl RequestBody for Bytes {
    fn collect(self, limit: usize) -> impl Future<Output = Result<Bytes, BodyError>> + Send {
        std::future::ready(if self.len() > limit {
            Err(BodyError::TooLarge)
        } else {
            Ok(self)
        })
    }
}

/// The stream of SSE bytes for one subscriber.
pub type SseStream = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// A response body.
pub enum ResponseBody {
    /// No body (204).
    Empty,
    /// A complete body.
    Full(Bytes),
    /// An SSE stream; ends after `done`.
    Sse(SseStream),
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseBody::Empty => f.write_str("Empty"),
            ResponseBody::Full(bytes) => f.debug_tuple("Full").field(bytes).finish(),
            ResponseBody::Sse(_) => f.write_str("Sse(..)"),
        }
    }
}

/// A response, ready for an adapter to write.
#[derive(Debug)]
pub struct ApiResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers (lower-case names).
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    /// The body.
    pub body: ResponseBody,
}

impl ApiResponse {
    fn no_content() -> Self {
        Self {
            status: 204,
            headers: Vec::new(),
            body: ResponseBody::Empty,
        }
    }

    fn json(status: u16, value: &serde_json::Value) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_default();
        Self {
            status,
            headers: vec![("content-type", Cow::Borrowed("application/json"))],
            body: ResponseBody::Full(Bytes::from(body)),
        }
    }

    /// An error response: `{"detail": ...}`, plus `"code"` when given.
    pub fn error(status: u16, detail: impl std::fmt::Display, code: Option<&str>) -> Self {
        let body = ErrorBody {
            detail: detail.to_string(),
            code: code.map(str::to_owned),
        };
        Self::json(status, &json!(body))
    }

    fn with_header(mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The header's value, if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    /// The full body (empty for 204 and SSE).
    pub fn body_bytes(&self) -> &[u8] {
        match &self.body {
            ResponseBody::Full(bytes) => bytes,
            _ => &[],
        }
    }

    /// 413 for a body over `limit` bytes.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::error(
            413,
            format!("Request body too large (limit {limit} bytes)"),
            Some("payload_too_large"),
        )
    }
}

enum Route<'a> {
    Health,
    Ready,
    Metrics,
    OpenApi,
    Sessions,
    Session(&'a str),
    Stream(&'a str),
    Input(&'a str),
    Context(&'a str),
    Mcp(&'a str),
    /// `/sessions/{id}/attachments`.
    Attachments(&'a str),
    /// `/sessions/{id}/attachments/{attachment_id}`.
    Attachment(&'a str, &'a str),
    NotFound,
}

fn route(path: &str) -> Route<'_> {
    match path {
        "/healthz" => return Route::Health,
        "/readyz" => return Route::Ready,
        "/metrics" => return Route::Metrics,
        _ => {}
    }
    if path == "/openapi.json" {
        return Route::OpenApi;
    }
    let Some(rest) = path.strip_prefix("/sessions") else {
        return Route::NotFound;
    };
    if rest.is_empty() {
        return Route::Sessions;
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Route::NotFound;
    };
    let mut parts = rest.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(id), None, None, None) if !id.is_empty() => Route::Session(id),
        (Some(id), Some("stream"), None, None) if !id.is_empty() => Route::Stream(id),
        (Some(id), Some("input"), None, None) if !id.is_empty() => Route::Input(id),
        (Some(id), Some("context"), None, None) if !id.is_empty() => Route::Context(id),
        (Some(id), Some("mcp"), None, None) if !id.is_empty() => Route::Mcp(id),
        (Some(id), Some("attachments"), None, None) if !id.is_empty() => Route::Attachments(id),
        (Some(id), Some("attachments"), Some(att), None) if !id.is_empty() && !att.is_empty() => {
            Route::Attachment(id, att)
        }
        _ => Route::NotFound,
    }
}

impl Route<'_> {
    /// The route template: the `route` label of the HTTP metrics and request spans.
    fn template(&self) -> &'static str {
        match self {
            Route::Health => "/healthz",
            Route::Ready => "/readyz",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.json",
            Route::Sessions => "/sessions",
            Route::Session(_) => "/sessions/{id}",
            Route::Stream(_) => "/sessions/{id}/stream",
            Route::Input(_) => "/sessions/{id}/input",
            Route::Context(_) => "/sessions/{id}/context",
            Route::Mcp(_) => "/sessions/{id}/mcp",
            Route::Attachments(_) => "/sessions/{id}/attachments",
            Route::Attachment(..) => "/sessions/{id}/attachments/{attachment_id}",
            Route::NotFound => "other",
        }
    }

    fn session_id(&self) -> Option<&str> {
        match self {
            Route::Session(id)
            | Route::Stream(id)
            | Route::Input(id)
            | Route::Context(id)
            | Route::Mcp(id)
            | Route::Attachments(id)
            | Route::Attachment(id, _) => Some(id),
            _ => None,
        }
    }
}

/// The HTTP API over a [`SessionRegistry`] (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Api {
    inner: Arc<ApiInner>,
}

struct ApiInner {
    registry: SessionRegistry,
    auth: AuthConfig,
    max_body_bytes: usize,
    keepalive: Duration,
    roots: AllowedRoots,
    policy: ClientPolicy,
    limits: ServerLimits,
    cors: Cors,
    subscribers: Arc<SubscriberCaps>,
    readiness: crate::readiness::Readiness,
    quotas: Quotas,
    audit: Vec<Arc<dyn AuditSink>>,
    site: Option<Arc<dyn crate::site::StaticSite>>,
    attachments: Option<crate::attachments::AttachmentStore>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("registry", &self.inner.registry)
            .field("auth", &self.inner.auth)
            .field("max_body_bytes", &self.inner.max_body_bytes)
            .field("keepalive", &self.inner.keepalive)
            .field("policy", &self.inner.policy)
            .field("limits", &self.inner.limits)
            .field("cors", &self.inner.cors)
            .finish()
    }
}

impl Api {
    /// Validates the configuration, builds the registry and starts its idle reaper.
    pub fn new(config: AppConfig) -> Result<Self, ConfigError> {
        config.auth.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::NoRuntime);
        }
        let roots = AllowedRoots::new(&config.allowed_roots)?;
        let mut config = config;
        let attachments = match config.attachments.take() {
            Some(settings) => {
                let path = settings.root.clone();
                Some(
                    crate::attachments::AttachmentStore::new(settings).map_err(|err| {
                        ConfigError::BadAttachmentsDir {
                            path,
                            reason: err.to_string(),
                        }
                    })?,
                )
            }
            None => None,
        };
        config.registry.attachments_root = attachments.as_ref().map(|a| a.config().root.clone());
        let readiness = crate::readiness::Readiness::new(
            Arc::clone(&config.agent_factory),
            config.failover.as_ref().map(|f| Arc::clone(&f.persistence)),
        );
        let registry = SessionRegistry::with_failover(
            config.agent_factory,
            config.session_store.map(crate::metrics::TimedStore::wrap),
            config.registry,
            config.failover,
        );
        registry.set_take_over_check(take_over_check(roots.clone(), config.policy.clone()));
        registry.start_reaper();
        if let Some(store) = &attachments {
            attachments::start_sweeper(store.clone(), &registry);
        }
        let subscribers = SubscriberCaps::new(
            config.limits.max_subscribers_per_session,
            config.limits.max_subscribers,
        );
        Ok(Self {
            inner: Arc::new(ApiInner {
                registry,
                auth: config.auth,
                max_body_bytes: config.max_body_bytes,
                keepalive: config.keepalive,
                roots,
                policy: config.policy,
                cors: Cors::new(&config.cors_origins),
                limits: config.limits,
                subscribers,
                readiness,
                quotas: Quotas::default(),
                audit: config.audit_sinks,
                site: config.site,
                attachments,
            }),
        })
    }

    /// The limits; adapters apply the connection-level ones (see the module docs).
    pub fn limits(&self) -> &ServerLimits {
        &self.inner.limits
    }

    /// The session registry.
    pub fn registry(&self) -> &SessionRegistry {
        &self.inner.registry
    }

    /// The request body limit in bytes.
    pub fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    /// From now on `/readyz` answers 503 `draining` (call it when shutdown begins, before the
    /// load balancer's grace period; everything else keeps working until [`Api::shutdown`]).
    pub fn start_draining(&self) {
        self.inner.readiness.start_draining();
    }

    /// The Prometheus metrics text (what `GET /metrics` returns), e.g. for a separate
    /// metrics listener; its content type is [`crate::metrics::CONTENT_TYPE`].
    pub async fn metrics_text(&self) -> String {
        crate::metrics::render(&self.inner.registry).await
    }

    /// Closes every session (ending their streams with `done`) and refuses new ones.
    pub async fn shutdown(&self) {
        self.inner.registry.shutdown().await;
        if let Some(store) = &self.inner.attachments {
            store.shutdown().await;
        }
    }

    /// Handles one request (see the module docs for what the adapter passes).
    pub async fn handle<H, B>(&self, method: &str, path: &str, headers: &H, body: B) -> ApiResponse
    where
        H: RequestHeaders + Sync + ?Sized,
        B: RequestBody,
    {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let read = Arc::new(AtomicBool::new(false));
        let body = TrackedBody {
            inner: body,
            read: Arc::clone(&read),
        };
        let started = std::time::Instant::now();
        let route_of_path = route(path);
        let template = route_of_path.template();
        let span = tracing::info_span!(
            "request",
            otel.name = %format_args!("{method} {template}"),
            http.request.method = method,
            http.route = template,
            http.response.status_code = tracing::field::Empty,
            session_id = route_of_path.session_id(),
        );
        let handling = self.handle_in_span(method, path, query, headers, body, read.clone());
        let response =
            crate::trace::in_request_span(span.clone(), headers.get("traceparent"), handling).await;
        span.record("http.response.status_code", response.status);
        crate::metrics::http_response(method, template, response.status, started.elapsed());
        response
    }

    async fn handle_in_span<H, B>(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &H,
        body: TrackedBody<B>,
        read: Arc<AtomicBool>,
    ) -> ApiResponse
    where
        H: RequestHeaders + Sync + ?Sized,
        B: RequestBody,
    {
        let origin = self.inner.cors.allowed(headers.get("origin"));
        let mut response = match origin {
            Some(origin)
                if method == "OPTIONS"
                    && headers.get("access-control-request-method").is_some()
                    && !matches!(route(path), Route::NotFound) =>
            {
                let mut preflight = ApiResponse::no_content();
                preflight.headers = Cors::preflight_headers(origin);
                preflight
            }
            _ => self.dispatch(method, path, query, headers, body).await,
        };
        if let Some(origin) = origin {
            if response.header("access-control-allow-origin").is_none() {
                response.headers.extend(Cors::response_headers(origin));
            }
        }
        if declares_body(headers) && !read.load(Ordering::Acquire) {
            // The body was refused or never needed: do not make the server read (or the client
            // keep sending) it; every adapter closes the connection after this response.
            response = response.with_header("connection", "close");
        }
        tracing::debug!(method, path, status = response.status, "request handled");
        response
    }

    async fn dispatch<H, B>(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &H,
        body: B,
    ) -> ApiResponse
    where
        H: RequestHeaders + Sync + ?Sized,
        B: RequestBody,
    {
        let route = route(path);
        let allowed = match route {
            Route::NotFound => {
                return crate::site::respond(self.inner.site.as_deref(), method, path)
            }
            Route::Health | Route::Ready | Route::Metrics | Route::OpenApi => "GET",
            Route::Sessions => "GET, POST",
            Route::Input(_) => "POST",
            Route::Context(_) => "GET",
            Route::Session(_) => "GET, DELETE",
            Route::Attachments(_) => "GET, POST",
            Route::Attachment(..) => "DELETE",
            Route::Stream(_) | Route::Mcp(_) => "GET",
        };
        if !allowed.split(", ").any(|m| m == method) {
            return ApiResponse::error(405, "Method Not Allowed", None)
                .with_header("allow", allowed);
        }
        if let Route::Health = route {
            let registry = &self.inner.registry;
            let health = HealthResponse {
                status: "ok".to_owned(),
                protocol_version: PROTOCOL_VERSION.to_owned(),
                // Agent counts for operators: only to a caller who may use the API.
                agents: self
                    .inner
                    .auth
                    .check(headers.get("authorization"))
                    .is_ok()
                    .then(|| AgentCounts {
                        live: registry.live_agents(),
                        warm_spares: registry.warm_spares(),
                        hibernated: registry.hibernated_agents(),
                        max_live: registry.config().max_live_agents,
                    }),
            };
            return ApiResponse::json(200, &json!(health));
        }
        if let Route::OpenApi = route {
            return openapi_response();
        }
        if let Route::Ready = route {
            return match self.inner.readiness.check().await {
                Ok(()) => ApiResponse::json(200, &json!(crate::readiness::ReadyBody::READY)),
                Err(not_ready) => ApiResponse::json(503, &not_ready.body()),
            };
        }
        let principal = match self.inner.auth.authenticate(headers.get("authorization")) {
            Ok(principal) => principal,
            Err(err) => {
                return ApiResponse::error(401, err, None).with_header("www-authenticate", "Bearer")
            }
        };
        let caller = crate::listing::Caller::of(&principal);
        match route {
            Route::Sessions if method == "GET" => self.list(&caller, query).await,
            Route::Sessions => self.create(headers, body, &principal).await,
            Route::Session(id) if method == "GET" => self.detail(&caller, id).await,
            Route::Session(id) => self.delete(id, &principal).await,
            Route::Stream(id) => self.stream(id, headers, &principal).await,
            Route::Input(id) => self.input(id, headers, body, &principal).await,
            Route::Context(id) => self.context(id, &principal).await,
            Route::Mcp(id) => self.mcp_list(id, &principal).await,
            Route::Attachments(id) if method == "GET" => {
                self.list_attachments(id, &principal).await
            }
            Route::Attachments(id) => {
                self.upload_attachment(id, query, headers, body, &principal)
                    .await
            }
            Route::Attachment(id, attachment_id) => {
                self.delete_attachment(id, attachment_id, &principal).await
            }
            Route::Metrics => ApiResponse {
                status: 200,
                headers: vec![("content-type", Cow::Borrowed(crate::metrics::CONTENT_TYPE))],
                body: ResponseBody::Full(Bytes::from(self.metrics_text().await)),
            },
            Route::Health | Route::Ready | Route::OpenApi | Route::NotFound => {
                ApiResponse::error(404, "Not Found", None)
            }
        }
    }

    /// `GET /sessions` (see [`crate::listing`]).
    async fn list(&self, caller: &crate::listing::Caller<'_>, query: &str) -> ApiResponse {
        let request = match crate::listing::ListRequest::parse(query) {
            Ok(request) => request,
            Err(err) => return ApiResponse::error(400, err, Some("invalid_query")),
        };
        match crate::listing::list_sessions(&self.inner.registry, caller, &request).await {
            Ok(page) => ApiResponse::json(200, &json!(page)),
            Err(err) => ApiResponse::error(503, err, Some("persistence_unavailable"))
                .with_header("retry-after", "1"),
        }
    }

    /// `GET /sessions/{id}` (see [`crate::listing`]).
    async fn detail(&self, caller: &crate::listing::Caller<'_>, id: &str) -> ApiResponse {
        match crate::listing::session_detail(&self.inner.registry, caller, id).await {
            Ok(Some(detail)) => ApiResponse::json(200, &json!(detail)),
            Ok(None) => ApiResponse::error(404, "Session not found", None),
            Err(err) => ApiResponse::error(503, err, Some("persistence_unavailable"))
                .with_header("retry-after", "1"),
        }
    }

    /// Who acts, for the audit: the JWT principal's `sub`, `"token"` under the shared token,
    /// `None` with auth disabled.
    fn actor<'a>(&self, principal: &'a Principal) -> Option<&'a str> {
        match principal.sub.as_deref() {
            Some(sub) => Some(sub),
            None => (!self.inner.auth.disabled).then_some("token"),
        }
    }

    fn audit(&self, event: AuditEvent) {
        for sink in &self.inner.audit {
            sink.record(&event);
        }
    }

    async fn read_body<H, B>(&self, headers: &H, body: B) -> Result<Bytes, ApiResponse>
    where
        H: RequestHeaders + Sync + ?Sized,
        B: RequestBody,
    {
        let limit = self.inner.max_body_bytes;
        if content_length(headers).is_some_and(|len| len > limit as u64) {
            return Err(ApiResponse::payload_too_large(limit));
        }
        let timeout = self.inner.limits.body_read_timeout;
        match tokio::time::timeout(timeout, body.collect(limit)).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(BodyError::TooLarge)) => Err(ApiResponse::payload_too_large(limit)),
            Ok(Err(err @ BodyError::Read(_))) => Err(ApiResponse::error(400, err, None)),
            Err(_) => {
                tracing::info!(
                    timeout_ms = timeout.as_millis(),
                    "request body read timed out"
                );
                Err(ApiResponse::error(
                    408,
                    format!(
                        "Request body not received within {} s",
                        timeout.as_secs_f64()
                    ),
                    Some("body_timeout"),
                ))
            }
        }
    }

    /// DELETE: another principal's session is left alone and answered like an unknown id (204).
    async fn delete(&self, id: &str, principal: &Principal) -> ApiResponse {
        match crate::auth::ownership::may_see(&self.inner.registry, principal, id).await {
            Ok(true) => {
                self.inner.registry.remove(id).await;
                if let Some(store) = &self.inner.attachments {
                    store.remove_session(id).await;
                }
                self.audit(AuditEvent::new(
                    self.actor(principal),
                    id,
                    AuditAction::Delete,
                ));
            }
            Ok(false) => {
                tracing::info!(session_id = id, principal = ?principal.sub, "DELETE of another principal's session ignored");
            }
            Err(err) => {
                return ApiResponse::error(503, err, Some("persistence_unavailable"))
                    .with_header("retry-after", "1")
            }
        }
        ApiResponse::no_content()
    }

    async fn create<H, B>(&self, headers: &H, body: B, principal: &Principal) -> ApiResponse
    where
        H: RequestHeaders + Sync + ?Sized,
        B: RequestBody,
    {
        let body = match self.read_body(headers, body).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        let mut request = match CreateSessionRequest::from_json(&body) {
            Ok(request) => request,
            Err(err) => return ApiResponse::error(400, err, None),
        };
        if let Some(Err(err)) = request
            .session_id
            .as_deref()
            .map(crate::session_id::validate)
        {
            return ApiResponse::error(400, err, Some(crate::session_id::INVALID_CODE));
        }
        // A fork inherits the source's settings the request leaves out; every check below
        // applies to the effective values.
        let fork = match self.fork_source(&mut request, principal).await {
            Ok(fork) => fork,
            Err(response) => return response,
        };
        if let Err(err) = self
            .inner
            .policy
            .check_session(request.model.as_deref(), request.permission_mode.as_deref())
        {
            tracing::info!(error = %err, "session create refused by policy");
            return ApiResponse::error(400, &err, Some(err.code()));
        }
        if let Err(err) = principal.check_mode(request.permission_mode.as_deref()) {
            tracing::info!(principal = ?principal.sub, error = %err, "session create refused: permission mode");
            return ApiResponse::error(403, &err, Some(ModeForbidden::CODE));
        }
        let cwd = match principal.resolve_cwd(&self.inner.roots, request.cwd.as_deref()) {
            Ok(cwd) => cwd,
            Err(detail) => {
                tracing::info!(reason = %detail, "session create refused: cwd");
                return ApiResponse::error(400, INVALID_CWD, Some("invalid_cwd"));
            }
        };
        let mcp_servers = match self.mcp_create_servers(request.mcp_servers.as_ref()) {
            Ok(servers) => servers,
            Err(response) => return response,
        };
        let _quota = match self.inner.quotas.reserve(
            principal,
            self.inner.auth.max_sessions_per_principal,
            &self.inner.registry,
        ) {
            Ok(permit) => permit,
            Err(err) => {
                tracing::info!(principal = ?principal.sub, error = %err, "session create refused: quota");
                return ApiResponse::error(429, err, Some("quota_exceeded"));
            }
        };
        let config = SessionConfig {
            model: request.model,
            permission_mode: request.permission_mode,
            cwd,
            tool_input_deltas: request.tool_input_deltas,
            owner: principal.sub.clone(),
            session_id: request.session_id,
            mcp_servers,
            file_checkpointing: request.file_checkpointing,
            fork: fork.as_ref().map(|f| f.from.clone()),
            ..SessionConfig::default()
        };
        let settings = json!({
            "model": config.model,
            "permission_mode": config.permission_mode,
            "cwd": config.cwd.as_ref().map(|p| p.to_string_lossy()),
        });
        match self.inner.registry.create(config).await {
            Ok(session) => {
                tracing::Span::current().record("session_id", session.id());
                let mut event =
                    AuditEvent::new(self.actor(principal), session.id(), AuditAction::Create);
                event.detail = Some(settings);
                self.audit(event);
                ApiResponse::json(
                    200,
                    &json!(CreateSessionResponse {
                        session_id: session.id().to_owned(),
                        protocol_version: PROTOCOL_VERSION.to_owned(),
                        forked_from: fork.map(|f| f.request),
                    }),
                )
            }
            Err(CreateError::AtCapacity(max)) => {
                ApiResponse::error(503, CreateError::AtCapacity(max), Some("session_limit"))
                    .with_header("retry-after", "1")
            }
            Err(CreateError::AgentsAtCapacity(max)) => {
                ApiResponse::error(503, CreateError::AgentsAtCapacity(max), Some("at_capacity"))
                    .with_header("retry-after", "1")
            }
            Err(err @ CreateError::ShuttingDown) => {
                ApiResponse::error(503, err, Some("shutting_down"))
            }
            Err(err @ CreateError::Exists(_)) => {
                ApiResponse::error(409, err, Some(crate::session_id::EXISTS_CODE))
            }
            Err(err @ CreateError::Persistence(_)) => {
                tracing::warn!(error = %err, "session create failed");
                ApiResponse::error(503, err, Some("persistence_unavailable"))
                    .with_header("retry-after", "1")
            }
            Err(CreateError::Agent(err)) => {
                tracing::warn!(error = %err, "session create failed");
                let status = match err {
                    AgentError::InvalidConfig(_) => 400,
                    AgentError::Unavailable(_) => 503,
                    _ => 502,
                };
                ApiResponse::error(status, &err, Some(err.code()))
            }
        }
    }

    /// The session for a stream or input request: held here, or taken over from another host;
    /// another principal's is answered like an unknown one (see [`crate::auth::ownership`]).
    async fn session(&self, id: &str, principal: &Principal) -> Result<Arc<Session>, ApiResponse> {
        match crate::auth::ownership::may_see(&self.inner.registry, principal, id).await {
            Ok(true) => {}
            Ok(false) => return Err(ApiResponse::error(404, "Session not found", None)),
            Err(err) => {
                return Err(
                    ApiResponse::error(503, err, Some("persistence_unavailable"))
                        .with_header("retry-after", "1"),
                )
            }
        }
        match self.inner.registry.get_or_resume(id).await {
            Ok(Some(session)) if principal.may_access(session.owner()) => Ok(session),
            Ok(Some(_)) => Err(ApiResponse::error(404, "Session not found", None)),
            Ok(None) => Err(ApiResponse::error(404, "Session not found", None)),
            Err(ResumeError::HeldElsewhere {
                owner,
                retry_after_secs,
            }) => {
                tracing::info!(session_id = id, owner = %owner, "session is owned by another host");
                Err(ApiResponse::error(
                    503,
                    ResumeError::HeldElsewhere {
                        owner,
                        retry_after_secs,
                    },
                    Some("session_owned_elsewhere"),
                )
                .with_header("retry-after", retry_after_secs.to_string()))
            }
            Err(err @ ResumeError::Persistence(_)) => {
                tracing::warn!(session_id = id, error = %err, "take-over failed");
                Err(
                    ApiResponse::error(503, err, Some("persistence_unavailable"))
                        .with_header("retry-after", "1"),
                )
            }
            Err(ResumeError::Refused(reason)) => {
                tracing::warn!(session_id = id, reason = %reason, "take-over refused by this host's policy");
                Err(ApiResponse::error(
                    403,
                    ResumeError::Refused(reason),
                    Some("take_over_refused"),
                ))
            }
            Err(ResumeError::Create(err @ CreateError::AgentsAtCapacity(_))) => {
                Err(ApiResponse::error(503, err, Some("at_capacity"))
                    .with_header("retry-after", "1"))
            }
            Err(ResumeError::Create(err)) => {
                tracing::warn!(session_id = id, error = %err, "take-over failed");
                Err(ApiResponse::error(502, err, Some("agent_start_failed")))
            }
        }
    }

    async fn stream<H>(&self, id: &str, headers: &H, principal: &Principal) -> ApiResponse
    where
        H: RequestHeaders + Sync + ?Sized,
    {
        let session = match self.session(id, principal).await {
            Ok(session) => session,
            Err(response) => return response,
        };
        let after = match parse_last_event_id(headers.get("last-event-id")) {
            Ok(after) => after,
            Err(()) => {
                return ApiResponse::error(
                    400,
                    "Last-Event-ID must be a non-negative integer",
                    None,
                )
            }
        };
        let permit = match self.inner.subscribers.acquire(id) {
            Ok(permit) => permit,
            Err(err) => {
                tracing::info!(session_id = id, error = %err, "subscriber refused");
                let (status, code) = err.status_and_code();
                return ApiResponse::error(status, err, Some(code)).with_header("retry-after", "1");
            }
        };
        let subscriber = match session.subscribe(after) {
            Ok(subscriber) => subscriber,
            Err(err) => {
                tracing::info!(session_id = id, error = %err, "resume refused");
                return ApiResponse::error(412, err, Some("evicted"));
            }
        };
        tracing::debug!(session_id = id, after_seq = ?after, "subscriber attached");
        ApiResponse {
            status: 200,
            headers: vec![
                ("content-type", Cow::Borrowed("text/event-stream")),
                ("cache-control", Cow::Borrowed("no-cache")),
                ("x-accel-buffering", Cow::Borrowed("no")),
            ],
            body: ResponseBody::Sse(sse_stream(subscriber, permit, self.inner.keepalive)),
        }
    }

    async fn input<H, B>(
        &self,
        id: &str,
        headers: &H,
        body: B,
        principal: &Principal,
    ) -> ApiResponse
    where
        H: RequestHeaders + Sync + ?Sized,
        B: RequestBody,
    {
        let session = match self.session(id, principal).await {
            Ok(session) => session,
            Err(response) => return response,
        };
        let body = match self.read_body(headers, body).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        let message = match InboundMessage::from_json(&body) {
            Ok(message) => message,
            Err(err) => return ApiResponse::error(400, err, None),
        };
        if let Err(err) = self.check_message(&message) {
            tracing::info!(session_id = id, error = %err, "inbound message refused by policy");
            return ApiResponse::error(400, &err, Some(err.code()));
        }
        if let Err(err) = principal_check(principal, &message) {
            tracing::info!(session_id = id, error = %err, "inbound message refused: permission mode");
            return ApiResponse::error(403, &err, Some(ModeForbidden::CODE));
        }
        if let Err(response) = self.check_attachment_references(id, &message).await {
            return response;
        }
        if session.has_ended() {
            // Kept readable after its agent ended; nothing can act on an input any more.
            return ApiResponse::error(
                409,
                "The session has ended (its agent exited); it takes no more input",
                Some("session_ended"),
            );
        }
        if message.is_mcp() {
            return self.mcp_input(id, &session, message, principal).await;
        }
        let message = match message {
            InboundMessage::Rewind(request) => {
                let (dry_run, uuid) = (request.dry_run, request.message_uuid.clone());
                let (response, done) = anchors::rewind(&session, request).await;
                if let (false, Some(done)) = (dry_run, done) {
                    let mut event = AuditEvent::new(self.actor(principal), id, AuditAction::Rewind);
                    event.detail = Some(json!({
                        "message_uuid": uuid,
                        "files": done.files.as_ref().map(|f| f.rewound),
                        "conversation": done.conversation.as_ref().map(|c| c.rewound),
                    }));
                    self.audit(event);
                }
                return response;
            }
            message => message,
        };
        let audit = AuditEvent::for_input(self.actor(principal), id, &message);
        match apply(&session, message).await {
            Ok(()) => {
                if let Some(event) = audit {
                    self.audit(event);
                }
                ApiResponse::no_content()
            }
            Err(SessionError::Backpressure(n)) => {
                ApiResponse::error(503, SessionError::Backpressure(n), Some("backpressure"))
                    .with_header("retry-after", "1")
            }
            Err(err @ SessionError::BackpressureBytes(_)) => {
                ApiResponse::error(503, err, Some("backpressure_bytes"))
                    .with_header("retry-after", "1")
            }
            Err(SessionError::Closed) => ApiResponse::error(404, "Session not found", None),
            Err(SessionError::Conflict(err)) => ApiResponse::error(409, err, Some("conflict")),
            Err(SessionError::Agent(err)) => {
                tracing::warn!(session_id = id, error = %err, "agent command failed");
                let status = match err {
                    AgentError::InvalidConfig(_) => 400,
                    AgentError::Unsupported(_) => 501,
                    AgentError::Timeout(_) => 504,
                    AgentError::Exited(_) | AgentError::Disconnected => 409,
                    _ => 502,
                };
                ApiResponse::error(status, &err, Some(err.code()))
            }
        }
    }
}

impl Api {
    /// The policy's verdict on an inbound message (modes, models, permission-rule
    /// destinations the client chose).
    fn check_message(&self, message: &InboundMessage) -> Result<(), crate::policy::PolicyError> {
        let policy = &self.inner.policy;
        match message {
            InboundMessage::SetPermissionMode { mode } => policy.check_mode(mode),
            InboundMessage::SetModel { model: Some(model) } => policy.check_model(model),
            InboundMessage::PermissionResponse(resp) => match &resp.updated_permissions {
                Some(updates) => policy.check_updates(updates),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

/// The principal's verdict on an inbound message: the permission modes it may choose.
fn principal_check(principal: &Principal, message: &InboundMessage) -> Result<(), ModeForbidden> {
    match message {
        InboundMessage::SetPermissionMode { mode } => principal.check_mode(Some(mode)),
        InboundMessage::PermissionResponse(resp) => match &resp.updated_permissions {
            Some(updates) => principal.check_updates(updates),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// The one answer for any cwd a client may not use: which of "missing", "not a directory" or
/// "outside the roots" it was is logged, never sent (it would be a filesystem oracle).
const INVALID_CWD: &str = "cwd is not a directory this server allows";

/// The take-over check: a stored session must fit this host's roots and policy.
fn take_over_check(roots: AllowedRoots, policy: ClientPolicy) -> crate::registry::TakeOverCheck {
    Arc::new(move |config: &SessionConfig| {
        if let Some(cwd) = &config.cwd {
            let cwd = cwd
                .to_str()
                .ok_or_else(|| format!("stored cwd {} is not UTF-8", cwd.display()))?;
            roots.resolve(cwd)?;
        }
        policy
            .check_session(config.model.as_deref(), config.permission_mode.as_deref())
            .map_err(|err| err.to_string())?;
        mcp::check_stored(&policy, config.mcp_servers.as_ref())
    })
}

async fn apply(session: &Arc<Session>, message: InboundMessage) -> Result<(), SessionError> {
    match message {
        InboundMessage::UserMessage { content } => session.submit_user_message(content),
        InboundMessage::Interrupt => session.interrupt().await,
        InboundMessage::PermissionResponse(resp) => {
            let id = resp.correlation_id.clone();
            session.resolve_permission(&id, resp.into())
        }
        InboundMessage::QuestionResponse {
            correlation_id,
            answers,
        } => session.resolve_question(&correlation_id, answers),
        InboundMessage::SetPermissionMode { mode } => session.set_permission_mode(&mode).await,
        InboundMessage::SetModel { model } => session.set_model(model.as_deref()).await,
        InboundMessage::StopTask { task_id } => session.stop_task(&task_id).await,
        InboundMessage::HookDecisionResponse {
            correlation_id,
            decision,
        } => session.resolve_hook(&correlation_id, decision),
        // Answered by `mcp::mcp_input` before this point.
        InboundMessage::McpToggle { .. }
        | InboundMessage::McpReconnect { .. }
        | InboundMessage::McpSetServers { .. } => Err(SessionError::Agent(
            AgentError::Unsupported("MCP messages outside the MCP handler"),
        )),
        // Answered with a body by `input` before `apply`.
        InboundMessage::Rewind(_) => Ok(()),
    }
}

/// `None` (absent or empty: from the start of the ring), `Some(seq)`, or `Err` (malformed).
/// Digits too large for u64 are a cursor no log has, so they map to `u64::MAX` (→ 412).
fn parse_last_event_id(value: Option<&[u8]>) -> Result<Option<u64>, ()> {
    let Some(value) = value else { return Ok(None) };
    let value = value.trim_ascii();
    if value.is_empty() {
        return Ok(None);
    }
    if !value.iter().all(u8::is_ascii_digit) {
        return Err(());
    }
    let digits = std::str::from_utf8(value).map_err(|_| ())?;
    Ok(Some(digits.parse::<u64>().unwrap_or(u64::MAX)))
}

struct SseState {
    subscriber: SessionSubscriber,
    /// Holds the subscriber's slot under the caps until the stream is dropped.
    _permit: SubscriberPermit,
    probe: Probe,
    keepalive: Duration,
    ended: bool,
}

fn sse_stream(
    subscriber: SessionSubscriber,
    permit: SubscriberPermit,
    keepalive: Duration,
) -> SseStream {
    let state = SseState {
        probe: subscriber.probe(),
        subscriber,
        _permit: permit,
        keepalive,
        ended: false,
    };
    Box::pin(futures_util::stream::unfold(
        state,
        |mut state| async move {
            if state.ended {
                return None;
            }
            let next = tokio::select! {
                next = tokio::time::timeout(state.keepalive, state.subscriber.next_batch(MAX_BATCH)) => next.ok(),
                // Probed by the reaper: a write is how some servers find a dead client.
                () = state.probe.probed() => None,
            };
            let chunk = match next {
                None => Bytes::from_static(KEEPALIVE_FRAME),
                Some(Ok(Some(batch))) => {
                    let (chunk, done) = frames(&batch);
                    state.ended = done;
                    chunk
                }
                Some(Ok(None)) => return None,
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "subscriber lagged behind the ring; ending its stream");
                    crate::metrics::lagged_subscriber_cut();
                    state.ended = true;
                    lagged_frame(&err)
                }
            };
            crate::metrics::sse_bytes(chunk.len());
            Some((chunk, state))
        },
    ))
}

/// `GET /openapi.json`: the document (`crate::openapi`), or 404 without the `openapi` feature.
fn openapi_response() -> ApiResponse {
    #[cfg(feature = "openapi")]
    {
        ApiResponse {
            status: 200,
            headers: vec![("content-type", Cow::Borrowed("application/json"))],
            body: ResponseBody::Full(crate::openapi::document_bytes()),
        }
    }
    #[cfg(not(feature = "openapi"))]
    {
        ApiResponse::error(404, "Not Found", None)
    }
}

/// Joins a batch into one chunk (one socket write); a single event is shared, not copied.
fn frames(batch: &[LoggedEvent]) -> (Bytes, bool) {
    let end = batch
        .iter()
        .position(|ev| ev.kind() == EventKind::Done)
        .map_or(batch.len(), |i| i + 1);
    let batch = &batch[..end];
    let done = end > 0 && batch[end - 1].kind() == EventKind::Done;
    if let [single] = batch {
        return (single.frame().clone(), done);
    }
    let len = batch.iter().map(|ev| ev.frame().len()).sum();
    let mut buf = BytesMut::with_capacity(len);
    for ev in batch {
        buf.extend_from_slice(ev.frame());
    }
    (buf.freeze(), done)
}

/// The frame that ends a lagging subscriber's stream: an `error` event without an `id`, so
/// the client's cursor stays on the last event it really received.
fn lagged_frame(err: &SubscribeError) -> Bytes {
    let code = match err {
        SubscribeError::Unavailable { .. } => "store_unavailable",
        _ => "evicted",
    };
    let data = json!(ErrorData::new(code, err.to_string()));
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::agent::{AgentClientFactory, AgentConnection, AgentContext};

    /// Never starts an agent: these tests stop before one is needed.
    struct NoAgent;

    #[async_trait::async_trait]
    impl AgentClientFactory for NoAgent {
        async fn create(&self, _ctx: AgentContext) -> Result<AgentConnection, AgentError> {
            Err(AgentError::Unavailable("no agent in this test".into()))
        }
    }

    fn api(edit: impl FnOnce(&mut AppConfig)) -> Api {
        let mut config = AppConfig::new(Arc::new(NoAgent)).with_auth(AuthConfig::disabled());
        edit(&mut config);
        Api::new(config).unwrap()
    }

    fn detail(response: &ApiResponse) -> serde_json::Value {
        serde_json::from_slice(response.body_bytes()).unwrap()
    }

    #[tokio::test]
    async fn cwd_refusals_are_uniform() {
        let root = std::env::temp_dir().join(format!("aw-cwd-{}", std::process::id()));
        std::fs::create_dir_all(root.join("inside")).unwrap();
        std::fs::write(root.join("file"), b"x").unwrap();
        let api = api(|c| c.allowed_roots = vec![root.join("inside")]);
        let mut bodies = Vec::new();
        for cwd in [
            root.join("inside/missing").display().to_string(),
            root.join("file").display().to_string(),
            root.display().to_string(),
            "/".to_owned(),
        ] {
            let body = Bytes::from(json!({ "cwd": cwd }).to_string());
            let response = api.handle("POST", "/sessions", &[], body).await;
            assert_eq!(response.status, 400, "{cwd}");
            bodies.push(detail(&response));
        }
        assert!(bodies.iter().all(|b| *b == bodies[0]), "{bodies:?}");
        assert_eq!(
            bodies[0],
            json!({"detail": INVALID_CWD, "code": "invalid_cwd"})
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[tokio::test]
    async fn policy_refuses_modes_at_create() {
        let api = api(|_| {});
        let body = Bytes::from(r#"{"permission_mode":"bypassPermissions"}"#);
        let response = api.handle("POST", "/sessions", &[], body).await;
        assert_eq!(response.status, 400);
        let body = detail(&response);
        assert_eq!(body["code"], "permission_mode_not_allowed");
        assert!(body["detail"]
            .as_str()
            .unwrap()
            .contains("default, acceptEdits, plan"));
        let api = self::api(|c| c.policy.models = Some(vec!["sonnet".into()]));
        let body = Bytes::from(r#"{"model":"opus"}"#);
        let response = api.handle("POST", "/sessions", &[], body).await;
        assert_eq!(detail(&response)["code"], "model_not_allowed");
    }

    #[tokio::test]
    async fn cors_off_by_default_and_exact_when_on() {
        let preflight = [
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ];
        let off = api(|_| {});
        let response = off
            .handle("OPTIONS", "/sessions", &preflight, Bytes::new())
            .await;
        assert_eq!(response.status, 405);
        assert_eq!(response.header("access-control-allow-origin"), None);

        let on = api(|c| c.cors_origins = vec!["https://app.example".into()]);
        let response = on
            .handle("OPTIONS", "/sessions", &preflight, Bytes::new())
            .await;
        assert_eq!(response.status, 204);
        assert_eq!(
            response.header("access-control-allow-origin"),
            Some("https://app.example")
        );
        let headers = response.header("access-control-allow-headers").unwrap();
        for name in ["authorization", "content-type", "last-event-id"] {
            assert!(headers.contains(name), "{headers}");
        }
        let response = on
            .handle(
                "GET",
                "/healthz",
                &[("origin", "https://app.example")],
                Bytes::new(),
            )
            .await;
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("access-control-allow-origin"),
            Some("https://app.example")
        );
        let other = [
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ];
        let response = on
            .handle("OPTIONS", "/sessions", &other, Bytes::new())
            .await;
        assert_eq!(response.status, 405);
        assert_eq!(response.header("access-control-allow-origin"), None);
    }

    /// A body that never arrives.
    struct Stalled;

    impl RequestBody for Stalled {
        async fn collect(self, _limit: usize) -> Result<Bytes, BodyError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn body_read_times_out() {
        let api = api(|c| c.limits.body_read_timeout = Duration::from_secs(2));
        let headers = [("content-length", "100")];
        let response = api.handle("POST", "/sessions", &headers, Stalled).await;
        assert_eq!(response.status, 408);
        assert_eq!(detail(&response)["code"], "body_timeout");
        assert_eq!(response.header("connection"), Some("close"));
    }

    #[test]
    fn routes() {
        assert!(matches!(route("/sessions"), Route::Sessions));
        assert!(matches!(route("/sessions/abc"), Route::Session("abc")));
        assert!(matches!(
            route("/sessions/abc/stream"),
            Route::Stream("abc")
        ));
        assert!(matches!(route("/sessions/abc/input"), Route::Input("abc")));
        assert!(matches!(route("/sessions/"), Route::NotFound));
        assert!(matches!(route("/sessions//input"), Route::NotFound));
        assert!(matches!(route("/sessions/a/b/c"), Route::NotFound));
        assert!(matches!(route("/sessionsX"), Route::NotFound));
        assert!(matches!(route("/healthz"), Route::Health));
        assert!(matches!(route("/openapi.json"), Route::OpenApi));
    }

    #[test]
    fn last_event_id_parsing() {
        assert_eq!(parse_last_event_id(None), Ok(None));
        assert_eq!(parse_last_event_id(Some(b"")), Ok(None));
        assert_eq!(parse_last_event_id(Some(b" 12 ")), Ok(Some(12)));
        assert_eq!(parse_last_event_id(Some(b"-1")), Err(()));
        assert_eq!(parse_last_event_id(Some(b"1.5")), Err(()));
        assert_eq!(parse_last_event_id(Some(b"abc")), Err(()));
        assert_eq!(
            parse_last_event_id(Some(b"99999999999999999999999")),
            Ok(Some(u64::MAX))
        );
    }
}
