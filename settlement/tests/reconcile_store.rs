//! Reconciliation in the store, the same on SQLite and PostgreSQL: statements load once and
//! read back exactly, the ledger as a run sees it, the life of breaks across runs, re-runs
//! that change nothing, maker-checker adjustments that post balanced transactions, the
//! audit log, and the open-break figures. Outcomes are built by hand: the matching engine
//! is tested on its own.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use settlement::model::{sha256, Kind, Transaction};
use settlement::money::{Currencies, CurrencyCode};
use settlement::reconcile::{
    AutoRule, Break, BreakClass, CurrencyTotals, MatchCounts, Outcome, ProviderStatement, ReconPeriod,
    StatementBalance, StatementFormat, StatementLine, TotalsLine,
};
use settlement::store::{
    AdjustmentProposal, AdjustmentStatus, AuditEntry, AuditSubject, BreakFilter, BreakStatus, ClosedKind, DuplicateBy,
    Item, Origin, Store, StoreError, StoredBreak, AUDIT_ACTOR_RUN,
};
use settlement::validate::{validate, Rules};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().into()
}

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

fn day(text: &str) -> NaiveDate {
    NaiveDate::from_str(text).unwrap()
}

fn usd() -> CurrencyCode {
    CurrencyCode::parse("USD").unwrap()
}

fn eur() -> CurrencyCode {
    CurrencyCode::parse("EUR").unwrap()
}

fn tx(provider: &str, id: &str, amount: &str, occurred_at: DateTime<Utc>, received_at: DateTime<Utc>) -> Transaction {
    Transaction {
        provider: provider.into(),
        provider_tx_id: id.into(),
        kind: Kind::Bet,
        account: "p1".into(),
        game_id: None,
        round_id: None,
        session_id: None,
        currency: usd(),
        amount: dec(amount),
        occurred_at,
        received_at,
        original_tx_id: None,
        raw_sha256: sha256(id.as_bytes()),
    }
}

/// Writes transactions through the ledger writer (the writer's connection goes back to the
/// pool afterwards).
async fn ledger(store: &Store, transactions: Vec<Transaction>) {
    let now = at("2026-11-26T00:00:00Z");
    let currencies = Currencies::iso();
    let rules = Rules { currencies: &currencies, allowed_currencies: None, future_tolerance: Duration::minutes(5) };
    let items: Vec<Item> = transactions
        .into_iter()
        .enumerate()
        .map(|(index, tx)| Item::Transaction {
            valid: validate(tx, &rules, now).expect("valid test transaction"),
            origin: Origin {
                source: Arc::from("test"),
                record: index as u64 + 1,
                raw: Vec::new(),
                context: Arc::from(&b""[..]),
            },
        })
        .collect();
    let mut writer = store.writer().await.unwrap();
    let outcomes = writer.write(&items, now).await.unwrap();
    assert!(outcomes.iter().all(|outcome| matches!(outcome, settlement::store::Outcome::Accepted { .. })));
}

fn listing() -> ProviderStatement {
    let line = |record: u64, id: &str, amount: &str, date: &str| StatementLine {
        record,
        detail: 0,
        provider_tx_id: Some(id.into()),
        reference: None,
        kind: Some(Kind::Bet),
        currency: usd(),
        amount: dec(amount),
        business_date: day(date),
        occurred_at: Some(at("2026-11-24T10:00:00.000000123Z")),
    };
    ProviderStatement {
        provider: "evo".into(),
        format: StatementFormat::Listing,
        source: "evo-2026-11-24.csv".into(),
        sha256: sha256(b"listing bytes"),
        statement_id: None,
        from_date: day("2026-11-23"),
        to_date: day("2026-11-24"),
        lines: vec![
            line(2, "T1", "10.50", "2026-11-24"),
            // Written with more places than needed: read back the same way.
            line(3, "T2", "0.500", "2026-11-23"),
            StatementLine {
                record: 4,
                detail: 2,
                provider_tx_id: None,
                reference: Some("BATCH-7".into()),
                kind: None,
                currency: eur(),
                amount: dec("1234567.89"),
                business_date: day("2026-11-24"),
                occurred_at: None,
            },
        ],
        totals: Vec::new(),
        balances: Vec::new(),
    }
}

fn camt() -> ProviderStatement {
    ProviderStatement {
        provider: "evo".into(),
        format: StatementFormat::Camt053,
        source: "camt-2026-11-24.xml".into(),
        sha256: sha256(b"camt bytes"),
        statement_id: Some("STMT-2026-11-24".into()),
        from_date: day("2026-11-24"),
        to_date: day("2026-11-24"),
        lines: vec![StatementLine {
            record: 1,
            detail: 1,
            provider_tx_id: Some("T9".into()),
            reference: Some("E2E-9".into()),
            kind: Some(Kind::Deposit),
            currency: usd(),
            amount: dec("99.99"),
            business_date: day("2026-11-24"),
            occurred_at: None,
        }],
        totals: Vec::new(),
        balances: vec![StatementBalance { currency: usd(), opening: dec("-100.00"), closing: dec("-0.01") }],
    }
}

fn totals() -> ProviderStatement {
    ProviderStatement {
        provider: "evo".into(),
        format: StatementFormat::Totals,
        source: "totals.csv".into(),
        sha256: sha256(b"totals bytes"),
        statement_id: None,
        from_date: day("2026-11-24"),
        to_date: day("2026-11-25"),
        lines: Vec::new(),
        totals: vec![
            TotalsLine {
                record: 2,
                business_date: day("2026-11-24"),
                currency: usd(),
                kind: Kind::Bet,
                count: 3,
                amount: dec("31.50"),
            },
            TotalsLine {
                record: 3,
                business_date: day("2026-11-25"),
                currency: usd(),
                kind: Kind::Win,
                count: 1,
                amount: dec("7"),
            },
        ],
        balances: Vec::new(),
    }
}

store_test!(statements_read_back_exactly, |store: Store| async move {
    let loaded_at = at("2026-11-25T01:02:03.000000004Z");
    let listing_id = store.save_statement(&listing(), loaded_at).await.unwrap();
    let camt_id = store.save_statement(&camt(), loaded_at).await.unwrap();
    let totals_id = store.save_statement(&totals(), loaded_at).await.unwrap();
    for (id, original) in [(listing_id, listing()), (camt_id, camt()), (totals_id, totals())] {
        let stored = store.statement(id).await.unwrap().expect("stored");
        assert_eq!(stored, original);
        // Exactly: the same decimal places, not only the same value.
        let text = |statement: &ProviderStatement| -> Vec<String> {
            statement
                .lines
                .iter()
                .map(|line| line.amount.to_string())
                .chain(statement.totals.iter().map(|row| row.amount.to_string()))
                .chain(
                    statement
                        .balances
                        .iter()
                        .flat_map(|balance| [balance.opening.to_string(), balance.closing.to_string()]),
                )
                .collect()
        };
        assert_eq!(text(&stored), text(&original));
    }
    assert_eq!(store.statement(totals_id + 1000).await.unwrap(), None);

    let (lines, totals_rows, infos) = store.statement_lines_for("evo", day("2026-11-24")).await.unwrap();
    let ids: Vec<_> = lines.iter().map(|line| (line.record, line.provider_tx_id.clone())).collect();
    assert_eq!(ids, [(2, Some("T1".into())), (4, None), (1, Some("T9".into()))]);
    assert_eq!(totals_rows, vec![totals().totals[0].clone()]);
    let info_ids: Vec<_> = infos.iter().map(|info| info.id).collect();
    assert_eq!(info_ids, [listing_id, camt_id, totals_id]);
    assert_eq!(infos[1].statement_id.as_deref(), Some("STMT-2026-11-24"));
    assert_eq!((infos[0].line_count, infos[2].totals_count, infos[1].balance_count), (3, 2, 1));
    assert_eq!(infos[0].loaded_at, loaded_at);
    assert_eq!(infos[0].sha256, sha256(b"listing bytes"));

    let (lines, totals_rows, infos) = store.statement_lines_for("evo", day("2026-11-23")).await.unwrap();
    assert_eq!(lines, vec![listing().lines[1].clone()]);
    assert!(totals_rows.is_empty());
    assert_eq!(infos.iter().map(|info| info.id).collect::<Vec<_>>(), [listing_id]);
    // A day no statement covers: nothing claimed.
    let (lines, totals_rows, infos) = store.statement_lines_for("evo", day("2026-11-20")).await.unwrap();
    assert!(lines.is_empty() && totals_rows.is_empty() && infos.is_empty());
    let (lines, _, infos) = store.statement_lines_for("other", day("2026-11-24")).await.unwrap();
    assert!(lines.is_empty() && infos.is_empty());
});

store_test!(a_statement_loads_once, |store: Store| async move {
    let first_at = at("2026-11-25T01:00:00Z");
    let first = store.save_statement(&camt(), first_at).await.unwrap();
    // The same bytes under another file name.
    let renamed = ProviderStatement { source: "copy.xml".into(), ..camt() };
    match store.save_statement(&renamed, at("2026-11-25T02:00:00Z")).await {
        Err(StoreError::DuplicateStatement {
            by: DuplicateBy::Sha256,
            earlier_id,
            earlier_source,
            earlier_loaded_at,
            ..
        }) => {
            assert_eq!(
                (earlier_id, earlier_source.as_str(), earlier_loaded_at),
                (first, "camt-2026-11-24.xml", first_at)
            );
        }
        other => panic!("expected a duplicate by sha256, got {other:?}"),
    }
    // Other bytes, the same provider statement id.
    let reissued = ProviderStatement { sha256: sha256(b"other bytes"), ..camt() };
    let error = store.save_statement(&reissued, at("2026-11-25T02:00:00Z")).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::DuplicateStatement { by: DuplicateBy::StatementId(id), earlier_id, .. }
            if id == "STMT-2026-11-24" && *earlier_id == first),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&format!("statement #{first}")) && message.contains("STMT-2026-11-24"), "{message}");
    // Nothing of the refused loads was stored.
    let (lines, _, infos) = store.statement_lines_for("evo", day("2026-11-24")).await.unwrap();
    assert_eq!((lines.len(), infos.len()), (1, 1));
    // Another provider may send the same bytes and id.
    let other = ProviderStatement { provider: "payfast".into(), ..camt() };
    assert!(store.save_statement(&other, first_at).await.unwrap() > first);
    // Statements without an id do not collide with each other.
    store.save_statement(&listing(), first_at).await.unwrap();
    store.save_statement(&totals(), first_at).await.unwrap();
});

store_test!(ledger_entries_follow_the_window_and_as_of, |store: Store| async move {
    let from = at("2026-11-24T00:00:00Z");
    let to = at("2026-11-25T00:00:00Z");
    let as_of = at("2026-11-25T06:00:00Z");
    let nanosecond = Duration::nanoseconds(1);
    let received = at("2026-11-25T01:00:00Z");
    ledger(
        &store,
        vec![
            tx("evo", "before", "1.00", from - nanosecond, received),
            tx("evo", "first", "2.00", from, received),
            tx("evo", "last", "3.00", to - nanosecond, received),
            tx("evo", "after", "4.00", to, received),
            tx("evo", "received-at-as-of", "5.00", at("2026-11-24T12:00:00Z"), as_of),
            tx("evo", "received-later", "6.00", at("2026-11-24T12:00:00Z"), as_of + nanosecond),
            tx("payfast", "other-provider", "7.00", at("2026-11-24T12:00:00Z"), received),
        ],
    )
    .await;
    let entries = store.ledger_entries("evo", from, to, as_of).await.unwrap();
    let ids: Vec<_> = entries.iter().map(|entry| entry.provider_tx_id.as_str()).collect();
    assert_eq!(ids, ["first", "received-at-as-of", "last"]);
    assert_eq!(entries[0].amount, dec("2.00"));
    assert_eq!(entries[0].occurred_at, from);
    assert_eq!(entries[1].received_at, as_of);
    assert_eq!((entries[2].kind, entries[2].currency), (Kind::Bet, usd()));
    // A later as_of sees the late delivery.
    let later = store.ledger_entries("evo", from, to, as_of + nanosecond).await.unwrap();
    assert_eq!(later.len(), 4);
    assert!(store.ledger_entries("nobody", from, to, as_of).await.unwrap().is_empty());
});

fn period() -> ReconPeriod {
    ReconPeriod {
        business_date: day("2026-11-24"),
        from: at("2026-11-24T00:00:00Z"),
        to: at("2026-11-25T00:00:00Z"),
        as_of: at("2026-11-25T06:00:00Z"),
    }
}

fn found(class: BreakClass, key: &str, difference: &str) -> Break {
    Break {
        class,
        key: key.into(),
        currency: Some(usd()),
        kind: Some(Kind::Bet),
        provider_tx_id: Some(key.into()),
        statement_record: Some(7),
        ledger_amount: None,
        statement_amount: Some(dec(difference)),
        difference: dec(difference),
        count: 1,
        auto_closed_by: None,
        reason: format!("the statement has {key} for {difference} USD; the ledger does not"),
    }
}

fn outcome(breaks: Vec<Break>) -> Outcome {
    let mut currencies = BTreeMap::new();
    currencies.insert(
        usd(),
        CurrencyTotals {
            ledger_count: 10,
            ledger_amount: dec("100.00"),
            statement_count: 11,
            statement_amount: dec("125.50"),
            matched_count: 10,
            matched_amount: dec("100.00"),
            net_difference: dec("25.50"),
        },
    );
    Outcome {
        currencies,
        matches: MatchCounts { by_id: 8, by_reference: 1, one_to_many: 1, many_to_one: 0, totals_rows: 0 },
        breaks,
    }
}

async fn breaks_by_key(store: &Store) -> BTreeMap<String, StoredBreak> {
    let filter = BreakFilter { provider: Some("evo".into()), ..BreakFilter::default() };
    store.breaks(&filter).await.unwrap().into_iter().map(|stored| (stored.found.key.clone(), stored)).collect()
}

async fn audit_of(store: &Store, subject: AuditSubject) -> Vec<AuditEntry> {
    store.audit_log(Some(subject), 0).await.unwrap()
}

fn actions(entries: &[AuditEntry]) -> Vec<&str> {
    entries.iter().map(|entry| entry.action.as_str()).collect()
}

store_test!(breaks_live_across_runs, |store: Store| async move {
    let t1 = at("2026-11-25T06:00:00Z");
    let late = Break { auto_closed_by: Some(AutoRule::LateArrival), ..found(BreakClass::Timing, "C", "3.00") };
    let run1 = store
        .record_run(
            "evo",
            &period(),
            &outcome(vec![
                found(BreakClass::MissingInLedger, "A", "10.00"),
                found(BreakClass::MissingInLedger, "B", "20.00"),
                late.clone(),
            ]),
            t1,
        )
        .await
        .unwrap();
    assert_eq!((run1.breaks_found, run1.breaks_opened, run1.breaks_closed), (3, 2, 1));
    let stored = breaks_by_key(&store).await;
    assert_eq!(stored["A"].status, BreakStatus::Open);
    assert_eq!(stored["A"].found, found(BreakClass::MissingInLedger, "A", "10.00"));
    assert_eq!((stored["A"].first_run, stored["A"].last_run, stored["A"].opened_at), (run1.id, run1.id, t1));
    assert_eq!(stored["A"].business_date, day("2026-11-24"));
    assert_eq!(stored["C"].status, BreakStatus::Closed);
    assert_eq!(stored["C"].closed_kind, Some(ClosedKind::Rule));
    assert_eq!(stored["C"].closed_by.as_deref(), Some("late_arrival"));
    assert_eq!(stored["C"].found, late);
    assert_eq!(stored["C"].age(t1 + Duration::days(3)), Duration::zero());
    assert_eq!(stored["A"].age(t1 + Duration::days(3)), Duration::days(3));
    let opened = audit_of(&store, AuditSubject::Break(stored["A"].id)).await;
    assert_eq!(actions(&opened), ["opened"]);
    assert_eq!((opened[0].actor.as_str(), opened[0].at), (AUDIT_ACTOR_RUN, t1));
    assert!(opened[0].detail.contains("the statement has A"), "{}", opened[0].detail);
    assert_eq!(actions(&audit_of(&store, AuditSubject::Break(stored["C"].id)).await), ["recorded_closed"]);
    // The run and its figures read back.
    let last = store.last_successful_run("evo").await.unwrap().unwrap();
    assert_eq!(last, run1);
    assert_eq!(last.currencies[&usd()].net_difference.to_string(), "25.50");

    // Run 2: A again with another amount, B gone, C found again without the rule, D new.
    let t2 = t1 + Duration::hours(1);
    let a_changed = Break {
        statement_amount: Some(dec("12.00")),
        difference: dec("12.00"),
        ..found(BreakClass::MissingInLedger, "A", "10.00")
    };
    let c_again = found(BreakClass::Timing, "C", "3.00");
    let run2 = store
        .record_run(
            "evo",
            &period(),
            &outcome(vec![a_changed.clone(), c_again.clone(), found(BreakClass::AmountDiffers, "D", "-0.01")]),
            t2,
        )
        .await
        .unwrap();
    assert_eq!((run2.breaks_opened, run2.breaks_closed, run2.breaks_reopened, run2.breaks_updated), (1, 1, 1, 1));
    let stored = breaks_by_key(&store).await;
    assert_eq!(stored["A"].status, BreakStatus::Open);
    assert_eq!(stored["A"].found.difference, dec("12.00"));
    assert_eq!((stored["A"].first_run, stored["A"].last_run, stored["A"].last_seen_at), (run1.id, run2.id, t2));
    assert_eq!(stored["B"].status, BreakStatus::Closed);
    assert_eq!(stored["B"].closed_by.as_deref(), Some("resolved_on_recheck"));
    assert_eq!(stored["B"].closed_at, Some(t2));
    assert_eq!(stored["B"].last_run, run1.id);
    assert_eq!(stored["C"].status, BreakStatus::Open);
    assert_eq!((stored["C"].closed_at, stored["C"].closed_by.as_deref()), (None, None));
    assert_eq!(stored["D"].found.difference, dec("-0.01"));
    let a_audit = audit_of(&store, AuditSubject::Break(stored["A"].id)).await;
    assert_eq!(actions(&a_audit), ["opened", "updated"]);
    assert!(a_audit[1].detail.contains("difference 10.00 -> 12.00"), "{}", a_audit[1].detail);
    assert_eq!(actions(&audit_of(&store, AuditSubject::Break(stored["B"].id)).await), ["opened", "closed"]);
    assert_eq!(actions(&audit_of(&store, AuditSubject::Break(stored["C"].id)).await), ["recorded_closed", "reopened"]);

    // Run 3: B reappears and is reopened; C is settled by the rule again.
    let t3 = t2 + Duration::hours(1);
    let run3 = store
        .record_run(
            "evo",
            &period(),
            &outcome(vec![
                a_changed.clone(),
                found(BreakClass::MissingInLedger, "B", "20.00"),
                Break { auto_closed_by: Some(AutoRule::LateArrival), ..c_again },
                found(BreakClass::AmountDiffers, "D", "-0.01"),
            ]),
            t3,
        )
        .await
        .unwrap();
    assert_eq!((run3.breaks_opened, run3.breaks_closed, run3.breaks_reopened), (0, 1, 1));
    let stored = breaks_by_key(&store).await;
    assert_eq!(stored["B"].status, BreakStatus::Open);
    assert_eq!(stored["B"].opened_at, t1, "a reopened break keeps its first opening");
    assert_eq!(stored["C"].status, BreakStatus::Closed);
    assert_eq!(actions(&audit_of(&store, AuditSubject::Break(stored["B"].id)).await), ["opened", "closed", "reopened"]);

    // Filters.
    let open = store.breaks(&BreakFilter { status: Some(BreakStatus::Open), ..BreakFilter::default() }).await.unwrap();
    assert_eq!(open.iter().map(|stored| stored.found.key.as_str()).collect::<Vec<_>>(), ["A", "B", "D"]);
    let amount_differs = store
        .breaks(&BreakFilter {
            class: Some(BreakClass::AmountDiffers),
            business_date: Some(day("2026-11-24")),
            ..BreakFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(amount_differs.len(), 1);
    let page = store.breaks(&BreakFilter { after_id: stored["B"].id, ..BreakFilter::default() }).await.unwrap();
    assert_eq!(page.iter().map(|stored| stored.found.key.as_str()).collect::<Vec<_>>(), ["C", "D"]);
    assert!(store
        .breaks(&BreakFilter { business_date: Some(day("2026-11-23")), ..BreakFilter::default() })
        .await
        .unwrap()
        .is_empty());

    // Open figures: A (12.00), B (20.00) missing in ledger; D (-0.01) amount differs.
    let stats = store.open_break_stats().await.unwrap();
    assert_eq!(stats.len(), 2);
    assert_eq!((stats[0].class, stats[0].open_count), (BreakClass::MissingInLedger, 2));
    assert_eq!(stats[0].open_difference[&usd()], dec("32.00"));
    assert_eq!(stats[0].oldest_open_at, t1);
    assert_eq!((stats[1].class, stats[1].open_count), (BreakClass::AmountDiffers, 1));
    assert_eq!(stats[1].open_difference[&usd()], dec("-0.01"));
    assert_eq!(stats[1].open_difference_abs[&usd()], dec("0.01"));
    assert_eq!(stats[1].oldest_open_at, t2);

    // Events replay the open count: t1 +A +B; t2 -B +C(reopen) +D; t3 +B(reopen) -C.
    let events = store.break_events().await.unwrap();
    assert!(events.windows(2).all(|pair| pair[0].at <= pair[1].at));
    assert!(events.iter().all(|event| event.provider == "evo"));
    let open_after = |until: DateTime<Utc>| -> i64 {
        events.iter().filter(|event| event.at <= until).map(|event| if event.opened { 1 } else { -1 }).sum()
    };
    assert_eq!((open_after(t1), open_after(t2), open_after(t3)), (2, 3, 3));
    assert_eq!(events.len(), 7);
});

store_test!(a_rerun_with_the_same_outcome_changes_nothing, |store: Store| async move {
    let same = outcome(vec![
        found(BreakClass::MissingInLedger, "A", "10.00"),
        Break { auto_closed_by: Some(AutoRule::RollToNextPeriod), ..found(BreakClass::Timing, "C", "3.00") },
        found(BreakClass::MissingAtProvider, "E", "-4.5"),
    ]);
    let t1 = at("2026-11-25T06:00:00Z");
    // A break that a later run closes, so closed breaks are part of the picture too.
    store
        .record_run("evo", &period(), &outcome(vec![found(BreakClass::MissingInLedger, "Z", "1.00")]), t1)
        .await
        .unwrap();
    let first = store.record_run("evo", &period(), &same, t1 + Duration::minutes(1)).await.unwrap();
    assert_eq!((first.breaks_opened, first.breaks_closed), (2, 2));
    let before = breaks_by_key(&store).await;
    let audit_before = store.audit_log(None, 0).await.unwrap();

    let t2 = t1 + Duration::hours(5);
    let second = store.record_run("evo", &period(), &same, t2).await.unwrap();
    assert!(second.id > first.id);
    assert_eq!(
        (second.breaks_opened, second.breaks_closed, second.breaks_reopened, second.breaks_updated),
        (0, 0, 0, 0)
    );
    assert_eq!(store.audit_log(None, 0).await.unwrap(), audit_before, "a re-run writes no audit rows");
    let after = breaks_by_key(&store).await;
    assert_eq!(after.len(), before.len());
    for (key, earlier) in &before {
        let later = &after[key];
        let seen = if same.breaks.iter().any(|found| &found.key == key) {
            (second.id, t2)
        } else {
            (earlier.last_run, earlier.last_seen_at)
        };
        assert_eq!((later.last_run, later.last_seen_at), seen, "{key}");
        // Everything else is as it was.
        let unchanged = StoredBreak { last_run: earlier.last_run, last_seen_at: earlier.last_seen_at, ..later.clone() };
        assert_eq!(&unchanged, earlier, "{key}");
    }
    assert_eq!(store.last_successful_run("evo").await.unwrap().unwrap().id, second.id);
});

async fn one_open_break(store: &Store) -> StoredBreak {
    // The ledger knows USD (two decimal places) from a stored transaction.
    let at_noon = at("2026-11-24T12:00:00Z");
    ledger(store, vec![tx("evo", "T1", "5.00", at_noon, at_noon)]).await;
    store
        .record_run(
            "evo",
            &period(),
            &outcome(vec![found(BreakClass::MissingInLedger, "A", "25.00")]),
            at("2026-11-25T06:00:00Z"),
        )
        .await
        .unwrap();
    breaks_by_key(store).await.remove("A").unwrap()
}

fn proposal(amount: &str) -> AdjustmentProposal {
    AdjustmentProposal {
        amount: dec(amount),
        currency: usd(),
        account: "p1".into(),
        reason: "deposit credited by the processor, missing from the feed".into(),
    }
}

store_test!(an_adjustment_needs_a_second_person, |store: Store| async move {
    let open = one_open_break(&store).await;
    let t = at("2026-11-25T09:00:00Z");
    // The maker's checks.
    let refused = |result: Result<i64, StoreError>, field: &str| match result {
        Err(StoreError::InvalidInput { what, .. }) => assert!(what.contains(field), "{what}"),
        other => panic!("expected a refusal of {field}, got {other:?}"),
    };
    refused(
        store
            .propose_adjustment(open.id, &AdjustmentProposal { reason: "  ".into(), ..proposal("25.00") }, "alice", t)
            .await,
        "reason",
    );
    refused(store.propose_adjustment(open.id, &proposal("0.00"), "alice", t).await, "amount");
    refused(store.propose_adjustment(open.id, &proposal("25.001"), "alice", t).await, "amount");
    refused(
        store
            .propose_adjustment(open.id, &AdjustmentProposal { currency: eur(), ..proposal("25.00") }, "alice", t)
            .await,
        "currency",
    );
    refused(store.propose_adjustment(open.id, &proposal("25.00"), " ", t).await, "proposed_by");
    assert!(matches!(
        store.propose_adjustment(open.id + 100, &proposal("25.00"), "alice", t).await,
        Err(StoreError::NotFound { what: "break", .. })
    ));
    assert!(store.audit_log(Some(AuditSubject::Break(open.id)), 0).await.unwrap().len() == 1, "refusals write nothing");

    let id = store.propose_adjustment(open.id, &proposal("25.00"), "alice", t).await.unwrap();
    let pending = breaks_by_key(&store).await.remove("A").unwrap();
    assert_eq!(pending.status, BreakStatus::PendingAdjustment);
    assert!(matches!(
        store.propose_adjustment(open.id, &proposal("1.00"), "carol", t).await,
        Err(StoreError::AdjustmentAlreadyPending { break_id, adjustment_id }) if break_id == open.id && adjustment_id == id
    ));
    // The proposer cannot approve their own, however they spell their name.
    let counts = store.counts().await.unwrap();
    match store.approve_adjustment(id, " Alice ", t).await {
        Err(StoreError::SelfApproval { adjustment_id, .. }) => assert_eq!(adjustment_id, id),
        other => panic!("expected a refused self-approval, got {other:?}"),
    }
    // Nor with an invisible character in their name, which prints the same in the audit log.
    for hidden in ["alice\u{200B}", "al\u{200D}ice", "\u{FEFF}alice", "alice\u{2060}", "\u{200B} ALICE"] {
        match store.approve_adjustment(id, hidden, t).await {
            Err(StoreError::SelfApproval { .. }) => {}
            other => panic!("expected {hidden:?} to be refused, got {other:?}"),
        }
    }
    assert_eq!(store.counts().await.unwrap(), counts, "a refused approval posts nothing");

    let approved_at = t + Duration::minutes(30);
    let approved = store.approve_adjustment(id, "bob", approved_at).await.unwrap();
    assert_eq!(approved.status, AdjustmentStatus::Approved);
    assert_eq!(approved.decided_by.as_deref(), Some("bob"));
    assert_eq!(store.adjustment(id).await.unwrap().unwrap(), approved);
    let seq = approved.tx_seq.expect("posted");
    // One balanced manual adjustment: the adjustments account pays, the player is credited.
    assert_eq!(store.counts().await.unwrap().transactions, counts.transactions + 1);
    let posted = store.transactions_in_seq_order(seq, 1).await.unwrap().remove(0);
    assert_eq!(posted.seq, seq);
    let posted = posted.transaction;
    assert_eq!(
        (posted.provider.as_str(), posted.provider_tx_id.clone(), posted.kind, posted.account.as_str()),
        ("evo", format!("adjustment-{id}"), Kind::ManualAdjustment, "p1")
    );
    assert_eq!(
        (posted.amount, posted.currency, posted.occurred_at, posted.received_at),
        (dec("25.00"), usd(), approved_at, approved_at)
    );
    let adjustments = store.balances("adjustments:evo").await.unwrap();
    assert_eq!(adjustments.len(), 1);
    assert_eq!(adjustments[0].balance_minor, 2500);
    let report = store.verify().await.unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);

    let closed = breaks_by_key(&store).await.remove("A").unwrap();
    assert_eq!(closed.status, BreakStatus::Closed);
    assert_eq!(closed.closed_kind, Some(ClosedKind::Adjustment));
    assert_eq!(closed.closed_by.as_deref(), Some("bob"));
    assert_eq!(closed.closed_reason, Some(format!("adjusted by adjustment {id}")));
    assert_eq!(closed.closed_at, Some(approved_at));
    // Who, when and why.
    let adjustment_audit = audit_of(&store, AuditSubject::Adjustment(id)).await;
    assert_eq!(actions(&adjustment_audit), ["proposed", "approved"]);
    assert_eq!((adjustment_audit[0].actor.as_str(), adjustment_audit[0].at), ("alice", t));
    assert!(adjustment_audit[0].detail.contains("missing from the feed"), "{}", adjustment_audit[0].detail);
    assert_eq!((adjustment_audit[1].actor.as_str(), adjustment_audit[1].at), ("bob", approved_at));
    assert!(adjustment_audit[1].detail.contains(&format!("#{seq}")), "{}", adjustment_audit[1].detail);
    let break_audit = audit_of(&store, AuditSubject::Break(open.id)).await;
    assert_eq!(actions(&break_audit), ["opened", "adjustment_pending", "closed"]);
    assert_eq!(break_audit[2].actor, "bob");

    // Done once: no second approval, no proposal on the closed break.
    assert!(matches!(
        store.approve_adjustment(id, "carol", approved_at).await,
        Err(StoreError::AdjustmentNotPending { status: AdjustmentStatus::Approved, .. })
    ));
    assert!(matches!(
        store.propose_adjustment(open.id, &proposal("1.00"), "alice", approved_at).await,
        Err(StoreError::BreakNotOpen { status: BreakStatus::Closed, .. })
    ));
    // Our own correction is not the provider's: reconciliation does not see it.
    let entries = store
        .ledger_entries("evo", approved_at - Duration::hours(1), approved_at + Duration::hours(1), approved_at)
        .await
        .unwrap();
    assert!(entries.is_empty(), "{entries:?}");
    // A later run that still finds the difference leaves the adjusted break closed.
    let audit_before = store.audit_log(None, 0).await.unwrap();
    let later = store
        .record_run(
            "evo",
            &period(),
            &outcome(vec![found(BreakClass::MissingInLedger, "A", "25.00")]),
            approved_at + Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!((later.breaks_opened, later.breaks_reopened, later.breaks_closed), (0, 0, 0));
    assert_eq!(breaks_by_key(&store).await["A"].status, BreakStatus::Closed);
    assert_eq!(store.audit_log(None, 0).await.unwrap(), audit_before);
});

store_test!(a_rejected_adjustment_reopens_the_break, |store: Store| async move {
    let open = one_open_break(&store).await;
    let t = at("2026-11-25T09:00:00Z");
    let id = store.propose_adjustment(open.id, &proposal("-25.00"), "alice", t).await.unwrap();
    assert!(matches!(store.reject_adjustment(id, "bob", "", t).await, Err(StoreError::InvalidInput { .. })));
    store
        .reject_adjustment(id, "bob", "the processor confirms it never settled", t + Duration::minutes(5))
        .await
        .unwrap();
    let rejected = store.adjustment(id).await.unwrap().unwrap();
    assert_eq!(rejected.status, AdjustmentStatus::Rejected);
    assert_eq!(rejected.proposal.amount, dec("-25.00"));
    assert_eq!(rejected.decision_note.as_deref(), Some("the processor confirms it never settled"));
    assert_eq!(rejected.tx_seq, None);
    assert_eq!(breaks_by_key(&store).await["A"].status, BreakStatus::Open);
    let audit = audit_of(&store, AuditSubject::Adjustment(id)).await;
    assert_eq!(actions(&audit), ["proposed", "rejected"]);
    assert_eq!((audit[1].actor.as_str(), audit[1].detail.as_str()), ("bob", "the processor confirms it never settled"));
    assert_eq!(
        actions(&audit_of(&store, AuditSubject::Break(open.id)).await),
        ["opened", "adjustment_pending", "adjustment_rejected"]
    );
    assert!(matches!(
        store.approve_adjustment(id, "carol", t).await,
        Err(StoreError::AdjustmentNotPending { status: AdjustmentStatus::Rejected, .. })
    ));
    assert!(matches!(
        store.reject_adjustment(id, "carol", "again", t).await,
        Err(StoreError::AdjustmentNotPending { .. })
    ));
    // Nothing was posted; a new proposal may follow, and a negative one posts balanced too.
    assert_eq!(store.counts().await.unwrap().transactions, 1);
    let next = store.propose_adjustment(open.id, &proposal("-7.25"), "alice", t).await.unwrap();
    assert!(next > id);
    store.approve_adjustment(next, "carol", t + Duration::hours(1)).await.unwrap();
    assert_eq!(store.balances("adjustments:evo").await.unwrap()[0].balance_minor, -725);
    assert_eq!(store.balances("player:p1").await.unwrap()[0].balance_minor, 500 + 725);
    let report = store.verify().await.unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
});

store_test!(many_breaks_in_one_run, |store: Store| async move {
    // More breaks than one id list holds, so the chunked updates are exercised.
    const BREAKS: usize = 2_000;
    let all: Vec<Break> =
        (0..BREAKS).map(|index| found(BreakClass::MissingInLedger, &format!("K{index:05}"), "1.25")).collect();
    let started = std::time::Instant::now();
    let first = store.record_run("evo", &period(), &outcome(all.clone()), at("2026-11-25T06:00:00Z")).await.unwrap();
    let first_took = started.elapsed();
    assert_eq!(first.breaks_opened, BREAKS as u64);
    let started = std::time::Instant::now();
    let again_at = at("2026-11-25T07:00:00Z");
    let second = store.record_run("evo", &period(), &outcome(all.clone()), again_at).await.unwrap();
    let second_took = started.elapsed();
    eprintln!("{BREAKS} breaks: first run {first_took:?}, re-run {second_took:?}");
    assert_eq!((second.breaks_opened, second.breaks_closed, second.breaks_updated), (0, 0, 0));
    let mut seen = 0;
    let mut after_id = 0;
    loop {
        let page = store.breaks(&BreakFilter { after_id, ..BreakFilter::default() }).await.unwrap();
        let Some(last) = page.last() else { break };
        after_id = last.id;
        assert!(page.iter().all(|stored| stored.last_run == second.id && stored.last_seen_at == again_at));
        seen += page.len();
    }
    assert_eq!(seen, BREAKS);
    // Half of them go away.
    let third = store
        .record_run("evo", &period(), &outcome(all[..BREAKS / 2].to_vec()), at("2026-11-25T08:00:00Z"))
        .await
        .unwrap();
    assert_eq!(third.breaks_closed, (BREAKS / 2) as u64);
    let stats = store.open_break_stats().await.unwrap();
    assert_eq!(stats[0].open_count, (BREAKS / 2) as u64);
    assert_eq!(stats[0].open_difference[&usd()], dec("1.25") * Decimal::from(BREAKS / 2));
});

store_test!(runs_respect_a_pending_adjustment, |store: Store| async move {
    let open = one_open_break(&store).await;
    let t = at("2026-11-25T09:00:00Z");
    let id = store.propose_adjustment(open.id, &proposal("25.00"), "alice", t).await.unwrap();
    // Found again with the same figures: it stays with the people deciding on it.
    let run = store
        .record_run(
            "evo",
            &period(),
            &outcome(vec![found(BreakClass::MissingInLedger, "A", "25.00")]),
            t + Duration::minutes(30),
        )
        .await
        .unwrap();
    assert_eq!((run.breaks_closed, run.breaks_reopened, run.breaks_updated), (0, 0, 0));
    assert_eq!(breaks_by_key(&store).await["A"].status, BreakStatus::PendingAdjustment);
    assert_eq!(store.adjustment(id).await.unwrap().unwrap().status, AdjustmentStatus::Pending);
    // Found again with a new figure: approving the 25.00 proposal would post the old
    // difference and close the break over the remaining 1.00, so the proposal is withdrawn
    // and the break is open again for a proposal of the new difference.
    let changed_at = t + Duration::hours(1);
    let changed = Break { difference: dec("26.00"), ..found(BreakClass::MissingInLedger, "A", "25.00") };
    let run = store.record_run("evo", &period(), &outcome(vec![changed]), changed_at).await.unwrap();
    assert_eq!((run.breaks_closed, run.breaks_reopened, run.breaks_updated), (0, 0, 1));
    assert_eq!(breaks_by_key(&store).await["A"].status, BreakStatus::Open);
    let stale = store.adjustment(id).await.unwrap().unwrap();
    assert_eq!((stale.status, stale.decided_at), (AdjustmentStatus::Withdrawn, Some(changed_at)));
    assert!(matches!(
        store.approve_adjustment(id, "bob", changed_at).await,
        Err(StoreError::AdjustmentNotPending { status: AdjustmentStatus::Withdrawn, .. })
    ));
    let break_audit = audit_of(&store, AuditSubject::Break(open.id)).await;
    assert_eq!(actions(&break_audit), ["opened", "adjustment_pending", "updated", "adjustment_withdrawn"]);
    let id = store.propose_adjustment(open.id, &proposal("26.00"), "alice", changed_at).await.unwrap();
    // Then it resolves itself: the break closes by the rule and the proposal is withdrawn,
    // so no one can approve a correction of a difference that no longer exists.
    let gone_at = t + Duration::hours(2);
    let run = store.record_run("evo", &period(), &outcome(Vec::new()), gone_at).await.unwrap();
    assert_eq!(run.breaks_closed, 1);
    let closed = breaks_by_key(&store).await.remove("A").unwrap();
    assert_eq!((closed.status, closed.closed_by.as_deref()), (BreakStatus::Closed, Some("resolved_on_recheck")));
    let withdrawn = store.adjustment(id).await.unwrap().unwrap();
    assert_eq!(withdrawn.status, AdjustmentStatus::Withdrawn);
    assert_eq!(withdrawn.decided_at, Some(gone_at));
    assert_eq!(actions(&audit_of(&store, AuditSubject::Adjustment(id)).await), ["proposed", "withdrawn"]);
    assert!(matches!(
        store.approve_adjustment(id, "bob", gone_at).await,
        Err(StoreError::AdjustmentNotPending { status: AdjustmentStatus::Withdrawn, .. })
    ));
    assert_eq!(store.counts().await.unwrap().transactions, 1);
    // It comes back: reopened, and a new proposal may be made.
    store
        .record_run(
            "evo",
            &period(),
            &outcome(vec![found(BreakClass::MissingInLedger, "A", "25.00")]),
            gone_at + Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(breaks_by_key(&store).await["A"].status, BreakStatus::Open);
    store.propose_adjustment(open.id, &proposal("25.00"), "alice", gone_at).await.unwrap();
});

store_test!(bad_outcomes_are_refused_whole, |store: Store| async move {
    let twice = outcome(vec![found(BreakClass::MissingInLedger, "A", "1.00"), found(BreakClass::Timing, "A", "1.00")]);
    let error = store.record_run("evo", &period(), &twice, at("2026-11-25T06:00:00Z")).await.unwrap_err();
    assert!(matches!(&error, StoreError::InvalidInput { what, .. } if what.contains("\"A\"")), "{error:?}");
    let too_fine = outcome(vec![found(BreakClass::MissingInLedger, "B", "0.000000001")]);
    let error = store.record_run("evo", &period(), &too_fine, at("2026-11-25T06:00:00Z")).await.unwrap_err();
    assert!(matches!(&error, StoreError::InvalidInput { what, .. } if what.contains("\"B\"")), "{error:?}");
    assert_eq!(store.last_successful_run("evo").await.unwrap(), None, "nothing of a refused run is stored");
    assert!(store.breaks(&BreakFilter::default()).await.unwrap().is_empty());
});

// A run compares the lines of the statements in its configured format only: a camt.053
// statement loaded for the same day does not add its lines to a listing run.
store_test!(a_run_reads_the_lines_of_its_own_format, |store: Store| async move {
    use settlement::reconcile::run::{reconcile_day, DayRequest};
    use settlement::reconcile::ReconRules;
    store.save_statement(&listing(), at("2026-11-25T01:00:00Z")).await.unwrap();
    store.save_statement(&camt(), at("2026-11-25T01:00:00Z")).await.unwrap();
    let rules = ReconRules::default();
    for (format, own, other) in [(StatementFormat::Listing, "T1", "T9"), (StatementFormat::Camt053, "T9", "T1")] {
        let request = DayRequest {
            provider: "evo",
            timezone: chrono_tz::UTC,
            format,
            rules: &rules,
            business_date: day("2026-11-24"),
            as_of: at("2026-11-25T06:00:00Z"),
            now: at("2026-11-25T06:00:00Z"),
        };
        let report = reconcile_day(&store, &request).await.unwrap();
        let ids: Vec<Option<&str>> =
            report.outcome.breaks.iter().map(|found| found.provider_tx_id.as_deref()).collect();
        assert!(ids.contains(&Some(own)), "{format}: {ids:?}");
        assert!(!ids.contains(&Some(other)), "{format} run took the other statement's line: {ids:?}");
    }
});
