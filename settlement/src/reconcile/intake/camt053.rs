//! ISO 20022 camt.053 (BankToCustomerStatement): what a bank or payment processor says it
//! booked on the operator's account. It is the statement of record for deposits and
//! withdrawals, and carries its own control figures (entry count and sum, opening and
//! closing balances), which are checked here before any line is taken.
//!
//! # What is read
//!
//! Namespaces `urn:iso:std:iso:20022:tech:xsd:camt.053.001.02` and `...camt.053.001.08`
//! (any prefix). Under `Document/BkToCstmrStmt`, each `Stmt` gives:
//! - `Id` (required; the statement id is the `Id`s of all `Stmt`s joined by `,`),
//!   `FrToDt/FrDtTm` and `ToDtTm` (the period, by the dates as written), `Acct/Ccy`;
//! - `Bal` with `Tp/CdOrPrtry/Cd` `OPBD` or `PRCD` (opening) and `CLBD` (closing), `Amt Ccy`,
//!   `CdtDbtInd`, `Dt/Dt`; other balance types (`CLAV`, `ITBD`, ...) are informative and not
//!   read;
//! - `TxsSummry`: `TtlNtries` (`NbOfNtries`, `Sum`, and the net: `TtlNetNtryAmt` + `CdtDbtInd`
//!   in .02, `TtlNetNtry/Amt` + `CdtDbtInd` in .08), `TtlCdtNtries` and `TtlDbtNtries`
//!   (`NbOfNtries`, `Sum`); each is optional, each present figure is checked;
//! - each `Ntry`: `Amt Ccy`, `CdtDbtInd` (`CRDT` → the configured `credit_kind`, `DBIT` →
//!   `debit_kind`), `Sts` (`BOOK`; .08: `Sts/Cd`), `BookgDt/Dt` (or `DtTm`: its date),
//!   `AcctSvcrRef`, `NtryRef`, `NtryDtls/Btch/PmtInfId` and each `NtryDtls/TxDtls` with
//!   `Refs/EndToEndId`, `Refs/AcctSvcrRef` and its amount (`AmtDtls/TxAmt/Amt`, or `Amt`).
//!
//! # Lines
//!
//! An entry without `TxDtls` is one line (`detail` 0, no provider id, reference =
//! `AcctSvcrRef`, else `NtryRef`, else the batch's `PmtInfId`). An entry with `TxDtls` is
//! one line per `TxDtls` (`detail` 1..n: a batch booking), each with the detail's amount
//! (a single `TxDtls` without an amount takes the entry's); `provider_tx_id` is the
//! `EndToEndId` (the id we sent, echoed; `NOTPROVIDED` counts as absent) and `reference`
//! the detail's `AcctSvcrRef`, else the entry's, else the batch's `PmtInfId`. `record` is
//! the entry's 1-based number in the document.
//!
//! # Checks (any failure refuses the whole document)
//!
//! Amounts are plain decimals (no sign, no exponent, at most the currency's decimals) in a
//! known currency the provider may use, equal to `Acct/Ccy` when the account states one;
//! a batch's `TxDtls` amounts sum exactly to the entry's. Per `Stmt`: `NbOfNtries` and
//! `Sum` equal the entries' count and sum, the net equals credits − debits, and for every
//! currency opening + credits − debits = closing (both balances are required). Booking
//! dates lie in `FrToDt` when it is given.
//!
//! Only booked entries are taken. camt.053 is the end-of-day statement of booked
//! entries; a pending (`PDNG`) or information-only (`INFO`) entry belongs in camt.052/054,
//! and a statement holding one is refused, naming the entry, rather than have it silently
//! left out of the balances. A reversal (`RvslInd` true) is refused the same way: its
//! direction would need the original entry. Balances are given once per `Stmt` and
//! currency, in document order.
//!
//! The document is UTF-8 (a byte-order mark is skipped). Limits: [`CAMT053_BYTES_MAX`], [`XML_DEPTH_MAX`], [`ELEMENT_TEXT_BYTES_MAX`],
//! [`STMTS_MAX`], and [`STATEMENT_LINES_MAX`] entries or lines. A `DOCTYPE` is refused.

use std::collections::BTreeMap;
use std::io::Read;

use chrono::NaiveDate;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use rust_decimal::Decimal;

use crate::adapters::fields;
use crate::adapters::Source;
use crate::model::sha256;
use crate::money::CurrencyCode;
use crate::reconcile::{ProviderStatement, StatementBalance, StatementFormat, StatementLine, STATEMENT_LINES_MAX};

use super::{date, StatementAdapter, StatementContext, StatementError};

/// The largest camt.053 document taken (it is held in memory while checked).
pub const CAMT053_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// The deepest element nesting taken (camt.053 needs about 12).
pub const XML_DEPTH_MAX: usize = 32;
/// The longest text of one element.
pub const ELEMENT_TEXT_BYTES_MAX: usize = 4096;
/// The most `Stmt` elements in one document.
pub const STMTS_MAX: usize = 10_000;

/// The namespaces read.
pub const NAMESPACES: [&str; 2] =
    ["urn:iso:std:iso:20022:tech:xsd:camt.053.001.02", "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"];

/// The path of a statement element.
const STMT_PATH: &str = "Document/BkToCstmrStmt/Stmt";

/// What stands for "no id" in `EndToEndId`.
const NOT_PROVIDED: &str = "NOTPROVIDED";

pub struct Camt053 {
    context: StatementContext,
}

impl Camt053 {
    pub fn new(context: StatementContext) -> Camt053 {
        Camt053 { context }
    }
}

impl StatementAdapter for Camt053 {
    fn format(&self) -> StatementFormat {
        StatementFormat::Camt053
    }

    fn decode(&self, source: &dyn Source) -> Result<ProviderStatement, StatementError> {
        let name = source.name();
        let mut bytes = Vec::new();
        source
            .open()
            .and_then(|reader| reader.take(CAMT053_BYTES_MAX + 1).read_to_end(&mut bytes))
            .map_err(|error| StatementError::io(name, error))?;
        if bytes.len() as u64 > CAMT053_BYTES_MAX {
            return Err(StatementError::too_large(name, format!("the document is over {CAMT053_BYTES_MAX} bytes")));
        }
        let checksum = sha256(&bytes);
        let text = std::str::from_utf8(&bytes).map_err(|error| {
            let line = line_of(&bytes, error.valid_up_to());
            StatementError::invalid(name, line, None, format!("the document is not UTF-8: {error}"))
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut parser = Parser::new(&self.context, name, text);
        parser.run()?;
        let Parser { ids, lines, balances, from_date, to_date, .. } = parser;
        let (Some(from_date), Some(to_date)) = (from_date, to_date) else {
            return Err(StatementError::invalid(
                name,
                0,
                None,
                "no statement gives FrToDt or has a booked entry: the period covered is unknown",
            ));
        };
        Ok(ProviderStatement {
            provider: self.context.provider.clone(),
            format: StatementFormat::Camt053,
            source: name.to_string(),
            sha256: checksum,
            statement_id: Some(ids.join(",")),
            from_date,
            to_date,
            lines,
            totals: Vec::new(),
            balances,
        })
    }
}

/// 1-based line of byte `position`.
fn line_of(bytes: &[u8], position: usize) -> u64 {
    1 + bytes.get(..position).unwrap_or(bytes).iter().filter(|&&byte| byte == b'\n').count() as u64
}

/// An amount with its currency, parsed where it was written.
#[derive(Clone, Copy, Debug)]
struct Money {
    currency: CurrencyCode,
    amount: Decimal,
    line: u64,
}

/// Credit (`CRDT`) or debit (`DBIT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Credit,
    Debit,
}

#[derive(Default)]
struct Detail {
    line: u64,
    end_to_end_id: Option<String>,
    reference: Option<String>,
    amount: Option<Money>,
    transaction_amount: Option<Money>,
}

#[derive(Default)]
struct Entry {
    line: u64,
    number: u64,
    amount: Option<Money>,
    direction: Option<Direction>,
    status: Option<String>,
    booking_date: Option<NaiveDate>,
    servicer_reference: Option<String>,
    entry_reference: Option<String>,
    batch_reference: Option<String>,
    details: Vec<Detail>,
}

#[derive(Default)]
struct Balance {
    line: u64,
    code: Option<String>,
    amount: Option<Money>,
    direction: Option<Direction>,
}

/// A declared count and sum (`TtlNtries`, `TtlCdtNtries`, `TtlDbtNtries`).
#[derive(Default)]
struct Declared {
    count: Option<(u64, u64)>,
    sum: Option<(Decimal, u64)>,
}

/// A currency's declared opening and closing balances (signed, credit positive), each with
/// its line.
#[derive(Default, Clone, Copy)]
struct Balances {
    opening: Option<(Decimal, u64)>,
    closing: Option<(Decimal, u64)>,
}

/// Per currency: credits and debits of the booked entries.
#[derive(Default, Clone, Copy)]
struct Flows {
    credits: Decimal,
    debits: Decimal,
}

/// A booking date with the entry (number, line) that has it.
type Booked = (NaiveDate, u64, u64);

#[derive(Default)]
struct Stmt {
    line: u64,
    id: Option<String>,
    account_currency: Option<CurrencyCode>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    balances: BTreeMap<CurrencyCode, Balances>,
    total: Declared,
    credit_total: Declared,
    debit_total: Declared,
    net: Option<(Decimal, u64)>,
    net_direction: Option<Direction>,
    entries: u64,
    entries_sum: Decimal,
    credit_entries: u64,
    debit_entries: u64,
    credit_sum: Decimal,
    debit_sum: Decimal,
    flows: BTreeMap<CurrencyCode, Flows>,
    /// The earliest and the latest booking date, each with its entry number and line.
    booking_dates: Option<(Booked, Booked)>,
}

struct Parser<'a> {
    context: &'a StatementContext,
    source: &'a str,
    text: &'a str,
    reader: NsReader<&'a [u8]>,
    /// The open elements' local names joined by `/` (`Document/BkToCstmrStmt/Stmt/Ntry`).
    path: String,
    /// The length of `path` before each open element was added.
    depths: Vec<usize>,
    /// A buffer for the path below `Stmt`, reused.
    scratch: String,
    /// The root element has ended: nothing else may start.
    root_closed: bool,
    value: String,
    /// The `Ccy` attribute of the element being read.
    currency_attribute: Option<String>,
    counted_to: usize,
    line: u64,
    stmt: Option<Stmt>,
    entry: Option<Entry>,
    balance: Option<Balance>,
    entries_seen: u64,
    stmts_seen: usize,
    ids: Vec<String>,
    lines: Vec<StatementLine>,
    balances: Vec<StatementBalance>,
    from_date: Option<NaiveDate>,
    to_date: Option<NaiveDate>,
}

impl<'a> Parser<'a> {
    fn new(context: &'a StatementContext, source: &'a str, text: &'a str) -> Parser<'a> {
        let mut reader = NsReader::from_str(text);
        let config = reader.config_mut();
        config.trim_text(true);
        config.expand_empty_elements = true;
        config.check_end_names = true;
        Parser {
            context,
            source,
            text,
            reader,
            path: String::new(),
            depths: Vec::new(),
            scratch: String::new(),
            root_closed: false,
            value: String::new(),
            currency_attribute: None,
            counted_to: 0,
            line: 1,
            stmt: None,
            entry: None,
            balance: None,
            entries_seen: 0,
            stmts_seen: 0,
            ids: Vec::new(),
            lines: Vec::new(),
            balances: Vec::new(),
            from_date: None,
            to_date: None,
        }
    }

    /// The line the reader is at (counted incrementally: positions only grow).
    fn current_line(&mut self) -> u64 {
        let position = usize::try_from(self.reader.buffer_position()).unwrap_or(usize::MAX).min(self.text.len());
        if position > self.counted_to {
            let counted = self.text.as_bytes().get(self.counted_to..position).unwrap_or_default();
            self.line += counted.iter().filter(|&&byte| byte == b'\n').count() as u64;
            self.counted_to = position;
        }
        self.line
    }

    fn invalid(&self, line: u64, field: Option<&str>, message: impl Into<String>) -> StatementError {
        StatementError::invalid(self.source, line, field, message)
    }

    /// The element path below `Stmt` (`Ntry/Amt`); `None` outside a `Stmt`.
    fn relative(&self) -> Option<&str> {
        let rest = self.path.strip_prefix(STMT_PATH)?;
        if rest.is_empty() {
            Some(rest)
        } else {
            rest.strip_prefix('/')
        }
    }

    /// The innermost open element's name.
    fn open_element(&self) -> Option<&str> {
        let start = *self.depths.last()?;
        self.path.get(start..).map(|name| name.trim_start_matches('/'))
    }

    fn run(&mut self) -> Result<(), StatementError> {
        loop {
            let event = self.reader.read_resolved_event();
            let (namespace, event) = match event {
                Ok(read) => read,
                Err(error) => {
                    let position = usize::try_from(self.reader.error_position()).unwrap_or(usize::MAX);
                    let line = line_of(self.text.as_bytes(), position);
                    return Err(self.invalid(line, None, format!("the XML is not well-formed: {error}")));
                }
            };
            let namespace_ok = match &namespace {
                ResolveResult::Bound(namespace) => NAMESPACES.iter().any(|known| known.as_bytes() == namespace.0),
                _ => false,
            };
            match event {
                Event::Start(start) => self.start(&start, namespace_ok)?,
                Event::End(_) => self.end()?,
                Event::Text(text) => {
                    let text = text.unescape().map_err(|error| {
                        let line = self.current_line();
                        self.invalid(line, None, format!("bad text: {error}"))
                    })?;
                    self.push_text(&text)?;
                }
                Event::CData(data) => {
                    let data = data.into_inner();
                    let text = String::from_utf8_lossy(&data).into_owned();
                    self.push_text(&text)?;
                }
                Event::DocType(_) => {
                    let line = self.current_line();
                    return Err(self.invalid(line, None, "a DOCTYPE is not allowed in a statement"));
                }
                Event::Empty(_) | Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
                Event::Eof => break,
            }
        }
        if let Some(open) = self.open_element() {
            let line = line_of(self.text.as_bytes(), self.text.len());
            return Err(self.invalid(line, None, format!("the document ends inside <{open}> (truncated?)")));
        }
        if self.stmts_seen == 0 {
            return Err(self.invalid(0, None, "the document has no Document/BkToCstmrStmt/Stmt"));
        }
        Ok(())
    }

    fn push_text(&mut self, text: &str) -> Result<(), StatementError> {
        if self.value.len() + text.len() > ELEMENT_TEXT_BYTES_MAX {
            let line = self.current_line();
            return Err(StatementError::too_large(
                self.source,
                format!("line {line}: an element's text is over {ELEMENT_TEXT_BYTES_MAX} bytes"),
            ));
        }
        self.value.push_str(text);
        Ok(())
    }

    fn start(&mut self, start: &BytesStart<'_>, namespace_ok: bool) -> Result<(), StatementError> {
        let line = self.current_line();
        let local_name = start.local_name();
        let name = String::from_utf8_lossy(local_name.as_ref());
        let depth = self.depths.len();
        if depth >= XML_DEPTH_MAX {
            return Err(StatementError::too_large(
                self.source,
                format!("line {line}: elements nested deeper than {XML_DEPTH_MAX}"),
            ));
        }
        if depth == 0 && self.root_closed {
            return Err(self.invalid(line, Some(&name), "a second root element after Document"));
        }
        match depth {
            0 if name != "Document" || !namespace_ok => {
                return Err(self.invalid(
                    line,
                    Some(&name),
                    format!(
                        "the root element must be Document in the namespace {} or {}",
                        NAMESPACES[0], NAMESPACES[1]
                    ),
                ))
            }
            1 if name != "BkToCstmrStmt" => {
                return Err(self.invalid(line, Some(&name), "Document must hold BkToCstmrStmt (a camt.053 statement)"))
            }
            _ => {}
        }
        self.depths.push(self.path.len());
        if depth > 0 {
            self.path.push('/');
        }
        self.path.push_str(&name);
        self.value.clear();
        self.currency_attribute = match start.try_get_attribute("Ccy") {
            Ok(Some(attribute)) => Some(
                attribute
                    .unescape_value()
                    .map_err(|error| self.invalid(line, Some("Ccy"), format!("bad attribute: {error}")))?
                    .into_owned(),
            ),
            Ok(None) => None,
            Err(error) => return Err(self.invalid(line, None, format!("bad attributes: {error}"))),
        };
        let Some(relative) = self.relative() else { return Ok(()) };
        match relative {
            "" => {
                if self.stmts_seen >= STMTS_MAX {
                    return Err(StatementError::too_large(self.source, format!("more than {STMTS_MAX} Stmt elements")));
                }
                self.stmts_seen += 1;
                self.stmt = Some(Stmt { line, ..Stmt::default() });
            }
            "Bal" => self.balance = Some(Balance { line, ..Balance::default() }),
            "Ntry" => {
                if self.entries_seen >= STATEMENT_LINES_MAX as u64 {
                    return Err(StatementError::too_large(
                        self.source,
                        format!("more than {STATEMENT_LINES_MAX} entries"),
                    ));
                }
                self.entries_seen += 1;
                self.entry = Some(Entry { line, number: self.entries_seen, ..Entry::default() });
            }
            "Ntry/NtryDtls/TxDtls" => {
                let details = self.entry.as_ref().map_or(0, |entry| entry.details.len());
                if self.lines.len() + details >= STATEMENT_LINES_MAX {
                    return Err(StatementError::too_large(
                        self.source,
                        format!("more than {STATEMENT_LINES_MAX} lines"),
                    ));
                }
                if let Some(entry) = &mut self.entry {
                    entry.details.push(Detail { line, ..Detail::default() });
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), StatementError> {
        let line = self.current_line();
        let mut relative = std::mem::take(&mut self.scratch);
        relative.clear();
        let inside = self.relative().inspect(|path| relative.push_str(path)).is_some();
        let mut value = std::mem::take(&mut self.value);
        let result = if inside { self.element(&relative, &value, line) } else { Ok(()) };
        self.scratch = relative;
        value.clear();
        self.value = value;
        result?;
        if let Some(length) = self.depths.pop() {
            self.path.truncate(length);
        }
        self.root_closed |= self.depths.is_empty();
        Ok(())
    }

    /// An amount element: `Ccy` attribute and exact decimal text.
    fn money(&self, field: &str, value: &str, line: u64) -> Result<Money, StatementError> {
        let code = self
            .currency_attribute
            .as_deref()
            .ok_or_else(|| self.invalid(line, Some(field), "has no Ccy attribute"))?;
        let (currency, exponent) =
            self.context.currency(field, code).map_err(|(_, message)| self.invalid(line, Some(field), message))?;
        if value.starts_with(['-', '+']) {
            return Err(self.invalid(
                line,
                Some(field),
                format!(
                    "{} has a sign; camt.053 amounts are unsigned (CdtDbtInd gives the direction)",
                    fields::quote(value)
                ),
            ));
        }
        let amount = fields::decimal_amount(field, value, currency, exponent)
            .map_err(|rejection| self.invalid(line, Some(field), rejection.message))?;
        Ok(Money { currency, amount, line })
    }

    fn direction(&self, field: &str, value: &str, line: u64) -> Result<Direction, StatementError> {
        match value {
            "CRDT" => Ok(Direction::Credit),
            "DBIT" => Ok(Direction::Debit),
            other => Err(self.invalid(line, Some(field), format!("{} is neither CRDT nor DBIT", fields::quote(other)))),
        }
    }

    fn identifier(&self, field: &str, value: &str, line: u64) -> Result<Option<String>, StatementError> {
        fields::optional_identifier(field, Some(value))
            .map_err(|rejection| self.invalid(line, Some(field), rejection.message))
    }

    /// A date from `Dt` (`YYYY-MM-DD`) or `DtTm` (its date as written).
    fn date(&self, field: &str, value: &str, line: u64) -> Result<NaiveDate, StatementError> {
        let text = if field.ends_with("DtTm") { value.get(..10).unwrap_or(value) } else { value };
        date(text).map_err(|message| self.invalid(line, Some(field), message))
    }

    /// A plain non-negative decimal without currency (`Sum`, `TtlNetNtryAmt`).
    fn number(&self, field: &str, value: &str, line: u64) -> Result<Decimal, StatementError> {
        let (whole, fraction) = value.split_once('.').unwrap_or((value, "0"));
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
        if !digits(whole) || !digits(fraction) || whole.len() + fraction.len() > fields::AMOUNT_DIGITS_MAX {
            return Err(self.invalid(
                line,
                Some(field),
                format!("{} is not a plain non-negative decimal", fields::quote(value)),
            ));
        }
        value.parse::<Decimal>().map_err(|error| {
            self.invalid(line, Some(field), format!("{} is not a decimal: {error}", fields::quote(value)))
        })
    }

    fn count(&self, field: &str, value: &str, line: u64) -> Result<u64, StatementError> {
        if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(self.invalid(line, Some(field), format!("{} is not a count", fields::quote(value))));
        }
        value
            .parse()
            .map_err(|_| self.invalid(line, Some(field), format!("{} does not fit in 64 bits", fields::quote(value))))
    }

    /// One closed element below `Stmt`, at `relative` path.
    fn element(&mut self, relative: &str, value: &str, line: u64) -> Result<(), StatementError> {
        let field = relative;
        // Entries and their details.
        if let Some(rest) = relative.strip_prefix("Ntry/NtryDtls/TxDtls/") {
            let parsed_money = match rest {
                "AmtDtls/TxAmt/Amt" | "Amt" => Some(self.money(field, value, line)?),
                _ => None,
            };
            let identifier = match rest {
                "Refs/EndToEndId" | "Refs/AcctSvcrRef" => self.identifier(field, value, line)?,
                _ => None,
            };
            if let Some(detail) = self.entry.as_mut().and_then(|entry| entry.details.last_mut()) {
                match rest {
                    "AmtDtls/TxAmt/Amt" => detail.transaction_amount = parsed_money,
                    "Amt" => detail.amount = parsed_money,
                    "Refs/EndToEndId" => detail.end_to_end_id = identifier.filter(|id| id != NOT_PROVIDED),
                    "Refs/AcctSvcrRef" => detail.reference = identifier,
                    _ => {}
                }
            }
            return Ok(());
        }
        if relative == "Ntry" {
            let entry = self
                .entry
                .take()
                .ok_or_else(|| self.invalid(line, Some("Ntry"), "an entry ends that never started"))?;
            return self.finish_entry(entry);
        }
        if let Some(rest) = relative.strip_prefix("Ntry/") {
            match rest {
                "Amt" => {
                    let money = self.money(field, value, line)?;
                    if let Some(entry) = &mut self.entry {
                        entry.amount = Some(money);
                    }
                }
                "CdtDbtInd" => {
                    let direction = self.direction(field, value, line)?;
                    if let Some(entry) = &mut self.entry {
                        entry.direction = Some(direction);
                    }
                }
                "Sts" | "Sts/Cd" => {
                    if let Some(entry) = &mut self.entry {
                        if !value.is_empty() {
                            entry.status = Some(value.to_string());
                        }
                    }
                }
                "BookgDt/Dt" | "BookgDt/DtTm" => {
                    let date = self.date(field, value, line)?;
                    if let Some(entry) = &mut self.entry {
                        entry.booking_date = Some(date);
                    }
                }
                "RvslInd" if value == "true" || value == "1" => {
                    let number = self.entry.as_ref().map_or(0, |entry| entry.number);
                    return Err(self.invalid(
                        line,
                        Some(field),
                        format!("entry {number} is a reversal, which cannot be reconciled without its original; ask for a statement without reversals or book the reversal as its own entry"),
                    ));
                }
                "AcctSvcrRef" | "NtryRef" | "NtryDtls/Btch/PmtInfId" => {
                    let identifier = self.identifier(field, value, line)?;
                    if let Some(entry) = &mut self.entry {
                        match rest {
                            "AcctSvcrRef" => entry.servicer_reference = identifier,
                            "NtryRef" => entry.entry_reference = identifier,
                            _ => entry.batch_reference = identifier,
                        }
                    }
                }
                _ => {}
            }
            return Ok(());
        }
        // Balances.
        if relative == "Bal" {
            let balance = self
                .balance
                .take()
                .ok_or_else(|| self.invalid(line, Some("Bal"), "a balance ends that never started"))?;
            return self.finish_balance(balance);
        }
        if let Some(rest) = relative.strip_prefix("Bal/") {
            match rest {
                "Tp/CdOrPrtry/Cd" => {
                    if let Some(balance) = &mut self.balance {
                        balance.code = Some(value.to_string());
                    }
                }
                "Amt" => {
                    let money = self.money(field, value, line)?;
                    if let Some(balance) = &mut self.balance {
                        balance.amount = Some(money);
                    }
                }
                "CdtDbtInd" => {
                    let direction = self.direction(field, value, line)?;
                    if let Some(balance) = &mut self.balance {
                        balance.direction = Some(direction);
                    }
                }
                "Dt/Dt" | "Dt/DtTm" => {
                    self.date(field, value, line)?;
                }
                _ => {}
            }
            return Ok(());
        }
        // The statement itself and its summary.
        if relative.is_empty() {
            let stmt = self
                .stmt
                .take()
                .ok_or_else(|| self.invalid(line, Some("Stmt"), "a statement ends that never started"))?;
            return self.finish_stmt(stmt);
        }
        let parsed = match relative {
            "Id" => self.identifier(field, value, line)?.map(Parsed::Text),
            "Acct/Ccy" => {
                let code = value;
                let (currency, _) = self
                    .context
                    .currency(field, code)
                    .map_err(|(_, message)| self.invalid(line, Some(field), message))?;
                Some(Parsed::Currency(currency))
            }
            "FrToDt/FrDtTm" | "FrToDt/ToDtTm" => Some(Parsed::Date(self.date(field, value, line)?)),
            "TxsSummry/TtlNtries/NbOfNtries"
            | "TxsSummry/TtlCdtNtries/NbOfNtries"
            | "TxsSummry/TtlDbtNtries/NbOfNtries" => Some(Parsed::Count(self.count(field, value, line)?)),
            "TxsSummry/TtlNtries/Sum"
            | "TxsSummry/TtlCdtNtries/Sum"
            | "TxsSummry/TtlDbtNtries/Sum"
            | "TxsSummry/TtlNtries/TtlNetNtryAmt"
            | "TxsSummry/TtlNtries/TtlNetNtry/Amt" => Some(Parsed::Number(self.number(field, value, line)?)),
            "TxsSummry/TtlNtries/CdtDbtInd" | "TxsSummry/TtlNtries/TtlNetNtry/CdtDbtInd" => {
                Some(Parsed::Direction(self.direction(field, value, line)?))
            }
            _ => None,
        };
        let (Some(stmt), Some(parsed)) = (&mut self.stmt, parsed) else { return Ok(()) };
        match (relative, parsed) {
            ("Id", Parsed::Text(id)) => stmt.id = Some(id),
            ("Acct/Ccy", Parsed::Currency(currency)) => stmt.account_currency = Some(currency),
            ("FrToDt/FrDtTm", Parsed::Date(date)) => stmt.from = Some(date),
            ("FrToDt/ToDtTm", Parsed::Date(date)) => stmt.to = Some(date),
            ("TxsSummry/TtlNtries/NbOfNtries", Parsed::Count(count)) => stmt.total.count = Some((count, line)),
            ("TxsSummry/TtlCdtNtries/NbOfNtries", Parsed::Count(count)) => {
                stmt.credit_total.count = Some((count, line))
            }
            ("TxsSummry/TtlDbtNtries/NbOfNtries", Parsed::Count(count)) => stmt.debit_total.count = Some((count, line)),
            ("TxsSummry/TtlNtries/Sum", Parsed::Number(sum)) => stmt.total.sum = Some((sum, line)),
            ("TxsSummry/TtlCdtNtries/Sum", Parsed::Number(sum)) => stmt.credit_total.sum = Some((sum, line)),
            ("TxsSummry/TtlDbtNtries/Sum", Parsed::Number(sum)) => stmt.debit_total.sum = Some((sum, line)),
            (_, Parsed::Number(net)) => stmt.net = Some((net, line)),
            (_, Parsed::Direction(direction)) => stmt.net_direction = Some(direction),
            _ => {}
        }
        Ok(())
    }

    fn finish_balance(&mut self, balance: Balance) -> Result<(), StatementError> {
        let line = balance.line;
        let opening = match balance.code.as_deref() {
            Some("OPBD" | "PRCD") => true,
            Some("CLBD") => false,
            _ => return Ok(()),
        };
        let money = balance.amount.ok_or_else(|| self.invalid(line, Some("Bal/Amt"), "the balance has no amount"))?;
        let direction = balance
            .direction
            .ok_or_else(|| self.invalid(line, Some("Bal/CdtDbtInd"), "the balance has no CdtDbtInd"))?;
        let signed = if direction == Direction::Credit { money.amount } else { -money.amount };
        let source = self.source;
        let Some(stmt) = &mut self.stmt else { return Ok(()) };
        if let Some(account) = stmt.account_currency {
            if account != money.currency {
                return Err(StatementError::invalid(
                    source,
                    money.line,
                    Some("Bal/Amt"),
                    format!("the balance is in {}, the account in {account}", money.currency),
                ));
            }
        }
        let slot = stmt.balances.entry(money.currency).or_default();
        let slot = if opening { &mut slot.opening } else { &mut slot.closing };
        if let Some((_, first)) = slot.replace((signed, line)) {
            return Err(StatementError::invalid(
                source,
                line,
                Some("Bal"),
                format!(
                    "a second {} balance in {} (the first is on line {first})",
                    if opening { "opening" } else { "closing" },
                    money.currency
                ),
            ));
        }
        Ok(())
    }

    fn finish_entry(&mut self, entry: Entry) -> Result<(), StatementError> {
        let line = entry.line;
        let number = entry.number;
        let what = |message: &str| format!("entry {number} {message}");
        let money = entry.amount.ok_or_else(|| self.invalid(line, Some("Ntry/Amt"), what("has no amount")))?;
        let direction =
            entry.direction.ok_or_else(|| self.invalid(line, Some("Ntry/CdtDbtInd"), what("has no CdtDbtInd")))?;
        match entry.status.as_deref() {
            Some("BOOK") => {}
            Some(status) => {
                return Err(self.invalid(
                    line,
                    Some("Ntry/Sts"),
                    what(&format!(
                        "has status {}; a camt.053 statement takes booked (BOOK) entries only",
                        fields::quote(status)
                    )),
                ))
            }
            None => return Err(self.invalid(line, Some("Ntry/Sts"), what("has no status"))),
        }
        let business_date =
            entry.booking_date.ok_or_else(|| self.invalid(line, Some("Ntry/BookgDt"), what("has no booking date")))?;
        let kind = match direction {
            Direction::Credit => self.context.credit_kind,
            Direction::Debit => self.context.debit_kind,
        };
        let source = self.source;
        let stmt =
            self.stmt.as_mut().ok_or_else(|| StatementError::invalid(source, line, Some("Ntry"), "outside a Stmt"))?;
        if let Some(account) = stmt.account_currency {
            if account != money.currency {
                return Err(StatementError::invalid(
                    source,
                    money.line,
                    Some("Ntry/Amt"),
                    what(&format!("is in {}, the account in {account}", money.currency)),
                ));
            }
        }
        let line_for =
            |detail: u32, provider_tx_id: Option<String>, reference: Option<String>, amount: Decimal| StatementLine {
                record: number,
                detail,
                provider_tx_id,
                reference,
                kind: Some(kind),
                currency: money.currency,
                amount,
                business_date,
                occurred_at: None,
            };
        let mut new_lines = Vec::with_capacity(entry.details.len().max(1));
        if entry.details.is_empty() {
            let reference =
                entry.servicer_reference.clone().or(entry.entry_reference.clone()).or(entry.batch_reference.clone());
            new_lines.push(line_for(0, None, reference, money.amount));
        } else {
            let single = entry.details.len() == 1;
            let mut sum = Decimal::ZERO;
            for (at, detail) in entry.details.into_iter().enumerate() {
                let index = at + 1;
                let amount = match detail.transaction_amount.or(detail.amount) {
                    Some(amount) => amount,
                    None if single => money,
                    None => {
                        return Err(StatementError::invalid(
                            source,
                            detail.line,
                            Some("Ntry/NtryDtls/TxDtls"),
                            what(&format!(
                                "has TxDtls {index} without an amount (a batch gives each detail its amount)"
                            )),
                        ))
                    }
                };
                if amount.currency != money.currency {
                    return Err(StatementError::invalid(
                        source,
                        amount.line,
                        Some("Ntry/NtryDtls/TxDtls/Amt"),
                        what(&format!("has TxDtls {index} in {}, the entry is in {}", amount.currency, money.currency)),
                    ));
                }
                sum += amount.amount;
                let reference = detail.reference.or(entry.servicer_reference.clone()).or(entry.batch_reference.clone());
                let detail_number = u32::try_from(index).unwrap_or(u32::MAX);
                new_lines.push(line_for(detail_number, detail.end_to_end_id, reference, amount.amount));
            }
            if sum != money.amount {
                return Err(StatementError::integrity(
                    source,
                    format!(
                        "entry {number} (line {line}) books {} {}, its {} TxDtls sum to {sum}",
                        money.amount,
                        money.currency,
                        new_lines.len()
                    ),
                ));
            }
        }
        if self.lines.len() + new_lines.len() > STATEMENT_LINES_MAX {
            return Err(StatementError::too_large(source, format!("more than {STATEMENT_LINES_MAX} lines")));
        }
        self.lines.extend(new_lines);
        stmt.entries += 1;
        stmt.entries_sum += money.amount;
        let flows = stmt.flows.entry(money.currency).or_default();
        match direction {
            Direction::Credit => {
                stmt.credit_entries += 1;
                stmt.credit_sum += money.amount;
                flows.credits += money.amount;
            }
            Direction::Debit => {
                stmt.debit_entries += 1;
                stmt.debit_sum += money.amount;
                flows.debits += money.amount;
            }
        }
        let booked = (business_date, number, line);
        stmt.booking_dates = Some(match stmt.booking_dates {
            None => (booked, booked),
            Some((first, last)) => (first.min(booked), last.max(booked)),
        });
        Ok(())
    }

    fn finish_stmt(&mut self, stmt: Stmt) -> Result<(), StatementError> {
        let source = self.source;
        let line = stmt.line;
        let id = stmt.id.clone().ok_or_else(|| self.invalid(line, Some("Stmt/Id"), "the statement has no Id"))?;
        let label = format!("statement {id:?}");
        let integrity = |message: String| StatementError::integrity(source, format!("{label}: {message}"));
        let checks = [
            ("TtlNtries", &stmt.total, stmt.entries, stmt.entries_sum),
            ("TtlCdtNtries", &stmt.credit_total, stmt.credit_entries, stmt.credit_sum),
            ("TtlDbtNtries", &stmt.debit_total, stmt.debit_entries, stmt.debit_sum),
        ];
        for (name, declared, count, sum) in checks {
            if let Some((declared_count, at)) = declared.count {
                if declared_count != count {
                    return Err(integrity(format!(
                        "{name}/NbOfNtries (line {at}) declares {declared_count} entries, the statement has {count}"
                    )));
                }
            }
            if let Some((declared_sum, at)) = declared.sum {
                if declared_sum != sum {
                    return Err(integrity(format!(
                        "{name}/Sum (line {at}) declares {declared_sum}, the entries sum to {sum}"
                    )));
                }
            }
        }
        if let Some((net, at)) = stmt.net {
            let declared = if stmt.net_direction == Some(Direction::Debit) { -net } else { net };
            let actual = stmt.credit_sum - stmt.debit_sum;
            if declared != actual {
                return Err(integrity(format!(
                    "the net of TtlNtries (line {at}) is {declared} (credit positive), credits − debits are {actual}"
                )));
            }
        }
        let mut currencies: Vec<CurrencyCode> = stmt.balances.keys().copied().collect();
        currencies.extend(stmt.flows.keys().copied().filter(|currency| !stmt.balances.contains_key(currency)));
        currencies.sort();
        for currency in currencies {
            let Balances { opening, closing } = stmt.balances.get(&currency).copied().unwrap_or_default();
            let flows = stmt.flows.get(&currency).copied().unwrap_or_default();
            let (Some((opening, _)), Some((closing, closing_line))) = (opening, closing) else {
                return Err(self.invalid(
                    line,
                    Some("Stmt/Bal"),
                    format!("{label} lacks its opening (OPBD) or closing (CLBD) balance in {currency}"),
                ));
            };
            let expected = opening + flows.credits - flows.debits;
            if expected != closing {
                return Err(integrity(format!(
                    "{currency}: opening {opening} + credits {} − debits {} = {expected}, the closing balance (line {closing_line}) is {closing}",
                    flows.credits, flows.debits
                )));
            }
            self.balances.push(StatementBalance { currency, opening, closing });
        }
        let period = match (stmt.from, stmt.to) {
            (Some(from), Some(to)) if from <= to => Some((from, to)),
            (Some(from), Some(to)) => {
                return Err(self.invalid(
                    line,
                    Some("Stmt/FrToDt"),
                    format!("{label}: ToDtTm {to} is before FrDtTm {from}"),
                ))
            }
            (None, None) => stmt.booking_dates.map(|(first, last)| (first.0, last.0)),
            _ => {
                return Err(self.invalid(
                    line,
                    Some("Stmt/FrToDt"),
                    format!("{label}: FrToDt needs both FrDtTm and ToDtTm"),
                ))
            }
        };
        if let (Some((from, to)), Some((first, last))) = (period, stmt.booking_dates) {
            for (date, number, at) in [first, last] {
                if date < from || date > to {
                    return Err(integrity(format!(
                        "entry {number} (line {at}) is booked on {date}, outside the statement's FrToDt {from} to {to}"
                    )));
                }
            }
        }
        if let Some((from, to)) = period {
            self.from_date = Some(self.from_date.map_or(from, |known| known.min(from)));
            self.to_date = Some(self.to_date.map_or(to, |known| known.max(to)));
        }
        self.ids.push(id);
        Ok(())
    }
}

/// A value read from a statement-level element.
enum Parsed {
    Text(String),
    Currency(CurrencyCode),
    Date(NaiveDate),
    Count(u64),
    Number(Decimal),
    Direction(Direction),
}
