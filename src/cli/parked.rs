//! `intake parked`: updates waiting for a message that has not arrived.

use clap::Subcommand;

use crate::config::DatabaseArgs;
use crate::store;

#[derive(Debug, Subcommand)]
pub enum ParkedCommand {
    /// List parked updates, oldest first: age, project, kind, the message key they wait for.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Show at most this many.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
}

pub(super) async fn run_parked(db: &DatabaseArgs, command: ParkedCommand) -> anyhow::Result<()> {
    match command {
        ParkedCommand::List { json, limit } => {
            let pool = store::connect_and_migrate(&db.database_url, 2).await?;
            let parked = crate::update::list_parked(&pool, limit).await?;
            if json {
                for p in &parked {
                    println!("{}", serde_json::to_string(p)?);
                }
            } else {
                println!("{:<10} {:<16} {:<8} KEY", "AGE", "PROJECT", "KIND");
                for p in &parked {
                    let age = (chrono::Utc::now() - p.parked_at).num_seconds().max(0);
                    let kind = p.kind.as_deref().unwrap_or("?");
                    println!("{:<10} {:<16} {:<8} {}", format!("{age}s"), p.project_id, kind, p.idempotency_key);
                }
                println!("{} parked", parked.len());
            }
            Ok(())
        }
    }
}
