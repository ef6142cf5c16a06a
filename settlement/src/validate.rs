//! Validation common to every provider, applied to each canonical transaction after its
//! adapter decoded it: identifiers, currency, amount (sign, scale, range), timestamps,
//! and the reference a reversal needs. Pure: `now` is passed in.
//! Checks that need stored state (does the original of a rollback exist, is it large
//! enough) are done by the store inside the write transaction, on the same codes.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;

use crate::model::{timestamp_nanos, Kind, Transaction, ID_LENGTH_MAX};
use crate::money::{to_minor, AmountError, Currencies, CurrencyCode};
use crate::rejection::{ErrorCode, Rejection};

/// The largest amount one transaction may carry, in minor units (10^15: ten trillion
/// dollars, a thousand trillion won). Far above any real payment, it keeps every balance
/// thousands of transactions away from the 64-bit limit, so a single absurd record is
/// rejected here instead of making a balance overflow.
pub const AMOUNT_MINOR_MAX: i64 = 1_000_000_000_000_000;

/// Provider-specific inputs to validation.
pub struct Rules<'a> {
    pub currencies: &'a Currencies,
    /// `None`: every known currency is allowed.
    pub allowed_currencies: Option<&'a BTreeSet<CurrencyCode>>,
    pub future_tolerance: Duration,
}

/// A transaction that passed validation, with its exact storage form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidTransaction {
    pub tx: Transaction,
    pub amount_minor: i64,
    pub exponent: u32,
    pub content_hash: [u8; 32],
}

/// The kind of transaction a reversal may point at.
pub fn reversible_by(kind: Kind) -> Option<fn(Kind) -> bool> {
    match kind {
        Kind::Rollback => Some(Kind::is_reversible),
        Kind::Chargeback => Some(|original| original == Kind::Deposit),
        _ => None,
    }
}

pub fn validate(tx: Transaction, rules: &Rules<'_>, now: DateTime<Utc>) -> Result<ValidTransaction, Rejection> {
    check_id("provider_tx_id", Some(&tx.provider_tx_id), true)?;
    check_id("account", Some(&tx.account), true)?;
    check_id("game_id", tx.game_id.as_ref(), false)?;
    check_id("round_id", tx.round_id.as_ref(), false)?;
    check_id("session_id", tx.session_id.as_ref(), false)?;
    check_id("original_tx_id", tx.original_tx_id.as_ref(), false)?;

    let exponent = rules.currencies.exponent(tx.currency).ok_or_else(|| {
        Rejection::field(ErrorCode::UnknownCurrency, "currency", format!("currency {} is not configured", tx.currency))
    })?;
    if let Some(allowed) = rules.allowed_currencies {
        if !allowed.contains(&tx.currency) {
            return Err(Rejection::field(
                ErrorCode::CurrencyNotAllowed,
                "currency",
                format!("currency {} is not allowed for provider {}", tx.currency, tx.provider),
            ));
        }
    }

    let amount_minor = to_minor(tx.amount, exponent).map_err(|error| {
        let reason = match error {
            AmountError::ScaleTooFine { .. } => format!("amount {} {} {error}", tx.amount, tx.currency),
            AmountError::Overflow => format!("amount {} {error}", tx.amount),
        };
        Rejection::field(ErrorCode::InvalidAmount, "amount", reason)
    })?;
    if amount_minor.unsigned_abs() > AMOUNT_MINOR_MAX as u64 {
        return Err(Rejection::field(
            ErrorCode::InvalidAmount,
            "amount",
            format!("amount {} {} is above the limit of {AMOUNT_MINOR_MAX} minor units", tx.amount, tx.currency),
        ));
    }
    check_sign(tx.kind, tx.amount)?;

    let occurred_nanos = timestamp_nanos(tx.occurred_at);
    if occurred_nanos.is_none() || timestamp_nanos(tx.received_at).is_none() {
        return Err(Rejection::field(
            ErrorCode::InvalidField,
            "occurred_at",
            format!("timestamp {} is outside 1677..2262", tx.occurred_at),
        ));
    }
    if tx.occurred_at > now + rules.future_tolerance {
        return Err(Rejection::field(
            ErrorCode::TimestampInFuture,
            "occurred_at",
            format!(
                "occurred at {} is more than {} s after now ({})",
                tx.occurred_at.to_rfc3339(),
                rules.future_tolerance.num_seconds(),
                now.to_rfc3339()
            ),
        ));
    }

    // An arrival time from the payload (a capture log's `received_at`) cannot be later than
    // the moment we read it.
    if tx.received_at > now + rules.future_tolerance {
        return Err(Rejection::field(
            ErrorCode::TimestampInFuture,
            "received_at",
            format!(
                "received at {} is more than {} s after now ({})",
                tx.received_at.to_rfc3339(),
                rules.future_tolerance.num_seconds(),
                now.to_rfc3339()
            ),
        ));
    }

    match (reversible_by(tx.kind), &tx.original_tx_id) {
        (Some(_), Some(original)) if original == &tx.provider_tx_id => {
            return Err(Rejection::field(
                ErrorCode::InvalidField,
                "original_tx_id",
                "a transaction cannot reverse itself",
            ));
        }
        (Some(_), None) if tx.kind == Kind::Rollback => {
            return Err(Rejection::field(
                ErrorCode::MissingOriginal,
                "original_tx_id",
                "a rollback must name the transaction it reverses",
            ));
        }
        _ => {}
    }

    let content_hash = tx.content_hash();
    Ok(ValidTransaction { tx, amount_minor, exponent, content_hash })
}

fn check_id(field: &str, value: Option<&String>, required: bool) -> Result<(), Rejection> {
    let Some(value) = value else {
        return if required {
            Err(Rejection::field(ErrorCode::MissingField, field, format!("{field} is required")))
        } else {
            Ok(())
        };
    };
    if value.is_empty() {
        return Err(Rejection::field(ErrorCode::MissingField, field, format!("{field} is empty")));
    }
    if value.len() > ID_LENGTH_MAX {
        return Err(Rejection::field(
            ErrorCode::InvalidField,
            field,
            format!("{field} is {} bytes long, at most {ID_LENGTH_MAX} are allowed", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Rejection::field(ErrorCode::InvalidField, field, format!("{field} contains control characters")));
    }
    Ok(())
}

/// Direction is given by the kind, so amounts are non-negative; only a manual adjustment is
/// signed. A zero amount is meaningful only for bets and wins (free rounds, losing rounds).
fn check_sign(kind: Kind, amount: Decimal) -> Result<(), Rejection> {
    let problem = match kind {
        Kind::ManualAdjustment if amount.is_zero() => Some("a manual adjustment of zero changes nothing"),
        Kind::ManualAdjustment => None,
        _ if amount.is_sign_negative() && !amount.is_zero() => {
            Some("is negative; the direction of money is given by the kind")
        }
        Kind::Bet | Kind::Win => None,
        _ if amount.is_zero() => Some("is zero, which is meaningful only for bets and wins"),
        _ => None,
    };
    match problem {
        Some(reason) => {
            Err(Rejection::field(ErrorCode::InvalidAmount, "amount", format!("{kind} amount {amount} {reason}")))
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sha256;
    use std::str::FromStr;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().into()
    }

    fn tx(kind: Kind, amount: &str, currency: &str) -> Transaction {
        Transaction {
            provider: "p".into(),
            provider_tx_id: "T1".into(),
            kind,
            account: "a".into(),
            game_id: None,
            round_id: None,
            session_id: None,
            currency: CurrencyCode::parse(currency).unwrap(),
            amount: Decimal::from_str(amount).unwrap(),
            occurred_at: at("2026-11-24T10:00:00Z"),
            received_at: at("2026-11-24T10:00:01Z"),
            original_tx_id: None,
            raw_sha256: sha256(b""),
        }
    }

    fn check(tx: Transaction) -> Result<ValidTransaction, ErrorCode> {
        let currencies = Currencies::with_extra([("PTS", 0)]).unwrap();
        let allowed: BTreeSet<_> =
            ["USD", "KRW", "BHD", "PTS"].iter().map(|c| CurrencyCode::parse(c).unwrap()).collect();
        let rules = Rules {
            currencies: &currencies,
            allowed_currencies: Some(&allowed),
            future_tolerance: Duration::seconds(300),
        };
        validate(tx, &rules, at("2026-11-24T10:00:02Z")).map_err(|rejection| rejection.code)
    }

    #[test]
    fn accepts_exact_amounts_in_each_exponent() {
        assert_eq!(check(tx(Kind::Bet, "10.50", "USD")).unwrap().amount_minor, 1050);
        assert_eq!(check(tx(Kind::Bet, "5000", "KRW")).unwrap().amount_minor, 5000);
        assert_eq!(check(tx(Kind::Deposit, "1.005", "BHD")).unwrap().amount_minor, 1005);
        assert_eq!(check(tx(Kind::Bonus, "7", "PTS")).unwrap().amount_minor, 7);
        assert_eq!(check(tx(Kind::Bet, "0", "USD")).unwrap().amount_minor, 0);
        assert_eq!(check(tx(Kind::ManualAdjustment, "-3.00", "USD")).unwrap().amount_minor, -300);
    }

    #[test]
    fn rejects_with_specific_codes() {
        assert_eq!(check(tx(Kind::Bet, "10.505", "USD")), Err(ErrorCode::InvalidAmount));
        assert_eq!(check(tx(Kind::Bet, "-1", "USD")), Err(ErrorCode::InvalidAmount));
        assert_eq!(check(tx(Kind::Deposit, "0", "USD")), Err(ErrorCode::InvalidAmount));
        assert_eq!(check(tx(Kind::ManualAdjustment, "0", "USD")), Err(ErrorCode::InvalidAmount));
        assert_eq!(check(tx(Kind::Bet, "99999999999999999999", "KRW")), Err(ErrorCode::InvalidAmount));
        assert_eq!(check(tx(Kind::Bet, "10000000000000.00", "USD")).unwrap().amount_minor, AMOUNT_MINOR_MAX);
        assert_eq!(check(tx(Kind::Bet, "10000000000000.01", "USD")), Err(ErrorCode::InvalidAmount));
        assert_eq!(check(tx(Kind::ManualAdjustment, "-10000000000000.01", "USD")), Err(ErrorCode::InvalidAmount));
        assert_eq!(check(tx(Kind::Bet, "1", "EUR")), Err(ErrorCode::CurrencyNotAllowed));
        assert_eq!(check(tx(Kind::Bet, "1", "XYZ")), Err(ErrorCode::UnknownCurrency));
        let mut future = tx(Kind::Bet, "1", "USD");
        future.occurred_at = at("2026-11-24T10:05:03Z");
        assert_eq!(check(future), Err(ErrorCode::TimestampInFuture));
        assert_eq!(check(tx(Kind::Rollback, "1", "USD")), Err(ErrorCode::MissingOriginal));
        let mut own = tx(Kind::Rollback, "1", "USD");
        own.original_tx_id = Some("T1".into());
        assert_eq!(check(own), Err(ErrorCode::InvalidField));
        let mut empty = tx(Kind::Bet, "1", "USD");
        empty.account = String::new();
        assert_eq!(check(empty), Err(ErrorCode::MissingField));
        let mut long = tx(Kind::Bet, "1", "USD");
        long.provider_tx_id = "x".repeat(ID_LENGTH_MAX + 1);
        assert_eq!(check(long), Err(ErrorCode::InvalidField));
    }
}
