//! `settlewatch features`: feature vectors for the anomaly models. `export` reads the
//! configured ledger in `seq` order (the order serving sees) and writes one CSV row per
//! transaction, optionally with a 0/1 label from a truth file; this is how models are
//! trained from a database, with the reconciliation break events replayed among the
//! transactions by time (`settlement::features::BreakReplay`). `bench` measures extraction throughput on one core and the
//! memory of the state under many distinct accounts.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _};
use settlement::features::{BreakReplay, FeatureConfig, FeatureExtractor, FEATURE_COUNT, SCHEMA};
use settlement::generate::{Generator, GeneratorConfig};
use settlement::store::LIST_ROWS_MAX;

/// Rows a labels file may have (each is kept in memory as a key).
pub const LABEL_ROWS_MAX: usize = 20_000_000;

#[derive(clap::Subcommand)]
pub enum FeaturesCommand {
    /// Write the stored ledger's feature vectors (seq order) to CSV, for training.
    Export(ExportArgs),
    /// Measure extraction throughput (tx/s, one core) and memory with many accounts.
    Bench(BenchArgs),
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The CSV to write: provider, provider_tx_id, one column per feature[, label].
    #[arg(long)]
    pub out: PathBuf,
    /// A CSV whose first two columns are provider and provider_tx_id (a header row with those
    /// names is skipped): listed transactions get label 1, the others 0. With an
    /// `expected_outcome` column (the simulator's truth.csv), only `accepted` rows count.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Export at most this many transactions (the first in seq order).
    #[arg(long)]
    pub limit: Option<u64>,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Transactions for the throughput measurement (generated up front).
    #[arg(long, default_value_t = 500_000)]
    pub transactions: usize,
    /// Distinct accounts for the memory measurement (also the accounts limit).
    #[arg(long, default_value_t = 1_000_000)]
    pub accounts: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

pub async fn run(context: &super::Context, command: FeaturesCommand) -> anyhow::Result<ExitCode> {
    match command {
        FeaturesCommand::Export(args) => export(context, args).await,
        FeaturesCommand::Bench(args) => bench(args),
    }
}

async fn export(context: &super::Context, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let labels = match &args.labels {
        Some(path) => Some(read_labels(path)?),
        None => None,
    };
    let config = context.config(false)?;
    let store = context.store(&config).await?;
    let file = std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut writer = csv::Writer::from_writer(std::io::BufWriter::new(file));
    let mut header: Vec<&str> = vec!["provider", "provider_tx_id"];
    header.extend(SCHEMA.names);
    if labels.is_some() {
        header.push("label");
    }
    writer.write_record(&header)?;

    let limit = args.limit.unwrap_or(u64::MAX);
    let break_events = super::break_events(&store).await?;
    let mut replay = BreakReplay::new(&break_events);
    let mut extractor = FeatureExtractor::new(FeatureConfig::default());
    let mut vector = [0.0; FEATURE_COUNT];
    let mut text = String::new();
    let (mut rows, mut positives) = (0u64, 0u64);
    let mut matched: HashSet<(String, String)> = HashSet::new();
    let mut from_seq = 0;
    'pages: while rows < limit {
        let page_size = (limit - rows).min(LIST_ROWS_MAX as u64) as i64;
        let page = store.transactions_in_seq_order(from_seq, page_size).await?;
        let Some(last) = page.last() else { break };
        from_seq = last.seq + 1;
        for stored in &page {
            let transaction = &stored.transaction;
            replay.extract(&mut extractor, transaction, &mut vector);
            writer.write_field(&transaction.provider)?;
            writer.write_field(&transaction.provider_tx_id)?;
            for value in vector {
                text.clear();
                write!(text, "{value}")?;
                writer.write_field(&text)?;
            }
            if let Some(labels) = &labels {
                let key = (transaction.provider.clone(), transaction.provider_tx_id.clone());
                let positive = labels.keys.contains(&key);
                if positive {
                    positives += 1;
                    matched.insert(key);
                }
                writer.write_field(if positive { "1" } else { "0" })?;
            }
            writer.write_record(None::<&[u8]>)?;
            rows += 1;
            if rows >= limit {
                break 'pages;
            }
        }
    }
    writer.flush()?;
    store.close().await;
    println!("exported {rows} transactions in seq order to {} (schema {})", args.out.display(), SCHEMA.fingerprint());
    println!(
        "reconciliation break events: {} replayed among them, {} later than the last transaction",
        break_events.len() - replay.pending(),
        replay.pending()
    );
    if let Some(labels) = &labels {
        println!(
            "labels: {positives} rows labelled 1, {} rows 0; {} of {} labelled keys are not among the exported transactions; \
             {} label rows left out (expected_outcome not accepted)",
            rows - positives,
            labels.keys.len() - matched.len(),
            labels.keys.len(),
            labels.not_accepted
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The labelled keys of a labels file, and how many of its rows were left out.
struct Labels {
    keys: HashSet<(String, String)>,
    not_accepted: u64,
}

/// The (provider, provider_tx_id) keys of a labels CSV.
///
/// When the header has an `expected_outcome` column (the simulator's `truth.csv`), only rows
/// whose outcome is `accepted` label a transaction: a duplicate, conflicting or rejected
/// record never entered the ledger under its key, and the stored transaction with that key
/// (the original of a redelivery) is not the anomaly.
fn read_labels(path: &Path) -> anyhow::Result<Labels> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("opening the labels file {}", path.display()))?;
    let mut labels = Labels { keys: HashSet::new(), not_accepted: 0 };
    let mut outcome_column = None;
    for (index, record) in reader.records().enumerate() {
        let line = index + 1;
        let record = record.with_context(|| format!("labels file {} line {line}", path.display()))?;
        let (Some(provider), Some(provider_tx_id)) = (record.get(0), record.get(1)) else {
            bail!(
                "labels file {} line {line}: expected at least two columns (provider, provider_tx_id), found {}",
                path.display(),
                record.len()
            );
        };
        if line == 1 && provider.trim() == "provider" && provider_tx_id.trim() == "provider_tx_id" {
            outcome_column = record.iter().position(|name| name.trim() == "expected_outcome");
            continue;
        }
        if provider.is_empty() || provider_tx_id.is_empty() {
            bail!("labels file {} line {line}: provider and provider_tx_id must not be empty", path.display());
        }
        if let Some(column) = outcome_column {
            if record.get(column).map(str::trim) != Some("accepted") {
                labels.not_accepted += 1;
                continue;
            }
        }
        if labels.keys.len() == LABEL_ROWS_MAX {
            bail!("labels file {}: more than {LABEL_ROWS_MAX} rows", path.display());
        }
        labels.keys.insert((provider.to_string(), provider_tx_id.to_string()));
    }
    Ok(labels)
}

fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.transactions == 0 || args.accounts == 0 {
        bail!("--transactions and --accounts must be positive");
    }
    let mut vector = [0.0; FEATURE_COUNT];

    // Memory first, before anything else raises the peak: every transaction from a new
    // account, generated on the fly, with the accounts limit at the number of accounts.
    let baseline_kib = peak_rss_kib();
    let mut extractor =
        FeatureExtractor::new(FeatureConfig { accounts_max: args.accounts, ..FeatureConfig::default() });
    let started = Instant::now();
    let generator = Generator::new(GeneratorConfig { seed: args.seed, ..GeneratorConfig::default() });
    for (index, mut transaction) in generator.take(args.accounts).enumerate() {
        transaction.account.clear();
        write!(transaction.account, "distinct-{index}")?;
        extractor.extract(&transaction, &mut vector);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = extractor.stats();
    let peak_kib = peak_rss_kib();
    println!(
        "memory: {} distinct accounts in {elapsed:.2} s; state estimate {:.1} MiB ({:.0} bytes per account; \
         {} games, {} rounds, {} providers)",
        stats.accounts,
        stats.memory_bytes as f64 / 1048576.0,
        stats.memory_bytes as f64 / stats.accounts as f64,
        stats.games,
        stats.rounds,
        stats.providers
    );
    match (baseline_kib, peak_kib) {
        (Some(baseline), Some(peak)) => println!(
            "memory: peak RSS (VmHWM) {:.1} MiB, {:.1} MiB before; {:.0} bytes per account measured",
            peak as f64 / 1024.0,
            baseline as f64 / 1024.0,
            (peak - baseline) as f64 * 1024.0 / stats.accounts as f64
        ),
        _ => println!("memory: peak RSS not available (no /proc/self/status)"),
    }
    drop(extractor);

    // Throughput: generated transactions (50,000 accounts) held in memory, one core.
    let generator = Generator::new(GeneratorConfig { seed: args.seed, ..GeneratorConfig::default() });
    let transactions: Vec<_> = generator.take(args.transactions).collect();
    let mut extractor = FeatureExtractor::new(FeatureConfig::default());
    let started = Instant::now();
    for transaction in &transactions {
        extractor.extract(transaction, &mut vector);
    }
    let cold = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for transaction in &transactions {
        extractor.extract(transaction, &mut vector);
    }
    let warm = started.elapsed().as_secs_f64();
    std::hint::black_box(vector);
    println!(
        "throughput: {} transactions, one core: {:.0} tx/s from empty state, {:.0} tx/s with the state warm",
        args.transactions,
        args.transactions as f64 / cold,
        args.transactions as f64 / warm
    );
    Ok(ExitCode::SUCCESS)
}

/// Peak resident set size of this process (`VmHWM` in /proc/self/status), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
