//! `--metrics-listen ADDR`: a second listener that serves only `GET /metrics`, without auth
//! (for a Prometheus that should not hold the API token; bind it to an address only the
//! monitoring network reaches). Plain HTTP/1.1 on hyper, on whatever runtime runs the server.

use std::convert::Infallible;

use agent_webkit_core::http::Api;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Serves `/metrics` of `api` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, api: Api) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "metrics listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let api = api.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let api = api.clone();
                    async move { Ok::<_, Infallible>(answer(&api, &request).await) }
                });
            let connection = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(std::time::Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "metrics connection ended");
            }
        });
    }
}

async fn answer<B>(api: &Api, request: &Request<B>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method().as_str(), request.uri().path()) {
        ("GET", "/metrics") => (
            StatusCode::OK,
            agent_webkit_core::metrics::CONTENT_TYPE,
            Bytes::from(api.metrics_text().await),
        ),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            Bytes::from_static(b"Method Not Allowed\n"),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"Not Found (this listener serves /metrics only)\n"),
        ),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
