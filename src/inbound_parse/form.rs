//! Form bodies as providers post them: `multipart/form-data` (Mailgun, SendGrid) or
//! `application/x-www-form-urlencoded` (Mandrill, Mailgun without attachments). Values stay
//! bytes: a raw MIME field may hold 8-bit text in any charset.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart};
use axum::http::{header, HeaderMap, Request};

use super::InboundError;

/// The fields of a form, in the order sent.
#[derive(Debug, Default)]
pub struct Form {
    pub fields: Vec<(String, Vec<u8>)>,
}

impl Form {
    pub async fn read(headers: &HeaderMap, body: Bytes) -> Result<Form, InboundError> {
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match essence.as_str() {
            "multipart/form-data" => {
                let request = Request::builder()
                    .header(header::CONTENT_TYPE, content_type)
                    .body(Body::from(body))
                    .map_err(|e| InboundError::BadRequest(e.to_string()))?;
                let mut multipart = Multipart::from_request(request, &())
                    .await
                    .map_err(|e| InboundError::BadRequest(format!("multipart body: {e}")))?;
                let mut fields = Vec::new();
                while let Some(field) = multipart
                    .next_field()
                    .await
                    .map_err(|e| InboundError::BadRequest(format!("multipart body: {e}")))?
                {
                    let name = field.name().unwrap_or_default().to_owned();
                    let value =
                        field.bytes().await.map_err(|e| InboundError::BadRequest(format!("multipart body: {e}")))?;
                    fields.push((name, value.to_vec()));
                }
                Ok(Form { fields })
            }
            "application/x-www-form-urlencoded" => {
                let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
                    .map_err(|e| InboundError::BadRequest(format!("form body: {e}")))?;
                Ok(Form { fields: pairs.into_iter().map(|(k, v)| (k, v.into_bytes())).collect() })
            }
            other => Err(InboundError::BadRequest(format!("expected a form body, got `{other}`"))),
        }
    }

    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.bytes(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}
