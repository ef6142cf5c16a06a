//! `settlewatch demo`: ingest the bundled sample files of three providers (JSON webhooks,
//! a CSV settlement file, a fixed-width bank batch) into a fresh SQLite ledger, then print
//! each provider's settlement, the dead letters and the integrity check.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{NaiveDate, Utc};
use settlement::config::Config;
use settlement::ingest::FileOptions;
use settlement::statement::Period;
use settlement::store::{DeadLetterFilter, DeadLetterStatus, Store};

use super::ingest::{describe, Session};
use super::settle::{provider_statement, statement_table};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// The directory with settlewatch.toml and one folder of sample files per provider.
    #[arg(long, default_value = "examples")]
    pub examples: PathBuf,
    /// The business day to settle.
    #[arg(long, default_value = "2026-11-24")]
    pub period: NaiveDate,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let config_path = args.examples.join("settlewatch.toml");
    let config = Config::load(&config_path).with_context(|| "the demo runs from the repository root")?;
    let database = config.store.url.strip_prefix("sqlite:").context("the demo uses an SQLite store")?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{database}{suffix}"));
    }
    let store = Store::open(&config.store.url).await?;
    println!("== ingest (ledger: {})", config.store.url);
    let session = Session::start(&config, store.clone()).await?;
    for provider in &config.providers {
        for path in sample_files(&args.examples.join(&provider.name))? {
            let report = session
                .ingestor
                .ingest_file(&provider.name, &path, &FileOptions::default(), Utc::now(), &mut |_| {})
                .await
                .with_context(|| format!("ingesting {}", path.display()))?;
            println!("{}", describe(&path.display().to_string(), &provider.name, &report));
        }
    }
    println!("\n== replaying the same files changes nothing");
    for provider in &config.providers {
        for path in sample_files(&args.examples.join(&provider.name))? {
            let force = FileOptions { force: true, ..FileOptions::default() };
            let report = session.ingestor.ingest_file(&provider.name, &path, &force, Utc::now(), &mut |_| {}).await?;
            println!("{}", describe(&path.display().to_string(), &provider.name, &report));
        }
    }
    session.finish().await;

    let store = Store::open(&config.store.url).await?;
    for provider in &config.providers {
        let period = Period::day(args.period, provider.timezone()?)?;
        println!("\n{}", statement_table(&provider_statement(&store, provider, period).await?));
    }
    let open = store
        .dead_letters(&DeadLetterFilter { provider: None, status: Some(DeadLetterStatus::Open), limit: 100 })
        .await?;
    println!(
        "== dead letters ({} open; `settlewatch --config {} dead-letter show ID`)",
        open.len(),
        config_path.display()
    );
    for letter in &open {
        println!(
            "  {:>3} {:<11} {} record {}: {} {}",
            letter.id, letter.provider, letter.source, letter.record, letter.code, letter.message
        );
    }
    let report = store.verify().await?;
    println!(
        "\n== verify: {} ({} transactions, {} postings, {} accounts)",
        if report.is_clean() { "clean" } else { "FINDINGS" },
        report.transactions_checked,
        report.postings_checked,
        report.accounts_checked
    );
    store.close().await;
    Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

fn sample_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    Ok(files)
}
