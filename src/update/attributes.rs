//! Conversation attribute changes, and the `status-change` timeline message they record.

use super::*;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

/// The conversation row is locked by the caller.
pub(super) async fn update_attributes(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    changes: &AttributeChanges,
) -> Result<(), sqlx::Error> {
    let (project_id, status_before): (String, String) =
        sqlx::query_as("SELECT project_id, status FROM conversations WHERE id = $1")
            .bind(conversation_id)
            .fetch_one(&mut *conn)
            .await?;
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "WITH moved AS (UPDATE conversations SET last_activity_at = GREATEST(last_activity_at, now()), updated_at = now()",
    );
    macro_rules! set {
        ($field:expr, $column:literal) => {
            if let Some(value) = &$field {
                q.push(concat!(", ", $column, " = ")).push_bind(value.clone());
            }
        };
    }
    set!(changes.subject, "subject");
    set!(changes.tags, "tags");
    set!(changes.assigned_to_user_id, "assigned_to_user_id");
    set!(changes.assigned_to_display_name, "assigned_to_display_name");
    set!(changes.first_response_due_at, "first_response_due_at");
    set!(changes.next_response_due_at, "next_response_due_at");
    set!(changes.user_id, "user_id");
    if let Some(user_id) = &changes.user_id {
        // The caller's userId stays until the caller changes it; cleared, the customer's returns.
        q.push(", user_id_from_caller = ").push_bind(user_id.is_some());
    }
    set!(changes.team_id, "team_id");
    set!(changes.closed_at, "closed_at");
    if let Some(record) = &changes.record_metadata {
        q.push(", record_metadata = ").push_bind(serde_json::Value::Object(record.clone()));
    }
    if let Some(priority) = changes.priority {
        q.push(", priority = ").push_bind(priority.as_str());
    }
    // status and closedAt say the same thing twice; whichever was sent sets the other.
    match (changes.status, &changes.closed_at) {
        (Some(status), closed_at) => {
            q.push(", status = ").push_bind(status.as_str());
            if closed_at.is_none() {
                q.push(", closed_at = CASE WHEN ")
                    .push_bind(status == ConversationStatus::Closed)
                    .push(" THEN coalesce(closed_at, now()) END");
            }
        }
        (None, Some(Some(_))) => {
            q.push(", status = 'closed'");
        }
        (None, Some(None)) => {
            q.push(", status = CASE WHEN status = 'closed' THEN 'open' ELSE status END");
        }
        (None, None) => {}
    }
    // The list's order (conversation_activity) follows last_activity_at in the same statement.
    q.push(" WHERE id = ").push_bind(conversation_id).push(
        " RETURNING id, last_activity_at, status),
          followed AS (UPDATE conversation_activity a SET last_activity_at = moved.last_activity_at FROM moved
                        WHERE a.conversation_id = moved.id AND a.last_activity_at <> moved.last_activity_at)
         SELECT status FROM moved",
    );
    let status_after: String = q.build_query_scalar().fetch_one(&mut *conn).await?;
    // Only a status the caller sent is recorded; closedAt alone (intake's older attribute) and
    // the transitions messages cause change it silently.
    if changes.status.is_some() && status_after != status_before {
        record_status_change(conn, &project_id, conversation_id, &status_before, &status_after).await?;
    }
    Ok(())
}

/// A `status-change` message on the timeline (sender type `system`). It is no message of the
/// customer or an agent: no timestamp, preview or reply time follows it.
async fn record_status_change(
    conn: &mut PgConnection,
    project_id: &str,
    conversation_id: Uuid,
    from: &str,
    to: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO messages (id, project_id, conversation_id, idempotency_key, direction, body, metadata,
                               occurred_at, message_type)
         VALUES ($1, $2, $3, $4, 'outbound', $5, jsonb_build_object('fromStatus', $6::text, 'toStatus', $7::text),
                 now(), 'status-change')",
    )
    .bind(Uuid::now_v7())
    .bind(project_id)
    .bind(conversation_id)
    .bind(format!("status-change:{}", Uuid::new_v4()))
    .bind(format!("Status changed from {from} to {to}"))
    .bind(from)
    .bind(to)
    .execute(conn)
    .await?;
    Ok(())
}
