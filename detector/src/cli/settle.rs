//! `settlewatch settle` and `settlewatch balances`: exact statements and balances, as a
//! table or as JSON (amounts as decimal strings with the currency's exponent).

use std::process::ExitCode;

use anyhow::{bail, Context as _};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;
use settlement::config::ProviderConfig;
use settlement::money::format_minor;
use settlement::statement::{fixed, statement, CurrencyStatement, Line, Period, Statement};
use settlement::store::Store;

#[derive(clap::Args)]
pub struct SettleArgs {
    #[arg(long)]
    pub provider: String,
    /// A business day in the provider's timezone (YYYY-MM-DD).
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub period: Option<NaiveDate>,
    /// Start of an explicit range (RFC 3339), with --to.
    #[arg(long, requires = "to")]
    pub from: Option<DateTime<Utc>>,
    /// End of an explicit range (exclusive).
    #[arg(long, requires = "from")]
    pub to: Option<DateTime<Utc>>,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(context: &super::Context, args: SettleArgs) -> anyhow::Result<ExitCode> {
    let config = context.config(true)?;
    let provider = config
        .providers
        .iter()
        .find(|provider| provider.name == args.provider)
        .with_context(|| format!("provider {:?} is not configured", args.provider))?;
    let timezone = provider.timezone()?;
    let period = match (args.period, args.from, args.to) {
        (Some(date), None, None) => Period::day(date, timezone)?,
        (None, Some(from), Some(to)) => Period::range(from, to)?,
        _ => bail!("give either --period YYYY-MM-DD or --from and --to"),
    };
    let store = context.store(&config).await?;
    let statement = provider_statement(&store, provider, period).await;
    store.close().await;
    let statement = statement?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&statement_json(&statement))?);
    } else {
        print!("{}", statement_table(&statement));
    }
    Ok(ExitCode::SUCCESS)
}

/// A provider's statement for a period: the store's per-kind totals through the pure
/// statement arithmetic.
pub async fn provider_statement(store: &Store, provider: &ProviderConfig, period: Period) -> anyhow::Result<Statement> {
    let totals = store.kind_totals(&provider.name, period.from, period.to).await?;
    Ok(statement(&provider.name, period, provider.revenue_share, &totals)?)
}

/// Reads one line of a currency's statement.
type LineOf = fn(&CurrencyStatement) -> Line;

const LINES: [(&str, LineOf); 13] = [
    ("bets", |s| s.bets),
    ("wins", |s| s.wins),
    ("jackpot_wins", |s| s.jackpot_wins),
    ("bonuses", |s| s.bonuses),
    ("rollbacks_of_bets", |s| s.rollbacks_of_bets),
    ("rollbacks_of_wins", |s| s.rollbacks_of_wins),
    ("rollbacks_of_jackpot_wins", |s| s.rollbacks_of_jackpot_wins),
    ("rollbacks_of_bonuses", |s| s.rollbacks_of_bonuses),
    ("deposits", |s| s.deposits),
    ("withdrawals", |s| s.withdrawals),
    ("fees", |s| s.fees),
    ("chargebacks", |s| s.chargebacks),
    ("manual_adjustments", |s| s.manual_adjustments),
];

pub fn statement_table(statement: &Statement) -> String {
    let mut out = format!(
        "Settlement statement: {}  period {}\n  from {}  to {} (exclusive)\n  revenue share {}\n",
        statement.provider,
        statement.period_label,
        statement.from.to_rfc3339(),
        statement.to.to_rfc3339(),
        statement.revenue_share.map(|share| share.to_string()).unwrap_or_else(|| "none".into()),
    );
    if statement.currencies.is_empty() {
        out.push_str("  no transactions in this period\n");
    }
    for (currency, entry) in &statement.currencies {
        out.push_str(&format!("\n  {currency}\n  {:<28} {:>8} {:>22}\n", "line", "count", "amount"));
        for (name, line) in LINES {
            let line = line(entry);
            if line.count > 0 {
                out.push_str(&format!("  {name:<28} {:>8} {:>22}\n", line.count, fixed(line.amount, entry.exponent)));
            }
        }
        for (name, amount) in
            [("GGR", entry.ggr), ("NGR", entry.ngr), ("royalty", entry.royalty), ("net payable", entry.net_payable)]
        {
            out.push_str(&format!("  {name:<28} {:>8} {:>22}\n", "", fixed(amount, entry.exponent)));
        }
    }
    out
}

pub fn statement_json(statement: &Statement) -> serde_json::Value {
    let currencies: serde_json::Map<String, serde_json::Value> = statement
        .currencies
        .iter()
        .map(|(currency, entry)| {
            let mut object = serde_json::Map::new();
            for (name, line) in LINES {
                let line = line(entry);
                object.insert(
                    name.into(),
                    json!({ "count": line.count, "amount": fixed(line.amount, entry.exponent).to_string() }),
                );
            }
            for (name, amount) in
                [("ggr", entry.ggr), ("ngr", entry.ngr), ("royalty", entry.royalty), ("net_payable", entry.net_payable)]
            {
                object.insert(name.into(), json!(fixed(amount, entry.exponent).to_string()));
            }
            (currency.to_string(), serde_json::Value::Object(object))
        })
        .collect();
    json!({
        "provider": statement.provider,
        "period": statement.period_label,
        "from": statement.from.to_rfc3339(),
        "to": statement.to.to_rfc3339(),
        "revenue_share": statement.revenue_share.map(|share| share.to_string()),
        "currencies": currencies,
    })
}

#[derive(clap::Args)]
pub struct BalancesArgs {
    /// Only accounts whose name starts with this (e.g. `player:` or `ggr:evo-live`).
    #[arg(long, default_value = "")]
    pub prefix: String,
    #[arg(long)]
    pub json: bool,
}

pub async fn balances(context: &super::Context, args: BalancesArgs) -> anyhow::Result<ExitCode> {
    let config = context.config(false)?;
    let currencies = config.currencies()?;
    let store = context.store(&config).await?;
    let balances = store.balances(&args.prefix).await?;
    store.close().await;
    let exponent = |code| currencies.exponent(code).unwrap_or(0);
    if args.json {
        let rows: Vec<_> = balances
            .iter()
            .map(|b| {
                json!({"account": b.account, "currency": b.currency.to_string(),
                       "balance": format_minor(b.balance_minor, exponent(b.currency))})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<40} {:<8} {:>22}", "account", "currency", "balance (debit +)");
        for b in &balances {
            println!("{:<40} {:<8} {:>22}", b.account, b.currency, format_minor(b.balance_minor, exponent(b.currency)));
        }
    }
    Ok(ExitCode::SUCCESS)
}
