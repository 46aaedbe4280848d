//! `intake publish`: files published as messages, with publisher confirms.

use std::io::Read;
use std::path::PathBuf;

use clap::Args;
use intake_adapters::ChannelType;

use super::value_parsers::parse_channel_type;
use crate::amqp::publish::{new_message_properties, LazyPublisher};
use crate::amqp::topology::Topology;
use crate::amqp::{envelope, AmqpArgs};

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub amqp: AmqpArgs,

    /// Adapter key (`email`, `slack`, `telegram`, `whatsapp`, `twilio-sms`, `webhook`, …).
    #[arg(long)]
    pub adapter: String,

    /// Channel type; guessed from well-known adapter keys.
    #[arg(long, value_parser = parse_channel_type)]
    pub channel_type: Option<ChannelType>,

    /// The entry point's id in the outside system (mailbox, Slack channel, phone number).
    #[arg(long)]
    pub external_channel_id: Option<String>,

    /// Project (tenant) id, when the external id is an entry point of several projects.
    #[arg(long)]
    pub project: Option<String>,

    /// Content type; defaults to one that fits the channel.
    #[arg(long)]
    pub content_type: Option<String>,

    /// Files to publish, one message each; `-` reads standard input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub(super) async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let channel_type = args
        .channel_type
        .or_else(|| envelope::default_channel_type(&args.adapter))
        .ok_or_else(|| anyhow::anyhow!("`{}` is not a well-known adapter key: pass --channel-type", args.adapter))?;
    let routing_key = format!("{}.{}", channel_type, args.adapter);
    let content_type =
        args.content_type.clone().unwrap_or_else(|| envelope::default_content_type(channel_type, &args.adapter).into());
    // Reconnects (to another node of a cluster) and publishes again what was not confirmed.
    let publisher = LazyPublisher::new(&args.amqp.amqp_url).declaring(Topology::from(&args.amqp));
    for file in &args.files {
        let body = if file.as_os_str() == "-" {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            buf
        } else {
            std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?
        };
        let message_id = uuid::Uuid::new_v4().to_string();
        let mut headers = vec![(envelope::ADAPTER, args.adapter.clone())];
        if let Some(id) = &args.external_channel_id {
            headers.push((envelope::EXTERNAL_CHANNEL_ID, id.clone()));
        }
        if let Some(p) = &args.project {
            headers.push((envelope::PROJECT, p.clone()));
        }
        let properties = new_message_properties(&message_id, &content_type, headers);
        publisher.publish(&args.amqp.exchange, &routing_key, &body, properties).await?;
        println!("{message_id}\t{routing_key}\t{}", file.display());
    }
    publisher.close().await;
    Ok(())
}
