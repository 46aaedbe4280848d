//! Folding new messages into their conversation rows, forward-only.

use super::*;
use chrono::{DateTime, Utc};
use intake_adapters::{preview_of, Direction, NormalizedMessage};
use sqlx::PgConnection;
use std::collections::HashMap;
use uuid::Uuid;

/// Fold one new message into the conversation row, forward-only. `customer_id` is the one
/// the insert resolved (passed on rather than read back: no lookup per message).
pub(super) async fn bump_for_message(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    message: &NormalizedMessage,
    customer_id: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    let mut bumps = Bumps::default();
    bumps.push(conversation_id, message, customer_id);
    bumps.execute(conn).await
}

/// New messages folded per conversation, applied with one `UPDATE` per round: the same result
/// as one statement per message in order, with one row update per conversation and batch.
///
/// Every rule of the row is a maximum, a minimum or a first non-null value over the messages,
/// so consecutive messages of a conversation fold into one, except the customer profile: a
/// message that is not the newest fills only the fields the newer ones left empty, so customer
/// messages with different profiles go to successive rounds (a conversation appears once per
/// statement).
#[derive(Default)]
pub(super) struct Bumps {
    folds: Vec<Fold>,
    latest: HashMap<Uuid, usize>,
}

/// What a conversation's messages of one round change.
struct Fold {
    conversation_id: Uuid,
    round: usize,
    /// The newest message: its time, key and preview.
    at: DateTime<Utc>,
    key: String,
    preview: String,
    subject: Option<String>,
    inbound_at: Option<DateTime<Utc>>,
    outbound_at: Option<DateTime<Utc>>,
    /// Customer messages (inbound, not auto-replies): newest and oldest.
    customer_at: Option<DateTime<Utc>>,
    customer_first: Option<DateTime<Utc>>,
    /// Agent replies (outbound, not auto-replies): newest and oldest.
    agent_at: Option<DateTime<Utc>>,
    agent_first: Option<DateTime<Utc>>,
    /// The customer messages' profile (all equal within a fold).
    profile: Option<Profile>,
}

#[derive(Clone, PartialEq)]
struct Profile {
    customer_id: Option<String>,
    display_name: Option<String>,
    email: Option<String>,
    image: Option<String>,
}

fn later(a: Option<DateTime<Utc>>, b: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(a.map_or(b, |a| a.max(b)))
}

fn earlier(a: Option<DateTime<Utc>>, b: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(a.map_or(b, |a| a.min(b)))
}

fn preview(message: &NormalizedMessage) -> String {
    let source = message.metadata.get("previewText").and_then(|v| v.as_str()).unwrap_or(&message.body);
    preview_of(source, PREVIEW_CHARS)
}

impl Bumps {
    pub(super) fn push(&mut self, conversation_id: Uuid, message: &NormalizedMessage, customer_id: Option<Uuid>) {
        let inbound = message.direction == Direction::Inbound;
        let customer_reply = inbound && !message.is_auto_reply;
        let agent_reply = !inbound && !message.is_auto_reply;
        let profile = customer_reply.then(|| Profile {
            customer_id: customer_id.map(|id| id.to_string()),
            display_name: message.sender.display_name.clone(),
            email: message.sender.primary_email.clone().or(message.sender.id.clone().filter(|id| id.contains('@'))),
            image: message.sender.profile_image_url.clone(),
        });
        let at = message.occurred_at;
        let open = self.latest.get(&conversation_id).copied();
        let fold = match open {
            Some(i) if profile.is_none() || self.folds[i].profile.is_none() || self.folds[i].profile == profile => {
                let fold = &mut self.folds[i];
                if (at, message.idempotency_key.as_str()) > (fold.at, fold.key.as_str()) {
                    fold.at = at;
                    fold.key.clone_from(&message.idempotency_key);
                    fold.preview = preview(message);
                }
                if fold.subject.is_none() {
                    fold.subject.clone_from(&message.subject);
                }
                fold
            }
            _ => {
                self.latest.insert(conversation_id, self.folds.len());
                self.folds.push(Fold {
                    conversation_id,
                    round: open.map_or(0, |i| self.folds[i].round + 1),
                    at,
                    key: message.idempotency_key.clone(),
                    preview: preview(message),
                    subject: message.subject.clone(),
                    inbound_at: None,
                    outbound_at: None,
                    customer_at: None,
                    customer_first: None,
                    agent_at: None,
                    agent_first: None,
                    profile: None,
                });
                self.folds.last_mut().expect("just pushed")
            }
        };
        if inbound {
            fold.inbound_at = later(fold.inbound_at, at);
        } else {
            fold.outbound_at = later(fold.outbound_at, at);
        }
        if customer_reply {
            fold.customer_at = later(fold.customer_at, at);
            fold.customer_first = earlier(fold.customer_first, at);
            fold.profile = profile;
        }
        if agent_reply {
            fold.agent_at = later(fold.agent_at, at);
            fold.agent_first = earlier(fold.agent_first, at);
        }
    }

    pub(super) async fn execute(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let rounds = self.folds.iter().map(|f| f.round + 1).max().unwrap_or(0);
        for round in 0..rounds {
            let folds: Vec<&Fold> = self.folds.iter().filter(|f| f.round == round).collect();
            apply_round(conn, &folds).await?;
        }
        Ok(())
    }
}

async fn apply_round(conn: &mut PgConnection, folds: &[&Fold]) -> Result<(), sqlx::Error> {
    let profile = |f: &&Fold, field: fn(&Profile) -> &Option<String>| f.profile.as_ref().and_then(|p| field(p).clone());
    // The list's order (conversation_activity) follows last_activity_at in the same statement,
    // and the preview's search entry is queued (store/search.rs).
    sqlx::query(
        "WITH moved AS (UPDATE conversations c SET
            last_message_at = GREATEST(c.last_message_at, m.at),
            last_activity_at = GREATEST(c.last_activity_at, m.at),
            last_inbound_at = GREATEST(c.last_inbound_at, m.inbound_at),
            last_outbound_at = GREATEST(c.last_outbound_at, m.outbound_at),
            last_customer_reply_at = GREATEST(c.last_customer_reply_at, m.customer_at),
            last_agent_reply_at = GREATEST(c.last_agent_reply_at, m.agent_at),
            preview = CASE WHEN c.preview_at IS NULL OR (m.at, m.key) > (c.preview_at, c.preview_key)
                           THEN m.preview ELSE c.preview END,
            preview_key = CASE WHEN c.preview_at IS NULL OR (m.at, m.key) > (c.preview_at, c.preview_key)
                               THEN m.key ELSE c.preview_key END,
            preview_at = GREATEST(c.preview_at, m.at),
            subject = COALESCE(c.subject, m.subject),
            -- The profile of the newest customer message wins; an older one fills gaps only.
            user_id = CASE WHEN m.customer_at IS NULL OR c.user_id_from_caller THEN c.user_id
                           WHEN c.profile_at IS NULL OR m.customer_at >= c.profile_at THEN COALESCE(m.customer_id, c.user_id)
                           ELSE COALESCE(c.user_id, m.customer_id) END,
            user_display_name = CASE WHEN m.customer_at IS NULL THEN c.user_display_name
                           WHEN c.profile_at IS NULL OR m.customer_at >= c.profile_at
                               THEN COALESCE(m.display_name, c.user_display_name)
                           ELSE COALESCE(c.user_display_name, m.display_name) END,
            user_primary_email = CASE WHEN m.customer_at IS NULL THEN c.user_primary_email
                           WHEN c.profile_at IS NULL OR m.customer_at >= c.profile_at
                               THEN COALESCE(m.email, c.user_primary_email)
                           ELSE COALESCE(c.user_primary_email, m.email) END,
            user_profile_image_url = CASE WHEN m.customer_at IS NULL THEN c.user_profile_image_url
                           WHEN c.profile_at IS NULL OR m.customer_at >= c.profile_at
                               THEN COALESCE(m.image, c.user_profile_image_url)
                           ELSE COALESCE(c.user_profile_image_url, m.image) END,
            profile_at = GREATEST(c.profile_at, m.customer_at),
            closed_at = CASE WHEN c.closed_at IS NOT NULL AND m.customer_at > c.closed_at THEN NULL
                             ELSE c.closed_at END,
            -- Stack Auth's transitions (an agent reply: pending; a customer message: open), as a
            -- function of the forward-only reply times so that any arrival order gives the same
            -- status (a tie is the customer's); a customer message also reopens a closed one,
            -- as it clears closedAt. Other messages (auto-replies) leave it.
            status = CASE
                WHEN m.customer_at IS NULL AND m.agent_at IS NULL THEN c.status
                WHEN c.status = 'closed' AND NOT coalesce(c.closed_at IS NOT NULL AND m.customer_at > c.closed_at, false)
                    THEN 'closed'
                WHEN GREATEST(c.last_customer_reply_at, m.customer_at) IS NOT NULL
                     AND (GREATEST(c.last_agent_reply_at, m.agent_at) IS NULL
                          OR GREATEST(c.last_customer_reply_at, m.customer_at)
                             >= GREATEST(c.last_agent_reply_at, m.agent_at))
                    THEN 'open'
                ELSE 'pending' END,
            -- The first agent reply at or after the first customer message, kept by comparison;
            -- only a customer message older than every earlier one, or an agent reply older than
            -- the first customer message, reads the conversation's messages again.
            first_customer_message_at = LEAST(c.first_customer_message_at, m.customer_first),
            first_response_at = CASE
                WHEN m.customer_first < c.first_customer_message_at
                     OR (m.customer_first IS NOT NULL AND c.first_customer_message_at IS NULL)
                    THEN CASE WHEN c.last_outbound_at IS NULL AND m.outbound_at IS NULL THEN NULL ELSE (
                        SELECT min(o.occurred_at) FROM messages o
                         WHERE o.conversation_id = c.id AND o.direction = 'outbound' AND NOT o.is_auto_reply
                           AND o.message_type = 'message' AND coalesce(o.delivery_state, 'sent') = 'sent'
                           AND o.occurred_at >= m.customer_first) END
                WHEN m.agent_first IS NULL OR c.first_customer_message_at IS NULL THEN c.first_response_at
                WHEN m.agent_first >= c.first_customer_message_at THEN LEAST(c.first_response_at, m.agent_first)
                ELSE (
                    SELECT min(o.occurred_at) FROM messages o
                     WHERE o.conversation_id = c.id AND o.direction = 'outbound' AND NOT o.is_auto_reply
                       AND o.message_type = 'message' AND coalesce(o.delivery_state, 'sent') = 'sent'
                       AND o.occurred_at >= c.first_customer_message_at) END,
            updated_at = now()
         FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                     $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[],
                     $12::text[], $13::text[], $14::text[], $15::text[])
              AS m(id, at, key, preview, subject, inbound_at, outbound_at, customer_at, customer_first, agent_at,
                   agent_first, customer_id, display_name, email, image)
         WHERE c.id = m.id
         RETURNING c.id, c.last_activity_at),
         queued AS (INSERT INTO conversation_search_queue (conversation_id) SELECT id FROM moved)
         UPDATE conversation_activity a SET last_activity_at = moved.last_activity_at FROM moved
          WHERE a.conversation_id = moved.id AND a.last_activity_at <> moved.last_activity_at",
    )
    .bind(folds.iter().map(|f| f.conversation_id).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| f.at).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| f.key.as_str()).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| f.preview.as_str()).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| f.subject.as_deref()).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| f.inbound_at).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| f.outbound_at).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| f.customer_at).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| f.customer_first).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| f.agent_at).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| f.agent_first).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| profile(f, |p| &p.customer_id)).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| profile(f, |p| &p.display_name)).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| profile(f, |p| &p.email)).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| profile(f, |p| &p.image)).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}
