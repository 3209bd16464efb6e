//! Integration tests: real processes (the ztk binary, the real kubectl), real TLS, real SQLite
//! files. Every test gets its own temp dir and gateway on a free port, so tests run in parallel.

mod harness;

mod access;
mod agent;
mod audit;
mod cli;
mod clusters;
mod console;
mod end_to_end;
mod failures;
mod ha;
mod integrity;
mod outbox;
mod outbox_load;
mod plain;
mod raw;
mod reconcile;
mod security;
mod shell;
mod sinks;
mod sso;
mod streams;
mod tui;
