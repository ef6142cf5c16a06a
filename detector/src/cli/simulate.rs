//! `settlewatch simulate`: writes a deterministic day (or more) of labelled provider
//! traffic into a directory: each provider's native files, their statements, the truth
//! and episode files, and a `settlewatch.toml` to ingest them with.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _};
use settlement::simulate::{simulate, RunOptions, SimConfig};

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Seed of every random draw: the same seed and configuration give the same bytes.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Simulated time: `24h`, `90m`, `3600s`, `7d`.
    #[arg(long, default_value = "24h", value_parser = parse_duration_seconds)]
    pub duration: u64,
    /// Mean transactions per second over the run, all providers together: `200/s`.
    #[arg(long, default_value = "200/s", value_parser = parse_rate)]
    pub rate: f64,
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Simulator configuration (providers, players, traffic shape, scenario rates);
    /// the built-in defaults otherwise.
    #[arg(long)]
    pub config_file: Option<PathBuf>,
    /// Stream over HTTP to the detector's ingest API instead of writing files.
    #[arg(long)]
    pub target: Option<String>,
}

fn parse_duration_seconds(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 24h, 90m, 3600s or 7d"))?;
    let scale = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    number
        .checked_mul(scale)
        .filter(|seconds| *seconds > 0)
        .ok_or_else(|| format!("{text:?} is not a positive duration"))
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let number = text.trim().strip_suffix("/s").unwrap_or(text.trim());
    match number.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a rate like 200/s")),
    }
}

pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    if let Some(target) = &args.target {
        bail!(
            "--target {target}: the HTTP ingest API is not available yet (it lands with the detector service); \
             write files with --out DIR and ingest them with `settlewatch ingest`"
        );
    }
    let Some(out) = args.out else { bail!("--out DIR is required (where to write the simulated files)") };
    let config = match &args.config_file {
        Some(path) => SimConfig::load(path)?,
        None => SimConfig::default(),
    };
    let options = RunOptions { seed: args.seed, duration_seconds: args.duration, rate_per_second: args.rate, out };
    let started = Instant::now();
    let summary = simulate(&config, &options).with_context(|| format!("simulating into {}", options.out.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "simulated {} transactions ({} records, {} files, {} sessions) into {} in {seconds:.1} s ({:.0} transactions/s)",
        summary.transactions,
        summary.records,
        summary.files,
        summary.sessions,
        options.out.display(),
        summary.transactions as f64 / seconds.max(1e-9)
    );
    println!(
        "{:<24} {:>10}  {:<38} {:>12} {:>9} {:>9}",
        "scenario", "rate", "per", "opportunities", "episodes", "records"
    );
    for row in &summary.scenarios {
        println!(
            "{:<24} {:>10} {:<38} {:>12} {:>9} {:>9}",
            row.scenario.as_str(),
            row.rate,
            row.unit,
            row.opportunities,
            row.episodes,
            row.records
        );
    }
    println!(
        "ingest with: settlewatch --config {out}/settlewatch.toml ingest --manifest {out}/manifest.csv",
        out = options.out.display()
    );
    // The simulator reads no clock; this edge does, to say when the files become ingestible.
    if let Some(last) = summary.last_occurred_at.filter(|last| *last > chrono::Utc::now()) {
        eprintln!(
            "warning: the last simulated record occurred at {}, after now: until then ingest rejects the later \
             records as timestamp_in_future and will not match manifest.csv (move `start` in --config-file back)",
            last.to_rfc3339()
        );
    }
    if let Some(last) = summary.last_delivered_at.filter(|last| *last > chrono::Utc::now()) {
        eprintln!(
            "warning: the last simulated file is delivered at {} (manifest.csv delivered_at: a batch file is dropped \
             at the end of its hour or day), after now: until then `ingest --manifest` refuses it, as a file cannot \
             arrive in the future",
            last.to_rfc3339()
        );
    }
    Ok(ExitCode::SUCCESS)
}
