//! The values reconciliation works on: what a provider's statement claims, what our
//! ledger holds, and the breaks between them. Plain data shared by statement intake
//! (`reconcile::intake`), the matching engine (`reconcile::matching`), the store and the
//! CLI, so each can be built and tested alone.
//!
//! Amounts follow the ledger's convention: a non-negative magnitude whose direction is
//! given by `kind` (a `manual_adjustment` may be signed). Every comparison is exact
//! `Decimal` arithmetic; nothing here is ever a float.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::model::Kind;
use crate::money::CurrencyCode;

/// The most lines (or totals rows) one statement may hold. A statement beyond it is
/// refused at intake rather than read into memory without bound.
pub const STATEMENT_LINES_MAX: usize = 5_000_000;

/// The most ledger transactions one reconciliation run takes for one provider and period
/// (a busy slots provider sends about 9 million a day). An entry takes about 100 bytes in a
/// run, so a run at the limit holds about 2 GB.
pub const LEDGER_ENTRIES_MAX: usize = 20_000_000;

/// The most breaks one run reports; beyond it the run fails with a clear error (a statement
/// that disagrees with everything is a configuration problem, not millions of breaks).
pub const BREAKS_MAX: usize = 100_000;

/// The statement formats intake understands; each is one adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatementFormat {
    /// End-of-day totals per business date, currency and kind (count and exact sum).
    Totals,
    /// The provider's transaction listing, one line per transaction.
    Listing,
    /// An ISO 20022 camt.053 bank-to-customer statement (XML).
    Camt053,
}

impl StatementFormat {
    pub const ALL: [StatementFormat; 3] = [StatementFormat::Totals, StatementFormat::Listing, StatementFormat::Camt053];

    pub fn as_str(self) -> &'static str {
        match self {
            StatementFormat::Totals => "totals",
            StatementFormat::Listing => "listing",
            StatementFormat::Camt053 => "camt053",
        }
    }
}

impl fmt::Display for StatementFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StatementFormat {
    type Err = ();
    fn from_str(text: &str) -> Result<StatementFormat, ()> {
        StatementFormat::ALL.into_iter().find(|format| format.as_str() == text).ok_or(())
    }
}

/// One transaction (or booking) as the provider's statement claims it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementLine {
    /// 1-based position in the source: line number (CSV) or entry number (camt.053).
    pub record: u64,
    /// 1-based transaction-detail number inside a camt.053 entry; 0 for a whole line/entry.
    pub detail: u32,
    /// The provider's transaction id when the line carries it (a listing always does).
    pub provider_tx_id: Option<String>,
    /// Another reference: the id we sent that the processor echoes (camt.053 `EndToEndId`),
    /// or a settlement batch reference (`AcctSvcrRef`, `PmtInfId`).
    pub reference: Option<String>,
    /// The kind, when the statement says (a bank credit/debit maps to a configured kind).
    pub kind: Option<Kind>,
    pub currency: CurrencyCode,
    /// Non-negative magnitude (direction by `kind`), exactly as stated.
    pub amount: Decimal,
    /// The provider's business (booking) date for this line.
    pub business_date: NaiveDate,
    /// When the provider says the transaction happened, when the statement carries it.
    pub occurred_at: Option<DateTime<Utc>>,
}

/// One row of an end-of-day totals statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TotalsLine {
    pub record: u64,
    pub business_date: NaiveDate,
    pub currency: CurrencyCode,
    pub kind: Kind,
    pub count: u64,
    /// The exact sum of the magnitudes the provider claims.
    pub amount: Decimal,
}

/// An opening or closing balance a statement declares (camt.053 `Bal`), signed: positive
/// is a credit balance in the account holder's favour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementBalance {
    pub currency: CurrencyCode,
    pub opening: Decimal,
    pub closing: Decimal,
}

/// A provider statement after intake: decoded, integrity-checked, with its checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderStatement {
    pub provider: String,
    pub format: StatementFormat,
    /// File name (or request id) it came from.
    pub source: String,
    /// sha256 of the exact bytes; a second load of the same bytes is refused.
    pub sha256: [u8; 32],
    /// The provider's own statement id, when the format has one (camt.053 `Stmt/Id`);
    /// a second statement with the same id is refused as a duplicate.
    pub statement_id: Option<String>,
    /// First and last business dates the statement covers (inclusive).
    pub from_date: NaiveDate,
    pub to_date: NaiveDate,
    /// Line by line (listing, camt.053); empty for a totals statement.
    pub lines: Vec<StatementLine>,
    /// Totals rows; empty for line-by-line statements.
    pub totals: Vec<TotalsLine>,
    /// Declared balances (camt.053), checked against the entries at intake.
    pub balances: Vec<StatementBalance>,
}

/// A ledger transaction as reconciliation sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The ledger's ingestion sequence number.
    pub seq: i64,
    pub provider_tx_id: String,
    pub kind: Kind,
    pub currency: CurrencyCode,
    pub amount: Decimal,
    pub occurred_at: DateTime<Utc>,
    /// When we received it: late delivery is judged from this.
    pub received_at: DateTime<Utc>,
}

/// The period under reconciliation: one provider business day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconPeriod {
    pub business_date: NaiveDate,
    /// `[from, to)` in UTC: the business day in the provider's timezone.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The ledger as known at this instant is reconciled: transactions received later are
    /// not in it yet.
    pub as_of: DateTime<Utc>,
}

/// The written rules of matching and automatic handling, per provider
/// (`[providers.reconciliation]` in the configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconRules {
    /// A transaction delivered more than this after it occurred is a timing break
    /// (late delivery), closed automatically once it has arrived.
    pub late_after: Duration,
    /// How far from a period boundary a transaction may sit and still be taken as a
    /// timing / cut-off difference rather than a missing transaction.
    pub cutoff_window: Duration,
    /// For lines without our id: how many days apart booking date and occurred date may be
    /// for a match by amount.
    pub date_window_days: u32,
}

impl Default for ReconRules {
    fn default() -> ReconRules {
        ReconRules { late_after: Duration::minutes(15), cutoff_window: Duration::minutes(30), date_window_days: 2 }
    }
}

/// Why our ledger and the provider disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BreakClass {
    /// The provider has it; our ledger does not.
    MissingInLedger,
    /// Our ledger has it; the provider's statement does not.
    MissingAtProvider,
    /// Both have it; the amounts differ (by `difference`).
    AmountDiffers,
    /// Both have it; the currencies differ.
    CurrencyDiffers,
    /// Our ledger holds it more than once (by reference; ids are unique in the ledger).
    DuplicateInLedger,
    /// The statement lists it more than once.
    DuplicateAtProvider,
    /// It falls in the neighbouring period (timezone / cut-off) or was delivered late.
    Timing,
    /// Every line matches but the statement's own totals do not add up (provider
    /// arithmetic error), or a totals row differs with the count agreeing.
    TotalsDiffer,
}

impl BreakClass {
    pub const ALL: [BreakClass; 8] = [
        BreakClass::MissingInLedger,
        BreakClass::MissingAtProvider,
        BreakClass::AmountDiffers,
        BreakClass::CurrencyDiffers,
        BreakClass::DuplicateInLedger,
        BreakClass::DuplicateAtProvider,
        BreakClass::Timing,
        BreakClass::TotalsDiffer,
    ];

    /// The stable name used in storage, output and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakClass::MissingInLedger => "missing_in_ledger",
            BreakClass::MissingAtProvider => "missing_at_provider",
            BreakClass::AmountDiffers => "amount_differs",
            BreakClass::CurrencyDiffers => "currency_differs",
            BreakClass::DuplicateInLedger => "duplicate_in_ledger",
            BreakClass::DuplicateAtProvider => "duplicate_at_provider",
            BreakClass::Timing => "timing",
            BreakClass::TotalsDiffer => "totals_differ",
        }
    }
}

impl fmt::Display for BreakClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BreakClass {
    type Err = ();
    fn from_str(text: &str) -> Result<BreakClass, ()> {
        BreakClass::ALL.into_iter().find(|class| class.as_str() == text).ok_or(())
    }
}

/// One difference found by a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    pub class: BreakClass,
    /// Stable identity within (provider, business date): the same difference found again by
    /// a re-run has the same key, so re-running is idempotent.
    pub key: String,
    pub currency: Option<CurrencyCode>,
    pub kind: Option<Kind>,
    /// The transaction concerned, when the break is about one.
    pub provider_tx_id: Option<String>,
    /// The statement line concerned (its `record`), when there is one.
    pub statement_record: Option<u64>,
    /// What our ledger says (sum over the transactions involved), if it has anything.
    pub ledger_amount: Option<Decimal>,
    /// What the statement says, if it has anything.
    pub statement_amount: Option<Decimal>,
    /// statement − ledger, exact, in the currency's unit (0 when not meaningful, e.g. a
    /// currency difference).
    pub difference: Decimal,
    /// Transactions or lines involved.
    pub count: u64,
    /// Whether the matter has already resolved itself by the written rules (a late
    /// transaction that has now arrived): stored closed, with the rule named.
    pub auto_closed_by: Option<AutoRule>,
    /// A sentence an analyst can act on: what differs, by how much, and why this class.
    pub reason: String,
}

/// The written rules that close or roll a break without a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AutoRule {
    /// A late transaction arrived: the timing break it caused is closed.
    LateArrival,
    /// A cut-off difference rolls to the neighbouring period and is re-checked there.
    RollToNextPeriod,
    /// A re-run no longer finds the difference.
    ResolvedOnRecheck,
}

impl AutoRule {
    pub fn as_str(self) -> &'static str {
        match self {
            AutoRule::LateArrival => "late_arrival",
            AutoRule::RollToNextPeriod => "roll_to_next_period",
            AutoRule::ResolvedOnRecheck => "resolved_on_recheck",
        }
    }
}

impl fmt::Display for AutoRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Figures per currency for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CurrencyTotals {
    /// Ledger transactions in the period (as of the run) and their exact sum.
    pub ledger_count: u64,
    pub ledger_amount: Decimal,
    /// Statement lines (or the totals rows' counts) and their exact sum.
    pub statement_count: u64,
    pub statement_amount: Decimal,
    /// Ledger transactions matched, and their sum.
    pub matched_count: u64,
    pub matched_amount: Decimal,
    /// Exact signed net difference, statement − ledger, over every kind (money in minus
    /// money out is not netted here: magnitudes are summed per kind then compared).
    pub net_difference: Decimal,
}

/// How the matches were made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatchCounts {
    /// One ledger transaction ↔ one statement line, by the provider's id.
    pub by_id: u64,
    /// One ↔ one by reference, amount and date window.
    pub by_reference: u64,
    /// One statement line covering several ledger transactions (a settlement batch).
    pub one_to_many: u64,
    /// Several statement lines for one ledger transaction (a split).
    pub many_to_one: u64,
    /// Totals rows that agree with the ledger's aggregate.
    pub totals_rows: u64,
}

/// What one run found: a pure value; the store records it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub currencies: std::collections::BTreeMap<CurrencyCode, CurrencyTotals>,
    pub matches: MatchCounts,
    /// Sorted by (class, key): the same inputs give the same bytes.
    pub breaks: Vec<Break>,
}
