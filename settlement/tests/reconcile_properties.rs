//! Properties of the matching engine over seeded ledgers: a ledger reconciled against its
//! own listing or totals finds nothing; each kind of damage done to the statement (or to
//! the ledger's cut-off) is found exactly, as exactly that many breaks of the right class,
//! with the right ids and exact differences; and a re-run gives the same outcome.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use settlement::model::Kind;
use settlement::money::CurrencyCode;
use settlement::reconcile::{
    reconcile, BreakClass, LedgerEntry, Outcome, ReconPeriod, ReconRules, StatementLine, StatementSide, TotalsLine,
};

const CURRENCIES: [&str; 3] = ["USD", "EUR", "KRW"];

fn currency(code: &str) -> CurrencyCode {
    CurrencyCode::parse(code).unwrap()
}

fn period() -> ReconPeriod {
    let from = Utc.with_ymd_and_hms(2026, 3, 10, 0, 0, 0).unwrap();
    ReconPeriod {
        business_date: NaiveDate::from_ymd_opt(2026, 3, 10).unwrap(),
        from,
        to: from + Duration::days(1),
        as_of: from + Duration::days(2),
    }
}

/// `count` entries one to two minutes apart from 01:00, delivered within a minute, so none
/// is near a boundary, late or identical to another.
fn ledger(seed: u64, count: usize) -> Vec<LedgerEntry> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = period().from + Duration::hours(1);
    (0..count)
        .map(|i| {
            let occurred_at = start + Duration::seconds(i as i64 * 120 + rng.gen_range(0..60));
            LedgerEntry {
                seq: i as i64 + 1,
                provider_tx_id: format!("tx-{seed:x}-{i}"),
                kind: Kind::ALL[rng.gen_range(0..Kind::ALL.len())],
                currency: currency(CURRENCIES[rng.gen_range(0..CURRENCIES.len())]),
                amount: Decimal::new(rng.gen_range(1..1_000_000), rng.gen_range(0..3)),
                occurred_at,
                received_at: occurred_at + Duration::seconds(rng.gen_range(0..60)),
            }
        })
        .collect()
}

fn listing(ledger: &[LedgerEntry]) -> Vec<StatementLine> {
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
            business_date: period().business_date,
            occurred_at: Some(entry.occurred_at),
        })
        .collect()
}

fn totals(ledger: &[LedgerEntry]) -> Vec<TotalsLine> {
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
            business_date: period().business_date,
            currency,
            kind,
            count,
            amount,
        })
        .collect()
}

fn run(ledger: &[LedgerEntry], statement: StatementSide<'_>) -> Outcome {
    reconcile(&period(), &ReconRules::default(), ledger, statement).unwrap()
}

/// `k` distinct positions out of `n`, chosen by the seed.
fn pick(seed: u64, n: usize, k: usize) -> Vec<usize> {
    let mut positions: Vec<usize> = (0..n).collect();
    positions.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5eed));
    positions.truncate(k.min(n));
    positions
}

/// The (class, key) of every break, as a set.
fn found(outcome: &Outcome) -> BTreeSet<(BreakClass, String)> {
    outcome.breaks.iter().map(|item| (item.class, item.key.clone())).collect()
}

fn with_class(class: BreakClass, keys: impl IntoIterator<Item = String>) -> BTreeSet<(BreakClass, String)> {
    keys.into_iter().map(|key| (class, key)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_ledger_against_its_own_statement_finds_nothing(seed in any::<u64>(), n in 1usize..80) {
        let ledger = ledger(seed, n);
        let outcome = run(&ledger, StatementSide::Lines(&listing(&ledger)));
        prop_assert!(outcome.breaks.is_empty(), "{:?}", outcome.breaks);
        prop_assert_eq!(outcome.matches.by_id, n as u64);
        for totals in outcome.currencies.values() {
            prop_assert_eq!(totals.matched_count, totals.ledger_count);
            prop_assert_eq!(totals.statement_amount, totals.ledger_amount);
            prop_assert_eq!(totals.matched_amount, totals.ledger_amount);
            prop_assert_eq!(totals.net_difference, Decimal::ZERO);
        }
        prop_assert_eq!(outcome.currencies.values().map(|t| t.ledger_count).sum::<u64>(), n as u64);

        let rows = totals(&ledger);
        let outcome = run(&ledger, StatementSide::Totals(&rows));
        prop_assert!(outcome.breaks.is_empty(), "{:?}", outcome.breaks);
        prop_assert_eq!(outcome.matches.totals_rows, rows.len() as u64);
        prop_assert_eq!(outcome.currencies.values().map(|t| t.matched_count).sum::<u64>(), n as u64);

        // A bank's lines carry no id: by reference, or by currency, kind and amount alone.
        let mut bank = listing(&ledger);
        for line in &mut bank {
            line.reference = line.provider_tx_id.take();
        }
        let outcome = run(&ledger, StatementSide::Lines(&bank));
        prop_assert!(outcome.breaks.is_empty(), "{:?}", outcome.breaks);
        prop_assert_eq!(outcome.matches.by_reference, n as u64);
        for line in &mut bank {
            line.reference = None;
        }
        let outcome = run(&ledger, StatementSide::Lines(&bank));
        prop_assert!(outcome.breaks.is_empty(), "{:?}", outcome.breaks);
        prop_assert_eq!(outcome.matches.by_reference, n as u64);
    }

    #[test]
    fn removed_lines_are_exactly_the_missing_at_provider(seed in any::<u64>(), n in 1usize..80, k in 0usize..10) {
        let ledger = ledger(seed, n);
        let removed = pick(seed, n, k);
        let lines: Vec<_> =
            listing(&ledger).into_iter().enumerate().filter(|(i, _)| !removed.contains(i)).map(|(_, l)| l).collect();
        let outcome = run(&ledger, StatementSide::Lines(&lines));
        let expected =
            with_class(BreakClass::MissingAtProvider, removed.iter().map(|&i| format!("id:{}", ledger[i].provider_tx_id)));
        prop_assert_eq!(found(&outcome), expected);
        prop_assert_eq!(outcome.breaks.len(), removed.len());
        prop_assert_eq!(outcome.matches.by_id, (n - removed.len()) as u64);
    }

    #[test]
    fn duplicated_lines_are_exactly_the_duplicates_at_provider(seed in any::<u64>(), n in 1usize..80, k in 0usize..10) {
        let ledger = ledger(seed, n);
        let mut lines = listing(&ledger);
        let copied = pick(seed, n, k);
        let mut expected = Vec::new();
        for &i in &copied {
            let mut copy = lines[i].clone();
            copy.record = (n + 2 + expected.len()) as u64;
            expected.push(format!("id:{}:line:{}.0", ledger[i].provider_tx_id, copy.record));
            lines.push(copy);
        }
        let outcome = run(&ledger, StatementSide::Lines(&lines));
        prop_assert_eq!(found(&outcome), with_class(BreakClass::DuplicateAtProvider, expected));
        prop_assert_eq!(outcome.breaks.len(), copied.len());
        prop_assert_eq!(outcome.matches.by_id, n as u64);
    }

    #[test]
    fn altered_amounts_are_exactly_the_amount_differences(
        seed in any::<u64>(),
        n in 1usize..80,
        k in 0usize..10,
        delta_minor in prop_oneof![-100_000i64..=-1, 1i64..=100_000],
        scale in 0u32..4,
    ) {
        let ledger = ledger(seed, n);
        let mut lines = listing(&ledger);
        let delta = Decimal::new(delta_minor, scale);
        let altered = pick(seed, n, k);
        for &i in &altered {
            lines[i].amount += delta;
        }
        let outcome = run(&ledger, StatementSide::Lines(&lines));
        let expected =
            with_class(BreakClass::AmountDiffers, altered.iter().map(|&i| format!("id:{}", ledger[i].provider_tx_id)));
        prop_assert_eq!(found(&outcome), expected);
        prop_assert_eq!(outcome.breaks.len(), altered.len());
        for item in &outcome.breaks {
            prop_assert_eq!(item.difference, delta);
            prop_assert_eq!(item.statement_amount.unwrap() - item.ledger_amount.unwrap(), delta);
        }
        let net: Decimal = outcome.currencies.values().map(|t| t.net_difference).sum();
        prop_assert_eq!(net, delta * Decimal::from(altered.len()));
    }

    #[test]
    fn transactions_shifted_over_the_boundary_are_exactly_the_timing_breaks(
        seed in any::<u64>(),
        n in 1usize..80,
        k in 0usize..10,
        after in any::<bool>(),
    ) {
        let original = ledger(seed, n);
        let rules = ReconRules::default();
        let mut shifted_ledger = original.clone();
        let shifted = pick(seed, n, k);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let window_seconds = rules.cutoff_window.num_seconds();
        for &i in &shifted {
            let entry = &mut shifted_ledger[i];
            entry.occurred_at = if after {
                period().to + Duration::seconds(rng.gen_range(0..window_seconds))
            } else {
                period().from - Duration::seconds(rng.gen_range(1..=window_seconds))
            };
            entry.received_at = entry.occurred_at + Duration::seconds(1);
        }
        // The provider's statement still puts them on D.
        let outcome = run(&shifted_ledger, StatementSide::Lines(&listing(&original)));
        let expected =
            with_class(BreakClass::Timing, shifted.iter().map(|&i| format!("id:{}", original[i].provider_tx_id)));
        prop_assert_eq!(found(&outcome), expected);
        prop_assert_eq!(outcome.breaks.len(), shifted.len());

        // In totals, each (currency, kind) they leave is one timing break.
        let outcome = run(&shifted_ledger, StatementSide::Totals(&totals(&original)));
        let groups: BTreeSet<String> = shifted
            .iter()
            .map(|&i| format!("totals:{}:{}", original[i].currency, original[i].kind))
            .collect();
        prop_assert_eq!(found(&outcome), with_class(BreakClass::Timing, groups));
    }

    #[test]
    fn changed_currencies_are_exactly_the_currency_differences(seed in any::<u64>(), n in 1usize..80, k in 0usize..10) {
        let ledger = ledger(seed, n);
        let mut lines = listing(&ledger);
        let changed = pick(seed, n, k);
        for &i in &changed {
            let other = CURRENCIES.iter().map(|code| currency(code)).find(|code| *code != lines[i].currency).unwrap();
            lines[i].currency = other;
        }
        let outcome = run(&ledger, StatementSide::Lines(&lines));
        let expected =
            with_class(BreakClass::CurrencyDiffers, changed.iter().map(|&i| format!("id:{}", ledger[i].provider_tx_id)));
        prop_assert_eq!(found(&outcome), expected);
        prop_assert_eq!(outcome.breaks.len(), changed.len());
    }

    #[test]
    fn a_re_run_gives_the_same_outcome(seed in any::<u64>(), n in 1usize..80, k in 0usize..10) {
        let ledger = ledger(seed, n);
        let mut lines = listing(&ledger);
        // Some damage of every kind, so the outcome has something to be unstable about.
        for (number, &i) in pick(seed, n, k).iter().enumerate() {
            match number % 4 {
                0 => lines[i].amount += Decimal::ONE,
                1 => lines[i].provider_tx_id = Some(format!("ghost-{i}")),
                2 => lines[i].provider_tx_id = None,
                _ => {
                    let copy = lines[i].clone();
                    lines.push(copy);
                }
            }
        }
        let first = run(&ledger, StatementSide::Lines(&lines));
        let second = run(&ledger, StatementSide::Lines(&lines));
        prop_assert_eq!(&first, &second);
        let mut sorted = first.breaks.clone();
        sorted.sort_by(|a, b| (a.class, &a.key).cmp(&(b.class, &b.key)));
        prop_assert_eq!(&sorted, &first.breaks);
        let rows = totals(&ledger[..n / 2]);
        prop_assert_eq!(run(&ledger, StatementSide::Totals(&rows)), run(&ledger, StatementSide::Totals(&rows)));
    }
}
