//! The canonical transaction: the one shape every provider's payload is mapped into.
//! Everything downstream (ledger, settlement, features) sees only this.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use crate::money::CurrencyCode;

/// Length limit of every identifier field (provider transaction id, account, game, ...).
pub const ID_LENGTH_MAX: usize = 128;

/// What a transaction does to the player's money.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Bet,
    Win,
    Rollback,
    JackpotWin,
    Bonus,
    Deposit,
    Withdrawal,
    Fee,
    Chargeback,
    ManualAdjustment,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Bet,
        Kind::Win,
        Kind::Rollback,
        Kind::JackpotWin,
        Kind::Bonus,
        Kind::Deposit,
        Kind::Withdrawal,
        Kind::Fee,
        Kind::Chargeback,
        Kind::ManualAdjustment,
    ];

    /// The stable name used in configuration, storage and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bet => "bet",
            Kind::Win => "win",
            Kind::Rollback => "rollback",
            Kind::JackpotWin => "jackpot_win",
            Kind::Bonus => "bonus",
            Kind::Deposit => "deposit",
            Kind::Withdrawal => "withdrawal",
            Kind::Fee => "fee",
            Kind::Chargeback => "chargeback",
            Kind::ManualAdjustment => "manual_adjustment",
        }
    }

    /// Whether a rollback may reverse a transaction of this kind.
    pub fn is_reversible(self) -> bool {
        matches!(self, Kind::Bet | Kind::Win | Kind::JackpotWin | Kind::Bonus)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = ();
    fn from_str(text: &str) -> Result<Kind, ()> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == text).ok_or(())
    }
}

/// A provider's transaction in canonical form.
///
/// `amount` is non-negative for every kind but `ManualAdjustment` (which may be signed);
/// the direction of money is given by `kind`. `validate` enforces this and the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub provider: String,
    pub provider_tx_id: String,
    pub kind: Kind,
    pub account: String,
    pub game_id: Option<String>,
    pub round_id: Option<String>,
    pub session_id: Option<String>,
    pub currency: CurrencyCode,
    pub amount: Decimal,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// The provider transaction id this one reverses (rollbacks, chargebacks).
    pub original_tx_id: Option<String>,
    /// sha256 of the raw record exactly as the provider sent it.
    pub raw_sha256: [u8; 32],
}

impl Transaction {
    /// sha256 of the canonical content: every field that describes the business event.
    ///
    /// `received_at` and `raw_sha256` are left out on purpose: a redelivery of the same
    /// event at another time, or in another batch with other formatting, is a duplicate.
    /// A change of any included field under the same key is a conflict.
    pub fn content_hash(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        field(b"settlewatch.transaction.v1");
        field(self.provider.as_bytes());
        field(self.provider_tx_id.as_bytes());
        field(self.kind.as_str().as_bytes());
        field(self.account.as_bytes());
        for value in [&self.game_id, &self.round_id, &self.session_id, &self.original_tx_id] {
            match value.as_deref() {
                Some(text) => {
                    field(b"some");
                    field(text.as_bytes())
                }
                None => field(b"none"),
            }
        }
        field(self.currency.as_str().as_bytes());
        field(self.amount.normalize().to_string().as_bytes());
        field(&timestamp_nanos(self.occurred_at).unwrap_or(i64::MIN).to_le_bytes());
        hasher.finalize().into()
    }
}

/// Nanoseconds since the Unix epoch; `None` outside 1677..2262 (storage range).
pub fn timestamp_nanos(at: DateTime<Utc>) -> Option<i64> {
    at.timestamp_nanos_opt()
}

pub fn from_timestamp_nanos(nanos: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(nanos)
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Transaction {
        Transaction {
            provider: "evo-live".into(),
            provider_tx_id: "T1".into(),
            kind: Kind::Bet,
            account: "player-1".into(),
            game_id: Some("lightning-roulette".into()),
            round_id: Some("R1".into()),
            session_id: None,
            currency: CurrencyCode::parse("USD").unwrap(),
            amount: Decimal::from_str("10.50").unwrap(),
            occurred_at: DateTime::parse_from_rfc3339("2026-11-24T10:00:00.123Z").unwrap().into(),
            received_at: DateTime::parse_from_rfc3339("2026-11-24T10:00:01Z").unwrap().into(),
            original_tx_id: None,
            raw_sha256: sha256(b"raw"),
        }
    }

    #[test]
    fn kinds_round_trip_by_name() {
        for kind in Kind::ALL {
            assert_eq!(kind.as_str().parse::<Kind>(), Ok(kind));
        }
        assert!("debit".parse::<Kind>().is_err());
    }

    #[test]
    fn content_hash_ignores_delivery_details_but_not_content() {
        let original = sample();
        let mut redelivered = original.clone();
        redelivered.received_at = from_timestamp_nanos(0);
        redelivered.raw_sha256 = sha256(b"other formatting");
        redelivered.amount = Decimal::from_str("10.5000").unwrap();
        assert_eq!(original.content_hash(), redelivered.content_hash());

        let mut changed = original.clone();
        changed.amount = Decimal::from_str("10.51").unwrap();
        assert_ne!(original.content_hash(), changed.content_hash());
        let mut moved = original.clone();
        moved.game_id = None;
        assert_ne!(original.content_hash(), moved.content_hash());
        // Field boundaries are length-prefixed: shifting text between fields changes the hash.
        let mut shifted = original.clone();
        shifted.provider = "evo-liveT".into();
        shifted.provider_tx_id = "1".into();
        assert_ne!(original.content_hash(), shifted.content_hash());
    }
}
