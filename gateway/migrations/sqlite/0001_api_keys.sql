-- Partner API keys: only the SHA-256 of a key is kept (hex), never the key.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL UNIQUE,
    partner     TEXT NOT NULL,
    scopes      TEXT NOT NULL,          -- space-separated
    plan        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,       -- unix seconds
    expires_at  BIGINT,                -- unix seconds; NULL = never
    revoked_at  BIGINT,                -- unix seconds; NULL = live
    replaced_by TEXT                    -- the key a rotation issued
);
