//! The email of an agent reply: addresses, subject and the threading headers
//! (`In-Reply-To`, `References`) that keep it in the customer's thread.

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::Message;
use uuid::Uuid;

/// The message to send and what its conversation says about the recipient.
#[derive(sqlx::FromRow)]
pub(super) struct PendingRow {
    pub(super) id: Uuid,
    pub(super) delivery_state: Option<String>,
    pub(super) body: String,
    pub(super) subject: Option<String>,
    pub(super) conversation_subject: Option<String>,
    pub(super) user_primary_email: Option<String>,
    pub(super) user_display_name: Option<String>,
    pub(super) channel_type: Option<String>,
    pub(super) external_channel_id: Option<String>,
    pub(super) sender_display_name: Option<String>,
}

pub(super) fn build_email(
    row: &PendingRow,
    mailbox: &str,
    customer: &str,
    message_id: &str,
    thread: &[(String, String)],
    conversation_id: Uuid,
) -> Result<Message, String> {
    let from_address = mailbox.parse().map_err(|e| format!("entry point mailbox `{mailbox}`: {e}"))?;
    let from = Mailbox::new(row.sender_display_name.clone(), from_address);
    let to_address = customer.parse().map_err(|e| format!("customer address `{customer}`: {e}"))?;
    let to = Mailbox::new(row.user_display_name.clone(), to_address);
    // Replies come back with the conversation id as a plus-address token.
    let reply_to = match mailbox.split_once('@') {
        Some((local, domain)) => format!("{local}+{conversation_id}@{domain}")
            .parse()
            .map(|a| Mailbox::new(row.sender_display_name.clone(), a))
            .ok(),
        None => None,
    };
    let base = row.subject.clone().or_else(|| row.conversation_subject.clone()).unwrap_or_default();
    let subject =
        if base.is_empty() || base.to_ascii_lowercase().starts_with("re:") { base } else { format!("Re: {base}") };
    let mut builder = Message::builder().from(from).to(to).subject(subject).message_id(Some(format!("<{message_id}>")));
    if let Some(reply_to) = reply_to {
        builder = builder.reply_to(reply_to);
    }
    if let Some((last_inbound, _)) = thread.iter().rev().find(|(_, direction)| direction == "inbound") {
        builder = builder.in_reply_to(format!("<{last_inbound}>"));
    }
    if !thread.is_empty() {
        let ids: Vec<&str> = thread.iter().map(|(id, _)| id.as_str()).collect();
        let references: Vec<String> = capped_references(&ids).iter().map(|id| format!("<{id}>")).collect();
        builder = builder.references(references.join(" "));
    }
    builder.header(ContentType::TEXT_PLAIN).body(row.body.clone()).map_err(|e| format!("cannot build the email: {e}"))
}

/// The `References` of a reply to `thread` (oldest first): at most
/// [`MAX_REFERENCES`](intake_adapters::email::MAX_REFERENCES) ids, the inbound cap, keeping the
/// first (the thread's root) and the newest ones, as RFC 5322 (3.6.4) suggests when trimming.
pub fn capped_references<'a>(thread: &[&'a str]) -> Vec<&'a str> {
    let max = intake_adapters::email::MAX_REFERENCES;
    if thread.len() <= max {
        return thread.to_vec();
    }
    std::iter::once(thread[0]).chain(thread[thread.len() - (max - 1)..].iter().copied()).collect()
}
