//! Reconciliation: the provider's statement against our ledger, per provider and business
//! day. Real-time validation catches bad records; this catches what only the provider's
//! own account of the day can show: transactions one side lacks, amounts that differ,
//! deliveries that came late, totals that do not add up. Every difference becomes a break
//! with a class and a reason; written rules close timing breaks, the rest wait for a person
//! (maker-checker adjustments in the store).
//!
//! `model` holds the values; intake, matching and the store build on them. `intake` turns a
//! provider's statement bytes (totals CSV, transaction listing CSV, camt.053 XML) into a
//! checked `ProviderStatement`. `matching` is the engine: a pure function from a period, its
//! rules, the ledger and the statement to an `Outcome`.

pub mod intake;
pub mod matching;
pub mod model;
pub mod run;

pub use matching::{reconcile, MatchError, StatementSide};
pub use model::*;
