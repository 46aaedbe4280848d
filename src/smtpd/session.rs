//! One SMTP or LMTP session: commands parsed by `smtp-proto`, replies written as soon as each
//! command is handled. The mail is answered `250` only after every copy of it was confirmed by
//! RabbitMQ; anything else the client hears is `4xx` (it keeps the mail and retries) or `5xx`.

use std::net::SocketAddr;

use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver, RequestReceiver};
use smtp_proto::{EhloResponse, Error as ProtoError, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::delivery::{self, Envelope};
use super::recipients::{self, LookupError, Mailbox};
use super::SmtpdState;

/// How a session ended.
pub enum Ending<S> {
    Closed,
    /// The client asked for STARTTLS and was told to go ahead: hand back the plain stream.
    StartTls(S),
}

struct Transaction {
    mail_from: String,
    /// Accepted recipients, in order, with their mailbox.
    recipients: Vec<(String, Mailbox)>,
}

pub struct Session<'a> {
    state: &'a SmtpdState,
    peer: SocketAddr,
    tls: bool,
    helo: Option<String>,
    transaction: Option<Transaction>,
    errors: u32,
    /// The listener is shutting down: end the session at the next command boundary.
    closing: CancellationToken,
}

enum Reading {
    Commands,
    Data(DataReceiver),
    /// Over the size limit: the rest of the data is read and thrown away.
    Discarding(DummyDataReceiver),
    /// A command line over the length limit was answered; its rest is thrown away, so it is
    /// not read as more commands.
    SkippingLine,
}

/// What handling a command asks of the read loop.
enum Next {
    Continue,
    Data,
    StartTls,
    Quit,
}

impl<'a> Session<'a> {
    pub fn new(state: &'a SmtpdState, peer: SocketAddr, tls: bool, closing: CancellationToken) -> Self {
        Session { state, peer, tls, helo: None, transaction: None, errors: 0, closing }
    }

    fn protocol(&self) -> &'static str {
        match (self.state.settings.lmtp, self.tls) {
            (true, false) => "LMTP",
            (true, true) => "LMTPS",
            (false, false) => "ESMTP",
            (false, true) => "ESMTPS",
        }
    }

    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        mut self,
        mut stream: S,
        greet: bool,
    ) -> std::io::Result<Ending<S>> {
        let settings = &self.state.settings;
        if greet {
            let service = if settings.lmtp { "LMTP" } else { "ESMTP" };
            reply(&mut stream, &format!("220 {} {service} intake ready", settings.hostname)).await?;
        }
        let mut receiver = RequestReceiver::default();
        let mut reading = Reading::Commands;
        let mut data: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let timeout = match reading {
                Reading::Commands => settings.command_timeout,
                _ => settings.data_timeout,
            };
            let between_commands = matches!(reading, Reading::Commands);
            let read = tokio::select! {
                read = tokio::time::timeout(timeout, stream.read(&mut chunk)) => read,
                _ = self.closing.cancelled(), if between_commands => {
                    // Nothing of an unfinished transaction was acknowledged: the client retries.
                    reply(&mut stream, "421 4.3.2 shutting down, try again later").await?;
                    return Ok(Ending::Closed);
                }
            };
            let n = match read {
                Ok(Ok(0)) => return Ok(Ending::Closed),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    reply(&mut stream, "421 4.4.2 idle too long, closing").await?;
                    return Ok(Ending::Closed);
                }
            };
            let mut bytes = chunk[..n].iter();
            while bytes.len() > 0 {
                match &mut reading {
                    Reading::Commands => {
                        let request = match receiver.ingest(&mut bytes) {
                            Ok(request) => request.into_owned(),
                            Err(ProtoError::NeedsMoreData { .. }) => break,
                            Err(e) => {
                                if e == ProtoError::ResponseTooLong {
                                    reading = Reading::SkippingLine;
                                }
                                self.errors += 1;
                                reply(&mut stream, protocol_error(&e)).await?;
                                if self.errors >= settings.max_errors {
                                    reply(&mut stream, "421 4.7.0 too many errors, closing").await?;
                                    return Ok(Ending::Closed);
                                }
                                continue;
                            }
                        };
                        match self.handle(request, &mut stream).await? {
                            Next::Continue => {}
                            Next::Data => {
                                data.clear();
                                reading = Reading::Data(DataReceiver::new());
                            }
                            Next::StartTls => {
                                // Bytes pipelined after STARTTLS were sent in the clear and are
                                // dropped (RFC 3207 §4.2: a plaintext injection otherwise).
                                return Ok(Ending::StartTls(stream));
                            }
                            Next::Quit => return Ok(Ending::Closed),
                        }
                    }
                    Reading::Data(receiver) => {
                        let done = receiver.ingest(&mut bytes, &mut data);
                        if done && data.len() > settings.max_message_bytes {
                            // Ended in the same read that took it over the limit.
                            reading = Reading::Commands;
                            data = Vec::new();
                            self.refuse_too_large(&mut stream).await?;
                        } else if done {
                            reading = Reading::Commands;
                            self.deliver(&data, &mut stream).await?;
                            data.clear();
                        } else if data.len() > settings.max_message_bytes {
                            reading = Reading::Discarding(DummyDataReceiver::new_data(receiver));
                            data = Vec::new();
                        }
                    }
                    Reading::SkippingLine => {
                        let rest = bytes.as_slice();
                        match rest.iter().position(|&b| b == b'\n') {
                            Some(end) => {
                                bytes = rest[end + 1..].iter();
                                reading = Reading::Commands;
                            }
                            None => bytes = [].iter(),
                        }
                    }
                    Reading::Discarding(receiver) => {
                        if receiver.ingest(&mut bytes) {
                            reading = Reading::Commands;
                            self.refuse_too_large(&mut stream).await?;
                        }
                    }
                }
            }
        }
    }

    /// `552` for the whole transaction (LMTP: once per recipient); nothing was published.
    async fn refuse_too_large<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> std::io::Result<()> {
        let limit = self.state.settings.max_message_bytes;
        tracing::info!(peer = %self.peer, limit, "mail over the size limit refused");
        let answer = format!("552 5.3.4 message exceeds the {limit}-byte limit");
        for _ in 0..self.reply_count() {
            reply(stream, &answer).await?;
        }
        self.transaction = None;
        Ok(())
    }

    /// LMTP answers the data once per accepted recipient; SMTP once.
    fn reply_count(&self) -> usize {
        match (&self.transaction, self.state.settings.lmtp) {
            (Some(t), true) => t.recipients.len().max(1),
            _ => 1,
        }
    }

    async fn handle<S: AsyncWrite + Unpin>(
        &mut self,
        request: Request<String>,
        stream: &mut S,
    ) -> std::io::Result<Next> {
        let settings = &self.state.settings;
        let greeting_ok = match &request {
            Request::Lhlo { .. } => settings.lmtp,
            Request::Ehlo { .. } | Request::Helo { .. } => !settings.lmtp,
            _ => true,
        };
        if !greeting_ok {
            reply(stream, "500 5.5.1 use LHLO for LMTP, EHLO or HELO for SMTP").await?;
            return Ok(Next::Continue);
        }
        match request {
            Request::Ehlo { host } | Request::Lhlo { host } => {
                self.helo = Some(host);
                self.transaction = None;
                let mut ehlo = EhloResponse::new(settings.hostname.as_str());
                ehlo.capabilities = smtp_proto::EXT_SIZE
                    | smtp_proto::EXT_8BIT_MIME
                    | smtp_proto::EXT_ENHANCED_STATUS_CODES
                    | smtp_proto::EXT_PIPELINING;
                if self.state.tls.is_some() && !self.tls {
                    ehlo.capabilities |= smtp_proto::EXT_START_TLS;
                }
                ehlo.size = settings.max_message_bytes;
                let mut out = Vec::new();
                ehlo.write(&mut out)?;
                stream.write_all(&out).await?;
                stream.flush().await?;
            }
            Request::Helo { host } => {
                self.helo = Some(host);
                self.transaction = None;
                reply(stream, &format!("250 {}", settings.hostname)).await?;
            }
            Request::StartTls if self.state.tls.is_none() || self.tls => {
                reply(stream, "502 5.5.1 STARTTLS not available").await?;
            }
            Request::StartTls => {
                reply(stream, "220 2.0.0 ready to start TLS").await?;
                return Ok(Next::StartTls);
            }
            Request::Mail { .. } | Request::Rcpt { .. } | Request::Data if self.helo.is_none() => {
                reply(stream, "503 5.5.1 say hello first").await?;
            }
            Request::Mail { .. } if self.transaction.is_some() => {
                reply(stream, "503 5.5.1 nested MAIL command").await?;
            }
            Request::Mail { from } if from.size > settings.max_message_bytes => {
                let limit = settings.max_message_bytes;
                reply(stream, &format!("552 5.3.4 message exceeds the {limit}-byte limit")).await?;
            }
            Request::Mail { from } => {
                self.transaction = Some(Transaction { mail_from: from.address, recipients: Vec::new() });
                reply(stream, "250 2.1.0 OK").await?;
            }
            Request::Rcpt { .. } if self.transaction.is_none() => {
                reply(stream, "503 5.5.1 MAIL first").await?;
            }
            Request::Rcpt { to } => self.recipient(to.address, stream).await?,
            Request::Data if self.transaction.as_ref().is_none_or(|t| t.recipients.is_empty()) => {
                reply(stream, "503 5.5.1 no valid recipients").await?;
            }
            Request::Data => {
                reply(stream, "354 end data with <CR><LF>.<CR><LF>").await?;
                return Ok(Next::Data);
            }
            Request::Rset => {
                self.transaction = None;
                reply(stream, "250 2.0.0 OK").await?;
            }
            Request::Noop { .. } => reply(stream, "250 2.0.0 OK").await?,
            Request::Quit => {
                reply(stream, "221 2.0.0 bye").await?;
                return Ok(Next::Quit);
            }
            Request::Vrfy { .. } => reply(stream, "252 2.5.2 cannot verify, send some mail").await?,
            other => {
                self.errors += 1;
                reply(stream, &format!("502 5.5.1 {} not implemented", other.name())).await?;
            }
        }
        Ok(Next::Continue)
    }

    async fn recipient<S: AsyncWrite + Unpin>(&mut self, address: String, stream: &mut S) -> std::io::Result<()> {
        let max = self.state.settings.max_recipients;
        let Some(transaction) = self.transaction.as_mut() else { return Ok(()) };
        if transaction.recipients.len() >= max {
            return reply(stream, "452 4.5.3 too many recipients").await;
        }
        match recipients::find_mailbox(&self.state.pool, &address).await {
            Ok(mailbox) => {
                transaction.recipients.push((address, mailbox));
                reply(stream, "250 2.1.5 OK").await
            }
            Err(e @ LookupError::Unknown(_)) => {
                tracing::info!(peer = %self.peer, %address, "unknown recipient refused");
                reply(stream, &format!("550 5.1.1 {e}")).await
            }
            Err(e @ LookupError::Ambiguous(_)) => reply(stream, &format!("550 5.1.1 {e}")).await,
            Err(e @ LookupError::Database(_)) => {
                tracing::warn!(peer = %self.peer, %address, error = %e, "recipient check failed; client told to retry");
                reply(stream, "451 4.3.0 cannot check the recipient now, try again later").await
            }
        }
    }

    /// Publish a copy per mailbox, then answer: SMTP once for all, LMTP once per recipient.
    async fn deliver<S: AsyncWrite + Unpin>(&mut self, data: &[u8], stream: &mut S) -> std::io::Result<()> {
        let Some(transaction) = self.transaction.take() else { return Ok(()) };
        let settings = &self.state.settings;
        let envelope = Envelope {
            mail_from: transaction.mail_from.clone(),
            helo: self.helo.clone().unwrap_or_default(),
            peer: self.peer,
            hostname: settings.hostname.clone(),
            protocol: self.protocol(),
            id: uuid::Uuid::new_v4().simple().to_string(),
        };
        // One copy per mailbox, however many of the recipients lead to it.
        let mut outcomes: Vec<(uuid::Uuid, Result<(), String>)> = Vec::new();
        for (address, mailbox) in &transaction.recipients {
            if outcomes.iter().any(|(id, _)| *id == mailbox.entry_point_id) {
                continue;
            }
            let outcome = delivery::publish(
                &self.state.publisher,
                &self.state.exchange,
                settings.publish_timeout,
                &envelope,
                address,
                mailbox,
                data,
            )
            .await
            .map_err(|e| e.to_string());
            match &outcome {
                Ok(()) => {
                    tracing::info!(id = %envelope.id, mailbox = %mailbox.external_channel_id, bytes = data.len(), "mail queued")
                }
                Err(e) => {
                    tracing::warn!(id = %envelope.id, mailbox = %mailbox.external_channel_id, error = %e, "mail not queued; client told to retry")
                }
            }
            outcomes.push((mailbox.entry_point_id, outcome));
        }
        let answer = |ok: bool| -> String {
            if ok {
                format!("250 2.0.0 queued as {}", envelope.id)
            } else {
                "451 4.3.0 the message could not be queued, try again later".to_owned()
            }
        };
        if settings.lmtp {
            for (_, mailbox) in &transaction.recipients {
                let ok = outcomes.iter().any(|(id, o)| *id == mailbox.entry_point_id && o.is_ok());
                reply(stream, &answer(ok)).await?;
            }
        } else {
            // One answer for all: a partial failure is a retry of all, and the copies already
            // queued come back as duplicates that the worker's idempotency keys absorb.
            reply(stream, &answer(outcomes.iter().all(|(_, o)| o.is_ok()))).await?;
        }
        Ok(())
    }
}

fn protocol_error(error: &ProtoError) -> &'static str {
    match error {
        ProtoError::ResponseTooLong => "500 5.5.2 line too long",
        ProtoError::UnknownCommand => "500 5.5.1 unknown command",
        ProtoError::InvalidSenderAddress => "501 5.1.7 bad sender address",
        ProtoError::InvalidRecipientAddress => "501 5.1.3 bad recipient address",
        ProtoError::SyntaxError { .. } => "501 5.5.4 syntax error",
        ProtoError::InvalidParameter { .. } => "501 5.5.4 invalid parameter",
        ProtoError::UnsupportedParameter { .. } => "555 5.5.4 unsupported parameter",
        _ => "500 5.5.2 cannot parse the command",
    }
}

async fn reply<S: AsyncWrite + Unpin>(stream: &mut S, line: &str) -> std::io::Result<()> {
    stream.write_all(line.as_bytes()).await?;
    stream.write_all(b"\r\n").await?;
    stream.flush().await
}
