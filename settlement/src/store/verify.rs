//! `verify`: re-derives everything the ledger stores from first principles and reports any
//! difference: every transaction's content hash, its postings against the posting rules
//! (present, balanced, right accounts and currency), every reversal against its original
//! (earlier, same kind, account and currency, never reversed beyond its amount), every
//! balance against the sum of its postings, and the trial balance (all accounts of a
//! currency sum to zero).

use std::fmt;

use futures_util::TryStreamExt;
use sqlx::{AnyPool, Row};

use super::{currency, hash32, kind, Result};
use crate::ledger::{postings, PostingInput};
use crate::model::{from_timestamp_nanos, sha256, Transaction};
use crate::money::{from_minor, CURRENCY_EXPONENT_MAX};

/// Findings listed in full; more are counted.
pub const FINDINGS_MAX: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    ContentHashMismatch {
        seq: i64,
        provider_tx_id: String,
    },
    PostingsMissing {
        seq: i64,
    },
    PostingsUnbalanced {
        seq: i64,
        imbalance_minor: i128,
    },
    PostingsDifferFromRules {
        seq: i64,
        expected: String,
        stored: String,
    },
    PostingRuleFails {
        seq: i64,
        reason: String,
    },
    BalanceDiffers {
        account: String,
        currency: String,
        balance_minor: i64,
        postings_sum_minor: i64,
    },
    /// A reversal whose original is missing, later, of another kind, account or currency.
    ReversalInconsistent {
        seq: i64,
        provider_tx_id: String,
        reason: String,
    },
    /// The reversals of a transaction add up to more than it.
    OverReversed {
        seq: i64,
        provider_tx_id: String,
        amount_minor: i64,
        reversed_minor: i64,
    },
    /// A stored value this build cannot interpret (e.g. an exponent out of range).
    CorruptRow {
        seq: i64,
        reason: String,
    },
    TrialBalanceNonZero {
        currency: String,
        sum_minor: i64,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::ContentHashMismatch { seq, provider_tx_id } => {
                write!(f, "transaction #{seq} ({provider_tx_id}): stored content hash does not match its fields")
            }
            Finding::PostingsMissing { seq } => write!(f, "transaction #{seq}: no postings"),
            Finding::PostingsUnbalanced { seq, imbalance_minor } => {
                write!(f, "transaction #{seq}: postings do not balance (debits - credits = {imbalance_minor} minor units)")
            }
            Finding::PostingsDifferFromRules { seq, expected, stored } => {
                write!(f, "transaction #{seq}: postings are [{stored}], the posting rules give [{expected}]")
            }
            Finding::PostingRuleFails { seq, reason } => write!(f, "transaction #{seq}: {reason}"),
            Finding::BalanceDiffers { account, currency, balance_minor, postings_sum_minor } => write!(
                f,
                "account {account} {currency}: balance {balance_minor} minor units, its postings sum to {postings_sum_minor}"
            ),
            Finding::ReversalInconsistent { seq, provider_tx_id, reason } => {
                write!(f, "transaction #{seq} ({provider_tx_id}): {reason}")
            }
            Finding::OverReversed { seq, provider_tx_id, amount_minor, reversed_minor } => write!(
                f,
                "transaction #{seq} ({provider_tx_id}): reversals total {reversed_minor} minor units, more than its {amount_minor}"
            ),
            Finding::CorruptRow { seq, reason } => write!(f, "transaction #{seq}: {reason}"),
            Finding::TrialBalanceNonZero { currency, sum_minor } => {
                write!(f, "currency {currency}: all balances sum to {sum_minor} minor units, not zero")
            }
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub transactions_checked: u64,
    pub postings_checked: u64,
    pub accounts_checked: u64,
    /// The first `FINDINGS_MAX` findings.
    pub findings: Vec<Finding>,
    pub findings_total: u64,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.findings_total == 0
    }

    fn add(&mut self, finding: Finding) {
        self.findings_total += 1;
        if self.findings.len() < FINDINGS_MAX {
            self.findings.push(finding);
        }
    }
}

/// One stored transaction with its stored postings (gathered from the ordered join).
struct Stored {
    seq: i64,
    tx: Transaction,
    reverses: Option<crate::model::Kind>,
    amount_minor: i64,
    content_sha256: [u8; 32],
    legs: Vec<(String, String, i64)>,
}

pub(super) async fn verify(pool: &AnyPool) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    {
        let mut rows = sqlx::query(
            "SELECT t.seq, p.name, t.provider_tx_id, t.kind, t.reverses_kind, t.account, t.game_id, t.round_id,
                    t.session_id, t.currency, t.exponent, t.amount_minor, t.occurred_at_ns, t.received_at_ns,
                    t.original_tx_id, t.content_sha256, a.name, a.currency, s.amount_minor
             FROM transactions t
             JOIN providers p ON p.id = t.provider_id
             LEFT JOIN postings s ON s.tx_seq = t.seq
             LEFT JOIN ledger_accounts a ON a.id = s.ledger_account_id
             ORDER BY t.seq, s.leg",
        )
        .fetch(pool);
        let mut current: Option<Stored> = None;
        while let Some(row) = rows.try_next().await? {
            let seq: i64 = row.try_get(0)?;
            if current.as_ref().map(|stored| stored.seq) != Some(seq) {
                if let Some(done) = current.take() {
                    check_transaction(&done, &mut report);
                }
                let exponent = row.try_get::<i64, _>(10)?;
                let amount_minor: i64 = row.try_get(11)?;
                let Some(exponent) = u32::try_from(exponent).ok().filter(|&exponent| exponent <= CURRENCY_EXPONENT_MAX)
                else {
                    report.transactions_checked += 1;
                    report.add(Finding::CorruptRow { seq, reason: format!("exponent {exponent} is out of range") });
                    continue;
                };
                current = Some(Stored {
                    seq,
                    tx: Transaction {
                        provider: row.try_get(1)?,
                        provider_tx_id: row.try_get(2)?,
                        kind: kind(&row.try_get::<String, _>(3)?)?,
                        account: row.try_get(5)?,
                        game_id: row.try_get(6)?,
                        round_id: row.try_get(7)?,
                        session_id: row.try_get(8)?,
                        currency: currency(&row.try_get::<String, _>(9)?)?,
                        amount: from_minor(amount_minor, exponent),
                        occurred_at: from_timestamp_nanos(row.try_get(12)?),
                        received_at: from_timestamp_nanos(row.try_get(13)?),
                        original_tx_id: row.try_get(14)?,
                        raw_sha256: sha256(b""),
                    },
                    reverses: row.try_get::<Option<String>, _>(4)?.as_deref().map(kind).transpose()?,
                    amount_minor,
                    content_sha256: hash32(row.try_get(15)?)?,
                    legs: Vec::new(),
                });
            }
            if let (Some(stored), Some(account)) = (current.as_mut(), row.try_get::<Option<String>, _>(16)?) {
                let leg_currency: String = row.try_get(17)?;
                stored.legs.push((account, leg_currency, row.try_get(18)?));
                report.postings_checked += 1;
            }
        }
        if let Some(done) = current.take() {
            check_transaction(&done, &mut report);
        }
    }

    check_reversals(pool, &mut report).await?;

    let balances = sqlx::query(
        "SELECT a.name, a.currency, COALESCE(b.balance_minor, 0), COALESCE(s.total, 0)
         FROM ledger_accounts a
         LEFT JOIN balances b ON b.ledger_account_id = a.id
         LEFT JOIN (SELECT ledger_account_id, CAST(SUM(amount_minor) AS BIGINT) AS total
                    FROM postings GROUP BY ledger_account_id) s ON s.ledger_account_id = a.id
         ORDER BY a.name, a.currency",
    )
    .fetch_all(pool)
    .await?;
    let mut trial: std::collections::BTreeMap<String, i128> = Default::default();
    for row in &balances {
        report.accounts_checked += 1;
        let (account, currency): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let (balance_minor, postings_sum_minor): (i64, i64) = (row.try_get(2)?, row.try_get(3)?);
        *trial.entry(currency.clone()).or_default() += balance_minor as i128;
        if balance_minor != postings_sum_minor {
            report.add(Finding::BalanceDiffers { account, currency, balance_minor, postings_sum_minor });
        }
    }
    for (currency, sum) in trial {
        if sum != 0 {
            report.add(Finding::TrialBalanceNonZero {
                currency,
                sum_minor: sum.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            });
        }
    }
    Ok(report)
}

/// Every reversal names an earlier original of the kind it records, with its account and
/// currency, and no original is reversed by more than its amount.
async fn check_reversals(pool: &AnyPool, report: &mut VerifyReport) -> Result<()> {
    let inconsistent = sqlx::query(
        "SELECT r.seq, r.provider_tx_id, r.original_tx_id, o.seq, o.kind, r.reverses_kind,
                o.account, r.account, o.currency, r.currency
         FROM transactions r
         LEFT JOIN transactions o ON o.provider_id = r.provider_id AND o.provider_tx_id = r.original_tx_id
         WHERE r.kind IN ('rollback', 'chargeback') AND r.original_tx_id IS NOT NULL
           AND (o.seq IS NULL OR o.seq > r.seq OR r.reverses_kind IS NULL OR o.kind <> r.reverses_kind
                OR o.account <> r.account OR o.currency <> r.currency)
         ORDER BY r.seq",
    )
    .fetch_all(pool)
    .await?;
    for row in &inconsistent {
        let original: String = row.try_get(2)?;
        let reason = match row.try_get::<Option<i64>, _>(3)? {
            None => format!("reverses {original}, which is not in the ledger"),
            Some(original_seq) => {
                let original_kind: String = row.try_get(4)?;
                let recorded: Option<String> = row.try_get(5)?;
                format!(
                    "reverses {original} (#{original_seq}, a {original_kind}); recorded as reversing {}; \
                     same account: {}, same currency: {}, original earlier: {}",
                    recorded.as_deref().unwrap_or("nothing"),
                    row.try_get::<String, _>(6)? == row.try_get::<String, _>(7)?,
                    row.try_get::<String, _>(8)? == row.try_get::<String, _>(9)?,
                    original_seq < row.try_get::<i64, _>(0)?,
                )
            }
        };
        report.add(Finding::ReversalInconsistent { seq: row.try_get(0)?, provider_tx_id: row.try_get(1)?, reason });
    }
    let over_reversed = sqlx::query(
        "SELECT o.seq, o.provider_tx_id, o.amount_minor, CAST(SUM(r.amount_minor) AS BIGINT)
         FROM transactions o
         JOIN transactions r ON r.provider_id = o.provider_id AND r.original_tx_id = o.provider_tx_id
              AND r.kind IN ('rollback', 'chargeback')
         GROUP BY o.seq, o.provider_tx_id, o.amount_minor
         HAVING SUM(r.amount_minor) > o.amount_minor
         ORDER BY o.seq",
    )
    .fetch_all(pool)
    .await?;
    for row in &over_reversed {
        report.add(Finding::OverReversed {
            seq: row.try_get(0)?,
            provider_tx_id: row.try_get(1)?,
            amount_minor: row.try_get(2)?,
            reversed_minor: row.try_get(3)?,
        });
    }
    Ok(())
}

fn check_transaction(stored: &Stored, report: &mut VerifyReport) {
    report.transactions_checked += 1;
    if stored.tx.content_hash() != stored.content_sha256 {
        report.add(Finding::ContentHashMismatch { seq: stored.seq, provider_tx_id: stored.tx.provider_tx_id.clone() });
    }
    if stored.legs.is_empty() {
        report.add(Finding::PostingsMissing { seq: stored.seq });
        return;
    }
    let imbalance_minor: i128 = stored.legs.iter().map(|(_, _, amount)| *amount as i128).sum();
    if imbalance_minor != 0 {
        report.add(Finding::PostingsUnbalanced { seq: stored.seq, imbalance_minor });
    }
    let input = PostingInput {
        provider: &stored.tx.provider,
        account: &stored.tx.account,
        kind: stored.tx.kind,
        reverses: stored.reverses,
        amount_minor: stored.amount_minor,
    };
    match postings(&input) {
        Ok(expected) => {
            let currency = stored.tx.currency.as_str();
            let expected: Vec<(String, String, i64)> =
                expected.iter().map(|p| (p.account.name(), currency.to_string(), p.amount_minor)).collect();
            if expected != stored.legs {
                let show = |legs: &[(String, String, i64)]| {
                    legs.iter().map(|(a, c, m)| format!("{a} {c} {m}")).collect::<Vec<_>>().join(", ")
                };
                report.add(Finding::PostingsDifferFromRules {
                    seq: stored.seq,
                    expected: show(&expected),
                    stored: show(&stored.legs),
                });
            }
        }
        Err(error) => report.add(Finding::PostingRuleFails { seq: stored.seq, reason: error.to_string() }),
    }
}
