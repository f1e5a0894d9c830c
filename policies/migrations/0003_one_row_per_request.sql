-- One row per request: `requests` holds the request-log line and, when the
-- request was charged, its spend, where the ledger used to insert a row in
-- each of two tables. `logged` is 0 on a charge without a log line (the spend
-- rows from before this step, say); prompt_tokens is NULL on a request that
-- was not charged, which the `spend` view leaves out. The view keeps the spend
-- table's columns, its `model` being the one that answered.
--
-- spend_counters keeps its rows (each one request's, before this step); from
-- here on a row sums a counter's charges in one whole second of a batch.
ALTER TABLE requests ADD COLUMN logged INTEGER NOT NULL DEFAULT 1;
ALTER TABLE requests ADD COLUMN request_id TEXT;
ALTER TABLE requests ADD COLUMN provider TEXT;
ALTER TABLE requests ADD COLUMN prompt_tokens BIGINT;
ALTER TABLE requests ADD COLUMN completion_tokens BIGINT;
ALTER TABLE requests ADD COLUMN cached_tokens BIGINT;

INSERT INTO requests (logged, ts, request_id, key_id, team, user_id, answered_by, provider,
                      endpoint, prompt_tokens, completion_tokens, cached_tokens, usd, status)
SELECT 0, ts, request_id, key_id, team, user_id, model, provider, endpoint, prompt_tokens,
       completion_tokens, cached_tokens, usd, status
FROM spend ORDER BY id;

DROP TABLE spend;

CREATE VIEW spend AS
SELECT id, ts, request_id, key_id, team, user_id, answered_by AS model, provider, endpoint,
       prompt_tokens, completion_tokens, cached_tokens, COALESCE(usd, 0) AS usd, status
FROM requests WHERE prompt_tokens IS NOT NULL;
