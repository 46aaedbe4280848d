//! How the replies of a set-based batch find their conversations: an email's `References` name
//! earlier messages, stored before the batch or arriving in the same batch (a backlog holds a
//! whole thread). The newest referenced message wins, as on the one-at-a-time path; a reply
//! to a message of its own batch follows that message's conversation, whatever their order in
//! the batch.

use std::collections::HashMap;

use super::*;
use sqlx::PgConnection;

/// Where a reply of the batch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reply {
    /// Nothing it references is known: found or created by its thread key.
    ByThread,
    /// The conversation of a message stored before the batch.
    Stored(Uuid),
    /// The conversation of message `n` of the batch, itself [`Reply::ByThread`].
    SameAs(usize),
}

/// A set-based request referring to another request of the batch stays set-based only when
/// that one does, on the same project and entry point (its conversation is then linked to the
/// entry point, as the one-at-a-time lookup requires); otherwise it goes one at a time, after
/// the set-based part, and finds its parent stored.
pub(super) fn keep_replies_resolvable(requests: &[UpdateRequest], eligible: &mut [bool]) {
    // (project, key) -> the requests of the batch with that key.
    let mut by_key: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (n, r) in requests.iter().enumerate() {
        if let Some(action) = &r.action {
            by_key.entry((r.project_id.as_str(), action_key(action))).or_default().push(n);
        }
    }
    let entry_point = |r: &UpdateRequest| match &r.target {
        Target::Channel { entry_point_id, .. } => Some(*entry_point_id),
        Target::Conversation(_) => None,
    };
    // Until nothing changes: a parent that leaves the set-based path takes its replies along.
    loop {
        let mut changed = false;
        for (n, r) in requests.iter().enumerate() {
            let Target::Channel { thread, .. } = &r.target else { continue };
            if !eligible[n] {
                continue;
            }
            let resolvable =
                thread.references.iter().all(|key| match by_key.get(&(r.project_id.as_str(), key.as_str())) {
                    None => true,
                    Some(same) => match same.as_slice() {
                        &[p] => {
                            p != n
                                && eligible[p]
                                && matches!(requests[p].action, Some(UpdateAction::Append(_)))
                                && entry_point(&requests[p]) == entry_point(r)
                        }
                        _ => false,
                    },
                });
            if !resolvable {
                eligible[n] = false;
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}

/// For the set-based messages `(project, entry point, key, references)`, where each goes; `None`
/// (nothing written) when replies of the batch refer to each other in a circle, which no real
/// thread does: the batch then goes one at a time.
pub(super) async fn resolve_replies(
    conn: &mut PgConnection,
    messages: &[(&str, Uuid, &str, &[String])],
) -> Result<Option<Vec<Reply>>, sqlx::Error> {
    let stored = newest_stored(conn, messages).await?;
    let in_batch: HashMap<(&str, &str), usize> =
        messages.iter().enumerate().map(|(n, (project, _, key, _))| ((*project, *key), n)).collect();
    // Each message's newest reference: stored (position, conversation) or of the batch.
    let parent: Vec<Option<usize>> = messages
        .iter()
        .enumerate()
        .map(|(n, (project, _, _, refs))| {
            let newest_here =
                refs.iter().enumerate().rev().find_map(|(pos, key)| {
                    in_batch.get(&(*project, key.as_str())).filter(|&&p| p != n).map(|&p| (pos, p))
                });
            match (newest_here, stored[n]) {
                (Some((pos, p)), Some((stored_pos, _))) if pos > stored_pos => Some(p),
                (Some((_, p)), None) => Some(p),
                _ => None,
            }
        })
        .collect();
    let mut replies = Vec::with_capacity(messages.len());
    for n in 0..messages.len() {
        let mut at = n;
        let mut steps = 0;
        while let Some(p) = parent[at] {
            at = p;
            steps += 1;
            if steps > messages.len() {
                return Ok(None);
            }
        }
        replies.push(match (stored[at], at == n) {
            (Some((_, conversation)), _) => Reply::Stored(conversation),
            (None, true) => Reply::ByThread,
            (None, false) => Reply::SameAs(at),
        });
    }
    Ok(Some(replies))
}

/// For each message `(project, entry point, key, references)`, its newest reference to a stored
/// message (position in its references, conversation) whose conversation is linked to the
/// message's entry point, in one statement: the one-at-a-time path asks it for one message.
pub(super) async fn newest_stored(
    conn: &mut PgConnection,
    messages: &[(&str, Uuid, &str, &[String])],
) -> Result<Vec<Option<(usize, Uuid)>>, sqlx::Error> {
    let mut newest = vec![None; messages.len()];
    let refs: Vec<(i32, &str, Uuid, &str, i32)> = messages
        .iter()
        .enumerate()
        .flat_map(|(n, (project, ep, _, keys))| {
            keys.iter().enumerate().map(move |(pos, key)| (n as i32, *project, *ep, key.as_str(), pos as i32))
        })
        .collect();
    if refs.is_empty() {
        return Ok(newest);
    }
    let found: Vec<(i32, i32, Uuid)> = sqlx::query_as(
        "WITH refs AS (SELECT * FROM unnest($1::int4[], $2::text[], $3::uuid[], $4::text[], $5::int4[])
                                AS r(item, project, ep, key, pos)),
              found AS (
                SELECT refs.item, refs.pos, refs.ep, m.conversation_id FROM refs
                  JOIN messages m ON m.project_id = refs.project AND m.idempotency_key = refs.key
                UNION ALL
                SELECT refs.item, refs.pos, refs.ep, m.conversation_id FROM refs
                  JOIN messages m ON m.project_id = refs.project AND m.external_id = refs.key)
         SELECT DISTINCT ON (found.item) found.item, found.pos, found.conversation_id FROM found
           JOIN conversation_entry_points cep
             ON cep.conversation_id = found.conversation_id AND cep.entry_point_id = found.ep
          ORDER BY found.item, found.pos DESC",
    )
    .bind(refs.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind(refs.iter().map(|r| r.1).collect::<Vec<_>>())
    .bind(refs.iter().map(|r| r.2).collect::<Vec<_>>())
    .bind(refs.iter().map(|r| r.3).collect::<Vec<_>>())
    .bind(refs.iter().map(|r| r.4).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    for (item, pos, conversation_id) in found {
        newest[item as usize] = Some((pos as usize, conversation_id));
    }
    Ok(newest)
}
