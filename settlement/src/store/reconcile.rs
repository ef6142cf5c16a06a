//! Reconciliation in the store: the provider statements we loaded (refusing a second load of
//! the same bytes or the same provider statement id), the ledger as a run sees it, the runs,
//! and the breaks they find with their life (open, pending adjustment, closed; closed by a
//! written rule or by an approved adjustment), the maker-checker adjustments, and an audit
//! log of every change of status and every maker-checker step.
//!
//! The matching itself is pure (`crate::reconcile`); this module only stores its values and
//! applies a run's outcome to the stored breaks, in one database transaction per call.
//!
//! Break life, per (provider, business date, key), as `record_run` applies an outcome:
//! - new: stored `open`, or stored `closed` at once when the outcome names the written rule
//!   that already settles it (`auto_closed_by`; `closed_by` = the rule);
//! - found again: `last_run`/`last_seen_at` move on; changed amounts or reason are updated
//!   (audited); a pending adjustment of a break whose figures changed is withdrawn and the
//!   break is open again (approving it would post a correction of the old difference, and
//!   the break it closed would hide the rest); an open (or pending) break the outcome now
//!   settles by a rule is closed by it;
//!   a break closed by a rule that is found again unsettled is reopened;
//! - not found again: an open break is closed by `resolved_on_recheck`;
//! - a break with a pending adjustment whose difference resolves itself (not found again, or
//!   settled by a rule) is closed by that rule and the proposal withdrawn: approving it
//!   would post a correction for a difference that no longer exists;
//! - a break closed by an approved adjustment stays closed whatever later runs find (the
//!   correction is in the ledger; a person decided); only `last_seen` and changed figures
//!   are recorded.
//!
//! Re-running with the same outcome adds a run row and moves `last_run`/`last_seen_at`;
//! nothing else changes and no audit row is written.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures_util::TryStreamExt;
use rust_decimal::Decimal;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::writer::{placeholders, value_rows, write_items, Item, Origin, WriteCaches, LEDGER_WRITE_LOCK};
use super::{begin_locked, currency, hash32, kind, nanos, printable, Result, Store, StoreError, LIST_ROWS_MAX};
use crate::model::{from_timestamp_nanos, sha256, Transaction};
use crate::money::{from_minor, to_minor, Currencies, CurrencyCode, CURRENCY_EXPONENT_MAX};
use crate::reconcile::{
    AutoRule, Break, BreakClass, CurrencyTotals, LedgerEntry, MatchCounts, Outcome, ProviderStatement, ReconPeriod,
    StatementBalance, StatementFormat, StatementLine, TotalsLine, BREAKS_MAX, LEDGER_ENTRIES_MAX, STATEMENT_LINES_MAX,
};
use crate::validate::{validate, Rules};

/// The PostgreSQL advisory lock that serialises writers of reconciliation state (runs,
/// breaks, adjustments). Taken before `LEDGER_WRITE_LOCK` when both are needed.
const RECONCILE_WRITE_LOCK: i64 = 0x5e77_1e01;
/// Rows per multi-row INSERT (13 columns: well under both databases' parameter limits).
const INSERT_ROWS_MAX: usize = 1000;
/// Ids per `IN (...)` list.
const IDS_PER_STATEMENT_MAX: usize = 500;
/// The most breaks stored for one provider and business day (all runs together); past it
/// a run is refused: the matching engine's keys are not stable between runs.
pub const STORED_BREAKS_PER_DAY_MAX: usize = 10 * BREAKS_MAX;
/// The most statements that may cover one provider's business day.
pub const STATEMENTS_PER_DAY_MAX: usize = 1000;
/// The most break events `break_events` returns; beyond it the call is refused.
pub const BREAK_EVENTS_MAX: usize = 5_000_000;
/// The most bytes of an adjustment's reason or a rejection note.
pub const NOTE_LENGTH_MAX: usize = 4096;
/// The audit actor of changes a reconciliation run makes.
pub const AUDIT_ACTOR_RUN: &str = "reconciliation";

/// Which earlier load a duplicate statement matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DuplicateBy {
    /// The same bytes (sha256).
    Sha256,
    /// The same provider statement id.
    StatementId(String),
}

impl fmt::Display for DuplicateBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DuplicateBy::Sha256 => f.write_str("bytes (sha256)"),
            DuplicateBy::StatementId(id) => write!(f, "provider statement id {id:?}"),
        }
    }
}

/// A loaded statement, without its lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementInfo {
    pub id: i64,
    pub provider: String,
    pub format: StatementFormat,
    pub source: String,
    pub sha256: [u8; 32],
    pub statement_id: Option<String>,
    pub from_date: NaiveDate,
    pub to_date: NaiveDate,
    pub line_count: u64,
    pub totals_count: u64,
    pub balance_count: u64,
    pub loaded_at: DateTime<Utc>,
}

/// Where a break is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BreakStatus {
    /// Waiting for a person (or for a run that no longer finds it).
    Open,
    /// An adjustment is proposed and waits for a second person's approval.
    PendingAdjustment,
    /// Settled: by a written rule or by an approved adjustment (`ClosedKind`).
    Closed,
}

impl BreakStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakStatus::Open => "open",
            BreakStatus::PendingAdjustment => "pending_adjustment",
            BreakStatus::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<BreakStatus> {
        [BreakStatus::Open, BreakStatus::PendingAdjustment, BreakStatus::Closed]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

impl fmt::Display for BreakStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a closed break was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClosedKind {
    /// By a written rule (`closed_by` names it).
    Rule,
    /// By an approved adjustment (`closed_by` is the approver).
    Adjustment,
}

impl ClosedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClosedKind::Rule => "rule",
            ClosedKind::Adjustment => "adjustment",
        }
    }

    fn parse(text: &str) -> Option<ClosedKind> {
        [ClosedKind::Rule, ClosedKind::Adjustment].into_iter().find(|kind| kind.as_str() == text)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdjustmentStatus {
    Pending,
    Approved,
    Rejected,
    /// Taken back by a run: the difference it was to correct resolved itself or changed.
    Withdrawn,
}

impl AdjustmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AdjustmentStatus::Pending => "pending",
            AdjustmentStatus::Approved => "approved",
            AdjustmentStatus::Rejected => "rejected",
            AdjustmentStatus::Withdrawn => "withdrawn",
        }
    }

    fn parse(text: &str) -> Option<AdjustmentStatus> {
        [AdjustmentStatus::Pending, AdjustmentStatus::Approved, AdjustmentStatus::Rejected, AdjustmentStatus::Withdrawn]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

impl fmt::Display for AdjustmentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A break as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBreak {
    pub id: i64,
    pub provider: String,
    pub business_date: NaiveDate,
    /// The difference as last found. `auto_closed_by` is the written rule that closed it,
    /// when one did (`None` while open, or when closed by an adjustment).
    pub found: Break,
    pub status: BreakStatus,
    pub opened_at: DateTime<Utc>,
    /// The runs that first and last found it.
    pub first_run: i64,
    pub last_run: i64,
    pub last_seen_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub closed_kind: Option<ClosedKind>,
    /// The rule's name, or the person who approved the adjustment.
    pub closed_by: Option<String>,
    pub closed_reason: Option<String>,
}

impl StoredBreak {
    /// How long it has been (or was) unsettled: until `now` while not closed, until its
    /// closing once closed.
    pub fn age(&self, now: DateTime<Utc>) -> Duration {
        self.closed_at.unwrap_or(now) - self.opened_at
    }
}

/// Which breaks `Store::breaks` returns; `None` is any. Ordered by id, at most
/// `LIST_ROWS_MAX` with `id > after_id` (page on with the last id).
#[derive(Clone, Debug, Default)]
pub struct BreakFilter {
    pub provider: Option<String>,
    pub business_date: Option<NaiveDate>,
    pub status: Option<BreakStatus>,
    pub class: Option<BreakClass>,
    pub after_id: i64,
}

/// Unsettled (open or pending adjustment) breaks of one provider and class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderBreakStats {
    pub provider: String,
    pub class: BreakClass,
    pub open_count: u64,
    /// Signed sum of the differences (statement − ledger) per currency; breaks without a
    /// currency are counted but have no amount here.
    pub open_difference: BTreeMap<CurrencyCode, Decimal>,
    /// Sum of the differences' magnitudes per currency (what is at stake, not netted).
    pub open_difference_abs: BTreeMap<CurrencyCode, Decimal>,
    pub oldest_open_at: DateTime<Utc>,
}

/// A break of a provider became unsettled (`opened`: opened or reopened) or settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakEvent {
    pub provider: String,
    pub at: DateTime<Utc>,
    pub opened: bool,
    pub break_id: i64,
}

/// A recorded run and what it did to the stored breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRecord {
    pub id: i64,
    pub provider: String,
    pub period: ReconPeriod,
    pub recorded_at: DateTime<Utc>,
    pub currencies: BTreeMap<CurrencyCode, CurrencyTotals>,
    pub matches: MatchCounts,
    pub breaks_found: u64,
    /// New breaks stored open.
    pub breaks_opened: u64,
    /// Breaks closed by a rule in this run (including new ones stored closed at once).
    pub breaks_closed: u64,
    pub breaks_reopened: u64,
    /// Breaks found again with other figures or reason.
    pub breaks_updated: u64,
}

/// What a maker proposes to correct a break: a signed amount posted as a
/// `manual_adjustment` to the player account `account` (positive credits the player).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdjustmentProposal {
    pub amount: Decimal,
    pub currency: CurrencyCode,
    pub account: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAdjustment {
    pub id: i64,
    pub break_id: i64,
    pub proposal: AdjustmentProposal,
    pub status: AdjustmentStatus,
    pub proposed_by: String,
    pub proposed_at: DateTime<Utc>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_note: Option<String>,
    /// The ledger transaction the approval posted.
    pub tx_seq: Option<i64>,
}

/// What an audit row is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditSubject {
    Break(i64),
    Adjustment(i64),
}

impl AuditSubject {
    fn parts(self) -> (&'static str, i64) {
        match self {
            AuditSubject::Break(id) => ("break", id),
            AuditSubject::Adjustment(id) => ("adjustment", id),
        }
    }

    fn from_parts(kind: &str, id: i64) -> Option<AuditSubject> {
        match kind {
            "break" => Some(AuditSubject::Break(id)),
            "adjustment" => Some(AuditSubject::Adjustment(id)),
            _ => None,
        }
    }
}

/// One audit row: who did what to which subject, when, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    /// Breaks: opened, recorded_closed, closed, reopened, updated, adjustment_pending,
    /// adjustment_rejected, adjustment_withdrawn. Adjustments: proposed, approved, rejected,
    /// withdrawn.
    pub action: String,
    pub subject: AuditSubject,
    pub detail: String,
}

fn auto_rule(text: &str) -> Option<AutoRule> {
    [AutoRule::LateArrival, AutoRule::RollToNextPeriod, AutoRule::ResolvedOnRecheck]
        .into_iter()
        .find(|rule| rule.as_str() == text)
}

fn invalid(what: impl Into<String>, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidInput { what: what.into(), reason: reason.into() }
}

/// The amount in minor units of `exponent` decimal places, exactly, or why not.
fn minor_at(amount: Decimal, exponent: u32, what: &dyn Fn() -> String) -> Result<i64> {
    to_minor(amount, exponent).map_err(|error| invalid(what(), format!("amount {amount} {error}")))
}

/// One exponent that holds every amount exactly: the largest number of decimal places any
/// is written with (so `10.50` reads back as `10.50`), or, past `CURRENCY_EXPONENT_MAX`,
/// the fewest that keep their value.
fn common_exponent(amounts: &[Decimal], what: &dyn Fn() -> String) -> Result<u32> {
    let written = amounts.iter().map(Decimal::scale).max().unwrap_or(0);
    if written <= CURRENCY_EXPONENT_MAX {
        return Ok(written);
    }
    let needed = amounts.iter().map(|amount| amount.normalize().scale()).max().unwrap_or(0);
    if needed <= CURRENCY_EXPONENT_MAX {
        Ok(needed)
    } else {
        Err(invalid(what(), format!("an amount has {needed} decimal places, more than {CURRENCY_EXPONENT_MAX}")))
    }
}

fn exponent_of(stored: i64, what: &dyn Fn() -> String) -> Result<u32> {
    u32::try_from(stored)
        .ok()
        .filter(|&exponent| exponent <= CURRENCY_EXPONENT_MAX)
        .ok_or_else(|| StoreError::Corrupt(format!("{}: exponent {stored} is out of range", what())))
}

fn date_text(date: NaiveDate, what: &dyn Fn() -> String) -> Result<String> {
    use chrono::Datelike;
    if !(1..=9999).contains(&date.year()) {
        return Err(invalid(what(), format!("date {date} is outside the years 1..9999")));
    }
    Ok(date.format("%Y-%m-%d").to_string())
}

fn date(text: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| StoreError::Corrupt(format!("date {text:?}")))
}

/// Text stored exactly: PostgreSQL cannot hold NUL in TEXT, so it is refused on both.
fn exact_text<'t>(text: &'t str, what: &dyn Fn() -> String) -> Result<&'t str> {
    if text.contains('\0') {
        return Err(invalid(what(), "contains a NUL character"));
    }
    Ok(text)
}

fn count(value: u64, what: &dyn Fn() -> String) -> Result<i64> {
    i64::try_from(value).map_err(|_| invalid(what(), format!("{value} does not fit in 64-bit storage")))
}

fn unsigned(stored: i64) -> Result<u64> {
    u64::try_from(stored).map_err(|_| StoreError::Corrupt(format!("a stored count is negative ({stored})")))
}

async fn provider_id(tx: &mut sqlx::AnyConnection, provider: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO providers (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
    )
    .bind(provider)
    .fetch_one(&mut *tx)
    .await?)
}

async fn audit(
    tx: &mut sqlx::AnyConnection,
    at_ns: i64,
    actor: &str,
    action: &str,
    subject: AuditSubject,
    detail: &str,
) -> Result<()> {
    let (kind, id) = subject.parts();
    sqlx::query(
        "INSERT INTO audit_log (at_ns, actor, action, subject_kind, subject_id, detail) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(at_ns)
    .bind(printable(actor).into_owned())
    .bind(action)
    .bind(kind)
    .bind(id)
    .bind(printable(detail).into_owned())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A break's stored figures, compared between runs to see what changed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BreakFigures {
    class: BreakClass,
    currency: Option<CurrencyCode>,
    kind: Option<crate::model::Kind>,
    provider_tx_id: Option<String>,
    statement_record: Option<u64>,
    ledger_amount: Option<Decimal>,
    statement_amount: Option<Decimal>,
    difference: Decimal,
    count: u64,
    reason: String,
}

impl BreakFigures {
    fn of(found: &Break) -> BreakFigures {
        BreakFigures {
            class: found.class,
            currency: found.currency,
            kind: found.kind,
            provider_tx_id: found.provider_tx_id.as_deref().map(|id| printable(id).into_owned()),
            statement_record: found.statement_record,
            ledger_amount: found.ledger_amount,
            statement_amount: found.statement_amount,
            difference: found.difference,
            count: found.count,
            reason: printable(&found.reason).into_owned(),
        }
    }

    /// What differs from `earlier`, for the audit log.
    fn changes_from(&self, earlier: &BreakFigures) -> String {
        let mut changes = Vec::new();
        let amount = |value: &Option<Decimal>| value.map_or_else(|| "none".to_string(), |amount| amount.to_string());
        if self.ledger_amount != earlier.ledger_amount {
            changes.push(format!(
                "ledger amount {} -> {}",
                amount(&earlier.ledger_amount),
                amount(&self.ledger_amount)
            ));
        }
        if self.statement_amount != earlier.statement_amount {
            changes.push(format!(
                "statement amount {} -> {}",
                amount(&earlier.statement_amount),
                amount(&self.statement_amount)
            ));
        }
        if self.difference != earlier.difference {
            changes.push(format!("difference {} -> {}", earlier.difference, self.difference));
        }
        if self.count != earlier.count {
            changes.push(format!("count {} -> {}", earlier.count, self.count));
        }
        if self.class != earlier.class {
            changes.push(format!("class {} -> {}", earlier.class, self.class));
        }
        if (self.currency, self.kind, &self.provider_tx_id, self.statement_record)
            != (earlier.currency, earlier.kind, &earlier.provider_tx_id, earlier.statement_record)
        {
            changes.push("currency, kind, transaction or statement line changed".to_string());
        }
        if self.reason != earlier.reason {
            changes.push(format!("reason was: {}", earlier.reason));
        }
        changes.join("; ")
    }
}

/// A break as the columns store it.
struct BreakRow {
    exponent: i64,
    ledger_minor: Option<i64>,
    statement_minor: Option<i64>,
    difference_minor: i64,
    statement_record: Option<i64>,
    count: i64,
}

fn break_row(found: &Break, what: &dyn Fn() -> String) -> Result<BreakRow> {
    let amounts: Vec<Decimal> =
        [found.ledger_amount, found.statement_amount, Some(found.difference)].into_iter().flatten().collect();
    let exponent = common_exponent(&amounts, what)?;
    Ok(BreakRow {
        exponent: exponent as i64,
        ledger_minor: found.ledger_amount.map(|amount| minor_at(amount, exponent, what)).transpose()?,
        statement_minor: found.statement_amount.map(|amount| minor_at(amount, exponent, what)).transpose()?,
        difference_minor: minor_at(found.difference, exponent, what)?,
        statement_record: found.statement_record.map(|record| count(record, what)).transpose()?,
        count: count(found.count, what)?,
    })
}

const BREAK_COLUMNS: &str = "b.id, p.name, b.business_date, b.break_key, b.class, b.currency, b.kind, b.provider_tx_id, \
     b.statement_record, b.exponent, b.ledger_amount_minor, b.statement_amount_minor, b.difference_minor, b.item_count, \
     b.reason, b.status, b.opened_at_ns, b.first_run_id, b.last_run_id, b.last_seen_at_ns, b.closed_at_ns, \
     b.closed_kind, b.closed_by, b.closed_reason";

fn stored_break(row: &AnyRow) -> Result<StoredBreak> {
    let id: i64 = row.try_get(0)?;
    let what = || format!("break #{id}");
    let exponent = exponent_of(row.try_get(9)?, &what)?;
    let class: String = row.try_get(4)?;
    let status: String = row.try_get(15)?;
    let closed_kind = row
        .try_get::<Option<String>, _>(21)?
        .map(|text| {
            ClosedKind::parse(&text).ok_or_else(|| StoreError::Corrupt(format!("{}: closed kind {text:?}", what())))
        })
        .transpose()?;
    let closed_by: Option<String> = row.try_get(22)?;
    let auto_closed_by = match (closed_kind, &closed_by) {
        (Some(ClosedKind::Rule), Some(rule)) => auto_rule(rule),
        _ => None,
    };
    Ok(StoredBreak {
        id,
        provider: row.try_get(1)?,
        business_date: date(&row.try_get::<String, _>(2)?)?,
        found: Break {
            class: class.parse().map_err(|_| StoreError::Corrupt(format!("{}: class {class:?}", what())))?,
            key: row.try_get(3)?,
            currency: row.try_get::<Option<String>, _>(5)?.as_deref().map(currency).transpose()?,
            kind: row.try_get::<Option<String>, _>(6)?.as_deref().map(kind).transpose()?,
            provider_tx_id: row.try_get(7)?,
            statement_record: row.try_get::<Option<i64>, _>(8)?.map(unsigned).transpose()?,
            ledger_amount: row.try_get::<Option<i64>, _>(10)?.map(|minor| from_minor(minor, exponent)),
            statement_amount: row.try_get::<Option<i64>, _>(11)?.map(|minor| from_minor(minor, exponent)),
            difference: from_minor(row.try_get(12)?, exponent),
            count: unsigned(row.try_get(13)?)?,
            auto_closed_by,
            reason: row.try_get(14)?,
        },
        status: BreakStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("{}: status {status:?}", what())))?,
        opened_at: from_timestamp_nanos(row.try_get(16)?),
        first_run: row.try_get(17)?,
        last_run: row.try_get(18)?,
        last_seen_at: from_timestamp_nanos(row.try_get(19)?),
        closed_at: row.try_get::<Option<i64>, _>(20)?.map(from_timestamp_nanos),
        closed_kind,
        closed_by,
        closed_reason: row.try_get(23)?,
    })
}

const ADJUSTMENT_COLUMNS: &str = "a.id, a.break_id, a.currency, a.exponent, a.amount_minor, a.account, a.reason, \
     a.status, a.proposed_by, a.proposed_at_ns, a.decided_by, a.decided_at_ns, a.decision_note, a.tx_seq";

fn stored_adjustment(row: &AnyRow) -> Result<StoredAdjustment> {
    let id: i64 = row.try_get(0)?;
    let what = || format!("adjustment #{id}");
    let exponent = exponent_of(row.try_get(3)?, &what)?;
    let status: String = row.try_get(7)?;
    Ok(StoredAdjustment {
        id,
        break_id: row.try_get(1)?,
        proposal: AdjustmentProposal {
            amount: from_minor(row.try_get(4)?, exponent),
            currency: currency(&row.try_get::<String, _>(2)?)?,
            account: row.try_get(5)?,
            reason: row.try_get(6)?,
        },
        status: AdjustmentStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("{}: status {status:?}", what())))?,
        proposed_by: row.try_get(8)?,
        proposed_at: from_timestamp_nanos(row.try_get(9)?),
        decided_by: row.try_get(10)?,
        decided_at: row.try_get::<Option<i64>, _>(11)?.map(from_timestamp_nanos),
        decision_note: row.try_get(12)?,
        tx_seq: row.try_get(13)?,
    })
}

const STATEMENT_COLUMNS: &str = "s.id, p.name, s.format, s.source, s.sha256, s.statement_id, s.from_date, s.to_date, \
     s.line_count, s.totals_count, s.balance_count, s.loaded_at_ns";

fn statement_info(row: &AnyRow) -> Result<StatementInfo> {
    let format: String = row.try_get(2)?;
    Ok(StatementInfo {
        id: row.try_get(0)?,
        provider: row.try_get(1)?,
        format: format.parse().map_err(|_| StoreError::Corrupt(format!("statement format {format:?}")))?,
        source: row.try_get(3)?,
        sha256: hash32(row.try_get(4)?)?,
        statement_id: row.try_get(5)?,
        from_date: date(&row.try_get::<String, _>(6)?)?,
        to_date: date(&row.try_get::<String, _>(7)?)?,
        line_count: unsigned(row.try_get(8)?)?,
        totals_count: unsigned(row.try_get(9)?)?,
        balance_count: unsigned(row.try_get(10)?)?,
        loaded_at: from_timestamp_nanos(row.try_get(11)?),
    })
}

const LINE_COLUMNS: &str = "l.record, l.detail, l.provider_tx_id, l.reference, l.kind, l.currency, l.exponent, \
     l.amount_minor, l.business_date, l.occurred_at_ns";

fn statement_line(row: &AnyRow) -> Result<StatementLine> {
    let record = unsigned(row.try_get(0)?)?;
    let exponent = exponent_of(row.try_get(6)?, &|| format!("statement line {record}"))?;
    Ok(StatementLine {
        record,
        detail: u32::try_from(row.try_get::<i64, _>(1)?)
            .map_err(|_| StoreError::Corrupt(format!("statement line {record}: detail out of range")))?,
        provider_tx_id: row.try_get(2)?,
        reference: row.try_get(3)?,
        kind: row.try_get::<Option<String>, _>(4)?.as_deref().map(kind).transpose()?,
        currency: currency(&row.try_get::<String, _>(5)?)?,
        amount: from_minor(row.try_get(7)?, exponent),
        business_date: date(&row.try_get::<String, _>(8)?)?,
        occurred_at: row.try_get::<Option<i64>, _>(9)?.map(from_timestamp_nanos),
    })
}

const TOTALS_COLUMNS: &str = "t.record, t.business_date, t.currency, t.kind, t.item_count, t.exponent, t.amount_minor";

fn totals_line(row: &AnyRow) -> Result<TotalsLine> {
    let record = unsigned(row.try_get(0)?)?;
    let exponent = exponent_of(row.try_get(5)?, &|| format!("totals row {record}"))?;
    Ok(TotalsLine {
        record,
        business_date: date(&row.try_get::<String, _>(1)?)?,
        currency: currency(&row.try_get::<String, _>(2)?)?,
        kind: kind(&row.try_get::<String, _>(3)?)?,
        count: unsigned(row.try_get(4)?)?,
        amount: from_minor(row.try_get(6)?, exponent),
    })
}

/// A stored break as `record_run` compares it.
struct Existing {
    id: i64,
    status: BreakStatus,
    closed_kind: Option<ClosedKind>,
    closed_by: Option<String>,
    figures: BreakFigures,
}

/// What the run does with the stored break it found again.
enum Settle {
    /// Close (or keep closed) by this rule.
    ByRule(AutoRule),
    Reopen,
    Nothing,
}

impl Store {
    /// Stores a loaded statement with every line, totals row and balance, exactly as given.
    /// A second load of the same bytes, or of the same provider statement id, is refused with
    /// `StoreError::DuplicateStatement` naming the earlier load.
    pub async fn save_statement(&self, statement: &ProviderStatement, loaded_at: DateTime<Utc>) -> Result<i64> {
        let name = || format!("statement {:?} of {}", statement.source, statement.provider);
        for (what, len) in [("lines", statement.lines.len()), ("totals rows", statement.totals.len())] {
            if len > STATEMENT_LINES_MAX {
                return Err(StoreError::TooLarge {
                    what: format!("{}: {len} {what}", name()),
                    limit: STATEMENT_LINES_MAX,
                    hint: "split the statement",
                });
            }
        }
        exact_text(&statement.provider, &name)?;
        exact_text(&statement.source, &name)?;
        if let Some(id) = &statement.statement_id {
            exact_text(id, &name)?;
        }
        let from_date = date_text(statement.from_date, &name)?;
        let to_date = date_text(statement.to_date, &name)?;
        let loaded_at_ns = nanos(loaded_at)?;

        let mut connection = self.pool.acquire().await?;
        let mut tx = begin_locked(&mut connection, self.dialect, &[RECONCILE_WRITE_LOCK]).await?;
        let provider = provider_id(&mut tx, &statement.provider).await?;
        let earlier = sqlx::query(
            "SELECT id, source, loaded_at_ns, sha256 FROM statements
             WHERE provider_id = $1 AND (sha256 = $2 OR statement_id = $3) ORDER BY id LIMIT 1",
        )
        .bind(provider)
        .bind(statement.sha256.to_vec())
        .bind(statement.statement_id.as_deref())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = earlier {
            let by = if hash32(row.try_get(3)?)? == statement.sha256 {
                DuplicateBy::Sha256
            } else {
                DuplicateBy::StatementId(statement.statement_id.clone().unwrap_or_default())
            };
            return Err(StoreError::DuplicateStatement {
                provider: statement.provider.clone(),
                source_name: statement.source.clone(),
                by,
                earlier_id: row.try_get(0)?,
                earlier_source: row.try_get(1)?,
                earlier_loaded_at: from_timestamp_nanos(row.try_get(2)?),
            });
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO statements (provider_id, format, source, sha256, statement_id, from_date, to_date, line_count,
               totals_count, balance_count, loaded_at_ns) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             RETURNING id",
        )
        .bind(provider)
        .bind(statement.format.as_str())
        .bind(statement.source.as_str())
        .bind(statement.sha256.to_vec())
        .bind(statement.statement_id.as_deref())
        .bind(from_date)
        .bind(to_date)
        .bind(statement.lines.len() as i64)
        .bind(statement.totals.len() as i64)
        .bind(statement.balances.len() as i64)
        .bind(loaded_at_ns)
        .fetch_one(&mut *tx)
        .await?;

        for (chunk_index, chunk) in statement.lines.chunks(INSERT_ROWS_MAX).enumerate() {
            let sql = format!(
                "INSERT INTO statement_lines (statement_id, line_index, provider_id, record, detail, provider_tx_id,
                   reference, kind, currency, exponent, amount_minor, business_date, occurred_at_ns) VALUES {}",
                value_rows(self.dialect, 13, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for (offset, line) in chunk.iter().enumerate() {
                let what = || format!("{}, line {} (detail {})", name(), line.record, line.detail);
                for text in [&line.provider_tx_id, &line.reference].into_iter().flatten() {
                    exact_text(text, &what)?;
                }
                let exponent = common_exponent(&[line.amount], &what)?;
                query = query
                    .bind(id)
                    .bind((chunk_index * INSERT_ROWS_MAX + offset) as i64)
                    .bind(provider)
                    .bind(count(line.record, &what)?)
                    .bind(line.detail as i64)
                    .bind(line.provider_tx_id.clone())
                    .bind(line.reference.clone())
                    .bind(line.kind.map(|kind| kind.as_str()))
                    .bind(line.currency.as_str().to_string())
                    .bind(exponent as i64)
                    .bind(minor_at(line.amount, exponent, &what)?)
                    .bind(date_text(line.business_date, &what)?)
                    .bind(line.occurred_at.map(nanos).transpose()?);
            }
            query.execute(&mut *tx).await?;
        }
        for (chunk_index, chunk) in statement.totals.chunks(INSERT_ROWS_MAX).enumerate() {
            let sql = format!(
                "INSERT INTO statement_totals (statement_id, line_index, provider_id, record, business_date, currency,
                   kind, item_count, exponent, amount_minor) VALUES {}",
                value_rows(self.dialect, 10, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for (offset, row) in chunk.iter().enumerate() {
                let what = || format!("{}, totals row {}", name(), row.record);
                let exponent = common_exponent(&[row.amount], &what)?;
                query = query
                    .bind(id)
                    .bind((chunk_index * INSERT_ROWS_MAX + offset) as i64)
                    .bind(provider)
                    .bind(count(row.record, &what)?)
                    .bind(date_text(row.business_date, &what)?)
                    .bind(row.currency.as_str().to_string())
                    .bind(row.kind.as_str())
                    .bind(count(row.count, &what)?)
                    .bind(exponent as i64)
                    .bind(minor_at(row.amount, exponent, &what)?);
            }
            query.execute(&mut *tx).await?;
        }
        for (index, balance) in statement.balances.iter().enumerate() {
            let what = || format!("{}, balance {} of {}", name(), index + 1, balance.currency);
            let opening_exponent = common_exponent(&[balance.opening], &what)?;
            let closing_exponent = common_exponent(&[balance.closing], &what)?;
            sqlx::query(
                "INSERT INTO statement_balances (statement_id, line_index, currency, opening_exponent, opening_minor,
                   closing_exponent, closing_minor) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(index as i64)
            .bind(balance.currency.as_str().to_string())
            .bind(opening_exponent as i64)
            .bind(minor_at(balance.opening, opening_exponent, &what)?)
            .bind(closing_exponent as i64)
            .bind(minor_at(balance.closing, closing_exponent, &what)?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// A stored statement, read back whole.
    pub async fn statement(&self, id: i64) -> Result<Option<ProviderStatement>> {
        let Some(row) = sqlx::query(&format!(
            "SELECT {STATEMENT_COLUMNS} FROM statements s JOIN providers p ON p.id = s.provider_id WHERE s.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let info = statement_info(&row)?;
        let lines = sqlx::query(&format!(
            "SELECT {LINE_COLUMNS} FROM statement_lines l WHERE l.statement_id = $1 ORDER BY l.line_index"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(statement_line)
        .collect::<Result<Vec<_>>>()?;
        let totals = sqlx::query(&format!(
            "SELECT {TOTALS_COLUMNS} FROM statement_totals t WHERE t.statement_id = $1 ORDER BY t.line_index"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(totals_line)
        .collect::<Result<Vec<_>>>()?;
        let balances = sqlx::query(
            "SELECT currency, opening_exponent, opening_minor, closing_exponent, closing_minor
             FROM statement_balances WHERE statement_id = $1 ORDER BY line_index",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            let what = || format!("statement #{id} balance");
            Ok(StatementBalance {
                currency: currency(&row.try_get::<String, _>(0)?)?,
                opening: from_minor(row.try_get(2)?, exponent_of(row.try_get(1)?, &what)?),
                closing: from_minor(row.try_get(4)?, exponent_of(row.try_get(3)?, &what)?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
        Ok(Some(ProviderStatement {
            provider: info.provider,
            format: info.format,
            source: info.source,
            sha256: info.sha256,
            statement_id: info.statement_id,
            from_date: info.from_date,
            to_date: info.to_date,
            lines,
            totals,
            balances,
        }))
    }

    /// What the provider's loaded statements claim for one business day: the lines and
    /// totals rows dated that day (from all its statements, by statement then position),
    /// and the statements that cover the day or hold rows of it (by id). A statement that
    /// covers the day with no line of it claims that nothing happened.
    pub async fn statement_lines_for(
        &self,
        provider: &str,
        business_date: NaiveDate,
    ) -> Result<(Vec<StatementLine>, Vec<TotalsLine>, Vec<StatementInfo>)> {
        self.statement_lines_in(provider, business_date, None).await
    }

    /// Rows of one provider day's statements, each mapped by `map`; more than
    /// `STATEMENT_LINES_MAX` is refused, never cut short.
    async fn statement_day_rows<T>(
        &self,
        sql: &str,
        binds: [&str; 3],
        what: impl Fn() -> String,
        hint: &'static str,
        map: fn(&AnyRow) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut query = sqlx::query(sql);
        for bind in binds {
            query = query.bind(bind);
        }
        let mut rows = query.fetch(&self.pool);
        let mut out = Vec::new();
        while let Some(row) = rows.try_next().await? {
            if out.len() == STATEMENT_LINES_MAX {
                return Err(StoreError::TooLarge { what: what(), limit: STATEMENT_LINES_MAX, hint });
            }
            out.push(map(&row)?);
        }
        Ok(out)
    }

    /// As `statement_lines_for`, with the lines and totals rows taken only from statements
    /// of `format` when given (a run compares its configured format's statements only; the
    /// statements listed are still all those of the day).
    pub async fn statement_lines_in(
        &self,
        provider: &str,
        business_date: NaiveDate,
        format: Option<StatementFormat>,
    ) -> Result<(Vec<StatementLine>, Vec<TotalsLine>, Vec<StatementInfo>)> {
        let day = date_text(business_date, &|| format!("statement lines of {provider}"))?;
        let format = format.map(StatementFormat::as_str).unwrap_or_default();
        let lines = self
            .statement_day_rows(
                &format!(
                    "SELECT {LINE_COLUMNS} FROM statement_lines l JOIN providers p ON p.id = l.provider_id
                     WHERE p.name = $1 AND l.business_date = $2
                       AND ($3 = '' OR l.statement_id IN (SELECT id FROM statements WHERE format = $3))
                     ORDER BY l.statement_id, l.line_index"
                ),
                [provider, day.as_str(), format],
                || format!("statement lines of {provider} on {business_date}"),
                "the day's statements hold too many lines to reconcile at once",
                statement_line,
            )
            .await?;
        let totals = self
            .statement_day_rows(
                &format!(
                    "SELECT {TOTALS_COLUMNS} FROM statement_totals t JOIN providers p ON p.id = t.provider_id
                     WHERE p.name = $1 AND t.business_date = $2
                       AND ($3 = '' OR t.statement_id IN (SELECT id FROM statements WHERE format = $3))
                     ORDER BY t.statement_id, t.line_index"
                ),
                [provider, day.as_str(), format],
                || format!("statement totals rows of {provider} on {business_date}"),
                "the day's statements hold too many totals rows to reconcile at once",
                totals_line,
            )
            .await?;
        let infos = sqlx::query(&format!(
            "SELECT {STATEMENT_COLUMNS} FROM statements s JOIN providers p ON p.id = s.provider_id
             WHERE p.name = $1 AND ((s.from_date <= $2 AND s.to_date >= $2)
               OR s.id IN (SELECT statement_id FROM statement_lines WHERE provider_id = s.provider_id AND business_date = $2)
               OR s.id IN (SELECT statement_id FROM statement_totals WHERE provider_id = s.provider_id AND business_date = $2))
             ORDER BY s.id LIMIT $3"
        ))
        .bind(provider)
        .bind(day.as_str())
        .bind(STATEMENTS_PER_DAY_MAX as i64 + 1)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(statement_info)
        .collect::<Result<Vec<_>>>()?;
        if infos.len() > STATEMENTS_PER_DAY_MAX {
            return Err(StoreError::TooLarge {
                what: format!("statements of {provider} covering {business_date}"),
                limit: STATEMENTS_PER_DAY_MAX,
                hint: "statements of the same day are loaded over and over under new names",
            });
        }
        Ok((lines, totals, infos))
    }

    /// The provider's ledger transactions that occurred in `[from, to)` and had been received
    /// by `as_of`, in (occurred, seq) order. Transactions posted by approved adjustments are
    /// ours, not the provider's, and are left out. More than `LEDGER_ENTRIES_MAX` is refused.
    pub async fn ledger_entries(
        &self,
        provider: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        as_of: DateTime<Utc>,
    ) -> Result<Vec<LedgerEntry>> {
        let mut rows = sqlx::query(
            "SELECT t.seq, t.provider_tx_id, t.kind, t.currency, t.exponent, t.amount_minor, t.occurred_at_ns,
                    t.received_at_ns
             FROM transactions t
             WHERE t.provider_id = (SELECT id FROM providers WHERE name = $1)
               AND t.occurred_at_ns >= $2 AND t.occurred_at_ns < $3 AND t.received_at_ns <= $4
               AND NOT EXISTS (SELECT 1 FROM adjustments a WHERE a.tx_seq = t.seq)
             ORDER BY t.occurred_at_ns, t.seq",
        )
        .bind(provider)
        .bind(nanos(from)?)
        .bind(nanos(to)?)
        .bind(nanos(as_of)?)
        .fetch(&self.pool);
        let mut entries = Vec::new();
        while let Some(row) = rows.try_next().await? {
            if entries.len() == LEDGER_ENTRIES_MAX {
                return Err(StoreError::TooLarge {
                    what: format!("ledger transactions of {provider} in [{from}, {to})"),
                    limit: LEDGER_ENTRIES_MAX,
                    hint: "reconcile a shorter period",
                });
            }
            let seq: i64 = row.try_get(0)?;
            let exponent = exponent_of(row.try_get(4)?, &|| format!("transaction #{seq}"))?;
            entries.push(LedgerEntry {
                seq,
                provider_tx_id: row.try_get(1)?,
                kind: kind(&row.try_get::<String, _>(2)?)?,
                currency: currency(&row.try_get::<String, _>(3)?)?,
                amount: from_minor(row.try_get(5)?, exponent),
                occurred_at: from_timestamp_nanos(row.try_get(6)?),
                received_at: from_timestamp_nanos(row.try_get(7)?),
            });
        }
        Ok(entries)
    }

    /// Records a run and applies its outcome to the stored breaks of (provider, business
    /// date), in one database transaction (see the module documentation for the rules).
    pub async fn record_run(
        &self,
        provider: &str,
        period: &ReconPeriod,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Result<RunRecord> {
        let run_what = || format!("run of {provider} on {}", period.business_date);
        if outcome.breaks.len() > BREAKS_MAX {
            return Err(StoreError::TooLarge {
                what: format!("{}: {} breaks", run_what(), outcome.breaks.len()),
                limit: BREAKS_MAX,
                hint: "a statement that disagrees with everything is a configuration problem",
            });
        }
        let mut keys = HashSet::with_capacity(outcome.breaks.len());
        for found in &outcome.breaks {
            let what = || format!("{}, break {:?}", run_what(), found.key);
            if found.key.is_empty() {
                return Err(invalid(what(), "the key is empty"));
            }
            exact_text(&found.key, &what)?;
            if !keys.insert(found.key.as_str()) {
                return Err(invalid(what(), "the key appears twice in the outcome"));
            }
        }
        let day = date_text(period.business_date, &run_what)?;
        let now_ns = nanos(now)?;
        let mut currency_rows = Vec::with_capacity(outcome.currencies.len());
        for (code, totals) in &outcome.currencies {
            let what = || format!("{}, figures of {code}", run_what());
            let amounts = [totals.ledger_amount, totals.statement_amount, totals.matched_amount, totals.net_difference];
            let exponent = common_exponent(&amounts, &what)?;
            let mut minors = [0i64; 4];
            for (minor, amount) in minors.iter_mut().zip(amounts) {
                *minor = minor_at(amount, exponent, &what)?;
            }
            let counts = [totals.ledger_count, totals.statement_count, totals.matched_count];
            let mut stored_counts = [0i64; 3];
            for (stored, value) in stored_counts.iter_mut().zip(counts) {
                *stored = count(value, &what)?;
            }
            currency_rows.push((code, exponent, minors, stored_counts));
        }

        let mut connection = self.pool.acquire().await?;
        let mut tx = begin_locked(&mut connection, self.dialect, &[RECONCILE_WRITE_LOCK]).await?;
        let pid = provider_id(&mut tx, provider).await?;
        let matches = &outcome.matches;
        let run: i64 = sqlx::query_scalar(
            "INSERT INTO reconciliation_runs (provider_id, business_date, from_ns, to_ns, as_of_ns, recorded_at_ns,
               matched_by_id, matched_by_reference, matched_one_to_many, matched_many_to_one, matched_totals_rows,
               breaks_found, breaks_opened, breaks_closed, breaks_reopened, breaks_updated)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, 0, 0, 0) RETURNING id",
        )
        .bind(pid)
        .bind(day.as_str())
        .bind(nanos(period.from)?)
        .bind(nanos(period.to)?)
        .bind(nanos(period.as_of)?)
        .bind(now_ns)
        .bind(count(matches.by_id, &run_what)?)
        .bind(count(matches.by_reference, &run_what)?)
        .bind(count(matches.one_to_many, &run_what)?)
        .bind(count(matches.many_to_one, &run_what)?)
        .bind(count(matches.totals_rows, &run_what)?)
        .bind(outcome.breaks.len() as i64)
        .fetch_one(&mut *tx)
        .await?;
        for (code, exponent, minors, counts) in &currency_rows {
            sqlx::query(
                "INSERT INTO reconciliation_run_currencies (run_id, currency, exponent, ledger_count, ledger_amount_minor,
                   statement_count, statement_amount_minor, matched_count, matched_amount_minor, net_difference_minor)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(run)
            .bind(code.as_str().to_string())
            .bind(*exponent as i64)
            .bind(counts[0])
            .bind(minors[0])
            .bind(counts[1])
            .bind(minors[1])
            .bind(counts[2])
            .bind(minors[2])
            .bind(minors[3])
            .execute(&mut *tx)
            .await?;
        }

        // The stored breaks of this provider and day.
        let mut existing: HashMap<String, Existing> = HashMap::new();
        {
            let sql = format!(
                "SELECT {BREAK_COLUMNS} FROM breaks b JOIN providers p ON p.id = b.provider_id
                 WHERE b.provider_id = $1 AND b.business_date = $2"
            );
            let mut rows = sqlx::query(&sql).bind(pid).bind(day.as_str()).fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                if existing.len() == STORED_BREAKS_PER_DAY_MAX {
                    return Err(StoreError::TooLarge {
                        what: format!("stored breaks of {provider} on {}", period.business_date),
                        limit: STORED_BREAKS_PER_DAY_MAX,
                        hint: "the day's break keys are not stable between runs",
                    });
                }
                let stored = stored_break(&row)?;
                // Stored text is already printable; `of` leaves it as it is.
                let figures = BreakFigures::of(&stored.found);
                existing.insert(
                    stored.found.key.clone(),
                    Existing {
                        id: stored.id,
                        status: stored.status,
                        closed_kind: stored.closed_kind,
                        closed_by: stored.closed_by,
                        figures,
                    },
                );
            }
        }

        let mut record = RunRecord {
            id: run,
            provider: provider.to_string(),
            period: period.clone(),
            recorded_at: now,
            currencies: outcome.currencies.clone(),
            matches: *matches,
            breaks_found: outcome.breaks.len() as u64,
            breaks_opened: 0,
            breaks_closed: 0,
            breaks_reopened: 0,
            breaks_updated: 0,
        };
        let mut seen: Vec<i64> = Vec::with_capacity(outcome.breaks.len());
        for found in &outcome.breaks {
            let what = || format!("{}, break {:?}", run_what(), found.key);
            let row = break_row(found, &what)?;
            let figures = BreakFigures::of(found);
            let Some(stored) = existing.remove(&found.key) else {
                let (status, closed_at, closed_kind, closed_by, closed_reason) = match found.auto_closed_by {
                    Some(rule) => (
                        BreakStatus::Closed,
                        Some(now_ns),
                        Some(ClosedKind::Rule.as_str()),
                        Some(rule.as_str()),
                        Some(format!("closed by rule {rule} when run #{run} found it")),
                    ),
                    None => (BreakStatus::Open, None, None, None, None),
                };
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO breaks (provider_id, business_date, break_key, class, currency, kind, provider_tx_id,
                       statement_record, exponent, ledger_amount_minor, statement_amount_minor, difference_minor,
                       item_count, reason, status, opened_at_ns, first_run_id, last_run_id, last_seen_at_ns,
                       closed_at_ns, closed_kind, closed_by, closed_reason)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17, $16,
                       $18, $19, $20, $21)
                     RETURNING id",
                )
                .bind(pid)
                .bind(day.as_str())
                .bind(found.key.as_str())
                .bind(found.class.as_str())
                .bind(found.currency.map(|code| code.as_str().to_string()))
                .bind(found.kind.map(|kind| kind.as_str()))
                .bind(figures.provider_tx_id.clone())
                .bind(row.statement_record)
                .bind(row.exponent)
                .bind(row.ledger_minor)
                .bind(row.statement_minor)
                .bind(row.difference_minor)
                .bind(row.count)
                .bind(figures.reason.as_str())
                .bind(status.as_str())
                .bind(now_ns)
                .bind(run)
                .bind(closed_at)
                .bind(closed_kind)
                .bind(closed_by)
                .bind(closed_reason.clone())
                .fetch_one(&mut *tx)
                .await?;
                match found.auto_closed_by {
                    Some(_) => {
                        record.breaks_closed += 1;
                        let detail = format!("{}; {}", closed_reason.unwrap_or_default(), figures.reason);
                        audit(&mut tx, now_ns, AUDIT_ACTOR_RUN, "recorded_closed", AuditSubject::Break(id), &detail)
                            .await?;
                    }
                    None => {
                        record.breaks_opened += 1;
                        let detail = format!("run #{run} found it: {}", figures.reason);
                        audit(&mut tx, now_ns, AUDIT_ACTOR_RUN, "opened", AuditSubject::Break(id), &detail).await?;
                    }
                }
                continue;
            };
            seen.push(stored.id);
            if stored.figures != figures {
                record.breaks_updated += 1;
                sqlx::query(
                    "UPDATE breaks SET class = $2, currency = $3, kind = $4, provider_tx_id = $5, statement_record = $6,
                       exponent = $7, ledger_amount_minor = $8, statement_amount_minor = $9, difference_minor = $10,
                       item_count = $11, reason = $12 WHERE id = $1",
                )
                .bind(stored.id)
                .bind(found.class.as_str())
                .bind(found.currency.map(|code| code.as_str().to_string()))
                .bind(found.kind.map(|kind| kind.as_str()))
                .bind(figures.provider_tx_id.clone())
                .bind(row.statement_record)
                .bind(row.exponent)
                .bind(row.ledger_minor)
                .bind(row.statement_minor)
                .bind(row.difference_minor)
                .bind(row.count)
                .bind(figures.reason.as_str())
                .execute(&mut *tx)
                .await?;
                let changes = figures.changes_from(&stored.figures);
                let detail = format!("run #{run}: {changes}");
                audit(&mut tx, now_ns, AUDIT_ACTOR_RUN, "updated", AuditSubject::Break(stored.id), &detail).await?;
                if stored.status == BreakStatus::PendingAdjustment && found.auto_closed_by.is_none() {
                    let why = format!("break #{} changed in run #{run} ({changes})", stored.id);
                    withdraw_pending(&mut tx, stored.id, &why, now_ns).await?;
                    sqlx::query("UPDATE breaks SET status = 'open' WHERE id = $1")
                        .bind(stored.id)
                        .execute(&mut *tx)
                        .await?;
                    let detail = format!("pending adjustment withdrawn: {why}; propose again for the new difference");
                    let subject = AuditSubject::Break(stored.id);
                    audit(&mut tx, now_ns, AUDIT_ACTOR_RUN, "adjustment_withdrawn", subject, &detail).await?;
                }
            }
            let settle = match (stored.status, stored.closed_kind, found.auto_closed_by) {
                (BreakStatus::Open | BreakStatus::PendingAdjustment, _, Some(rule)) => Settle::ByRule(rule),
                (BreakStatus::Closed, Some(ClosedKind::Rule), None) => Settle::Reopen,
                _ => Settle::Nothing,
            };
            match settle {
                Settle::ByRule(rule) => {
                    record.breaks_closed += 1;
                    let reason = format!("closed by rule {rule} in run #{run}");
                    close_by_rule(&mut tx, stored.id, stored.status, rule, &reason, now_ns).await?;
                }
                Settle::Reopen => {
                    record.breaks_reopened += 1;
                    sqlx::query(
                        "UPDATE breaks SET status = 'open', closed_at_ns = NULL, closed_kind = NULL, closed_by = NULL,
                           closed_reason = NULL WHERE id = $1",
                    )
                    .bind(stored.id)
                    .execute(&mut *tx)
                    .await?;
                    let detail = format!(
                        "run #{run} finds it again (it was closed by {}): {}",
                        stored.closed_by.unwrap_or_default(),
                        figures.reason
                    );
                    audit(&mut tx, now_ns, AUDIT_ACTOR_RUN, "reopened", AuditSubject::Break(stored.id), &detail)
                        .await?;
                }
                Settle::Nothing => {}
            }
        }
        for chunk in seen.chunks(IDS_PER_STATEMENT_MAX) {
            let sql = format!(
                "UPDATE breaks SET last_run_id = {}, last_seen_at_ns = {} WHERE id IN ({})",
                placeholders(self.dialect, 1, 1),
                placeholders(self.dialect, 2, 1),
                placeholders(self.dialect, 3, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(run).bind(now_ns);
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(&mut *tx).await?;
        }
        // Stored breaks this run no longer finds.
        let mut gone: Vec<Existing> = existing.into_values().collect();
        gone.sort_unstable_by_key(|stored| stored.id);
        for stored in gone {
            if stored.status == BreakStatus::Closed {
                continue;
            }
            record.breaks_closed += 1;
            let rule = AutoRule::ResolvedOnRecheck;
            let reason = format!("run #{run} no longer finds it");
            close_by_rule(&mut tx, stored.id, stored.status, rule, &reason, now_ns).await?;
        }
        sqlx::query(
            "UPDATE reconciliation_runs SET breaks_opened = $2, breaks_closed = $3, breaks_reopened = $4,
               breaks_updated = $5 WHERE id = $1",
        )
        .bind(run)
        .bind(record.breaks_opened as i64)
        .bind(record.breaks_closed as i64)
        .bind(record.breaks_reopened as i64)
        .bind(record.breaks_updated as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    /// The latest recorded run of the provider (a run that failed recorded nothing).
    pub async fn last_successful_run(&self, provider: &str) -> Result<Option<RunRecord>> {
        let Some(row) = sqlx::query(
            "SELECT r.id, p.name, r.business_date, r.from_ns, r.to_ns, r.as_of_ns, r.recorded_at_ns, r.matched_by_id,
                    r.matched_by_reference, r.matched_one_to_many, r.matched_many_to_one, r.matched_totals_rows,
                    r.breaks_found, r.breaks_opened, r.breaks_closed, r.breaks_reopened, r.breaks_updated
             FROM reconciliation_runs r JOIN providers p ON p.id = r.provider_id
             WHERE p.name = $1 ORDER BY r.id DESC LIMIT 1",
        )
        .bind(provider)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let id: i64 = row.try_get(0)?;
        let mut currencies = BTreeMap::new();
        for currency_row in sqlx::query(
            "SELECT currency, exponent, ledger_count, ledger_amount_minor, statement_count, statement_amount_minor,
                    matched_count, matched_amount_minor, net_difference_minor
             FROM reconciliation_run_currencies WHERE run_id = $1 ORDER BY currency",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        {
            let exponent = exponent_of(currency_row.try_get(1)?, &|| format!("run #{id}"))?;
            let amount = |index: usize| -> Result<Decimal> { Ok(from_minor(currency_row.try_get(index)?, exponent)) };
            currencies.insert(
                currency(&currency_row.try_get::<String, _>(0)?)?,
                CurrencyTotals {
                    ledger_count: unsigned(currency_row.try_get(2)?)?,
                    ledger_amount: amount(3)?,
                    statement_count: unsigned(currency_row.try_get(4)?)?,
                    statement_amount: amount(5)?,
                    matched_count: unsigned(currency_row.try_get(6)?)?,
                    matched_amount: amount(7)?,
                    net_difference: amount(8)?,
                },
            );
        }
        Ok(Some(RunRecord {
            id,
            provider: row.try_get(1)?,
            period: ReconPeriod {
                business_date: date(&row.try_get::<String, _>(2)?)?,
                from: from_timestamp_nanos(row.try_get(3)?),
                to: from_timestamp_nanos(row.try_get(4)?),
                as_of: from_timestamp_nanos(row.try_get(5)?),
            },
            recorded_at: from_timestamp_nanos(row.try_get(6)?),
            currencies,
            matches: MatchCounts {
                by_id: unsigned(row.try_get(7)?)?,
                by_reference: unsigned(row.try_get(8)?)?,
                one_to_many: unsigned(row.try_get(9)?)?,
                many_to_one: unsigned(row.try_get(10)?)?,
                totals_rows: unsigned(row.try_get(11)?)?,
            },
            breaks_found: unsigned(row.try_get(12)?)?,
            breaks_opened: unsigned(row.try_get(13)?)?,
            breaks_closed: unsigned(row.try_get(14)?)?,
            breaks_reopened: unsigned(row.try_get(15)?)?,
            breaks_updated: unsigned(row.try_get(16)?)?,
        }))
    }

    /// Stored breaks matching the filter, by id, at most `LIST_ROWS_MAX` after `after_id`.
    pub async fn breaks(&self, filter: &BreakFilter) -> Result<Vec<StoredBreak>> {
        let day = filter
            .business_date
            .map(|day| date_text(day, &|| "break filter".to_string()))
            .transpose()?
            .unwrap_or_default();
        let rows = sqlx::query(&format!(
            "SELECT {BREAK_COLUMNS} FROM breaks b JOIN providers p ON p.id = b.provider_id
             WHERE ($1 = '' OR p.name = $1) AND ($2 = '' OR b.business_date = $2) AND ($3 = '' OR b.status = $3)
               AND ($4 = '' OR b.class = $4) AND b.id > $5
             ORDER BY b.id LIMIT $6"
        ))
        .bind(filter.provider.clone().unwrap_or_default())
        .bind(day)
        .bind(filter.status.map(BreakStatus::as_str).unwrap_or_default())
        .bind(filter.class.map(BreakClass::as_str).unwrap_or_default())
        .bind(filter.after_id)
        .bind(LIST_ROWS_MAX)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_break).collect()
    }

    /// Unsettled breaks (open or pending adjustment) per provider and class, with their
    /// differences per currency and the oldest one's opening time. Ordered by provider, class.
    pub async fn open_break_stats(&self) -> Result<Vec<ProviderBreakStats>> {
        let mut stats: BTreeMap<(String, BreakClass), ProviderBreakStats> = BTreeMap::new();
        let mut rows = sqlx::query(
            "SELECT p.name, b.class, b.currency, b.exponent, b.difference_minor, b.opened_at_ns, b.id
             FROM breaks b JOIN providers p ON p.id = b.provider_id
             WHERE b.status IN ('open', 'pending_adjustment')",
        )
        .fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            let provider: String = row.try_get(0)?;
            let class_text: String = row.try_get(1)?;
            let class: BreakClass =
                class_text.parse().map_err(|_| StoreError::Corrupt(format!("break class {class_text:?}")))?;
            let id: i64 = row.try_get(6)?;
            let difference = from_minor(row.try_get(4)?, exponent_of(row.try_get(3)?, &|| format!("break #{id}"))?);
            let opened_at = from_timestamp_nanos(row.try_get(5)?);
            let entry = stats.entry((provider.clone(), class)).or_insert_with(|| ProviderBreakStats {
                provider,
                class,
                open_count: 0,
                open_difference: BTreeMap::new(),
                open_difference_abs: BTreeMap::new(),
                oldest_open_at: opened_at,
            });
            entry.open_count += 1;
            entry.oldest_open_at = entry.oldest_open_at.min(opened_at);
            if let Some(code) = row.try_get::<Option<String>, _>(2)? {
                let code = currency(&code)?;
                let overflow = || StoreError::Corrupt(format!("open differences in {code} overflow"));
                let net = entry.open_difference.entry(code).or_default();
                *net = net.checked_add(difference).ok_or_else(overflow)?;
                let abs = entry.open_difference_abs.entry(code).or_default();
                *abs = abs.checked_add(difference.abs()).ok_or_else(overflow)?;
            }
        }
        Ok(stats.into_values().collect())
    }

    /// Every time a break became unsettled (opened, reopened) or settled (closed), with its
    /// provider, in time order: the break state as it was known over time, for replaying
    /// into feature extraction. Breaks stored closed at once never count as open. More
    /// than `BREAK_EVENTS_MAX` is refused.
    pub async fn break_events(&self) -> Result<Vec<BreakEvent>> {
        let mut rows = sqlx::query(
            "SELECT p.name, a.at_ns, a.action, b.id FROM audit_log a
             JOIN breaks b ON a.subject_kind = 'break' AND b.id = a.subject_id
             JOIN providers p ON p.id = b.provider_id
             WHERE a.action IN ('opened', 'reopened', 'closed')
             ORDER BY a.at_ns, a.id",
        )
        .fetch(&self.pool);
        let mut events = Vec::new();
        while let Some(row) = rows.try_next().await? {
            if events.len() == BREAK_EVENTS_MAX {
                return Err(StoreError::TooLarge {
                    what: "break events".to_string(),
                    limit: BREAK_EVENTS_MAX,
                    hint: "too many to replay at once",
                });
            }
            events.push(BreakEvent {
                provider: row.try_get(0)?,
                at: from_timestamp_nanos(row.try_get(1)?),
                opened: row.try_get::<String, _>(2)? != "closed",
                break_id: row.try_get(3)?,
            });
        }
        Ok(events)
    }

    /// Audit rows, oldest first, of one subject or of all: at most `LIST_ROWS_MAX` with
    /// `id > after_id` (page on with the last id).
    pub async fn audit_log(&self, subject: Option<AuditSubject>, after_id: i64) -> Result<Vec<AuditEntry>> {
        let (kind, id) = subject.map_or(("", 0), AuditSubject::parts);
        let rows = sqlx::query(
            "SELECT id, at_ns, actor, action, subject_kind, subject_id, detail FROM audit_log
             WHERE ($1 = '' OR (subject_kind = $1 AND subject_id = $2)) AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(kind)
        .bind(id)
        .bind(after_id)
        .bind(LIST_ROWS_MAX)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get(4)?;
                let subject_id: i64 = row.try_get(5)?;
                Ok(AuditEntry {
                    id: row.try_get(0)?,
                    at: from_timestamp_nanos(row.try_get(1)?),
                    actor: row.try_get(2)?,
                    action: row.try_get(3)?,
                    subject: AuditSubject::from_parts(&kind, subject_id)
                        .ok_or_else(|| StoreError::Corrupt(format!("audit subject {kind:?}")))?,
                    detail: row.try_get(6)?,
                })
            })
            .collect()
    }

    pub async fn adjustment(&self, id: i64) -> Result<Option<StoredAdjustment>> {
        let row = sqlx::query(&format!("SELECT {ADJUSTMENT_COLUMNS} FROM adjustments a WHERE a.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(stored_adjustment).transpose()
    }

    /// The maker's step: proposes an adjustment for an open break, which then waits for a
    /// second person (`approve_adjustment`). One pending proposal per break; the reason is
    /// required; the amount must be non-zero and exact in the currency's minor units (the
    /// exponent the ledger stores the currency with, else ISO 4217), in the break's currency
    /// when it has one.
    pub async fn propose_adjustment(
        &self,
        break_id: i64,
        proposal: &AdjustmentProposal,
        proposed_by: &str,
        now: DateTime<Utc>,
    ) -> Result<i64> {
        let what = || format!("adjustment for break #{break_id}");
        let proposed_by = person(proposed_by, "proposed_by", &what)?;
        let reason = note(&proposal.reason, "reason", &what)?;
        if proposal.amount.is_zero() {
            return Err(invalid(format!("{}, field amount", what()), "an adjustment of zero changes nothing"));
        }
        let now_ns = nanos(now)?;
        let mut connection = self.pool.acquire().await?;
        let mut tx = begin_locked(&mut connection, self.dialect, &[RECONCILE_WRITE_LOCK]).await?;
        let stored = locked_break(&mut tx, break_id).await?;
        match stored.status {
            BreakStatus::Open => {}
            BreakStatus::PendingAdjustment => {
                let adjustment_id: i64 =
                    sqlx::query_scalar("SELECT id FROM adjustments WHERE break_id = $1 AND status = 'pending'")
                        .bind(break_id)
                        .fetch_one(&mut *tx)
                        .await?;
                return Err(StoreError::AdjustmentAlreadyPending { break_id, adjustment_id });
            }
            status => return Err(StoreError::BreakNotOpen { break_id, status }),
        }
        if let Some(code) = stored.found.currency {
            if code != proposal.currency {
                return Err(invalid(
                    format!("{}, field currency", what()),
                    format!("the break is in {code}, the adjustment in {}", proposal.currency),
                ));
            }
        }
        let stored_exponent: Option<i64> = sqlx::query_scalar("SELECT exponent FROM currency_units WHERE code = $1")
            .bind(proposal.currency.as_str().to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let exponent = match stored_exponent {
            Some(exponent) => exponent_of(exponent, &|| format!("currency {}", proposal.currency))?,
            None => Currencies::iso().exponent(proposal.currency).ok_or_else(|| {
                invalid(
                    format!("{}, field currency", what()),
                    format!("{} is neither in the ledger nor an ISO 4217 currency", proposal.currency),
                )
            })?,
        };
        // The transaction an approval will post must pass validation now.
        let checked = adjustment_transaction(&stored.provider, 0, proposal, exponent, now)?;
        sqlx::query("UPDATE breaks SET status = 'pending_adjustment' WHERE id = $1")
            .bind(break_id)
            .execute(&mut *tx)
            .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO adjustments (break_id, currency, exponent, amount_minor, account, reason, status, proposed_by,
               proposed_at_ns) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8) RETURNING id",
        )
        .bind(break_id)
        .bind(proposal.currency.as_str().to_string())
        .bind(exponent as i64)
        .bind(checked.amount_minor)
        .bind(proposal.account.as_str())
        .bind(reason)
        .bind(proposed_by)
        .bind(now_ns)
        .fetch_one(&mut *tx)
        .await?;
        let detail = format!(
            "{} {} to account {} for break #{break_id}: {reason}",
            proposal.amount, proposal.currency, proposal.account
        );
        audit(&mut tx, now_ns, proposed_by, "proposed", AuditSubject::Adjustment(id), &detail).await?;
        let detail = format!("adjustment #{id} proposed, waiting for approval: {reason}");
        audit(&mut tx, now_ns, proposed_by, "adjustment_pending", AuditSubject::Break(break_id), &detail).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The checker's step: approves a pending adjustment. Refused when the approver proposed
    /// it (`SelfApproval`, names compared ignoring case and surrounding space) or it is not
    /// pending. In the same database transaction it posts a `manual_adjustment`
    /// (`adjustment-<id>`, through the ledger writer's posting path, so postings balance and
    /// `verify` holds), closes the break (closed by the approver) and writes the audit rows.
    pub async fn approve_adjustment(&self, id: i64, approved_by: &str, now: DateTime<Utc>) -> Result<StoredAdjustment> {
        let what = || format!("approval of adjustment #{id}");
        let approved_by = person(approved_by, "approved_by", &what)?;
        let now_ns = nanos(now)?;
        let mut connection = self.pool.acquire().await?;
        let mut tx = begin_locked(&mut connection, self.dialect, &[RECONCILE_WRITE_LOCK, LEDGER_WRITE_LOCK]).await?;
        let adjustment = locked_adjustment(&mut tx, id).await?;
        if adjustment.status != AdjustmentStatus::Pending {
            return Err(StoreError::AdjustmentNotPending { adjustment_id: id, status: adjustment.status });
        }
        if same_person(&adjustment.proposed_by, approved_by) {
            return Err(StoreError::SelfApproval { adjustment_id: id, person: approved_by.to_string() });
        }
        let stored = locked_break(&mut tx, adjustment.break_id).await?;
        let exponent: i64 =
            sqlx::query_scalar("SELECT exponent FROM adjustments WHERE id = $1").bind(id).fetch_one(&mut *tx).await?;
        let exponent = exponent_of(exponent, &what)?;
        let valid = adjustment_transaction(&stored.provider, id, &adjustment.proposal, exponent, now)?;
        let raw = format!(
            "adjustment {id} of break {}: {} {} to {}, proposed by {}, approved by {approved_by}: {}",
            adjustment.break_id,
            adjustment.proposal.amount,
            adjustment.proposal.currency,
            adjustment.proposal.account,
            adjustment.proposed_by,
            adjustment.proposal.reason
        )
        .into_bytes();
        let origin = Origin { source: Arc::from("adjustment"), record: id as u64, raw, context: Arc::from(&b""[..]) };
        let (mut provider_ids, mut account_ids, mut exponents) = (HashMap::new(), HashMap::new(), HashMap::new());
        let caches = WriteCaches {
            provider_ids: &mut provider_ids,
            account_ids: &mut account_ids,
            exponents: &mut exponents,
            account_cache_max: super::writer::ACCOUNT_CACHE_MAX,
        };
        let provider_tx_id = valid.tx.provider_tx_id.clone();
        let outcomes = write_items(&mut tx, self.dialect, caches, &[Item::Transaction { valid, origin }], now).await?;
        let seq = match outcomes.as_slice() {
            [super::writer::Outcome::Accepted { seq }] => *seq,
            other => {
                return Err(StoreError::Invariant(format!(
                    "posting {provider_tx_id} for adjustment #{id} gave {other:?} instead of a new transaction"
                )))
            }
        };
        sqlx::query(
            "UPDATE adjustments SET status = 'approved', decided_by = $2, decided_at_ns = $3, tx_seq = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(approved_by)
        .bind(now_ns)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        let closed_reason = format!("adjusted by adjustment {id}");
        sqlx::query(
            "UPDATE breaks SET status = 'closed', closed_at_ns = $2, closed_kind = 'adjustment', closed_by = $3,
               closed_reason = $4 WHERE id = $1",
        )
        .bind(adjustment.break_id)
        .bind(now_ns)
        .bind(approved_by)
        .bind(closed_reason.as_str())
        .execute(&mut *tx)
        .await?;
        let detail = format!(
            "posted as ledger transaction #{seq} ({provider_tx_id}); proposed by {}: {}",
            adjustment.proposed_by, adjustment.proposal.reason
        );
        audit(&mut tx, now_ns, approved_by, "approved", AuditSubject::Adjustment(id), &detail).await?;
        audit(&mut tx, now_ns, approved_by, "closed", AuditSubject::Break(adjustment.break_id), &closed_reason).await?;
        tx.commit().await?;
        Ok(StoredAdjustment {
            status: AdjustmentStatus::Approved,
            decided_by: Some(approved_by.to_string()),
            decided_at: Some(now),
            tx_seq: Some(seq),
            ..adjustment
        })
    }

    /// Rejects a pending adjustment (the note says why); its break is open again.
    pub async fn reject_adjustment(&self, id: i64, by: &str, note_text: &str, now: DateTime<Utc>) -> Result<()> {
        let what = || format!("rejection of adjustment #{id}");
        let by = person(by, "by", &what)?;
        let note_text = note(note_text, "note", &what)?;
        let now_ns = nanos(now)?;
        let mut connection = self.pool.acquire().await?;
        let mut tx = begin_locked(&mut connection, self.dialect, &[RECONCILE_WRITE_LOCK]).await?;
        let adjustment = locked_adjustment(&mut tx, id).await?;
        if adjustment.status != AdjustmentStatus::Pending {
            return Err(StoreError::AdjustmentNotPending { adjustment_id: id, status: adjustment.status });
        }
        close_adjustment(&mut tx, id, AdjustmentStatus::Rejected, by, now_ns, note_text).await?;
        sqlx::query("UPDATE breaks SET status = 'open' WHERE id = $1 AND status = 'pending_adjustment'")
            .bind(adjustment.break_id)
            .execute(&mut *tx)
            .await?;
        audit(&mut tx, now_ns, by, "rejected", AuditSubject::Adjustment(id), note_text).await?;
        let detail = format!("adjustment #{id} rejected: {note_text}");
        audit(&mut tx, now_ns, by, "adjustment_rejected", AuditSubject::Break(adjustment.break_id), &detail).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Closes an unsettled break by a written rule; a pending adjustment of it is withdrawn
/// (the difference it was to correct has resolved itself).
async fn close_by_rule(
    tx: &mut sqlx::AnyConnection,
    break_id: i64,
    status: BreakStatus,
    rule: AutoRule,
    reason: &str,
    now_ns: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE breaks SET status = 'closed', closed_at_ns = $2, closed_kind = 'rule', closed_by = $3,
           closed_reason = $4 WHERE id = $1",
    )
    .bind(break_id)
    .bind(now_ns)
    .bind(rule.as_str())
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    if status == BreakStatus::PendingAdjustment {
        let why = format!("break #{break_id} was closed by rule {rule} ({reason})");
        withdraw_pending(tx, break_id, &why, now_ns).await?;
    }
    let detail = format!("closed by rule {rule}: {reason}");
    audit(tx, now_ns, AUDIT_ACTOR_RUN, "closed", AuditSubject::Break(break_id), &detail).await
}

/// Records the decision that ends a pending adjustment without posting it (rejected by a
/// person, or withdrawn by a run), with who decided, when and why.
async fn close_adjustment(
    tx: &mut sqlx::AnyConnection,
    id: i64,
    status: AdjustmentStatus,
    by: &str,
    now_ns: i64,
    why: &str,
) -> Result<()> {
    debug_assert!(matches!(status, AdjustmentStatus::Rejected | AdjustmentStatus::Withdrawn));
    sqlx::query(
        "UPDATE adjustments SET status = $2, decided_by = $3, decided_at_ns = $4, decision_note = $5 WHERE id = $1",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(by)
    .bind(now_ns)
    .bind(why)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Withdraws the pending adjustments of a break (audited, `why` as the decision note): the
/// difference they were to correct is gone or has changed.
async fn withdraw_pending(tx: &mut sqlx::AnyConnection, break_id: i64, why: &str, now_ns: i64) -> Result<()> {
    let pending: Vec<i64> = sqlx::query_scalar("SELECT id FROM adjustments WHERE break_id = $1 AND status = 'pending'")
        .bind(break_id)
        .fetch_all(&mut *tx)
        .await?;
    for adjustment in pending {
        close_adjustment(tx, adjustment, AdjustmentStatus::Withdrawn, AUDIT_ACTOR_RUN, now_ns, why).await?;
        let detail = format!("withdrawn: {why}");
        audit(tx, now_ns, AUDIT_ACTOR_RUN, "withdrawn", AuditSubject::Adjustment(adjustment), &detail).await?;
    }
    Ok(())
}

async fn locked_break(tx: &mut sqlx::AnyConnection, break_id: i64) -> Result<StoredBreak> {
    let row = sqlx::query(&format!(
        "SELECT {BREAK_COLUMNS} FROM breaks b JOIN providers p ON p.id = b.provider_id WHERE b.id = $1"
    ))
    .bind(break_id)
    .fetch_optional(&mut *tx)
    .await?;
    row.as_ref().map(stored_break).transpose()?.ok_or(StoreError::NotFound { what: "break", id: break_id })
}

async fn locked_adjustment(tx: &mut sqlx::AnyConnection, id: i64) -> Result<StoredAdjustment> {
    let row = sqlx::query(&format!("SELECT {ADJUSTMENT_COLUMNS} FROM adjustments a WHERE a.id = $1"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    row.as_ref().map(stored_adjustment).transpose()?.ok_or(StoreError::NotFound { what: "adjustment", id })
}

/// A person's name for the maker-checker log: required, trimmed, no control characters.
fn person<'t>(name: &'t str, field: &str, what: &dyn Fn() -> String) -> Result<&'t str> {
    let name = name.trim();
    if name.is_empty() {
        return Err(invalid(format!("{}, field {field}", what()), "a person's name is required"));
    }
    if name.chars().any(char::is_control) || name.len() > crate::model::ID_LENGTH_MAX {
        return Err(invalid(
            format!("{}, field {field}", what()),
            format!("a name is printable and at most {} bytes", crate::model::ID_LENGTH_MAX),
        ));
    }
    Ok(name)
}

/// Whether two names are the same person's: ignoring case, surrounding space and the
/// characters that print as nothing, so that `alice<U+200B>` (which reads as `alice` in the
/// audit log) cannot approve what `alice` proposed. Such characters stay allowed in names
/// (a zero-width non-joiner is part of some Persian and Indic spellings).
fn same_person(a: &str, b: &str) -> bool {
    let key =
        |name: &str| -> String { name.chars().filter(|&c| !invisible(c)).collect::<String>().trim().to_lowercase() };
    key(a) == key(b)
}

/// A character that prints as nothing (zero-width, joiners, direction marks, BOM).
fn invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}')
}

/// A reason or note: required (non-blank), at most `NOTE_LENGTH_MAX` bytes, no NUL.
fn note<'t>(text: &'t str, field: &str, what: &dyn Fn() -> String) -> Result<&'t str> {
    let text = text.trim();
    let field_what = || format!("{}, field {field}", what());
    if text.is_empty() {
        return Err(invalid(field_what(), "a reason is required"));
    }
    if text.len() > NOTE_LENGTH_MAX {
        return Err(invalid(field_what(), format!("{} bytes, more than {NOTE_LENGTH_MAX}", text.len())));
    }
    exact_text(text, &field_what)
}

/// The ledger transaction an adjustment posts, validated like any provider's.
fn adjustment_transaction(
    provider: &str,
    id: i64,
    proposal: &AdjustmentProposal,
    exponent: u32,
    now: DateTime<Utc>,
) -> Result<crate::validate::ValidTransaction> {
    let provider_tx_id = format!("adjustment-{id}");
    let tx = Transaction {
        provider: provider.to_string(),
        provider_tx_id: provider_tx_id.clone(),
        kind: crate::model::Kind::ManualAdjustment,
        account: proposal.account.clone(),
        game_id: None,
        round_id: None,
        session_id: None,
        currency: proposal.currency,
        amount: proposal.amount,
        occurred_at: now,
        received_at: now,
        original_tx_id: None,
        raw_sha256: sha256(provider_tx_id.as_bytes()),
    };
    let currencies = Currencies::with_extra([(proposal.currency.as_str(), exponent)])
        .map_err(|error| invalid(format!("adjustment #{id}, field currency"), error.to_string()))?;
    let rules = Rules { currencies: &currencies, allowed_currencies: None, future_tolerance: Duration::zero() };
    validate(tx, &rules, now).map_err(|rejection| {
        invalid(
            format!("adjustment #{id}, field {}", rejection.field.as_deref().unwrap_or("?")),
            rejection.message.to_string(),
        )
    })
}
