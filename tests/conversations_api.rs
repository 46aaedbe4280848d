//! The conversations API of issue 10 over real HTTP: paged messages, the conversation list,
//! Stack Auth's typed bodies, the OpenAPI document.

mod common;

use common::*;
use intake::store;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const TOKEN: &str = "acme-token-123";
const OTHER_TOKEN: &str = "other-token-456";

struct Api {
    base: String,
    client: reqwest::Client,
    db: TestDb,
}

impl Api {
    async fn new() -> Self {
        let db = TestDb::new().await;
        store::ensure_project_token(&db.pool, "acme", TOKEN, "test").await.unwrap();
        store::ensure_project_token(&db.pool, "other", OTHER_TOKEN, "test").await.unwrap();
        let base = spawn_api(db.pool.clone(), 1 << 20).await;
        Api { base, client: reqwest::Client::new(), db }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(TOKEN, method, path, body).await
    }

    async fn call_as(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, text) = self.call_raw(token, method, path, body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn call_raw(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, String) {
        let mut req = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    async fn entry_point(&self, external: &str) -> String {
        let (s, ep) = self
            .call(
                Method::POST,
                "/internal/entry-points",
                Some(json!({"channelType": "webhook", "adapterKey": "webhook", "externalChannelId": external})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{ep}");
        ep["id"].as_str().unwrap().to_owned()
    }

    /// An empty conversation on a new entry point; returns its id.
    async fn conversation(&self, subject: &str) -> String {
        let ep = self.entry_point(&format!("shop-{}", uuid::Uuid::new_v4().simple())).await;
        let (s, c) = self
            .call(Method::POST, "/internal/conversations", Some(json!({"entryPointId": ep, "subject": subject})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{c}");
        c["conversation"]["conversationId"].as_str().unwrap().to_owned()
    }

    /// `n` messages one second apart from 2025-01-01, in one statement (test data, not traffic).
    async fn fill(&self, conversation: &str, n: i64, body_bytes: i32) {
        sqlx::query(
            "INSERT INTO messages (id, project_id, conversation_id, idempotency_key, direction, body, occurred_at)
             SELECT gen_random_uuid(), 'acme', $1, 'bulk-' || lpad(g::text, 7, '0'),
                    CASE WHEN g % 2 = 0 THEN 'inbound' ELSE 'outbound' END, repeat('x', $3),
                    '2025-01-01T00:00:00Z'::timestamptz + g * interval '1 second'
               FROM generate_series(1, $2) g",
        )
        .bind(uuid::Uuid::parse_str(conversation).unwrap())
        .bind(n)
        .bind(body_bytes)
        .execute(&self.db.pool)
        .await
        .unwrap();
    }
}

fn inbound(id: &str, at: &str) -> Value {
    json!({"message": {"id": id, "direction": "inbound", "body": "Where is my parcel?",
        "sender": {"id": "cust-9", "displayName": "Bo Customer", "primaryEmail": "bo@example.com"},
        "createdAt": at}})
}

fn ids(body: &Value) -> Vec<String> {
    body["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn messages_page_back_from_the_newest_with_a_stable_cursor() {
    let api = Api::new().await;
    let id = api.conversation("Paging").await;
    api.fill(&id, 7, 10).await;
    let path = format!("/internal/conversations/{id}");
    let (s, first) = api.call(Method::GET, &format!("{path}?limit=3"), None).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(ids(&first), ["bulk-0000005", "bulk-0000006", "bulk-0000007"]);
    assert_eq!(first["hasMoreMessages"], true);
    let cursor = first["nextCursor"].as_str().unwrap().to_owned();
    // A message appended between two pages changes neither the next page nor what follows.
    let (s, b) = api.call(Method::PATCH, &path, Some(inbound("late-new", "2025-01-02T00:00:00Z"))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, second) = api.call(Method::GET, &format!("{path}?before={cursor}&limit=3"), None).await;
    assert_eq!(ids(&second), ["bulk-0000002", "bulk-0000003", "bulk-0000004"]);
    assert_eq!(second["hasMoreMessages"], true);
    let cursor = second["nextCursor"].as_str().unwrap();
    let (_, third) = api.call(Method::GET, &format!("{path}?before={cursor}&limit=3"), None).await;
    assert_eq!(ids(&third), ["bulk-0000001"]);
    assert_eq!(third["hasMoreMessages"], false);
    assert_eq!(third["nextCursor"], Value::Null);
    // default page: 50 newest; PATCH answers the same way
    let (_, all) = api.call(Method::GET, &path, None).await;
    assert_eq!(ids(&all).len(), 8);
    assert_eq!(all["hasMoreMessages"], false);
    assert_eq!(ids(&all).last().unwrap(), "late-new");
    // bad paging parameters name themselves
    for (query, field) in
        [("limit=0", "limit"), ("limit=501", "limit"), ("limit=x", "limit"), ("before=zz%21", "before")]
    {
        let (s, b) = api.call(Method::GET, &format!("{path}?{query}"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {b}");
        assert!(b["error"]["message"].as_str().unwrap().starts_with(field), "{b}");
    }
}

/// Issue 10: on a conversation of 20,000 messages a PATCH answer stays small (the newest
/// page, not the conversation).
#[tokio::test]
async fn patch_answer_on_20000_messages_is_one_page() {
    let api = Api::new().await;
    let id = api.conversation("Big").await;
    api.fill(&id, 20_000, 200).await;
    let path = format!("/internal/conversations/{id}");
    let (s, text) = api.call_raw(TOKEN, Method::PATCH, &path, Some(inbound("big-new", "2025-02-01T00:00:00Z"))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.len() < 256 * 1024, "{} bytes", text.len());
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(ids(&body).len(), 50);
    assert_eq!(ids(&body).last().unwrap(), "big-new");
    assert_eq!(body["hasMoreMessages"], true);
}

fn conversation_ids(body: &Value) -> Vec<String> {
    body["conversations"].as_array().unwrap().iter().map(|c| c["conversationId"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn list_pages_by_limit_offset_and_cursor_newest_activity_first() {
    let api = Api::new().await;
    let older = api.conversation("Older").await;
    let newer = api.conversation("Newer").await;
    let (s, page) = api.call(Method::GET, "/internal/conversations?limit=1", None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(conversation_ids(&page), vec![newer.clone()]);
    assert_eq!(page["hasMore"], true);
    let cursor = page["nextCursor"].as_str().unwrap().to_owned();
    let (_, page) = api.call(Method::GET, &format!("/internal/conversations?limit=1&cursor={cursor}"), None).await;
    assert_eq!(conversation_ids(&page), vec![older.clone()]);
    assert_eq!(page["hasMore"], false);
    assert_eq!(page["nextCursor"], Value::Null);
    let (_, page) = api.call(Method::GET, "/internal/conversations?limit=1&offset=1&projectId=acme", None).await;
    assert_eq!(conversation_ids(&page), vec![older.clone()]);
    // activity moves a conversation to the top
    api.call(Method::PATCH, &format!("/internal/conversations/{older}"), Some(json!({"teamId": "t"}))).await;
    let (_, page) = api.call(Method::GET, "/internal/conversations", None).await;
    assert_eq!(conversation_ids(&page), [older, newer]);
    // another project sees none of them; another project's id is 404
    let (_, page) = api.call_as(OTHER_TOKEN, Method::GET, "/internal/conversations", None).await;
    assert_eq!(conversation_ids(&page), Vec::<String>::new());
    let (s, _) = api.call(Method::GET, "/internal/conversations?projectId=other", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for (query, field) in [
        ("limit=0", "limit"),
        ("status=gone", "status"),
        ("updatedSince=yesterday", "updatedSince"),
        ("entryPointId=x", "entryPointId"),
        ("cursor=x", "cursor"),
        ("offset=-1", "offset"),
        ("sort=asc", "query"),
    ] {
        let (s, b) = api.call(Method::GET, &format!("/internal/conversations?{query}"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {b}");
        assert!(b["error"]["message"].as_str().unwrap().starts_with(field), "{query}: {b}");
    }
}

#[tokio::test]
async fn list_filters_and_searches() {
    let api = Api::new().await;
    let a = api.conversation("Refund for order 42").await;
    let b = api.conversation("Shipping question").await;
    let path_a = format!("/internal/conversations/{a}");
    let path_b = format!("/internal/conversations/{b}");
    let (s, body) = api.call(Method::PATCH, &path_a, Some(inbound("a-1", "2025-05-01T10:00:00Z"))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    api.call(
        Method::PATCH,
        &path_a,
        Some(json!({"metadata": {"tags": ["billing", "vip"], "assignedToUserId": "agent-1"}})),
    )
    .await;
    api.call(
        Method::PATCH,
        &path_b,
        Some(json!({"message": {"id": "b-1", "direction": "inbound", "body": "Is DHL ok?",
            "sender": {"id": "cust-2", "displayName": "Zoë Müller", "primaryEmail": "Zoe@Example.org"}}})),
    )
    .await;
    api.call(Method::PATCH, &path_b, Some(json!({"userId": "user-b", "metadata": {"tags": ["shipping"]}}))).await;
    let list = |q: &'static str| {
        let api = &api;
        async move {
            let (s, body) = api.call(Method::GET, &format!("/internal/conversations?{q}"), None).await;
            assert_eq!(s, StatusCode::OK, "{q}: {body}");
            let mut ids = conversation_ids(&body);
            ids.sort();
            ids
        }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(list("tag=vip").await, vec![a.clone()]);
    assert_eq!(list("tag=shipping").await, vec![b.clone()]);
    assert_eq!(list("assignedToUserId=agent-1").await, vec![a.clone()]);
    assert_eq!(list("userId=user-b").await, vec![b.clone()]);
    assert_eq!(list("status=open").await, sorted(vec![a.clone(), b.clone()]));
    assert_eq!(list("status=closed").await, Vec::<String>::new());
    assert_eq!(list("updatedSince=2999-01-01T00:00:00Z").await, Vec::<String>::new());
    assert_eq!(list("updatedSince=2000-01-01T00:00:00Z").await, sorted(vec![a.clone(), b.clone()]));
    // query: subject, preview, customer name and email, case-insensitive; % is literal. The
    // search entries are refreshed off the message path (every second in a running process).
    intake::store::search::refresh(&api.db.pool).await.unwrap();
    assert_eq!(list("query=REFUND").await, vec![a.clone()]);
    assert_eq!(list("query=dhl%20OK").await, vec![b.clone()]);
    assert_eq!(list("query=ZO%C3%AB%20m").await, vec![b.clone()]);
    assert_eq!(list("query=zoe%40example").await, vec![b.clone()]);
    assert_eq!(list("query=bo%20customer").await, vec![a.clone()]);
    assert_eq!(list("query=%25").await, Vec::<String>::new());
    // entryPointId: each conversation was opened on its own entry point
    let (_, eps) = api.call(Method::GET, &path_a, None).await;
    let ep = eps["entryPoints"][0]["id"].as_str().unwrap();
    let (_, body) = api.call(Method::GET, &format!("/internal/conversations?entryPointId={ep}"), None).await;
    assert_eq!(conversation_ids(&body), vec![a.clone()]);
    // a preview that changed matches at once the entry is refreshed, and its old text never
    // matches again, refreshed or not
    api.call(Method::PATCH, &path_b, Some(inbound("b-2", "2030-01-01T00:00:00Z"))).await;
    assert_eq!(list("query=dhl%20OK").await, Vec::<String>::new(), "the old preview no longer matches");
    // the search is served by the trigram index (forced here: the tables are tiny)
    let mut conn = api.db.pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off").execute(&mut *conn).await.unwrap();
    let plan: Vec<String> =
        sqlx::query_scalar("EXPLAIN SELECT conversation_id FROM conversation_search WHERE document ILIKE '%refund%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    sqlx::query("RESET enable_seqscan").execute(&mut *conn).await.unwrap();
    drop(conn);
    api.call(Method::PATCH, &path_b, Some(json!({"type": "status", "status": "closed"}))).await;
    assert_eq!(list("status=closed").await, vec![b.clone()]);
    assert_eq!(list("status=open").await, vec![a.clone()]);
    assert!(plan.concat().contains("conversation_search_document_idx"), "{plan:?}");
}

fn last(body: &Value) -> &Value {
    body["messages"].as_array().unwrap().last().unwrap()
}

#[tokio::test]
async fn stack_auth_typed_bodies_through_the_one_update_logic() {
    let api = Api::new().await;
    let id = api.conversation("Typed").await;
    let path = format!("/internal/conversations/{id}");
    let (s, b) = api.call(Method::PATCH, &path, Some(inbound("in-1", "2025-05-01T10:00:00Z"))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["conversation"]["status"], "open");
    assert_eq!(b["conversation"]["priority"], "normal");
    assert_eq!(b["conversation"]["source"], "webhook");
    assert_eq!(last(&b)["sender"]["type"], "user");
    assert_eq!(last(&b)["messageType"], "message");

    // reply: trimmed, an agent message, moves open -> pending
    let (s, b) = api
        .call(Method::PATCH, &path, Some(json!({"type": "reply", "projectId": "acme", "body": "  On its way.  "})))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(last(&b)["body"], "On its way.");
    assert_eq!(last(&b)["sender"]["type"], "agent");
    assert_eq!(b["conversation"]["status"], "pending");
    assert_eq!(b["conversation"]["lastMessageType"], "message");
    let outbound_at = b["conversation"]["lastOutboundAt"].clone();
    let first_response = b["conversation"]["metadata"]["firstResponseAt"].clone();
    assert!(outbound_at.is_string() && first_response.is_string(), "{b}");

    // internal note: on the timeline, but no outbound time, reply time or status change
    let (s, b) = api.call(Method::PATCH, &path, Some(json!({"type": "internal-note", "body": "VIP, be nice"}))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(last(&b)["messageType"], "internal-note");
    assert_eq!(last(&b)["sender"]["type"], "agent");
    let c = &b["conversation"];
    assert_eq!(c["lastOutboundAt"], outbound_at);
    assert_eq!(c["metadata"]["firstResponseAt"], first_response);
    assert_eq!(c["metadata"]["lastAgentReplyAt"], outbound_at);
    assert_eq!(c["lastMessageType"], "internal-note");
    assert_eq!(c["status"], "pending");
    assert_eq!(c["preview"], "On its way.");

    // status: recorded on the timeline, closedAt follows
    let (s, b) = api.call(Method::PATCH, &path, Some(json!({"type": "status", "status": "closed"}))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["conversation"]["status"], "closed");
    assert!(b["conversation"]["closedAt"].is_string());
    assert_eq!(last(&b)["messageType"], "status-change");
    assert_eq!(last(&b)["sender"]["type"], "system");
    assert_eq!(last(&b)["metadata"]["toStatus"], "closed");
    // the same status again records nothing
    let (_, again) = api.call(Method::PATCH, &path, Some(json!({"type": "status", "status": "closed"}))).await;
    assert_eq!(ids(&again), ids(&b));
    // intake's rule, not Stack Auth's: a newer customer message reopens
    let now = chrono::Utc::now().to_rfc3339();
    let (_, b) = api.call(Method::PATCH, &path, Some(inbound("in-2", &now))).await;
    assert_eq!(b["conversation"]["status"], "open");
    assert_eq!(b["conversation"]["closedAt"], Value::Null);

    // metadata: only the fields sent change
    api.call(Method::PATCH, &path, Some(json!({"metadata": {"assignedToUserId": "agent-7", "tags": ["a"]}}))).await;
    let (s, b) = api.call(Method::PATCH, &path, Some(json!({"type": "metadata", "priority": "urgent"}))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let c = &b["conversation"];
    assert_eq!(c["priority"], "urgent");
    assert_eq!(c["metadata"]["assignedToUserId"], "agent-7");
    assert_eq!(c["metadata"]["tags"], json!(["a"]));
    let (_, b) =
        api.call(Method::PATCH, &path, Some(json!({"type": "metadata", "tags": null, "assignedToUserId": null}))).await;
    assert_eq!(b["conversation"]["metadata"]["tags"], json!([]));
    assert_eq!(b["conversation"]["metadata"]["assignedToUserId"], Value::Null);
    assert_eq!(b["conversation"]["priority"], "urgent");

    // a reply with intake's idempotency key is applied once
    let reply = json!({"type": "reply", "body": "Once", "id": "reply-1"});
    let (_, first) = api.call(Method::PATCH, &path, Some(reply.clone())).await;
    let (_, second) = api.call(Method::PATCH, &path, Some(reply)).await;
    assert_eq!(ids(&first), ids(&second));

    // errors
    for (body, status, field) in [
        (json!({"type": "reply", "body": "   "}), StatusCode::BAD_REQUEST, "body"),
        (json!({"type": "reply", "body": "x", "projectId": "other"}), StatusCode::NOT_FOUND, ""),
        (json!({"type": "status", "status": "gone"}), StatusCode::BAD_REQUEST, "status"),
        (json!({"type": "metadata", "priority": "asap"}), StatusCode::BAD_REQUEST, "priority"),
        (json!({"type": "metadata"}), StatusCode::BAD_REQUEST, "body"),
        (json!({"type": "reply", "body": "x", "bodyHtml": "<b>x</b>"}), StatusCode::BAD_REQUEST, "bodyHtml"),
        (json!({"type": "telepathy"}), StatusCode::BAD_REQUEST, "type"),
    ] {
        let (s, b) = api.call(Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(s, status, "{body}: {b}");
        assert!(b["error"]["message"].as_str().unwrap().starts_with(field), "{body}: {b}");
    }
    // another project's conversation is 404 for typed bodies too
    let (s, _) = api.call_as(OTHER_TOKEN, Method::PATCH, &path, Some(json!({"type": "reply", "body": "x"}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn stack_auth_create_with_an_initial_message() {
    let api = Api::new().await;
    let (s, b) = api
        .call(
            Method::POST,
            "/internal/conversations",
            Some(json!({"projectId": "acme", "userId": "user-1", "subject": "Cannot log in",
                "initialMessage": "  I am locked out  ", "priority": "high", "source": "chat"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let c = &b["conversation"];
    assert_eq!(c["status"], "open");
    assert_eq!(c["priority"], "high");
    assert_eq!(c["source"], "chat");
    assert_eq!(c["userId"], "user-1");
    assert_eq!(c["subject"], "Cannot log in");
    assert!(c["lastInboundAt"].is_string());
    assert_eq!(ids(&b).len(), 1);
    assert_eq!(last(&b)["body"], "I am locked out");
    assert_eq!(last(&b)["sender"]["type"], "user");
    // without an entry point or a source it says api
    let (s, b) = api.call(Method::POST, "/internal/conversations", Some(json!({"subject": "x"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["conversation"]["source"], "api");
    for (body, status) in [
        (json!({"initialMessage": " "}), StatusCode::BAD_REQUEST),
        (json!({"priority": "whenever"}), StatusCode::BAD_REQUEST),
        (json!({"projectId": "other"}), StatusCode::NOT_FOUND),
    ] {
        let (s, b) = api.call(Method::POST, "/internal/conversations", Some(body.clone())).await;
        assert_eq!(s, status, "{body}: {b}");
    }
}

/// Errors of `value` against `schema` (a subset of JSON Schema: $ref, oneOf/anyOf/allOf, type,
/// required, properties — a field the document does not name is an error — and items).
fn schema_errors(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return schema_errors(doc, &doc["components"]["schemas"][name], value, at);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            return if options.iter().any(|s| schema_errors(doc, s, value, at).is_empty()) {
                vec![]
            } else {
                vec![format!("{at}: matches none of {key}")]
            };
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        // one object schema of all the parts' properties and required fields
        let mut merged = json!({"type": "object", "properties": {}, "required": []});
        for part in all {
            let part = match part["$ref"].as_str() {
                Some(r) => &doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")],
                None => part,
            };
            for (k, v) in part["properties"].as_object().into_iter().flatten() {
                merged["properties"][k] = v.clone();
            }
            for r in part["required"].as_array().into_iter().flatten() {
                merged["required"].as_array_mut().unwrap().push(r.clone());
            }
        }
        return schema_errors(doc, &merged, value, at);
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(|t| t.as_str()).collect(),
        _ => vec![],
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let fits = types.is_empty() || types.contains(&kind) || (kind == "integer" && types.contains(&"number"));
    if !fits {
        return vec![format!("{at}: {kind}, the document says {types:?}")];
    }
    let mut errors = vec![];
    match value {
        Value::Object(map) => {
            for field in schema["required"].as_array().into_iter().flatten() {
                if !map.contains_key(field.as_str().unwrap()) {
                    errors.push(format!("{at}.{field}: required, missing"));
                }
            }
            if let Some(properties) = schema["properties"].as_object() {
                for (k, v) in map {
                    match properties.get(k) {
                        Some(s) => errors.extend(schema_errors(doc, s, v, &format!("{at}.{k}"))),
                        None => errors.push(format!("{at}.{k}: not in the document")),
                    }
                }
            }
        }
        Value::Array(items) if schema.get("items").is_some() => {
            for (i, v) in items.iter().enumerate() {
                errors.extend(schema_errors(doc, &schema["items"], v, &format!("{at}[{i}]")));
            }
        }
        _ => {}
    }
    errors
}

#[tokio::test]
async fn openapi_document_covers_every_route_and_matches_real_responses() {
    let api = Api::new().await;
    let (s, doc) = api.call(Method::GET, "/internal/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK, "{doc}");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let routes = [
        ("get", "/internal/conversations"),
        ("post", "/internal/conversations"),
        ("get", "/internal/conversations/{conversationId}"),
        ("patch", "/internal/conversations/{conversationId}"),
        ("post", "/internal/conversations/{conversationId}/messages/{messageId}/resend"),
        ("get", "/internal/entry-points"),
        ("post", "/internal/entry-points"),
        ("patch", "/internal/entry-points/{entryPointId}"),
        ("get", "/internal/openapi.json"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("post", "/hooks/{adapterKey}/{externalChannelId}"),
        ("get", "/hooks/{adapterKey}/{externalChannelId}"),
        ("post", "/hooks/inbound-mail/{provider}"),
        ("post", "/hooks/inbound-mail/{provider}/mime"),
    ];
    let documented: usize = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, routes.len(), "every route, and only the routes, are documented");
    for (method, path) in routes {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is not in the document");
    }
    let response_schema = |method: &str, path: &str, status: &str| {
        doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"].clone()
    };
    let check = |schema: Value, body: &Value, what: &str| {
        assert!(!schema.is_null(), "{what}: no schema");
        let errors = schema_errors(&doc, &schema, body, "$");
        assert!(errors.is_empty(), "{what}: {errors:#?}\n{body}");
    };

    // real responses of every JSON route
    let id = api.conversation("Documented").await;
    let path = format!("/internal/conversations/{id}");
    let (_, created) = api
        .call(
            Method::POST,
            "/internal/conversations",
            Some(json!({"subject": "x", "initialMessage": "hi", "userId": "u"})),
        )
        .await;
    check(response_schema("post", "/internal/conversations", "201"), &created, "POST conversations");
    let mut patched = vec![];
    for body in [
        inbound("doc-1", "2025-05-01T10:00:00Z"),
        json!({"type": "reply", "body": "ok"}),
        json!({"type": "internal-note", "body": "note"}),
        json!({"type": "status", "status": "closed"}),
        json!({"type": "metadata", "priority": "high", "tags": ["t"]}),
        json!({"message": {"id": "doc-2", "direction": "inbound", "body": "file",
            "attachments": [{"filename": "a.txt", "contentType": "text/plain", "size": 1}]}}),
    ] {
        let (s, b) = api.call(Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        patched.push(b);
    }
    for b in &patched {
        check(response_schema("patch", "/internal/conversations/{conversationId}", "200"), b, "PATCH");
    }
    let (_, page) = api.call(Method::GET, &format!("{path}?limit=2"), None).await;
    check(response_schema("get", "/internal/conversations/{conversationId}", "200"), &page, "GET conversation");
    let (_, list) = api.call(Method::GET, "/internal/conversations?limit=1", None).await;
    check(response_schema("get", "/internal/conversations", "200"), &list, "GET conversations");
    let (_, eps) = api.call(Method::GET, "/internal/entry-points", None).await;
    check(response_schema("get", "/internal/entry-points", "200"), &eps, "GET entry points");
    let ep_id = eps["entryPoints"][0]["id"].as_str().unwrap();
    let (s, ep) =
        api.call(Method::PATCH, &format!("/internal/entry-points/{ep_id}"), Some(json!({"metadata": {"k": 1}}))).await;
    assert_eq!(s, StatusCode::OK, "{ep}");
    check(response_schema("patch", "/internal/entry-points/{entryPointId}", "200"), &ep, "PATCH entry point");
    let (s, ep) = api
        .call(
            Method::POST,
            "/internal/entry-points",
            Some(json!({"channelType": "chat", "adapterKey": "slack", "externalChannelId": "C1"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ep}");
    check(response_schema("post", "/internal/entry-points", "201"), &ep, "POST entry point");
    let (s, err) = api.call(Method::PATCH, &path, Some(json!({"type": "reply", "body": ""}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    check(response_schema("patch", "/internal/conversations/{conversationId}", "400"), &err, "error");
    // and the request schemas know the bodies: a typed body is one of the PATCH body's options
    let request = &doc["paths"]["/internal/conversations/{conversationId}"]["patch"]["requestBody"]["content"]
        ["application/json"]["schema"];
    for body in [json!({"type": "status", "status": "open"}), json!({"subject": "s"})] {
        let errors = schema_errors(&doc, request, &body, "$");
        assert!(errors.is_empty(), "{body}: {errors:?}");
    }
    assert!(!schema_errors(&doc, request, &json!({"type": "status", "colour": "red"}), "$").is_empty());
}
