//! The flags of `intake bench` and its long help.

use clap::{Args, ValueEnum};

use crate::config::DEFAULT_AMQP_URL;

/// The long help of `intake bench` (how it measures).
pub const LONG_ABOUT: &str = "Measure intake against the local RabbitMQ and PostgreSQL in one run: next to the \
        broker's own limit for a consumer that acks as intake does, with CPU per message of each component, \
        publish->commit latency, bytes on disk per message, and scenarios of harder traffic.\n\n\
        The throughput runs use durable queues, persistent messages and ~1 KB generic-webhook JSON payloads \
        (routing key `webhook.webhook`) spread over --conversations conversations on --entry-points entry \
        points. The bench makes its own exchange and queues (`bench_<id>.*`, deleted at the end) and its own \
        database (`intake_bench_<id>` on the DATABASE_URL server, dropped at the end unless --keep).\n\n\
        Runs, in this order:\n\
        - broker-only (ack multiple): the fast baseline: a consumer that only acks, as intake does: prefetch \
        400, one basic.ack with `multiple` per 100 deliveries (and one for the tail). The broker's limit for \
        a consumer like intake; every ratio is against it.\n\
        - broker-only (ack each): the same with one ack per delivery (slower).\n\
        - store-only: the broker and PostgreSQL without intake's logic: the same consumer, and per \
        batch of 100 one INSERT .. ON CONFLICT DO NOTHING of the payloads (keyed by their id) into a table \
        with the three indexes of `messages`, committed before the batch's ack, two batches in flight. \
        The ceiling for a consumer that stores each message durably with intake's batching and \
        `messages`' indexes; its table is dropped after the run.\n\
        - naive: one consumer, one transaction (update::apply) and one ack per \
        message, prefetch 400 (--slow-messages of them).\n\
        - intake, 1 and 2 workers: the real `intake worker` (this binary) as child processes with \
        default settings (prefetch 400, batch 100, wait 5ms).\n\
        - latency: a paced run at --latency-load x the 1-worker rate for --latency-secs, \
        one default worker.\n\
        - mix (--scenarios): --mix-messages of real-size traffic through one default worker: 30% \
        emails of 5-60 KiB (multipart/alternative text and HTML in quoted-printable, some with a base64 \
        PDF or PNG attachment, threads linked by In-Reply-To/References), 20% Slack Events API message \
        events, 20% WhatsApp Cloud API webhooks, 10% Telegram updates, 20% generic webhooks; generated \
        from --mix-seed, the same bytes on every run. Every message must be stored; nothing may be \
        dead-lettered.\n\
        - hot (--scenarios): N webhooks on one conversation (one conversationKey, one entry \
        point), one default worker; compared with the 1-worker spread run.\n\
        - big table (--big-table N): first N messages are stored set-based (20 per conversation, \
        ~600 B bodies; VACUUM ANALYZE and CHECKPOINT after), then N webhooks through one default worker; \
        compared with the 1-worker run on the small table. Off by default; the fill takes ~1.4 KB of disk \
        per message (10000000: ~13 GB, several minutes, progress printed).\n\
        - sweeps (--sweep): worker processes (--workers) and batch sizes (--batch-sizes; each with the \
        defaults' prefetch per batch, 4x the batch size).\n\n\
        Throughput: the messages are published first; the clock runs from the first delivery (the ready \
        count first drops) to the moment all rows are visible in PostgreSQL (the last ack for broker-only), \
        so publish and consume are measured apart and runs are comparable.\n\n\
        CPU per message, for every run: CPU seconds x 1e6 / messages of the consumer (the worker processes, \
        or this process for the in-process consumers, marked *), of PostgreSQL (the backends connected to the \
        bench database plus the WAL writer, checkpointer and background writer) and of RabbitMQ (beam.smp), \
        from /proc/<pid>/stat. The PostgreSQL writers and beam.smp are shared with anything else running on \
        the machine. Steal: the share of the machine's CPU ticks the hypervisor gave to other guests \
        during the run (/proc/stat); a run with much of it is slower for reasons outside intake.\n\n\
        Latency: publish -> commit. The bench notes the time just before it publishes each message; a \
        trigger it adds to its own database (for this run only) sends NOTIFY with the message's key, which \
        PostgreSQL delivers only when the worker's transaction commits; the bench notes when that arrives. \
        So the figure includes broker queueing, batching wait, the transaction and the NOTIFY delivery; it \
        is an upper bound on publish->commit by the bench's own scheduling delay. Printed with it: the \
        PostgreSQL checkpoints that started during the paced run and the WAL written per message (both \
        server-wide), which the p99 moves with; --latency-timeline writes every message's figure.\n\n\
        Disk: right after the runs (before any --big-table fill), after VACUUM (ANALYZE): \
        pg_total_relation_size / rows of `messages` and of `conversations`, split into heap+TOAST and \
        indexes (pg_indexes_size), and the stored row size by channel.\n\n\
        At the end every run's row count is checked against the number published (each message applied \
        exactly once, every conversation showing its newest message, nothing dead-lettered, all queues \
        empty). With the defaults the whole bench takes about 2 minutes on a 2-core machine; other load on \
        the machine moves the numbers, so compare the ratios of one run.";

/// Scenarios after the standard runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Real-size traffic of every channel (emails of 5-60 KiB, Slack, WhatsApp, Telegram, webhooks).
    Mix,
    /// All traffic on one conversation.
    Hot,
    /// No scenario.
    None,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// RabbitMQ URL.
    #[arg(long, env = "AMQP_URL", default_value = DEFAULT_AMQP_URL, hide_env_values = true)]
    pub amqp_url: String,

    /// Messages per throughput run (the baselines, intake, hot, big table, each sweep point).
    #[arg(long, default_value_t = 40_000)]
    pub messages: usize,

    /// Messages for the naive run and for sweep points with batch size 1 (they are much
    /// slower); default: a tenth of --messages.
    #[arg(long)]
    pub slow_messages: Option<usize>,

    /// Scenarios after the standard runs, comma-separated: `mix` (real-size traffic of every
    /// channel), `hot` (one conversation), or `none`.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "mix,hot")]
    pub scenarios: Vec<Scenario>,

    /// Messages of the mix scenario (emails are up to 60 KiB); default: a quarter of --messages.
    #[arg(long)]
    pub mix_messages: Option<usize>,

    /// Seed of the mix: the same seed publishes the same bytes.
    #[arg(long, default_value_t = 11)]
    pub mix_seed: u64,

    /// Store this many messages before one more intake run, to measure intake on a big table
    /// (e.g. 10000000: several minutes, ~1.4 KB on disk per message). 0: off.
    #[arg(long, default_value_t = 0)]
    pub big_table: u64,

    /// Also sweep worker processes (--workers) and batch sizes (--batch-sizes).
    #[arg(long)]
    pub sweep: bool,

    /// Worker process counts of the sweep (default batch size).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<usize>,

    /// Batch sizes of the sweep (one worker process).
    #[arg(long, value_delimiter = ',', default_value = "1,10,50,100,200")]
    pub batch_sizes: Vec<usize>,

    /// Distinct conversations (conversationKey values) per run.
    #[arg(long, default_value_t = 500)]
    pub conversations: usize,

    /// Webhook entry points registered in the bench database; conversations are spread over them.
    #[arg(long, default_value_t = 20)]
    pub entry_points: usize,

    /// Rate of the latency run as a share of the measured 1-worker intake throughput.
    #[arg(long, default_value_t = 0.5)]
    pub latency_load: f64,

    /// Length of the paced latency run, in seconds (its first 2 s are also reported apart).
    #[arg(long, default_value_t = 10)]
    pub latency_secs: u64,

    /// Also write the latency run's messages to this CSV file, one line each: when it was
    /// published (ms after the paced run started) and its publish->commit latency (ms); a stall
    /// shows as a ramp. A first comment line has the start as a Unix time, to line it up with logs.
    #[arg(long, value_name = "FILE")]
    pub latency_timeline: Option<std::path::PathBuf>,

    /// Before/after in one run: another `intake` executable (built from an earlier commit, say)
    /// that drains the same backlogs as the 1- and 2-worker runs and the mix right after this
    /// one, with its own `intake worker` children on a database it migrates itself; printed as
    /// pairs with this/other ratios. On a shared machine whose speed drifts, the only fair
    /// before/after.
    #[arg(long, value_name = "PATH")]
    pub compare_with: Option<std::path::PathBuf>,

    /// With --compare-with: run the before/after pairs (1 and 2 workers, and the mix when it
    /// runs) this many times, each round on a new backlog, the other executable first in every
    /// second round; prints each pair's ratio per round and the median. One pair's ratio is only
    /// good to about ±20 % on a shared virtual machine; a median of several is worth believing.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50), requires = "compare_with")]
    pub rounds: u32,

    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,

    /// Keep the bench database and the workers' log (their names are printed).
    #[arg(long)]
    pub keep: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let args = Cli::parse_from(["bench"]).bench;
        assert_eq!(args.scenarios, vec![Scenario::Mix, Scenario::Hot]);
        assert_eq!(args.big_table, 0);
        assert!(!args.sweep);
        let args = Cli::parse_from(["bench", "--scenarios", "hot", "--big-table", "200000"]).bench;
        assert_eq!(args.scenarios, vec![Scenario::Hot]);
        assert_eq!(args.big_table, 200_000);
    }
}
