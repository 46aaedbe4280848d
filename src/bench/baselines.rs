//! The in-process consumers of the webhook queue: the broker-only baselines (ack only, with
//! `multiple` as intake acks or each delivery on its own) and the naive worker (one transaction
//! and one ack per message). All use intake's default prefetch.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use intake_adapters::{AdapterRegistry, ChannelType, Delivery as AdapterDelivery, EntryPointInfo, Headers};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Channel;

use super::cpu::{Consumer, CpuSnapshot};
use super::{Bench, RunResult, DEFAULT_BATCH, DEFAULT_PREFETCH};
use crate::store;
use crate::update::{self, MessageExtras, Target, UpdateRequest};

/// How a broker-only consumer acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ack {
    /// `basic.ack` with `multiple` once per DEFAULT_BATCH deliveries (and once for the tail),
    /// as intake settles a batch: the fast baseline.
    Multiple,
    /// One `basic.ack` per delivery.
    Each,
}

impl Bench {
    /// A consumer of the bench queue on a channel of its own, with the worker's default prefetch.
    pub(super) async fn consume_backlog(&self) -> anyhow::Result<(Channel, lapin::Consumer)> {
        let channel = self.connection.create_channel().await?;
        channel.basic_qos(DEFAULT_PREFETCH, BasicQosOptions::default()).await?;
        let consumer = channel
            .basic_consume(
                self.topology.queue(ChannelType::Webhook).as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((channel, consumer))
    }

    /// The broker's own limit: consume the backlog and only ack, `ack` as given.
    pub(super) async fn run_broker_only(&mut self, n: usize, ack: Ack) -> anyhow::Result<RunResult> {
        let (key, name) = match ack {
            Ack::Multiple => ("fastBaseline", "broker-only (ack multiple)"),
            Ack::Each => ("ackEachBaseline", "broker-only (ack each)"),
        };
        self.say(format!("[{name}] publishing {n}…"));
        let (_, messages) = self.webhook_backlog(n, self.args.conversations);
        let payload_bytes = messages.iter().map(|m| m.body.len()).sum::<usize>() / n.max(1);
        let publish_secs = self.publish_backlog(messages).await?;
        self.say(format!("[{name}] consuming {n} with an ack-only consumer…"));
        let before = CpuSnapshot::take(&self.subject.db_name, &[]);
        let (channel, mut consumer) = self.consume_backlog().await?;
        let mut first = None;
        let mut seen = 0;
        while seen < n {
            let delivery = next_delivery(&mut consumer, name).await?;
            first.get_or_insert_with(Instant::now);
            seen += 1;
            match ack {
                Ack::Each => {
                    anyhow::ensure!(delivery.ack(BasicAckOptions::default()).await?, "[{name}] ack refused");
                }
                // As the worker settles a batch: one ack with `multiple` for every earlier tag
                // on the channel; the other deliveries' ackers are dropped unused.
                Ack::Multiple if seen % DEFAULT_BATCH == 0 || seen == n => {
                    channel.basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true }).await?;
                }
                Ack::Multiple => {}
            }
        }
        let consume_secs = first.expect("n >= 1").elapsed().as_secs_f64();
        let cpu = before.usage_until(&CpuSnapshot::take(&self.subject.db_name, &[]), Consumer::InProcess);
        channel.close(200, "done".into()).await?;
        // Closing requeues whatever was not acked: the queue must be empty.
        let left = self.ready().await?;
        anyhow::ensure!(left == 0, "[{name}] {left} message(s) back in the queue: not all were acked");
        let r = RunResult {
            key: key.into(),
            name: name.into(),
            messages: n,
            payload_bytes,
            publish_secs,
            consume_secs,
            cpu,
            workers: 1,
            batch_size: match ack {
                Ack::Multiple => Some(DEFAULT_BATCH),
                Ack::Each => Some(1),
            },
            applied: None,
        };
        self.say(format!("[{name}] {:.0} msg/s", r.rate()));
        Ok(r)
    }

    pub(super) async fn run_naive(&mut self, n: usize) -> anyhow::Result<RunResult> {
        self.say(format!("[naive] publishing {n}…"));
        let (_, messages) = self.webhook_backlog(n, self.args.conversations);
        let payload_bytes = messages.iter().map(|m| m.body.len()).sum::<usize>() / n.max(1);
        let publish_secs = self.publish_backlog(messages).await?;
        self.say(format!("[naive] consuming {n}: one transaction and one ack per message…"));
        let registry = AdapterRegistry::with_defaults();
        let adapter = registry.get(ChannelType::Webhook, "webhook").expect("webhook adapter");
        let pool = store::connect(&self.subject.db_url, 1).await?;
        let before = CpuSnapshot::take(&self.subject.db_name, &[]);
        let (channel, mut consumer) = self.consume_backlog().await?;
        let mut entry_points: HashMap<String, store::ResolvedEntryPoint> = HashMap::new();
        let mut first = None;
        let mut seen = 0;
        while seen < n {
            let delivery = next_delivery(&mut consumer, "naive").await?;
            first.get_or_insert_with(Instant::now);
            let headers = Headers::new();
            let updates = adapter
                .decode(&AdapterDelivery {
                    body: &delivery.data,
                    headers: &headers,
                    external_channel_id: None,
                    received_at: chrono::Utc::now(),
                })
                .await
                .map_err(|e| anyhow::anyhow!("naive: decode: {e}"))?;
            for mut u in updates {
                let external = u.channel_id_candidates(None).first().map(|s| (*s).to_owned()).unwrap_or_default();
                let ep = match entry_points.get(&external) {
                    Some(ep) => ep.clone(),
                    None => {
                        let ep = store::resolve_entry_point(&pool, ChannelType::Webhook, &external, None).await?;
                        entry_points.insert(external, ep.clone());
                        ep
                    }
                };
                adapter.refine(
                    &mut u,
                    &EntryPointInfo {
                        external_channel_id: &ep.external_channel_id,
                        adapter_key: &ep.adapter_key,
                        metadata: &ep.metadata,
                    },
                );
                let request = UpdateRequest {
                    project_id: ep.project_id.clone(),
                    target: Target::Channel { entry_point_id: ep.id, thread: u.thread },
                    action: Some(u.action),
                    extras: MessageExtras::default(),
                    attributes: Default::default(),
                };
                update::apply(&pool, &request).await?;
            }
            delivery.ack(BasicAckOptions::default()).await?;
            seen += 1;
        }
        let consume_secs = first.expect("n >= 1").elapsed().as_secs_f64();
        let cpu = before.usage_until(&CpuSnapshot::take(&self.subject.db_name, &[]), Consumer::InProcess);
        let _ = channel.close(200, "done".into()).await;
        pool.close().await;
        self.subject.expected_rows += n as i64;
        let rows = self.rows().await?;
        anyhow::ensure!(
            rows == self.subject.expected_rows,
            "naive: {rows} rows, expected {}",
            self.subject.expected_rows
        );
        let r = RunResult {
            key: "naive".into(),
            name: "naive (tx+ack per msg)".into(),
            messages: n,
            payload_bytes,
            publish_secs,
            consume_secs,
            cpu,
            workers: 1,
            batch_size: Some(1),
            applied: Some(n as i64),
        };
        self.say(format!("[naive] {:.0} msg/s", r.rate()));
        Ok(r)
    }
}

/// The next delivery of an in-process baseline consumer; a run that stalls fails after 60 s.
pub(super) async fn next_delivery(
    consumer: &mut lapin::Consumer,
    run: &str,
) -> anyhow::Result<lapin::message::Delivery> {
    tokio::time::timeout(Duration::from_secs(60), consumer.next())
        .await
        .map_err(|_| anyhow::anyhow!("{run}: no delivery for 60 s"))?
        .ok_or_else(|| anyhow::anyhow!("{run}: consumer cancelled"))?
        .map_err(Into::into)
}
