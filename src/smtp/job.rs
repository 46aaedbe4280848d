//! What a send is asked and what it answers: the queued [`SendJob`], the worker's
//! [`SendOptions`], and the [`SendOutcome`] or [`SendError`] of an attempt.

use chrono::Utc;
use intake_adapters::UpdateAction;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::update::{MessageExtras, Target, UpdateRequest};

/// A queued request to send an agent reply (body of `email.<adapterKey>.outbound` messages).
/// The HTTP API queues jobs for messages it already stored; integrations may instead send
/// `body` (and `subject`, `senderDisplayName`) and the worker stores the message first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendJob {
    pub project_id: String,
    pub conversation_id: Uuid,
    /// Idempotency key of the message.
    pub message_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_display_name: Option<String>,
}

impl SendJob {
    /// A job for a message already stored (pending): what the API queues.
    pub fn for_stored(project_id: &str, conversation_id: Uuid, message_key: &str) -> Self {
        SendJob {
            project_id: project_id.to_owned(),
            conversation_id,
            message_key: message_key.to_owned(),
            body: None,
            subject: None,
            sender_display_name: None,
        }
    }

    /// The pending message a job with a body carries, as an update.
    pub fn append_request(&self) -> Option<UpdateRequest> {
        let body = self.body.clone()?;
        Some(UpdateRequest {
            project_id: self.project_id.clone(),
            target: Target::Conversation(self.conversation_id),
            action: Some(UpdateAction::Append(intake_adapters::NormalizedMessage {
                idempotency_key: self.message_key.clone(),
                direction: intake_adapters::Direction::Outbound,
                sender: intake_adapters::Sender {
                    display_name: self.sender_display_name.clone(),
                    ..Default::default()
                },
                subject: self.subject.clone(),
                body,
                attachments: vec![],
                occurred_at: Utc::now(),
                is_auto_reply: false,
                metadata: Default::default(),
                fingerprint: None,
            })),
            extras: MessageExtras { pending_delivery: true, reject_reused_key: true, ..Default::default() },
            attributes: Default::default(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later (connection refused, 4xx).
    #[error("{0}")]
    Transient(String),
    /// Another sender holds a live claim on the message: try again later (after its lease
    /// expired, if that sender died).
    #[error("{0}")]
    InProgress(String),
    /// Will not work as it is (5xx, no recipient, not an email conversation).
    #[error("{0}")]
    Permanent(String),
    /// The database failed before anything was sent: the environment's fault, not the
    /// message's; the worker retries without using up the job's attempts.
    #[error("{0}")]
    Database(String),
}

/// What the worker knows about the job being sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// A `failed` message may be claimed again (a dead-lettered job replayed on purpose).
    pub resend_failed: bool,
    /// No retry follows: a transient failure marks the message `failed`.
    pub last_attempt: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The SMTP server accepted the mail. `recorded`: this sender still owned the claim and
    /// recorded it as sent (false when another sender took over its expired claim, or the
    /// database stayed unreachable until the claim expired).
    Sent { message_id: String, recorded: bool },
    /// Nothing sent (a duplicate or redelivered job): `already_sent`, `failed` (a failed
    /// message is sent again only by a replay or the resend API) or `not_pending` (not a
    /// message intake delivers).
    Skipped { reason: &'static str },
}
