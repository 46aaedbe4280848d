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
use intake_adapters::{ThreadRef, UpdateAction};

use sqlx::PgPool;
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

mod appends;
mod attributes;
mod bumps;
mod changes;
mod one;
#[cfg(test)]
mod tests;

use appends::apply_appends;
use attributes::update_attributes;
use bumps::{bump_for_message, Bumps};
use changes::{change_message, touch};
pub use one::apply_in;
use one::find_message;
