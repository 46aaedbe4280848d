-- The webhook gateway verifies provider signatures with these secrets (several while one is
-- being rotated), and answers Meta's subscription check with the verify token. Neither is ever
-- returned by the API.
ALTER TABLE entry_points ADD COLUMN webhook_secrets text[] NOT NULL DEFAULT '{}';
ALTER TABLE entry_points ADD COLUMN verify_token text;
