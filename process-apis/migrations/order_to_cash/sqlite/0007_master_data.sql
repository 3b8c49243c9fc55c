-- Customer master data (process_apis::master_data): a golden record per
-- customer, the cross-reference of its ids in every system, the owners'
-- field values, what waits for an operator, and where each change feed
-- has been read to.
CREATE TABLE md_customers (
    id         TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    erased_at  BIGINT
);

-- One row per (system, id): a system's customer is linked to at most one
-- golden record.
CREATE TABLE md_links (
    system      TEXT NOT NULL,
    system_id   TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    linked_at   BIGINT NOT NULL,
    PRIMARY KEY (system, system_id)
);
CREATE INDEX md_links_customer ON md_links (customer_id);

-- The owning system's value of each field (JSON) and when it was seen to
-- change.
CREATE TABLE md_fields (
    customer_id TEXT NOT NULL,
    field       TEXT NOT NULL,
    value       TEXT NOT NULL,
    changed_at  BIGINT NOT NULL,
    PRIMARY KEY (customer_id, field)
);
CREATE INDEX md_fields_value ON md_fields (field, value);

CREATE TABLE md_quarantine (
    id             TEXT PRIMARY KEY,
    kind           TEXT NOT NULL,
    subject_system TEXT NOT NULL,
    subject_id     TEXT NOT NULL,
    candidates     TEXT NOT NULL,
    field          TEXT NOT NULL,
    value          TEXT NOT NULL,
    owner_value    TEXT NOT NULL,
    reason         TEXT NOT NULL,
    status         TEXT NOT NULL,
    golden_id      TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    resolved_at    BIGINT,
    resolved_by    TEXT
);
CREATE INDEX md_quarantine_subject ON md_quarantine (subject_system, subject_id, status);
CREATE INDEX md_quarantine_created ON md_quarantine (created_at);

-- The last comparison of owned fields between systems, per field.
CREATE TABLE md_accuracy (
    field       TEXT PRIMARY KEY,
    mismatches  BIGINT NOT NULL,
    compared_at BIGINT NOT NULL,
    customers   BIGINT NOT NULL
);
