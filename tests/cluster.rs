//! A three-node RabbitMQ cluster on loopback with quorum queues loses a node, gets it back, then
//! loses another, while two publishers (confirms) send 20,000 messages and two `intake worker`
//! processes attached to different nodes store them: every message is stored exactly once and no
//! queue keeps a ready or unacked message.
//!
//! `#[ignore]`d: it starts and stops its own broker nodes, so `.ci/run` runs it alone, after the
//! suite. The nodes are Debian's `rabbitmq-server` with their own names, ports and data
//! directories; a guard stops them and removes their files even when the test fails.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use intake::adapters::ChannelType;
use intake::amqp::publish::{new_message_properties, LazyPublisher};

const MESSAGES: usize = 20_000;
/// Paced so the node stops fall in the middle of the traffic.
const PUBLISH_RATE: f64 = 500.0;

struct Node {
    name: String,
    port: u16,
    dist_port: u16,
    dir: PathBuf,
}

impl Node {
    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn start(&self) {
        let status = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.dir.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"))
            .current_dir("/tmp")
            .status()
            .expect("rabbitmq-server");
        assert!(status.success(), "starting {}", self.name);
    }

    /// Wait until the node runs RabbitMQ (a fresh node on two busy cores takes ~10 s).
    fn await_startup(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if ctl(&self.name, &["await_startup", "--timeout", "10"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("{} did not start; see {}", self.name, self.dir.join("log").display());
    }

    fn stop(&self) {
        let _ = ctl(&self.name, &["stop"]);
    }
}

/// `rabbitmqctl -n <node> …`
fn ctl(node: &str, args: &[&str]) -> Result<String, String> {
    let out =
        Command::new("rabbitmqctl").arg("-q").arg("-n").arg(node).args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Three joined nodes; dropping it stops them and removes their directories.
struct Cluster {
    nodes: Vec<Node>,
    root: PathBuf,
}

impl Cluster {
    fn start() -> Cluster {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let root = std::env::temp_dir().join(format!("intake-cluster-{id}"));
        let nodes: Vec<Node> = (1..=3)
            .map(|i| {
                let dir = root.join(format!("n{i}"));
                std::fs::create_dir_all(&dir).unwrap();
                let port = free_port();
                std::fs::write(dir.join("rabbitmq.conf"), format!("listeners.tcp.local = 127.0.0.1:{port}\n")).unwrap();
                std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
                Node { name: format!("intake-{id}-n{i}@localhost"), port, dist_port: free_port(), dir }
            })
            .collect();
        let status = Command::new("chown").args(["-R", "rabbitmq:rabbitmq"]).arg(&root).status().unwrap();
        assert!(status.success(), "chown {}", root.display());
        let cluster = Cluster { nodes, root };
        for node in &cluster.nodes {
            node.start();
        }
        for node in &cluster.nodes {
            node.await_startup();
        }
        let first = cluster.nodes[0].name.clone();
        for node in &cluster.nodes[1..] {
            ctl(&node.name, &["stop_app"]).unwrap();
            ctl(&node.name, &["join_cluster", &first]).unwrap();
            ctl(&node.name, &["start_app"]).unwrap();
        }
        let status = ctl(&first, &["cluster_status", "--formatter", "json"]).unwrap();
        let running =
            serde_json::from_str::<serde_json::Value>(&status).unwrap()["running_nodes"].as_array().unwrap().len();
        assert_eq!(running, 3, "{status}");
        cluster
    }

    /// The node URLs, starting with node `first` (each client prefers another node).
    fn urls_from(&self, first: usize) -> String {
        (0..self.nodes.len()).map(|i| self.nodes[(first + i) % self.nodes.len()].url()).collect::<Vec<_>>().join(",")
    }

    /// Ready and unacked messages over `queues`, asked of a running node; `None` until every
    /// one of them is listed with its counts (a quorum queue without a leader is not).
    fn queued(&self, queues: &[String]) -> Option<(u64, u64)> {
        for node in &self.nodes {
            let Ok(out) = ctl(&node.name, &["list_queues", "name", "messages_ready", "messages_unacknowledged"]) else {
                continue;
            };
            let (mut ready, mut unacked) = (0, 0);
            for queue in queues {
                let line = out.lines().find(|l| l.split_whitespace().next() == Some(queue.as_str()))?;
                let cols: Vec<&str> = line.split_whitespace().collect();
                ready += cols.get(1)?.parse::<u64>().ok()?;
                unacked += cols.get(2)?.parse::<u64>().ok()?;
            }
            return Some((ready, unacked));
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.stop();
            // Whatever survived `stop` (e.g. a node that never finished booting).
            let _ = Command::new("pkill").args(["-9", "-f", &node.name]).status();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn webhook(i: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"id": format!("c-{i}"), "conversationKey": format!("t-{}", i % 200),
        "direction": "inbound", "sender": {"id": "c-1", "displayName": "Lin"}, "body": format!("message {i}"),
        "occurredAt": format!("2025-01-01T00:{:02}:{:02}Z", (i / 60) % 60, i % 60)}))
    .unwrap()
}

async fn stored(db: &TestDb) -> i64 {
    count(&db.pool, "SELECT count(*) FROM messages").await
}

/// Stop `node` during the traffic; returns (seconds the stop took, seconds after it until the
/// stored count grew again).
async fn stop_node(db: &TestDb, node: String, published: &AtomicUsize) -> (f64, f64) {
    assert!(published.load(Ordering::Relaxed) < MESSAGES, "the stop falls inside the traffic");
    let since = Instant::now();
    tokio::task::spawn_blocking(move || ctl(&node, &["stop"])).await.unwrap().unwrap();
    let stop = since.elapsed().as_secs_f64();
    let before = stored(db).await;
    let since = Instant::now();
    wait_until(120, "work to resume after a node stop", || async { stored(db).await > before }).await;
    (stop, since.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts its own three-node RabbitMQ cluster; .ci/run runs it alone"]
async fn a_cluster_loses_nodes_and_nothing_is_lost_or_doubled() {
    let started = Instant::now();
    intake::metrics::handle(); // count re-publishes from the start
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let booted = started.elapsed().as_secs_f64();
    let db = TestDb::new().await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    let prefix = format!("icluster_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut topology = intake::amqp::topology::Topology::with_prefix(&prefix);
    topology.queue_type = intake::amqp::QueueType::Quorum;
    topology.retry_delays = vec![Duration::from_millis(200), Duration::from_millis(400)]; // as worker_command

    // Two workers on different nodes.
    // Their warnings go to a file each, to count their reconnects.
    let logs: Vec<PathBuf> = (0..2).map(|w| cluster.root.join(format!("worker-{w}.log"))).collect();
    let spawn_worker = |first: usize| {
        let mut command = worker_command(&db.url, &topology);
        command
            .env("AMQP_URL", cluster.urls_from(first))
            .env("INTAKE_QUEUE_TYPE", "quorum")
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stderr(std::fs::File::create(&logs[first]).unwrap())
            .spawn()
            .unwrap()
    };
    let mut workers = [spawn_worker(0), spawn_worker(1)];

    // Two publishers with confirms on the other nodes, paced, several messages in flight each.
    let published = Arc::new(AtomicUsize::new(0));
    let publishers: Vec<_> = [2usize, 0]
        .into_iter()
        .enumerate()
        .map(|(p, first)| {
            let publisher = Arc::new(LazyPublisher::new(&cluster.urls_from(first)).declaring(topology.clone()));
            let (exchange, published) = (topology.exchange.clone(), published.clone());
            tokio::spawn(async move {
                let start = Instant::now();
                let mine: Vec<usize> = (0..MESSAGES).filter(|i| i % 2 == p).collect();
                futures_util::stream::iter(mine)
                    .map(|i| {
                        let (publisher, exchange, published) = (publisher.clone(), exchange.clone(), published.clone());
                        async move {
                            let due = start + Duration::from_secs_f64(i as f64 / PUBLISH_RATE);
                            tokio::time::sleep_until(due.into()).await;
                            let props = new_message_properties(
                                &format!("m-{i}"),
                                "application/json",
                                [(intake::amqp::envelope::EXTERNAL_CHANNEL_ID, "shop".to_owned())],
                            );
                            publisher
                                .publish(&exchange, "webhook.webhook", &webhook(i), props)
                                .await
                                .unwrap_or_else(|e| panic!("message {i} not confirmed: {e:#}"));
                            published.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .buffer_unordered(64)
                    .collect::<Vec<()>>()
                    .await;
                publisher.close().await;
            })
        })
        .collect();

    // Chaos: stop node 1 a fifth of the way in, start it again, then stop node 2.
    let mut stops = Vec::new();
    wait_until(120, "a fifth published", || async { published.load(Ordering::Relaxed) >= MESSAGES / 5 }).await;
    stops.push(stop_node(&db, cluster.nodes[0].name.clone(), &published).await);
    let node = clone_node(&cluster.nodes[0]);
    tokio::task::spawn_blocking(move || {
        node.start();
        node.await_startup();
    })
    .await
    .unwrap();
    wait_until(120, "two thirds published", || async { published.load(Ordering::Relaxed) >= MESSAGES * 2 / 3 }).await;
    stops.push(stop_node(&db, cluster.nodes[1].name.clone(), &published).await);

    for publisher in publishers {
        publisher.await.expect("every message confirmed");
    }
    wait_until(300, "every message stored", || async { stored(&db).await >= MESSAGES as i64 }).await;
    let all_queues = topology.all_queues();
    let cluster = Arc::new(cluster);
    let mut queues = None;
    for _ in 0..120 {
        let (c, names) = (cluster.clone(), all_queues.clone());
        queues = tokio::task::spawn_blocking(move || c.queued(&names)).await.unwrap();
        if queues == Some((0, 0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for worker in &mut workers {
        let _ = worker.start_kill();
        let _ = worker.wait().await;
    }

    let rows = stored(&db).await;
    let republished = metric(&intake::metrics::handle().render(), "intake_republished_total", "");
    let reconnects: Vec<usize> = logs
        .iter()
        .map(|log| {
            std::fs::read_to_string(log).unwrap_or_default().matches("worker session ended; reconnecting").count()
        })
        .collect();
    let (ready, unacked) = queues.unwrap_or((u64::MAX, u64::MAX));
    println!(
        "cluster: published={} stored={rows} republished={republished} node_stops=2 \
         stop1_s={:.1} resumed1_after_s={:.1} stop2_s={:.1} resumed2_after_s={:.1} worker_reconnects={reconnects:?} \
         queues={} ready={ready} unacked={unacked} boot_s={booted:.0} elapsed_s={:.0}",
        published.load(Ordering::Relaxed),
        stops[0].0,
        stops[0].1,
        stops[1].0,
        stops[1].1,
        all_queues.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(published.load(Ordering::Relaxed), MESSAGES);
    // With the unique (project, idempotency key), stored == published means each exactly once.
    assert_eq!(rows, MESSAGES as i64, "every message stored once");
    assert!(queues.is_some(), "every queue listed with its counts");
    assert_eq!((ready, unacked), (0, 0), "no ready or unacked message left");
    assert!(reconnects.iter().sum::<usize>() >= 1, "a worker lost its node and reconnected: {reconnects:?}");
}

fn clone_node(node: &Node) -> Node {
    Node { name: node.name.clone(), port: node.port, dist_port: node.dist_port, dir: node.dir.clone() }
}
