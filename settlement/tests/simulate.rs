//! The traffic simulator against the real adapters: its files decode as its manifest and
//! truth file say, its statements add up, its scenarios appear at their configured rates,
//! and its distributions (RTP per game, peak rate) are the configured ones.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{DateTime, Duration, Timelike, Utc};
use settlement::adapters::{Arrival, DecodeError, Decoded, FileSource, PayloadContext, SinkClosed};
use settlement::config::Config;
use settlement::model::Kind;
use settlement::rejection::ErrorCode;
use settlement::simulate::{simulate, RunOptions, SimConfig, Summary};
use settlement::validate::{validate, Rules, ValidTransaction};

struct Run {
    _dir: tempfile::TempDir,
    out: PathBuf,
    summary: Summary,
}

fn run(config_text: &str, seed: u64, duration_seconds: u64, rate_per_second: f64) -> Run {
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = dir.path().join("out");
    let config = SimConfig::parse(config_text).expect("the test configuration parses");
    let options = RunOptions { seed, duration_seconds, rate_per_second, out: out.clone() };
    let summary = simulate(&config, &options).expect("the simulation runs");
    Run { _dir: dir, out, summary }
}

/// The default configuration, 6 simulated hours at 5 transactions per second.
fn default_run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| run("", 7, 6 * 3600, 5.0))
}

fn read_csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).expect("a CSV file");
    let headers = reader.headers().expect("a header").clone();
    reader
        .records()
        .map(|record| {
            let record = record.expect("a CSV row");
            headers.iter().zip(record.iter()).map(|(name, value)| (name.to_string(), value.to_string())).collect()
        })
        .collect()
}

/// One unit as the ingest path would see it: a validated transaction or a rejection code.
struct Unit {
    result: Result<ValidTransaction, ErrorCode>,
    /// The unit's bytes, kept for rejected units.
    raw: Vec<u8>,
}

struct DecodedFile {
    file: String,
    provider: String,
    units: Vec<Unit>,
}

/// Decodes every file in `manifest.csv` through its provider's real adapter (built from the
/// simulator's own `settlewatch.toml`) and validates each transaction as ingest does.
fn decode_all(out: &Path) -> Vec<DecodedFile> {
    let config = Config::load(&out.join("settlewatch.toml")).expect("the written settlewatch.toml loads");
    let providers = config.providers().expect("every adapter builds");
    let now = Utc::now();
    let mut decoded = Vec::new();
    for row in read_csv(&out.join("manifest.csv")) {
        let provider =
            providers.iter().find(|provider| provider.name == row["provider"]).expect("a configured provider");
        let source = FileSource::open(row["file"].clone(), &out.join(&row["file"])).expect("the file opens");
        let context = PayloadContext { arrival: Arrival::File, received_at: now };
        let rules = Rules {
            currencies: &provider.currencies,
            allowed_currencies: provider.allowed_currencies.as_ref(),
            future_tolerance: Duration::seconds(300),
        };
        let mut units = Vec::new();
        let mut sink = |unit: Decoded| -> Result<(), SinkClosed> {
            let result = unit.result.and_then(|tx| validate(tx, &rules, now)).map_err(|rejection| rejection.code);
            let raw = if result.is_err() { unit.raw } else { Vec::new() };
            units.push(Unit { result, raw });
            Ok(())
        };
        match provider.adapter.decode(&source, &context, &mut sink) {
            Ok(_) => {}
            Err(DecodeError::Rejected(rejection)) => units.push(Unit { result: Err(rejection.code), raw: Vec::new() }),
            Err(error) => panic!("{}: {error}", row["file"]),
        }
        decoded.push(DecodedFile { file: row["file"].clone(), provider: row["provider"].clone(), units });
    }
    decoded
}

#[derive(Default, Debug, PartialEq, Eq)]
struct Tally {
    units: u64,
    accepted: u64,
    duplicates: u64,
    conflicts: u64,
    rejected: BTreeMap<String, u64>,
}

/// Classifies units as the ledger does: first (provider, id) accepted; the same content
/// again a duplicate; other content a conflict. Returns tallies per file and the accepted
/// transactions.
fn ledger(files: &[DecodedFile]) -> (Vec<Tally>, Vec<(String, ValidTransaction)>) {
    let mut seen: HashMap<(String, String), [u8; 32]> = HashMap::new();
    let mut accepted = Vec::new();
    let mut tallies = Vec::new();
    for file in files {
        let mut tally = Tally::default();
        for unit in &file.units {
            tally.units += 1;
            match &unit.result {
                Err(code) => *tally.rejected.entry(code.as_str().to_string()).or_default() += 1,
                Ok(valid) => {
                    let key = (file.provider.clone(), valid.tx.provider_tx_id.clone());
                    match seen.get(&key) {
                        None => {
                            seen.insert(key, valid.content_hash);
                            tally.accepted += 1;
                            accepted.push((file.provider.clone(), valid.clone()));
                        }
                        Some(hash) if *hash == valid.content_hash => tally.duplicates += 1,
                        Some(_) => tally.conflicts += 1,
                    }
                }
            }
        }
        tallies.push(tally);
    }
    (tallies, accepted)
}

fn manifest_tally(row: &BTreeMap<String, String>) -> Tally {
    let number = |name: &str| row[name].parse::<u64>().expect("a count");
    let rejected = row["rejected_by_code"]
        .split(';')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (code, count) = part.split_once('=').expect("code=count");
            (code.to_string(), count.parse().expect("a count"))
        })
        .collect();
    Tally {
        units: number("units"),
        accepted: number("accepted"),
        duplicates: number("duplicates"),
        conflicts: number("conflicts"),
        rejected,
    }
}

#[test]
fn the_same_seed_gives_the_same_bytes_and_another_seed_does_not() {
    fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut found = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("a directory") {
                let path = entry.expect("an entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let name = path.strip_prefix(root).expect("under root").display().to_string();
                    found.insert(name, std::fs::read(&path).expect("a file"));
                }
            }
        }
        found
    }
    let first = run("", 11, 3 * 3600, 3.0);
    let second = run("", 11, 3 * 3600, 3.0);
    let other = run("", 12, 3 * 3600, 3.0);
    let (first_files, second_files) = (files(&first.out), files(&second.out));
    assert!(first_files.len() > 10, "{:?}", first_files.keys());
    assert_eq!(first_files.keys().collect::<Vec<_>>(), second_files.keys().collect::<Vec<_>>());
    for (name, bytes) in &first_files {
        assert!(bytes == &second_files[name], "{name} differs between two runs with the same seed");
    }
    assert_ne!(first_files.get("truth.csv"), files(&other.out).get("truth.csv"), "another seed, another truth");
}

#[test]
fn every_file_decodes_through_its_adapter_as_the_manifest_and_truth_say() {
    let run = default_run();
    let decoded = decode_all(&run.out);
    let manifest = read_csv(&run.out.join("manifest.csv"));
    let (tallies, _) = ledger(&decoded);
    assert_eq!(decoded.len(), manifest.len());
    for ((file, tally), row) in decoded.iter().zip(&tallies).zip(&manifest) {
        assert_eq!(tally, &manifest_tally(row), "{}: decoded units differ from the manifest", file.file);
    }
    // The truth file explains every unit that is not accepted, file by file.
    let truth = read_csv(&run.out.join("truth.csv"));
    let mut explained: BTreeMap<String, Tally> = BTreeMap::new();
    let mut whole_files: BTreeMap<String, String> = BTreeMap::new();
    for row in &truth {
        let tally = explained.entry(row["file"].clone()).or_default();
        match row["expected_outcome"].as_str() {
            "accepted" => assert_eq!(row["expected_code"], "", "{row:?}"),
            "duplicate" => tally.duplicates += 1,
            "conflict" => tally.conflicts += 1,
            "rejected" => {
                let code = ErrorCode::parse(&row["expected_code"]).expect("a known error code");
                if matches!(code, ErrorCode::RecordCountMismatch | ErrorCode::ControlTotalMismatch) {
                    assert_eq!(row["scenario"], "malformed_batch");
                    whole_files.insert(row["file"].clone(), code.as_str().to_string());
                } else {
                    assert_eq!(row["scenario"], "malformed_record");
                    *tally.rejected.entry(code.as_str().to_string()).or_default() += 1;
                }
            }
            other => panic!("unknown expected_outcome {other:?}"),
        }
    }
    for (file, code) in whole_files {
        *explained.entry(file).or_default().rejected.entry(code).or_default() += 1;
    }
    let mut rejected_total = 0;
    for (file, tally) in decoded.iter().zip(&tallies) {
        let expected = explained.remove(&file.file).unwrap_or_default();
        assert_eq!(
            (tally.duplicates, tally.conflicts, &tally.rejected),
            (expected.duplicates, expected.conflicts, &expected.rejected),
            "{}: the truth file does not explain its non-accepted units",
            file.file
        );
        rejected_total += tally.rejected.values().sum::<u64>();
    }
    assert!(explained.is_empty(), "truth rows name files not in the manifest: {:?}", explained.keys());
    // And record by record: each malformed record in the truth file is a rejected unit of
    // its file, with its code, whose bytes carry its id.
    for row in truth.iter().filter(|row| row["scenario"] == "malformed_record") {
        let file = decoded.iter().find(|file| file.file == row["file"]).expect("the row's file");
        let code = ErrorCode::parse(&row["expected_code"]).expect("a code");
        let id = row["provider_tx_id"].as_bytes();
        let found = file.units.iter().any(|unit| {
            unit.result.as_ref().err() == Some(&code) && unit.raw.windows(id.len()).any(|window| window == id)
        });
        assert!(found, "{row:?}: no unit of {} was rejected with {code} for this id", row["file"]);
    }
    assert!(rejected_total > 0 && tallies.iter().map(|tally| tally.accepted).sum::<u64>() > 50_000);
    // The interface the feature exporter joins on.
    let header = std::fs::read_to_string(run.out.join("truth.csv")).expect("truth.csv");
    assert!(header.starts_with("provider,provider_tx_id,scenario,episode,expected_code,"));
}

#[test]
fn statements_equal_the_transactions_except_the_injected_mismatches() {
    let run = default_run();
    let decoded = decode_all(&run.out);
    let (_, accepted) = ledger(&decoded);
    let config = Config::load(&run.out.join("settlewatch.toml")).expect("settlewatch.toml");
    let zones: BTreeMap<String, chrono_tz::Tz> =
        config.providers.iter().map(|provider| (provider.name.clone(), provider.timezone().expect("a zone"))).collect();
    let mut actual: BTreeMap<(String, String, String, String), (u64, i128)> = BTreeMap::new();
    for (provider, valid) in &accepted {
        let date = valid.tx.occurred_at.with_timezone(&zones[provider]).date_naive().to_string();
        let key = (provider.clone(), date, valid.tx.currency.as_str().to_string(), valid.tx.kind.as_str().to_string());
        let total = actual.entry(key).or_default();
        total.0 += 1;
        total.1 += i128::from(valid.amount_minor);
    }
    let mut claimed: BTreeMap<(String, String, String, String), (u64, i128)> = BTreeMap::new();
    for provider in zones.keys() {
        for entry in std::fs::read_dir(run.out.join(provider)).expect("the provider's directory") {
            let path = entry.expect("an entry").path();
            if path.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.starts_with("statement-")) {
                for row in read_csv(&path) {
                    let key = (
                        row["provider"].clone(),
                        row["business_date"].clone(),
                        row["currency"].clone(),
                        row["kind"].clone(),
                    );
                    let value =
                        (row["count"].parse().expect("a count"), row["amount_minor"].parse().expect("an amount"));
                    assert!(claimed.insert(key, value).is_none(), "a statement line appears twice");
                }
            }
        }
    }
    let mut injected: BTreeMap<(String, String, String, String), i128> = BTreeMap::new();
    for row in read_csv(&run.out.join("statement_mismatches.csv")) {
        let key = (row["provider"].clone(), row["business_date"].clone(), row["currency"].clone(), row["kind"].clone());
        let delta: i128 = row["delta_minor"].parse().expect("a delta");
        assert!(delta != 0 && delta.abs() <= 999);
        injected.insert(key, delta);
    }
    assert_eq!(claimed.keys().collect::<Vec<_>>(), actual.keys().collect::<Vec<_>>(), "statement lines");
    for (key, (count, sum)) in &actual {
        let (claimed_count, claimed_sum) = claimed[key];
        assert_eq!(claimed_count, *count, "{key:?}: count");
        assert_eq!(claimed_sum - sum, injected.get(key).copied().unwrap_or(0), "{key:?}: the claimed sum");
    }
    assert!(!injected.is_empty(), "the default run injects at least one mismatch");
}

/// Rates raised so every scenario has enough opportunities in a short run.
const RAISED_RATES: &str = r#"
[scenarios]
amount_spike = 0.01
velocity_burst = 0.005
rtp_drift = 6.0
rollback_abuse = 0.01
cash_through = 0.01
bonus_abuse = 0.005
duplicate_delivery = 0.002
conflicting_redelivery = 0.001
provider_outage = 1.5
settlement_mismatch = 0.2
malformed_record = 0.001
malformed_batch = 0.05
"#;

#[test]
fn every_scenario_appears_at_its_configured_rate() {
    let run = run(RAISED_RATES, 3, 2 * 86_400, 1.5);
    let episodes = read_csv(&run.out.join("episodes.csv"));
    let truth = read_csv(&run.out.join("truth.csv"));
    let labelled: BTreeSet<&str> = truth.iter().map(|row| row["scenario"].as_str()).collect();
    let episode_ids: BTreeSet<&str> = episodes.iter().map(|row| row["episode"].as_str()).collect();
    for row in &truth {
        assert!(episode_ids.contains(row["episode"].as_str()), "truth row without an episode: {row:?}");
    }
    for scenario in &run.summary.scenarios {
        let name = scenario.scenario.as_str();
        let counted = episodes.iter().filter(|row| row["scenario"] == name).count() as f64;
        assert_eq!(counted, scenario.episodes as f64, "{name}: summary and episodes.csv disagree");
        let expected = scenario.rate * scenario.opportunities as f64;
        // Binomial / Poisson spread, 4.5 standard deviations; outages that would overlap
        // another are skipped, so they may fall up to 15% short as well.
        let overlap = if name == "provider_outage" { 0.15 * expected } else { 0.0 };
        let tolerance = 4.5 * expected.sqrt() + overlap + 1.0;
        assert!(
            (counted - expected).abs() <= tolerance,
            "{name}: {counted} episodes, expected {expected:.1} ± {tolerance:.1} ({} × {})",
            scenario.rate,
            scenario.opportunities
        );
        assert!(counted >= 1.0, "{name} never appears");
        if name != "settlement_mismatch" {
            assert!(labelled.contains(name), "{name} labels no record in truth.csv");
        }
    }
}

/// Narrow stake spreads (so the RTP estimate is tight), no drift, and no delivery fault that
/// could drop a win but not its bet (an outage backlog is labelled by delivery time, so a
/// round whose win fell in an outage would be left out and the estimate biased low).
const STEADY_PLAY: &str = r#"
[scenarios]
provider_outage = 0.0
malformed_record = 0.0
rtp_drift = 0.0
amount_spike = 0.0
rollback_abuse = 0.0
bonus_abuse = 0.0
velocity_burst = 0.0
cash_through = 0.0

[[segments]]
name = "steady"
share = 1.0
stake_chips_median = 20.0
stake_sigma = 0.3
bet_sigma = 0.2
rounds_mean = 40.0
"#;

#[test]
fn measured_rtp_per_game_is_the_configured_rtp() {
    let run = run(STEADY_PLAY, 5, 86_400, 3.0);
    let config = SimConfig::parse(STEADY_PLAY).expect("config");
    let configured: BTreeMap<(String, String), f64> = config
        .providers
        .iter()
        .flat_map(|provider| provider.games.iter().map(|game| ((provider.name.clone(), game.id.clone()), game.rtp)))
        .collect();
    let decoded = decode_all(&run.out);
    let (_, accepted) = ledger(&decoded);
    // Records of behavioural scenarios (none are configured here; this keeps the test honest
    // if a default changes). Redeliveries do not change what the ledger holds.
    let behavioural = ["amount_spike", "velocity_burst", "rtp_drift", "rollback_abuse", "cash_through", "bonus_abuse"];
    let truth: BTreeSet<(String, String)> = read_csv(&run.out.join("truth.csv"))
        .into_iter()
        .filter(|row| behavioural.contains(&row["scenario"].as_str()))
        .map(|row| (row["provider"].clone(), row["provider_tx_id"].clone()))
        .collect();
    // Per round: game, staked, won; rounds with a rollback or a behavioural label are left out.
    let mut rounds: HashMap<(String, String), (String, i128, i128, bool)> = HashMap::new();
    for (provider, valid) in &accepted {
        let (Some(round), Some(game)) = (&valid.tx.round_id, &valid.tx.game_id) else { continue };
        let entry = rounds.entry((provider.clone(), round.clone())).or_insert((game.clone(), 0, 0, false));
        let minor = i128::from(valid.amount_minor);
        match valid.tx.kind {
            Kind::Bet => entry.1 += minor,
            Kind::Win => entry.2 += minor,
            _ => entry.3 = true,
        }
        if truth.contains(&(provider.clone(), valid.tx.provider_tx_id.clone())) {
            entry.3 = true;
        }
    }
    let mut per_game: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    for ((provider, _), (game, staked, won, excluded)) in rounds {
        if !excluded && staked > 0 {
            per_game.entry((provider, game)).or_default().push((staked as f64, won as f64));
        }
    }
    assert_eq!(per_game.keys().collect::<Vec<_>>(), configured.keys().collect::<Vec<_>>());
    for (key, samples) in &per_game {
        // The payout multiple does not depend on the stake, so the mean of won / staked per
        // round estimates the RTP without mixing currencies.
        let ratios: Vec<f64> = samples.iter().map(|(staked, won)| won / staked).collect();
        let count = ratios.len() as f64;
        let mean = ratios.iter().sum::<f64>() / count;
        let variance = ratios.iter().map(|ratio| (ratio - mean).powi(2)).sum::<f64>() / (count - 1.0);
        let standard_error = (variance / count).sqrt();
        let rtp = configured[key];
        assert!(standard_error < 0.02, "{key:?}: only {count} rounds, standard error {standard_error:.4}");
        assert!(
            (mean - rtp).abs() <= 4.0 * standard_error + 0.002,
            "{key:?}: measured RTP {mean:.4} over {count} rounds, configured {rtp} (standard error {standard_error:.4})"
        );
    }
}

const FLAT_DAY_WITH_A_PEAK: &str = r#"
[traffic]
hourly_weights = [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]
weekend_factor = 1.0
peak_factor = 10.0
peak_windows = [{ start = "12:00", end = "13:00" }]
[scenarios]
provider_outage = 0.0
"#;

#[test]
fn peak_windows_run_at_ten_times_the_base_rate() {
    let run = run(FLAT_DAY_WITH_A_PEAK, 9, 86_400, 1.0);
    let decoded = decode_all(&run.out);
    let (_, accepted) = ledger(&decoded);
    let start: DateTime<Utc> = "2026-11-16T00:00:00Z".parse().expect("the default start");
    // Bets by the minute of the day they were placed (sessions start at the configured rate
    // and last minutes, so the window's middle is measured).
    let (mut peak, mut base) = (0u64, 0u64);
    for (_, valid) in &accepted {
        if valid.tx.kind != Kind::Bet || valid.tx.occurred_at < start {
            continue;
        }
        let minute = valid.tx.occurred_at.hour() * 60 + valid.tx.occurred_at.minute();
        if (12 * 60 + 15..12 * 60 + 45).contains(&minute) {
            peak += 1;
        } else if (2 * 60..10 * 60).contains(&minute) {
            base += 1;
        }
    }
    let peak_rate = peak as f64 / 30.0;
    let base_rate = base as f64 / 480.0;
    let ratio = peak_rate / base_rate;
    assert!((8.5..=11.5).contains(&ratio), "peak {peak_rate:.1} bets/min vs base {base_rate:.1}: ratio {ratio:.2}");
}

const FLAT_WEEK_WITH_DOUBLE_WEEKENDS: &str = r#"
[traffic]
hourly_weights = [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]
weekend_factor = 2.0
peak_windows = []
"#;

#[test]
fn weekends_run_at_the_weekend_factor() {
    // Monday 2026-11-16 to Sunday 2026-11-22.
    let run = run(FLAT_WEEK_WITH_DOUBLE_WEEKENDS, 4, 7 * 86_400, 0.3);
    let decoded = decode_all(&run.out);
    let (_, accepted) = ledger(&decoded);
    // Sessions by the UTC day of their first record.
    let mut first_seen: HashMap<(String, String), DateTime<Utc>> = HashMap::new();
    for (provider, valid) in &accepted {
        if let Some(session) = &valid.tx.session_id {
            let at = first_seen.entry((provider.clone(), session.clone())).or_insert(valid.tx.occurred_at);
            *at = (*at).min(valid.tx.occurred_at);
        }
    }
    let mut per_day: BTreeMap<String, f64> = BTreeMap::new();
    for at in first_seen.values() {
        *per_day.entry(at.date_naive().to_string()).or_default() += 1.0;
    }
    let day = |date: &str| per_day.get(date).copied().unwrap_or(0.0);
    let weekday = (16..=20).map(|d| day(&format!("2026-11-{d}"))).sum::<f64>() / 5.0;
    let weekend = (day("2026-11-21") + day("2026-11-22")) / 2.0;
    let ratio = weekend / weekday;
    assert!(weekday > 500.0, "{per_day:?}");
    assert!((1.7..=2.3).contains(&ratio), "weekend {weekend} vs weekday {weekday} sessions a day: {ratio:.2}");
}

#[test]
fn the_example_configuration_is_the_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/simulate.toml");
    let example = SimConfig::load(&path).expect("examples/simulate.toml loads");
    let default = SimConfig::default();
    // The types hold floats and tables without PartialEq; their debug forms compare all fields.
    assert_eq!(format!("{example:?}"), format!("{default:?}"));
}

#[test]
fn bad_configurations_are_clear_errors() {
    let error = SimConfig::parse("[scenarios]\nrug_pull = 0.1\n").expect_err("an unknown scenario");
    assert!(error.to_string().contains("rug_pull"), "{error}");
    let config = SimConfig::parse("[scenarios]\nduplicate_delivery = 1.5\n").expect("parses");
    let dir = tempfile::tempdir().expect("a temp dir");
    let options = RunOptions { seed: 1, duration_seconds: 60, rate_per_second: 1.0, out: dir.path().join("out") };
    let error = simulate(&config, &options).expect_err("a probability above 1");
    assert!(error.to_string().contains("scenarios.duplicate_delivery"), "{error}");
    // A provider whose adapter has no word for a kind it must send.
    let text = settlement::simulate::DEFAULT_PROVIDERS_TOML.replacen("CANCEL = \"rollback\"\n", "", 1);
    let config = SimConfig::parse(&text).expect("parses");
    let error = simulate(&config, &options).expect_err("no rollback word");
    assert!(error.to_string().contains("provider spinhub") && error.to_string().contains("rollback"), "{error}");
}

// ---------------------------------------------------------------------------------------
// Regression tests from the review pass: each is named after the bug it pins.

fn simulate_error(config_text: &str, duration_seconds: u64, rate_per_second: f64) -> String {
    let config = SimConfig::parse(config_text).expect("the test configuration parses");
    let dir = tempfile::tempdir().expect("a temp dir");
    let options = RunOptions { seed: 1, duration_seconds, rate_per_second, out: dir.path().join("out") };
    match simulate(&config, &options) {
        Ok(summary) => panic!("expected a configuration error, the run made {} transactions", summary.transactions),
        Err(error) => error.to_string(),
    }
}

#[test]
fn huge_configuration_values_are_clear_errors_not_panics_or_overflows() {
    // A chip of i64::MAX minor units overflowed (a panic in debug builds, wrapped amounts
    // in release builds).
    let error = simulate_error(
        "[[currencies]]\ncode = \"USD\"\nshare = 1.0\nchip_minor = 9223372036854775807\n\
         [[currencies]]\ncode = \"KRW\"\nshare = 1.0\nchip_minor = 100\n",
        600,
        1.0,
    );
    assert!(error.contains("chip_minor") && error.contains("10000"), "{error}");
    // An infinite traffic share made the per-minute draw NaN, and rand's gen_bool panicked.
    let text = settlement::simulate::DEFAULT_PROVIDERS_TOML.replacen("traffic_share = 0.55", "traffic_share = inf", 1);
    let error = simulate_error(&text, 600, 1.0);
    assert!(error.contains("provider spinhub") && error.contains("traffic_share"), "{error}");
    // A huge episode rate asked for an astronomically long list of outage windows.
    let error = simulate_error("[scenarios]\nprovider_outage = 1e300\n", 600, 1.0);
    assert!(error.contains("scenarios.provider_outage"), "{error}");
    // Currency shares that are all zero gave every player the last currency silently.
    let error = simulate_error(
        "[[currencies]]\ncode = \"USD\"\nshare = 0.0\nchip_minor = 10\n[[currencies]]\ncode = \"KRW\"\nshare = 0.0\nchip_minor = 100\n",
        600,
        1.0,
    );
    assert!(error.contains("currencies") && error.contains("all 0"), "{error}");
    // The most a run may be asked for: 10^6 tx/s for a year would never finish.
    let error = simulate_error("", 366 * 86_400, 1_000_000.0);
    assert!(error.contains("rate × duration"), "{error}");
    // A batch size of 0 was quietly taken as 1.
    let text =
        settlement::simulate::DEFAULT_PROVIDERS_TOML.replacen("batch_records_max = 2000", "batch_records_max = 0", 1);
    let error = simulate_error(&text, 600, 1.0);
    assert!(error.contains("provider globalwire") && error.contains("batch_records_max"), "{error}");
}

#[test]
fn a_fixed_width_amount_wider_than_its_field_is_an_error_not_a_truncated_number() {
    // globalwire's amount field cut to 5 characters (sign and 4 digits): every deposit is
    // wider. The encoder used to keep the leading characters, a different amount.
    let text = settlement::simulate::DEFAULT_PROVIDERS_TOML.replacen(
        "amount_minor = { start_chars = 32, width_chars = 13 }",
        "amount_minor = { start_chars = 32, width_chars = 5 }",
        1,
    );
    assert_ne!(text, settlement::simulate::DEFAULT_PROVIDERS_TOML);
    let error = simulate_error(&text, 3600, 5.0);
    assert!(error.contains("amount_minor") && error.contains("5"), "{error}");
}

/// A day with a daylight-saving change in the game providers' zones (Europe/Malta and
/// Europe/London go back an hour at 01:00 UTC on 2026-10-25), many behavioural episodes, and a mismatch
/// on every statement line (no malformed records: a spike's history is what the ledger has).
const DST_DAY: &str = r#"
start = "2026-10-24T12:00:00Z"
[scenarios]
amount_spike = 0.03
settlement_mismatch = 1.0
velocity_burst = 0.01
rollback_abuse = 0.02
cash_through = 0.02
bonus_abuse = 0.01
provider_outage = 0.0
malformed_record = 0.0
"#;

fn dst_run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| run(DST_DAY, 21, 24 * 3600, 2.0))
}

#[test]
fn settlement_mismatch_episodes_span_the_business_day_also_on_daylight_saving_days() {
    // The episode used to end 24 h after the local midnight, but 2026-10-25 in Europe is 25 h.
    let run = dst_run();
    let config = Config::load(&run.out.join("settlewatch.toml")).expect("settlewatch.toml");
    let zones: BTreeMap<String, chrono_tz::Tz> =
        config.providers.iter().map(|provider| (provider.name.clone(), provider.timezone().expect("a zone"))).collect();
    let episodes: BTreeMap<String, BTreeMap<String, String>> =
        read_csv(&run.out.join("episodes.csv")).into_iter().map(|row| (row["episode"].clone(), row)).collect();
    let mut long_days = 0;
    for row in read_csv(&run.out.join("statement_mismatches.csv")) {
        let episode = &episodes[&row["episode"]];
        let date: chrono::NaiveDate = row["business_date"].parse().expect("a date");
        let period = settlement::statement::Period::day(date, zones[&row["provider"]]).expect("a period");
        let start: DateTime<Utc> = episode["start"].parse().expect("a start");
        let end: DateTime<Utc> = episode["end"].parse().expect("an end");
        assert_eq!((start, end), (period.from, period.to), "{row:?}");
        if period.to - period.from == Duration::hours(25) {
            long_days += 1;
        }
    }
    assert!(long_days > 0, "the run has no 25-hour business day with a mismatch");
}

#[test]
fn amount_spikes_stand_far_above_the_players_own_earlier_bets() {
    // A spike used to be drawn in any round, often the first bet of the session (and of the
    // player), so there was no history for it to stand out from.
    let run = dst_run();
    let decoded = decode_all(&run.out);
    let (_, accepted) = ledger(&decoded);
    let spikes: BTreeSet<(String, String)> = read_csv(&run.out.join("truth.csv"))
        .into_iter()
        .filter(|row| row["scenario"] == "amount_spike" && row["kind"] == "bet")
        .map(|row| (row["provider"].clone(), row["provider_tx_id"].clone()))
        .collect();
    assert!(spikes.len() > 50, "{} spikes", spikes.len());
    // Bets by (provider, account) in the order the provider numbered them (its ids are a
    // prefix and a zero-padded sequence), which is play order; wall times are not, in the
    // hour London repeats.
    let mut history: HashMap<(String, String), Vec<i64>> = HashMap::new();
    let mut checked = 0;
    let mut bets: Vec<&(String, ValidTransaction)> =
        accepted.iter().filter(|(_, valid)| valid.tx.kind == Kind::Bet).collect();
    bets.sort_by(|a, b| (&a.0, &a.1.tx.provider_tx_id).cmp(&(&b.0, &b.1.tx.provider_tx_id)));
    for (provider, valid) in bets {
        let key = (provider.clone(), valid.tx.account.clone());
        let earlier = history.entry(key).or_default();
        if spikes.contains(&(provider.clone(), valid.tx.provider_tx_id.clone())) {
            assert!(
                earlier.len() >= 5,
                "{provider} {}: a spike after only {} bets",
                valid.tx.provider_tx_id,
                earlier.len()
            );
            let largest = earlier.iter().copied().max().unwrap_or(0);
            assert!(
                valid.amount_minor >= 10 * largest,
                "{provider} {}: spike {} vs the player's largest earlier bet {largest}",
                valid.tx.provider_tx_id,
                valid.amount_minor
            );
            checked += 1;
        }
        if !spikes.contains(&(provider.clone(), valid.tx.provider_tx_id.clone())) {
            // The history is the player's ordinary play (a player may spike twice).
            earlier.push(valid.amount_minor);
        }
    }
    assert_eq!(checked, spikes.len());
}

#[test]
fn accepted_truth_rows_describe_the_transaction_the_ledger_stores_also_in_the_repeated_dst_hour() {
    // kickoff writes local times without an offset; in the hour Europe/London repeats, the
    // adapter takes the earlier instant, and the truth file used to give the later one.
    let run = dst_run();
    let decoded = decode_all(&run.out);
    let (_, accepted) = ledger(&decoded);
    let stored: HashMap<(String, String), &ValidTransaction> =
        accepted.iter().map(|(provider, valid)| ((provider.clone(), valid.tx.provider_tx_id.clone()), valid)).collect();
    let repeated_hour = ("2026-10-25T01:00:00Z".parse::<DateTime<Utc>>().expect("a time"), Duration::hours(1));
    let (mut rows, mut in_repeated_hour) = (0, 0);
    for row in read_csv(&run.out.join("truth.csv")) {
        if row["expected_outcome"] != "accepted" {
            continue;
        }
        let key = (row["provider"].clone(), row["provider_tx_id"].clone());
        let valid = stored.get(&key).unwrap_or_else(|| panic!("{key:?}: labelled accepted, not stored"));
        let occurred_at: DateTime<Utc> = row["occurred_at"].parse().expect("a time");
        assert_eq!(
            (
                row["kind"].as_str(),
                row["account"].as_str(),
                row["currency"].as_str(),
                row["amount_minor"].parse::<i64>().ok()
            ),
            (valid.tx.kind.as_str(), valid.tx.account.as_str(), valid.tx.currency.as_str(), Some(valid.amount_minor)),
            "{key:?}"
        );
        assert_eq!(occurred_at, valid.tx.occurred_at, "{key:?}: occurred_at");
        rows += 1;
        let local_repeat = repeated_hour.0 - repeated_hour.1..repeated_hour.0 + repeated_hour.1;
        if row["provider"] == "kickoff" && local_repeat.contains(&occurred_at) {
            in_repeated_hour += 1;
        }
    }
    assert!(rows > 500 && in_repeated_hour > 0, "{rows} rows, {in_repeated_hour} in London's repeated hour");
}

#[test]
fn velocity_bursts_keep_their_regular_timing_in_formats_with_whole_seconds() {
    // kickoff's CSV carries whole seconds; a bot at 200-500 ms intervals was stored as bets
    // 0 or 1 s apart, so nothing regular was left to see. (The bot jitters by 0-3 ms.)
    let run = dst_run();
    let decoded = decode_all(&run.out);
    let (_, accepted) = ledger(&decoded);
    let stored: HashMap<(String, String), &ValidTransaction> =
        accepted.iter().map(|(provider, valid)| ((provider.clone(), valid.tx.provider_tx_id.clone()), valid)).collect();
    let mut bursts: BTreeMap<String, Vec<(String, DateTime<Utc>)>> = BTreeMap::new();
    for row in read_csv(&run.out.join("truth.csv")) {
        if row["scenario"] == "velocity_burst" && row["kind"] == "bet" {
            let valid = stored[&(row["provider"].clone(), row["provider_tx_id"].clone())];
            bursts.entry(row["episode"].clone()).or_default().push((row["provider"].clone(), valid.tx.occurred_at));
        }
    }
    let mut per_provider: BTreeMap<String, u64> = BTreeMap::new();
    for (episode, bets) in &bursts {
        let mut times: Vec<DateTime<Utc>> = bets.iter().map(|(_, at)| *at).collect();
        times.sort();
        let gaps: Vec<i64> = times.windows(2).map(|pair| (pair[1] - pair[0]).num_milliseconds()).collect();
        let (shortest, longest) = (gaps.iter().min().copied().unwrap_or(0), gaps.iter().max().copied().unwrap_or(0));
        assert!(
            bets.len() >= 40 && shortest >= 195 && longest - shortest <= 10,
            "{episode} at {}: {} bets, stored gaps {shortest}..{longest} ms",
            bets[0].0,
            bets.len()
        );
        *per_provider.entry(bets[0].0.clone()).or_default() += 1;
    }
    assert!(per_provider.get("kickoff").copied().unwrap_or(0) > 0, "no burst at kickoff: {per_provider:?}");
    assert!(per_provider.get("spinhub").copied().unwrap_or(0) > 0, "no burst at spinhub: {per_provider:?}");
}

#[test]
fn behavioural_episodes_look_the_way_the_catalogue_says() {
    // Rollback abuse reverses losing bets or bets whose win was already paid; cash-through
    // is a deposit and a withdrawal of the same amount around at most two minimum bets;
    // bonus abuse wagers the bonus in equal bets and withdraws it afterwards.
    let run = dst_run();
    let decoded = decode_all(&run.out);
    let (_, accepted) = ledger(&decoded);
    let stored: HashMap<(String, String), &ValidTransaction> =
        accepted.iter().map(|(provider, valid)| ((provider.clone(), valid.tx.provider_tx_id.clone()), valid)).collect();
    let mut wins_by_round: HashMap<(String, String), DateTime<Utc>> = HashMap::new();
    for (provider, valid) in &accepted {
        if let (Kind::Win, Some(round)) = (valid.tx.kind, &valid.tx.round_id) {
            wins_by_round.insert((provider.clone(), round.clone()), valid.tx.occurred_at);
        }
    }
    let mut episodes: BTreeMap<(String, String), Vec<(String, &ValidTransaction)>> = BTreeMap::new();
    for row in read_csv(&run.out.join("truth.csv")) {
        if row["expected_outcome"] == "accepted" {
            let valid = stored[&(row["provider"].clone(), row["provider_tx_id"].clone())];
            episodes
                .entry((row["scenario"].clone(), row["episode"].clone()))
                .or_default()
                .push((row["provider"].clone(), valid));
        }
    }
    // kickoff's local times in the hour London repeats decode an hour early (the provider's
    // format says no more), so order in time is not checked there.
    let repeat: std::ops::Range<DateTime<Utc>> =
        "2026-10-25T00:00:00Z".parse().expect("a time").."2026-10-25T02:00:00Z".parse().expect("a time");
    let ordered = |times: &[DateTime<Utc>]| !times.iter().any(|at| repeat.contains(at));
    let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
    for ((scenario, episode), records) in &episodes {
        let of = |kind: Kind| records.iter().filter(move |(_, valid)| valid.tx.kind == kind).collect::<Vec<_>>();
        match scenario.as_str() {
            "rollback_abuse" => {
                assert!((2..=5).contains(&records.len()), "{episode}: {} rollbacks", records.len());
                for (provider, rollback) in records {
                    assert_eq!(rollback.tx.kind, Kind::Rollback, "{episode}");
                    let original = rollback.tx.original_tx_id.clone().expect("a rollback names its bet");
                    let bet = stored[&(provider.clone(), original)];
                    assert_eq!(
                        (bet.tx.kind, &bet.tx.account, bet.amount_minor),
                        (Kind::Bet, &rollback.tx.account, rollback.amount_minor)
                    );
                    let round = bet.tx.round_id.clone().expect("a round");
                    if !ordered(&[bet.tx.occurred_at, rollback.tx.occurred_at]) {
                        continue;
                    }
                    if let Some(win_at) = wins_by_round.get(&(provider.clone(), round)) {
                        assert!(*win_at <= rollback.tx.occurred_at, "{episode}: the rollback comes before the win");
                    }
                    assert!(
                        rollback.tx.occurred_at - bet.tx.occurred_at >= Duration::seconds(59),
                        "{episode}: not minutes later: bet {} at {}, rollback at {}",
                        bet.tx.provider_tx_id,
                        bet.tx.occurred_at,
                        rollback.tx.occurred_at
                    );
                }
            }
            "cash_through" => {
                let (deposits, withdrawals, bets) = (of(Kind::Deposit), of(Kind::Withdrawal), of(Kind::Bet));
                assert!(deposits.len() == 1 && withdrawals.len() == 1 && bets.len() <= 2, "{episode}: {records:?}");
                let (deposit, withdrawal) = (deposits[0].1, withdrawals[0].1);
                assert_eq!(deposit.amount_minor, withdrawal.amount_minor, "{episode}");
                let gap = withdrawal.tx.occurred_at - deposit.tx.occurred_at;
                assert!(gap > Duration::zero() && gap <= Duration::minutes(31), "{episode}: {gap}");
                for (_, bet) in &bets {
                    assert!(
                        bet.amount_minor * 50 <= deposit.amount_minor,
                        "{episode}: a bet of {} is not little play",
                        bet.amount_minor
                    );
                }
            }
            "bonus_abuse" => {
                let (bonuses, withdrawals, bets) = (of(Kind::Bonus), of(Kind::Withdrawal), of(Kind::Bet));
                assert!(bonuses.len() == 1 && withdrawals.len() == 1 && !bets.is_empty(), "{episode}");
                let (bonus, withdrawal) = (bonuses[0].1, withdrawals[0].1);
                let stake = bets[0].1.amount_minor;
                assert!(bets.iter().all(|(_, bet)| bet.amount_minor == stake), "{episode}: unequal bets");
                let wagered = stake * bets.len() as i64;
                assert!(
                    wagered >= bonus.amount_minor || bets.len() == 150,
                    "{episode}: wagered {wagered} of {}",
                    bonus.amount_minor
                );
                assert_eq!(withdrawal.amount_minor, bonus.amount_minor, "{episode}");
                let times: Vec<DateTime<Utc>> = records.iter().map(|(_, valid)| valid.tx.occurred_at).collect();
                if ordered(&times) {
                    assert!(bets.iter().all(|(_, bet)| bet.tx.occurred_at < withdrawal.tx.occurred_at), "{episode}");
                }
            }
            _ => continue,
        }
        *seen
            .entry(match scenario.as_str() {
                "rollback_abuse" => "rollback_abuse",
                "cash_through" => "cash_through",
                _ => "bonus_abuse",
            })
            .or_default() += 1;
    }
    assert!(seen.len() == 3 && seen.values().all(|count| *count >= 10), "{seen:?}");
}
