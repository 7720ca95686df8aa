-- foreign_keys: off
--
-- SQLite's copy of store/sqldb/migrations/0005_tenants.sql. SQLite cannot
-- drop the UNIQUE on projects.name, so the projects table is rebuilt (the
-- procedure of https://www.sqlite.org/lang_altertable.html): the first line
-- makes the migration runner turn foreign keys off around it, or dropping
-- the old table would cascade to every compute, role and operation. The
-- runner checks every foreign key before it commits.

CREATE TABLE tenants (
    id         TEXT   NOT NULL PRIMARY KEY,
    name       TEXT   NOT NULL UNIQUE,
    quotas     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

INSERT INTO tenants (id, name, quotas, created_at, updated_at)
VALUES ('ten_default', 'default', '{}',
        CAST(unixepoch('subsec') * 1000000 AS INTEGER),
        CAST(unixepoch('subsec') * 1000000 AS INTEGER));

CREATE TABLE projects_new (
    id         TEXT   NOT NULL PRIMARY KEY,
    name       TEXT   NOT NULL,
    config     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    tenant_id  TEXT   NOT NULL REFERENCES tenants (id)
);

INSERT INTO projects_new (id, name, config, created_at, updated_at, tenant_id)
SELECT id, name, config, created_at, updated_at, 'ten_default' FROM projects;

DROP TABLE projects;
ALTER TABLE projects_new RENAME TO projects;

CREATE UNIQUE INDEX projects_by_tenant_name ON projects (tenant_id, name);
CREATE INDEX projects_by_tenant ON projects (tenant_id, id);

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
