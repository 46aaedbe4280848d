//! The OpenAPI 3.1 document of the API, served at `/internal/openapi.json`. Its schemas are
//! derived from the types that parse requests and serialize responses, so they cannot drift;
//! the operations below only say which route takes and answers which type (a test checks
//! every route against the running server).
#![allow(dead_code)] // the functions exist for their `#[utoipa::path]` attributes

use utoipa::OpenApi;

use super::conversation_list::ListQuery;
use super::conversations::{CreateConversationBody, MessagePageQuery};
use super::entry_points::{CreateEntryPointBody, PatchEntryPointBody};
use super::patch_body::PatchConversationBody;
use super::typed_bodies::{MetadataBody, StatusBody, TextBody};
use crate::read::ConversationList;
use crate::store::{ConversationBundle, EntryPointView, MessageView};

/// A PATCH body: intake's own, or one of Stack Auth's typed ones.
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // never built: it only describes the body
enum PatchConversationRequest {
    Intake(PatchConversationBody),
    Typed(TypedPatchBodySchema),
}

/// Stack Auth's typed bodies, told apart by `type`.
#[derive(utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum TypedPatchBodySchema {
    Reply(TextBody),
    InternalNote(TextBody),
    Status(StatusBody),
    Metadata(MetadataBody),
}

/// Every error: `{"error": {"code", "message"}}`; the message names the field.
#[derive(utoipa::ToSchema)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(utoipa::ToSchema)]
struct ErrorDetail {
    /// `invalid_request`, `unauthorized`, `not_found`, `message_not_found`, `conflict`,
    /// `idempotency_key_reused`, `not_resendable`, `payload_too_large`, `database_rejected`,
    /// `unavailable`, `internal`
    code: String,
    message: String,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct EntryPointList {
    entry_points: Vec<EntryPointView>,
}

#[utoipa::path(get, path = "/internal/conversations", params(ListQuery),
    responses((status = 200, body = ConversationList), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, description = "projectId of another project", body = ErrorBody)))]
fn list_conversations() {}

#[utoipa::path(post, path = "/internal/conversations", request_body = CreateConversationBody,
    responses((status = 201, body = ConversationBundle), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
fn create_conversation() {}

#[utoipa::path(get, path = "/internal/conversations/{conversationId}",
    params(("conversationId" = Uuid, Path), MessagePageQuery),
    responses((status = 200, body = ConversationBundle), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
fn get_conversation() {}

#[utoipa::path(patch, path = "/internal/conversations/{conversationId}",
    params(("conversationId" = Uuid, Path), MessagePageQuery), request_body = PatchConversationRequest,
    responses((status = 200, body = ConversationBundle), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
fn patch_conversation() {}

#[utoipa::path(post, path = "/internal/conversations/{conversationId}/messages/{messageId}/resend",
    params(("conversationId" = Uuid, Path), ("messageId" = String, Path)),
    responses((status = 202, body = MessageView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
fn resend_message() {}

#[utoipa::path(get, path = "/internal/entry-points", responses((status = 200, body = EntryPointList), (status = 401, body = ErrorBody)))]
fn list_entry_points() {}

#[utoipa::path(post, path = "/internal/entry-points", request_body = CreateEntryPointBody,
    responses((status = 201, body = EntryPointView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
fn create_entry_point() {}

#[utoipa::path(patch, path = "/internal/entry-points/{entryPointId}", params(("entryPointId" = Uuid, Path)),
    request_body = PatchEntryPointBody,
    responses((status = 200, body = EntryPointView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
fn patch_entry_point() {}

#[utoipa::path(get, path = "/internal/openapi.json", responses((status = 200, description = "this document")))]
fn openapi_json() {}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "`ok`")))]
fn healthz() {}

#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "`ready`: the database answers"), (status = 503, body = ErrorBody)))]
fn readyz() {}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
fn metrics() {}

// The webhook gateway (also mounted by `serve` and `worker --with-api`): bodies are the
// providers' own payloads, checked with their signature schemes (see the README), not JSON
// shapes of intake's; no bearer token.
#[utoipa::path(post, path = "/hooks/{adapterKey}/{externalChannelId}", security(()),
    params(("adapterKey" = String, Path), ("externalChannelId" = String, Path)),
    request_body(content = String, description = "the provider's raw webhook body, signed with its scheme"),
    responses((status = 200, description = "published (after the broker's confirm); Slack's challenge answered"),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
fn hook() {}

#[utoipa::path(get, path = "/hooks/{adapterKey}/{externalChannelId}", security(()),
    params(("adapterKey" = String, Path), ("externalChannelId" = String, Path)),
    responses((status = 200, description = "Meta's subscription check: `hub.challenge` echoed when `hub.verify_token` matches"),
              (status = 403, body = ErrorBody)))]
fn hook_verification() {}

#[utoipa::path(post, path = "/hooks/inbound-mail/{provider}", security(()),
    params(("provider" = String, Path, description = "mailgun, sendgrid, postmark or mandrill")),
    request_body(content = String, description = "the provider's inbound-parse post, checked with its scheme"),
    responses((status = 200, description = "every copy published (after the broker's confirm)"),
              (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
fn inbound_mail() {}

#[utoipa::path(post, path = "/hooks/inbound-mail/{provider}/mime", security(()),
    params(("provider" = String, Path, description = "mailgun (route `forward()` with raw MIME)")),
    request_body(content = String, description = "Mailgun's `body-mime` post"),
    responses((status = 200, description = "published"), (status = 401, body = ErrorBody)))]
fn inbound_mail_mime() {}

#[derive(OpenApi)]
#[openapi(
    info(title = "intake", description = "Conversations API (intake's and Stack Auth's request shapes)"),
    paths(list_conversations, create_conversation, get_conversation, patch_conversation, resend_message,
          list_entry_points, create_entry_point, patch_entry_point, openapi_json, healthz, readyz, metrics,
          hook, hook_verification, inbound_mail, inbound_mail_mime),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON.
pub(super) fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes")
}
