//! The audit trail: records, the SQLite store, the shared filter, redaction and rendering.

pub mod chain;
#[cfg(test)]
mod conformance;
pub mod filter;
pub mod format;
pub mod ingest;
pub mod model;
pub mod outbox;
pub mod postgres;
pub mod reconcile;
pub mod redact;
pub mod seed;
pub mod sqlite;
pub mod stats;
pub mod store;

pub use filter::Filter;
pub use model::{AccessMethod, ApiCall, CallRow, Command, CommandRow, Cursor, Page};
pub use store::{AuditSink, AuditStore, AuditWriter, Record, SeqBatch, Sequenced};
