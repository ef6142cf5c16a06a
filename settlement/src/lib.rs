//! The settlement core of settlewatch: the canonical transaction model, provider adapters,
//! validation, idempotent durable ingestion, the double-entry ledger, settlement statements
//! and the store (SQLite by default, PostgreSQL for scale).
//!
//! The pure parts (money, model, validation, posting rules, statements) do no I/O and read
//! no clock; the store and the ingestion pipeline wrap them. See ARCHITECTURE.md.

pub mod adapters;
pub mod config;
pub mod features;
pub mod generate;
pub mod ingest;
pub mod ledger;
pub mod model;
pub mod money;
pub mod reconcile;
pub mod rejection;
pub mod simulate;
pub mod statement;
pub mod store;
pub mod validate;
