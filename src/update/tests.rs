//! The set-based path for batches of appends must leave exactly what applying the same
//! updates one by one leaves (against the local PostgreSQL, like the integration tests).
use super::*;
use intake_adapters::{ChannelType, Direction, NormalizedMessage, Sender};
use rand::{Rng, SeedableRng};
use sqlx::Connection;

async fn fresh_db() -> (PgPool, Uuid, String) {
    let name = format!("intake_test_{}", Uuid::new_v4().simple());
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let pool = crate::store::connect_and_migrate(&url, 4).await.expect("test database");
    crate::store::ensure_project(&pool, "p").await.unwrap();
    let ep = crate::store::create_entry_point(&pool, "p", ChannelType::Webhook, "webhook", "shop", json!({}))
        .await
        .unwrap()
        .id;
    (pool, ep, name)
}

use serde_json::json;

/// Message `i`: its content depends on `i` alone, so a redelivery is an exact copy.
fn request(ep: Uuid, i: usize) -> UpdateRequest {
    let rng = &mut rand::rngs::StdRng::seed_from_u64(i as u64);
    let inbound = rng.random_bool(0.6);
    let pick = |rng: &mut rand::rngs::StdRng, v: &str| rng.random_bool(0.7).then(|| v.to_owned());
    let who = rng.random_range(0..4);
    let sender = if inbound {
        Sender {
            id: pick(rng, &format!("cust-{who}")),
            display_name: pick(rng, &format!("Name {i}")),
            primary_email: pick(rng, &format!("c{who}@example.com")),
            profile_image_url: pick(rng, &format!("https://img/{i}")),
        }
    } else {
        Sender { id: pick(rng, "agent-1"), display_name: pick(rng, "Agent"), ..Default::default() }
    };
    let message = NormalizedMessage {
        idempotency_key: format!("k{i}"),
        direction: if inbound { Direction::Inbound } else { Direction::Outbound },
        sender,
        subject: pick(rng, &format!("subject {i}")),
        body: format!("body {i}"),
        attachments: vec![],
        occurred_at: DateTime::from_timestamp(1_700_000_000 + rng.random_range(0..50), 0).unwrap(),
        is_auto_reply: rng.random_bool(0.1),
        metadata: Default::default(),
        fingerprint: None,
    };
    let key = if rng.random_bool(0.1) { None } else { Some(format!("t{}", rng.random_range(0..6))) };
    UpdateRequest {
        project_id: "p".into(),
        target: Target::Channel { entry_point_id: ep, thread: ThreadRef { key, ..Default::default() } },
        action: Some(UpdateAction::Append(message)),
        extras: MessageExtras::default(),
        attributes: Default::default(),
    }
}

async fn apply_one_by_one(pool: &PgPool, requests: &[UpdateRequest]) -> Vec<UpdateOutcome> {
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_cached_key(|&i| lock_key(&requests[i]));
    let mut tx = pool.begin().await.unwrap();
    let mut outcomes = vec![None; requests.len()];
    for &i in &order {
        outcomes[i] = Some(apply_in(&mut tx, &requests[i]).await.unwrap());
    }
    tx.commit().await.unwrap();
    outcomes.into_iter().map(Option::unwrap).collect()
}

async fn snapshot(pool: &PgPool) -> Vec<String> {
    let mut rows: Vec<String> = sqlx::query_scalar(
        "SELECT (to_jsonb(c) - 'id' - 'origin_entry_point_id' - 'created_at' - 'updated_at'
                     - 'last_activity_at' - 'user_id')::text
                    || coalesce((SELECT external_id FROM customers WHERE id::text = c.user_id), c.user_id, '-')
               FROM conversations c",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.extend(
        sqlx::query_scalar::<_, String>(
            "SELECT (to_jsonb(m) - 'id' - 'conversation_id' - 'entry_point_id' - 'customer_id' - 'user_id'
                         - 'received_at' - 'updated_at')::text
                        || (SELECT thread_key FROM conversations WHERE id = m.conversation_id)
                        || coalesce((SELECT external_id FROM customers WHERE id = m.customer_id), '-')
                   FROM messages m",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
    );
    rows.extend(
        sqlx::query_scalar::<_, String>(
            "SELECT (to_jsonb(c) - 'id' - 'created_at' - 'updated_at')::text FROM customers c",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
    );
    // The list's order follows every move of last_activity_at.
    let drift: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM conversations c LEFT JOIN conversation_activity a ON a.conversation_id = c.id
          WHERE a.last_activity_at IS DISTINCT FROM c.last_activity_at OR a.project_id IS DISTINCT FROM c.project_id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(drift, 0, "conversation_activity drifted from conversations");
    rows.sort();
    rows
}

#[tokio::test]
async fn batched_appends_match_one_by_one() {
    let (fast, ep_fast, fast_name) = fresh_db().await;
    let (slow, ep_slow, slow_name) = fresh_db().await;
    for seed in 0..24u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let batch = rng.random_range(1..40);
        let offset = seed as usize * 1000;
        let mut requests: Vec<usize> = (0..batch).map(|i| offset + i).collect();
        // Some redeliveries of earlier batches.
        if seed > 0 {
            requests.push((seed as usize - 1) * 1000);
        }
        let a: Vec<UpdateRequest> = requests.iter().map(|&i| request(ep_fast, i)).collect();
        let b: Vec<UpdateRequest> = requests.iter().map(|&i| request(ep_slow, i)).collect();
        assert!(appends_only(&a));
        let fast_out = apply_batch(&fast, &a).await.unwrap();
        let slow_out = apply_one_by_one(&slow, &b).await;
        let effects = |o: &[UpdateOutcome]| o.iter().map(|o| o.effect).collect::<Vec<_>>();
        assert_eq!(effects(&fast_out), effects(&slow_out), "seed {seed}");
        assert_eq!(snapshot(&fast).await, snapshot(&slow).await, "seed {seed}");
    }
    fast.close().await;
    slow.close().await;
    let mut admin = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres").await.unwrap();
    for name in [fast_name, slow_name] {
        sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)")).execute(&mut admin).await.unwrap();
    }
}

/// A key another message already has, and a delete parked before its message: the set-based
/// path declines or unparks, and must still leave what one at a time leaves.
#[tokio::test]
async fn reused_keys_and_parked_deletes_match_one_by_one() {
    let (fast, ep_fast, fast_name) = fresh_db().await;
    let (slow, ep_slow, slow_name) = fresh_db().await;
    for (pool, ep) in [(&fast, ep_fast), (&slow, ep_slow)] {
        let delete = UpdateRequest {
            project_id: "p".into(),
            target: Target::Channel { entry_point_id: ep, thread: ThreadRef::default() },
            action: Some(UpdateAction::Delete {
                idempotency_key: "k1".into(),
                deleted_at: DateTime::from_timestamp(1_700_000_100, 0).unwrap(),
            }),
            extras: MessageExtras::default(),
            attributes: Default::default(),
        };
        assert_eq!(apply(pool, &delete).await.unwrap().effect, Effect::Parked);
    }
    let batch = |ep: Uuid| {
        let mut newer = request(ep, 1);
        let mut older = request(ep, 2);
        for (r, at) in [(&mut newer, 10), (&mut older, 5)] {
            r.target = Target::Channel {
                entry_point_id: ep,
                thread: ThreadRef { key: Some("t".into()), ..Default::default() },
            };
            if let Some(UpdateAction::Append(m)) = &mut r.action {
                m.occurred_at = DateTime::from_timestamp(1_700_000_000 + at, 0).unwrap();
            }
        }
        vec![newer, older]
    };
    let a = batch(ep_fast);
    assert!(appends_only(&a));
    apply_batch(&fast, &a).await.unwrap();
    apply_one_by_one(&slow, &batch(ep_slow)).await;
    assert_eq!(snapshot(&fast).await, snapshot(&slow).await, "parked delete");
    let preview: Option<String> =
        sqlx::query_scalar("SELECT preview FROM conversations").fetch_one(&fast).await.unwrap();
    assert_eq!(preview.as_deref(), Some("body 2"), "the deleted message's text left the preview");

    // k2 again with other content: stored under a derived key by both paths.
    let reuse = |ep: Uuid| {
        let mut r = batch(ep).remove(1);
        if let Some(UpdateAction::Append(m)) = &mut r.action {
            m.body = "another message with the same key".into();
        }
        vec![r, request(ep, 3)]
    };
    let fast_out = apply_batch(&fast, &reuse(ep_fast)).await.unwrap();
    let slow_out = apply_one_by_one(&slow, &reuse(ep_slow)).await;
    assert_eq!(fast_out[0].effect, Effect::Appended);
    assert_eq!(
        fast_out.iter().map(|o| o.effect).collect::<Vec<_>>(),
        slow_out.iter().map(|o| o.effect).collect::<Vec<_>>()
    );
    assert_eq!(snapshot(&fast).await, snapshot(&slow).await, "reused key");
    fast.close().await;
    slow.close().await;
    let mut admin = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres").await.unwrap();
    for name in [fast_name, slow_name] {
        sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)")).execute(&mut admin).await.unwrap();
    }
}

/// Message `i` as a reply (no thread key) that references `keys`, oldest first.
fn reply(ep: Uuid, i: usize, keys: &[String]) -> UpdateRequest {
    let mut r = request(ep, i);
    r.target = Target::Channel {
        entry_point_id: ep,
        thread: ThreadRef { key: None, references: keys.to_vec(), ..Default::default() },
    };
    r
}

/// Replies (email `References`) take the set-based path when what they reference was stored
/// before the batch, and must land where one at a time puts them: the newest referenced
/// message's conversation if it is linked to the entry point, else a conversation of their own.
#[tokio::test]
async fn replies_match_one_by_one() {
    let (fast, ep_fast, fast_name) = fresh_db().await;
    let (slow, ep_slow, slow_name) = fresh_db().await;
    let mut others = Vec::new();
    for pool in [&fast, &slow] {
        let other = crate::store::create_entry_point(pool, "p", ChannelType::Webhook, "webhook", "other", json!({}))
            .await
            .unwrap()
            .id;
        others.push(other);
    }
    let k = |i: usize| format!("k{i}");
    // Earlier traffic: threads on the entry point, and one message on another entry point.
    let first = |ep: Uuid, other: Uuid| {
        let mut batch: Vec<UpdateRequest> = (0..12).map(|i| request(ep, i)).collect();
        batch.push(request(other, 50));
        batch
    };
    let replies = |ep: Uuid| {
        vec![
            reply(ep, 100, &[k(1)]),
            reply(ep, 101, &[k(2), k(3), "unknown@x".into()]), // newest known reference wins
            reply(ep, 102, &["unknown@y".into()]),             // nothing known: its own conversation
            reply(ep, 103, &[k(50)]),                          // another entry point's message
            reply(ep, 104, &[k(4), k(5)]),
            reply(ep, 105, &[k(4)]),
            request(ep, 106),
        ]
    };
    for (pool, ep, other, one_by_one) in [(&fast, ep_fast, others[0], false), (&slow, ep_slow, others[1], true)] {
        for batch in [first(ep, other), replies(ep)] {
            assert!(appends_only(&batch), "every reply refers to a message stored before its batch");
            match one_by_one {
                false => drop(apply_batch(pool, &batch).await.unwrap()),
                true => drop(apply_one_by_one(pool, &batch).await),
            }
        }
    }
    assert_eq!(snapshot(&fast).await, snapshot(&slow).await, "replies");
    let conversation_of = |key: String| {
        let fast = fast.clone();
        async move {
            sqlx::query_scalar::<_, Uuid>("SELECT conversation_id FROM messages WHERE idempotency_key = $1")
                .bind(key)
                .fetch_one(&fast)
                .await
                .unwrap()
        }
    };
    assert_eq!(conversation_of(k(100)).await, conversation_of(k(1)).await);
    assert_eq!(conversation_of(k(101)).await, conversation_of(k(3)).await);
    assert_ne!(conversation_of(k(103)).await, conversation_of(k(50)).await);
    // A redelivered reply is a duplicate, wherever it would go now.
    let again = apply_batch(&fast, &replies(ep_fast)).await.unwrap();
    assert!(again.iter().all(|o| o.effect == Effect::Duplicate));

    // A thread arriving in one batch (a backlog), replies before their parents: each follows
    // its newest reference, set-based, whatever the order.
    let batch = vec![
        reply(ep_fast, 202, &[k(200), k(201)]),
        reply(ep_fast, 201, &[k(200)]),
        request(ep_fast, 200),
        reply(ep_fast, 203, &[k(200), k(1)]), // the stored k1 is newer in its references
    ];
    assert!(appends_only(&batch));
    let outcomes = apply_batch(&fast, &batch).await.unwrap();
    assert_eq!(outcomes[0].conversation_id, outcomes[2].conversation_id);
    assert_eq!(outcomes[1].conversation_id, outcomes[2].conversation_id);
    assert_eq!(outcomes[3].conversation_id, conversation_of(k(1)).await);
    // A parent on another entry point: the reply goes one at a time (and, the conversation not
    // being linked to its entry point, opens its own).
    let batch = vec![reply(ep_fast, 211, &[k(210)]), request(others[0], 210)];
    assert_eq!(set_based_eligible(&batch), vec![false, true]);
    let outcomes = apply_batch(&fast, &batch).await.unwrap();
    assert_ne!(outcomes[0].conversation_id, outcomes[1].conversation_id);
    // References in a circle (no real thread does this): the whole batch one at a time, every
    // message stored once.
    let batch = vec![reply(ep_fast, 220, &[k(221)]), reply(ep_fast, 221, &[k(220)]), request(ep_fast, 222)];
    assert!(appends_only(&batch));
    let outcomes = apply_batch(&fast, &batch).await.unwrap();
    assert!(outcomes.iter().all(|o| o.effect == Effect::Appended));
    assert!(apply_batch(&fast, &batch).await.unwrap().iter().all(|o| o.effect == Effect::Duplicate));

    fast.close().await;
    slow.close().await;
    let mut admin = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres").await.unwrap();
    for name in [fast_name, slow_name] {
        sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)")).execute(&mut admin).await.unwrap();
    }
}

/// Which replies stay set-based: a parent in the batch must itself be set-based, on the same
/// entry point; a reply to an edit's key, to a key sent twice, or to a reply that left the
/// set-based path (a chain) goes one at a time.
#[test]
fn replies_leave_the_set_based_path_with_their_parents() {
    let (ep, other) = (Uuid::now_v7(), Uuid::now_v7());
    let k = |i: usize| format!("k{i}");
    let mut edit = request(ep, 9);
    edit.action = Some(UpdateAction::Edit {
        idempotency_key: k(1),
        body: "edited".into(),
        edited_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    });
    let batch = vec![
        request(ep, 1),                        // its key is also the edit's: one at a time
        edit,                                  // not an append
        reply(ep, 2, &[k(1)]),                 // parent one at a time
        reply(ep, 3, &[k(2)]),                 // ... and so its reply too
        request(ep, 4),                        // set-based
        reply(ep, 5, &[k(4), k(77)]),          // parent set-based, k77 unknown: set-based
        reply(other, 6, &[k(4)]),              // parent on another entry point
        reply(ep, 7, &["k-elsewhere".into()]), // stored or unknown: set-based
    ];
    assert_eq!(set_based_eligible(&batch), vec![false, false, false, false, true, true, false, true]);
}
