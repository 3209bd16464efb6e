//! ztk: zero-trust kubectl access with a complete audit trail.
//!
//! See ARCHITECTURE.md for the map of modules and how a request flows through both hops.

pub mod body;
pub mod fsutil;
pub mod sandbox;
pub mod serve;
pub mod tls;
pub mod audit;
pub mod request_info;
pub mod relay;
pub mod kubeconfig;
pub mod gateway;
pub mod protocol;
pub mod client;
pub mod cli;
pub mod commands;
