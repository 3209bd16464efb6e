//! The gateway's side of single sign-on: the provider (discovered when first needed, so that a
//! provider that is down never stops the gateway, and retried), ID tokens turned into an
//! identity (user name and groups from the claims), each ID token taken once, and the console's
//! authorization code flow (the gateway as a confidential client, with state, nonce and PKCE).
//! Sign-ins in progress and the tokens taken are kept in the gateway database, so that several
//! gateways behind one address share them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::config::OidcConfig;
use super::jwt::Expect;
use super::provider::{self, Http, OidcError, Provider};
use crate::gateway::users::{PendingSignIn, UserStore};

/// A failed discovery is answered from memory for this long before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long a console sign-in may take at the provider.
const PENDING_TTL: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    #[error(transparent)]
    Provider(#[from] OidcError),
    #[error("the ID token's claims cannot sign anyone in: {0}")]
    Claims(String),
    #[error("this ID token was already used to sign in; sign in again")]
    Replayed,
    #[error("the provider's user {0:?} has the name of a local user of the gateway; SSO cannot sign in as a local user")]
    LocalUser(String),
    #[error("the sign-in expired or was not started here (state); start again")]
    State,
    #[error("the provider refused the sign-in: {0}")]
    Refused(String),
}

/// Who the provider says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
    /// The provider's `sub`.
    pub subject: String,
}

pub struct Sso {
    pub config: OidcConfig,
    http: Http,
    provider: tokio::sync::Mutex<Option<Arc<Provider>>>,
    failed: Mutex<Option<(Instant, String)>>,
    /// Where sign-ins in progress and the ID tokens already taken are kept: the gateway
    /// database, shared by every gateway on it (a sign-in begun on one may finish on another;
    /// a token is taken once by all of them).
    users: Arc<UserStore>,
}

fn now_secs() -> i64 {
    crate::audit::model::now_us() / 1_000_000
}

impl Sso {
    pub fn new(config: OidcConfig, users: Arc<UserStore>) -> Result<Sso, OidcError> {
        Ok(Sso {
            http: Http::new(config.ca_pem.clone())?,
            config,
            provider: tokio::sync::Mutex::default(),
            failed: Mutex::default(),
            users,
        })
    }

    /// The provider, discovered on first use (and again after a failure, at most every 5 s).
    pub async fn provider(&self) -> Result<Arc<Provider>, OidcError> {
        let mut slot = self.provider.lock().await;
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        if let Some((at, reason)) = self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            if at.elapsed() < RETRY_AFTER {
                return Err(OidcError::Unreachable {
                    url: self.config.issuer.clone(),
                    reason,
                });
            }
        }
        match Provider::discover(&self.config.issuer, self.http.clone()).await {
            Ok(p) => {
                let p = Arc::new(p);
                *slot = Some(p.clone());
                tracing::info!(issuer = %self.config.issuer, "OpenID provider discovered");
                Ok(p)
            }
            Err(err) => {
                tracing::warn!(issuer = %self.config.issuer, "OpenID provider discovery failed: {err}");
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), err.to_string()));
                Err(err)
            }
        }
    }

    /// Verifies an ID token (for this gateway's clients; `nonce` when the sign-in sent one),
    /// takes it (once), and reads the identity from its claims.
    pub async fn identity(
        &self,
        id_token: &str,
        nonce: Option<&str>,
    ) -> Result<Identity, SsoError> {
        let provider = self.provider().await?;
        let audiences = self.config.audiences();
        let claims = provider
            .verify(
                id_token,
                &Expect {
                    issuer: &self.config.issuer,
                    audiences: &audiences,
                    nonce,
                    now: now_secs(),
                },
            )
            .await?;
        let identity = identity_of(&claims, &self.config)?;
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        let hash = crate::gateway::users::hash_token(id_token);
        let until_us = (exp + super::jwt::SKEW_SECS) * 1_000_000;
        if !self
            .users
            .take_id_token(&hash, until_us, crate::audit::model::now_us())
            .map_err(|e| SsoError::Refused(format!("could not record the ID token: {e}")))?
        {
            return Err(SsoError::Replayed);
        }
        Ok(identity)
    }

    /// Starts a console sign-in: the provider's URL to send the browser to, and the state to
    /// bind to this browser (a cookie).
    pub async fn begin(
        &self,
        redirect_uri: &str,
        next: &str,
    ) -> Result<(String, String), SsoError> {
        let provider = self.provider().await?;
        let state = provider::random_token(24);
        let nonce = provider::random_token(24);
        let (verifier, challenge) = provider::pkce();
        let url = provider::authorization_url(
            &provider.meta,
            &self.config.client_id,
            redirect_uri,
            &self.config.scope(),
            &state,
            &nonce,
            &challenge,
        );
        let now = crate::audit::model::now_us();
        let kept = self
            .users
            .put_sign_in(
                &state,
                &PendingSignIn {
                    nonce,
                    verifier,
                    redirect_uri: redirect_uri.to_string(),
                    next: next.to_string(),
                },
                now,
                now + PENDING_TTL.as_micros() as i64,
            )
            .map_err(|e| SsoError::Refused(format!("could not keep the sign-in: {e}")))?;
        if !kept {
            return Err(SsoError::Refused(
                "too many sign-ins in progress; try again in a minute".into(),
            ));
        }
        Ok((url, state))
    }

    /// Completes a console sign-in: the code for an ID token (with the client's secret and the
    /// PKCE verifier), checked with the sign-in's nonce; the identity and where to go next.
    pub async fn finish(&self, state: &str, code: &str) -> Result<(Identity, String), SsoError> {
        let pending = self
            .users
            .take_sign_in(state, crate::audit::model::now_us())
            .map_err(|e| SsoError::Refused(format!("could not read the sign-in: {e}")))?
            .ok_or(SsoError::State)?;
        let provider = self.provider().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", pending.redirect_uri.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        let basic = self
            .config
            .client_secret
            .as_ref()
            .map(|s| (self.config.client_id.as_str(), s.expose()));
        if basic.is_none() {
            form.push(("client_id", self.config.client_id.as_str()));
        }
        let (status, answer) = provider
            .http
            .post_form(&provider.meta.token_endpoint, &form, basic)
            .await?;
        if !status.is_success() {
            return Err(SsoError::Refused(oauth_error(&answer)));
        }
        let id_token = answer
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                SsoError::Refused(
                    "the token endpoint sent no id_token (is `openid` in scopes?)".into(),
                )
            })?;
        let identity = self.identity(id_token, Some(&pending.nonce)).await?;
        Ok((identity, pending.next))
    }
}

/// `error: error_description` of an OAuth error answer.
pub fn oauth_error(answer: &Value) -> String {
    let error = answer
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("error");
    match answer.get("error_description").and_then(Value::as_str) {
        Some(d) => format!("{error}: {d}"),
        None => error.to_string(),
    }
}

fn clean(text: &str) -> bool {
    !text.is_empty() && text.len() <= 256 && !text.chars().any(char::is_control)
}

/// The identity in verified claims: the user name from `username_claim`, the groups from
/// `groups_claim` (with `groups_prefix`), the domain allowed, an email verified.
pub fn identity_of(claims: &Map<String, Value>, config: &OidcConfig) -> Result<Identity, SsoError> {
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| clean(s))
        .ok_or_else(|| SsoError::Claims("no sub".into()))?
        .to_string();
    let user = claims
        .get(&config.username_claim)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| clean(s))
        .ok_or_else(|| {
            SsoError::Claims(format!(
                "no usable {:?} claim for the user name (`oidc.username_claim`; is its scope in `oidc.scopes`?)",
                config.username_claim
            ))
        })?
        .to_string();
    let email = claims.get("email").and_then(Value::as_str);
    // An unverified address is no proof of who signed in when it names the user or the domain.
    let unverified =
        email.is_some() && claims.get("email_verified").and_then(Value::as_bool) == Some(false);
    if unverified && (config.username_claim == "email" || !config.allowed_domains.is_empty()) {
        return Err(SsoError::Claims(
            "the provider says the email is not verified".into(),
        ));
    }
    if !config.allowed_domains.is_empty() {
        let address = email.or(Some(user.as_str()).filter(|u| u.contains('@')));
        let domain = address
            .and_then(|a| a.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase());
        if !domain
            .as_ref()
            .is_some_and(|d| config.allowed_domains.contains(d))
        {
            return Err(SsoError::Claims(format!(
                "the domain {} is not in `oidc.allowed_domains`",
                domain.unwrap_or_else(|| "(none)".into())
            )));
        }
    }
    let groups = match claims.get(&config.groups_claim) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };
    let mut groups: Vec<String> = groups
        .into_iter()
        .filter(|g| clean(g))
        .map(|g| format!("{}{g}", config.groups_prefix))
        .collect();
    groups.sort();
    groups.dedup();
    Ok(Identity {
        user,
        groups,
        subject,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OidcConfig {
        let raw: super::super::config::RawOidc = toml::from_str(
            "issuer = \"https://idp.example\"\nclient_id = \"ztk\"\ngroups_prefix = \"oidc:\"\nallowed_domains = [\"Example.com\"]\n",
        )
        .unwrap();
        raw.validate(std::path::Path::new(".")).unwrap()
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_identity_comes_from_the_configured_claims() {
        let c = config();
        let id = identity_of(
            &claims(serde_json::json!({"sub": "u1", "email": "ada@example.com", "email_verified": true, "groups": ["dev", "ops", "dev"]})),
            &c,
        )
        .unwrap();
        assert_eq!(id.user, "ada@example.com");
        assert_eq!(id.groups, ["oidc:dev", "oidc:ops"]);
        assert_eq!(id.subject, "u1");
        for bad in [
            serde_json::json!({"sub": "u1", "email": "eve@evil.com", "groups": []}),
            serde_json::json!({"sub": "u1", "email": "ada@example.com", "email_verified": false}),
            serde_json::json!({"sub": "u1"}),
            serde_json::json!({"email": "ada@example.com"}),
            serde_json::json!({"sub": "u1", "email": "ada\u{1b}[31m@example.com"}),
        ] {
            assert!(identity_of(&claims(bad.clone()), &c).is_err(), "{bad}");
        }
    }
}
