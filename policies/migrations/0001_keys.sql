-- Virtual keys. A key's secrets are kept only as sha256 hashes: a key has one
-- current secret (valid_until NULL) and, after a rotation, the previous ones
-- until their grace ends. `versions` holds the counter every key change bumps
-- in its own transaction, so a replica's refresh is one SELECT when nothing
-- changed. "user" is a reserved word in PostgreSQL, hence user_id.
CREATE TABLE keys (
    id          TEXT PRIMARY KEY,
    team        TEXT NOT NULL,
    user_id     TEXT,
    name        TEXT,
    created_at  DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION,
    revoked_at  DOUBLE PRECISION,
    models      TEXT
);

CREATE TABLE key_secrets (
    hash        TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL REFERENCES keys (id),
    created_at  DOUBLE PRECISION NOT NULL,
    valid_until DOUBLE PRECISION
);

CREATE INDEX key_secrets_by_key ON key_secrets (key_id);

CREATE TABLE versions (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

INSERT INTO versions (name, value) VALUES ('keys', 0);
