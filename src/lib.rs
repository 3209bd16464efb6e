//! ztk: zero-trust kubectl access with a complete audit trail.
//!
//! See ARCHITECTURE.md for the map of modules and how a request flows through both hops.

pub mod agent;
pub mod audit;
pub mod body;
pub mod cli;
pub mod client;
pub mod cluster_auth;
pub mod commands;
pub mod console;
pub mod db;
pub mod fsutil;
pub mod gateway;
pub mod kubeconfig;
pub mod oidc;
pub mod protocol;
pub mod relay;
pub mod request_info;
pub mod sandbox;
pub mod serve;
pub mod shell;
pub mod sinks;
pub mod tls;
pub mod tui;
pub mod tunnel;
