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
//! Concurrency: every change takes the conversation row lock (`SELECT … FOR NO KEY UPDATE`)
//! before it reads or writes anything derived, so concurrent workers serialise per
//! conversation (the weaker lock lets foreign-key checks of other tables through, such as the
//! preview search refresh, instead of queueing behind a batch).

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use intake_adapters::{ThreadRef, UpdateAction};

use sqlx::PgPool;
use uuid::Uuid;

/// Longest preview kept on a conversation, in characters.
pub const PREVIEW_CHARS: usize = 200;
/// How often a batch is retried after a deadlock or serialization failure.
const DEADLOCK_RETRIES: usize = 3;
/// Longest idempotency key (`message.id`, a Message-ID, an edit's or status's key).
pub const MAX_KEY_BYTES: usize = 998;
/// Longest thread key, sender id or sender address: each is a key of a btree index, which
/// PostgreSQL cannot hold beyond ~2.7 KB (SQLSTATE 54000), so longer ones are refused up front.
pub const MAX_INDEXED_BYTES: usize = 1000;

/// Message times further in the future than this (seconds) are clamped to the receive time
/// (`INTAKE_MAX_FUTURE_SKEW`): a date of 2099 would otherwise freeze every forward-only
/// timestamp of its conversation for good.
static MAX_FUTURE_SKEW_SECS: AtomicI64 = AtomicI64::new(24 * 3600);

/// Set the allowed future skew of message times for this process.
pub fn set_max_future_skew(skew: std::time::Duration) {
    // Anything beyond a century means "never clamp"; capped so the addition cannot overflow.
    const CENTURY_SECS: u64 = 100 * 366 * 86400;
    MAX_FUTURE_SKEW_SECS.store(skew.as_secs().min(CENTURY_SECS) as i64, Ordering::Relaxed);
}

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
    /// Sets `closedAt` with it (closed: now unless already closed; open/pending: cleared) and
    /// is recorded as a `status-change` message when it changes. (`closedAt` alone sets the
    /// status too, without a timeline message.)
    pub status: Option<ConversationStatus>,
    pub priority: Option<Priority>,
}

/// A conversation's status (Stack Auth's): `pending` means an agent answered last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConversationStatus {
    Open,
    Pending,
    Closed,
}

impl ConversationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationStatus::Open => "open",
            ConversationStatus::Pending => "pending",
            ConversationStatus::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }
}

/// What kind of timeline entry an appended message is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MessageType {
    /// From the customer or an agent: counts for every timestamp and rule.
    #[default]
    Message,
    /// Between agents: never sent to the customer, never inbound/outbound, never a reply; it
    /// only moves `lastActivityAt`.
    InternalNote,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Message => "message",
            MessageType::InternalNote => "internal-note",
        }
    }
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
    /// The caller chose the key (HTTP API): the same key with other content is refused
    /// ([`UpdateError::KeyReused`]) instead of being stored as another message under a derived
    /// key, as channel traffic is (a reused Message-ID).
    pub reject_reused_key: bool,
    pub message_type: MessageType,
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
    /// An edit, delete or status whose message has not arrived: kept in `parked_updates` and
    /// applied when the message comes (`conversation_id` is nil then).
    Parked,
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
    #[error("message id `{key}` was already used for a message with other content")]
    KeyReused { key: String },
    #[error("invalid update: {0}")]
    Invalid(String),
    #[error("{field} is {bytes} bytes, over the {limit}-byte limit")]
    TooLong { field: &'static str, bytes: usize, limit: usize },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl UpdateError {
    /// Deadlocks, serialization failures and a row a concurrent transaction was creating
    /// (`RowNotFound` after losing an insert race) go away when the transaction is tried again.
    fn is_retryable_conflict(&self) -> bool {
        match self {
            UpdateError::Database(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("40P01") | Some("40001"))
            }
            UpdateError::Database(sqlx::Error::RowNotFound) => true,
            _ => false,
        }
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
    let clamped = clamp_future_times(requests, Utc::now());
    let requests = clamped.as_deref().unwrap_or(requests);
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
    // Plain new messages take the set-based path together; the rest (and all of them when the
    // set-based path declines, before writing anything, because a key came back with other
    // content) go one at a time, in the same transaction.
    let eligible = set_based_eligible(requests);
    let plain: Vec<usize> = order.iter().copied().filter(|&i| eligible[i]).collect();
    let mut outcomes = vec![None; requests.len()];
    let mut rest: Vec<usize> = order.to_vec();
    if !plain.is_empty() {
        if let Some(set) = apply_appends(&mut tx, requests, &plain).await? {
            outcomes = set;
            rest.retain(|&i| !eligible[i]);
        }
    }
    for i in rest {
        outcomes[i] = Some(apply_in(&mut tx, &requests[i]).await?);
    }
    let outcomes = outcomes.into_iter().map(|o| o.expect("every request applied")).collect();
    tx.commit().await?;
    Ok(outcomes)
}

/// Which requests of a batch can take the set-based path: new messages through an entry point
/// (the worker's usual traffic), found by thread key or by references, whose key is nowhere
/// else in the batch. Anything else (edits, statuses, attributes, reply tokens, pending email, a
/// key twice, a reply to such a request of the batch) is applied one update at a time, after
/// the set-based part.
fn set_based_eligible(requests: &[UpdateRequest]) -> Vec<bool> {
    let mut seen: std::collections::HashMap<(&str, &str), usize> = std::collections::HashMap::new();
    for r in requests {
        if let Some(action) = &r.action {
            *seen.entry((r.project_id.as_str(), action_key(action))).or_default() += 1;
        }
    }
    let mut eligible: Vec<bool> = requests
        .iter()
        .map(|r| {
            let (Some(UpdateAction::Append(m)), Target::Channel { thread, .. }) = (&r.action, &r.target) else {
                return false;
            };
            thread.conversation_id_hint.is_none()
                && !r.extras.pending_delivery
                && r.extras.message_type == MessageType::Message
                && r.attributes.is_empty()
                && seen[&(r.project_id.as_str(), m.idempotency_key.as_str())] == 1
        })
        .collect();
    replies::keep_replies_resolvable(requests, &mut eligible);
    eligible
}

/// Whether the whole batch takes the set-based path.
#[cfg(test)]
fn appends_only(requests: &[UpdateRequest]) -> bool {
    set_based_eligible(requests).iter().all(|&e| e)
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

/// Copies of `requests` with every message time further than the allowed skew after `now`
/// moved to `now` (the original kept as `metadata.originalOccurredAt` on appended messages);
/// `None` when no time needs it (the usual case: nothing is copied).
fn clamp_future_times(requests: &[UpdateRequest], now: DateTime<Utc>) -> Option<Vec<UpdateRequest>> {
    let skew = chrono::Duration::seconds(MAX_FUTURE_SKEW_SECS.load(Ordering::Relaxed));
    let limit = now.checked_add_signed(skew).unwrap_or(DateTime::<Utc>::MAX_UTC);
    let time_of = |r: &UpdateRequest| match &r.action {
        Some(UpdateAction::Append(m)) => Some(m.occurred_at),
        Some(UpdateAction::Edit { edited_at: at, .. })
        | Some(UpdateAction::Delete { deleted_at: at, .. })
        | Some(UpdateAction::Status { at, .. }) => Some(*at),
        None => None,
    };
    if !requests.iter().any(|r| time_of(r).is_some_and(|t| t > limit)) {
        return None;
    }
    let mut copies = requests.to_vec();
    for request in &mut copies {
        let at = match &mut request.action {
            Some(UpdateAction::Append(m)) if m.occurred_at > limit => {
                m.metadata.insert("originalOccurredAt".into(), serde_json::Value::String(m.occurred_at.to_rfc3339()));
                &mut m.occurred_at
            }
            Some(UpdateAction::Edit { edited_at: at, .. })
            | Some(UpdateAction::Delete { deleted_at: at, .. })
            | Some(UpdateAction::Status { at, .. })
                if *at > limit =>
            {
                at
            }
            _ => continue,
        };
        tracing::info!(original = %at, "message time in the future clamped to the receive time");
        *at = now;
    }
    Some(copies)
}

fn validate(request: &UpdateRequest) -> Result<(), UpdateError> {
    let too_long = |field: &'static str, value: &str, limit: usize| {
        (value.len() > limit).then_some(UpdateError::TooLong { field, bytes: value.len(), limit })
    };
    if let Some(action) = &request.action {
        let key = action_key(action);
        if key.trim().is_empty() {
            return Err(UpdateError::Invalid("message.id must not be empty".into()));
        }
        if let Some(e) = too_long("the message id", key, MAX_KEY_BYTES) {
            return Err(e);
        }
    }
    if let Target::Channel { thread, .. } = &request.target {
        if let Some(e) = thread.key.as_deref().and_then(|k| too_long("the thread key", k, MAX_INDEXED_BYTES)) {
            return Err(e);
        }
    }
    if let Some(UpdateAction::Append(m)) = &request.action {
        let sender = &m.sender;
        if let Some(e) = sender.id.as_deref().and_then(|v| too_long("sender.id", v, MAX_INDEXED_BYTES)).or_else(|| {
            sender.primary_email.as_deref().and_then(|v| too_long("sender.primaryEmail", v, MAX_INDEXED_BYTES))
        }) {
            return Err(e);
        }
    }
    if request.extras.message_type == MessageType::InternalNote {
        match &request.action {
            Some(UpdateAction::Append(m)) if m.direction == intake_adapters::Direction::Outbound => {}
            _ => return Err(UpdateError::Invalid("an internal note is an outbound message from an agent".into())),
        }
        if request.extras.pending_delivery {
            return Err(UpdateError::Invalid("an internal note is never sent".into()));
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

mod appends;
mod attributes;
mod bumps;
mod changes;
mod one;
mod parked;
mod replies;
#[cfg(test)]
mod tests;

use appends::apply_appends;
use attributes::update_attributes;
use bumps::{bump_for_message, Bumps};
use changes::{change_message, touch};
pub use one::apply_in;
use one::{find_stored, lock_conversation, StoredMessage};
pub use parked::{list_parked, sweep_parked, ParkedView, SweepReport};
use replies::newest_stored;
