-- Outbound email is sent exactly once: a sender *claims* a message before its SMTP session
-- (pending, or failed for a re-send, -> sending) with its owner id and a lease expiry, in one
-- conditional UPDATE. Only the owner records the result (sent/failed) or releases the claim
-- (back to pending for a retry); a lease that expired (its owner died) can be claimed again.
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_delivery_state_check;
ALTER TABLE messages ADD CONSTRAINT messages_delivery_state_check
    CHECK (delivery_state IN ('pending', 'sending', 'sent', 'failed'));
ALTER TABLE messages ADD COLUMN delivery_owner text;
ALTER TABLE messages ADD COLUMN delivery_lease_until timestamptz;
ALTER TABLE messages ADD CONSTRAINT messages_delivery_claim_check
    CHECK (delivery_state IS DISTINCT FROM 'sending' OR (delivery_owner IS NOT NULL AND delivery_lease_until IS NOT NULL));
