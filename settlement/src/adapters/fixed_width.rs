//! A legacy bank-style fixed-width batch file.
//!
//! # Wire format
//!
//! Text lines (UTF-8, `\n` or `\r\n`), each a record whose type is the code at
//! `record_type` (default codes `H`, `D`, `T`). Every field is at a configured 0-based
//! character position and width (`{ start_chars = 17, width_chars = 12 }`), padded with
//! spaces (trimmed when read); a line may be longer than its fields, not shorter.
//!
//! * **Header** (first non-empty line, exactly one): optional `batch_id`, optional
//!   `business_date` (`business_date_format`, default `%Y%m%d`), and `currency` unless a
//!   fixed `currency` is configured (exactly one of the two).
//! * **Detail**: `id`, `account`, `kind` (a code looked up in `[kinds]`), `amount_minor`
//!   (integer minor units with an optional `+`/`-` sign, zero-padded: `+000000001050`),
//!   `occurred_at` (local time in the provider's zone, `timestamp_format`, default
//!   `%Y%m%d%H%M%S`; a skipped DST time is `invalid_field`, a repeated one its earliest
//!   instant), and optional `original_id` (the reference of the transaction reversed),
//!   `game`, `round`, `session`.
//! * **Trailer** (last non-empty line, exactly one): `record_count` = number of detail
//!   records, `control_total_minor` = sum of all detail amounts in minor units (signed).
//!
//! # Whole-file checks
//!
//! The file is read twice. Pass 1 checks the structure (header first, trailer last) and
//! that the trailer's count and control total match the details, in exact checked integer
//! arithmetic; any failure rejects the whole file (`malformed_payload`,
//! `record_count_mismatch`, `control_total_mismatch`, or the header field's code) before a
//! single detail is handed over. Pass 2 hands over every line but the header and trailer.
//!
//! # Units
//!
//! Each detail (or unrecognised) line is a unit; `record` is its line number, `raw` its
//! bytes without the line break. Empty lines are skipped.
//!
//! # Context (for `decode_unit`)
//!
//! The header record's exact bytes, so the header currency is applied again.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use super::fields::{self, quote, KindVocabulary, LineReader};
use super::{
    Adapter, AdapterConfigError, DecodeError, Decoded, PayloadContext, ProviderContext, Sink, Source, RECORD_BYTES_MAX,
};
use crate::model::{sha256, Transaction};
use crate::money::{from_minor, Currencies, CurrencyCode};
use crate::rejection::{ErrorCode, Rejection};

/// Line numbers of unreadable detail amounts quoted in a control-total message.
pub const UNREADABLE_LINES_QUOTED_MAX: usize = 10;

/// Where a field is in its record: 0-based first character and width, in characters.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FieldPosition {
    pub start_chars: usize,
    pub width_chars: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedWidthConfig {
    pub record_type: FieldPosition,
    #[serde(default = "default_header_code")]
    pub header_code: String,
    #[serde(default = "default_detail_code")]
    pub detail_code: String,
    #[serde(default = "default_trailer_code")]
    pub trailer_code: String,
    #[serde(default)]
    pub header: HeaderFields,
    pub detail: DetailFields,
    pub trailer: TrailerFields,
    /// Provider code → canonical kind name (`DEP = "deposit"`).
    pub kinds: BTreeMap<String, String>,
    #[serde(default = "default_timestamp_format")]
    pub timestamp_format: String,
    #[serde(default = "default_business_date_format")]
    pub business_date_format: String,
    /// Fixed currency, for files whose header carries none.
    #[serde(default)]
    pub currency: Option<String>,
}

fn default_header_code() -> String {
    "H".into()
}

fn default_detail_code() -> String {
    "D".into()
}

fn default_trailer_code() -> String {
    "T".into()
}

fn default_timestamp_format() -> String {
    "%Y%m%d%H%M%S".into()
}

fn default_business_date_format() -> String {
    "%Y%m%d".into()
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderFields {
    #[serde(default)]
    pub batch_id: Option<FieldPosition>,
    #[serde(default)]
    pub business_date: Option<FieldPosition>,
    #[serde(default)]
    pub currency: Option<FieldPosition>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailFields {
    pub id: FieldPosition,
    pub account: FieldPosition,
    pub kind: FieldPosition,
    pub amount_minor: FieldPosition,
    pub occurred_at: FieldPosition,
    #[serde(default)]
    pub original_id: Option<FieldPosition>,
    #[serde(default)]
    pub game: Option<FieldPosition>,
    #[serde(default)]
    pub round: Option<FieldPosition>,
    #[serde(default)]
    pub session: Option<FieldPosition>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrailerFields {
    pub record_count: FieldPosition,
    pub control_total_minor: FieldPosition,
}

pub struct FixedWidth {
    provider: String,
    timezone: Tz,
    currencies: Arc<Currencies>,
    config: FixedWidthConfig,
    kinds: KindVocabulary,
    fixed_currency: Option<(CurrencyCode, u32)>,
}

/// Checks that the fields of one record type have a width and do not overlap.
fn check_layout(record: &str, fields: &[(&str, Option<FieldPosition>)]) -> Result<(), String> {
    let mut spans: Vec<(usize, usize, &str)> = Vec::new();
    for &(name, position) in fields {
        let Some(position) = position else { continue };
        if position.width_chars == 0 {
            return Err(format!("{record}.{name}: width_chars is 0"));
        }
        let end = position
            .start_chars
            .checked_add(position.width_chars)
            .filter(|&end| end <= RECORD_BYTES_MAX)
            .ok_or_else(|| format!("{record}.{name}: the field ends beyond {RECORD_BYTES_MAX} characters"))?;
        if let Some((_, _, other)) =
            spans.iter().find(|&&(start, other_end, _)| position.start_chars < other_end && start < end)
        {
            return Err(format!("{record}.{name} overlaps {record}.{other}"));
        }
        spans.push((position.start_chars, end, name));
    }
    Ok(())
}

/// The characters of `line` at `position`, trimmed of padding; `Err` names the field when
/// the line is too short. Slicing is by characters, so it never splits a UTF-8 sequence.
fn field<'l>(line: &'l str, name: &str, position: FieldPosition) -> Result<&'l str, Rejection> {
    let mut boundaries = line.char_indices().map(|(index, _)| index).chain(std::iter::once(line.len()));
    let start = boundaries.nth(position.start_chars);
    let end = start.and_then(|_| boundaries.nth(position.width_chars.saturating_sub(1)));
    match (start, end) {
        (Some(start), Some(end)) => Ok(line.get(start..end).unwrap_or("").trim_matches(' ')),
        _ => Err(Rejection::field(
            ErrorCode::MalformedRecord,
            name,
            format!(
                "the line is {} characters long, field {name} needs {} (start_chars {} + width_chars {})",
                line.chars().count(),
                position.start_chars.saturating_add(position.width_chars),
                position.start_chars,
                position.width_chars
            ),
        )),
    }
}

/// What pass 1 learned: the header record and where the header and trailer are.
struct Batch {
    header_raw: Vec<u8>,
    header_line: u64,
    trailer_line: u64,
}

fn whole(rejection: Rejection) -> DecodeError {
    DecodeError::Rejected(rejection)
}

fn malformed_payload(message: String) -> DecodeError {
    whole(Rejection::new(ErrorCode::MalformedPayload, message))
}

impl FixedWidth {
    pub fn new(config: &FixedWidthConfig, provider: &ProviderContext) -> Result<FixedWidth, AdapterConfigError> {
        let error = |message: String| AdapterConfigError { provider: provider.name.clone(), message };
        let kinds = KindVocabulary::new(&config.kinds).map_err(error)?;
        let record_type = Some(config.record_type);
        let (header, detail, trailer) = (&config.header, &config.detail, &config.trailer);
        check_layout(
            "header",
            &[
                ("record_type", record_type),
                ("batch_id", header.batch_id),
                ("business_date", header.business_date),
                ("currency", header.currency),
            ],
        )
        .map_err(error)?;
        check_layout(
            "detail",
            &[
                ("record_type", record_type),
                ("id", Some(detail.id)),
                ("account", Some(detail.account)),
                ("kind", Some(detail.kind)),
                ("amount_minor", Some(detail.amount_minor)),
                ("occurred_at", Some(detail.occurred_at)),
                ("original_id", detail.original_id),
                ("game", detail.game),
                ("round", detail.round),
                ("session", detail.session),
            ],
        )
        .map_err(error)?;
        check_layout(
            "trailer",
            &[
                ("record_type", record_type),
                ("record_count", Some(trailer.record_count)),
                ("control_total_minor", Some(trailer.control_total_minor)),
            ],
        )
        .map_err(error)?;
        let codes = [
            ("header_code", &config.header_code),
            ("detail_code", &config.detail_code),
            ("trailer_code", &config.trailer_code),
        ];
        for (key, code) in codes {
            if code.chars().count() != config.record_type.width_chars || code.trim() != code {
                return Err(error(format!(
                    "{key}: {code:?} must be {} characters without surrounding spaces (record_type.width_chars)",
                    config.record_type.width_chars
                )));
            }
        }
        if config.header_code == config.detail_code
            || config.header_code == config.trailer_code
            || config.detail_code == config.trailer_code
        {
            return Err(error("header_code, detail_code and trailer_code must differ".into()));
        }
        fields::check_time_format("timestamp_format", &config.timestamp_format).map_err(error)?;
        fields::check_time_format("business_date_format", &config.business_date_format).map_err(error)?;
        let fixed_currency = match (&config.currency, header.currency) {
            (Some(_), Some(_)) => return Err(error("set header.currency or currency, not both".into())),
            (None, None) => {
                return Err(error("no currency: set header.currency, or currency for files without one".into()))
            }
            (None, Some(_)) => None,
            (Some(code), None) => Some(
                provider
                    .currencies
                    .lookup(code)
                    .ok_or_else(|| error(format!("currency: {code:?} is not a known currency")))?,
            ),
        };
        Ok(FixedWidth {
            provider: provider.name.clone(),
            timezone: provider.timezone,
            currencies: provider.currencies.clone(),
            config: config.clone(),
            kinds,
            fixed_currency,
        })
    }

    fn record_type<'l>(&self, line: &'l str) -> Result<&'l str, Rejection> {
        field(line, "record_type", self.config.record_type)
    }

    /// The header's currency (and checks of its other fields).
    fn header(&self, raw: &[u8]) -> Result<(CurrencyCode, u32), Rejection> {
        let line = std::str::from_utf8(fields::trim_cr(raw)).map_err(|error| {
            Rejection::new(ErrorCode::MalformedPayload, format!("the header is not UTF-8: {error}"))
        })?;
        let record_type = self.record_type(line)?;
        if record_type != self.config.header_code {
            return Err(Rejection::field(
                ErrorCode::MalformedPayload,
                "record_type",
                format!(
                    "the first record has type {}, expected the header {:?}",
                    quote(record_type),
                    self.config.header_code
                ),
            ));
        }
        let header = &self.config.header;
        if let Some(position) = header.batch_id {
            fields::required("batch_id", Some(field(line, "batch_id", position)?))?;
        }
        if let Some(position) = header.business_date {
            let text = fields::required("business_date", Some(field(line, "business_date", position)?))?;
            NaiveDate::parse_from_str(text, &self.config.business_date_format).map_err(|error| {
                Rejection::field(
                    ErrorCode::InvalidField,
                    "business_date",
                    format!(
                        "{} is not a date in the format {:?}: {error}",
                        quote(text),
                        self.config.business_date_format
                    ),
                )
            })?;
        }
        match (self.fixed_currency, header.currency) {
            (Some(fixed), _) => Ok(fixed),
            (None, Some(position)) => {
                let text = fields::required("currency", Some(field(line, "currency", position)?))?;
                fields::currency(&self.currencies, "currency", text)
            }
            (None, None) => Err(Rejection::new(ErrorCode::MalformedPayload, "no header currency is configured")),
        }
    }

    /// One non-header, non-trailer line → a transaction, with the header's currency.
    fn decode_line(
        &self,
        currency: (CurrencyCode, u32),
        raw: &[u8],
        received_at: DateTime<Utc>,
    ) -> Result<Transaction, Rejection> {
        let malformed = |message: String| Rejection::new(ErrorCode::MalformedRecord, message);
        let text = fields::trim_cr(raw);
        if text.len() > RECORD_BYTES_MAX {
            return Err(malformed(format!("the line is longer than {RECORD_BYTES_MAX} bytes")));
        }
        let line = std::str::from_utf8(text).map_err(|error| malformed(format!("the line is not UTF-8: {error}")))?;
        let record_type = self.record_type(line)?;
        if record_type != self.config.detail_code {
            return Err(Rejection::field(
                ErrorCode::MalformedRecord,
                "record_type",
                format!(
                    "record type {} is not a detail ({:?}); the header and trailer may appear only once",
                    quote(record_type),
                    self.config.detail_code
                ),
            ));
        }
        let detail = &self.config.detail;
        let text_of = |name: &str, position: FieldPosition| field(line, name, position);
        let optional = |name: &str, position: Option<FieldPosition>| -> Result<Option<String>, Rejection> {
            match position {
                Some(position) => fields::optional_identifier(name, Some(text_of(name, position)?)),
                None => Ok(None),
            }
        };
        let id = fields::identifier("id", fields::required("id", Some(text_of("id", detail.id)?))?)?;
        let account =
            fields::identifier("account", fields::required("account", Some(text_of("account", detail.account)?))?)?;
        let kind = self.kinds.kind("kind", fields::required("kind", Some(text_of("kind", detail.kind)?))?)?;
        let amount_text = fields::required("amount_minor", Some(text_of("amount_minor", detail.amount_minor)?))?;
        let (code, exponent) = currency;
        let amount = from_minor(fields::minor_units("amount_minor", amount_text)?, exponent);
        let occurred_text = fields::required("occurred_at", Some(text_of("occurred_at", detail.occurred_at)?))?;
        let occurred_at =
            fields::local_time("occurred_at", occurred_text, &self.config.timestamp_format, self.timezone)?;
        Ok(Transaction {
            provider: self.provider.clone(),
            provider_tx_id: id,
            kind,
            account,
            game_id: optional("game", detail.game)?,
            round_id: optional("round", detail.round)?,
            session_id: optional("session", detail.session)?,
            currency: code,
            amount,
            occurred_at,
            received_at,
            original_tx_id: optional("original_id", detail.original_id)?,
            raw_sha256: sha256(text),
        })
    }

    /// Pass 1: structure, record count and control total.
    fn check_batch(&self, source: &dyn Source) -> Result<Batch, DecodeError> {
        let io_error = |error| DecodeError::Io { source_name: source.name().to_string(), error };
        let mut lines = LineReader::new(source.open().map_err(io_error)?, RECORD_BYTES_MAX);
        let mut buf = Vec::new();
        let mut header: Option<(u64, Vec<u8>)> = None;
        let mut trailer: Option<(u64, Vec<u8>)> = None;
        let mut details = 0u64;
        let mut total = 0i64;
        let mut unreadable: Vec<u64> = Vec::new();
        let mut unreadable_count = 0usize;
        while let Some(line) = lines.next_line(&mut buf).map_err(io_error)? {
            let raw = fields::trim_cr(&buf);
            if raw.is_empty() {
                continue;
            }
            if let Some((trailer_line, _)) = &trailer {
                return Err(malformed_payload(format!(
                    "line {} follows the trailer (line {trailer_line}); the trailer must be the last record",
                    line.number
                )));
            }
            if header.is_none() {
                if line.too_long {
                    return Err(malformed_payload(format!("the header is longer than {RECORD_BYTES_MAX} bytes")));
                }
                self.header(raw).map_err(|rejection| whole(header_rejection(rejection, line.number)))?;
                header = Some((line.number, raw.to_vec()));
                continue;
            }
            // Lines that cannot be read here are reported as units in pass 2.
            let Some(text) = std::str::from_utf8(raw).ok().filter(|_| !line.too_long) else { continue };
            let Ok(record_type) = self.record_type(text) else { continue };
            if record_type == self.config.header_code {
                return Err(malformed_payload(format!("line {} is a second header", line.number)));
            } else if record_type == self.config.trailer_code {
                trailer = Some((line.number, raw.to_vec()));
            } else if record_type == self.config.detail_code {
                details += 1;
                let amount = field(text, "amount_minor", self.config.detail.amount_minor)
                    .and_then(|amount| fields::minor_units("amount_minor", amount));
                match amount {
                    Ok(amount) => {
                        total = total.checked_add(amount).ok_or_else(|| {
                            whole(Rejection::field(
                                ErrorCode::ControlTotalMismatch,
                                "control_total_minor",
                                format!("the detail amounts overflow 64-bit minor units at line {}", line.number),
                            ))
                        })?;
                    }
                    Err(_) => {
                        unreadable_count += 1;
                        if unreadable.len() < UNREADABLE_LINES_QUOTED_MAX {
                            unreadable.push(line.number);
                        }
                    }
                }
            }
        }
        let Some((header_line, header_raw)) = header else {
            return Err(malformed_payload(format!("the file has no header record ({:?})", self.config.header_code)));
        };
        let Some((trailer_line, trailer_raw)) = trailer else {
            return Err(malformed_payload(format!("the file has no trailer record ({:?})", self.config.trailer_code)));
        };
        let trailer_text = std::str::from_utf8(&trailer_raw).unwrap_or("");
        let trailer_field = |name: &str, position: FieldPosition| {
            let value = field(trailer_text, name, position).and_then(|text| {
                fields::minor_units(name, text).map_err(|_| {
                    Rejection::field(ErrorCode::MalformedPayload, name, format!("{} is not an integer", quote(text)))
                })
            });
            value.map_err(|rejection| {
                whole(Rejection {
                    code: ErrorCode::MalformedPayload,
                    field: rejection.field,
                    message: format!("trailer (line {trailer_line}): {}", rejection.message),
                })
            })
        };
        let expected_count = trailer_field("record_count", self.config.trailer.record_count)?;
        let expected_total = trailer_field("control_total_minor", self.config.trailer.control_total_minor)?;
        if u64::try_from(expected_count).ok() != Some(details) {
            return Err(whole(Rejection::field(
                ErrorCode::RecordCountMismatch,
                "record_count",
                format!(
                    "the trailer (line {trailer_line}) expects {expected_count} detail records, the file has {details}"
                ),
            )));
        }
        if expected_total != total {
            let unreadable_note = if unreadable_count == 0 {
                String::new()
            } else {
                let lines: Vec<String> = unreadable.iter().map(u64::to_string).collect();
                format!("; {unreadable_count} detail amounts could not be read (lines {})", lines.join(", "))
            };
            return Err(whole(Rejection::field(
                ErrorCode::ControlTotalMismatch,
                "control_total_minor",
                format!(
                    "the trailer (line {trailer_line}) expects a control total of {expected_total}, \
                     the detail amounts sum to {total}{unreadable_note}"
                ),
            )));
        }
        // Unreadable amounts the trailer's total agrees without are rejected one by one in pass 2.
        Ok(Batch { header_raw, header_line, trailer_line })
    }
}

/// A header problem rejects the whole file; the message says where the header is.
fn header_rejection(rejection: Rejection, line: u64) -> Rejection {
    let code = match rejection.code {
        ErrorCode::MalformedRecord => ErrorCode::MalformedPayload,
        other => other,
    };
    Rejection { code, field: rejection.field, message: format!("header (line {line}): {}", rejection.message) }
}

impl Adapter for FixedWidth {
    fn decode(&self, source: &dyn Source, context: &PayloadContext, sink: &mut Sink<'_>) -> Result<u64, DecodeError> {
        let batch = self.check_batch(source)?;
        let currency = self
            .header(&batch.header_raw)
            .map_err(|rejection| whole(header_rejection(rejection, batch.header_line)))?;
        let header_context: Arc<[u8]> = Arc::from(batch.header_raw.as_slice());
        let io_error = |error| DecodeError::Io { source_name: source.name().to_string(), error };
        let mut lines = LineReader::new(source.open().map_err(io_error)?, RECORD_BYTES_MAX);
        let mut buf = Vec::new();
        let mut handed = 0u64;
        while let Some(line) = lines.next_line(&mut buf).map_err(io_error)? {
            let raw = fields::trim_cr(&buf);
            if raw.is_empty() || line.number == batch.header_line || line.number == batch.trailer_line {
                continue;
            }
            let result = self.decode_line(currency, raw, context.received_at);
            sink(Decoded { record: line.number, raw: raw.to_vec(), context: header_context.clone(), result })?;
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
        vec![self.header(context).and_then(|currency| self.decode_line(currency, raw, received_at))]
    }
}
