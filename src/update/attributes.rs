//! Conversation attribute changes.

use super::*;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

pub(super) async fn update_attributes(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    changes: &AttributeChanges,
) -> Result<(), sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "UPDATE conversations SET last_activity_at = GREATEST(last_activity_at, now()), updated_at = now()",
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
    q.push(" WHERE id = ").push_bind(conversation_id);
    q.build().execute(conn).await?;
    Ok(())
}
