//! The store: the only module that speaks SQL. One interface, the same schema and the same
//! behaviour on SQLite (the embedded default, WAL, fsync on commit) and PostgreSQL, through
//! sqlx's `Any` driver. SQL is written once in the subset both dialects share (`$N`
//! placeholders, `ON CONFLICT`, `RETURNING`); the migrations differ per dialect and are
//! applied by sqlx's migrator.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_core::future::BoxFuture;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, Row};

use crate::model::{from_timestamp_nanos, timestamp_nanos, Kind, Transaction};
use crate::money::CurrencyCode;
use crate::rejection::ErrorCode;
use crate::statement::KindTotal;

mod reconcile;
mod verify;
mod writer;

pub use reconcile::{
    AdjustmentProposal, AdjustmentStatus, AuditEntry, AuditSubject, BreakEvent, BreakFilter, BreakStatus, ClosedKind,
    DuplicateBy, ProviderBreakStats, RunRecord, StatementInfo, StoredAdjustment, StoredBreak, AUDIT_ACTOR_RUN,
    BREAK_EVENTS_MAX, NOTE_LENGTH_MAX, STATEMENTS_PER_DAY_MAX, STORED_BREAKS_PER_DAY_MAX,
};
pub use verify::{Finding, VerifyReport, FINDINGS_MAX};
pub use writer::{Item, LedgerWriter, Origin, Outcome, Unit};

/// Connections in the pool: one is held by the ledger writer, the rest serve reads.
pub const POOL_CONNECTIONS_MAX: u32 = 4;
pub const CONNECT_TIMEOUT_SECONDS: u64 = 30;
/// Rows a listing returns at most.
pub const LIST_ROWS_MAX: i64 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URL {0:?} is neither sqlite:PATH nor postgres://...")]
    UnsupportedUrl(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrating the schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A broken invariant caught before commit (the write was rolled back).
    #[error("invariant violated, nothing was written: {0}")]
    Invariant(String),
    /// Stored data that cannot be read back (a code or currency this build does not know).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A provider statement loaded before: the same bytes, or the same provider statement id.
    #[error(
        "statement {source_name:?} of {provider} was loaded before as statement #{earlier_id} \
         ({earlier_source:?}, loaded {earlier_loaded_at}): same {by}"
    )]
    DuplicateStatement {
        provider: String,
        source_name: String,
        by: DuplicateBy,
        earlier_id: i64,
        earlier_source: String,
        earlier_loaded_at: DateTime<Utc>,
    },
    /// A read or write beyond one of the store's named limits.
    #[error("{what}: more than {limit} (the limit); {hint}")]
    TooLarge { what: String, limit: usize, hint: &'static str },
    /// A value handed to the store that it cannot take (which, and why).
    #[error("{what}: {reason}")]
    InvalidInput { what: String, reason: String },
    #[error("{what} #{id} does not exist")]
    NotFound { what: &'static str, id: i64 },
    /// Maker-checker: the proposer of an adjustment cannot approve it.
    #[error(
        "adjustment #{adjustment_id} was proposed by {person}, who therefore cannot approve it: another person must"
    )]
    SelfApproval { adjustment_id: i64, person: String },
    #[error(
        "adjustment #{adjustment_id} is {status}, not pending: only a pending adjustment can be approved or rejected"
    )]
    AdjustmentNotPending { adjustment_id: i64, status: AdjustmentStatus },
    #[error("break #{break_id} is {status}: an adjustment can only be proposed for an open break")]
    BreakNotOpen { break_id: i64, status: BreakStatus },
    #[error("break #{break_id} already has pending adjustment #{adjustment_id}: approve or reject it first")]
    AdjustmentAlreadyPending { break_id: i64, adjustment_id: i64 },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dialect", &self.dialect).finish_non_exhaustive()
    }
}

/// The migrations, embedded in the binary, one set per dialect.
#[derive(Debug)]
struct EmbeddedMigrations(&'static [(i64, &'static str, &'static str)]);

const SQLITE_MIGRATIONS: EmbeddedMigrations = EmbeddedMigrations(&[
    (1, "ledger", include_str!("../../migrations/sqlite/0001_ledger.sql")),
    (2, "currency units", include_str!("../../migrations/sqlite/0002_currency_units.sql")),
    (3, "reconciliation", include_str!("../../migrations/sqlite/0003_reconciliation.sql")),
]);
const POSTGRES_MIGRATIONS: EmbeddedMigrations = EmbeddedMigrations(&[
    (1, "ledger", include_str!("../../migrations/postgres/0001_ledger.sql")),
    (2, "currency units", include_str!("../../migrations/postgres/0002_currency_units.sql")),
    (3, "reconciliation", include_str!("../../migrations/postgres/0003_reconciliation.sql")),
]);

impl MigrationSource<'static> for EmbeddedMigrations {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

impl Store {
    /// Connects (creating an SQLite file if missing) and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (dialect, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let url = if rest.contains('?') { url.to_string() } else { format!("{url}?mode=rwc") };
            (Dialect::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Dialect::Postgres, url.to_string())
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let pool = AnyPoolOptions::new()
            .max_connections(POOL_CONNECTIONS_MAX)
            .acquire_timeout(Duration::from_secs(CONNECT_TIMEOUT_SECONDS))
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // WAL: readers do not block the writer. synchronous=FULL: a commit is on
                        // disk (fsync) before it returns, so an acknowledged batch survives a crash.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = FULL",
                            "PRAGMA busy_timeout = 30000",
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA cache_size = -32768",
                            "PRAGMA wal_autocheckpoint = 8192",
                        ] {
                            connection.execute(pragma).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let migrations = match dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS,
            Dialect::Postgres => POSTGRES_MIGRATIONS,
        };
        Migrator::new(migrations).await?.run(&pool).await?;
        Ok(Store { pool, dialect })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The ledger writer: holds one connection for its whole life (one writer per store).
    pub async fn writer(&self) -> Result<LedgerWriter> {
        Ok(LedgerWriter::new(self.pool.acquire().await?, self.dialect))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Per-kind counts and exact sums for one provider, occurred in `[from, to)`.
    pub async fn kind_totals(&self, provider: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<KindTotal>> {
        let (from_ns, to_ns) = (nanos(from)?, nanos(to)?);
        let rows = sqlx::query(
            "SELECT t.currency, t.exponent, t.kind, t.reverses_kind, COUNT(*), CAST(SUM(t.amount_minor) AS BIGINT)
             FROM transactions t JOIN providers p ON p.id = t.provider_id
             WHERE p.name = $1 AND t.occurred_at_ns >= $2 AND t.occurred_at_ns < $3
             GROUP BY t.currency, t.exponent, t.kind, t.reverses_kind
             ORDER BY t.currency, t.kind, t.reverses_kind",
        )
        .bind(provider)
        .bind(from_ns)
        .bind(to_ns)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(KindTotal {
                    currency: currency(&row.try_get::<String, _>(0)?)?,
                    exponent: u32::try_from(row.try_get::<i64, _>(1)?)
                        .ok()
                        .filter(|&exponent| exponent <= crate::money::CURRENCY_EXPONENT_MAX)
                        .ok_or_else(|| StoreError::Corrupt("a stored exponent is out of range".into()))?,
                    kind: kind(&row.try_get::<String, _>(2)?)?,
                    reverses: row.try_get::<Option<String>, _>(3)?.as_deref().map(kind).transpose()?,
                    count: row.try_get::<i64, _>(4)? as u64,
                    sum_minor: row.try_get(5)?,
                })
            })
            .collect()
    }

    /// Balances of ledger accounts whose name starts with `prefix`, by name and currency.
    pub async fn balances(&self, prefix: &str) -> Result<Vec<Balance>> {
        let pattern = format!("{}%", prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        let rows = sqlx::query(
            "SELECT a.name, a.currency, b.balance_minor
             FROM balances b JOIN ledger_accounts a ON a.id = b.ledger_account_id
             WHERE a.name LIKE $1 ESCAPE '\\'
             ORDER BY a.name, a.currency LIMIT $2",
        )
        .bind(pattern)
        .bind(LIST_ROWS_MAX)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Balance {
                    account: row.try_get(0)?,
                    currency: currency(&row.try_get::<String, _>(1)?)?,
                    balance_minor: row.try_get(2)?,
                })
            })
            .collect()
    }

    /// Counts of what the ledger holds, for reports and tests.
    pub async fn counts(&self) -> Result<Counts> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM transactions), (SELECT COUNT(*) FROM postings),
                    (SELECT COUNT(*) FROM dead_letters), (SELECT COUNT(*) FROM conflicts)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Counts {
            transactions: row.try_get::<i64, _>(0)? as u64,
            postings: row.try_get::<i64, _>(1)? as u64,
            dead_letters: row.try_get::<i64, _>(2)? as u64,
            conflicts: row.try_get::<i64, _>(3)? as u64,
        })
    }

    /// Seq and content hash of every stored transaction, in ingestion order (for tests and
    /// consistency checks on small ledgers).
    pub async fn transaction_keys(&self) -> Result<Vec<(String, String, [u8; 32])>> {
        let rows = sqlx::query(
            "SELECT p.name, t.provider_tx_id, t.content_sha256
             FROM transactions t JOIN providers p ON p.id = t.provider_id ORDER BY t.seq",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?, hash32(row.try_get(2)?)?))).collect()
    }

    /// Up to `limit` (at most `LIST_ROWS_MAX`) stored transactions with `seq >= from_seq`,
    /// in `seq` order: the ledger's ingestion order, which feature extraction follows. Page
    /// through the ledger by passing the last seq + 1.
    pub async fn transactions_in_seq_order(&self, from_seq: i64, limit: i64) -> Result<Vec<StoredTransaction>> {
        let rows = sqlx::query(
            "SELECT t.seq, p.name, t.provider_tx_id, t.kind, t.account, t.game_id, t.round_id, t.session_id,
                    t.currency, t.exponent, t.amount_minor, t.occurred_at_ns, t.received_at_ns, t.original_tx_id,
                    t.raw_sha256
             FROM transactions t JOIN providers p ON p.id = t.provider_id
             WHERE t.seq >= $1 ORDER BY t.seq LIMIT $2",
        )
        .bind(from_seq)
        .bind(limit.clamp(1, LIST_ROWS_MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get(0)?;
                let exponent = u32::try_from(row.try_get::<i64, _>(9)?)
                    .ok()
                    .filter(|&exponent| exponent <= crate::money::CURRENCY_EXPONENT_MAX)
                    .ok_or_else(|| StoreError::Corrupt(format!("transaction #{seq}: exponent out of range")))?;
                Ok(StoredTransaction {
                    seq,
                    transaction: Transaction {
                        provider: row.try_get(1)?,
                        provider_tx_id: row.try_get(2)?,
                        kind: kind(&row.try_get::<String, _>(3)?)?,
                        account: row.try_get(4)?,
                        game_id: row.try_get(5)?,
                        round_id: row.try_get(6)?,
                        session_id: row.try_get(7)?,
                        currency: currency(&row.try_get::<String, _>(8)?)?,
                        amount: crate::money::from_minor(row.try_get(10)?, exponent),
                        occurred_at: from_timestamp_nanos(row.try_get(11)?),
                        received_at: from_timestamp_nanos(row.try_get(12)?),
                        original_tx_id: row.try_get(13)?,
                        raw_sha256: hash32(row.try_get(14)?)?,
                    },
                })
            })
            .collect()
    }

    pub async fn file_ingested(&self, provider: &str, sha256: &[u8; 32]) -> Result<Option<IngestedFile>> {
        let row = sqlx::query(
            "SELECT f.name, f.size_bytes, f.units, f.accepted, f.duplicates, f.conflicts, f.rejected, f.completed_at_ns
             FROM ingested_files f JOIN providers p ON p.id = f.provider_id
             WHERE p.name = $1 AND f.sha256 = $2",
        )
        .bind(provider)
        .bind(sha256.to_vec())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(IngestedFile {
                name: row.try_get(0)?,
                size_bytes: row.try_get::<i64, _>(1)? as u64,
                units: row.try_get::<i64, _>(2)? as u64,
                accepted: row.try_get::<i64, _>(3)? as u64,
                duplicates: row.try_get::<i64, _>(4)? as u64,
                conflicts: row.try_get::<i64, _>(5)? as u64,
                rejected: row.try_get::<i64, _>(6)? as u64,
                completed_at: from_timestamp_nanos(row.try_get(7)?),
            })
        })
        .transpose()
    }

    /// Remembers a completed file by checksum, with what came of it.
    pub async fn record_file(
        &self,
        provider: &str,
        sha256: &[u8; 32],
        name: &str,
        size_bytes: u64,
        report: &crate::ingest::IngestReport,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let provider_id: i64 = sqlx::query_scalar(
            "INSERT INTO providers (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
        )
        .bind(provider)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO ingested_files (provider_id, sha256, name, size_bytes, units, accepted, duplicates, conflicts,
               rejected, completed_at_ns) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (provider_id, sha256) DO UPDATE SET name = excluded.name, units = excluded.units,
               accepted = excluded.accepted, duplicates = excluded.duplicates, conflicts = excluded.conflicts,
               rejected = excluded.rejected, completed_at_ns = excluded.completed_at_ns",
        )
        .bind(provider_id)
        .bind(sha256.to_vec())
        .bind(printable(name).into_owned())
        .bind(size_bytes as i64)
        .bind(report.units as i64)
        .bind(report.accepted as i64)
        .bind(report.duplicates as i64)
        .bind(report.conflicts as i64)
        .bind(report.rejected_total() as i64)
        .bind(nanos(at)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters
             WHERE ($1 = '' OR provider = $1) AND ($2 = '' OR status = $2)
             ORDER BY id LIMIT $3"
        ))
        .bind(filter.provider.clone().unwrap_or_default())
        .bind(filter.status.map(DeadLetterStatus::as_str).unwrap_or_default())
        .bind(filter.limit.clamp(1, LIST_ROWS_MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dead_letter).collect()
    }

    pub async fn dead_letter(&self, id: i64) -> Result<Option<DeadLetter>> {
        let row = sqlx::query(&format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(dead_letter).transpose()
    }

    /// Marks a dead letter as replayed (its unit has been taken into the ledger).
    pub async fn resolve_dead_letter(&self, id: i64, at: DateTime<Utc>) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE dead_letters SET status = 'replayed', resolved_at_ns = $2 WHERE id = $1 AND status = 'open'",
        )
        .bind(id)
        .bind(nanos(at)?)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    pub async fn conflicts(&self, provider: Option<&str>) -> Result<Vec<Conflict>> {
        let rows = sqlx::query(
            "SELECT c.id, p.name, c.provider_tx_id, c.original_seq, c.detail, c.source, c.record, c.received_at_ns
             FROM conflicts c JOIN providers p ON p.id = c.provider_id
             WHERE ($1 = '' OR p.name = $1) ORDER BY c.id LIMIT $2",
        )
        .bind(provider.unwrap_or_default())
        .bind(LIST_ROWS_MAX)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Conflict {
                    id: row.try_get(0)?,
                    provider: row.try_get(1)?,
                    provider_tx_id: row.try_get(2)?,
                    original_seq: row.try_get(3)?,
                    detail: row.try_get(4)?,
                    source: row.try_get(5)?,
                    record: row.try_get::<i64, _>(6)? as u64,
                    received_at: from_timestamp_nanos(row.try_get(7)?),
                })
            })
            .collect()
    }

    /// The benchmark's reference: the plainest batched INSERT of the same rows into a bare
    /// table (no keys, no postings, no checks), one database transaction per call.
    pub async fn insert_bare_reference(&self, transactions: &[crate::model::Transaction]) -> Result<()> {
        const COLUMNS: usize = 7;
        let mut tx = self.pool.begin().await?;
        tx.execute(
            "CREATE TABLE IF NOT EXISTS bench_bare (provider TEXT, provider_tx_id TEXT, kind TEXT, account TEXT,
               currency TEXT, amount TEXT, occurred_at_ns BIGINT)",
        )
        .await?;
        for chunk in transactions.chunks(1000) {
            let sql =
                format!("INSERT INTO bench_bare VALUES {}", writer::value_rows(self.dialect, COLUMNS, chunk.len()));
            let mut query = sqlx::query(&sql);
            for transaction in chunk {
                query = query
                    .bind(transaction.provider.as_str())
                    .bind(transaction.provider_tx_id.as_str())
                    .bind(transaction.kind.as_str())
                    .bind(transaction.account.as_str())
                    .bind(transaction.currency.as_str())
                    .bind(transaction.amount.to_string())
                    .bind(nanos(transaction.occurred_at)?);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn verify(&self) -> Result<VerifyReport> {
        verify::verify(&self.pool).await
    }
}

/// Begins a transaction that holds the write locks it names: on SQLite `BEGIN IMMEDIATE`
/// (the database's single write lock, taken up front so a read-then-write cannot fail to
/// upgrade); on PostgreSQL the advisory locks, in the order given (callers name them in one
/// fixed order: reconciliation before ledger).
pub(crate) async fn begin_locked<'c>(
    connection: &'c mut sqlx::AnyConnection,
    dialect: Dialect,
    locks: &[i64],
) -> Result<sqlx::Transaction<'c, sqlx::Any>> {
    use sqlx::Connection;
    match dialect {
        Dialect::Sqlite => Ok(connection.begin_with("BEGIN IMMEDIATE").await?),
        Dialect::Postgres => {
            let mut tx = connection.begin().await?;
            for &lock in locks {
                sqlx::query("SELECT CAST(1 AS BIGINT) FROM pg_advisory_xact_lock($1)")
                    .bind(lock)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(tx)
        }
    }
}

/// A transaction as stored, with its place in the ledger's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTransaction {
    pub seq: i64,
    pub transaction: Transaction,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Balance {
    pub account: String,
    pub currency: CurrencyCode,
    pub balance_minor: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub transactions: u64,
    pub postings: u64,
    pub dead_letters: u64,
    pub conflicts: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestedFile {
    pub name: String,
    pub size_bytes: u64,
    pub units: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    pub rejected: u64,
    pub completed_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadLetterStatus {
    Open,
    Replayed,
}

impl DeadLetterStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterStatus::Open => "open",
            DeadLetterStatus::Replayed => "replayed",
        }
    }
}

#[derive(Clone, Debug)]
pub struct DeadLetterFilter {
    pub provider: Option<String>,
    pub status: Option<DeadLetterStatus>,
    pub limit: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: i64,
    pub provider: String,
    pub source: String,
    pub record: u64,
    pub unit: Unit,
    pub code: ErrorCode,
    pub field: Option<String>,
    pub message: String,
    pub context: Vec<u8>,
    pub raw: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub attempts: u64,
    pub last_attempt_at: DateTime<Utc>,
    pub status: DeadLetterStatus,
    pub resolved_at: Option<DateTime<Utc>>,
}

const DEAD_LETTER_COLUMNS: &str = "id, provider, source, record, unit, code, field, message, context, raw, \
     created_at_ns, attempts, last_attempt_at_ns, status, resolved_at_ns";

fn dead_letter(row: &AnyRow) -> Result<DeadLetter> {
    let code: String = row.try_get(5)?;
    let unit: String = row.try_get(4)?;
    let status: String = row.try_get(13)?;
    Ok(DeadLetter {
        id: row.try_get(0)?,
        provider: row.try_get(1)?,
        source: row.try_get(2)?,
        record: row.try_get::<i64, _>(3)? as u64,
        unit: Unit::parse(&unit).ok_or_else(|| StoreError::Corrupt(format!("dead-letter unit {unit:?}")))?,
        code: ErrorCode::parse(&code).ok_or_else(|| StoreError::Corrupt(format!("error code {code:?}")))?,
        field: row.try_get(6)?,
        message: row.try_get(7)?,
        context: row.try_get(8)?,
        raw: row.try_get(9)?,
        created_at: from_timestamp_nanos(row.try_get(10)?),
        attempts: row.try_get::<i64, _>(11)? as u64,
        last_attempt_at: from_timestamp_nanos(row.try_get(12)?),
        status: match status.as_str() {
            "open" => DeadLetterStatus::Open,
            "replayed" => DeadLetterStatus::Replayed,
            other => return Err(StoreError::Corrupt(format!("dead-letter status {other:?}"))),
        },
        resolved_at: row.try_get::<Option<i64>, _>(14)?.map(from_timestamp_nanos),
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub id: i64,
    pub provider: String,
    pub provider_tx_id: String,
    pub original_seq: i64,
    /// The conflicting version, canonical fields as JSON.
    pub detail: String,
    pub source: String,
    pub record: u64,
    pub received_at: DateTime<Utc>,
}

/// Text as stored: control characters (which PostgreSQL refuses in TEXT when NUL, and which
/// garble a terminal) are escaped, so the same input is stored the same way on both stores.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    std::borrow::Cow::Owned(escaped)
}

pub(crate) fn nanos(at: DateTime<Utc>) -> Result<i64> {
    timestamp_nanos(at).ok_or_else(|| StoreError::Invariant(format!("timestamp {at} is outside 1677..2262")))
}

pub(crate) fn currency(text: &str) -> Result<CurrencyCode> {
    CurrencyCode::parse(text).ok_or_else(|| StoreError::Corrupt(format!("currency code {text:?}")))
}

pub(crate) fn kind(text: &str) -> Result<Kind> {
    text.parse().map_err(|_| StoreError::Corrupt(format!("transaction kind {text:?}")))
}

pub(crate) fn hash32(bytes: Vec<u8>) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| StoreError::Corrupt("a stored hash is not 32 bytes".into()))
}
