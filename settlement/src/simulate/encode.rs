//! Writing simulated transactions in each provider's native format, driven by the same
//! adapter configuration the ingest path decodes with (`AdapterConfig`): field paths and
//! column names, the kind vocabulary (read backwards), amount style, local time formats,
//! HMAC signing for webhook capture logs, and fixed-width header/trailer control totals.
//! If the files written here do not decode through `adapters`, the simulator is wrong,
//! and `settlement/tests/simulate.rs` says so.
//!
//! Where the bytes go is a [`Sink`]. The [`FileSink`] writes files under the output
//! directory. An HTTP sink (POST each webhook delivery to the detector, upload each
//! settlement and batch file) lands with the detector's ingest API: the encoders already
//! hand over whole deliveries (`append` of one capture line) and whole files.
//!
//! Formatting is hand-written (integers, timestamps) because it runs for every one of
//! tens of millions of records; chrono's formatter is used only for time formats outside
//! the common `%Y %m %d %H %M %S` subset.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use chrono::format::{Fixed, Item, Numeric, StrftimeItems};
use chrono::{Offset, TimeZone};
use chrono_tz::Tz;
use hmac::{Hmac, Mac};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use sha2::Sha256;

use super::scenarios::{Event, Outcome, Recorder, Scenario};
use super::SimulateError;
use crate::adapters::csv_settlement::CsvSettlementConfig;
use crate::adapters::fixed_width::{FieldPosition, FixedWidthConfig};
use crate::adapters::json_webhook::{JsonWebhookConfig, TimestampFormat};
use crate::adapters::AdapterConfig;
use crate::model::Kind;
use crate::rejection::ErrorCode;

/// Transactions in one webhook batch delivery (providers with a `batch_field`).
pub const JSON_BATCH_ITEMS_MAX: usize = 50;
/// A batch delivery is sent once its first item is this old (delivery time).
pub const JSON_BATCH_WINDOW_MS: i64 = 1_000;
/// Detail records per fixed-width batch file (`batch_records_max`), at most.
pub const BATCH_RECORDS_MAX: usize = 1_000_000;
/// Buffer of each output file.
pub const FILE_BUFFER_BYTES: usize = 1 << 20;

pub(crate) const MS_PER_DAY: i64 = 86_400_000;
pub(crate) const MS_PER_HOUR: i64 = 3_600_000;

// ---------------------------------------------------------------------------------------
// Sinks

/// Where generated payloads go. A payload is opened by name (relative to the provider's
/// output), appended to, and ended. For webhook capture logs each `append` is exactly one
/// delivery (one line), so a streaming sink can send it as one request.
pub trait Sink: Send {
    fn begin(&mut self, name: &str) -> io::Result<usize>;
    fn append(&mut self, payload: usize, bytes: &[u8]) -> io::Result<()>;
    fn end(&mut self, payload: usize) -> io::Result<()>;
}

/// Writes each payload to `directory/name`.
pub struct FileSink {
    directory: PathBuf,
    open: Vec<Option<BufWriter<File>>>,
}

impl FileSink {
    pub fn new(directory: PathBuf) -> io::Result<FileSink> {
        std::fs::create_dir_all(&directory)?;
        Ok(FileSink { directory, open: Vec::new() })
    }
}

impl Sink for FileSink {
    fn begin(&mut self, name: &str) -> io::Result<usize> {
        let file = File::create(self.directory.join(name))?;
        self.open.push(Some(BufWriter::with_capacity(FILE_BUFFER_BYTES, file)));
        Ok(self.open.len() - 1)
    }

    fn append(&mut self, payload: usize, bytes: &[u8]) -> io::Result<()> {
        match self.open.get_mut(payload).and_then(Option::as_mut) {
            Some(writer) => writer.write_all(bytes),
            None => Err(io::Error::other(format!("payload {payload} is not open"))),
        }
    }

    fn end(&mut self, payload: usize) -> io::Result<()> {
        match self.open.get_mut(payload).and_then(Option::take) {
            Some(mut writer) => writer.flush(),
            None => Err(io::Error::other(format!("payload {payload} is not open"))),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Numbers and times

/// The decimal digits of `value` in a stack buffer: (buffer, index of the first digit).
fn digits(mut value: u64) -> ([u8; 20], usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    (digits, at)
}

pub(crate) fn push_u64(out: &mut Vec<u8>, value: u64) {
    let (digits, first) = digits(value);
    out.extend_from_slice(&digits[first..]);
}

pub(crate) fn push_i64(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    push_u64(out, value.unsigned_abs());
}

/// `value` zero-padded to at least `width` digits.
pub(crate) fn push_padded(out: &mut Vec<u8>, value: u64, width: usize) {
    let (digits, first) = digits(value);
    let length = digits.len() - first;
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(length)));
    out.extend_from_slice(&digits[first..]);
}

/// Minor units as a decimal with exactly `exponent` places (`1050, 2` → `10.50`).
pub(crate) fn push_decimal(out: &mut Vec<u8>, minor: i64, exponent: u32) {
    if minor < 0 {
        out.push(b'-');
    }
    let magnitude = minor.unsigned_abs();
    if exponent == 0 {
        push_u64(out, magnitude);
        return;
    }
    let scale = 10u64.pow(exponent);
    push_u64(out, magnitude / scale);
    out.push(b'.');
    push_padded(out, magnitude % scale, exponent as usize);
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A provider's wall clock: UTC milliseconds → local milliseconds, with the zone's offset
/// cached per quarter hour (offsets change at most at quarter hours).
#[derive(Clone)]
pub(crate) struct LocalClock {
    pub(crate) timezone: Tz,
    bucket: i64,
    offset_ms: i64,
}

impl LocalClock {
    pub(crate) fn new(timezone: Tz) -> LocalClock {
        LocalClock { timezone, bucket: i64::MIN, offset_ms: 0 }
    }

    pub(crate) fn offset_ms(&mut self, utc_ms: i64) -> i64 {
        let bucket = utc_ms.div_euclid(900_000);
        if bucket != self.bucket {
            self.bucket = bucket;
            let offset_seconds = chrono::DateTime::from_timestamp_millis(bucket * 900_000)
                .map(|at| self.timezone.offset_from_utc_datetime(&at.naive_utc()).fix().local_minus_utc())
                .unwrap_or(0);
            self.offset_ms = i64::from(offset_seconds) * 1000;
        }
        self.offset_ms
    }

    /// The offset at exactly `utc_ms` (no cache): for the rare instants near a change.
    pub(crate) fn offset_exact_ms(&self, utc_ms: i64) -> i64 {
        chrono::DateTime::from_timestamp_millis(utc_ms)
            .map(|at| i64::from(self.timezone.offset_from_utc_datetime(&at.naive_utc()).fix().local_minus_utc()) * 1000)
            .unwrap_or(0)
    }

    pub(crate) fn local_ms(&mut self, utc_ms: i64) -> i64 {
        utc_ms + self.offset_ms(utc_ms)
    }

    /// The local calendar day (days since 1970-01-01) of an instant: its business day.
    pub(crate) fn local_day(&mut self, utc_ms: i64) -> i64 {
        self.local_ms(utc_ms).div_euclid(MS_PER_DAY)
    }
}

/// The first instant after `utc_ms` whose local window (local time divided by `window_ms`:
/// an hour, a day) is a later one: when a batch file of that window is complete and
/// dropped. A window may be longer or shorter than `window_ms` when the clocks change in it.
pub(crate) fn window_end_ms(clock: &LocalClock, utc_ms: i64, window_ms: i64) -> i64 {
    let window = |at: i64| (at + clock.offset_exact_ms(at)).div_euclid(window_ms);
    let current = window(utc_ms);
    // window(low) is the current one, window(high) a later one (offsets move by hours, not days).
    let (mut low, mut high) = (utc_ms, utc_ms.saturating_add(window_ms + MS_PER_DAY));
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if window(middle) > current {
            high = middle;
        } else {
            low = middle;
        }
    }
    high
}

/// The longest local window of `window_ms` (an hour, a day) that overlaps `from_ms..to_ms`:
/// how long a batch file's records can wait for its drop in normal operation.
pub(crate) fn longest_window_ms(timezone: Tz, from_ms: i64, to_ms: i64, window_ms: i64) -> i64 {
    let clock = LocalClock::new(timezone);
    let mut start = window_end_ms(&clock, from_ms.saturating_sub(window_ms + MS_PER_HOUR), window_ms);
    let mut longest = window_ms;
    while start < to_ms {
        let end = window_end_ms(&clock, start, window_ms);
        longest = longest.max(end - start);
        start = end;
    }
    longest
}

/// `YYYY-MM-DD` of a day count.
pub(crate) fn date_text(day: i64) -> String {
    let (year, month, day) = civil_from_days(day);
    format!("{year:04}-{month:02}-{day:02}")
}

/// RFC 3339 UTC with milliseconds, for the simulator's own files (truth, episodes).
pub(crate) fn push_utc_rfc3339(out: &mut Vec<u8>, utc_ms: i64) {
    push_rfc3339(out, utc_ms, 0);
}

/// RFC 3339 of an instant in a zone `offset_ms` from UTC, with milliseconds.
pub(crate) fn push_rfc3339(out: &mut Vec<u8>, utc_ms: i64, offset_ms: i64) {
    let local = utc_ms + offset_ms;
    let (year, month, day) = civil_from_days(local.div_euclid(MS_PER_DAY));
    let in_day = local.rem_euclid(MS_PER_DAY);
    push_padded(out, year.max(0) as u64, 4);
    out.push(b'-');
    push_padded(out, u64::from(month), 2);
    out.push(b'-');
    push_padded(out, u64::from(day), 2);
    out.push(b'T');
    push_clock(out, in_day, b':');
    out.push(b'.');
    push_padded(out, (in_day % 1000) as u64, 3);
    if offset_ms == 0 {
        out.push(b'Z');
    } else {
        out.push(if offset_ms < 0 { b'-' } else { b'+' });
        let minutes = offset_ms.unsigned_abs() / 60_000;
        push_padded(out, minutes / 60, 2);
        out.push(b':');
        push_padded(out, minutes % 60, 2);
    }
}

fn push_clock(out: &mut Vec<u8>, in_day_ms: i64, separator: u8) {
    let seconds = (in_day_ms / 1000) as u64;
    push_padded(out, seconds / 3600, 2);
    out.push(separator);
    push_padded(out, seconds / 60 % 60, 2);
    out.push(separator);
    push_padded(out, seconds % 60, 2);
}

#[derive(Clone, Debug)]
enum TimePiece {
    Literal(Vec<u8>),
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

/// A chrono format string compiled to the pieces it uses; formats outside the fast
/// subset fall back to chrono.
#[derive(Clone, Debug)]
pub(crate) struct TimeFormat {
    pieces: Option<Vec<TimePiece>>,
    /// Whether the format writes fractions of a second.
    fractional: bool,
    text: String,
}

impl TimeFormat {
    pub(crate) fn new(text: &str) -> TimeFormat {
        let mut pieces = Vec::new();
        let mut fast = true;
        let mut fractional = false;
        for item in StrftimeItems::new(text) {
            match item {
                Item::Literal(literal) | Item::Space(literal) => pieces.push(TimePiece::Literal(literal.into())),
                Item::OwnedLiteral(literal) | Item::OwnedSpace(literal) => {
                    pieces.push(TimePiece::Literal(literal.as_bytes().to_vec()))
                }
                Item::Numeric(Numeric::Year, _) => pieces.push(TimePiece::Year),
                Item::Numeric(Numeric::Month, _) => pieces.push(TimePiece::Month),
                Item::Numeric(Numeric::Day, _) => pieces.push(TimePiece::Day),
                Item::Numeric(Numeric::Hour, _) => pieces.push(TimePiece::Hour),
                Item::Numeric(Numeric::Minute, _) => pieces.push(TimePiece::Minute),
                Item::Numeric(Numeric::Second, _) => pieces.push(TimePiece::Second),
                Item::Numeric(Numeric::Nanosecond, _)
                | Item::Fixed(
                    Fixed::Nanosecond
                    | Fixed::Nanosecond3
                    | Fixed::Nanosecond6
                    | Fixed::Nanosecond9
                    | Fixed::Internal(_),
                ) => {
                    fast = false;
                    fractional = true;
                }
                _ => fast = false,
            }
        }
        TimeFormat { pieces: fast.then_some(pieces), fractional, text: text.to_string() }
    }

    /// The finest step this format writes: whole seconds, unless it has fractional seconds
    /// (`%f`, `%.3f` and the like, which chrono writes).
    pub(crate) fn resolution_ms(&self) -> i64 {
        if self.fractional {
            1
        } else {
            1_000
        }
    }

    /// The instant a local time written by [`TimeFormat::push`] decodes to, as the adapters
    /// read it (`adapters::fields::local_time`): the format's resolution is kept (the fast
    /// subset has whole seconds) and, in the hour a zone repeats when its clocks go back, the
    /// earlier of the two instants is taken. The truth file gives this instant, the one the
    /// ledger stores.
    pub(crate) fn decoded_ms(&self, utc_ms: i64, clock: &mut LocalClock, lookback: &mut LocalClock) -> i64 {
        let offset_ms = clock.offset_ms(utc_ms);
        let local_ms = utc_ms + offset_ms;
        if self.pieces.is_none() {
            // Outside the fast subset: write the text and read it back as the adapter does.
            let mut text = Vec::new();
            self.push(&mut text, local_ms);
            let text = String::from_utf8_lossy(&text);
            return crate::adapters::fields::local_time("occurred_at", &text, &self.text, clock.timezone)
                .map_or(utc_ms, |at| at.timestamp_millis());
        }
        let local_ms = local_ms - local_ms.rem_euclid(1_000);
        let decoded_ms = local_ms - offset_ms;
        // An earlier instant with the same wall time exists only shortly after a clock went
        // back (by at most three hours' worth of offset anywhere).
        let earlier_offset_ms = lookback.offset_ms(utc_ms - 3 * 3_600_000);
        if earlier_offset_ms > offset_ms {
            let candidate_ms = local_ms - earlier_offset_ms;
            if candidate_ms < decoded_ms && lookback.offset_exact_ms(candidate_ms) == earlier_offset_ms {
                return candidate_ms;
            }
        }
        decoded_ms
    }

    /// Writes the local time `local_ms` (milliseconds since the epoch, local wall clock).
    pub(crate) fn push(&self, out: &mut Vec<u8>, local_ms: i64) {
        let Some(pieces) = &self.pieces else {
            if let Some(at) = chrono::DateTime::from_timestamp_millis(local_ms) {
                let _ = write!(out, "{}", at.naive_utc().format(&self.text));
            }
            return;
        };
        let (year, month, day) = civil_from_days(local_ms.div_euclid(MS_PER_DAY));
        let seconds = (local_ms.rem_euclid(MS_PER_DAY) / 1000) as u64;
        for piece in pieces {
            match piece {
                TimePiece::Literal(bytes) => out.extend_from_slice(bytes),
                TimePiece::Year => push_padded(out, year.max(0) as u64, 4),
                TimePiece::Month => push_padded(out, u64::from(month), 2),
                TimePiece::Day => push_padded(out, u64::from(day), 2),
                TimePiece::Hour => push_padded(out, seconds / 3600, 2),
                TimePiece::Minute => push_padded(out, seconds / 60 % 60, 2),
                TimePiece::Second => push_padded(out, seconds % 60, 2),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// What every encoder needs to know about the provider's records

/// How to spell the parts of a simulated record that are not in the event itself.
pub(crate) struct Vocabulary {
    /// Provider word for each canonical kind (`Kind::ALL` order); `None` when unmapped.
    pub kind_words: Vec<Option<String>>,
    /// A word that is not in the vocabulary (for malformed records).
    pub unknown_kind_word: String,
    pub tx_prefix: String,
    pub games: Vec<String>,
    /// (code, exponent) per simulator currency index.
    pub currencies: Vec<(String, u32)>,
}

fn kind_index(kind: Kind) -> usize {
    Kind::ALL.iter().position(|candidate| *candidate == kind).unwrap_or(0)
}

impl Vocabulary {
    pub(crate) fn new(
        kinds: &BTreeMap<String, String>,
        width_chars: Option<usize>,
        tx_prefix: &str,
        games: Vec<String>,
        currencies: Vec<(String, u32)>,
    ) -> Vocabulary {
        let mut kind_words = vec![None; Kind::ALL.len()];
        for (word, name) in kinds {
            if let Ok(kind) = name.parse::<Kind>() {
                let slot = &mut kind_words[kind_index(kind)];
                if slot.is_none() {
                    *slot = Some(word.clone());
                }
            }
        }
        let width = width_chars.unwrap_or(8).max(1);
        let unknown_kind_word = ['Z', 'X', 'Q', 'J', 'K']
            .iter()
            .map(|letter| std::iter::repeat_n(*letter, width).collect::<String>())
            .find(|word| !kinds.contains_key(word))
            .unwrap_or_else(|| "?".repeat(width));
        Vocabulary { kind_words, unknown_kind_word, tx_prefix: tx_prefix.to_string(), games, currencies }
    }

    pub(crate) fn kind_word(&self, kind: Kind) -> &str {
        self.kind_words[kind_index(kind)].as_deref().unwrap_or("")
    }

    pub(crate) fn push_tx_id(&self, out: &mut Vec<u8>, number: u64) {
        out.extend_from_slice(self.tx_prefix.as_bytes());
        push_padded(out, number, 10);
    }

    fn push_round(&self, out: &mut Vec<u8>, round: u64) {
        out.extend_from_slice(self.tx_prefix.as_bytes());
        out.push(b'R');
        push_u64(out, round);
    }

    fn push_session(&self, out: &mut Vec<u8>, session: u64) {
        out.extend_from_slice(self.tx_prefix.as_bytes());
        out.push(b'S');
        push_u64(out, session);
    }
}

pub(crate) fn push_account(out: &mut Vec<u8>, player: u32) {
    out.push(b'P');
    push_padded(out, u64::from(player), 7);
}

/// Which field of a record a malformed-record scenario breaks, from the code it expects.
fn corruption(event: &Event) -> Option<ErrorCode> {
    event.malformed
}

/// A provider's native format: each event handed over in delivery order is written to
/// the sink and reported to the recorder (file, expected outcome) when it is written.
pub(crate) trait Encoder: Send {
    /// The error codes a malformed record of this format can be made to produce.
    fn malformed_codes(&self) -> &'static [ErrorCode];
    /// The finest step of the times this format writes, in milliseconds.
    fn time_resolution_ms(&self) -> i64;
    fn write(&mut self, event: &Event, sink: &mut dyn Sink, recorder: &mut Recorder) -> Result<(), SimulateError>;
    fn finish(&mut self, sink: &mut dyn Sink, recorder: &mut Recorder) -> Result<(), SimulateError>;
}

/// The outcome the ledger should give a record that is written as it is.
fn expected_outcome(event: &Event) -> Outcome {
    match (event.malformed, event.copy) {
        (Some(code), _) => Outcome::Rejected(code),
        (None, super::scenarios::Copy::Duplicate) => Outcome::Duplicate,
        (None, super::scenarios::Copy::Conflict) => Outcome::Conflict,
        (None, super::scenarios::Copy::Original) => Outcome::Accepted,
    }
}

/// The event as the ledger will hold it: its time as its format carries it.
fn as_decoded(event: &Event, occurred_ms: i64) -> Event {
    let mut decoded = event.clone();
    decoded.occurred_ms = occurred_ms;
    decoded
}

pub(crate) fn build_encoder(
    adapter: &AdapterConfig,
    timezone: Tz,
    vocabulary: Vocabulary,
    rng: ChaCha8Rng,
    batch_records_max: usize,
    malformed_batch_rate: f64,
) -> Result<Box<dyn Encoder>, String> {
    Ok(match adapter {
        AdapterConfig::JsonWebhook(config) => Box::new(JsonEncoder::new(config, timezone, vocabulary)?),
        AdapterConfig::CsvSettlement(config) => Box::new(CsvEncoder::new(config, timezone, vocabulary)),
        AdapterConfig::FixedWidth(config) => Box::new(FixedWidthEncoder::new(
            config,
            timezone,
            vocabulary,
            rng,
            batch_records_max,
            malformed_batch_rate,
        )?),
    })
}

fn io(error: io::Error) -> SimulateError {
    SimulateError::Io(error)
}

/// A file a format encoder writes, rolled over by local delivery day.
struct DayFile {
    day: i64,
    payload: usize,
    file: usize,
}

// ---------------------------------------------------------------------------------------
// JSON webhook capture logs

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JsonField {
    Id,
    Kind,
    Account,
    Game,
    Round,
    Session,
    Currency,
    Amount,
    OccurredAt,
    OriginalId,
}

#[derive(Debug)]
enum JsonNode {
    Leaf(JsonField),
    Object(Vec<(String, JsonNode)>),
}

fn insert_path(nodes: &mut Vec<(String, JsonNode)>, segments: &[&str], field: JsonField) -> Result<(), String> {
    let Some((first, rest)) = segments.split_first() else { return Err("empty field path".into()) };
    if rest.is_empty() {
        if nodes.iter().any(|(key, _)| key == first) {
            return Err(format!("field path segment {first:?} is used twice"));
        }
        nodes.push((first.to_string(), JsonNode::Leaf(field)));
        return Ok(());
    }
    if let Some((_, node)) = nodes.iter_mut().find(|(key, _)| key == first) {
        return match node {
            JsonNode::Object(children) => insert_path(children, rest, field),
            JsonNode::Leaf(_) => Err(format!("{first:?} is both a field and an object")),
        };
    }
    let mut children = Vec::new();
    insert_path(&mut children, rest, field)?;
    nodes.push((first.to_string(), JsonNode::Object(children)));
    Ok(())
}

fn push_json_string(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    for &byte in text {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                let _ = write!(out, "\\u{byte:04x}");
            }
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

struct JsonEncoder {
    layout: Vec<(String, JsonNode)>,
    vocabulary: Vocabulary,
    epoch_millis: bool,
    /// `{"transactions":[` and `]}` around batch items; `None`: one object per delivery.
    batch_open: Option<(Vec<u8>, Vec<u8>)>,
    signature_header: String,
    signature_prefix: String,
    mac: Hmac<Sha256>,
    clock: LocalClock,
    day_file: Option<DayFile>,
    body: Vec<u8>,
    line: Vec<u8>,
    scratch: Vec<u8>,
    batch_items: usize,
    batch_started_ms: i64,
    /// The latest delivery time among the open batch's items: when the batch is sent.
    batch_last_ms: i64,
}

impl JsonEncoder {
    fn new(config: &JsonWebhookConfig, timezone: Tz, vocabulary: Vocabulary) -> Result<JsonEncoder, String> {
        let fields = &config.fields;
        let mut layout = Vec::new();
        let mut paths = vec![
            (&fields.id, JsonField::Id),
            (&fields.kind, JsonField::Kind),
            (&fields.account, JsonField::Account),
            (&fields.game, JsonField::Game),
            (&fields.round, JsonField::Round),
            (&fields.session, JsonField::Session),
            (&fields.amount, JsonField::Amount),
            (&fields.occurred_at, JsonField::OccurredAt),
            (&fields.original_id, JsonField::OriginalId),
        ];
        if config.currency.is_none() {
            paths.push((&fields.currency, JsonField::Currency));
        }
        for (path, field) in paths {
            let segments: Vec<&str> = path.split('.').collect();
            insert_path(&mut layout, &segments, field).map_err(|message| format!("fields: {message}"))?;
        }
        let batch_open = config.batch_field.as_ref().map(|path| {
            let segments: Vec<&str> = path.split('.').collect();
            let mut open = Vec::new();
            let mut close = b"]".to_vec();
            for segment in &segments {
                open.push(b'{');
                push_json_string(&mut open, segment.as_bytes());
                open.push(b':');
                close.push(b'}');
            }
            open.push(b'[');
            (open, close)
        });
        let secret = match &config.signing_secret {
            Some(secret) => secret.0.clone(),
            None => {
                return Err("the simulator signs webhooks with an inline signing_secret (signing_secret_env is for \
                            production)"
                    .into())
            }
        };
        let mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|error| error.to_string())?;
        Ok(JsonEncoder {
            layout,
            vocabulary,
            epoch_millis: config.occurred_at_format == TimestampFormat::EpochMillis,
            batch_open,
            signature_header: config.signature_header.trim().to_string(),
            signature_prefix: config.signature_prefix.clone(),
            mac,
            clock: LocalClock::new(timezone),
            day_file: None,
            body: Vec::with_capacity(64 * 1024),
            line: Vec::with_capacity(128 * 1024),
            scratch: Vec::with_capacity(256),
            batch_items: 0,
            batch_started_ms: 0,
            batch_last_ms: 0,
        })
    }

    fn push_value(&mut self, field: JsonField, event: &Event, out: &mut Vec<u8>) -> bool {
        let broken = corruption(event);
        let vocabulary = &self.vocabulary;
        let scratch = &mut self.scratch;
        scratch.clear();
        match field {
            JsonField::Id => vocabulary.push_tx_id(scratch, event.number),
            JsonField::Kind => {
                if broken == Some(ErrorCode::UnknownKind) {
                    scratch.extend_from_slice(vocabulary.unknown_kind_word.as_bytes());
                } else {
                    scratch.extend_from_slice(vocabulary.kind_word(event.kind).as_bytes());
                }
            }
            JsonField::Account => {
                if broken == Some(ErrorCode::MissingField) {
                    return false;
                }
                push_account(scratch, event.player);
            }
            JsonField::Game => match vocabulary.games.get(usize::from(event.game)) {
                Some(game) => scratch.extend_from_slice(game.as_bytes()),
                None => return false,
            },
            JsonField::Round if event.round != 0 => vocabulary.push_round(scratch, event.round),
            JsonField::Session if event.session != 0 => vocabulary.push_session(scratch, event.session),
            JsonField::OriginalId if event.original != 0 => vocabulary.push_tx_id(scratch, event.original),
            JsonField::Round | JsonField::Session | JsonField::OriginalId => return false,
            JsonField::Currency => {
                scratch.extend_from_slice(vocabulary.currencies[usize::from(event.currency)].0.as_bytes())
            }
            JsonField::Amount => {
                let exponent = vocabulary.currencies[usize::from(event.currency)].1;
                push_decimal(scratch, event.amount_minor, exponent);
                if broken == Some(ErrorCode::InvalidAmount) {
                    // One decimal place more than the currency has.
                    if exponent == 0 {
                        scratch.push(b'.');
                    }
                    scratch.push(b'5');
                }
            }
            JsonField::OccurredAt => {
                if broken == Some(ErrorCode::InvalidField) {
                    scratch.extend_from_slice(b"not-a-time");
                } else if self.epoch_millis {
                    push_i64(out, event.occurred_ms);
                    return true;
                } else {
                    let offset = self.clock.offset_ms(event.occurred_ms);
                    push_rfc3339(scratch, event.occurred_ms, offset);
                }
            }
        }
        push_json_string(out, scratch);
        true
    }

    fn push_object(&mut self, nodes: &[(String, JsonNode)], event: &Event, out: &mut Vec<u8>) -> bool {
        out.push(b'{');
        let mut any = false;
        for (key, node) in nodes {
            let mark = out.len();
            if any {
                out.push(b',');
            }
            push_json_string(out, key.as_bytes());
            out.push(b':');
            let written = match node {
                JsonNode::Leaf(field) => self.push_value(*field, event, out),
                JsonNode::Object(children) => self.push_object(children, event, out),
            };
            if written {
                any = true;
            } else {
                out.truncate(mark);
            }
        }
        out.push(b'}');
        any
    }

    fn record(&mut self, event: &Event, out: &mut Vec<u8>) {
        let layout = std::mem::take(&mut self.layout);
        self.push_object(&layout, event, out);
        self.layout = layout;
    }

    /// Writes one capture line for `body`, signed (or deliberately mis-signed), received by
    /// the operator's endpoint at `received_ms`.
    fn deliver(
        &mut self,
        body: &[u8],
        bad_signature: bool,
        received_ms: i64,
        sink: &mut dyn Sink,
    ) -> Result<(), SimulateError> {
        let mut mac = self.mac.clone();
        mac.update(body);
        let mut signature: [u8; 32] = mac.finalize().into_bytes().into();
        if bad_signature {
            signature[0] ^= 0xff;
        }
        let mut hex_text = [0u8; 64];
        hex::encode_to_slice(signature, &mut hex_text).map_err(|error| SimulateError::Io(io::Error::other(error)))?;
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(b"{\"headers\":{");
        push_json_string(line, self.signature_header.as_bytes());
        line.push(b':');
        let mut value = std::mem::take(&mut self.scratch);
        value.clear();
        value.extend_from_slice(self.signature_prefix.as_bytes());
        value.extend_from_slice(&hex_text);
        push_json_string(line, &value);
        self.scratch = value;
        line.extend_from_slice(b"},\"received_at\":\"");
        push_utc_rfc3339(line, received_ms);
        line.extend_from_slice(b"\",\"body\":");
        push_json_string(line, body);
        line.extend_from_slice(b"}\n");
        let payload = self.day_file.as_ref().map(|file| file.payload).unwrap_or(0);
        sink.append(payload, line).map_err(io)
    }

    fn flush_batch(&mut self, sink: &mut dyn Sink) -> Result<(), SimulateError> {
        if self.batch_items == 0 {
            return Ok(());
        }
        if let Some((_, close)) = &self.batch_open {
            self.body.extend_from_slice(close);
        }
        let body = std::mem::take(&mut self.body);
        self.deliver(&body, false, self.batch_last_ms, sink)?;
        self.body = body;
        self.body.clear();
        self.batch_items = 0;
        Ok(())
    }

    fn roll(
        &mut self,
        delivered_ms: i64,
        sink: &mut dyn Sink,
        recorder: &mut Recorder,
    ) -> Result<usize, SimulateError> {
        let day = self.clock.local_day(delivered_ms);
        if let Some(file) = &self.day_file {
            if file.day == day {
                return Ok(file.file);
            }
        }
        self.flush_batch(sink)?;
        if let Some(file) = self.day_file.take() {
            sink.end(file.payload).map_err(io)?;
        }
        let name = format!("{}.jsonl", date_text(day));
        let payload = sink.begin(&name).map_err(io)?;
        let file = recorder.open_file(&name);
        self.day_file = Some(DayFile { day, payload, file });
        Ok(file)
    }
}

impl Encoder for JsonEncoder {
    fn time_resolution_ms(&self) -> i64 {
        // RFC 3339 with milliseconds, or epoch milliseconds.
        1
    }

    fn malformed_codes(&self) -> &'static [ErrorCode] {
        &[
            ErrorCode::BadSignature,
            ErrorCode::InvalidAmount,
            ErrorCode::MissingField,
            ErrorCode::UnknownKind,
            ErrorCode::InvalidField,
        ]
    }

    fn write(&mut self, event: &Event, sink: &mut dyn Sink, recorder: &mut Recorder) -> Result<(), SimulateError> {
        let file = self.roll(event.delivered_ms, sink, recorder)?;
        let outcome = expected_outcome(event);
        let alone = self.batch_open.is_none() || event.malformed == Some(ErrorCode::BadSignature);
        if alone {
            // An open batch goes first, so deliveries stay in order.
            self.flush_batch(sink)?;
            let mut single = std::mem::take(&mut self.body);
            single.clear();
            self.record(event, &mut single);
            self.deliver(&single, event.malformed == Some(ErrorCode::BadSignature), event.delivered_ms, sink)?;
            single.clear();
            self.body = single;
        } else {
            if self.batch_items > 0
                && (self.batch_items >= JSON_BATCH_ITEMS_MAX
                    || event.delivered_ms - self.batch_started_ms >= JSON_BATCH_WINDOW_MS)
            {
                self.flush_batch(sink)?;
            }
            let mut body = std::mem::take(&mut self.body);
            if self.batch_items == 0 {
                body.clear();
                if let Some((open, _)) = &self.batch_open {
                    body.extend_from_slice(open);
                }
                self.batch_started_ms = event.delivered_ms;
                self.batch_last_ms = event.delivered_ms;
            } else {
                body.push(b',');
                self.batch_last_ms = self.batch_last_ms.max(event.delivered_ms);
            }
            self.record(event, &mut body);
            self.body = body;
            self.batch_items += 1;
        }
        recorder.record(event, file, outcome, true);
        // The capture log is complete once its last delivery arrived.
        recorder.delivered(file, event.delivered_ms);
        Ok(())
    }

    fn finish(&mut self, sink: &mut dyn Sink, _recorder: &mut Recorder) -> Result<(), SimulateError> {
        self.flush_batch(sink)?;
        if let Some(file) = self.day_file.take() {
            sink.end(file.payload).map_err(io)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// CSV settlement files

#[derive(Clone, Copy, Debug)]
enum CsvColumn {
    Id,
    Kind,
    Account,
    Amount,
    OccurredAt,
    Currency,
    Game,
    Round,
    Session,
    OriginalId,
}

struct CsvEncoder {
    columns: Vec<(String, CsvColumn)>,
    vocabulary: Vocabulary,
    delimiter: u8,
    quote: u8,
    time_format: TimeFormat,
    minor_units: bool,
    clock: LocalClock,
    /// The zone's offset three hours earlier (for times a clock change makes ambiguous).
    lookback: LocalClock,
    day_file: Option<DayFile>,
    line: Vec<u8>,
    cell: Vec<u8>,
}

impl CsvEncoder {
    fn new(config: &CsvSettlementConfig, timezone: Tz, vocabulary: Vocabulary) -> CsvEncoder {
        let c = &config.columns;
        let mut columns = vec![
            (c.id.clone(), CsvColumn::Id),
            (c.kind.clone(), CsvColumn::Kind),
            (c.account.clone(), CsvColumn::Account),
        ];
        let optional = [
            (&c.currency, CsvColumn::Currency),
            (&c.game, CsvColumn::Game),
            (&c.round, CsvColumn::Round),
            (&c.session, CsvColumn::Session),
        ];
        columns.extend(optional.into_iter().filter_map(|(name, column)| name.clone().map(|name| (name, column))));
        columns.push((c.amount.clone(), CsvColumn::Amount));
        columns.push((c.occurred_at.clone(), CsvColumn::OccurredAt));
        if let Some(name) = &c.original_id {
            columns.push((name.clone(), CsvColumn::OriginalId));
        }
        CsvEncoder {
            columns,
            vocabulary,
            delimiter: config.delimiter as u8,
            quote: config.quote as u8,
            time_format: TimeFormat::new(&config.timestamp_format),
            minor_units: config.amount_in_minor_units,
            clock: LocalClock::new(timezone),
            lookback: LocalClock::new(timezone),
            day_file: None,
            line: Vec::with_capacity(512),
            cell: Vec::with_capacity(128),
        }
    }

    /// Appends a cell, quoted when it holds the delimiter, the quote or a line break.
    fn push_cell(line: &mut Vec<u8>, cell: &[u8], delimiter: u8, quote: u8) {
        if cell.iter().any(|&byte| byte == delimiter || byte == quote || byte == b'\n' || byte == b'\r') {
            line.push(quote);
            for &byte in cell {
                if byte == quote {
                    line.push(quote);
                }
                line.push(byte);
            }
            line.push(quote);
        } else {
            line.extend_from_slice(cell);
        }
    }

    fn roll(
        &mut self,
        delivered_ms: i64,
        sink: &mut dyn Sink,
        recorder: &mut Recorder,
    ) -> Result<usize, SimulateError> {
        let day = self.clock.local_day(delivered_ms);
        if let Some(file) = &self.day_file {
            if file.day == day {
                return Ok(file.file);
            }
        }
        if let Some(file) = self.day_file.take() {
            sink.end(file.payload).map_err(io)?;
        }
        let name = format!("{}.csv", date_text(day));
        let payload = sink.begin(&name).map_err(io)?;
        let file = recorder.open_file(&name);
        // The day's settlement file is dropped when the local day is over.
        recorder.delivered(file, window_end_ms(&self.clock, delivered_ms, MS_PER_DAY));
        let mut header = Vec::new();
        for (position, (name, _)) in self.columns.iter().enumerate() {
            if position > 0 {
                header.push(self.delimiter);
            }
            CsvEncoder::push_cell(&mut header, name.as_bytes(), self.delimiter, self.quote);
        }
        header.push(b'\n');
        sink.append(payload, &header).map_err(io)?;
        self.day_file = Some(DayFile { day, payload, file });
        Ok(file)
    }
}

impl Encoder for CsvEncoder {
    fn time_resolution_ms(&self) -> i64 {
        self.time_format.resolution_ms()
    }

    fn malformed_codes(&self) -> &'static [ErrorCode] {
        &[ErrorCode::InvalidAmount, ErrorCode::MissingField, ErrorCode::UnknownKind, ErrorCode::InvalidField]
    }

    fn write(&mut self, event: &Event, sink: &mut dyn Sink, recorder: &mut Recorder) -> Result<(), SimulateError> {
        let file = self.roll(event.delivered_ms, sink, recorder)?;
        let broken = corruption(event);
        self.line.clear();
        for position in 0..self.columns.len() {
            let column = self.columns[position].1;
            let cell = &mut self.cell;
            cell.clear();
            let vocabulary = &self.vocabulary;
            match column {
                CsvColumn::Id => vocabulary.push_tx_id(cell, event.number),
                CsvColumn::Kind if broken == Some(ErrorCode::UnknownKind) => {
                    cell.extend_from_slice(vocabulary.unknown_kind_word.as_bytes())
                }
                CsvColumn::Kind => cell.extend_from_slice(vocabulary.kind_word(event.kind).as_bytes()),
                CsvColumn::Account if broken == Some(ErrorCode::MissingField) => {}
                CsvColumn::Account => push_account(cell, event.player),
                CsvColumn::Amount => {
                    if self.minor_units {
                        push_i64(cell, event.amount_minor);
                    } else {
                        push_decimal(cell, event.amount_minor, vocabulary.currencies[usize::from(event.currency)].1);
                    }
                    if broken == Some(ErrorCode::InvalidAmount) {
                        cell.push(b'x');
                    }
                }
                CsvColumn::OccurredAt if broken == Some(ErrorCode::InvalidField) => {
                    cell.extend_from_slice(b"not-a-time")
                }
                CsvColumn::OccurredAt => {
                    let local = self.clock.local_ms(event.occurred_ms);
                    self.time_format.push(cell, local);
                }
                CsvColumn::Currency => {
                    cell.extend_from_slice(vocabulary.currencies[usize::from(event.currency)].0.as_bytes())
                }
                CsvColumn::Game => {
                    if let Some(game) = vocabulary.games.get(usize::from(event.game)) {
                        cell.extend_from_slice(game.as_bytes());
                    }
                }
                CsvColumn::Round if event.round != 0 => vocabulary.push_round(cell, event.round),
                CsvColumn::Session if event.session != 0 => vocabulary.push_session(cell, event.session),
                CsvColumn::OriginalId if event.original != 0 => vocabulary.push_tx_id(cell, event.original),
                CsvColumn::Round | CsvColumn::Session | CsvColumn::OriginalId => {}
            }
            if position > 0 {
                self.line.push(self.delimiter);
            }
            CsvEncoder::push_cell(&mut self.line, &self.cell, self.delimiter, self.quote);
        }
        self.line.push(b'\n');
        let payload = self.day_file.as_ref().map(|file| file.payload).unwrap_or(0);
        sink.append(payload, &self.line).map_err(io)?;
        let decoded_ms = self.time_format.decoded_ms(event.occurred_ms, &mut self.clock, &mut self.lookback);
        recorder.record(&as_decoded(event, decoded_ms), file, expected_outcome(event), true);
        Ok(())
    }

    fn finish(&mut self, sink: &mut dyn Sink, _recorder: &mut Recorder) -> Result<(), SimulateError> {
        if let Some(file) = self.day_file.take() {
            sink.end(file.payload).map_err(io)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Fixed-width batch files

/// How a malformed batch's trailer is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TrailerBreak {
    RecordCount,
    ControlTotal,
}

struct Batch {
    payload: usize,
    file: usize,
    /// Local hour of delivery (hours since the epoch) the batch collects.
    hour: i64,
    records: u64,
    total_minor: i64,
    broken: Option<(TrailerBreak, u32)>,
    /// Records written into a broken batch, reported when it closes.
    doomed: Vec<Event>,
}

struct FixedWidthEncoder {
    config: FixedWidthConfig,
    vocabulary: Vocabulary,
    time_format: TimeFormat,
    business_date_format: TimeFormat,
    clock: LocalClock,
    /// The zone's offset three hours earlier (for times a clock change makes ambiguous).
    lookback: LocalClock,
    rng: ChaCha8Rng,
    batch_records_max: usize,
    malformed_batch_rate: f64,
    /// One open batch per simulator currency (a batch has one header currency).
    batches: Vec<Option<Batch>>,
    /// Records that must land, held back while their currency's batch is a broken one.
    deferred: Vec<Vec<Event>>,
    sequence: u64,
    /// Characters up to the end of the last configured detail field.
    detail_chars: usize,
    line: Vec<u8>,
    field: Vec<u8>,
}

fn place(line: &mut Vec<u8>, position: FieldPosition, text: &[u8]) {
    let end = position.start_chars + position.width_chars;
    if line.len() < end {
        line.resize(end, b' ');
    }
    let width = text.len().min(position.width_chars);
    line[position.start_chars..position.start_chars + width].copy_from_slice(&text[..width]);
}

/// A number that does not fit its fixed-width field is an error, never cut short (a
/// truncated amount or control total would decode as another number).
fn check_fits(text: &[u8], position: FieldPosition, what: &str) -> Result<(), SimulateError> {
    if text.len() > position.width_chars {
        return Err(SimulateError::Config(format!(
            "{what} {} needs {} characters, its fixed-width field has {}",
            String::from_utf8_lossy(text),
            text.len(),
            position.width_chars
        )));
    }
    Ok(())
}

/// A signed amount zero-padded to `width` characters: `+000000001050`.
fn push_signed_padded(out: &mut Vec<u8>, value: i64, width: usize) {
    out.push(if value < 0 { b'-' } else { b'+' });
    push_padded(out, value.unsigned_abs(), width.saturating_sub(1));
}

impl FixedWidthEncoder {
    fn new(
        config: &FixedWidthConfig,
        timezone: Tz,
        vocabulary: Vocabulary,
        rng: ChaCha8Rng,
        batch_records_max: usize,
        malformed_batch_rate: f64,
    ) -> Result<FixedWidthEncoder, String> {
        let id_length = vocabulary.tx_prefix.len() + 10;
        let fits = |name: &str, position: Option<FieldPosition>, length: usize| match position {
            Some(position) if position.width_chars < length => {
                Err(format!("detail.{name} is {} characters, the simulator writes {length}", position.width_chars))
            }
            _ => Ok(()),
        };
        fits("id", Some(config.detail.id), id_length)?;
        fits("original_id", config.detail.original_id, id_length)?;
        fits("account", Some(config.detail.account), 8)?;
        let currencies = vocabulary.currencies.len();
        let detail = &config.detail;
        let detail_chars = [
            Some(config.record_type),
            Some(detail.id),
            Some(detail.account),
            Some(detail.kind),
            Some(detail.amount_minor),
            Some(detail.occurred_at),
            detail.original_id,
            detail.game,
            detail.round,
            detail.session,
        ]
        .into_iter()
        .flatten()
        .map(|position| position.start_chars + position.width_chars)
        .max()
        .unwrap_or(0);
        Ok(FixedWidthEncoder {
            detail_chars,
            config: config.clone(),
            time_format: TimeFormat::new(&config.timestamp_format),
            business_date_format: TimeFormat::new(&config.business_date_format),
            vocabulary,
            clock: LocalClock::new(timezone),
            lookback: LocalClock::new(timezone),
            rng,
            batch_records_max: batch_records_max.max(1),
            malformed_batch_rate,
            batches: (0..currencies).map(|_| None).collect(),
            deferred: vec![Vec::new(); currencies],
            sequence: 0,
            line: Vec::with_capacity(256),
            field: Vec::with_capacity(64),
        })
    }

    fn open(
        &mut self,
        currency: usize,
        delivered_ms: i64,
        force_good: bool,
        sink: &mut dyn Sink,
        recorder: &mut Recorder,
    ) -> Result<(), SimulateError> {
        self.sequence += 1;
        let local = self.clock.local_ms(delivered_ms);
        let code = self.vocabulary.currencies[currency].0.clone();
        let mut name = Vec::new();
        TimeFormat::new("%Y%m%d").push(&mut name, local);
        let name = format!("{}-{code}-{:05}.DAT", String::from_utf8_lossy(&name), self.sequence);
        let payload = sink.begin(&name).map_err(io)?;
        let file = recorder.open_file(&name);
        // Every batch of a local hour is dropped when the hour is over.
        recorder.delivered(file, window_end_ms(&self.clock, delivered_ms, MS_PER_HOUR));
        let broken = if !force_good && self.rng.gen_bool(self.malformed_batch_rate.clamp(0.0, 1.0)) {
            let how = if self.rng.gen_bool(0.5) { TrailerBreak::ControlTotal } else { TrailerBreak::RecordCount };
            let episode = recorder.episode(Scenario::MalformedBatch, "", delivered_ms, delivered_ms, name.clone());
            Some((how, episode))
        } else {
            None
        };
        let line = &mut self.line;
        line.clear();
        place(line, self.config.record_type, self.config.header_code.as_bytes());
        let header = &self.config.header;
        if let Some(position) = header.batch_id {
            let mut text = b"B".to_vec();
            push_padded(&mut text, self.sequence, position.width_chars.saturating_sub(1));
            place(line, position, &text);
        }
        if let Some(position) = header.business_date {
            let mut text = Vec::new();
            self.business_date_format.push(&mut text, local);
            place(line, position, &text);
        }
        if let Some(position) = header.currency {
            place(line, position, code.as_bytes());
        }
        line.push(b'\n');
        sink.append(payload, line).map_err(io)?;
        self.batches[currency] = Some(Batch {
            payload,
            file,
            hour: local.div_euclid(3_600_000),
            records: 0,
            total_minor: 0,
            broken,
            doomed: Vec::new(),
        });
        Ok(())
    }

    fn close(&mut self, currency: usize, sink: &mut dyn Sink, recorder: &mut Recorder) -> Result<(), SimulateError> {
        let Some(batch) = self.batches[currency].take() else { return Ok(()) };
        let (mut count, mut total) = (batch.records as i64, batch.total_minor);
        if let Some((how, episode)) = batch.broken {
            let code = match how {
                TrailerBreak::RecordCount => {
                    count += 1;
                    ErrorCode::RecordCountMismatch
                }
                TrailerBreak::ControlTotal => {
                    total += self.rng.gen_range(1..=99);
                    ErrorCode::ControlTotalMismatch
                }
            };
            for event in &batch.doomed {
                recorder.record_in_broken_batch(event, batch.file, code, episode);
            }
            recorder.whole_file_rejected(batch.file, code);
        }
        let line = &mut self.line;
        line.clear();
        place(line, self.config.record_type, self.config.trailer_code.as_bytes());
        let mut text = Vec::new();
        push_padded(&mut text, count.unsigned_abs(), self.config.trailer.record_count.width_chars);
        place(line, self.config.trailer.record_count, &text);
        check_fits(&text, self.config.trailer.record_count, "trailer record_count")?;
        text.clear();
        push_signed_padded(&mut text, total, self.config.trailer.control_total_minor.width_chars);
        check_fits(&text, self.config.trailer.control_total_minor, "trailer control_total_minor")?;
        place(line, self.config.trailer.control_total_minor, &text);
        line.push(b'\n');
        sink.append(batch.payload, line).map_err(io)?;
        sink.end(batch.payload).map_err(io)
    }

    fn detail(&mut self, event: &Event, sink: &mut dyn Sink, recorder: &mut Recorder) -> Result<(), SimulateError> {
        let currency = usize::from(event.currency);
        let broken = corruption(event);
        let detail = self.config.detail.clone();
        let line = &mut self.line;
        line.clear();
        place(line, self.config.record_type, self.config.detail_code.as_bytes());
        let field = &mut self.field;
        let vocabulary = &self.vocabulary;
        field.clear();
        vocabulary.push_tx_id(field, event.number);
        place(line, detail.id, field);
        if broken != Some(ErrorCode::MissingField) {
            field.clear();
            push_account(field, event.player);
            place(line, detail.account, field);
        } else {
            place(line, detail.account, b"");
        }
        let word = if broken == Some(ErrorCode::UnknownKind) {
            vocabulary.unknown_kind_word.as_str()
        } else {
            vocabulary.kind_word(event.kind)
        };
        place(line, detail.kind, word.as_bytes());
        field.clear();
        push_signed_padded(field, event.amount_minor, detail.amount_minor.width_chars);
        check_fits(field, detail.amount_minor, "detail amount_minor")?;
        place(line, detail.amount_minor, field);
        field.clear();
        if broken == Some(ErrorCode::InvalidField) {
            field.extend_from_slice(b"not-a-time");
        } else {
            let local = self.clock.local_ms(event.occurred_ms);
            self.time_format.push(field, local);
        }
        place(line, detail.occurred_at, field);
        if let (Some(position), true) = (detail.original_id, event.original != 0) {
            field.clear();
            vocabulary.push_tx_id(field, event.original);
            place(line, position, field);
        }
        if let (Some(position), Some(game)) = (detail.game, vocabulary.games.get(usize::from(event.game))) {
            place(line, position, game.as_bytes());
        }
        if let (Some(position), true) = (detail.round, event.round != 0) {
            field.clear();
            vocabulary.push_round(field, event.round);
            place(line, position, field);
        }
        if let (Some(position), true) = (detail.session, event.session != 0) {
            field.clear();
            vocabulary.push_session(field, event.session);
            place(line, position, field);
        }
        // A line may be longer than its fields, never shorter: pad to the last field's end.
        if line.len() < self.detail_chars {
            line.resize(self.detail_chars, b' ');
        }
        line.push(b'\n');
        let Some(batch) = self.batches[currency].as_mut() else {
            return Err(SimulateError::Io(io::Error::other("no open batch")));
        };
        sink.append(batch.payload, line).map_err(io)?;
        batch.records += 1;
        batch.total_minor += event.amount_minor;
        let decoded_ms = self.time_format.decoded_ms(event.occurred_ms, &mut self.clock, &mut self.lookback);
        let event = as_decoded(event, decoded_ms);
        if batch.broken.is_some() {
            batch.doomed.push(event);
        } else {
            recorder.record(&event, batch.file, expected_outcome(&event), true);
        }
        Ok(())
    }
}

impl Encoder for FixedWidthEncoder {
    fn time_resolution_ms(&self) -> i64 {
        self.time_format.resolution_ms()
    }

    fn malformed_codes(&self) -> &'static [ErrorCode] {
        &[ErrorCode::MissingField, ErrorCode::UnknownKind, ErrorCode::InvalidField]
    }

    fn write(&mut self, event: &Event, sink: &mut dyn Sink, recorder: &mut Recorder) -> Result<(), SimulateError> {
        let currency = usize::from(event.currency);
        let hour = self.clock.local_ms(event.delivered_ms).div_euclid(3_600_000);
        let roll = match &self.batches[currency] {
            Some(batch) => batch.hour != hour || batch.records as usize >= self.batch_records_max,
            None => true,
        };
        if roll {
            self.close(currency, sink, recorder)?;
            self.open(currency, event.delivered_ms, false, sink, recorder)?;
            if self.batches[currency].as_ref().is_some_and(|batch| batch.broken.is_none()) {
                for held in std::mem::take(&mut self.deferred[currency]) {
                    self.detail(&held, sink, recorder)?;
                }
            }
        }
        let broken = self.batches[currency].as_ref().is_some_and(|batch| batch.broken.is_some());
        if broken && (event.must_land || event.label.is_some()) {
            self.deferred[currency].push(event.clone());
            return Ok(());
        }
        self.detail(event, sink, recorder)
    }

    fn finish(&mut self, sink: &mut dyn Sink, recorder: &mut Recorder) -> Result<(), SimulateError> {
        for currency in 0..self.batches.len() {
            self.close(currency, sink, recorder)?;
            // Records held back from a broken last batch go into one more, intact batch.
            let held = std::mem::take(&mut self.deferred[currency]);
            if let Some(first) = held.first() {
                self.open(currency, first.delivered_ms, true, sink, recorder)?;
                for event in held {
                    self.detail(&event, sink, recorder)?;
                }
                self.close(currency, sink, recorder)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
    }

    #[test]
    fn batch_windows_end_at_the_local_hour_or_day_also_across_clock_changes() {
        let london = LocalClock::new(chrono_tz::Europe::London);
        // An ordinary hour and day.
        assert_eq!(window_end_ms(&london, ms("2026-11-16T10:20:00Z"), MS_PER_HOUR), ms("2026-11-16T11:00:00Z"));
        assert_eq!(window_end_ms(&london, ms("2026-11-16T10:20:00Z"), MS_PER_DAY), ms("2026-11-17T00:00:00Z"));
        let seoul = LocalClock::new(chrono_tz::Asia::Seoul);
        assert_eq!(window_end_ms(&seoul, ms("2026-11-16T10:20:00Z"), MS_PER_DAY), ms("2026-11-16T15:00:00Z"));
        // 2026-10-25: 01:00-02:00 local happens twice in London; that local hour ends at
        // 02:00 local (GMT), the day is 25 hours long.
        assert_eq!(window_end_ms(&london, ms("2026-10-25T00:10:00Z"), MS_PER_HOUR), ms("2026-10-25T02:00:00Z"));
        assert_eq!(window_end_ms(&london, ms("2026-10-25T01:59:59Z"), MS_PER_HOUR), ms("2026-10-25T02:00:00Z"));
        let fall = longest_window_ms(
            chrono_tz::Europe::London,
            ms("2026-10-24T00:00:00Z"),
            ms("2026-10-26T00:00:00Z"),
            MS_PER_DAY,
        );
        assert_eq!(fall, 25 * MS_PER_HOUR);
        assert_eq!(
            longest_window_ms(
                chrono_tz::Europe::London,
                ms("2026-10-24T00:00:00Z"),
                ms("2026-10-26T00:00:00Z"),
                MS_PER_HOUR
            ),
            2 * MS_PER_HOUR
        );
        // 2026-03-29: local 01:00 does not exist; local hour 00 ends at 01:00 UTC (02:00 BST).
        assert_eq!(window_end_ms(&london, ms("2026-03-29T00:30:00Z"), MS_PER_HOUR), ms("2026-03-29T01:00:00Z"));
        assert_eq!(
            longest_window_ms(chrono_tz::UTC, ms("2026-03-28T00:00:00Z"), ms("2026-03-30T00:00:00Z"), MS_PER_DAY),
            MS_PER_DAY
        );
    }

    #[test]
    fn civil_dates_match_chrono() {
        for days in [-1000i64, 0, 59, 365, 11_000, 20_000, 20_773, 30_000] {
            let date = chrono::NaiveDate::from_num_days_from_ce_opt((days + 719_163) as i32).expect("a date");
            let (year, month, day) = civil_from_days(days);
            assert_eq!(
                (year, month, day),
                (i64::from(chrono::Datelike::year(&date)), date.month0() + 1, date.day0() + 1)
            );
        }
    }

    use chrono::Datelike;

    #[test]
    fn decimals_and_padding() {
        let mut out = Vec::new();
        push_decimal(&mut out, 1050, 2);
        out.push(b' ');
        push_decimal(&mut out, -5, 2);
        out.push(b' ');
        push_decimal(&mut out, 15000, 0);
        out.push(b' ');
        push_signed_padded(&mut out, -1050, 8);
        assert_eq!(String::from_utf8(out).expect("utf-8"), "10.50 -0.05 15000 -0001050");
    }

    #[test]
    fn fast_time_format_matches_chrono() {
        for format in ["%Y-%m-%d %H:%M:%S", "%Y%m%d%H%M%S", "%d/%m/%Y %H:%M"] {
            let compiled = TimeFormat::new(format);
            for ms in [0i64, 1_763_251_199_000, 1_763_251_200_123, 1_800_000_000_999] {
                let mut out = Vec::new();
                compiled.push(&mut out, ms);
                let expected = chrono::DateTime::from_timestamp_millis(ms).expect("a time").format(format).to_string();
                assert_eq!(String::from_utf8(out).expect("utf-8"), expected);
            }
        }
    }
}
