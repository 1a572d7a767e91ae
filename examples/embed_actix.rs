//! Embedding agent-webkit in your own actix-web app: mount it under `/agent` next to your
//! routes, with the replay agent and auth disabled (development only).
//!
//! ```text
//! cargo run -p agent-webkit-examples --example embed_actix
//! curl -s -X POST localhost:3001/agent/sessions -d '{"model":"echo"}'
//! ```

use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use agent_webkit_core::auth::AuthConfig;
use agent_webkit_core::config::AppConfig;
use agent_webkit_core::http::Api;
use agent_webkit_replay::ReplayAgentFactory;

fn main() -> std::io::Result<()> {
    actix_web::rt::System::new().block_on(async {
        let config =
            AppConfig::new(Arc::new(ReplayAgentFactory::new())).with_auth(AuthConfig::disabled());
        let api = Api::new(config).map_err(std::io::Error::other)?;
        let routes = api.clone();
        let server = HttpServer::new(move || {
            App::new()
                .route(
                    "/",
                    web::get().to(|| async { "my app; agent sessions live under /agent" }),
                )
                .service(
                    web::scope("/agent").configure(agent_webkit_actix::configure(routes.clone())),
                )
        })
        .disable_signals()
        .bind("127.0.0.1:3001")?
        .run();
        println!("listening on http://127.0.0.1:3001");
        let handle = server.handle();
        actix_web::rt::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            // Close sessions first so open streams end with `done`.
            api.shutdown().await;
            handle.stop(true).await;
        });
        server.await
    })
}
