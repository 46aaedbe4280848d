//! The API's routes table and serving routers on a listener.

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::conversations::{create_conversation, get_conversation, patch_conversation};
use super::entry_points::{create_entry_point, list_entry_points, patch_entry_point};
use super::error::ApiError;
use super::outbound_email::resend_message;
use super::probes::{metrics, readyz};
use super::{conversation_list, openapi, AppState};

pub fn router(state: AppState) -> Router {
    let body_limit = state.body_limit;
    crate::metrics::handle(); // install the recorder before anything counts
    Router::new()
        .route("/internal/conversations", post(create_conversation).get(conversation_list::list_conversations))
        .route("/internal/conversations/{conversation_id}", get(get_conversation).patch(patch_conversation))
        .route("/internal/conversations/{conversation_id}/messages/{message_id}/resend", post(resend_message))
        .route("/internal/entry-points", post(create_entry_point).get(list_entry_points))
        .route("/internal/entry-points/{entry_point_id}", axum::routing::patch(patch_entry_point))
        .route("/internal/openapi.json", get(|| async { Json(openapi::document()) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Liveness, readiness-free health and metrics, for processes that serve no API (the gateway).
pub fn health_router() -> Router {
    crate::metrics::handle();
    Router::new().route("/healthz", get(|| async { "ok" })).route("/metrics", get(metrics))
}

/// Serve on an already bound listener (tests bind port 0).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_router(listener, router(state), shutdown).await
}

/// Serve any router (the API, the gateway, or both merged) until `shutdown` resolves.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "HTTP listening");
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
