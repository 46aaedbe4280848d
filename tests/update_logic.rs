//! The update logic against a real PostgreSQL: every rule of the spec, concurrency and batches.

mod common;

use common::*;
use intake::adapters::{ChannelType, Direction, ThreadRef, UpdateAction};
use intake::store::{self, ConversationBundle};
use intake::update::{self, AttributeChanges, Effect, Target, UpdateError, UpdateRequest};
use proptest::prelude::*;
use serde_json::Value;
use uuid::Uuid;

const P: &str = "acme";

async fn load(db: &TestDb, project: &str, id: Uuid) -> ConversationBundle {
    store::load_conversation(&db.pool, project, id).await.unwrap().expect("conversation exists")
}

/// The conversation state with row ids and row times taken out, for comparing two histories.
fn fingerprint(bundle: &ConversationBundle) -> Value {
    let mut v = serde_json::to_value(bundle).unwrap();
    let c = v["conversation"].as_object_mut().unwrap();
    // lastActivityAt starts at the creation time (wall clock) when messages are older.
    for k in ["conversationId", "createdAt", "updatedAt", "userId", "lastActivityAt"] {
        c.remove(k);
    }
    for m in v["messages"].as_array_mut().unwrap() {
        let m = m.as_object_mut().unwrap();
        m.remove("conversationId");
        m.remove("userId");
        m["metadata"].as_object_mut().unwrap().remove("intakeMessageId");
    }
    v.as_object_mut().unwrap().remove("entryPoints");
    v
}

#[tokio::test]
async fn first_inbound_message_opens_a_conversation_and_sets_timestamps() {
    let db = TestDb::new().await;
    let ep = db.project_with_entry_point(P, ChannelType::Chat, "test", "C1").await;
    let out = update::apply(
        &db.pool,
        &via_channel(P, ep, "t1", msg("m1", Direction::Inbound, "2025-01-01T10:00:00Z", "Hello there")),
    )
    .await
    .unwrap();
    assert_eq!(out.effect, Effect::Appended);
    let b = load(&db, P, out.conversation_id).await;
    let c = &b.conversation;
    assert_eq!(c.last_message_at, Some(at("2025-01-01T10:00:00Z")));
    assert_eq!(c.last_inbound_at, Some(at("2025-01-01T10:00:00Z")));
    assert_eq!(c.last_outbound_at, None);
    assert!(c.last_activity_at >= at("2025-01-01T10:00:00Z"), "activity is at least the message time");
    assert_eq!(c.metadata.last_customer_reply_at, Some(at("2025-01-01T10:00:00Z")));
    assert_eq!(c.preview.as_deref(), Some("Hello there"));
    assert_eq!(c.subject.as_deref(), Some("Order question"));
    assert_eq!(c.user_display_name.as_deref(), Some("Ada Customer"));
    assert_eq!(c.user_primary_email.as_deref(), Some("ada@example.com"));
    assert!(c.user_id.is_some());
    assert_eq!(b.messages.len(), 1);
    assert_eq!(b.messages[0].id, "m1");
    assert_eq!(b.entry_points.len(), 1);
    assert!(b.entry_points[0].is_entry_point);
    assert_eq!(b.entry_points[0].external_channel_id, "C1");
}

#[tokio::test]
async fn same_thread_key_reuses_the_conversation() {
    let db = TestDb::new().await;
    let ep = db.project_with_entry_point(P, ChannelType::Chat, "test", "C1").await;
    let a =
        update::apply(&db.pool, &via_channel(P, ep, "t1", msg("m1", Direction::Inbound, "2025-01-01T10:00:00Z", "a")))
            .await
            .unwrap();
    let b =
        update::apply(&db.pool, &via_channel(P, ep, "t1", msg("m2", Direction::Outbound, "2025-01-01T10:05:00Z", "b")))
            .await
            .unwrap();
    let c =
        update::apply(&db.pool, &via_channel(P, ep, "t2", msg("m3", Direction::Inbound, "2025-01-01T10:06:00Z", "c")))
            .await
            .unwrap();
    assert_eq!(a.conversation_id, b.conversation_id);
    assert_ne!(a.conversation_id, c.conversation_id);
}

#[tokio::test]
async fn duplicate_key_changes_nothing_and_returns_the_same_conversation() {
    let db = TestDb::new().await;
    let ep = db.project_with_entry_point(P, ChannelType::Chat, "test", "C1").await;
    let req = via_channel(P, ep, "t1", msg("m1", Direction::Inbound, "2025-01-01T10:00:00Z", "Hello"));
    let first = update::apply(&db.pool, &req).await.unwrap();
    let before = load(&db, P, first.conversation_id).await;
    // Same key and content, another time (a re-publish with its publish time): still a no-op.
    let mut again = req.clone();
    if let Some(UpdateAction::Append(m)) = &mut again.action {
        m.occurred_at = at("2026-01-01T00:00:00Z");
    }
    let second = update::apply(&db.pool, &again).await.unwrap();
    assert_eq!(second.effect, Effect::Duplicate);
    assert_eq!(second.conversation_id, first.conversation_id);
    assert_eq!(second.message_id, first.message_id);
    assert_eq!(load(&db, P, first.conversation_id).await, before);
}

#[tokio::test]
async fn out_of_order_messages_never_move_timestamps_back() {
    let db = TestDb::new().await;
    let ep = db.project_with_entry_point(P, ChannelType::Chat, "test", "C1").await;
    let new = update::apply(
        &db.pool,
        &via_channel(P, ep, "t", msg("new", Direction::Inbound, "2025-01-02T00:00:00Z", "newest")),
    )
    .await
    .unwrap();
    update::apply(&db.pool, &via_channel(P, ep, "t", msg("old", Direction::Inbound, "2025-01-01T00:00:00Z", "older")))
        .await
        .unwrap();
    update::apply(
        &db.pool,
        &via_channel(P, ep, "t", msg("old-out", Direction::Outbound, "2025-01-01T06:00:00Z", "older reply")),
    )
    .await
    .unwrap();
    let c = load(&db, P, new.conversation_id).await.conversation;
    assert_eq!(c.last_message_at, Some(at("2025-01-02T00:00:00Z")));
    assert_eq!(c.last_inbound_at, Some(at("2025-01-02T00:00:00Z")));
    assert_eq!(c.last_outbound_at, Some(at("2025-01-01T06:00:00Z")));
    assert!(c.last_activity_at >= at("2025-01-02T00:00:00Z"));
    assert_eq!(c.preview.as_deref(), Some("newest"), "preview follows the newest message");
    assert_eq!(c.metadata.last_agent_reply_at, Some(at("2025-01-01T06:00:00Z")));
}

#[tokio::test]
async fn first_response_is_the_first_outbound_after_an_inbound_and_stays() {
    let db = TestDb::new().await;
    let ep = db.project_with_entry_point(P, ChannelType::Chat, "test", "C1").await;
    // A proactive outbound message before the customer wrote is not a response.
    let c =
        update::apply(&db.pool, &via_channel(P, ep, "t", msg("o0", Direction::Outbound, "2025-01-01T09:00:00Z", "hi")))
            .await
            .unwrap();
    let id = c.conversation_id;
    assert_eq!(load(&db, P, id).await.conversation.metadata.first_response_at, None);
    update::apply(&db.pool, &via_channel(P, ep, "t", msg("i1", Direction::Inbound, "2025-01-01T10:00:00Z", "q")))
        .await
        .unwrap();
    assert_eq!(load(&db, P, id).await.conversation.metadata.first_response_at, None);
    update::apply(&db.pool, &via_channel(P, ep, "t", msg("o1", Direction::Outbound, "2025-01-01T10:30:00Z", "a")))
        .await
        .unwrap();
    assert_eq!(load(&db, P, id).await.conversation.metadata.first_response_at, Some(at("2025-01-01T10:30:00Z")));
    update::apply(&db.pool, &via_channel(P, ep, "t", msg("i2", Direction::Inbound, "2025-01-01T11:00:00Z", "q2")))
        .await
        .unwrap();
    update::apply(&db.pool, &via_channel(P, ep, "t", msg("o2", Direction::Outbound, "2025-01-01T11:30:00Z", "a2")))
        .await
        .unwrap();
    let c = load(&db, P, id).await.conversation;
    assert_eq!(c.metadata.first_response_at, Some(at("2025-01-01T10:30:00Z")), "never changes after");
    assert_eq!(c.metadata.last_agent_reply_at, Some(at("2025-01-01T11:30:00Z")));
}

#[tokio::test]
async fn inbound_reopens_a_closed_conversation_but_auto_replies_do_not() {
    let db = TestDb::new().await;
    let ep = db.project_with_entry_point(P, ChannelType::Email, "email", "support@example.com").await;
    let out =
        update::apply(&db.pool, &via_channel(P, ep, "t", msg("i1", Direction::Inbound, "2020-01-01T10:00:00Z", "q")))
            .await
            .unwrap();
    let id = out.conversation_id;
    let close = UpdateRequest {
        project_id: P.into(),
        target: Target::Conversation(id),
        action: None,
        extras: Default::default(),
        attributes: AttributeChanges { closed_at: Some(Some(at("2020-01-02T00:00:00Z"))), ..Default::default() },
    };
    update::apply(&db.pool, &close).await.unwrap();
    let mut auto = msg("auto", Direction::Inbound, "2020-01-03T00:00:00Z", "I am out of office");
    auto.is_auto_reply = true;
    update::apply(&db.pool, &to_conversation(P, id, auto)).await.unwrap();
    let c = load(&db, P, id).await.conversation;
    assert_eq!(c.closed_at, Some(at("2020-01-02T00:00:00Z")), "auto-reply must not reopen");
    assert_eq!(c.metadata.last_customer_reply_at, Some(at("2020-01-01T10:00:00Z")), "auto-reply is no customer reply");
    assert_eq!(c.last_inbound_at, Some(at("2020-01-03T00:00:00Z")));
    // A late inbound message written before the close does not reopen either.
    update::apply(&db.pool, &to_conversation(P, id, msg("late", Direction::Inbound, "2020-01-01T12:00:00Z", "late")))
        .await
        .unwrap();
    assert!(load(&db, P, id).await.conversation.closed_at.is_some());
    update::apply(&db.pool, &to_conversation(P, id, msg("i2", Direction::Inbound, "2020-01-04T00:00:00Z", "again")))
        .await
        .unwrap();
    assert_eq!(load(&db, P, id).await.conversation.closed_at, None, "a real inbound reply reopens");
}

#[tokio::test]
async fn attribute_updates_change_only_what_is_sent() {
    let db = TestDb::new().await;
    let ep = db.project_with_entry_point(P, ChannelType::Chat, "test", "C1").await;
    let out =
        update::apply(&db.pool, &via_channel(P, ep, "t", msg("i1", Direction::Inbound, "2020-01-01T10:00:00Z", "q")))
            .await
            .unwrap();
    let id = out.conversation_id;
    let before = load(&db, P, id).await.conversation;
    let set = |attributes| UpdateRequest {
        project_id: P.into(),
        target: Target::Conversation(id),
        action: None,
        extras: Default::default(),
        attributes,
    };
    update::apply(
        &db.pool,
        &set(AttributeChanges {
            tags: Some(vec!["vip".into(), "billing".into()]),
            assigned_to_user_id: Some(Some("agent-1".into())),
            assigned_to_display_name: Some(Some("Agent One".into())),
            first_response_due_at: Some(Some(at("2020-01-01T12:00:00Z"))),
            record_metadata: Some(serde_json::json!({"crm": {"id": 5}}).as_object().unwrap().clone()),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let after = load(&db, P, id).await.conversation;
    assert_eq!(after.metadata.tags, vec!["vip", "billing"]);
    assert_eq!(after.metadata.assigned_to_user_id.as_deref(), Some("agent-1"));
    assert_eq!(after.metadata.first_response_due_at, Some(at("2020-01-01T12:00:00Z")));
    assert_eq!(after.record_metadata, serde_json::json!({"crm": {"id": 5}}));
    assert_eq!(after.subject, before.subject, "unsent fields stay");
    assert_eq!(after.preview, before.preview);
    assert_eq!(after.last_message_at, before.last_message_at, "attribute changes are not messages");
    assert!(after.last_activity_at > before.last_activity_at, "but they are activity");
    assert!(after.updated_at > before.updated_at);
    // Clearing one field leaves the others.
    update::apply(
        &db.pool,
        &set(AttributeChanges {
            assigned_to_user_id: Some(None),
            subject: Some(Some("Renamed".into())),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let after2 = load(&db, P, id).await.conversation;
    assert_eq!(after2.metadata.assigned_to_user_id, None);
    assert_eq!(after2.metadata.assigned_to_display_name.as_deref(), Some("Agent One"));
    assert_eq!(after2.subject.as_deref(), Some("Renamed"));
    assert_eq!(after2.metadata.tags, vec!["vip", "billing"]);
}

#[tokio::test]
async fn errors_are_typed() {
    let db = TestDb::new().await;
    let ep = db.project_with_entry_point(P, ChannelType::Chat, "test", "C1").await;
    let a =
        update::apply(&db.pool, &via_channel(P, ep, "a", msg("m1", Direction::Inbound, "2020-01-01T10:00:00Z", "q")))
            .await
            .unwrap();
    let b =
        update::apply(&db.pool, &via_channel(P, ep, "b", msg("m2", Direction::Inbound, "2020-01-01T10:00:00Z", "q")))
            .await
            .unwrap();
    // Unknown conversation.
    let err = update::apply(
        &db.pool,
        &to_conversation(P, Uuid::new_v4(), msg("m3", Direction::Inbound, "2020-01-01T10:00:00Z", "q")),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, UpdateError::ConversationNotFound), "{err}");
    // Another project's conversation is not found either.
    store::ensure_project(&db.pool, "other").await.unwrap();
    let err = update::apply(
        &db.pool,
        &to_conversation("other", a.conversation_id, msg("x", Direction::Inbound, "2020-01-01T10:00:00Z", "q")),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, UpdateError::ConversationNotFound), "{err}");
    // A key already used in another conversation of the project.
    let err = update::apply(
        &db.pool,
        &to_conversation(P, b.conversation_id, msg("m1", Direction::Inbound, "2020-01-01T10:00:00Z", "q")),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, UpdateError::KeyConflict { .. }), "{err}");
    // Nothing to do.
    let empty = UpdateRequest {
        project_id: P.into(),
        target: Target::Conversation(a.conversation_id),
        action: None,
        extras: Default::default(),
        attributes: Default::default(),
    };
    assert!(matches!(update::apply(&db.pool, &empty).await.unwrap_err(), UpdateError::Invalid(_)));
    // Edit of an unknown message.
    let edit = UpdateRequest {
        action: Some(UpdateAction::Edit {
            idempotency_key: "nope".into(),
            body: "x".into(),
            edited_at: at("2020-01-01T00:00:00Z"),
        }),
        ..empty.clone()
    };
    assert!(matches!(update::apply(&db.pool, &edit).await.unwrap_err(), UpdateError::MessageNotFound(_)));
}

#[tokio::test]
async fn email_references_thread_into_the_earlier_conversation() {
    let db = TestDb::new().await;
    let ep = db.project_with_entry_point(P, ChannelType::Email, "email", "support@example.com").await;
    let thread = |refs: &[&str]| ThreadRef {
        key: None,
        references: refs.iter().map(|s| s.to_string()).collect(),
        conversation_id_hint: None,
    };
    let req = |key: &str, refs: &[&str], t: &str| UpdateRequest {
        project_id: P.into(),
        target: Target::Channel { entry_point_id: ep, thread: thread(refs) },
        action: Some(UpdateAction::Append(msg(key, Direction::Inbound, t, key))),
        extras: Default::default(),
        attributes: Default::default(),
    };
    let first = update::apply(&db.pool, &req("a@x", &[], "2020-01-01T00:00:00Z")).await.unwrap();
    let second = update::apply(&db.pool, &req("b@x", &["a@x"], "2020-01-01T01:00:00Z")).await.unwrap();
    let third = update::apply(&db.pool, &req("c@x", &["a@x", "b@x"], "2020-01-01T02:00:00Z")).await.unwrap();
    let other = update::apply(&db.pool, &req("d@x", &["unknown@x"], "2020-01-01T03:00:00Z")).await.unwrap();
    assert_eq!(first.conversation_id, second.conversation_id);
    assert_eq!(first.conversation_id, third.conversation_id);
    assert_ne!(first.conversation_id, other.conversation_id);
    // A reply token naming the conversation wins.
    let mut hinted = req("e@x", &[], "2020-01-01T04:00:00Z");
    if let Target::Channel { thread, .. } = &mut hinted.target {
        thread.conversation_id_hint = Some(other.conversation_id.to_string());
    }
    assert_eq!(update::apply(&db.pool, &hinted).await.unwrap().conversation_id, other.conversation_id);
    // Redelivery of a thread starter finds the same conversation.
    assert_eq!(
        update::apply(&db.pool, &req("a@x", &[], "2020-01-01T00:00:00Z")).await.unwrap().effect,
        Effect::Duplicate
    );
}

#[tokio::test]
async fn edits_deletes_and_statuses_change_the_stored_message_forward_only() {
    let db = TestDb::new().await;
    let ep = db.project_with_entry_point(P, ChannelType::Chat, "test", "C1").await;
    let out = update::apply(
        &db.pool,
        &via_channel(P, ep, "t", msg("m1", Direction::Outbound, "2025-01-01T00:00:00Z", "first text")),
    )
    .await
    .unwrap();
    let action = |a: UpdateAction| UpdateRequest {
        project_id: P.into(),
        target: Target::Channel { entry_point_id: ep, thread: ThreadRef::default() },
        action: Some(a),
        extras: Default::default(),
        attributes: Default::default(),
    };
    let edit = |body: &str, t: &str| {
        action(UpdateAction::Edit { idempotency_key: "m1".into(), body: body.into(), edited_at: at(t) })
    };
    update::apply(&db.pool, &edit("second text", "2025-01-01T00:02:00Z")).await.unwrap();
    update::apply(&db.pool, &edit("stale edit", "2025-01-01T00:01:00Z")).await.unwrap();
    let b = load(&db, P, out.conversation_id).await;
    assert_eq!(b.messages.len(), 1, "an edit is no new message");
    assert_eq!(b.messages[0].body, "second text");
    assert_eq!(b.conversation.preview.as_deref(), Some("second text"));
    let status = |s: &str, t: &str| {
        action(UpdateAction::Status { idempotency_key: "m1".into(), status: s.into(), at: at(t), detail: None })
    };
    update::apply(&db.pool, &status("read", "2025-01-01T00:05:00Z")).await.unwrap();
    update::apply(&db.pool, &status("delivered", "2025-01-01T00:04:00Z")).await.unwrap();
    let b = load(&db, P, out.conversation_id).await;
    assert_eq!(b.messages[0].metadata["deliveryStatus"], "read");
    update::apply(
        &db.pool,
        &action(UpdateAction::Delete { idempotency_key: "m1".into(), deleted_at: at("2025-01-01T00:06:00Z") }),
    )
    .await
    .unwrap();
    let b = load(&db, P, out.conversation_id).await;
    assert_eq!(b.messages[0].body, "");
    assert!(b.messages[0].metadata.get("deletedAt").is_some());
}

fn history() -> Vec<common::TestMessage> {
    (0..40)
        .map(|i| {
            let direction = if i % 3 == 0 { Direction::Outbound } else { Direction::Inbound };
            (
                format!("k{i}"),
                direction,
                format!("2025-01-01T00:{:02}:{:02}Z", (i * 7) % 60, i % 60),
                format!("body {i}"),
            )
        })
        .collect()
}

async fn sequential_fingerprint(db: &TestDb, project: &str, messages: &[common::TestMessage]) -> Value {
    store::ensure_project(&db.pool, project).await.unwrap();
    let ep = store::create_entry_point(&db.pool, project, ChannelType::Chat, "test", "C1", serde_json::json!({}))
        .await
        .unwrap()
        .id;
    let mut id = None;
    for (k, d, t, b) in messages {
        id = Some(
            update::apply(&db.pool, &via_channel(project, ep, "t", msg(k, *d, t, b))).await.unwrap().conversation_id,
        );
    }
    // The list's order follows every move of last_activity_at.
    let (activity, last): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT a.last_activity_at, c.last_activity_at FROM conversations c
           JOIN conversation_activity a ON a.conversation_id = c.id AND a.project_id = c.project_id WHERE c.id = $1",
    )
    .bind(id.unwrap())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(activity, last);
    fingerprint(&load(db, project, id.unwrap()).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_equal_the_sequential_result() {
    let db = TestDb::new().await;
    let messages = history();
    let expected = sequential_fingerprint(&db, "seq", &messages).await;

    let ep = db.project_with_entry_point(P, ChannelType::Chat, "test", "C1").await;
    // Every message twice, all at once, racing on creating the conversation too.
    let mut tasks = Vec::new();
    for copy in 0..2 {
        for (k, d, t, b) in messages.iter().cloned() {
            let pool = db.pool.clone();
            tasks.push(tokio::spawn(async move {
                let _ = copy;
                update::apply(&pool, &via_channel(P, ep, "t", msg(&k, d, &t, &b))).await.unwrap()
            }));
        }
    }
    let mut conversation_ids = std::collections::HashSet::new();
    let mut appended = 0;
    for t in tasks {
        let out = t.await.unwrap();
        conversation_ids.insert(out.conversation_id);
        appended += usize::from(out.effect == Effect::Appended);
    }
    assert_eq!(conversation_ids.len(), 1, "one conversation for one thread");
    assert_eq!(appended, messages.len(), "each message appended exactly once");
    let id = *conversation_ids.iter().next().unwrap();
    assert_eq!(fingerprint(&load(&db, P, id).await), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_over_shared_conversations_commit_everything_once() {
    let db = TestDb::new().await;
    let ep = db.project_with_entry_point(P, ChannelType::Chat, "test", "C1").await;
    // Four batches, each touching the same 5 threads in a different order.
    let mut tasks = Vec::new();
    for batch in 0..4 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut requests = Vec::new();
            for j in 0..25 {
                let thread = format!("t{}", (j + batch * 2) % 5);
                let key = format!("b{batch}-m{j}");
                requests.push(via_channel(P, ep, &thread, msg(&key, Direction::Inbound, "2025-01-01T00:00:00Z", &key)));
            }
            if batch % 2 == 1 {
                requests.reverse();
            }
            update::apply_batch(&pool, &requests).await.unwrap()
        }));
    }
    for t in tasks {
        let outcomes = t.await.unwrap();
        assert_eq!(outcomes.len(), 25);
        assert!(outcomes.iter().all(|o| o.effect == Effect::Appended));
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM messages").fetch_one(&db.pool).await.unwrap();
    let conversations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM conversations").fetch_one(&db.pool).await.unwrap();
    assert_eq!((count, conversations), (100, 5));
}

#[tokio::test]
async fn a_batch_is_all_or_nothing_and_reports_outcomes_in_order() {
    let db = TestDb::new().await;
    let ep = db.project_with_entry_point(P, ChannelType::Chat, "test", "C1").await;
    let good = via_channel(P, ep, "z", msg("g1", Direction::Inbound, "2025-01-01T00:00:00Z", "x"));
    let dup = via_channel(P, ep, "a", msg("g1", Direction::Inbound, "2025-01-01T00:00:00Z", "x"));
    let out = update::apply_batch(&db.pool, &[good.clone(), dup]).await.unwrap();
    // Batches apply in lock order, so which copy wins is not the caller's order; one does.
    let mut effects = vec![out[0].effect, out[1].effect];
    effects.sort_by_key(|e| *e == Effect::Duplicate);
    assert_eq!(effects, vec![Effect::Appended, Effect::Duplicate]);
    assert_eq!(out[0].conversation_id, out[1].conversation_id);
    let bad = to_conversation(P, Uuid::new_v4(), msg("g2", Direction::Inbound, "2025-01-01T00:00:00Z", "x"));
    let fresh = via_channel(P, ep, "y", msg("g3", Direction::Inbound, "2025-01-01T00:00:00Z", "x"));
    assert!(update::apply_batch(&db.pool, &[fresh, bad]).await.is_err());
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE idempotency_key = 'g3'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 0, "the failed batch left nothing behind");
}

fn arb_history() -> impl Strategy<Value = (Vec<common::TestMessage>, Vec<usize>)> {
    prop::collection::vec((any::<bool>(), 0u32..6, any::<bool>()), 1..10).prop_flat_map(|specs| {
        let messages: Vec<common::TestMessage> = specs
            .iter()
            .enumerate()
            .map(|(i, (outbound, minute, _))| {
                let d = if *outbound { Direction::Outbound } else { Direction::Inbound };
                (format!("k{i}"), d, format!("2025-01-01T00:0{minute}:00Z"), format!("body {i}"))
            })
            .collect();
        let n = messages.len();
        // an arrival order with some messages delivered twice
        let order = prop::collection::vec(0..n, 0..4).prop_flat_map(move |extra| {
            let mut all: Vec<usize> = (0..n).collect();
            all.extend(extra);
            Just(all).prop_shuffle()
        });
        (Just(messages), order)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// Any arrival order of the same messages (with duplicates) gives the same conversation.
    #[test]
    fn any_order_gives_the_same_state((messages, order) in arb_history()) {
        let (rt, db) = shared();
        rt.block_on(async {
            let a = format!("p{}", Uuid::new_v4().simple());
            let b = format!("p{}", Uuid::new_v4().simple());
            let expected = sequential_fingerprint(db, &a, &messages).await;
            let shuffled: Vec<_> = order.iter().map(|&i| messages[i].clone()).collect();
            let actual = sequential_fingerprint(db, &b, &shuffled).await;
            prop_assert_eq!(actual, expected);
            Ok(())
        })?;
    }
}

/// One runtime and one database for all proptest cases (each case uses its own projects); a
/// pool must not outlive the runtime it was made on.
fn shared() -> &'static (tokio::runtime::Runtime, TestDb) {
    static SHARED: std::sync::OnceLock<(tokio::runtime::Runtime, TestDb)> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let db = rt.block_on(TestDb::new());
        (rt, db)
    })
}

#[tokio::test]
async fn the_worker_batch_path_feeds_the_search_and_a_stale_entry_never_matches() {
    use intake::read::{list_conversations, ConversationFilter};
    let db = TestDb::new().await;
    let ep = db.project_with_entry_point(P, ChannelType::Chat, "test", "C1").await;
    let mut first = msg("s1", Direction::Inbound, "2025-01-01T10:00:00Z", "Where is my parcel");
    first.subject = Some("Refund for order 4411".into());
    let out = update::apply_batch(&db.pool, &[via_channel(P, ep, "t-search", first)]).await.unwrap();
    let id = out[0].conversation_id;
    let search = |q: &'static str| {
        let pool = db.pool.clone();
        async move {
            let filter = ConversationFilter { query: Some(q.into()), ..Default::default() };
            let page = list_conversations(&pool, P, &filter, None, 0, 10).await.unwrap();
            page.conversations.iter().map(|c| c.conversation_id).collect::<Vec<_>>()
        }
    };
    // Written off the message path: searchable once refreshed (every second in a running
    // worker or serve), by subject, customer name, email and preview.
    assert_eq!(search("refund").await, Vec::<Uuid>::new());
    store::search::refresh(&db.pool).await.unwrap();
    for q in ["REFUND for", "ada cust", "ada@example", "my parcel"] {
        assert_eq!(search(q).await, vec![id], "{q}");
    }
    // A new preview: the old text stops matching at once (the list rechecks the row), and
    // the new one matches after the refresh.
    update::apply_batch(
        &db.pool,
        &[via_channel(P, ep, "t-search", msg("s2", Direction::Inbound, "2025-01-01T11:00:00Z", "It arrived, thanks"))],
    )
    .await
    .unwrap();
    assert_eq!(search("my parcel").await, Vec::<Uuid>::new());
    store::search::refresh(&db.pool).await.unwrap();
    assert_eq!(search("arrived").await, vec![id]);
    // A match across the entry's joins (email, then preview) is not a match.
    assert_eq!(search("example.com It").await, Vec::<Uuid>::new());
}

#[tokio::test]
async fn connections_run_without_jit() {
    // The update's estimated cost crosses jit_above_cost; compiling it took up to 200 ms.
    let db = TestDb::new().await;
    let jit: String = sqlx::query_scalar("SHOW jit").fetch_one(&db.pool).await.unwrap();
    assert_eq!(jit, "off");
}
