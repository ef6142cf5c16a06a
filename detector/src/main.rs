//! `settlewatch`: the command line and (in later issues) the service. Each subcommand parses
//! its arguments, makes one call into the `settlement` core and prints the result; errors
//! meet `anyhow` only here, at the binary's edge.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;
mod metrics;

#[derive(Parser)]
#[command(name = "settlewatch", version, about = "Settlement back office with anomaly detection")]
struct Args {
    /// Configuration file (providers, store, currencies).
    #[arg(long, global = true, env = "SETTLEWATCH_CONFIG", default_value = "settlewatch.toml")]
    config: PathBuf,
    /// Store URL, overriding the configuration: sqlite:PATH or postgres://...
    #[arg(long, global = true, env = "SETTLEWATCH_DATABASE_URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest provider files (native format) durably into the ledger.
    Ingest(cli::ingest::IngestArgs),
    /// Print a provider's settlement statement for a period.
    Settle(cli::settle::SettleArgs),
    /// Ledger account balances.
    Balances(cli::settle::BalancesArgs),
    /// Rejected input kept for review and replay.
    #[command(subcommand)]
    DeadLetter(cli::dead_letter::DeadLetterCommand),
    /// Transactions redelivered with changed content, kept beside their original.
    Conflicts(cli::dead_letter::ConflictsArgs),
    /// Check the ledger's integrity: content hashes, postings, balances.
    Verify,
    /// Measure performance.
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
    /// Ingest the bundled sample files of three providers and print their settlement.
    Demo(cli::demo::DemoArgs),
    /// Evaluate anomaly detectors on labelled CSV files (ROC-AUC, AP, precision@k, speed).
    Eval(cli::eval::EvalArgs),
    /// Train an anomaly model on feature rows (CSV or store) and save it as an artifact.
    Train(cli::train::TrainArgs),
    /// Generate labelled provider traffic (native files, statements, truth) deterministically.
    Simulate(cli::simulate::SimulateArgs),
    /// Feature vectors for the anomaly models: export from the ledger, benchmark.
    #[command(subcommand)]
    Features(cli::features::FeaturesCommand),
    /// Provider statements for reconciliation: load (checked, kept with their checksum).
    #[command(subcommand)]
    Statement(cli::reconcile::StatementCommand),
    /// Reconcile providers' statements against the ledger for a business day; breaks are kept.
    Reconcile(cli::reconcile::ReconcileArgs),
    /// Reconciliation breaks, by provider, day, status and class.
    Breaks(cli::reconcile::BreaksArgs),
    /// Maker-checker adjustments for breaks: propose, approve (another person), reject.
    #[command(subcommand)]
    Adjust(cli::reconcile::AdjustCommand),
    /// Print the metrics the service exports (Prometheus text format), read from the store.
    Metrics,
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`settlewatch ... | head`) instead of panicking on the failed print. Rust ignores
    // SIGPIPE by default; restore the default action.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,sqlx=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let context = cli::Context { config_path: args.config, database_url: args.database_url };
    let result = runtime.block_on(async move {
        match args.command {
            Command::Ingest(command) => cli::ingest::run(&context, command).await,
            Command::Settle(command) => cli::settle::run(&context, command).await,
            Command::Balances(command) => cli::settle::balances(&context, command).await,
            Command::DeadLetter(command) => cli::dead_letter::run(&context, command).await,
            Command::Conflicts(command) => cli::dead_letter::conflicts(&context, command).await,
            Command::Verify => cli::verify::run(&context).await,
            Command::Bench(command) => cli::bench::run(command).await,
            Command::Demo(command) => cli::demo::run(command).await,
            Command::Eval(command) => cli::eval::run(command),
            Command::Train(command) => cli::train::run(command).await,
            Command::Simulate(command) => cli::simulate::run(command),
            Command::Features(command) => cli::features::run(&context, command).await,
            Command::Statement(command) => cli::reconcile::statement(&context, command).await,
            Command::Reconcile(command) => cli::reconcile::reconcile(&context, command).await,
            Command::Breaks(command) => cli::reconcile::breaks(&context, command).await,
            Command::Adjust(command) => cli::reconcile::adjust(&context, command).await,
            Command::Metrics => cli::reconcile::metrics(&context).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
