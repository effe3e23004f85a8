-- Each conversation's digest of the events the view applied (projections/base/digest.py): what
-- `agentlog verify` compares with the log. Views made before it hold '' until `agentlog rebuild dashboard`.
ALTER TABLE conversation_views ADD COLUMN IF NOT EXISTS digest text NOT NULL DEFAULT '';
