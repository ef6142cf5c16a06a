//! `settlewatch simulate`: a deterministic generator of an operator's traffic across many
//! providers, with anomalies injected and labelled. Every later capability (detection,
//! alerting, dashboards, feedback) needs realistic traffic with known truth; this is it.
//!
//! What it writes under the output directory:
//!
//! * `settlewatch.toml`: a configuration with one `[[providers]]` entry per simulated
//!   provider, whose adapter settings are the ones the files were encoded with, so
//!   `settlewatch --config OUT/settlewatch.toml ingest --provider P FILES` takes them;
//! * `<provider>/...`: the provider's files in its native format (`encode.rs`): signed
//!   webhook capture logs, CSV settlement files, fixed-width batch files;
//! * `<provider>/statement-<date>.csv`: the provider's own end-of-day totals (`statements.rs`);
//! * `truth.csv`: one row per labelled record, keyed `provider,provider_tx_id`;
//!   `episodes.csv`: one row per injected anomaly; `statement_mismatches.csv`;
//! * `manifest.csv`: every payload file in ingest order with the units, accepted,
//!   duplicates, conflicts and rejections (by code) the ledger should report for it, and
//!   `delivered_at`, when the file was complete at the operator (below);
//! * `summary.csv`: per scenario, its rate, opportunities, episodes and labelled records.
//!
//! # Delivery times and late deliveries
//!
//! A record is delivered when it occurs, unless a provider outage holds it back: then the
//! whole backlog arrives at the outage's end. What the operator sees of that depends on the
//! format, as it would with a real provider:
//!
//! * **Webhook capture logs** record each delivery's arrival: every line has `received_at`
//!   (a batch delivery is sent at its latest item's delivery, within
//!   [`encode::JSON_BATCH_WINDOW_MS`] of its first). `delivered_at` of the log file is its
//!   last line's. Normal traffic arrives within a second; every record an outage held back
//!   for longer than the margin is late.
//! * **Fixed-width batch files** are dropped at the end of their local delivery hour (all
//!   batches of an hour together, also those cut at `batch_records_max`), so records wait up
//!   to an hour normally. An outage is late only for the records it held past their own
//!   hour's drop by more than the margin: one inside a single hour changes nothing the
//!   operator can see (the batch still comes at the end of that hour).
//! * **CSV settlement files** are dropped at the end of their local business day; records
//!   wait up to a day (23 or 25 hours on a clock change) normally. Only an outage that
//!   pushes records into the next day's file makes them late, and only those held past
//!   midnight by more than the margin.
//!
//! `manifest.csv`'s `delivered_at` is the drop time (`ingest --manifest` stamps it as
//! `received_at`). The written `settlewatch.toml` gives each provider
//! `[providers.reconciliation]` with `statement = "totals"` and `late_after_seconds` = its
//! longest normal wait in this run (batch window, or the webhook batch window; a second more
//! for formats with whole seconds) plus [`LATE_MARGIN_SECONDS`], so normal traffic is never
//! late. One exception is labelled only indirectly: a fixed-width record held back from a
//! broken batch (`malformed_batch`) goes into that currency's next intact batch, possibly a
//! later hour's, and can then be late without a label of its own.
//!
//! Determinism: the same seed and configuration give byte-identical output. Each provider
//! draws from its own ChaCha8 stream (seed and provider index), nothing is ordered by a
//! hash map, and no clock is read. Game providers run in parallel threads, then the
//! payment processors (whose deposits and withdrawals the game sessions asked for).
//!
//! Output goes through [`encode::Sink`]; files today. Streaming over HTTP
//! (`--target`) lands with the detector's ingest API.

use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::adapters::AdapterConfig;
use crate::config::Config;
use crate::model::Kind;

pub mod encode;
pub mod players;
pub mod scenarios;
pub mod statements;

use encode::{build_encoder, FileSink, LocalClock, Sink, Vocabulary};
use players::{DriftWindow, Funding, GameConfig, GameProvider, SegmentConfig};
use scenarios::{DeliveryFaults, Event, Label, Recorder, Scenario, ScenarioRates};

/// Simulated duration, at most (a year).
pub const DURATION_SECONDS_MAX: u64 = 366 * 86_400;
/// Mean transactions per second, at most.
pub const RATE_PER_SECOND_MAX: f64 = 1_000_000.0;
/// Players in the population, at most.
pub const PLAYERS_MAX: u32 = 10_000_000;
/// Simulated providers, at most.
pub const SIM_PROVIDERS_MAX: usize = 64;
/// Transactions a run is expected to generate (rate × duration), at most: 10^10 is about a
/// terabyte of files; anything larger is a typo, not a simulation.
pub const EXPECTED_TRANSACTIONS_MAX: f64 = 1e10;
/// Minor units of one chip, at most. With [`players::STAKE_CHIPS_MAX`] and
/// [`players::PAYOUT_MULTIPLE_MAX`] this keeps every amount (and every product computed on
/// the way) far below `validate::AMOUNT_MINOR_MAX` and the 64-bit range.
pub const CHIP_MINOR_MAX: i64 = 10_000;
/// Share weights (currencies, segments, traffic shares), at most.
pub const SHARE_MAX: f64 = 1e6;
/// Session starts are drawn per bucket of this many milliseconds.
const BUCKET_MS: i64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("simulator configuration: {0}")]
    Config(String),
    #[error("writing the simulation: {0}")]
    Io(#[from] std::io::Error),
}

fn invalid(message: impl Into<String>) -> SimulateError {
    SimulateError::Config(message.into())
}

/// The simulator's TOML configuration (`--config-file`); every section has defaults.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// First simulated instant (RFC 3339); a Monday by default.
    #[serde(default = "default_start")]
    pub start: String,
    #[serde(default = "default_players")]
    pub players: u32,
    #[serde(default)]
    pub traffic: TrafficConfig,
    #[serde(default)]
    pub scenarios: ScenarioRates,
    #[serde(default = "players::default_segments")]
    pub segments: Vec<SegmentConfig>,
    #[serde(default = "default_currencies")]
    pub currencies: Vec<CurrencyConfig>,
    #[serde(default = "default_providers")]
    pub providers: Vec<SimProviderConfig>,
}

fn default_start() -> String {
    "2026-11-16T00:00:00Z".into()
}

fn default_players() -> u32 {
    50_000
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig::parse("").expect("the built-in simulator configuration is valid")
    }
}

impl SimConfig {
    pub fn parse(text: &str) -> Result<SimConfig, SimulateError> {
        toml::from_str(text).map_err(|error| invalid(error.to_string()))
    }

    pub fn load(path: &Path) -> Result<SimConfig, SimulateError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| invalid(format!("reading {}: {error}", path.display())))?;
        SimConfig::parse(&text).map_err(|error| match error {
            SimulateError::Config(message) => invalid(format!("{}: {message}", path.display())),
            other => other,
        })
    }
}

/// The daily shape of traffic.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrafficConfig {
    /// Relative activity of each UTC hour (24 values; 1 is the base rate).
    pub hourly_weights: Vec<f64>,
    /// Activity on Saturdays and Sundays (UTC) relative to weekdays.
    pub weekend_factor: f64,
    /// Activity inside a peak window, as a multiple of the base rate.
    pub peak_factor: f64,
    pub peak_windows: Vec<PeakWindow>,
    /// Share of sessions preceded by a deposit, and followed by a withdrawal.
    pub deposit_probability: f64,
    pub withdrawal_probability: f64,
    /// Share of sessions that start with an ordinary (unlabelled) bonus.
    pub bonus_probability: f64,
    /// Share of rounds cancelled by the provider right after the bet (unlabelled).
    pub benign_rollback_probability: f64,
    /// RTP of a drifting game, as a multiple of its configured RTP.
    pub rtp_drift_factor: f64,
}

impl Default for TrafficConfig {
    fn default() -> TrafficConfig {
        TrafficConfig {
            hourly_weights: vec![
                0.6, 0.45, 0.35, 0.3, 0.3, 0.35, 0.45, 0.6, 0.75, 0.85, 0.95, 1.0, 1.05, 1.05, 1.0, 1.0, 1.05, 1.15,
                1.3, 1.45, 1.55, 1.6, 1.4, 0.9,
            ],
            weekend_factor: 1.3,
            peak_factor: 10.0,
            peak_windows: vec![PeakWindow { start: "20:00".into(), end: "20:30".into() }],
            deposit_probability: 0.6,
            withdrawal_probability: 0.3,
            bonus_probability: 0.02,
            benign_rollback_probability: 0.002,
            rtp_drift_factor: 1.35,
        }
    }
}

/// A daily window (UTC `HH:MM`, end exclusive) of peak traffic.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeakWindow {
    pub start: String,
    pub end: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrencyConfig {
    pub code: String,
    /// Share of players holding this currency.
    pub share: f64,
    /// Minor units of one chip, the smallest stake step (USD 10 = 0.10 USD; KRW 100).
    pub chip_minor: i64,
}

fn default_currencies() -> Vec<CurrencyConfig> {
    vec![
        CurrencyConfig { code: "USD".into(), share: 0.6, chip_minor: 10 },
        CurrencyConfig { code: "KRW".into(), share: 0.4, chip_minor: 100 },
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Slots,
    LiveCasino,
    Sports,
    Payments,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimProviderConfig {
    pub name: String,
    pub role: Role,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    pub currencies: Vec<String>,
    /// Share of game traffic (game providers; payment traffic follows the sessions).
    #[serde(default)]
    pub traffic_share: f64,
    #[serde(default)]
    pub revenue_share: Option<String>,
    /// Prefix of transaction ids (the id is the prefix and 10 digits).
    pub tx_prefix: String,
    #[serde(default)]
    pub games: Vec<GameConfig>,
    /// Mean seconds between rounds, and from bet to win (defaults by role).
    #[serde(default)]
    pub round_seconds: Option<f64>,
    #[serde(default)]
    pub settle_seconds: Option<f64>,
    /// Multiplies the segments' rounds per session (defaults by role).
    #[serde(default)]
    pub rounds_factor: Option<f64>,
    /// Detail records per fixed-width batch file, at most.
    #[serde(default = "default_batch_records_max")]
    pub batch_records_max: usize,
    /// The provider's adapter configuration, exactly as in settlewatch.toml.
    pub adapter: toml::Table,
}

fn default_timezone() -> String {
    "UTC".into()
}

fn default_batch_records_max() -> usize {
    5_000
}

/// The six default providers: three game providers and three payment processors, over
/// the three adapter formats.
pub const DEFAULT_PROVIDERS_TOML: &str = r#"
[[providers]]
name = "spinhub"
role = "slots"
timezone = "Europe/Malta"
currencies = ["USD", "KRW"]
traffic_share = 0.55
revenue_share = "0.10"
tx_prefix = "SPN-"
games = [
  { id = "golden-reels", rtp = 0.96, hit_rate = 0.30, payout = "exponential" },
  { id = "dragon-fortune", rtp = 0.94, hit_rate = 0.25, payout = "exponential" },
  { id = "fruit-frenzy", rtp = 0.92, hit_rate = 0.35, payout = "exponential" },
  { id = "cosmic-gems", rtp = 0.97, hit_rate = 0.28, payout = "exponential" },
]
[providers.adapter]
type = "json_webhook"
batch_field = "transactions"
signing_secret = "spinhub-simulated-secret"
[providers.adapter.fields]
id = "tx_id"
kind = "type"
account = "player_id"
game = "game_id"
round = "round_id"
session = "session_id"
currency = "money.currency"
amount = "money.amount"
occurred_at = "timestamp"
original_id = "ref_tx_id"
[providers.adapter.kinds]
DEBIT = "bet"
CREDIT = "win"
CANCEL = "rollback"
BONUS = "bonus"

[[providers]]
name = "livedealer"
role = "live_casino"
timezone = "Asia/Manila"
currencies = ["USD", "KRW"]
traffic_share = 0.25
revenue_share = "0.12"
tx_prefix = "LVD-"
games = [
  { id = "european-roulette", rtp = 0.973, hit_rate = 0.4865, payout = "fixed" },
  { id = "baccarat-banker", rtp = 0.9800, hit_rate = 0.4586, payout = "fixed" },
  { id = "blackjack-classic", rtp = 0.965, hit_rate = 0.44, payout = "fixed" },
]
[providers.adapter]
type = "json_webhook"
occurred_at_format = "epoch_millis"
signature_header = "X-Hub-Signature-256"
signing_secret = "livedealer-simulated-secret"
[providers.adapter.fields]
id = "transaction.id"
kind = "transaction.action"
account = "player.id"
game = "table.game"
round = "table.round"
session = "player.session"
currency = "transaction.currency"
amount = "transaction.amount"
occurred_at = "transaction.created_ms"
original_id = "transaction.cancels"
[providers.adapter.kinds]
place = "bet"
payout = "win"
void = "rollback"
promo = "bonus"

[[providers]]
name = "kickoff"
role = "sports"
timezone = "Europe/London"
currencies = ["USD", "KRW"]
traffic_share = 0.20
revenue_share = "0.08"
tx_prefix = "KCK-"
games = [
  { id = "football-1x2", rtp = 0.93, hit_rate = 0.45, payout = "fixed" },
  { id = "tennis-match", rtp = 0.95, hit_rate = 0.50, payout = "fixed" },
  { id = "basketball-spread", rtp = 0.94, hit_rate = 0.48, payout = "fixed" },
]
[providers.adapter]
type = "csv_settlement"
amount_in_minor_units = false
timestamp_format = "%d/%m/%Y %H:%M:%S"
[providers.adapter.columns]
id = "slip_id"
kind = "entry_type"
account = "customer"
game = "market"
round = "selection"
session = "channel_session"
currency = "ccy"
amount = "amount"
occurred_at = "settled_local"
original_id = "voids"
[providers.adapter.kinds]
STAKE = "bet"
RETURN = "win"
VOID = "rollback"
FREEBET = "bonus"

[[providers]]
name = "paynow-kr"
role = "payments"
timezone = "Asia/Seoul"
currencies = ["KRW"]
tx_prefix = "PNK-"
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
CHB = "chargeback"

[[providers]]
name = "cardpay"
role = "payments"
timezone = "America/New_York"
currencies = ["USD"]
tx_prefix = "CRD-"
[providers.adapter]
type = "json_webhook"
currency = "USD"
signing_secret = "cardpay-simulated-secret"
[providers.adapter.fields]
id = "payment_id"
kind = "event"
account = "customer_ref"
amount = "amount"
occurred_at = "processed_at"
original_id = "parent_payment_id"
[providers.adapter.kinds]
"payment.captured" = "deposit"
"payout.sent" = "withdrawal"
"dispute.lost" = "chargeback"

[[providers]]
name = "globalwire"
role = "payments"
timezone = "UTC"
currencies = ["USD", "KRW"]
tx_prefix = "GWR-"
batch_records_max = 2000
[providers.adapter]
type = "fixed_width"
record_type = { start_chars = 0, width_chars = 1 }
header_code = "H"
detail_code = "D"
trailer_code = "T"
timestamp_format = "%Y%m%d%H%M%S"
[providers.adapter.header]
batch_id = { start_chars = 1, width_chars = 10 }
business_date = { start_chars = 11, width_chars = 8 }
currency = { start_chars = 19, width_chars = 3 }
[providers.adapter.detail]
id = { start_chars = 1, width_chars = 16 }
account = { start_chars = 17, width_chars = 12 }
kind = { start_chars = 29, width_chars = 3 }
amount_minor = { start_chars = 32, width_chars = 13 }
occurred_at = { start_chars = 45, width_chars = 14 }
original_id = { start_chars = 59, width_chars = 16 }
[providers.adapter.trailer]
record_count = { start_chars = 1, width_chars = 8 }
control_total_minor = { start_chars = 9, width_chars = 15 }
[providers.adapter.kinds]
DEP = "deposit"
WDR = "withdrawal"
CHB = "chargeback"
"#;

fn default_providers() -> Vec<SimProviderConfig> {
    #[derive(Deserialize)]
    struct Providers {
        providers: Vec<SimProviderConfig>,
    }
    toml::from_str::<Providers>(DEFAULT_PROVIDERS_TOML).map(|parsed| parsed.providers).unwrap_or_default()
}

/// How much to simulate, from the command line.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub seed: u64,
    pub duration_seconds: u64,
    /// Mean transactions per second over the whole run, all providers together.
    pub rate_per_second: f64,
    pub out: PathBuf,
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Distinct transactions generated (each redelivery counted once).
    pub transactions: u64,
    /// Records written (redeliveries and malformed records included).
    pub records: u64,
    pub files: u64,
    pub sessions: u64,
    pub scenarios: Vec<ScenarioSummary>,
    /// The latest `occurred_at` of any record (wins settle and withdrawals follow after the
    /// simulated duration): ingest rejects records from its future (`timestamp_in_future`).
    pub last_occurred_at: Option<DateTime<Utc>>,
    /// The latest `delivered_at` in `manifest.csv` (a batch file is dropped at the end of its
    /// hour or day): ingest refuses a file whose arrival is in its future.
    pub last_delivered_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug)]
pub struct ScenarioSummary {
    pub scenario: Scenario,
    pub rate: f64,
    pub unit: &'static str,
    pub opportunities: u64,
    pub episodes: u64,
    pub records: u64,
}

/// A provider resolved from the configuration.
struct PlannedProvider {
    config: SimProviderConfig,
    timezone: Tz,
    adapter: AdapterConfig,
    /// Simulator currency indexes this provider takes.
    takes_currency: Vec<bool>,
    games: Vec<GameConfig>,
    round_ms: f64,
    settle_ms: f64,
    rounds_factor: f64,
}

struct Plan {
    options: RunOptions,
    config: SimConfig,
    start_ms: i64,
    end_ms: i64,
    providers: Vec<PlannedProvider>,
    currencies: Vec<(String, u32)>,
    chip_minor: Vec<i64>,
    peak_minutes: Vec<(u32, u32)>,
    processors_by_currency: Vec<Vec<usize>>,
    provider_names: Vec<String>,
    settlewatch_toml: String,
    /// Transactions per second at hourly weight 1 on a weekday.
    base_rate: f64,
}

fn minute_of_day(text: &str) -> Result<u32, SimulateError> {
    let parsed = text
        .split_once(':')
        .and_then(|(hours, minutes)| Some((hours.parse::<u32>().ok()?, minutes.parse::<u32>().ok()?)));
    match parsed {
        Some((hours, minutes)) if (hours < 24 && minutes < 60) || (hours == 24 && minutes == 0) => {
            Ok(hours * 60 + minutes)
        }
        _ => Err(invalid(format!("traffic.peak_windows: {text:?} is not a time HH:MM"))),
    }
}

fn role_defaults(role: Role) -> (f64, f64, f64) {
    // (seconds between rounds, seconds from bet to win, rounds factor)
    match role {
        Role::Slots => (4.0, 0.5, 1.0),
        Role::LiveCasino => (35.0, 25.0, 0.4),
        Role::Sports => (90.0, 3_600.0, 0.1),
        Role::Payments => (0.0, 0.0, 0.0),
    }
}

impl Plan {
    fn new(config: &SimConfig, options: &RunOptions) -> Result<Plan, SimulateError> {
        let start = DateTime::parse_from_rfc3339(&config.start)
            .map_err(|error| invalid(format!("start: {:?} is not an RFC 3339 time: {error}", config.start)))?
            .with_timezone(&Utc);
        if options.duration_seconds == 0 || options.duration_seconds > DURATION_SECONDS_MAX {
            return Err(invalid(format!("the duration must be 1 s to {DURATION_SECONDS_MAX} s")));
        }
        if !options.rate_per_second.is_finite()
            || options.rate_per_second <= 0.0
            || options.rate_per_second > RATE_PER_SECOND_MAX
        {
            return Err(invalid(format!("the rate must be above 0 and at most {RATE_PER_SECOND_MAX} per second")));
        }
        let expected_transactions = options.rate_per_second * options.duration_seconds as f64;
        if expected_transactions > EXPECTED_TRANSACTIONS_MAX {
            return Err(invalid(format!(
                "rate × duration is {expected_transactions:.3e} transactions, more than the {EXPECTED_TRANSACTIONS_MAX:e} \
                 a run may generate"
            )));
        }
        if config.players == 0 || config.players > PLAYERS_MAX {
            return Err(invalid(format!("players: must be 1 to {PLAYERS_MAX}")));
        }
        config.scenarios.check().map_err(invalid)?;
        let traffic = &config.traffic;
        if traffic.hourly_weights.len() != 24
            || traffic.hourly_weights.iter().any(|weight| !(0.0..=1e6).contains(weight))
        {
            return Err(invalid("traffic.hourly_weights: 24 weights of at least 0"));
        }
        for (name, value, max) in [
            ("weekend_factor", traffic.weekend_factor, 100.0),
            ("peak_factor", traffic.peak_factor, 1000.0),
            ("deposit_probability", traffic.deposit_probability, 1.0),
            ("withdrawal_probability", traffic.withdrawal_probability, 1.0),
            ("bonus_probability", traffic.bonus_probability, 1.0),
            ("benign_rollback_probability", traffic.benign_rollback_probability, 1.0),
            ("rtp_drift_factor", traffic.rtp_drift_factor, 10.0),
        ] {
            if !(0.0..=max).contains(&value) {
                return Err(invalid(format!("traffic.{name}: {value} is not between 0 and {max}")));
            }
        }
        let peak_minutes = traffic
            .peak_windows
            .iter()
            .map(|window| {
                let (start, end) = (minute_of_day(&window.start)?, minute_of_day(&window.end)?);
                if start >= end {
                    return Err(invalid(format!(
                        "traffic.peak_windows: {} is not before {}",
                        window.start, window.end
                    )));
                }
                Ok((start, end))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if config.segments.is_empty()
            || config.segments.iter().any(|segment| {
                !(0.0..=SHARE_MAX).contains(&segment.share)
                    || !(1.0..=players::STAKE_CHIPS_MAX).contains(&segment.stake_chips_median)
                    || !(0.0..=3.0).contains(&segment.stake_sigma)
                    || !(0.0..=3.0).contains(&segment.bet_sigma)
                    || !(1.0..=10_000.0).contains(&segment.rounds_mean)
            })
            || config.segments.iter().map(|segment| segment.share).sum::<f64>() <= 0.0
        {
            return Err(invalid(
                "segments: each needs share 0..1e6 (some > 0), stake_chips_median 1..1e6, sigmas 0..3, rounds_mean 1..10000",
            ));
        }
        // Currencies: exponents from the same table the ledger uses.
        let known = crate::money::Currencies::iso();
        let mut currencies = Vec::new();
        let mut chip_minor = Vec::new();
        for currency in &config.currencies {
            let (code, exponent) = known
                .lookup(&currency.code)
                .ok_or_else(|| invalid(format!("currencies: {:?} is not an ISO 4217 currency", currency.code)))?;
            if !(1..=CHIP_MINOR_MAX).contains(&currency.chip_minor) || !(0.0..=SHARE_MAX).contains(&currency.share) {
                return Err(invalid(format!(
                    "currencies.{}: chip_minor must be 1 to {CHIP_MINOR_MAX} and share 0 to {SHARE_MAX}",
                    currency.code
                )));
            }
            currencies.push((code.as_str().to_string(), exponent));
            chip_minor.push(currency.chip_minor);
        }
        if currencies.is_empty() || currencies.len() > usize::from(u8::MAX) {
            return Err(invalid("currencies: 1 to 255 currencies"));
        }
        if config.currencies.iter().map(|currency| currency.share).sum::<f64>() <= 0.0 {
            return Err(invalid("currencies: the shares are all 0, so no player has a currency"));
        }
        if config.providers.is_empty() || config.providers.len() > SIM_PROVIDERS_MAX {
            return Err(invalid(format!("providers: 1 to {SIM_PROVIDERS_MAX} providers")));
        }
        let mut providers = Vec::new();
        for provider in &config.providers {
            let error = |message: String| invalid(format!("provider {}: {message}", provider.name));
            let timezone: Tz =
                provider.timezone.parse().map_err(|_| error(format!("unknown timezone {:?}", provider.timezone)))?;
            let adapter: AdapterConfig = toml::Value::Table(provider.adapter.clone())
                .try_into()
                .map_err(|parse: toml::de::Error| error(format!("adapter: {parse}")))?;
            let mut takes_currency = vec![false; currencies.len()];
            for code in &provider.currencies {
                let index = currencies
                    .iter()
                    .position(|(known, _)| known == code)
                    .ok_or_else(|| error(format!("currency {code:?} is not among the simulator's currencies")))?;
                takes_currency[index] = true;
            }
            let (round_seconds, settle_seconds, rounds_factor) = role_defaults(provider.role);
            let games = provider.games.clone();
            if provider.role == Role::Payments {
                if !games.is_empty() {
                    return Err(error("a payment processor has no games".into()));
                }
            } else {
                if games.is_empty() || games.len() >= usize::from(scenarios::NO_GAME) {
                    return Err(error("a game provider needs 1 or more games".into()));
                }
                for game in &games {
                    if !(0.5..=1.0).contains(&game.rtp) || !(0.01..=1.0).contains(&game.hit_rate) {
                        return Err(error(format!("game {}: rtp must be 0.5..1 and hit_rate 0.01..1", game.id)));
                    }
                }
                if !(provider.traffic_share > 0.0 && provider.traffic_share <= SHARE_MAX) {
                    return Err(error(format!("a game provider needs traffic_share above 0 and at most {SHARE_MAX}")));
                }
            }
            if provider.tx_prefix.is_empty()
                || provider.tx_prefix.len() > 32
                || !provider.tx_prefix.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
            {
                return Err(error("tx_prefix: 1 to 32 letters, digits or '-'".into()));
            }
            let round_ms = provider.round_seconds.unwrap_or(round_seconds) * 1000.0;
            let settle_ms = provider.settle_seconds.unwrap_or(settle_seconds) * 1000.0;
            let rounds_factor = provider.rounds_factor.unwrap_or(rounds_factor);
            if !(0.0..=86_400_000.0).contains(&round_ms) || !(0.0..=86_400_000.0).contains(&settle_ms) {
                return Err(error("round_seconds and settle_seconds must be 0 to 86400".into()));
            }
            if !(0.001..=100.0).contains(&rounds_factor) && provider.role != Role::Payments {
                return Err(error("rounds_factor must be 0.001 to 100".into()));
            }
            if !(1..=encode::BATCH_RECORDS_MAX).contains(&provider.batch_records_max) {
                return Err(error(format!("batch_records_max must be 1 to {}", encode::BATCH_RECORDS_MAX)));
            }
            providers.push(PlannedProvider {
                config: provider.clone(),
                timezone,
                adapter,
                takes_currency,
                games,
                round_ms,
                settle_ms,
                rounds_factor,
            });
        }
        let provider_names: Vec<String> = providers.iter().map(|provider| provider.config.name.clone()).collect();
        let processors_by_currency: Vec<Vec<usize>> = (0..currencies.len())
            .map(|currency| {
                providers
                    .iter()
                    .enumerate()
                    .filter(|(_, provider)| provider.config.role == Role::Payments && provider.takes_currency[currency])
                    .map(|(index, _)| index)
                    .collect()
            })
            .collect();
        if !providers.iter().any(|provider| provider.config.role != Role::Payments) {
            return Err(invalid("providers: at least one game provider is needed"));
        }
        let start_ms = start.timestamp_millis();
        let duration_ms = i64::try_from(options.duration_seconds).unwrap_or(i64::MAX / 2) * 1000;
        let settlewatch_toml = settlewatch_toml(&providers, start_ms, start_ms + duration_ms)?;
        // The configuration the files are for must build every adapter, as ingest will.
        Config::parse(&settlewatch_toml)
            .and_then(|parsed| parsed.providers().map(|_| ()))
            .map_err(|error| invalid(format!("the generated settlewatch.toml does not load: {error}")))?;
        let mut plan = Plan {
            options: options.clone(),
            config: config.clone(),
            start_ms,
            end_ms: start_ms + duration_ms,
            providers,
            currencies,
            chip_minor,
            peak_minutes,
            processors_by_currency,
            provider_names,
            settlewatch_toml,
            base_rate: 0.0,
        };
        let weight_sum: f64 = plan.buckets().map(|bucket| plan.weight(bucket)).sum();
        if weight_sum.is_nan() || weight_sum <= 0.0 {
            return Err(invalid("traffic: the hourly weights are zero over the whole run"));
        }
        plan.base_rate = options.rate_per_second * options.duration_seconds as f64 / (weight_sum * 60.0);
        Ok(plan)
    }

    fn buckets(&self) -> impl Iterator<Item = i64> + '_ {
        (self.start_ms..self.end_ms).step_by(BUCKET_MS as usize)
    }

    /// Activity of the minute starting at `at_ms`, relative to the base rate.
    fn weight(&self, at_ms: i64) -> f64 {
        let traffic = &self.config.traffic;
        let day = at_ms.div_euclid(86_400_000);
        // 1970-01-01 was a Thursday: day 2 is a Saturday.
        let weekend = matches!(day.rem_euclid(7), 2 | 3);
        let minute = (at_ms.rem_euclid(86_400_000) / 60_000) as u32;
        let peak = self.peak_minutes.iter().any(|&(start, end)| start <= minute && minute < end);
        let weight = if peak { traffic.peak_factor } else { traffic.hourly_weights[(minute / 60) as usize] };
        weight * if weekend { traffic.weekend_factor } else { 1.0 }
    }

    fn days(&self) -> f64 {
        self.options.duration_seconds as f64 / 86_400.0
    }
}

/// Seconds beyond a provider's normal delivery cadence after which a record counts as a
/// late delivery (`late_after_seconds` in the written `[providers.reconciliation]`).
pub const LATE_MARGIN_SECONDS: u64 = 300;

/// The longest a record waits for its delivery in normal operation, in milliseconds:
/// webhook batches are sent within [`encode::JSON_BATCH_WINDOW_MS`] of their first item;
/// a batch file holds a whole local hour (fixed width) or day (CSV), measured over the
/// run's actual windows (a day with a clock change is 23 or 25 hours long). Records written
/// with whole seconds may look up to a second older.
fn normal_delivery_wait_ms(provider: &PlannedProvider, start_ms: i64, end_ms: i64) -> i64 {
    // Wins settle and withdrawals follow after the simulated duration: two days covers them.
    let until_ms = end_ms.saturating_add(2 * encode::MS_PER_DAY);
    match provider.adapter {
        AdapterConfig::JsonWebhook(_) => encode::JSON_BATCH_WINDOW_MS,
        AdapterConfig::FixedWidth(_) => {
            encode::longest_window_ms(provider.timezone, start_ms, until_ms, encode::MS_PER_HOUR) + 1_000
        }
        AdapterConfig::CsvSettlement(_) => {
            encode::longest_window_ms(provider.timezone, start_ms, until_ms, encode::MS_PER_DAY) + 1_000
        }
    }
}

/// The configuration `settlewatch ingest` needs for the simulated files, with each
/// provider's reconciliation settings: totals statements, and a lateness threshold just
/// above its normal delivery cadence, so normal traffic is never late and an outage's
/// backlog is where the format allows it.
fn settlewatch_toml(providers: &[PlannedProvider], start_ms: i64, end_ms: i64) -> Result<String, SimulateError> {
    let mut root = toml::Table::new();
    let mut store = toml::Table::new();
    store.insert("url".into(), toml::Value::String("sqlite:settlewatch.db".into()));
    root.insert("store".into(), toml::Value::Table(store));
    let mut entries = Vec::new();
    for provider in providers {
        let mut entry = toml::Table::new();
        entry.insert("name".into(), toml::Value::String(provider.config.name.clone()));
        entry.insert("timezone".into(), toml::Value::String(provider.config.timezone.clone()));
        entry.insert(
            "currencies".into(),
            toml::Value::Array(provider.config.currencies.iter().cloned().map(toml::Value::String).collect()),
        );
        if let Some(share) = &provider.config.revenue_share {
            entry.insert("revenue_share".into(), toml::Value::String(share.clone()));
        }
        entry.insert("adapter".into(), toml::Value::Table(provider.config.adapter.clone()));
        let wait_seconds = (normal_delivery_wait_ms(provider, start_ms, end_ms).max(0) as u64).div_ceil(1_000);
        let mut reconciliation = toml::Table::new();
        reconciliation.insert("statement".into(), toml::Value::String("totals".into()));
        reconciliation.insert(
            "late_after_seconds".into(),
            toml::Value::Integer(i64::try_from(wait_seconds + LATE_MARGIN_SECONDS).unwrap_or(i64::MAX)),
        );
        entry.insert("reconciliation".into(), toml::Value::Table(reconciliation));
        entries.push(toml::Value::Table(entry));
    }
    root.insert("providers".into(), toml::Value::Array(entries));
    let body = toml::to_string(&root).map_err(|error| invalid(format!("writing settlewatch.toml: {error}")))?;
    Ok(format!(
        "# Written by `settlewatch simulate`: the providers whose files are in this directory, with the adapter\n\
         # settings the files were encoded with. Ingest each provider's files in manifest.csv order.\n\n{body}"
    ))
}

/// A seed for one independent stream.
fn stream_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(stream_seed(seed, stream))
}

/// An event waiting in a provider's delivery queue, ordered by (delivery time, sequence).
struct Queued(Event);

impl PartialEq for Queued {
    fn eq(&self, other: &Queued) -> bool {
        (self.0.delivered_ms, self.0.seq) == (other.0.delivered_ms, other.0.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Queued) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Queued) -> std::cmp::Ordering {
        // Reversed: BinaryHeap is a max-heap, the earliest delivery comes out first.
        (other.0.delivered_ms, other.0.seq).cmp(&(self.0.delivered_ms, self.0.seq))
    }
}

struct Outage {
    start_ms: i64,
    end_ms: i64,
    label: Label,
}

/// One provider's delivery path: queue → outages → encoder → sink, with the recorder.
struct Delivery {
    queue: BinaryHeap<Queued>,
    encoder: Box<dyn encode::Encoder>,
    sink: Box<dyn Sink>,
    recorder: Recorder,
    outages: Vec<Outage>,
    next_outage: usize,
    backlog: Vec<Event>,
    seq: u64,
}

impl Delivery {
    fn queue_group(&mut self, mut group: Vec<Event>, faults: &DeliveryFaults<'_>, rng: &mut ChaCha8Rng) {
        let copies = faults.apply(&mut group, rng, &mut self.recorder);
        self.recorder.transactions += group.len() as u64;
        for mut event in group.into_iter().chain(copies) {
            self.seq += 1;
            event.seq = self.seq;
            self.queue.push(Queued(event));
        }
    }

    fn deliver_until(&mut self, until_ms: i64) -> Result<(), SimulateError> {
        while self.queue.peek().is_some_and(|queued| queued.0.delivered_ms < until_ms) {
            let Some(Queued(event)) = self.queue.pop() else { break };
            self.emit(event)?;
        }
        Ok(())
    }

    fn flush_backlog(&mut self) -> Result<(), SimulateError> {
        let Some(outage) = self.outages.get(self.next_outage) else { return Ok(()) };
        let end = outage.end_ms;
        for mut event in std::mem::take(&mut self.backlog) {
            event.delivered_ms = end;
            self.encoder.write(&event, self.sink.as_mut(), &mut self.recorder)?;
        }
        self.next_outage += 1;
        Ok(())
    }

    fn emit(&mut self, mut event: Event) -> Result<(), SimulateError> {
        while self.outages.get(self.next_outage).is_some_and(|outage| outage.end_ms <= event.delivered_ms) {
            self.flush_backlog()?;
        }
        if let Some(outage) = self.outages.get(self.next_outage) {
            if outage.start_ms <= event.delivered_ms {
                if event.label.is_none() {
                    event.label = Some(outage.label);
                }
                self.backlog.push(event);
                return Ok(());
            }
        }
        self.encoder.write(&event, self.sink.as_mut(), &mut self.recorder)
    }

    fn finish(&mut self) -> Result<(), SimulateError> {
        self.deliver_until(i64::MAX)?;
        while self.next_outage < self.outages.len() {
            self.flush_backlog()?;
        }
        self.encoder.finish(self.sink.as_mut(), &mut self.recorder)
    }
}

/// What one provider's thread hands back.
struct ProviderResult {
    recorder: Recorder,
    fundings: Vec<Funding>,
    sessions: u64,
    mismatches: Vec<u8>,
    statement_lines: u64,
}

fn delivery(plan: &Plan, index: usize, rng: &mut ChaCha8Rng) -> Result<Delivery, SimulateError> {
    let provider = &plan.providers[index];
    let kinds = match &provider.adapter {
        AdapterConfig::JsonWebhook(config) => &config.kinds,
        AdapterConfig::CsvSettlement(config) => &config.kinds,
        AdapterConfig::FixedWidth(config) => &config.kinds,
    };
    let kind_width = match &provider.adapter {
        AdapterConfig::FixedWidth(config) => Some(config.detail.kind.width_chars),
        _ => None,
    };
    let vocabulary = Vocabulary::new(
        kinds,
        kind_width,
        &provider.config.tx_prefix,
        provider.games.iter().map(|game| game.id.clone()).collect(),
        plan.currencies.clone(),
    );
    let needed: &[Kind] = match provider.config.role {
        Role::Payments => &[Kind::Deposit, Kind::Withdrawal],
        _ => &[Kind::Bet, Kind::Win, Kind::Rollback, Kind::Bonus],
    };
    for kind in needed {
        if vocabulary.kind_word(*kind).is_empty() {
            return Err(invalid(format!(
                "provider {}: the adapter's kinds have no word for {kind}, which a {:?} provider sends",
                provider.config.name, provider.config.role
            )));
        }
    }
    if let AdapterConfig::FixedWidth(config) = &provider.adapter {
        if let Some(code) = &config.currency {
            let takes_other =
                plan.currencies.iter().zip(&provider.takes_currency).any(|((known, _), takes)| *takes && known != code);
            if takes_other {
                return Err(invalid(format!(
                    "provider {}: its fixed-width files have the fixed currency {code}, so it can take no other",
                    provider.config.name
                )));
            }
        }
    }
    let recorder = Recorder::new(&provider.config.name, index as u16, &vocabulary, LocalClock::new(provider.timezone));
    let encoder = build_encoder(
        &provider.adapter,
        provider.timezone,
        vocabulary,
        rng_for(plan.options.seed, 3_000 + index as u64),
        provider.config.batch_records_max,
        plan.config.scenarios.malformed_batch,
    )
    .map_err(|message| invalid(format!("provider {}: {message}", provider.config.name)))?;
    let sink = FileSink::new(plan.options.out.join(&provider.config.name))?;
    let mut delivery = Delivery {
        queue: BinaryHeap::new(),
        encoder,
        sink: Box::new(sink),
        recorder,
        outages: Vec::new(),
        next_outage: 0,
        backlog: Vec::new(),
        seq: 0,
    };
    // Outages: Poisson over the run, 20 to 90 minutes each, never overlapping.
    let count = players::poisson(rng, plan.config.scenarios.provider_outage * plan.days());
    let mut windows: Vec<(i64, i64)> = (0..count)
        .map(|_| {
            let start = rng.gen_range(plan.start_ms..plan.end_ms);
            (start, start + rng.gen_range(20 * 60_000..=90 * 60_000))
        })
        .collect();
    windows.sort();
    let mut last_end = i64::MIN;
    for (start, end) in windows {
        if start < last_end {
            continue;
        }
        last_end = end;
        let label = delivery.recorder.label(
            Scenario::ProviderOutage,
            "",
            start,
            end,
            format!("no deliveries for {} minutes, then the backlog at once", (end - start) / 60_000),
        );
        delivery.outages.push(Outage { start_ms: start, end_ms: end, label });
    }
    Ok(delivery)
}

fn run_game_provider(
    plan: &Plan,
    index: usize,
    population: &[players::Player],
) -> Result<ProviderResult, SimulateError> {
    let mut rng = rng_for(plan.options.seed, 1_000 + index as u64);
    let mut delivery = delivery(plan, index, &mut rng)?;
    let faults = DeliveryFaults {
        rates: &plan.config.scenarios,
        malformed_codes: delivery.encoder.malformed_codes(),
        chip_minor: &plan.chip_minor,
    };
    let provider = &plan.providers[index];
    let traffic = &plan.config.traffic;
    // RTP drift windows.
    let count = players::poisson(&mut rng, plan.config.scenarios.rtp_drift * plan.days());
    let mut drift = Vec::new();
    for _ in 0..count {
        let game = rng.gen_range(0..provider.games.len()) as u16;
        let start = rng.gen_range(plan.start_ms..plan.end_ms);
        let end = start + rng.gen_range(60 * 60_000..=180 * 60_000);
        let configured = provider.games[usize::from(game)].rtp;
        let rtp = configured * traffic.rtp_drift_factor;
        let label = delivery.recorder.label(
            Scenario::RtpDrift,
            "",
            start,
            end,
            format!("game {} pays at RTP {rtp:.3} instead of {configured:.3}", provider.games[usize::from(game)].id),
        );
        drift.push(DriftWindow { game, start_ms: start, end_ms: end, rtp, label });
    }
    let mut generator = GameProvider {
        games: &provider.games,
        round_ms: provider.round_ms,
        settle_ms: provider.settle_ms,
        rounds_factor: provider.rounds_factor,
        takes_currency: provider.takes_currency.clone(),
        segments: &plan.config.segments,
        players: population,
        chip_minor: &plan.chip_minor,
        rates: &plan.config.scenarios,
        deposit_probability: traffic.deposit_probability,
        withdrawal_probability: traffic.withdrawal_probability,
        bonus_probability: traffic.bonus_probability,
        benign_rollback_probability: traffic.benign_rollback_probability,
        processors_by_currency: &plan.processors_by_currency,
        provider_names: &plan.provider_names,
        drift,
        time_resolution_ms: delivery.encoder.time_resolution_ms(),
        owner: index as u16,
        next_tx: 0,
        next_round: 0,
        next_session: 0,
        next_funding: 0,
        sessions: 0,
    };
    // Expected transactions per session (its game records and the payments it asks for).
    let segment_total: f64 = plan.config.segments.iter().map(|segment| segment.share).sum();
    let rounds_mean: f64 = plan
        .config
        .segments
        .iter()
        .map(|segment| segment.share / segment_total * (segment.rounds_mean * provider.rounds_factor).max(1.0))
        .sum();
    let hit_mean: f64 = provider.games.iter().map(|game| game.hit_rate).sum::<f64>() / provider.games.len() as f64;
    let per_session = rounds_mean * (1.0 + hit_mean) + traffic.deposit_probability + traffic.withdrawal_probability;
    let share_total: f64 = plan
        .providers
        .iter()
        .filter(|other| other.config.role != Role::Payments)
        .map(|other| other.config.traffic_share)
        .sum();
    let share = provider.config.traffic_share / share_total;
    let mut fundings = Vec::new();
    let mut starts = Vec::new();
    for bucket in plan.buckets() {
        let expected = plan.base_rate * plan.weight(bucket) * 60.0 * share / per_session;
        let whole = expected.floor();
        let count = whole as u64 + u64::from(rng.gen_bool(expected - whole));
        starts.clear();
        let bucket_end = (bucket + BUCKET_MS).min(plan.end_ms);
        starts.extend((0..count).map(|_| rng.gen_range(bucket..bucket_end)));
        starts.sort_unstable();
        for &start in &starts {
            let session = generator.session(&mut rng, start, &mut delivery.recorder);
            fundings.extend(session.fundings);
            delivery.queue_group(session.events, &faults, &mut rng);
        }
        delivery.deliver_until(bucket_end)?;
    }
    delivery.finish()?;
    finish_provider(plan, index, delivery, fundings, generator.sessions)
}

fn run_processor(plan: &Plan, index: usize, mut fundings: Vec<Funding>) -> Result<ProviderResult, SimulateError> {
    let mut rng = rng_for(plan.options.seed, 1_000 + index as u64);
    let mut delivery = delivery(plan, index, &mut rng)?;
    let faults = DeliveryFaults {
        rates: &plan.config.scenarios,
        malformed_codes: delivery.encoder.malformed_codes(),
        chip_minor: &plan.chip_minor,
    };
    fundings.sort_by_key(|funding| (funding.time_ms, funding.origin));
    let mut next_tx = 0u64;
    for funding in fundings {
        delivery.deliver_until(funding.time_ms)?;
        next_tx += 1;
        let mut event =
            Event::new(next_tx, funding.kind, funding.player, funding.currency, funding.amount_minor, funding.time_ms);
        event.label = funding.label;
        delivery.queue_group(vec![event], &faults, &mut rng);
    }
    delivery.finish()?;
    finish_provider(plan, index, delivery, Vec::new(), 0)
}

fn finish_provider(
    plan: &Plan,
    index: usize,
    delivery: Delivery,
    fundings: Vec<Funding>,
    sessions: u64,
) -> Result<ProviderResult, SimulateError> {
    let mut recorder = delivery.recorder;
    let provider = &plan.providers[index];
    let mut rng = rng_for(plan.options.seed, 2_000 + index as u64);
    let (mismatches, statement_lines) = statements::write_statements(
        &mut recorder,
        &provider.config.timezone,
        plan.config.scenarios.settlement_mismatch,
        &mut rng,
        &plan.options.out.join(&provider.config.name),
    )?;
    Ok(ProviderResult { recorder, fundings, sessions, mismatches, statement_lines })
}

/// Runs `work` for each index on scoped threads; results in index order.
fn parallel<T: Send>(
    indexes: &[usize],
    work: impl Fn(usize) -> Result<T, SimulateError> + Sync,
) -> Result<Vec<(usize, T)>, SimulateError> {
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = indexes.iter().map(|&index| (index, scope.spawn(move || work(index)))).collect();
        handles
            .into_iter()
            .map(|(index, handle)| match handle.join() {
                Ok(result) => result.map(|value| (index, value)),
                Err(_) => Err(invalid(format!("the generator of provider {index} stopped unexpectedly"))),
            })
            .collect()
    })
}

/// Simulates the configured traffic into `options.out`.
pub fn simulate(config: &SimConfig, options: &RunOptions) -> Result<Summary, SimulateError> {
    let plan = Plan::new(config, options)?;
    std::fs::create_dir_all(&plan.options.out)?;
    let mut population_rng = rng_for(plan.options.seed, 1);
    let shares: Vec<f64> = plan.config.currencies.iter().map(|currency| currency.share).collect();
    let population = players::population(&mut population_rng, plan.config.players, &plan.config.segments, &shares);
    let games: Vec<usize> =
        (0..plan.providers.len()).filter(|&index| plan.providers[index].config.role != Role::Payments).collect();
    let processors: Vec<usize> =
        (0..plan.providers.len()).filter(|&index| plan.providers[index].config.role == Role::Payments).collect();
    let mut results = parallel(&games, |index| run_game_provider(&plan, index, &population))?;
    let mut by_processor: Vec<Vec<Funding>> = vec![Vec::new(); plan.providers.len()];
    for (_, result) in &mut results {
        for funding in std::mem::take(&mut result.fundings) {
            by_processor[funding.processor].push(funding);
        }
    }
    let by_processor = std::sync::Mutex::new(by_processor);
    let take = |index: usize| by_processor.lock().map(|mut all| std::mem::take(&mut all[index])).unwrap_or_default();
    results.extend(parallel(&processors, |index| run_processor(&plan, index, take(index)))?);
    results.sort_by_key(|(index, _)| *index);
    write_outputs(&plan, &results)
}

fn write_outputs(plan: &Plan, results: &[(usize, ProviderResult)]) -> Result<Summary, SimulateError> {
    use std::io::Write;
    let out = &plan.options.out;
    std::fs::write(out.join("settlewatch.toml"), &plan.settlewatch_toml)?;
    let mut truth = scenarios::TRUTH_HEADER.as_bytes().to_vec();
    let mut episodes = b"episode,scenario,provider,account,start,end,detail\n".to_vec();
    let mut mismatches = statements::MISMATCH_HEADER.as_bytes().to_vec();
    let mut manifest =
        b"file,provider,adapter,units,accepted,duplicates,conflicts,rejected,rejected_by_code,delivered_at\n".to_vec();
    let mut episode_counts = [0u64; 12];
    let mut labelled = [0u64; 12];
    let (mut transactions, mut records, mut files, mut sessions, mut statement_lines) = (0, 0, 0, 0, 0);
    let mut fault_opportunities = 0;
    let mut last_occurred_ms = i64::MIN;
    let mut last_delivered_ms: Option<i64> = None;
    let mut batches = 0u64;
    for (index, result) in results {
        let recorder = &result.recorder;
        let provider = &plan.providers[*index];
        truth.extend_from_slice(&recorder.truth);
        mismatches.extend_from_slice(&result.mismatches);
        for episode in &recorder.episodes {
            episode_counts[Scenario::ALL.iter().position(|s| *s == episode.scenario).unwrap_or(0)] += 1;
            scenarios::push_episode_id(&mut episodes, recorder.owner, episode.number);
            episodes.push(b',');
            let _ = write!(episodes, "{},{},{},", episode.scenario.as_str(), episode.provider, episode.account);
            encode::push_utc_rfc3339(&mut episodes, episode.start_ms);
            episodes.push(b',');
            encode::push_utc_rfc3339(&mut episodes, episode.end_ms);
            let _ = writeln!(episodes, ",\"{}\"", episode.detail.replace('"', "\"\""));
        }
        let adapter = match provider.adapter {
            AdapterConfig::JsonWebhook(_) => "json_webhook",
            AdapterConfig::CsvSettlement(_) => "csv_settlement",
            AdapterConfig::FixedWidth(_) => "fixed_width",
        };
        for file in &recorder.files {
            let rejected: u64 = file.rejected.values().sum();
            let codes: Vec<String> = file.rejected.iter().map(|(code, count)| format!("{code}={count}")).collect();
            let _ = write!(
                manifest,
                "{},{},{adapter},{},{},{},{},{rejected},{},",
                file.name,
                provider.config.name,
                file.units,
                file.accepted,
                file.duplicates,
                file.conflicts,
                codes.join(";")
            );
            if let Some(delivered_ms) = file.delivered_ms {
                encode::push_utc_rfc3339(&mut manifest, delivered_ms);
                last_delivered_ms = last_delivered_ms.max(Some(delivered_ms));
            }
            manifest.push(b'\n');
            if adapter == "fixed_width" {
                batches += 1;
            }
        }
        for (total, count) in labelled.iter_mut().zip(recorder.labelled) {
            *total += count;
        }
        transactions += recorder.transactions;
        fault_opportunities += recorder.fault_opportunities;
        last_occurred_ms = last_occurred_ms.max(recorder.last_occurred_ms);
        records += recorder.records;
        files += recorder.files.len() as u64;
        sessions += result.sessions;
        statement_lines += result.statement_lines;
    }
    std::fs::write(out.join("truth.csv"), truth)?;
    std::fs::write(out.join("episodes.csv"), episodes)?;
    std::fs::write(out.join("statement_mismatches.csv"), mismatches)?;
    std::fs::write(out.join("manifest.csv"), manifest)?;
    let game_providers = plan.providers.iter().filter(|provider| provider.config.role != Role::Payments).count();
    let days = plan.days();
    let scenarios: Vec<ScenarioSummary> = Scenario::ALL
        .iter()
        .enumerate()
        .map(|(position, &scenario)| {
            let opportunities = match scenario {
                Scenario::AmountSpike
                | Scenario::VelocityBurst
                | Scenario::RollbackAbuse
                | Scenario::CashThrough
                | Scenario::BonusAbuse => sessions,
                Scenario::DuplicateDelivery | Scenario::ConflictingRedelivery | Scenario::MalformedRecord => {
                    fault_opportunities
                }
                Scenario::RtpDrift => (game_providers as f64 * days).round() as u64,
                Scenario::ProviderOutage => (plan.providers.len() as f64 * days).round() as u64,
                Scenario::SettlementMismatch => statement_lines,
                Scenario::MalformedBatch => batches,
            };
            ScenarioSummary {
                scenario,
                rate: plan.config.scenarios.rate(scenario),
                unit: scenario.rate_unit(),
                opportunities,
                episodes: episode_counts[position],
                records: labelled[position],
            }
        })
        .collect();
    let mut summary_csv = b"scenario,rate,rate_unit,opportunities,episodes,records\n".to_vec();
    for row in &scenarios {
        let _ = writeln!(
            summary_csv,
            "{},{},{},{},{},{}",
            row.scenario.as_str(),
            row.rate,
            row.unit,
            row.opportunities,
            row.episodes,
            row.records
        );
    }
    std::fs::write(out.join("summary.csv"), summary_csv)?;
    let last_occurred_at = DateTime::from_timestamp_millis(last_occurred_ms).filter(|_| last_occurred_ms != i64::MIN);
    let last_delivered_at = last_delivered_ms.and_then(DateTime::from_timestamp_millis);
    Ok(Summary { transactions, records, files, sessions, scenarios, last_occurred_at, last_delivered_at })
}
