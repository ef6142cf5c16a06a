//! Crash test: `settlewatch ingest` is killed with SIGKILL at random points, many times,
//! and restarted. After every kill each acknowledged record is stored exactly once and
//! `settlewatch verify` is clean; after a final complete run the ledger equals that of an
//! uninterrupted run of the same input into a fresh database.
//!
//! Iterations: `SETTLEWATCH_CRASH_ITERATIONS` (default 20). Seed of the kill timing:
//! `SETTLEWATCH_CRASH_SEED` (default fixed). The input file is the same for every seed.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use settlement::ingest::{CHUNK_ITEMS_MAX, IN_FLIGHT_CHUNKS_MAX};
use settlement::store::{DeadLetterFilter, Store};

use common::{open_store, run_in, runtime, settlewatch, Run};

const DEFAULT_ITERATIONS: usize = 20;
const DEFAULT_KILL_SEED: u64 = 0x5e_77_1e;
const INPUT_SEED: u64 = 20_261_124;
/// Data rows of the generated file: enough chunks that acknowledgements start well before
/// the end (the CLI acknowledges a chunk once `IN_FLIGHT_CHUNKS_MAX` are in flight or the
/// file is read), about 1–3 s for a full debug-build run, so kills land before, between
/// and during commits.
fn rows() -> usize {
    (CHUNK_ITEMS_MAX * (IN_FLIGHT_CHUNKS_MAX + 4)).clamp(30_000, 120_000)
}
const FILE_NAME: &str = "payfast-crash.csv";

/// The payfast provider of `examples/settlewatch.toml` (the store is given per run).
const CONFIG: &str = r#"
[[providers]]
name = "payfast"
timezone = "Asia/Seoul"
currencies = ["KRW", "USD"]

[providers.adapter]
type = "csv_settlement"
timestamp_format = "%Y-%m-%d %H:%M:%S"
amount_in_minor_units = true

[providers.adapter.columns]
id = "txn_id"
kind = "txn_type"
account = "merchant_account"
currency = "currency"
amount = "amount_minor"
occurred_at = "settled_at"
original_id = "ref_txn_id"

[providers.adapter.kinds]
DEP = "deposit"
WDR = "withdrawal"
FEE = "fee"
CHB = "chargeback"
"#;

/// What an input record must become.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// A new transaction with this id.
    New(String),
    /// An exact redelivery of an earlier record: nothing new is stored.
    Duplicate,
    /// The id of an earlier record with changed content: one conflict row.
    Conflict(String),
    /// Rejected: one dead letter.
    Dead,
}

struct Input {
    /// Record number (the CSV line number) → what it must become, in file order.
    records: Vec<(u64, Expect)>,
}

impl Input {
    fn new_ids(&self) -> usize {
        self.records.iter().filter(|(_, expect)| matches!(expect, Expect::New(_))).count()
    }
    fn count(&self, wanted: fn(&Expect) -> bool) -> usize {
        self.records.iter().filter(|(_, expect)| wanted(expect)).count()
    }
}

/// A deterministic payfast CSV: deposits, withdrawals and fees in KRW and USD, valid
/// chargebacks (full and partial) of earlier deposits, exact redeliveries, conflicting
/// redeliveries, and rows that must be dead-lettered for eight different reasons.
fn generate_input(dir: &Path) -> Input {
    let mut rng = StdRng::seed_from_u64(INPUT_SEED);
    // A month back, so nothing is in the future wherever and whenever this runs.
    let base = (Utc::now() - chrono::Duration::days(30)).date_naive().and_hms_opt(0, 0, 0).expect("midnight");
    let stamp = |at: NaiveDateTime| at.format("%Y-%m-%d %H:%M:%S").to_string();
    let mut text =
        String::from("txn_id,txn_type,merchant_account,currency,amount_minor,settled_at,ref_txn_id,description\n");
    let rows = rows();
    let mut records = Vec::with_capacity(rows);
    // Deposits that may be charged back: (id, account, currency, amount, charged back).
    let mut deposits: Vec<(String, String, &str, i64, bool)> = Vec::new();
    // Plain valid rows that may be redelivered: (id, line without the id, conflicted already).
    let mut plain: Vec<(String, String, bool)> = Vec::new();
    for row in 1..=rows {
        let record = row as u64 + 1; // line 1 is the header
        let id = format!("PF-CRASH-{row:06}");
        let account = format!("merchant-{:03}", rng.gen_range(0..200));
        let (currency, amount) = if rng.gen_bool(0.8) {
            ("KRW", rng.gen_range(1..5_000_000i64))
        } else {
            ("USD", rng.gen_range(1..500_000i64))
        };
        let at = stamp(base + chrono::Duration::seconds(row as i64 * 20));
        let roll = rng.gen_range(0..1000);
        let (line, expect) = if roll < 12 {
            let line = match rng.gen_range(0..8) {
                0 => format!("{id},DEP,{account},{currency},12.50,{at},,not minor units"),
                1 => format!("{id},XYZ,{account},{currency},{amount},{at},,unknown kind"),
                2 => format!("{id},DEP,{account},EUR,{amount},{at},,currency not allowed"),
                3 => format!("{id},DEP,,{currency},{amount},{at},,no account"),
                4 => format!("{id},DEP,{account},{currency},{amount},2026-02-30 25:61:00,,impossible time"),
                5 => format!("{id},CHB,{account},{currency},{amount},{at},PF-NOWHERE-{row},unknown original"),
                6 => {
                    let future = stamp(Utc::now().naive_utc() + chrono::Duration::days(400));
                    format!("{id},DEP,{account},{currency},{amount},{future},,in the future")
                }
                _ => match deposits.last() {
                    Some((original, account, currency, amount, _)) => format!(
                        "{id},CHB,{account},{currency},{},{at},{original},\"Chargeback, above the original\"",
                        amount + 1
                    ),
                    None => format!("{id},DEP,{account},{currency},-,{at},,no amount"),
                },
            };
            (line, Expect::Dead)
        } else if roll < 32 && deposits.iter().any(|deposit| !deposit.4) {
            let open: Vec<usize> = (0..deposits.len()).filter(|&index| !deposits[index].4).collect();
            let deposit = &mut deposits[open[rng.gen_range(0..open.len())]];
            deposit.4 = true;
            let charged = if rng.gen_bool(0.5) { deposit.3 } else { rng.gen_range(1..=deposit.3) };
            let line = format!(
                "{id},CHB,{},{},{charged},{at},{},Chargeback: disputed deposit",
                deposit.1, deposit.2, deposit.0
            );
            (line, Expect::New(id))
        } else if roll < 37 && !plain.is_empty() {
            let (original, rest, _) = &plain[rng.gen_range(0..plain.len())];
            (format!("{original},{rest}"), Expect::Duplicate)
        } else if roll < 40 && plain.iter().any(|row| !row.2) {
            let open: Vec<usize> = (0..plain.len()).filter(|&index| !plain[index].2).collect();
            let (original, _, conflicted) = &mut plain[open[rng.gen_range(0..open.len())]];
            *conflicted = true;
            let line = format!("{original},FEE,{account},{currency},{amount},{at},,\"Redelivered, changed\"");
            (line, Expect::Conflict(original.clone()))
        } else {
            let kind = match rng.gen_range(0..20) {
                0..=11 => "DEP",
                12..=16 => "WDR",
                _ => "FEE",
            };
            let description = if row % 7 == 0 { "\"Payout to \"\"main\"\" account\"" } else { "settled" };
            let rest = format!("{kind},{account},{currency},{amount},{at},,{description}");
            if kind == "DEP" {
                deposits.push((id.clone(), account.clone(), currency, amount, false));
            }
            plain.push((id.clone(), rest.clone(), false));
            (format!("{id},{rest}"), Expect::New(id))
        };
        text.push_str(&line);
        text.push('\n');
        records.push((record, expect));
    }
    std::fs::write(dir.join(FILE_NAME), text).expect("write the input file");
    Input { records }
}

/// Highest acknowledged record in an acknowledgement log. Only complete lines count: a
/// line cut short by the kill (no final newline) acknowledges nothing.
fn acked_record(path: &Path) -> (u64, usize) {
    let Ok(text) = std::fs::read_to_string(path) else { return (0, 0) };
    let mut highest = 0;
    let mut lines = 0;
    for line in text.split_inclusive('\n').filter(|line| line.ends_with('\n')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(
            fields.len() == 3 && fields[0] == "committed",
            "acknowledgement log {} has a malformed line {line:?}",
            path.display()
        );
        let record: u64 = fields[2].parse().expect("RECORD is a number");
        highest = highest.max(record);
        lines += 1;
    }
    (highest, lines)
}

type Keys = Vec<(String, String, [u8; 32])>;

/// Everything the store holds that the checks compare.
struct Snapshot {
    keys: Keys,
    dead_letter_records: Vec<u64>,
    conflict_records: Vec<(String, u64)>,
    files_recorded: i64,
}

async fn snapshot(store: &Store) -> Snapshot {
    let keys = store.transaction_keys().await.expect("transaction keys");
    let filter = DeadLetterFilter { provider: None, status: None, limit: settlement::store::LIST_ROWS_MAX };
    let dead_letters = store.dead_letters(&filter).await.expect("dead letters");
    for letter in &dead_letters {
        assert_eq!((letter.provider.as_str(), letter.source.as_str()), ("payfast", FILE_NAME));
    }
    let conflicts = store.conflicts(None).await.expect("conflicts");
    let files_recorded: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM ingested_files").fetch_one(store.pool()).await.expect("count files");
    Snapshot {
        keys,
        dead_letter_records: dead_letters.iter().map(|letter| letter.record).collect(),
        conflict_records: conflicts.iter().map(|conflict| (conflict.provider_tx_id.clone(), conflict.record)).collect(),
        files_recorded,
    }
}

/// After a kill: every record up to `acked` is stored exactly once, nothing else is stored
/// that the input does not hold, and the transactions are a prefix (in order) of the
/// uninterrupted run's: records are committed in file order, a commit is all or nothing.
fn check_after_kill(input: &Input, reference: &Keys, snapshot: &Snapshot, acked: u64, iteration: usize) {
    let keys = &snapshot.keys;
    let context = format!("iteration {iteration}, acknowledged up to record {acked}");
    assert!(
        keys.len() <= reference.len(),
        "{context}: {} transactions stored, the input has {}",
        keys.len(),
        reference.len()
    );
    if let Some(at) = (0..keys.len()).find(|&index| keys[index] != reference[index]) {
        panic!(
            "{context}: transaction #{at} is {:?}, the uninterrupted run stored {:?} there",
            keys[at], reference[at]
        );
    }
    let stored: HashSet<&str> = keys.iter().map(|key| key.1.as_str()).collect();
    assert_eq!(stored.len(), keys.len(), "{context}: a transaction id is stored twice");

    let dead: HashSet<u64> = snapshot.dead_letter_records.iter().copied().collect();
    assert_eq!(dead.len(), snapshot.dead_letter_records.len(), "{context}: a record is dead-lettered twice");
    let conflicts: HashSet<&(String, u64)> = snapshot.conflict_records.iter().collect();
    assert_eq!(conflicts.len(), snapshot.conflict_records.len(), "{context}: a conflict is stored twice");

    let expected: HashMap<u64, &Expect> = input.records.iter().map(|(record, expect)| (*record, expect)).collect();
    for record in &dead {
        assert_eq!(expected.get(record), Some(&&Expect::Dead), "{context}: record {record} is dead-lettered");
    }
    for (id, record) in &conflicts {
        assert_eq!(expected.get(record), Some(&&Expect::Conflict(id.clone())), "{context}: record {record} conflicts");
    }
    for (record, expect) in input.records.iter().take_while(|(record, _)| *record <= acked) {
        match expect {
            Expect::New(id) => {
                assert!(stored.contains(id.as_str()), "{context}: acknowledged record {record} ({id}) is lost")
            }
            Expect::Dead => {
                assert!(dead.contains(record), "{context}: acknowledged rejected record {record} has no dead letter")
            }
            Expect::Conflict(id) => assert!(
                conflicts.contains(&(id.clone(), *record)),
                "{context}: acknowledged conflicting record {record} ({id}) is not kept"
            ),
            Expect::Duplicate => {}
        }
    }
    if snapshot.files_recorded > 0 {
        // The file is recorded as ingested only once all of it is stored.
        assert_eq!(keys.len(), reference.len(), "{context}: the file is recorded as ingested but incomplete");
        assert_eq!(
            dead.len(),
            input.count(|expect| *expect == Expect::Dead),
            "{context}: recorded, dead letters missing"
        );
    }
}

fn ingest_args<'a>(database: &'a str, ack_log: Option<&'a str>, force: bool) -> Vec<&'a str> {
    let mut args = vec!["--config", "crash.toml", "--database-url", database, "ingest", "--provider", "payfast"];
    if let Some(log) = ack_log {
        args.extend(["--ack-log", log]);
    }
    if force {
        args.push("--force");
    }
    args.push(FILE_NAME);
    args
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}

#[test]
fn acknowledged_records_survive_sigkill_and_restarts_converge() {
    let started = Instant::now();
    let iterations = env_number("SETTLEWATCH_CRASH_ITERATIONS", DEFAULT_ITERATIONS as u64) as usize;
    let seed = env_number("SETTLEWATCH_CRASH_SEED", DEFAULT_KILL_SEED);
    let temp = tempfile::tempdir().expect("a temp dir");
    let dir = temp.path();
    std::fs::write(dir.join("crash.toml"), CONFIG).expect("write the config");
    let input = generate_input(dir);
    let rt = runtime();

    // The uninterrupted run: the reference, and the time a full run takes.
    let reference_db = dir.join("reference.db");
    let reference_url = format!("sqlite:{}", reference_db.display());
    let clock = Instant::now();
    let run = run_in(dir, &ingest_args(&reference_url, None, false)).expect(0);
    let full_run = clock.elapsed();
    let (new, duplicates, conflicts, dead) = (
        input.new_ids(),
        input.count(|expect| *expect == Expect::Duplicate),
        input.count(|expect| matches!(expect, Expect::Conflict(_))),
        input.count(|expect| *expect == Expect::Dead),
    );
    assert!(
        run.stdout.contains(&format!(
            "{} units: {new} accepted, {duplicates} duplicates, {conflicts} conflicts, {dead} rejected",
            input.records.len()
        )),
        "reference run: {}",
        run.stdout
    );
    let (reference_keys, reference_balances, reference_counts) = rt.block_on(async {
        let store = open_store(&reference_db).await;
        let snapshot = snapshot(&store).await;
        check_after_kill(&input, &snapshot.keys, &snapshot, u64::MAX, 0);
        let result =
            (snapshot.keys, store.balances("").await.expect("balances"), store.counts().await.expect("counts"));
        store.close().await;
        result
    });
    let expected_ids: Vec<&str> = input
        .records
        .iter()
        .filter_map(|(_, expect)| match expect {
            Expect::New(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let reference_ids: Vec<&str> = reference_keys.iter().map(|key| key.1.as_str()).collect();
    assert_eq!(reference_ids, expected_ids, "the uninterrupted run stores the valid records in file order");

    // The crash loop.
    let crash_db = dir.join("crash.db");
    let crash_url = format!("sqlite:{}", crash_db.display());
    let mut rng = StdRng::seed_from_u64(seed);
    let longest = full_run.mul_f64(1.2).max(Duration::from_millis(60));
    let mut acked = 0u64;
    let (mut killed_running, mut killed_with_progress, mut finished_first) = (0, 0, 0);
    for iteration in 1..=iterations {
        let files_recorded = rt.block_on(async {
            if !crash_db.exists() {
                return 0;
            }
            let store = open_store(&crash_db).await;
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ingested_files")
                .fetch_one(store.pool())
                .await
                .expect("count files");
            store.close().await;
            count
        });
        let ack_log = format!("ack-{iteration}.log");
        // A completed file is recorded by checksum; --force makes the next run read it again.
        let args = ingest_args(&crash_url, Some(ack_log.as_str()), files_recorded > 0);
        let stdout = File::create(dir.join(format!("out-{iteration}.txt"))).expect("stdout file");
        let stderr = File::create(dir.join(format!("err-{iteration}.txt"))).expect("stderr file");
        let mut child = settlewatch()
            .current_dir(dir)
            .args(&args)
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("settlewatch starts");
        let delay = rng.gen_range(Duration::from_millis(20)..=longest);
        std::thread::sleep(delay);
        let status = match child.try_wait().expect("poll the child") {
            Some(status) => {
                finished_first += 1;
                status
            }
            None => {
                // On Unix, `Child::kill` sends SIGKILL: no destructor, no flush, no rollback
                // in the process; only what the database made durable survives.
                child.kill().expect("SIGKILL the child");
                killed_running += 1;
                child.wait().expect("reap the child")
            }
        };
        let stderr_text = std::fs::read_to_string(dir.join(format!("err-{iteration}.txt"))).unwrap_or_default();
        assert!(!stderr_text.contains("panicked"), "iteration {iteration}: the ingest panicked:\n{stderr_text}");
        if let Some(code) = status.code() {
            assert_eq!(code, 0, "iteration {iteration}: the ingest failed by itself:\n{stderr_text}");
        }
        let (acked_now, ack_lines) = acked_record(&dir.join(&ack_log));
        if status.code().is_none() && ack_lines > 0 && acked_now < input.records.last().expect("rows").0 {
            killed_with_progress += 1;
        }
        acked = acked.max(acked_now);

        rt.block_on(async {
            let store = open_store(&crash_db).await;
            let snapshot = snapshot(&store).await;
            store.close().await;
            check_after_kill(&input, &reference_keys, &snapshot, acked, iteration);
        });
        let verify = run_in(dir, &["--config", "crash.toml", "--database-url", &crash_url, "verify"]);
        assert_eq!(verify.code, Some(0), "iteration {iteration}: verify after the kill:\n{}", verify.stdout);
    }
    eprintln!(
        "crash test: {iterations} iterations, full run {full_run:?}; {killed_running} killed while running \
         ({killed_with_progress} after some commits and before the end), {finished_first} finished before the kill"
    );
    assert!(killed_running * 2 >= iterations, "most kills must hit a running ingest");
    assert!(iterations < 4 || killed_with_progress > 0, "some kills must land between the first and the last commit");

    // A final complete run, then the ledger equals the uninterrupted one.
    let recorded = rt.block_on(async {
        let store = open_store(&crash_db).await;
        let recorded = snapshot(&store).await.files_recorded > 0;
        store.close().await;
        recorded
    });
    let last = run_in(dir, &ingest_args(&crash_url, None, recorded)).expect(0);
    assert!(
        last.stdout.contains(&format!("{} units", input.records.len())),
        "the final run reads the whole file: {}",
        last.stdout
    );
    let again = run_in(dir, &ingest_args(&crash_url, None, false)).expect(0);
    assert!(again.stdout.contains("already ingested"), "a completed file is recognised: {}", again.stdout);
    rt.block_on(async {
        let store = open_store(&crash_db).await;
        let snapshot = snapshot(&store).await;
        check_after_kill(&input, &reference_keys, &snapshot, u64::MAX, iterations + 1);
        assert_eq!(snapshot.keys, reference_keys, "transactions (id, content hash, order) equal the uninterrupted run");
        assert_eq!(store.balances("").await.expect("balances"), reference_balances, "balances");
        let counts = store.counts().await.expect("counts");
        assert_eq!(counts, reference_counts, "transactions, postings, dead letters and conflicts");
        assert_eq!(counts.transactions as usize, new, "one transaction per valid record");
        assert_eq!(counts.dead_letters as usize, dead, "one dead letter per rejected record");
        assert_eq!(counts.conflicts as usize, conflicts, "one conflict per conflicting record");
        assert!(store.verify().await.expect("verify").is_clean());
        store.close().await;
    });
    let balances = |url: &str| -> Run {
        run_in(dir, &["--config", "crash.toml", "--database-url", url, "balances", "--json"]).expect(0)
    };
    let (crashed, uninterrupted) = (balances(&crash_url), balances(&reference_url));
    assert_eq!(crashed.stdout, uninterrupted.stdout, "`balances --json` after crashes equals the uninterrupted run's");
    let accounts: Vec<serde_json::Value> = serde_json::from_str(&crashed.stdout).expect("balances JSON");
    assert!(accounts.len() > 200, "the balances cover the merchants: {}", accounts.len());
    let by_currency: BTreeMap<String, usize> = accounts.iter().fold(BTreeMap::new(), |mut map, row| {
        *map.entry(row["currency"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        map
    });
    assert_eq!(by_currency.keys().map(String::as_str).collect::<Vec<_>>(), ["KRW", "USD"]);
    run_in(dir, &["--config", "crash.toml", "--database-url", &crash_url, "verify"]).expect(0);
    eprintln!("crash test finished in {:?}", started.elapsed());
}
