-- Forks (schema v5): a conversation whose first events are copies of another's, up to a step. The view and
-- the archive name where it came from; a conversation's forks are found by their source.
ALTER TABLE conversation_views ADD COLUMN IF NOT EXISTS forked_from_conversation text;
ALTER TABLE conversation_views ADD COLUMN IF NOT EXISTS forked_from_sequence bigint;
CREATE INDEX IF NOT EXISTS conversation_views_forked_from ON conversation_views (forked_from_conversation)
    WHERE forked_from_conversation IS NOT NULL;
ALTER TABLE agent_events ADD COLUMN IF NOT EXISTS forked_from_conversation text;
ALTER TABLE agent_events ADD COLUMN IF NOT EXISTS forked_from_sequence bigint;
