//! Business rejections are values with specific codes, never panics or free text alone:
//! each names the record, the field and the reason, and is kept in the dead-letter store.

use std::fmt;

/// Why a record (or a whole payload) was not accepted. Stable snake_case names are
/// used in storage, reports and (bounded) metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    /// The record could not be parsed at all (broken JSON, CSV row, fixed-width line).
    MalformedRecord,
    /// The payload as a whole is broken (no header, no trailer, not UTF-8, too large).
    MalformedPayload,
    MissingField,
    InvalidField,
    /// Sign, scale beyond the currency exponent, overflow, not a number.
    InvalidAmount,
    UnknownCurrency,
    CurrencyNotAllowed,
    UnknownKind,
    UnknownProvider,
    BadSignature,
    TimestampInFuture,
    /// A rollback or chargeback without the id of the transaction it reverses.
    MissingOriginal,
    RollbackUnknownOriginal,
    RollbackExceedsOriginal,
    /// The rollback names a transaction of a kind that cannot be reversed, or with
    /// another currency or account.
    RollbackMismatch,
    RecordCountMismatch,
    ControlTotalMismatch,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::MalformedRecord,
        ErrorCode::MalformedPayload,
        ErrorCode::MissingField,
        ErrorCode::InvalidField,
        ErrorCode::InvalidAmount,
        ErrorCode::UnknownCurrency,
        ErrorCode::CurrencyNotAllowed,
        ErrorCode::UnknownKind,
        ErrorCode::UnknownProvider,
        ErrorCode::BadSignature,
        ErrorCode::TimestampInFuture,
        ErrorCode::MissingOriginal,
        ErrorCode::RollbackUnknownOriginal,
        ErrorCode::RollbackExceedsOriginal,
        ErrorCode::RollbackMismatch,
        ErrorCode::RecordCountMismatch,
        ErrorCode::ControlTotalMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedRecord => "malformed_record",
            ErrorCode::MalformedPayload => "malformed_payload",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::InvalidAmount => "invalid_amount",
            ErrorCode::UnknownCurrency => "unknown_currency",
            ErrorCode::CurrencyNotAllowed => "currency_not_allowed",
            ErrorCode::UnknownKind => "unknown_kind",
            ErrorCode::UnknownProvider => "unknown_provider",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::TimestampInFuture => "timestamp_in_future",
            ErrorCode::MissingOriginal => "missing_original",
            ErrorCode::RollbackUnknownOriginal => "rollback_unknown_original",
            ErrorCode::RollbackExceedsOriginal => "rollback_exceeds_original",
            ErrorCode::RollbackMismatch => "rollback_mismatch",
            ErrorCode::RecordCountMismatch => "record_count_mismatch",
            ErrorCode::ControlTotalMismatch => "control_total_mismatch",
        }
    }

    pub fn parse(text: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|code| code.as_str() == text)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejection: code, the field concerned (when one is), and a human reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub field: Option<String>,
    pub message: String,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Rejection {
        Rejection { code, field: None, message: message.into() }
    }

    pub fn field(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Rejection {
        Rejection { code, field: Some(field.into()), message: message.into() }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} (field {}): {}", self.code, field, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_by_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }
}
