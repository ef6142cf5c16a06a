//! `settlewatch ingest`: stream provider files into the ledger, with a progress bar on a
//! terminal, an optional acknowledgement log, and a final report.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::Utc;
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
    /// `provider`; paths relative to the manifest), as `settlewatch simulate` writes it.
    #[arg(long, conflicts_with = "files")]
    pub manifest: Option<PathBuf>,
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

/// The (provider, file) pairs to ingest, in order.
fn work_list(args: &IngestArgs) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let Some(manifest) = &args.manifest else {
        let provider = args.provider.clone().context("--provider is required without --manifest")?;
        return Ok(args.files.iter().map(|file| (provider.clone(), file.clone())).collect());
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
    let mut list = Vec::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("reading the manifest {}", manifest.display()))?;
        let line = record.position().map_or(0, |position| position.line());
        let cell = |index: usize, name: &str| match record.get(index).map(str::trim) {
            Some(value) if !value.is_empty() => Ok(value.to_string()),
            _ => Err(anyhow::anyhow!("manifest {} line {line}: empty {name}", manifest.display())),
        };
        list.push((cell(provider_column, "provider")?, base.join(cell(file_column, "file")?)));
    }
    Ok(list)
}

pub async fn run(context: &super::Context, args: IngestArgs) -> anyhow::Result<ExitCode> {
    let config = context.config(true)?;
    let store = context.store(&config).await?;
    let work = work_list(&args)?;
    let session = Session::start(&config, store).await?;
    for (provider, _) in &work {
        session.ingestor.provider(provider)?;
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
    let options = FileOptions { force: args.force };
    for (provider, path) in &work {
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
