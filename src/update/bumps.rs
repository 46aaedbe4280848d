//! Folding new messages into their conversation rows, forward-only.

use super::*;
use chrono::{DateTime, Utc};
use intake_adapters::{preview_of, Direction, NormalizedMessage};
use sqlx::PgConnection;
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

/// Folds messages into their conversation rows with one statement: each conversation may
/// appear once per statement, so a batch is applied in rounds (the n-th new message of every
/// conversation in round n), which gives the same result as one statement per message in order.
#[derive(Default)]
pub(super) struct Bumps {
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
    pub(super) fn push(&mut self, conversation_id: Uuid, message: &NormalizedMessage, customer_id: Option<Uuid>) {
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

    pub(super) async fn execute(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
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
            user_id = CASE WHEN NOT m.customer_reply OR c.user_id_from_caller THEN c.user_id
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
            -- Stack Auth's transitions (an agent reply: pending; a customer message: open), as a
            -- function of the forward-only reply times so that any arrival order gives the same
            -- status (a tie is the customer's); a customer message also reopens a closed one,
            -- as it clears closedAt. Other messages (auto-replies) leave it.
            status = CASE
                WHEN NOT m.customer_reply AND (m.inbound OR m.auto) THEN c.status
                WHEN c.status = 'closed' AND NOT (m.customer_reply AND c.closed_at IS NOT NULL AND m.at > c.closed_at)
                    THEN 'closed'
                WHEN m.customer_reply AND (c.last_agent_reply_at IS NULL OR GREATEST(c.last_customer_reply_at, m.at)
                                                                            >= c.last_agent_reply_at)
                    THEN 'open'
                WHEN NOT m.customer_reply AND c.last_customer_reply_at IS NOT NULL
                     AND c.last_customer_reply_at >= GREATEST(c.last_agent_reply_at, m.at)
                    THEN 'open'
                ELSE 'pending' END,
            first_response_at = (
                SELECT min(o.occurred_at) FROM messages o
                 WHERE o.conversation_id = c.id AND o.direction = 'outbound' AND NOT o.is_auto_reply
                   AND o.message_type = 'message'
                   AND coalesce(o.delivery_state, 'sent') = 'sent'
                   AND o.occurred_at >= (
                       SELECT min(i.occurred_at) FROM messages i
                        WHERE i.conversation_id = c.id AND i.direction = 'inbound' AND NOT i.is_auto_reply
                          AND i.message_type = 'message')),
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
