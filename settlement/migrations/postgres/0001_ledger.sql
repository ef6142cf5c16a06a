-- The ledger on PostgreSQL. Same tables and behaviour as the SQLite migration; BIGINT
-- everywhere so overflow is an error, BYTEA for hashes and raw bytes.

CREATE TABLE providers (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE ledger_accounts (
    -- ids are handed out by the ledger writer under its write lock
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    UNIQUE (name, currency)
);

CREATE TABLE transactions (
    -- ingestion order, handed out by the ledger writer under its write lock
    seq BIGINT PRIMARY KEY,
    provider_id BIGINT NOT NULL REFERENCES providers (id),
    provider_tx_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    reverses_kind TEXT,
    account TEXT NOT NULL,
    game_id TEXT,
    round_id TEXT,
    session_id TEXT,
    currency TEXT NOT NULL,
    exponent BIGINT NOT NULL,
    amount_minor BIGINT NOT NULL,
    occurred_at_ns BIGINT NOT NULL,
    received_at_ns BIGINT NOT NULL,
    original_tx_id TEXT,
    raw_sha256 BYTEA NOT NULL,
    content_sha256 BYTEA NOT NULL,
    UNIQUE (provider_id, provider_tx_id)
);

CREATE INDEX transactions_by_period ON transactions (provider_id, occurred_at_ns);
CREATE INDEX transactions_by_original ON transactions (provider_id, original_tx_id)
    WHERE original_tx_id IS NOT NULL;

CREATE TABLE postings (
    tx_seq BIGINT NOT NULL REFERENCES transactions (seq),
    leg BIGINT NOT NULL,
    ledger_account_id BIGINT NOT NULL REFERENCES ledger_accounts (id),
    amount_minor BIGINT NOT NULL,
    PRIMARY KEY (tx_seq, leg)
);

CREATE TABLE balances (
    ledger_account_id BIGINT PRIMARY KEY REFERENCES ledger_accounts (id),
    balance_minor BIGINT NOT NULL
);

CREATE TABLE conflicts (
    id BIGSERIAL PRIMARY KEY,
    provider_id BIGINT NOT NULL REFERENCES providers (id),
    provider_tx_id TEXT NOT NULL,
    original_seq BIGINT NOT NULL REFERENCES transactions (seq),
    content_sha256 BYTEA NOT NULL,
    detail TEXT NOT NULL,
    source TEXT NOT NULL,
    record BIGINT NOT NULL,
    raw BYTEA NOT NULL,
    received_at_ns BIGINT NOT NULL,
    UNIQUE (provider_id, provider_tx_id, content_sha256)
);

CREATE TABLE dead_letters (
    id BIGSERIAL PRIMARY KEY,
    provider TEXT NOT NULL,
    source TEXT NOT NULL,
    record BIGINT NOT NULL,
    unit TEXT NOT NULL,
    code TEXT NOT NULL,
    field TEXT,
    message TEXT NOT NULL,
    context BYTEA NOT NULL,
    raw BYTEA NOT NULL,
    raw_sha256 BYTEA NOT NULL,
    created_at_ns BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    last_attempt_at_ns BIGINT NOT NULL,
    status TEXT NOT NULL,
    resolved_at_ns BIGINT,
    UNIQUE (provider, source, record, raw_sha256)
);

CREATE INDEX dead_letters_by_status ON dead_letters (status, provider);

CREATE TABLE ingested_files (
    provider_id BIGINT NOT NULL REFERENCES providers (id),
    sha256 BYTEA NOT NULL,
    name TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    units BIGINT NOT NULL,
    accepted BIGINT NOT NULL,
    duplicates BIGINT NOT NULL,
    conflicts BIGINT NOT NULL,
    rejected BIGINT NOT NULL,
    completed_at_ns BIGINT NOT NULL,
    PRIMARY KEY (provider_id, sha256)
);
