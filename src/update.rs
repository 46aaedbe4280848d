//! The one update logic. Both the HTTP API and the queue worker call [`apply`] /
//! [`apply_batch`]; nothing else writes conversations or messages.
//!
//! Rules (see `../shared/spec/update-conversation.md` and the README):
//! - every timestamp moves forward only (`GREATEST`), so late or replayed messages never move
//!   one back;
//! - a message's idempotency key is unique per project: applying it again changes nothing;
//! - `firstResponseAt` is the first non-automatic outbound message at or after the first
//!   non-automatic inbound one, computed from the stored messages, so any arrival order of the
//!   same messages gives the same value;
//! - preview and customer profile follow the newest message (ties broken by key);
//! - an inbound message newer than `closedAt` reopens the conversation unless it is automatic.
//!
//! Concurrency: every change takes the conversation row lock (`SELECT … FOR UPDATE`) before it
//! reads or writes anything derived, so concurrent workers serialise per conversation.

use chrono::{DateTime, Utc};
use intake_adapters::{preview_of, Direction, NormalizedMessage, ThreadRef, UpdateAction};
use std::collections::HashMap;

use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

/// Longest preview kept on a conversation, in characters.
pub const PREVIEW_CHARS: usize = 200;
/// How often a batch is retried after a deadlock or serialization failure.
const DEADLOCK_RETRIES: usize = 3;

/// Which conversation an update is for.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A known conversation (HTTP API).
    Conversation(Uuid),
    /// Found or created through an entry point (queue worker).
    Channel { entry_point_id: Uuid, thread: ThreadRef },
}

/// Attribute changes. `None` = leave alone; `Some(None)` = clear.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttributeChanges {
    pub subject: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub assigned_to_user_id: Option<Option<String>>,
    pub assigned_to_display_name: Option<Option<String>>,
    pub first_response_due_at: Option<Option<DateTime<Utc>>>,
    pub next_response_due_at: Option<Option<DateTime<Utc>>>,
    pub user_id: Option<Option<String>>,
    pub team_id: Option<Option<String>>,
    pub closed_at: Option<Option<DateTime<Utc>>>,
    pub record_metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl AttributeChanges {
    pub fn is_empty(&self) -> bool {
        *self == AttributeChanges::default()
    }
}

/// What the caller knows about an appended message beyond what the channel said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageExtras {
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    /// intake delivers this outbound message itself (email over SMTP): store it as pending and
    /// move no timestamp until a `Status { status: "sent" }` says the channel accepted it.
    pub pending_delivery: bool,
}

/// Delivery statuses that settle a pending outbound message.
pub const STATUS_SENT: &str = "sent";
pub const STATUS_FAILED: &str = "failed";

/// One normalized update for the update logic.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateRequest {
    pub project_id: String,
    pub target: Target,
    pub action: Option<UpdateAction>,
    pub extras: MessageExtras,
    pub attributes: AttributeChanges,
}

/// What applying an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Appended,
    /// The idempotency key was seen before: nothing changed.
    Duplicate,
    MessageChanged,
    AttributesChanged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateOutcome {
    pub conversation_id: Uuid,
    pub message_id: Option<Uuid>,
    pub effect: Effect,
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("conversation not found")]
    ConversationNotFound,
    #[error("no message with idempotency key `{0}` in this project")]
    MessageNotFound(String),
    #[error("idempotency key `{key}` is already used by a message of another conversation")]
    KeyConflict { key: String },
    #[error("invalid update: {0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl UpdateError {
    /// Deadlocks and serialization failures go away when the transaction is tried again.
    fn is_retryable_conflict(&self) -> bool {
        matches!(self, UpdateError::Database(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("40P01") | Some("40001")))
    }
}

/// Apply one update in its own transaction.
pub async fn apply(pool: &PgPool, request: &UpdateRequest) -> Result<UpdateOutcome, UpdateError> {
    let mut outcomes = apply_batch(pool, std::slice::from_ref(request)).await?;
    Ok(outcomes.pop().expect("one outcome per request"))
}

/// Apply several updates in one transaction: all or nothing. Updates are applied in an order
/// sorted by conversation so that concurrent batches take row locks in the same order; the
/// outcomes come back in the caller's order. A deadlock is retried a few times.
pub async fn apply_batch(pool: &PgPool, requests: &[UpdateRequest]) -> Result<Vec<UpdateOutcome>, UpdateError> {
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_cached_key(|&i| lock_key(&requests[i]));
    let mut attempt = 0;
    loop {
        attempt += 1;
        match apply_batch_once(pool, requests, &order).await {
            Err(e) if e.is_retryable_conflict() && attempt <= DEADLOCK_RETRIES => {
                tracing::debug!(attempt, "batch hit a lock conflict, retrying");
                continue;
            }
            other => return other,
        }
    }
}

async fn apply_batch_once(
    pool: &PgPool,
    requests: &[UpdateRequest],
    order: &[usize],
) -> Result<Vec<UpdateOutcome>, UpdateError> {
    let mut tx = pool.begin().await?;
    let outcomes = if appends_only(requests) {
        apply_appends(&mut tx, requests, order).await?
    } else {
        let mut outcomes = vec![None; requests.len()];
        for &i in order {
            outcomes[i] = Some(apply_in(&mut tx, &requests[i]).await?);
        }
        outcomes.into_iter().map(|o| o.expect("every request applied")).collect()
    };
    tx.commit().await?;
    Ok(outcomes)
}

/// Whether a batch can take the set-based path: only new messages through an entry point
/// (the worker's usual batch), found by thread key, with distinct idempotency keys. Anything
/// else (edits, statuses, attributes, references, reply tokens, pending email, a key twice)
/// is applied one update at a time.
fn appends_only(requests: &[UpdateRequest]) -> bool {
    let mut keys = std::collections::HashSet::with_capacity(requests.len());
    requests.iter().all(|r| {
        let (Some(UpdateAction::Append(m)), Target::Channel { thread, .. }) = (&r.action, &r.target) else {
            return false;
        };
        thread.references.is_empty()
            && thread.conversation_id_hint.is_none()
            && !r.extras.pending_delivery
            && r.attributes.is_empty()
            && keys.insert((r.project_id.as_str(), m.idempotency_key.as_str()))
    })
}

/// [`apply_in`] for a batch of [`appends_only`] requests with a few statements per batch
/// instead of several per message, with the same result as applying them one by one in
/// `order`: duplicates are found first, conversations are locked (or created) together,
/// customers are upserted once each with the values the last message would have left, the
/// messages are inserted together, and the conversation rows are folded in rounds.
async fn apply_appends(
    conn: &mut PgConnection,
    requests: &[UpdateRequest],
    order: &[usize],
) -> Result<Vec<UpdateOutcome>, UpdateError> {
    struct Item<'a> {
        index: usize,
        project: &'a str,
        entry_point_id: Uuid,
        thread_key: &'a str,
        message: &'a NormalizedMessage,
    }
    for &i in order {
        validate(&requests[i])?;
    }
    let items: Vec<Item> = order
        .iter()
        .map(|&index| {
            let r = &requests[index];
            let (Some(UpdateAction::Append(message)), Target::Channel { entry_point_id, thread }) =
                (&r.action, &r.target)
            else {
                unreachable!("checked by appends_only")
            };
            let thread_key = thread.key.as_deref().unwrap_or(&message.idempotency_key);
            Item { index, project: &r.project_id, entry_point_id: *entry_point_id, thread_key, message }
        })
        .collect();
    let mut outcomes: Vec<Option<UpdateOutcome>> = vec![None; requests.len()];

    // Messages stored before (a redelivery): nothing changes.
    let existing: Vec<(String, String, Uuid, Uuid)> = sqlx::query_as(
        "SELECT k.project, k.key, m.id, m.conversation_id
           FROM unnest($1::text[], $2::text[]) AS k(project, key)
           CROSS JOIN LATERAL (
             SELECT id, conversation_id FROM messages
              WHERE project_id = k.project AND (idempotency_key = k.key OR external_id = k.key)
              ORDER BY (idempotency_key = k.key) DESC LIMIT 1) m",
    )
    .bind(items.iter().map(|i| i.project).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.message.idempotency_key.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let existing: HashMap<(&str, &str), (Uuid, Uuid)> =
        existing.iter().map(|(p, k, m, c)| ((p.as_str(), k.as_str()), (*m, *c))).collect();
    let mut fresh = Vec::with_capacity(items.len());
    for item in items {
        if let Some(&(message_id, conversation_id)) =
            existing.get(&(item.project, item.message.idempotency_key.as_str()))
        {
            outcomes[item.index] =
                Some(UpdateOutcome { conversation_id, message_id: Some(message_id), effect: Effect::Duplicate });
        } else {
            fresh.push(item);
        }
    }

    // Conversations: lock the existing ones (in id order), create the others.
    type ThreadId<'a> = (&'a str, Uuid, &'a str);
    let mut threads: Vec<ThreadId> = Vec::new();
    let mut first_of_thread: HashMap<ThreadId, usize> = HashMap::new();
    for (n, item) in fresh.iter().enumerate() {
        let thread = (item.project, item.entry_point_id, item.thread_key);
        first_of_thread.entry(thread).or_insert_with(|| {
            threads.push(thread);
            n
        });
    }
    let mut conversations: HashMap<ThreadId, Uuid> = HashMap::with_capacity(threads.len());
    if !threads.is_empty() {
        lock_threads(conn, &threads, &mut conversations).await?;
        let mut missing: Vec<&ThreadId> = threads.iter().filter(|t| !conversations.contains_key(*t)).collect();
        missing.sort_by_key(|(p, ep, k)| (*ep, *k, *p));
        if !missing.is_empty() {
            let first: Vec<&NormalizedMessage> = missing.iter().map(|t| fresh[first_of_thread[*t]].message).collect();
            let inserted: Vec<(Uuid, String, Uuid, String)> = sqlx::query_as(
                "INSERT INTO conversations (id, project_id, origin_entry_point_id, thread_key, subject, last_activity_at)
                 SELECT t.id, t.project, t.ep, t.key, t.subject, GREATEST(now(), t.at)
                   FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::timestamptz[])
                        WITH ORDINALITY AS t(id, project, ep, key, subject, at, n)
                  ORDER BY t.n
                 ON CONFLICT (origin_entry_point_id, thread_key) WHERE thread_key IS NOT NULL DO NOTHING
                 RETURNING id, project_id, origin_entry_point_id, thread_key",
            )
            .bind(missing.iter().map(|_| Uuid::new_v4()).collect::<Vec<_>>())
            .bind(missing.iter().map(|t| t.0).collect::<Vec<_>>())
            .bind(missing.iter().map(|t| t.1).collect::<Vec<_>>())
            .bind(missing.iter().map(|t| t.2).collect::<Vec<_>>())
            .bind(first.iter().map(|m| m.subject.as_deref()).collect::<Vec<_>>())
            .bind(first.iter().map(|m| m.occurred_at).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await?;
            let mut opened_ids = Vec::with_capacity(inserted.len());
            let mut opened_eps = Vec::with_capacity(inserted.len());
            for (id, project, ep, key) in &inserted {
                if let Some(t) = missing.iter().find(|t| t.0 == project && t.1 == *ep && t.2 == key) {
                    conversations.insert(**t, *id);
                    opened_ids.push(*id);
                    opened_eps.push(*ep);
                    tracing::info!(conversation_id = %id, entry_point_id = %ep, "conversation opened");
                }
            }
            if !opened_ids.is_empty() {
                sqlx::query(
                    "INSERT INTO conversation_entry_points (conversation_id, entry_point_id, is_entry_point)
                     SELECT c, e, true FROM unnest($1::uuid[], $2::uuid[]) AS t(c, e) ON CONFLICT DO NOTHING",
                )
                .bind(opened_ids)
                .bind(opened_eps)
                .execute(&mut *conn)
                .await?;
            }
            // Created by a concurrent transaction after our lookup: wait for it and lock it.
            let raced: Vec<ThreadId> = threads.iter().filter(|t| !conversations.contains_key(*t)).copied().collect();
            if !raced.is_empty() {
                lock_threads(conn, &raced, &mut conversations).await?;
                if raced.iter().any(|t| !conversations.contains_key(t)) {
                    return Err(sqlx::Error::RowNotFound.into());
                }
            }
        }
    }

    // Customers: one upsert each, with the values the last of their messages would leave.
    // (project, external id) -> display name, primary email, profile image
    type Profile<'a> = [Option<&'a str>; 3];
    let mut customers: Vec<((&str, &str), Profile)> = Vec::new();
    for item in &fresh {
        let m = item.message;
        if m.direction != Direction::Inbound || m.is_auto_reply {
            continue;
        }
        let Some(external) = m.sender.id.as_deref().or(m.sender.primary_email.as_deref()).filter(|s| !s.is_empty())
        else {
            continue;
        };
        let values = [
            m.sender.display_name.as_deref(),
            m.sender.primary_email.as_deref(),
            m.sender.profile_image_url.as_deref(),
        ];
        match customers.iter_mut().find(|(k, _)| *k == (item.project, external)) {
            Some((_, folded)) => {
                for (f, v) in folded.iter_mut().zip(values) {
                    *f = v.or(*f);
                }
            }
            None => customers.push(((item.project, external), values)),
        }
    }
    customers.sort_by_key(|(k, _)| *k);
    let mut customer_ids: HashMap<(String, String), Uuid> = HashMap::with_capacity(customers.len());
    if !customers.is_empty() {
        let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
            "INSERT INTO customers (id, project_id, external_id, display_name, primary_email, profile_image_url)
             SELECT t.id, t.project, t.external, t.name, t.email, t.image
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                    WITH ORDINALITY AS t(id, project, external, name, email, image, n)
              ORDER BY t.n
             ON CONFLICT (project_id, external_id) DO UPDATE SET
                display_name = COALESCE(EXCLUDED.display_name, customers.display_name),
                primary_email = COALESCE(EXCLUDED.primary_email, customers.primary_email),
                profile_image_url = COALESCE(EXCLUDED.profile_image_url, customers.profile_image_url),
                updated_at = now()
             RETURNING id, project_id, external_id",
        )
        .bind(customers.iter().map(|_| Uuid::new_v4()).collect::<Vec<_>>())
        .bind(customers.iter().map(|((p, _), _)| *p).collect::<Vec<_>>())
        .bind(customers.iter().map(|((_, e), _)| *e).collect::<Vec<_>>())
        .bind(customers.iter().map(|(_, v)| v[0]).collect::<Vec<_>>())
        .bind(customers.iter().map(|(_, v)| v[1]).collect::<Vec<_>>())
        .bind(customers.iter().map(|(_, v)| v[2]).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        customer_ids.extend(rows.into_iter().map(|(id, p, e)| ((p, e), id)));
    }
    let customer_of = |item: &Item| -> Option<Uuid> {
        let m = item.message;
        if m.direction != Direction::Inbound || m.is_auto_reply {
            return None;
        }
        let external = m.sender.id.as_deref().or(m.sender.primary_email.as_deref()).filter(|s| !s.is_empty())?;
        customer_ids.get(&(item.project.to_owned(), external.to_owned())).copied()
    };

    // Messages, together; one a concurrent transaction stored first is a duplicate.
    let ids: Vec<Uuid> = fresh.iter().map(|_| Uuid::new_v4()).collect();
    let conversation_ids: Vec<Uuid> =
        fresh.iter().map(|i| conversations[&(i.project, i.entry_point_id, i.thread_key)]).collect();
    let customers_of: Vec<Option<Uuid>> = fresh.iter().map(customer_of).collect();
    let user_ids: Vec<Option<String>> = fresh
        .iter()
        .zip(&customers_of)
        .map(|(item, customer)| {
            let m = item.message;
            requests[item.index]
                .extras
                .user_id
                .clone()
                .or_else(|| customer.map(|c| c.to_string()))
                .or_else(|| (m.direction == Direction::Outbound).then(|| m.sender.id.clone()).flatten())
        })
        .collect();
    let inserted: Vec<(String, String)> = if fresh.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(
            "INSERT INTO messages (id, project_id, conversation_id, entry_point_id, idempotency_key, direction,
                                   is_auto_reply, sender_id, sender_display_name, sender_primary_email, customer_id,
                                   user_id, team_id, subject, body, attachments, metadata, occurred_at)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::bool[],
                                  $8::text[], $9::text[], $10::text[], $11::uuid[], $12::text[], $13::text[],
                                  $14::text[], $15::text[], $16::jsonb[], $17::jsonb[], $18::timestamptz[])
             ON CONFLICT (project_id, idempotency_key) DO NOTHING RETURNING project_id, idempotency_key",
        )
        .bind(&ids)
        .bind(fresh.iter().map(|i| i.project).collect::<Vec<_>>())
        .bind(&conversation_ids)
        .bind(fresh.iter().map(|i| i.entry_point_id).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.message.idempotency_key.as_str()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.message.direction.as_str()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.message.is_auto_reply).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.message.sender.id.as_deref()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.message.sender.display_name.as_deref()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.message.sender.primary_email.as_deref()).collect::<Vec<_>>())
        .bind(&customers_of)
        .bind(&user_ids)
        .bind(fresh.iter().map(|i| requests[i.index].extras.team_id.as_deref()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.message.subject.as_deref()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.message.body.as_str()).collect::<Vec<_>>())
        .bind(
            fresh
                .iter()
                .map(|i| serde_json::to_value(&i.message.attachments).expect("attachments serialize"))
                .collect::<Vec<_>>(),
        )
        .bind(fresh.iter().map(|i| serde_json::Value::Object(i.message.metadata.clone())).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.message.occurred_at).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?
    };
    let inserted: std::collections::HashSet<(&str, &str)> =
        inserted.iter().map(|(p, k)| (p.as_str(), k.as_str())).collect();

    // Fold them into their conversations, in order, a round per message of a conversation.
    let mut rounds: Vec<Bumps> = Vec::new();
    let mut seen_in_round: HashMap<Uuid, usize> = HashMap::new();
    for (n, item) in fresh.iter().enumerate() {
        let key = item.message.idempotency_key.as_str();
        if !inserted.contains(&(item.project, key)) {
            let (message_id, conversation_id) = find_message(conn, item.project, key)
                .await?
                .ok_or_else(|| UpdateError::MessageNotFound(key.to_owned()))?;
            outcomes[item.index] =
                Some(UpdateOutcome { conversation_id, message_id: Some(message_id), effect: Effect::Duplicate });
            continue;
        }
        let conversation_id = conversation_ids[n];
        let round = seen_in_round.entry(conversation_id).and_modify(|r| *r += 1).or_insert(0);
        if rounds.len() <= *round {
            rounds.push(Bumps::default());
        }
        rounds[*round].push(conversation_id, item.message, customers_of[n]);
        tracing::debug!(%conversation_id, message_id = %ids[n], key, "message appended");
        outcomes[item.index] =
            Some(UpdateOutcome { conversation_id, message_id: Some(ids[n]), effect: Effect::Appended });
    }
    for round in rounds {
        round.execute(conn).await?;
    }
    Ok(outcomes.into_iter().map(|o| o.expect("every request applied")).collect())
}

/// Lock the conversations of these threads that exist, in id order; record their ids.
async fn lock_threads<'a>(
    conn: &mut PgConnection,
    threads: &[(&'a str, Uuid, &'a str)],
    found: &mut HashMap<(&'a str, Uuid, &'a str), Uuid>,
) -> Result<(), sqlx::Error> {
    // Locked in `lock_key` order (byte-wise, hence COLLATE "C"), the order the one-at-a-time
    // path locks in, so two batches in flight (one set-based, one not) cannot deadlock.
    let rows: Vec<(Uuid, String, Uuid, String)> = sqlx::query_as(
        "SELECT c.id, c.project_id, c.origin_entry_point_id, c.thread_key
           FROM conversations c
           JOIN unnest($1::text[], $2::uuid[], $3::text[]) AS t(project, ep, key)
             ON c.origin_entry_point_id = t.ep AND c.thread_key = t.key AND c.project_id = t.project
          ORDER BY ('t:' || c.origin_entry_point_id::text || ':' || c.thread_key) COLLATE \"C\" FOR UPDATE OF c",
    )
    .bind(threads.iter().map(|t| t.0).collect::<Vec<_>>())
    .bind(threads.iter().map(|t| t.1).collect::<Vec<_>>())
    .bind(threads.iter().map(|t| t.2).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    for (id, project, ep, key) in rows {
        if let Some(t) = threads.iter().find(|t| t.0 == project && t.1 == ep && t.2 == key) {
            found.insert(*t, id);
        }
    }
    Ok(())
}

fn lock_key(request: &UpdateRequest) -> String {
    match &request.target {
        Target::Conversation(id) => format!("c:{id}"),
        Target::Channel { entry_point_id, thread } => {
            let key = thread.key.as_deref().or(request.action.as_ref().map(action_key)).unwrap_or_default();
            format!("t:{entry_point_id}:{key}")
        }
    }
}

fn action_key(action: &UpdateAction) -> &str {
    match action {
        UpdateAction::Append(m) => &m.idempotency_key,
        UpdateAction::Edit { idempotency_key, .. }
        | UpdateAction::Delete { idempotency_key, .. }
        | UpdateAction::Status { idempotency_key, .. } => idempotency_key,
    }
}

/// Apply one update inside the caller's transaction.
#[tracing::instrument(level = "debug", skip_all, fields(project = %request.project_id, key = request.action.as_ref().map(action_key)))]
pub async fn apply_in(conn: &mut PgConnection, request: &UpdateRequest) -> Result<UpdateOutcome, UpdateError> {
    validate(request)?;
    let project = request.project_id.as_str();
    match &request.action {
        Some(UpdateAction::Append(message)) => {
            if let Some(existing) = find_message(conn, project, &message.idempotency_key).await? {
                return duplicate(request, existing);
            }
            let conversation_id = resolve_conversation(conn, request, message).await?;
            let Some(message_id) = insert_message(conn, request, conversation_id, message).await? else {
                // Lost a race with a concurrent copy of the same message.
                let existing = find_message(conn, project, &message.idempotency_key)
                    .await?
                    .ok_or_else(|| UpdateError::MessageNotFound(message.idempotency_key.clone()))?;
                return duplicate(request, existing);
            };
            if request.extras.pending_delivery {
                touch(conn, conversation_id, Utc::now()).await?;
            } else {
                bump_for_message(conn, conversation_id, message).await?;
            }
            if !request.attributes.is_empty() {
                update_attributes(conn, conversation_id, &request.attributes).await?;
            }
            tracing::debug!(%conversation_id, %message_id, key = %message.idempotency_key, "message appended");
            Ok(UpdateOutcome { conversation_id, message_id: Some(message_id), effect: Effect::Appended })
        }
        Some(action) => {
            let key = action_key(action);
            let (message_id, conversation_id) =
                find_message(conn, project, key).await?.ok_or_else(|| UpdateError::MessageNotFound(key.to_owned()))?;
            if let Target::Conversation(target) = request.target {
                if target != conversation_id {
                    return Err(UpdateError::MessageNotFound(key.to_owned()));
                }
            }
            lock_conversation(conn, project, conversation_id).await?;
            change_message(conn, message_id, conversation_id, action).await?;
            if !request.attributes.is_empty() {
                update_attributes(conn, conversation_id, &request.attributes).await?;
            }
            Ok(UpdateOutcome { conversation_id, message_id: Some(message_id), effect: Effect::MessageChanged })
        }
        None => {
            let Target::Conversation(conversation_id) = request.target else {
                return Err(UpdateError::Invalid("an update without a message needs a conversation id".into()));
            };
            lock_conversation(conn, project, conversation_id).await?;
            update_attributes(conn, conversation_id, &request.attributes).await?;
            Ok(UpdateOutcome { conversation_id, message_id: None, effect: Effect::AttributesChanged })
        }
    }
}

fn validate(request: &UpdateRequest) -> Result<(), UpdateError> {
    if let Some(UpdateAction::Append(m)) = &request.action {
        if m.idempotency_key.trim().is_empty() {
            return Err(UpdateError::Invalid("message.id must not be empty".into()));
        }
        if m.idempotency_key.len() > 998 {
            return Err(UpdateError::Invalid("message.id is longer than 998 bytes".into()));
        }
    }
    if request.action.is_none() && request.attributes.is_empty() {
        return Err(UpdateError::Invalid("nothing to update: send a message or at least one attribute".into()));
    }
    Ok(())
}

fn duplicate(
    request: &UpdateRequest,
    (message_id, conversation_id): (Uuid, Uuid),
) -> Result<UpdateOutcome, UpdateError> {
    if let Target::Conversation(target) = request.target {
        if target != conversation_id {
            let key = request.action.as_ref().map(action_key).unwrap_or_default();
            return Err(UpdateError::KeyConflict { key: key.to_owned() });
        }
    }
    Ok(UpdateOutcome { conversation_id, message_id: Some(message_id), effect: Effect::Duplicate })
}

/// The message with this idempotency key, or with this channel id (the Message-ID intake gave
/// a mail it sent: a copy of that mail coming back in is the same message).
async fn find_message(conn: &mut PgConnection, project: &str, key: &str) -> Result<Option<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, conversation_id FROM messages
          WHERE project_id = $1 AND (idempotency_key = $2 OR external_id = $2)
          ORDER BY (idempotency_key = $2) DESC LIMIT 1",
    )
    .bind(project)
    .bind(key)
    .fetch_optional(conn)
    .await
}

async fn lock_conversation(conn: &mut PgConnection, project: &str, id: Uuid) -> Result<(), UpdateError> {
    sqlx::query("SELECT 1 FROM conversations WHERE id = $1 AND project_id = $2 FOR UPDATE")
        .bind(id)
        .bind(project)
        .fetch_optional(conn)
        .await?
        .map(|_| ())
        .ok_or(UpdateError::ConversationNotFound)
}

/// Find the conversation a message belongs to, creating it when the channel starts one, and
/// lock it.
async fn resolve_conversation(
    conn: &mut PgConnection,
    request: &UpdateRequest,
    message: &NormalizedMessage,
) -> Result<Uuid, UpdateError> {
    let project = request.project_id.as_str();
    let (entry_point_id, thread) = match &request.target {
        Target::Conversation(id) => {
            lock_conversation(conn, project, *id).await?;
            return Ok(*id);
        }
        Target::Channel { entry_point_id, thread } => (*entry_point_id, thread),
    };

    // A reply token the channel carried back, if it names a conversation of this project.
    if let Some(hint) = thread.conversation_id_hint.as_deref().and_then(|h| Uuid::parse_str(h).ok()) {
        if lock_conversation(conn, project, hint).await.is_ok() {
            link_entry_point(conn, hint, entry_point_id, false).await?;
            return Ok(hint);
        }
    }

    // A reference to an earlier message of this entry point's conversations; newest wins.
    if !thread.references.is_empty() {
        let found: Option<Uuid> = sqlx::query_scalar(
            "WITH refs AS (SELECT * FROM unnest($3::text[]) WITH ORDINALITY AS r(key, pos)),
                  found AS (
                    SELECT m.conversation_id, refs.pos FROM refs
                      JOIN messages m ON m.project_id = $1 AND m.idempotency_key = refs.key
                    UNION ALL
                    SELECT m.conversation_id, refs.pos FROM refs
                      JOIN messages m ON m.project_id = $1 AND m.external_id = refs.key)
             SELECT found.conversation_id FROM found
               JOIN conversation_entry_points cep
                 ON cep.conversation_id = found.conversation_id AND cep.entry_point_id = $2
              ORDER BY found.pos DESC LIMIT 1",
        )
        .bind(project)
        .bind(entry_point_id)
        .bind(&thread.references)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(id) = found {
            lock_conversation(conn, project, id).await?;
            return Ok(id);
        }
    }

    // Find or create by thread key; a message without one starts its own thread, keyed by the
    // message so that a redelivery finds the same conversation.
    let thread_key = thread.key.as_deref().unwrap_or(&message.idempotency_key);
    let new_id = Uuid::new_v4();
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO conversations (id, project_id, origin_entry_point_id, thread_key, subject, last_activity_at)
         VALUES ($1, $2, $3, $4, $5, GREATEST(now(), $6))
         ON CONFLICT (origin_entry_point_id, thread_key) WHERE thread_key IS NOT NULL DO NOTHING
         RETURNING id",
    )
    .bind(new_id)
    .bind(project)
    .bind(entry_point_id)
    .bind(thread_key)
    .bind(&message.subject)
    .bind(message.occurred_at)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = inserted {
        link_entry_point(conn, id, entry_point_id, true).await?;
        tracing::info!(conversation_id = %id, %entry_point_id, "conversation opened");
        return Ok(id);
    }
    let id: Uuid = sqlx::query_scalar(
        "SELECT id FROM conversations
          WHERE origin_entry_point_id = $1 AND thread_key = $2 AND project_id = $3 FOR UPDATE",
    )
    .bind(entry_point_id)
    .bind(thread_key)
    .bind(project)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

async fn link_entry_point(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    entry_point_id: Uuid,
    is_entry_point: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO conversation_entry_points (conversation_id, entry_point_id, is_entry_point)
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(conversation_id)
    .bind(entry_point_id)
    .bind(is_entry_point)
    .execute(conn)
    .await?;
    Ok(())
}

/// Insert the message; `None` when a concurrent transaction inserted the same key first.
async fn insert_message(
    conn: &mut PgConnection,
    request: &UpdateRequest,
    conversation_id: Uuid,
    message: &NormalizedMessage,
) -> Result<Option<Uuid>, UpdateError> {
    let entry_point_id = match &request.target {
        Target::Channel { entry_point_id, .. } => Some(*entry_point_id),
        Target::Conversation(_) => None,
    };
    let customer_id = if message.direction == Direction::Inbound && !message.is_auto_reply {
        upsert_customer(conn, &request.project_id, message).await?
    } else {
        None
    };
    let user_id = request
        .extras
        .user_id
        .clone()
        .or_else(|| customer_id.map(|c| c.to_string()))
        .or_else(|| (message.direction == Direction::Outbound).then(|| message.sender.id.clone()).flatten());
    let attachments = serde_json::to_value(&message.attachments).expect("attachments serialize");
    let id = Uuid::new_v4();
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO messages (id, project_id, conversation_id, entry_point_id, idempotency_key, direction,
                               is_auto_reply, sender_id, sender_display_name, sender_primary_email, customer_id,
                               user_id, team_id, subject, body, attachments, metadata, occurred_at, delivery_state)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19)
         ON CONFLICT (project_id, idempotency_key) DO NOTHING RETURNING id",
    )
    .bind(id)
    .bind(&request.project_id)
    .bind(conversation_id)
    .bind(entry_point_id)
    .bind(&message.idempotency_key)
    .bind(message.direction.as_str())
    .bind(message.is_auto_reply)
    .bind(&message.sender.id)
    .bind(&message.sender.display_name)
    .bind(&message.sender.primary_email)
    .bind(customer_id)
    .bind(user_id)
    .bind(&request.extras.team_id)
    .bind(&message.subject)
    .bind(&message.body)
    .bind(attachments)
    .bind(serde_json::Value::Object(message.metadata.clone()))
    .bind(message.occurred_at)
    .bind(request.extras.pending_delivery.then_some("pending"))
    .fetch_optional(conn)
    .await?;
    Ok(inserted)
}

async fn upsert_customer(
    conn: &mut PgConnection,
    project: &str,
    message: &NormalizedMessage,
) -> Result<Option<Uuid>, sqlx::Error> {
    let Some(external_id) =
        message.sender.id.as_deref().or(message.sender.primary_email.as_deref()).filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    // The profile is "as last seen": newer non-empty values replace older ones.
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO customers (id, project_id, external_id, display_name, primary_email, profile_image_url)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (project_id, external_id) DO UPDATE SET
            display_name = COALESCE(EXCLUDED.display_name, customers.display_name),
            primary_email = COALESCE(EXCLUDED.primary_email, customers.primary_email),
            profile_image_url = COALESCE(EXCLUDED.profile_image_url, customers.profile_image_url),
            updated_at = now()
         RETURNING id",
    )
    .bind(Uuid::new_v4())
    .bind(project)
    .bind(external_id)
    .bind(&message.sender.display_name)
    .bind(&message.sender.primary_email)
    .bind(&message.sender.profile_image_url)
    .fetch_one(conn)
    .await?;
    Ok(Some(id))
}

/// Fold one new message into the conversation row, forward-only.
async fn bump_for_message(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    message: &NormalizedMessage,
) -> Result<(), sqlx::Error> {
    let customer_reply = message.direction == Direction::Inbound && !message.is_auto_reply;
    let customer_id: Option<Uuid> = if customer_reply {
        sqlx::query_scalar::<_, Option<Uuid>>(
            "SELECT customer_id FROM messages WHERE conversation_id = $1 AND idempotency_key = $2",
        )
        .bind(conversation_id)
        .bind(&message.idempotency_key)
        .fetch_one(&mut *conn)
        .await?
    } else {
        None
    };
    let mut bumps = Bumps::default();
    bumps.push(conversation_id, message, customer_id);
    bumps.execute(conn).await
}

/// Folds messages into their conversation rows with one statement: each conversation may
/// appear once per statement, so a batch is applied in rounds (the n-th new message of every
/// conversation in round n), which gives the same result as one statement per message in order.
#[derive(Default)]
struct Bumps {
    conversation_id: Vec<Uuid>,
    occurred_at: Vec<DateTime<Utc>>,
    inbound: Vec<bool>,
    customer_reply: Vec<bool>,
    is_auto_reply: Vec<bool>,
    key: Vec<String>,
    preview: Vec<String>,
    subject: Vec<Option<String>>,
    customer_id: Vec<Option<String>>,
    display_name: Vec<Option<String>>,
    primary_email: Vec<Option<String>>,
    profile_image_url: Vec<Option<String>>,
}

impl Bumps {
    fn push(&mut self, conversation_id: Uuid, message: &NormalizedMessage, customer_id: Option<Uuid>) {
        let preview_source = message.metadata.get("previewText").and_then(|v| v.as_str()).unwrap_or(&message.body);
        let inbound = message.direction == Direction::Inbound;
        let customer_reply = inbound && !message.is_auto_reply;
        self.conversation_id.push(conversation_id);
        self.occurred_at.push(message.occurred_at);
        self.inbound.push(inbound);
        self.customer_reply.push(customer_reply);
        self.is_auto_reply.push(message.is_auto_reply);
        self.key.push(message.idempotency_key.clone());
        self.preview.push(preview_of(preview_source, PREVIEW_CHARS));
        self.subject.push(message.subject.clone());
        self.customer_id.push(if customer_reply { customer_id.map(|id| id.to_string()) } else { None });
        self.display_name.push(message.sender.display_name.clone());
        self.primary_email
            .push(message.sender.primary_email.clone().or(message.sender.id.clone().filter(|id| id.contains('@'))));
        self.profile_image_url.push(message.sender.profile_image_url.clone());
    }

    async fn execute(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.conversation_id.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE conversations c SET
            last_message_at = GREATEST(c.last_message_at, m.at),
            last_activity_at = GREATEST(c.last_activity_at, m.at),
            last_inbound_at = CASE WHEN m.inbound THEN GREATEST(c.last_inbound_at, m.at) ELSE c.last_inbound_at END,
            last_outbound_at = CASE WHEN NOT m.inbound THEN GREATEST(c.last_outbound_at, m.at) ELSE c.last_outbound_at END,
            last_customer_reply_at = CASE WHEN m.customer_reply THEN GREATEST(c.last_customer_reply_at, m.at)
                                          ELSE c.last_customer_reply_at END,
            last_agent_reply_at = CASE WHEN NOT m.inbound AND NOT m.auto THEN GREATEST(c.last_agent_reply_at, m.at)
                                       ELSE c.last_agent_reply_at END,
            preview = CASE WHEN c.preview_at IS NULL OR (m.at, m.key) > (c.preview_at, c.preview_key)
                           THEN m.preview ELSE c.preview END,
            preview_key = CASE WHEN c.preview_at IS NULL OR (m.at, m.key) > (c.preview_at, c.preview_key)
                               THEN m.key ELSE c.preview_key END,
            preview_at = GREATEST(c.preview_at, m.at),
            subject = COALESCE(c.subject, m.subject),
            user_id = CASE WHEN NOT m.customer_reply THEN c.user_id
                           WHEN c.profile_at IS NULL OR m.at >= c.profile_at THEN COALESCE(m.customer_id, c.user_id)
                           ELSE COALESCE(c.user_id, m.customer_id) END,
            user_display_name = CASE WHEN NOT m.customer_reply THEN c.user_display_name
                           WHEN c.profile_at IS NULL OR m.at >= c.profile_at THEN COALESCE(m.display_name, c.user_display_name)
                           ELSE COALESCE(c.user_display_name, m.display_name) END,
            user_primary_email = CASE WHEN NOT m.customer_reply THEN c.user_primary_email
                           WHEN c.profile_at IS NULL OR m.at >= c.profile_at THEN COALESCE(m.email, c.user_primary_email)
                           ELSE COALESCE(c.user_primary_email, m.email) END,
            user_profile_image_url = CASE WHEN NOT m.customer_reply THEN c.user_profile_image_url
                           WHEN c.profile_at IS NULL OR m.at >= c.profile_at THEN COALESCE(m.image, c.user_profile_image_url)
                           ELSE COALESCE(c.user_profile_image_url, m.image) END,
            profile_at = CASE WHEN m.customer_reply THEN GREATEST(c.profile_at, m.at) ELSE c.profile_at END,
            closed_at = CASE WHEN m.customer_reply AND c.closed_at IS NOT NULL AND m.at > c.closed_at THEN NULL
                             ELSE c.closed_at END,
            first_response_at = (
                SELECT min(o.occurred_at) FROM messages o
                 WHERE o.conversation_id = c.id AND o.direction = 'outbound' AND NOT o.is_auto_reply
                   AND coalesce(o.delivery_state, 'sent') = 'sent'
                   AND o.occurred_at >= (
                       SELECT min(i.occurred_at) FROM messages i
                        WHERE i.conversation_id = c.id AND i.direction = 'inbound' AND NOT i.is_auto_reply)),
            updated_at = now()
         FROM unnest($1::uuid[], $2::timestamptz[], $3::bool[], $4::bool[], $5::bool[], $6::text[], $7::text[],
                     $8::text[], $9::text[], $10::text[], $11::text[], $12::text[])
              AS m(id, at, inbound, customer_reply, auto, key, preview, subject, customer_id, display_name, email, image)
         WHERE c.id = m.id",
        )
        .bind(self.conversation_id)
        .bind(self.occurred_at)
        .bind(self.inbound)
        .bind(self.customer_reply)
        .bind(self.is_auto_reply)
        .bind(self.key)
        .bind(self.preview)
        .bind(self.subject)
        .bind(self.customer_id)
        .bind(self.display_name)
        .bind(self.primary_email)
        .bind(self.profile_image_url)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Edit, delete or record a delivery status on a stored message, forward-only by time.
async fn change_message(
    conn: &mut PgConnection,
    message_id: Uuid,
    conversation_id: Uuid,
    action: &UpdateAction,
) -> Result<(), sqlx::Error> {
    let at = match action {
        UpdateAction::Edit { idempotency_key, body, edited_at } => {
            let applied = sqlx::query(
                "UPDATE messages SET body = $2, updated_at = now(),
                        metadata = metadata || jsonb_build_object('editedAt', $3::timestamptz)
                  WHERE id = $1 AND (metadata->>'editedAt' IS NULL OR (metadata->>'editedAt')::timestamptz < $3)
                    AND metadata->>'deletedAt' IS NULL",
            )
            .bind(message_id)
            .bind(body)
            .bind(edited_at)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if applied > 0 {
                sqlx::query("UPDATE conversations SET preview = $3 WHERE id = $1 AND preview_key = $2")
                    .bind(conversation_id)
                    .bind(idempotency_key)
                    .bind(preview_of(body, PREVIEW_CHARS))
                    .execute(&mut *conn)
                    .await?;
            }
            *edited_at
        }
        UpdateAction::Delete { deleted_at, .. } => {
            sqlx::query(
                "UPDATE messages SET body = '', updated_at = now(),
                        metadata = metadata || jsonb_build_object('deletedAt', $2::timestamptz)
                  WHERE id = $1 AND metadata->>'deletedAt' IS NULL",
            )
            .bind(message_id)
            .bind(deleted_at)
            .execute(&mut *conn)
            .await?;
            *deleted_at
        }
        UpdateAction::Status { status, at, detail, .. } => {
            sqlx::query(
                "UPDATE messages SET updated_at = now(),
                        metadata = metadata || jsonb_build_object('deliveryStatus', $2::text,
                                   'deliveryStatusAt', $3::timestamptz, 'deliveryDetail', $4::text)
                  WHERE id = $1 AND (metadata->>'deliveryStatusAt' IS NULL
                                     OR (metadata->>'deliveryStatusAt')::timestamptz <= $3)",
            )
            .bind(message_id)
            .bind(status)
            .bind(at)
            .bind(detail)
            .execute(&mut *conn)
            .await?;
            if status == STATUS_SENT || status == STATUS_FAILED {
                settle_pending(conn, message_id, conversation_id, status, *at).await?;
            }
            *at
        }
        UpdateAction::Append(_) => unreachable!("appends are handled by apply_in"),
    };
    touch(conn, conversation_id, at).await
}

/// The stored message a settled delivery status refers to.
#[derive(sqlx::FromRow)]
struct SettledRow {
    idempotency_key: String,
    direction: String,
    is_auto_reply: bool,
    subject: Option<String>,
    body: String,
    metadata: serde_json::Value,
    occurred_at: DateTime<Utc>,
}

/// A pending outbound message was accepted (or refused) by its channel. Sent: it now counts,
/// at the time it was accepted, for every timestamp.
async fn settle_pending(
    conn: &mut PgConnection,
    message_id: Uuid,
    conversation_id: Uuid,
    status: &str,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let sent = status == STATUS_SENT;
    let row: Option<SettledRow> = sqlx::query_as(
        "UPDATE messages SET delivery_state = $2, occurred_at = CASE WHEN $3 THEN $4 ELSE occurred_at END
          WHERE id = $1 AND delivery_state = 'pending'
          RETURNING idempotency_key, direction, is_auto_reply, subject, body, metadata, occurred_at",
    )
    .bind(message_id)
    .bind(status)
    .bind(sent)
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(()) };
    if sent {
        let message = NormalizedMessage {
            idempotency_key: row.idempotency_key,
            direction: row.direction.parse().unwrap_or(Direction::Outbound),
            sender: Default::default(),
            subject: row.subject,
            body: row.body,
            attachments: vec![],
            occurred_at: row.occurred_at,
            is_auto_reply: row.is_auto_reply,
            metadata: row.metadata.as_object().cloned().unwrap_or_default(),
        };
        bump_for_message(conn, conversation_id, &message).await?;
    }
    Ok(())
}

/// Something happened on the conversation that is not a message.
async fn touch(conn: &mut PgConnection, conversation_id: Uuid, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE conversations SET last_activity_at = GREATEST(last_activity_at, $2), updated_at = now() WHERE id = $1",
    )
    .bind(conversation_id)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

async fn update_attributes(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    changes: &AttributeChanges,
) -> Result<(), sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "UPDATE conversations SET last_activity_at = GREATEST(last_activity_at, now()), updated_at = now()",
    );
    macro_rules! set {
        ($field:expr, $column:literal) => {
            if let Some(value) = &$field {
                q.push(concat!(", ", $column, " = ")).push_bind(value.clone());
            }
        };
    }
    set!(changes.subject, "subject");
    set!(changes.tags, "tags");
    set!(changes.assigned_to_user_id, "assigned_to_user_id");
    set!(changes.assigned_to_display_name, "assigned_to_display_name");
    set!(changes.first_response_due_at, "first_response_due_at");
    set!(changes.next_response_due_at, "next_response_due_at");
    set!(changes.user_id, "user_id");
    set!(changes.team_id, "team_id");
    set!(changes.closed_at, "closed_at");
    if let Some(record) = &changes.record_metadata {
        q.push(", record_metadata = ").push_bind(serde_json::Value::Object(record.clone()));
    }
    q.push(" WHERE id = ").push_bind(conversation_id);
    q.build().execute(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The set-based path for batches of appends must leave exactly what applying the same
    //! updates one by one leaves (against the local PostgreSQL, like the integration tests).
    use super::*;
    use intake_adapters::{ChannelType, Sender};
    use rand::{Rng, SeedableRng};
    use sqlx::Connection;

    async fn fresh_db() -> (PgPool, Uuid, String) {
        let name = format!("intake_test_{}", Uuid::new_v4().simple());
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        let pool = crate::store::connect_and_migrate(&url, 4).await.expect("test database");
        crate::store::ensure_project(&pool, "p").await.unwrap();
        let ep = crate::store::create_entry_point(&pool, "p", ChannelType::Webhook, "webhook", "shop", json!({}))
            .await
            .unwrap()
            .id;
        (pool, ep, name)
    }

    use serde_json::json;

    fn request(rng: &mut rand::rngs::StdRng, ep: Uuid, i: usize) -> UpdateRequest {
        let inbound = rng.random_bool(0.6);
        let pick = |rng: &mut rand::rngs::StdRng, v: &str| rng.random_bool(0.7).then(|| v.to_owned());
        let who = rng.random_range(0..4);
        let sender = if inbound {
            Sender {
                id: pick(rng, &format!("cust-{who}")),
                display_name: pick(rng, &format!("Name {i}")),
                primary_email: pick(rng, &format!("c{who}@example.com")),
                profile_image_url: pick(rng, &format!("https://img/{i}")),
            }
        } else {
            Sender { id: pick(rng, "agent-1"), display_name: pick(rng, "Agent"), ..Default::default() }
        };
        let message = NormalizedMessage {
            idempotency_key: format!("k{i}"),
            direction: if inbound { Direction::Inbound } else { Direction::Outbound },
            sender,
            subject: pick(rng, &format!("subject {i}")),
            body: format!("body {i}"),
            attachments: vec![],
            occurred_at: DateTime::from_timestamp(1_800_000_000 + rng.random_range(0..50), 0).unwrap(),
            is_auto_reply: rng.random_bool(0.1),
            metadata: Default::default(),
        };
        let key = if rng.random_bool(0.1) { None } else { Some(format!("t{}", rng.random_range(0..6))) };
        UpdateRequest {
            project_id: "p".into(),
            target: Target::Channel { entry_point_id: ep, thread: ThreadRef { key, ..Default::default() } },
            action: Some(UpdateAction::Append(message)),
            extras: MessageExtras::default(),
            attributes: Default::default(),
        }
    }

    async fn apply_one_by_one(pool: &PgPool, requests: &[UpdateRequest]) -> Vec<UpdateOutcome> {
        let mut order: Vec<usize> = (0..requests.len()).collect();
        order.sort_by_cached_key(|&i| lock_key(&requests[i]));
        let mut tx = pool.begin().await.unwrap();
        let mut outcomes = vec![None; requests.len()];
        for &i in &order {
            outcomes[i] = Some(apply_in(&mut tx, &requests[i]).await.unwrap());
        }
        tx.commit().await.unwrap();
        outcomes.into_iter().map(Option::unwrap).collect()
    }

    async fn snapshot(pool: &PgPool) -> Vec<String> {
        let mut rows: Vec<String> = sqlx::query_scalar(
            "SELECT (to_jsonb(c) - 'id' - 'origin_entry_point_id' - 'created_at' - 'updated_at'
                     - 'last_activity_at' - 'user_id')::text
                    || coalesce((SELECT external_id FROM customers WHERE id::text = c.user_id), c.user_id, '-')
               FROM conversations c",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        rows.extend(
            sqlx::query_scalar::<_, String>(
                "SELECT (to_jsonb(m) - 'id' - 'conversation_id' - 'entry_point_id' - 'customer_id' - 'user_id'
                         - 'received_at' - 'updated_at')::text
                        || (SELECT thread_key FROM conversations WHERE id = m.conversation_id)
                        || coalesce((SELECT external_id FROM customers WHERE id = m.customer_id), '-')
                   FROM messages m",
            )
            .fetch_all(pool)
            .await
            .unwrap(),
        );
        rows.extend(
            sqlx::query_scalar::<_, String>(
                "SELECT (to_jsonb(c) - 'id' - 'created_at' - 'updated_at')::text FROM customers c",
            )
            .fetch_all(pool)
            .await
            .unwrap(),
        );
        rows.sort();
        rows
    }

    #[tokio::test]
    async fn batched_appends_match_one_by_one() {
        let (fast, ep_fast, fast_name) = fresh_db().await;
        let (slow, ep_slow, slow_name) = fresh_db().await;
        for seed in 0..8u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let batch = rng.random_range(1..40);
            let offset = seed as usize * 1000;
            let mut requests: Vec<usize> = (0..batch).map(|i| offset + i).collect();
            // Some redeliveries of earlier batches.
            if seed > 0 {
                requests.push((seed as usize - 1) * 1000);
            }
            let mut rng_fast = rand::rngs::StdRng::seed_from_u64(seed + 100);
            let mut rng_slow = rand::rngs::StdRng::seed_from_u64(seed + 100);
            let a: Vec<UpdateRequest> = requests.iter().map(|&i| request(&mut rng_fast, ep_fast, i)).collect();
            let b: Vec<UpdateRequest> = requests.iter().map(|&i| request(&mut rng_slow, ep_slow, i)).collect();
            assert!(appends_only(&a));
            let fast_out = apply_batch(&fast, &a).await.unwrap();
            let slow_out = apply_one_by_one(&slow, &b).await;
            let effects = |o: &[UpdateOutcome]| o.iter().map(|o| o.effect).collect::<Vec<_>>();
            assert_eq!(effects(&fast_out), effects(&slow_out), "seed {seed}");
            assert_eq!(snapshot(&fast).await, snapshot(&slow).await, "seed {seed}");
        }
        fast.close().await;
        slow.close().await;
        let mut admin = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres").await.unwrap();
        for name in [fast_name, slow_name] {
            sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)")).execute(&mut admin).await.unwrap();
        }
    }
}
