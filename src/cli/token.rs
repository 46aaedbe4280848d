//! `intake token`: API tokens for projects.

use clap::Subcommand;

use crate::config::DatabaseArgs;
use crate::store;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a random token for a project (creating the project if needed) and print it once.
    Create {
        /// Project (tenant) id: letters, digits, `_`, `-`, `.`.
        #[arg(long)]
        project: String,
        /// A note to recognise the token by later.
        #[arg(long)]
        label: Option<String>,
    },
}

pub(super) async fn run_token(db: &DatabaseArgs, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { project, label } => {
            let pool = store::connect_and_migrate(&db.database_url, 2).await?;
            let token = format!("itk_{}", hex::encode(rand::random::<[u8; 24]>()));
            store::ensure_project_token(&pool, &project, &token, label.as_deref().unwrap_or("cli")).await?;
            println!("{token}");
            Ok(())
        }
    }
}
