//! Field-level parsing shared by every adapter: bounded line reading, the kind vocabulary,
//! amounts, identifiers, currencies and local times. Kept in one place so that `10.505` USD,
//! an unknown kind word or a local time inside a DST gap is rejected with the same code and
//! wording whatever the wire format it arrived in.

use std::collections::BTreeMap;
use std::io::{self, BufRead};
use std::str::FromStr;

use chrono::format::{Item, StrftimeItems};
use chrono::offset::LocalResult;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;

use crate::model::{Kind, ID_LENGTH_MAX};
use crate::money::{from_minor, to_minor, AmountError, Currencies, CurrencyCode};
use crate::rejection::{ErrorCode, Rejection};

/// Significant digits a decimal amount may have (what `rust_decimal` holds exactly).
pub const AMOUNT_DIGITS_MAX: usize = 28;
/// Characters of a provider value quoted in a rejection message; longer values are cut.
pub const QUOTED_VALUE_CHARS_MAX: usize = 64;

/// One line read by [`LineReader`].
#[derive(Clone, Copy, Debug)]
pub struct Line {
    /// 1-based line number in the payload.
    pub number: u64,
    /// The line was longer than the limit: the buffer holds its first `limit + 1` bytes only.
    pub too_long: bool,
}

/// Reads `\n`-terminated lines while never holding more than `limit + 1` bytes of one
/// line, so a payload without line breaks cannot exhaust memory. The `\n` is removed, a
/// `\r` before it is kept (callers decide; see [`trim_cr`]).
pub struct LineReader<R> {
    reader: R,
    limit: usize,
    number: u64,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(reader: R, limit: usize) -> LineReader<R> {
        LineReader { reader, limit, number: 0 }
    }

    /// Reads the next line into `buf` (cleared first); `None` at the end of input.
    pub fn next_line(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<Line>> {
        buf.clear();
        let keep_max = self.limit.saturating_add(1);
        let mut too_long = false;
        let mut read_any = false;
        loop {
            let (consumed, ended) = {
                let available = match self.reader.fill_buf() {
                    Ok(available) => available,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) => return Err(error),
                };
                if available.is_empty() {
                    break;
                }
                read_any = true;
                let newline = available.iter().position(|&byte| byte == b'\n');
                let content = newline.map_or(available, |at| available.get(..at).unwrap_or(available));
                let room = keep_max.saturating_sub(buf.len());
                let kept = content.get(..room.min(content.len())).unwrap_or(content);
                buf.extend_from_slice(kept);
                if kept.len() < content.len() {
                    too_long = true;
                }
                match newline {
                    Some(at) => (at + 1, true),
                    None => (available.len(), false),
                }
            };
            self.reader.consume(consumed);
            if ended {
                break;
            }
        }
        if !read_any {
            return Ok(None);
        }
        self.number += 1;
        let too_long = too_long || trim_cr(buf).len() > self.limit;
        Ok(Some(Line { number: self.number, too_long }))
    }
}

/// The line without a trailing `\r` (CRLF files).
pub fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A provider value quoted for a message, cut at [`QUOTED_VALUE_CHARS_MAX`] characters.
pub fn quote(value: &str) -> String {
    let mut chars = value.char_indices();
    match chars.nth(QUOTED_VALUE_CHARS_MAX) {
        Some((cut, _)) => format!("{:?}...", value.get(..cut).unwrap_or("")),
        None => format!("{value:?}"),
    }
}

/// The provider's words for transaction kinds (`DEBIT` → bet), checked when the adapter is
/// built. Words are matched exactly (case-sensitive, after trimming the field).
#[derive(Clone, Debug)]
pub struct KindVocabulary {
    words: BTreeMap<String, Kind>,
}

impl KindVocabulary {
    pub fn new(words: &BTreeMap<String, String>) -> Result<KindVocabulary, String> {
        if words.is_empty() {
            return Err("kinds: the vocabulary is empty; map each provider word to a kind, e.g. DEBIT = \"bet\"".into());
        }
        let mut checked = BTreeMap::new();
        for (word, name) in words {
            if word.trim().is_empty() || word.trim() != word {
                return Err(format!("kinds: provider word {word:?} is empty or has surrounding spaces"));
            }
            let kind = Kind::from_str(name).map_err(|()| {
                let known: Vec<&str> = Kind::ALL.iter().map(|kind| kind.as_str()).collect();
                format!("kinds: {word:?} maps to unknown kind {name:?} (known kinds: {})", known.join(", "))
            })?;
            checked.insert(word.clone(), kind);
        }
        Ok(KindVocabulary { words: checked })
    }

    pub fn kind(&self, field: &str, word: &str) -> Result<Kind, Rejection> {
        self.words.get(word).copied().ok_or_else(|| {
            let known: Vec<&str> = self.words.keys().map(String::as_str).collect();
            Rejection::field(
                ErrorCode::UnknownKind,
                field,
                format!("{} is not in the provider's kind vocabulary ({})", quote(word), known.join(", ")),
            )
        })
    }
}

/// A required value: absent or empty is `missing_field`.
pub fn required<'v>(field: &str, value: Option<&'v str>) -> Result<&'v str, Rejection> {
    match value {
        Some(text) if !text.is_empty() => Ok(text),
        Some(_) => Err(Rejection::field(ErrorCode::MissingField, field, "is empty")),
        None => Err(Rejection::field(ErrorCode::MissingField, field, "is missing")),
    }
}

/// An identifier (transaction id, account, game, ...): at most [`ID_LENGTH_MAX`]
/// characters, no control characters.
pub fn identifier(field: &str, text: &str) -> Result<String, Rejection> {
    let length = text.chars().count();
    if length > ID_LENGTH_MAX {
        return Err(Rejection::field(
            ErrorCode::InvalidField,
            field,
            format!("{} is {length} characters long, at most {ID_LENGTH_MAX} are allowed", quote(text)),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(Rejection::field(
            ErrorCode::InvalidField,
            field,
            format!("{} contains a control character", quote(text)),
        ));
    }
    Ok(text.to_string())
}

/// An optional identifier: absent or empty is `None`.
pub fn optional_identifier(field: &str, value: Option<&str>) -> Result<Option<String>, Rejection> {
    match value {
        Some(text) if !text.is_empty() => identifier(field, text).map(Some),
        _ => Ok(None),
    }
}

pub fn currency(currencies: &Currencies, field: &str, text: &str) -> Result<(CurrencyCode, u32), Rejection> {
    currencies.lookup(text).ok_or_else(|| {
        Rejection::field(ErrorCode::UnknownCurrency, field, format!("{} is not a known currency", quote(text)))
    })
}

fn invalid_amount(field: &str, message: String) -> Rejection {
    Rejection::field(ErrorCode::InvalidAmount, field, message)
}

/// A decimal amount (`-12.50`): optional sign, digits, optional `.` and digits. No exponent,
/// no thousands separators, at most the currency's exponent of significant decimals. The
/// result has exactly the currency's scale (`10.5` USD → `10.50`).
pub fn decimal_amount(field: &str, text: &str, currency: CurrencyCode, exponent: u32) -> Result<Decimal, Rejection> {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits_only = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    if !digits_only(whole) || !fraction.is_none_or(digits_only) {
        return Err(invalid_amount(field, format!("{} is not a plain decimal number", quote(text))));
    }
    let digits = whole.trim_start_matches('0').len() + fraction.map_or(0, str::len);
    if digits > AMOUNT_DIGITS_MAX {
        return Err(invalid_amount(field, format!("{} has more than {AMOUNT_DIGITS_MAX} digits", quote(text))));
    }
    let amount = Decimal::from_str(text.strip_prefix('+').unwrap_or(text))
        .map_err(|error| invalid_amount(field, format!("{} is not a decimal number: {error}", quote(text))))?;
    let minor = to_minor(amount, exponent).map_err(|error| match error {
        AmountError::ScaleTooFine { scale, exponent } => {
            invalid_amount(field, format!("{} has {scale} decimal places, {currency} allows {exponent}", quote(text)))
        }
        AmountError::Overflow => {
            invalid_amount(field, format!("{} does not fit in 64-bit {currency} minor units", quote(text)))
        }
    })?;
    Ok(from_minor(minor, exponent))
}

/// An integer amount in minor units (`+000012345`, `-500`): optional sign, digits.
pub fn minor_units(field: &str, text: &str) -> Result<i64, Rejection> {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if unsigned.is_empty() || !unsigned.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(invalid_amount(field, format!("{} is not an integer amount in minor units", quote(text))));
    }
    text.strip_prefix('+')
        .unwrap_or(text)
        .parse::<i64>()
        .map_err(|_| invalid_amount(field, format!("{} does not fit in 64-bit minor units", quote(text))))
}

/// Checks a chrono format string when the adapter is built.
pub fn check_time_format(key: &str, format: &str) -> Result<(), String> {
    if format.is_empty() || StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
        return Err(format!("{key}: {format:?} is not a valid chrono format"));
    }
    Ok(())
}

/// A local wall-clock time in the provider's zone, as UTC. An ambiguous time (the hour
/// repeated when clocks go back) is taken as the earliest instant; a time that does not
/// exist (skipped when clocks go forward) is `invalid_field`.
pub fn local_time(field: &str, text: &str, format: &str, timezone: Tz) -> Result<DateTime<Utc>, Rejection> {
    let naive = NaiveDateTime::parse_from_str(text, format).map_err(|error| {
        Rejection::field(
            ErrorCode::InvalidField,
            field,
            format!("{} is not a local time in the format {format:?}: {error}", quote(text)),
        )
    })?;
    match timezone.from_local_datetime(&naive) {
        LocalResult::Single(at) => Ok(at.with_timezone(&Utc)),
        LocalResult::Ambiguous(earliest, _) => Ok(earliest.with_timezone(&Utc)),
        LocalResult::None => Err(Rejection::field(
            ErrorCode::InvalidField,
            field,
            format!("{} does not exist in {timezone} (skipped by a daylight-saving change)", quote(text)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], limit: usize) -> Vec<(u64, bool, Vec<u8>)> {
        let mut reader = LineReader::new(input, limit);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(line) = reader.next_line(&mut buf).unwrap() {
            out.push((line.number, line.too_long, buf.clone()));
        }
        out
    }

    #[test]
    fn line_reader_bounds_lines_and_keeps_numbers() {
        assert_eq!(
            lines(b"ab\r\n\ncdefgh\nxyz", 4),
            vec![
                (1, false, b"ab\r".to_vec()),
                (2, false, b"".to_vec()),
                (3, true, b"cdefg".to_vec()),
                (4, false, b"xyz".to_vec())
            ]
        );
        assert_eq!(lines(b"abcd\r\n", 4), vec![(1, false, b"abcd\r".to_vec())]);
        assert!(lines(b"", 4).is_empty());
    }

    #[test]
    fn amounts_are_strict() {
        let usd = CurrencyCode::parse("USD").unwrap();
        assert_eq!(decimal_amount("a", "10.5", usd, 2).unwrap().to_string(), "10.50");
        assert_eq!(decimal_amount("a", "+007", usd, 2).unwrap().to_string(), "7.00");
        for bad in ["1e3", "1_000", ".5", "5.", "", "-", "1.2.3", " 1", "1,00", "10.505"] {
            assert_eq!(decimal_amount("a", bad, usd, 2).unwrap_err().code, ErrorCode::InvalidAmount, "{bad}");
        }
        assert_eq!(minor_units("a", "+0012"), Ok(12));
        assert_eq!(minor_units("a", "-5"), Ok(-5));
        assert!(minor_units("a", "9223372036854775808").is_err());
        assert!(minor_units("a", "12.0").is_err());
    }

    #[test]
    fn local_times_handle_dst() {
        let london: Tz = "Europe/London".parse().unwrap();
        let format = "%Y-%m-%d %H:%M:%S";
        let gap = local_time("t", "2026-03-29 01:30:00", format, london).unwrap_err();
        assert_eq!(gap.code, ErrorCode::InvalidField);
        let ambiguous = local_time("t", "2026-10-25 01:30:00", format, london).unwrap();
        assert_eq!(ambiguous.to_rfc3339(), "2026-10-25T00:30:00+00:00");
        assert!(check_time_format("f", "%Y-%Q").is_err());
    }

    #[test]
    fn quoting_cuts_long_values_on_char_boundaries() {
        let long = "é".repeat(100);
        assert!(quote(&long).ends_with("..."));
        assert_eq!(quote("ab"), "\"ab\"");
    }
}
