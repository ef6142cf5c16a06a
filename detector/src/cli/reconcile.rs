//! `settlewatch statement load`, `reconcile`, `breaks` and `adjust`: provider statements in,
//! one reconciliation run per provider business day, the breaks it keeps, and the
//! maker-checker adjustments that settle the rest. Each command is one call into
//! `settlement::reconcile::run` or the store; this module only parses and prints.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use settlement::adapters::FileSource;
use settlement::config::{Config, ProviderConfig};
use settlement::money::CurrencyCode;
use settlement::reconcile::intake::adapter_for;
use settlement::reconcile::run::{reconcile_day, DayReport, DayRequest, RunError};
use settlement::reconcile::{Break, BreakClass};
use settlement::store::{AdjustmentProposal, BreakFilter, BreakStatus, StoredAdjustment, StoredBreak};

use crate::metrics;

#[derive(clap::Subcommand)]
pub enum StatementCommand {
    /// Load provider statement files (the provider's [reconciliation] format), checked for
    /// integrity and kept with their checksum; a second load of the same statement is refused.
    Load {
        #[arg(long)]
        provider: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct ReconcileArgs {
    /// Provider to reconcile; every configured provider with a statement for the day when absent.
    #[arg(long)]
    pub provider: Option<String>,
    /// The provider's business day (YYYY-MM-DD, in its timezone).
    #[arg(long)]
    pub period: NaiveDate,
    /// Reconcile the ledger as it was known at this instant (RFC 3339); default now.
    #[arg(long)]
    pub as_of: Option<DateTime<Utc>>,
    #[arg(long)]
    pub json: bool,
    /// Also write the report as CSV for finance (one row per currency total and per break).
    #[arg(long)]
    pub csv: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct BreaksArgs {
    #[arg(long)]
    pub provider: Option<String>,
    #[arg(long)]
    pub period: Option<NaiveDate>,
    /// open, pending_adjustment or closed.
    #[arg(long)]
    pub status: Option<String>,
    /// A break class (missing_in_ledger, timing, totals_differ, ...).
    #[arg(long)]
    pub class: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Subcommand)]
pub enum AdjustCommand {
    /// Propose an adjustment posting for an open break (maker).
    Propose {
        #[arg(long = "break")]
        break_id: i64,
        /// Signed amount in the currency's unit, posted as a manual adjustment.
        #[arg(long, allow_negative_numbers = true)]
        amount: Decimal,
        #[arg(long)]
        currency: String,
        /// The player account the adjustment is posted to.
        #[arg(long)]
        account: String,
        #[arg(long)]
        reason: String,
        /// Who proposes (the maker).
        #[arg(long)]
        by: String,
    },
    /// Approve a pending adjustment (checker; not its proposer): it is posted to the ledger.
    Approve {
        id: i64,
        #[arg(long)]
        by: String,
    },
    /// Reject a pending adjustment: its break is open again.
    Reject {
        id: i64,
        #[arg(long)]
        by: String,
        #[arg(long)]
        note: String,
    },
}

pub async fn statement(context: &super::Context, command: StatementCommand) -> anyhow::Result<ExitCode> {
    let StatementCommand::Load { provider, files } = command;
    let config = context.config(true)?;
    let (configured, built) = provider_of(&config, &provider)?;
    let adapter = adapter_for(&built, &configured.reconciliation)?;
    let store = context.store(&config).await?;
    let mut failed = false;
    for path in files {
        let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let loaded = async {
            let source = FileSource::open(&name, &path).with_context(|| format!("opening {}", path.display()))?;
            let statement = tokio::task::block_in_place(|| adapter.decode(&source))?;
            let id = store.save_statement(&statement, Utc::now()).await?;
            anyhow::Ok((id, statement))
        }
        .await;
        match loaded {
            Ok((id, statement)) => println!(
                "{}: statement #{id} ({}, {} to {}, {} lines, {} totals rows, sha256 {})",
                path.display(),
                statement.format,
                statement.from_date,
                statement.to_date,
                statement.lines.len(),
                statement.totals.len(),
                hex::encode(statement.sha256)
            ),
            Err(error) => {
                failed = true;
                eprintln!("error: {}: {error:#}", path.display());
            }
        }
    }
    store.close().await;
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

pub async fn reconcile(context: &super::Context, args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let config = context.config(true)?;
    let now = Utc::now();
    let as_of = args.as_of.unwrap_or(now);
    let names: Vec<String> = match &args.provider {
        Some(name) => vec![name.clone()],
        None => config.providers.iter().map(|provider| provider.name.clone()).collect(),
    };
    let store = context.store(&config).await?;
    let mut reports = Vec::new();
    let mut skipped = Vec::new();
    let mut failed = Vec::new();
    for name in &names {
        let (configured, _) = provider_of(&config, name)?;
        let (format, rules) = configured.reconciliation.resolve(name)?;
        let request = DayRequest {
            provider: name,
            timezone: configured.timezone()?,
            format,
            rules: &rules,
            business_date: args.period,
            as_of,
            now,
        };
        match reconcile_day(&store, &request).await {
            Ok(report) => reports.push((configured.timezone.clone(), report)),
            Err(RunError::NoStatement { .. }) if args.provider.is_none() => skipped.push(name.clone()),
            // One provider's failure does not stop the others; it is reported and fails the command.
            Err(error) => failed.push(format!("{name}: {error}")),
        }
    }
    let exposition = metrics::reconciliation(&store, &config).await;
    store.close().await;
    let exposition = exposition?;
    for failure in &failed {
        eprintln!("error: reconciling {failure}");
    }
    if reports.is_empty() {
        if !failed.is_empty() {
            return Ok(ExitCode::FAILURE);
        }
        bail!("no provider has a statement loaded for {}: load one with `settlewatch statement load`", args.period);
    }
    if let Some(path) = &args.csv {
        let mut writer = csv::Writer::from_path(path).with_context(|| format!("writing {}", path.display()))?;
        write_csv(&mut writer, &reports)?;
        writer.flush()?;
    }
    if args.json {
        let value = json!({
            "period": args.period.to_string(),
            "as_of": as_of.to_rfc3339_opts(SecondsFormat::Millis, true),
            "reports": reports.iter().map(|(timezone, report)| report_json(timezone, report)).collect::<Vec<_>>(),
            "skipped_without_statement": skipped,
            "failed": failed,
            "metrics": exposition.samples_json(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        for (timezone, report) in &reports {
            print!("{}", report_table(timezone, report));
        }
        if !skipped.is_empty() {
            println!("no statement for {}: {}", args.period, skipped.join(", "));
        }
    }
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub async fn breaks(context: &super::Context, args: BreaksArgs) -> anyhow::Result<ExitCode> {
    let config = context.config(false)?;
    let status = match &args.status {
        Some(text) => Some(
            BreakStatus::parse(text)
                .with_context(|| format!("--status {text:?}: expected open, pending_adjustment or closed"))?,
        ),
        None => None,
    };
    let class = match &args.class {
        Some(text) => Some(text.parse::<BreakClass>().map_err(|()| {
            let names: Vec<&str> = BreakClass::ALL.iter().map(|class| class.as_str()).collect();
            anyhow::anyhow!("--class {text:?}: expected one of {}", names.join(", "))
        })?),
        None => None,
    };
    let store = context.store(&config).await?;
    let mut filter =
        BreakFilter { provider: args.provider, business_date: args.period, status, class, ..BreakFilter::default() };
    let mut found = Vec::new();
    let listed = async {
        loop {
            let page = store.breaks(&filter).await?;
            let Some(last) = page.last() else { break };
            filter.after_id = last.id;
            found.extend(page);
        }
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    listed?;
    let now = Utc::now();
    if args.json {
        let rows: Vec<Value> = found.iter().map(|stored| break_json(stored, now)).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", breaks_table(&found, now));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn adjust(context: &super::Context, command: AdjustCommand) -> anyhow::Result<ExitCode> {
    let config = context.config(false)?;
    let currencies = config.currencies()?;
    let store = context.store(&config).await?;
    let now = Utc::now();
    let result = async {
        match command {
            AdjustCommand::Propose { break_id, amount, currency, account, reason, by } => {
                let (currency, _) =
                    currencies.lookup(&currency).with_context(|| format!("--currency {currency:?} is not known"))?;
                let proposal = AdjustmentProposal { amount, currency, account, reason };
                let id = store.propose_adjustment(break_id, &proposal, &by, now).await?;
                println!(
                    "adjustment #{id} proposed by {by} for break #{break_id}: waiting for another person to approve"
                );
            }
            AdjustCommand::Approve { id, by } => {
                let adjustment = store.approve_adjustment(id, &by, now).await?;
                print!("{}", adjustment_text(&adjustment));
            }
            AdjustCommand::Reject { id, by, note } => {
                store.reject_adjustment(id, &by, &note, now).await?;
                println!("adjustment #{id} rejected by {by}: its break is open again");
            }
        }
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    result?;
    Ok(ExitCode::SUCCESS)
}

fn provider_of<'a>(
    config: &'a Config,
    name: &str,
) -> anyhow::Result<(&'a ProviderConfig, settlement::config::Provider)> {
    let configured = config
        .providers
        .iter()
        .find(|provider| provider.name == name)
        .with_context(|| format!("provider {name:?} is not configured"))?;
    let built = config
        .providers()?
        .into_iter()
        .find(|provider| provider.name == name)
        .with_context(|| format!("provider {name:?} is not configured"))?;
    Ok((configured, built))
}

fn adjustment_text(adjustment: &StoredAdjustment) -> String {
    format!(
        "adjustment #{} approved by {}: {} {} posted to {} as ledger transaction seq {}; break #{} closed\n",
        adjustment.id,
        adjustment.decided_by.as_deref().unwrap_or("?"),
        adjustment.proposal.amount,
        adjustment.proposal.currency,
        adjustment.proposal.account,
        adjustment.tx_seq.map_or_else(|| "?".to_string(), |seq| seq.to_string()),
        adjustment.break_id
    )
}

fn optional_amount(amount: Option<Decimal>) -> String {
    amount.map_or_else(String::new, |amount| amount.to_string())
}

fn text(value: &Option<impl ToString>) -> String {
    value.as_ref().map_or_else(String::new, ToString::to_string)
}

fn report_table(timezone: &str, report: &DayReport) -> String {
    use std::fmt::Write as _;
    let run = &report.run;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "reconciliation of {} for {} ({timezone}), run #{} as of {}",
        run.provider,
        run.period.business_date,
        run.id,
        run.period.as_of.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    for statement in &report.statements {
        let _ = writeln!(
            out,
            "  statement #{} {} ({}, sha256 {}…)",
            statement.id,
            statement.source,
            statement.format,
            &hex::encode(statement.sha256)[..16]
        );
    }
    let _ = writeln!(
        out,
        "  {:<8} {:>12} {:>20} {:>12} {:>20} {:>12} {:>20} {:>16}",
        "currency",
        "ledger n",
        "ledger amount",
        "stated n",
        "stated amount",
        "matched n",
        "matched amount",
        "net difference"
    );
    for (currency, totals) in &report.outcome.currencies {
        let _ = writeln!(
            out,
            "  {:<8} {:>12} {:>20} {:>12} {:>20} {:>12} {:>20} {:>16}",
            currency.as_str(),
            totals.ledger_count,
            totals.ledger_amount,
            totals.statement_count,
            totals.statement_amount,
            totals.matched_count,
            totals.matched_amount,
            totals.net_difference
        );
    }
    let matches = &report.outcome.matches;
    let _ = writeln!(
        out,
        "  matched: {} by id, {} by reference, {} one-to-many, {} many-to-one, {} totals rows",
        matches.by_id, matches.by_reference, matches.one_to_many, matches.many_to_one, matches.totals_rows
    );
    let _ = writeln!(
        out,
        "  breaks found {}: {} opened, {} closed by rule, {} reopened, {} updated",
        run.breaks_found, run.breaks_opened, run.breaks_closed, run.breaks_reopened, run.breaks_updated
    );
    let mut by_class: BTreeMap<(BreakClass, BreakStatus), u64> = BTreeMap::new();
    for stored in &report.breaks {
        *by_class.entry((stored.found.class, stored.status)).or_default() += 1;
    }
    for ((class, status), count) in by_class {
        let _ = writeln!(out, "    {:<22} {:<19} {count}", class.as_str(), status.as_str());
    }
    out.push_str(&breaks_table(&report.breaks, run.recorded_at));
    out
}

fn breaks_table(breaks: &[StoredBreak], now: DateTime<Utc>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if breaks.is_empty() {
        return "  no breaks\n".to_string();
    }
    let _ = writeln!(
        out,
        "  {:>6} {:<12} {:<10} {:<19} {:<22} {:<4} {:<11} {:>14} {:>7} {:>9}  reason",
        "id", "provider", "day", "status", "class", "ccy", "kind", "difference", "count", "age h"
    );
    for stored in breaks {
        let found = &stored.found;
        let _ = writeln!(
            out,
            "  {:>6} {:<12} {:<10} {:<19} {:<22} {:<4} {:<11} {:>14} {:>7} {:>9.1}  {}{}",
            stored.id,
            stored.provider,
            stored.business_date,
            stored.status.as_str(),
            found.class.as_str(),
            text(&found.currency.as_ref().map(CurrencyCode::as_str)),
            text(&found.kind),
            found.difference,
            found.count,
            stored.age(now).num_seconds() as f64 / 3600.0,
            found.reason,
            stored.closed_by.as_ref().map_or_else(String::new, |by| format!(" [closed by {by}]"))
        );
    }
    out
}

fn found_json(found: &Break) -> Value {
    json!({
        "class": found.class.as_str(),
        "key": found.key,
        "currency": found.currency.as_ref().map(CurrencyCode::as_str),
        "kind": found.kind.map(|kind| kind.as_str()),
        "provider_tx_id": found.provider_tx_id,
        "statement_record": found.statement_record,
        "ledger_amount": found.ledger_amount.map(|amount| amount.to_string()),
        "statement_amount": found.statement_amount.map(|amount| amount.to_string()),
        "difference": found.difference.to_string(),
        "count": found.count,
        "auto_closed_by": found.auto_closed_by.map(|rule| rule.as_str()),
        "reason": found.reason,
    })
}

fn break_json(stored: &StoredBreak, now: DateTime<Utc>) -> Value {
    json!({
        "id": stored.id,
        "provider": stored.provider,
        "business_date": stored.business_date.to_string(),
        "status": stored.status.as_str(),
        "found": found_json(&stored.found),
        "opened_at": stored.opened_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "age_seconds": stored.age(now).num_seconds(),
        "first_run": stored.first_run,
        "last_run": stored.last_run,
        "closed_at": stored.closed_at.map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true)),
        "closed_kind": stored.closed_kind.map(|kind| kind.as_str()),
        "closed_by": stored.closed_by,
        "closed_reason": stored.closed_reason,
    })
}

fn report_json(timezone: &str, report: &DayReport) -> Value {
    let run = &report.run;
    let currencies: serde_json::Map<String, Value> = report
        .outcome
        .currencies
        .iter()
        .map(|(currency, totals)| {
            (
                currency.as_str().to_string(),
                json!({
                    "ledger_count": totals.ledger_count,
                    "ledger_amount": totals.ledger_amount.to_string(),
                    "statement_count": totals.statement_count,
                    "statement_amount": totals.statement_amount.to_string(),
                    "matched_count": totals.matched_count,
                    "matched_amount": totals.matched_amount.to_string(),
                    "net_difference": totals.net_difference.to_string(),
                }),
            )
        })
        .collect();
    let mut by_class: BTreeMap<&str, u64> = BTreeMap::new();
    for found in &report.outcome.breaks {
        *by_class.entry(found.class.as_str()).or_default() += 1;
    }
    let matches = &report.outcome.matches;
    json!({
        "provider": run.provider,
        "business_date": run.period.business_date.to_string(),
        "timezone": timezone,
        "from": run.period.from.to_rfc3339_opts(SecondsFormat::Millis, true),
        "to": run.period.to.to_rfc3339_opts(SecondsFormat::Millis, true),
        "as_of": run.period.as_of.to_rfc3339_opts(SecondsFormat::Millis, true),
        "run": run.id,
        "statements": report.statements.iter().map(|statement| json!({
            "id": statement.id,
            "source": statement.source,
            "format": statement.format.as_str(),
            "sha256": hex::encode(statement.sha256),
        })).collect::<Vec<_>>(),
        "currencies": currencies,
        "matches": {
            "by_id": matches.by_id,
            "by_reference": matches.by_reference,
            "one_to_many": matches.one_to_many,
            "many_to_one": matches.many_to_one,
            "totals_rows": matches.totals_rows,
        },
        "breaks_found": run.breaks_found,
        "breaks_found_by_class": by_class,
        "breaks_opened": run.breaks_opened,
        "breaks_closed": run.breaks_closed,
        "breaks_reopened": run.breaks_reopened,
        "breaks_updated": run.breaks_updated,
        "breaks": report.breaks.iter().map(|stored| break_json(stored, run.recorded_at)).collect::<Vec<_>>(),
    })
}

fn write_csv<W: std::io::Write>(writer: &mut csv::Writer<W>, reports: &[(String, DayReport)]) -> anyhow::Result<()> {
    writer.write_record([
        "record",
        "provider",
        "business_date",
        "run",
        "currency",
        "kind",
        "class",
        "status",
        "ledger_count",
        "ledger_amount",
        "statement_count",
        "statement_amount",
        "matched_count",
        "matched_amount",
        "difference",
        "count",
        "break_id",
        "provider_tx_id",
        "statement_record",
        "opened_at",
        "closed_by",
        "reason",
    ])?;
    for (_, report) in reports {
        let run = &report.run;
        let day = run.period.business_date.to_string();
        let run_id = run.id.to_string();
        for (currency, totals) in &report.outcome.currencies {
            writer.write_record([
                "total",
                &run.provider,
                &day,
                &run_id,
                currency.as_str(),
                "",
                "",
                "",
                &totals.ledger_count.to_string(),
                &totals.ledger_amount.to_string(),
                &totals.statement_count.to_string(),
                &totals.statement_amount.to_string(),
                &totals.matched_count.to_string(),
                &totals.matched_amount.to_string(),
                &totals.net_difference.to_string(),
                "",
                "",
                "",
                "",
                "",
                "",
                "",
            ])?;
        }
        for stored in &report.breaks {
            let found = &stored.found;
            writer.write_record([
                "break",
                &stored.provider,
                &day,
                &run_id,
                &text(&found.currency.as_ref().map(CurrencyCode::as_str)),
                &text(&found.kind),
                found.class.as_str(),
                stored.status.as_str(),
                "",
                &optional_amount(found.ledger_amount),
                "",
                &optional_amount(found.statement_amount),
                "",
                "",
                &found.difference.to_string(),
                &found.count.to_string(),
                &stored.id.to_string(),
                &text(&found.provider_tx_id),
                &text(&found.statement_record),
                &stored.opened_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                &text(&stored.closed_by),
                &found.reason,
            ])?;
        }
    }
    Ok(())
}

pub async fn metrics(context: &super::Context) -> anyhow::Result<ExitCode> {
    let config = context.config(false)?;
    let store = context.store(&config).await?;
    let exposition = metrics::reconciliation(&store, &config).await;
    store.close().await;
    print!("{}", exposition?.text()?);
    Ok(ExitCode::SUCCESS)
}
