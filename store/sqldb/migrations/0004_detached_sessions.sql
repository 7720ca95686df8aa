-- How many client sessions a suspend detached from the compute (they
-- survive it, and attach again at their next command). Portable SQL.
ALTER TABLE operations ADD COLUMN detached_sessions INTEGER NOT NULL DEFAULT 0;
