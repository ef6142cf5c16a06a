//! The anomaly scenarios the simulator injects, and the ground truth it keeps about them.
//!
//! Every injected anomaly is an *episode* (id, scenario, provider, account, start, end,
//! detail) in `episodes.csv`, and every transaction or record it touches is a row in
//! `truth.csv` keyed by `(provider, provider_tx_id)`, with the outcome the ledger is
//! expected to give it (accepted, duplicate, conflict, or rejected with an error code).
//! A transaction carries at most one label: the first scenario that touches it.
//!
//! Behavioural scenarios (amount spike, velocity burst, RTP drift, rollback abuse, cash-
//! through, bonus abuse) are shaped by the player model in `players.rs`; delivery scenarios
//! (duplicates, conflicting redeliveries, malformed records, outages) are applied here to
//! each generated group of events; malformed batches by the fixed-width encoder; settlement
//! mismatches by `statements.rs`.

use std::collections::BTreeMap;
use std::io::Write;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use super::encode::{push_account, push_utc_rfc3339, LocalClock, Vocabulary};
use crate::model::Kind;
use crate::rejection::ErrorCode;

/// The named scenarios, in the order they are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    AmountSpike,
    VelocityBurst,
    RtpDrift,
    RollbackAbuse,
    CashThrough,
    BonusAbuse,
    DuplicateDelivery,
    ConflictingRedelivery,
    ProviderOutage,
    SettlementMismatch,
    MalformedRecord,
    MalformedBatch,
}

impl Scenario {
    pub const ALL: [Scenario; 12] = [
        Scenario::AmountSpike,
        Scenario::VelocityBurst,
        Scenario::RtpDrift,
        Scenario::RollbackAbuse,
        Scenario::CashThrough,
        Scenario::BonusAbuse,
        Scenario::DuplicateDelivery,
        Scenario::ConflictingRedelivery,
        Scenario::ProviderOutage,
        Scenario::SettlementMismatch,
        Scenario::MalformedRecord,
        Scenario::MalformedBatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::AmountSpike => "amount_spike",
            Scenario::VelocityBurst => "velocity_burst",
            Scenario::RtpDrift => "rtp_drift",
            Scenario::RollbackAbuse => "rollback_abuse",
            Scenario::CashThrough => "cash_through",
            Scenario::BonusAbuse => "bonus_abuse",
            Scenario::DuplicateDelivery => "duplicate_delivery",
            Scenario::ConflictingRedelivery => "conflicting_redelivery",
            Scenario::ProviderOutage => "provider_outage",
            Scenario::SettlementMismatch => "settlement_mismatch",
            Scenario::MalformedRecord => "malformed_record",
            Scenario::MalformedBatch => "malformed_batch",
        }
    }

    pub fn parse(text: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|scenario| scenario.as_str() == text)
    }

    /// What one unit of the configured rate is.
    pub fn rate_unit(self) -> &'static str {
        match self {
            Scenario::AmountSpike
            | Scenario::VelocityBurst
            | Scenario::RollbackAbuse
            | Scenario::CashThrough
            | Scenario::BonusAbuse => "per game session",
            Scenario::DuplicateDelivery | Scenario::ConflictingRedelivery | Scenario::MalformedRecord => {
                "per unlabelled transaction"
            }
            Scenario::RtpDrift => "episodes per game provider per 24 h",
            Scenario::ProviderOutage => "episodes per provider per 24 h",
            Scenario::SettlementMismatch => "per statement line",
            Scenario::MalformedBatch => "per fixed-width batch file",
        }
    }

    fn index(self) -> usize {
        Scenario::ALL.iter().position(|scenario| *scenario == self).unwrap_or(0)
    }
}

/// Episodes per provider per 24 h of `rtp_drift` and `provider_outage`, at most.
pub const EPISODES_PER_DAY_MAX: f64 = 1_000.0;

/// Rate of each scenario (see [`Scenario::rate_unit`]), from `[scenarios]` in the
/// simulator's TOML.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScenarioRates {
    pub amount_spike: f64,
    pub velocity_burst: f64,
    pub rtp_drift: f64,
    pub rollback_abuse: f64,
    pub cash_through: f64,
    pub bonus_abuse: f64,
    pub duplicate_delivery: f64,
    pub conflicting_redelivery: f64,
    pub provider_outage: f64,
    pub settlement_mismatch: f64,
    pub malformed_record: f64,
    pub malformed_batch: f64,
}

impl Default for ScenarioRates {
    fn default() -> ScenarioRates {
        ScenarioRates {
            amount_spike: 0.003,
            velocity_burst: 0.001,
            rtp_drift: 0.5,
            rollback_abuse: 0.002,
            cash_through: 0.002,
            bonus_abuse: 0.001,
            duplicate_delivery: 0.0005,
            conflicting_redelivery: 0.0001,
            provider_outage: 0.3,
            settlement_mismatch: 0.05,
            malformed_record: 0.0002,
            malformed_batch: 0.02,
        }
    }
}

impl ScenarioRates {
    pub fn rate(&self, scenario: Scenario) -> f64 {
        match scenario {
            Scenario::AmountSpike => self.amount_spike,
            Scenario::VelocityBurst => self.velocity_burst,
            Scenario::RtpDrift => self.rtp_drift,
            Scenario::RollbackAbuse => self.rollback_abuse,
            Scenario::CashThrough => self.cash_through,
            Scenario::BonusAbuse => self.bonus_abuse,
            Scenario::DuplicateDelivery => self.duplicate_delivery,
            Scenario::ConflictingRedelivery => self.conflicting_redelivery,
            Scenario::ProviderOutage => self.provider_outage,
            Scenario::SettlementMismatch => self.settlement_mismatch,
            Scenario::MalformedRecord => self.malformed_record,
            Scenario::MalformedBatch => self.malformed_batch,
        }
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        for scenario in Scenario::ALL {
            let rate = self.rate(scenario);
            let probability = !matches!(scenario, Scenario::RtpDrift | Scenario::ProviderOutage);
            let max = if probability { 1.0 } else { EPISODES_PER_DAY_MAX };
            if !(0.0..=max).contains(&rate) {
                return Err(format!(
                    "scenarios.{}: {rate} is not a rate ({}, 0 to {max})",
                    scenario.as_str(),
                    scenario.rate_unit()
                ));
            }
        }
        let per_session = self.amount_spike + self.velocity_burst + self.cash_through + self.bonus_abuse;
        let per_transaction = self.duplicate_delivery + self.conflicting_redelivery + self.malformed_record;
        if per_session > 1.0 || per_transaction > 1.0 {
            return Err("scenarios: the per-session (or per-transaction) rates add up to more than 1".into());
        }
        Ok(())
    }
}

/// Which scenario touched a transaction, and in which episode. `owner` is the index of the
/// provider whose generator numbered the episode (episode ids are `<owner>-<number>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label {
    pub scenario: Scenario,
    pub owner: u16,
    pub episode: u32,
}

/// Whether a record is the first delivery of its transaction or a redelivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Copy {
    Original,
    Duplicate,
    Conflict,
}

/// One record as the generator produced it, before it is encoded.
#[derive(Clone, Debug)]
pub struct Event {
    /// When the provider delivers it (file position, file day); ordering key with `seq`.
    pub delivered_ms: i64,
    pub seq: u64,
    pub occurred_ms: i64,
    /// The provider transaction number (`<prefix><number>` is its id).
    pub number: u64,
    /// The transaction a rollback reverses (0: none).
    pub original: u64,
    pub round: u64,
    pub session: u64,
    pub amount_minor: i64,
    pub player: u32,
    /// Index in the provider's games; `u16::MAX` for none.
    pub game: u16,
    pub currency: u8,
    pub kind: Kind,
    pub label: Option<Label>,
    pub copy: Copy,
    pub malformed: Option<ErrorCode>,
    /// Something later depends on it being stored (a rollback names it, a redelivery
    /// repeats it): it is never made malformed nor put in a broken batch.
    pub must_land: bool,
}

pub const NO_GAME: u16 = u16::MAX;

impl Event {
    pub fn new(number: u64, kind: Kind, player: u32, currency: u8, amount_minor: i64, at_ms: i64) -> Event {
        Event {
            delivered_ms: at_ms,
            seq: 0,
            occurred_ms: at_ms,
            number,
            original: 0,
            round: 0,
            session: 0,
            amount_minor,
            player,
            game: NO_GAME,
            currency,
            kind,
            label: None,
            copy: Copy::Original,
            malformed: None,
            must_land: false,
        }
    }
}

/// The outcome the ledger should give a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    Conflict,
    Rejected(ErrorCode),
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Conflict => "conflict",
            Outcome::Rejected(_) => "rejected",
        }
    }
}

/// One anomaly episode.
#[derive(Clone, Debug)]
pub struct Episode {
    pub number: u32,
    pub scenario: Scenario,
    pub provider: String,
    pub account: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub detail: String,
}

/// What the ledger should report for one file.
#[derive(Clone, Debug, Default)]
pub struct FileTally {
    pub name: String,
    pub units: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    pub rejected: BTreeMap<ErrorCode, u64>,
    /// When the file was complete at the operator (UTC milliseconds): its last capture
    /// line's arrival, or the drop at the end of a batch file's hour or day.
    pub delivered_ms: Option<i64>,
}

/// Statement totals key: (business day, currency index, kind).
pub type StatementKey = (i64, u8, Kind);

/// Collects, for one provider, everything written about its records: truth rows, the
/// expected outcome of each file, episodes, statement totals and scenario counts.
pub(crate) struct Recorder {
    pub provider: String,
    pub owner: u16,
    pub vocabulary_prefix: String,
    pub currencies: Vec<String>,
    pub clock: LocalClock,
    pub truth: Vec<u8>,
    pub files: Vec<FileTally>,
    pub episodes: Vec<Episode>,
    pub statements: BTreeMap<StatementKey, (u64, i128)>,
    /// Records labelled per scenario (index of `Scenario::ALL`).
    pub labelled: [u64; 12],
    /// Records written (every unit of every file, copies included).
    pub records: u64,
    /// Distinct transactions generated (originals).
    pub transactions: u64,
    /// Transactions the per-transaction delivery faults could touch (unlabelled bets, wins,
    /// bonuses, deposits and withdrawals): the opportunities of those scenarios.
    pub fault_opportunities: u64,
    /// The latest `occurred_at` written (UTC milliseconds), `i64::MIN` before any.
    pub last_occurred_ms: i64,
}

impl Recorder {
    pub fn new(provider: &str, owner: u16, vocabulary: &Vocabulary, clock: LocalClock) -> Recorder {
        Recorder {
            provider: provider.to_string(),
            owner,
            vocabulary_prefix: vocabulary.tx_prefix.clone(),
            currencies: vocabulary.currencies.iter().map(|(code, _)| code.clone()).collect(),
            clock,
            truth: Vec::new(),
            files: Vec::new(),
            episodes: Vec::new(),
            statements: BTreeMap::new(),
            labelled: [0; 12],
            records: 0,
            transactions: 0,
            fault_opportunities: 0,
            last_occurred_ms: i64::MIN,
        }
    }

    pub fn open_file(&mut self, name: &str) -> usize {
        self.files.push(FileTally { name: format!("{}/{name}", self.provider), ..FileTally::default() });
        self.files.len() - 1
    }

    /// The file was (also) delivered at `at_ms`: it is complete at the latest such time.
    pub fn delivered(&mut self, file: usize, at_ms: i64) {
        let tally = &mut self.files[file];
        tally.delivered_ms = Some(tally.delivered_ms.map_or(at_ms, |known| known.max(at_ms)));
    }

    /// Opens an episode owned by this provider; returns its number.
    pub fn episode(&mut self, scenario: Scenario, account: &str, start_ms: i64, end_ms: i64, detail: String) -> u32 {
        let number = self.episodes.len() as u32 + 1;
        self.episodes.push(Episode {
            number,
            scenario,
            provider: self.provider.clone(),
            account: account.to_string(),
            start_ms,
            end_ms,
            detail,
        });
        number
    }

    pub fn label(&mut self, scenario: Scenario, account: &str, start_ms: i64, end_ms: i64, detail: String) -> Label {
        let episode = self.episode(scenario, account, start_ms, end_ms, detail);
        Label { scenario, owner: self.owner, episode }
    }

    /// An episode numbered here that happens at another provider (a payment processor).
    pub fn label_for(
        &mut self,
        scenario: Scenario,
        provider: &str,
        account: &str,
        start_ms: i64,
        end_ms: i64,
        detail: String,
    ) -> Label {
        let label = self.label(scenario, account, start_ms, end_ms, detail);
        if let Some(episode) = self.episodes.last_mut() {
            episode.provider = provider.to_string();
        }
        label
    }

    /// A record was written to `file` and should get `outcome`; `unit` is false for records
    /// inside a payload rejected as a whole (the file counts as one unit).
    pub fn record(&mut self, event: &Event, file: usize, outcome: Outcome, unit: bool) {
        self.records += 1;
        self.last_occurred_ms = self.last_occurred_ms.max(event.occurred_ms);
        if unit {
            let tally = &mut self.files[file];
            tally.units += 1;
            match outcome {
                Outcome::Accepted => tally.accepted += 1,
                Outcome::Duplicate => tally.duplicates += 1,
                Outcome::Conflict => tally.conflicts += 1,
                Outcome::Rejected(code) => *tally.rejected.entry(code).or_default() += 1,
            }
        }
        if outcome == Outcome::Accepted {
            let day = self.clock.local_day(event.occurred_ms);
            let total = self.statements.entry((day, event.currency, event.kind)).or_default();
            total.0 += 1;
            total.1 += i128::from(event.amount_minor);
        }
        if let Some(label) = event.label {
            self.truth_row(event, label, outcome, file);
        }
    }

    /// A record inside a fixed-width batch whose trailer was broken on purpose.
    pub fn record_in_broken_batch(&mut self, event: &Event, file: usize, code: ErrorCode, episode: u32) {
        let label = Label { scenario: Scenario::MalformedBatch, owner: self.owner, episode };
        let mut event = event.clone();
        event.label = Some(label);
        self.record(&event, file, Outcome::Rejected(code), false);
    }

    pub fn whole_file_rejected(&mut self, file: usize, code: ErrorCode) {
        let tally = &mut self.files[file];
        tally.units += 1;
        *tally.rejected.entry(code).or_default() += 1;
    }

    fn truth_row(&mut self, event: &Event, label: Label, outcome: Outcome, file: usize) {
        self.labelled[label.scenario.index()] += 1;
        let out = &mut self.truth;
        // provider,provider_tx_id,scenario,episode,expected_code,expected_outcome,kind,account,currency,amount_minor,occurred_at,file
        out.extend_from_slice(self.provider.as_bytes());
        out.push(b',');
        out.extend_from_slice(self.vocabulary_prefix.as_bytes());
        super::encode::push_padded(out, event.number, 10);
        let _ = write!(out, ",{},", label.scenario.as_str());
        push_episode_id(out, label.owner, label.episode);
        out.push(b',');
        if let Outcome::Rejected(code) = outcome {
            out.extend_from_slice(code.as_str().as_bytes());
        }
        let _ = write!(out, ",{},{},", outcome.as_str(), event.kind.as_str());
        push_account(out, event.player);
        let _ = write!(out, ",{},{},", self.currencies[usize::from(event.currency)], event.amount_minor);
        push_utc_rfc3339(out, event.occurred_ms);
        out.push(b',');
        out.extend_from_slice(self.files[file].name.as_bytes());
        out.push(b'\n');
    }
}

pub const TRUTH_HEADER: &str = "provider,provider_tx_id,scenario,episode,expected_code,expected_outcome,kind,account,\
currency,amount_minor,occurred_at,file\n";

pub fn push_episode_id(out: &mut Vec<u8>, owner: u16, episode: u32) {
    let _ = write!(out, "E{owner:02}-{episode:07}");
}

/// Per-transaction delivery scenarios applied to one generated group (a session, a
/// payment): duplicate deliveries, conflicting redeliveries and malformed records.
/// Returns the extra records (redeliveries) to queue beside the group.
pub struct DeliveryFaults<'a> {
    pub rates: &'a ScenarioRates,
    pub malformed_codes: &'static [ErrorCode],
    /// Minor units of one chip, per currency index (the smallest amount change).
    pub chip_minor: &'a [i64],
}

impl DeliveryFaults<'_> {
    pub(crate) fn apply(&self, group: &mut [Event], rng: &mut ChaCha8Rng, recorder: &mut Recorder) -> Vec<Event> {
        let referenced: Vec<u64> =
            group.iter().filter(|event| event.original != 0).map(|event| event.original).collect();
        let mut copies = Vec::new();
        for event in group.iter_mut() {
            if referenced.contains(&event.number) {
                event.must_land = true;
            }
            let eligible = event.label.is_none()
                && matches!(event.kind, Kind::Bet | Kind::Win | Kind::Bonus | Kind::Deposit | Kind::Withdrawal);
            if !eligible {
                continue;
            }
            recorder.fault_opportunities += 1;
            let draw: f64 = rng.gen();
            let duplicate = self.rates.duplicate_delivery;
            let conflict = duplicate + self.rates.conflicting_redelivery;
            let malformed = conflict + self.rates.malformed_record;
            if draw < conflict {
                let account = account_text(event.player);
                let mut copy = event.clone();
                copy.delivered_ms = event.delivered_ms + rng.gen_range(1_000..=600_000);
                event.must_land = true;
                if draw < duplicate {
                    copy.copy = Copy::Duplicate;
                    copy.label = Some(recorder.label(
                        Scenario::DuplicateDelivery,
                        &account,
                        event.delivered_ms,
                        copy.delivered_ms,
                        format!("{} redelivered unchanged", tx_id(&recorder.vocabulary_prefix, event.number)),
                    ));
                } else {
                    let chip = self.chip_minor[usize::from(event.currency)];
                    let change = chip * rng.gen_range(1..=20);
                    copy.amount_minor = event.amount_minor + change;
                    copy.copy = Copy::Conflict;
                    copy.label = Some(recorder.label(
                        Scenario::ConflictingRedelivery,
                        &account,
                        event.delivered_ms,
                        copy.delivered_ms,
                        format!(
                            "{} redelivered with amount_minor {} instead of {}",
                            tx_id(&recorder.vocabulary_prefix, event.number),
                            copy.amount_minor,
                            event.amount_minor
                        ),
                    ));
                }
                copies.push(copy);
            } else if draw < malformed && !event.must_land && !self.malformed_codes.is_empty() {
                let account = account_text(event.player);
                let code = self.malformed_codes[rng.gen_range(0..self.malformed_codes.len())];
                event.malformed = Some(code);
                event.label = Some(recorder.label(
                    Scenario::MalformedRecord,
                    &account,
                    event.occurred_ms,
                    event.occurred_ms,
                    format!("record broken to be rejected with {code}"),
                ));
            }
        }
        copies
    }
}

pub fn account_text(player: u32) -> String {
    let mut out = Vec::with_capacity(8);
    push_account(&mut out, player);
    String::from_utf8(out).unwrap_or_default()
}

pub fn tx_id(prefix: &str, number: u64) -> String {
    format!("{prefix}{number:010}")
}
