//! Golden tests of statement intake (`reconcile::intake`), and the properties every
//! statement adapter must have.
//!
//! Cases live in `tests/golden/statements/<format>/<case>.{csv,xml}`, decoded with
//! `<case>.toml` or the directory's `config.toml` (a full settlewatch configuration with
//! one provider, whose `[providers.reconciliation]` selects the format). The expected
//! statement, or the expected refusal, is in `<case>.expected`;
//! `UPDATE_GOLDEN=1 cargo test -p settlement --test statements` rewrites them (review the
//! diff by hand). A new case is a new file, not new code.
//!
//! Every case is also decoded from memory and from a file (same result), and every accepted
//! totals or listing statement is written back with `intake::{totals,listing}::write` and
//! decoded again to the same content. Random bytes, and random damage to every golden case,
//! never make an adapter panic.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use settlement::adapters::{BytesSource, FileSource};
use settlement::config::{Config, Provider};
use settlement::model::{sha256, Kind};
use settlement::money::{Currencies, CurrencyCode};
use settlement::reconcile::intake::{self, StatementAdapter, StatementContext, StatementError};
use settlement::reconcile::{ProviderStatement, StatementFormat, StatementLine, TotalsLine};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/statements")
}

/// The provider and its statement adapter, from a test configuration.
fn setup(config_text: &str) -> (Provider, Box<dyn StatementAdapter>, StatementContext) {
    let config = Config::parse(config_text).unwrap_or_else(|error| panic!("test config: {error}"));
    assert_eq!(config.providers.len(), 1, "a test config has exactly one provider");
    let reconciliation = config.providers[0].reconciliation.clone();
    let provider = config.providers().unwrap_or_else(|error| panic!("test config: {error}")).remove(0);
    let adapter = intake::adapter_for(&provider, &reconciliation).unwrap_or_else(|error| panic!("adapter: {error}"));
    let context = StatementContext::new(&provider, &reconciliation).unwrap();
    (provider, adapter, context)
}

fn option(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("-")
}

/// The statement as text: every field that matters, one line per statement line.
fn render_statement(statement: &ProviderStatement) -> String {
    let mut out = format!(
        "statement provider={} format={} id={} from={} to={}\n",
        statement.provider,
        statement.format,
        option(&statement.statement_id),
        statement.from_date,
        statement.to_date
    );
    for total in &statement.totals {
        let _ = writeln!(
            out,
            "total record={} {} {} {} count={} amount={}",
            total.record, total.business_date, total.currency, total.kind, total.count, total.amount
        );
    }
    for line in &statement.lines {
        let _ = writeln!(
            out,
            "line record={}.{} id={} ref={} {} {} {} booked={} occurred={}",
            line.record,
            line.detail,
            option(&line.provider_tx_id),
            option(&line.reference),
            line.kind.map_or("-", Kind::as_str),
            line.currency,
            line.amount,
            line.business_date,
            line.occurred_at.map_or("-".to_string(), |at| at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        );
    }
    for balance in &statement.balances {
        let _ = writeln!(out, "balance {} opening={} closing={}", balance.currency, balance.opening, balance.closing);
    }
    out
}

fn render_error(error: &StatementError) -> String {
    let variant = match error {
        StatementError::Io { .. } => "io",
        StatementError::Invalid { .. } => "invalid",
        StatementError::Integrity { .. } => "integrity",
        StatementError::TooLarge { .. } => "too_large",
    };
    format!("refused {variant}: {error}\n")
}

fn render(result: &Result<ProviderStatement, StatementError>) -> String {
    match result {
        Ok(statement) => render_statement(statement),
        Err(error) => render_error(error),
    }
}

/// Compares `actual` with the expected file, or rewrites it under `UPDATE_GOLDEN=1`.
fn expect(path: &Path, actual: &str) -> Result<(), String> {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected == actual {
        Ok(())
    } else {
        Err(format!("{}:\n--- expected\n{expected}--- actual\n{actual}", path.display()))
    }
}

/// Decodes `case` from a file and from memory (they must agree), checks the checksum of an
/// accepted statement, and compares with `<case>.expected`.
fn check(adapter: &dyn StatementAdapter, case: &Path) -> Result<Result<ProviderStatement, StatementError>, String> {
    let name = case.file_name().unwrap().to_string_lossy().into_owned();
    let bytes = std::fs::read(case).unwrap();
    let from_file = adapter.decode(&FileSource::open(name.clone(), case).unwrap());
    let from_memory = adapter.decode(&BytesSource { name: name.clone(), bytes: bytes.clone() });
    let rendered = render(&from_file);
    if rendered != render(&from_memory) {
        return Err(format!("{name}: file and memory decodes differ:\n{rendered}\n{}", render(&from_memory)));
    }
    if let Ok(statement) = &from_file {
        if statement.sha256 != sha256(&bytes) {
            return Err(format!("{name}: sha256 is not over the exact bytes"));
        }
        if statement.source != name || statement.format != adapter.format() {
            return Err(format!("{name}: source or format not recorded"));
        }
    }
    expect(&case.with_extension("expected"), &rendered)?;
    Ok(from_file)
}

/// Strips what a write → decode round trip cannot keep (line positions).
fn content(statement: &ProviderStatement) -> ProviderStatement {
    let mut statement = statement.clone();
    statement.source = String::new();
    statement.sha256 = [0; 32];
    statement.lines.iter_mut().for_each(|line| line.record = 0);
    statement.totals.iter_mut().for_each(|total| total.record = 0);
    statement
}

fn round_trip(
    provider: &Provider,
    adapter: &dyn StatementAdapter,
    statement: &ProviderStatement,
) -> Result<(), String> {
    let mut bytes = Vec::new();
    match statement.format {
        StatementFormat::Totals => intake::totals::write(
            &provider.name,
            provider.timezone.name(),
            &statement.totals,
            &provider.currencies,
            &mut bytes,
        ),
        StatementFormat::Listing => {
            intake::listing::write(&statement.lines, statement.from_date, statement.to_date, &mut bytes)
        }
        StatementFormat::Camt053 => return Ok(()),
    }
    .map_err(|error| format!("write: {error}"))?;
    let again = adapter
        .decode(&BytesSource { name: "rewritten".into(), bytes: bytes.clone() })
        .map_err(|error| format!("decoding the rewritten statement: {error}\n{}", String::from_utf8_lossy(&bytes)))?;
    if content(&again) != content(statement) {
        return Err(format!(
            "round trip changed the statement:\n{}\n{}",
            render_statement(statement),
            render_statement(&again)
        ));
    }
    Ok(())
}

fn run_format(format: StatementFormat) {
    let directory = golden().join(format.as_str());
    let shared = std::fs::read_to_string(directory.join("config.toml")).unwrap();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| matches!(path.extension().and_then(|e| e.to_str()), Some("csv" | "xml")))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "{}: the golden cases are missing", directory.display());
    let mut failures = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for case in &cases {
        let own = case.with_extension("toml");
        let config = if own.exists() { std::fs::read_to_string(own).unwrap() } else { shared.clone() };
        let (provider, adapter, _) = setup(&config);
        assert_eq!(adapter.format(), format);
        match check(adapter.as_ref(), case) {
            Ok(Ok(statement)) => {
                accepted += 1;
                if let Err(failure) = round_trip(&provider, adapter.as_ref(), &statement) {
                    failures.push(format!("{}: {failure}", case.display()));
                }
            }
            Ok(Err(_)) => refused += 1,
            Err(failure) => failures.push(failure),
        }
    }
    assert!(failures.is_empty(), "{} golden failures:\n{}", failures.len(), failures.join("\n"));
    assert!(accepted >= 2 && refused >= 8, "{format}: {accepted} accepted, {refused} refused: too few of either");
    let expected_files = std::fs::read_dir(&directory)
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().path().extension().is_some_and(|e| e == "expected"))
        .count();
    assert_eq!(expected_files, cases.len(), "{}: an .expected file without its case", directory.display());
}

#[test]
fn golden_totals() {
    run_format(StatementFormat::Totals);
}

#[test]
fn golden_listing() {
    run_format(StatementFormat::Listing);
}

#[test]
fn golden_camt053() {
    run_format(StatementFormat::Camt053);
}

fn config_of(format: StatementFormat) -> String {
    std::fs::read_to_string(golden().join(format.as_str()).join("config.toml")).unwrap()
}

fn decode(adapter: &dyn StatementAdapter, bytes: Vec<u8>) -> Result<ProviderStatement, StatementError> {
    adapter.decode(&BytesSource { name: "input".into(), bytes })
}

#[test]
fn the_camt053_batch_entry_becomes_one_line_per_transaction_detail() {
    let (_, adapter, _) = setup(&config_of(StatementFormat::Camt053));
    let bytes = std::fs::read(golden().join("camt053/statement.xml")).unwrap();
    let statement = decode(adapter.as_ref(), bytes).unwrap();
    let batch: Vec<&StatementLine> = statement.lines.iter().filter(|line| line.record == 3).collect();
    assert_eq!(batch.iter().map(|line| line.detail).collect::<Vec<_>>(), [1, 2, 3]);
    let sum: Decimal = batch.iter().map(|line| line.amount).sum();
    assert_eq!(sum, Decimal::from_str("600.00").unwrap());
    assert!(batch.iter().all(|line| line.kind == Some(Kind::Deposit)));
    assert_eq!(batch[0].reference.as_deref(), Some("BANKREF-0003-1"));
    assert_eq!(batch[1].reference.as_deref(), Some("BANKREF-0003"));
    assert_eq!(batch[2].provider_tx_id, None, "NOTPROVIDED is no id");
    assert_eq!(statement.statement_id.as_deref(), Some("STMT-20261124-EUR"));
}

#[test]
fn long_csv_lines_are_refused_with_their_line_number() {
    for format in [StatementFormat::Totals, StatementFormat::Listing] {
        let (_, adapter, _) = setup(&config_of(format));
        let header = match format {
            StatementFormat::Totals => intake::totals::HEADER,
            _ => intake::listing::HEADER,
        };
        let mut bytes = format!("{header}\n").into_bytes();
        bytes.extend(std::iter::repeat_n(b'x', 10 * intake::STATEMENT_LINE_BYTES_MAX));
        match decode(adapter.as_ref(), bytes) {
            Err(StatementError::Invalid { line: 2, message, .. }) => {
                assert!(message.contains("longer than"), "{message}")
            }
            other => panic!("{format}: {other:?}"),
        }
    }
}

#[test]
fn camt053_nesting_and_text_are_bounded() {
    let (_, adapter, _) = setup(&config_of(StatementFormat::Camt053));
    let open = "<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:camt.053.001.02\"><BkToCstmrStmt><Stmt>";
    let deep = format!("{open}{}", "<X>".repeat(100_000));
    assert!(matches!(decode(adapter.as_ref(), deep.into_bytes()), Err(StatementError::TooLarge { .. })));
    let long = format!("{open}<Id>{}</Id>", "i".repeat(10 * intake::camt053::ELEMENT_TEXT_BYTES_MAX));
    assert!(matches!(decode(adapter.as_ref(), long.into_bytes()), Err(StatementError::TooLarge { .. })));
}

#[test]
fn a_misconfigured_reconciliation_gives_no_adapter() {
    let text = config_of(StatementFormat::Camt053).replace("credit_kind = \"deposit\"", "credit_kind = \"payout\"");
    assert!(Config::parse(&text).is_err(), "the configuration itself refuses an unknown kind");
    let (provider, _, _) = setup(&config_of(StatementFormat::Camt053));
    let reconciliation = settlement::config::ReconciliationConfig {
        statement: "mt940".into(),
        ..settlement::config::ReconciliationConfig::default()
    };
    let error = intake::adapter_for(&provider, &reconciliation).err().expect("mt940 is no statement format");
    assert!(error.to_string().contains("mt940"), "{error}");
}

fn usd() -> CurrencyCode {
    CurrencyCode::parse("USD").unwrap()
}

/// A listing line from generated parts.
fn listing_line(
    id: String,
    kind: Kind,
    currency: &str,
    minor: i64,
    day: u32,
    second: u32,
    reference: Option<String>,
) -> StatementLine {
    let currencies = Currencies::iso();
    let (currency, exponent) = currencies.lookup(currency).unwrap();
    let minor = if kind == Kind::ManualAdjustment { minor } else { minor.abs() };
    StatementLine {
        record: 0,
        detail: 0,
        provider_tx_id: Some(id),
        reference,
        kind: Some(kind),
        currency,
        amount: settlement::money::from_minor(minor, exponent),
        business_date: NaiveDate::from_ymd_opt(2026, 11, day).unwrap(),
        occurred_at: Some(
            Utc.with_ymd_and_hms(2026, 11, day, 0, 0, 0).unwrap() + chrono::Duration::seconds(second.into()),
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any listing we write decodes to the same lines, with its trailer checked.
    #[test]
    fn listing_write_then_decode_is_identity(
        rows in proptest::collection::vec(
            (
                "[a-z0-9,\"# -]{1,20}",
                proptest::sample::select(Kind::ALL.to_vec()),
                proptest::sample::select(vec!["USD", "KRW", "BHD"]),
                -10_000_000_000i64..10_000_000_000,
                20u32..25,
                0u32..86_400,
                proptest::option::of("[A-Za-z0-9,\"]{1,12}"),
            ),
            0..40,
        )
    ) {
        let (_, adapter, _) = setup(&config_of(StatementFormat::Listing));
        let lines: Vec<StatementLine> = rows
            .into_iter()
            .map(|(id, kind, currency, minor, day, second, reference)| listing_line(id, kind, currency, minor, day, second, reference))
            .filter(|line| line.provider_tx_id.as_deref().is_some_and(|id| id.trim() == id && !id.is_empty()))
            .collect();
        let from = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let to = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        let mut bytes = Vec::new();
        intake::listing::write(&lines, from, to, &mut bytes).unwrap();
        let statement = decode(adapter.as_ref(), bytes.clone())
            .map_err(|error| TestCaseError::fail(format!("{error}\n{}", String::from_utf8_lossy(&bytes))))?;
        prop_assert_eq!((statement.from_date, statement.to_date), (from, to));
        let decoded: Vec<StatementLine> = statement.lines.into_iter().map(|line| StatementLine { record: 0, ..line }).collect();
        prop_assert_eq!(decoded, lines);
    }

    /// Any totals we write decode to the same rows.
    #[test]
    fn totals_write_then_decode_is_identity(
        rows in proptest::collection::btree_map(
            (20u32..25, proptest::sample::select(vec!["USD", "KRW", "EUR"]), proptest::sample::select(Kind::ALL.to_vec())),
            (1u64..1_000_000, -1_000_000_000_000i64..1_000_000_000_000),
            1..30,
        )
    ) {
        let (provider, adapter, _) = setup(&config_of(StatementFormat::Totals));
        let totals: Vec<TotalsLine> = rows
            .into_iter()
            .map(|((day, currency, kind), (count, minor))| {
                let (currency, exponent) = provider.currencies.lookup(currency).unwrap();
                TotalsLine {
                    record: 0,
                    business_date: NaiveDate::from_ymd_opt(2026, 11, day).unwrap(),
                    currency,
                    kind,
                    count,
                    amount: settlement::money::from_minor(minor, exponent),
                }
            })
            .collect();
        let mut bytes = Vec::new();
        intake::totals::write(&provider.name, provider.timezone.name(), &totals, &provider.currencies, &mut bytes).unwrap();
        let statement = decode(adapter.as_ref(), bytes).map_err(|error| TestCaseError::fail(error.to_string()))?;
        let decoded: Vec<TotalsLine> = statement.totals.into_iter().map(|row| TotalsLine { record: 0, ..row }).collect();
        prop_assert_eq!(decoded, totals);
    }

    /// No bytes make any statement adapter panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        for format in StatementFormat::ALL {
            let (_, adapter, _) = setup(&config_of(format));
            let _ = decode(adapter.as_ref(), bytes.clone());
        }
    }

    /// Damaged golden cases (a byte changed, a cut, a splice) never make an adapter panic,
    /// and a damaged statement that is still accepted carries the checksum of its bytes.
    #[test]
    fn damaged_golden_cases_never_panic(
        case_pick in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut cases = Vec::new();
        for format in StatementFormat::ALL {
            let directory = golden().join(format.as_str());
            for entry in std::fs::read_dir(&directory).unwrap() {
                let path = entry.unwrap().path();
                if matches!(path.extension().and_then(|e| e.to_str()), Some("csv" | "xml")) {
                    cases.push((format, path));
                }
            }
        }
        cases.sort();
        let (format, path) = &cases[case_pick.index(cases.len())];
        let mut bytes = std::fs::read(path).unwrap();
        for (at, byte, how) in edits {
            if bytes.is_empty() {
                break;
            }
            let at = at.index(bytes.len());
            match how {
                0 => bytes[at] = byte,
                1 => bytes.truncate(at),
                _ => bytes.insert(at, byte),
            }
        }
        let (_, adapter, _) = setup(&config_of(*format));
        if let Ok(statement) = decode(adapter.as_ref(), bytes.clone()) {
            prop_assert_eq!(statement.sha256, sha256(&bytes));
        }
    }
}

#[test]
fn listing_amounts_keep_their_currency_scale() {
    let (_, adapter, _) = setup(&config_of(StatementFormat::Listing));
    let line = listing_line("a".into(), Kind::Deposit, "USD", 1050, 24, 0, None);
    let mut bytes = Vec::new();
    intake::listing::write(std::slice::from_ref(&line), line.business_date, line.business_date, &mut bytes).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains(",USD,10.50,"), "{text}");
    assert!(text.ends_with("#trailer,count=1,from=2026-11-24,to=2026-11-24,USD=10.50\n"), "{text}");
    let statement = decode(adapter.as_ref(), bytes).unwrap();
    assert_eq!(statement.lines[0].currency, usd());
    assert_eq!(
        statement.lines[0].occurred_at,
        Some(DateTime::parse_from_rfc3339("2026-11-24T00:00:00Z").unwrap().to_utc())
    );
}

/// The simulator's end-of-day statements are totals statements: each decodes through the
/// totals adapter of its provider's written configuration, and writing the decoded rows
/// back gives the simulator's bytes exactly.
#[test]
fn simulated_statements_decode_and_write_back_byte_for_byte() {
    use settlement::simulate::{simulate, RunOptions, SimConfig};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let options = RunOptions { seed: 11, duration_seconds: 2 * 86_400, rate_per_second: 0.5, out: out.clone() };
    simulate(&SimConfig::parse("").unwrap(), &options).unwrap();
    let config = Config::load(&out.join("settlewatch.toml")).unwrap();
    let providers = config.providers().unwrap();
    let mut decoded = 0;
    for (provider, provider_config) in providers.iter().zip(&config.providers) {
        let adapter = intake::adapter_for(provider, &provider_config.reconciliation).unwrap();
        assert_eq!(adapter.format(), StatementFormat::Totals);
        let Ok(entries) = std::fs::read_dir(out.join(&provider.name)) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.starts_with("statement-") {
                continue;
            }
            let statement = adapter
                .decode(&FileSource::open(name.clone(), &path).unwrap())
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            let date = NaiveDate::parse_from_str(&name["statement-".len()..name.len() - 4], "%Y-%m-%d").unwrap();
            assert_eq!((statement.from_date, statement.to_date), (date, date));
            let mut bytes = Vec::new();
            intake::totals::write(
                &provider.name,
                provider.timezone.name(),
                &statement.totals,
                &provider.currencies,
                &mut bytes,
            )
            .unwrap();
            assert_eq!(
                String::from_utf8(bytes).unwrap(),
                std::fs::read_to_string(&path).unwrap(),
                "{}",
                path.display()
            );
            decoded += 1;
        }
    }
    assert!(decoded >= 4, "only {decoded} statements were written");
}
