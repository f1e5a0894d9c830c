-- Stored responses of OpenAI's Responses API (`store`, `previous_response_id`).
-- Unlike the other tables, these rows hold what was said: `history` is one
-- response's own input items then output items, `response` the Response as it
-- was returned, both JSON text. A chain's history is its rows' histories,
-- oldest first, found by following previous_id. A row belongs to the caller's
-- key and team ('' for none, under `auth { mode = none }`), and is served to no
-- one else; past expires_at it is served to no one, and deleted in time.
CREATE TABLE responses (
    id          TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL,
    team        TEXT NOT NULL,
    deployment  TEXT NOT NULL,
    provider    TEXT NOT NULL,
    model       TEXT NOT NULL,
    previous_id TEXT,
    history     TEXT NOT NULL,
    response    TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL
);

CREATE INDEX responses_by_expiry ON responses (expires_at);
