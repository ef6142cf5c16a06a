//! Each provider's end-of-day statement: what the provider itself claims it sent, per
//! business day (in the provider's timezone), currency and kind. Reconciliation (a later
//! issue) compares these files with the ledger.
//!
//! # Format
//!
//! `OUT/<provider>/statement-<YYYY-MM-DD>.csv`, one file per business day that has
//! transactions, rows sorted by currency then kind:
//!
//! ```text
//! provider,business_date,timezone,currency,kind,count,amount_minor
//! spinhub,2026-11-16,Europe/Malta,USD,bet,104233,52116500
//! ```
//!
//! `count` and `amount_minor` (the exact sum of amounts in minor units) cover the
//! transactions the ledger is expected to accept: each transaction once (redeliveries are
//! not counted again, a conflicting redelivery does not replace its original), malformed
//! records and the records of broken batches excluded. The `settlement_mismatch` scenario
//! changes a line's `amount_minor` by a small exact amount, listed in
//! `statement_mismatches.csv` and `episodes.csv`.

use std::collections::BTreeMap;
use std::io::Write;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::encode::date_text;
use super::scenarios::{push_episode_id, Recorder, Scenario};
use super::SimulateError;

/// The largest injected statement difference, in minor units.
pub const MISMATCH_MINOR_MAX: i64 = 999;

pub const STATEMENT_HEADER: &str = "provider,business_date,timezone,currency,kind,count,amount_minor\n";
pub const MISMATCH_HEADER: &str =
    "provider,business_date,currency,kind,transactions_amount_minor,claimed_amount_minor,delta_minor,episode\n";

/// The business day `day` (days since 1970-01-01, local) in `timezone_name` as UTC
/// milliseconds `[start, end)`: 23 or 25 hours on daylight-saving days, as the ledger's
/// `Period::day` has it.
pub(crate) fn business_day_ms(day: i64, timezone_name: &str) -> Result<(i64, i64), SimulateError> {
    let invalid = |message: String| SimulateError::Config(message);
    let timezone: chrono_tz::Tz =
        timezone_name.parse().map_err(|_| invalid(format!("unknown timezone {timezone_name:?}")))?;
    let date = i32::try_from(day + 719_163)
        .ok()
        .and_then(chrono::NaiveDate::from_num_days_from_ce_opt)
        .ok_or_else(|| invalid(format!("day {day} is not a date")))?;
    let period = crate::statement::Period::day(date, timezone).map_err(|error| invalid(error.to_string()))?;
    Ok((period.from.timestamp_millis(), period.to.timestamp_millis()))
}

/// Writes one provider's statements; returns its lines of `statement_mismatches.csv`.
pub(crate) fn write_statements(
    recorder: &mut Recorder,
    timezone_name: &str,
    mismatch_rate: f64,
    rng: &mut ChaCha8Rng,
    directory: &std::path::Path,
) -> Result<(Vec<u8>, u64), SimulateError> {
    let mut by_day: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    let mut mismatches = Vec::new();
    let mut lines = 0u64;
    let statements = std::mem::take(&mut recorder.statements);
    for ((day, currency, kind), (count, sum)) in &statements {
        lines += 1;
        let currency_code = recorder.currencies[usize::from(*currency)].clone();
        let mut claimed = *sum;
        if rng.gen_bool(mismatch_rate.clamp(0.0, 1.0)) {
            let magnitude = rng.gen_range(1..=MISMATCH_MINOR_MAX);
            let delta = if rng.gen_bool(0.5) { magnitude } else { -magnitude };
            claimed += i128::from(delta);
            let (start, end) = business_day_ms(*day, timezone_name)?;
            let date = date_text(*day);
            let episode = recorder.episode(
                Scenario::SettlementMismatch,
                "",
                start,
                end,
                format!("statement {date} {currency_code} {kind}: claimed {claimed}, transactions sum to {sum}"),
            );
            let _ = write!(mismatches, "{},{date},{currency_code},{kind},{sum},{claimed},{delta},", recorder.provider);
            push_episode_id(&mut mismatches, recorder.owner, episode);
            mismatches.push(b'\n');
        }
        let out = by_day.entry(*day).or_insert_with(|| STATEMENT_HEADER.as_bytes().to_vec());
        let _ = writeln!(
            out,
            "{},{},{timezone_name},{currency_code},{kind},{count},{claimed}",
            recorder.provider,
            date_text(*day)
        );
    }
    recorder.statements = statements;
    for (day, bytes) in by_day {
        let path = directory.join(format!("statement-{}.csv", date_text(day)));
        std::fs::write(&path, bytes).map_err(SimulateError::Io)?;
    }
    Ok((mismatches, lines))
}
