//! Ingestion: a provider's payload → adapter → validation → group commit into the ledger.
//!
//! The [`Committer`] is the single writer: concurrent callers hand it chunks of items over a
//! bounded queue; it writes whatever has queued up (up to `GROUP_ITEMS_MAX` items) in one
//! database transaction and answers each caller only after that transaction committed.
//! A file is decoded on a blocking thread and streamed in bounded chunks with a bounded
//! number in flight, so memory stays flat in the file's size.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::adapters::{Arrival, BytesSource, DecodeError, Decoded, FileSource, PayloadContext, SinkClosed, Source};
use crate::config::{Config, ConfigError, Provider};
use crate::model::Transaction;
use crate::rejection::{ErrorCode, Rejection};
use crate::store::{
    DeadLetter, DeadLetterStatus, IngestedFile, Item, LedgerWriter, Origin, Outcome, Store, StoreError, Unit,
};
use crate::validate::{validate, Rules};

/// Items written in one database transaction at most.
pub const GROUP_ITEMS_MAX: usize = 32_768;
/// Items a reader hands to the committer at once.
pub const CHUNK_ITEMS_MAX: usize = 4_096;
/// Commit requests waiting for the writer.
pub const COMMIT_QUEUE_MAX: usize = 64;
/// Chunks of one payload waiting for their commit.
pub const IN_FLIGHT_CHUNKS_MAX: usize = 8;
/// A payload rejected as a whole is kept in the dead-letter store up to this size.
pub const PAYLOAD_DEAD_LETTER_BYTES_MAX: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    #[error("the ledger write failed, nothing of it was committed: {0}")]
    Store(Arc<StoreError>),
    #[error("the ledger writer has stopped")]
    Closed,
}

struct CommitRequest {
    items: Vec<Item>,
    reply: oneshot::Sender<Result<Vec<Outcome>, CommitError>>,
}

/// Handle to the group-commit writer task. Cheap to clone.
#[derive(Clone)]
pub struct Committer {
    sender: mpsc::Sender<CommitRequest>,
    stats: Arc<CommitStats>,
}

/// What the writer has committed since it started (the service exports these as metrics).
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Database transactions committed.
    pub groups: AtomicU64,
    /// Items (transactions and rejections) in them.
    pub items: AtomicU64,
    /// Callers' requests in them: above `groups` when requests shared a commit.
    pub requests: AtomicU64,
}

pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Yields the outcomes of submitted items once they are durably committed.
pub type CommitReceiver = oneshot::Receiver<Result<Vec<Outcome>, CommitError>>;

impl Committer {
    /// Starts the writer task; it ends when every `Committer` handle is dropped.
    pub fn spawn(writer: LedgerWriter, clock: Clock) -> (Committer, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(COMMIT_QUEUE_MAX);
        let stats = Arc::new(CommitStats::default());
        let task = tokio::spawn(run_writer(writer, receiver, clock, stats.clone()));
        (Committer { sender, stats }, task)
    }

    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }

    /// Queues items; the receiver yields their outcomes once they are durably committed.
    pub async fn submit(
        &self,
        items: Vec<Item>,
    ) -> Result<oneshot::Receiver<Result<Vec<Outcome>, CommitError>>, CommitError> {
        let (reply, receiver) = oneshot::channel();
        self.sender.send(CommitRequest { items, reply }).await.map_err(|_| CommitError::Closed)?;
        Ok(receiver)
    }

    /// Queues items and waits for their durable commit.
    pub async fn commit(&self, items: Vec<Item>) -> Result<Vec<Outcome>, CommitError> {
        self.submit(items).await?.await.map_err(|_| CommitError::Closed)?
    }
}

async fn run_writer(
    mut writer: LedgerWriter,
    mut receiver: mpsc::Receiver<CommitRequest>,
    clock: Clock,
    stats: Arc<CommitStats>,
) {
    let committed = |requests: usize, items: usize| {
        stats.groups.fetch_add(1, Ordering::Relaxed);
        stats.requests.fetch_add(requests as u64, Ordering::Relaxed);
        stats.items.fetch_add(items as u64, Ordering::Relaxed);
    };
    let mut group: Vec<CommitRequest> = Vec::new();
    while let Some(first) = receiver.recv().await {
        let mut size = first.items.len();
        group.push(first);
        while size < GROUP_ITEMS_MAX {
            match receiver.try_recv() {
                Ok(request) => {
                    size += request.items.len();
                    group.push(request);
                }
                Err(_) => break,
            }
        }
        let mut items = Vec::with_capacity(size);
        let mut lengths = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        for request in group.drain(..) {
            lengths.push(request.items.len());
            items.extend(request.items);
            replies.push(request.reply);
        }
        match writer.write(&items, clock()).await {
            Ok(outcomes) => {
                committed(replies.len(), items.len());
                let mut outcomes = outcomes.into_iter();
                for (reply, length) in replies.into_iter().zip(lengths) {
                    let _ = reply.send(Ok(outcomes.by_ref().take(length).collect()));
                }
            }
            Err(error) if replies.len() > 1 => {
                // One caller's items must not fail another's: write each request on its own.
                tracing::warn!(%error, requests = replies.len(), "group write failed; writing its requests one by one");
                let mut offset = 0;
                for (reply, length) in replies.into_iter().zip(lengths) {
                    let own = &items[offset..offset + length];
                    offset += length;
                    let result = writer.write(own, clock()).await.map_err(|error| {
                        tracing::error!(%error, items = own.len(), "ledger write failed");
                        CommitError::Store(Arc::new(error))
                    });
                    if result.is_ok() {
                        committed(1, own.len());
                    }
                    let _ = reply.send(result);
                }
            }
            Err(error) => {
                tracing::error!(%error, items = items.len(), "ledger write failed");
                let error = Arc::new(error);
                for reply in replies {
                    let _ = reply.send(Err(CommitError::Store(error.clone())));
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("provider {name:?} is not configured (configured: {configured})")]
    UnknownProvider { name: String, configured: String },
    #[error("reading {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{source_name} was rejected as a whole ({rejection}) and is {size_bytes} bytes, above the {PAYLOAD_DEAD_LETTER_BYTES_MAX}-byte dead-letter limit: it was not ingested and not stored")]
    PayloadTooLarge { source_name: String, rejection: Rejection, size_bytes: u64 },
    #[error("dead letter {0} does not exist")]
    NoSuchDeadLetter(i64),
    #[error("dead letter {0} was replayed already")]
    AlreadyReplayed(i64),
    #[error("the decoder stopped unexpectedly: {0}")]
    Decoder(String),
    #[error("the file's arrival time {} is more than {tolerance_seconds} s after now ({}): a file cannot arrive in the future", received_at.to_rfc3339(), now.to_rfc3339())]
    ReceivedInFuture { received_at: DateTime<Utc>, now: DateTime<Utc>, tolerance_seconds: i64 },
}

/// What happened to a payload's units.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub units: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    pub rejected: BTreeMap<ErrorCode, u64>,
    /// Set when the payload was rejected as a whole (and dead-lettered).
    pub payload_rejection: Option<Rejection>,
    /// Set when this exact file (same checksum) was ingested before; nothing was done.
    pub already_ingested: Option<IngestedFile>,
}

impl IngestReport {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    fn tally(&mut self, outcomes: &[Outcome]) {
        for outcome in outcomes {
            self.units += 1;
            match outcome {
                Outcome::Accepted { .. } => self.accepted += 1,
                Outcome::Duplicate { .. } => self.duplicates += 1,
                Outcome::Conflict { .. } => self.conflicts += 1,
                Outcome::Rejected { code } => *self.rejected.entry(*code).or_default() += 1,
            }
        }
    }
}

/// Committed progress of one payload: every unit up to `record` is durably stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub units_committed: u64,
    pub record: u64,
}

/// Per-payload options.
#[derive(Clone, Debug, Default)]
pub struct FileOptions {
    /// Ingest even when the same file (by checksum) was ingested before.
    pub force: bool,
    /// When the file arrived (a batch file's drop time): stamped as `received_at` on its
    /// transactions, so a late delivery shows. `None`: it arrived now. A capture log line
    /// that records its own arrival time keeps that one.
    pub received_at: Option<DateTime<Utc>>,
}

/// The configured providers, validation rules and the committer: everything ingestion needs.
pub struct Ingestor {
    providers: BTreeMap<String, Arc<Provider>>,
    future_tolerance: Duration,
    committer: Committer,
    store: Store,
}

impl Ingestor {
    pub fn new(config: &Config, store: Store, committer: Committer) -> Result<Ingestor, ConfigError> {
        let providers =
            config.providers()?.into_iter().map(|provider| (provider.name.clone(), Arc::new(provider))).collect();
        let future_tolerance = Duration::seconds(config.ingest.future_tolerance_seconds.min(i64::MAX as u64) as i64);
        Ok(Ingestor { providers, future_tolerance, committer, store })
    }

    pub fn provider(&self, name: &str) -> Result<&Arc<Provider>, IngestError> {
        self.providers.get(name).ok_or_else(|| IngestError::UnknownProvider {
            name: name.to_string(),
            configured: self.providers.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    /// Ingests a file: recognised by checksum if it was ingested before, otherwise streamed
    /// through its provider's adapter. `progress` is called after every durable commit.
    /// `now` is the time validation compares against and the file's arrival time unless
    /// `options.received_at` says when it arrived (which may not be after `now` plus the
    /// future tolerance).
    pub async fn ingest_file(
        &self,
        provider: &str,
        path: &Path,
        options: &FileOptions,
        now: DateTime<Utc>,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<IngestReport, IngestError> {
        let provider = self.provider(provider)?.clone();
        let received_at = options.received_at.unwrap_or(now);
        if received_at > now + self.future_tolerance {
            return Err(IngestError::ReceivedInFuture {
                received_at,
                now,
                tolerance_seconds: self.future_tolerance.num_seconds(),
            });
        }
        let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let io_error = |error| IngestError::Io { path: path.display().to_string(), error };
        let file = FileSource::open(name.clone(), path).map_err(io_error)?;
        let size_bytes = file.size_bytes();
        let source: Arc<dyn Source> = Arc::new(file);
        let sha256 = checksum(source.clone()).await?;
        if !options.force {
            if let Some(previous) = self.store.file_ingested(&provider.name, &sha256).await? {
                return Ok(IngestReport { already_ingested: Some(previous), ..IngestReport::default() });
            }
        }
        let context = PayloadContext { arrival: Arrival::File, received_at };
        let report = self.ingest_payload(&provider, source, context, now, progress).await?;
        // A file rejected as a whole is not remembered: once its provider's configuration is
        // fixed it can be ingested again (or its dead letter replayed).
        if report.payload_rejection.is_none() {
            self.store.record_file(&provider.name, &sha256, &name, size_bytes, &report, now).await?;
        }
        Ok(report)
    }

    /// Ingests one payload (a file, a request body, a replayed dead letter). Its
    /// transactions carry `context.received_at` (unless the payload records its own arrival
    /// times); validation compares against `now`.
    pub async fn ingest_payload(
        &self,
        provider: &Arc<Provider>,
        source: Arc<dyn Source>,
        context: PayloadContext,
        now: DateTime<Utc>,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<IngestReport, IngestError> {
        let (chunk_sender, mut chunk_receiver) = mpsc::channel::<(Vec<Item>, u64)>(IN_FLIGHT_CHUNKS_MAX);
        let decoder = {
            let provider = provider.clone();
            let source = source.clone();
            let context = context.clone();
            let future_tolerance = self.future_tolerance;
            tokio::task::spawn_blocking(move || {
                decode_in_chunks(&provider, source.as_ref(), &context, now, future_tolerance, chunk_sender)
            })
        };

        let mut report = IngestReport::default();
        let mut in_flight: VecDeque<(CommitReceiver, u64)> = VecDeque::new();
        // Progress is reported only while every earlier chunk committed: after a failure, a
        // later chunk's commit does not make the records before it durable.
        let mut settle =
            |outcomes: Result<Vec<Outcome>, CommitError>, record: u64, report: &mut IngestReport, failed: bool| {
                let outcomes = outcomes?;
                report.tally(&outcomes);
                if !failed {
                    progress(Progress { units_committed: report.units, record });
                }
                Ok::<(), IngestError>(())
            };
        // Submit chunks as the decoder hands them over, and report each commit as soon as it
        // is durable (commits complete in submission order).
        let mut failure: Option<IngestError> = None;
        let mut decoder_done = false;
        while !(decoder_done && in_flight.is_empty()) {
            let take_chunk = !decoder_done && in_flight.len() < IN_FLIGHT_CHUNKS_MAX;
            let oldest_reply = async {
                match in_flight.front_mut() {
                    Some((receiver, _)) => receiver.await.unwrap_or(Err(CommitError::Closed)),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                outcomes = oldest_reply => {
                    let (_, record) = in_flight.pop_front().expect("a reply came from the oldest chunk");
                    if let Err(error) = settle(outcomes, record, &mut report, false) {
                        failure = Some(error);
                        break;
                    }
                }
                chunk = chunk_receiver.recv(), if take_chunk => {
                    match chunk {
                        Some((items, last_record)) => match self.committer.submit(items).await {
                            Ok(receiver) => in_flight.push_back((receiver, last_record)),
                            Err(error) => {
                                failure = Some(error.into());
                                break;
                            }
                        },
                        None => decoder_done = true,
                    }
                }
            }
        }
        drop(chunk_receiver);
        // After a failure, still wait for what was submitted: it may commit.
        while let Some((receiver, record)) = in_flight.pop_front() {
            let outcome =
                settle(receiver.await.unwrap_or(Err(CommitError::Closed)), record, &mut report, failure.is_some());
            if let (Err(error), None) = (outcome, &failure) {
                failure = Some(error);
            }
        }
        let decoded = decoder.await.map_err(|error| IngestError::Decoder(error.to_string()))?;
        if let Some(error) = failure {
            return Err(error);
        }
        match decoded {
            Ok(_) => Ok(report),
            Err(DecodeError::Io { source_name, error }) => Err(IngestError::Io { path: source_name, error }),
            Err(DecodeError::SinkClosed) => Err(IngestError::Commit(CommitError::Closed)),
            Err(DecodeError::Rejected(rejection)) => {
                let raw = read_capped(source.clone(), &rejection).await?;
                let context_bytes: Arc<[u8]> = match &context.arrival {
                    Arrival::File => Arc::from(&b""[..]),
                    Arrival::Request { headers } => Arc::from(serde_json::to_vec(headers).unwrap_or_default()),
                };
                let item = Item::Rejected {
                    provider: provider.name.clone(),
                    unit: Unit::Payload,
                    origin: Origin { source: Arc::from(source.name()), record: 0, raw, context: context_bytes },
                    rejection: rejection.clone(),
                };
                let outcomes = self.committer.commit(vec![item]).await?;
                report.tally(&outcomes);
                report.payload_rejection = Some(rejection);
                progress(Progress { units_committed: report.units, record: 0 });
                Ok(report)
            }
        }
    }

    /// Re-runs a dead letter through its provider's current adapter configuration. It is
    /// marked replayed when it was taken: a record accepted (or found to be a duplicate or a
    /// conflict), a payload no longer rejected as a whole. Otherwise it stays open, with
    /// the new reason when the same unit was rejected again.
    pub async fn replay_dead_letter(&self, id: i64, now: DateTime<Utc>) -> Result<ReplayReport, IngestError> {
        let dead_letter = self.store.dead_letter(id).await?.ok_or(IngestError::NoSuchDeadLetter(id))?;
        if dead_letter.status == DeadLetterStatus::Replayed {
            return Err(IngestError::AlreadyReplayed(id));
        }
        let provider = self.provider(&dead_letter.provider)?.clone();
        let report = match dead_letter.unit {
            Unit::Payload => {
                let arrival = if dead_letter.context.is_empty() {
                    Arrival::File
                } else {
                    Arrival::Request { headers: serde_json::from_slice(&dead_letter.context).unwrap_or_default() }
                };
                let source: Arc<dyn Source> =
                    Arc::new(BytesSource { name: dead_letter.source.clone(), bytes: dead_letter.raw.clone() });
                let context = PayloadContext { arrival, received_at: now };
                self.ingest_payload(&provider, source, context, now, &mut |_| {}).await?
            }
            Unit::Record => {
                let items = self.replay_items(&provider, &dead_letter, now);
                let mut report = IngestReport::default();
                report.tally(&self.committer.commit(items).await?);
                report
            }
        };
        // A record is taken when nothing of it was rejected. A payload is taken when it is no
        // longer rejected as a whole: its bad records now have dead letters of their own.
        let taken = match dead_letter.unit {
            Unit::Record => report.rejected_total() == 0,
            Unit::Payload => report.payload_rejection.is_none(),
        };
        let resolved = taken && self.store.resolve_dead_letter(id, now).await?;
        Ok(ReplayReport { report, resolved })
    }

    fn replay_items(&self, provider: &Provider, dead_letter: &DeadLetter, now: DateTime<Utc>) -> Vec<Item> {
        let origin = Origin {
            source: Arc::from(dead_letter.source.as_str()),
            record: dead_letter.record,
            raw: dead_letter.raw.clone(),
            context: Arc::from(dead_letter.context.as_slice()),
        };
        let results = provider.adapter.decode_unit(&dead_letter.context, &dead_letter.raw, now);
        if results.is_empty() {
            let rejection = Rejection::new(ErrorCode::MalformedRecord, "the dead letter decodes to no record");
            return vec![Item::Rejected { provider: provider.name.clone(), unit: Unit::Record, origin, rejection }];
        }
        results
            .into_iter()
            .map(|result| to_item(provider, self.future_tolerance, now, result, origin.clone()))
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayReport {
    pub report: IngestReport,
    /// Whether the dead letter is now closed.
    pub resolved: bool,
}

fn to_item(
    provider: &Provider,
    future_tolerance: Duration,
    now: DateTime<Utc>,
    result: Result<Transaction, Rejection>,
    origin: Origin,
) -> Item {
    let rules = Rules {
        currencies: &provider.currencies,
        allowed_currencies: provider.allowed_currencies.as_ref(),
        future_tolerance,
    };
    match result.and_then(|tx| validate(tx, &rules, now)) {
        Ok(valid) => Item::Transaction { valid, origin },
        Err(rejection) => Item::Rejected { provider: provider.name.clone(), unit: Unit::Record, origin, rejection },
    }
}

/// Runs on a blocking thread: decode, validate, and hand over chunks (blocking when the
/// committer is behind, which is the backpressure that keeps memory flat).
fn decode_in_chunks(
    provider: &Provider,
    source: &dyn Source,
    context: &PayloadContext,
    now: DateTime<Utc>,
    future_tolerance: Duration,
    chunks: mpsc::Sender<(Vec<Item>, u64)>,
) -> Result<u64, DecodeError> {
    let source_name: Arc<str> = Arc::from(source.name());
    let mut chunk: Vec<Item> = Vec::with_capacity(CHUNK_ITEMS_MAX);
    let mut last_record = 0;
    let mut sink = |decoded: Decoded| -> Result<(), SinkClosed> {
        let origin =
            Origin { source: source_name.clone(), record: decoded.record, raw: decoded.raw, context: decoded.context };
        last_record = decoded.record;
        chunk.push(to_item(provider, future_tolerance, now, decoded.result, origin));
        if chunk.len() >= CHUNK_ITEMS_MAX {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_ITEMS_MAX));
            chunks.blocking_send((full, last_record)).map_err(|_| SinkClosed)?;
        }
        Ok(())
    };
    let units = provider.adapter.decode(source, context, &mut sink)?;
    if !chunk.is_empty() {
        chunks.blocking_send((chunk, last_record)).map_err(|_| DecodeError::SinkClosed)?;
    }
    Ok(units)
}

/// sha256 of a payload, streamed.
async fn checksum(source: Arc<dyn Source>) -> Result<[u8; 32], IngestError> {
    tokio::task::spawn_blocking(move || {
        let io_error = |error| IngestError::Io { path: source.name().to_string(), error };
        let mut reader = source.open().map_err(io_error)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let read = reader.read(&mut buffer).map_err(io_error)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
        Ok(hasher.finalize().into())
    })
    .await
    .map_err(|error| IngestError::Decoder(error.to_string()))?
}

/// The payload's bytes, for a dead letter of the whole payload.
async fn read_capped(source: Arc<dyn Source>, rejection: &Rejection) -> Result<Vec<u8>, IngestError> {
    let rejection = rejection.clone();
    tokio::task::spawn_blocking(move || {
        let io_error = |error| IngestError::Io { path: source.name().to_string(), error };
        let mut reader = source.open().map_err(io_error)?;
        let mut bytes = Vec::new();
        let read =
            reader.by_ref().take(PAYLOAD_DEAD_LETTER_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(io_error)? as u64;
        if read > PAYLOAD_DEAD_LETTER_BYTES_MAX {
            return Err(IngestError::PayloadTooLarge {
                source_name: source.name().to_string(),
                rejection,
                size_bytes: read,
            });
        }
        Ok(bytes)
    })
    .await
    .map_err(|error| IngestError::Decoder(error.to_string()))?
}
