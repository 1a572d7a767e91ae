//! The agent-webkit server on plain hyper 1.x, no web framework: the adapter contract of
//! `agent_webkit_core::http` in one file (`docs/custom-adapter.md` walks through it). It takes
//! the server's flags (`agent-webkit-server --help`); `--framework` may only say `hyper`.
//!
//! ```text
//! cargo run -p agent-webkit-examples --bin hyper_server -- --agent replay --no-auth
//! curl -s -X POST localhost:8000/sessions -d '{"model":"echo"}'
//! ```

use std::convert::Infallible;
use std::ffi::OsString;
use std::future::Future;
use std::pin::pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_webkit_core::http::{Api, BodyError, RequestBody, RequestHeaders, ResponseBody};
use agent_webkit_server::{announce, auth_mode, bind_listener, build_config, with_storage, Cli};
use bytes::Bytes;
use clap::Parser;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, LengthLimitError, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Contract steps 2–5: every request goes to `Api::handle`, whose answer is written unchanged.
async fn handle(api: Api, request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    // The path with its query; this server mounts the API at the root.
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let response = api
        .handle(
            parts.method.as_str(),
            path,
            &Headers(&parts.headers),
            Lazy(body),
        )
        .await;
    let body = match response.body {
        ResponseBody::Empty => Empty::new().boxed_unsync(),
        ResponseBody::Full(bytes) => Full::new(bytes).boxed_unsync(),
        // Each chunk is written as soon as it comes; hyper drops the stream when the client
        // goes away, which unregisters the subscriber.
        ResponseBody::Sse(stream) => {
            StreamBody::new(stream.map(|chunk| Ok(Frame::data(chunk)))).boxed_unsync()
        }
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

/// Step 3: headers by lower-case name (`HeaderMap` lookups ignore case; first value wins).
struct Headers<'a>(&'a HeaderMap);

impl RequestHeaders for Headers<'_> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(HeaderValue::as_bytes)
    }
}

/// Step 3: the body, read only if `Api::handle` asks, and never past its limit.
struct Lazy(Incoming);

impl RequestBody for Lazy {
    async fn collect(self, limit: usize) -> Result<Bytes, BodyError> {
        match Limited::new(self.0, limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(err) if err.is::<LengthLimitError>() => Err(BodyError::TooLarge),
            Err(err) => Err(BodyError::Read(err.to_string())),
        }
    }
}

/// Serves `api` until `signal`, with the connection limits of `Api::limits` (step 7), then
/// shuts down (step 6).
async fn serve(listener: TcpListener, api: Api, signal: impl Future<Output = ()>) {
    let limits = api.limits().clone();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    // At most `max_connections` open: the next one waits in the listen backlog for a permit.
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Dropping the sender asks every connection to finish gracefully.
    let (stop, stopped) = watch::channel(());
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
        let tcp = tokio::select! {
            () = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (api, builder, stopped) = (api.clone(), Arc::clone(&builder), stopped.clone());
        let timeout = limits.header_read_timeout;
        connections.spawn(connection(tcp, api, builder, stopped, timeout, permit));
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    // Step 6: close every session first, so every SSE stream ends with `done`...
    api.shutdown().await;
    drop(stop);
    // ...then give connections `shutdown_drain` to finish, and drop the rest.
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_drain, drain)
        .await
        .is_err()
    {
        connections.shutdown().await;
    }
}

/// One connection, until it ends, `stopped` fires (graceful) or it sends no request in time.
async fn connection(
    tcp: TcpStream,
    api: Api,
    builder: Arc<Builder<TokioExecutor>>,
    mut stopped: watch::Receiver<()>,
    header_read_timeout: Duration,
    _slot: OwnedSemaphorePermit,
) {
    // SSE writes many small frames: without TCP_NODELAY, Nagle's algorithm holds one back
    // until the previous one is acknowledged (tens of milliseconds with delayed ACKs).
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!(error = %err, "cannot set TCP_NODELAY");
    }
    // hyper's header read timeout starts once it has seen HTTP/1; a client that sends nothing
    // (or half an HTTP/2 preface) must be closed too: its first request is due in that time.
    let first_request = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&first_request);
    let service = hyper::service::service_fn(move |request| {
        seen.store(true, Ordering::Release);
        let api = api.clone();
        async move { Ok::<_, Infallible>(handle(api, request).await) }
    });
    let mut conn = pin!(builder.serve_connection(TokioIo::new(tcp), service));
    let mut deadline = pin!(tokio::time::sleep(header_read_timeout));
    let (mut stopping, mut waiting) = (false, true);
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = stopped.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = &mut deadline, if waiting => {
                waiting = false;
                if !first_request.load(Ordering::Acquire) {
                    break;
                }
            }
        }
    }
}

/// The command line without `--framework hyper` (the conformance suite passes `--framework`):
/// this binary is its own framework.
fn flags() -> Result<Vec<OsString>, String> {
    let mut flags = Vec::new();
    let mut args = std::env::args_os();
    while let Some(arg) = args.next() {
        let framework = match arg.to_str() {
            Some("--framework") => args.next(),
            Some(other) => other.strip_prefix("--framework=").map(OsString::from),
            None => None,
        };
        match framework {
            Some(name) if name == "hyper" => {}
            Some(name) => return Err(format!("--framework {name:?}: this server is hyper")),
            None => flags.push(arg),
        }
    }
    Ok(flags)
}

/// What `agent-webkit-server` does before serving, then [`serve`].
async fn run(cli: Cli) -> Result<(), String> {
    // Keep the data directory (its lock) until the server stops.
    let (config, _data_dir) = with_storage(&cli, build_config(&cli)?).await?;
    let auth = auth_mode(&config);
    let api = Api::new(config).map_err(|e| e.to_string())?;
    let addr = format!("{}:{}", cli.host, cli.port);
    let listener = bind_listener(&addr)
        .await
        .map_err(|e| format!("cannot bind {addr}: {e}"))?;
    announce(
        listener.local_addr().map_err(|e| e.to_string())?,
        &cli,
        auth,
    );
    serve(listener, api, agent_webkit_server::shutdown_signal()).await;
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let outcome = flags().map(Cli::parse_from).and_then(|cli| {
        tokio::runtime::Runtime::new()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?
            .block_on(run(cli))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
