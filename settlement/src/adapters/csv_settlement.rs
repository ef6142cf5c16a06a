//! A payment processor's CSV settlement file.
//!
//! # Wire format
//!
//! RFC 4180 CSV (UTF-8, optional BOM), `delimiter` (default `,`) and `quote` (default `"`,
//! doubled inside a quoted field); quoted fields may hold delimiters and line breaks. The
//! first non-empty row is the header; columns are found by name (`[columns]`), in any
//! order, other columns are ignored. Every configured column must be in the header,
//! otherwise the whole file is rejected (`malformed_payload`, naming the column). Cells are
//! trimmed of surrounding spaces; an empty cell is a missing value.
//!
//! * `id`, `kind`, `account`, `amount`, `occurred_at`: required in every row.
//! * `currency`: the column, or a fixed `currency` for files without one (exactly one of the two).
//! * `game`, `round`, `session`, `original_id` (the provider's reference to the transaction
//!   a chargeback or refund reverses): optional columns, empty cells allowed.
//! * `kind`: a provider word looked up in `[kinds]` (`DEP = "deposit"`).
//! * `amount`: integer minor units (`amount_in_minor_units = true`, the default: `15000`
//!   KRW, `1050` USD cents, optional sign) or a decimal (`10.50`) when false.
//! * `occurred_at`: local wall-clock time in the provider's timezone, in the chrono format
//!   `timestamp_format` (default `%Y-%m-%d %H:%M:%S`). A time repeated when clocks go back is
//!   taken as its earliest instant; a time skipped when clocks go forward is `invalid_field`.
//!
//! # Units
//!
//! Each data row is a unit; `record` is the line number where the row starts; `raw` is the
//! row's exact bytes (without the final line break). A row longer than
//! [`RECORD_BYTES_MAX`] is `malformed_record`. Empty lines are skipped.
//!
//! # Context (for `decode_unit`)
//!
//! The header row's exact bytes: `decode_unit` finds the columns in it again and decodes
//! `raw` as one row.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use super::fields::{self, quote, KindVocabulary, LineReader};
use super::{
    Adapter, AdapterConfigError, DecodeError, Decoded, PayloadContext, ProviderContext, Sink, Source, RECORD_BYTES_MAX,
};
use crate::model::{sha256, Transaction};
use crate::money::{from_minor, Currencies, CurrencyCode};
use crate::rejection::{ErrorCode, Rejection};

/// Columns a header may have (a wider header is a broken file, not a settlement file).
pub const COLUMNS_MAX: usize = 512;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSettlementConfig {
    pub columns: CsvColumns,
    /// Provider word → canonical kind name (`DEP = "deposit"`).
    pub kinds: BTreeMap<String, String>,
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    #[serde(default = "default_quote")]
    pub quote: char,
    #[serde(default = "default_timestamp_format")]
    pub timestamp_format: String,
    #[serde(default = "default_true")]
    pub amount_in_minor_units: bool,
    /// Fixed currency of every row, for files without a currency column.
    #[serde(default)]
    pub currency: Option<String>,
}

fn default_delimiter() -> char {
    ','
}

fn default_quote() -> char {
    '"'
}

fn default_timestamp_format() -> String {
    "%Y-%m-%d %H:%M:%S".into()
}

fn default_true() -> bool {
    true
}

/// Header names of the columns that hold each transaction field.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvColumns {
    pub id: String,
    pub kind: String,
    pub account: String,
    pub amount: String,
    pub occurred_at: String,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub game: Option<String>,
    #[serde(default)]
    pub round: Option<String>,
    #[serde(default)]
    pub session: Option<String>,
    #[serde(default)]
    pub original_id: Option<String>,
}

pub struct CsvSettlement {
    provider: String,
    timezone: Tz,
    currencies: Arc<Currencies>,
    columns: CsvColumns,
    kinds: KindVocabulary,
    delimiter: u8,
    quote: u8,
    timestamp_format: String,
    amount_in_minor_units: bool,
    fixed_currency: Option<(CurrencyCode, u32)>,
}

/// Where each configured column is in a file's header.
struct Header {
    width: usize,
    id: usize,
    kind: usize,
    account: usize,
    amount: usize,
    occurred_at: usize,
    currency: Option<usize>,
    game: Option<usize>,
    round: Option<usize>,
    session: Option<usize>,
    original_id: Option<usize>,
}

fn single_byte(key: &str, value: char) -> Result<u8, String> {
    u8::try_from(value)
        .ok()
        .filter(|byte| byte.is_ascii() && !matches!(byte, b'\n' | b'\r'))
        .ok_or_else(|| format!("{key}: {value:?} must be one ASCII character other than a line break"))
}

impl CsvSettlement {
    pub fn new(config: &CsvSettlementConfig, provider: &ProviderContext) -> Result<CsvSettlement, AdapterConfigError> {
        let error = |message: String| AdapterConfigError { provider: provider.name.clone(), message };
        let kinds = KindVocabulary::new(&config.kinds).map_err(error)?;
        let delimiter = single_byte("delimiter", config.delimiter).map_err(error)?;
        let quote = single_byte("quote", config.quote).map_err(error)?;
        if delimiter == quote {
            return Err(error("delimiter and quote must differ".into()));
        }
        fields::check_time_format("timestamp_format", &config.timestamp_format).map_err(error)?;
        let columns = &config.columns;
        let named: Vec<(&str, &str)> = [
            ("id", Some(&columns.id)),
            ("kind", Some(&columns.kind)),
            ("account", Some(&columns.account)),
            ("amount", Some(&columns.amount)),
            ("occurred_at", Some(&columns.occurred_at)),
            ("currency", columns.currency.as_ref()),
            ("game", columns.game.as_ref()),
            ("round", columns.round.as_ref()),
            ("session", columns.session.as_ref()),
            ("original_id", columns.original_id.as_ref()),
        ]
        .into_iter()
        .filter_map(|(key, name)| name.map(|name| (key, name.as_str())))
        .collect();
        for (position, (key, name)) in named.iter().enumerate() {
            if name.trim().is_empty() || name.trim() != *name {
                return Err(error(format!("columns.{key}: {name:?} is empty or has surrounding spaces")));
            }
            if let Some((other, _)) = named.iter().take(position).find(|(_, other_name)| other_name == name) {
                return Err(error(format!("columns.{key} and columns.{other} both name column {name:?}")));
            }
        }
        let fixed_currency = match (&columns.currency, &config.currency) {
            (Some(_), Some(_)) => return Err(error("set columns.currency or currency, not both".into())),
            (None, None) => {
                return Err(error("no currency: set columns.currency, or currency for files without one".into()))
            }
            (Some(_), None) => None,
            (None, Some(code)) => Some(
                provider
                    .currencies
                    .lookup(code)
                    .ok_or_else(|| error(format!("currency: {code:?} is not a known currency")))?,
            ),
        };
        Ok(CsvSettlement {
            provider: provider.name.clone(),
            timezone: provider.timezone,
            currencies: provider.currencies.clone(),
            columns: columns.clone(),
            kinds,
            delimiter,
            quote,
            timestamp_format: config.timestamp_format.clone(),
            amount_in_minor_units: config.amount_in_minor_units,
            fixed_currency,
        })
    }

    /// Parses one CSV row (which may span lines inside quotes).
    fn cells(&self, raw: &[u8]) -> Result<csv::StringRecord, Rejection> {
        let malformed = |message: String| Rejection::new(ErrorCode::MalformedRecord, message);
        if raw.len() > RECORD_BYTES_MAX {
            return Err(malformed(format!("the row is longer than {RECORD_BYTES_MAX} bytes")));
        }
        if raw.iter().filter(|&&byte| byte == self.quote).count() % 2 == 1 {
            return Err(malformed("the row has a quote that is never closed".into()));
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(self.delimiter)
            .quote(self.quote)
            .buffer_capacity(1024)
            .from_reader(raw);
        let mut record = csv::StringRecord::new();
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => return Err(malformed("the row is empty".into())),
            Err(error) => return Err(malformed(format!("the row is not valid CSV: {error}"))),
        }
        let mut rest = csv::StringRecord::new();
        if !matches!(reader.read_record(&mut rest), Ok(false)) {
            return Err(malformed("the row goes on after its line break (a quote inside an unquoted field?)".into()));
        }
        Ok(record)
    }

    /// Finds every configured column in the header row.
    fn header(&self, raw: &[u8]) -> Result<Header, Rejection> {
        let malformed = |message: String| Rejection::new(ErrorCode::MalformedPayload, message);
        let raw = raw.strip_prefix("\u{feff}".as_bytes()).unwrap_or(raw);
        let record = self.cells(raw).map_err(|rejection| malformed(format!("header row: {}", rejection.message)))?;
        if record.len() > COLUMNS_MAX {
            return Err(malformed(format!("the header has {} columns, at most {COLUMNS_MAX}", record.len())));
        }
        let names: Vec<&str> = record.iter().map(str::trim).collect();
        let find = |key: &str, name: &str| -> Result<usize, Rejection> {
            let mut found = names.iter().enumerate().filter(|(_, header)| **header == name).map(|(index, _)| index);
            match (found.next(), found.next()) {
                (Some(index), None) => Ok(index),
                (Some(_), Some(_)) => Err(Rejection::field(
                    ErrorCode::MalformedPayload,
                    name,
                    format!("the header has column {} more than once", quote(name)),
                )),
                (None, _) => Err(Rejection::field(
                    ErrorCode::MalformedPayload,
                    name,
                    format!(
                        "the header has no column {} (columns.{key}); it has: {}",
                        quote(name),
                        quote(&names.join(","))
                    ),
                )),
            }
        };
        let optional = |key: &str, name: &Option<String>| name.as_deref().map(|name| find(key, name)).transpose();
        let columns = &self.columns;
        Ok(Header {
            width: names.len(),
            id: find("id", &columns.id)?,
            kind: find("kind", &columns.kind)?,
            account: find("account", &columns.account)?,
            amount: find("amount", &columns.amount)?,
            occurred_at: find("occurred_at", &columns.occurred_at)?,
            currency: optional("currency", &columns.currency)?,
            game: optional("game", &columns.game)?,
            round: optional("round", &columns.round)?,
            session: optional("session", &columns.session)?,
            original_id: optional("original_id", &columns.original_id)?,
        })
    }

    fn decode_row(&self, header: &Header, raw: &[u8], received_at: DateTime<Utc>) -> Result<Transaction, Rejection> {
        let record = self.cells(raw)?;
        if record.len() != header.width {
            return Err(Rejection::new(
                ErrorCode::MalformedRecord,
                format!("the row has {} fields, the header has {}", record.len(), header.width),
            ));
        }
        let cell = |index: usize| record.get(index).map(str::trim);
        let optional_cell = |index: Option<usize>| index.and_then(cell);
        let columns = &self.columns;
        let id = fields::identifier(&columns.id, fields::required(&columns.id, cell(header.id))?)?;
        let kind_word = fields::required(&columns.kind, cell(header.kind))?;
        let kind = self.kinds.kind(&columns.kind, kind_word)?;
        let account = fields::identifier(&columns.account, fields::required(&columns.account, cell(header.account))?)?;
        let game_id = optional_field(&columns.game, optional_cell(header.game))?;
        let round_id = optional_field(&columns.round, optional_cell(header.round))?;
        let session_id = optional_field(&columns.session, optional_cell(header.session))?;
        let (currency, exponent) = match (self.fixed_currency, header.currency, &columns.currency) {
            (Some(fixed), _, _) => fixed,
            (None, Some(index), Some(name)) => {
                fields::currency(&self.currencies, name, fields::required(name, cell(index))?)?
            }
            _ => return Err(Rejection::new(ErrorCode::MissingField, "no currency column or fixed currency")),
        };
        let amount_text = fields::required(&columns.amount, cell(header.amount))?;
        let amount = if self.amount_in_minor_units {
            from_minor(fields::minor_units(&columns.amount, amount_text)?, exponent)
        } else {
            fields::decimal_amount(&columns.amount, amount_text, currency, exponent)?
        };
        let occurred_text = fields::required(&columns.occurred_at, cell(header.occurred_at))?;
        let occurred_at =
            fields::local_time(&columns.occurred_at, occurred_text, &self.timestamp_format, self.timezone)?;
        let original_tx_id = optional_field(&columns.original_id, optional_cell(header.original_id))?;
        Ok(Transaction {
            provider: self.provider.clone(),
            provider_tx_id: id,
            kind,
            account,
            game_id,
            round_id,
            session_id,
            currency,
            amount,
            occurred_at,
            received_at,
            original_tx_id,
            raw_sha256: sha256(raw),
        })
    }
}

fn optional_field(column: &Option<String>, value: Option<&str>) -> Result<Option<String>, Rejection> {
    match column {
        Some(name) => fields::optional_identifier(name, value),
        None => Ok(None),
    }
}

/// Assembles CSV rows from lines: a row continues on the next line while a quote is open.
struct RowReader<R> {
    lines: LineReader<R>,
    line: Vec<u8>,
    quote: u8,
}

/// One row: where it starts, and whether it was cut at the size limit.
struct Row {
    first_line: u64,
    too_long: bool,
}

impl<R: std::io::BufRead> RowReader<R> {
    /// The next non-empty row into `row` (its bytes without the final line break).
    fn next_row(&mut self, row: &mut Vec<u8>) -> std::io::Result<Option<Row>> {
        row.clear();
        let mut first_line = 0;
        let mut quote_open = false;
        while let Some(line) = self.lines.next_line(&mut self.line)? {
            if row.is_empty() && first_line == 0 {
                if fields::trim_cr(&self.line).is_empty() {
                    continue;
                }
                first_line = line.number;
            } else {
                row.push(b'\n');
            }
            row.extend_from_slice(&self.line);
            if line.too_long || row.len() > RECORD_BYTES_MAX {
                // Stop at this line: the next line starts a new row (a runaway quote must not
                // swallow the rest of the file). Keep one byte over the limit to mark it.
                row.truncate(RECORD_BYTES_MAX + 1);
                return Ok(Some(Row { first_line, too_long: true }));
            }
            let quotes = self.line.iter().filter(|&&byte| byte == self.quote).count();
            quote_open ^= quotes % 2 == 1;
            if !quote_open {
                let end = fields::trim_cr(row).len();
                row.truncate(end);
                return Ok(Some(Row { first_line, too_long: false }));
            }
        }
        // End of input inside an open quote: hand over what there is; it will not parse.
        Ok((first_line != 0).then_some(Row { first_line, too_long: false }))
    }
}

impl Adapter for CsvSettlement {
    fn decode(&self, source: &dyn Source, context: &PayloadContext, sink: &mut Sink<'_>) -> Result<u64, DecodeError> {
        let io_error = |error| DecodeError::Io { source_name: source.name().to_string(), error };
        let reader = source.open().map_err(io_error)?;
        let mut rows =
            RowReader { lines: LineReader::new(reader, RECORD_BYTES_MAX), line: Vec::new(), quote: self.quote };
        let mut raw = Vec::new();
        let header_row = rows.next_row(&mut raw).map_err(io_error)?.ok_or_else(|| {
            DecodeError::Rejected(Rejection::new(ErrorCode::MalformedPayload, "the file has no header row"))
        })?;
        if header_row.too_long {
            return Err(DecodeError::Rejected(Rejection::new(
                ErrorCode::MalformedPayload,
                format!("the header row is longer than {RECORD_BYTES_MAX} bytes"),
            )));
        }
        let header = self.header(&raw).map_err(DecodeError::Rejected)?;
        let header_context: Arc<[u8]> = Arc::from(raw.as_slice());
        let mut handed = 0u64;
        while let Some(row) = rows.next_row(&mut raw).map_err(io_error)? {
            let result = self.decode_row(&header, &raw, context.received_at);
            sink(Decoded { record: row.first_line, raw: raw.clone(), context: header_context.clone(), result })?;
            handed += 1;
        }
        Ok(handed)
    }

    fn decode_unit(
        &self,
        context: &[u8],
        raw: &[u8],
        received_at: DateTime<Utc>,
    ) -> Vec<Result<Transaction, Rejection>> {
        vec![self.header(context).and_then(|header| self.decode_row(&header, raw, received_at))]
    }
}
