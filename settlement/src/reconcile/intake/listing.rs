//! The provider's transaction listing: one line per transaction the provider says it
//! processed, with its own id, so reconciliation can match transaction by transaction and
//! name the exact one that is missing or differs.
//!
//! # Format
//!
//! ```text
//! provider_tx_id,kind,currency,amount,business_date,occurred_at,reference
//! dep-1001,deposit,USD,25.00,2026-11-24,2026-11-24T09:15:02Z,
//! wd-77,withdrawal,KRW,150000,2026-11-24,2026-11-24T18:00:00+09:00,batch-9
//! #trailer,count=2,from=2026-11-24,to=2026-11-24,KRW=150000,USD=25.00
//! ```
//!
//! - The header is exactly the first line above (a UTF-8 byte-order mark and CRLF line ends
//!   are accepted; blank lines are skipped). Fields are CSV: a field holding a comma or a
//!   quote is quoted (`"a,b"`, `"say ""hi"""`); a line is always one record.
//! - `provider_tx_id`: the provider's id, required (at most 128 characters, no control
//!   characters). The same id on two lines is kept: it is a reconciliation break
//!   (`duplicate_at_provider`), not an intake error.
//! - `kind`: a transaction kind name (`deposit`, `bet`, ...).
//! - `currency`: a known currency the provider may use.
//! - `amount`: a plain decimal in currency units (`25.00`, `150000`), no exponent, at most
//!   the currency's decimals; non-negative except for `manual_adjustment`.
//! - `business_date`: `YYYY-MM-DD`, the provider's booking date.
//! - `occurred_at`: RFC 3339 with an offset (`2026-11-24T09:15:02Z`).
//! - `reference`: optional (a settlement batch, the id we sent).
//!
//! The last line may be a control trailer, `#trailer,` then `key=value` pairs in any order:
//! `count=N` (required: the number of transaction lines), `from=`/`to=` (optional, both or
//! neither: the business dates covered; every line must fall inside), and one `CCY=sum` per
//! currency (the exact signed sum of that currency's amounts; every currency on a line must
//! be declared). When a trailer is present every figure is checked exactly and a mismatch
//! refuses the statement, naming declared and actual. Nothing may follow the trailer, and
//! no other line may start with `#`. Without `from=`/`to=`, the statement covers the first
//! to the last business date of its lines; a listing without lines must declare them.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rust_decimal::Decimal;

use crate::adapters::fields;
use crate::adapters::Source;
use crate::model::Kind;
use crate::money::CurrencyCode;
use crate::reconcile::{ProviderStatement, StatementFormat, StatementLine, STATEMENT_LINES_MAX};

use super::{
    csv_data_lines, date, hashed_lines, split, StatementAdapter, StatementContext, StatementError, WriteError,
};

/// The header line, without its line break.
pub const HEADER: &str = "provider_tx_id,kind,currency,amount,business_date,occurred_at,reference";
const COLUMNS: [&str; 7] =
    ["provider_tx_id", "kind", "currency", "amount", "business_date", "occurred_at", "reference"];
/// What a control trailer line starts with.
pub const TRAILER_PREFIX: &str = "#trailer,";
/// The most currencies one trailer may declare.
pub const TRAILER_CURRENCIES_MAX: usize = 256;

pub struct Listing {
    context: StatementContext,
}

/// What a trailer declares.
struct Trailer {
    line: u64,
    count: u64,
    period: Option<(NaiveDate, NaiveDate)>,
    sums: BTreeMap<CurrencyCode, Decimal>,
}

impl Listing {
    pub fn new(context: StatementContext) -> Listing {
        Listing { context }
    }

    fn row(&self, source: &str, number: u64, text: &str) -> Result<StatementLine, StatementError> {
        let invalid = |field: Option<&str>, message: String| StatementError::invalid(source, number, field, message);
        let cells = cells(text).map_err(|message| invalid(None, message))?;
        if cells.len() != COLUMNS.len() {
            return Err(invalid(None, format!("{} fields, the header has {}", cells.len(), COLUMNS.len())));
        }
        let cell = |at: usize| (COLUMNS[at], &cells[at]);
        let field_error = |(field, message): (Option<String>, String)| {
            StatementError::invalid(source, number, field.as_deref(), message)
        };
        let (field, text) = cell(0);
        let provider_tx_id = fields::required(field, Some(text))
            .and_then(|text| fields::identifier(field, text))
            .map_err(|rejection| field_error(split(rejection)))?;
        let (field, text) = cell(1);
        let kind = text.parse::<Kind>().map_err(|()| {
            let known: Vec<&str> = Kind::ALL.iter().map(|kind| kind.as_str()).collect();
            invalid(Some(field), format!("{} is not a transaction kind ({})", fields::quote(text), known.join(", ")))
        })?;
        let (field, text) = cell(2);
        let (currency, exponent) = self.context.currency(field, text).map_err(field_error)?;
        let (field, text) = cell(3);
        let amount = fields::decimal_amount(field, text, currency, exponent)
            .map_err(|rejection| field_error(split(rejection)))?;
        if amount.is_sign_negative() && !amount.is_zero() && kind != Kind::ManualAdjustment {
            return Err(invalid(
                Some(field),
                format!("{} is negative; only a manual_adjustment may be signed", fields::quote(text)),
            ));
        }
        let (field, text) = cell(4);
        let business_date = date(text).map_err(|message| invalid(Some(field), message))?;
        let (field, text) = cell(5);
        let occurred_at = DateTime::parse_from_rfc3339(text)
            .map_err(|error| {
                invalid(Some(field), format!("{} is not an RFC 3339 time with an offset: {error}", fields::quote(text)))
            })?
            .with_timezone(&Utc);
        let (field, text) = cell(6);
        let reference =
            fields::optional_identifier(field, Some(text)).map_err(|rejection| field_error(split(rejection)))?;
        Ok(StatementLine {
            record: number,
            detail: 0,
            provider_tx_id: Some(provider_tx_id),
            reference,
            kind: Some(kind),
            currency,
            amount,
            business_date,
            occurred_at: Some(occurred_at),
        })
    }

    fn trailer(&self, source: &str, number: u64, text: &str) -> Result<Trailer, StatementError> {
        let invalid = |field: Option<&str>, message: String| StatementError::invalid(source, number, field, message);
        let body = text.strip_prefix(TRAILER_PREFIX).unwrap_or_default();
        let mut count = None;
        let (mut from, mut to) = (None, None);
        let mut sums = BTreeMap::new();
        for pair in body.split(',') {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(invalid(Some("trailer"), format!("{} is not key=value", fields::quote(pair))));
            };
            let repeated = || invalid(Some(key), "is declared twice".to_string());
            match key {
                "count" => {
                    if !value.bytes().all(|byte| byte.is_ascii_digit()) || value.is_empty() {
                        return Err(invalid(
                            Some(key),
                            format!("{} is not a non-negative integer", fields::quote(value)),
                        ));
                    }
                    let parsed = value
                        .parse::<u64>()
                        .map_err(|_| invalid(Some(key), format!("{} does not fit in 64 bits", fields::quote(value))))?;
                    if count.replace(parsed).is_some() {
                        return Err(repeated());
                    }
                }
                "from" | "to" => {
                    let parsed = date(value).map_err(|message| invalid(Some(key), message))?;
                    let slot = if key == "from" { &mut from } else { &mut to };
                    if slot.replace(parsed).is_some() {
                        return Err(repeated());
                    }
                }
                code => {
                    let (currency, exponent) =
                        self.context.currency(code, code).map_err(|(_, message)| invalid(Some("trailer"), message))?;
                    let sum = fields::decimal_amount(code, value, currency, exponent)
                        .map_err(|rejection| invalid(Some(code), split(rejection).1))?;
                    if sums.len() >= TRAILER_CURRENCIES_MAX {
                        return Err(invalid(Some("trailer"), format!("more than {TRAILER_CURRENCIES_MAX} currencies")));
                    }
                    if sums.insert(currency, sum).is_some() {
                        return Err(repeated());
                    }
                }
            }
        }
        let count = count.ok_or_else(|| invalid(Some("count"), "the trailer has no count=N".to_string()))?;
        let period = match (from, to) {
            (Some(from), Some(to)) if from <= to => Some((from, to)),
            (Some(from), Some(to)) => return Err(invalid(Some("to"), format!("{to} is before from={from}"))),
            (None, None) => None,
            _ => {
                return Err(invalid(Some("trailer"), "declares only one of from= and to=; give both or neither".into()))
            }
        };
        Ok(Trailer { line: number, count, period, sums })
    }
}

/// The cells of one CSV line (quotes allowed, no line breaks inside).
fn cells(text: &str) -> Result<Vec<String>, String> {
    if !text.contains('"') {
        return Ok(text.split(',').map(str::to_string).collect());
    }
    if text.bytes().filter(|&byte| byte == b'"').count() % 2 == 1 {
        return Err("the line has a quote that is never closed".into());
    }
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => {}
        Ok(false) => return Err("the line is empty".into()),
        Err(error) => return Err(format!("the line is not valid CSV: {error}")),
    }
    if !matches!(reader.read_record(&mut csv::StringRecord::new()), Ok(false)) {
        return Err("the line does not end where its record ends (an unbalanced quote?)".into());
    }
    Ok(record.iter().map(str::to_string).collect())
}

impl StatementAdapter for Listing {
    fn format(&self) -> StatementFormat {
        StatementFormat::Listing
    }

    fn decode(&self, source: &dyn Source) -> Result<ProviderStatement, StatementError> {
        let name = source.name();
        let mut reader = hashed_lines(source.open().map_err(|error| StatementError::io(name, error))?);
        let mut trailer: Option<Trailer> = None;
        let mut out: Vec<StatementLine> = Vec::new();
        let header_seen = csv_data_lines(name, &mut reader, HEADER, |number, text| {
            if let Some(trailer) = &trailer {
                return Err(StatementError::invalid(
                    name,
                    number,
                    None,
                    format!("nothing may follow the trailer on line {}", trailer.line),
                ));
            }
            if text.starts_with(TRAILER_PREFIX) {
                trailer = Some(self.trailer(name, number, text)?);
                return Ok(());
            }
            if text.starts_with('#') {
                return Err(StatementError::invalid(
                    name,
                    number,
                    None,
                    format!(
                        "{} is not a transaction line and not a trailer ({TRAILER_PREFIX}...)",
                        fields::quote(text)
                    ),
                ));
            }
            if out.len() >= STATEMENT_LINES_MAX {
                return Err(StatementError::too_large(name, format!("more than {STATEMENT_LINES_MAX} lines")));
            }
            out.push(self.row(name, number, text)?);
            Ok(())
        })?;
        if !header_seen {
            return Err(StatementError::invalid(name, 0, None, "the statement is empty (no header)"));
        }
        let (from_date, to_date) = match &trailer {
            Some(trailer) => check_trailer(name, trailer, &out)?,
            None => None,
        }
        .or_else(|| {
            Some((out.iter().map(|line| line.business_date).min()?, out.iter().map(|line| line.business_date).max()?))
        })
        .ok_or_else(|| {
            StatementError::invalid(
                name,
                0,
                None,
                "the listing has no lines and no trailer from=/to=: it does not say which days it covers",
            )
        })?;
        let sha256 = reader.into_inner().finish().map_err(|error| StatementError::io(name, error))?;
        Ok(ProviderStatement {
            provider: self.context.provider.clone(),
            format: StatementFormat::Listing,
            source: name.to_string(),
            sha256,
            statement_id: None,
            from_date,
            to_date,
            lines: out,
            totals: Vec::new(),
            balances: Vec::new(),
        })
    }
}

/// The trailer against the lines: count, per-currency sums, period. Gives the declared period.
fn check_trailer(
    source: &str,
    trailer: &Trailer,
    lines: &[StatementLine],
) -> Result<Option<(NaiveDate, NaiveDate)>, StatementError> {
    let actual_count = lines.len() as u64;
    if trailer.count != actual_count {
        return Err(StatementError::integrity(
            source,
            format!(
                "the trailer (line {}) declares count={}, the listing has {actual_count} lines",
                trailer.line, trailer.count
            ),
        ));
    }
    let mut sums: BTreeMap<CurrencyCode, Decimal> = BTreeMap::new();
    for line in lines {
        let sum = sums.entry(line.currency).or_default();
        *sum = sum.checked_add(line.amount).ok_or_else(|| {
            StatementError::too_large(source, format!("the {} amounts do not fit in a decimal", line.currency))
        })?;
    }
    for (currency, actual) in &sums {
        match trailer.sums.get(currency) {
            None => {
                return Err(StatementError::integrity(
                    source,
                    format!(
                        "the trailer (line {}) declares no {currency} sum; the {currency} lines sum to {actual}",
                        trailer.line
                    ),
                ))
            }
            Some(declared) if declared != actual => {
                return Err(StatementError::integrity(
                    source,
                    format!(
                        "the trailer (line {}) declares {currency}={declared}, the {currency} lines sum to {actual}",
                        trailer.line
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    for (currency, declared) in &trailer.sums {
        if !sums.contains_key(currency) && !declared.is_zero() {
            return Err(StatementError::integrity(
                source,
                format!(
                    "the trailer (line {}) declares {currency}={declared}, the listing has no {currency} line",
                    trailer.line
                ),
            ));
        }
    }
    if let Some((from, to)) = trailer.period {
        if let Some(outside) = lines.iter().find(|line| line.business_date < from || line.business_date > to) {
            return Err(StatementError::integrity(
                source,
                format!(
                    "line {} is dated {}, outside the trailer's from={from} to={to}",
                    outside.record, outside.business_date
                ),
            ));
        }
    }
    Ok(trailer.period)
}

/// A CSV field, quoted when it must be (a first field starting with `#` would read as a
/// control line).
fn field(text: &str) -> String {
    if text.contains([',', '"']) || text.starts_with([' ', '#']) || text.ends_with(' ') {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Writes `lines` as a listing covering `from_date..=to_date`, with a trailer (count, period,
/// per-currency sums) so the round trip checks itself. Every line needs its
/// `provider_tx_id`, `kind` and `occurred_at`.
pub fn write(
    lines: &[StatementLine],
    from_date: NaiveDate,
    to_date: NaiveDate,
    out: &mut dyn Write,
) -> Result<(), WriteError> {
    writeln!(out, "{HEADER}")?;
    let mut sums: BTreeMap<CurrencyCode, Decimal> = BTreeMap::new();
    for line in lines {
        let missing =
            |what: &str| WriteError::Unrepresentable(format!("line {}: a listing line needs a {what}", line.record));
        let id = line.provider_tx_id.as_deref().ok_or_else(|| missing("provider_tx_id"))?;
        let kind = line.kind.ok_or_else(|| missing("kind"))?;
        let occurred_at = line.occurred_at.ok_or_else(|| missing("occurred_at"))?;
        let sum = sums.entry(line.currency).or_default();
        *sum = sum.checked_add(line.amount).ok_or_else(|| {
            WriteError::Unrepresentable(format!("the {} amounts do not fit in a decimal", line.currency))
        })?;
        writeln!(
            out,
            "{},{kind},{},{},{},{},{}",
            field(id),
            line.currency,
            line.amount,
            line.business_date,
            occurred_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            field(line.reference.as_deref().unwrap_or_default()),
        )?;
    }
    write!(out, "{TRAILER_PREFIX}count={},from={from_date},to={to_date}", lines.len())?;
    for (currency, sum) in &sums {
        write!(out, ",{currency}={sum}")?;
    }
    writeln!(out)?;
    Ok(())
}
