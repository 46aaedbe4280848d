//! Several RabbitMQ nodes behind one `AMQP_URL`: `amqp://…@node1:5672/%2f,amqp://…@node2:5672/%2f`.
//!
//! Every process connects through [`connect`], which tries the nodes in turn and returns the
//! first connection that opens. A process's first connection tries the list in its order; each
//! later one (a reconnect after a lost connection) starts at the node after the last one that
//! worked, so a process whose node died moves to another one instead of waiting for it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use rand::Rng;

/// Longest wait for one node to open a connection.
const NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// AMQP heartbeat asked for unless the URL sets one: a node that hangs (rather than closing
/// its connections) is noticed within about twice this, instead of RabbitMQ's 60 s.
const HEARTBEAT_SECS: u16 = 10;

/// Where the next connection attempt for a URL list starts (by list).
static NEXT_NODE: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);

/// The node URLs of a comma-separated list, in order; an error names what is wrong.
pub fn parse(list: &str) -> anyhow::Result<Vec<String>> {
    let urls: Vec<String> = list.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
    anyhow::ensure!(!urls.is_empty(), "AMQP_URL is empty: give one RabbitMQ URL or several, comma-separated");
    for url in &urls {
        anyhow::ensure!(
            url.starts_with("amqp://") || url.starts_with("amqps://"),
            "AMQP_URL entry `{}` is not an amqp:// or amqps:// URL",
            redact(url)
        );
    }
    Ok(urls)
}

/// `url` with `heartbeat=` added to its query unless it has one.
fn with_heartbeat(url: &str) -> String {
    if url.contains("heartbeat=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}heartbeat={HEARTBEAT_SECS}")
}

/// A URL as it may be logged: the password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "<not a URL>".to_owned() };
    // The last `@` ends the credentials, as the URL parser reads them.
    let Some((credentials, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Connect to the first node of `list` that answers, starting where [`NEXT_NODE`] says.
pub async fn connect(list: &str, name: &str) -> anyhow::Result<Connection> {
    let urls = parse(list)?;
    let start = {
        let mut next = NEXT_NODE.lock().expect("node cursor");
        *next.get_or_insert_with(HashMap::new).get(list).unwrap_or(&0)
    };
    let mut failures = Vec::new();
    for offset in 0..urls.len() {
        let index = (start + offset) % urls.len();
        let url = &with_heartbeat(&urls[index]);
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let failure = match tokio::time::timeout(NODE_TIMEOUT, Connection::connect(url, props)).await {
            Ok(Ok(connection)) => {
                let mut next = NEXT_NODE.lock().expect("node cursor");
                next.get_or_insert_with(HashMap::new).insert(list.to_owned(), (index + 1) % urls.len());
                if urls.len() > 1 {
                    tracing::info!(node = %redact(url), connection = name, "connected to RabbitMQ");
                }
                return Ok(connection);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("timed out after {}s", NODE_TIMEOUT.as_secs()),
        };
        if urls.len() > 1 {
            tracing::warn!(node = %redact(url), error = %failure, "RabbitMQ node unreachable; trying the next");
        }
        failures.push(format!("{}: {failure}", redact(url)));
    }
    if urls.len() == 1 {
        anyhow::bail!("cannot connect to RabbitMQ: {}", failures.join(""));
    }
    anyhow::bail!("cannot connect to any of {} RabbitMQ nodes: {}", urls.len(), failures.join("; "))
}

/// `base` with ±25 % random jitter, so processes that lost the same node do not all come back
/// at the same instant.
pub fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::rng().random_range(0.75..1.25))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        assert_eq!(parse("amqp://a:5672/%2f").unwrap(), vec!["amqp://a:5672/%2f"]);
        assert_eq!(parse(" amqp://a/%2f , amqps://b/%2f ,").unwrap(), vec!["amqp://a/%2f", "amqps://b/%2f"]);
        assert!(parse("").is_err());
        assert!(parse(" , ").is_err());
        let e = parse("amqp://a/%2f,http://u:secret@b").unwrap_err().to_string();
        assert!(e.contains("http://u:***@b") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn heartbeat_is_added_unless_set() {
        assert_eq!(with_heartbeat("amqp://h/%2f"), "amqp://h/%2f?heartbeat=10");
        assert_eq!(with_heartbeat("amqp://h/%2f?frame_max=8192"), "amqp://h/%2f?frame_max=8192&heartbeat=10");
        assert_eq!(with_heartbeat("amqp://h/%2f?heartbeat=30"), "amqp://h/%2f?heartbeat=30");
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("amqp://u:p@ss@h/%2f"), "amqp://u:***@h/%2f");
        assert_eq!(redact("u:secret@h"), "<not a URL>");
        assert_eq!(redact("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
    }

    #[test]
    fn jitter_stays_near() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(4));
            assert!(d >= Duration::from_secs(3) && d <= Duration::from_secs(5), "{d:?}");
        }
    }
}
