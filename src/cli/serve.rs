//! `intake serve`: the internal HTTP API with the webhook gateway mounted.

use std::sync::Arc;

use clap::Args;

use super::routers::{api_router, register_tokens};
use super::serving::{bind, shutdown_signal};
use crate::amqp::AmqpArgs;
use crate::config::{DatabaseArgs, GatewayArgs, HttpArgs};
use crate::smtp::SmtpArgs;
use crate::{http, store};

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub smtp: SmtpArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub inbound_mail: crate::inbound_parse::InboundMailArgs,
    #[command(flatten)]
    pub health: crate::health::HealthArgs,
    #[command(flatten)]
    pub ops: crate::ops::OpsArgs,
}

pub(super) async fn run_serve(db: &DatabaseArgs, args: ServeArgs) -> anyhow::Result<()> {
    let ops = crate::ops::OpsConfig::from_args(&args.ops)?;
    let pool = store::connect_and_migrate(&db.database_url, db.db_max_connections).await?;
    register_tokens(&pool, &args.http).await?;
    // PATCHes change previews too: their search entries are refreshed here.
    let stop = tokio_util::sync::CancellationToken::new();
    let search = tokio::spawn(store::search::refresh_until(pool.clone(), stop.clone()));
    // Health gauges on /metrics.
    let sampler = Arc::new(args.health.sampler(pool.clone(), &args.amqp));
    let gauges = crate::health::GaugeLoop::start(sampler, args.health.health_sample_every);
    let router = api_router(pool, &args.http, &args.amqp, &args.smtp, &args.gateway, &args.inbound_mail, ops);
    let served = http::serve_router(bind(args.http.http_addr).await?, router, shutdown_signal()).await;
    stop.cancel();
    let _ = search.await;
    gauges.stop().await;
    served
}
