//! The internal HTTP API (axum): conversations, entry points, health and metrics.
//! Transport only: every change goes through [`crate::update`].

use sqlx::PgPool;

mod auth;
mod conversation_list;
mod conversations;
mod entry_points;
mod error;
mod openapi;
mod outbound_email;
mod patch_body;
mod probes;
mod request;
mod server;
mod typed_bodies;

pub use auth::Project;
pub use error::ApiError;
pub use server::{health_router, router, serve_on, serve_router};

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub body_limit: usize,
    /// Set when intake sends email itself: outbound messages on email conversations are
    /// stored as pending and queued for the worker's SMTP sender.
    pub outbound_email: Option<std::sync::Arc<crate::smtp::OutboundQueue>>,
}
