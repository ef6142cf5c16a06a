//! `settlewatch bench ingest`: durable ledger ingestion throughput on SQLite and PostgreSQL
//! against the plainest batched INSERT of the same rows, with peak memory. Figures, not a
//! pass/fail test; record them in BENCHMARKS.md.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::Utc;
use settlement::generate::{Generator, GeneratorConfig};
use settlement::ingest::{Committer, CHUNK_ITEMS_MAX, GROUP_ITEMS_MAX, IN_FLIGHT_CHUNKS_MAX};
use settlement::money::Currencies;
use settlement::store::{Item, Origin, Outcome, Store};
use settlement::validate::{validate, Rules};
use sqlx::{Connection, Executor};

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Durable ingestion of generated canonical transactions (with postings) vs bare INSERTs.
    Ingest(IngestBenchArgs),
}

#[derive(clap::Args)]
pub struct IngestBenchArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub transactions: u64,
    #[arg(long, default_value_t = 8)]
    pub providers: usize,
    #[arg(long, default_value_t = 50_000)]
    pub accounts: u32,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// A PostgreSQL server to measure too (a scratch database is created there and dropped).
    #[arg(long, env = "SETTLEWATCH_BENCH_PG")]
    pub postgres: Option<String>,
    /// Skip SQLite (measure PostgreSQL only).
    #[arg(long)]
    pub skip_sqlite: bool,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    let BenchCommand::Ingest(args) = command;
    if args.transactions == 0 {
        bail!("--transactions must be positive");
    }
    let generator_config = GeneratorConfig {
        seed: args.seed,
        providers: args.providers,
        accounts: args.accounts,
        ..GeneratorConfig::default()
    };
    println!(
        "bench ingest: {} transactions, {} providers, {} accounts, seed {}; chunks of {CHUNK_ITEMS_MAX}, commit groups up to {GROUP_ITEMS_MAX}",
        args.transactions, args.providers, args.accounts, args.seed
    );
    let produce = measure_producer(&generator_config, args.transactions);
    println!(
        "generate + validate only: {:.0} tx/s ({:.2} s)",
        args.transactions as f64 / produce.as_secs_f64(),
        produce.as_secs_f64()
    );
    if !args.skip_sqlite {
        let dir = tempfile::tempdir()?;
        let ledger = Store::open(&format!("sqlite:{}", dir.path().join("ledger.db").display())).await?;
        let bare = Store::open(&format!("sqlite:{}", dir.path().join("bare.db").display())).await?;
        measure("sqlite", &ledger, &bare, &generator_config, args.transactions).await?;
    }
    if let Some(admin_url) = &args.postgres {
        sqlx::any::install_default_drivers();
        let name = format!("settlewatch_bench_{}", Utc::now().timestamp());
        let mut admin = sqlx::AnyConnection::connect(admin_url).await.context("connecting to PostgreSQL")?;
        admin.execute(format!("CREATE DATABASE {name}").as_str()).await?;
        let base = admin_url.rsplit_once('/').map(|(base, _)| base.to_string()).context("URL without a database")?;
        let store = Store::open(&format!("{base}/{name}")).await?;
        let result = measure("postgres", &store, &store, &generator_config, args.transactions).await;
        store.close().await;
        admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await?;
        result?;
    }
    println!("peak RSS of the whole run: {} MiB", peak_rss_kib().map(|kib| kib / 1024).unwrap_or(0));
    Ok(ExitCode::SUCCESS)
}

fn rules(currencies: &Currencies) -> Rules<'_> {
    Rules { currencies, allowed_currencies: None, future_tolerance: chrono::Duration::days(3650) }
}

fn to_item(currencies: &Currencies, transaction: settlement::model::Transaction, record: u64) -> anyhow::Result<Item> {
    let valid =
        validate(transaction, &rules(currencies), Utc::now()).map_err(|rejection| anyhow::anyhow!("{rejection}"))?;
    let raw = record.to_le_bytes().to_vec();
    Ok(Item::Transaction {
        valid,
        origin: Origin { source: Arc::from("bench"), record, raw, context: Arc::from(&b""[..]) },
    })
}

fn measure_producer(config: &GeneratorConfig, transactions: u64) -> Duration {
    let currencies = Currencies::iso();
    let started = Instant::now();
    let mut kept = 0u64;
    for (record, transaction) in Generator::new(config.clone()).take(transactions as usize).enumerate() {
        if to_item(&currencies, transaction, record as u64).is_ok() {
            kept += 1;
        }
    }
    assert_eq!(kept, transactions, "every generated transaction is valid");
    started.elapsed()
}

async fn measure(
    label: &str,
    ledger: &Store,
    bare: &Store,
    config: &GeneratorConfig,
    transactions: u64,
) -> anyhow::Result<()> {
    let currencies = Currencies::iso();
    let (committer, writer) = Committer::spawn(ledger.writer().await?, Arc::new(Utc::now));
    let started = Instant::now();
    let mut generator = Generator::new(config.clone());
    let mut in_flight = VecDeque::new();
    let mut accepted = 0u64;
    let mut record = 0u64;
    while record < transactions {
        let size = (transactions - record).min(CHUNK_ITEMS_MAX as u64);
        let mut items = Vec::with_capacity(size as usize);
        for _ in 0..size {
            record += 1;
            items.push(to_item(&currencies, generator.next_transaction(), record)?);
        }
        in_flight.push_back(committer.submit(items).await?);
        if in_flight.len() >= IN_FLIGHT_CHUNKS_MAX {
            accepted += count_accepted(in_flight.pop_front().expect("non-empty").await??);
        }
    }
    for receiver in in_flight {
        accepted += count_accepted(receiver.await??);
    }
    let ledger_seconds = started.elapsed().as_secs_f64();
    drop(committer);
    writer.await?;
    if accepted != transactions {
        bail!("{label}: only {accepted} of {transactions} transactions were accepted");
    }

    let started = Instant::now();
    let mut generator = Generator::new(config.clone());
    let mut done = 0u64;
    while done < transactions {
        let size = (transactions - done).min(GROUP_ITEMS_MAX as u64) as usize;
        let batch: Vec<_> = generator.by_ref().take(size).collect();
        bare.insert_bare_reference(&batch).await?;
        done += size as u64;
    }
    let bare_seconds = started.elapsed().as_secs_f64();
    let ledger_rate = transactions as f64 / ledger_seconds;
    let bare_rate = transactions as f64 / bare_seconds;
    println!(
        "{label:<8} ledger (dedup + validation + postings + balances, fsync per commit): {ledger_rate:>9.0} tx/s ({ledger_seconds:.2} s)"
    );
    println!("{label:<8} bare batched INSERT reference (same rows, same commit size): {bare_rate:>9.0} tx/s ({bare_seconds:.2} s)");
    println!("{label:<8} ledger / bare = {:.2}", ledger_rate / bare_rate);
    let report = ledger.verify().await?;
    println!(
        "{label:<8} verify after the run: {} ({} transactions, {} postings)",
        if report.is_clean() { "clean" } else { "FINDINGS" },
        report.transactions_checked,
        report.postings_checked
    );
    Ok(())
}

fn count_accepted(outcomes: Vec<Outcome>) -> u64 {
    outcomes.iter().filter(|outcome| matches!(outcome, Outcome::Accepted { .. })).count() as u64
}

/// Peak resident set size of this process (Linux), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
