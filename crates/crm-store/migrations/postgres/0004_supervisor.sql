-- What supervisors and admins need: a user's preferred language for the web UI, merged duplicate
-- customers (the duplicate points at the record it was merged into and is no longer found), and
-- indexes for the agent-state history by time and the interaction search by number.
ALTER TABLE users ADD COLUMN language TEXT;
ALTER TABLE customers ADD COLUMN merged_into TEXT;
CREATE INDEX agent_states_by_time ON agent_states (started_at);
CREATE INDEX interactions_by_caller ON interactions (caller_number, arrived_at);
