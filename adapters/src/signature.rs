//! Webhook signature verification (pure functions).
