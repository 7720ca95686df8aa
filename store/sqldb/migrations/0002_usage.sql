-- Usage metering: the active intervals of each compute (compute-seconds) and
-- periodic samples (storage gauge, proxied byte deltas). Portable SQL, like
-- 0001; times are BIGINT unix microseconds.
--
-- No foreign keys, on purpose: usage must outlive the project and the compute
-- it describes, because billing still needs it after they are deleted. So
-- nothing cascades here, and rows may name ids that no longer exist.

CREATE TABLE usage_intervals (
    id           TEXT   NOT NULL PRIMARY KEY,
    project_id   TEXT   NOT NULL,
    compute_id   TEXT   NOT NULL,
    started_at   BIGINT NOT NULL,
    ended_at     BIGINT,
    last_seen_at BIGINT NOT NULL
);

-- ListIntervals reads a project's intervals by start.
CREATE INDEX usage_intervals_by_project ON usage_intervals (project_id, started_at);

-- A compute has at most one open interval (ended_at NULL). The partial unique
-- index makes the database refuse a second one, whoever inserts it; it also
-- serves every by-compute lookup (EndInterval, TouchIntervals and
-- OpenIntervals all look for open intervals) while staying as small as the
-- number of running computes.
CREATE UNIQUE INDEX usage_intervals_open ON usage_intervals (compute_id) WHERE ended_at IS NULL;

-- Samples have no id: nothing refers to one, and two samples of one compute in
-- the same microsecond must not collide.
CREATE TABLE usage_samples (
    project_id    TEXT   NOT NULL,
    compute_id    TEXT   NOT NULL,
    sampled_at    BIGINT NOT NULL,
    storage_bytes BIGINT NOT NULL,
    bytes_in      BIGINT NOT NULL,
    bytes_out     BIGINT NOT NULL
);

-- ListUsageSamples reads a project's samples by time; a compute's own history
-- (its last storage gauge) goes by compute.
CREATE INDEX usage_samples_by_project ON usage_samples (project_id, sampled_at);
CREATE INDEX usage_samples_by_compute ON usage_samples (compute_id, sampled_at);
