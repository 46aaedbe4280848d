//! Mailbox addresses: normalization, plus-addressing and the entry-point candidate list.

use std::collections::HashSet;

/// At most this many entry-point candidates are produced: the runtime may look each one up,
/// and a mail to thousands of recipients must not turn into thousands of lookups.
pub const MAX_CANDIDATES: usize = 50;

/// A lower-cased, trimmed `local@domain`, without angle brackets or a `mailto:` prefix;
/// `None` for anything that does not look like an address.
pub fn normalize(raw: &str) -> Option<String> {
    let mut s = raw.trim();
    if let Some(inner) = s.strip_prefix('<').and_then(|r| r.strip_suffix('>')) {
        s = inner.trim();
    }
    if s.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("mailto:")) {
        s = &s[7..];
    }
    let (local, domain) = s.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || s.len() > 320 {
        return None;
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';')) {
        return None;
    }
    Some(s.to_lowercase())
}

/// `support+tag@example.com` → `("support@example.com", "tag")`; `None` without a tag.
pub fn split_plus(address: &str) -> Option<(String, &str)> {
    let (local, domain) = address.rsplit_once('@')?;
    let (base, tag) = local.split_once('+')?;
    if base.is_empty() {
        return None;
    }
    Some((format!("{base}@{domain}"), tag))
}

/// The address without its plus tag.
pub fn without_plus(address: &str) -> String {
    split_plus(address).map(|(base, _)| base).unwrap_or_else(|| address.to_owned())
}

/// The domain part of an address.
pub fn domain(address: &str) -> Option<&str> {
    address.rsplit_once('@').map(|(_, d)| d).filter(|d| !d.is_empty())
}

/// A plus tag that is an intake conversation id (a UUID), in its canonical form.
pub fn conversation_token(tag: &str) -> Option<String> {
    uuid::Uuid::parse_str(tag.trim()).ok().map(|u| u.hyphenated().to_string())
}

/// The ordered, de-duplicated list of mailboxes a message may have been sent to.
#[derive(Debug, Default)]
pub struct Candidates {
    list: Vec<String>,
    seen: HashSet<String>,
    /// The first recipient plus tag that is a conversation id.
    pub conversation_hint: Option<String>,
}

impl Candidates {
    /// Add a recipient: the full address, then the address without its plus tag. A plus tag
    /// that is a UUID becomes the conversation hint (the first one wins).
    pub fn add_recipient(&mut self, address: &str) {
        self.add(address, true);
    }

    /// Add the sender last: a copy of a mail the mailbox sent itself finds the mailbox. Its
    /// plus tag is not a hint.
    pub fn add_sender(&mut self, address: &str) {
        self.add(address, false);
    }

    fn add(&mut self, address: &str, recipient: bool) {
        self.push(address.to_owned());
        if let Some((base, tag)) = split_plus(address) {
            if recipient && self.conversation_hint.is_none() {
                self.conversation_hint = conversation_token(tag);
            }
            self.push(base);
        }
    }

    fn push(&mut self, address: String) {
        if self.list.len() < MAX_CANDIDATES && !self.seen.contains(&address) {
            self.seen.insert(address.clone());
            self.list.push(address);
        }
    }

    pub fn into_list(self) -> Vec<String> {
        self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize("  Support@Example.COM ").as_deref(), Some("support@example.com"));
        assert_eq!(normalize("<ann@example.com>").as_deref(), Some("ann@example.com"));
        assert_eq!(normalize("mailto:ann@example.com").as_deref(), Some("ann@example.com"));
        assert_eq!(normalize("not an address"), None);
        assert_eq!(normalize("@example.com"), None);
        assert_eq!(normalize("ann@"), None);
        assert_eq!(normalize("a b@example.com"), None);
        assert_eq!(normalize(""), None);
    }

    #[test]
    fn conversation_tokens() {
        assert_eq!(
            conversation_token("0F8FAD5B-D9CB-469F-A165-70867728950E").as_deref(),
            Some("0f8fad5b-d9cb-469f-a165-70867728950e")
        );
        assert_eq!(conversation_token("newsletter"), None);
        assert_eq!(conversation_token(""), None);
    }

    #[test]
    fn plus_addressing() {
        assert_eq!(split_plus("support+abc@example.com"), Some(("support@example.com".into(), "abc")));
        assert_eq!(split_plus("support@example.com"), None);
        assert_eq!(split_plus("+abc@example.com"), None);
        assert_eq!(without_plus("support+a+b@example.com"), "support@example.com");
    }

    #[test]
    fn candidates_are_ordered_and_unique_with_the_uuid_hint() {
        let mut c = Candidates::default();
        c.add_recipient("support+0f8fad5b-d9cb-469f-a165-70867728950e@example.com");
        c.add_recipient("support@example.com");
        c.add_recipient("sales+newsletter@example.com");
        c.add_sender("support+1b4e28ba-2fa1-11d2-883f-0016d3cca427@example.com");
        assert_eq!(c.conversation_hint.as_deref(), Some("0f8fad5b-d9cb-469f-a165-70867728950e"));
        assert_eq!(
            c.into_list(),
            [
                "support+0f8fad5b-d9cb-469f-a165-70867728950e@example.com",
                "support@example.com",
                "sales+newsletter@example.com",
                "sales@example.com",
                "support+1b4e28ba-2fa1-11d2-883f-0016d3cca427@example.com",
            ]
        );
    }

    #[test]
    fn sender_tag_is_not_a_hint_and_the_list_is_capped() {
        let mut c = Candidates::default();
        c.add_sender("me+0f8fad5b-d9cb-469f-a165-70867728950e@example.com");
        assert_eq!(c.conversation_hint, None);
        for i in 0..200 {
            c.add_recipient(&format!("user{i}@example.com"));
        }
        assert_eq!(c.into_list().len(), MAX_CANDIDATES);
    }
}
