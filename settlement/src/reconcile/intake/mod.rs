//! Statement intake: a provider's statement bytes in, one integrity-checked
//! [`ProviderStatement`] out. Reconciliation compares our ledger with what the provider
//! claims; a claim that contradicts itself (a trailer whose count is wrong, balances that
//! do not add up) is refused here, whole, with the line and field that is wrong, so that
//! matching only ever sees statements that agree with their own control figures.
//!
//! Like the transaction adapters, the core knows only the [`StatementAdapter`] trait; each
//! wire format is one file, chosen by `[providers.reconciliation] statement`:
//! - [`totals`]: end-of-day totals per business date, currency and kind (the simulator's
//!   `statement-<date>.csv`);
//! - [`listing`]: the provider's transaction listing CSV, with an optional control trailer;
//! - [`camt053`]: an ISO 20022 camt.053 bank-to-customer statement (XML).
//!
//! Every adapter reads its [`Source`] once and computes the sha256 of exactly the bytes it
//! read, so the checksum always belongs to the statement that was checked. Sizes are bounded
//! (`*_MAX` constants); no input makes intake panic (`settlement/tests/statements.rs`).

use std::collections::BTreeSet;
use std::io::{self, BufRead, Read};
use std::sync::Arc;

use chrono::NaiveDate;
use chrono_tz::Tz;
use sha2::{Digest, Sha256};

use crate::adapters::Source;
use crate::config::{ConfigError, Provider, ReconciliationConfig};
use crate::model::Kind;
use crate::money::{Currencies, CurrencyCode};
use crate::rejection::Rejection;

use super::{ProviderStatement, StatementFormat};

pub mod camt053;
pub mod listing;
pub mod totals;

/// The longest line a CSV statement may have (a header, a row or a trailer).
pub const STATEMENT_LINE_BYTES_MAX: usize = 64 * 1024;

/// Everything a statement adapter knows about its provider.
#[derive(Clone, Debug)]
pub struct StatementContext {
    /// The configured provider name; a statement naming another provider is refused.
    pub provider: String,
    /// The provider's business-day timezone.
    pub timezone: Tz,
    pub currencies: Arc<Currencies>,
    /// `None`: every known currency is allowed.
    pub allowed_currencies: Option<BTreeSet<CurrencyCode>>,
    /// camt.053: the kind a credit entry (`CRDT`) stands for.
    pub credit_kind: Kind,
    /// camt.053: the kind a debit entry (`DBIT`) stands for.
    pub debit_kind: Kind,
}

impl StatementContext {
    /// The context of a configured provider, with its `[providers.reconciliation]` settings
    /// (checked again here, so a hand-built configuration cannot slip past).
    pub fn new(provider: &Provider, config: &ReconciliationConfig) -> Result<StatementContext, ConfigError> {
        config.resolve(&provider.name)?;
        let kind = |name: &str, text: &str| {
            text.parse::<Kind>().map_err(|()| {
                ConfigError::Invalid(format!(
                    "provider {}: reconciliation: {name} {text:?} is not a transaction kind",
                    provider.name
                ))
            })
        };
        Ok(StatementContext {
            provider: provider.name.clone(),
            timezone: provider.timezone,
            currencies: provider.currencies.clone(),
            allowed_currencies: provider.allowed_currencies.clone(),
            credit_kind: kind("credit_kind", &config.credit_kind)?,
            debit_kind: kind("debit_kind", &config.debit_kind)?,
        })
    }

    /// A known currency this provider may use, or why not.
    pub(crate) fn currency(&self, field: &str, text: &str) -> Result<(CurrencyCode, u32), (Option<String>, String)> {
        let (code, exponent) = crate::adapters::fields::currency(&self.currencies, field, text).map_err(split)?;
        if let Some(allowed) = &self.allowed_currencies {
            if !allowed.contains(&code) {
                let list: Vec<&str> = allowed.iter().map(CurrencyCode::as_str).collect();
                return Err((
                    Some(field.to_string()),
                    format!("{code} is not among the provider's currencies ({})", list.join(", ")),
                ));
            }
        }
        Ok((code, exponent))
    }
}

/// A field-level rejection from `adapters::fields` as (field, message).
pub(crate) fn split(rejection: Rejection) -> (Option<String>, String) {
    (rejection.field, rejection.message)
}

/// What every statement adapter is: one provider's statement bytes → a checked statement.
pub trait StatementAdapter: Send + Sync {
    fn format(&self) -> StatementFormat;

    /// Decodes and integrity-checks a whole statement; `sha256` is over the exact bytes
    /// read. Nothing is returned unless every line and every control figure is right.
    fn decode(&self, source: &dyn Source) -> Result<ProviderStatement, StatementError>;
}

/// The adapter for `format`.
pub fn adapter(format: StatementFormat, context: StatementContext) -> Box<dyn StatementAdapter> {
    match format {
        StatementFormat::Totals => Box::new(totals::Totals::new(context)),
        StatementFormat::Listing => Box::new(listing::Listing::new(context)),
        StatementFormat::Camt053 => Box::new(camt053::Camt053::new(context)),
    }
}

/// The statement adapter a configured provider's `[providers.reconciliation]` selects.
pub fn adapter_for(
    provider: &Provider,
    config: &ReconciliationConfig,
) -> Result<Box<dyn StatementAdapter>, ConfigError> {
    let (format, _) = config.resolve(&provider.name)?;
    Ok(adapter(format, StatementContext::new(provider, config)?))
}

/// Why a statement was refused. Nothing of a refused statement is taken.
#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    #[error("reading {source_name}: {error}")]
    Io { source_name: String, error: io::Error },
    /// A line, field or element is malformed or not allowed.
    #[error("{source_name}{}: {message}", location(*line, field.as_deref()))]
    Invalid {
        source_name: String,
        /// 1-based line of the source where the problem is (0: the statement as a whole).
        line: u64,
        /// The column (CSV) or element path (XML) concerned.
        field: Option<String>,
        message: String,
    },
    /// Every line is well-formed but the statement's own control figures disagree with
    /// its lines (declared versus actual, both named in the message).
    #[error("{source_name}: integrity: {message}")]
    Integrity { source_name: String, message: String },
    /// The statement is beyond a size limit (`*_MAX`).
    #[error("{source_name}: too large: {message}")]
    TooLarge { source_name: String, message: String },
}

impl StatementError {
    pub(crate) fn invalid(source: &str, line: u64, field: Option<&str>, message: impl Into<String>) -> StatementError {
        StatementError::Invalid {
            source_name: source.to_string(),
            line,
            field: field.map(str::to_string),
            message: message.into(),
        }
    }

    pub(crate) fn integrity(source: &str, message: impl Into<String>) -> StatementError {
        StatementError::Integrity { source_name: source.to_string(), message: message.into() }
    }

    pub(crate) fn too_large(source: &str, message: impl Into<String>) -> StatementError {
        StatementError::TooLarge { source_name: source.to_string(), message: message.into() }
    }

    pub(crate) fn io(source: &str, error: io::Error) -> StatementError {
        StatementError::Io { source_name: source.to_string(), error }
    }
}

/// ` line N field F` (each part only when known).
fn location(line: u64, field: Option<&str>) -> String {
    let mut out = String::new();
    if line > 0 {
        out.push_str(&format!(" line {line}"));
    }
    if let Some(field) = field {
        out.push_str(&format!(" field {field}"));
    }
    out
}

/// Why a statement could not be written in a format.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing: {0}")]
    Io(#[from] io::Error),
    /// The statement holds something the format cannot say (a line without an id for a
    /// listing, an amount finer than its currency for totals).
    #[error("{0}")]
    Unrepresentable(String),
}

/// A reader that hashes every byte read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> HashingReader<R> {
        HashingReader { inner, hasher: Sha256::new() }
    }

    /// Reads what is left (so the hash covers the whole source) and gives the digest.
    pub(crate) fn finish(mut self) -> io::Result<[u8; 32]> {
        io::copy(&mut self.inner, &mut self.hasher)?;
        Ok(self.hasher.finalize().into())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(buffer.get(..read).unwrap_or_default());
        Ok(read)
    }
}

/// The hashing reader of a CSV statement, with a line buffer on top.
pub(crate) fn hashed_lines<'s>(reader: Box<dyn BufRead + 's>) -> io::BufReader<HashingReader<Box<dyn BufRead + 's>>> {
    io::BufReader::with_capacity(256 * 1024, HashingReader::new(reader))
}

/// A calendar date written `YYYY-MM-DD` (exactly: no single-digit months or days).
pub(crate) fn date(text: &str) -> Result<NaiveDate, String> {
    let shaped = text.len() == 10
        && text
            .bytes()
            .enumerate()
            .all(|(at, byte)| if at == 4 || at == 7 { byte == b'-' } else { byte.is_ascii_digit() });
    if !shaped {
        return Err(format!("{} is not a date written YYYY-MM-DD", crate::adapters::fields::quote(text)));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|error| format!("{} is not a date: {error}", crate::adapters::fields::quote(text)))
}

/// The CSV line without its trailing `\r`, as text.
pub(crate) fn line_text<'l>(source: &str, number: u64, bytes: &'l [u8]) -> Result<&'l str, StatementError> {
    std::str::from_utf8(crate::adapters::fields::trim_cr(bytes))
        .map_err(|error| StatementError::invalid(source, number, None, format!("the line is not UTF-8: {error}")))
}

/// Reads a CSV statement: the exact `header` first (a byte-order mark allowed), then each
/// non-empty line, handed to `each` with its line number. Returns whether there was a
/// header; what an empty statement means is the caller's to say.
pub(crate) fn csv_data_lines(
    name: &str,
    reader: impl BufRead,
    header: &str,
    mut each: impl FnMut(u64, &str) -> Result<(), StatementError>,
) -> Result<bool, StatementError> {
    let mut lines = crate::adapters::fields::LineReader::new(reader, STATEMENT_LINE_BYTES_MAX);
    let mut buf = Vec::new();
    let mut header_seen = false;
    while let Some(line) = lines.next_line(&mut buf).map_err(|error| StatementError::io(name, error))? {
        if line.too_long {
            return Err(StatementError::invalid(
                name,
                line.number,
                None,
                format!("the line is longer than {STATEMENT_LINE_BYTES_MAX} bytes"),
            ));
        }
        let text = line_text(name, line.number, &buf)?;
        if !header_seen {
            let text = text.strip_prefix('\u{feff}').unwrap_or(text);
            if text != header {
                return Err(StatementError::invalid(
                    name,
                    line.number,
                    None,
                    format!("the header is {}, expected {header:?}", crate::adapters::fields::quote(text)),
                ));
            }
            header_seen = true;
            continue;
        }
        if text.is_empty() {
            continue;
        }
        each(line.number, text)?;
    }
    Ok(header_seen)
}
