-- PostgreSQL's copy of store/sqldb/migrations/0005_tenants.sql, which it
-- replaces. As in 0001_init.sql, it differs only by COLLATE "C" on the key
-- columns, so that tenants, keys and a tenant's projects list in byte order.
-- TestSchemaMatchesShared fails if the two files drift apart in anything else.

CREATE TABLE tenants (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL UNIQUE,
    quotas     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

INSERT INTO tenants (id, name, quotas, created_at, updated_at)
VALUES ('ten_default', 'default', '{}',
        CAST(EXTRACT(EPOCH FROM now()) * 1000000 AS BIGINT),
        CAST(EXTRACT(EPOCH FROM now()) * 1000000 AS BIGINT));

-- The default only moves the existing rows; new rows always name a tenant.
ALTER TABLE projects ADD COLUMN tenant_id TEXT COLLATE "C" NOT NULL DEFAULT 'ten_default' REFERENCES tenants (id);
ALTER TABLE projects ALTER COLUMN tenant_id DROP DEFAULT;
ALTER TABLE projects DROP CONSTRAINT projects_name_key;

-- A name is unique in its tenant; the index also serves lookups by name.
CREATE UNIQUE INDEX projects_by_tenant_name ON projects (tenant_id, name);
-- A tenant's projects, in id order (ListProjects of one tenant).
CREATE INDEX projects_by_tenant ON projects (tenant_id, id);

-- The hash (hex SHA-256) of each key, never the key. project_id is set for
-- project-scoped keys only; deleting the project revokes them.
CREATE TABLE api_keys (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    tenant_id    TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    scope        TEXT    NOT NULL,
    project_id   TEXT COLLATE "C" REFERENCES projects (id) ON DELETE CASCADE,
    read_only    BOOLEAN NOT NULL,
    hash         TEXT    NOT NULL UNIQUE,
    expires_at   BIGINT,
    created_at   BIGINT  NOT NULL,
    last_used_at BIGINT
);

CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id);
CREATE INDEX api_keys_by_project ON api_keys (project_id);
