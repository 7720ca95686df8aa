-- Tenants own projects and API keys. Every existing project moves to the
-- "default" tenant, and a project name becomes unique within its tenant
-- rather than across all of them.
--
-- This file is the PostgreSQL form (ALTER TABLE ... DROP CONSTRAINT);
-- SQLite, which cannot drop a column's UNIQUE, rebuilds the projects table
-- in its own copy. Times are BIGINT unix microseconds, as in 0001.

CREATE TABLE tenants (
    id         TEXT   NOT NULL PRIMARY KEY,
    name       TEXT   NOT NULL UNIQUE,
    quotas     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

INSERT INTO tenants (id, name, quotas, created_at, updated_at)
VALUES ('ten_default', 'default', '{}',
        CAST(EXTRACT(EPOCH FROM now()) * 1000000 AS BIGINT),
        CAST(EXTRACT(EPOCH FROM now()) * 1000000 AS BIGINT));

-- The default only moves the existing rows; new rows always name a tenant.
ALTER TABLE projects ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'ten_default' REFERENCES tenants (id);
ALTER TABLE projects ALTER COLUMN tenant_id DROP DEFAULT;
ALTER TABLE projects DROP CONSTRAINT projects_name_key;

-- A name is unique in its tenant; the index also serves lookups by name.
CREATE UNIQUE INDEX projects_by_tenant_name ON projects (tenant_id, name);
-- A tenant's projects, in id order (ListProjects of one tenant).
CREATE INDEX projects_by_tenant ON projects (tenant_id, id);

-- The hash (hex SHA-256) of each key, never the key. project_id is set for
-- project-scoped keys only; deleting the project revokes them.
CREATE TABLE api_keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    tenant_id    TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    scope        TEXT    NOT NULL,
    project_id   TEXT    REFERENCES projects (id) ON DELETE CASCADE,
    read_only    BOOLEAN NOT NULL,
    hash         TEXT    NOT NULL UNIQUE,
    expires_at   BIGINT,
    created_at   BIGINT  NOT NULL,
    last_used_at BIGINT
);

CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id);
CREATE INDEX api_keys_by_project ON api_keys (project_id);
