//! Embedding agent-webkit in your own axum app: mount it under `/agent` next to your routes,
//! with the replay agent and auth disabled (development only).
//!
//! ```text
//! cargo run -p agent-webkit-examples --example embed_axum
//! curl -s -X POST localhost:3000/agent/sessions -d '{"model":"echo"}'
//! ```

use std::sync::Arc;

use agent_webkit_core::auth::AuthConfig;
use agent_webkit_core::config::AppConfig;
use agent_webkit_core::http::Api;
use agent_webkit_replay::ReplayAgentFactory;
use axum::routing::get;
use axum::Router;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config =
        AppConfig::new(Arc::new(ReplayAgentFactory::new())).with_auth(AuthConfig::disabled());
    let api = Api::new(config)?;
    let app = Router::new()
        .route(
            "/",
            get(|| async { "my app; agent sessions live under /agent" }),
        )
        .nest("/agent", agent_webkit_axum::router(api.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            // Close sessions first so open streams end with `done`.
            api.shutdown().await;
        })
        .await?;
    Ok(())
}
