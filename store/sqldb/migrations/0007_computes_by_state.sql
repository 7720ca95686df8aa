-- With a shared compute driver the leading daemon's idle pass reads the
-- active computes on every tick: an index on the state keeps that read
-- proportional to the active computes, not to all of them. Portable SQL.
CREATE INDEX computes_by_state ON computes (state, id);
