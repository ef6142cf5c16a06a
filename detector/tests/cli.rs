//! The `settlewatch` command line end to end: the real binary against real SQLite files,
//! each test in its own temp dir.

mod common;

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use common::{copy_dir, examples_dir, open_store, run_in, runtime, Run};

/// A temp dir holding a copy of `examples/` and one ledger.
struct Sandbox {
    temp: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let temp = tempfile::tempdir().expect("a temp dir");
        copy_dir(&examples_dir(), &temp.path().join("examples"));
        Sandbox { temp }
    }

    fn dir(&self) -> &Path {
        self.temp.path()
    }

    fn db(&self) -> PathBuf {
        self.dir().join("ledger.db")
    }

    /// `settlewatch --config CONFIG --database-url sqlite:ledger.db ARGS...` in the sandbox.
    fn run_with(&self, config: &str, args: &[&str]) -> Run {
        let url = format!("sqlite:{}", self.db().display());
        let mut all = vec!["--config", config, "--database-url", url.as_str()];
        all.extend_from_slice(args);
        run_in(self.dir(), &all)
    }

    /// With the example configuration.
    fn run(&self, args: &[&str]) -> Run {
        self.run_with("examples/settlewatch.toml", args)
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> String {
        std::fs::write(self.dir().join(name), bytes).expect("write a file");
        name.to_string()
    }
}

const EVO: &str = "examples/evo-live/payloads.jsonl";
const PAYFAST: &str = "examples/payfast/2026-11-24.csv";
const LEGACYBANK: &str = "examples/legacybank/BATCH0001.DAT";

#[test]
fn demo_runs_on_a_copy_of_the_examples() {
    let sandbox = Sandbox::new();
    let examples = sandbox.dir().join("examples");
    let run = run_in(sandbox.dir(), &["demo", "--examples", examples.to_str().expect("a UTF-8 path")]).expect(0);
    for expected in [
        "Settlement statement: evo-live  period 2026-11-24 (Europe/Malta)",
        "Settlement statement: payfast  period 2026-11-24 (Asia/Seoul)",
        "Settlement statement: legacybank  period 2026-11-24 (Europe/London)",
        "payloads.jsonl (evo-live): 7 units: 5 accepted, 0 duplicates, 0 conflicts, 2 rejected",
        "2026-11-24.csv (payfast): 6 units: 0 accepted, 5 duplicates, 0 conflicts, 1 rejected",
        "BATCH0001.DAT (legacybank): 4 units: 4 accepted",
        "== dead letters (3 open;",
        "== verify: clean (14 transactions, 28 postings, 14 accounts)",
    ] {
        assert!(run.stdout.contains(expected), "demo output lacks {expected:?}:\n{}", run.stdout);
    }
    // The example's store URL is relative: the ledger is in the current directory.
    assert!(sandbox.dir().join("settlewatch-demo.db").exists());
    // A second demo starts from a fresh ledger and prints the same.
    let again = run_in(sandbox.dir(), &["demo", "--examples", examples.to_str().expect("a UTF-8 path")]).expect(0);
    assert!(again.stdout.contains("== verify: clean (14 transactions, 28 postings, 14 accounts)"), "{}", again.stdout);
}

#[test]
fn ingest_twice_is_recognised_and_forced_reingest_is_all_duplicates() {
    let sandbox = Sandbox::new();
    let cases = [
        (
            "evo-live",
            EVO,
            "7 units: 5 accepted, 0 duplicates, 0 conflicts, 2 rejected (invalid_amount 1, bad_signature 1)",
            "7 units: 0 accepted, 5 duplicates, 0 conflicts, 2 rejected",
        ),
        (
            "payfast",
            PAYFAST,
            "6 units: 5 accepted, 0 duplicates, 0 conflicts, 1 rejected (invalid_amount 1)",
            "6 units: 0 accepted, 5 duplicates, 0 conflicts, 1 rejected",
        ),
        (
            "legacybank",
            LEGACYBANK,
            "4 units: 4 accepted, 0 duplicates, 0 conflicts, 0 rejected",
            "4 units: 0 accepted, 4 duplicates, 0 conflicts, 0 rejected",
        ),
    ];
    for (provider, file, first, forced) in cases {
        let run = sandbox.run(&["ingest", "--provider", provider, file]).expect(0);
        assert!(run.stdout.contains(&format!("{file} ({provider}): {first}")), "{provider} first run:\n{}", run.stdout);
        let run = sandbox.run(&["ingest", "--provider", provider, file]).expect(0);
        assert!(
            run.stdout.contains("already ingested") && run.stdout.contains("nothing done (use --force to re-run)"),
            "{provider} second run:\n{}",
            run.stdout
        );
        let run = sandbox.run(&["ingest", "--provider", provider, "--force", file]).expect(0);
        assert!(
            run.stdout.contains(&format!("{file} ({provider}): {forced}")),
            "{provider} forced run:\n{}",
            run.stdout
        );
    }
    runtime().block_on(async {
        let store = open_store(&sandbox.db()).await;
        let counts = store.counts().await.expect("counts");
        assert_eq!((counts.transactions, counts.postings, counts.dead_letters, counts.conflicts), (14, 28, 3, 0));
        store.close().await;
    });
    let list = sandbox.run(&["dead-letter", "list", "--status", "all"]).expect(0);
    assert!(list.stdout.contains("3 dead letters"), "{}", list.stdout);
    sandbox.run(&["verify"]).expect(0);
}

#[test]
fn settle_payfast_gives_the_exact_amounts() {
    let sandbox = Sandbox::new();
    sandbox.run(&["ingest", "--provider", "payfast", PAYFAST]).expect(0);
    let run = sandbox.run(&["settle", "--provider", "payfast", "--period", "2026-11-24", "--json"]).expect(0);
    let statement: Value = serde_json::from_str(&run.stdout).expect("settle --json prints JSON");
    assert_eq!(statement["provider"], "payfast");
    assert_eq!(statement["period"], "2026-11-24 (Asia/Seoul)");
    // The Seoul business day in UTC.
    assert_eq!(statement["from"], "2026-11-23T15:00:00+00:00");
    assert_eq!(statement["to"], "2026-11-24T15:00:00+00:00");
    assert_eq!(statement["revenue_share"], Value::Null);
    let currencies = statement["currencies"].as_object().expect("currencies");
    assert_eq!(currencies.keys().collect::<Vec<_>>(), ["KRW", "USD"]);

    // By hand from the CSV (amounts in minor units; KRW has no decimals, USD two):
    // KRW: deposit 001 1500000, withdrawal 003 300000, fee 004 4500, chargeback 005 of 001
    // 1500000 (the 23:59:59 fee is still inside the Seoul day). No games: GGR, NGR and
    // royalty are 0. Net payable = royalty + fees + withdrawals + chargebacks - deposits
    // = 0 + 4500 + 300000 + 1500000 - 1500000 = 304500.
    let krw = &currencies["KRW"];
    let line =
        |entry: &Value, name: &str| (entry[name]["count"].as_u64(), entry[name]["amount"].as_str().map(String::from));
    assert_eq!(line(krw, "deposits"), (Some(1), Some("1500000".into())));
    assert_eq!(line(krw, "withdrawals"), (Some(1), Some("300000".into())));
    assert_eq!(line(krw, "fees"), (Some(1), Some("4500".into())));
    assert_eq!(line(krw, "chargebacks"), (Some(1), Some("1500000".into())));
    assert_eq!(line(krw, "bets"), (Some(0), Some("0".into())));
    for (name, amount) in [("ggr", "0"), ("ngr", "0"), ("royalty", "0"), ("net_payable", "304500")] {
        assert_eq!(krw[name], amount, "KRW {name}");
    }
    // USD: deposit 002 of 25000 cents = 250.00; row 006 ("12.50" is not minor units) is
    // rejected, so it is not in the statement. Net payable = -250.00.
    let usd = &currencies["USD"];
    assert_eq!(line(usd, "deposits"), (Some(1), Some("250.00".into())));
    assert_eq!(line(usd, "withdrawals"), (Some(0), Some("0.00".into())));
    assert_eq!(line(usd, "chargebacks"), (Some(0), Some("0.00".into())));
    for (name, amount) in [("ggr", "0.00"), ("royalty", "0.00"), ("net_payable", "-250.00")] {
        assert_eq!(usd[name], amount, "USD {name}");
    }

    // The next day holds nothing; the table form carries the same figures.
    let next = sandbox.run(&["settle", "--provider", "payfast", "--period", "2026-11-25", "--json"]).expect(0);
    let next: Value = serde_json::from_str(&next.stdout).expect("JSON");
    assert_eq!(next["currencies"], serde_json::json!({}));
    let table = sandbox.run(&["settle", "--provider", "payfast", "--period", "2026-11-24"]).expect(0);
    assert!(table.stdout.contains("net payable") && table.stdout.contains("304500"), "{}", table.stdout);
    assert!(table.stdout.contains("-250.00"), "{}", table.stdout);

    // An unknown provider is a clear error.
    let unknown = sandbox.run(&["settle", "--provider", "nobody", "--period", "2026-11-24"]).expect(1);
    assert!(unknown.stderr.contains("provider \"nobody\" is not configured"), "{}", unknown.stderr);
}

fn player_balances(sandbox: &Sandbox) -> Value {
    let run = sandbox.run(&["balances", "--prefix", "player:", "--json"]).expect(0);
    serde_json::from_str(&run.stdout).expect("balances --json prints JSON")
}

/// The id of the dead letter of `record` in the listing.
fn dead_letter_id(listing: &str, record: u64) -> String {
    listing
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() > 5 && fields[4] == record.to_string()).then(|| fields[0].to_string())
        })
        .unwrap_or_else(|| panic!("no dead letter for record {record} in:\n{listing}"))
}

#[test]
fn dead_letters_replay_after_the_config_is_fixed() {
    let sandbox = Sandbox::new();
    let example = std::fs::read_to_string(sandbox.dir().join("examples/settlewatch.toml")).expect("the example config");
    assert!(example.contains("signing_secret = \"evo-live-demo-secret\""));
    let wrong = sandbox.write("wrong.toml", example.replace("evo-live-demo-secret", "not-the-secret"));

    // Every delivery fails its signature with the wrong secret: four whole-line dead letters.
    let run = sandbox.run_with(&wrong, &["ingest", "--provider", "evo-live", EVO]).expect(0);
    assert!(
        run.stdout.contains("4 units: 0 accepted, 0 duplicates, 0 conflicts, 4 rejected (bad_signature 4)"),
        "{}",
        run.stdout
    );
    assert_eq!(player_balances(&sandbox), serde_json::json!([]));
    let listing = sandbox.run(&["dead-letter", "list"]).expect(0).stdout;
    assert!(listing.contains("4 dead letters"), "{listing}");
    assert_eq!(listing.matches("bad_signature").count(), 4, "{listing}");
    let first = dead_letter_id(&listing, 1);
    let fourth = dead_letter_id(&listing, 4);

    // Replaying under the wrong secret changes nothing.
    let run = sandbox.run_with(&wrong, &["dead-letter", "replay", &first]).expect(3);
    assert!(run.stdout.contains(&format!("dead letter {first} stays open")), "{}", run.stdout);

    // With the secret fixed, line 1 (EVO-1001, a 25.00 USD bet of player-7) is taken.
    let run = sandbox.run(&["dead-letter", "replay", &first]).expect(0);
    assert!(run.stdout.contains("1 units: 1 accepted"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("dead letter {first} is replayed and closed")), "{}", run.stdout);
    assert_eq!(
        player_balances(&sandbox),
        serde_json::json!([{"account": "player:player-7", "balance": "25.00", "currency": "USD"}])
    );
    let open = sandbox.run(&["dead-letter", "list"]).expect(0).stdout;
    assert!(open.contains("3 dead letters"), "{open}");
    assert!(!open.lines().any(|line| line.split_whitespace().next() == Some(first.as_str())), "{open}");
    let all = sandbox.run(&["dead-letter", "list", "--status", "all"]).expect(0).stdout;
    assert!(all.lines().any(|line| line.split_whitespace().take(2).eq([first.as_str(), "replayed"])), "{all}");
    // A closed dead letter is not replayed twice.
    let twice = sandbox.run(&["dead-letter", "replay", &first]).expect(1);
    assert!(twice.stderr.contains("was replayed already"), "{}", twice.stderr);

    // Line 4 holds EVO-1006 (valid) and EVO-1007 ("12.345" USD): no config fixes the second.
    let run = sandbox.run(&["dead-letter", "replay", &fourth]).expect(3);
    assert!(
        run.stdout.contains("2 units: 1 accepted, 0 duplicates, 0 conflicts, 1 rejected (invalid_amount 1)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(&format!("dead letter {fourth} stays open")), "{}", run.stdout);
    let show = sandbox.run(&["dead-letter", "show", &fourth]).expect(0).stdout;
    for expected in [
        "code        invalid_amount",
        "field       money.amount",
        "reason      item 2: \"12.345\" has 3 decimal places, USD allows 2",
        "status      open (attempts 2)",
        "raw (642 bytes):",
        r#"\"tx_id\":\"EVO-1007\""#,
        r#"\"amount\":\"12.345\""#,
        "json_webhook delivery v1",
    ] {
        assert!(show.contains(expected), "dead-letter show lacks {expected:?}:\n{show}");
    }
    // Replayed again: EVO-1006 is now a duplicate, EVO-1007 still rejected, still one dead letter.
    let run = sandbox.run(&["dead-letter", "replay", &fourth]).expect(3);
    assert!(run.stdout.contains("2 units: 0 accepted, 1 duplicates, 0 conflicts, 1 rejected"), "{}", run.stdout);
    let open = sandbox.run(&["dead-letter", "list"]).expect(0).stdout;
    assert!(open.contains("3 dead letters"), "{open}");
    assert_eq!(
        player_balances(&sandbox),
        serde_json::json!([
            {"account": "player:player-7", "balance": "25.00", "currency": "USD"},
            {"account": "player:player-9", "balance": "5.00", "currency": "USD"},
        ])
    );

    // A missing dead letter is a clear error.
    let missing = sandbox.run(&["dead-letter", "show", "999"]).expect(1);
    assert!(missing.stderr.contains("dead letter 999 does not exist"), "{}", missing.stderr);
    sandbox.run(&["verify"]).expect(0);
}

#[test]
fn a_whole_file_dead_letter_replays_after_the_column_mapping_is_fixed() {
    let sandbox = Sandbox::new();
    let csv = std::fs::read_to_string(sandbox.dir().join(PAYFAST)).expect("the payfast example");
    let renamed = sandbox.write("renamed.csv", csv.replacen("txn_id,", "transaction_id,", 1));
    let run = sandbox.run(&["ingest", "--provider", "payfast", &renamed]).expect(0);
    assert!(run.stdout.contains("the whole file was rejected and dead-lettered: malformed_payload"), "{}", run.stdout);
    let listing = sandbox.run(&["dead-letter", "list"]).expect(0).stdout;
    assert!(listing.contains("whole  malformed_payload") && listing.contains("1 dead letters"), "{listing}");
    let id =
        listing.lines().nth(1).and_then(|line| line.split_whitespace().next()).expect("a dead letter id").to_string();

    let example = std::fs::read_to_string(sandbox.dir().join("examples/settlewatch.toml")).expect("the example config");
    assert!(example.contains("id = \"txn_id\""));
    let fixed = sandbox.write("fixed.toml", example.replace("id = \"txn_id\"", "id = \"transaction_id\""));
    let run = sandbox.run_with(&fixed, &["dead-letter", "replay", &id]);
    // The file is no longer rejected as a whole, so its letter closes; the bad row gets its own.
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("replayed and closed"), "{run:?}");
    assert!(
        run.stdout.contains("6 units: 5 accepted, 0 duplicates, 0 conflicts, 1 rejected (invalid_amount 1)"),
        "{run:?}"
    );
    let run = sandbox.run(&["settle", "--provider", "payfast", "--period", "2026-11-24", "--json"]).expect(0);
    let statement: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(statement["currencies"]["KRW"]["net_payable"], "304500");
    // The bad row has a dead letter of its own; a second replay stores nothing twice.
    let all = sandbox.run_with(&fixed, &["dead-letter", "list", "--status", "all"]).expect(0).stdout;
    assert!(all.contains("renamed.csv                    7  invalid_amount"), "{all}");
    assert!(all.contains(&format!("{id:>6}  replayed")), "{all}");
    // A closed letter is not replayed again.
    let run = sandbox.run_with(&fixed, &["dead-letter", "replay", &id]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("was replayed already"), "{run:?}");
    // Re-ingesting the fixed file works too (it was not remembered as ingested): all duplicates.
    let run = sandbox.run_with(&fixed, &["ingest", "--provider", "payfast", &renamed]).expect(0);
    assert!(run.stdout.contains("6 units: 0 accepted, 5 duplicates, 0 conflicts, 1 rejected"), "{}", run.stdout);
    runtime().block_on(async {
        let store = open_store(&sandbox.db()).await;
        let counts = store.counts().await.expect("counts");
        assert_eq!((counts.transactions, counts.dead_letters), (5, 2));
        store.close().await;
    });
    sandbox.run(&["verify"]).expect(0);
}

#[test]
fn a_record_dead_letter_that_cannot_be_fixed_stays_open() {
    let sandbox = Sandbox::new();
    sandbox.run(&["ingest", "--provider", "payfast", PAYFAST]).expect(0);
    let listing = sandbox.run(&["dead-letter", "list", "--provider", "payfast"]).expect(0).stdout;
    let id = dead_letter_id(&listing, 7);
    let show = sandbox.run(&["dead-letter", "show", &id]).expect(0).stdout;
    assert!(show.contains("code        invalid_amount"), "{show}");
    assert!(show.contains("reason      \"12.50\" is not an integer amount in minor units"), "{show}");
    assert!(
        show.contains("PF-20261124-006,DEP,us-merchant-07,USD,12.50,2026-11-24 19:10:00,,Amount not in minor units"),
        "{show}"
    );
    let before = sandbox.run(&["balances", "--json"]).expect(0).stdout;
    let run = sandbox.run(&["dead-letter", "replay", &id]).expect(3);
    assert!(
        run.stdout.contains("1 units: 0 accepted, 0 duplicates, 0 conflicts, 1 rejected (invalid_amount 1)"),
        "{}",
        run.stdout
    );
    let show = sandbox.run(&["dead-letter", "show", &id]).expect(0).stdout;
    assert!(show.contains("status      open (attempts 2)"), "{show}");
    assert_eq!(sandbox.run(&["balances", "--json"]).expect(0).stdout, before);
}

#[test]
fn a_changed_redelivery_is_a_conflict_and_leaves_the_ledger_alone() {
    let sandbox = Sandbox::new();
    sandbox.run(&["ingest", "--provider", "payfast", PAYFAST]).expect(0);
    let before = sandbox.run(&["balances", "--json"]).expect(0).stdout;
    let settle_before = sandbox.run(&["settle", "--provider", "payfast", "--period", "2026-11-24", "--json"]).expect(0);
    // PF-20261124-002 again, 260.00 instead of 250.00; PF-20261124-004 again unchanged.
    let file = sandbox.write(
        "redelivery.csv",
        "txn_id,txn_type,merchant_account,currency,amount_minor,settled_at,ref_txn_id,description\n\
         PF-20261124-002,DEP,us-merchant-07,USD,26000,2026-11-24 10:40:00,,Deposit\n\
         PF-20261124-004,FEE,kr-merchant-01,KRW,4500,2026-11-24 23:59:59,,Processing fee\n",
    );
    let run = sandbox.run(&["ingest", "--provider", "payfast", &file]).expect(0);
    assert!(run.stdout.contains("2 units: 0 accepted, 1 duplicates, 1 conflicts, 0 rejected"), "{}", run.stdout);
    let conflicts = sandbox.run(&["conflicts"]).expect(0).stdout;
    assert!(
        conflicts.contains("conflict 1: payfast/PF-20261124-002 (original #2) from redelivery.csv record 2"),
        "{conflicts}"
    );
    assert!(
        conflicts.contains(r#""amount":"260.00""#),
        "the conflicting version shows the changed amount:\n{conflicts}"
    );
    assert!(conflicts.contains("1 conflicts"), "{conflicts}");
    assert_eq!(sandbox.run(&["balances", "--json"]).expect(0).stdout, before, "the original is untouched");
    let settle_after = sandbox.run(&["settle", "--provider", "payfast", "--period", "2026-11-24", "--json"]).expect(0);
    assert_eq!(settle_after.stdout, settle_before.stdout);

    // The same conflicting redelivery again is reported again but kept once.
    let run = sandbox.run(&["ingest", "--provider", "payfast", "--force", &file]).expect(0);
    assert!(run.stdout.contains("1 conflicts"), "{}", run.stdout);
    let conflicts = sandbox.run(&["conflicts", "--provider", "payfast"]).expect(0).stdout;
    assert!(conflicts.contains("1 conflicts"), "{conflicts}");
    let none = sandbox.run(&["conflicts", "--provider", "evo-live"]).expect(0).stdout;
    assert!(none.contains("0 conflicts"), "{none}");
    sandbox.run(&["verify"]).expect(0);
}

#[test]
fn verify_finds_a_tampered_ledger() {
    let sandbox = Sandbox::new();
    for (provider, file) in [("evo-live", EVO), ("payfast", PAYFAST), ("legacybank", LEGACYBANK)] {
        sandbox.run(&["ingest", "--provider", provider, file]).expect(0);
    }
    let clean = sandbox.run(&["verify"]).expect(0);
    assert!(clean.stdout.contains("checked 14 transactions, 28 postings, 14 accounts"), "{}", clean.stdout);
    assert!(clean.stdout.contains("ledger verified"), "{}", clean.stdout);

    // Someone edits an amount behind the ledger's back (postings and balances left as they were).
    runtime().block_on(async {
        let store = open_store(&sandbox.db()).await;
        let changed = sqlx::query("UPDATE transactions SET amount_minor = amount_minor + 1 WHERE provider_tx_id = $1")
            .bind("PF-20261124-002")
            .execute(store.pool())
            .await
            .expect("tamper with an amount")
            .rows_affected();
        assert_eq!(changed, 1);
        store.close().await;
    });
    let run = sandbox.run(&["verify"]).expect(2);
    assert!(run.stdout.contains("FINDING: transaction #"), "{}", run.stdout);
    assert!(run.stdout.contains("(PF-20261124-002): stored content hash does not match its fields"), "{}", run.stdout);
    assert!(run.stdout.contains("ledger verification FAILED"), "{}", run.stdout);

    // A balance edited on its own is found too.
    let sandbox = Sandbox::new();
    sandbox.run(&["ingest", "--provider", "legacybank", LEGACYBANK]).expect(0);
    runtime().block_on(async {
        let store = open_store(&sandbox.db()).await;
        sqlx::query("UPDATE balances SET balance_minor = balance_minor + 100 WHERE ledger_account_id = 1")
            .execute(store.pool())
            .await
            .expect("tamper with a balance");
        store.close().await;
    });
    let run = sandbox.run(&["verify"]).expect(2);
    assert!(run.stdout.contains("FINDING: account "), "{}", run.stdout);
    assert!(
        run.stdout.contains("FINDING: currency GBP: all balances sum to 100 minor units, not zero"),
        "{}",
        run.stdout
    );
}

#[test]
fn garbage_input_is_rejected_never_a_panic() {
    let sandbox = Sandbox::new();
    let mut rng = StdRng::seed_from_u64(7);
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for index in 0..4 {
        let len = rng.gen_range(0..20_000);
        let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        files.push((format!("random-{index}.bin"), bytes));
    }
    // Printable noise with the separators the formats care about.
    let alphabet = b"abcXYZ019,;\"'{}[]:\\\n\r\t -+.HDT\xc3\xa9";
    let noise: Vec<u8> = (0..30_000).map(|_| alphabet[rng.gen_range(0..alphabet.len())]).collect();
    files.push(("noise.txt".into(), noise.clone()));
    // Each format's own beginning followed by noise.
    let mut csv = std::fs::read(sandbox.dir().join(PAYFAST)).expect("the payfast example");
    csv.extend_from_slice(&noise[..5_000]);
    files.push(("payfast-then-noise.csv".into(), csv));
    let mut jsonl = std::fs::read(sandbox.dir().join(EVO)).expect("the evo-live example");
    jsonl.extend_from_slice(b"{\"headers\":{\"X-Signature\":\"sha256=00\"},\"body\":\"{\\\"tx_id\\\":");
    jsonl.extend_from_slice(&noise[..5_000]);
    files.push(("evo-then-noise.jsonl".into(), jsonl));
    let mut batch = std::fs::read(sandbox.dir().join(LEGACYBANK)).expect("the legacybank example");
    batch.truncate(batch.len() / 2);
    batch.extend_from_slice(&noise[..5_000]);
    files.push(("batch-then-noise.dat".into(), batch));
    files.push(("empty".into(), Vec::new()));
    files.push(("nul.bin".into(), vec![0; 4096]));
    for (name, bytes) in &files {
        sandbox.write(name, bytes);
    }

    for provider in ["evo-live", "payfast", "legacybank"] {
        for (name, _) in &files {
            let run = sandbox.run(&["ingest", "--provider", provider, name]);
            match run.code {
                Some(0) => {
                    assert!(run.stdout.contains(&format!("{name} ({provider}):")), "{provider} {name}: {}", run.stdout)
                }
                Some(1) => {
                    assert!(run.stderr.starts_with("error: "), "{provider} {name}: an unclear error:\n{}", run.stderr)
                }
                other => panic!("{provider} {name}: exit {other:?}\n{}\n{}", run.stdout, run.stderr),
            }
        }
    }
    // What was rejected is kept, and the ledger is consistent.
    let dead = sandbox.run(&["dead-letter", "list", "--status", "all", "--limit", "10000"]).expect(0).stdout;
    assert!(!dead.contains("\n0 dead letters"), "{dead}");
    sandbox.run(&["verify"]).expect(0);

    // Files that cannot be read and providers that do not exist are clear errors.
    let run = sandbox.run(&["ingest", "--provider", "payfast", "no-such-file.csv"]).expect(1);
    assert!(run.stderr.contains("error: ingesting no-such-file.csv"), "{}", run.stderr);
    let run = sandbox.run(&["ingest", "--provider", "nobody", PAYFAST]).expect(1);
    assert!(run.stderr.contains("provider \"nobody\" is not configured"), "{}", run.stderr);
}

#[test]
fn a_manifest_ingests_each_file_with_its_provider_in_order() {
    let sandbox = Sandbox::new();
    // Paths in a manifest are relative to the manifest, as `simulate` writes them.
    sandbox.write(
        "examples/manifest.csv",
        "file,provider,units\nlegacybank/BATCH0001.DAT,legacybank,4\npayfast/2026-11-24.csv,payfast,6\n",
    );
    let run = sandbox.run(&["ingest", "--manifest", "examples/manifest.csv"]).expect(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(lines[0].contains("BATCH0001.DAT (legacybank): 4 units: 4 accepted"), "{}", run.stdout);
    assert!(lines[1].contains("2026-11-24.csv (payfast): 6 units: 5 accepted"), "{}", run.stdout);

    sandbox.write("examples/no-provider.csv", "file\npayfast/2026-11-24.csv\n");
    let run = sandbox.run(&["ingest", "--manifest", "examples/no-provider.csv"]).expect(1);
    assert!(run.stderr.contains("no column \"provider\" (columns: file)"), "{}", run.stderr);
    sandbox.write("examples/unknown.csv", "file,provider\npayfast/2026-11-24.csv,nobody\n");
    let run = sandbox.run(&["ingest", "--manifest", "examples/unknown.csv"]).expect(1);
    assert!(run.stderr.contains("nobody"), "{}", run.stderr);
    // Neither a manifest nor a provider: clap's usage error.
    sandbox.run(&["ingest", PAYFAST]).expect(2);
}

#[test]
fn regression_a_closed_output_pipe_ends_quietly_without_a_panic() {
    use std::io::Read;
    use std::process::Stdio;
    let sandbox = Sandbox::new();
    let mut child = common::settlewatch()
        .current_dir(sandbox.dir())
        .args(["simulate", "--seed", "1", "--duration", "1h", "--rate", "5/s", "--out", "sim"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("settlewatch starts");
    // Close our end of stdout at once, as `| head -0` would.
    drop(child.stdout.take());
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
    let status = child.wait().expect("settlewatch ends");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(status.code(), Some(101), "{stderr}");
}

/// (provider, provider_tx_id) → received_at of every stored transaction.
fn received_times(sandbox: &Sandbox) -> std::collections::BTreeMap<(String, String), String> {
    runtime().block_on(async {
        let store = open_store(&sandbox.db()).await;
        let stored = store.transactions_in_seq_order(0, 10_000).await.expect("transactions");
        store.close().await;
        stored
            .into_iter()
            .map(|row| {
                let tx = row.transaction;
                ((tx.provider, tx.provider_tx_id), tx.received_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            })
            .collect()
    })
}

#[test]
fn received_at_and_manifest_delivered_at_stamp_when_the_files_arrived() {
    let sandbox = Sandbox::new();
    sandbox.run(&["ingest", "--provider", "payfast", "--received-at", "2026-11-25T01:30:00+09:00", PAYFAST]).expect(0);
    sandbox.write(
        "examples/manifest.csv",
        "file,provider,delivered_at\nlegacybank/BATCH0001.DAT,legacybank,2026-11-24T18:00:00Z\nevo-live/payloads.jsonl,evo-live,\n",
    );
    let before = chrono::Utc::now();
    sandbox.run(&["ingest", "--manifest", "examples/manifest.csv"]).expect(0);
    let times = received_times(&sandbox);
    let of = |provider: &str| -> Vec<&String> {
        times.iter().filter(|((name, _), _)| name == provider).map(|(_, at)| at).collect()
    };
    assert_eq!(of("payfast").len(), 5);
    assert!(of("payfast").iter().all(|at| *at == "2026-11-24T16:30:00Z"), "{times:?}");
    assert_eq!(of("legacybank").len(), 4);
    assert!(of("legacybank").iter().all(|at| *at == "2026-11-24T18:00:00Z"), "{times:?}");
    // An empty delivered_at: the file arrived now.
    let now_text = before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(of("evo-live").len(), 5);
    assert!(of("evo-live").iter().all(|at| at.as_str() >= now_text.as_str()), "{times:?}");

    // Clear errors: not a time (usage error), not a time in the manifest, a future arrival.
    let bad = sandbox.run(&["ingest", "--provider", "payfast", "--received-at", "yesterday", PAYFAST]).expect(2);
    assert!(bad.stderr.contains("\"yesterday\" is not an RFC 3339 time"), "{}", bad.stderr);
    sandbox.write("examples/bad.csv", "file,provider,delivered_at\npayfast/2026-11-24.csv,payfast,24/11/2026\n");
    let bad = sandbox.run(&["ingest", "--manifest", "examples/bad.csv"]).expect(1);
    assert!(bad.stderr.contains("line 2: delivered_at \"24/11/2026\" is not an RFC 3339 time"), "{}", bad.stderr);
    let future = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let bad = sandbox.run(&["ingest", "--provider", "payfast", "--force", "--received-at", &future, PAYFAST]).expect(1);
    assert!(bad.stderr.contains("after now") && bad.stderr.contains("cannot arrive in the future"), "{}", bad.stderr);
}
