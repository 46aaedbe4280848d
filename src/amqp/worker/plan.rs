//! Planning: decode a delivery through its adapter and resolve its entry points.

use std::time::Instant;

use chrono::{DateTime, Utc};
use intake_adapters::{ChannelType, Delivery as AdapterDelivery, EntryPointInfo, Headers};
use lapin::message::Delivery;
use lapin::BasicProperties;

use super::{delivery_labels, is_transient_db, Plan, Shared, Transient};
use crate::amqp::envelope::{self, parse_routing_key};
use crate::amqp::header_string;
use crate::store::{self, ResolveError, ResolvedEntryPoint};
use crate::update::{MessageExtras, Target, UpdateRequest};

/// Decode the delivery and resolve its entry points.
pub(super) async fn plan(shared: &Shared, delivery: &Delivery) -> Result<Plan, Transient> {
    let dead = |reason: &'static str, error: String| Ok(Plan::Dead { reason, error });
    let (_, routing_key, _) = delivery_labels(delivery);
    let (channel_type, adapter_key, suffix) = match parse_routing_key(&routing_key) {
        Ok(parts) => parts,
        Err(e) => return dead("bad_routing_key", e),
    };
    if let Some(suffix) = suffix {
        return dead("bad_routing_key", format!("routing key `{routing_key}`: no consumer for `.{suffix}` messages"));
    }
    let limit = shared.settings.max_message_bytes;
    if delivery.data.len() > limit {
        return dead(
            "payload_too_large",
            format!("body is {} bytes, over the {limit}-byte limit", delivery.data.len()),
        );
    }
    let Some(adapter) = shared.registry.get(channel_type, adapter_key) else {
        return dead("unknown_adapter", format!("no adapter `{adapter_key}` for channel type {channel_type}"));
    };
    let properties_headers = delivery.properties.headers().as_ref();
    let headers: Headers = properties_headers
        .map(|t| {
            t.inner()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), crate::amqp::value_string(v)?)))
                .collect()
        })
        .unwrap_or_default();
    let envelope_external = header_string(properties_headers, envelope::EXTERNAL_CHANNEL_ID);
    let project = header_string(properties_headers, envelope::PROJECT);
    let received_at = delivery_time(&delivery.properties);
    let adapter_delivery = AdapterDelivery {
        body: &delivery.data,
        headers: &headers,
        external_channel_id: envelope_external.as_deref(),
        received_at,
    };
    let items = match adapter.decode_items(&adapter_delivery).await {
        Ok(items) => items,
        Err(e) => return dead(e.reason_code(), e.to_string()),
    };
    if items.is_empty() {
        return Ok(Plan::Skip);
    }
    let total = items.len();
    let mut requests = Vec::with_capacity(total);
    // Items that cannot be used or planned: (reason, error). The others of the delivery still apply.
    let mut failed: Vec<(&'static str, String)> = Vec::new();
    for item in items {
        let mut update = match item {
            Ok(update) => update,
            Err(e) => {
                failed.push((e.reason_code(), e.to_string()));
                continue;
            }
        };
        if update.replace_nul() {
            tracing::debug!(key = update.idempotency_key(), "U+0000 replaced by U+FFFD (PostgreSQL cannot store it)");
        }
        // Of several, a failure names its item (adapter errors name theirs by path already); the
        // name is only written for a failure.
        let named = |error: String| if total > 1 { format!("`{}`: {error}", update.idempotency_key()) } else { error };
        let candidates: Vec<String> =
            update.channel_id_candidates(envelope_external.as_deref()).into_iter().map(str::to_owned).collect();
        if candidates.is_empty() {
            failed.push((
                "missing_entry_point",
                named(format!(
                    "neither the payload nor the `{}` header names the entry point",
                    envelope::EXTERNAL_CHANNEL_ID
                )),
            ));
            continue;
        }
        let mut found = None;
        let mut refused = None;
        for external in &candidates {
            match resolve_cached(shared, channel_type, external, project.as_deref()).await {
                Ok(ep) => {
                    found = Some(ep);
                    break;
                }
                Err(ResolveError::Unknown { .. }) => continue,
                Err(e @ ResolveError::Ambiguous { .. }) => {
                    refused = Some(("ambiguous_entry_point", named(e.to_string())));
                    break;
                }
                Err(ResolveError::Database(e)) if is_transient_db(&e) => {
                    return Err(Transient(format!("database: {e}")))
                }
                Err(ResolveError::Database(e)) => {
                    refused = Some(("database_rejected", named(e.to_string())));
                    break;
                }
            }
        }
        let Some(entry_point) = found else {
            failed.push(refused.unwrap_or_else(|| {
                let in_project = project.as_deref().map(|p| format!(" in project `{p}`")).unwrap_or_default();
                let names = candidates.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
                ("unknown_entry_point", named(format!("no {channel_type} entry point{in_project} for {names}")))
            }));
            continue;
        };
        if let Some(store) = &shared.settings.attachment_store {
            store.store(&mut update.action).await.map_err(|e| Transient(format!("attachment store: {e}")))?;
        }
        adapter.refine(
            &mut update,
            &EntryPointInfo {
                external_channel_id: &entry_point.external_channel_id,
                adapter_key: &entry_point.adapter_key,
                metadata: &entry_point.metadata,
            },
        );
        requests.push(UpdateRequest {
            project_id: entry_point.project_id,
            target: Target::Channel { entry_point_id: entry_point.id, thread: update.thread },
            action: Some(update.action),
            extras: MessageExtras::default(),
            attributes: Default::default(),
        });
    }
    Ok(match failed.first() {
        None => Plan::Apply(requests),
        Some((reason, first)) => {
            // One item alone keeps its error as it is; of several, say how many failed and for
            // which other reasons (settling a partial plan adds what became of the rest).
            let error = if total == 1 {
                first.clone()
            } else {
                let mut others: Vec<&str> = failed.iter().map(|(r, _)| *r).filter(|r| r != reason).collect();
                others.sort_unstable();
                others.dedup();
                let also = if others.is_empty() { String::new() } else { format!(", also {}", others.join(", ")) };
                let none = if requests.is_empty() { ", none applied" } else { "" };
                format!("{first}; {} of the delivery's {total} items failed{also}{none}", failed.len())
            };
            if requests.is_empty() {
                Plan::Dead { reason, error }
            } else {
                Plan::Partial { requests, reason, error }
            }
        }
    })
}

/// When the publisher sent it (ms header, else the AMQP timestamp), else now.
pub(super) fn delivery_time(properties: &BasicProperties) -> DateTime<Utc> {
    let headers = properties.headers().as_ref();
    header_string(headers, envelope::PUBLISHED_AT_MS)
        .and_then(|ms| ms.parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_millis)
        .or_else(|| properties.timestamp().and_then(|s| DateTime::from_timestamp(s as i64, 0)))
        .unwrap_or_else(Utc::now)
}

pub(super) async fn resolve_cached(
    shared: &Shared,
    channel_type: ChannelType,
    external: &str,
    project: Option<&str>,
) -> Result<ResolvedEntryPoint, ResolveError> {
    let key = (channel_type, external.to_owned(), project.map(str::to_owned));
    if let Some((ep, at)) = shared.cache.entries.lock().expect("cache lock").get(&key) {
        if at.elapsed() < shared.settings.entry_point_cache_ttl {
            return Ok(ep.clone());
        }
    }
    let ep = store::resolve_entry_point(&shared.pool, channel_type, external, project).await?;
    shared.cache.entries.lock().expect("cache lock").insert(key, (ep.clone(), Instant::now()));
    Ok(ep)
}
