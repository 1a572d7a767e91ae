//! In-process tests of the actix glue: mounting under a prefix, bodies (read lazily, limited),
//! and graceful shutdown through `serve`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use agent_webkit_actix::{configure, serve};
use agent_webkit_core::auth::AuthConfig;
use agent_webkit_core::config::AppConfig;
use agent_webkit_core::http::Api;
use agent_webkit_replay::ReplayAgentFactory;
use agent_webkit_testkit::Client;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

fn api() -> Api {
    let mut config =
        AppConfig::new(Arc::new(ReplayAgentFactory::new())).with_auth(AuthConfig::with_token("t"));
    config.max_body_bytes = 1024;
    Api::new(config).unwrap()
}

fn listener() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

#[test]
fn mounted_under_a_prefix_next_to_other_routes() {
    actix_web::rt::System::new().block_on(async {
        let api = api();
        let (listener, url) = listener();
        let routes = api.clone();
        let server = HttpServer::new(move || {
            App::new()
                .route("/hello", web::get().to(|| async { "hi" }))
                .service(web::scope("/agent").configure(configure(routes.clone())))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);

        let plain = reqwest::get(format!("{url}/hello")).await.unwrap();
        assert_eq!(plain.text().await.unwrap(), "hi");
        let client = Client::new(&format!("{url}/agent"), Some("t"));
        let id = client.create(&json!({"model": "echo"})).await.unwrap();
        let mut stream = client.stream(&id, None).await.unwrap();
        let r = client
            .input(&id, &json!({"type": "user_message", "content": "ping"}))
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let frames = stream.until("result", T).await.unwrap();
        let complete = frames
            .iter()
            .find(|f| f.event == "message_complete")
            .unwrap();
        assert_eq!(
            complete.json()["message"]["content"],
            json!([{"type": "text", "text": "ping"}])
        );
        // Routing answers come from core: 404 and 405 under the prefix.
        let r = client
            .request(reqwest::Method::GET, "/nope")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let r = client
            .request(reqwest::Method::PUT, "/sessions")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
        // Bodies are limited (chunked too) and bad JSON is the core's 400.
        let big = "x".repeat(4096);
        let r = client
            .request(reqwest::Method::POST, &format!("/sessions/{id}/input"))
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                vec![Ok::<_, std::io::Error>(big.clone())],
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        let r = client.input_raw(&id, "{").await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            (status.as_u16(), body),
            (400, json!({"detail": "Invalid JSON"}))
        );
        // A body the core never read: the connection is closed (as with axum).
        let r = client
            .request(reqwest::Method::POST, "/sessions/unknown/input")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["connection"], "close");
        api.shutdown().await;
        handle.stop(true).await;
    });
}

#[test]
fn serve_shuts_down_gracefully_ending_streams_with_done() {
    actix_web::rt::System::new().block_on(async {
        let api = api();
        let (listener, url) = listener();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = actix_web::rt::spawn(serve(listener, api, async {
            let _ = stopped.await;
        }));
        let client = Client::new(&url, Some("t"));
        let id = client.create(&json!({"model": "echo"})).await.unwrap();
        let mut stream = client.stream(&id, None).await.unwrap();
        stream.until("session_ready", T).await.unwrap();
        stop.send(()).unwrap();
        let rest = stream.collect_to_end(T).await.unwrap();
        assert_eq!(rest.last().unwrap().event, "done");
        tokio::time::timeout(T, server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    });
}
