//! `RCPT TO` against the registered email entry points, folded the way the email adapter folds
//! addresses: lower-cased, and `support+tag@example.com` falls back to `support@example.com`.

use intake_adapters::ChannelType;
use sqlx::PgPool;

use crate::store::{self, ResolveError};

/// The entry point a recipient address delivers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub entry_point_id: uuid::Uuid,
    pub project_id: String,
    pub adapter_key: String,
    /// As registered (normalized): the published message's external channel id.
    pub external_channel_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no email entry point for `{0}`")]
    Unknown(String),
    #[error("`{0}` is an entry point of several projects and none owns its unscoped mail")]
    Ambiguous(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The addresses to try for a recipient, in order: the address itself (lower-cased), then
/// without its `+tag`.
pub fn candidates(recipient: &str) -> Vec<String> {
    let address = store::normalize_external_channel_id(ChannelType::Email, recipient);
    let mut list = vec![address.clone()];
    if let Some((local, domain)) = address.rsplit_once('@') {
        if let Some((base, _tag)) = local.split_once('+').filter(|(base, _)| !base.is_empty()) {
            list.push(format!("{base}@{domain}"));
        }
    }
    list
}

/// The mailbox `recipient` delivers to.
pub async fn find_mailbox(pool: &PgPool, recipient: &str) -> Result<Mailbox, LookupError> {
    for candidate in candidates(recipient) {
        match store::resolve_entry_point(pool, ChannelType::Email, &candidate, None).await {
            Ok(ep) => {
                return Ok(Mailbox {
                    entry_point_id: ep.id,
                    project_id: ep.project_id,
                    adapter_key: ep.adapter_key,
                    external_channel_id: ep.external_channel_id,
                })
            }
            Err(ResolveError::Unknown { .. }) => continue,
            Err(ResolveError::Ambiguous { .. }) => return Err(LookupError::Ambiguous(candidate)),
            Err(ResolveError::Database(e)) => return Err(LookupError::Database(e)),
        }
    }
    Err(LookupError::Unknown(recipient.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::candidates;

    #[test]
    fn plus_tags_and_case_fold_like_the_adapter() {
        assert_eq!(candidates("Support@Example.COM"), ["support@example.com"]);
        assert_eq!(candidates("<Support+Order-7@example.com>"), ["support+order-7@example.com", "support@example.com"]);
        assert_eq!(candidates("+x@example.com"), ["+x@example.com"]);
    }
}
