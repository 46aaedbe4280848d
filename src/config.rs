//! Configuration shared by the subcommands: command-line flags, each backed by an environment
//! variable, with defaults that work against the local services.

use std::net::SocketAddr;

use clap::{Args, ValueEnum};

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/intake";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL. The database is created if it does not exist, and migrations are applied
    /// on start-up.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    pub database_url: String,

    /// Largest number of PostgreSQL connections this process opens.
    #[arg(long, env = "INTAKE_DB_MAX_CONNECTIONS", default_value_t = 10, global = true)]
    pub db_max_connections: u32,
}

/// Rules of the update logic that every writer (worker, API) follows.
#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    /// Message times further in the future than this are clamped to the time intake received
    /// the message (the original is kept as `metadata.originalOccurredAt`): forward-only
    /// timestamps would otherwise stay frozen at a wrong date for good.
    #[arg(long, env = "INTAKE_MAX_FUTURE_SKEW", default_value = "24h", value_parser = crate::amqp::parse_duration, global = true)]
    pub max_future_skew: std::time::Duration,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "INTAKE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Largest accepted request body, in bytes; larger bodies get 413.
    #[arg(long, env = "INTAKE_HTTP_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub http_body_limit: usize,

    /// API tokens as `project:token` pairs separated by commas. Each project is created if
    /// missing and the token registered for it (stored hashed). Tokens can also be created
    /// with `intake token create`.
    #[arg(long, env = "INTAKE_API_TOKENS", hide_env_values = true, value_delimiter = ',')]
    pub api_tokens: Vec<String>,
}

impl HttpArgs {
    /// Parse `project:token` pairs.
    pub fn token_pairs(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.api_tokens
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|pair| {
                let (project, token) = pair
                    .trim()
                    .split_once(':')
                    .ok_or_else(|| anyhow::anyhow!("INTAKE_API_TOKENS entry is not `project:token`"))?;
                anyhow::ensure!(
                    !project.is_empty() && token.len() >= 8,
                    "INTAKE_API_TOKENS: project must be set and tokens at least 8 characters"
                );
                Ok((project.to_owned(), token.to_owned()))
            })
            .collect()
    }
}

#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Address `intake gateway` listens on (`intake serve` mounts the gateway on its own address).
    #[arg(long, env = "INTAKE_GATEWAY_ADDR", default_value = "127.0.0.1:8081")]
    pub gateway_addr: SocketAddr,

    /// Public base URL providers call, e.g. `https://hooks.example.com` (Twilio signs the full
    /// URL). Unset: rebuilt from the `Host` and `X-Forwarded-Proto` headers.
    #[arg(long, env = "INTAKE_GATEWAY_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Largest webhook body accepted, in bytes; larger ones get 413 and are not published.
    #[arg(long, env = "INTAKE_GATEWAY_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub gateway_body_limit: usize,

    /// How far a signed timestamp may be from now before the request counts as a replay.
    #[arg(long, env = "INTAKE_SIGNATURE_TOLERANCE", default_value = "5m", value_parser = crate::amqp::parse_duration)]
    pub signature_tolerance: std::time::Duration,
}

/// Set up tracing. `RUST_LOG` picks the levels (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,lapin=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}
