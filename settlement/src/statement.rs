//! Settlement statements: what was played and paid with one provider in one period, and
//! what is owed. A pure function over per-kind aggregates the store computes; exact decimal
//! arithmetic throughout.
//!
//! Definitions (per currency):
//! - GGR (gross gaming revenue) = (bets − rolled-back bets) − (wins − rolled-back wins)
//!   − (jackpot wins − rolled-back jackpot wins).
//! - NGR = GGR − (bonuses − rolled-back bonuses).
//! - royalty = GGR × the provider's revenue share, rounded half-even to the currency's
//!   minor unit (negative when GGR is negative: the period is carried as a credit).
//! - net payable = royalty + fees + withdrawals + chargebacks − deposits: what the operator
//!   owes the provider for the period (negative: the provider owes the operator, as a
//!   payment processor does for the deposits it collected).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::model::Kind;
use crate::money::{from_minor, CurrencyCode};

/// One aggregate row: transactions of one kind (and, for reversals, one reversed kind).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindTotal {
    pub currency: CurrencyCode,
    pub exponent: u32,
    pub kind: Kind,
    pub reverses: Option<Kind>,
    pub count: u64,
    pub sum_minor: i64,
}

/// Count and exact sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Line {
    pub count: u64,
    pub amount: Decimal,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CurrencyStatement {
    pub exponent: u32,
    pub bets: Line,
    pub wins: Line,
    pub jackpot_wins: Line,
    pub bonuses: Line,
    pub rollbacks_of_bets: Line,
    pub rollbacks_of_wins: Line,
    pub rollbacks_of_jackpot_wins: Line,
    pub rollbacks_of_bonuses: Line,
    pub deposits: Line,
    pub withdrawals: Line,
    pub fees: Line,
    pub chargebacks: Line,
    pub manual_adjustments: Line,
    pub ggr: Decimal,
    pub ngr: Decimal,
    pub royalty: Decimal,
    pub net_payable: Decimal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub provider: String,
    pub period_label: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub revenue_share: Option<Decimal>,
    pub currencies: BTreeMap<CurrencyCode, CurrencyStatement>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    #[error("{currency}: sum out of range")]
    Overflow { currency: CurrencyCode },
    #[error("{currency}: stored with exponents {first} and {second}")]
    MixedExponent { currency: CurrencyCode, first: u32, second: u32 },
}

/// A settlement period: `[from, to)` in UTC, with a label for reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Period {
    pub label: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PeriodError(String);

impl Period {
    /// The provider's business day `date` in its timezone: from local midnight to the next
    /// local midnight (23 or 25 hours long on daylight-saving days). Where midnight does not
    /// exist locally, the day starts at the first instant after the gap.
    pub fn day(date: NaiveDate, timezone: Tz) -> Result<Period, PeriodError> {
        let start = |date: NaiveDate| -> Result<DateTime<Utc>, PeriodError> {
            let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
            let local = match timezone.from_local_datetime(&midnight) {
                LocalResult::Single(at) => at,
                LocalResult::Ambiguous(earliest, _) => earliest,
                LocalResult::None => (1..=180)
                    .find_map(|minutes| {
                        timezone.from_local_datetime(&(midnight + Duration::minutes(minutes))).earliest()
                    })
                    .ok_or_else(|| PeriodError(format!("{date} has no start in {timezone}")))?,
            };
            Ok(local.with_timezone(&Utc))
        };
        let next = date.succ_opt().ok_or_else(|| PeriodError(format!("{date} has no next day")))?;
        Ok(Period { label: format!("{date} ({timezone})"), from: start(date)?, to: start(next)? })
    }

    /// An explicit range; `from` must be before `to`.
    pub fn range(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Period, PeriodError> {
        if from >= to {
            return Err(PeriodError(format!("the period starts ({from}) at or after it ends ({to})")));
        }
        Ok(Period { label: format!("{} .. {}", from.to_rfc3339(), to.to_rfc3339()), from, to })
    }
}

pub fn statement(
    provider: &str,
    period: Period,
    revenue_share: Option<Decimal>,
    totals: &[KindTotal],
) -> Result<Statement, StatementError> {
    let mut currencies: BTreeMap<CurrencyCode, CurrencyStatement> = BTreeMap::new();
    for total in totals {
        let entry = currencies
            .entry(total.currency)
            .or_insert_with(|| CurrencyStatement { exponent: total.exponent, ..Default::default() });
        if entry.exponent != total.exponent {
            return Err(StatementError::MixedExponent {
                currency: total.currency,
                first: entry.exponent,
                second: total.exponent,
            });
        }
        let line = match (total.kind, total.reverses) {
            (Kind::Bet, _) => &mut entry.bets,
            (Kind::Win, _) => &mut entry.wins,
            (Kind::JackpotWin, _) => &mut entry.jackpot_wins,
            (Kind::Bonus, _) => &mut entry.bonuses,
            (Kind::Rollback, Some(Kind::Win)) => &mut entry.rollbacks_of_wins,
            (Kind::Rollback, Some(Kind::JackpotWin)) => &mut entry.rollbacks_of_jackpot_wins,
            (Kind::Rollback, Some(Kind::Bonus)) => &mut entry.rollbacks_of_bonuses,
            (Kind::Rollback, _) => &mut entry.rollbacks_of_bets,
            (Kind::Deposit, _) => &mut entry.deposits,
            (Kind::Withdrawal, _) => &mut entry.withdrawals,
            (Kind::Fee, _) => &mut entry.fees,
            (Kind::Chargeback, _) => &mut entry.chargebacks,
            (Kind::ManualAdjustment, _) => &mut entry.manual_adjustments,
        };
        line.count += total.count;
        line.amount = line
            .amount
            .checked_add(from_minor(total.sum_minor, total.exponent))
            .ok_or(StatementError::Overflow { currency: total.currency })?;
    }
    for (currency, entry) in currencies.iter_mut() {
        derive_totals(entry, revenue_share).ok_or(StatementError::Overflow { currency: *currency })?;
    }
    Ok(Statement {
        provider: provider.to_string(),
        period_label: period.label,
        from: period.from,
        to: period.to,
        revenue_share,
        currencies,
    })
}

fn derive_totals(entry: &mut CurrencyStatement, revenue_share: Option<Decimal>) -> Option<()> {
    let net = |line: Line, reversed: Line| line.amount.checked_sub(reversed.amount);
    let stakes = net(entry.bets, entry.rollbacks_of_bets)?;
    let wins = net(entry.wins, entry.rollbacks_of_wins)?;
    let jackpots = net(entry.jackpot_wins, entry.rollbacks_of_jackpot_wins)?;
    let bonuses = net(entry.bonuses, entry.rollbacks_of_bonuses)?;
    entry.ggr = stakes.checked_sub(wins)?.checked_sub(jackpots)?;
    entry.ngr = entry.ggr.checked_sub(bonuses)?;
    entry.royalty = match revenue_share {
        Some(share) => {
            entry.ggr.checked_mul(share)?.round_dp_with_strategy(entry.exponent, RoundingStrategy::MidpointNearestEven)
        }
        None => Decimal::ZERO,
    };
    entry.net_payable = entry
        .royalty
        .checked_add(entry.fees.amount)?
        .checked_add(entry.withdrawals.amount)?
        .checked_add(entry.chargebacks.amount)?
        .checked_sub(entry.deposits.amount)?;
    Some(())
}

/// Rescales `amount` so it prints with the currency's exponent (`10.5` → `10.50`).
pub fn fixed(amount: Decimal, exponent: u32) -> Decimal {
    let mut fixed = amount;
    fixed.rescale(exponent);
    fixed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn usd() -> CurrencyCode {
        CurrencyCode::parse("USD").unwrap()
    }

    fn total(kind: Kind, reverses: Option<Kind>, count: u64, sum_minor: i64) -> KindTotal {
        KindTotal { currency: usd(), exponent: 2, kind, reverses, count, sum_minor }
    }

    fn period() -> Period {
        Period { label: "test".into(), from: DateTime::UNIX_EPOCH, to: DateTime::UNIX_EPOCH }
    }

    #[test]
    fn computes_ggr_royalty_and_net_payable_exactly() {
        let totals = [
            total(Kind::Bet, None, 3, 10_000),
            total(Kind::Win, None, 2, 7_001),
            total(Kind::Rollback, Some(Kind::Bet), 1, 1_000),
            total(Kind::Rollback, Some(Kind::Win), 1, 1),
            total(Kind::JackpotWin, None, 1, 500),
            total(Kind::Bonus, None, 1, 250),
            total(Kind::Fee, None, 1, 99),
        ];
        let share = Decimal::from_str("0.125").unwrap();
        let statement = statement("evo", period(), Some(share), &totals).unwrap();
        let usd = &statement.currencies[&usd()];
        // (100.00 - 10.00) - (70.01 - 0.01) - 5.00 = 15.00
        assert_eq!(usd.ggr, Decimal::from_str("15.00").unwrap());
        assert_eq!(usd.ngr, Decimal::from_str("12.50").unwrap());
        // 15.00 * 0.125 = 1.875 → 1.88 (half-even rounds 1.875 up to the even 8)
        assert_eq!(fixed(usd.royalty, 2).to_string(), "1.88");
        assert_eq!(usd.net_payable, Decimal::from_str("2.87").unwrap());
        assert_eq!(usd.bets, Line { count: 3, amount: Decimal::from_str("100.00").unwrap() });
    }

    #[test]
    fn a_day_follows_the_provider_timezone_and_daylight_saving() {
        let day = |text: &str, zone: &str| Period::day(text.parse().unwrap(), zone.parse().unwrap()).unwrap();
        let seoul = day("2026-11-24", "Asia/Seoul");
        assert_eq!(seoul.from.to_rfc3339(), "2026-11-23T15:00:00+00:00");
        assert_eq!(seoul.to.to_rfc3339(), "2026-11-24T15:00:00+00:00");
        // London leaves summer time on 2026-10-25: that day is 25 hours long.
        let london = day("2026-10-25", "Europe/London");
        assert_eq!((london.to - london.from).num_hours(), 25);
        // Havana springs forward at midnight (00:00 does not exist on 2026-03-08).
        let havana = day("2026-03-08", "America/Havana");
        assert_eq!((havana.to - havana.from).num_hours(), 23);
        assert!(Period::range(seoul.to, seoul.from).is_err());
    }

    #[test]
    fn processor_net_is_owed_to_the_operator() {
        let totals = [
            total(Kind::Deposit, None, 2, 50_000),
            total(Kind::Withdrawal, None, 1, 20_000),
            total(Kind::Fee, None, 2, 150),
            total(Kind::Chargeback, Some(Kind::Deposit), 1, 1_000),
        ];
        let statement = statement("payfast", period(), None, &totals).unwrap();
        assert_eq!(statement.currencies[&usd()].net_payable, Decimal::from_str("-288.50").unwrap());
    }
}
