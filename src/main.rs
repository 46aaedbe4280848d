use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = intake::cli::Cli::parse();
    intake::config::init_logging(cli.log_format);
    match intake::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
