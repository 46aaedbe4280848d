//! `intake smtpd`: an SMTP or LMTP listener an MTA (Postfix `lmtp:`, Exim, any relay) hands
//! mail to. Recipients are checked against the registered email entry points, each mail is
//! published to `email.<adapterKey>` with publisher confirms, and the client hears `250` only
//! after RabbitMQ confirmed every copy; otherwise `451 4.3.0`, so the MTA keeps the mail and
//! retries. Protocol parsing is `smtp-proto`'s; this module is the transport around it.

pub mod delivery;
pub mod recipients;
pub mod session;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::amqp::publish::LazyPublisher;
use session::{Ending, Session};

#[derive(Debug, Clone, Args)]
pub struct SmtpdArgs {
    /// Address to listen on.
    #[arg(long, env = "INTAKE_SMTPD_ADDR", default_value = "127.0.0.1:2525")]
    pub addr: SocketAddr,

    /// Speak LMTP (RFC 2033: `LHLO`, one answer per recipient) instead of SMTP.
    #[arg(long, env = "INTAKE_SMTPD_LMTP")]
    pub lmtp: bool,

    /// The name this server gives in its greeting and `Received:` headers.
    #[arg(long, env = "INTAKE_SMTPD_HOSTNAME", default_value = "localhost")]
    pub hostname: String,

    /// Largest message accepted (advertised with `SIZE`; larger ones get `552 5.3.4`).
    #[arg(long, env = "INTAKE_SMTPD_MAX_MESSAGE_BYTES", default_value_t = 25 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Recipients accepted per message; more get `452 4.5.3`.
    #[arg(long, env = "INTAKE_SMTPD_MAX_RECIPIENTS", default_value_t = 100)]
    pub max_recipients: usize,

    /// Sessions served at once; a client over the limit gets `421 4.3.2` and is disconnected.
    #[arg(long, env = "INTAKE_SMTPD_MAX_SESSIONS", default_value_t = 100)]
    pub max_sessions: usize,

    /// A client silent this long between commands is disconnected (RFC 5321 §4.5.3.2: 5m).
    #[arg(long, env = "INTAKE_SMTPD_COMMAND_TIMEOUT", default_value = "5m", value_parser = crate::amqp::parse_duration)]
    pub command_timeout: Duration,

    /// A client silent this long while sending the message is disconnected (RFC: 3m per block).
    #[arg(long, env = "INTAKE_SMTPD_DATA_TIMEOUT", default_value = "3m", value_parser = crate::amqp::parse_duration)]
    pub data_timeout: Duration,

    /// Longest wait for RabbitMQ's confirm before answering `451`.
    #[arg(long, env = "INTAKE_SMTPD_PUBLISH_TIMEOUT", default_value = "30s", value_parser = crate::amqp::parse_duration)]
    pub publish_timeout: Duration,

    /// PEM certificate chain for STARTTLS (with `--tls-key`).
    #[arg(long, env = "INTAKE_SMTPD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for STARTTLS.
    #[arg(long, env = "INTAKE_SMTPD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Allow listening on a non-loopback address without TLS (mail and addresses would cross
    /// the network in the clear).
    #[arg(long, env = "INTAKE_SMTPD_ALLOW_PLAINTEXT")]
    pub allow_plaintext: bool,
}

/// Protocol limits and timeouts of a listener.
#[derive(Debug, Clone)]
pub struct SmtpdSettings {
    pub hostname: String,
    pub lmtp: bool,
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    pub max_sessions: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub publish_timeout: Duration,
    /// Protocol errors after which a session is closed.
    pub max_errors: u32,
}

impl From<&SmtpdArgs> for SmtpdSettings {
    fn from(args: &SmtpdArgs) -> Self {
        SmtpdSettings {
            hostname: args.hostname.clone(),
            lmtp: args.lmtp,
            max_message_bytes: args.max_message_bytes,
            max_recipients: args.max_recipients,
            max_sessions: args.max_sessions,
            command_timeout: args.command_timeout,
            data_timeout: args.data_timeout,
            publish_timeout: args.publish_timeout,
            max_errors: 10,
        }
    }
}

pub struct SmtpdState {
    pub pool: PgPool,
    pub publisher: Arc<LazyPublisher>,
    pub exchange: String,
    pub settings: SmtpdSettings,
    /// Offered with STARTTLS when set.
    pub tls: Option<TlsAcceptor>,
}

#[derive(Debug, thiserror::Error)]
#[error("refusing to listen on {0} without TLS: set INTAKE_SMTPD_TLS_CERT and INTAKE_SMTPD_TLS_KEY, or INTAKE_SMTPD_ALLOW_PLAINTEXT=true")]
pub struct PlaintextRefused(pub SocketAddr);

/// Mail crossing a network in the clear is refused unless asked for: loopback is fine.
pub fn check_bind(addr: SocketAddr, has_tls: bool, allow_plaintext: bool) -> Result<(), PlaintextRefused> {
    if addr.ip().is_loopback() || has_tls || allow_plaintext {
        Ok(())
    } else {
        Err(PlaintextRefused(addr))
    }
}

/// Serve sessions until `shutdown` resolves. Then no new session is accepted, sessions waiting
/// for a command are told `421` and closed, and a mail being received or published is finished
/// (for at most the data and publish timeouts) before this returns.
pub async fn serve(
    listener: TcpListener,
    state: Arc<SmtpdState>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let max_sessions = state.settings.max_sessions;
    let sessions = Arc::new(tokio::sync::Semaphore::new(max_sessions));
    let closing = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let (mut socket, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = sessions.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many sessions; client refused");
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = socket.write_all(b"421 4.3.2 too many connections, try again later\r\n").await;
                let _ = socket.shutdown().await;
            });
            continue;
        };
        let (state, closing) = (state.clone(), closing.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = run_session(socket, peer, &state, closing).await {
                tracing::debug!(%peer, error = %e, "session ended with an error");
            }
        });
    }
    drop(listener);
    closing.cancel();
    let grace = state.settings.data_timeout + state.settings.publish_timeout;
    if tokio::time::timeout(grace, sessions.acquire_many(max_sessions as u32)).await.is_err() {
        tracing::warn!(?grace, "sessions still open after the shutdown grace period; closing them");
    }
    Ok(())
}

async fn run_session(
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    state: &SmtpdState,
    closing: CancellationToken,
) -> std::io::Result<()> {
    let _ = socket.set_nodelay(true);
    match Session::new(state, peer, false, closing.clone()).run(socket, true).await? {
        Ending::Closed => Ok(()),
        Ending::StartTls(socket) => {
            let Some(acceptor) = &state.tls else { return Ok(()) };
            let handshake = tokio::time::timeout(state.settings.command_timeout, acceptor.accept(socket));
            let tls_stream = match handshake.await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "TLS handshake failed");
                    return Ok(());
                }
                Err(_) => return Ok(()),
            };
            // RFC 3207 §4.2: the client starts over with EHLO, no greeting.
            Session::new(state, peer, true, closing).run(tls_stream, false).await.map(|_| ())
        }
    }
}
