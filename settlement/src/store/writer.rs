//! The ledger writer: takes a group of decoded, validated items and writes them in one
//! database transaction: idempotency (duplicates, conflicts), the checks that need stored
//! state (the original of a reversal), postings, balances and dead letters. Either all of
//! a group is committed or none of it; callers are answered only after the commit.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{Any, Connection, Row};

use super::{hash32, kind, nanos, Dialect, Result, StoreError};
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
    Accept,
    DuplicateOf(Target),
    ConflictWith(Target),
    Reject(Rejection),
    DeadLetter,
}

#[derive(Clone, Copy)]
enum Target {
    Stored(i64),
    InGroup(usize),
}

impl LedgerWriter {
    pub(super) fn new(connection: PoolConnection<Any>, dialect: Dialect) -> LedgerWriter {
        LedgerWriter { connection, dialect, provider_ids: HashMap::new(), account_ids: HashMap::new() }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Writes a group in one database transaction; one outcome per item, in order.
    pub async fn write(&mut self, items: &[Item], now: DateTime<Utc>) -> Result<Vec<Outcome>> {
        let result = self.write_group(items, now).await;
        if result.is_err() {
            // Ids cached during a rolled-back transaction may not exist.
            self.provider_ids.clear();
            self.account_ids.clear();
        }
        result
    }

    async fn write_group(&mut self, items: &[Item], now: DateTime<Utc>) -> Result<Vec<Outcome>> {
        let now_ns = nanos(now)?;
        let LedgerWriter { connection, provider_ids: provider_cache, account_ids, .. } = self;
        let mut tx = connection.begin().await?;

        // Provider ids.
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

        // Idempotency: which keys are stored already.
        let mut keys_by_provider: HashMap<i64, Vec<&str>> = HashMap::new();
        for item in items {
            if let Item::Transaction { valid, .. } = item {
                keys_by_provider.entry(provider_id(&valid.tx)).or_default().push(&valid.tx.provider_tx_id);
            }
        }
        let mut stored: HashMap<(i64, String), (i64, [u8; 32])> = HashMap::new();
        for (&pid, keys) in &keys_by_provider {
            for chunk in keys.chunks(LOOKUP_KEYS_MAX) {
                let sql = format!(
                    "SELECT provider_tx_id, seq, content_sha256 FROM transactions
                     WHERE provider_id = $1 AND provider_tx_id IN ({})",
                    placeholders(2, chunk.len())
                );
                let mut query = sqlx::query(&sql).bind(pid);
                for key in chunk {
                    query = query.bind(*key);
                }
                for row in query.fetch_all(&mut *tx).await? {
                    stored.insert((pid, row.try_get(0)?), (row.try_get(1)?, hash32(row.try_get(2)?)?));
                }
            }
        }

        // First pass: decide each item, in order (a rollback may follow its bet in the group).
        let mut decisions = Vec::with_capacity(items.len());
        let mut in_group: HashMap<(i64, &str), usize> = HashMap::new();
        let mut originals: HashMap<(i64, String), Original> = HashMap::new();
        for (index, item) in items.iter().enumerate() {
            let Item::Transaction { valid, .. } = item else {
                decisions.push(Decision::DeadLetter);
                continue;
            };
            let pid = provider_id(&valid.tx);
            let key = (pid, valid.tx.provider_tx_id.as_str());
            if let Some(&(seq, hash)) = stored.get(&(pid, valid.tx.provider_tx_id.clone())) {
                decisions.push(if hash == valid.content_hash {
                    Decision::DuplicateOf(Target::Stored(seq))
                } else {
                    Decision::ConflictWith(Target::Stored(seq))
                });
                continue;
            }
            if let Some(&first) = in_group.get(&key) {
                let Item::Transaction { valid: first_valid, .. } = &items[first] else { unreachable!() };
                decisions.push(if first_valid.content_hash == valid.content_hash {
                    Decision::DuplicateOf(Target::InGroup(first))
                } else {
                    Decision::ConflictWith(Target::InGroup(first))
                });
                continue;
            }
            if let Err(rejection) = check_reversal(&mut tx, pid, valid, &mut originals).await? {
                decisions.push(Decision::Reject(rejection));
                continue;
            }
            in_group.insert(key, index);
            if valid.tx.kind.is_reversible() || valid.tx.kind == Kind::Deposit {
                originals.insert(
                    (pid, valid.tx.provider_tx_id.clone()),
                    Original {
                        kind: valid.tx.kind,
                        account: valid.tx.account.clone(),
                        currency: valid.tx.currency.to_string(),
                        amount_minor: valid.amount_minor,
                        reversed_minor: 0,
                    },
                );
            }
            decisions.push(Decision::Accept);
        }

        // Postings of accepted items, each checked before anything is written.
        let mut legs: Vec<(usize, [Posting; 2])> = Vec::new();
        for (index, decision) in decisions.iter().enumerate() {
            let (Decision::Accept, Item::Transaction { valid, .. }) = (decision, &items[index]) else { continue };
            let reverses = reverses_kind(valid, provider_id(&valid.tx), &originals);
            let input = PostingInput {
                provider: &valid.tx.provider,
                account: &valid.tx.account,
                kind: valid.tx.kind,
                reverses,
                amount_minor: valid.amount_minor,
            };
            let pair = postings(&input).map_err(|error| {
                StoreError::Invariant(format!("{}/{}: {error}", valid.tx.provider, valid.tx.provider_tx_id))
            })?;
            check_balanced(&pair).map_err(|error| {
                StoreError::Invariant(format!("{}/{}: {error}", valid.tx.provider, valid.tx.provider_tx_id))
            })?;
            legs.push((index, pair));
        }
        intern_accounts(&mut tx, account_ids, items, &legs).await?;

        // Transactions.
        let accepted: Vec<usize> = legs.iter().map(|(index, _)| *index).collect();
        let mut seqs: HashMap<usize, i64> = HashMap::with_capacity(accepted.len());
        for chunk in accepted.chunks(INSERT_ROWS_MAX) {
            let sql = format!(
                "INSERT INTO transactions (provider_id, provider_tx_id, kind, reverses_kind, account, game_id, round_id,
                   session_id, currency, exponent, amount_minor, occurred_at_ns, received_at_ns, original_tx_id,
                   raw_sha256, content_sha256) VALUES {} RETURNING seq, provider_id, provider_tx_id",
                value_rows(16, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            let mut position: HashMap<(i64, &str), usize> = HashMap::with_capacity(chunk.len());
            for &index in chunk {
                let Item::Transaction { valid, .. } = &items[index] else { unreachable!() };
                let tx_ = &valid.tx;
                let pid = provider_id(tx_);
                position.insert((pid, tx_.provider_tx_id.as_str()), index);
                query = query
                    .bind(pid)
                    .bind(tx_.provider_tx_id.as_str())
                    .bind(tx_.kind.as_str())
                    .bind(reverses_kind(valid, pid, &originals).map(Kind::as_str))
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
                    .bind(tx_.raw_sha256.to_vec())
                    .bind(valid.content_hash.to_vec());
            }
            for row in query.fetch_all(&mut *tx).await? {
                let pid: i64 = row.try_get(1)?;
                let tx_id: String = row.try_get(2)?;
                let index = position
                    .get(&(pid, tx_id.as_str()))
                    .ok_or_else(|| StoreError::Invariant(format!("insert returned an unknown key {tx_id}")))?;
                seqs.insert(*index, row.try_get(0)?);
            }
        }
        if seqs.len() != accepted.len() {
            return Err(StoreError::Invariant(format!("inserted {} of {} transactions", seqs.len(), accepted.len())));
        }

        // Postings and balances.
        let mut deltas: HashMap<i64, i64> = HashMap::new();
        let mut rows: Vec<(i64, i64, i64, i64)> = Vec::with_capacity(legs.len() * 2);
        for (index, pair) in &legs {
            let Item::Transaction { valid, .. } = &items[*index] else { unreachable!() };
            for (leg, posting) in pair.iter().enumerate() {
                let account_id = account_ids[&(posting.account.name(), valid.tx.currency)];
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
                value_rows(4, chunk.len())
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
                value_rows(2, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for &(account, delta) in chunk {
                query = query.bind(account).bind(delta);
            }
            query.execute(&mut *tx).await?;
        }

        // Outcomes, conflicts and dead letters.
        let seq_of = |target: Target| match target {
            Target::Stored(seq) => seq,
            Target::InGroup(index) => seqs[&index],
        };
        let mut outcomes = Vec::with_capacity(items.len());
        for (index, decision) in decisions.into_iter().enumerate() {
            let outcome = match (decision, &items[index]) {
                (Decision::Accept, _) => Outcome::Accepted { seq: seqs[&index] },
                (Decision::DuplicateOf(target), _) => Outcome::Duplicate { seq: seq_of(target) },
                (Decision::ConflictWith(target), Item::Transaction { valid, origin }) => {
                    let original_seq = seq_of(target);
                    sqlx::query(
                        "INSERT INTO conflicts (provider_id, provider_tx_id, original_seq, content_sha256, detail,
                           source, record, raw, received_at_ns) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                         ON CONFLICT (provider_id, provider_tx_id, content_sha256) DO NOTHING",
                    )
                    .bind(provider_id(&valid.tx))
                    .bind(valid.tx.provider_tx_id.as_str())
                    .bind(original_seq)
                    .bind(valid.content_hash.to_vec())
                    .bind(conflict_detail(valid))
                    .bind(&*origin.source)
                    .bind(origin.record as i64)
                    .bind(origin.raw.as_slice())
                    .bind(nanos(valid.tx.received_at)?)
                    .execute(&mut *tx)
                    .await?;
                    Outcome::Conflict { original_seq }
                }
                (Decision::Reject(rejection), Item::Transaction { valid, origin }) => {
                    insert_dead_letter(&mut tx, &valid.tx.provider, Unit::Record, origin, &rejection, now_ns).await?;
                    Outcome::Rejected { code: rejection.code }
                }
                (Decision::DeadLetter, Item::Rejected { provider, unit, origin, rejection }) => {
                    insert_dead_letter(&mut tx, provider, *unit, origin, rejection, now_ns).await?;
                    Outcome::Rejected { code: rejection.code }
                }
                _ => unreachable!("decisions follow the item kinds"),
            };
            outcomes.push(outcome);
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

/// For a rollback or a chargeback naming its original: the original must exist (stored
/// or earlier in this group), be of a reversible kind, in the same currency and account,
/// and all reversals of it together may not exceed it.
async fn check_reversal(
    tx: &mut sqlx::AnyConnection,
    pid: i64,
    valid: &ValidTransaction,
    originals: &mut HashMap<(i64, String), Original>,
) -> Result<Result<(), Rejection>> {
    let Some(allowed) = reversible_by(valid.tx.kind) else { return Ok(Ok(())) };
    let Some(original_id) = valid.tx.original_tx_id.as_deref() else { return Ok(Ok(())) };
    let key = (pid, original_id.to_string());
    if !originals.contains_key(&key) {
        match load_original(tx, pid, original_id).await? {
            Some(original) => {
                originals.insert(key.clone(), original);
            }
            None => {
                return Ok(Err(Rejection::field(
                    ErrorCode::RollbackUnknownOriginal,
                    "original_tx_id",
                    format!("{} names {original_id}, which is not in the ledger", valid.tx.kind),
                )))
            }
        }
    }
    let original = originals.get_mut(&key).expect("inserted above");
    if !allowed(original.kind) {
        return Ok(Err(Rejection::field(
            ErrorCode::RollbackMismatch,
            "original_tx_id",
            format!("a {} cannot reverse {original_id}, a {}", valid.tx.kind, original.kind),
        )));
    }
    if original.currency != valid.tx.currency.as_str() || original.account != valid.tx.account {
        return Ok(Err(Rejection::field(
            ErrorCode::RollbackMismatch,
            "original_tx_id",
            format!(
                "{original_id} is {} {} on account {}, the {} is {} on account {}",
                original.kind, original.currency, original.account, valid.tx.kind, valid.tx.currency, valid.tx.account
            ),
        )));
    }
    let reversed = original.reversed_minor.checked_add(valid.amount_minor);
    Ok(match reversed {
        Some(total) if total <= original.amount_minor => {
            original.reversed_minor = total;
            Ok(())
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
    })
}

async fn intern_accounts(
    tx: &mut sqlx::AnyConnection,
    account_ids: &mut HashMap<(String, CurrencyCode), i64>,
    items: &[Item],
    legs: &[(usize, [Posting; 2])],
) -> Result<()> {
    let mut missing: Vec<(String, CurrencyCode)> = Vec::new();
    for (index, pair) in legs {
        let Item::Transaction { valid, .. } = &items[*index] else { unreachable!() };
        for posting in pair {
            let key = (posting.account.name(), valid.tx.currency);
            if !account_ids.contains_key(&key) && !missing.contains(&key) {
                missing.push(key);
            }
        }
    }
    if account_ids.len() + missing.len() > ACCOUNT_CACHE_MAX {
        account_ids.clear();
    }
    for chunk in missing.chunks(INSERT_ROWS_MAX) {
        let sql = format!(
            "INSERT INTO ledger_accounts (name, currency) VALUES {}
             ON CONFLICT (name, currency) DO UPDATE SET name = excluded.name RETURNING id, name, currency",
            value_rows(2, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for (name, currency) in chunk {
            query = query.bind(name.as_str()).bind(currency.as_str());
        }
        for row in query.fetch_all(&mut *tx).await? {
            let currency = super::currency(&row.try_get::<String, _>(2)?)?;
            account_ids.insert((row.try_get(1)?, currency), row.try_get(0)?);
        }
    }
    Ok(())
}

async fn load_original(tx: &mut sqlx::AnyConnection, pid: i64, original_id: &str) -> Result<Option<Original>> {
    let row = sqlx::query(
        "SELECT kind, account, currency, amount_minor,
                (SELECT COALESCE(CAST(SUM(r.amount_minor) AS BIGINT), 0) FROM transactions r
                 WHERE r.provider_id = $1 AND r.original_tx_id = $2 AND r.kind IN ('rollback', 'chargeback'))
         FROM transactions WHERE provider_id = $1 AND provider_tx_id = $2",
    )
    .bind(pid)
    .bind(original_id)
    .fetch_optional(&mut *tx)
    .await?;
    row.map(|row| {
        Ok(Original {
            kind: kind(&row.try_get::<String, _>(0)?)?,
            account: row.try_get(1)?,
            currency: row.try_get(2)?,
            amount_minor: row.try_get(3)?,
            reversed_minor: row.try_get(4)?,
        })
    })
    .transpose()
}

fn reverses_kind(valid: &ValidTransaction, pid: i64, originals: &HashMap<(i64, String), Original>) -> Option<Kind> {
    reversible_by(valid.tx.kind)?;
    let original_id = valid.tx.original_tx_id.as_ref()?;
    originals.get(&(pid, original_id.clone())).map(|original| original.kind)
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
    .bind(provider)
    .bind(&*origin.source)
    .bind(origin.record as i64)
    .bind(unit.as_str())
    .bind(rejection.code.as_str())
    .bind(rejection.field.as_deref())
    .bind(rejection.message.as_str())
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

/// `$start, $start+1, ...` for `count` parameters.
fn placeholders(start: usize, count: usize) -> String {
    let mut sql = String::with_capacity(count * 6);
    for i in 0..count {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('$');
        sql.push_str(&(start + i).to_string());
    }
    sql
}

/// `($1, $2), ($3, $4), ...`: `rows` rows of `columns` parameters.
fn value_rows(columns: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 7);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&placeholders(1 + row * columns, columns));
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_numbered_rows() {
        assert_eq!(value_rows(2, 2), "($1, $2), ($3, $4)");
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
    }
}
