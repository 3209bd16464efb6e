//! PostgreSQL, the backend of several gateways on one database: the audit store's schema in
//! PostgreSQL's types. The tables and columns are SQLite's (`store::MIGRATIONS` and the
//! migrations of `chain`, `stats` and `reconcile`), each column typed so that it reads back as
//! the storage class SQLite holds (`bigint` as integer, `text`, `bytea` as blob): the chain
//! hashes the same values on both backends. `user` is a reserved word here, so the shared SQL
//! quotes it. The client's outbox stays in SQLite only (a client never uses PostgreSQL).
//!
//! Numbered like SQLite's, applied by `db::postgres::migrate` under an advisory lock (several
//! gateways may start at once); component `audit` in `ztk_schema`.

pub const COMPONENT: &str = "audit";

pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE api_calls (
    id TEXT PRIMARY KEY,
    time_us BIGINT NOT NULL,
    "user" TEXT NOT NULL,
    cluster TEXT NOT NULL,
    namespace TEXT NOT NULL,
    resource TEXT NOT NULL,
    subresource TEXT NOT NULL,
    name TEXT NOT NULL,
    api_group TEXT NOT NULL,
    api_version TEXT NOT NULL,
    verb TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    status BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    bytes_in BIGINT NOT NULL,
    bytes_out BIGINT NOT NULL,
    user_agent TEXT NOT NULL,
    source_ip TEXT NOT NULL,
    kubectl_command TEXT NOT NULL,
    kubectl_session TEXT NOT NULL,
    command_id TEXT,
    request_id TEXT,
    access_method TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    seq BIGINT NOT NULL
);
-- Listings are newest first by (time_us, id): each filter's index ends with both, so a page is
-- a walk down one index, never a sort of every match.
CREATE INDEX api_calls_time ON api_calls(time_us, id);
CREATE INDEX api_calls_user_time ON api_calls("user", time_us, id);
CREATE INDEX api_calls_namespace_time ON api_calls(namespace, time_us, id);
CREATE INDEX api_calls_resource_time ON api_calls(resource, time_us, id);
CREATE INDEX api_calls_verb_time ON api_calls(verb, time_us, id);
CREATE INDEX api_calls_cluster_time ON api_calls(cluster, time_us, id);
CREATE INDEX api_calls_command ON api_calls(command_id, verb, status, namespace, resource, subresource);
CREATE UNIQUE INDEX api_calls_seq ON api_calls(seq);
-- Reconciliation asks whether the gateway has a record of a client's call by its request id.
CREATE INDEX api_calls_request ON api_calls(request_id);

CREATE TABLE commands (
    id TEXT PRIMARY KEY,
    started_us BIGINT NOT NULL,
    ended_us BIGINT,
    "user" TEXT NOT NULL,
    cluster TEXT NOT NULL,
    argv TEXT NOT NULL,
    command_line TEXT NOT NULL,
    exit_code BIGINT,
    api_calls BIGINT NOT NULL,
    access_method TEXT NOT NULL,
    cwd TEXT NOT NULL,
    host TEXT NOT NULL,
    shipped_us BIGINT,
    seq BIGINT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX commands_started ON commands(started_us, id);
CREATE INDEX commands_user_started ON commands("user", started_us, id);
CREATE UNIQUE INDEX commands_seq ON commands(seq);

-- One store-wide write sequence: a writing transaction locks this row (SELECT ... FOR UPDATE)
-- until it commits, so numbers are taken in commit order across every gateway.
CREATE TABLE sequence (id BIGINT PRIMARY KEY CHECK (id = 1), last BIGINT NOT NULL);
INSERT INTO sequence (id, last) VALUES (1, 0);

CREATE TABLE sink_cursors (
    name TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    delivered BIGINT NOT NULL DEFAULT 0,
    last_success_us BIGINT,
    last_error TEXT,
    last_error_us BIGINT,
    updated_us BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until_us BIGINT
);

CREATE TABLE chain (
    seq BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    record_id TEXT NOT NULL,
    content_hash BYTEA NOT NULL,
    prev_hash BYTEA NOT NULL,
    entry_hash BYTEA NOT NULL
);
CREATE TABLE chain_prunes (
    seq BIGINT PRIMARY KEY,
    upto BIGINT NOT NULL,
    anchor_seq BIGINT NOT NULL,
    anchor_hash BYTEA NOT NULL,
    survivors BIGINT NOT NULL,
    digest BYTEA NOT NULL
);
CREATE TABLE chain_checkpoints (
    seq BIGINT PRIMARY KEY,
    head BYTEA NOT NULL,
    time_us BIGINT NOT NULL,
    public_key BYTEA NOT NULL,
    signature BYTEA NOT NULL
);

CREATE TABLE client_calls (
    id TEXT PRIMARY KEY,
    time_us BIGINT NOT NULL DEFAULT 0,
    "user" TEXT NOT NULL DEFAULT '',
    cluster TEXT NOT NULL DEFAULT '',
    namespace TEXT NOT NULL DEFAULT '',
    resource TEXT NOT NULL DEFAULT '',
    subresource TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    api_group TEXT NOT NULL DEFAULT '',
    api_version TEXT NOT NULL DEFAULT '',
    verb TEXT NOT NULL DEFAULT '',
    method TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL DEFAULT '',
    query TEXT NOT NULL DEFAULT '',
    status BIGINT NOT NULL DEFAULT 0,
    duration_us BIGINT NOT NULL DEFAULT 0,
    bytes_in BIGINT NOT NULL DEFAULT 0,
    bytes_out BIGINT NOT NULL DEFAULT 0,
    user_agent TEXT NOT NULL DEFAULT '',
    source_ip TEXT NOT NULL DEFAULT '',
    kubectl_command TEXT NOT NULL DEFAULT '',
    kubectl_session TEXT NOT NULL DEFAULT '',
    command_id TEXT,
    request_id TEXT,
    access_method TEXT NOT NULL DEFAULT 'cli',
    decision TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    reconciled BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX client_calls_unreconciled ON client_calls(time_us) WHERE reconciled = 0;

CREATE TABLE call_rollups (
    time_us BIGINT NOT NULL,
    source BIGINT NOT NULL,
    "user" TEXT NOT NULL,
    cluster TEXT NOT NULL,
    namespace TEXT NOT NULL,
    resource TEXT NOT NULL,
    subresource TEXT NOT NULL,
    verb TEXT NOT NULL,
    access_method TEXT NOT NULL,
    status BIGINT NOT NULL,
    calls BIGINT NOT NULL,
    sum_us BIGINT NOT NULL,
    max_us BIGINT NOT NULL,
    max_id TEXT NOT NULL,
    hist BYTEA NOT NULL
);
CREATE INDEX call_rollups_time ON call_rollups(time_us);
CREATE TABLE rollup_state (id BIGINT PRIMARY KEY CHECK (id = 1), through_seq BIGINT NOT NULL);
INSERT INTO rollup_state (id, through_seq) VALUES (1, 0);
"#,
    super::stats::BY_MIGRATION_POSTGRES,
];
