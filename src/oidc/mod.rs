//! Single sign-on with OpenID Connect: ID-token verification (`jwt`), the provider as both
//! sides talk to it (`provider`: discovery, keys, form posts, PKCE), `[oidc]` (`config`), the
//! gateway's side (`sso`: identities from claims, the console's code flow) and the CLI's
//! (`client`: the code flow on a loopback redirect, the device flow).

pub mod client;
pub mod config;
pub mod jwt;
pub mod provider;
pub mod sso;
