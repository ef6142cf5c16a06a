//! The ledger writer: takes a group of decoded, validated items and writes them in one
//! database transaction: idempotency (duplicates, conflicts), the checks that need stored
//! state (the original of a reversal), postings, balances and dead letters. Either all of
//! a group is committed or none of it; callers are answered only after the commit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::{Any, Row};

use super::{begin_locked, hash32, kind, nanos, printable, Dialect, Result, StoreError};
use crate::ledger::{check_balanced, postings, Posting, PostingInput};
use crate::model::{Kind, Transaction};
use crate::money::{format_minor, CurrencyCode};
use crate::rejection::{ErrorCode, Rejection};
use crate::validate::{reversible_by, ValidTransaction};

/// Rows per multi-row INSERT (well under SQLite's 32766 and PostgreSQL's 65535 bound
/// parameters for the widest table).
const INSERT_ROWS_MAX: usize = 1000;
/// Keys per idempotency lookup.
const LOOKUP_KEYS_MAX: usize = 500;
/// Ledger account ids kept in memory; past this the cache starts over.
pub const ACCOUNT_CACHE_MAX: usize = 1_000_000;

/// Where an item came from, kept so a rejection or a conflict can be reviewed and replayed.
#[derive(Clone, Debug)]
pub struct Origin {
    pub source: Arc<str>,
    pub record: u64,
    pub raw: Vec<u8>,
    pub context: Arc<[u8]>,
}

/// What a dead letter holds: one record, or a payload rejected as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Record,
    Payload,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Record => "record",
            Unit::Payload => "payload",
        }
    }
    pub fn parse(text: &str) -> Option<Unit> {
        match text {
            "record" => Some(Unit::Record),
            "payload" => Some(Unit::Payload),
            _ => None,
        }
    }
}

/// Transactions are the common case by far; boxing them would allocate once per record.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Item {
    Transaction { valid: ValidTransaction, origin: Origin },
    Rejected { provider: String, unit: Unit, origin: Origin, rejection: Rejection },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted {
        seq: i64,
    },
    /// The same key with the same content is already stored.
    Duplicate {
        seq: i64,
    },
    /// The same key with other content: kept for review, the original untouched.
    Conflict {
        original_seq: i64,
    },
    /// Dead-lettered with this code.
    Rejected {
        code: ErrorCode,
    },
}

pub struct LedgerWriter {
    connection: PoolConnection<Any>,
    dialect: Dialect,
    provider_ids: HashMap<String, i64>,
    account_ids: HashMap<(String, CurrencyCode), i64>,
    /// The exponent each currency is stored with (`currency_units`).
    exponents: HashMap<CurrencyCode, u32>,
    account_cache_max: usize,
}

/// A stored (or earlier in this group) transaction a reversal points at.
#[derive(Clone, Debug)]
struct Original {
    kind: Kind,
    account: String,
    currency: String,
    amount_minor: i64,
    reversed_minor: i64,
}

/// What the first pass decided for one item.
enum Decision {
    /// Insert (if the key turns out to be stored already, becomes `Existing`).
    Insert,
    /// The key is stored: a duplicate or a conflict, by content hash.
    Existing {
        seq: i64,
        hash: [u8; 32],
    },
    /// The key appeared earlier in this group, at this index.
    SameKeyAs(usize),
    Reject(Rejection),
    DeadLetter,
}

/// The PostgreSQL advisory lock that serialises ledger writers across processes.
pub(super) const LEDGER_WRITE_LOCK: i64 = 0x5e77_1e00;

impl LedgerWriter {
    pub(super) fn new(connection: PoolConnection<Any>, dialect: Dialect) -> LedgerWriter {
        LedgerWriter {
            connection,
            dialect,
            provider_ids: HashMap::new(),
            account_ids: HashMap::new(),
            exponents: HashMap::new(),
            account_cache_max: ACCOUNT_CACHE_MAX,
        }
    }

    /// Caps the ledger-account id cache (default `ACCOUNT_CACHE_MAX`).
    pub fn with_account_cache_max(mut self, account_cache_max: usize) -> LedgerWriter {
        self.account_cache_max = account_cache_max;
        self
    }

    /// Writes a group in one database transaction; one outcome per item, in order.
    pub async fn write(&mut self, items: &[Item], now: DateTime<Utc>) -> Result<Vec<Outcome>> {
        let result = self.write_group(items, now).await;
        if result.is_err() {
            // Ids cached during a rolled-back transaction may not exist.
            self.provider_ids.clear();
            self.account_ids.clear();
            self.exponents.clear();
        }
        result
    }

    async fn write_group(&mut self, items: &[Item], now: DateTime<Utc>) -> Result<Vec<Outcome>> {
        let LedgerWriter { connection, provider_ids, account_ids, exponents, dialect, account_cache_max } = self;
        let mut tx = begin_locked(connection, *dialect, &[LEDGER_WRITE_LOCK]).await?;
        let caches = WriteCaches { provider_ids, account_ids, exponents, account_cache_max: *account_cache_max };
        let outcomes = write_items(&mut tx, *dialect, caches, items, now).await?;
        tx.commit().await?;
        Ok(outcomes)
    }
}

/// The id caches a write may use and fill: the ledger writer's own, or fresh ones for a
/// one-off posting (an approved adjustment).
pub(super) struct WriteCaches<'c> {
    pub provider_ids: &'c mut HashMap<String, i64>,
    pub account_ids: &'c mut HashMap<(String, CurrencyCode), i64>,
    pub exponents: &'c mut HashMap<CurrencyCode, u32>,
    pub account_cache_max: usize,
}

/// Writes a group inside `tx`, which must hold the ledger's write lock (`begin_locked` with
/// `LEDGER_WRITE_LOCK`): idempotency, reversal checks, transactions, postings (each pair
/// checked to balance), balances, conflicts and dead letters. The caller commits. This is
/// the one posting path: the ledger writer and approved adjustments both go through it.
pub(super) async fn write_items(
    tx: &mut sqlx::AnyConnection,
    dialect: Dialect,
    caches: WriteCaches<'_>,
    items: &[Item],
    now: DateTime<Utc>,
) -> Result<Vec<Outcome>> {
    let now_ns = nanos(now)?;
    let WriteCaches { provider_ids: provider_cache, account_ids, exponents, account_cache_max } = caches;
    let account_cache_max = &account_cache_max;
    for item in items {
        if let Item::Transaction { valid, .. } = item {
            if !provider_cache.contains_key(&valid.tx.provider) {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO providers (name) VALUES ($1)
                     ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
                )
                .bind(&valid.tx.provider)
                .fetch_one(&mut *tx)
                .await?;
                provider_cache.insert(valid.tx.provider.clone(), id);
            }
        }
    }
    let provider_ids = provider_cache.clone();
    let provider_id = |tx: &Transaction| provider_ids[&tx.provider];

    // Each currency keeps the exponent it was first stored with.
    for item in items {
        if let Item::Transaction { valid, .. } = item {
            if let std::collections::hash_map::Entry::Vacant(entry) = exponents.entry(valid.tx.currency) {
                entry.insert(stored_exponent(tx, valid.tx.currency, valid.exponent).await?);
            }
        }
    }

    // Decide each item in order. Reversals (rare) are checked one by one against the
    // ledger; everything else is inserted optimistically and sorted out afterwards.
    let mut decisions: Vec<Decision> = Vec::with_capacity(items.len());
    let mut reverses_of: Vec<Option<Kind>> = vec![None; items.len()];
    let mut first_of: HashMap<(i64, &str), usize> = HashMap::with_capacity(items.len());
    // What reversals need from the ledger, read up front in a few queries: whether the
    // reversal itself is stored already, and the originals it names.
    let reversals: Vec<&ValidTransaction> = items
        .iter()
        .filter_map(|item| match item {
            Item::Transaction { valid, .. } if is_reversal(valid) => Some(valid),
            _ => None,
        })
        .collect();
    let stored_reversals = lookup_keys(
        tx,
        dialect,
        reversals.iter().map(|valid| (provider_id(&valid.tx), valid.tx.provider_tx_id.as_str())),
    )
    .await?;
    let mut originals = load_originals(
        tx,
        dialect,
        reversals.iter().filter_map(|valid| Some((provider_id(&valid.tx), valid.tx.original_tx_id.as_deref()?))),
    )
    .await?;
    for (index, item) in items.iter().enumerate() {
        let Item::Transaction { valid, .. } = item else {
            decisions.push(Decision::DeadLetter);
            continue;
        };
        let pid = provider_id(&valid.tx);
        let key = (pid, valid.tx.provider_tx_id.as_str());
        let stored_exponent = exponents[&valid.tx.currency];
        if stored_exponent != valid.exponent {
            decisions.push(Decision::Reject(Rejection::field(
                ErrorCode::InvalidAmount,
                "currency",
                format!(
                    "{} is configured with exponent {} but the ledger stores it with {stored_exponent}: \
                     fix the currency configuration, then replay",
                    valid.tx.currency, valid.exponent
                ),
            )));
            continue;
        }
        if let Some(&first) = first_of.get(&key) {
            decisions.push(Decision::SameKeyAs(first));
            continue;
        }
        if is_reversal(valid) {
            // A redelivered reversal is a duplicate, not a second reversal.
            if let Some(&(seq, hash)) = stored_reversals.get(&(pid, valid.tx.provider_tx_id.clone())) {
                first_of.insert(key, index);
                decisions.push(Decision::Existing { seq, hash });
                continue;
            }
            match check_reversal(pid, index, items, &first_of, &mut originals) {
                Ok(original_kind) => reverses_of[index] = Some(original_kind),
                Err(rejection) => {
                    decisions.push(Decision::Reject(rejection));
                    continue;
                }
            }
        }
        first_of.insert(key, index);
        decisions.push(Decision::Insert);
    }

    // Transactions, with seqs handed out here.
    let mut next_seq: i64 = sqlx::query_scalar("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM transactions")
        .fetch_one(&mut *tx)
        .await?;
    let mut seqs: HashMap<usize, i64> = HashMap::with_capacity(items.len());
    let candidates: Vec<usize> =
        (0..items.len()).filter(|&index| matches!(decisions[index], Decision::Insert)).collect();
    for chunk in candidates.chunks(INSERT_ROWS_MAX) {
        let sql = format!(
            "INSERT INTO transactions (seq, provider_id, provider_tx_id, kind, reverses_kind, account, game_id,
               round_id, session_id, currency, exponent, amount_minor, occurred_at_ns, received_at_ns,
               original_tx_id, raw_sha256, content_sha256) VALUES {}
             ON CONFLICT (provider_id, provider_tx_id) DO NOTHING",
            value_rows(dialect, 17, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for &index in chunk {
            let valid = transaction(items, index);
            let tx_ = &valid.tx;
            next_seq += 1;
            seqs.insert(index, next_seq);
            query = query
                .bind(next_seq)
                .bind(provider_id(tx_))
                .bind(tx_.provider_tx_id.as_str())
                .bind(tx_.kind.as_str())
                .bind(reverses_of[index].map(Kind::as_str))
                .bind(tx_.account.as_str())
                .bind(tx_.game_id.as_deref())
                .bind(tx_.round_id.as_deref())
                .bind(tx_.session_id.as_deref())
                .bind(tx_.currency.as_str())
                .bind(valid.exponent as i64)
                .bind(valid.amount_minor)
                .bind(nanos(tx_.occurred_at)?)
                .bind(nanos(tx_.received_at)?)
                .bind(tx_.original_tx_id.as_deref())
                .bind(&tx_.raw_sha256[..])
                .bind(&valid.content_hash[..]);
        }
        let inserted = query.execute(&mut *tx).await?.rows_affected();
        if inserted < chunk.len() as u64 {
            // Some keys were stored already: a replay or a conflicting redelivery.
            let stored = lookup_keys(
                tx,
                dialect,
                chunk.iter().map(|&index| {
                    let valid = transaction(items, index);
                    (provider_id(&valid.tx), valid.tx.provider_tx_id.as_str())
                }),
            )
            .await?;
            for &index in chunk {
                let valid = transaction(items, index);
                let key = (provider_id(&valid.tx), valid.tx.provider_tx_id.clone());
                let &(seq, hash) = stored
                    .get(&key)
                    .ok_or_else(|| StoreError::Invariant(format!("{} is neither inserted nor stored", key.1)))?;
                if seq != seqs[&index] {
                    seqs.remove(&index);
                    decisions[index] = Decision::Existing { seq, hash };
                }
            }
        }
    }

    // Postings of what was inserted, each pair checked before anything is written.
    let mut legs: Vec<(usize, [Posting; 2])> = Vec::with_capacity(seqs.len());
    for index in (0..items.len()).filter(|index| seqs.contains_key(index)) {
        let valid = transaction(items, index);
        let input = PostingInput {
            provider: &valid.tx.provider,
            account: &valid.tx.account,
            kind: valid.tx.kind,
            reverses: reverses_of[index],
            amount_minor: valid.amount_minor,
        };
        let invariant = |error: String| {
            StoreError::Invariant(format!("{}/{}: {error}", valid.tx.provider, valid.tx.provider_tx_id))
        };
        let pair = postings(&input).map_err(|error| invariant(error.to_string()))?;
        check_balanced(&pair).map_err(|error| invariant(error.to_string()))?;
        legs.push((index, pair));
    }
    intern_accounts(tx, dialect, account_ids, *account_cache_max, items, &legs).await?;
    let mut deltas: HashMap<i64, i64> = HashMap::new();
    let mut rows: Vec<(i64, i64, i64, i64)> = Vec::with_capacity(legs.len() * 2);
    for (index, pair) in &legs {
        let currency = transaction(items, *index).tx.currency;
        for (leg, posting) in pair.iter().enumerate() {
            let name = posting.account.name();
            let account_id = *account_ids.get(&(name, currency)).ok_or_else(|| {
                StoreError::Invariant(format!("ledger account {} {currency} was not interned", posting.account.name()))
            })?;
            rows.push((seqs[index], leg as i64, account_id, posting.amount_minor));
            let delta = deltas.entry(account_id).or_default();
            *delta = delta
                .checked_add(posting.amount_minor)
                .ok_or_else(|| StoreError::Invariant(format!("balance of account {account_id} overflows")))?;
        }
    }
    for chunk in rows.chunks(INSERT_ROWS_MAX * 4) {
        let sql = format!(
            "INSERT INTO postings (tx_seq, leg, ledger_account_id, amount_minor) VALUES {}",
            value_rows(dialect, 4, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for &(seq, leg, account, amount) in chunk {
            query = query.bind(seq).bind(leg).bind(account).bind(amount);
        }
        query.execute(&mut *tx).await?;
    }
    let mut deltas: Vec<(i64, i64)> = deltas.into_iter().collect();
    deltas.sort_unstable();
    for chunk in deltas.chunks(INSERT_ROWS_MAX * 4) {
        let sql = format!(
            "INSERT INTO balances (ledger_account_id, balance_minor) VALUES {}
             ON CONFLICT (ledger_account_id) DO UPDATE SET balance_minor = balances.balance_minor + excluded.balance_minor",
            value_rows(dialect, 2, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for &(account, delta) in chunk {
            query = query.bind(account).bind(delta);
        }
        query.execute(&mut *tx).await?;
    }

    // Outcomes; conflicts and dead letters are written with them.
    let mut outcomes = Vec::with_capacity(items.len());
    for index in 0..items.len() {
        let stored_version = |first: usize| match (&decisions[first], seqs.get(&first)) {
            (_, Some(&seq)) => (seq, transaction(items, first).content_hash),
            (Decision::Existing { seq, hash }, None) => (*seq, *hash),
            _ => unreachable!("a first occurrence is inserted or stored"),
        };
        let outcome = match (&decisions[index], &items[index]) {
            (Decision::Insert, _) => Outcome::Accepted { seq: seqs[&index] },
            (Decision::Existing { .. } | Decision::SameKeyAs(_), Item::Transaction { valid, origin }) => {
                let first = match decisions[index] {
                    Decision::SameKeyAs(first) => first,
                    _ => index,
                };
                let (seq, hash) = stored_version(first);
                if hash == valid.content_hash {
                    Outcome::Duplicate { seq }
                } else {
                    insert_conflict(tx, provider_id(&valid.tx), seq, valid, origin).await?;
                    Outcome::Conflict { original_seq: seq }
                }
            }
            (Decision::Reject(rejection), Item::Transaction { valid, origin }) => {
                insert_dead_letter(tx, &valid.tx.provider, Unit::Record, origin, rejection, now_ns).await?;
                Outcome::Rejected { code: rejection.code }
            }
            (Decision::DeadLetter, Item::Rejected { provider, unit, origin, rejection }) => {
                insert_dead_letter(tx, provider, *unit, origin, rejection, now_ns).await?;
                Outcome::Rejected { code: rejection.code }
            }
            _ => unreachable!("decisions follow the item kinds"),
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

fn transaction(items: &[Item], index: usize) -> &ValidTransaction {
    match &items[index] {
        Item::Transaction { valid, .. } => valid,
        Item::Rejected { .. } => unreachable!("only transactions are indexed here"),
    }
}

fn is_reversal(valid: &ValidTransaction) -> bool {
    reversible_by(valid.tx.kind).is_some() && valid.tx.original_tx_id.is_some()
}

/// Runs `SELECT {columns} FROM transactions t WHERE t.provider_id = .. AND t.provider_tx_id
/// IN (..)` for `keys` (provider id, provider transaction id), grouped by provider and in
/// chunks, handing every row with its provider id to `each`.
async fn select_by_keys<'k>(
    tx: &mut sqlx::AnyConnection,
    dialect: Dialect,
    columns: &str,
    keys: impl Iterator<Item = (i64, &'k str)>,
    mut each: impl FnMut(i64, AnyRow) -> Result<()>,
) -> Result<()> {
    let mut by_provider: HashMap<i64, Vec<&str>> = HashMap::new();
    for (pid, key) in keys {
        by_provider.entry(pid).or_default().push(key);
    }
    for (pid, mut keys) in by_provider {
        keys.sort_unstable();
        keys.dedup();
        for chunk in keys.chunks(LOOKUP_KEYS_MAX) {
            let sql = format!(
                "SELECT {columns} FROM transactions t WHERE t.provider_id = {} AND t.provider_tx_id IN ({})",
                placeholders(dialect, 1, 1),
                placeholders(dialect, 2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(pid);
            for key in chunk {
                query = query.bind(*key);
            }
            for row in query.fetch_all(&mut *tx).await? {
                each(pid, row)?;
            }
        }
    }
    Ok(())
}

/// The exponent `currency` is stored with, recording `configured` if it is new.
async fn stored_exponent(tx: &mut sqlx::AnyConnection, currency: CurrencyCode, configured: u32) -> Result<u32> {
    let stored: Option<i64> = sqlx::query_scalar("SELECT exponent FROM currency_units WHERE code = $1")
        .bind(currency.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    match stored {
        Some(exponent) => u32::try_from(exponent)
            .map_err(|_| StoreError::Corrupt(format!("currency {currency} has exponent {exponent}"))),
        None => {
            sqlx::query("INSERT INTO currency_units (code, exponent) VALUES ($1, $2)")
                .bind(currency.as_str())
                .bind(configured as i64)
                .execute(&mut *tx)
                .await?;
            Ok(configured)
        }
    }
}

/// Seq and content hash of those of `keys` that are stored.
async fn lookup_keys<'k>(
    tx: &mut sqlx::AnyConnection,
    dialect: Dialect,
    keys: impl Iterator<Item = (i64, &'k str)>,
) -> Result<HashMap<(i64, String), (i64, [u8; 32])>> {
    let mut stored = HashMap::new();
    select_by_keys(tx, dialect, "t.provider_tx_id, t.seq, t.content_sha256", keys, |pid, row| {
        stored.insert((pid, row.try_get(0)?), (row.try_get(1)?, hash32(row.try_get(2)?)?));
        Ok(())
    })
    .await?;
    Ok(stored)
}

async fn insert_conflict(
    tx: &mut sqlx::AnyConnection,
    pid: i64,
    original_seq: i64,
    valid: &ValidTransaction,
    origin: &Origin,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO conflicts (provider_id, provider_tx_id, original_seq, content_sha256, detail,
           source, record, raw, received_at_ns) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (provider_id, provider_tx_id, content_sha256) DO NOTHING",
    )
    .bind(pid)
    .bind(valid.tx.provider_tx_id.as_str())
    .bind(original_seq)
    .bind(valid.content_hash.to_vec())
    .bind(conflict_detail(valid))
    .bind(printable(&origin.source).into_owned())
    .bind(origin.record as i64)
    .bind(origin.raw.as_slice())
    .bind(nanos(valid.tx.received_at)?)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// For a reversal: its original must exist (in the ledger, or earlier in this group), be of
/// a kind this reversal may reverse, in the same currency and account, and all reversals
/// of it together may not exceed it. Returns the original's kind. `originals` holds the
/// stored originals (with what was reversed of them) and is kept up to date here.
fn check_reversal(
    pid: i64,
    index: usize,
    items: &[Item],
    first_of: &HashMap<(i64, &str), usize>,
    originals: &mut HashMap<(i64, String), Original>,
) -> Result<Kind, Rejection> {
    let valid = transaction(items, index);
    let allowed = reversible_by(valid.tx.kind).expect("a reversal");
    let original_id = valid.tx.original_tx_id.as_deref().expect("a reversal names its original");
    let key = (pid, original_id.to_string());
    if !originals.contains_key(&key) {
        let original = first_of.get(&(pid, original_id)).map(|&first| {
            let earlier = transaction(items, first);
            Original {
                kind: earlier.tx.kind,
                account: earlier.tx.account.clone(),
                currency: earlier.tx.currency.to_string(),
                amount_minor: earlier.amount_minor,
                reversed_minor: 0,
            }
        });
        match original {
            Some(original) => {
                originals.insert(key.clone(), original);
            }
            None => {
                return Err(Rejection::field(
                    ErrorCode::RollbackUnknownOriginal,
                    "original_tx_id",
                    format!("{} names {original_id}, which is not in the ledger", valid.tx.kind),
                ))
            }
        }
    }
    let original = originals.get_mut(&key).expect("inserted above");
    if !allowed(original.kind) {
        return Err(Rejection::field(
            ErrorCode::RollbackMismatch,
            "original_tx_id",
            format!("a {} cannot reverse {original_id}, a {}", valid.tx.kind, original.kind),
        ));
    }
    if original.currency != valid.tx.currency.as_str() || original.account != valid.tx.account {
        return Err(Rejection::field(
            ErrorCode::RollbackMismatch,
            "original_tx_id",
            format!(
                "{original_id} is {} {} on account {}, the {} is {} on account {}",
                original.kind, original.currency, original.account, valid.tx.kind, valid.tx.currency, valid.tx.account
            ),
        ));
    }
    match original.reversed_minor.checked_add(valid.amount_minor) {
        Some(total) if total <= original.amount_minor => {
            original.reversed_minor = total;
            Ok(original.kind)
        }
        _ => Err(Rejection::field(
            ErrorCode::RollbackExceedsOriginal,
            "amount",
            format!(
                "reversing {} more of {original_id} would exceed its {} (already reversed {})",
                format_minor(valid.amount_minor, valid.exponent),
                format_minor(original.amount_minor, valid.exponent),
                format_minor(original.reversed_minor, valid.exponent),
            ),
        )),
    }
}

async fn intern_accounts(
    tx: &mut sqlx::AnyConnection,
    dialect: Dialect,
    account_ids: &mut HashMap<(String, CurrencyCode), i64>,
    account_cache_max: usize,
    items: &[Item],
    legs: &[(usize, [Posting; 2])],
) -> Result<()> {
    // Room for every account this group can touch, made before anything is looked up, so
    // that no account this group needs is evicted after it was found.
    if account_ids.len() + 2 * legs.len() > account_cache_max {
        account_ids.clear();
    }
    let mut missing: HashSet<(String, CurrencyCode)> = HashSet::new();
    for (index, pair) in legs {
        let Item::Transaction { valid, .. } = &items[*index] else { unreachable!() };
        for posting in pair {
            let key = (posting.account.name(), valid.tx.currency);
            if !account_ids.contains_key(&key) {
                missing.insert(key);
            }
        }
    }
    let mut missing: Vec<(String, CurrencyCode)> = missing.into_iter().collect();
    missing.sort_unstable();
    if missing.is_empty() {
        return Ok(());
    }
    // Accounts created by an earlier run (or evicted from the cache) are looked up ...
    let mut by_currency: HashMap<CurrencyCode, Vec<&str>> = HashMap::new();
    for (name, currency) in &missing {
        by_currency.entry(*currency).or_default().push(name);
    }
    for (currency, names) in by_currency {
        for chunk in names.chunks(LOOKUP_KEYS_MAX) {
            let sql = format!(
                "SELECT id, name FROM ledger_accounts WHERE currency = {} AND name IN ({})",
                placeholders(dialect, 1, 1),
                placeholders(dialect, 2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(currency.as_str());
            for name in chunk {
                query = query.bind(*name);
            }
            for row in query.fetch_all(&mut *tx).await? {
                account_ids.insert((row.try_get(1)?, currency), row.try_get(0)?);
            }
        }
    }
    // ... and the new ones get ids here (the write lock is held).
    let new: Vec<&(String, CurrencyCode)> = missing.iter().filter(|key| !account_ids.contains_key(*key)).collect();
    let mut next_id: i64 = sqlx::query_scalar("SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM ledger_accounts")
        .fetch_one(&mut *tx)
        .await?;
    for chunk in new.chunks(INSERT_ROWS_MAX) {
        let sql =
            format!("INSERT INTO ledger_accounts (id, name, currency) VALUES {}", value_rows(dialect, 3, chunk.len()));
        let mut query = sqlx::query(&sql);
        for (name, currency) in chunk.iter().copied() {
            next_id += 1;
            account_ids.insert((name.clone(), *currency), next_id);
            query = query.bind(next_id).bind(name.as_str()).bind(currency.as_str());
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

/// The stored transactions among `keys` (provider id, provider transaction id), each with
/// the total already reversed of it.
async fn load_originals<'k>(
    tx: &mut sqlx::AnyConnection,
    dialect: Dialect,
    keys: impl Iterator<Item = (i64, &'k str)>,
) -> Result<HashMap<(i64, String), Original>> {
    const COLUMNS: &str = "t.provider_tx_id, t.kind, t.account, t.currency, t.amount_minor,
        (SELECT COALESCE(CAST(SUM(r.amount_minor) AS BIGINT), 0) FROM transactions r
         WHERE r.provider_id = t.provider_id AND r.original_tx_id = t.provider_tx_id
           AND r.kind IN ('rollback', 'chargeback'))";
    let mut originals = HashMap::new();
    select_by_keys(tx, dialect, COLUMNS, keys, |pid, row| {
        let original = Original {
            kind: kind(&row.try_get::<String, _>(1)?)?,
            account: row.try_get(2)?,
            currency: row.try_get(3)?,
            amount_minor: row.try_get(4)?,
            reversed_minor: row.try_get(5)?,
        };
        originals.insert((pid, row.try_get(0)?), original);
        Ok(())
    })
    .await?;
    Ok(originals)
}

async fn insert_dead_letter(
    tx: &mut sqlx::AnyConnection,
    provider: &str,
    unit: Unit,
    origin: &Origin,
    rejection: &Rejection,
    now_ns: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO dead_letters (provider, source, record, unit, code, field, message, context, raw, raw_sha256,
           created_at_ns, attempts, last_attempt_at_ns, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $11, 'open')
         ON CONFLICT (provider, source, record, raw_sha256) DO UPDATE SET
           code = excluded.code, field = excluded.field, message = excluded.message,
           attempts = dead_letters.attempts + 1, last_attempt_at_ns = excluded.last_attempt_at_ns, status = 'open'",
    )
    .bind(printable(provider).into_owned())
    .bind(printable(&origin.source).into_owned())
    .bind(origin.record as i64)
    .bind(unit.as_str())
    .bind(rejection.code.as_str())
    .bind(rejection.field.as_deref().map(|field| printable(field).into_owned()))
    .bind(printable(&rejection.message).into_owned())
    .bind(&*origin.context)
    .bind(origin.raw.as_slice())
    .bind(crate::model::sha256(&origin.raw).to_vec())
    .bind(now_ns)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn conflict_detail(valid: &ValidTransaction) -> String {
    let tx = &valid.tx;
    serde_json::json!({
        "kind": tx.kind.as_str(),
        "account": tx.account,
        "game_id": tx.game_id,
        "round_id": tx.round_id,
        "session_id": tx.session_id,
        "currency": tx.currency.as_str(),
        "amount": format_minor(valid.amount_minor, valid.exponent),
        "occurred_at": tx.occurred_at.to_rfc3339(),
        "original_tx_id": tx.original_tx_id,
        "content_sha256": hex::encode(valid.content_hash),
    })
    .to_string()
}

/// `count` bound parameters. PostgreSQL numbers them (`$start, $start+1, ...`); SQLite gets
/// anonymous `?`, because it resolves every named parameter by a linear scan, which makes a
/// multi-row statement with thousands of `$N` quadratic.
pub(super) fn placeholders(dialect: Dialect, start: usize, count: usize) -> String {
    let mut sql = String::with_capacity(count * 7);
    for i in 0..count {
        if i > 0 {
            sql.push_str(", ");
        }
        match dialect {
            Dialect::Sqlite => sql.push('?'),
            Dialect::Postgres => {
                sql.push('$');
                sql.push_str(&(start + i).to_string());
            }
        }
    }
    sql
}

/// `($1, $2), ($3, $4), ...`: `rows` rows of `columns` parameters.
pub(super) fn value_rows(dialect: Dialect, columns: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 7);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&placeholders(dialect, 1 + row * columns, columns));
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_numbered_rows() {
        assert_eq!(value_rows(Dialect::Postgres, 2, 2), "($1, $2), ($3, $4)");
        assert_eq!(placeholders(Dialect::Postgres, 2, 3), "$2, $3, $4");
        assert_eq!(value_rows(Dialect::Sqlite, 2, 2), "(?, ?), (?, ?)");
    }
}
