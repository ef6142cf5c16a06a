//! Feature extraction: one vector of f64 per canonical transaction, computed incrementally
//! from bounded per-entity state. It exists so that the anomaly models see the same
//! numbers in training and in serving: **features are computed in one place**. Training
//! calls [`extract_batch`] (over the ledger in `seq` order, see
//! `Store::transactions_in_seq_order`); the service calls [`FeatureExtractor::extract`] on
//! each transaction after it is committed, in the same order. Both run the same code.
//! Reconciliation breaks reach the state as [`BreakEvent`]s: the service calls
//! [`FeatureExtractor::note_break`] as they happen, training replays the stored ones in time
//! order among the transactions ([`BreakReplay`], which `extract_batch` uses).
//!
//! # Order and time
//! Features depend on the order transactions arrive in; that order is the ledger's `seq`
//! (the ledger writer's sequence). A vector describes its transaction given everything
//! before it and the transaction itself, never anything after. Time is the transaction's
//! `occurred_at` (event time; nothing here reads a clock). A transaction older than its
//! account's latest one decays nothing and counts as 0 seconds since the previous.
//!
//! # Schema
//! [`SCHEMA`] names the features in vector order (`transaction-v2`; v1 had no break
//! features). A model records the schema it was trained on and calls
//! [`FeatureSchema::check`] before scoring, so a v1 model is refused with the versions named.
//!
//! # The features and their neutral values
//! Amounts enter in two scales: as the amount in the account's own currency (major units,
//! signed), and as `sign · ln(1 + |amount · rate|)` in a reference scale, where `rate` is
//! the configured reference rate of the currency or else `10^(exponent − 2)` from the
//! currency's minor-unit exponent (a minor unit counts as one hundredth of a reference
//! unit: USD and EUR at face value, KRW and JPY at 0.01, BHD at 10). Below, "amount" is the
//! absolute reference amount.
//!
//! - `amount_log_ratio_to_account_median`, `amount_robust_z_account`: the log amount
//!   against the median of the account's previous 16 log amounts, and that difference over
//!   `1.4826 · MAD` (floored at 0.1). The median and MAD are exact over those 16 values
//!   (kept sorted as f32 with their arrival order, 81 bytes per account): an approximation
//!   of the account's lifetime median that follows recent behaviour. No history: 0.
//! - `account_seconds_since_previous_log1p`: `ln(1 + seconds)` since the account's
//!   latest earlier transaction, capped at 30 days; the first transaction gets the cap.
//! - Velocity `account_count_{1m,10m,1h}` and `account_amount_sum_{..}_log1p`: counts and
//!   amount sums over exponentially decaying windows (time constants 60 s, 600 s, 3600 s),
//!   including this transaction. A decayed count is the O(1), 16-byte stand-in for a
//!   sliding window: a steady rate of r per second shows as `r · τ`, and an event `t`
//!   seconds ago weighs `e^(−t/τ)` instead of dropping out at once.
//! - `round_win_bet_ratio`: wins / bets of the round so far (with this one); no round: 0.
//! - `account_win_bet_ratio_1h`: decayed wins / decayed bets of the account (τ = 1 h).
//! - `account_rollback_ratio`: rollbacks / transactions of the account (lifetime).
//! - Turnover since deposit: a deposit after a withdrawal starts a new cycle;
//!   `turnover_wagered_per_deposited` is bets / deposits and
//!   `turnover_withdrawn_per_wagered` is withdrawals / bets within the cycle.
//! - `game_rtp_realised_1h` (decayed wins / decayed bets of the game, τ = 1 h; jackpot
//!   wins count as wins; rollbacks do not change it, the stream does not say what they
//!   reverse) and `game_rtp_deviation_1h` (realised − expected, the expected RTP per game
//!   from the configuration). No game, or no bets yet: realised = expected, deviation 0.
//! - Provider rates: `provider_transactions_per_second_1m` (decayed count / 60 s), and the
//!   share of rejections, duplicates and conflicts among all of the provider's ingest
//!   events (τ = 10 min). Rejected, duplicate and conflicting records never reach the
//!   ledger, so the transaction stream cannot show them: the ingest path is to report them
//!   with [`FeatureExtractor::note_refusal`] (the service will; nothing calls it yet). Without those calls (for instance when exporting
//!   from the ledger for training) the three shares are 0, so a model trained on an export
//!   sees none of them; they matter once the service feeds them.
//! - Provider reconciliation breaks ("a provider with rising mismatches is itself an
//!   anomaly"), from the [`BreakEvent`]s noted before the transaction (see `breaks.rs`):
//!   `provider_open_breaks_log` = `ln(1 + open breaks)`; `provider_oldest_break_age_log` =
//!   `ln(1 + hours)` from the oldest open break's opening to the transaction's occurred-at
//!   (0 with no open break, and for a transaction that occurred before that opening);
//!   `provider_breaks_opened_1d`, the decayed count of breaks opened (τ = 1 day) seen at
//!   occurred-at. Without events (an export before the store kept them) all three are 0.
//! - `delay_seconds_signed_log1p`: received-at minus occurred-at, signed log.
//! - Hour of day and day of week (UTC) as sine and cosine.
//! - First seen: `account_first_seen`, `game_first_seen`, `session_first_seen` are 1 when
//!   the entity is not in its table (new, or evicted since). The canonical model has no
//!   device field, so there is no device flag.
//! - `kind_*`: one-hot of the transaction's kind.
//!
//! Every value is finite for every transaction (a property test checks it).
//!
//! # Bounded state
//! An account is keyed by its id alone (one player across providers, as in the ledger's
//! `player:{account}`); games, sessions and rounds by provider and id.
//! Each entity (account, game, session, round, provider, provider with breaks) lives in a
//! table capped by its `*_max` in [`FeatureConfig`], with CLOCK eviction (least recently
//! seen, approximately; see `table.rs`). Keys are 64-bit hashes of the identifiers, so no strings are stored:
//! with 1,000,000 accounts the whole state is estimated at about 300 bytes per account,
//! index included, and the process's peak RSS grows by about 340 bytes per account
//! (`settlewatch features bench`; BENCHMARKS.md). In steady state (tables at their limit,
//! or the working set known) `extract` allocates nothing (a test counts allocations).

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::model::{Kind, Transaction};
use crate::money::{Currencies, CurrencyCode};

mod breaks;
mod stats;
mod table;

use breaks::ProviderBreaks;
pub use breaks::{break_events_from_changes, BreakChange, BreakEvent, BreakReplay, BreakStatusChange};

use stats::{
    decay, decimal_to_f64, instant_nanos, ratio, seconds_between, signed_log1p, CyclicTimeOfSecond, Ring, RATIO_MAX,
};
use table::{EntityTable, KeyHasher};

/// Default limits of the per-entity tables.
pub const ACCOUNTS_MAX_DEFAULT: usize = 1_000_000;
pub const GAMES_MAX_DEFAULT: usize = 100_000;
pub const SESSIONS_MAX_DEFAULT: usize = 250_000;
pub const ROUNDS_MAX_DEFAULT: usize = 250_000;
pub const PROVIDERS_MAX_DEFAULT: usize = 10_000;
/// Providers whose reconciliation breaks are tracked (providers are few; this bounds the table).
pub const BREAK_PROVIDERS_MAX_DEFAULT: usize = 1_000;
/// Opening instants of open breaks kept per provider (the oldest; more are only counted).
pub const OPEN_BREAK_TIMES_PER_PROVIDER_MAX_DEFAULT: usize = 1_024;
/// Time constant of a provider's decayed count of breaks opened: one day, since
/// reconciliation runs per business day.
pub const PROVIDER_BREAK_WINDOW_SECONDS_DEFAULT: f64 = 86_400.0;
/// Distinct currencies whose reference rate is cached (more are looked up each time).
pub const CURRENCIES_CACHED_MAX: usize = 64;
/// Seconds since the previous transaction are capped at 30 days (also the "no previous").
pub const SECONDS_SINCE_PREVIOUS_MAX: f64 = 30.0 * 86_400.0;
/// A reference rate must be positive, finite and at most this.
pub const REFERENCE_RATE_MAX: f64 = 1e12;
/// The robust z-score's scale is `1.4826 · MAD`, floored here (log units) so that an
/// account with identical amounts does not divide by zero.
pub const ROBUST_SCALE_MIN: f64 = 0.1;
const MAD_TO_SIGMA: f64 = 1.4826;
const SECONDS_PER_HOUR: f64 = 3_600.0;

/// The number of features in a vector.
pub const FEATURE_COUNT: usize = 43;

const NAMES: [&str; FEATURE_COUNT] = [
    "amount_account_currency",
    "amount_reference_signed_log1p",
    "amount_log_ratio_to_account_median",
    "amount_robust_z_account",
    "account_seconds_since_previous_log1p",
    "account_count_1m",
    "account_count_10m",
    "account_count_1h",
    "account_amount_sum_1m_log1p",
    "account_amount_sum_10m_log1p",
    "account_amount_sum_1h_log1p",
    "round_win_bet_ratio",
    "account_win_bet_ratio_1h",
    "account_rollback_ratio",
    "turnover_wagered_per_deposited",
    "turnover_withdrawn_per_wagered",
    "game_rtp_realised_1h",
    "game_rtp_deviation_1h",
    "provider_transactions_per_second_1m",
    "provider_rejected_share_10m",
    "provider_duplicate_share_10m",
    "provider_conflict_share_10m",
    "provider_open_breaks_log",
    "provider_oldest_break_age_log",
    "provider_breaks_opened_1d",
    "delay_seconds_signed_log1p",
    "hour_of_day_sin",
    "hour_of_day_cos",
    "day_of_week_sin",
    "day_of_week_cos",
    "account_first_seen",
    "game_first_seen",
    "session_first_seen",
    "kind_bet",
    "kind_win",
    "kind_rollback",
    "kind_jackpot_win",
    "kind_bonus",
    "kind_deposit",
    "kind_withdrawal",
    "kind_fee",
    "kind_chargeback",
    "kind_manual_adjustment",
];

/// The schema of the vectors this build computes.
pub const SCHEMA: FeatureSchema = FeatureSchema { name: "transaction", version: 2, names: &NAMES };

/// A named, versioned list of feature names, in vector order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureSchema {
    pub name: &'static str,
    pub version: u32,
    pub names: &'static [&'static str],
}

/// How a recorded schema differs from this build's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SchemaMismatch {
    #[error("feature schema name differs: the model was trained on {found:?}, this build computes {expected:?}")]
    Name { expected: String, found: String },
    #[error(
        "feature schema {name} version differs: the model was trained on version {found}, this build computes version {expected}"
    )]
    Version { name: String, expected: u32, found: u32 },
    #[error(
        "feature schema {name}-v{version}: the model has {found} features, this build computes {expected}; \
         missing from the model: [{}]; unknown to this build: [{}]",
        .missing.join(", "), .unknown.join(", ")
    )]
    Count { name: String, version: u32, expected: usize, found: usize, missing: Vec<String>, unknown: Vec<String> },
    #[error(
        "feature schema {name}-v{version}: feature {position} is {found:?} in the model but {expected:?} in this build"
    )]
    Feature { name: String, version: u32, position: usize, expected: String, found: String },
}

impl FeatureSchema {
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// `name-vVERSION:` and the first 16 hex digits of sha256 over the names (each
    /// followed by a newline). It changes when a feature is added, removed, renamed or
    /// moved.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for name in self.names {
            hasher.update(name.as_bytes());
            hasher.update(b"\n");
        }
        let digest = hex::encode(hasher.finalize());
        format!("{}-v{}:{}", self.name, self.version, &digest[..16])
    }

    /// Whether a schema recorded elsewhere (a model's metadata) is this one; the error says
    /// what differs: the name, the version, the count (with the names missing on either
    /// side) or the first position whose name differs.
    pub fn check<S: AsRef<str>>(&self, name: &str, version: u32, names: &[S]) -> Result<(), SchemaMismatch> {
        if name != self.name {
            return Err(SchemaMismatch::Name { expected: self.name.to_string(), found: name.to_string() });
        }
        if version != self.version {
            return Err(SchemaMismatch::Version {
                name: self.name.to_string(),
                expected: self.version,
                found: version,
            });
        }
        if names.len() != self.names.len() {
            let found: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
            return Err(SchemaMismatch::Count {
                name: self.name.to_string(),
                version: self.version,
                expected: self.names.len(),
                found: names.len(),
                missing: self.names.iter().filter(|n| !found.contains(n)).map(|n| n.to_string()).collect(),
                unknown: found.iter().filter(|n| !self.names.contains(n)).map(|n| n.to_string()).collect(),
            });
        }
        for (position, (expected, found)) in self.names.iter().zip(names).enumerate() {
            if *expected != found.as_ref() {
                return Err(SchemaMismatch::Feature {
                    name: self.name.to_string(),
                    version: self.version,
                    position,
                    expected: expected.to_string(),
                    found: found.as_ref().to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Limits, windows and reference values of the extractor.
///
/// The window lengths are part of what the features mean: a model trained with one set
/// should be served with the same (the schema names carry the defaults).
#[derive(Clone, Debug)]
pub struct FeatureConfig {
    pub accounts_max: usize,
    pub games_max: usize,
    pub sessions_max: usize,
    pub rounds_max: usize,
    pub providers_max: usize,
    /// Time constants of the account velocity windows (the `1m`, `10m`, `1h` features).
    pub velocity_windows_seconds: [f64; 3],
    /// Time constant of the account's win/bet ratio.
    pub account_ratio_window_seconds: f64,
    /// Time constant of a game's realised RTP.
    pub game_rtp_window_seconds: f64,
    /// Time constant of a provider's transaction rate.
    pub provider_rate_window_seconds: f64,
    /// Time constant of a provider's rejection, duplicate and conflict shares.
    pub provider_refusal_window_seconds: f64,
    /// Providers whose reconciliation breaks are tracked (a table like the others).
    pub break_providers_max: usize,
    /// Opening instants of open breaks kept per provider; see `breaks.rs` for beyond.
    pub open_break_times_per_provider_max: usize,
    /// Time constant of a provider's decayed count of breaks opened.
    pub provider_break_window_seconds: f64,
    /// Expected return to player per game id; games not listed use `expected_rtp_default`.
    pub expected_rtp: BTreeMap<String, f64>,
    pub expected_rtp_default: f64,
    /// Reference units per major unit of a currency; currencies not listed use
    /// `10^(exponent − 2)` from `currencies`, or 1 when the currency is unknown there too.
    pub reference_rates: BTreeMap<CurrencyCode, f64>,
    pub currencies: Currencies,
}

impl Default for FeatureConfig {
    fn default() -> FeatureConfig {
        FeatureConfig {
            accounts_max: ACCOUNTS_MAX_DEFAULT,
            games_max: GAMES_MAX_DEFAULT,
            sessions_max: SESSIONS_MAX_DEFAULT,
            rounds_max: ROUNDS_MAX_DEFAULT,
            providers_max: PROVIDERS_MAX_DEFAULT,
            velocity_windows_seconds: [60.0, 600.0, 3600.0],
            account_ratio_window_seconds: 3600.0,
            game_rtp_window_seconds: 3600.0,
            provider_rate_window_seconds: 60.0,
            provider_refusal_window_seconds: 600.0,
            break_providers_max: BREAK_PROVIDERS_MAX_DEFAULT,
            open_break_times_per_provider_max: OPEN_BREAK_TIMES_PER_PROVIDER_MAX_DEFAULT,
            provider_break_window_seconds: PROVIDER_BREAK_WINDOW_SECONDS_DEFAULT,
            expected_rtp: BTreeMap::new(),
            expected_rtp_default: 0.96,
            reference_rates: BTreeMap::new(),
            currencies: Currencies::iso(),
        }
    }
}

/// A configuration value the extractor cannot use.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FeatureConfigError {
    #[error("features: {field} must be at least 1 (it is {value})")]
    LimitZero { field: &'static str, value: usize },
    #[error("features: {field} must be a positive finite number of seconds (it is {value})")]
    Window { field: &'static str, value: f64 },
    #[error("features: expected RTP of {game:?} must be finite and between 0 and {RATIO_MAX} (it is {value})")]
    ExpectedRtp { game: String, value: f64 },
    #[error("features: reference rate of {currency} must be positive, finite and at most {REFERENCE_RATE_MAX} (it is {value})")]
    ReferenceRate { currency: String, value: f64 },
}

fn window_ok(seconds: f64) -> bool {
    seconds.is_finite() && seconds > 0.0
}

fn rtp_ok(rtp: f64) -> bool {
    rtp.is_finite() && (0.0..=RATIO_MAX).contains(&rtp)
}

fn rate_ok(rate: f64) -> bool {
    rate.is_finite() && rate > 0.0 && rate <= REFERENCE_RATE_MAX
}

impl FeatureConfig {
    /// The first unusable value of the configuration, if any (for configurations read from
    /// a file; [`FeatureExtractor::new`] replaces unusable values by the defaults).
    pub fn check(&self) -> Result<(), FeatureConfigError> {
        for (field, value) in [
            ("accounts_max", self.accounts_max),
            ("games_max", self.games_max),
            ("sessions_max", self.sessions_max),
            ("rounds_max", self.rounds_max),
            ("providers_max", self.providers_max),
            ("break_providers_max", self.break_providers_max),
            ("open_break_times_per_provider_max", self.open_break_times_per_provider_max),
        ] {
            if value == 0 {
                return Err(FeatureConfigError::LimitZero { field, value });
            }
        }
        let windows = [
            ("velocity_windows_seconds[0]", self.velocity_windows_seconds[0]),
            ("velocity_windows_seconds[1]", self.velocity_windows_seconds[1]),
            ("velocity_windows_seconds[2]", self.velocity_windows_seconds[2]),
            ("account_ratio_window_seconds", self.account_ratio_window_seconds),
            ("game_rtp_window_seconds", self.game_rtp_window_seconds),
            ("provider_rate_window_seconds", self.provider_rate_window_seconds),
            ("provider_refusal_window_seconds", self.provider_refusal_window_seconds),
            ("provider_break_window_seconds", self.provider_break_window_seconds),
        ];
        for (field, value) in windows {
            if !window_ok(value) {
                return Err(FeatureConfigError::Window { field, value });
            }
        }
        if !rtp_ok(self.expected_rtp_default) {
            return Err(FeatureConfigError::ExpectedRtp { game: "(default)".into(), value: self.expected_rtp_default });
        }
        if let Some((game, &value)) = self.expected_rtp.iter().find(|(_, &rtp)| !rtp_ok(rtp)) {
            return Err(FeatureConfigError::ExpectedRtp { game: game.clone(), value });
        }
        if let Some((currency, &value)) = self.reference_rates.iter().find(|(_, &rate)| !rate_ok(rate)) {
            return Err(FeatureConfigError::ReferenceRate { currency: currency.to_string(), value });
        }
        Ok(())
    }

    /// The configuration with every unusable value replaced by its default.
    fn sanitized(mut self) -> FeatureConfig {
        let defaults = FeatureConfig::default();
        let limit = |value: usize, default: usize| if value == 0 { default } else { value };
        self.accounts_max = limit(self.accounts_max, defaults.accounts_max);
        self.games_max = limit(self.games_max, defaults.games_max);
        self.sessions_max = limit(self.sessions_max, defaults.sessions_max);
        self.rounds_max = limit(self.rounds_max, defaults.rounds_max);
        self.providers_max = limit(self.providers_max, defaults.providers_max);
        self.break_providers_max = limit(self.break_providers_max, defaults.break_providers_max);
        self.open_break_times_per_provider_max =
            limit(self.open_break_times_per_provider_max, defaults.open_break_times_per_provider_max);
        let window = |value: f64, default: f64| if window_ok(value) { value } else { default };
        for (value, default) in self.velocity_windows_seconds.iter_mut().zip(defaults.velocity_windows_seconds) {
            *value = window(*value, default);
        }
        self.account_ratio_window_seconds =
            window(self.account_ratio_window_seconds, defaults.account_ratio_window_seconds);
        self.game_rtp_window_seconds = window(self.game_rtp_window_seconds, defaults.game_rtp_window_seconds);
        self.provider_rate_window_seconds =
            window(self.provider_rate_window_seconds, defaults.provider_rate_window_seconds);
        self.provider_refusal_window_seconds =
            window(self.provider_refusal_window_seconds, defaults.provider_refusal_window_seconds);
        self.provider_break_window_seconds =
            window(self.provider_break_window_seconds, defaults.provider_break_window_seconds);
        if !rtp_ok(self.expected_rtp_default) {
            self.expected_rtp_default = defaults.expected_rtp_default;
        }
        self.expected_rtp.retain(|_, rtp| rtp_ok(*rtp));
        self.reference_rates.retain(|_, rate| rate_ok(*rate));
        self
    }

    fn reference_rate(&self, currency: CurrencyCode) -> f64 {
        if let Some(&rate) = self.reference_rates.get(&currency) {
            return rate;
        }
        match self.currencies.exponent(currency) {
            Some(exponent) => 10f64.powi(exponent as i32 - 2),
            None => 1.0,
        }
    }
}

/// What the ingest path refused for a provider (these never reach the ledger).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Rejected with an error code (dead-lettered).
    Rejected,
    /// The same key and content as a stored transaction.
    Duplicate,
    /// The same key with other content.
    Conflict,
}

#[derive(Clone, Copy, Debug, Default)]
struct AccountState {
    /// Latest occurred-at seen (the decay reference).
    last_nanos: i64,
    transactions: u32,
    rollbacks: u32,
    counts: [f64; 3],
    sums: [f64; 3],
    bets_decayed: f64,
    wins_decayed: f64,
    deposited: f64,
    wagered: f64,
    withdrawn: f64,
    /// A withdrawal closed the current deposit cycle; the next deposit opens a new one.
    cycle_closed: bool,
    amounts: Ring,
}

#[derive(Clone, Copy, Debug, Default)]
struct GameState {
    last_nanos: i64,
    bets_decayed: f64,
    wins_decayed: f64,
    expected_rtp: f64,
}

#[derive(Clone, Copy, Debug, Default)]
struct RoundState {
    bets: f64,
    wins: f64,
}

#[derive(Clone, Copy, Debug, Default)]
struct ProviderState {
    last_nanos: i64,
    seen: bool,
    rate_count: f64,
    accepted: f64,
    rejected: f64,
    duplicates: f64,
    conflicts: f64,
    /// The provider's slot in the break table (`None`: no break state), valid while the
    /// table's placements are the ones recorded here. The default, no slot at 0
    /// placements, is right for the empty table.
    breaks_slot: Option<u32>,
    breaks_placements: u64,
}

impl ProviderState {
    /// Decays the counters to `at` (never backwards).
    fn advance(&mut self, at_nanos: i64, rate_window_seconds: f64, refusal_window_seconds: f64) {
        if !self.seen {
            self.seen = true;
            self.last_nanos = at_nanos;
            return;
        }
        let elapsed = seconds_between(at_nanos, self.last_nanos);
        let rate_weight = decay(elapsed, rate_window_seconds);
        let refusal_weight = decay(elapsed, refusal_window_seconds);
        self.rate_count *= rate_weight;
        self.accepted *= refusal_weight;
        self.rejected *= refusal_weight;
        self.duplicates *= refusal_weight;
        self.conflicts *= refusal_weight;
        self.last_nanos = self.last_nanos.max(at_nanos);
    }
}

/// Table sizes and the state's estimated memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtractorStats {
    pub accounts: usize,
    pub games: usize,
    pub sessions: usize,
    pub rounds: usize,
    pub providers: usize,
    /// Providers with reconciliation break state.
    pub break_providers: usize,
    /// Open breaks over all tracked providers.
    pub open_breaks: u64,
    /// Break closes whose opening was not known (see [`FeatureExtractor::note_break`]).
    pub break_closes_unmatched: u64,
    pub evictions: u64,
    /// Estimated bytes of all tables (capacities times entry sizes, plus the kept opening
    /// instants of open breaks).
    pub memory_bytes: usize,
}

const DOMAIN_ACCOUNT: u8 = 1;
const DOMAIN_GAME: u8 = 2;
const DOMAIN_SESSION: u8 = 3;
const DOMAIN_ROUND: u8 = 4;
const DOMAIN_PROVIDER: u8 = 5;

/// The streaming extractor: feed it transactions in `seq` order.
pub struct FeatureExtractor {
    config: FeatureConfig,
    accounts: EntityTable<AccountState>,
    games: EntityTable<GameState>,
    sessions: EntityTable<()>,
    rounds: EntityTable<RoundState>,
    providers: EntityTable<ProviderState>,
    /// Reconciliation breaks per provider (keyed like `providers`, in a table of its own
    /// with its own limit: changed by [`BreakEvent`]s, read by transactions through the
    /// slot kept in the provider's entry, see `ProviderState::breaks_slot`).
    breaks: EntityTable<ProviderBreaks>,
    break_closes_unmatched: u64,
    currency_rates: Vec<(CurrencyCode, f64)>,
    time_of_day: CyclicTimeOfSecond,
}

impl FeatureExtractor {
    /// An extractor with empty state. Unusable configuration values (a zero limit, a
    /// non-positive window, a non-finite rate) are replaced by their defaults; call
    /// [`FeatureConfig::check`] first to report them instead.
    pub fn new(config: FeatureConfig) -> FeatureExtractor {
        let config = config.sanitized();
        FeatureExtractor {
            accounts: EntityTable::new(config.accounts_max),
            games: EntityTable::new(config.games_max),
            sessions: EntityTable::new(config.sessions_max),
            rounds: EntityTable::new(config.rounds_max),
            providers: EntityTable::new(config.providers_max),
            breaks: EntityTable::new(config.break_providers_max),
            break_closes_unmatched: 0,
            currency_rates: Vec::with_capacity(CURRENCIES_CACHED_MAX),
            time_of_day: CyclicTimeOfSecond::default(),
            config,
        }
    }

    pub fn schema(&self) -> &'static FeatureSchema {
        &SCHEMA
    }

    pub fn stats(&self) -> ExtractorStats {
        ExtractorStats {
            accounts: self.accounts.len(),
            games: self.games.len(),
            sessions: self.sessions.len(),
            rounds: self.rounds.len(),
            providers: self.providers.len(),
            break_providers: self.breaks.len(),
            open_breaks: self.breaks.states().map(ProviderBreaks::open_count).fold(0, u64::saturating_add),
            break_closes_unmatched: self.break_closes_unmatched,
            evictions: self.accounts.evictions()
                + self.games.evictions()
                + self.sessions.evictions()
                + self.rounds.evictions()
                + self.providers.evictions()
                + self.breaks.evictions(),
            memory_bytes: std::mem::size_of::<FeatureExtractor>()
                + self.accounts.memory_bytes()
                + self.games.memory_bytes()
                + self.sessions.memory_bytes()
                + self.rounds.memory_bytes()
                + self.providers.memory_bytes()
                + self.breaks.memory_bytes()
                + self.breaks.states().map(ProviderBreaks::kept_instants).sum::<usize>()
                    * breaks::OPEN_BREAK_TIME_BYTES_ESTIMATE
                + self.currency_rates.capacity() * std::mem::size_of::<(CurrencyCode, f64)>(),
        }
    }

    /// Counts a refused record (rejection, duplicate, conflict) of `provider` at `at` into
    /// the provider's shares. For the ingest path of the service to call with each
    /// outcome that is not an acceptance (nothing calls it yet); see the module docs.
    pub fn note_refusal(&mut self, provider: &str, refusal: Refusal, at: chrono::DateTime<chrono::Utc>) {
        let key = KeyHasher::new(DOMAIN_PROVIDER).field(provider).finish();
        let (rate_window, refusal_window) =
            (self.config.provider_rate_window_seconds, self.config.provider_refusal_window_seconds);
        let state = self.providers.get_or_insert(key).state;
        state.advance(instant_nanos(at), rate_window, refusal_window);
        match refusal {
            Refusal::Rejected => state.rejected += 1.0,
            Refusal::Duplicate => state.duplicates += 1.0,
            Refusal::Conflict => state.conflicts += 1.0,
        }
    }

    /// Takes a reconciliation break event of a provider into its state: serving calls it
    /// when reconciliation opens or closes a break, training replays the stored events
    /// with [`BreakReplay`]. O(log n) in the provider's kept opening instants; bounded
    /// (see `breaks.rs`). A close whose opening this extractor never saw (before it
    /// started, or forgotten by eviction) changes nothing and is counted in
    /// [`ExtractorStats::break_closes_unmatched`].
    pub fn note_break(&mut self, event: &BreakEvent) {
        let key = KeyHasher::new(DOMAIN_PROVIDER).field(&event.provider).finish();
        match event.change {
            BreakChange::Opened => {
                let (times_max, window) =
                    (self.config.open_break_times_per_provider_max, self.config.provider_break_window_seconds);
                self.breaks.get_or_insert(key).state.open(instant_nanos(event.at), times_max, window);
            }
            BreakChange::Closed { opened_at } => {
                let matched = self.breaks.find(key).is_some_and(|state| state.close(instant_nanos(opened_at)));
                if !matched {
                    self.break_closes_unmatched += 1;
                }
            }
        }
    }

    fn reference_rate(&mut self, currency: CurrencyCode) -> f64 {
        if let Some(&(_, rate)) = self.currency_rates.iter().find(|(code, _)| *code == currency) {
            return rate;
        }
        let rate = self.config.reference_rate(currency);
        if self.currency_rates.len() < CURRENCIES_CACHED_MAX {
            self.currency_rates.push((currency, rate));
        }
        rate
    }

    /// Takes `tx` into the state, then writes its feature vector (in [`SCHEMA`] order) to
    /// `out`. O(1) amortised: one lookup per entity table, no allocation once the tables
    /// are at their working size. (A table that evicts continuously rehashes its index in
    /// place now and then, clearing the tombstones of evicted keys: a pause proportional
    /// to the table's size, about once per `*_max` evictions or more rarely.)
    ///
    /// # Panics
    /// If `out.len()` is not [`FEATURE_COUNT`] (a programming error, not an input error).
    pub fn extract(&mut self, tx: &Transaction, out: &mut [f64]) {
        assert_eq!(out.len(), FEATURE_COUNT, "feature vector length");
        let rate = self.reference_rate(tx.currency);
        let config = &self.config;
        let at = instant_nanos(tx.occurred_at);
        let amount_major = decimal_to_f64(tx.amount);
        let reference = amount_major * rate;
        let amount = reference.abs();
        let amount_log = amount.ln_1p();
        let kind = tx.kind;
        let is_bet = kind == Kind::Bet;
        let is_win = matches!(kind, Kind::Win | Kind::JackpotWin);

        // Every entity is looked up before any state is read. Their states lie apart in
        // memory, mostly outside the cache with many accounts and rounds: looking them up
        // one after the other, each only when the previous one's arithmetic is done, makes
        // the processor wait for each fetch in turn; together, the fetches overlap. The
        // tables are independent, so the order of the lookups changes nothing else.
        let account_key = KeyHasher::new(DOMAIN_ACCOUNT).field(&tx.account).finish();
        let game_key = tx
            .game_id
            .as_deref()
            .map(|game_id| KeyHasher::new(DOMAIN_GAME).field(&tx.provider).field(game_id).finish());
        let round_key = tx
            .round_id
            .as_deref()
            .map(|round_id| KeyHasher::new(DOMAIN_ROUND).field(&tx.provider).field(round_id).finish());
        let session_key = tx
            .session_id
            .as_deref()
            .map(|session_id| KeyHasher::new(DOMAIN_SESSION).field(&tx.provider).field(session_id).finish());
        let provider_key = KeyHasher::new(DOMAIN_PROVIDER).field(&tx.provider).finish();
        let account_entry = self.accounts.get_or_insert(account_key);
        let game_entry = game_key.map(|key| self.games.get_or_insert(key));
        let round = round_key.map(|key| self.rounds.get_or_insert(key).state);
        let session_first_seen = session_key.is_some_and(|key| self.sessions.get_or_insert(key).first_seen);
        let provider = self.providers.get_or_insert(provider_key).state;
        // Reconciliation breaks of the provider: looked up once, then read through the
        // slot kept in the provider's state until the break table places another key (a
        // provider's first break, or an eviction), which is rare.
        if provider.breaks_placements != self.breaks.placements() {
            provider.breaks_slot = self.breaks.find_slot(provider_key);
            provider.breaks_placements = self.breaks.placements();
        }
        let breaks = provider.breaks_slot.map(|slot| &*self.breaks.at_slot(slot));

        // Account.
        let account_first_seen = account_entry.first_seen;
        let account = account_entry.state;
        let (log_ratio_to_median, robust_z) = match account.amounts.median_and_mad() {
            Some((median, mad)) => {
                let difference = amount_log - median;
                (difference, difference / (MAD_TO_SIGMA * mad).max(ROBUST_SCALE_MIN))
            }
            None => (0.0, 0.0),
        };
        account.amounts.push(amount_log);
        let elapsed = if account.transactions == 0 { 0.0 } else { seconds_between(at, account.last_nanos) };
        let seconds_since_previous = if account.transactions == 0 {
            SECONDS_SINCE_PREVIOUS_MAX
        } else {
            elapsed.clamp(0.0, SECONDS_SINCE_PREVIOUS_MAX)
        };
        for window in 0..3 {
            let weight = decay(elapsed, config.velocity_windows_seconds[window]);
            account.counts[window] = account.counts[window] * weight + 1.0;
            account.sums[window] = account.sums[window] * weight + amount;
        }
        let ratio_weight = decay(elapsed, config.account_ratio_window_seconds);
        account.bets_decayed = account.bets_decayed * ratio_weight + if is_bet { amount } else { 0.0 };
        account.wins_decayed = account.wins_decayed * ratio_weight + if is_win { amount } else { 0.0 };
        account.last_nanos = if account.transactions == 0 { at } else { account.last_nanos.max(at) };
        account.transactions = account.transactions.saturating_add(1);
        if kind == Kind::Rollback {
            account.rollbacks = account.rollbacks.saturating_add(1);
        }
        match kind {
            Kind::Deposit => {
                if account.cycle_closed {
                    account.deposited = 0.0;
                    account.wagered = 0.0;
                    account.withdrawn = 0.0;
                    account.cycle_closed = false;
                }
                account.deposited += amount;
            }
            Kind::Bet => account.wagered += amount,
            Kind::Withdrawal => {
                account.withdrawn += amount;
                account.cycle_closed = true;
            }
            _ => {}
        }
        let account_counts = account.counts;
        let account_sums = account.sums;
        let account_win_bet = ratio(account.wins_decayed, account.bets_decayed);
        let rollback_ratio = account.rollbacks as f64 / account.transactions as f64;
        let wagered_per_deposited = ratio(account.wagered, account.deposited);
        let withdrawn_per_wagered = ratio(account.withdrawn, account.wagered);

        // Game.
        let (rtp_realised, rtp_deviation, game_first_seen) = match (game_entry, tx.game_id.as_deref()) {
            (Some(entry), Some(game_id)) => {
                let game = entry.state;
                if entry.first_seen {
                    game.expected_rtp =
                        config.expected_rtp.get(game_id).copied().unwrap_or(config.expected_rtp_default);
                    game.last_nanos = at;
                }
                let weight = decay(seconds_between(at, game.last_nanos), config.game_rtp_window_seconds);
                game.bets_decayed = game.bets_decayed * weight + if is_bet { amount } else { 0.0 };
                game.wins_decayed = game.wins_decayed * weight + if is_win { amount } else { 0.0 };
                game.last_nanos = game.last_nanos.max(at);
                let realised = if game.bets_decayed > 0.0 {
                    ratio(game.wins_decayed, game.bets_decayed)
                } else {
                    game.expected_rtp
                };
                (realised, realised - game.expected_rtp, entry.first_seen)
            }
            _ => (config.expected_rtp_default, 0.0, false),
        };

        // Round.
        let round_win_bet = match round {
            Some(round) => {
                if is_bet {
                    round.bets += amount;
                }
                if is_win {
                    round.wins += amount;
                }
                ratio(round.wins, round.bets)
            }
            None => 0.0,
        };

        // Provider.
        provider.advance(at, config.provider_rate_window_seconds, config.provider_refusal_window_seconds);
        provider.rate_count += 1.0;
        provider.accepted += 1.0;
        let events = provider.accepted + provider.rejected + provider.duplicates + provider.conflicts;
        let transactions_per_second = provider.rate_count / config.provider_rate_window_seconds;
        let (rejected_share, duplicate_share, conflict_share) =
            (provider.rejected / events, provider.duplicates / events, provider.conflicts / events);

        let (open_breaks_log, oldest_break_age_hours, breaks_opened) = match breaks {
            Some(breaks) => (
                breaks.open_count_log(),
                breaks.oldest_nanos().map_or(0.0, |oldest| seconds_between(at, oldest).max(0.0) / SECONDS_PER_HOUR),
                breaks.opened_decayed_at(at, config.provider_break_window_seconds),
            ),
            None => (0.0, 0.0, 0.0),
        };

        let delay = signed_log1p(seconds_between(instant_nanos(tx.received_at), at));
        let [hour_sin, hour_cos, weekday_sin, weekday_cos] = self.time_of_day.at(at);
        let flag = |value: bool| if value { 1.0 } else { 0.0 };
        let values: [f64; FEATURE_COUNT] = [
            amount_major,
            // `signed_log1p(reference)`, with the logarithm already taken.
            reference.signum() * amount_log,
            log_ratio_to_median,
            robust_z,
            seconds_since_previous.ln_1p(),
            account_counts[0],
            account_counts[1],
            account_counts[2],
            account_sums[0].ln_1p(),
            account_sums[1].ln_1p(),
            account_sums[2].ln_1p(),
            round_win_bet,
            account_win_bet,
            rollback_ratio,
            wagered_per_deposited,
            withdrawn_per_wagered,
            rtp_realised,
            rtp_deviation,
            transactions_per_second,
            rejected_share,
            duplicate_share,
            conflict_share,
            open_breaks_log,
            oldest_break_age_hours.ln_1p(),
            breaks_opened,
            delay,
            hour_sin,
            hour_cos,
            weekday_sin,
            weekday_cos,
            flag(account_first_seen),
            flag(game_first_seen),
            flag(session_first_seen),
            flag(kind == Kind::Bet),
            flag(kind == Kind::Win),
            flag(kind == Kind::Rollback),
            flag(kind == Kind::JackpotWin),
            flag(kind == Kind::Bonus),
            flag(kind == Kind::Deposit),
            flag(kind == Kind::Withdrawal),
            flag(kind == Kind::Fee),
            flag(kind == Kind::Chargeback),
            flag(kind == Kind::ManualAdjustment),
        ];
        out.copy_from_slice(&values);
    }
}

/// Feature vectors of many transactions, row-major: row `i` is
/// `values[i * n_cols..(i + 1) * n_cols]`.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureMatrix {
    pub values: Vec<f64>,
    pub n_rows: usize,
    pub n_cols: usize,
}

impl FeatureMatrix {
    pub fn row(&self, index: usize) -> &[f64] {
        &self.values[index * self.n_cols..(index + 1) * self.n_cols]
    }

    pub fn rows(&self) -> impl Iterator<Item = &[f64]> {
        self.values.chunks_exact(self.n_cols)
    }
}

/// Feature vectors of `transactions` (in `seq` order) for training: a fresh extractor
/// driven one transaction at a time, exactly as in serving, with the reconciliation
/// `breaks` (any order) replayed ahead of the transactions they precede ([`BreakReplay`]).
pub fn extract_batch<'a>(
    config: FeatureConfig,
    transactions: impl IntoIterator<Item = &'a Transaction>,
    breaks: &[BreakEvent],
) -> FeatureMatrix {
    let mut extractor = FeatureExtractor::new(config);
    let mut replay = BreakReplay::new(breaks);
    let transactions = transactions.into_iter();
    let mut values = Vec::with_capacity(transactions.size_hint().0 * FEATURE_COUNT);
    let mut row = [0.0; FEATURE_COUNT];
    let mut n_rows = 0;
    for transaction in transactions {
        replay.extract(&mut extractor, transaction, &mut row);
        values.extend_from_slice(&row);
        n_rows += 1;
    }
    FeatureMatrix { values, n_rows, n_cols: FEATURE_COUNT }
}

impl fmt::Display for FeatureSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-v{} ({} features)", self.name, self.version, self.names.len())
    }
}
