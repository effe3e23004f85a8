-- An event is known by its conversation and sequence number, in every store alike: an event id that
-- comes again in another conversation no longer drops that event from the archive (it kept the view's
-- fold and the archive apart, and Postgres apart from ClickHouse and the search index).
ALTER TABLE agent_events DROP CONSTRAINT IF EXISTS agent_events_event_id_key;
CREATE INDEX IF NOT EXISTS agent_events_event_id ON agent_events (event_id);
