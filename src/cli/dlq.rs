//! `intake dlq`: inspecting, replaying and purging dead-lettered messages.

use std::time::Duration;

use clap::{Args, Subcommand};

use crate::amqp::dlq::{self, Selection};
use crate::amqp::publish::ConfirmedPublisher;
use crate::amqp::topology::Topology;
use crate::amqp::AmqpArgs;

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters: id, reason, adapter, attempts, age.
    List {
        #[command(flatten)]
        amqp: AmqpArgs,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Read at most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Show one dead letter with its headers and body.
    Show {
        #[command(flatten)]
        amqp: AmqpArgs,
        /// Id from `dlq list`.
        id: String,
    },
    /// Publish dead letters back to their original routing key. Already applied messages are
    /// recognised by their idempotency key and change nothing.
    Replay {
        #[command(flatten)]
        amqp: AmqpArgs,
        #[command(flatten)]
        selection: SelectionArgs,
        /// Messages per second (`N` or `N/s`; `0` for as fast as the broker confirms): a replay
        /// of a large backlog then leaves the workers room for live traffic.
        #[arg(long, default_value_t = dlq::DEFAULT_REPLAY_RATE)]
        rate: dlq::Rate,
    },
    /// Delete dead letters.
    Purge {
        #[command(flatten)]
        amqp: AmqpArgs,
        #[command(flatten)]
        selection: SelectionArgs,
    },
}

#[derive(Debug, Args)]
pub struct SelectionArgs {
    /// Every dead letter.
    #[arg(long, conflicts_with_all = ["ids", "reason", "adapter", "channel_type", "external_channel_id", "older_than", "newer_than", "text"])]
    pub all: bool,
    /// Only those with this reason code (e.g. `unknown_entry_point`).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only those of this adapter key (e.g. `webhook`, `slack`).
    #[arg(long)]
    pub adapter: Option<String>,
    /// Only those of this channel type (`email`, `chat`, `webhook`).
    #[arg(long)]
    pub channel_type: Option<String>,
    /// Only those published with this `x-intake-external-channel-id`.
    #[arg(long)]
    pub external_channel_id: Option<String>,
    /// Only those dead-lettered at least this long ago (e.g. `2h`, `7d`).
    #[arg(long, value_parser = crate::amqp::parse_duration)]
    pub older_than: Option<Duration>,
    /// Only those dead-lettered less than this long ago.
    #[arg(long, value_parser = crate::amqp::parse_duration)]
    pub newer_than: Option<Duration>,
    /// Only those whose body or error contains this text (case-insensitive).
    #[arg(long)]
    pub text: Option<String>,
    /// Ids from `dlq list`.
    #[arg(conflicts_with_all = ["reason", "adapter", "channel_type", "external_channel_id", "older_than", "newer_than", "text"])]
    pub ids: Vec<String>,
}

impl SelectionArgs {
    fn selection(&self) -> anyhow::Result<Selection> {
        let filter = dlq::Filter {
            reason: self.reason.clone(),
            adapter: self.adapter.clone(),
            channel_type: self.channel_type.clone(),
            external_channel_id: self.external_channel_id.clone(),
            older_than: self.older_than,
            newer_than: self.newer_than,
            text: self.text.clone(),
        };
        if self.all {
            Ok(Selection::All)
        } else if !self.ids.is_empty() {
            Ok(Selection::Ids(self.ids.clone()))
        } else if !filter.is_empty() {
            Ok(Selection::Matching(filter))
        } else {
            anyhow::bail!("say which dead letters: ids, --all, or filters (--reason, --adapter, --text, …)")
        }
    }
}

pub(super) async fn run_dlq(command: DlqCommand) -> anyhow::Result<()> {
    let amqp = match &command {
        DlqCommand::List { amqp, .. }
        | DlqCommand::Show { amqp, .. }
        | DlqCommand::Replay { amqp, .. }
        | DlqCommand::Purge { amqp, .. } => amqp,
    };
    let topology = Topology::from(amqp);
    let connection = crate::amqp::connect(&amqp.amqp_url, "intake-dlq").await?;
    let channel = connection.create_channel().await?;
    let result = dlq_command(&command, &topology, &connection, &channel).await;
    // The channel first (what was read and not settled goes back to the queue), then the
    // connection: see `amqp::close_channel`.
    crate::amqp::close_channel(&channel).await;
    crate::amqp::close_connection(&connection).await;
    result
}

// The arms pass `&channel` / `&connection` as they did when these were locals (a smaller diff
// beside the replay filters being added to the same arms); remove the allow once merged.
#[allow(clippy::needless_borrow)]
async fn dlq_command(
    command: &DlqCommand,
    topology: &Topology,
    connection: &lapin::Connection,
    channel: &lapin::Channel,
) -> anyhow::Result<()> {
    topology.declare(channel).await?;
    let queue = topology.dead_queue.as_str();
    match command {
        DlqCommand::List { json, limit, .. } => {
            let letters = dlq::list(&channel, queue, *limit).await?;
            let now = chrono::Utc::now();
            if *json {
                for d in &letters {
                    println!("{}", serde_json::to_string(d)?);
                }
            } else {
                println!(
                    "{:<14} {:<24} {:<12} {:>8} {:>6}  {:<36}  ERROR",
                    "ID", "REASON", "ADAPTER", "ATTEMPTS", "AGE", "MESSAGE_ID"
                );
                for d in &letters {
                    let error: String = d.error.chars().take(70).collect();
                    println!(
                        "{:<14} {:<24} {:<12} {:>8} {:>6}  {:<36}  {}",
                        d.id,
                        d.reason,
                        d.adapter,
                        d.attempts,
                        d.age(now),
                        d.message_id.as_deref().unwrap_or("-"),
                        error
                    );
                }
                eprintln!("{} dead letter(s) in `{queue}`", letters.len());
            }
        }
        DlqCommand::Show { id, .. } => {
            let letters = dlq::list(&channel, queue, usize::MAX).await?;
            let d = letters
                .iter()
                .find(|d| d.id == *id)
                .ok_or_else(|| anyhow::anyhow!("no dead letter `{id}` in `{queue}`"))?;
            println!("{}", serde_json::to_string_pretty(d)?);
            // Everything the message carries: e.g. `x-intake-external-channel-id`, the entry
            // point to register for an `unknown_entry_point`.
            let properties = d.properties();
            println!("--- properties ---");
            for (name, value) in crate::amqp::properties::property_lines(properties) {
                println!("{name}: {value}");
            }
            println!("--- headers ---");
            for (name, value) in crate::amqp::properties::header_lines(properties.headers().as_ref()) {
                println!("{name}: {value}");
            }
            println!("--- body ({} bytes) ---", d.size);
            println!("{}", String::from_utf8_lossy(&d.body));
        }
        DlqCommand::Replay { selection, .. } | DlqCommand::Purge { selection, .. } => {
            let rate = match &command {
                DlqCommand::Replay { rate, .. } => Some(*rate),
                _ => None,
            };
            let replay = rate.is_some();
            let selection = selection.selection()?;
            if !replay && matches!(selection, Selection::All) {
                let n = dlq::purge_all(&channel, queue).await?;
                println!("purged {n} dead letter(s)");
            } else {
                let total = dlq::depth(&channel, queue).await?;
                let bar = indicatif::ProgressBar::new(u64::from(total));
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")
                        .expect("static template")
                        .progress_chars("=> "),
                );
                bar.set_message(if replay { "replaying" } else { "purging" });
                let publisher = if replay { Some(ConfirmedPublisher::open(&connection).await?) } else { None };
                let mut failed = 0;
                let n = dlq::settle(&channel, publisher.as_ref(), queue, &selection, total as usize, rate, |step| {
                    if let dlq::Step::Failed(d, e) = step {
                        failed += 1;
                        bar.println(format!("{}: not replayed: {e}", d.id));
                    }
                    bar.inc(1)
                })
                .await?;
                if let Some(publisher) = &publisher {
                    crate::amqp::close_channel(publisher.channel()).await;
                }
                bar.finish_and_clear();
                println!("{} {n} dead letter(s)", if replay { "replayed" } else { "purged" });
                anyhow::ensure!(failed == 0, "{failed} dead letter(s) could not be replayed and stay in `{queue}`");
            }
        }
    }
    Ok(())
}
