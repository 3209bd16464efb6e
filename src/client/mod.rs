//! The user side: saved login, token storage, the gateway API client, the loopback proxy and
//! the shipper of audit records.

pub mod api;
pub mod config;
pub mod proxy;
pub mod shipper;
pub mod token;
