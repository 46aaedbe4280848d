-- intake core schema: tenants, entry points, customers, conversations, messages.

CREATE TABLE projects (
    id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- API tokens are stored as SHA-256 hashes; the plain token is shown once at creation.
CREATE TABLE api_tokens (
    token_sha256 text PRIMARY KEY,
    project_id   text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    label        text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_tokens_project_idx ON api_tokens (project_id);

CREATE TABLE entry_points (
    id                  uuid PRIMARY KEY,
    project_id          text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    channel_type        text NOT NULL CHECK (channel_type IN ('email', 'chat', 'webhook')),
    adapter_key         text NOT NULL,
    external_channel_id text NOT NULL,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, channel_type, external_channel_id)
);
-- The worker resolves entry points by (channel_type, external_channel_id) across projects.
CREATE INDEX entry_points_lookup_idx ON entry_points (channel_type, external_channel_id);

CREATE TABLE customers (
    id                uuid PRIMARY KEY,
    project_id        text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    -- the customer's id in the channel (email address, Slack user id, phone number)
    external_id       text NOT NULL,
    display_name      text,
    primary_email     text,
    profile_image_url text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, external_id)
);

CREATE TABLE conversations (
    id                       uuid PRIMARY KEY,
    project_id               text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    -- the entry point it was opened through and its thread key there (find-or-create key)
    origin_entry_point_id    uuid REFERENCES entry_points (id) ON DELETE SET NULL,
    thread_key               text,
    subject                  text,
    tags                     text[] NOT NULL DEFAULT '{}',
    assigned_to_user_id      text,
    assigned_to_display_name text,
    first_response_due_at    timestamptz,
    first_response_at        timestamptz,
    next_response_due_at     timestamptz,
    last_customer_reply_at   timestamptz,
    last_agent_reply_at      timestamptz,
    user_id                  text,
    team_id                  text,
    user_display_name        text,
    user_primary_email       text,
    user_profile_image_url   text,
    -- the customer profile follows the newest inbound message: remember which one it came from
    profile_at               timestamptz,
    preview                  text,
    -- the preview follows the newest message: (time, key) of the message it came from
    preview_at               timestamptz,
    preview_key              text,
    last_message_at          timestamptz,
    last_inbound_at          timestamptz,
    last_outbound_at         timestamptz,
    last_activity_at         timestamptz NOT NULL DEFAULT now(),
    closed_at                timestamptz,
    record_metadata          jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX conversations_thread_idx
    ON conversations (origin_entry_point_id, thread_key) WHERE thread_key IS NOT NULL;
CREATE INDEX conversations_project_idx ON conversations (project_id, last_activity_at DESC);

CREATE TABLE conversation_entry_points (
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    entry_point_id  uuid NOT NULL REFERENCES entry_points (id) ON DELETE CASCADE,
    is_entry_point  boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, entry_point_id)
);
CREATE INDEX conversation_entry_points_ep_idx ON conversation_entry_points (entry_point_id);

CREATE TABLE messages (
    id                   uuid PRIMARY KEY,
    project_id           text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    conversation_id      uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    entry_point_id       uuid REFERENCES entry_points (id) ON DELETE SET NULL,
    -- the message's own id in its channel (email Message-ID, Slack ts, client-chosen id)
    idempotency_key      text NOT NULL,
    direction            text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    is_auto_reply        boolean NOT NULL DEFAULT false,
    sender_id            text,
    sender_display_name  text,
    sender_primary_email text,
    customer_id          uuid REFERENCES customers (id) ON DELETE SET NULL,
    user_id              text,
    team_id              text,
    subject              text,
    body                 text NOT NULL,
    attachments          jsonb NOT NULL DEFAULT '[]'::jsonb,
    metadata             jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- when the channel says it was sent (spec: createdAt)
    occurred_at          timestamptz NOT NULL,
    received_at          timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, idempotency_key)
);
CREATE INDEX messages_conversation_idx ON messages (conversation_id, occurred_at, idempotency_key);
-- firstResponseAt is computed from the earliest inbound/outbound message times
CREATE INDEX messages_first_response_idx
    ON messages (conversation_id, direction, occurred_at) WHERE NOT is_auto_reply;
