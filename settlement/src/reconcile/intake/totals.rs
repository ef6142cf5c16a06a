//! End-of-day totals: what the provider claims per business date, currency and kind. This
//! is the format the simulator writes (`simulate::statements`), and the least a provider
//! can give: no transaction ids, only counts and exact sums, so reconciliation compares
//! aggregates.
//!
//! # Format
//!
//! ```text
//! provider,business_date,timezone,currency,kind,count,amount_minor
//! spinhub,2026-11-16,Europe/Malta,USD,bet,104233,52116500
//! ```
//!
//! The header is exactly that line (a UTF-8 byte-order mark and CRLF line ends are
//! accepted; blank lines are skipped). Fields are plain (no quoting). `provider` is the
//! configured provider, `timezone` its configured timezone, `currency` a known currency the
//! provider may use, `kind` a transaction kind name, `count` a non-negative integer and
//! `amount_minor` the exact sum in minor units of the currency (a signed 64-bit integer:
//! a sum of signed manual adjustments, or a provider's mistake, may be negative; a row with
//! count 0 must have amount 0). A (business_date, currency, kind) appears at most once. The
//! statement covers the first to the last business date it names; it has at least one row.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::NaiveDate;

use crate::adapters::fields;
use crate::adapters::Source;
use crate::model::Kind;
use crate::money::{from_minor, to_minor, Currencies, CurrencyCode};
use crate::reconcile::{ProviderStatement, StatementFormat, TotalsLine, STATEMENT_LINES_MAX};

use super::{
    csv_data_lines, date, hashed_lines, split, StatementAdapter, StatementContext, StatementError, WriteError,
};

/// The header line, without its line break.
pub const HEADER: &str = "provider,business_date,timezone,currency,kind,count,amount_minor";
const COLUMNS: [&str; 7] = ["provider", "business_date", "timezone", "currency", "kind", "count", "amount_minor"];

pub struct Totals {
    context: StatementContext,
}

impl Totals {
    pub fn new(context: StatementContext) -> Totals {
        Totals { context }
    }

    fn row(&self, source: &str, number: u64, text: &str) -> Result<TotalsLine, StatementError> {
        let invalid = |field: Option<&str>, message: String| StatementError::invalid(source, number, field, message);
        let cells: Vec<&str> = text.split(',').collect();
        if cells.len() != COLUMNS.len() {
            return Err(invalid(None, format!("{} fields, the header has {}", cells.len(), COLUMNS.len())));
        }
        let cell = |at: usize| (COLUMNS[at], cells[at]);
        let (field, provider) = cell(0);
        if provider != self.context.provider {
            return Err(invalid(
                Some(field),
                format!("{} is not this statement's provider {:?}", fields::quote(provider), self.context.provider),
            ));
        }
        let (field, text) = cell(1);
        let business_date = date(text).map_err(|message| invalid(Some(field), message))?;
        let (field, timezone) = cell(2);
        if timezone != self.context.timezone.name() {
            return Err(invalid(
                Some(field),
                format!(
                    "{} is not the provider's configured timezone {:?}",
                    fields::quote(timezone),
                    self.context.timezone.name()
                ),
            ));
        }
        let (field, text) = cell(3);
        let (currency, exponent) =
            self.context.currency(field, text).map_err(|(_, message)| invalid(Some(field), message))?;
        let (field, text) = cell(4);
        let kind = text.parse::<Kind>().map_err(|()| {
            let known: Vec<&str> = Kind::ALL.iter().map(|kind| kind.as_str()).collect();
            invalid(Some(field), format!("{} is not a transaction kind ({})", fields::quote(text), known.join(", ")))
        })?;
        let (field, text) = cell(5);
        if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(invalid(Some(field), format!("{} is not a non-negative integer", fields::quote(text))));
        }
        let count = text
            .parse::<u64>()
            .map_err(|_| invalid(Some(field), format!("{} does not fit in 64 bits", fields::quote(text))))?;
        let (field, text) = cell(6);
        let minor = fields::minor_units(field, text).map_err(|rejection| invalid(Some(field), split(rejection).1))?;
        if count == 0 && minor != 0 {
            return Err(invalid(Some(field), format!("{minor} with count 0: no transactions cannot sum to anything")));
        }
        Ok(TotalsLine { record: number, business_date, currency, kind, count, amount: from_minor(minor, exponent) })
    }
}

impl StatementAdapter for Totals {
    fn format(&self) -> StatementFormat {
        StatementFormat::Totals
    }

    fn decode(&self, source: &dyn Source) -> Result<ProviderStatement, StatementError> {
        let name = source.name();
        let mut reader = hashed_lines(source.open().map_err(|error| StatementError::io(name, error))?);
        let mut totals: Vec<TotalsLine> = Vec::new();
        let mut seen: BTreeMap<(NaiveDate, CurrencyCode, Kind), u64> = BTreeMap::new();
        let header_seen = csv_data_lines(name, &mut reader, HEADER, |number, text| {
            if totals.len() >= STATEMENT_LINES_MAX {
                return Err(StatementError::too_large(name, format!("more than {STATEMENT_LINES_MAX} rows")));
            }
            let row = self.row(name, number, text)?;
            if let Some(first) = seen.insert((row.business_date, row.currency, row.kind), number) {
                return Err(StatementError::invalid(
                    name,
                    number,
                    None,
                    format!(
                        "{} {} {} is already on line {first}: a totals row appears once",
                        row.business_date, row.currency, row.kind
                    ),
                ));
            }
            totals.push(row);
            Ok(())
        })?;
        if !header_seen {
            return Err(StatementError::invalid(name, 0, None, "the statement is empty (no header)"));
        }
        let (Some(from_date), Some(to_date)) = (seen.keys().map(|key| key.0).min(), seen.keys().map(|key| key.0).max())
        else {
            return Err(StatementError::invalid(name, 0, None, "the statement has a header but no rows"));
        };
        let sha256 = reader.into_inner().finish().map_err(|error| StatementError::io(name, error))?;
        Ok(ProviderStatement {
            provider: self.context.provider.clone(),
            format: StatementFormat::Totals,
            source: name.to_string(),
            sha256,
            statement_id: None,
            from_date,
            to_date,
            lines: Vec::new(),
            totals,
            balances: Vec::new(),
        })
    }
}

/// Writes `totals` as a totals statement of `provider` in `timezone` (header included),
/// rows in the order given. Amounts must be exact in their currency's minor units.
pub fn write(
    provider: &str,
    timezone: &str,
    totals: &[TotalsLine],
    currencies: &Currencies,
    out: &mut dyn Write,
) -> Result<(), WriteError> {
    writeln!(out, "{HEADER}")?;
    for row in totals {
        let exponent = currencies
            .exponent(row.currency)
            .ok_or_else(|| WriteError::Unrepresentable(format!("unknown currency {}", row.currency)))?;
        let minor = to_minor(row.amount, exponent).map_err(|error| {
            WriteError::Unrepresentable(format!(
                "{} {} {}: {} {error}",
                row.business_date, row.currency, row.kind, row.amount
            ))
        })?;
        writeln!(
            out,
            "{provider},{},{timezone},{},{},{},{minor}",
            row.business_date, row.currency, row.kind, row.count
        )?;
    }
    Ok(())
}
