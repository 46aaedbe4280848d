//! `intake gateway`: only the webhook gateway, safe to expose publicly.

use std::sync::Arc;

use clap::Args;

use super::routers::gateway_router;
use super::serving::{bind, shutdown_signal};
use crate::amqp::publish::LazyPublisher;
use crate::amqp::topology::Topology;
use crate::amqp::AmqpArgs;
use crate::config::{DatabaseArgs, GatewayArgs};
use crate::{http, store};

#[derive(Debug, Args)]
pub struct GatewayCommandArgs {
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub inbound_mail: crate::inbound_parse::InboundMailArgs,
}

pub(super) async fn run_gateway(db: &DatabaseArgs, args: GatewayCommandArgs) -> anyhow::Result<()> {
    let pool = store::connect_and_migrate(&db.database_url, db.db_max_connections).await?;
    let publisher = Arc::new(LazyPublisher::new(&args.amqp.amqp_url).declaring(Topology::from(&args.amqp)));
    let router =
        gateway_router(pool, publisher, &args.amqp, &args.gateway, &args.inbound_mail).merge(http::health_router());
    http::serve_router(bind(args.gateway.gateway_addr).await?, router, shutdown_signal()).await
}
