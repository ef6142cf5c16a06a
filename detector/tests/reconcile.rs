//! Reconciliation end to end on the real binary: a simulated day is ingested, every
//! provider's statements are loaded, and `settlewatch reconcile` must find exactly what the
//! simulator injected (each statement mismatch as `totals_differ` with its exact delta, each
//! outage backlog as a late-delivery `timing` break closed by rule) and nothing else. Then
//! re-runs, duplicate loads, the ledger as of an earlier instant, maker-checker adjustments,
//! the CSV export and the metrics exposition.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::run_in;
use rust_decimal::Decimal;
use serde_json::Value;

fn rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).expect("a CSV file");
    let header: Vec<String> = reader.headers().expect("a header").iter().map(str::to_string).collect();
    reader
        .records()
        .map(|record| header.iter().cloned().zip(record.expect("a record").iter().map(str::to_string)).collect())
        .collect()
}

struct Sim<'a> {
    dir: &'a Path,
    url: String,
}

impl Sim<'_> {
    fn run(&self, args: &[&str]) -> common::Run {
        let mut all = vec!["--config", "sim/settlewatch.toml", "--database-url", &self.url];
        all.extend_from_slice(args);
        run_in(self.dir, &all)
    }

    fn json(&self, args: &[&str]) -> Value {
        let run = self.run(args).expect(0);
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|error| panic!("{args:?}: not JSON ({error}):\n{}", run.stdout))
    }
}

fn decimal(value: &Value) -> Decimal {
    value.as_str().expect("a decimal string").parse().expect("a decimal")
}

#[test]
fn a_simulated_day_reconciles_to_exactly_the_injected_differences() {
    let temp = tempfile::tempdir().expect("a temp dir");
    let dir = temp.path();
    run_in(dir, &["simulate", "--seed", "7", "--duration", "24h", "--rate", "1/s", "--out", "sim"]).expect(0);
    let sim = Sim { dir, url: format!("sqlite:{}", dir.join("ledger.db").display()) };
    sim.run(&["ingest", "--manifest", "sim/manifest.csv"]).expect(0);

    // Every provider's statements load once; a second load is refused, naming the first.
    let mut days = BTreeSet::new();
    for provider in ["spinhub", "livedealer", "kickoff", "paynow-kr", "cardpay", "globalwire"] {
        let mut files: Vec<String> = std::fs::read_dir(dir.join("sim").join(provider))
            .expect("the provider's directory")
            .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("statement-"))
            .map(|name| {
                days.insert(name["statement-".len()..name.len() - ".csv".len()].to_string());
                format!("sim/{provider}/{name}")
            })
            .collect();
        files.sort();
        let mut args = vec!["statement", "load", "--provider", provider];
        args.extend(files.iter().map(String::as_str));
        let loaded = sim.run(&args).expect(0);
        assert_eq!(loaded.stdout.matches("statement #").count(), files.len(), "{}", loaded.stdout);
        let again = sim.run(&["statement", "load", "--provider", provider, &files[0]]).expect(1);
        assert!(again.stderr.contains("was loaded before"), "{}", again.stderr);
    }

    // The outage backlog, seen from before it arrived: the ledger as of then lacks it.
    let outages: Vec<BTreeMap<String, String>> =
        rows(&dir.join("sim/episodes.csv")).into_iter().filter(|row| row["scenario"] == "provider_outage").collect();
    assert_eq!(outages.len(), 1, "seed 7 has one outage in its first day: {outages:?}");
    let outage = &outages[0];
    let outage_provider = outage["provider"].as_str();
    let outage_end: chrono::DateTime<chrono::Utc> = outage["end"].parse().expect("an end time");
    let outage_day = outage["start"][..10].to_string();
    let before = (outage_end - chrono::Duration::minutes(1)).to_rfc3339();
    let early =
        sim.json(&["reconcile", "--provider", outage_provider, "--period", &outage_day, "--as-of", &before, "--json"]);
    let early_breaks = early["reports"][0]["breaks"].as_array().expect("breaks");
    let missing: Vec<&Value> =
        early_breaks.iter().filter(|found| found["found"]["class"] == "missing_in_ledger").collect();
    assert!(!missing.is_empty(), "as of {before} the backlog is not in the ledger: {early_breaks:#?}");
    assert!(missing.iter().all(|found| found["status"] == "open"));

    // Now, with everything delivered: only the injected differences.
    let mut reports = Vec::new();
    for day in &days {
        let report = sim.json(&["reconcile", "--period", day, "--json"]);
        reports.extend(report["reports"].as_array().expect("reports").iter().cloned());
    }
    let mut open = Vec::new();
    let mut late = BTreeSet::new();
    for report in &reports {
        for stored in report["breaks"].as_array().expect("breaks") {
            let found = &stored["found"];
            match (stored["status"].as_str(), found["class"].as_str()) {
                (Some("open"), _) => open.push(stored.clone()),
                (Some("closed"), Some("timing")) if found["auto_closed_by"] == "late_arrival" => {
                    late.insert(stored["provider"].as_str().expect("a provider").to_string());
                }
                (Some("closed"), Some("missing_in_ledger")) => {
                    assert_eq!(stored["provider"], outage_provider);
                    assert_eq!(stored["closed_by"], "resolved_on_recheck", "{stored:#}");
                }
                other => panic!("unexpected break {other:?}: {stored:#}"),
            }
        }
    }
    assert_eq!(late, BTreeSet::from([outage_provider.to_string()]), "late deliveries are the outage's only");
    let mismatches = rows(&dir.join("sim/statement_mismatches.csv"));
    assert!(!mismatches.is_empty());
    assert_eq!(open.len(), mismatches.len(), "open breaks are the injected mismatches only: {open:#?}");
    for mismatch in &mismatches {
        let stored = open
            .iter()
            .find(|stored| {
                stored["provider"] == mismatch["provider"].as_str()
                    && stored["business_date"] == mismatch["business_date"].as_str()
                    && stored["found"]["currency"] == mismatch["currency"].as_str()
                    && stored["found"]["kind"] == mismatch["kind"].as_str()
            })
            .unwrap_or_else(|| panic!("mismatch {mismatch:?} not found in {open:#?}"));
        assert_eq!(stored["found"]["class"], "totals_differ");
        let difference = decimal(&stored["found"]["difference"]);
        let delta_minor: i64 = mismatch["delta_minor"].parse().expect("a delta");
        assert_eq!(difference.mantissa(), i128::from(delta_minor), "{mismatch:?} vs {stored:#}");
    }

    // Re-running changes nothing.
    let day = mismatches[0]["business_date"].clone();
    let first = sim.json(&["reconcile", "--period", &day, "--json"]);
    let second = sim.json(&["reconcile", "--period", &day, "--json"]);
    for (a, b) in first["reports"].as_array().unwrap().iter().zip(second["reports"].as_array().unwrap()) {
        assert_eq!(b["breaks_opened"], 0);
        assert_eq!(b["breaks_closed"], 0);
        assert_eq!(b["breaks_reopened"], 0);
        assert_eq!(b["breaks_updated"], 0);
        let strip = |report: &Value| -> Vec<(Value, Value, Value)> {
            report["breaks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|found| (found["id"].clone(), found["status"].clone(), found["found"].clone()))
                .collect()
        };
        assert_eq!(strip(a), strip(b));
    }

    // The finance export and the metrics carry the same figures.
    sim.run(&["reconcile", "--period", &day, "--csv", "report.csv"]).expect(0);
    let exported = rows(&dir.join("report.csv"));
    let open_today = open.iter().filter(|stored| stored["business_date"] == day.as_str()).count();
    let exported_open = exported.iter().filter(|row| row["record"] == "break" && row["status"] == "open").count();
    assert_eq!(exported_open, open_today);
    assert!(exported.iter().any(|row| row["record"] == "total"));
    let metrics = sim.run(&["metrics"]).expect(0).stdout;
    let provider = mismatches[0]["provider"].as_str();
    let line = format!("settlewatch_reconciliation_breaks{{class=\"totals_differ\",provider=\"{provider}\"}} ");
    let value: f64 = metrics
        .lines()
        .find_map(|text| text.strip_prefix(line.as_str()))
        .unwrap_or_else(|| panic!("{line} not in\n{metrics}"))
        .parse()
        .expect("a sample");
    let expected = mismatches.iter().filter(|mismatch| mismatch["provider"] == provider).count() as f64;
    assert_eq!(value, expected);
    assert!(metrics.contains("# TYPE settlewatch_reconciliation_last_success_timestamp_seconds gauge"));
    assert!(metrics
        .contains(&format!("settlewatch_reconciliation_last_success_timestamp_seconds{{provider=\"{provider}\"}}")));

    // Maker-checker: the proposer cannot approve; another person posts it to the ledger.
    let target = &open[0];
    let break_id = target["id"].to_string();
    let currency = target["found"]["currency"].as_str().expect("a currency");
    let amount = decimal(&target["found"]["difference"]).to_string();
    let proposed = sim
        .run(&[
            "adjust",
            "propose",
            "--break",
            &break_id,
            "--amount",
            &amount,
            "--currency",
            currency,
            "--account",
            "operator-correction",
            "--reason",
            "provider confirmed its total is wrong; book the difference",
            "--by",
            "alice",
        ])
        .expect(0);
    let adjustment_id = proposed
        .stdout
        .split_whitespace()
        .find_map(|word| word.strip_prefix('#'))
        .expect("an adjustment id")
        .to_string();
    let refused = sim.run(&["adjust", "approve", &adjustment_id, "--by", "Alice"]).expect(1);
    assert!(refused.stderr.contains("cannot approve"), "{}", refused.stderr);
    let approved = sim.run(&["adjust", "approve", &adjustment_id, "--by", "bob"]).expect(0);
    assert!(approved.stdout.contains("posted"), "{}", approved.stdout);
    sim.run(&["verify"]).expect(0);
    let still_open = sim.json(&["breaks", "--status", "open", "--json"]);
    assert_eq!(still_open.as_array().expect("breaks").len(), open.len() - 1);
    let closed = sim.json(&["breaks", "--status", "closed", "--class", "totals_differ", "--json"]);
    assert_eq!(closed[0]["closed_by"], "bob");
}

/// A processor's camt.053 bank statement for examples/payfast/2026-11-24.csv: the deposit of
/// PF-…-002 is stated 0.50 USD higher, one credit of 77,000 KRW has no ledger transaction, and
/// the chargeback PF-…-005 is not on it.
const PAYFAST_CAMT053: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">
  <BkToCstmrStmt>
    <GrpHdr><MsgId>PF-MSG-20261124</MsgId><CreDtTm>2026-11-25T06:00:00+09:00</CreDtTm></GrpHdr>
    <Stmt>
      <Id>PF-20261124-KRW</Id>
      <CreDtTm>2026-11-25T06:00:00+09:00</CreDtTm>
      <FrToDt><FrDtTm>2026-11-24T00:00:00+09:00</FrDtTm><ToDtTm>2026-11-24T23:59:59+09:00</ToDtTm></FrToDt>
      <Acct><Id><Othr><Id>PAYFAST-KRW-01</Id></Othr></Id><Ccy>KRW</Ccy></Acct>
      <Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="KRW">0</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-11-24</Dt></Dt></Bal>
      <Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="KRW">1272500</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-11-24</Dt></Dt></Bal>
      <TxsSummry><TtlNtries><NbOfNtries>4</NbOfNtries><Sum>1881500</Sum></TtlNtries></TxsSummry>
      <Ntry>
        <Amt Ccy="KRW">1500000</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>
        <BookgDt><Dt>2026-11-24</Dt></BookgDt><AcctSvcrRef>PFB-1</AcctSvcrRef>
        <NtryDtls><TxDtls><Refs><EndToEndId>PF-20261124-001</EndToEndId></Refs></TxDtls></NtryDtls>
      </Ntry>
      <Ntry>
        <Amt Ccy="KRW">300000</Amt><CdtDbtInd>DBIT</CdtDbtInd><Sts>BOOK</Sts>
        <BookgDt><Dt>2026-11-24</Dt></BookgDt><AcctSvcrRef>PFB-2</AcctSvcrRef>
        <NtryDtls><TxDtls><Refs><EndToEndId>PF-20261124-003</EndToEndId></Refs></TxDtls></NtryDtls>
      </Ntry>
      <Ntry>
        <Amt Ccy="KRW">4500</Amt><CdtDbtInd>DBIT</CdtDbtInd><Sts>BOOK</Sts>
        <BookgDt><Dt>2026-11-24</Dt></BookgDt><AcctSvcrRef>PFB-3</AcctSvcrRef>
        <NtryDtls><TxDtls><Refs><EndToEndId>PF-20261124-004</EndToEndId></Refs></TxDtls></NtryDtls>
      </Ntry>
      <Ntry>
        <Amt Ccy="KRW">77000</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>
        <BookgDt><Dt>2026-11-24</Dt></BookgDt><AcctSvcrRef>PFB-4</AcctSvcrRef>
      </Ntry>
    </Stmt>
    <Stmt>
      <Id>PF-20261124-USD</Id>
      <CreDtTm>2026-11-25T06:00:00+09:00</CreDtTm>
      <FrToDt><FrDtTm>2026-11-24T00:00:00+09:00</FrDtTm><ToDtTm>2026-11-24T23:59:59+09:00</ToDtTm></FrToDt>
      <Acct><Id><Othr><Id>PAYFAST-USD-01</Id></Othr></Id><Ccy>USD</Ccy></Acct>
      <Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="USD">1000.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-11-24</Dt></Dt></Bal>
      <Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="USD">1250.50</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-11-24</Dt></Dt></Bal>
      <Ntry>
        <Amt Ccy="USD">250.50</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>
        <BookgDt><Dt>2026-11-24</Dt></BookgDt><AcctSvcrRef>PFB-5</AcctSvcrRef>
        <NtryDtls><TxDtls><Refs><EndToEndId>PF-20261124-002</EndToEndId></Refs></TxDtls></NtryDtls>
      </Ntry>
    </Stmt>
  </BkToCstmrStmt>
</Document>
"#;

#[test]
fn a_camt053_bank_statement_reconciles_line_by_line() {
    let temp = tempfile::tempdir().expect("a temp dir");
    let dir = temp.path();
    let example = std::fs::read_to_string(common::examples_dir().join("settlewatch.toml")).expect("the example config");
    let marker = "# A bank sending fixed-width";
    let at = example.find(marker).expect("the legacybank section follows payfast");
    let config = format!(
        "{}[providers.reconciliation]\nstatement = \"camt053\"\nlate_after_seconds = 86400\n\n{}",
        &example[..at],
        &example[at..]
    );
    std::fs::create_dir_all(dir.join("sim")).expect("a directory");
    std::fs::write(dir.join("sim/settlewatch.toml"), config).expect("the config");
    std::fs::write(dir.join("payfast-20261124.xml"), PAYFAST_CAMT053).expect("the statement");
    let sim = Sim { dir, url: format!("sqlite:{}", dir.join("ledger.db").display()) };
    let file = common::examples_dir().join("payfast/2026-11-24.csv");
    sim.run(&["ingest", "--provider", "payfast", "--received-at", "2026-11-25T00:00:00+09:00", file.to_str().unwrap()])
        .expect(0);
    let loaded = sim.run(&["statement", "load", "--provider", "payfast", "payfast-20261124.xml"]).expect(0);
    assert!(loaded.stdout.contains("camt053, 2026-11-24 to 2026-11-24, 5 lines"), "{}", loaded.stdout);

    let report = sim.json(&["reconcile", "--provider", "payfast", "--period", "2026-11-24", "--json"]);
    let report = &report["reports"][0];
    // Matched by id and agreeing: 001, 003, 004 (002 is paired by id but differs).
    assert_eq!(report["matches"]["by_id"], 3, "{report:#}");
    let mut found: Vec<(String, String, String)> = report["breaks"]
        .as_array()
        .expect("breaks")
        .iter()
        .map(|stored| {
            let found = &stored["found"];
            (
                found["class"].as_str().unwrap().to_string(),
                found["currency"].as_str().unwrap_or("").to_string(),
                found["difference"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("amount_differs".to_string(), "USD".to_string(), "0.50".to_string()),
            ("missing_at_provider".to_string(), "KRW".to_string(), "-1500000".to_string()),
            ("missing_in_ledger".to_string(), "KRW".to_string(), "77000".to_string()),
        ],
        "{report:#}"
    );
    assert_eq!(report["currencies"]["USD"]["net_difference"], "0.50");
}

/// `adjust propose --amount` is signed: a negative amount (the ledger holds more than the
/// statement) is a value, not an unknown flag, so it reaches the store.
#[test]
fn a_negative_adjustment_amount_is_accepted_as_a_value() {
    let temp = tempfile::tempdir().expect("a temp dir");
    let url = format!("sqlite:{}", temp.path().join("ledger.db").display());
    let run = run_in(
        temp.path(),
        &[
            "--config",
            "absent.toml",
            "--database-url",
            &url,
            "adjust",
            "propose",
            "--break",
            "1",
            "--amount",
            "-5.00",
            "--currency",
            "EUR",
            "--account",
            "operator-correction",
            "--reason",
            "the provider paid less",
            "--by",
            "alice",
        ],
    );
    assert!(!run.stderr.contains("unexpected argument"), "{}", run.stderr);
    // No break #1 in an empty store: refused by the store, not by the argument parser.
    let run = run.expect(1);
    assert!(run.stderr.contains('1'), "{}", run.stderr);
}

/// The metrics' differences are summed as exact decimals and converted to a float once:
/// breaks of 0.10 and 0.20 USD in two classes are 0.3, not 0.30000000000000004.
#[test]
fn metric_differences_are_summed_exactly_across_classes() {
    use settlement::reconcile::{Break, BreakClass, MatchCounts, Outcome, ReconPeriod};
    let temp = tempfile::tempdir().expect("a temp dir");
    let path = temp.path().join("ledger.db");
    let at = |text: &str| -> chrono::DateTime<chrono::Utc> { text.parse().expect("a time") };
    let found = |class: BreakClass, key: &str, difference: &str| Break {
        class,
        key: key.into(),
        currency: Some(settlement::money::CurrencyCode::parse("USD").expect("a currency")),
        kind: Some(settlement::model::Kind::Bet),
        provider_tx_id: Some(key.into()),
        statement_record: Some(1),
        ledger_amount: None,
        statement_amount: Some(difference.parse().expect("a decimal")),
        difference: difference.parse().expect("a decimal"),
        count: 1,
        auto_closed_by: None,
        reason: format!("{key}: {difference}"),
    };
    common::runtime().block_on(async {
        let store = common::open_store(&path).await;
        let period = ReconPeriod {
            business_date: "2026-11-24".parse().expect("a date"),
            from: at("2026-11-24T00:00:00Z"),
            to: at("2026-11-25T00:00:00Z"),
            as_of: at("2026-11-25T06:00:00Z"),
        };
        let outcome = Outcome {
            currencies: BTreeMap::new(),
            matches: MatchCounts::default(),
            breaks: vec![
                found(BreakClass::MissingInLedger, "A", "0.10"),
                found(BreakClass::AmountDiffers, "B", "0.20"),
            ],
        };
        store.record_run("evo", &period, &outcome, at("2026-11-25T06:00:00Z")).await.expect("a run");
        store.close().await;
    });
    let url = format!("sqlite:{}", path.display());
    let metrics = run_in(temp.path(), &["--config", "absent.toml", "--database-url", &url, "metrics"]).expect(0).stdout;
    for name in ["settlewatch_reconciliation_difference", "settlewatch_reconciliation_difference_at_stake"] {
        let line = format!("{name}{{currency=\"USD\",provider=\"evo\"}} 0.3\n");
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
}
