//! Money is exact: amounts are `rust_decimal::Decimal` in the domain and integer minor
//! units (`i64`) in storage. This module is the only place that converts between the two,
//! and every conversion is checked: a scale finer than the currency allows, or a value that
//! does not fit, is an error, never a rounding.

use std::collections::BTreeMap;
use std::fmt;

use rust_decimal::Decimal;

/// Length limits of a currency code: ISO 4217 codes are three letters; configured
/// units (loyalty points, chips) may use up to eight upper-case letters or digits.
pub const CURRENCY_CODE_LENGTH_MIN: usize = 3;
pub const CURRENCY_CODE_LENGTH_MAX: usize = 8;
/// A currency's minor-unit exponent is at most this (no real currency uses more than 4).
pub const CURRENCY_EXPONENT_MAX: u32 = 8;

/// An upper-case currency code such as `USD`, `KRW` or a configured unit such as `PTS`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CurrencyCode {
    bytes: [u8; CURRENCY_CODE_LENGTH_MAX],
    len: u8,
}

impl CurrencyCode {
    /// Parses a code; `None` when it is not 3..=8 upper-case ASCII letters or digits.
    pub fn parse(text: &str) -> Option<CurrencyCode> {
        let raw = text.as_bytes();
        if !(CURRENCY_CODE_LENGTH_MIN..=CURRENCY_CODE_LENGTH_MAX).contains(&raw.len()) {
            return None;
        }
        if !raw.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
            return None;
        }
        let mut bytes = [0u8; CURRENCY_CODE_LENGTH_MAX];
        bytes[..raw.len()].copy_from_slice(raw);
        Some(CurrencyCode { bytes, len: raw.len() as u8 })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `parse`).
        std::str::from_utf8(&self.bytes[..self.len as usize]).expect("currency code is ASCII")
    }
}

impl fmt::Display for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_str())
    }
}

/// ISO 4217 currencies with their minor-unit exponents (the commonly traded subset;
/// others are added through configuration).
const ISO_4217: &[(&str, u32)] = &[
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KZT", 2),
    ("LYD", 3),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PEN", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYU", 2),
    ("VND", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("ZAR", 2),
];

/// The currencies the system knows, each with its minor-unit exponent.
#[derive(Clone, Debug)]
pub struct Currencies {
    exponents: BTreeMap<CurrencyCode, u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CurrencyConfigError {
    #[error("currency code {0:?} is not 3 to 8 upper-case letters or digits")]
    BadCode(String),
    #[error("currency {code}: exponent {exponent} is above the maximum {CURRENCY_EXPONENT_MAX}")]
    BadExponent { code: String, exponent: u32 },
}

impl Currencies {
    /// The ISO 4217 table alone.
    pub fn iso() -> Currencies {
        let exponents = ISO_4217
            .iter()
            .map(|&(code, exponent)| (CurrencyCode::parse(code).expect("valid ISO code"), exponent))
            .collect();
        Currencies { exponents }
    }

    /// The ISO table plus configured units; a configured entry overrides an ISO one.
    pub fn with_extra<'a>(extra: impl IntoIterator<Item = (&'a str, u32)>) -> Result<Currencies, CurrencyConfigError> {
        let mut currencies = Currencies::iso();
        for (code, exponent) in extra {
            let parsed = CurrencyCode::parse(code).ok_or_else(|| CurrencyConfigError::BadCode(code.to_string()))?;
            if exponent > CURRENCY_EXPONENT_MAX {
                return Err(CurrencyConfigError::BadExponent { code: code.to_string(), exponent });
            }
            currencies.exponents.insert(parsed, exponent);
        }
        Ok(currencies)
    }

    pub fn exponent(&self, code: CurrencyCode) -> Option<u32> {
        self.exponents.get(&code).copied()
    }

    pub fn lookup(&self, text: &str) -> Option<(CurrencyCode, u32)> {
        let code = CurrencyCode::parse(text)?;
        Some((code, self.exponent(code)?))
    }
}

/// Why an amount cannot be represented exactly in a currency's minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("has {scale} decimal places, the currency allows {exponent}")]
    ScaleTooFine { scale: u32, exponent: u32 },
    #[error("does not fit in 64-bit minor units")]
    Overflow,
}

/// Converts an amount to integer minor units, exactly. Trailing zeros beyond the
/// exponent are accepted (`10.500` USD is 1050 cents); significant digits are not.
pub fn to_minor(amount: Decimal, exponent: u32) -> Result<i64, AmountError> {
    debug_assert!(exponent <= CURRENCY_EXPONENT_MAX);
    let normalized = amount.normalize();
    let scale = normalized.scale();
    if scale > exponent {
        return Err(AmountError::ScaleTooFine { scale, exponent });
    }
    let mantissa = normalized.mantissa();
    let factor = 10i128.pow(exponent - scale);
    let minor = mantissa.checked_mul(factor).ok_or(AmountError::Overflow)?;
    i64::try_from(minor).map_err(|_| AmountError::Overflow)
}

/// The amount that `minor` units of a currency with `exponent` stand for.
pub fn from_minor(minor: i64, exponent: u32) -> Decimal {
    debug_assert!(exponent <= CURRENCY_EXPONENT_MAX);
    Decimal::new(minor, exponent)
}

/// Formats minor units with exactly `exponent` decimal places (`1050, 2` → `10.50`).
pub fn format_minor(minor: i64, exponent: u32) -> String {
    let mut amount = from_minor(minor, exponent);
    amount.rescale(exponent);
    amount.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    #[test]
    fn converts_by_exponent() {
        assert_eq!(to_minor(dec("10.50"), 2), Ok(1050));
        assert_eq!(to_minor(dec("10.500"), 2), Ok(1050));
        assert_eq!(to_minor(dec("1000"), 0), Ok(1000));
        assert_eq!(to_minor(dec("1.234"), 3), Ok(1234));
        assert_eq!(to_minor(dec("-0.01"), 2), Ok(-1));
        assert_eq!(to_minor(dec("10.505"), 2), Err(AmountError::ScaleTooFine { scale: 3, exponent: 2 }));
        assert_eq!(to_minor(dec("0.5"), 0), Err(AmountError::ScaleTooFine { scale: 1, exponent: 0 }));
        assert_eq!(to_minor(dec("92233720368547758.08"), 2), Err(AmountError::Overflow));
        assert_eq!(to_minor(dec("92233720368547758.07"), 2), Ok(i64::MAX));
        assert_eq!(format_minor(1050, 2), "10.50");
        assert_eq!(format_minor(-5, 3), "-0.005");
        assert_eq!(format_minor(7, 0), "7");
    }

    #[test]
    fn currency_codes_are_checked() {
        assert!(CurrencyCode::parse("usd").is_none());
        assert!(CurrencyCode::parse("US").is_none());
        assert!(CurrencyCode::parse("POINTS12X").is_none());
        let currencies = Currencies::with_extra([("PTS", 0)]).unwrap();
        assert_eq!(currencies.lookup("PTS").map(|c| c.1), Some(0));
        assert_eq!(currencies.lookup("BHD").map(|c| c.1), Some(3));
        assert!(currencies.lookup("XXX").is_none());
        assert!(Currencies::with_extra([("PTS", 9)]).is_err());
    }

    proptest! {
        #[test]
        fn minor_round_trips_exactly(minor in any::<i64>(), exponent in 0u32..=CURRENCY_EXPONENT_MAX) {
            let amount = from_minor(minor, exponent);
            prop_assert_eq!(to_minor(amount, exponent), Ok(minor));
            prop_assert_eq!(Decimal::from_str(&format_minor(minor, exponent)).unwrap(), amount);
        }

        #[test]
        fn too_fine_amounts_are_rejected_not_rounded(minor in any::<i64>(), exponent in 0u32..CURRENCY_EXPONENT_MAX) {
            // One more significant digit than the currency allows.
            let finer = Decimal::new(minor, exponent) + Decimal::new(1, exponent + 1);
            prop_assert!(to_minor(finer, exponent).is_err());
        }

        #[test]
        fn sums_never_overflow_silently(values in proptest::collection::vec(any::<i64>(), 0..50)) {
            // Exact summation in minor units is checked: either the exact i128 sum fits, or the
            // checked fold reports overflow.
            let exact: i128 = values.iter().map(|&v| v as i128).sum();
            let checked = values.iter().try_fold(0i64, |acc, &v| acc.checked_add(v));
            match checked {
                Some(sum) => prop_assert_eq!(sum as i128, exact),
                None => {
                    let mut partial = 0i128;
                    let left_range = values.iter().any(|&v| {
                        partial += v as i128;
                        partial > i64::MAX as i128 || partial < i64::MIN as i128
                    });
                    prop_assert!(left_range);
                }
            }
        }
    }
}
