//! The set-based path: a batch of plain new messages in a few statements.

use super::parked::unpark;
use super::replies::{resolve_replies, Reply};
use super::*;
use intake_adapters::{Direction, NormalizedMessage, UpdateAction};
use sqlx::PgConnection;
use std::collections::HashMap;
use uuid::Uuid;

/// [`apply_in`] for the [`set_based_eligible`] requests of a batch (`order`; the outcomes of
/// the others stay `None`) with a few statements per batch
/// instead of several per message, with the same result as applying them one by one in
/// `order`: duplicates are found first, replies are resolved ([`resolve_replies`]),
/// conversations are locked (or created) together, customers are upserted once each with the
/// values the last message would have left, the messages are inserted together, and the
/// conversation rows are folded in rounds. `None` (before anything is written) when a key comes
/// back with other content (the one-at-a-time path stores such a message under a derived key)
/// or replies of the batch refer to each other in a circle.
pub(super) async fn apply_appends(
    conn: &mut PgConnection,
    requests: &[UpdateRequest],
    order: &[usize],
) -> Result<Option<Vec<Option<UpdateOutcome>>>, UpdateError> {
    struct Item<'a> {
        index: usize,
        project: &'a str,
        entry_point_id: Uuid,
        thread_key: &'a str,
        references: &'a [String],
        message: &'a NormalizedMessage,
        fingerprint: String,
    }
    for &i in order {
        validate(&requests[i])?;
    }
    let items: Vec<Item> = order
        .iter()
        .map(|&index| {
            let r = &requests[index];
            let (Some(UpdateAction::Append(message)), Target::Channel { entry_point_id, thread }) =
                (&r.action, &r.target)
            else {
                unreachable!("checked by set_based_eligible")
            };
            let thread_key = thread.key.as_deref().unwrap_or(&message.idempotency_key);
            let fingerprint = message.fingerprint();
            Item {
                index,
                project: &r.project_id,
                entry_point_id: *entry_point_id,
                thread_key,
                references: &thread.references,
                message,
                fingerprint,
            }
        })
        .collect();
    let mut outcomes: Vec<Option<UpdateOutcome>> = vec![None; requests.len()];

    // Messages stored before (a redelivery): nothing changes.
    let existing: Vec<(String, String, Uuid, Uuid, bool, Option<String>)> = sqlx::query_as(
        "SELECT k.project, k.key, m.id, m.conversation_id, m.by_external_id, m.fingerprint
           FROM unnest($1::text[], $2::text[]) AS k(project, key)
           CROSS JOIN LATERAL (
             SELECT id, conversation_id, idempotency_key <> k.key AS by_external_id, fingerprint FROM messages
              WHERE project_id = k.project AND (idempotency_key = k.key OR external_id = k.key)
              ORDER BY (idempotency_key = k.key) DESC LIMIT 1) m",
    )
    .bind(items.iter().map(|i| i.project).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.message.idempotency_key.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let existing: HashMap<(String, String), StoredMessage> = existing
        .into_iter()
        .map(|(project, key, id, conversation_id, by_external_id, fingerprint)| {
            ((project, key), StoredMessage { id, conversation_id, by_external_id, fingerprint })
        })
        .collect();
    let mut fresh = Vec::with_capacity(items.len());
    for item in items {
        let stored = (!existing.is_empty())
            .then(|| existing.get(&(item.project.to_owned(), item.message.idempotency_key.clone())))
            .flatten();
        if let Some(stored) = stored {
            if !stored.is_copy_of(&item.fingerprint) {
                return Ok(None);
            }
            outcomes[item.index] = Some(UpdateOutcome {
                conversation_id: stored.conversation_id,
                message_id: Some(stored.id),
                effect: Effect::Duplicate,
            });
        } else {
            fresh.push(item);
        }
    }

    // Replies: the conversation of the newest referenced message, stored or of this batch.
    let asked: Vec<_> =
        fresh.iter().map(|i| (i.project, i.entry_point_id, i.message.idempotency_key.as_str(), i.references)).collect();
    let Some(replies) = resolve_replies(conn, &asked).await? else {
        return Ok(None);
    };

    // Conversations: lock the existing ones (replied to or found by thread key, in lock-key
    // order), create the others.
    type ThreadId<'a> = (&'a str, Uuid, &'a str);
    let mut threads: Vec<ThreadId> = Vec::new();
    let mut first_of_thread: HashMap<ThreadId, usize> = HashMap::new();
    for (n, item) in fresh.iter().enumerate() {
        if replies[n] != Reply::ByThread {
            continue;
        }
        let thread = (item.project, item.entry_point_id, item.thread_key);
        first_of_thread.entry(thread).or_insert_with(|| {
            threads.push(thread);
            n
        });
    }
    let mut conversations: HashMap<ThreadId, Uuid> = HashMap::with_capacity(threads.len());
    let mut replied_to: Vec<Uuid> =
        replies.iter().filter_map(|r| if let Reply::Stored(id) = r { Some(*id) } else { None }).collect();
    replied_to.sort_unstable();
    replied_to.dedup();
    if !threads.is_empty() || !replied_to.is_empty() {
        let locked = lock_threads(conn, &threads, &replied_to, &mut conversations).await?;
        if replied_to.iter().any(|id| !locked.contains(id)) {
            // Gone since the lookup: the batch runs again and finds what is there now.
            return Err(sqlx::Error::RowNotFound.into());
        }
        let mut missing: Vec<&ThreadId> = threads.iter().filter(|t| !conversations.contains_key(*t)).collect();
        missing.sort_by_key(|(p, ep, k)| (*ep, *k, *p));
        if !missing.is_empty() {
            let first: Vec<&NormalizedMessage> = missing.iter().map(|t| fresh[first_of_thread[*t]].message).collect();
            let inserted: Vec<(Uuid, String, Uuid, String)> = sqlx::query_as(
                "INSERT INTO conversations (id, project_id, origin_entry_point_id, thread_key, subject, last_activity_at)
                 SELECT t.id, t.project, t.ep, t.key, t.subject, GREATEST(now(), t.at)
                   FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::timestamptz[])
                        WITH ORDINALITY AS t(id, project, ep, key, subject, at, n)
                  ORDER BY t.n
                 ON CONFLICT (origin_entry_point_id, thread_key) WHERE thread_key IS NOT NULL DO NOTHING
                 RETURNING id, project_id, origin_entry_point_id, thread_key",
            )
            .bind(missing.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
            .bind(missing.iter().map(|t| t.0).collect::<Vec<_>>())
            .bind(missing.iter().map(|t| t.1).collect::<Vec<_>>())
            .bind(missing.iter().map(|t| t.2).collect::<Vec<_>>())
            .bind(first.iter().map(|m| m.subject.as_deref()).collect::<Vec<_>>())
            .bind(first.iter().map(|m| m.occurred_at).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await?;
            let mut opened_ids = Vec::with_capacity(inserted.len());
            let mut opened_eps = Vec::with_capacity(inserted.len());
            let asked: HashMap<(&str, Uuid, &str), &&ThreadId> = missing.iter().map(|t| ((t.0, t.1, t.2), t)).collect();
            for (id, project, ep, key) in &inserted {
                if let Some(t) = asked.get(&(project.as_str(), *ep, key.as_str())) {
                    conversations.insert(***t, *id);
                    opened_ids.push(*id);
                    opened_eps.push(*ep);
                    tracing::info!(conversation_id = %id, entry_point_id = %ep, "conversation opened");
                }
            }
            if !opened_ids.is_empty() {
                sqlx::query(
                    "INSERT INTO conversation_entry_points (conversation_id, entry_point_id, is_entry_point)
                     SELECT c, e, true FROM unnest($1::uuid[], $2::uuid[]) AS t(c, e) ON CONFLICT DO NOTHING",
                )
                .bind(opened_ids)
                .bind(opened_eps)
                .execute(&mut *conn)
                .await?;
            }
            // Created by a concurrent transaction after our lookup: wait for it and lock it.
            let raced: Vec<ThreadId> = threads.iter().filter(|t| !conversations.contains_key(*t)).copied().collect();
            if !raced.is_empty() {
                lock_threads(conn, &raced, &[], &mut conversations).await?;
                if raced.iter().any(|t| !conversations.contains_key(t)) {
                    return Err(sqlx::Error::RowNotFound.into());
                }
            }
        }
    }

    // Customers: one upsert each, with the values the last of their messages would leave.
    // (project, external id) -> display name, primary email, profile image
    type Profile<'a> = [Option<&'a str>; 3];
    let mut customers: Vec<((&str, &str), Profile)> = Vec::new();
    let mut customer_index: HashMap<(&str, &str), usize> = HashMap::new();
    for item in &fresh {
        let m = item.message;
        if m.direction != Direction::Inbound || m.is_auto_reply {
            continue;
        }
        let Some(external) = m.sender.id.as_deref().or(m.sender.primary_email.as_deref()).filter(|s| !s.is_empty())
        else {
            continue;
        };
        let values = [
            m.sender.display_name.as_deref(),
            m.sender.primary_email.as_deref(),
            m.sender.profile_image_url.as_deref(),
        ];
        match customer_index.get(&(item.project, external)) {
            Some(&i) => {
                for (f, v) in customers[i].1.iter_mut().zip(values) {
                    *f = v.or(*f);
                }
            }
            None => {
                customer_index.insert((item.project, external), customers.len());
                customers.push(((item.project, external), values));
            }
        }
    }
    customers.sort_by_key(|(k, _)| *k);
    let mut customer_ids: HashMap<(String, String), Uuid> = HashMap::with_capacity(customers.len());
    if !customers.is_empty() {
        // A customer whose profile is unchanged is not rewritten (most messages come from a
        // customer seen before): its id is read instead.
        let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
            "WITH t AS (
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                      WITH ORDINALITY AS t(id, project, external, name, email, image, n)),
             written AS (
               INSERT INTO customers AS c (id, project_id, external_id, display_name, primary_email, profile_image_url)
               SELECT t.id, t.project, t.external, t.name, t.email, t.image FROM t ORDER BY t.n
               ON CONFLICT (project_id, external_id) DO UPDATE SET
                  display_name = COALESCE(EXCLUDED.display_name, c.display_name),
                  primary_email = COALESCE(EXCLUDED.primary_email, c.primary_email),
                  profile_image_url = COALESCE(EXCLUDED.profile_image_url, c.profile_image_url),
                  updated_at = now()
               WHERE (c.display_name, c.primary_email, c.profile_image_url) IS DISTINCT FROM
                     (COALESCE(EXCLUDED.display_name, c.display_name), COALESCE(EXCLUDED.primary_email, c.primary_email),
                      COALESCE(EXCLUDED.profile_image_url, c.profile_image_url))
               RETURNING c.id, c.project_id, c.external_id)
             SELECT id, project_id, external_id FROM written
             UNION ALL
             SELECT c.id, c.project_id, c.external_id FROM customers c JOIN t
                 ON c.project_id = t.project AND c.external_id = t.external
              WHERE NOT EXISTS (SELECT 1 FROM written w WHERE w.project_id = t.project AND w.external_id = t.external)",
        )
        .bind(customers.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
        .bind(customers.iter().map(|((p, _), _)| *p).collect::<Vec<_>>())
        .bind(customers.iter().map(|((_, e), _)| *e).collect::<Vec<_>>())
        .bind(customers.iter().map(|(_, v)| v[0]).collect::<Vec<_>>())
        .bind(customers.iter().map(|(_, v)| v[1]).collect::<Vec<_>>())
        .bind(customers.iter().map(|(_, v)| v[2]).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        customer_ids.extend(rows.into_iter().map(|(id, p, e)| ((p, e), id)));
        // Committed by a concurrent transaction after this statement's snapshot and unchanged
        // by it: neither written nor visible above.
        let unseen: Vec<&(&str, &str)> = customers
            .iter()
            .map(|(k, _)| k)
            .filter(|(p, e)| !customer_ids.contains_key(&((*p).to_owned(), (*e).to_owned())))
            .collect();
        if !unseen.is_empty() {
            let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
                "SELECT c.id, c.project_id, c.external_id FROM customers c
                   JOIN unnest($1::text[], $2::text[]) AS t(project, external)
                     ON c.project_id = t.project AND c.external_id = t.external",
            )
            .bind(unseen.iter().map(|(p, _)| *p).collect::<Vec<_>>())
            .bind(unseen.iter().map(|(_, e)| *e).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await?;
            customer_ids.extend(rows.into_iter().map(|(id, p, e)| ((p, e), id)));
        }
    }
    let customer_of = |item: &Item| -> Option<Uuid> {
        let m = item.message;
        if m.direction != Direction::Inbound || m.is_auto_reply {
            return None;
        }
        let external = m.sender.id.as_deref().or(m.sender.primary_email.as_deref()).filter(|s| !s.is_empty())?;
        customer_ids.get(&(item.project.to_owned(), external.to_owned())).copied()
    };

    // Messages, together; one a concurrent transaction stored first is a duplicate. Ids are
    // time-ordered (UUIDv7): a new row's key lands on the right edge of the primary-key index,
    // not on a random page of it (which, on a big table, is a page read per message).
    let ids: Vec<Uuid> = fresh.iter().map(|_| Uuid::now_v7()).collect();
    let by_thread = |i: &Item| conversations[&(i.project, i.entry_point_id, i.thread_key)];
    let conversation_ids: Vec<Uuid> = fresh
        .iter()
        .zip(&replies)
        .map(|(i, reply)| match *reply {
            Reply::ByThread => by_thread(i),
            Reply::Stored(id) => id,
            Reply::SameAs(n) => by_thread(&fresh[n]),
        })
        .collect();
    let customers_of: Vec<Option<Uuid>> = fresh.iter().map(customer_of).collect();
    let user_ids: Vec<Option<String>> = fresh
        .iter()
        .zip(&customers_of)
        .map(|(item, customer)| {
            let m = item.message;
            requests[item.index]
                .extras
                .user_id
                .clone()
                .or_else(|| customer.map(|c| c.to_string()))
                .or_else(|| (m.direction == Direction::Outbound).then(|| m.sender.id.clone()).flatten())
        })
        .collect();
    let inserted: Vec<(String, String)> = if fresh.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(
            "INSERT INTO messages (id, project_id, conversation_id, entry_point_id, idempotency_key, direction,
                                   is_auto_reply, sender_id, sender_display_name, sender_primary_email, customer_id,
                                   user_id, team_id, subject, body, attachments, metadata, occurred_at, fingerprint)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::bool[],
                                  $8::text[], $9::text[], $10::text[], $11::uuid[], $12::text[], $13::text[],
                                  $14::text[], $15::text[], $16::jsonb[], $17::jsonb[], $18::timestamptz[],
                                  $19::text[])
             ON CONFLICT (project_id, idempotency_key) DO NOTHING RETURNING project_id, idempotency_key",
        )
        .bind(&ids)
        .bind(fresh.iter().map(|i| i.project).collect::<Vec<_>>())
        .bind(&conversation_ids)
        .bind(fresh.iter().map(|i| i.entry_point_id).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.message.idempotency_key.as_str()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.message.direction.as_str()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.message.is_auto_reply).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.message.sender.id.as_deref()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.message.sender.display_name.as_deref()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.message.sender.primary_email.as_deref()).collect::<Vec<_>>())
        .bind(&customers_of)
        .bind(&user_ids)
        .bind(fresh.iter().map(|i| requests[i.index].extras.team_id.as_deref()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.message.subject.as_deref()).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.message.body.as_str()).collect::<Vec<_>>())
        .bind(
            fresh
                .iter()
                .map(|i| serde_json::to_value(&i.message.attachments).expect("attachments serialize"))
                .collect::<Vec<_>>(),
        )
        .bind(fresh.iter().map(|i| serde_json::Value::Object(i.message.metadata.clone())).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.message.occurred_at).collect::<Vec<_>>())
        .bind(fresh.iter().map(|i| i.fingerprint.as_str()).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?
    };
    let inserted: std::collections::HashSet<(&str, &str)> =
        inserted.iter().map(|(p, k)| (p.as_str(), k.as_str())).collect();

    let followed = replies.iter().any(|r| matches!(r, Reply::SameAs(_)));
    // Fold them into their conversations, in order.
    let mut bumps = Bumps::default();
    for (n, item) in fresh.iter().enumerate() {
        let key = item.message.idempotency_key.as_str();
        if !inserted.contains(&(item.project, key)) {
            // A concurrent transaction stored this key first: a copy, or (run the batch again,
            // and the one-at-a-time path derives a key) another message.
            let stored = find_stored(conn, item.project, key).await?.ok_or(sqlx::Error::RowNotFound)?;
            // A reply of this batch may have followed it into the conversation it was meant
            // for: run the batch again, which finds it stored.
            if !stored.is_copy_of(&item.fingerprint) || followed {
                return Err(sqlx::Error::RowNotFound.into());
            }
            outcomes[item.index] = Some(UpdateOutcome {
                conversation_id: stored.conversation_id,
                message_id: Some(stored.id),
                effect: Effect::Duplicate,
            });
            continue;
        }
        let conversation_id = conversation_ids[n];
        bumps.push(conversation_id, item.message, customers_of[n]);
        tracing::debug!(%conversation_id, message_id = %ids[n], key, "message appended");
        outcomes[item.index] =
            Some(UpdateOutcome { conversation_id, message_id: Some(ids[n]), effect: Effect::Appended });
    }
    bumps.execute(conn).await?;
    let appended: Vec<(&str, &str, Uuid, Uuid)> = fresh
        .iter()
        .enumerate()
        .filter(|(_, item)| inserted.contains(&(item.project, item.message.idempotency_key.as_str())))
        .map(|(n, item)| (item.project, item.message.idempotency_key.as_str(), ids[n], conversation_ids[n]))
        .collect();
    unpark(conn, &appended).await?;
    Ok(Some(outcomes))
}

/// Lock the conversations of these threads that exist (recording their ids) and the
/// conversations `ids`, all in one lock-key order; the ids locked.
pub(super) async fn lock_threads<'a>(
    conn: &mut PgConnection,
    threads: &[(&'a str, Uuid, &'a str)],
    ids: &[Uuid],
    found: &mut HashMap<(&'a str, Uuid, &'a str), Uuid>,
) -> Result<std::collections::HashSet<Uuid>, sqlx::Error> {
    // Locked in `lock_key` order (byte-wise, hence COLLATE "C"), the order the one-at-a-time
    // path locks in, so two batches in flight (one set-based, one not) cannot deadlock.
    let rows: Vec<(Uuid, String, Option<Uuid>, Option<String>)> = sqlx::query_as(
        "WITH wanted AS (
           SELECT c.id FROM conversations c
             JOIN unnest($1::text[], $2::uuid[], $3::text[]) AS t(project, ep, key)
               ON c.origin_entry_point_id = t.ep AND c.thread_key = t.key AND c.project_id = t.project
           UNION
           SELECT unnest($4::uuid[]))
         SELECT c.id, c.project_id, c.origin_entry_point_id, c.thread_key
           FROM conversations c JOIN wanted USING (id)
          ORDER BY ('t:' || c.origin_entry_point_id::text || ':' || c.thread_key) COLLATE \"C\", c.id
            FOR NO KEY UPDATE OF c",
    )
    .bind(threads.iter().map(|t| t.0).collect::<Vec<_>>())
    .bind(threads.iter().map(|t| t.1).collect::<Vec<_>>())
    .bind(threads.iter().map(|t| t.2).collect::<Vec<_>>())
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let asked: HashMap<(&str, Uuid, &str), &(&'a str, Uuid, &'a str)> =
        threads.iter().map(|t| ((t.0, t.1, t.2), t)).collect();
    let mut locked = std::collections::HashSet::with_capacity(rows.len());
    for (id, project, ep, key) in rows {
        locked.insert(id);
        let (Some(ep), Some(key)) = (ep, key) else { continue };
        if let Some(t) = asked.get(&(project.as_str(), ep, key.as_str())) {
            found.insert(**t, id);
        }
    }
    Ok(locked)
}
