//! `intake smtpd`: receiving mail over SMTP or LMTP from an MTA.

use std::sync::Arc;

use clap::Args;

use super::serving::{bind, shutdown_signal};
use crate::amqp::publish::LazyPublisher;
use crate::amqp::topology::Topology;
use crate::amqp::AmqpArgs;
use crate::config::DatabaseArgs;
use crate::store;

#[derive(Debug, Args)]
pub struct SmtpdCommandArgs {
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub smtpd: crate::smtpd::SmtpdArgs,
}

pub(super) async fn run_smtpd(db: &DatabaseArgs, args: SmtpdCommandArgs) -> anyhow::Result<()> {
    use crate::smtpd;
    let tls = match (&args.smtpd.tls_cert, &args.smtpd.tls_key) {
        (Some(cert), Some(key)) => Some(smtpd::tls::acceptor(cert, key)?),
        _ => None,
    };
    smtpd::check_bind(args.smtpd.addr, tls.is_some(), args.smtpd.allow_plaintext)?;
    let pool = store::connect_and_migrate(&db.database_url, db.db_max_connections).await?;
    let publisher = Arc::new(LazyPublisher::new(&args.amqp.amqp_url).declaring(Topology::from(&args.amqp)));
    let state = Arc::new(smtpd::SmtpdState {
        pool,
        publisher,
        exchange: args.amqp.exchange.clone(),
        settings: smtpd::SmtpdSettings::from(&args.smtpd),
        tls,
    });
    let listener = bind(args.smtpd.addr).await?;
    let protocol = if args.smtpd.lmtp { "LMTP" } else { "SMTP" };
    tracing::info!(addr = %args.smtpd.addr, protocol, starttls = state.tls.is_some(), "receiving mail");
    smtpd::serve(listener, state, shutdown_signal()).await
}
