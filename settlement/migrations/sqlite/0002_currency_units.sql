-- The minor-unit exponent each currency was first stored with. Amounts are stored in minor
-- units, so a later configuration with another exponent would mix scales: the ledger
-- writer refuses it (the records are dead-lettered until the configuration is fixed).
CREATE TABLE currency_units (
    code TEXT PRIMARY KEY,
    exponent INTEGER NOT NULL
) STRICT;
