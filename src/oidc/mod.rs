//! Single sign-on with OpenID Connect (issue 24), built in steps. So far: ID-token
//! verification (`jwt`) and the provider as both sides talk to it (`provider`: discovery, keys,
//! form posts, PKCE).

pub mod jwt;
pub mod provider;
