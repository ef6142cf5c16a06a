//! The double-entry ledger's posting rules: which accounts each kind of transaction debits
//! and credits. Pure functions over values; the store writes what they return, after
//! [`check_balanced`] has passed (an unbalanced posting stops the write before commit).
//!
//! Sign convention: a posting's `amount_minor` is positive for a debit and negative for a
//! credit, in the transaction's currency. An account's balance is the sum of its postings,
//! so it is debit-positive: a player's balance is negative while the operator owes the
//! player money (a liability), a provider's position is positive while it owes us.
//!
//! Chart of accounts (per currency; `{p}` is the provider, `{a}` the player account):
//! - `player:{a}`      what the operator owes the player (liability)
//! - `provider:{p}`    the operator's position with the provider: funds a processor holds
//!   for us, less the fees it charges against them (an asset while positive)
//! - `ggr:{p}`         gross gaming revenue with the provider: stakes in, wins out (revenue)
//! - `jackpot:{p}`     jackpots paid through the provider (expense)
//! - `bonus:{p}`       bonuses credited to players (expense)
//! - `fees:{p}`        fees the provider charged (expense)
//! - `adjustments:{p}` counter-account of manual adjustments (expense)

use crate::model::Kind;

/// The accounts a posting can name. `Player` carries the player account id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LedgerAccount {
    Player(String),
    Provider(String),
    Ggr(String),
    Jackpot(String),
    Bonus(String),
    Fees(String),
    Adjustments(String),
}

impl LedgerAccount {
    /// The stored name, e.g. `player:p-17` or `ggr:evo-live`.
    pub fn name(&self) -> String {
        let (prefix, id) = match self {
            LedgerAccount::Player(id) => ("player", id),
            LedgerAccount::Provider(id) => ("provider", id),
            LedgerAccount::Ggr(id) => ("ggr", id),
            LedgerAccount::Jackpot(id) => ("jackpot", id),
            LedgerAccount::Bonus(id) => ("bonus", id),
            LedgerAccount::Fees(id) => ("fees", id),
            LedgerAccount::Adjustments(id) => ("adjustments", id),
        };
        format!("{prefix}:{id}")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posting {
    pub account: LedgerAccount,
    /// Debit positive, credit negative, in the transaction's minor units.
    pub amount_minor: i64,
}

/// What the posting rules need to know of a transaction.
#[derive(Clone, Copy, Debug)]
pub struct PostingInput<'a> {
    pub provider: &'a str,
    pub account: &'a str,
    pub kind: Kind,
    /// The kind of the original, for rollbacks and chargebacks.
    pub reverses: Option<Kind>,
    pub amount_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostingError {
    #[error("a {kind} needs the kind of the transaction it reverses")]
    MissingReversedKind { kind: Kind },
    #[error("a {kind} cannot reverse a {original}")]
    NotReversible { kind: Kind, original: Kind },
    #[error("amount {0} minor units cannot be negated")]
    Overflow(i64),
}

/// The postings of one transaction. Two legs, equal and opposite, always.
pub fn postings(input: &PostingInput<'_>) -> Result<[Posting; 2], PostingError> {
    let amount = input.amount_minor;
    let negated = amount.checked_neg().ok_or(PostingError::Overflow(amount))?;
    let (debit, credit) = match (input.kind, input.reverses) {
        (Kind::Rollback, None) => return Err(PostingError::MissingReversedKind { kind: input.kind }),
        (Kind::Rollback | Kind::Chargeback, Some(original)) => {
            let allowed = match input.kind {
                Kind::Rollback => original.is_reversible(),
                _ => original == Kind::Deposit,
            };
            if !allowed {
                return Err(PostingError::NotReversible { kind: input.kind, original });
            }
            // A reversal posts the original's legs the other way round.
            let (original_debit, original_credit) = legs(original, input);
            (original_credit, original_debit)
        }
        (kind, _) => legs(kind, input),
    };
    Ok([Posting { account: debit, amount_minor: amount }, Posting { account: credit, amount_minor: negated }])
}

/// (debit account, credit account) of a non-reversal kind.
fn legs(kind: Kind, input: &PostingInput<'_>) -> (LedgerAccount, LedgerAccount) {
    let player = || LedgerAccount::Player(input.account.to_string());
    let provider = input.provider.to_string();
    match kind {
        Kind::Bet => (player(), LedgerAccount::Ggr(provider)),
        Kind::Win => (LedgerAccount::Ggr(provider), player()),
        Kind::JackpotWin => (LedgerAccount::Jackpot(provider), player()),
        Kind::Bonus => (LedgerAccount::Bonus(provider), player()),
        Kind::Deposit => (LedgerAccount::Provider(provider), player()),
        Kind::Withdrawal => (player(), LedgerAccount::Provider(provider)),
        Kind::Fee => (LedgerAccount::Fees(provider.clone()), LedgerAccount::Provider(provider)),
        // The processor takes a disputed deposit back; the player's balance carries it. (With
        // the deposit named, the same legs come from reversing it.)
        Kind::Chargeback => (player(), LedgerAccount::Provider(provider)),
        // A positive adjustment credits the player.
        Kind::ManualAdjustment => (LedgerAccount::Adjustments(provider), player()),
        Kind::Rollback => unreachable!("rollbacks are handled by the caller"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("postings do not balance: debits minus credits is {imbalance_minor}")]
pub struct Unbalanced {
    pub imbalance_minor: i128,
}

/// Debits equal credits (all postings of one transaction share its currency).
pub fn check_balanced(postings: &[Posting]) -> Result<(), Unbalanced> {
    let imbalance_minor: i128 = postings.iter().map(|posting| posting.amount_minor as i128).sum();
    if imbalance_minor == 0 {
        Ok(())
    } else {
        Err(Unbalanced { imbalance_minor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn input(kind: Kind, reverses: Option<Kind>, amount_minor: i64) -> PostingInput<'static> {
        PostingInput { provider: "evo", account: "p1", kind, reverses, amount_minor }
    }

    #[test]
    fn bet_debits_player_and_credits_ggr() {
        let [debit, credit] = postings(&input(Kind::Bet, None, 1050)).unwrap();
        assert_eq!(debit, Posting { account: LedgerAccount::Player("p1".into()), amount_minor: 1050 });
        assert_eq!(credit, Posting { account: LedgerAccount::Ggr("evo".into()), amount_minor: -1050 });
        assert_eq!(debit.account.name(), "player:p1");
    }

    #[test]
    fn rollback_reverses_the_original_legs() {
        let bet = postings(&input(Kind::Bet, None, 500)).unwrap();
        let rollback = postings(&input(Kind::Rollback, Some(Kind::Bet), 500)).unwrap();
        assert_eq!(bet[0].account, rollback[1].account);
        assert_eq!(bet[1].account, rollback[0].account);
        let win_rollback = postings(&input(Kind::Rollback, Some(Kind::Win), 10)).unwrap();
        assert_eq!(win_rollback[0].account, LedgerAccount::Player("p1".into()));
        assert_eq!(
            postings(&input(Kind::Rollback, Some(Kind::Deposit), 1)),
            Err(PostingError::NotReversible { kind: Kind::Rollback, original: Kind::Deposit })
        );
        assert_eq!(
            postings(&input(Kind::Rollback, None, 1)),
            Err(PostingError::MissingReversedKind { kind: Kind::Rollback })
        );
    }

    #[test]
    fn unbalanced_postings_are_caught() {
        let postings = [
            Posting { account: LedgerAccount::Player("a".into()), amount_minor: 5 },
            Posting { account: LedgerAccount::Ggr("p".into()), amount_minor: -4 },
        ];
        assert_eq!(check_balanced(&postings), Err(Unbalanced { imbalance_minor: 1 }));
    }

    fn any_kind() -> impl Strategy<Value = Kind> {
        proptest::sample::select(Kind::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn postings_always_balance(kind in any_kind(), reverses in any_kind(), amount in (i64::MIN + 1)..=i64::MAX) {
            match postings(&input(kind, Some(reverses), amount)) {
                Ok(legs) => {
                    prop_assert!(check_balanced(&legs).is_ok());
                    prop_assert_ne!(&legs[0].account, &legs[1].account);
                }
                Err(PostingError::NotReversible { .. }) => {
                    prop_assert!(matches!(kind, Kind::Rollback | Kind::Chargeback));
                }
                Err(other) => prop_assert!(false, "unexpected {other}"),
            }
        }

        #[test]
        fn a_transaction_and_its_full_reversal_cancel_out(
            kind in proptest::sample::select(vec![Kind::Bet, Kind::Win, Kind::JackpotWin, Kind::Bonus, Kind::Deposit]),
            amount in 0..=i64::MAX,
        ) {
            let reversal_kind = if kind == Kind::Deposit { Kind::Chargeback } else { Kind::Rollback };
            let mut net = std::collections::BTreeMap::<LedgerAccount, i128>::new();
            for posting in postings(&input(kind, None, amount)).unwrap()
                .into_iter()
                .chain(postings(&input(reversal_kind, Some(kind), amount)).unwrap())
            {
                *net.entry(posting.account).or_default() += posting.amount_minor as i128;
            }
            prop_assert!(net.values().all(|&balance| balance == 0));
        }
    }
}
