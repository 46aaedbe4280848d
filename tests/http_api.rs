//! The HTTP API over real TCP against a real database: shapes, auth, tenancy, every error code.

mod common;

use common::*;
use intake::store;
use reqwest::StatusCode;
use serde_json::{json, Value};

const TOKEN: &str = "acme-token-123";
const OTHER_TOKEN: &str = "other-token-456";

struct Api {
    base: String,
    client: reqwest::Client,
    db: TestDb,
}

impl Api {
    async fn new(body_limit: usize) -> Self {
        let db = TestDb::new().await;
        store::ensure_project_token(&db.pool, "acme", TOKEN, "test").await.unwrap();
        store::ensure_project_token(&db.pool, "other", OTHER_TOKEN, "test").await.unwrap();
        let base = spawn_api(db.pool.clone(), body_limit).await;
        Api { base, client: reqwest::Client::new(), db }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn raw_patch(&self, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let resp = self
            .client
            .patch(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// An entry point and an empty conversation on it; returns the conversation id.
    async fn conversation(&self) -> String {
        let (s, ep) = self
            .call(
                reqwest::Method::POST,
                "/internal/entry-points",
                Some(TOKEN),
                Some(json!({"channelType": "webhook", "adapterKey": "webhook", "externalChannelId": "shop"})),
            )
            .await;
        let ep_id = if s == StatusCode::CREATED {
            ep["id"].as_str().unwrap().to_owned()
        } else {
            let (_, list) = self.call(reqwest::Method::GET, "/internal/entry-points", Some(TOKEN), None).await;
            list["entryPoints"][0]["id"].as_str().unwrap().to_owned()
        };
        let (s, c) = self
            .call(
                reqwest::Method::POST,
                "/internal/conversations",
                Some(TOKEN),
                Some(json!({"entryPointId": ep_id, "subject": "Help"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{c}");
        c["conversation"]["conversationId"].as_str().unwrap().to_owned()
    }
}

use reqwest::Method;

fn inbound(id: &str, at: &str) -> Value {
    json!({"message": {"id": id, "direction": "inbound", "body": "Hello, my parcel is late.",
        "sender": {"id": "cust-9", "displayName": "Bo Customer", "primaryEmail": "bo@example.com"},
        "createdAt": at}})
}

#[tokio::test]
async fn patch_appends_and_answers_in_the_spec_shape() {
    let api = Api::new(1 << 20).await;
    let id = api.conversation().await;
    let path = format!("/internal/conversations/{id}");
    let (s, body) = api.call(Method::PATCH, &path, Some(TOKEN), Some(inbound("msg-1", "2025-05-01T12:00:00Z"))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let c = &body["conversation"];
    for field in [
        "conversationId",
        "subject",
        "lastActivityAt",
        "metadata",
        "userId",
        "teamId",
        "userDisplayName",
        "userPrimaryEmail",
        "userProfileImageUrl",
        "preview",
        "createdAt",
        "updatedAt",
        "lastMessageAt",
        "lastInboundAt",
        "lastOutboundAt",
        "closedAt",
        "recordMetadata",
    ] {
        assert!(c.get(field).is_some(), "conversation.{field} missing");
    }
    for field in [
        "tags",
        "assignedToUserId",
        "assignedToDisplayName",
        "firstResponseDueAt",
        "firstResponseAt",
        "nextResponseDueAt",
        "lastCustomerReplyAt",
        "lastAgentReplyAt",
    ] {
        assert!(c["metadata"].get(field).is_some(), "conversation.metadata.{field} missing");
    }
    assert_eq!(c["lastInboundAt"], "2025-05-01T12:00:00Z");
    assert_eq!(c["lastMessageAt"], "2025-05-01T12:00:00Z");
    assert_eq!(c["preview"], "Hello, my parcel is late.");
    assert_eq!(c["userDisplayName"], "Bo Customer");
    let m = &body["messages"][0];
    for field in [
        "id",
        "conversationId",
        "subject",
        "attachments",
        "createdAt",
        "sender",
        "userId",
        "teamId",
        "body",
        "metadata",
    ] {
        assert!(m.get(field).is_some(), "messages[].{field} missing");
    }
    assert_eq!(m["id"], "msg-1");
    assert_eq!(m["sender"]["primaryEmail"], "bo@example.com");
    let ep = &body["entryPoints"][0];
    for field in
        ["id", "channelType", "adapterKey", "isEntryPoint", "createdAt", "updatedAt", "externalChannelId", "metadata"]
    {
        assert!(ep.get(field).is_some(), "entryPoints[].{field} missing");
    }
    assert_eq!(ep["isEntryPoint"], true);

    // Sending it again changes nothing.
    let (s, again) = api.call(Method::PATCH, &path, Some(TOKEN), Some(inbound("msg-1", "2025-05-02T12:00:00Z"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again, body);
    // GET answers the same body.
    let (s, got) = api.call(Method::GET, &path, Some(TOKEN), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, body);
}

#[tokio::test]
async fn patch_updates_attributes_and_null_clears() {
    let api = Api::new(1 << 20).await;
    let id = api.conversation().await;
    let path = format!("/internal/conversations/{id}");
    let (s, body) = api
        .call(
            Method::PATCH,
            &path,
            Some(TOKEN),
            Some(json!({
            "subject": "Parcel late", "teamId": "team-eu",
            "metadata": {"tags": ["shipping"], "assignedToUserId": "u-1", "assignedToDisplayName": "Kim",
                         "nextResponseDueAt": "2025-05-01T13:00:00Z"},
            "closedAt": "2025-05-01T14:00:00Z", "recordMetadata": {"ticket": 42}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let c = &body["conversation"];
    assert_eq!(c["subject"], "Parcel late");
    assert_eq!(c["teamId"], "team-eu");
    assert_eq!(c["metadata"]["tags"], json!(["shipping"]));
    assert_eq!(c["metadata"]["assignedToDisplayName"], "Kim");
    assert_eq!(c["metadata"]["nextResponseDueAt"], "2025-05-01T13:00:00Z");
    assert_eq!(c["closedAt"], "2025-05-01T14:00:00Z");
    assert_eq!(c["recordMetadata"], json!({"ticket": 42}));
    let (_, body) = api
        .call(
            Method::PATCH,
            &path,
            Some(TOKEN),
            Some(json!({"metadata": {"assignedToUserId": null}, "closedAt": null})),
        )
        .await;
    let c = &body["conversation"];
    assert_eq!(c["metadata"]["assignedToUserId"], Value::Null);
    assert_eq!(c["metadata"]["assignedToDisplayName"], "Kim");
    assert_eq!(c["closedAt"], Value::Null);
    assert_eq!(c["subject"], "Parcel late");
    // null clears recordMetadata and tags too
    let (s, body) = api
        .call(Method::PATCH, &path, Some(TOKEN), Some(json!({"metadata": {"tags": null}, "recordMetadata": null})))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["conversation"]["metadata"]["tags"], json!([]));
    assert_eq!(body["conversation"]["recordMetadata"], json!({}));
}

#[tokio::test]
async fn attachments_refuse_unknown_fields() {
    let api = Api::new(1 << 20).await;
    let id = api.conversation().await;
    let path = format!("/internal/conversations/{id}");
    let mut body = inbound("att-1", "2025-05-01T12:00:00Z");
    body["message"]["attachments"] = json!([{"filename": "a.pdf", "contentType": "application/pdf", "size": 3,
        "contentId": "c1", "sha256": "ab", "url": "https://x/a.pdf", "inline": false}]);
    let (s, b) = api.call(Method::PATCH, &path, Some(TOKEN), Some(body.clone())).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["messages"][0]["attachments"][0]["filename"], "a.pdf");
    body["message"]["id"] = json!("att-2");
    body["message"]["attachments"][0]["fileName"] = json!("typo.pdf");
    let (s, b) = api.call(Method::PATCH, &path, Some(TOKEN), Some(body)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let m = b["error"]["message"].as_str().unwrap();
    assert!(m.contains("message.attachments[0]") && m.contains("fileName"), "{m}");
}

#[tokio::test]
async fn auth_and_tenancy() {
    let api = Api::new(1 << 20).await;
    let id = api.conversation().await;
    let path = format!("/internal/conversations/{id}");
    let (s, body) = api.call(Method::GET, &path, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (s, _) = api.call(Method::GET, &path, Some("wrong-token"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = api.call(Method::PATCH, &path, Some("wrong-token"), Some(inbound("x", "2025-01-01T00:00:00Z"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = api.call(Method::GET, "/internal/entry-points", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Another project's token sees nothing of it, and cannot write to it.
    let (s, body) = api.call(Method::GET, &path, Some(OTHER_TOKEN), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    assert!(!body.to_string().contains("shop"));
    let (s, _) = api.call(Method::PATCH, &path, Some(OTHER_TOKEN), Some(inbound("y", "2025-01-01T00:00:00Z"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, list) = api.call(Method::GET, "/internal/entry-points", Some(OTHER_TOKEN), None).await;
    assert_eq!(list["entryPoints"], json!([]));
    let (_, mine) = api.call(Method::GET, &path, Some(TOKEN), None).await;
    assert_eq!(mine["messages"], json!([]), "the refused writes left nothing");
}

#[tokio::test]
async fn every_error_code() {
    let api = Api::new(4096).await;
    let id = api.conversation().await;
    let path = format!("/internal/conversations/{id}");
    let check = |s: StatusCode, body: &Value, status: StatusCode, code: &str, needle: &str| {
        assert_eq!(s, status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "`{message}` should name `{needle}`");
    };
    // 400s name the field.
    let (s, b) = api.raw_patch(&path, b"{not json".to_vec()).await;
    check(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "body");
    let (s, b) = api
        .call(Method::PATCH, &path, Some(TOKEN), Some(json!({"message": {"id": "a", "direction": "up", "body": "x"}})))
        .await;
    check(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "message.direction");
    let (s, b) = api
        .call(Method::PATCH, &path, Some(TOKEN), Some(json!({"message": {"direction": "inbound", "body": "x"}})))
        .await;
    check(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "id");
    let (s, b) = api.call(Method::PATCH, &path, Some(TOKEN), Some(json!({"metadata": {"tags": "vip"}}))).await;
    check(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "metadata.tags");
    let (s, b) = api.call(Method::PATCH, &path, Some(TOKEN), Some(json!({"closedAt": "yesterday"}))).await;
    check(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "closedAt");
    let (s, b) = api.call(Method::PATCH, &path, Some(TOKEN), Some(json!({"colour": "red"}))).await;
    check(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "colour");
    let (s, b) = api.call(Method::PATCH, &path, Some(TOKEN), Some(json!({}))).await;
    check(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "nothing to update");
    // PostgreSQL cannot store U+0000: refused, naming where it is.
    let nul =
        json!({"message": {"id": "n", "direction": "inbound", "body": "x", "metadata": {"note": ["ok", "a\u{0}b"]}}});
    let (s, b) = api.call(Method::PATCH, &path, Some(TOKEN), Some(nul)).await;
    check(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "message.metadata.note[1]");
    let (s, b) = api.call(Method::PATCH, &path, Some(TOKEN), Some(json!({"subject": "a\u{0}"}))).await;
    check(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "subject: contains U+0000");
    let (s, b) = api
        .call(
            Method::PATCH,
            &path,
            Some(TOKEN),
            Some(json!({"message": {"id": "", "direction": "inbound", "body": "x"}})),
        )
        .await;
    check(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "message.id");
    let (s, b) =
        api.call(Method::PATCH, "/internal/conversations/not-a-uuid", Some(TOKEN), Some(json!({"subject": "x"}))).await;
    check(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "conversationId");
    let (s, b) = api
        .call(
            Method::POST,
            "/internal/entry-points",
            Some(TOKEN),
            Some(json!({"channelType": "pigeon", "adapterKey": "x", "externalChannelId": "y"})),
        )
        .await;
    check(s, &b, StatusCode::BAD_REQUEST, "invalid_request", "channelType");
    // 404
    let (s, b) = api
        .call(
            Method::PATCH,
            &format!("/internal/conversations/{}", uuid::Uuid::new_v4()),
            Some(TOKEN),
            Some(json!({"subject": "x"})),
        )
        .await;
    check(s, &b, StatusCode::NOT_FOUND, "not_found", "conversation");
    let (s, b) = api.call(Method::GET, "/internal/nope", Some(TOKEN), None).await;
    check(s, &b, StatusCode::NOT_FOUND, "not_found", "route");
    // 409: an entry point twice, a message key of another conversation.
    let (s, b) = api
        .call(
            Method::POST,
            "/internal/entry-points",
            Some(TOKEN),
            Some(json!({"channelType": "webhook", "adapterKey": "webhook", "externalChannelId": "shop"})),
        )
        .await;
    check(s, &b, StatusCode::CONFLICT, "conflict", "shop");
    let (s, _) = api.call(Method::PATCH, &path, Some(TOKEN), Some(inbound("k-1", "2025-01-01T00:00:00Z"))).await;
    assert_eq!(s, StatusCode::OK);
    let other = api.conversation().await;
    let (s, b) = api
        .call(
            Method::PATCH,
            &format!("/internal/conversations/{other}"),
            Some(TOKEN),
            Some(inbound("k-1", "2025-01-01T00:00:00Z")),
        )
        .await;
    check(s, &b, StatusCode::CONFLICT, "conflict", "k-1");
    // 413 over the configured limit.
    let huge =
        serde_json::to_vec(&json!({"message": {"id": "big", "direction": "inbound", "body": "x".repeat(10_000)}}))
            .unwrap();
    let (s, b) = api.raw_patch(&path, huge).await;
    check(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "limit");
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let api = Api::new(1 << 20).await;
    let id = api.conversation().await;
    api.call(
        Method::PATCH,
        &format!("/internal/conversations/{id}"),
        Some(TOKEN),
        Some(inbound("m", "2025-01-01T00:00:00Z")),
    )
    .await;
    let text = |path: &'static str| {
        let client = api.client.clone();
        let url = format!("{}{path}", api.base);
        async move {
            let r = client.get(url).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    assert_eq!(text("/healthz").await, (StatusCode::OK, "ok".into()));
    assert_eq!(text("/readyz").await, (StatusCode::OK, "ready".into()));
    let (s, metrics) = text("/metrics").await;
    assert_eq!(s, StatusCode::OK);
    assert!(metrics.contains("intake_api_updates_total"), "{metrics}");
    // Readiness fails when the database is gone.
    api.db.pool.close().await;
    let (s, _) = text("/readyz").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_message_id_reused_for_other_content_is_409_and_future_times_are_clamped() {
    let api = Api::new(1 << 20).await;
    let id = api.conversation().await;
    let path = format!("/internal/conversations/{id}");
    let first = inbound("msg-1", "2025-05-01T12:00:00Z");
    let (s, _) = api.call(Method::PATCH, &path, Some(TOKEN), Some(first.clone())).await;
    assert_eq!(s, StatusCode::OK);
    // A client retry (same body; its createdAt regenerated) is the same message.
    let mut retry = first.clone();
    retry["message"]["createdAt"] = json!("2025-05-01T12:00:05Z");
    let (s, body) = api.call(Method::PATCH, &path, Some(TOKEN), Some(retry)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // The same id for other content is refused, as payment APIs do.
    let mut other = first;
    other["message"]["body"] = json!("something else entirely");
    let (s, body) = api.call(Method::PATCH, &path, Some(TOKEN), Some(other)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    let (_, body) = api.call(Method::GET, &path, Some(TOKEN), None).await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);

    // createdAt of 2099: clamped to now, the original kept.
    let (s, body) = api.call(Method::PATCH, &path, Some(TOKEN), Some(inbound("msg-2", "2099-01-01T00:00:00Z"))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let last: chrono::DateTime<chrono::Utc> = body["conversation"]["lastMessageAt"].as_str().unwrap().parse().unwrap();
    assert!(last <= chrono::Utc::now(), "{last}");
    let future = body["messages"].as_array().unwrap().iter().find(|m| m["id"] == "msg-2").unwrap();
    assert_eq!(future["metadata"]["originalOccurredAt"], "2099-01-01T00:00:00+00:00");
}
