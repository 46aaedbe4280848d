//! Outbound email: agent replies on email conversations are sent over SMTP (lettre) with
//! threading headers. The message is stored first as *pending*; the conversation's
//! `lastOutboundAt` moves only when the SMTP server accepted it (a `sent` status through the
//! update logic). Failures are retried by the worker's retry path, then dead-lettered with the
//! message marked `failed`.
//!
//! Exactly once: before its SMTP session a sender *claims* the message in one conditional
//! UPDATE (`pending`, or `failed` for a re-send → `sending`, with its owner id and a lease
//! expiry) and stores the Message-ID there, so every attempt reuses it. Only the owner records
//! the result (`sent` once the server accepted, `failed`) or releases the claim for a retry;
//! a job that finds another owner's live lease sends nothing and goes to the retry path, so a
//! claim whose owner died is taken over once its lease expired.

use std::time::Duration;

use clap::Args;

mod compose;
mod job;
mod mailer;
mod queue;
mod resend;
mod status;

pub use compose::capped_references;
pub use job::{SendError, SendJob, SendOptions, SendOutcome};
pub use mailer::Mailer;
pub use queue::OutboundQueue;
pub use resend::{prepare_resend, Resend};
pub use status::{record_status, STATUS_DEFERRED};

#[derive(Debug, Clone, Args)]
pub struct SmtpArgs {
    /// SMTP server for outbound email, e.g. `smtp://user:pass@mail.example.com:587?tls=required`,
    /// `smtps://…:465` (implicit TLS) or `smtp://127.0.0.1:2525` (plain, local relays only).
    /// Unset: intake does not send email; outbound messages are recorded as they come.
    #[arg(long, env = "INTAKE_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// Give up on one SMTP conversation after this long.
    #[arg(long, env = "INTAKE_SMTP_TIMEOUT", default_value = "30s", value_parser = crate::amqp::parse_duration)]
    pub smtp_timeout: Duration,

    /// How long a sender's claim on a message lasts; another worker sends it only after that
    /// (when the claiming worker died mid-send). At least the SMTP timeout.
    #[arg(long, env = "INTAKE_SMTP_LEASE", default_value = "5m", value_parser = crate::amqp::parse_duration)]
    pub smtp_lease: Duration,
}
