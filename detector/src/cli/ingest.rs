//! `settlewatch ingest`: stream provider files into the ledger, with a progress bar on a
//! terminal, an optional acknowledgement log, and a final report.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use settlement::config::Config;
use settlement::ingest::{Committer, FileOptions, IngestReport, Ingestor, Progress};
use settlement::store::Store;

#[derive(clap::Args)]
pub struct IngestArgs {
    /// The configured provider whose format the files are in.
    #[arg(long, required_unless_present = "manifest", conflicts_with = "manifest")]
    pub provider: Option<String>,
    /// A CSV listing the files to ingest, in order, with their provider (columns `file` and
    /// `provider`; paths relative to the manifest), as `settlewatch simulate` writes it. An
    /// optional column `delivered_at` (RFC 3339) says when each file arrived.
    #[arg(long, conflicts_with = "files")]
    pub manifest: Option<PathBuf>,
    /// When the files arrived (RFC 3339, e.g. `2026-11-24T23:00:00Z`; default: now). Their
    /// transactions carry it as `received_at`, so a late batch shows as late. A manifest's
    /// `delivered_at` takes precedence for its rows; capture-log lines that record their own
    /// arrival time keep it.
    #[arg(long, value_parser = parse_time)]
    pub received_at: Option<DateTime<Utc>>,
    /// Ingest even a file whose checksum shows it was ingested before (records still dedupe).
    #[arg(long)]
    pub force: bool,
    /// Append a line `committed UNITS RECORD` after every durable commit: every unit up to
    /// RECORD of the current file is then stored.
    #[arg(long)]
    pub ack_log: Option<PathBuf>,
    #[arg(required_unless_present = "manifest")]
    pub files: Vec<PathBuf>,
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|at| at.with_timezone(&Utc))
        .map_err(|error| format!("{text:?} is not an RFC 3339 time with an offset (2026-11-24T23:00:00Z): {error}"))
}

/// One file to ingest.
struct Work {
    provider: String,
    path: PathBuf,
    /// When it arrived; `None`: now.
    received_at: Option<DateTime<Utc>>,
}

/// The files to ingest, in order.
fn work_list(args: &IngestArgs) -> anyhow::Result<Vec<Work>> {
    let Some(manifest) = &args.manifest else {
        let provider = args.provider.clone().context("--provider is required without --manifest")?;
        return Ok(args
            .files
            .iter()
            .map(|file| Work { provider: provider.clone(), path: file.clone(), received_at: args.received_at })
            .collect());
    };
    let base = manifest.parent().unwrap_or(std::path::Path::new("."));
    let mut reader =
        csv::Reader::from_path(manifest).with_context(|| format!("reading the manifest {}", manifest.display()))?;
    let headers = reader.headers().with_context(|| format!("reading the manifest {}", manifest.display()))?.clone();
    let column = |name: &str| {
        headers.iter().position(|header| header == name).with_context(|| {
            format!(
                "manifest {}: no column {name:?} (columns: {})",
                manifest.display(),
                headers.iter().collect::<Vec<_>>().join(",")
            )
        })
    };
    let (file_column, provider_column) = (column("file")?, column("provider")?);
    let delivered_column = headers.iter().position(|header| header == "delivered_at");
    let mut list = Vec::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("reading the manifest {}", manifest.display()))?;
        let line = record.position().map_or(0, |position| position.line());
        let cell = |index: usize, name: &str| match record.get(index).map(str::trim) {
            Some(value) if !value.is_empty() => Ok(value.to_string()),
            _ => Err(anyhow::anyhow!("manifest {} line {line}: empty {name}", manifest.display())),
        };
        let delivered_at = match delivered_column.and_then(|index| record.get(index)).map(str::trim) {
            Some(text) if !text.is_empty() => Some(parse_time(text).map_err(|error| {
                anyhow::anyhow!("manifest {} line {line}: delivered_at {error}", manifest.display())
            })?),
            _ => args.received_at,
        };
        list.push(Work {
            provider: cell(provider_column, "provider")?,
            path: base.join(cell(file_column, "file")?),
            received_at: delivered_at,
        });
    }
    Ok(list)
}

pub async fn run(context: &super::Context, args: IngestArgs) -> anyhow::Result<ExitCode> {
    let config = context.config(true)?;
    let store = context.store(&config).await?;
    let work = work_list(&args)?;
    let session = Session::start(&config, store).await?;
    for item in &work {
        session.ingestor.provider(&item.provider)?;
    }
    let mut ack_log = match &args.ack_log {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening the acknowledgement log {}", path.display()))?,
        ),
        None => None,
    };
    for Work { provider, path, received_at } in &work {
        let options = FileOptions { force: args.force, received_at: *received_at };
        let bar = progress_bar(path);
        let mut ack_error = None;
        let mut on_progress = |progress: Progress| {
            if let Some(log) = ack_log.as_mut() {
                // One write per line, so a kill cannot leave half a line behind.
                let line = format!("committed {} {}\n", progress.units_committed, progress.record);
                if let Err(error) = log.write_all(line.as_bytes()) {
                    ack_error.get_or_insert(error);
                }
            }
            if let Some(bar) = &bar {
                bar.set_position(progress.units_committed);
            }
        };
        let report = session.ingestor.ingest_file(provider, path, &options, Utc::now(), &mut on_progress).await;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let report = report.with_context(|| format!("ingesting {}", path.display()))?;
        if let Some(error) = ack_error {
            return Err(error).context("writing the acknowledgement log");
        }
        println!("{}", describe(&path.display().to_string(), provider, &report));
    }
    session.finish().await;
    Ok(ExitCode::SUCCESS)
}

/// The writer task and the ingestor over one store.
pub struct Session {
    pub ingestor: Ingestor,
    pub store: Store,
    writer: tokio::task::JoinHandle<()>,
}

impl Session {
    pub async fn start(config: &Config, store: Store) -> anyhow::Result<Session> {
        let (committer, writer) = Committer::spawn(store.writer().await?, Arc::new(Utc::now));
        let ingestor = Ingestor::new(config, store.clone(), committer)?;
        Ok(Session { ingestor, store, writer })
    }

    /// Lets the writer finish what is queued, then closes the store.
    pub async fn finish(self) {
        drop(self.ingestor);
        let _ = self.writer.await;
        self.store.close().await;
    }
}

fn progress_bar(path: &std::path::Path) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {pos} records committed ({rate} records/s) {elapsed}")
            .map(|style| {
                style.with_key("rate", |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                    let _ = write!(out, "{:.0}", state.per_sec());
                })
            })
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(path.display().to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(bar)
}

/// One line per file: what came of its units.
pub fn describe(name: &str, provider: &str, report: &IngestReport) -> String {
    if let Some(previous) = &report.already_ingested {
        return format!(
            "{name} ({provider}): already ingested at {} as {} ({} units: {} accepted, {} duplicates, {} conflicts, {} rejected); nothing done (use --force to re-run)",
            previous.completed_at.to_rfc3339(),
            previous.name,
            previous.units,
            previous.accepted,
            previous.duplicates,
            previous.conflicts,
            previous.rejected
        );
    }
    let mut line = format!(
        "{name} ({provider}): {} units: {} accepted, {} duplicates, {} conflicts, {} rejected",
        report.units,
        report.accepted,
        report.duplicates,
        report.conflicts,
        report.rejected_total()
    );
    if !report.rejected.is_empty() {
        let codes: Vec<String> = report.rejected.iter().map(|(code, count)| format!("{code} {count}")).collect();
        line.push_str(&format!(" ({})", codes.join(", ")));
    }
    if let Some(rejection) = &report.payload_rejection {
        line.push_str(&format!("\n  the whole file was rejected and dead-lettered: {rejection}"));
    }
    line
}
