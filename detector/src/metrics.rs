//! The metrics settlewatch exports for Prometheus, defined once. The HTTP service (a later
//! issue) serves them on `/metrics`; until then `settlewatch metrics` prints the same
//! exposition and `settlewatch reconcile --json` carries the same samples.
//!
//! Reconciliation families (labels of bounded cardinality: configured providers × the
//! closed set of break classes, or × currencies):
//! - `settlewatch_reconciliation_breaks{provider,class}`: unsettled breaks (open or waiting
//!   for an adjustment's approval); every class of every configured provider is exported,
//!   zero included, so a dashboard sees a break appear rather than a series start.
//! - `settlewatch_reconciliation_difference{provider,currency}`: the signed net difference
//!   (statement − ledger) of the unsettled breaks, in the currency's unit.
//! - `settlewatch_reconciliation_difference_at_stake{provider,currency}`: the sum of the
//!   differences' magnitudes (not netted), in the currency's unit.
//! - `settlewatch_reconciliation_oldest_break_age_seconds{provider}`: age of the oldest
//!   unsettled break (0 when none).
//! - `settlewatch_reconciliation_last_success_timestamp_seconds{provider}`: when the last
//!   recorded run finished (absent until the first).
//!
//! Amounts are exact decimals everywhere else; Prometheus samples are floats, so they are
//! converted here, at the exposition edge, and only here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use prometheus::{Encoder, GaugeVec, Opts, Registry, TextEncoder};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use settlement::config::Config;
use settlement::reconcile::BreakClass;
use settlement::store::Store;

pub const RECONCILIATION_BREAKS: &str = "settlewatch_reconciliation_breaks";
pub const RECONCILIATION_DIFFERENCE: &str = "settlewatch_reconciliation_difference";
pub const RECONCILIATION_DIFFERENCE_AT_STAKE: &str = "settlewatch_reconciliation_difference_at_stake";
pub const RECONCILIATION_OLDEST_BREAK_AGE: &str = "settlewatch_reconciliation_oldest_break_age_seconds";
pub const RECONCILIATION_LAST_SUCCESS: &str = "settlewatch_reconciliation_last_success_timestamp_seconds";

const ZERO_SUMS: (Option<Decimal>, Option<Decimal>) = (Some(Decimal::ZERO), Some(Decimal::ZERO));

/// A gathered set of metric families.
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    /// The Prometheus text exposition format (version 0.0.4).
    pub fn text(&self) -> anyhow::Result<String> {
        let mut bytes = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut bytes)?;
        Ok(String::from_utf8(bytes)?)
    }

    /// Every sample as `{name: [{labels..., value}]}`, for JSON reports.
    pub fn samples_json(&self) -> Value {
        let mut families = serde_json::Map::new();
        for family in self.registry.gather() {
            let samples: Vec<Value> = family
                .get_metric()
                .iter()
                .map(|metric| {
                    let mut sample = serde_json::Map::new();
                    for pair in metric.get_label() {
                        sample.insert(pair.name().to_string(), json!(pair.value()));
                    }
                    sample.insert("value".into(), json!(metric.get_gauge().get_value()));
                    Value::Object(sample)
                })
                .collect();
            families.insert(family.name().to_string(), Value::Array(samples));
        }
        Value::Object(families)
    }
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> anyhow::Result<GaugeVec> {
    let gauge = GaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(gauge.clone()))?;
    Ok(gauge)
}

/// The reconciliation families, read from the store at `now`.
pub async fn reconciliation_at(store: &Store, config: &Config, now: DateTime<Utc>) -> anyhow::Result<Exposition> {
    let registry = Registry::new();
    let breaks = gauge(
        &registry,
        RECONCILIATION_BREAKS,
        "Unsettled reconciliation breaks (open or awaiting adjustment approval).",
        &["provider", "class"],
    )?;
    let difference = gauge(
        &registry,
        RECONCILIATION_DIFFERENCE,
        "Signed net difference (statement minus ledger) of unsettled breaks, in the currency's unit.",
        &["provider", "currency"],
    )?;
    let at_stake = gauge(
        &registry,
        RECONCILIATION_DIFFERENCE_AT_STAKE,
        "Sum of the magnitudes of unsettled breaks' differences, in the currency's unit.",
        &["provider", "currency"],
    )?;
    let oldest = gauge(
        &registry,
        RECONCILIATION_OLDEST_BREAK_AGE,
        "Age of the oldest unsettled reconciliation break.",
        &["provider"],
    )?;
    let last_success = gauge(
        &registry,
        RECONCILIATION_LAST_SUCCESS,
        "When the provider's last reconciliation run was recorded (Unix time).",
        &["provider"],
    )?;
    for provider in &config.providers {
        for class in BreakClass::ALL {
            breaks.with_label_values(&[provider.name.as_str(), class.as_str()]).set(0.0);
        }
        oldest.with_label_values(&[provider.name.as_str()]).set(0.0);
        if let Some(run) = store.last_successful_run(&provider.name).await? {
            let seconds = run.recorded_at.timestamp_millis() as f64 / 1000.0;
            last_success.with_label_values(&[provider.name.as_str()]).set(seconds);
        }
    }
    let mut oldest_by_provider = BTreeMap::new();
    // Per (provider, currency): the exact sums over the classes, converted to floats once
    // (`None` once a sum overflows).
    let mut sums: BTreeMap<(String, String), (Option<Decimal>, Option<Decimal>)> = BTreeMap::new();
    for stats in store.open_break_stats().await? {
        let provider = stats.provider.as_str();
        breaks.with_label_values(&[provider, stats.class.as_str()]).add(stats.open_count as f64);
        for (currency, amount) in &stats.open_difference {
            let (net, _) = sums.entry((stats.provider.clone(), currency.as_str().to_string())).or_insert(ZERO_SUMS);
            *net = net.and_then(|sum| sum.checked_add(*amount));
        }
        for (currency, amount) in &stats.open_difference_abs {
            let (_, abs) = sums.entry((stats.provider.clone(), currency.as_str().to_string())).or_insert(ZERO_SUMS);
            *abs = abs.and_then(|sum| sum.checked_add(*amount));
        }
        let entry = oldest_by_provider.entry(stats.provider.clone()).or_insert(stats.oldest_open_at);
        *entry = (*entry).min(stats.oldest_open_at);
    }
    let float = |sum: Option<Decimal>| sum.and_then(|sum| sum.to_f64()).unwrap_or(f64::NAN);
    for ((provider, currency), (net, abs)) in sums {
        difference.with_label_values(&[provider.as_str(), currency.as_str()]).set(float(net));
        at_stake.with_label_values(&[provider.as_str(), currency.as_str()]).set(float(abs));
    }
    for (provider, opened_at) in oldest_by_provider {
        let age = (now - opened_at).num_milliseconds().max(0) as f64 / 1000.0;
        oldest.with_label_values(&[provider.as_str()]).set(age);
    }
    Ok(Exposition { registry })
}

pub async fn reconciliation(store: &Store, config: &Config) -> anyhow::Result<Exposition> {
    reconciliation_at(store, config, Utc::now()).await
}
