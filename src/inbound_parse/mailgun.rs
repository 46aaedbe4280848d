//! Mailgun routes, `forward("https://…/hooks/inbound-mail/mailgun")`: Mailgun posts the parsed
//! mail, and with a URL ending in `mime` (`…/mailgun/mime`) the full message in `body-mime`.
//! Signed: `signature` = hex HMAC-SHA256 of `timestamp` + `token` with the account's HTTP
//! webhook signing key. Source: Mailgun docs, "Receiving Messages via HTTP through a forward()
//! action" (fields `recipient`, `sender`, `body-mime`) and "Securing Webhooks".

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::form::Form;
use super::{InboundError, InboundMail};

pub fn verify(form: &Form, signing_key: &str, now: i64, tolerance: i64) -> Result<(), InboundError> {
    let (Some(timestamp), Some(token), Some(signature)) =
        (form.text("timestamp"), form.text("token"), form.text("signature"))
    else {
        return Err(InboundError::Unauthorized("timestamp, token and signature are required".into()));
    };
    let at: i64 =
        timestamp.trim().parse().map_err(|_| InboundError::Unauthorized("timestamp is not a number".into()))?;
    if (now - at).abs() > tolerance {
        return Err(InboundError::Unauthorized("timestamp outside the tolerance (replayed?)".into()));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(signing_key.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    if bool::from(expected.as_bytes().ct_eq(signature.trim().to_ascii_lowercase().as_bytes())) {
        Ok(())
    } else {
        Err(InboundError::Unauthorized("signature does not match".into()))
    }
}

pub fn mail(form: &Form) -> Result<InboundMail, InboundError> {
    let raw = form
        .bytes("body-mime")
        .ok_or_else(|| InboundError::BadRequest("no `body-mime`: use a forward() URL ending in `mime`".into()))?;
    let recipients = form
        .text("recipient")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(InboundMail {
        recipients,
        mail_from: form.text("sender").map(str::to_owned),
        provider_id: form.text("token").map(str::to_owned),
        raw: raw.to_vec(),
    })
}
