-- The spend ledger, the request log and the alerts already sent.
-- spend_counters has one row per counter a settled request was charged to
-- (the ids the gateway's budgets count under), so a budget's spend in a
-- period can be rebuilt after a restart with one indexed SUM, whatever its
-- subject (team, meta["app"], a `when` condition). AUTO_ID is this file's one
-- word of dialect: an integer primary key the database assigns.
CREATE TABLE spend (
    id                AUTO_ID,
    ts                DOUBLE PRECISION NOT NULL,
    request_id        TEXT,
    key_id            TEXT,
    team              TEXT,
    user_id           TEXT,
    model             TEXT,
    provider          TEXT,
    endpoint          TEXT,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cached_tokens     BIGINT NOT NULL DEFAULT 0,
    usd               DOUBLE PRECISION NOT NULL DEFAULT 0,
    status            INTEGER
);

CREATE INDEX spend_by_ts ON spend (ts);

CREATE TABLE spend_counters (
    counter TEXT NOT NULL,
    ts      DOUBLE PRECISION NOT NULL,
    usd     DOUBLE PRECISION NOT NULL
);

CREATE INDEX spend_counters_by_counter ON spend_counters (counter, ts);

-- The traffic format of interface.md, never a prompt; stream and tools are 0/1
-- (the same in both databases), meta and headers JSON text.
CREATE TABLE requests (
    id          AUTO_ID,
    ts          DOUBLE PRECISION NOT NULL,
    team        TEXT,
    user_id     TEXT,
    key_id      TEXT,
    endpoint    TEXT,
    model       TEXT,
    stream      INTEGER,
    tools       INTEGER,
    tokens_in   BIGINT,
    tokens_out  BIGINT,
    max_tokens  BIGINT,
    temperature DOUBLE PRECISION,
    meta        TEXT,
    headers     TEXT,
    answered_by TEXT,
    usd         DOUBLE PRECISION,
    cache       TEXT,
    status      INTEGER
);

CREATE INDEX requests_by_ts ON requests (ts, id);

CREATE TABLE alerts (
    subject    TEXT NOT NULL,
    period_key TEXT NOT NULL,
    threshold  DOUBLE PRECISION NOT NULL,
    claimed_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (subject, period_key, threshold)
);
