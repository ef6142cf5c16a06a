//! A game aggregator's signed JSON webhook.
//!
//! # Wire format
//!
//! A **delivery** is one HTTP request body, signed with HMAC-SHA256 over the exact body
//! bytes using the provider's shared secret. The signature travels hex-encoded in a header
//! (`signature_header`, default `X-Signature`) after a prefix (`signature_prefix`, default
//! `sha256=`). A missing, malformed or wrong signature rejects the whole delivery
//! (`bad_signature`); nothing in it is read. The body is one of:
//!
//! * a single transaction object: `{"id": "T1", "kind": "DEBIT", ...}`;
//! * a batch object, when `batch_field` is set: `{"transactions": [{...}, {...}]}`;
//! * a top-level array of transaction objects: `[{...}, {...}]`.
//!
//! Every field of a transaction is found by a configurable path (`[fields]`, dotted for
//! nested objects: `amount = "money.amount"`). Required: id, kind, account, currency (unless
//! a fixed `currency` is configured, in which case the currency field is not read), amount,
//! occurred_at. Optional (absent, `null` or `""` mean none): game, round, session,
//! original_id. Identifiers are strings or integer numbers. `kind` is a provider word looked
//! up in `[kinds]`. `amount` is a decimal string (`"10.50"`); a JSON number is accepted only
//! when its literal text is a plain decimal (`10.50`, never `1e1`): the number is read from
//! its exact text, never through a float. `occurred_at` is RFC 3339 with an offset, or with
//! `occurred_at_format = "epoch_millis"` an integer (number or string) of milliseconds.
//! Duplicate keys in an object make the record malformed.
//!
//! # Arrivals and units
//!
//! * `Arrival::Request`: the body is one delivery. A bad signature, a body that is not JSON,
//!   or a body over [`DELIVERY_BYTES_MAX`] rejects the payload (`DecodeError::Rejected`).
//!   Units are the transactions; `record` is the item number (1 for a single object).
//! * `Arrival::File`: a capture log, one delivery per line (JSONL):
//!   `{"headers": {"X-Signature": "sha256=..."}, "received_at": "<RFC 3339>", "body": "<raw
//!   body as a JSON string>"}`. `received_at` is optional: when our endpoint received that
//!   delivery. A capture log that records it makes late deliveries (an outage, then the
//!   backlog at once) visible, so every transaction of the line carries it as its
//!   `received_at`; without it they carry the payload's arrival time (the ingest time, or
//!   `ingest --received-at`). A `received_at` that is not RFC 3339 with an offset makes the
//!   line malformed. A line whose envelope is broken, whose signature fails or whose body
//!   is not JSON is one unit (`malformed_record` / `bad_signature`) with the whole line as
//!   `raw`, so it can be replayed as a delivery. Otherwise each transaction is a unit with
//!   its own JSON text as `raw`. `record` is the line number for every unit of that line;
//!   inside a batch, rejection messages start with `item K:` (1-based position in the
//!   batch).
//!
//! # Context (for `decode_unit`)
//!
//! * `json_webhook delivery v1`: `raw` is a whole capture line; the signature is verified
//!   again with the current secret and every transaction in it is decoded (with the line's
//!   own `received_at`, when it has one).
//! * `json_webhook record v1`, optionally followed by ` item=K` and then by
//!   ` received_at=<RFC 3339>`: `raw` is one transaction from a delivery whose signature was
//!   verified when it arrived. `received_at` is there when the capture line recorded its
//!   arrival, so a replay keeps the original arrival time; without it (older dead letters,
//!   HTTP requests, lines without a time) the replay time is used.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::marker::PhantomData;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::Sha256;

use super::fields::{self, quote, KindVocabulary, LineReader};
use super::{
    Adapter, AdapterConfigError, Arrival, DecodeError, Decoded, PayloadContext, ProviderContext, Sink, Source,
    RECORD_BYTES_MAX,
};
use crate::model::{sha256, Kind, Transaction};
use crate::money::{Currencies, CurrencyCode};
use crate::rejection::{ErrorCode, Rejection};

/// The largest delivery: a request body, or one line of a capture log.
pub const DELIVERY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// The deepest dotted field path (`a.b.c` is depth 3).
pub const FIELD_PATH_DEPTH_MAX: usize = 8;

const CONTEXT_DELIVERY: &str = "json_webhook delivery v1";
const CONTEXT_RECORD: &str = "json_webhook record v1";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonWebhookConfig {
    #[serde(default)]
    pub fields: JsonFields,
    /// Provider word → canonical kind name (`DEBIT = "bet"`).
    pub kinds: BTreeMap<String, String>,
    /// Path of the array in a batch object (`transactions`); a top-level array is always a batch.
    #[serde(default)]
    pub batch_field: Option<String>,
    /// Fixed currency of every transaction, for providers whose records carry none.
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub occurred_at_format: TimestampFormat,
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    #[serde(default = "default_signature_prefix")]
    pub signature_prefix: String,
    /// The HMAC secret inline (demo, tests) ...
    #[serde(default)]
    pub signing_secret: Option<Secret>,
    /// ... or the name of the environment variable holding it (production).
    #[serde(default)]
    pub signing_secret_env: Option<String>,
}

fn default_signature_header() -> String {
    "X-Signature".into()
}

fn default_signature_prefix() -> String {
    "sha256=".into()
}

/// Where each transaction field is found in a record (dotted paths for nested objects).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonFields {
    pub id: String,
    pub kind: String,
    pub account: String,
    pub game: String,
    pub round: String,
    pub session: String,
    pub currency: String,
    pub amount: String,
    pub occurred_at: String,
    pub original_id: String,
}

impl Default for JsonFields {
    fn default() -> JsonFields {
        JsonFields {
            id: "id".into(),
            kind: "kind".into(),
            account: "account".into(),
            game: "game".into(),
            round: "round".into(),
            session: "session".into(),
            currency: "currency".into(),
            amount: "amount".into(),
            occurred_at: "occurred_at".into(),
            original_id: "original_id".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    #[default]
    Rfc3339,
    EpochMillis,
}

/// A secret that never shows in `Debug` output (configurations are logged).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A configured field: its dotted path as written (for messages) and split (for lookup).
#[derive(Clone, Debug)]
struct FieldPath {
    name: String,
    segments: Vec<String>,
}

impl FieldPath {
    fn parse(key: &str, path: &str) -> Result<FieldPath, String> {
        let segments: Vec<String> = path.split('.').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) || segments.len() > FIELD_PATH_DEPTH_MAX {
            return Err(format!("{key}: {path:?} is not a dotted path of 1 to {FIELD_PATH_DEPTH_MAX} non-empty names"));
        }
        Ok(FieldPath { name: path.to_string(), segments })
    }
}

#[derive(Debug)]
struct Paths {
    id: FieldPath,
    kind: FieldPath,
    account: FieldPath,
    game: FieldPath,
    round: FieldPath,
    session: FieldPath,
    currency: FieldPath,
    amount: FieldPath,
    occurred_at: FieldPath,
    original_id: FieldPath,
}

type HmacSha256 = Hmac<Sha256>;

pub struct JsonWebhook {
    provider: String,
    currencies: Arc<Currencies>,
    paths: Paths,
    kinds: KindVocabulary,
    batch_path: Option<FieldPath>,
    fixed_currency: Option<(CurrencyCode, u32)>,
    occurred_at_format: TimestampFormat,
    signature_header: String,
    signature_prefix: String,
    secret: Vec<u8>,
    delivery_context: Arc<[u8]>,
}

impl JsonWebhook {
    pub fn new(config: &JsonWebhookConfig, provider: &ProviderContext) -> Result<JsonWebhook, AdapterConfigError> {
        let error = |message: String| AdapterConfigError { provider: provider.name.clone(), message };
        let fields = &config.fields;
        let path = |key: &str, text: &str| FieldPath::parse(&format!("fields.{key}"), text).map_err(error);
        let paths = Paths {
            id: path("id", &fields.id)?,
            kind: path("kind", &fields.kind)?,
            account: path("account", &fields.account)?,
            game: path("game", &fields.game)?,
            round: path("round", &fields.round)?,
            session: path("session", &fields.session)?,
            currency: path("currency", &fields.currency)?,
            amount: path("amount", &fields.amount)?,
            occurred_at: path("occurred_at", &fields.occurred_at)?,
            original_id: path("original_id", &fields.original_id)?,
        };
        let kinds = KindVocabulary::new(&config.kinds).map_err(error)?;
        let batch_path = match &config.batch_field {
            Some(batch) => Some(FieldPath::parse("batch_field", batch).map_err(error)?),
            None => None,
        };
        let fixed_currency = match &config.currency {
            Some(code) => Some(
                provider
                    .currencies
                    .lookup(code)
                    .ok_or_else(|| error(format!("currency: {code:?} is not a known currency")))?,
            ),
            None => None,
        };
        let header = config.signature_header.trim();
        if header.is_empty() || !header.bytes().all(|byte| byte.is_ascii_graphic() && byte != b':') {
            return Err(error(format!(
                "signature_header: {:?} is not a valid HTTP header name",
                config.signature_header
            )));
        }
        let secret =
            match (&config.signing_secret, &config.signing_secret_env) {
                (Some(secret), None) => secret.0.clone(),
                (None, Some(variable)) => std::env::var(variable).map_err(|_| {
                    error(format!("signing_secret_env: environment variable {variable} is not set (or not UTF-8)"))
                })?,
                (Some(_), Some(_)) => return Err(error("set signing_secret or signing_secret_env, not both".into())),
                (None, None) => return Err(error(
                    "no signing secret: set signing_secret or signing_secret_env (unsigned webhooks are not accepted)"
                        .into(),
                )),
            };
        if secret.is_empty() {
            return Err(error("the signing secret is empty".into()));
        }
        Ok(JsonWebhook {
            provider: provider.name.clone(),
            currencies: provider.currencies.clone(),
            paths,
            kinds,
            batch_path,
            fixed_currency,
            occurred_at_format: config.occurred_at_format,
            signature_header: header.to_string(),
            signature_prefix: config.signature_prefix.clone(),
            secret: secret.into_bytes(),
            delivery_context: Arc::from(CONTEXT_DELIVERY.as_bytes()),
        })
    }

    fn bad_signature(&self, message: String) -> Rejection {
        Rejection::field(ErrorCode::BadSignature, self.signature_header.clone(), message)
    }

    /// Checks the HMAC of `body` against the signature header, in constant time.
    fn verify<'h>(&self, headers: impl Iterator<Item = (&'h str, &'h str)>, body: &[u8]) -> Result<(), Rejection> {
        let values: Vec<&str> = headers
            .filter(|(name, _)| name.eq_ignore_ascii_case(&self.signature_header))
            .map(|(_, value)| value)
            .collect();
        let value = match values.as_slice() {
            [] => return Err(self.bad_signature(format!("header {} is missing", self.signature_header))),
            [value] => value.trim(),
            more => {
                return Err(self.bad_signature(format!(
                    "header {} appears {} times",
                    self.signature_header,
                    more.len()
                )))
            }
        };
        let hex_text = value.strip_prefix(self.signature_prefix.as_str()).ok_or_else(|| {
            self.bad_signature(format!("{} does not start with {:?}", quote(value), self.signature_prefix))
        })?;
        let signature =
            hex::decode(hex_text).map_err(|_| self.bad_signature(format!("{} is not hexadecimal", quote(hex_text))))?;
        let mut mac = HmacSha256::new_from_slice(&self.secret)
            .map_err(|_| self.bad_signature("the signing secret cannot key HMAC-SHA256".into()))?;
        mac.update(body);
        mac.verify_slice(&signature).map_err(|_| {
            self.bad_signature("the signature does not match the body (wrong secret or altered body)".into())
        })
    }

    /// Splits a verified body into its transactions: `(item number if batch, raw text)`.
    fn split_body<'b>(&self, body: &'b str) -> Result<Vec<(Option<usize>, &'b str)>, Rejection> {
        let malformed = |message: String| Rejection::new(ErrorCode::MalformedRecord, message);
        let top: &RawValue =
            serde_json::from_str(body).map_err(|error| malformed(format!("the body is not JSON: {error}")))?;
        let text = top.get();
        let items: Vec<&RawValue> = if text.starts_with('[') {
            serde_json::from_str(text).map_err(|error| malformed(format!("the body is not a JSON array: {error}")))?
        } else if text.starts_with('{') {
            let batch = match &self.batch_path {
                Some(path) => {
                    let object = parse_object(text).map_err(|message| malformed(format!("the body {message}")))?;
                    lookup(&object, path).map_err(|rejection| malformed(rejection.message))?
                }
                None => None,
            };
            match batch {
                None => return Ok(vec![(None, text)]),
                Some(array) => serde_json::from_str(array.get()).map_err(|_| {
                    malformed(format!(
                        "the batch field {} is {}, expected an array",
                        self.batch_path.as_ref().map_or("", |path| path.name.as_str()),
                        json_type(array)
                    ))
                })?,
            }
        } else {
            return Err(malformed(format!("the body is {}, expected an object or an array", json_type(top))));
        };
        Ok(items.into_iter().enumerate().map(|(index, item)| (Some(index + 1), item.get())).collect())
    }

    /// A capture-log line: envelope, signature, body → one unit per transaction, or one
    /// unit for the whole line when it cannot be opened.
    fn delivery_units(&self, line: &[u8], received_at: DateTime<Utc>) -> Vec<Unit> {
        let whole_line = |rejection: Rejection| {
            vec![Unit { raw: line.to_vec(), context: self.delivery_context.clone(), result: Err(rejection) }]
        };
        if line.len() > DELIVERY_BYTES_MAX {
            return whole_line(Rejection::new(
                ErrorCode::MalformedRecord,
                format!("the line is longer than {DELIVERY_BYTES_MAX} bytes"),
            ));
        }
        let envelope: Envelope = match serde_json::from_slice(line) {
            Ok(envelope) => envelope,
            Err(error) => {
                return whole_line(Rejection::new(
                    ErrorCode::MalformedRecord,
                    format!(
                        "not a captured delivery {{\"headers\": {{...}}, \"body\": \"...\"}} (and optionally \
                         \"received_at\"): {error}"
                    ),
                ))
            }
        };
        let captured_at = match envelope.received_at.map(envelope_time) {
            None => None,
            Some(Ok(at)) => Some(at),
            Some(Err(message)) => {
                return whole_line(Rejection::field(ErrorCode::MalformedRecord, "received_at", message));
            }
        };
        let headers = envelope.headers.0.iter().map(|(name, value)| (name.as_str(), value.as_str()));
        if let Err(rejection) = self.verify(headers, envelope.body.as_bytes()) {
            return whole_line(rejection);
        }
        let received_at = captured_at.unwrap_or(received_at);
        match self.split_body(&envelope.body) {
            Err(rejection) => whole_line(rejection),
            Ok(items) => items
                .into_iter()
                .map(|(item, raw)| Unit {
                    raw: raw.as_bytes().to_vec(),
                    context: record_context(item, captured_at),
                    result: self.decode_record(raw, item, received_at),
                })
                .collect(),
        }
    }

    /// One transaction object → canonical form. Inside a batch, messages name the item.
    fn decode_record(
        &self,
        raw: &str,
        item: Option<usize>,
        received_at: DateTime<Utc>,
    ) -> Result<Transaction, Rejection> {
        self.decode_record_fields(raw, received_at).map_err(|mut rejection| {
            if let Some(item) = item {
                rejection.message = format!("item {item}: {}", rejection.message);
            }
            rejection
        })
    }

    fn decode_record_fields(&self, raw: &str, received_at: DateTime<Utc>) -> Result<Transaction, Rejection> {
        if raw.len() > RECORD_BYTES_MAX {
            return Err(Rejection::new(
                ErrorCode::MalformedRecord,
                format!("the record is {} bytes, the limit is {RECORD_BYTES_MAX}", raw.len()),
            ));
        }
        let record = parse_object(raw)
            .map_err(|message| Rejection::new(ErrorCode::MalformedRecord, format!("the record {message}")))?;
        let paths = &self.paths;
        let id = fields::identifier(&paths.id.name, &required(&record, &paths.id)?)?;
        let kind_word = required_string(&record, &paths.kind)?;
        let kind: Kind = self.kinds.kind(&paths.kind.name, &kind_word)?;
        let account = fields::identifier(&paths.account.name, &required(&record, &paths.account)?)?;
        let game_id = optional(&record, &paths.game)?;
        let round_id = optional(&record, &paths.round)?;
        let session_id = optional(&record, &paths.session)?;
        let (currency, exponent) = match self.fixed_currency {
            Some(fixed) => fixed,
            None => {
                let code = required_string(&record, &paths.currency)?;
                fields::currency(&self.currencies, &paths.currency.name, &code)?
            }
        };
        let amount_text = match scalar(lookup(&record, &paths.amount)?) {
            Scalar::Missing => return Err(missing(&paths.amount)),
            Scalar::Text(text) if text.is_empty() => return Err(missing(&paths.amount)),
            Scalar::Text(text) => text,
            Scalar::Number(text) => text.to_string(),
            Scalar::Other(kind) => {
                return Err(Rejection::field(
                    ErrorCode::InvalidAmount,
                    &paths.amount.name,
                    format!("is {kind}, expected a decimal string"),
                ))
            }
        };
        let amount = fields::decimal_amount(&paths.amount.name, &amount_text, currency, exponent)?;
        let occurred_at = self.occurred_at(&record)?;
        let original_tx_id = optional(&record, &paths.original_id)?;
        Ok(Transaction {
            provider: self.provider.clone(),
            provider_tx_id: id,
            kind,
            account,
            game_id,
            round_id,
            session_id,
            currency,
            amount,
            occurred_at,
            received_at,
            original_tx_id,
            raw_sha256: sha256(raw.as_bytes()),
        })
    }

    fn occurred_at(&self, record: &Object<'_>) -> Result<DateTime<Utc>, Rejection> {
        let path = &self.paths.occurred_at;
        let invalid = |message: String| Rejection::field(ErrorCode::InvalidField, &path.name, message);
        match (self.occurred_at_format, scalar(lookup(record, path)?)) {
            (_, Scalar::Missing) => Err(missing(path)),
            (_, Scalar::Text(text)) if text.is_empty() => Err(missing(path)),
            (TimestampFormat::Rfc3339, Scalar::Text(text)) => DateTime::parse_from_rfc3339(&text)
                .map(|at| at.with_timezone(&Utc))
                .map_err(|error| invalid(format!("{} is not an RFC 3339 timestamp: {error}", quote(&text)))),
            (TimestampFormat::EpochMillis, Scalar::Text(text)) => epoch_millis(&text)
                .ok_or_else(|| invalid(format!("{} is not a time in milliseconds since the Unix epoch", quote(&text)))),
            (TimestampFormat::EpochMillis, Scalar::Number(text)) => epoch_millis(text)
                .ok_or_else(|| invalid(format!("{} is not a time in milliseconds since the Unix epoch", quote(text)))),
            (TimestampFormat::Rfc3339, Scalar::Number(text)) => {
                Err(invalid(format!("{} is a number, expected an RFC 3339 string", quote(text))))
            }
            (_, Scalar::Other(kind)) => Err(invalid(format!("is {kind}, expected a timestamp"))),
        }
    }
}

fn epoch_millis(text: &str) -> Option<DateTime<Utc>> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    if unsigned.is_empty() || !unsigned.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    DateTime::from_timestamp_millis(text.parse().ok()?)
}

/// A decoded unit before it gets its record number.
struct Unit {
    raw: Vec<u8>,
    context: Arc<[u8]>,
    result: Result<Transaction, Rejection>,
}

/// The envelope's `received_at`: an RFC 3339 string with an offset.
fn envelope_time(value: serde_json::Value) -> Result<DateTime<Utc>, String> {
    match value {
        serde_json::Value::String(text) => DateTime::parse_from_rfc3339(&text)
            .map(|at| at.with_timezone(&Utc))
            .map_err(|error| format!("{} is not an RFC 3339 timestamp with an offset: {error}", quote(&text))),
        other => {
            let kind = match other {
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Array(_) => "an array",
                _ => "an object",
            };
            Err(format!("is {kind}, expected an RFC 3339 timestamp string"))
        }
    }
}

/// The context of one transaction: its item number in a batch, and the arrival time its
/// capture line recorded (so a replay keeps it).
fn record_context(item: Option<usize>, received_at: Option<DateTime<Utc>>) -> Arc<[u8]> {
    let mut context = CONTEXT_RECORD.to_string();
    if let Some(item) = item {
        context.push_str(&format!(" item={item}"));
    }
    if let Some(at) = received_at {
        context.push_str(&format!(" received_at={}", at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)));
    }
    Arc::from(context.into_bytes())
}

/// Reads a record context (`json_webhook record v1[ item=K][ received_at=T]`).
fn parse_record_context(context: &str) -> Option<(Option<usize>, Option<DateTime<Utc>>)> {
    let mut rest = context.strip_prefix(CONTEXT_RECORD)?;
    let mut item = None;
    if let Some(after) = rest.strip_prefix(" item=") {
        let end = after.find(' ').unwrap_or(after.len());
        item = Some(after[..end].parse::<usize>().ok()?);
        rest = &after[end..];
    }
    let mut received_at = None;
    if let Some(after) = rest.strip_prefix(" received_at=") {
        received_at = Some(DateTime::parse_from_rfc3339(after).ok()?.with_timezone(&Utc));
        rest = "";
    }
    rest.is_empty().then_some((item, received_at))
}

/// A captured delivery, one line of a capture log.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    headers: UniqueMap<String>,
    /// When our endpoint received the delivery (RFC 3339), if the log recorded it. Any JSON
    /// value here, so that a wrong type gets a message naming the field.
    #[serde(default)]
    received_at: Option<serde_json::Value>,
    body: String,
}

/// A JSON object whose keys must be unique (a duplicate key is ambiguous, so malformed).
struct UniqueMap<V>(BTreeMap<String, V>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<UniqueMap<V>, D::Error> {
        struct UniqueMapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for UniqueMapVisitor<V> {
            type Value = UniqueMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueMap<V>, A::Error> {
                let mut entries = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value()?;
                    if entries.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!("duplicate key {}", quote(&key))));
                    }
                    entries.insert(key, value);
                }
                Ok(UniqueMap(entries))
            }
        }
        deserializer.deserialize_map(UniqueMapVisitor(PhantomData))
    }
}

type Object<'a> = UniqueMap<&'a RawValue>;

fn parse_object(text: &str) -> Result<Object<'_>, String> {
    serde_json::from_str(text).map_err(|error| format!("is not a valid JSON object: {error}"))
}

/// The value at a dotted path; `None` when any step is absent or `null`.
fn lookup<'a>(record: &Object<'a>, path: &FieldPath) -> Result<Option<&'a RawValue>, Rejection> {
    let mut segments = path.segments.iter();
    let mut current = segments.next().and_then(|first| record.0.get(first).copied());
    let mut walked = path.segments.first().cloned().unwrap_or_default();
    for segment in segments {
        let Some(value) = current.filter(|value| value.get() != "null") else { return Ok(None) };
        let object: Object<'a> = parse_object(value.get()).map_err(|_| {
            Rejection::field(
                ErrorCode::InvalidField,
                &path.name,
                format!("{walked} is {}, expected an object", json_type(value)),
            )
        })?;
        current = object.0.get(segment).copied();
        walked = format!("{walked}.{segment}");
    }
    Ok(current.filter(|value| value.get() != "null"))
}

enum Scalar<'a> {
    Missing,
    Text(String),
    /// The number's exact literal text.
    Number(&'a str),
    Other(&'static str),
}

fn scalar(value: Option<&RawValue>) -> Scalar<'_> {
    let Some(value) = value else { return Scalar::Missing };
    let text = value.get();
    match text.bytes().next() {
        Some(b'"') => match serde_json::from_str::<String>(text) {
            Ok(string) => Scalar::Text(string),
            Err(_) => Scalar::Other("an unreadable string"),
        },
        Some(b'-' | b'0'..=b'9') => Scalar::Number(text),
        _ => Scalar::Other(json_type(value)),
    }
}

fn json_type(value: &RawValue) -> &'static str {
    match value.get().bytes().next() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn missing(path: &FieldPath) -> Rejection {
    Rejection::field(ErrorCode::MissingField, &path.name, "is missing")
}

/// An identifier field: a string, or an integer number taken as its digits.
fn identifier_text(record: &Object<'_>, path: &FieldPath) -> Result<Option<String>, Rejection> {
    match scalar(lookup(record, path)?) {
        Scalar::Missing => Ok(None),
        Scalar::Text(text) => Ok(Some(text).filter(|text| !text.is_empty())),
        Scalar::Number(text) if text.bytes().all(|byte| byte.is_ascii_digit()) => Ok(Some(text.to_string())),
        Scalar::Number(text) => Err(Rejection::field(
            ErrorCode::InvalidField,
            &path.name,
            format!("{} is not an identifier (a string or a non-negative integer)", quote(text)),
        )),
        Scalar::Other(kind) => {
            Err(Rejection::field(ErrorCode::InvalidField, &path.name, format!("is {kind}, expected a string")))
        }
    }
}

fn required(record: &Object<'_>, path: &FieldPath) -> Result<String, Rejection> {
    identifier_text(record, path)?.ok_or_else(|| missing(path))
}

fn optional(record: &Object<'_>, path: &FieldPath) -> Result<Option<String>, Rejection> {
    fields::optional_identifier(&path.name, identifier_text(record, path)?.as_deref())
}

/// A required field that must be a JSON string (kind words, currency codes).
fn required_string(record: &Object<'_>, path: &FieldPath) -> Result<String, Rejection> {
    match scalar(lookup(record, path)?) {
        Scalar::Missing => Err(missing(path)),
        Scalar::Text(text) if text.is_empty() => Err(missing(path)),
        Scalar::Text(text) => Ok(text),
        Scalar::Number(text) => Err(Rejection::field(
            ErrorCode::InvalidField,
            &path.name,
            format!("{} is a number, expected a string", quote(text)),
        )),
        Scalar::Other(kind) => {
            Err(Rejection::field(ErrorCode::InvalidField, &path.name, format!("is {kind}, expected a string")))
        }
    }
}

fn io_error(source: &dyn Source, error: std::io::Error) -> DecodeError {
    DecodeError::Io { source_name: source.name().to_string(), error }
}

impl Adapter for JsonWebhook {
    fn decode(&self, source: &dyn Source, context: &PayloadContext, sink: &mut Sink<'_>) -> Result<u64, DecodeError> {
        let mut handed = 0u64;
        match &context.arrival {
            Arrival::Request { headers } => {
                let mut body = Vec::new();
                let limit = u64::try_from(DELIVERY_BYTES_MAX).unwrap_or(u64::MAX).saturating_add(1);
                source
                    .open()
                    .and_then(|reader| reader.take(limit).read_to_end(&mut body))
                    .map_err(|error| io_error(source, error))?;
                if body.len() > DELIVERY_BYTES_MAX {
                    return Err(DecodeError::Rejected(Rejection::new(
                        ErrorCode::MalformedPayload,
                        format!("the body is larger than {DELIVERY_BYTES_MAX} bytes"),
                    )));
                }
                self.verify(headers.iter().map(|(name, value)| (name.as_str(), value.as_str())), &body)
                    .map_err(DecodeError::Rejected)?;
                let body = std::str::from_utf8(&body).map_err(|error| {
                    DecodeError::Rejected(Rejection::new(
                        ErrorCode::MalformedPayload,
                        format!("the body is not UTF-8: {error}"),
                    ))
                })?;
                let items = self.split_body(body).map_err(|rejection| {
                    DecodeError::Rejected(Rejection { code: ErrorCode::MalformedPayload, ..rejection })
                })?;
                for (position, (item, raw)) in items.into_iter().enumerate() {
                    sink(Decoded {
                        record: u64::try_from(position).unwrap_or(u64::MAX).saturating_add(1),
                        raw: raw.as_bytes().to_vec(),
                        context: record_context(item, None),
                        result: self.decode_record(raw, item, context.received_at),
                    })?;
                    handed += 1;
                }
            }
            Arrival::File => {
                let reader = source.open().map_err(|error| io_error(source, error))?;
                let mut lines = LineReader::new(reader, DELIVERY_BYTES_MAX);
                let mut buf = Vec::new();
                while let Some(line) = lines.next_line(&mut buf).map_err(|error| io_error(source, error))? {
                    let text = fields::trim_cr(&buf);
                    if text.is_empty() {
                        continue;
                    }
                    for unit in self.delivery_units(text, context.received_at) {
                        sink(Decoded {
                            record: line.number,
                            raw: unit.raw,
                            context: unit.context,
                            result: unit.result,
                        })?;
                        handed += 1;
                    }
                }
            }
        }
        Ok(handed)
    }

    fn decode_unit(
        &self,
        context: &[u8],
        raw: &[u8],
        received_at: DateTime<Utc>,
    ) -> Vec<Result<Transaction, Rejection>> {
        let context = std::str::from_utf8(context).unwrap_or("");
        if context == CONTEXT_DELIVERY {
            return self.delivery_units(raw, received_at).into_iter().map(|unit| unit.result).collect();
        }
        let Some((item, captured_at)) = parse_record_context(context) else {
            return vec![Err(unknown_context(context))];
        };
        let received_at = captured_at.unwrap_or(received_at);
        let result = match std::str::from_utf8(raw) {
            Ok(raw) => self.decode_record(raw, item, received_at),
            Err(error) => Err(Rejection::new(ErrorCode::MalformedRecord, format!("the record is not UTF-8: {error}"))),
        };
        vec![result]
    }
}

fn unknown_context(context: &str) -> Rejection {
    Rejection::new(ErrorCode::MalformedRecord, format!("unknown json_webhook unit context {}", quote(context)))
}
