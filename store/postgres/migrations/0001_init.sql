-- PostgreSQL's copy of store/sqldb/migrations/0001_init.sql, which it
-- replaces. It differs only by COLLATE "C" on the key columns: the store
-- pages and orders by id and name with '>' and ORDER BY, and callers expect
-- byte order (Go's string order, as on SQLite). A database created with a
-- linguistic collation (en_US.UTF-8, ICU) would otherwise sort "B" after
-- "a0" and skip or repeat rows across pages. TestSchemaMatchesShared fails
-- if the two files drift apart in anything else.
--
-- Times are BIGINT unix microseconds (UTC); NULL means "not set" (the zero
-- time.Time). JSON documents are TEXT so that neither backend's JSON type
-- leaks into the code.

CREATE TABLE projects (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL UNIQUE,
    config     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- project_id is UNIQUE: a project has one compute (the API answers 409 to a
-- second). The unique index also serves the cascade from projects.
CREATE TABLE computes (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id   TEXT COLLATE "C" NOT NULL UNIQUE REFERENCES projects (id) ON DELETE CASCADE,
    state        TEXT   NOT NULL,
    driver       TEXT   NOT NULL,
    node         TEXT   NOT NULL,
    spec         TEXT   NOT NULL,
    address      TEXT   NOT NULL,
    error        TEXT   NOT NULL,
    last_active  BIGINT,
    started_at   BIGINT,
    suspended_at BIGINT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    version      BIGINT NOT NULL
);

CREATE TABLE roles (
    project_id    TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name          TEXT COLLATE "C" NOT NULL,
    password_hash TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (project_id, name)
);

-- compute_id has no foreign key on purpose: the audit trail of a destroyed
-- compute stays visible until its project goes.
CREATE TABLE operations (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id  TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    compute_id  TEXT COLLATE "C" NOT NULL,
    action      TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    reason      TEXT   NOT NULL,
    error       TEXT   NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT
);

-- ListOperations reads a project's operations newest first.
CREATE INDEX operations_by_project ON operations (project_id, started_at);
