//! One reconciliation run end to end: the provider's claim for a business day (the
//! statements loaded for it) against the ledger as known at `as_of`, through the pure
//! matching engine, recorded in the store. `settlewatch reconcile` calls it on demand; the
//! service's scheduler calls the same function, so both give the same breaks.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use super::matching::{reconcile, MatchError, StatementSide};
use super::{Outcome, ReconPeriod, ReconRules, StatementFormat};
use crate::statement::{Period, PeriodError};
use crate::store::{BreakFilter, RunRecord, StatementInfo, Store, StoreError, StoredBreak};

/// What to reconcile: one provider's business day, with its written rules.
#[derive(Clone, Debug)]
pub struct DayRequest<'a> {
    pub provider: &'a str,
    pub timezone: Tz,
    /// The configured statement format: which side of the loaded statements is compared.
    pub format: StatementFormat,
    pub rules: &'a ReconRules,
    pub business_date: NaiveDate,
    /// The ledger as known at this instant (transactions received later are not in it).
    pub as_of: DateTime<Utc>,
    /// The run's own time: when breaks open and close.
    pub now: DateTime<Utc>,
}

/// What a run found and did, for the report.
#[derive(Clone, Debug)]
pub struct DayReport {
    pub run: RunRecord,
    pub outcome: Outcome,
    /// The statements the provider's claim came from.
    pub statements: Vec<StatementInfo>,
    /// Every stored break of this provider and day after the run, any status, by id.
    pub breaks: Vec<StoredBreak>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Period(#[from] PeriodError),
    #[error("no {format} statement of {provider} covers {business_date}: load one with `settlewatch statement load`")]
    NoStatement { provider: String, business_date: NaiveDate, format: StatementFormat },
    #[error("as_of {as_of} is after now ({now}): the ledger cannot be known ahead of time")]
    AsOfInFuture { as_of: DateTime<Utc>, now: DateTime<Utc> },
    #[error("matching {provider} {business_date}: {error}")]
    Match { provider: String, business_date: NaiveDate, error: MatchError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reconciles one provider business day and records the run (idempotent: re-running with
/// nothing new changes no break).
pub async fn reconcile_day(store: &Store, request: &DayRequest<'_>) -> Result<DayReport, RunError> {
    if request.as_of > request.now {
        return Err(RunError::AsOfInFuture { as_of: request.as_of, now: request.now });
    }
    let day = Period::day(request.business_date, request.timezone)?;
    // Only the configured format's lines: another format's statement of the same day
    // (loaded before the format changed) would claim its transactions a second time.
    let (lines, totals, statements) =
        store.statement_lines_in(request.provider, request.business_date, Some(request.format)).await?;
    let side = match request.format {
        StatementFormat::Totals => StatementSide::Totals(&totals),
        StatementFormat::Listing | StatementFormat::Camt053 => StatementSide::Lines(&lines),
    };
    let claimed = statements.iter().any(|statement| statement.format == request.format);
    if !claimed {
        return Err(RunError::NoStatement {
            provider: request.provider.to_string(),
            business_date: request.business_date,
            format: request.format,
        });
    }
    let period = ReconPeriod { business_date: request.business_date, from: day.from, to: day.to, as_of: request.as_of };
    let window = request.rules.cutoff_window;
    let ledger = store.ledger_entries(request.provider, day.from - window, day.to + window, request.as_of).await?;
    let outcome = reconcile(&period, request.rules, &ledger, side).map_err(|error| RunError::Match {
        provider: request.provider.to_string(),
        business_date: request.business_date,
        error,
    })?;
    let run = store.record_run(request.provider, &period, &outcome, request.now).await?;
    let mut breaks = Vec::new();
    let mut filter = BreakFilter {
        provider: Some(request.provider.to_string()),
        business_date: Some(request.business_date),
        ..BreakFilter::default()
    };
    loop {
        let page = store.breaks(&filter).await?;
        let Some(last) = page.last() else { break };
        filter.after_id = last.id;
        breaks.extend(page);
    }
    Ok(DayReport { run, outcome, statements, breaks })
}
