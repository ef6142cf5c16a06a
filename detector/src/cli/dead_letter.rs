//! `settlewatch dead-letter list|show|replay` and `settlewatch conflicts`: what was rejected
//! or conflicted, with the exact bytes, and the replay of a fixed record.

use std::process::ExitCode;

use anyhow::bail;
use chrono::Utc;
use settlement::store::{DeadLetterFilter, DeadLetterStatus};

use super::ingest::Session;

#[derive(clap::Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters (open ones by default).
    List {
        #[arg(long)]
        provider: Option<String>,
        /// open, replayed or all.
        #[arg(long, default_value = "open")]
        status: String,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Show one dead letter with its raw bytes.
    Show { id: i64 },
    /// Re-run one dead letter through its provider's current configuration.
    Replay { id: i64 },
}

pub async fn run(context: &super::Context, command: DeadLetterCommand) -> anyhow::Result<ExitCode> {
    match command {
        DeadLetterCommand::List { provider, status, limit } => {
            let status = match status.as_str() {
                "open" => Some(DeadLetterStatus::Open),
                "replayed" => Some(DeadLetterStatus::Replayed),
                "all" => None,
                other => bail!("--status {other:?}: use open, replayed or all"),
            };
            let config = context.config(false)?;
            let store = context.store(&config).await?;
            let letters = store.dead_letters(&DeadLetterFilter { provider, status, limit }).await?;
            store.close().await;
            println!(
                "{:>6}  {:<8} {:<12} {:<24} {:>7}  {:<26} reason",
                "id", "status", "provider", "source", "record", "code"
            );
            for letter in &letters {
                println!(
                    "{:>6}  {:<8} {:<12} {:<24} {:>7}  {:<26} {}{}",
                    letter.id,
                    letter.status.as_str(),
                    letter.provider,
                    letter.source,
                    if letter.record == 0 { "whole".to_string() } else { letter.record.to_string() },
                    letter.code.as_str(),
                    letter.field.as_ref().map(|field| format!("[{field}] ")).unwrap_or_default(),
                    letter.message
                );
            }
            println!("{} dead letters", letters.len());
        }
        DeadLetterCommand::Show { id } => {
            let config = context.config(false)?;
            let store = context.store(&config).await?;
            let letter = store.dead_letter(id).await?;
            store.close().await;
            let Some(letter) = letter else { bail!("dead letter {id} does not exist") };
            println!("dead letter {}", letter.id);
            println!("  provider    {}", letter.provider);
            println!("  source      {} (record {}, {})", letter.source, letter.record, letter.unit.as_str());
            println!("  code        {}", letter.code);
            println!("  field       {}", letter.field.as_deref().unwrap_or("-"));
            println!("  reason      {}", letter.message);
            println!("  status      {} (attempts {})", letter.status.as_str(), letter.attempts);
            println!("  first seen  {}", letter.created_at.to_rfc3339());
            println!("  last seen   {}", letter.last_attempt_at.to_rfc3339());
            if let Some(resolved) = letter.resolved_at {
                println!("  replayed at {}", resolved.to_rfc3339());
            }
            println!("  raw ({} bytes):\n{}", letter.raw.len(), show_bytes(&letter.raw));
            if !letter.context.is_empty() {
                println!("  context ({} bytes):\n{}", letter.context.len(), show_bytes(&letter.context));
            }
        }
        DeadLetterCommand::Replay { id } => {
            let config = context.config(true)?;
            let store = context.store(&config).await?;
            let session = Session::start(&config, store).await?;
            let replay = session.ingestor.replay_dead_letter(id, Utc::now()).await;
            session.finish().await;
            let replay = replay?;
            println!("{}", super::ingest::describe(&format!("dead letter {id}"), "replay", &replay.report));
            if replay.resolved {
                println!("dead letter {id} is replayed and closed");
            } else {
                println!("dead letter {id} stays open: see `settlewatch dead-letter show {id}` for the new reason");
                return Ok(ExitCode::from(3));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Text as text (up to 4 KiB), anything else as hex.
fn show_bytes(bytes: &[u8]) -> String {
    const SHOWN_BYTES_MAX: usize = 4096;
    let shown = &bytes[..bytes.len().min(SHOWN_BYTES_MAX)];
    let more = if bytes.len() > SHOWN_BYTES_MAX {
        format!("\n    ... {} more bytes", bytes.len() - SHOWN_BYTES_MAX)
    } else {
        String::new()
    };
    match std::str::from_utf8(shown) {
        Ok(text) => format!("    {}{more}", text.trim_end().replace('\n', "\n    ")),
        Err(_) => format!("    {}{more}", hex::encode(shown)),
    }
}

#[derive(clap::Args)]
pub struct ConflictsArgs {
    #[arg(long)]
    pub provider: Option<String>,
}

pub async fn conflicts(context: &super::Context, args: ConflictsArgs) -> anyhow::Result<ExitCode> {
    let config = context.config(false)?;
    let store = context.store(&config).await?;
    let conflicts = store.conflicts(args.provider.as_deref()).await?;
    store.close().await;
    for conflict in &conflicts {
        println!(
            "conflict {}: {}/{} (original #{}) from {} record {} at {}\n  conflicting version: {}",
            conflict.id,
            conflict.provider,
            conflict.provider_tx_id,
            conflict.original_seq,
            conflict.source,
            conflict.record,
            conflict.received_at.to_rfc3339(),
            conflict.detail
        );
    }
    println!("{} conflicts", conflicts.len());
    Ok(ExitCode::SUCCESS)
}
