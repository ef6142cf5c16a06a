//! The operator's configuration file (TOML): where the store is, which currencies exist
//! beyond ISO 4217, and one `[[providers]]` entry per partner with its adapter settings.
//! Everything provider-specific lives here, so adding a partner touches no code.

use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

pub use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::adapters::{Adapter, AdapterConfig, ProviderContext};
use crate::money::{Currencies, CurrencyCode};

/// Default store: an SQLite file in the working directory, created on first use.
pub const STORE_URL_DEFAULT: &str = "sqlite:settlewatch.db";
/// How far in the future an occurred-at may be (provider clocks drift a little).
pub const FUTURE_TOLERANCE_SECONDS_DEFAULT: u64 = 300;
pub const PROVIDERS_MAX: usize = 1024;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub store: StoreConfig,
    /// Units beyond ISO 4217 (loyalty points, chips), or overrides of an ISO exponent.
    #[serde(default)]
    pub currencies: Vec<ExtraCurrency>,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite:PATH` (embedded default) or `postgres://...`.
    #[serde(default = "default_store_url")]
    pub url: String,
}

fn default_store_url() -> String {
    STORE_URL_DEFAULT.to_string()
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig { url: default_store_url() }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraCurrency {
    pub code: String,
    pub exponent: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    #[serde(default = "default_future_tolerance")]
    pub future_tolerance_seconds: u64,
}

fn default_future_tolerance() -> u64 {
    FUTURE_TOLERANCE_SECONDS_DEFAULT
}

impl Default for IngestConfig {
    fn default() -> IngestConfig {
        IngestConfig { future_tolerance_seconds: FUTURE_TOLERANCE_SECONDS_DEFAULT }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Stable identifier used on the command line, in storage and in metric labels.
    pub name: String,
    /// IANA zone of the provider's business day (settlement periods, local timestamps).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Currencies this provider may send; empty means every known currency.
    #[serde(default)]
    pub currencies: Vec<String>,
    /// Share of gross gaming revenue owed to the provider (royalty), e.g. "0.12".
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub revenue_share: Option<Decimal>,
    pub adapter: AdapterConfig,
    /// How this provider's statements are read and reconciled.
    #[serde(default)]
    pub reconciliation: ReconciliationConfig,
}

/// `[providers.reconciliation]`: the statement format and the written matching rules.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationConfig {
    /// `totals` (end-of-day totals CSV), `listing` (transaction listing CSV) or `camt053`.
    #[serde(default = "default_statement_format")]
    pub statement: String,
    /// A transaction delivered more than this many seconds after it occurred is a timing
    /// break (late delivery). Set it above the provider's normal delivery cadence: a few
    /// minutes for webhooks, more than the batch interval for batch files.
    #[serde(default = "default_late_after_seconds")]
    pub late_after_seconds: u64,
    /// How close to a period boundary (seconds) a transaction must be to count as a
    /// cut-off difference rather than a missing one.
    #[serde(default = "default_cutoff_window_seconds")]
    pub cutoff_window_seconds: u64,
    /// For statement lines without the provider's id: days between booking date and
    /// occurred date that still allow a match by reference and amount.
    #[serde(default = "default_date_window_days")]
    pub date_window_days: u32,
    /// camt.053 only: the kind a credit entry (`CRDT`) stands for.
    #[serde(default = "default_credit_kind")]
    pub credit_kind: String,
    /// camt.053 only: the kind a debit entry (`DBIT`) stands for.
    #[serde(default = "default_debit_kind")]
    pub debit_kind: String,
}

/// Upper limit for every reconciliation window setting: 31 days.
pub const RECONCILIATION_WINDOW_SECONDS_MAX: u64 = 31 * 24 * 3600;

fn default_statement_format() -> String {
    "totals".to_string()
}
fn default_late_after_seconds() -> u64 {
    900
}
fn default_cutoff_window_seconds() -> u64 {
    1800
}
fn default_date_window_days() -> u32 {
    2
}
fn default_credit_kind() -> String {
    "deposit".to_string()
}
fn default_debit_kind() -> String {
    "withdrawal".to_string()
}

impl Default for ReconciliationConfig {
    fn default() -> ReconciliationConfig {
        ReconciliationConfig {
            statement: default_statement_format(),
            late_after_seconds: default_late_after_seconds(),
            cutoff_window_seconds: default_cutoff_window_seconds(),
            date_window_days: default_date_window_days(),
            credit_kind: default_credit_kind(),
            debit_kind: default_debit_kind(),
        }
    }
}

impl ReconciliationConfig {
    /// Checks the settings and gives the statement format and the matching rules.
    pub fn resolve(
        &self,
        provider: &str,
    ) -> Result<(crate::reconcile::StatementFormat, crate::reconcile::ReconRules), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid(format!("provider {provider}: reconciliation: {message}"));
        let format = self.statement.parse().map_err(|()| {
            invalid(format!("statement {:?}: expected \"totals\", \"listing\" or \"camt053\"", self.statement))
        })?;
        for (name, seconds) in
            [("late_after_seconds", self.late_after_seconds), ("cutoff_window_seconds", self.cutoff_window_seconds)]
        {
            if seconds == 0 || seconds > RECONCILIATION_WINDOW_SECONDS_MAX {
                return Err(invalid(format!("{name} {seconds}: expected 1 to {RECONCILIATION_WINDOW_SECONDS_MAX}")));
            }
        }
        if self.date_window_days > 31 {
            return Err(invalid(format!("date_window_days {}: expected 0 to 31", self.date_window_days)));
        }
        for (name, kind) in [("credit_kind", &self.credit_kind), ("debit_kind", &self.debit_kind)] {
            if kind.parse::<crate::model::Kind>().is_err() {
                return Err(invalid(format!("{name} {kind:?} is not a transaction kind")));
            }
        }
        let rules = crate::reconcile::ReconRules {
            late_after: chrono::Duration::seconds(self.late_after_seconds as i64),
            cutoff_window: chrono::Duration::seconds(self.cutoff_window_seconds as i64),
            date_window_days: self.date_window_days,
        };
        Ok((format, rules))
    }
}

impl ProviderConfig {
    pub fn timezone(&self) -> Result<Tz, ConfigError> {
        Tz::from_str(&self.timezone)
            .map_err(|_| ConfigError::Invalid(format!("provider {}: unknown timezone {:?}", self.name, self.timezone)))
    }
}

fn default_timezone() -> String {
    "UTC".to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {error}")]
    Parse { path: String, error: Box<toml::de::Error> },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Adapter(#[from] crate::adapters::AdapterConfigError),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Read { path: path.display().to_string(), error })?;
        Config::parse(&text).map_err(|error| match error {
            ConfigError::Parse { error, .. } => ConfigError::Parse { path: path.display().to_string(), error },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|error| ConfigError::Parse { path: "config".into(), error: Box::new(error) })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.providers.len() > PROVIDERS_MAX {
            return Err(ConfigError::Invalid(format!("more than {PROVIDERS_MAX} providers")));
        }
        let mut names = BTreeSet::new();
        for provider in &self.providers {
            let valid_name = !provider.name.is_empty()
                && provider.name.len() <= 64
                && provider.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid_name {
                return Err(ConfigError::Invalid(format!(
                    "provider name {:?}: use 1 to 64 letters, digits, '-' or '_'",
                    provider.name
                )));
            }
            if !names.insert(provider.name.as_str()) {
                return Err(ConfigError::Invalid(format!("provider {} is configured twice", provider.name)));
            }
            provider.reconciliation.resolve(&provider.name)?;
            if let Some(share) = provider.revenue_share {
                if share < Decimal::ZERO || share > Decimal::ONE {
                    return Err(ConfigError::Invalid(format!(
                        "provider {}: revenue_share {share} is not between 0 and 1",
                        provider.name
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn currencies(&self) -> Result<Currencies, ConfigError> {
        Currencies::with_extra(self.currencies.iter().map(|c| (c.code.as_str(), c.exponent)))
            .map_err(|error| ConfigError::Invalid(error.to_string()))
    }

    /// Builds every provider's runtime form (adapter, zone, allowed currencies).
    pub fn providers(&self) -> Result<Vec<Provider>, ConfigError> {
        let currencies = Arc::new(self.currencies()?);
        self.providers.iter().map(|provider| Provider::build(provider, &currencies)).collect()
    }
}

/// A configured provider, ready to decode and validate its payloads.
pub struct Provider {
    pub name: String,
    pub timezone: Tz,
    /// `None`: every known currency is allowed.
    pub allowed_currencies: Option<BTreeSet<CurrencyCode>>,
    pub currencies: Arc<Currencies>,
    pub revenue_share: Option<Decimal>,
    pub adapter: Box<dyn Adapter>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("name", &self.name).field("timezone", &self.timezone).finish_non_exhaustive()
    }
}

impl Provider {
    fn build(config: &ProviderConfig, currencies: &Arc<Currencies>) -> Result<Provider, ConfigError> {
        let timezone = config.timezone()?;
        let allowed_currencies = if config.currencies.is_empty() {
            None
        } else {
            let mut allowed = BTreeSet::new();
            for code in &config.currencies {
                let (code, _) = currencies.lookup(code).ok_or_else(|| {
                    ConfigError::Invalid(format!("provider {}: unknown currency {code:?}", config.name))
                })?;
                allowed.insert(code);
            }
            Some(allowed)
        };
        let context = ProviderContext { name: config.name.clone(), timezone, currencies: currencies.clone() };
        let adapter = config.adapter.build(&context)?;
        Ok(Provider {
            name: config.name.clone(),
            timezone,
            allowed_currencies,
            currencies: currencies.clone(),
            revenue_share: config.revenue_share,
            adapter,
        })
    }
}
