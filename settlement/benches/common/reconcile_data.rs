//! A day of ledger entries and the provider's own statement of it, for the reconciliation
//! benchmark (`benches/reconcile.rs`) and the timing example (`examples/reconcile_bench.rs`).
//! Deterministic: entry i is the same on every run.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use settlement::model::Kind;
use settlement::money::CurrencyCode;
use settlement::reconcile::{LedgerEntry, ReconPeriod, StatementLine, TotalsLine};

pub fn period() -> ReconPeriod {
    let from = Utc.with_ymd_and_hms(2026, 3, 10, 0, 0, 0).unwrap();
    ReconPeriod {
        business_date: NaiveDate::from_ymd_opt(2026, 3, 10).unwrap(),
        from,
        to: from + Duration::days(1),
        as_of: from + Duration::days(2),
    }
}

/// `count` entries spread over the middle of the day (clear of the cut-off windows), three
/// currencies, bets and wins (six totals rows), amounts from 0.01 to 100.00.
pub fn ledger(count: usize) -> Vec<LedgerEntry> {
    let currencies = ["USD", "EUR", "KRW"].map(|code| CurrencyCode::parse(code).unwrap());
    let start: DateTime<Utc> = period().from + Duration::hours(1);
    let span_nanos: i64 = 22 * 3600 * 1_000_000_000;
    (0..count)
        .map(|i| {
            let occurred_at = start + Duration::nanoseconds(span_nanos / count as i64 * i as i64);
            LedgerEntry {
                seq: i as i64 + 1,
                provider_tx_id: format!("tx-{i:09}"),
                kind: if (i / 3) % 4 == 0 { Kind::Win } else { Kind::Bet },
                currency: currencies[i % currencies.len()],
                amount: Decimal::new((i as i64 * 7919) % 10_000 + 1, 2),
                occurred_at,
                received_at: occurred_at + Duration::seconds(2),
            }
        })
        .collect()
}

/// The provider's listing of exactly these entries.
pub fn listing(ledger: &[LedgerEntry]) -> Vec<StatementLine> {
    let business_date = period().business_date;
    ledger
        .iter()
        .enumerate()
        .map(|(i, entry)| StatementLine {
            record: i as u64 + 2,
            detail: 0,
            provider_tx_id: Some(entry.provider_tx_id.clone()),
            reference: None,
            kind: Some(entry.kind),
            currency: entry.currency,
            amount: entry.amount,
            business_date,
            occurred_at: Some(entry.occurred_at),
        })
        .collect()
}

/// The provider's end-of-day totals of exactly these entries.
pub fn totals(ledger: &[LedgerEntry]) -> Vec<TotalsLine> {
    let business_date = period().business_date;
    let mut sums: BTreeMap<(CurrencyCode, Kind), (u64, Decimal)> = BTreeMap::new();
    for entry in ledger {
        let sum = sums.entry((entry.currency, entry.kind)).or_default();
        sum.0 += 1;
        sum.1 += entry.amount;
    }
    sums.into_iter()
        .enumerate()
        .map(|(i, ((currency, kind), (count, amount)))| TotalsLine {
            record: i as u64 + 2,
            business_date,
            currency,
            kind,
            count,
            amount,
        })
        .collect()
}
