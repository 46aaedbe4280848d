//! intake's own PATCH body (a message and/or attributes) and its parts, read strictly: an
//! unknown field anywhere answers 400 naming it.

use chrono::{DateTime, Utc};
use intake_adapters::{Attachment, Direction, NormalizedMessage, Sender, UpdateAction};
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use crate::update::{AttributeChanges, ConversationStatus, MessageExtras, Priority, Target, UpdateRequest};

/// `Some(None)` for an explicit null, `None` when the field is absent.
pub(super) fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct PatchConversationBody {
    message: Option<MessageInput>,
    #[serde(default, deserialize_with = "double_option")]
    subject: Option<Option<String>>,
    metadata: Option<MetadataInput>,
    #[serde(default, deserialize_with = "double_option")]
    user_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    team_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    closed_at: Option<Option<DateTime<Utc>>>,
    /// null clears it (to `{}`), as null clears every other attribute.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Object>)]
    record_metadata: Option<Option<serde_json::Map<String, serde_json::Value>>>,
    /// Also sets closedAt (closed: now, unless already closed; open/pending: cleared).
    status: Option<ConversationStatus>,
    priority: Option<Priority>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetadataInput {
    /// null clears the tags (to `[]`).
    #[serde(default, deserialize_with = "double_option")]
    tags: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "double_option")]
    assigned_to_user_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    assigned_to_display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    first_response_due_at: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "double_option")]
    next_response_due_at: Option<Option<DateTime<Utc>>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SenderInput {
    pub(super) id: Option<String>,
    pub(super) display_name: Option<String>,
    pub(super) primary_email: Option<String>,
    pub(super) profile_image_url: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MessageInput {
    /// The idempotency key.
    id: String,
    #[schema(value_type = String, example = "inbound")]
    direction: Direction,
    sender: Option<SenderInput>,
    user_id: Option<String>,
    team_id: Option<String>,
    subject: Option<String>,
    body: String,
    #[serde(default)]
    attachments: Vec<AttachmentInput>,
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    is_auto_reply: bool,
    #[serde(default)]
    #[schema(value_type = Object)]
    metadata: serde_json::Map<String, serde_json::Value>,
}

/// An attachment's metadata as a client sends it. Its own type (not the adapters'
/// `Attachment`) so that an unknown field is refused like everywhere else in the body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AttachmentInput {
    filename: Option<String>,
    content_type: Option<String>,
    size: Option<u64>,
    content_id: Option<String>,
    sha256: Option<String>,
    url: Option<String>,
    #[serde(default)]
    inline: bool,
}

impl From<AttachmentInput> for Attachment {
    fn from(a: AttachmentInput) -> Self {
        Attachment {
            filename: a.filename,
            content_type: a.content_type,
            size: a.size,
            content_id: a.content_id,
            sha256: a.sha256,
            url: a.url,
            inline: a.inline,
            ..Default::default()
        }
    }
}

impl PatchConversationBody {
    pub(super) fn into_request(self, project_id: String, conversation_id: Uuid) -> UpdateRequest {
        let metadata = self.metadata;
        let attributes = AttributeChanges {
            subject: self.subject,
            tags: metadata.as_ref().and_then(|m| m.tags.clone()).map(Option::unwrap_or_default),
            assigned_to_user_id: metadata.as_ref().and_then(|m| m.assigned_to_user_id.clone()),
            assigned_to_display_name: metadata.as_ref().and_then(|m| m.assigned_to_display_name.clone()),
            first_response_due_at: metadata.as_ref().and_then(|m| m.first_response_due_at),
            next_response_due_at: metadata.as_ref().and_then(|m| m.next_response_due_at),
            user_id: self.user_id,
            team_id: self.team_id,
            closed_at: self.closed_at,
            record_metadata: self.record_metadata.map(Option::unwrap_or_default),
            status: self.status,
            priority: self.priority,
        };
        let mut extras = MessageExtras::default();
        let action = self.message.map(|m| {
            extras =
                MessageExtras { user_id: m.user_id, team_id: m.team_id, reject_reused_key: true, ..Default::default() };
            let sender = m.sender.map_or_else(Sender::default, |s| Sender {
                id: s.id,
                display_name: s.display_name,
                primary_email: s.primary_email,
                profile_image_url: s.profile_image_url,
            });
            UpdateAction::Append(NormalizedMessage {
                idempotency_key: m.id,
                direction: m.direction,
                sender,
                subject: m.subject,
                body: m.body,
                attachments: m.attachments.into_iter().map(Attachment::from).collect(),
                occurred_at: m.created_at.unwrap_or_else(Utc::now),
                is_auto_reply: m.is_auto_reply,
                metadata: m.metadata,
                fingerprint: None,
            })
        });
        UpdateRequest { project_id, target: Target::Conversation(conversation_id), action, extras, attributes }
    }
}
