//! Twilio's request validation: `X-Twilio-Signature` over the URL and the form parameters.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::error::SignatureError;
use super::inputs::{plain_secrets, required};
use super::mac::{hmac_sha1, matches_any};

pub const TWILIO_SIGNATURE_HEADER: &str = "x-twilio-signature";

/// Verify a Twilio request: `X-Twilio-Signature` is base64 of HMAC-SHA1, keyed with the auth
/// token, of the full URL Twilio called (scheme, host, path, query) followed by every POST
/// parameter sorted by name (a repeated name's values sorted too, identical pairs once), name and
/// value concatenated without separators. `form_params` are
/// the decoded form fields (see [`crate::chat::twilio::form_params`]); pass none for GET.
///
/// As Twilio's own libraries do, the URL is also tried with the default port added or removed
/// (`https://host/x` ⇄ `https://host:443/x`), since proxies differ in what they report.
pub fn verify_twilio(
    auth_token: &str,
    full_url: &str,
    form_params: &[(String, String)],
    signature_header: &str,
) -> Result<(), SignatureError> {
    verify_twilio_any(&[auth_token], full_url, form_params, signature_header)
}

/// [`verify_twilio`] with several auth tokens (primary and secondary during rotation).
pub fn verify_twilio_any(
    auth_tokens: &[&str],
    full_url: &str,
    form_params: &[(String, String)],
    signature_header: &str,
) -> Result<(), SignatureError> {
    let keys = plain_secrets(auth_tokens)?;
    let signature = required(signature_header, TWILIO_SIGNATURE_HEADER)?;
    let candidate = BASE64
        .decode(signature)
        .map_err(|_| SignatureError::Malformed(format!("{TWILIO_SIGNATURE_HEADER} is not base64")))?;

    // As Twilio's libraries do: names sorted, each name's values sorted, repeated identical
    // name/value pairs counted once.
    let mut sorted: Vec<&(String, String)> = form_params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut params = Vec::new();
    for (name, value) in sorted {
        params.extend_from_slice(name.as_bytes());
        params.extend_from_slice(value.as_bytes());
    }
    let urls = twilio_url_variants(full_url);
    let tags = keys
        .iter()
        .flat_map(|key| urls.iter().map(|url| hmac_sha1(key, &[url.as_bytes(), &params])).collect::<Vec<_>>());
    matches_any(tags, &[candidate])
}

/// `url` itself, plus the same URL with its scheme's default port removed (when given) or added
/// (when absent).
pub(super) fn twilio_url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Some(scheme_end) = url.find("://") else { return out };
    let default_port = match url[..scheme_end].to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return out,
    };
    let prefix = &url[..scheme_end + 3];
    let rest = &url[scheme_end + 3..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_len);
    if authority.is_empty() || authority.contains('@') {
        return out;
    }
    let port_start = authority.rfind(':').filter(|&i| !authority[i..].contains(']'));
    match port_start {
        Some(i) if &authority[i + 1..] == default_port => out.push(format!("{prefix}{}{tail}", &authority[..i])),
        Some(_) => {}
        None => out.push(format!("{prefix}{authority}:{default_port}{tail}")),
    }
    out
}
