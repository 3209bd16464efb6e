//! One file per subcommand, each with its arguments and its `run`.

pub mod access;
pub mod agent;
pub mod audit;
pub mod completions;
pub mod credential;
pub mod demo;
pub mod gateway;
pub mod kubeconfig;
pub mod kubectl;
pub mod login;
pub mod logout;
pub mod man;
pub mod proxy;
pub mod sandbox;
pub mod status;
