//! The user side: saved login, token storage, the gateway API client, the loopback proxy (per
//! run and persistent), the credentials the exec plugin issues, and the shipper of audit records.

pub mod api;
pub mod config;
pub mod credential;
pub mod daemon;
pub mod proxy;
pub mod shipper;
pub mod token;
