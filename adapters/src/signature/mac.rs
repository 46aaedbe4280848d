//! The HMACs the schemes sign with, and the constant-time comparison of their tags.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

use super::error::SignatureError;

pub(super) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

pub(super) fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Whether any expected tag equals any candidate, comparing every pair in constant time.
pub(super) fn matches_any(
    expected: impl Iterator<Item = Vec<u8>>,
    candidates: &[Vec<u8>],
) -> Result<(), SignatureError> {
    let mut found = Choice::from(0);
    for tag in expected {
        for candidate in candidates {
            found |= tag.as_slice().ct_eq(candidate.as_slice());
        }
    }
    if bool::from(found) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}
