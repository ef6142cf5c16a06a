//! Placeholder until the adapter lands (being written on the adapters branch).

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{Adapter, AdapterConfigError, DecodeError, PayloadContext, ProviderContext, Sink, Source};
use crate::model::Transaction;
use crate::rejection::Rejection;

#[derive(Clone, Debug, Deserialize)]
pub struct JsonWebhookConfig {}

pub struct JsonWebhook;

impl JsonWebhook {
    pub fn new(_config: &JsonWebhookConfig, provider: &ProviderContext) -> Result<JsonWebhook, AdapterConfigError> {
        Err(AdapterConfigError { provider: provider.name.clone(), message: "adapter not built yet".into() })
    }
}

impl Adapter for JsonWebhook {
    fn decode(
        &self,
        _source: &dyn Source,
        _context: &PayloadContext,
        _sink: &mut Sink<'_>,
    ) -> Result<u64, DecodeError> {
        Ok(0)
    }
    fn decode_unit(
        &self,
        _context: &[u8],
        _raw: &[u8],
        _received_at: DateTime<Utc>,
    ) -> Vec<Result<Transaction, Rejection>> {
        Vec::new()
    }
}
