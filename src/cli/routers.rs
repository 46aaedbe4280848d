//! The HTTP routers the serving subcommands mount (internal API, webhook gateway, inbound-mail
//! webhooks, ops console), and the API tokens they accept.

use std::sync::Arc;

use intake_adapters::AdapterRegistry;

use crate::amqp::publish::LazyPublisher;
use crate::amqp::topology::Topology;
use crate::amqp::AmqpArgs;
use crate::config::{GatewayArgs, HttpArgs};
use crate::smtp::{OutboundQueue, SmtpArgs};
use crate::{http, store};

/// The internal API with the webhook gateway mounted (both publish through one connection), and
/// the ops console when it is configured.
pub(super) fn api_router(
    pool: sqlx::PgPool,
    http: &HttpArgs,
    amqp: &AmqpArgs,
    smtp: &SmtpArgs,
    gateway: &GatewayArgs,
    inbound_mail: &crate::inbound_parse::InboundMailArgs,
    ops: Option<crate::ops::OpsConfig>,
) -> axum::Router {
    let publisher = Arc::new(LazyPublisher::new(&amqp.amqp_url).declaring(Topology::from(amqp)));
    let outbound_email = smtp
        .smtp_url
        .as_ref()
        .map(|_| Arc::new(OutboundQueue { exchange: amqp.exchange.clone(), publisher: publisher.clone() }));
    let state = http::AppState { pool: pool.clone(), body_limit: http.http_body_limit, outbound_email };
    let console = ops.map(|config| {
        tracing::info!(operators = config.operators.len(), "ops console at /ops");
        crate::ops::router(crate::ops::OpsState::new(pool.clone(), amqp, config))
    });
    let router = http::router(state).merge(gateway_router(pool, publisher, amqp, gateway, inbound_mail));
    match console {
        Some(console) => router.merge(console),
        None => router,
    }
}

pub(super) fn gateway_router(
    pool: sqlx::PgPool,
    publisher: Arc<LazyPublisher>,
    amqp: &AmqpArgs,
    args: &GatewayArgs,
    inbound_mail: &crate::inbound_parse::InboundMailArgs,
) -> axum::Router {
    // Inbound-parse webhooks of the mail providers, beside the gateway's own routes.
    let inbound = crate::inbound_parse::router(crate::inbound_parse::InboundMailState {
        pool: pool.clone(),
        publisher: publisher.clone(),
        exchange: amqp.exchange.clone(),
        credentials: inbound_mail.clone(),
        public_url: args.public_url.clone().filter(|u| !u.trim().is_empty()),
        tolerance_secs: args.signature_tolerance.as_secs() as i64,
    });
    crate::gateway::router(crate::gateway::GatewayState {
        pool,
        publisher,
        exchange: amqp.exchange.clone(),
        registry: AdapterRegistry::with_defaults(),
        public_url: args.public_url.clone().filter(|u| !u.trim().is_empty()),
        tolerance_secs: args.signature_tolerance.as_secs() as i64,
        body_limit: args.gateway_body_limit,
    })
    .merge(inbound)
}

pub(super) async fn register_tokens(pool: &sqlx::PgPool, args: &HttpArgs) -> anyhow::Result<()> {
    for (project, token) in args.token_pairs()? {
        store::ensure_project_token(pool, &project, &token, "INTAKE_API_TOKENS").await?;
    }
    Ok(())
}
