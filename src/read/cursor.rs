//! Opaque keyset cursors. A cursor is the sort key of the last row a page returned, so the
//! next page starts right after it however many rows were added meanwhile (no offsets that
//! shift under concurrent appends).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};

/// A position in a sort order of `(time, tie-breaker)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at: DateTime<Utc>,
    pub tie: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}|{}", self.at.timestamp_micros(), self.tie))
    }

    /// `None` for anything this API did not hand out.
    pub fn decode(raw: &str) -> Option<Cursor> {
        let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (micros, tie) = text.split_once('|')?;
        let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        Some(Cursor { at, tie: tie.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let c = Cursor { at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(), tie: "a|b c".into() };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("not a cursor!"), None);
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode("x|y")), None);
    }
}
