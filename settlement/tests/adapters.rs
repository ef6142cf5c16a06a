//! Golden tests and the compliance harness every provider adapter must pass.
//!
//! Golden cases live in `test_data/<adapter>/<case>.in`, decoded with `<case>.toml` (or the
//! directory's `config.toml`): a full settlewatch configuration with one provider. A
//! `<case>.headers` file (`Name: value` per line) makes the case an HTTP request with that
//! body; otherwise the input is a file. The expected units are in `<case>.out`;
//! `UPDATE_EXPECT=1 cargo test -p settlement --test adapters` rewrites them (review the diff).
//!
//! The compliance harness runs on every golden case and on random inputs: decoding twice
//! gives the same units, every rejection is specific, every unit re-decodes alone to the
//! same result, and no input makes an adapter panic.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use settlement::adapters::{Arrival, BytesSource, DecodeError, Decoded, FileSource, PayloadContext, Source};
use settlement::config::{Config, Provider};
use settlement::model::{sha256, Transaction};
use settlement::rejection::{ErrorCode, Rejection};
use sha2::Sha256;

fn received_at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T23:00:00Z").map(|at| at.with_timezone(&Utc)).unwrap()
}

fn test_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data")
}

fn provider_from(config_text: &str) -> Provider {
    let config = Config::parse(config_text).unwrap_or_else(|error| panic!("test config: {error}"));
    let mut providers = config.providers().unwrap_or_else(|error| panic!("test config: {error}"));
    assert_eq!(providers.len(), 1, "a test config has exactly one provider");
    providers.remove(0)
}

/// What one `decode` call produced.
struct Outcome {
    units: Vec<Decoded>,
    result: Result<u64, DecodeError>,
}

fn decode(provider: &Provider, source: &dyn Source, arrival: Arrival) -> Outcome {
    let context = PayloadContext { arrival, received_at: received_at() };
    let mut units = Vec::new();
    let result = provider.adapter.decode(source, &context, &mut |unit| {
        units.push(unit);
        Ok(())
    });
    Outcome { units, result }
}

fn option(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("-")
}

fn render_result(result: &Result<Transaction, Rejection>) -> String {
    match result {
        Ok(tx) => format!(
            "ok {kind} {provider}/{id} account={account} game={game} round={round} session={session} \
             {currency} {amount} occurred={occurred} orig={original}",
            kind = tx.kind,
            provider = tx.provider,
            id = tx.provider_tx_id,
            account = tx.account,
            game = option(&tx.game_id),
            round = option(&tx.round_id),
            session = option(&tx.session_id),
            currency = tx.currency,
            amount = tx.amount,
            occurred = tx.occurred_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            original = option(&tx.original_tx_id),
        ),
        Err(rejection) => render_rejection(rejection),
    }
}

fn render_rejection(rejection: &Rejection) -> String {
    format!("err {} field={}: {}", rejection.code, rejection.field.as_deref().unwrap_or("-"), rejection.message)
}

fn render(outcome: &Outcome) -> String {
    let mut out = String::new();
    for unit in &outcome.units {
        let _ = writeln!(out, "#{} {}", unit.record, render_result(&unit.result));
    }
    match &outcome.result {
        Ok(count) => {
            let _ = writeln!(out, "payload ok units={count}");
        }
        Err(DecodeError::Rejected(rejection)) => {
            let _ = writeln!(out, "payload {}", render_rejection(rejection));
        }
        Err(error) => {
            let _ = writeln!(out, "payload failed: {error}");
        }
    }
    out
}

struct Case {
    name: String,
    input: PathBuf,
    config_text: String,
    arrival: Arrival,
}

impl Case {
    fn load(input: &Path) -> Case {
        let directory = input.parent().unwrap();
        let stem = input.file_stem().unwrap().to_string_lossy().to_string();
        let own_config = directory.join(format!("{stem}.toml"));
        let config_path = if own_config.exists() { own_config } else { directory.join("config.toml") };
        let config_text =
            std::fs::read_to_string(&config_path).unwrap_or_else(|error| panic!("{}: {error}", config_path.display()));
        let headers_path = directory.join(format!("{stem}.headers"));
        let arrival = match std::fs::read_to_string(&headers_path) {
            Ok(text) => Arrival::Request {
                headers: text
                    .lines()
                    .filter(|line| !line.is_empty())
                    .map(|line| {
                        let (name, value) = line.split_once(':').expect("headers are `Name: value`");
                        (name.trim().to_string(), value.trim().to_string())
                    })
                    .collect(),
            },
            Err(_) => Arrival::File,
        };
        let adapter = directory.file_name().unwrap().to_string_lossy();
        Case { name: format!("{adapter}/{stem}"), input: input.to_path_buf(), config_text, arrival }
    }

    fn source(&self) -> FileSource {
        FileSource::open(self.name.clone(), &self.input).expect("the case input")
    }
}

fn cases(adapter: &str) -> Vec<Case> {
    let directory = test_data().join(adapter);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("{}: {error}", directory.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "in"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no cases in {}", directory.display());
    inputs.iter().map(|input| Case::load(input)).collect()
}

const ADAPTERS: &[&str] = &["json_webhook", "csv_settlement", "fixed_width"];

/// Decodes a case and compares with its `.out`; returns a description of the difference.
fn check(case: &Case) -> Option<String> {
    let provider = provider_from(&case.config_text);
    let actual = render(&decode(&provider, &case.source(), case.arrival.clone()));
    let expected_path = case.input.with_extension("out");
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&expected_path, &actual).unwrap();
        return None;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    (expected != actual).then(|| format!("--- {} expected\n{expected}+++ actual\n{actual}", case.name))
}

#[test]
fn golden_cases() {
    let mut failures = Vec::new();
    let mut count = 0;
    for &adapter in ADAPTERS {
        for case in cases(adapter) {
            count += 1;
            failures.extend(check(&case));
        }
    }
    assert!(failures.is_empty(), "{} of {count} golden cases differ:\n{}", failures.len(), failures.join("\n"));
}

/// Every code that names a field must have one.
fn field_specific(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::MissingField
            | ErrorCode::InvalidField
            | ErrorCode::InvalidAmount
            | ErrorCode::UnknownCurrency
            | ErrorCode::UnknownKind
            | ErrorCode::BadSignature
    )
}

fn assert_specific(rejection: &Rejection, at: &str) {
    assert!(!rejection.message.trim().is_empty(), "{at}: empty message in {rejection:?}");
    if field_specific(rejection.code) {
        assert!(rejection.field.as_deref().is_some_and(|field| !field.is_empty()), "{at}: no field in {rejection:?}");
    }
}

/// The compliance checks: determinism, specific rejections, provenance, and replay of
/// every unit alone through `decode_unit`.
fn assert_compliant(name: &str, provider: &Provider, source: &dyn Source, arrival: Arrival) {
    let first = decode(provider, source, arrival.clone());
    let second = decode(provider, source, arrival);
    assert_eq!(render(&first), render(&second), "{name}: decoding twice differs");
    if let Err(DecodeError::Rejected(rejection)) = &first.result {
        assert_specific(rejection, name);
        assert!(first.units.is_empty(), "{name}: units were handed over before the payload was rejected");
    }
    if let Ok(count) = first.result {
        assert_eq!(count, first.units.len() as u64, "{name}: returned count differs from units handed over");
    }
    for (unit, again) in first.units.iter().zip(&second.units) {
        let at = format!("{name} #{}", unit.record);
        assert_eq!(unit.raw, again.raw, "{at}: raw differs between runs");
        assert_eq!(unit.context, again.context, "{at}: context differs between runs");
        assert!(unit.record >= 1, "{at}: record numbers are 1-based");
        match &unit.result {
            Ok(tx) => {
                assert_eq!(tx.provider, provider.name, "{at}: provider");
                assert_eq!(tx.received_at, received_at(), "{at}: received_at");
                assert_eq!(tx.raw_sha256, sha256(&unit.raw), "{at}: raw_sha256 is not the hash of raw");
            }
            Err(rejection) => assert_specific(rejection, &at),
        }
        let replayed = provider.adapter.decode_unit(&unit.context, &unit.raw, received_at());
        assert_eq!(replayed, vec![unit.result.clone()], "{at}: decode_unit differs from decode");
    }
}

#[test]
fn every_golden_case_is_compliant() {
    for &adapter in ADAPTERS {
        for case in cases(adapter) {
            let provider = provider_from(&case.config_text);
            assert_compliant(&case.name, &provider, &case.source(), case.arrival.clone());
        }
    }
}

/// A whole dead-lettered capture line replays every transaction in it.
#[test]
fn a_capture_line_replays_as_a_whole_delivery() {
    let case = Case::load(&test_data().join("json_webhook/batch.in"));
    let provider = provider_from(&case.config_text);
    let outcome = decode(&provider, &case.source(), Arrival::File);
    let line = std::fs::read_to_string(&case.input).unwrap();
    let first_line = line.lines().next().unwrap();
    let replayed = provider.adapter.decode_unit(b"json_webhook delivery v1", first_line.as_bytes(), received_at());
    let from_file: Vec<_> =
        outcome.units.iter().filter(|unit| unit.record == 1).map(|unit| unit.result.clone()).collect();
    assert_eq!(replayed.len(), 5);
    assert_eq!(replayed, from_file);
}

// ---- Property tests: no input makes an adapter panic, and the contract holds on all of them.

/// (position, operation, byte): 0 replaces, 1 inserts, 2 deletes at `position % len`.
fn mutate(base: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for &(position, operation, byte) in edits {
        let at = if bytes.is_empty() { 0 } else { position % bytes.len() };
        match operation % 3 {
            0 if !bytes.is_empty() => bytes[at] = byte,
            2 if !bytes.is_empty() => {
                bytes.remove(at);
            }
            _ => bytes.insert(at, byte),
        }
    }
    bytes
}

fn fixture(adapter: &str, case: &str) -> (Provider, Vec<u8>) {
    let case = Case::load(&test_data().join(adapter).join(format!("{case}.in")));
    (provider_from(&case.config_text), std::fs::read(&case.input).unwrap())
}

fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn check_arbitrary(adapter: &str, case: &str, bytes: Vec<u8>) {
    let (provider, _) = fixture(adapter, case);
    let source = BytesSource { name: "arbitrary".into(), bytes };
    assert_compliant(adapter, &provider, &source, Arrival::File);
    if adapter == "json_webhook" {
        // The same bytes as a request body, correctly signed, so decoding goes past the signature.
        let headers = vec![("X-Signature".to_string(), sign(b"test-secret", &source.bytes))];
        assert_compliant(adapter, &provider, &source, Arrival::Request { headers });
    }
}

const PROPERTY_FIXTURES: &[(&str, &str)] =
    &[("json_webhook", "batch"), ("csv_settlement", "basic"), ("fixed_width", "valid")];

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), which in 0..PROPERTY_FIXTURES.len()) {
        let (adapter, case) = PROPERTY_FIXTURES[which];
        check_arbitrary(adapter, case, bytes);
    }

    #[test]
    fn mutated_fixtures_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8),
        which in 0..PROPERTY_FIXTURES.len(),
    ) {
        let (adapter, case) = PROPERTY_FIXTURES[which];
        let (_, base) = fixture(adapter, case);
        check_arbitrary(adapter, case, mutate(&base, &edits));
    }

    #[test]
    fn mutated_request_bodies_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)) {
        let case = Case::load(&test_data().join("json_webhook/request_batch.in"));
        let provider = provider_from(&case.config_text);
        let body = mutate(&std::fs::read(&case.input).unwrap(), &edits);
        let headers = vec![("X-Signature".to_string(), sign(b"test-secret", &body))];
        let source = BytesSource { name: "request".into(), bytes: body };
        assert_compliant("request", &provider, &source, Arrival::Request { headers });
    }
}

// ---- The demo's example configuration and payloads.

/// Decodes a file with a provider's adapter; returns (ok units, the codes of err units).
fn count_units(provider: &Provider, path: &Path) -> (usize, Vec<ErrorCode>) {
    let source = FileSource::open(path.display().to_string(), path).expect("the example file");
    let outcome = decode(provider, &source, Arrival::File);
    assert!(outcome.result.is_ok(), "{}: {:?}", path.display(), outcome.result);
    assert_compliant(&path.display().to_string(), provider, &source, Arrival::File);
    let ok = outcome.units.iter().filter(|unit| unit.result.is_ok()).count();
    let errors = outcome.units.iter().filter_map(|unit| unit.result.as_ref().err().map(|rejection| rejection.code));
    (ok, errors.collect())
}

#[test]
fn examples_decode() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let config = Config::load(&examples.join("settlewatch.toml")).unwrap();
    assert_eq!(config.store.url, "sqlite:settlewatch-demo.db");
    let providers = config.providers().unwrap();
    let by_name = |name: &str| providers.iter().find(|provider| provider.name == name).unwrap();
    // 5 transactions in 3 good deliveries; a delivery whose body was altered; an amount in tenths of a cent.
    assert_eq!(
        count_units(by_name("evo-live"), &examples.join("evo-live/payloads.jsonl")),
        (5, vec![ErrorCode::BadSignature, ErrorCode::InvalidAmount])
    );
    // Deposits, a withdrawal, a fee and a chargeback; one amount not in minor units.
    assert_eq!(
        count_units(by_name("payfast"), &examples.join("payfast/2026-11-24.csv")),
        (5, vec![ErrorCode::InvalidAmount])
    );
    assert_eq!(count_units(by_name("legacybank"), &examples.join("legacybank/BATCH0001.DAT")), (4, vec![]));
}

// ---- Configurations that cannot build their adapter fail clearly.

fn config_error(adapter_toml: &str) -> String {
    let text = format!("[[providers]]\nname = \"p\"\n\n[providers.adapter]\n{adapter_toml}");
    match Config::parse(&text).and_then(|config| config.providers()) {
        Ok(_) => panic!("expected a configuration error for:\n{adapter_toml}"),
        Err(error) => error.to_string(),
    }
}

const JSON_BASE: &str = "type = \"json_webhook\"\nsigning_secret = \"s\"\n";
const CSV_COLUMNS: &str = "[providers.adapter.columns]\nid = \"id\"\nkind = \"kind\"\naccount = \"account\"\n\
                           amount = \"amount\"\noccurred_at = \"at\"\n";
const FIXED_LAYOUT: &str = "record_type = { start_chars = 0, width_chars = 1 }\n\
    [providers.adapter.header]\ncurrency = { start_chars = 1, width_chars = 3 }\n\
    [providers.adapter.detail]\nid = { start_chars = 1, width_chars = 5 }\naccount = { start_chars = 6, width_chars = 4 }\n\
    kind = { start_chars = 10, width_chars = 3 }\namount_minor = { start_chars = 13, width_chars = 10 }\n\
    occurred_at = { start_chars = 23, width_chars = 14 }\n\
    [providers.adapter.trailer]\nrecord_count = { start_chars = 1, width_chars = 8 }\n\
    control_total_minor = { start_chars = 9, width_chars = 12 }\n";

#[test]
fn bad_configurations_are_rejected_with_the_reason() {
    let cases: Vec<(String, &str)> = vec![
        (format!("{JSON_BASE}[providers.adapter.kinds]\nDEBIT = \"debit\"\n"), "maps to unknown kind \"debit\""),
        (format!("{JSON_BASE}[providers.adapter.kinds]\n"), "the vocabulary is empty"),
        ("type = \"json_webhook\"\n[providers.adapter.kinds]\nD = \"bet\"\n".into(), "no signing secret"),
        (
            "type = \"json_webhook\"\nsigning_secret_env = \"SETTLEWATCH_TEST_SECRET_THAT_IS_NOT_SET\"\n\
             [providers.adapter.kinds]\nD = \"bet\"\n"
                .into(),
            "environment variable SETTLEWATCH_TEST_SECRET_THAT_IS_NOT_SET is not set",
        ),
        (
            format!("{JSON_BASE}signing_secret_env = \"X\"\n[providers.adapter.kinds]\nD = \"bet\"\n"),
            "set signing_secret or signing_secret_env, not both",
        ),
        (format!("{JSON_BASE}[providers.adapter.fields]\namount = \"money..amount\"\n[providers.adapter.kinds]\nD = \"bet\"\n"), "fields.amount"),
        (format!("{JSON_BASE}currency = \"XXX\"\n[providers.adapter.kinds]\nD = \"bet\"\n"), "\"XXX\" is not a known currency"),
        (format!("{JSON_BASE}colour = \"red\"\n[providers.adapter.kinds]\nD = \"bet\"\n"), "unknown field `colour`"),
        (format!("type = \"csv_settlement\"\n{CSV_COLUMNS}[providers.adapter.kinds]\nD = \"deposit\"\n"), "no currency"),
        (
            format!("type = \"csv_settlement\"\ncurrency = \"USD\"\ndelimiter = \"\u{e9}\"\n{CSV_COLUMNS}[providers.adapter.kinds]\nD = \"deposit\"\n"),
            "delimiter",
        ),
        (
            format!("type = \"csv_settlement\"\ncurrency = \"USD\"\ntimestamp_format = \"%Y-%Q\"\n{CSV_COLUMNS}[providers.adapter.kinds]\nD = \"deposit\"\n"),
            "timestamp_format",
        ),
        (
            format!("type = \"csv_settlement\"\ncurrency = \"USD\"\n{CSV_COLUMNS}game = \"id\"\n[providers.adapter.kinds]\nD = \"deposit\"\n"),
            "both name column \"id\"",
        ),
        (format!("type = \"fixed_width\"\n{FIXED_LAYOUT}[providers.adapter.kinds]\nD = \"deposit\"\n"), ""),
        (
            format!("type = \"fixed_width\"\n{}[providers.adapter.kinds]\nD = \"deposit\"\n", FIXED_LAYOUT.replace("width_chars = 10", "width_chars = 11")),
            "detail.occurred_at overlaps detail.amount_minor",
        ),
        (
            format!("type = \"fixed_width\"\n{}[providers.adapter.kinds]\nD = \"deposit\"\n", FIXED_LAYOUT.replace("width_chars = 5", "width_chars = 0")),
            "detail.id: width_chars is 0",
        ),
        (
            format!("type = \"fixed_width\"\n{}[providers.adapter.kinds]\nD = \"deposit\"\n", FIXED_LAYOUT.replace("start_chars = 1, width_chars = 3", "start_chars = 0, width_chars = 3")),
            "header.currency overlaps header.record_type",
        ),
        (
            format!("type = \"fixed_width\"\ndetail_code = \"DD\"\n{FIXED_LAYOUT}[providers.adapter.kinds]\nD = \"deposit\"\n"),
            "detail_code: \"DD\" must be 1 characters",
        ),
        (
            format!("type = \"fixed_width\"\ncurrency = \"GBP\"\n{FIXED_LAYOUT}[providers.adapter.kinds]\nD = \"deposit\"\n"),
            "set header.currency or currency, not both",
        ),
    ];
    for (adapter_toml, expected) in cases {
        if expected.is_empty() {
            // The valid base layout builds.
            let text = format!("[[providers]]\nname = \"p\"\n\n[providers.adapter]\n{adapter_toml}");
            Config::parse(&text).and_then(|config| config.providers()).unwrap();
            continue;
        }
        let error = config_error(&adapter_toml);
        assert!(error.contains(expected), "expected {expected:?} in the error for\n{adapter_toml}\ngot: {error}");
    }
}

/// A record over `RECORD_BYTES_MAX` is one `malformed_record` unit; the next record is read.
/// (Fixed width: an unreadable line is not counted as a detail in pass 1, so the trailer
/// of the valid fixture still matches and the line is dead-lettered alone.)
#[test]
fn oversized_records_are_rejected_alone() {
    let huge = "x".repeat(settlement::adapters::RECORD_BYTES_MAX + 10);
    let (csv, _) = fixture("csv_settlement", "basic");
    let csv_input = format!(
        "txn_id,txn_type,merchant_account,currency,amount_minor,settled_at,ref_txn_id\n\
         {huge},DEP,a,KRW,1,2026-11-24 09:00:00,\nOK1,DEP,a,KRW,1,2026-11-24 09:00:00,\n"
    );
    let (fixed, valid) = fixture("fixed_width", "valid");
    let valid = String::from_utf8(valid).unwrap();
    let mut fixed_lines: Vec<&str> = valid.lines().collect();
    let oversized_detail = format!("D{huge}");
    fixed_lines.insert(1, &oversized_detail);
    let fixed_input = fixed_lines.join("\n");
    for (name, provider, input, ok_expected) in [("csv", &csv, csv_input, 1), ("fixed_width", &fixed, fixed_input, 5)] {
        let source = BytesSource { name: name.into(), bytes: input.into_bytes() };
        let outcome = decode(provider, &source, Arrival::File);
        assert_compliant(name, provider, &source, Arrival::File);
        let first = outcome.units.first().unwrap_or_else(|| panic!("{name}: {:?}", outcome.result));
        assert_eq!(first.record, 2, "{name}");
        assert_eq!(first.result.as_ref().unwrap_err().code, ErrorCode::MalformedRecord, "{name}");
        assert!(first.raw.len() <= settlement::adapters::RECORD_BYTES_MAX + 1, "{name}: raw is bounded");
        let ok = outcome.units.iter().filter(|unit| unit.result.is_ok()).count();
        assert_eq!(ok, ok_expected, "{name}: {}", render(&outcome));
    }
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).map(|at| at.with_timezone(&Utc)).unwrap()
}

/// One capture line for `body`, signed with the golden cases' secret; `received_at` is the
/// envelope's raw JSON value (`None`: no such key).
fn capture_line(body: &str, received_at: Option<&str>) -> String {
    let signature = sign(b"test-secret", body.as_bytes());
    let received = received_at.map(|value| format!(",\"received_at\":{value}")).unwrap_or_default();
    format!(
        "{{\"headers\":{{\"X-Signature\":{}}}{received},\"body\":{}}}",
        serde_json::to_string(&signature).unwrap(),
        serde_json::to_string(body).unwrap()
    )
}

const TWO_BETS: &str = r#"{"transactions":[
  {"tx_id":"L1","type":"DEBIT","player_id":"p1","money":{"amount":"5.00","currency":"USD"},"timestamp":"2026-11-24T10:00:00Z"},
  {"tx_id":"L2","type":"DEBIT","player_id":"p1","money":{"amount":"6.00","currency":"USD"},"timestamp":"2026-11-24T10:05:00Z"}]}"#;
const ONE_BET: &str = r#"{"tx_id":"L3","type":"DEBIT","player_id":"p2","money":{"amount":"1.00","currency":"USD"},"timestamp":"2026-11-24T10:06:00Z"}"#;

/// A capture log that records when each delivery arrived (an outage, then the backlog at
/// once) stamps that time on the delivery's transactions; a line without one gets the
/// payload's arrival time. Replaying a unit alone keeps the recorded time.
#[test]
fn a_capture_line_with_received_at_stamps_its_transactions_and_replay_keeps_it() {
    let (provider, _) = fixture("json_webhook", "batch");
    let log = format!(
        "{}\n{}\n",
        capture_line(TWO_BETS, Some("\"2026-11-24T11:30:00.250+01:00\"")),
        capture_line(ONE_BET, None)
    );
    let source = BytesSource { name: "capture.jsonl".into(), bytes: log.into_bytes() };
    let outcome = decode(&provider, &source, Arrival::File);
    assert!(outcome.result.is_ok(), "{}", render(&outcome));
    let stamped: Vec<(String, DateTime<Utc>)> = outcome
        .units
        .iter()
        .map(|unit| {
            let tx = unit.result.as_ref().unwrap_or_else(|rejection| panic!("{rejection:?}"));
            (tx.provider_tx_id.clone(), tx.received_at)
        })
        .collect();
    let arrived = at("2026-11-24T10:30:00.250Z");
    assert_eq!(
        stamped,
        vec![("L1".into(), arrived), ("L2".into(), arrived), ("L3".into(), received_at())],
        "the first line's own time, then the payload's"
    );
    // A replay days later keeps the recorded arrival; a unit without one takes the replay time.
    let replayed_at = at("2026-11-30T00:00:00Z");
    for unit in &outcome.units {
        let original = unit.result.as_ref().unwrap();
        let replayed = provider.adapter.decode_unit(&unit.context, &unit.raw, replayed_at);
        let expected = if original.provider_tx_id == "L3" { replayed_at } else { arrived };
        assert_eq!(replayed.len(), 1);
        assert_eq!(replayed[0].as_ref().unwrap().received_at, expected, "{}", original.provider_tx_id);
    }
    // The whole line replayed as a delivery keeps it too.
    let line = String::from_utf8(source.bytes.clone()).unwrap();
    let first_line = line.lines().next().unwrap();
    let whole = provider.adapter.decode_unit(b"json_webhook delivery v1", first_line.as_bytes(), replayed_at);
    assert_eq!(whole.len(), 2);
    assert!(whole.iter().all(|result| result.as_ref().unwrap().received_at == arrived), "{whole:?}");
    // Contexts written before arrival times existed still decode, with the replay time.
    for context in [&b"json_webhook record v1"[..], b"json_webhook record v1 item=2"] {
        let replayed = provider.adapter.decode_unit(context, ONE_BET.as_bytes(), replayed_at);
        assert_eq!(replayed[0].as_ref().unwrap().received_at, replayed_at);
    }
    for broken in [&b"json_webhook record v1 received_at=yesterday"[..], b"json_webhook record v1 item=x"] {
        let replayed = provider.adapter.decode_unit(broken, ONE_BET.as_bytes(), replayed_at);
        assert_eq!(replayed[0].as_ref().unwrap_err().code, ErrorCode::MalformedRecord);
    }
}

/// A `received_at` that is not a time makes its line one malformed unit naming the field;
/// the next line is read as usual.
#[test]
fn an_invalid_received_at_makes_the_line_one_malformed_unit() {
    let (provider, _) = fixture("json_webhook", "batch");
    for value in ["\"yesterday\"", "\"2026-11-24 10:00:00\"", "1764000000000"] {
        let bad = capture_line(TWO_BETS, Some(value));
        let log = format!("{bad}\n{}\n", capture_line(ONE_BET, None));
        let source = BytesSource { name: "capture.jsonl".into(), bytes: log.into_bytes() };
        let outcome = decode(&provider, &source, Arrival::File);
        assert_eq!(outcome.units.len(), 2, "{value}: {}", render(&outcome));
        let first = &outcome.units[0];
        assert_eq!(first.record, 1);
        assert_eq!(first.raw, bad.as_bytes(), "{value}: the whole line is kept for replay");
        let rejection = first.result.as_ref().unwrap_err();
        assert_eq!(rejection.code, ErrorCode::MalformedRecord, "{value}");
        assert_eq!(rejection.field.as_deref(), Some("received_at"), "{value}: {rejection:?}");
        assert!(rejection.message.contains("RFC 3339"), "{value}: {rejection:?}");
        assert!(outcome.units[1].result.is_ok(), "{value}: {}", render(&outcome));
        assert_compliant(value, &provider, &source, Arrival::File);
    }
}
