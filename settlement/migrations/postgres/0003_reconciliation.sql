-- Reconciliation on PostgreSQL. Same tables and behaviour as the SQLite migration; BIGINT
-- everywhere so overflow is an error, BYTEA for hashes.

CREATE TABLE statements (
    id BIGSERIAL PRIMARY KEY,
    provider_id BIGINT NOT NULL REFERENCES providers (id),
    format TEXT NOT NULL,
    source TEXT NOT NULL,
    sha256 BYTEA NOT NULL,
    -- the provider's own statement id (camt.053 Stmt/Id), when the format has one
    statement_id TEXT,
    from_date TEXT NOT NULL,
    to_date TEXT NOT NULL,
    line_count BIGINT NOT NULL,
    totals_count BIGINT NOT NULL,
    balance_count BIGINT NOT NULL,
    loaded_at_ns BIGINT NOT NULL,
    UNIQUE (provider_id, sha256),
    UNIQUE (provider_id, statement_id)
);

CREATE TABLE statement_lines (
    statement_id BIGINT NOT NULL REFERENCES statements (id),
    line_index BIGINT NOT NULL,
    provider_id BIGINT NOT NULL REFERENCES providers (id),
    record BIGINT NOT NULL,
    detail BIGINT NOT NULL,
    provider_tx_id TEXT,
    reference TEXT,
    kind TEXT,
    currency TEXT NOT NULL,
    exponent BIGINT NOT NULL,
    amount_minor BIGINT NOT NULL,
    business_date TEXT NOT NULL,
    occurred_at_ns BIGINT,
    PRIMARY KEY (statement_id, line_index)
);

CREATE INDEX statement_lines_by_day ON statement_lines (provider_id, business_date);

CREATE TABLE statement_totals (
    statement_id BIGINT NOT NULL REFERENCES statements (id),
    line_index BIGINT NOT NULL,
    provider_id BIGINT NOT NULL REFERENCES providers (id),
    record BIGINT NOT NULL,
    business_date TEXT NOT NULL,
    currency TEXT NOT NULL,
    kind TEXT NOT NULL,
    item_count BIGINT NOT NULL,
    exponent BIGINT NOT NULL,
    amount_minor BIGINT NOT NULL,
    PRIMARY KEY (statement_id, line_index)
);

CREATE INDEX statement_totals_by_day ON statement_totals (provider_id, business_date);

CREATE TABLE statement_balances (
    statement_id BIGINT NOT NULL REFERENCES statements (id),
    line_index BIGINT NOT NULL,
    currency TEXT NOT NULL,
    opening_exponent BIGINT NOT NULL,
    opening_minor BIGINT NOT NULL,
    closing_exponent BIGINT NOT NULL,
    closing_minor BIGINT NOT NULL,
    PRIMARY KEY (statement_id, line_index)
);

CREATE TABLE reconciliation_runs (
    id BIGSERIAL PRIMARY KEY,
    provider_id BIGINT NOT NULL REFERENCES providers (id),
    business_date TEXT NOT NULL,
    from_ns BIGINT NOT NULL,
    to_ns BIGINT NOT NULL,
    as_of_ns BIGINT NOT NULL,
    recorded_at_ns BIGINT NOT NULL,
    matched_by_id BIGINT NOT NULL,
    matched_by_reference BIGINT NOT NULL,
    matched_one_to_many BIGINT NOT NULL,
    matched_many_to_one BIGINT NOT NULL,
    matched_totals_rows BIGINT NOT NULL,
    -- what the run did to the stored breaks
    breaks_found BIGINT NOT NULL,
    breaks_opened BIGINT NOT NULL,
    breaks_closed BIGINT NOT NULL,
    breaks_reopened BIGINT NOT NULL,
    breaks_updated BIGINT NOT NULL
);

CREATE INDEX reconciliation_runs_by_provider ON reconciliation_runs (provider_id, id);

CREATE TABLE reconciliation_run_currencies (
    run_id BIGINT NOT NULL REFERENCES reconciliation_runs (id),
    currency TEXT NOT NULL,
    exponent BIGINT NOT NULL,
    ledger_count BIGINT NOT NULL,
    ledger_amount_minor BIGINT NOT NULL,
    statement_count BIGINT NOT NULL,
    statement_amount_minor BIGINT NOT NULL,
    matched_count BIGINT NOT NULL,
    matched_amount_minor BIGINT NOT NULL,
    net_difference_minor BIGINT NOT NULL,
    PRIMARY KEY (run_id, currency)
);

CREATE TABLE breaks (
    id BIGSERIAL PRIMARY KEY,
    provider_id BIGINT NOT NULL REFERENCES providers (id),
    business_date TEXT NOT NULL,
    break_key TEXT NOT NULL,
    class TEXT NOT NULL,
    currency TEXT,
    kind TEXT,
    provider_tx_id TEXT,
    statement_record BIGINT,
    -- one exponent for the break's three amounts
    exponent BIGINT NOT NULL,
    ledger_amount_minor BIGINT,
    statement_amount_minor BIGINT,
    difference_minor BIGINT NOT NULL,
    item_count BIGINT NOT NULL,
    reason TEXT NOT NULL,
    -- open | pending_adjustment | closed
    status TEXT NOT NULL,
    opened_at_ns BIGINT NOT NULL,
    first_run_id BIGINT NOT NULL REFERENCES reconciliation_runs (id),
    last_run_id BIGINT NOT NULL REFERENCES reconciliation_runs (id),
    last_seen_at_ns BIGINT NOT NULL,
    closed_at_ns BIGINT,
    -- rule (closed by a written rule, closed_by names it) | adjustment (closed_by is the approver)
    closed_kind TEXT,
    closed_by TEXT,
    closed_reason TEXT,
    UNIQUE (provider_id, business_date, break_key)
);

CREATE INDEX breaks_by_status ON breaks (status, provider_id);

CREATE TABLE adjustments (
    id BIGSERIAL PRIMARY KEY,
    break_id BIGINT NOT NULL REFERENCES breaks (id),
    currency TEXT NOT NULL,
    exponent BIGINT NOT NULL,
    amount_minor BIGINT NOT NULL,
    account TEXT NOT NULL,
    reason TEXT NOT NULL,
    -- pending | approved | rejected | withdrawn
    status TEXT NOT NULL,
    proposed_by TEXT NOT NULL,
    proposed_at_ns BIGINT NOT NULL,
    decided_by TEXT,
    decided_at_ns BIGINT,
    decision_note TEXT,
    -- the ledger transaction an approval posted
    tx_seq BIGINT REFERENCES transactions (seq)
);

-- one pending proposal per break
CREATE UNIQUE INDEX adjustments_one_pending ON adjustments (break_id) WHERE status = 'pending';
-- the ledger transactions adjustments posted (left out of what reconciliation compares)
CREATE INDEX adjustments_by_transaction ON adjustments (tx_seq) WHERE tx_seq IS NOT NULL;

CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at_ns BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    -- break | adjustment
    subject_kind TEXT NOT NULL,
    subject_id BIGINT NOT NULL,
    detail TEXT NOT NULL
);

CREATE INDEX audit_log_by_subject ON audit_log (subject_kind, subject_id, id);
CREATE INDEX audit_log_by_time ON audit_log (at_ns, id);
