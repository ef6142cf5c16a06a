//! Feature extraction: streaming and batch give bit-identical vectors (with reconciliation
//! break events noted while streaming and replayed by the batch), hand-computed values of
//! each feature family, bounded state under eviction, no NaN or infinity for any input, a
//! stable schema fingerprint with clear mismatch errors (a v1 model is refused), and the
//! store read that training uses (real SQLite file; PostgreSQL when `SETTLEWATCH_TEST_PG`
//! is set).

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use settlement::features::{
    extract_batch, BreakChange, BreakEvent, BreakReplay, FeatureConfig, FeatureExtractor, Refusal, SchemaMismatch,
    FEATURE_COUNT, SCHEMA, SECONDS_SINCE_PREVIOUS_MAX,
};
use settlement::generate::{Generator, GeneratorConfig};
use settlement::ingest::Committer;
use settlement::model::{sha256, Kind, Transaction};
use settlement::money::{Currencies, CurrencyCode};
use settlement::store::{Item, Origin, Outcome, Store, StoredTransaction};
use settlement::validate::{validate, Rules};

/// Counts allocations made by the current thread (tests run on several threads).
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(|count| count.get())
}

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z").unwrap().into()
}

/// A USD transaction of provider `evo` on game `roulette`, `seconds` after 10:00.
fn tx(id: &str, kind: Kind, account: &str, amount: &str, seconds: i64) -> Transaction {
    let occurred_at = start() + Duration::seconds(seconds);
    Transaction {
        provider: "evo".into(),
        provider_tx_id: id.into(),
        kind,
        account: account.into(),
        game_id: Some("roulette".into()),
        round_id: None,
        session_id: None,
        currency: CurrencyCode::parse("USD").unwrap(),
        amount: Decimal::from_str(amount).unwrap(),
        occurred_at,
        received_at: occurred_at,
        original_tx_id: None,
        raw_sha256: sha256(id.as_bytes()),
    }
}

fn index(name: &str) -> usize {
    SCHEMA.names.iter().position(|n| *n == name).unwrap_or_else(|| panic!("no feature {name}"))
}

/// Runs the transactions through one extractor; returns each vector.
fn vectors(config: FeatureConfig, transactions: &[Transaction]) -> Vec<[f64; FEATURE_COUNT]> {
    let mut extractor = FeatureExtractor::new(config);
    transactions
        .iter()
        .map(|transaction| {
            let mut out = [0.0; FEATURE_COUNT];
            extractor.extract(transaction, &mut out);
            out
        })
        .collect()
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0)
}

macro_rules! assert_feature {
    ($vector:expr, $name:expr, $expected:expr) => {{
        let actual = $vector[index($name)];
        let expected: f64 = $expected;
        assert!(close(actual, expected), "{}: {actual}, expected {expected}", $name);
    }};
}

/// Generated transactions with sessions, delays and every kind the generator makes.
fn varied(count: usize, seed: u64, accounts: u32) -> Vec<Transaction> {
    Generator::new(GeneratorConfig { seed, accounts, ..GeneratorConfig::default() })
        .take(count)
        .enumerate()
        .map(|(i, mut transaction)| {
            if i % 3 == 0 {
                transaction.session_id = Some(format!("session-{}", i % 97));
            }
            transaction.received_at = transaction.occurred_at + Duration::milliseconds((i % 11) as i64 * 250);
            transaction
        })
        .collect()
}

fn opened(provider: &str, at: DateTime<Utc>) -> BreakEvent {
    BreakEvent { provider: provider.into(), at, change: BreakChange::Opened }
}

fn closed(provider: &str, at: DateTime<Utc>, opened_at: DateTime<Utc>) -> BreakEvent {
    BreakEvent { provider: provider.into(), at, change: BreakChange::Closed { opened_at } }
}

/// Break events in time order over the span of `transactions` (the generator's providers):
/// some before the first transaction, two at one instant, closes of earlier breaks, a close
/// of a break never opened, and some after the last transaction.
fn break_events(transactions: &[Transaction]) -> Vec<BreakEvent> {
    let first = transactions.iter().map(|transaction| transaction.occurred_at).min().unwrap();
    let mut events =
        vec![opened("provider-0", first - Duration::hours(30)), opened("provider-1", first - Duration::hours(2))];
    let mut open: Vec<(String, DateTime<Utc>)> = Vec::new();
    for step in 0..400i64 {
        let at = first + Duration::milliseconds(step * 50);
        let provider = format!("provider-{}", step % 5);
        events.push(opened(&provider, at));
        if step % 7 == 0 {
            events.push(opened(&provider, at));
        }
        open.push((provider, at));
        if step % 3 == 2 {
            let (provider, opened_at) = open.remove((step as usize * 7) % open.len());
            events.push(closed(&provider, at, opened_at));
        }
        if step == 100 {
            events.push(closed("provider-4", at, first - Duration::days(9)));
        }
    }
    let last = transactions.iter().map(|transaction| transaction.occurred_at).max().unwrap();
    events.push(opened("provider-2", last + Duration::seconds(1)));
    events.push(closed("provider-0", last + Duration::seconds(2), first - Duration::hours(30)));
    events
}

#[test]
fn streaming_and_batch_give_bit_identical_vectors() {
    let mut transactions = varied(20_000, 11, 300);
    // Some arrive late (an occurred-at before the transactions around them in seq order).
    for transaction in transactions.iter_mut().step_by(97) {
        transaction.occurred_at -= Duration::seconds(3);
    }
    let events = break_events(&transactions);
    // The batch takes the events in any order; reversed here.
    let reversed: Vec<BreakEvent> = events.iter().rev().cloned().collect();
    let batch = extract_batch(FeatureConfig::default(), &transactions, &reversed);
    assert_eq!((batch.n_rows, batch.n_cols), (transactions.len(), FEATURE_COUNT));

    // Streaming, one at a time, interleaved with another extractor on other data, with
    // allocations and stats calls in between.
    let mut streaming = FeatureExtractor::new(FeatureConfig::default());
    let mut other = FeatureExtractor::new(FeatureConfig::default());
    let other_transactions = varied(20_000, 12, 50);
    let mut out = [0.0; FEATURE_COUNT];
    let mut scratch = [0.0; FEATURE_COUNT];
    // Serving notes each event once the stream has reached its instant: before the first
    // transaction (in seq order) that occurred at or after it.
    let mut next_event = 0;
    for (row, transaction) in transactions.iter().enumerate() {
        while next_event < events.len() && events[next_event].at <= transaction.occurred_at {
            streaming.note_break(&events[next_event]);
            other.note_break(&events[events.len() - 1 - next_event]);
            next_event += 1;
        }
        other.extract(&other_transactions[row], &mut scratch);
        let noise: Vec<u64> = (0..row % 17).map(|i| i as u64 * 3).collect();
        std::hint::black_box(noise);
        streaming.extract(transaction, &mut out);
        let expected = batch.row(row);
        for (column, (a, b)) in out.iter().zip(expected).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "row {row}, feature {}: {a} vs {b}", SCHEMA.names[column]);
        }
        if row % 1000 == 0 {
            std::hint::black_box(streaming.stats());
        }
    }
    let stats = streaming.stats();
    assert!(next_event < events.len(), "some events come after the last transaction");
    assert_eq!(stats.break_closes_unmatched, 1, "{stats:?}");
    // The vectors are not trivial: features vary across rows.
    for column in [
        index("account_count_1h"),
        index("amount_robust_z_account"),
        index("game_rtp_realised_1h"),
        index("provider_open_breaks_log"),
        index("provider_oldest_break_age_log"),
        index("provider_breaks_opened_1d"),
    ] {
        let first = batch.row(0)[column];
        assert!(batch.rows().any(|row| row[column] != first), "{} is constant", SCHEMA.names[column]);
    }
}

#[test]
fn velocity_and_seconds_since_previous_by_hand() {
    let v = vectors(
        FeatureConfig::default(),
        &[
            tx("1", Kind::Bet, "a", "10.00", 0),
            tx("2", Kind::Bet, "a", "10.00", 0),
            tx("3", Kind::Bet, "a", "10.00", 60),
            // Out of order (earlier than the latest): no decay, 0 seconds since previous.
            tx("4", Kind::Bet, "a", "10.00", 30),
        ],
    );
    assert_feature!(v[0], "account_seconds_since_previous_log1p", SECONDS_SINCE_PREVIOUS_MAX.ln_1p());
    assert_feature!(v[0], "account_count_1m", 1.0);
    assert_feature!(v[1], "account_seconds_since_previous_log1p", 0.0);
    assert_feature!(v[1], "account_count_1m", 2.0);
    assert_feature!(v[1], "account_amount_sum_1m_log1p", 20f64.ln_1p());
    // 60 s later: the two earlier transactions weigh e^(-60/τ) each.
    assert_feature!(v[2], "account_seconds_since_previous_log1p", 60f64.ln_1p());
    assert_feature!(v[2], "account_count_1m", 2.0 * (-1f64).exp() + 1.0);
    assert_feature!(v[2], "account_count_10m", 2.0 * (-0.1f64).exp() + 1.0);
    assert_feature!(v[2], "account_count_1h", 2.0 * (-1.0f64 / 60.0).exp() + 1.0);
    assert_feature!(v[2], "account_amount_sum_1m_log1p", (20.0 * (-1f64).exp() + 10.0).ln_1p());
    assert_feature!(v[3], "account_seconds_since_previous_log1p", 0.0);
    assert_feature!(v[3], "account_count_1m", 2.0 * (-1f64).exp() + 2.0);
    // Other accounts do not share the velocity.
    let w = vectors(FeatureConfig::default(), &[tx("1", Kind::Bet, "a", "1", 0), tx("2", Kind::Bet, "b", "1", 0)]);
    assert_feature!(w[1], "account_count_1m", 1.0);
}

#[test]
fn first_seen_flags_by_hand() {
    let mut with_session = tx("3", Kind::Bet, "a", "1", 2);
    with_session.session_id = Some("s1".into());
    let mut same_session = tx("4", Kind::Win, "a", "1", 3);
    same_session.session_id = Some("s1".into());
    let mut other_provider = same_session.clone();
    other_provider.provider = "pragmatic".into();
    let mut other_game = tx("6", Kind::Bet, "b", "1", 4);
    other_game.game_id = Some("blackjack".into());
    let mut no_game = tx("7", Kind::Deposit, "c", "1", 5);
    no_game.game_id = None;
    let v = vectors(
        FeatureConfig::default(),
        &[
            tx("1", Kind::Bet, "a", "1", 0),
            tx("2", Kind::Bet, "a", "1", 1),
            with_session,
            same_session,
            other_provider,
            other_game,
            no_game,
        ],
    );
    let flags = |row: &[f64; FEATURE_COUNT]| {
        [row[index("account_first_seen")], row[index("game_first_seen")], row[index("session_first_seen")]]
    };
    assert_eq!(flags(&v[0]), [1.0, 1.0, 0.0]);
    assert_eq!(flags(&v[1]), [0.0, 0.0, 0.0]);
    assert_eq!(flags(&v[2]), [0.0, 0.0, 1.0]);
    assert_eq!(flags(&v[3]), [0.0, 0.0, 0.0]);
    // The same game and session ids under another provider are other entities.
    assert_eq!(flags(&v[4]), [0.0, 1.0, 1.0]);
    assert_eq!(flags(&v[5]), [1.0, 1.0, 0.0]);
    assert_eq!(flags(&v[6]), [1.0, 0.0, 0.0]);
}

#[test]
fn game_rtp_round_and_account_ratios_by_hand() {
    let config =
        FeatureConfig { expected_rtp: BTreeMap::from([("slots".to_string(), 0.95)]), ..FeatureConfig::default() };
    let on = |mut transaction: Transaction, game: &str, round: &str| {
        transaction.game_id = Some(game.into());
        transaction.round_id = Some(round.into());
        transaction
    };
    let v = vectors(
        config,
        &[
            on(tx("0", Kind::Win, "z", "5", 0), "slots", "r0"),
            on(tx("1", Kind::Bet, "a", "100", 0), "slots", "r1"),
            on(tx("2", Kind::Win, "a", "90", 0), "slots", "r1"),
            on(tx("3", Kind::Bet, "b", "10", 0), "cards", "r2"),
            on(tx("4", Kind::Win, "b", "25", 0), "cards", "r2"),
            on(tx("5", Kind::Rollback, "b", "10", 0), "cards", "r2"),
        ],
    );
    // A win before any bet: realised = expected, and the round's ratio is capped.
    assert_feature!(v[0], "game_rtp_realised_1h", 0.95);
    assert_feature!(v[0], "game_rtp_deviation_1h", 0.0);
    assert_feature!(v[0], "round_win_bet_ratio", 100.0);
    // Bets 100, wins 5 + 90 at the same instant: RTP 0.95... first the bet alone.
    assert_feature!(v[1], "game_rtp_realised_1h", 5.0 / 100.0);
    assert_feature!(v[1], "game_rtp_deviation_1h", 0.05 - 0.95);
    assert_feature!(v[2], "game_rtp_realised_1h", 0.95);
    assert_feature!(v[2], "game_rtp_deviation_1h", 0.0);
    assert_feature!(v[2], "round_win_bet_ratio", 0.9);
    assert_feature!(v[2], "account_win_bet_ratio_1h", 0.9);
    // Another game gets the default expected RTP (0.96).
    assert_feature!(v[4], "game_rtp_realised_1h", 2.5);
    assert_feature!(v[4], "game_rtp_deviation_1h", 2.5 - 0.96);
    assert_feature!(v[4], "round_win_bet_ratio", 2.5);
    assert_feature!(v[4], "account_rollback_ratio", 0.0);
    assert_feature!(v[5], "account_rollback_ratio", 1.0 / 3.0);
    assert_feature!(v[5], "game_rtp_realised_1h", 2.5);
}

#[test]
fn turnover_median_delay_provider_shares_and_kind_by_hand() {
    let mut delayed = tx("5", Kind::Bet, "a", "1000", 40);
    delayed.received_at = delayed.occurred_at + Duration::seconds(5);
    let mut config = FeatureConfig::default();
    config.reference_rates.insert(CurrencyCode::parse("EUR").unwrap(), 1.5);
    let mut extractor = FeatureExtractor::new(config);
    let run = |extractor: &mut FeatureExtractor, transaction: Transaction| {
        let mut out = [0.0; FEATURE_COUNT];
        extractor.extract(&transaction, &mut out);
        out
    };
    let first = run(&mut extractor, tx("1", Kind::Deposit, "a", "100", 0));
    assert_feature!(first, "turnover_wagered_per_deposited", 0.0);
    assert_feature!(first, "amount_log_ratio_to_account_median", 0.0);
    assert_feature!(first, "amount_robust_z_account", 0.0);
    run(&mut extractor, tx("2", Kind::Bet, "a", "100", 10));
    run(&mut extractor, tx("3", Kind::Bet, "a", "100", 20));
    let withdrawal = run(&mut extractor, tx("4", Kind::Withdrawal, "a", "50", 30));
    assert_feature!(withdrawal, "turnover_wagered_per_deposited", 2.0);
    assert_feature!(withdrawal, "turnover_withdrawn_per_wagered", 0.25);
    // Three amounts of 100 before it: median ln(101), MAD 0, so the scale is its floor 0.1.
    // (The ring keeps log amounts as f32.)
    let median = 101f64.ln() as f32 as f64;
    assert_feature!(withdrawal, "amount_log_ratio_to_account_median", 51f64.ln() - median);
    assert_feature!(withdrawal, "amount_robust_z_account", (51f64.ln() - median) / 0.1);
    let big = run(&mut extractor, delayed);
    // Previous four: ln 101 ×3, ln 51: median ln 101, MAD 0.
    assert_feature!(big, "amount_robust_z_account", (1001f64.ln() - median) / 0.1);
    assert_feature!(big, "delay_seconds_signed_log1p", 6f64.ln());
    // A deposit after a withdrawal starts a new cycle.
    let again = run(&mut extractor, tx("6", Kind::Deposit, "a", "20", 50));
    assert_feature!(again, "turnover_wagered_per_deposited", 0.0);
    assert_feature!(again, "turnover_withdrawn_per_wagered", 0.0);
    // A withdrawal with nothing wagered is capped.
    let cash_out = run(&mut extractor, tx("7", Kind::Withdrawal, "a", "20", 60));
    assert_feature!(cash_out, "turnover_withdrawn_per_wagered", 100.0);

    // Provider shares: what the ingest path reports, among all of the provider's events.
    extractor.note_refusal("evo", Refusal::Duplicate, start() + Duration::seconds(60));
    extractor.note_refusal("evo", Refusal::Conflict, start() + Duration::seconds(60));
    let shares = run(&mut extractor, tx("8", Kind::Bet, "b", "1", 60));
    // Events so far: 7 accepted then (all within 60 s, τ = 600 s) 1 duplicate, 1 conflict, 1 accepted.
    let weight = |seconds: f64| (-seconds / 600.0).exp();
    let accepted: f64 = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0].iter().map(|t| weight(60.0 - t)).sum::<f64>() + 1.0;
    let total = accepted + 2.0;
    assert_feature!(shares, "provider_duplicate_share_10m", 1.0 / total);
    assert_feature!(shares, "provider_conflict_share_10m", 1.0 / total);
    assert_feature!(shares, "provider_rejected_share_10m", 0.0);
    let rate: f64 =
        [0.0f64, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0].iter().map(|t| (-(60.0 - t) / 60.0).exp()).sum::<f64>();
    assert_feature!(shares, "provider_transactions_per_second_1m", (rate + 1.0) / 60.0);

    // Reference scale: KRW by its exponent (0 → 0.01 per won), EUR by the configured rate.
    let mut won = tx("9", Kind::Bet, "k", "1400", 70);
    won.currency = CurrencyCode::parse("KRW").unwrap();
    let won = run(&mut extractor, won);
    assert_feature!(won, "amount_account_currency", 1400.0);
    assert_feature!(won, "amount_reference_signed_log1p", 14f64.ln_1p());
    let mut euro = tx("10", Kind::ManualAdjustment, "e", "-2", 70);
    euro.currency = CurrencyCode::parse("EUR").unwrap();
    let euro = run(&mut extractor, euro);
    assert_feature!(euro, "amount_account_currency", -2.0);
    assert_feature!(euro, "amount_reference_signed_log1p", -(3f64.ln_1p()));
    let kinds: Vec<f64> =
        SCHEMA.names.iter().zip(euro).filter(|(n, _)| n.starts_with("kind_")).map(|(_, v)| v).collect();
    assert_eq!(kinds.iter().sum::<f64>(), 1.0);
    assert_feature!(euro, "kind_manual_adjustment", 1.0);
}

#[test]
fn break_features_by_hand_and_closing_reduces_them() {
    let mut extractor = FeatureExtractor::new(FeatureConfig::default());
    let at = |seconds: i64| start() + Duration::seconds(seconds);
    let run = |extractor: &mut FeatureExtractor, transaction: Transaction| {
        let mut out = [0.0; FEATURE_COUNT];
        extractor.extract(&transaction, &mut out);
        out
    };
    let before = run(&mut extractor, tx("1", Kind::Bet, "a", "1", 0));
    for name in ["provider_open_breaks_log", "provider_oldest_break_age_log", "provider_breaks_opened_1d"] {
        assert_feature!(before, name, 0.0);
    }
    // Two breaks of evo, opened at 10:00 and 10:30.
    extractor.note_break(&opened("evo", at(0)));
    extractor.note_break(&opened("evo", at(1800)));
    let day = 86_400.0f64;
    let two = run(&mut extractor, tx("2", Kind::Bet, "a", "1", 3600));
    assert_feature!(two, "provider_open_breaks_log", 3f64.ln());
    // The oldest opened one hour before this transaction.
    assert_feature!(two, "provider_oldest_break_age_log", 2f64.ln());
    // Opened at 0 and 1800 s, seen at 3600 s with τ = 1 day.
    assert_feature!(two, "provider_breaks_opened_1d", (-3600.0 / day).exp() + (-1800.0 / day).exp());
    // Another provider's transaction sees none of them.
    let mut other = tx("3", Kind::Bet, "a", "1", 3600);
    other.provider = "pragmatic".into();
    let other = run(&mut extractor, other);
    assert_feature!(other, "provider_open_breaks_log", 0.0);
    assert_feature!(other, "provider_oldest_break_age_log", 0.0);
    assert_feature!(other, "provider_breaks_opened_1d", 0.0);

    // Closing the 10:00 break: one open, the oldest now 10:30.
    extractor.note_break(&closed("evo", at(5400), at(0)));
    let one = run(&mut extractor, tx("4", Kind::Bet, "a", "1", 7200));
    assert_feature!(one, "provider_open_breaks_log", 2f64.ln());
    assert_feature!(one, "provider_oldest_break_age_log", 2.5f64.ln());
    // Closing does not undo the openings' rate.
    assert_feature!(one, "provider_breaks_opened_1d", (-7200.0 / day).exp() + (-5400.0 / day).exp());
    assert!(one[index("provider_open_breaks_log")] < two[index("provider_open_breaks_log")]);
    // A transaction that occurred before the oldest opening: age 0 (no negative age).
    let late = run(&mut extractor, tx("5", Kind::Bet, "a", "1", 1000));
    assert_feature!(late, "provider_open_breaks_log", 2f64.ln());
    assert_feature!(late, "provider_oldest_break_age_log", 0.0);

    // A close of a break this extractor never saw changes nothing and is counted.
    extractor.note_break(&closed("evo", at(7300), at(-86_400)));
    extractor.note_break(&closed("nobody", at(7300), at(0)));
    assert_eq!(extractor.stats().break_closes_unmatched, 2);
    let same = run(&mut extractor, tx("6", Kind::Bet, "a", "1", 7200));
    assert_eq!(same[index("provider_open_breaks_log")], one[index("provider_open_breaks_log")]);

    // Two breaks opened at one instant are two; closing one leaves the other.
    extractor.note_break(&opened("evo", at(9000)));
    extractor.note_break(&opened("evo", at(9000)));
    extractor.note_break(&closed("evo", at(9000), at(1800)));
    extractor.note_break(&closed("evo", at(9000), at(9000)));
    let again = run(&mut extractor, tx("7", Kind::Bet, "a", "1", 9000 + 3 * 3600));
    assert_feature!(again, "provider_open_breaks_log", 2f64.ln());
    assert_feature!(again, "provider_oldest_break_age_log", 4f64.ln());
    extractor.note_break(&closed("evo", at(20_000), at(9000)));
    let none = run(&mut extractor, tx("8", Kind::Bet, "a", "1", 20_000));
    assert_feature!(none, "provider_open_breaks_log", 0.0);
    assert_feature!(none, "provider_oldest_break_age_log", 0.0);
    assert!(none[index("provider_breaks_opened_1d")] > 3.0);
    let stats = extractor.stats();
    assert_eq!((stats.break_providers, stats.open_breaks, stats.break_closes_unmatched), (1, 0, 2));
}

#[test]
fn break_replay_applies_an_event_from_the_first_transaction_at_or_after_it() {
    // Transactions at 0, 10, 5 (late) and 20 s; a break opened at 5 s and closed at 20 s.
    let transactions = [
        tx("1", Kind::Bet, "a", "1", 0),
        tx("2", Kind::Bet, "a", "1", 10),
        tx("3", Kind::Bet, "a", "1", 5),
        tx("4", Kind::Bet, "a", "1", 20),
    ];
    let at = |seconds: i64| start() + Duration::seconds(seconds);
    let events = [closed("evo", at(20), at(5)), opened("evo", at(5))];
    let batch = extract_batch(FeatureConfig::default(), &transactions, &events);
    let open: Vec<f64> = batch.rows().map(|row| row[index("provider_open_breaks_log")]).collect();
    // Not before it; from the transaction at 10 s on, the late one at 5 s included; closed
    // at the transaction at 20 s (an event at the transaction's instant applies to it).
    assert_eq!(open, [0.0, 2f64.ln(), 2f64.ln(), 0.0]);

    let mut replay = BreakReplay::new(&events);
    let mut extractor = FeatureExtractor::new(FeatureConfig::default());
    assert_eq!(replay.apply_until(&mut extractor, at(4)), 0);
    assert_eq!(replay.apply_until(&mut extractor, at(5)), 1);
    assert_eq!(replay.pending(), 1);
    assert_eq!(extractor.stats().open_breaks, 1);
}

#[test]
fn break_state_is_bounded_per_provider_and_in_providers() {
    let config =
        FeatureConfig { break_providers_max: 4, open_break_times_per_provider_max: 8, ..FeatureConfig::default() };
    let mut extractor = FeatureExtractor::new(config.clone());
    let mut out = [0.0; FEATURE_COUNT];
    let mut memory_full = 0;
    // 50 providers in turn, each opening 10 breaks at distinct instants.
    for provider in 0..50 {
        for step in 0..10 {
            extractor.note_break(&opened(&format!("p{provider}"), start() + Duration::seconds(provider * 10 + step)));
        }
        if provider == 3 {
            memory_full = extractor.stats().memory_bytes;
        }
    }
    let stats = extractor.stats();
    assert_eq!(stats.break_providers, 4);
    assert_eq!(stats.open_breaks, 40, "four providers of ten open breaks each: {stats:?}");
    assert_eq!(stats.memory_bytes, memory_full, "memory grew once the break table was full");
    // An evicted provider's breaks are forgotten: its closes are unmatched.
    extractor.note_break(&closed("p0", start() + Duration::seconds(600), start()));
    assert_eq!(extractor.stats().break_closes_unmatched, 1);

    // Beyond the per-provider cap: the count stays exact, the age is of the oldest.
    let mut extractor = FeatureExtractor::new(config);
    for step in 0..100 {
        extractor.note_break(&opened("evo", start() + Duration::seconds(step)));
    }
    let hours = 2.0f64;
    extractor.extract(&tx("1", Kind::Bet, "a", "1", 7200), &mut out);
    assert_feature!(out, "provider_open_breaks_log", 101f64.ln());
    assert_feature!(out, "provider_oldest_break_age_log", hours.ln_1p());
    // Close the eight kept (the oldest, 0..7 s): 92 open; the oldest, 8 s, was not kept, and
    // its age is taken from the earliest opening that went over the cap, which is exactly it.
    for step in 0..8 {
        extractor.note_break(&closed("evo", start() + Duration::seconds(7200), start() + Duration::seconds(step)));
    }
    extractor.extract(&tx("2", Kind::Bet, "a", "1", 7208), &mut out);
    assert_feature!(out, "provider_open_breaks_log", 93f64.ln());
    assert_feature!(out, "provider_oldest_break_age_log", hours.ln_1p());
    // Closing the uncounted ones brings the count down to zero, exactly.
    for step in 8..100 {
        extractor.note_break(&closed("evo", start() + Duration::seconds(7300), start() + Duration::seconds(step)));
    }
    extractor.extract(&tx("3", Kind::Bet, "a", "1", 7300), &mut out);
    assert_feature!(out, "provider_open_breaks_log", 0.0);
    assert_feature!(out, "provider_oldest_break_age_log", 0.0);
    assert_eq!(extractor.stats().break_closes_unmatched, 0);
}

#[test]
fn a_v1_model_is_refused_naming_the_schema_version() {
    // The shipped default model's metadata as it was under schema v1 (models/default before
    // the break features; copied, since models/default is retrained for v2).
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/test_data/features/transaction-v1-metadata.json");
    let metadata: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let schema = &metadata["feature_schema"];
    let names: Vec<&str> = schema["names"].as_array().unwrap().iter().map(|name| name.as_str().unwrap()).collect();
    let version = schema["version"].as_u64().unwrap() as u32;
    assert_eq!((schema["name"].as_str(), version, names.len()), (Some("transaction"), 1, 40));
    let error = SCHEMA.check(schema["name"].as_str().unwrap(), version, &names).unwrap_err();
    assert!(matches!(error, SchemaMismatch::Version { expected: 2, found: 1, .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "feature schema transaction version differs: the model was trained on version 1, this build computes version 2"
    );
    // v2 is v1 with the three break features after the provider shares, nothing else.
    let breaks = ["provider_open_breaks_log", "provider_oldest_break_age_log", "provider_breaks_opened_1d"];
    let v2_without_breaks: Vec<&str> = SCHEMA.names.iter().copied().filter(|name| !breaks.contains(name)).collect();
    assert_eq!(v2_without_breaks, names);
    assert_eq!(&SCHEMA.names[index("provider_conflict_share_10m") + 1..][..3], breaks);
}

#[test]
fn eviction_keeps_state_bounded_and_a_returning_account_starts_fresh() {
    let config = FeatureConfig {
        accounts_max: 1000,
        games_max: 10,
        sessions_max: 100,
        rounds_max: 100,
        providers_max: 2,
        ..FeatureConfig::default()
    };
    let mut extractor = FeatureExtractor::new(config);
    let mut out = [0.0; FEATURE_COUNT];
    let mut memory_at_limit = 0;
    for i in 0..50_000u32 {
        let mut transaction = tx(&i.to_string(), Kind::Bet, &format!("acct-{i}"), "1", i as i64);
        transaction.game_id = Some(format!("game-{}", i % 37));
        transaction.round_id = Some(format!("round-{i}"));
        transaction.session_id = Some(format!("session-{i}"));
        transaction.provider = format!("provider-{}", i % 5);
        extractor.extract(&transaction, &mut out);
        assert!(out.iter().all(|value| value.is_finite()));
        if i == 4_999 {
            memory_at_limit = extractor.stats().memory_bytes;
        }
    }
    let stats = extractor.stats();
    assert_eq!((stats.accounts, stats.games, stats.sessions, stats.rounds, stats.providers), (1000, 10, 100, 100, 2));
    assert_eq!(stats.memory_bytes, memory_at_limit, "memory grew after the tables were full");
    assert!(stats.evictions >= 49_000, "{stats:?}");
    // acct-0 was evicted long ago: it is first seen again, with no history.
    extractor.extract(&tx("x", Kind::Bet, "acct-0", "1", 60_000), &mut out);
    assert_eq!(out[index("account_first_seen")], 1.0);
    assert_eq!(out[index("account_count_1h")], 1.0);
}

#[test]
fn extract_allocates_nothing_in_steady_state() {
    let probe = allocations();
    drop(std::hint::black_box(vec![1u8; 10]));
    assert!(allocations() > probe, "the counting allocator counts");
    // Known entities: a second pass over the same transactions.
    let transactions = varied(5_000, 21, 200);
    let mut extractor = FeatureExtractor::new(FeatureConfig::default());
    // Open breaks at some providers, so the break lookup is on the path measured.
    for event in break_events(&transactions) {
        extractor.note_break(&event);
    }
    assert!(extractor.stats().open_breaks > 0);
    let mut out = [0.0; FEATURE_COUNT];
    for transaction in &transactions {
        extractor.extract(transaction, &mut out);
    }
    let before = allocations();
    for transaction in &transactions {
        extractor.extract(transaction, &mut out);
    }
    assert_eq!(allocations() - before, 0, "allocations with every entity known");

    // Full tables: every transaction brings new entities and evicts others.
    let config = FeatureConfig {
        accounts_max: 100,
        games_max: 10,
        sessions_max: 50,
        rounds_max: 50,
        providers_max: 4,
        ..FeatureConfig::default()
    };
    let fresh = varied(20_000, 22, 5_000);
    let mut extractor = FeatureExtractor::new(config);
    for transaction in &fresh[..10_000] {
        extractor.extract(transaction, &mut out);
    }
    let evictions = extractor.stats().evictions;
    let before = allocations();
    for transaction in &fresh[10_000..] {
        extractor.extract(transaction, &mut out);
    }
    assert_eq!(allocations() - before, 0, "allocations while evicting");
    assert!(extractor.stats().evictions > evictions + 5_000);
}

#[test]
fn bytes_per_account_stay_small_with_many_distinct_accounts() {
    // 200,000 distinct accounts (the `features bench` command measures 1,000,000 in release).
    let accounts = 200_000;
    let mut extractor = FeatureExtractor::new(FeatureConfig { accounts_max: accounts, ..FeatureConfig::default() });
    let mut out = [0.0; FEATURE_COUNT];
    let mut transaction = tx("1", Kind::Bet, "", "1", 0);
    transaction.game_id = None;
    for i in 0..accounts {
        transaction.account.clear();
        use std::fmt::Write;
        write!(transaction.account, "acct-{i}").unwrap();
        extractor.extract(&transaction, &mut out);
    }
    let stats = extractor.stats();
    assert_eq!(stats.accounts, accounts);
    let per_account = stats.memory_bytes as f64 / accounts as f64;
    eprintln!(
        "feature state: {} bytes for {accounts} accounts, {per_account:.0} bytes per account",
        stats.memory_bytes
    );
    assert!(per_account < 400.0, "{per_account} bytes per account");
}

#[test]
fn schema_fingerprint_is_stable_and_mismatches_say_what_differs() {
    // Pinned: a change of names must come with a new version (and this line).
    assert_eq!(SCHEMA.fingerprint(), PINNED_FINGERPRINT);
    assert_eq!(SCHEMA.names.len(), FEATURE_COUNT);
    let mut unique = SCHEMA.names.to_vec();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), FEATURE_COUNT, "feature names are unique");

    let names: Vec<String> = SCHEMA.names.iter().map(|n| n.to_string()).collect();
    assert_eq!(SCHEMA.check("transaction", 2, &names), Ok(()));

    let error = SCHEMA.check("transaction", 3, &names).unwrap_err();
    assert!(matches!(error, SchemaMismatch::Version { expected: 2, found: 3, .. }));
    assert!(error.to_string().contains("version 3") && error.to_string().contains("version 2"), "{error}");

    let error = SCHEMA.check("account", 2, &names).unwrap_err();
    assert!(error.to_string().contains("\"account\""), "{error}");

    let mut swapped = names.clone();
    swapped.swap(3, 4);
    let error = SCHEMA.check("transaction", 2, &swapped).unwrap_err();
    assert_eq!(
        error.to_string(),
        "feature schema transaction-v2: feature 3 is \"account_seconds_since_previous_log1p\" in the model but \
         \"amount_robust_z_account\" in this build"
    );

    let mut fewer = names.clone();
    fewer.remove(0);
    fewer.push("device_first_seen".into());
    fewer.push("extra".into());
    let error = SCHEMA.check("transaction", 2, &fewer).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("the model has 44 features, this build computes 43"), "{message}");
    assert!(message.contains("missing from the model: [amount_account_currency]"), "{message}");
    assert!(message.contains("unknown to this build: [device_first_seen, extra]"), "{message}");
}

const PINNED_FINGERPRINT: &str = "transaction-v2:1113ca0654f9f7aa";

fn arbitrary_transaction() -> impl Strategy<Value = Transaction> {
    let amount = prop_oneof![
        (any::<i64>(), 0u32..=12).prop_map(|(mantissa, scale)| Decimal::new(mantissa, scale)),
        Just(Decimal::MAX),
        Just(Decimal::MIN),
        Just(Decimal::ZERO),
    ];
    let instant = prop_oneof![
        any::<i64>().prop_map(DateTime::from_timestamp_nanos),
        (0i64..10_000).prop_map(|seconds| start() + Duration::seconds(seconds)),
    ];
    let id = |prefix: &'static str| (0u8..4).prop_map(move |n| format!("{prefix}{n}"));
    (
        (id("p"), id("a"), 0usize..Kind::ALL.len(), amount),
        (proptest::option::of(id("g")), proptest::option::of(id("r")), proptest::option::of(id("s"))),
        (prop::sample::select(vec!["USD", "KRW", "BHD", "PTS", "XYZ9"]), instant.clone(), instant),
    )
        .prop_map(
            |((provider, account, kind, amount), (game_id, round_id, session_id), (currency, occurred, received))| {
                Transaction {
                    provider,
                    provider_tx_id: "t".into(),
                    kind: Kind::ALL[kind],
                    account,
                    game_id,
                    round_id,
                    session_id,
                    currency: CurrencyCode::parse(currency).unwrap(),
                    amount,
                    occurred_at: occurred,
                    received_at: received,
                    original_tx_id: None,
                    raw_sha256: [0; 32],
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn no_feature_is_ever_nan_or_infinite(
        transactions in prop::collection::vec(arbitrary_transaction(), 1..120),
        refusals in prop::collection::vec((0u8..4, 0usize..3), 0..10),
        breaks in prop::collection::vec((0u8..4, any::<bool>(), any::<i64>(), 0usize..120), 0..40),
        tiny_tables in any::<bool>(),
    ) {
        let config = if tiny_tables {
            FeatureConfig {
                accounts_max: 2,
                games_max: 1,
                sessions_max: 1,
                rounds_max: 2,
                providers_max: 1,
                break_providers_max: 1,
                open_break_times_per_provider_max: 2,
                ..FeatureConfig::default()
            }
        } else {
            FeatureConfig::default()
        };
        let mut extractor = FeatureExtractor::new(config);
        let mut out = [0.0; FEATURE_COUNT];
        for (row, transaction) in transactions.iter().enumerate() {
            if let Some(&(provider, refusal)) = refusals.get(row) {
                let refusal = [Refusal::Rejected, Refusal::Duplicate, Refusal::Conflict][refusal];
                extractor.note_refusal(&format!("p{provider}"), refusal, transaction.received_at);
            }
            // Break events at arbitrary instants (any order), before the transaction they name.
            for &(provider, open, nanos, _) in breaks.iter().filter(|(.., before)| *before == row) {
                let at = DateTime::from_timestamp_nanos(nanos);
                let change = if open { BreakChange::Opened } else { BreakChange::Closed { opened_at: transaction.occurred_at } };
                extractor.note_break(&BreakEvent { provider: format!("p{provider}"), at, change });
            }
            extractor.extract(transaction, &mut out);
            for (column, value) in out.iter().enumerate() {
                prop_assert!(value.is_finite(), "row {row} feature {} is {value}: {transaction:?}", SCHEMA.names[column]);
            }
        }
    }
}

#[test]
fn an_unusable_configuration_is_reported_and_replaced_by_defaults() {
    let bad = FeatureConfig { accounts_max: 0, ..FeatureConfig::default() };
    assert_eq!(bad.check().unwrap_err().to_string(), "features: accounts_max must be at least 1 (it is 0)");
    let bad_window = FeatureConfig { game_rtp_window_seconds: f64::NAN, ..FeatureConfig::default() };
    assert!(bad_window.check().unwrap_err().to_string().contains("game_rtp_window_seconds"));
    let mut bad_rate = FeatureConfig::default();
    bad_rate.reference_rates.insert(CurrencyCode::parse("USD").unwrap(), -1.0);
    assert!(bad_rate.check().unwrap_err().to_string().contains("reference rate of USD"));
    let bad_breaks = FeatureConfig { open_break_times_per_provider_max: 0, ..FeatureConfig::default() };
    assert_eq!(
        bad_breaks.check().unwrap_err().to_string(),
        "features: open_break_times_per_provider_max must be at least 1 (it is 0)"
    );
    let bad_break_window = FeatureConfig { provider_break_window_seconds: -1.0, ..FeatureConfig::default() };
    assert!(bad_break_window.check().unwrap_err().to_string().contains("provider_break_window_seconds"));
    assert_eq!(FeatureConfig::default().check(), Ok(()));
    // The extractor still works on them, with the defaults in their place.
    let transactions = varied(500, 3, 20);
    let events = break_events(&transactions);
    let defaults = extract_batch(FeatureConfig::default(), &transactions, &events);
    for config in [bad, bad_window, bad_rate, bad_breaks, bad_break_window] {
        assert_eq!(extract_batch(config, &transactions, &events), defaults);
    }
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-25T00:00:00Z").unwrap().into()
}

fn items(transactions: &[Transaction]) -> Vec<Item> {
    let currencies = Currencies::iso();
    let rules =
        Rules { currencies: &currencies, allowed_currencies: None, future_tolerance: chrono::Duration::minutes(5) };
    transactions
        .iter()
        .map(|transaction| {
            let valid = validate(transaction.clone(), &rules, now()).expect("valid test transaction");
            let raw = transaction.provider_tx_id.as_bytes().to_vec();
            Item::Transaction {
                valid,
                origin: Origin { source: Arc::from("features"), record: 1, raw, context: Arc::from(&b""[..]) },
            }
        })
        .collect()
}

store_test!(the_seq_order_read_returns_what_was_ingested_in_order, |store: Store| async move {
    let committer = Committer::spawn(store.writer().await.unwrap(), Arc::new(now)).0;
    let transactions = varied(2_500, 5, 100);
    let mut seqs = Vec::new();
    // Three commit groups; a duplicate in the middle is not stored again.
    for group in [&transactions[..1000], &transactions[1000..1001], &transactions[1000..]] {
        for outcome in committer.commit(items(group)).await.unwrap() {
            match outcome {
                Outcome::Accepted { seq } => seqs.push(seq),
                Outcome::Duplicate { .. } => {}
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(seqs.len(), transactions.len());

    // Page through with a small limit.
    let mut read: Vec<StoredTransaction> = Vec::new();
    let mut from_seq = 0;
    loop {
        let page = store.transactions_in_seq_order(from_seq, 333).await.unwrap();
        let Some(last) = page.last() else { break };
        from_seq = last.seq + 1;
        read.extend(page);
    }
    assert_eq!(read.iter().map(|stored| stored.seq).collect::<Vec<_>>(), seqs);
    for (stored, original) in read.iter().zip(&transactions) {
        assert_eq!(&stored.transaction, original, "seq {}", stored.seq);
        assert_eq!(stored.transaction.content_hash(), original.content_hash());
    }
    // Training from the database gives the same vectors as from the originals.
    let from_store = extract_batch(FeatureConfig::default(), read.iter().map(|stored| &stored.transaction), &[]);
    assert_eq!(from_store, extract_batch(FeatureConfig::default(), &transactions, &[]));
    // A start past the end is an empty page; a start in the middle begins there.
    assert!(store.transactions_in_seq_order(seqs[seqs.len() - 1] + 1, 10).await.unwrap().is_empty());
    let middle = store.transactions_in_seq_order(seqs[1234], 2).await.unwrap();
    assert_eq!(middle.iter().map(|stored| stored.seq).collect::<Vec<_>>(), vec![seqs[1234], seqs[1235]]);
});
