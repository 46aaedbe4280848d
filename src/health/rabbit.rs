//! Queue statistics. The RabbitMQ management HTTP API gives everything (ready, unacked,
//! consumers, rates, the oldest message's timestamp); without it, AMQP's passive
//! `queue.declare` gives ready messages and consumers only.

use std::collections::HashMap;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde::Deserialize;

use super::QueueStats;

/// Where the management API is, when not derived from the AMQP URL.
pub const MANAGEMENT_URL_ENV: &str = "INTAKE_RABBITMQ_MANAGEMENT_URL";

/// The management API's port when derived from the AMQP URL.
const MANAGEMENT_PORT: u16 = 15672;

/// A request to the management API gives up after this long.
const MANAGEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The RabbitMQ management HTTP API of one vhost.
pub struct Management {
    client: reqwest::Client,
    base: String,
    vhost: String,
    user: String,
    password: String,
}

impl Management {
    /// From `url` (credentials in it, else the AMQP URL's), or derived from the AMQP URL:
    /// `http://<host>:15672`.
    pub fn new(amqp_url: &str, url: Option<&str>) -> Result<Self, String> {
        // A cluster's management API answers for every node: the list's first node is asked.
        let first = crate::amqp::nodes::parse(amqp_url).map_err(|e| e.to_string())?.swap_remove(0);
        let amqp: lapin::uri::AMQPUri = first.parse().map_err(|e| format!("cannot read the AMQP URL: {e}"))?;
        let mut user = amqp.authority.userinfo.username.clone();
        let mut password = amqp.authority.userinfo.password.clone();
        let base = match url {
            Some(url) => {
                let url = url.trim().trim_end_matches('/');
                let (scheme, rest) = url
                    .split_once("://")
                    .filter(|(s, _)| *s == "http" || *s == "https")
                    .ok_or_else(|| format!("`{MANAGEMENT_URL_ENV}` must be an http:// or https:// URL"))?;
                // Credentials in the URL win: `http://user:pass@host:15672`.
                let rest = match rest.split_once('@') {
                    Some((userinfo, host)) => {
                        let (u, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                        user = percent_decode(u);
                        password = percent_decode(p);
                        host
                    }
                    None => rest,
                };
                format!("{scheme}://{rest}")
            }
            None => {
                let host = &amqp.authority.host;
                let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
                format!("http://{host}:{MANAGEMENT_PORT}")
            }
        };
        let client = reqwest::Client::builder()
            .timeout(MANAGEMENT_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Management { client, base, vhost: amqp.vhost, user, password })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Statistics of every queue of the vhost, by name.
    pub async fn queues(&self) -> anyhow::Result<HashMap<String, QueueStats>> {
        let url = format!(
            "{}/api/queues/{}?columns=name,messages_ready,messages_unacknowledged,consumers,head_message_timestamp,\
             message_stats.publish_details.rate,message_stats.deliver_get_details.rate",
            self.base,
            percent_encode(&self.vhost)
        );
        let response = self.client.get(&url).basic_auth(&self.user, Some(&self.password)).send().await?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "{} answered {status}", self.base);
        let queues: Vec<ApiQueue> = response.json().await?;
        let now = chrono::Utc::now().timestamp() as f64;
        Ok(queues.into_iter().map(|q| (q.name.clone(), q.stats(now))).collect())
    }
}

/// One queue as `GET /api/queues/{vhost}` describes it (only the columns asked for).
#[derive(Debug, Deserialize)]
struct ApiQueue {
    name: String,
    messages_ready: Option<u64>,
    messages_unacknowledged: Option<u64>,
    consumers: Option<u64>,
    /// The AMQP `timestamp` (Unix seconds) of the message at the head of the queue.
    head_message_timestamp: Option<f64>,
    message_stats: Option<ApiMessageStats>,
}

#[derive(Debug, Default, Deserialize)]
struct ApiMessageStats {
    publish_details: Option<ApiRate>,
    deliver_get_details: Option<ApiRate>,
}

#[derive(Debug, Deserialize)]
struct ApiRate {
    rate: f64,
}

impl ApiQueue {
    fn stats(self, now: f64) -> QueueStats {
        let ready = self.messages_ready.unwrap_or(0);
        let stats = self.message_stats.unwrap_or_default();
        QueueStats {
            name: self.name,
            ready,
            unacked: Some(self.messages_unacknowledged.unwrap_or(0)),
            consumers: self.consumers.unwrap_or(0),
            publish_rate: Some(stats.publish_details.map_or(0.0, |r| r.rate)),
            deliver_rate: Some(stats.deliver_get_details.map_or(0.0, |r| r.rate)),
            // An empty queue has no lag; a head without a timestamp has an unknown one.
            oldest_age_secs: match (ready, self.head_message_timestamp) {
                (0, _) => Some(0.0),
                (_, Some(at)) => Some((now - at).max(0.0)),
                (_, None) => None,
            },
        }
    }
}

/// Statistics of `names`: from the management API when it answers, else from AMQP (with a
/// warning). Queues that do not exist are left out.
pub async fn queue_stats(
    management: Option<&Management>,
    broker: &BrokerConnection,
    names: &[String],
) -> (HashMap<String, QueueStats>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut found = HashMap::new();
    if let Some(management) = management {
        match management.queues().await {
            Ok(mut all) => found.extend(names.iter().filter_map(|n| all.remove_entry(n))),
            Err(e) => warnings.push(format!(
                "RabbitMQ management API at {} is unreachable ({e:#}): queue depths and consumers come from AMQP; \
                 unacked counts, rates and the oldest message's age need the management plugin \
                 (`rabbitmq-plugins enable rabbitmq_management`, `{MANAGEMENT_URL_ENV}`)",
                management.base_url()
            )),
        }
    }
    // The management API reports a new queue a few seconds late: ask AMQP for what it missed.
    let missing: Vec<&String> = names.iter().filter(|n| !found.contains_key(*n)).collect();
    if !missing.is_empty() {
        match amqp_queue_stats(broker, &missing).await {
            Ok(stats) => found.extend(stats.into_iter().map(|s| (s.name.clone(), s))),
            Err(e) => warnings.push(format!("RabbitMQ queues not read: {e:#}")),
        }
    }
    (found, warnings)
}

/// Ready messages and consumers from a passive `queue.declare` of each queue. A missing queue
/// closes the channel (404): it is left out and the next queue gets a new channel.
async fn amqp_queue_stats(broker: &BrokerConnection, names: &[&String]) -> anyhow::Result<Vec<QueueStats>> {
    let connection = broker.get().await?;
    let mut out = Vec::new();
    let mut channel: Option<lapin::Channel> = None;
    for name in names {
        let ch = match &channel {
            Some(c) if c.status().connected() => c.clone(),
            _ => {
                let c = connection.create_channel().await?;
                channel = Some(c.clone());
                c
            }
        };
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        if let Ok(q) = ch.queue_declare(name.as_str().into(), passive, FieldTable::default()).await {
            out.push(QueueStats {
                name: (*name).clone(),
                ready: u64::from(q.message_count()),
                consumers: u64::from(q.consumer_count()),
                ..Default::default()
            });
        }
    }
    if let Some(channel) = channel {
        crate::amqp::close_channel(&channel).await;
    }
    Ok(out)
}

/// One AMQP connection for the sampler, opened when first needed and again after it is lost.
pub struct BrokerConnection {
    amqp_url: String,
    connection: tokio::sync::Mutex<Option<std::sync::Arc<lapin::Connection>>>,
}

impl BrokerConnection {
    pub fn new(amqp_url: &str) -> Self {
        BrokerConnection { amqp_url: amqp_url.to_owned(), connection: tokio::sync::Mutex::new(None) }
    }

    pub async fn get(&self) -> anyhow::Result<std::sync::Arc<lapin::Connection>> {
        let mut guard = self.connection.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| c.status().connected()) {
            return Ok(c.clone());
        }
        let connection = std::sync::Arc::new(crate::amqp::connect(&self.amqp_url, "intake-health").await?);
        *guard = Some(connection.clone());
        Ok(connection)
    }
}

impl BrokerConnection {
    pub async fn close(&self) {
        if let Some(connection) = self.connection.lock().await.take() {
            crate::amqp::close_connection(&connection).await;
        }
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(Ok(b)) = s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn management_url_is_derived_from_the_amqp_url() {
        let m = Management::new("amqp://ops:s%40cret@rabbit.internal:5672/prod", None).unwrap();
        assert_eq!(m.base_url(), "http://rabbit.internal:15672");
        assert_eq!((m.user.as_str(), m.password.as_str(), m.vhost.as_str()), ("ops", "s@cret", "prod"));
        let m = Management::new("amqp://guest:guest@127.0.0.1:5672/%2f", None).unwrap();
        assert_eq!(m.vhost, "/");
        assert_eq!(percent_encode(&m.vhost), "%2F");
        let m = Management::new("amqp://u:p@rmq1:5672/%2f,amqp://u:p@rmq2:5672/%2f", None).unwrap();
        assert_eq!(m.base_url(), "http://rmq1:15672");
    }

    #[test]
    fn management_url_setting_wins_with_its_credentials() {
        let m = Management::new("amqp://guest:guest@127.0.0.1:5672/%2f", Some("https://admin:p%3Aw@mq:443/")).unwrap();
        assert_eq!(m.base_url(), "https://mq:443");
        assert_eq!((m.user.as_str(), m.password.as_str()), ("admin", "p:w"));
        let m = Management::new("amqp://u:p@h/%2f", Some("http://mq:15672")).unwrap();
        assert_eq!((m.user.as_str(), m.password.as_str()), ("u", "p"));
        assert!(Management::new("amqp://u:p@h/%2f", Some("mq:15672")).is_err());
    }

    #[test]
    fn lag_is_the_head_message_age() {
        let q = |ready, ts| ApiQueue {
            name: "q".into(),
            messages_ready: Some(ready),
            messages_unacknowledged: Some(2),
            consumers: Some(1),
            head_message_timestamp: ts,
            message_stats: None,
        };
        assert_eq!(q(3, Some(970.0)).stats(1000.0).oldest_age_secs, Some(30.0));
        assert_eq!(q(0, None).stats(1000.0).oldest_age_secs, Some(0.0));
        assert_eq!(q(3, None).stats(1000.0).oldest_age_secs, None);
        assert_eq!(q(3, None).stats(1000.0).unacked, Some(2));
    }
}
