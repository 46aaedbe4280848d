//! Email adapter (inbound RFC 5322). Filled in by the email work.
