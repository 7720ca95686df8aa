-- Operations still running: what a daemon killed mid-operation leaves behind,
-- and what reconciliation at start-up finishes as failed. Portable SQL, like
-- 0001; it adds no table, so PostgreSQL needs no copy with collated ids.
--
-- Partial: it holds only the running operations (a handful at any time), so
-- it costs nothing to keep while the operations table grows without bound,
-- and it serves both RunningOperations (the whole index) and
-- FailRunningOperations (by compute).
CREATE INDEX operations_running ON operations (compute_id) WHERE status = 'running';
