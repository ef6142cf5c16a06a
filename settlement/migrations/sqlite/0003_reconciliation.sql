-- Reconciliation: the provider statements we loaded, the runs that compared them with the
-- ledger, the breaks they found (with their life: open, pending adjustment, closed), the
-- maker-checker adjustments that close breaks, and an audit log of every change of status
-- and every maker-checker step. Amounts are integer minor units with their exponent
-- (decimal places), so every amount reads back exactly; times are ns since the epoch;
-- dates are ISO text (YYYY-MM-DD), which sorts as dates do.

CREATE TABLE statements (
    id INTEGER PRIMARY KEY,
    provider_id INTEGER NOT NULL REFERENCES providers (id),
    format TEXT NOT NULL,
    source TEXT NOT NULL,
    sha256 BLOB NOT NULL,
    -- the provider's own statement id (camt.053 Stmt/Id), when the format has one
    statement_id TEXT,
    from_date TEXT NOT NULL,
    to_date TEXT NOT NULL,
    line_count INTEGER NOT NULL,
    totals_count INTEGER NOT NULL,
    balance_count INTEGER NOT NULL,
    loaded_at_ns INTEGER NOT NULL,
    UNIQUE (provider_id, sha256),
    UNIQUE (provider_id, statement_id)
) STRICT;

CREATE TABLE statement_lines (
    statement_id INTEGER NOT NULL REFERENCES statements (id),
    line_index INTEGER NOT NULL,
    provider_id INTEGER NOT NULL REFERENCES providers (id),
    record INTEGER NOT NULL,
    detail INTEGER NOT NULL,
    provider_tx_id TEXT,
    reference TEXT,
    kind TEXT,
    currency TEXT NOT NULL,
    exponent INTEGER NOT NULL,
    amount_minor INTEGER NOT NULL,
    business_date TEXT NOT NULL,
    occurred_at_ns INTEGER,
    PRIMARY KEY (statement_id, line_index)
) STRICT;

CREATE INDEX statement_lines_by_day ON statement_lines (provider_id, business_date);

CREATE TABLE statement_totals (
    statement_id INTEGER NOT NULL REFERENCES statements (id),
    line_index INTEGER NOT NULL,
    provider_id INTEGER NOT NULL REFERENCES providers (id),
    record INTEGER NOT NULL,
    business_date TEXT NOT NULL,
    currency TEXT NOT NULL,
    kind TEXT NOT NULL,
    item_count INTEGER NOT NULL,
    exponent INTEGER NOT NULL,
    amount_minor INTEGER NOT NULL,
    PRIMARY KEY (statement_id, line_index)
) STRICT;

CREATE INDEX statement_totals_by_day ON statement_totals (provider_id, business_date);

CREATE TABLE statement_balances (
    statement_id INTEGER NOT NULL REFERENCES statements (id),
    line_index INTEGER NOT NULL,
    currency TEXT NOT NULL,
    opening_exponent INTEGER NOT NULL,
    opening_minor INTEGER NOT NULL,
    closing_exponent INTEGER NOT NULL,
    closing_minor INTEGER NOT NULL,
    PRIMARY KEY (statement_id, line_index)
) STRICT;

CREATE TABLE reconciliation_runs (
    id INTEGER PRIMARY KEY,
    provider_id INTEGER NOT NULL REFERENCES providers (id),
    business_date TEXT NOT NULL,
    from_ns INTEGER NOT NULL,
    to_ns INTEGER NOT NULL,
    as_of_ns INTEGER NOT NULL,
    recorded_at_ns INTEGER NOT NULL,
    matched_by_id INTEGER NOT NULL,
    matched_by_reference INTEGER NOT NULL,
    matched_one_to_many INTEGER NOT NULL,
    matched_many_to_one INTEGER NOT NULL,
    matched_totals_rows INTEGER NOT NULL,
    -- what the run did to the stored breaks
    breaks_found INTEGER NOT NULL,
    breaks_opened INTEGER NOT NULL,
    breaks_closed INTEGER NOT NULL,
    breaks_reopened INTEGER NOT NULL,
    breaks_updated INTEGER NOT NULL
) STRICT;

CREATE INDEX reconciliation_runs_by_provider ON reconciliation_runs (provider_id, id);

CREATE TABLE reconciliation_run_currencies (
    run_id INTEGER NOT NULL REFERENCES reconciliation_runs (id),
    currency TEXT NOT NULL,
    exponent INTEGER NOT NULL,
    ledger_count INTEGER NOT NULL,
    ledger_amount_minor INTEGER NOT NULL,
    statement_count INTEGER NOT NULL,
    statement_amount_minor INTEGER NOT NULL,
    matched_count INTEGER NOT NULL,
    matched_amount_minor INTEGER NOT NULL,
    net_difference_minor INTEGER NOT NULL,
    PRIMARY KEY (run_id, currency)
) STRICT;

CREATE TABLE breaks (
    id INTEGER PRIMARY KEY,
    provider_id INTEGER NOT NULL REFERENCES providers (id),
    business_date TEXT NOT NULL,
    break_key TEXT NOT NULL,
    class TEXT NOT NULL,
    currency TEXT,
    kind TEXT,
    provider_tx_id TEXT,
    statement_record INTEGER,
    -- one exponent for the break's three amounts
    exponent INTEGER NOT NULL,
    ledger_amount_minor INTEGER,
    statement_amount_minor INTEGER,
    difference_minor INTEGER NOT NULL,
    item_count INTEGER NOT NULL,
    reason TEXT NOT NULL,
    -- open | pending_adjustment | closed
    status TEXT NOT NULL,
    opened_at_ns INTEGER NOT NULL,
    first_run_id INTEGER NOT NULL REFERENCES reconciliation_runs (id),
    last_run_id INTEGER NOT NULL REFERENCES reconciliation_runs (id),
    last_seen_at_ns INTEGER NOT NULL,
    closed_at_ns INTEGER,
    -- rule (closed by a written rule, closed_by names it) | adjustment (closed_by is the approver)
    closed_kind TEXT,
    closed_by TEXT,
    closed_reason TEXT,
    UNIQUE (provider_id, business_date, break_key)
) STRICT;

CREATE INDEX breaks_by_status ON breaks (status, provider_id);

CREATE TABLE adjustments (
    id INTEGER PRIMARY KEY,
    break_id INTEGER NOT NULL REFERENCES breaks (id),
    currency TEXT NOT NULL,
    exponent INTEGER NOT NULL,
    amount_minor INTEGER NOT NULL,
    account TEXT NOT NULL,
    reason TEXT NOT NULL,
    -- pending | approved | rejected | withdrawn
    status TEXT NOT NULL,
    proposed_by TEXT NOT NULL,
    proposed_at_ns INTEGER NOT NULL,
    decided_by TEXT,
    decided_at_ns INTEGER,
    decision_note TEXT,
    -- the ledger transaction an approval posted
    tx_seq INTEGER REFERENCES transactions (seq)
) STRICT;

-- one pending proposal per break
CREATE UNIQUE INDEX adjustments_one_pending ON adjustments (break_id) WHERE status = 'pending';
-- the ledger transactions adjustments posted (left out of what reconciliation compares)
CREATE INDEX adjustments_by_transaction ON adjustments (tx_seq) WHERE tx_seq IS NOT NULL;

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at_ns INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    -- break | adjustment
    subject_kind TEXT NOT NULL,
    subject_id INTEGER NOT NULL,
    detail TEXT NOT NULL
) STRICT;

CREATE INDEX audit_log_by_subject ON audit_log (subject_kind, subject_id, id);
CREATE INDEX audit_log_by_time ON audit_log (at_ns, id);
