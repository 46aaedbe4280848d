//! Test support: a fresh PostgreSQL database per test, real HTTP servers on loopback.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use intake::adapters::{ChannelType, Direction, NormalizedMessage, Sender, ThreadRef, UpdateAction};
use intake::store;
use intake::update::{MessageExtras, Target, UpdateRequest};
use sqlx::PgPool;
use uuid::Uuid;

pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432";

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// A database of its own, created and migrated through intake's start-up path.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> Self {
        init_logs();
        let name = format!("intake_test_{}", Uuid::new_v4().simple());
        let url = format!("{ADMIN_URL}/{name}");
        let pool = store::connect_and_migrate(&url, 20).await.expect("test database");
        TestDb { name, url, pool }
    }

    /// A project with an entry point; returns the entry point id.
    pub async fn project_with_entry_point(
        &self,
        project: &str,
        channel: ChannelType,
        adapter: &str,
        external: &str,
    ) -> Uuid {
        store::ensure_project(&self.pool, project).await.unwrap();
        store::create_entry_point(&self.pool, project, channel, adapter, external, serde_json::json!({}))
            .await
            .unwrap()
            .id
    }
}

pub fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

pub fn msg(key: &str, direction: Direction, occurred_at: &str, body: &str) -> NormalizedMessage {
    NormalizedMessage {
        idempotency_key: key.into(),
        direction,
        sender: match direction {
            Direction::Inbound => Sender {
                id: Some("cust-1".into()),
                display_name: Some("Ada Customer".into()),
                primary_email: Some("ada@example.com".into()),
                profile_image_url: None,
            },
            Direction::Outbound => Sender {
                id: Some("agent-7".into()),
                display_name: Some("Agent Smith".into()),
                primary_email: None,
                profile_image_url: None,
            },
        },
        subject: Some("Order question".into()),
        body: body.into(),
        attachments: vec![],
        occurred_at: at(occurred_at),
        is_auto_reply: false,
        metadata: Default::default(),
        fingerprint: None,
    }
}

pub fn via_channel(project: &str, entry_point_id: Uuid, thread_key: &str, message: NormalizedMessage) -> UpdateRequest {
    UpdateRequest {
        project_id: project.into(),
        target: Target::Channel {
            entry_point_id,
            thread: ThreadRef { key: Some(thread_key.into()), ..Default::default() },
        },
        action: Some(UpdateAction::Append(message)),
        extras: MessageExtras::default(),
        attributes: Default::default(),
    }
}

pub fn to_conversation(project: &str, id: Uuid, message: NormalizedMessage) -> UpdateRequest {
    UpdateRequest {
        project_id: project.into(),
        target: Target::Conversation(id),
        action: Some(UpdateAction::Append(message)),
        extras: MessageExtras::default(),
        attributes: Default::default(),
    }
}

/// Serve the HTTP API on a free loopback port; returns its base URL.
pub async fn spawn_api(pool: PgPool, body_limit: usize) -> String {
    spawn_api_with(intake::http::AppState { pool, body_limit, outbound_email: None }).await
}

pub async fn spawn_api_with(state: intake::http::AppState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(intake::http::serve_on(listener, state, std::future::pending()));
    format!("http://{addr}")
}

/// (idempotency key, direction, RFC 3339 time, body)
pub type TestMessage = (String, Direction, String, String);

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Exchange and queues of its own for one test (`itest_<id>.*`), deleted on `cleanup`.
pub struct TestBroker {
    pub topology: intake::amqp::topology::Topology,
    pub connection: lapin::Connection,
    pub publisher: intake::amqp::publish::ConfirmedPublisher,
}

impl TestBroker {
    pub async fn new() -> Self {
        let prefix = format!("itest_{}", Uuid::new_v4().simple());
        let mut topology = intake::amqp::topology::Topology::with_prefix(&prefix);
        topology.retry_delays = vec![std::time::Duration::from_millis(200), std::time::Duration::from_millis(400)];
        Self::with_topology(topology).await
    }

    /// Another connection to the same names (e.g. a publisher in a separate task).
    pub async fn with_topology(topology: intake::amqp::topology::Topology) -> Self {
        let connection = intake::amqp::connect(AMQP_URL, "intake-test").await.unwrap();
        let publisher = intake::amqp::publish::ConfirmedPublisher::open(&connection).await.unwrap();
        topology.declare(publisher.channel()).await.unwrap();
        TestBroker { topology, connection, publisher }
    }

    /// Publish one message the way integrators do.
    pub async fn publish(&self, routing_key: &str, external_channel_id: Option<&str>, body: &[u8]) {
        let mut headers = vec![];
        if let Some(id) = external_channel_id {
            headers.push((intake::amqp::envelope::EXTERNAL_CHANNEL_ID, id.to_owned()));
        }
        let props =
            intake::amqp::publish::new_message_properties(&Uuid::new_v4().to_string(), "application/json", headers);
        self.publisher.publish(&self.topology.exchange, routing_key, body, props).await.unwrap();
    }

    pub async fn dead_letters(&self) -> Vec<intake::amqp::dlq::DeadLetter> {
        let channel = self.connection.create_channel().await.unwrap();
        let letters = intake::amqp::dlq::list(&channel, &self.topology.dead_queue, 10_000).await.unwrap();
        let _ = channel.close(200, "".into()).await;
        letters
    }

    /// `intake dlq replay` of the selected dead letters, through the function the CLI calls; how many.
    pub async fn replay_dead(&self, selection: &intake::amqp::dlq::Selection) -> usize {
        let channel = self.connection.create_channel().await.unwrap();
        let queue = &self.topology.dead_queue;
        let n = intake::amqp::dlq::settle(&channel, Some(&self.publisher), queue, selection, 1000, None, |_| {})
            .await
            .unwrap();
        let _ = channel.close(200, "".into()).await;
        n
    }

    /// Ready messages in a queue.
    pub async fn depth(&self, queue: &str) -> u32 {
        let channel = self.connection.create_channel().await.unwrap();
        let n = intake::amqp::dlq::depth(&channel, queue).await.unwrap();
        let _ = channel.close(200, "".into()).await;
        n
    }

    pub async fn cleanup(self) {
        let channel = self.connection.create_channel().await.unwrap();
        for q in self.topology.all_queues() {
            let _ = channel.queue_delete(q.as_str().into(), Default::default()).await;
        }
        let _ = channel.exchange_delete(self.topology.exchange.as_str().into(), Default::default()).await;
        let _ = self.connection.close(200, "".into()).await;
    }
}

/// Poll `check` until it is true or `secs` pass.
pub async fn wait_until<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out after {secs}s waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

impl TestBroker {
    /// Publish many messages with pipelined confirms: (routing key, external id, body).
    pub async fn publish_many(&self, messages: Vec<(String, Option<String>, Vec<u8>)>) {
        let items = messages.into_iter().map(|(key, external, body)| {
            let headers = external.map(|e| (intake::amqp::envelope::EXTERNAL_CHANNEL_ID, e)).into_iter();
            let props =
                intake::amqp::publish::new_message_properties(&Uuid::new_v4().to_string(), "application/json", headers);
            (key, body, props)
        });
        self.publisher.publish_pipelined(&self.topology.exchange, items, 256).await.unwrap();
    }
}

/// An in-process worker with its own pool, as a separate process would have.
pub struct RunningWorker {
    pub stop: tokio_util::sync::CancellationToken,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningWorker {
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(30), self.handle)
            .await
            .expect("worker stops")
            .unwrap()
            .unwrap();
    }
}

pub async fn start_worker_with(
    db_url: &str,
    broker: &TestBroker,
    registry: intake::adapters::AdapterRegistry,
    tune: impl FnOnce(&mut intake::amqp::worker::WorkerSettings),
) -> RunningWorker {
    let pool = store::connect(db_url, 5).await.unwrap();
    let mut settings = intake::amqp::worker::WorkerSettings::new(broker.topology.clone());
    tune(&mut settings);
    let stop = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(intake::amqp::worker::run(pool, registry, AMQP_URL.into(), settings, stop.clone()));
    RunningWorker { stop, handle }
}

/// Standard Webhooks secret of the spec's examples, and a Slack signing secret, for gateway tests.
pub const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// The environment that points an `intake` process at the local broker and a test's exchange
/// and queues, with short retry delays (for `Command::envs`).
pub fn broker_env(topology: &intake::amqp::topology::Topology) -> [(&'static str, String); 5] {
    [
        ("AMQP_URL", AMQP_URL.to_owned()),
        ("INTAKE_EXCHANGE", topology.exchange.clone()),
        ("INTAKE_QUEUE_PREFIX", topology.queue_prefix.clone()),
        ("INTAKE_DEAD_QUEUE", topology.dead_queue.clone()),
        ("INTAKE_RETRY_DELAYS", "200ms,400ms".to_owned()),
    ]
}

/// The real `intake worker` binary on a test's database and queues, with short retry delays and
/// warn-level logs to stderr; callers add their own settings and spawn it.
pub fn worker_command(db_url: &str, topology: &intake::amqp::topology::Topology) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_intake"));
    command
        .arg("worker")
        .env("DATABASE_URL", db_url)
        .envs(broker_env(topology))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    command
}

/// The webhook gateway on a free loopback port, publishing to `topology`; returns its base URL.
pub async fn spawn_gateway(pool: PgPool, topology: &intake::amqp::topology::Topology, body_limit: usize) -> String {
    let publisher =
        std::sync::Arc::new(intake::amqp::publish::LazyPublisher::new(AMQP_URL).declaring(topology.clone()));
    let router = intake::gateway::router(intake::gateway::GatewayState {
        pool,
        publisher,
        exchange: topology.exchange.clone(),
        registry: intake::adapters::AdapterRegistry::with_defaults(),
        public_url: Some("https://hooks.example.com".into()),
        tolerance_secs: 300,
        body_limit,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(intake::http::serve_router(listener, router, std::future::pending()));
    url
}

/// Sum of a Prometheus counter over all its label sets (optionally only those containing `filter`).
pub fn metric(text: &str, name: &str, filter: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
