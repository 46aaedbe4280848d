//! Why a request's signature was not accepted.

/// Why a request's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A required header (named, lower-case) is absent or empty.
    #[error("missing header: {0}")]
    Missing(&'static str),
    /// A header is present but not in the scheme's format.
    #[error("malformed signature header: {0}")]
    Malformed(String),
    /// Well-formed, but no secret produces the signature the request carries.
    #[error("signature mismatch")]
    Mismatch,
    /// The signed timestamp is too far from now (a replay, or a badly skewed clock).
    #[error("timestamp {timestamp} is more than {tolerance_secs}s away from now ({now})")]
    TimestampOutOfTolerance { timestamp: i64, now: i64, tolerance_secs: i64 },
    /// The configured secret cannot be used (empty, or not base64 where the scheme needs it).
    #[error("invalid verification secret: {0}")]
    InvalidSecret(String),
}

impl SignatureError {
    /// Stable machine-readable reason, for logs, metrics labels and dead-letter headers.
    pub fn reason_code(&self) -> &'static str {
        match self {
            SignatureError::Missing(_) => "signature_missing",
            SignatureError::Malformed(_) => "signature_malformed",
            SignatureError::Mismatch => "signature_mismatch",
            SignatureError::TimestampOutOfTolerance { .. } => "signature_timestamp_out_of_tolerance",
            SignatureError::InvalidSecret(_) => "signature_secret_invalid",
        }
    }
}
