//! Provider adapters: a provider's bytes in, canonical transactions (or precise per-record
//! rejections) out. The ingestion core knows only the [`Adapter`] trait; each adapter is
//! one file, selected by the closed `type` enum [`AdapterConfig`]. A similar new provider
//! is a new `[[providers]]` entry in the configuration, not new code.

use std::io::{self, BufRead};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::model::Transaction;
use crate::money::Currencies;
use crate::rejection::Rejection;

pub mod csv_settlement;
pub mod fields;
pub mod fixed_width;
pub mod json_webhook;

/// The largest single record an adapter accepts (a line, a JSON object).
pub const RECORD_BYTES_MAX: usize = 64 * 1024;

/// A payload that can be read (and, for adapters that check a trailer before taking any
/// record, read again): a file on disk or a request body in memory.
pub trait Source: Send + Sync {
    /// File name or request id: where records came from, in reports and dead letters.
    fn name(&self) -> &str;
    fn open(&self) -> io::Result<Box<dyn BufRead + '_>>;
}

/// A payload held in memory (an HTTP request body, a dead letter being replayed).
pub struct BytesSource {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl Source for BytesSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn open(&self) -> io::Result<Box<dyn BufRead + '_>> {
        Ok(Box::new(&self.bytes[..]))
    }
}

/// A payload in a file, read in a streaming way (memory stays flat in file size).
///
/// The file is opened once and every pass (checksum, trailer check, records) reads the
/// same open file up to the size it had when opened: a file replaced or appended to while
/// it is ingested cannot make the records taken differ from the ones checked.
pub struct FileSource {
    name: String,
    file: std::fs::File,
    size_bytes: u64,
}

impl FileSource {
    pub fn open(name: impl Into<String>, path: &std::path::Path) -> io::Result<FileSource> {
        let file = std::fs::File::open(path)?;
        let size_bytes = file.metadata()?.len();
        Ok(FileSource { name: name.into(), file, size_bytes })
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
}

impl Source for FileSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn open(&self) -> io::Result<Box<dyn BufRead + '_>> {
        let snapshot = Snapshot { file: &self.file, position: 0, end: self.size_bytes };
        Ok(Box::new(io::BufReader::with_capacity(256 * 1024, snapshot)))
    }
}

/// Reads `file` from the start up to `end`, by position (independent of any other reader
/// of the same file).
struct Snapshot<'f> {
    file: &'f std::fs::File,
    position: u64,
    end: u64,
}

impl io::Read for Snapshot<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.position);
        if left == 0 {
            return Ok(0);
        }
        let wanted = buffer.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        #[cfg(unix)]
        let read = std::os::unix::fs::FileExt::read_at(self.file, &mut buffer[..wanted], self.position)?;
        #[cfg(windows)]
        let read = std::os::windows::fs::FileExt::seek_read(self.file, &mut buffer[..wanted], self.position)?;
        self.position += read as u64;
        Ok(read)
    }
}

/// How a payload arrived.
#[derive(Clone, Debug)]
pub enum Arrival {
    /// A file (a settlement file, a batch file, or a log of captured webhook deliveries).
    File,
    /// One HTTP request, with its headers (names compared case-insensitively).
    Request { headers: Vec<(String, String)> },
}

#[derive(Clone, Debug)]
pub struct PayloadContext {
    pub arrival: Arrival,
    /// Stamped on every transaction decoded from this payload.
    pub received_at: DateTime<Utc>,
}

/// One unit an adapter read from a payload: a record, or a delivery rejected as a whole.
#[derive(Debug)]
pub struct Decoded {
    /// 1-based position in the payload (line number for line formats).
    pub record: u64,
    /// The exact bytes of the unit, kept for dead-lettering and replay.
    pub raw: Vec<u8>,
    /// Adapter-defined context needed to decode `raw` alone again (a CSV header line,
    /// a batch header record); shared by all records of a payload.
    pub context: Arc<[u8]>,
    pub result: Result<Transaction, Rejection>,
}

/// The receiver of decoded units stopped taking them (the writer shut down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkClosed;

pub type Sink<'s> = dyn FnMut(Decoded) -> Result<(), SinkClosed> + 's;

/// Why a whole payload was not decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The payload as a whole is rejected (bad signature on a request, control totals that
    /// do not match, no trailer): nothing from it is taken; it goes to the dead-letter store.
    #[error("{0}")]
    Rejected(Rejection),
    #[error("reading {source_name}: {error}")]
    Io { source_name: String, error: io::Error },
    #[error("the receiver stopped taking records")]
    SinkClosed,
}

impl From<SinkClosed> for DecodeError {
    fn from(_: SinkClosed) -> DecodeError {
        DecodeError::SinkClosed
    }
}

/// What every adapter is: bytes in one provider's format → canonical transactions.
pub trait Adapter: Send + Sync {
    /// Decodes a whole payload, handing each unit to `sink` in payload order. Whole-payload
    /// checks (signatures of requests, trailer counts and control totals) happen before the
    /// first unit is handed over. Returns the number of units handed over.
    fn decode(&self, source: &dyn Source, context: &PayloadContext, sink: &mut Sink<'_>) -> Result<u64, DecodeError>;

    /// Decodes one unit that was dead-lettered, from its stored `context` and `raw` bytes,
    /// with the adapter's current configuration (this is how a fixed config is replayed).
    fn decode_unit(
        &self,
        context: &[u8],
        raw: &[u8],
        received_at: DateTime<Utc>,
    ) -> Vec<Result<Transaction, Rejection>>;
}

/// Everything an adapter knows about its provider besides its own format settings.
#[derive(Clone, Debug)]
pub struct ProviderContext {
    pub name: String,
    pub timezone: Tz,
    pub currencies: Arc<Currencies>,
}

/// The closed set of adapters, chosen by `type` in each provider's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AdapterConfig {
    JsonWebhook(json_webhook::JsonWebhookConfig),
    CsvSettlement(csv_settlement::CsvSettlementConfig),
    FixedWidth(fixed_width::FixedWidthConfig),
}

/// A configuration that cannot build its adapter (unknown kind name, bad field width, ...).
#[derive(Debug, thiserror::Error)]
#[error("provider {provider}: adapter configuration: {message}")]
pub struct AdapterConfigError {
    pub provider: String,
    pub message: String,
}

impl AdapterConfig {
    pub fn build(&self, provider: &ProviderContext) -> Result<Box<dyn Adapter>, AdapterConfigError> {
        Ok(match self {
            AdapterConfig::JsonWebhook(config) => Box::new(json_webhook::JsonWebhook::new(config, provider)?),
            AdapterConfig::CsvSettlement(config) => Box::new(csv_settlement::CsvSettlement::new(config, provider)?),
            AdapterConfig::FixedWidth(config) => Box::new(fixed_width::FixedWidth::new(config, provider)?),
        })
    }
}
