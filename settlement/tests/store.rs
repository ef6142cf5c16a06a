//! The store's behaviour, the same on SQLite and PostgreSQL: idempotent ingestion,
//! conflicts, reversal checks, postings and balances, dead letters, statements, verify.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use settlement::generate::{Generator, GeneratorConfig};
use settlement::ingest::Committer;
use settlement::model::{sha256, Kind, Transaction};
use settlement::money::{Currencies, CurrencyCode};
use settlement::rejection::{ErrorCode, Rejection};
use settlement::statement::{statement, Period};
use settlement::store::{DeadLetterFilter, DeadLetterStatus, Finding, Item, Origin, Outcome, Store, Unit};
use settlement::validate::{validate, Rules};
use sqlx::Executor;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().into()
}

fn now() -> DateTime<Utc> {
    at("2026-11-25T00:00:00Z")
}

fn item(tx: Transaction) -> Item {
    let currencies = Currencies::iso();
    let rules =
        Rules { currencies: &currencies, allowed_currencies: None, future_tolerance: chrono::Duration::minutes(5) };
    let record = tx.provider_tx_id.len() as u64;
    let raw = tx.provider_tx_id.as_bytes().to_vec();
    let valid = validate(tx, &rules, now()).expect("valid test transaction");
    let origin = Origin { source: Arc::from("test"), record, raw, context: Arc::from(&b""[..]) };
    Item::Transaction { valid, origin }
}

fn tx(id: &str, kind: Kind, account: &str, amount: &str) -> Transaction {
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
        occurred_at: at("2026-11-24T10:00:00Z"),
        received_at: at("2026-11-24T10:00:01Z"),
        original_tx_id: None,
        raw_sha256: sha256(id.as_bytes()),
    }
}

fn rollback(id: &str, original: &str, account: &str, amount: &str) -> Transaction {
    Transaction { original_tx_id: Some(original.into()), ..tx(id, Kind::Rollback, account, amount) }
}

async fn committer(store: &Store) -> Committer {
    Committer::spawn(store.writer().await.unwrap(), Arc::new(now)).0
}

async fn balances(store: &Store) -> BTreeMap<(String, String), i64> {
    store
        .balances("")
        .await
        .unwrap()
        .into_iter()
        .map(|balance| ((balance.account, balance.currency.to_string()), balance.balance_minor))
        .collect()
}

fn generated(count: usize, seed: u64, rollbacks_per_mille: u32) -> Vec<Transaction> {
    Generator::new(GeneratorConfig { seed, accounts: 200, rollbacks_per_mille, ..GeneratorConfig::default() })
        .take(count)
        .collect()
}

store_test!(replaying_a_batch_changes_nothing, |store: Store| async move {
    let committer = committer(&store).await;
    let transactions = generated(3000, 1, 20);
    let outcomes = committer.commit(transactions.iter().cloned().map(item).collect()).await.unwrap();
    assert!(outcomes.iter().all(|outcome| matches!(outcome, Outcome::Accepted { .. })), "{outcomes:?}");
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.transactions, counts.postings), (3000, 6000));
    let before = balances(&store).await;

    let replay = committer.commit(transactions.iter().cloned().map(item).collect()).await.unwrap();
    for (first, second) in outcomes.iter().zip(&replay) {
        let Outcome::Accepted { seq } = first else { unreachable!() };
        assert_eq!(second, &Outcome::Duplicate { seq: *seq });
    }
    assert_eq!(store.counts().await.unwrap(), counts);
    assert_eq!(balances(&store).await, before);
    let report = store.verify().await.unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.transactions_checked, 3000);
});

store_test!(duplicates_within_one_group_are_stored_once, |store: Store| async move {
    let committer = committer(&store).await;
    let bet = tx("T1", Kind::Bet, "p1", "10.00");
    let outcomes = committer.commit(vec![item(bet.clone()), item(bet)]).await.unwrap();
    let Outcome::Accepted { seq } = outcomes[0] else { panic!("{outcomes:?}") };
    assert_eq!(outcomes[1], Outcome::Duplicate { seq });
    assert_eq!(store.counts().await.unwrap().transactions, 1);
});

store_test!(a_conflict_is_kept_and_the_original_untouched, |store: Store| async move {
    let committer = committer(&store).await;
    let outcomes = committer.commit(vec![item(tx("T1", Kind::Bet, "p1", "10.00"))]).await.unwrap();
    let Outcome::Accepted { seq } = outcomes[0] else { panic!() };
    let changed = tx("T1", Kind::Bet, "p1", "99.00");
    assert_eq!(
        committer.commit(vec![item(changed.clone())]).await.unwrap(),
        vec![Outcome::Conflict { original_seq: seq }]
    );
    // The same conflicting redelivery again is still a conflict, stored once.
    assert_eq!(committer.commit(vec![item(changed)]).await.unwrap(), vec![Outcome::Conflict { original_seq: seq }]);
    let conflicts = store.conflicts(Some("evo")).await.unwrap();
    assert_eq!(conflicts.len(), 1);
    assert!(conflicts[0].detail.contains("\"amount\":\"99.00\""), "{}", conflicts[0].detail);
    assert_eq!(balances(&store).await[&("player:p1".to_string(), "USD".to_string())], 1000);
    assert!(store.verify().await.unwrap().is_clean());
});

store_test!(reversals_are_checked_against_their_original, |store: Store| async move {
    let committer = committer(&store).await;
    let outcomes = committer
        .commit(vec![
            item(tx("B1", Kind::Bet, "p1", "10.00")),
            // In the same group as its bet.
            item(rollback("R1", "B1", "p1", "4.00")),
            item(rollback("R2", "B1", "p1", "6.01")),
            item(rollback("R3", "NOPE", "p1", "1.00")),
            item(rollback("R4", "B1", "p2", "1.00")),
        ])
        .await
        .unwrap();
    assert!(matches!(outcomes[0], Outcome::Accepted { .. }));
    assert!(matches!(outcomes[1], Outcome::Accepted { .. }));
    assert_eq!(outcomes[2], Outcome::Rejected { code: ErrorCode::RollbackExceedsOriginal });
    assert_eq!(outcomes[3], Outcome::Rejected { code: ErrorCode::RollbackUnknownOriginal });
    assert_eq!(outcomes[4], Outcome::Rejected { code: ErrorCode::RollbackMismatch });
    // In a later group: the stored reversals count.
    let later = committer
        .commit(vec![item(rollback("R5", "B1", "p1", "6.00")), item(rollback("R6", "B1", "p1", "0.01"))])
        .await
        .unwrap();
    assert!(matches!(later[0], Outcome::Accepted { .. }));
    assert_eq!(later[1], Outcome::Rejected { code: ErrorCode::RollbackExceedsOriginal });
    let deposit = tx("D1", Kind::Deposit, "p1", "50.00");
    let wrong_kind = rollback("R7", "D1", "p1", "1.00");
    let chargeback = Transaction { original_tx_id: Some("D1".into()), ..tx("C1", Kind::Chargeback, "p1", "50.00") };
    let outcomes = committer.commit(vec![item(deposit), item(wrong_kind), item(chargeback)]).await.unwrap();
    assert_eq!(outcomes[1], Outcome::Rejected { code: ErrorCode::RollbackMismatch });
    assert!(matches!(outcomes[2], Outcome::Accepted { .. }));

    let balances = balances(&store).await;
    // The bet was fully rolled back; the deposit fully charged back.
    assert_eq!(balances[&("player:p1".to_string(), "USD".to_string())], 0);
    assert_eq!(balances[&("ggr:evo".to_string(), "USD".to_string())], 0);
    let dead = store
        .dead_letters(&DeadLetterFilter {
            provider: Some("evo".into()),
            status: Some(DeadLetterStatus::Open),
            limit: 100,
        })
        .await
        .unwrap();
    let codes: Vec<_> = dead.iter().map(|letter| letter.code).collect();
    assert_eq!(
        codes,
        [
            ErrorCode::RollbackExceedsOriginal,
            ErrorCode::RollbackUnknownOriginal,
            ErrorCode::RollbackMismatch,
            ErrorCode::RollbackExceedsOriginal,
            ErrorCode::RollbackMismatch,
        ]
    );
    assert!(dead[1].message.contains("NOPE"), "{}", dead[1].message);
    assert_eq!(dead[1].field.as_deref(), Some("original_tx_id"));
    assert!(store.verify().await.unwrap().is_clean());
});

store_test!(rejected_items_are_kept_with_their_bytes, |store: Store| async move {
    let committer = committer(&store).await;
    let origin =
        Origin { source: Arc::from("file.csv"), record: 7, raw: b"a,b,c".to_vec(), context: Arc::from(&b"h1,h2"[..]) };
    let rejection = Rejection::field(ErrorCode::InvalidAmount, "amount", "amount 1.001 has 3 decimal places");
    let rejected = Item::Rejected { provider: "payfast".into(), unit: Unit::Record, origin, rejection };
    assert_eq!(
        committer.commit(vec![rejected.clone()]).await.unwrap(),
        vec![Outcome::Rejected { code: ErrorCode::InvalidAmount }]
    );
    // The same bad record seen again (a re-run) is one dead letter, seen twice.
    committer.commit(vec![rejected]).await.unwrap();
    let all = store.dead_letters(&DeadLetterFilter { provider: None, status: None, limit: 10 }).await.unwrap();
    assert_eq!(all.len(), 1);
    let letter = store.dead_letter(all[0].id).await.unwrap().unwrap();
    assert_eq!((letter.raw.as_slice(), letter.context.as_slice(), letter.record), (&b"a,b,c"[..], &b"h1,h2"[..], 7));
    assert_eq!((letter.attempts, letter.unit, letter.status), (2, Unit::Record, DeadLetterStatus::Open));
    assert!(store.resolve_dead_letter(letter.id, now()).await.unwrap());
    assert!(!store.resolve_dead_letter(letter.id, now()).await.unwrap());
});

store_test!(statement_sums_exactly_per_period, |store: Store| async move {
    let committer = committer(&store).await;
    let mut late = tx("B3", Kind::Bet, "p2", "1000.00");
    late.occurred_at = at("2026-11-25T00:00:00Z");
    committer
        .commit(vec![
            item(tx("B1", Kind::Bet, "p1", "10.10")),
            item(tx("B2", Kind::Bet, "p2", "0.20")),
            item(tx("W1", Kind::Win, "p1", "5.05")),
            item(rollback("R1", "B2", "p2", "0.20")),
            item(late),
        ])
        .await
        .unwrap();
    let totals = store.kind_totals("evo", at("2026-11-24T00:00:00Z"), at("2026-11-25T00:00:00Z")).await.unwrap();
    let period =
        Period { label: "2026-11-24".into(), from: at("2026-11-24T00:00:00Z"), to: at("2026-11-25T00:00:00Z") };
    let statement = statement("evo", period, Some(Decimal::from_str("0.1").unwrap()), &totals).unwrap();
    let usd = &statement.currencies[&CurrencyCode::parse("USD").unwrap()];
    assert_eq!((usd.bets.count, usd.bets.amount), (2, Decimal::from_str("10.30").unwrap()));
    assert_eq!(usd.rollbacks_of_bets.count, 1);
    assert_eq!(usd.ggr, Decimal::from_str("5.05").unwrap());
    assert_eq!(usd.royalty, Decimal::from_str("0.50").unwrap());
});

store_test!(verify_finds_tampering, |store: Store| async move {
    let committer = committer(&store).await;
    committer.commit(generated(50, 3, 0).into_iter().map(item).collect()).await.unwrap();
    assert!(store.verify().await.unwrap().is_clean());
    store.pool().execute("UPDATE transactions SET amount_minor = amount_minor + 1 WHERE seq = 5").await.unwrap();
    store
        .pool()
        .execute("UPDATE balances SET balance_minor = balance_minor + 7 WHERE ledger_account_id = 1")
        .await
        .unwrap();
    let report = store.verify().await.unwrap();
    assert!(report.findings.iter().any(|f| matches!(f, Finding::ContentHashMismatch { seq: 5, .. })), "{report:?}");
    assert!(report.findings.iter().any(|f| matches!(f, Finding::PostingsDifferFromRules { seq: 5, .. })), "{report:?}");
    assert!(report.findings.iter().any(|f| matches!(f, Finding::BalanceDiffers { .. })), "{report:?}");
    assert!(report.findings.iter().any(|f| matches!(f, Finding::TrialBalanceNonZero { .. })), "{report:?}");
    store.pool().execute("DELETE FROM postings WHERE tx_seq = 9 AND leg = 1").await.unwrap();
    let report = store.verify().await.unwrap();
    assert!(report.findings.iter().any(|f| matches!(f, Finding::PostingsUnbalanced { seq: 9, .. })), "{report:?}");
});

store_test!(concurrent_callers_share_group_commits, |store: Store| async move {
    let committer = committer(&store).await;
    let transactions = generated(4000, 5, 0);
    let mut tasks = Vec::new();
    for chunk in transactions.chunks(100) {
        let committer = committer.clone();
        let items: Vec<Item> = chunk.iter().cloned().map(item).collect();
        tasks.push(tokio::spawn(async move { committer.commit(items).await }));
    }
    for task in tasks {
        let outcomes = task.await.unwrap().unwrap();
        assert!(outcomes.iter().all(|outcome| matches!(outcome, Outcome::Accepted { .. })));
    }
    assert_eq!(store.counts().await.unwrap().transactions, 4000);
    assert!(store.verify().await.unwrap().is_clean());
    // 40 requests were made durable by fewer commits: callers shared database transactions.
    let stats = committer.stats();
    assert_eq!(stats.requests.load(std::sync::atomic::Ordering::Relaxed), 40);
    assert_eq!(stats.items.load(std::sync::atomic::Ordering::Relaxed), 4000);
    let groups = stats.groups.load(std::sync::atomic::Ordering::Relaxed);
    assert!(groups < 40, "{groups} commits for 40 concurrent requests");
});

// Regressions found in review; each runs on both stores.

store_test!(regression_evicting_the_account_cache_keeps_the_writer_alive, |store: Store| async move {
    // With room for 5 account ids, the second group evicts the cache while an account it
    // uses (ggr:evo) was cached before: the writer used to panic there and die.
    let writer = store.writer().await.unwrap().with_account_cache_max(5);
    let committer = Committer::spawn(writer, Arc::new(now)).0;
    committer.commit(vec![item(tx("B1", Kind::Bet, "p1", "1.00"))]).await.unwrap();
    let group: Vec<Item> = (2..=5).map(|i| item(tx(&format!("B{i}"), Kind::Bet, &format!("p{i}"), "1.00"))).collect();
    let outcomes = committer.commit(group).await.unwrap();
    assert!(outcomes.iter().all(|outcome| matches!(outcome, Outcome::Accepted { .. })), "{outcomes:?}");
    let later = committer.commit(vec![item(tx("B6", Kind::Bet, "p1", "1.00"))]).await.unwrap();
    assert!(matches!(later[0], Outcome::Accepted { .. }));
    assert_eq!(balances(&store).await[&("ggr:evo".to_string(), "USD".to_string())], -600);
    assert!(store.verify().await.unwrap().is_clean());
});

store_test!(regression_control_characters_in_a_rejection_are_stored_alike, |store: Store| async move {
    // PostgreSQL refuses NUL in TEXT; a rejection quoting hostile input must still be kept.
    let committer = committer(&store).await;
    let origin =
        Origin { source: Arc::from("evil\u{0}.jsonl"), record: 1, raw: b"x\0y".to_vec(), context: Arc::from(&b""[..]) };
    let rejection = Rejection::field(ErrorCode::MalformedRecord, "x\u{0}y", "unknown field `x\u{0}y`");
    let rejected = Item::Rejected { provider: "evo".into(), unit: Unit::Record, origin, rejection };
    assert_eq!(
        committer.commit(vec![rejected]).await.unwrap(),
        vec![Outcome::Rejected { code: ErrorCode::MalformedRecord }]
    );
    let letters = store.dead_letters(&DeadLetterFilter { provider: None, status: None, limit: 10 }).await.unwrap();
    assert_eq!(letters[0].message, "unknown field `x\\u{0}y`");
    assert_eq!(letters[0].source, "evil\\u{0}.jsonl");
    assert_eq!(letters[0].raw, b"x\0y");
});

store_test!(regression_a_changed_currency_exponent_is_refused_not_mixed, |store: Store| async move {
    let committer = committer(&store).await;
    committer.commit(vec![item(tx("B1", Kind::Bet, "p1", "10.00"))]).await.unwrap();
    // The configuration now says USD has 3 decimals: amounts would be stored in mills.
    let currencies = Currencies::with_extra([("USD", 3)]).unwrap();
    let rules =
        Rules { currencies: &currencies, allowed_currencies: None, future_tolerance: chrono::Duration::minutes(5) };
    let valid = validate(tx("B2", Kind::Bet, "p1", "1.000"), &rules, now()).unwrap();
    let origin = Origin { source: Arc::from("test"), record: 2, raw: b"B2".to_vec(), context: Arc::from(&b""[..]) };
    let outcomes = committer.commit(vec![Item::Transaction { valid, origin }]).await.unwrap();
    assert_eq!(outcomes, vec![Outcome::Rejected { code: ErrorCode::InvalidAmount }]);
    let letters = store.dead_letters(&DeadLetterFilter { provider: None, status: None, limit: 10 }).await.unwrap();
    assert!(letters[0].message.contains("stores it with 2"), "{}", letters[0].message);
    assert_eq!(balances(&store).await[&("player:p1".to_string(), "USD".to_string())], 1000);
});

store_test!(regression_verify_checks_reversals_against_their_originals, |store: Store| async move {
    let committer = committer(&store).await;
    committer
        .commit(vec![item(tx("B1", Kind::Bet, "p1", "10.00")), item(rollback("R1", "B1", "p1", "10.00"))])
        .await
        .unwrap();
    assert!(store.verify().await.unwrap().is_clean());
    store.pool().execute("UPDATE transactions SET amount_minor = 500 WHERE provider_tx_id = 'B1'").await.unwrap();
    let report = store.verify().await.unwrap();
    assert!(
        report
            .findings
            .iter()
            .any(|f| matches!(f, Finding::OverReversed { amount_minor: 500, reversed_minor: 1000, .. })),
        "{report:?}"
    );
    store.pool().execute("UPDATE transactions SET original_tx_id = 'NOPE' WHERE provider_tx_id = 'R1'").await.unwrap();
    let report = store.verify().await.unwrap();
    assert!(
        report
            .findings
            .iter()
            .any(|f| matches!(f, Finding::ReversalInconsistent { reason, .. } if reason.contains("NOPE"))),
        "{report:?}"
    );
});

store_test!(regression_one_callers_failing_write_does_not_fail_anothers, |store: Store| async move {
    // 9,000 deposits of the largest allowed amount leave one balance 0.2e18 short of the
    // 64-bit limit; 300 more overflow it, and that write must fail. Another caller's
    // deposit, queued into the same commit group, must commit all the same.
    let committer = committer(&store).await;
    let big = |i: usize| item(tx(&format!("D{i}"), Kind::Deposit, "whale", "10000000000000.00"));
    committer.commit((0..9_000).map(big).collect()).await.unwrap();
    // Keep the writer busy so that both requests below queue up into one group.
    let busy = committer.submit(generated(20_000, 9, 0).into_iter().map(item).collect()).await.unwrap();
    let failing = committer.submit((9_000..9_300).map(big).collect()).await.unwrap();
    let other = committer.submit(vec![item(tx("S1", Kind::Deposit, "minnow", "1.00"))]).await.unwrap();
    assert!(busy.await.unwrap().is_ok());
    assert!(failing.await.unwrap().is_err(), "the overflowing write fails loudly");
    let outcomes = other.await.unwrap().expect("the other caller's write commits");
    assert!(matches!(outcomes[0], Outcome::Accepted { .. }));
    assert!(store.verify().await.unwrap().is_clean());
});
