//! Stack Auth's four typed PATCH bodies, turned into the same [`UpdateRequest`] intake's own
//! body makes: one update logic for both.

use chrono::Utc;
use intake_adapters::{Direction, NormalizedMessage, Sender, UpdateAction};
use serde::Deserialize;
use uuid::Uuid;

use super::error::ApiError;
use super::patch_body::double_option;
use super::request::{check_project_id, from_json};
use crate::update::{
    AttributeChanges, ConversationStatus, MessageExtras, MessageType, Priority, Target, UpdateRequest,
};

#[derive(Debug)]
pub(super) enum TypedPatchBody {
    Reply(TextBody),
    InternalNote(TextBody),
    Status(StatusBody),
    Metadata(MetadataBody),
}

/// `reply` and `internal-note`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct TextBody {
    project_id: Option<String>,
    body: String,
    /// intake's addition: the idempotency key (sending the same body again changes nothing).
    /// Without it every request is a new message, as in Stack Auth.
    id: Option<String>,
    /// intake's addition: the agent who writes.
    sender: Option<super::patch_body::SenderInput>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct StatusBody {
    project_id: Option<String>,
    status: ConversationStatus,
}

/// Only the fields sent change (Stack Auth clears omitted ones); null clears.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct MetadataBody {
    project_id: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    assigned_to_user_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    assigned_to_display_name: Option<Option<String>>,
    priority: Option<Priority>,
    #[serde(default, deserialize_with = "double_option")]
    tags: Option<Option<Vec<String>>>,
}

impl TypedPatchBody {
    /// Dispatch on `type` by hand (not a serde-tagged enum) so a 400 still names the field.
    pub(super) fn parse(mut json: serde_json::Value) -> Result<Self, ApiError> {
        let kind = json.as_object_mut().and_then(|o| o.remove("type"));
        match kind.as_ref().and_then(|k| k.as_str()) {
            Some("reply") => Ok(TypedPatchBody::Reply(from_json(json)?)),
            Some("internal-note") => Ok(TypedPatchBody::InternalNote(from_json(json)?)),
            Some("status") => Ok(TypedPatchBody::Status(from_json(json)?)),
            Some("metadata") => Ok(TypedPatchBody::Metadata(from_json(json)?)),
            _ => Err(ApiError::bad_request("type: must be reply, internal-note, status or metadata")),
        }
    }

    pub(super) fn into_request(self, project: &str, conversation_id: Uuid) -> Result<UpdateRequest, ApiError> {
        let mut request = UpdateRequest {
            project_id: project.to_owned(),
            target: Target::Conversation(conversation_id),
            action: None,
            extras: MessageExtras { reject_reused_key: true, ..Default::default() },
            attributes: AttributeChanges::default(),
        };
        match self {
            TypedPatchBody::Reply(text) => {
                check_project_id(text.project_id.as_deref(), project)?;
                request.action = Some(text.into_message()?);
            }
            TypedPatchBody::InternalNote(text) => {
                check_project_id(text.project_id.as_deref(), project)?;
                request.action = Some(text.into_message()?);
                request.extras.message_type = MessageType::InternalNote;
            }
            TypedPatchBody::Status(status) => {
                check_project_id(status.project_id.as_deref(), project)?;
                request.attributes.status = Some(status.status);
            }
            TypedPatchBody::Metadata(m) => {
                check_project_id(m.project_id.as_deref(), project)?;
                request.attributes = AttributeChanges {
                    assigned_to_user_id: m.assigned_to_user_id,
                    assigned_to_display_name: m.assigned_to_display_name,
                    priority: m.priority,
                    tags: m.tags.map(Option::unwrap_or_default),
                    ..Default::default()
                };
                if request.attributes.is_empty() {
                    return Err(ApiError::bad_request("body: a metadata body needs at least one field"));
                }
            }
        }
        Ok(request)
    }
}

impl TextBody {
    /// An outbound message from an agent, now; the body trimmed and non-empty.
    fn into_message(self) -> Result<UpdateAction, ApiError> {
        let body = self.body.trim();
        if body.is_empty() {
            return Err(ApiError::bad_request("body: must not be empty"));
        }
        let sender = self.sender.map_or_else(Sender::default, |s| Sender {
            id: s.id,
            display_name: s.display_name,
            primary_email: s.primary_email,
            profile_image_url: s.profile_image_url,
        });
        Ok(UpdateAction::Append(NormalizedMessage {
            idempotency_key: self.id.unwrap_or_else(|| format!("api:{}", Uuid::new_v4())),
            direction: Direction::Outbound,
            sender,
            subject: None,
            body: body.to_owned(),
            attachments: vec![],
            occurred_at: Utc::now(),
            is_auto_reply: false,
            metadata: Default::default(),
            fingerprint: None,
        }))
    }
}
