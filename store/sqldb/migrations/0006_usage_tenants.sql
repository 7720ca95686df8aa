-- Usage rows name their tenant, so that a tenant's bill is one indexed
-- query and still covers its deleted projects; intervals record the
-- compute's memory, for memory-seconds. Rows written before this version
-- belong to the default tenant (every project did) and have no memory.
-- Portable SQL.
ALTER TABLE usage_intervals ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'ten_default';
ALTER TABLE usage_intervals ADD COLUMN memory_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_samples ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'ten_default';

CREATE INDEX usage_intervals_by_tenant ON usage_intervals (tenant_id, started_at);
CREATE INDEX usage_samples_by_tenant ON usage_samples (tenant_id, sampled_at);
