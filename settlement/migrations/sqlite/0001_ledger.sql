-- The ledger on SQLite (the embedded default). STRICT tables: a value of the wrong type
-- (for instance an integer sum that overflowed into a float) is an error, never stored.

CREATE TABLE providers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
) STRICT;

CREATE TABLE ledger_accounts (
    -- ids are handed out by the ledger writer under its write lock
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    UNIQUE (name, currency)
) STRICT;

CREATE TABLE transactions (
    -- ingestion order, handed out by the ledger writer under its write lock
    seq INTEGER PRIMARY KEY,
    provider_id INTEGER NOT NULL REFERENCES providers (id),
    provider_tx_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    reverses_kind TEXT,
    account TEXT NOT NULL,
    game_id TEXT,
    round_id TEXT,
    session_id TEXT,
    currency TEXT NOT NULL,
    exponent INTEGER NOT NULL,
    amount_minor INTEGER NOT NULL,
    occurred_at_ns INTEGER NOT NULL,
    received_at_ns INTEGER NOT NULL,
    original_tx_id TEXT,
    raw_sha256 BLOB NOT NULL,
    content_sha256 BLOB NOT NULL,
    UNIQUE (provider_id, provider_tx_id)
) STRICT;

CREATE INDEX transactions_by_period ON transactions (provider_id, occurred_at_ns);
CREATE INDEX transactions_by_original ON transactions (provider_id, original_tx_id)
    WHERE original_tx_id IS NOT NULL;

CREATE TABLE postings (
    tx_seq INTEGER NOT NULL REFERENCES transactions (seq),
    leg INTEGER NOT NULL,
    ledger_account_id INTEGER NOT NULL REFERENCES ledger_accounts (id),
    amount_minor INTEGER NOT NULL,
    PRIMARY KEY (tx_seq, leg)
) STRICT, WITHOUT ROWID;

CREATE TABLE balances (
    ledger_account_id INTEGER PRIMARY KEY REFERENCES ledger_accounts (id),
    balance_minor INTEGER NOT NULL
) STRICT;

CREATE TABLE conflicts (
    id INTEGER PRIMARY KEY,
    provider_id INTEGER NOT NULL REFERENCES providers (id),
    provider_tx_id TEXT NOT NULL,
    original_seq INTEGER NOT NULL REFERENCES transactions (seq),
    content_sha256 BLOB NOT NULL,
    detail TEXT NOT NULL,
    source TEXT NOT NULL,
    record INTEGER NOT NULL,
    raw BLOB NOT NULL,
    received_at_ns INTEGER NOT NULL,
    UNIQUE (provider_id, provider_tx_id, content_sha256)
) STRICT;

CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY,
    provider TEXT NOT NULL,
    source TEXT NOT NULL,
    record INTEGER NOT NULL,
    unit TEXT NOT NULL,
    code TEXT NOT NULL,
    field TEXT,
    message TEXT NOT NULL,
    context BLOB NOT NULL,
    raw BLOB NOT NULL,
    raw_sha256 BLOB NOT NULL,
    created_at_ns INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    last_attempt_at_ns INTEGER NOT NULL,
    status TEXT NOT NULL,
    resolved_at_ns INTEGER,
    UNIQUE (provider, source, record, raw_sha256)
) STRICT;

CREATE INDEX dead_letters_by_status ON dead_letters (status, provider);

CREATE TABLE ingested_files (
    provider_id INTEGER NOT NULL REFERENCES providers (id),
    sha256 BLOB NOT NULL,
    name TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    units INTEGER NOT NULL,
    accepted INTEGER NOT NULL,
    duplicates INTEGER NOT NULL,
    conflicts INTEGER NOT NULL,
    rejected INTEGER NOT NULL,
    completed_at_ns INTEGER NOT NULL,
    PRIMARY KEY (provider_id, sha256)
) STRICT;
