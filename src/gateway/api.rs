//! The gateway's own API under `/ztk/v1/`: login, the session, audit ingest and queries, access questions.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};

use super::access;
use super::rbac::Identity;
use super::users::{Session, UserError};
use super::Gateway;
use crate::body::{self, Body};
use crate::protocol::{
    self, AccessListAnswer, AccessListQuery, AccessQuery, CanIAnswer, EffectiveRule, LoginRequest,
    SessionInfo, WhoCanAnswer,
};

pub async fn handle(
    gateway: Arc<Gateway>,
    req: Request<Body>,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::POST, protocol::LOGIN_PATH) => login(gateway, req, peer).await,
        (Method::GET, protocol::OIDC_PATH) => oidc_info(&gateway),
        (Method::POST, protocol::LOGIN_OIDC_PATH) => login_oidc(gateway, req, peer).await,
        (Method::GET, protocol::SESSION_PATH) => session(&gateway, &req),
        (Method::DELETE, protocol::SESSION_PATH) => logout(&gateway, &req),
        (Method::POST, protocol::INGEST_PATH) => super::ingest::handle(gateway, req).await,
        (Method::POST, protocol::AUDIT_QUERY_PATH) => audit_query(gateway, req).await,
        (Method::POST, protocol::AUDIT_TAIL_PATH) => audit_tail(gateway, req).await,
        (Method::POST, protocol::AUDIT_STATS_PATH) => audit_stats(gateway, req).await,
        (Method::POST, protocol::AUDIT_VERIFY_PATH) => super::audit::verify(gateway, req).await,
        (Method::GET, protocol::AUDIT_HEALTH_PATH) => super::audit::health(&gateway, &req),
        (Method::POST, protocol::CAN_I_PATH) => can_i(gateway, req).await,
        (Method::POST, protocol::WHO_CAN_PATH) => who_can(gateway, req).await,
        (Method::POST, protocol::ACCESS_LIST_PATH) => access_list(gateway, req).await,
        (
            _,
            protocol::LOGIN_PATH
            | protocol::OIDC_PATH
            | protocol::LOGIN_OIDC_PATH
            | protocol::SESSION_PATH
            | protocol::INGEST_PATH
            | protocol::AUDIT_QUERY_PATH
            | protocol::AUDIT_TAIL_PATH
            | protocol::AUDIT_STATS_PATH
            | protocol::AUDIT_VERIFY_PATH
            | protocol::AUDIT_HEALTH_PATH
            | protocol::CAN_I_PATH
            | protocol::WHO_CAN_PATH
            | protocol::ACCESS_LIST_PATH,
        ) => body::status_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "method not allowed",
        ),
        _ => body::status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            "ztk gateway: no such API endpoint",
        ),
    }
}

fn bad_request(message: String) -> Response<Body> {
    body::status_response(StatusCode::BAD_REQUEST, "BadRequest", &message)
}

pub(super) fn internal(err: impl std::fmt::Display) -> Response<Body> {
    tracing::error!("gateway API failed: {err}");
    body::status_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "the gateway failed to complete the request; see its log",
    )
}

async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Body>,
) -> Result<T, Response<Body>> {
    let bytes = body::read_limited(req.into_body(), protocol::MAX_API_BODY)
        .await
        .map_err(|e| bad_request(format!("could not read the request body: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

fn json<T: serde::Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_value(value) {
        Ok(v) => body::json_response(StatusCode::OK, &v),
        Err(err) => internal(err),
    }
}

/// Why a login failed, as the audit record and the log say it (the client is told only
/// "invalid user name or password", or to wait).
pub(crate) enum LoginFailure {
    Password,
    Throttled(std::time::Duration),
    TooManySessions(String),
    /// `password_login = false`.
    PasswordOff,
    /// An ID token or its claims refused, or the provider refused the sign-in.
    Sso(String),
    /// The SSO identity has the name of a local user.
    SsoLocalUser(String),
    /// The OpenID provider cannot be reached.
    SsoUnavailable(String),
    /// The gateway could not check (its database failed): not the user's fault, not counted.
    Internal(String),
}

impl LoginFailure {
    /// What the person signing in is told.
    pub(crate) fn message(&self) -> String {
        match self {
            LoginFailure::Password => "invalid user name or password".into(),
            LoginFailure::Throttled(wait) => format!(
                "too many failed logins; try again in {} s",
                super::throttle::retry_after_secs(*wait)
            ),
            LoginFailure::TooManySessions(message) => message.clone(),
            LoginFailure::PasswordOff => {
                "password sign-in is turned off on this gateway (password_login = false); sign in with SSO (`ztk login --sso`)".into()
            }
            LoginFailure::Sso(message) | LoginFailure::SsoLocalUser(message) => message.clone(),
            LoginFailure::SsoUnavailable(message) => format!("single sign-on is unavailable: {message}"),
            LoginFailure::Internal(_) => {
                "the gateway could not check the password; try again, or ask the administrator"
                    .into()
            }
        }
    }
}

impl LoginFailure {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            LoginFailure::Password | LoginFailure::Sso(_) => StatusCode::UNAUTHORIZED,
            LoginFailure::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            LoginFailure::TooManySessions(_)
            | LoginFailure::PasswordOff
            | LoginFailure::SsoLocalUser(_) => StatusCode::FORBIDDEN,
            LoginFailure::SsoUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            LoginFailure::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn from_sso(err: crate::oidc::sso::SsoError) -> LoginFailure {
        use crate::oidc::provider::OidcError;
        use crate::oidc::sso::SsoError;
        match err {
            SsoError::Provider(
                e @ (OidcError::Unreachable { .. }
                | OidcError::Status { .. }
                | OidcError::Invalid { .. }),
            ) => LoginFailure::SsoUnavailable(e.to_string()),
            e @ SsoError::LocalUser(_) => LoginFailure::SsoLocalUser(e.to_string()),
            e => LoginFailure::Sso(e.to_string()),
        }
    }
}

/// Where a login came from: `ztk login` (the API) or the web console's sign-in page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginVia {
    Api,
    Console,
}

/// A successful password login: the user and the new session.
pub(crate) struct LoggedIn {
    pub user: super::users::UserInfo,
    pub token: String,
    pub expires_us: i64,
    pub open_sessions: u32,
}

/// The one password login, for `ztk login` (the API) and the web console's sign-in: throttled
/// per user name and per source address before the password is checked, `max_sessions_per_user`
/// enforced by the session's insert, failures logged and audited. `replaces`: the client's
/// previous session of the same user, ended by this login.
pub(crate) async fn password_login(
    gateway: &Arc<Gateway>,
    name: String,
    password: String,
    replaces: Option<String>,
    peer: std::net::SocketAddr,
    user_agent: &str,
    via: LoginVia,
) -> Result<LoggedIn, LoginFailure> {
    let started = std::time::Instant::now();
    if !gateway.password_login {
        let failure = LoginFailure::PasswordOff;
        record_login_failure(gateway, &name, peer, user_agent, via, started, &failure);
        return Err(failure);
    }
    // Throttled before the password is checked: a guess made while waiting is not even tried.
    let now = crate::audit::model::now_us();
    let throttled = match gateway.login_throttle.wait(&name, peer.ip(), now) {
        Ok(wait) => wait,
        Err(err) => {
            let failure = LoginFailure::Internal(err.to_string());
            record_login_failure(gateway, &name, peer, user_agent, via, started, &failure);
            return Err(failure);
        }
    };
    if let Some(wait) = throttled {
        let failure = LoginFailure::Throttled(wait);
        record_login_failure(gateway, &name, peer, user_agent, via, started, &failure);
        return Err(failure);
    }
    // argon2 takes tens of milliseconds: keep it off the async workers.
    let gw = gateway.clone();
    let user_name = name.clone();
    let verified = tokio::task::spawn_blocking(move || {
        let user = gw.users.verify_password(&user_name, &password)?;
        match user {
            Some(user) => {
                // The client's previous session (same user) ends: a new login replaces it.
                let (token, expires_us, open) = gw.users.start_session(
                    &user.name,
                    replaces.as_deref(),
                    gw.session_ttl_us,
                    gw.max_sessions_per_user,
                    &super::users::Origin::default(),
                )?;
                Ok::<_, super::users::UserError>(Some((user, token, expires_us, open)))
            }
            None => Ok(None),
        }
    })
    .await;
    let failure = match verified {
        Ok(Ok(Some((user, token, expires_us, open_sessions)))) => {
            if let Err(err) = gateway.login_throttle.succeeded(&user.name) {
                tracing::warn!("could not clear {}'s failed logins: {err}", user.name);
            }
            tracing::info!(user = %user.name, source = %peer.ip(), "login");
            return Ok(LoggedIn {
                user,
                token,
                expires_us,
                open_sessions,
            });
        }
        Ok(Err(err @ UserError::TooManySessions { .. })) => {
            LoginFailure::TooManySessions(err.to_string())
        }
        Ok(Ok(None)) => {
            if let Err(err) =
                gateway
                    .login_throttle
                    .failed(&name, peer.ip(), crate::audit::model::now_us())
            {
                tracing::warn!("could not count a failed login: {err}");
            }
            LoginFailure::Password
        }
        Ok(Err(err)) => LoginFailure::Internal(err.to_string()),
        Err(err) => LoginFailure::Internal(err.to_string()),
    };
    record_login_failure(gateway, &name, peer, user_agent, via, started, &failure);
    Err(failure)
}

/// The one SSO login, for `ztk login --sso` (an ID token the client got) and the console's
/// code flow (the gateway got it): the token verified and taken once, the identity from its
/// claims (never a local user's name), a session that keeps the claims' groups and how it was
/// made. `replaces`: the client's previous session of the same user, ended by this login.
pub(crate) async fn sso_login(
    gateway: &Arc<Gateway>,
    identity: Result<crate::oidc::sso::Identity, crate::oidc::sso::SsoError>,
    method: super::users::SessionMethod,
    replaces: Option<String>,
    peer: std::net::SocketAddr,
    user_agent: &str,
    via: LoginVia,
) -> Result<LoggedIn, LoginFailure> {
    let started = std::time::Instant::now();
    let fail = |failure: LoginFailure, name: &str| {
        record_login_failure(gateway, name, peer, user_agent, via, started, &failure);
        Err(failure)
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(err) => return fail(LoginFailure::from_sso(err), "(sso)"),
    };
    let gw = gateway.clone();
    let id = identity.clone();
    let made = tokio::task::spawn_blocking(move || {
        if gw.users.groups_of(&id.user)?.is_some() {
            return Ok(None);
        }
        let (token, expires_us, open) = gw.users.start_session(
            &id.user,
            replaces.as_deref(),
            gw.session_ttl_us,
            gw.max_sessions_per_user,
            &super::users::Origin {
                method,
                subject: Some(&id.subject),
                groups: Some(&id.groups),
            },
        )?;
        Ok::<_, UserError>(Some((token, expires_us, open)))
    })
    .await;
    match made {
        Ok(Ok(Some((token, expires_us, open_sessions)))) => {
            tracing::info!(user = %identity.user, subject = %identity.subject, method = method.as_str(), source = %peer.ip(), "login");
            Ok(LoggedIn {
                user: super::users::UserInfo {
                    name: identity.user,
                    groups: identity.groups,
                    created_us: 0,
                },
                token,
                expires_us,
                open_sessions,
            })
        }
        Ok(Ok(None)) => {
            let message = crate::oidc::sso::SsoError::LocalUser(identity.user.clone()).to_string();
            fail(LoginFailure::SsoLocalUser(message), &identity.user)
        }
        Ok(Err(err @ UserError::TooManySessions { .. })) => fail(
            LoginFailure::TooManySessions(err.to_string()),
            &identity.user,
        ),
        Ok(Err(err)) => fail(LoginFailure::Internal(err.to_string()), &identity.user),
        Err(err) => fail(LoginFailure::Internal(err.to_string()), &identity.user),
    }
}

/// The answer to a login: the new session and what the user may do.
fn logged_in(
    gateway: &Gateway,
    done: LoggedIn,
    method: super::users::SessionMethod,
) -> SessionInfo {
    SessionInfo {
        roles: gateway.roles_of(&done.user.name, &done.user.groups),
        user: done.user.name,
        groups: done.user.groups,
        expires_us: done.expires_us,
        clusters: gateway.cluster_infos(),
        token: Some(done.token),
        open_sessions: done.open_sessions,
        max_sessions: gateway.max_sessions_per_user,
        method: method.as_str().into(),
    }
}

/// `GET /ztk/v1/oidc`: what `ztk login --sso` needs (no secret).
fn oidc_info(gateway: &Gateway) -> Response<Body> {
    match &gateway.sso {
        Some(sso) => json(&protocol::OidcInfo {
            issuer: sso.config.issuer.clone(),
            client_id: sso.config.cli_client_id.clone(),
            scopes: sso.config.scopes.clone(),
            password_login: gateway.password_login,
        }),
        None => body::status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            "this gateway has no single sign-on ([oidc] in its gateway.toml); log in with a password",
        ),
    }
}

/// `POST /ztk/v1/login/oidc`: an ID token from the provider for a session.
async fn login_oidc(
    gateway: Arc<Gateway>,
    req: Request<Body>,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Some(sso) = gateway.sso.clone() else {
        return oidc_info(&gateway);
    };
    let login: protocol::OidcLoginRequest = match read_json(req).await {
        Ok(l) => l,
        Err(resp) => return resp,
    };
    let method = match login.flow.as_str() {
        "device" => super::users::SessionMethod::SsoDevice,
        "code" => super::users::SessionMethod::SsoCode,
        other => return bad_request(format!("flow {other:?}: use code or device")),
    };
    let identity = sso.identity(&login.id_token, login.nonce.as_deref()).await;
    match sso_login(
        &gateway,
        identity,
        method,
        login.replaces,
        peer,
        &user_agent,
        LoginVia::Api,
    )
    .await
    {
        Ok(done) => json(&logged_in(&gateway, done, method)),
        Err(failure) => login_failure_response(&failure),
    }
}

async fn login(
    gateway: Arc<Gateway>,
    req: Request<Body>,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let login: LoginRequest = match read_json(req).await {
        Ok(l) => l,
        Err(resp) => return resp,
    };
    match password_login(
        &gateway,
        login.user,
        login.password,
        login.replaces,
        peer,
        &user_agent,
        LoginVia::Api,
    )
    .await
    {
        Ok(done) => json(&logged_in(
            &gateway,
            done,
            super::users::SessionMethod::Password,
        )),
        Err(failure) => login_failure_response(&failure),
    }
}

/// The API's answer to a failed login: a `Status` (429 with `Retry-After` while throttled).
fn login_failure_response(failure: &LoginFailure) -> Response<Body> {
    let message = failure.message();
    let status = failure.status();
    let reason = match status {
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        _ => return internal(&message),
    };
    let mut resp = body::status_response(status, reason, &message);
    if let LoginFailure::Throttled(wait) = failure {
        let secs = super::throttle::retry_after_secs(*wait);
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, secs.into());
    }
    resp
}

/// Logs and audits a failed login: who (the name given), from where, why.
fn record_login_failure(
    gateway: &Gateway,
    name: &str,
    peer: std::net::SocketAddr,
    user_agent: &str,
    via: LoginVia,
    started: std::time::Instant,
    failure: &LoginFailure,
) {
    let (status, reason) = match failure {
        LoginFailure::Password => (
            401,
            "login failed: invalid user name or password".to_string(),
        ),
        LoginFailure::Throttled(wait) => (
            429,
            format!(
                "login refused: too many failed logins (retry in {} s)",
                super::throttle::retry_after_secs(*wait)
            ),
        ),
        LoginFailure::TooManySessions(message) => (403, format!("login refused: {message}")),
        LoginFailure::PasswordOff => (403, "login refused: password sign-in is turned off".into()),
        LoginFailure::Sso(message) | LoginFailure::SsoLocalUser(message) => (
            failure.status().as_u16(),
            format!("SSO login refused: {message}"),
        ),
        LoginFailure::SsoUnavailable(message) => (503, format!("SSO login failed: {message}")),
        LoginFailure::Internal(err) => {
            tracing::error!("login failed in the gateway: {err}");
            return;
        }
    };
    tracing::warn!(user = ?name, source = %peer.ip(), "{reason}");
    let mut call = crate::audit::ApiCall {
        id: uuid::Uuid::now_v7(),
        time_us: crate::audit::model::now_us(),
        user: name.to_string(),
        verb: "login".into(),
        method: "POST".into(),
        path: match via {
            LoginVia::Api => protocol::LOGIN_PATH.into(),
            LoginVia::Console => "/signin".into(),
        },
        user_agent: user_agent.to_string(),
        source_ip: peer.ip().to_string(),
        access_method: match via {
            LoginVia::Api => crate::audit::model::AccessMethod::from_user_agent(user_agent),
            LoginVia::Console => crate::audit::model::AccessMethod::Browser,
        },
        ..Default::default()
    };
    call.refuse(status, "unauthenticated", &reason, started.elapsed());
    gateway.audit.record_call(call);
}

fn session(gateway: &Gateway, req: &Request<Body>) -> Response<Body> {
    match session_of(gateway, req) {
        Ok(s) => json(&SessionInfo {
            open_sessions: match gateway.users.open_sessions(&s.user) {
                Ok(n) => n,
                Err(err) => return internal(err),
            },
            max_sessions: gateway.max_sessions_per_user,
            roles: gateway.roles_of(&s.user, &s.groups),
            method: s.method.as_str().into(),
            user: s.user,
            groups: s.groups,
            expires_us: s.expires_us,
            clusters: gateway.cluster_infos(),
            token: None,
        }),
        Err(resp) => resp,
    }
}

fn logout(gateway: &Gateway, req: &Request<Body>) -> Response<Body> {
    match session_of(gateway, req) {
        Ok(s) => match gateway.users.revoke_session(&s.id) {
            Ok(()) => json(&serde_json::json!({"revoked": true})),
            Err(err) => internal(err),
        },
        Err(resp) => resp,
    }
}

/// Pages through the gateway's audit trail. Administrators (members of an `admin_groups`
/// group) see everything; everyone else sees their own records only.
async fn audit_query(gateway: Arc<Gateway>, req: Request<Body>) -> Response<Body> {
    let query: protocol::AuditQuery = match audit_request(&gateway, req).await {
        Ok(q) => q,
        Err(resp) => return resp,
    };
    let store = gateway.audit_store.clone();
    let result = tokio::task::spawn_blocking(move || match query.view {
        protocol::View::Calls => store
            .query_calls(&query.filter, query.after.as_ref(), query.limit)
            .map(serde_json::to_value),
        protocol::View::Commands => store
            .query_commands(&query.filter, query.after.as_ref(), query.limit)
            .map(serde_json::to_value),
    })
    .await;
    match result {
        Ok(Ok(Ok(page))) => body::json_response(StatusCode::OK, &page),
        Ok(Ok(Err(err))) => internal(err),
        Ok(Err(err)) => internal(err),
        Err(err) => internal(err),
    }
}

/// Latency and activity statistics, with the query API's access rule.
async fn audit_stats(gateway: Arc<Gateway>, req: Request<Body>) -> Response<Body> {
    let session = match session_of(&gateway, &req) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let mut query: crate::audit::stats::StatsQuery = match read_json(req).await {
        Ok(q) => q,
        Err(resp) => return resp,
    };
    if let Err(message) = query.check(crate::audit::model::now_us()) {
        return bad_request(message);
    }
    if let Err(resp) = restrict_to_own(&gateway, &session, &mut query.filter) {
        return resp;
    }
    let store = gateway.audit_store.clone();
    match tokio::task::spawn_blocking(move || store.stats(&query)).await {
        Ok(Ok(stats)) => json(&stats),
        Ok(Err(err)) => internal(err),
        Err(err) => internal(err),
    }
}

/// What the audit read endpoints (query and tail) have in common.
trait AuditRequest: serde::de::DeserializeOwned {
    fn limit(&self) -> usize;
    fn filter_mut(&mut self) -> &mut crate::audit::Filter;
}

impl AuditRequest for protocol::AuditQuery {
    fn limit(&self) -> usize {
        self.limit
    }
    fn filter_mut(&mut self) -> &mut crate::audit::Filter {
        &mut self.filter
    }
}

impl AuditRequest for protocol::AuditTail {
    fn limit(&self) -> usize {
        self.limit
    }
    fn filter_mut(&mut self) -> &mut crate::audit::Filter {
        &mut self.filter
    }
}

/// Authenticates an audit read, parses its body, checks the page size and applies the access
/// rule (`restrict_to_own`): one place for both endpoints.
async fn audit_request<Q: AuditRequest>(
    gateway: &Gateway,
    req: Request<Body>,
) -> Result<Q, Response<Body>> {
    let session = session_of(gateway, &req)?;
    let mut query: Q = read_json(req).await?;
    if query.limit() == 0 || query.limit() > protocol::MAX_PAGE {
        return Err(bad_request(format!(
            "limit must be between 1 and {}",
            protocol::MAX_PAGE
        )));
    }
    query
        .filter_mut()
        .check()
        .map_err(|e| bad_request(e.to_string()))?;
    restrict_to_own(gateway, &session, query.filter_mut())?;
    Ok(query)
}

/// Administrators (members of an `admin_groups` group) read everything; everyone else only
/// their own records: the filter is narrowed to them, and asking for others is refused.
#[allow(clippy::result_large_err)]
fn restrict_to_own(
    gateway: &Gateway,
    session: &Session,
    filter: &mut crate::audit::Filter,
) -> Result<(), Response<Body>> {
    gateway
        .restrict_audit_reads(session, filter)
        .map_err(|message| body::status_response(StatusCode::FORBIDDEN, "Forbidden", &message))
}

impl Gateway {
    /// Whether `session` belongs to an administrator (a member of an `admin_groups` group).
    pub fn is_admin(&self, session: &Session) -> bool {
        session.groups.iter().any(|g| self.admin_groups.contains(g))
    }

    /// The one rule of every audit read (query API, tail, the console): administrators read
    /// everything; everyone else only their own records: the filter is narrowed to them, and
    /// asking for others is refused (the message says why).
    pub fn restrict_audit_reads(
        &self,
        session: &Session,
        filter: &mut crate::audit::Filter,
    ) -> Result<(), String> {
        if !self.is_admin(session) {
            if filter.users.iter().any(|u| *u != session.user) {
                return Err(format!(
                    "{} may read only their own audit records; administrators are in the groups {:?}",
                    session.user, self.admin_groups
                ));
            }
            filter.users = vec![session.user.clone()];
        }
        Ok(())
    }
}

/// How often a waiting tail request looks for new records.
const TAIL_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Follows the audit trail by write sequence (long poll), with the query API's access rule.
/// Open-stream records are left out: their final records follow with new sequence numbers.
async fn audit_tail(gateway: Arc<Gateway>, req: Request<Body>) -> Response<Body> {
    let query: protocol::AuditTail = match audit_request(&gateway, req).await {
        Ok(q) => q,
        Err(resp) => return resp,
    };
    let store = gateway.audit_store.clone();
    let Some(after) = query.after_seq else {
        return match tokio::task::spawn_blocking(move || store.last_seq()).await {
            Ok(Ok(last)) => json(&crate::audit::SeqBatch {
                records: Vec::new(),
                through: last,
            }),
            Ok(Err(err)) => internal(err),
            Err(err) => internal(err),
        };
    };
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(query.wait_ms.min(protocol::MAX_TAIL_WAIT_MS));
    match next_records(
        store,
        Arc::new(query.filter),
        after,
        query.limit,
        deadline,
        || true,
    )
    .await
    {
        Ok(Some(batch)) => json(&batch),
        Ok(None) => internal("the tail ended"),
        Err(err) => internal(err),
    }
}

/// The one way to follow the audit trail, behind `ztk audit tail --remote` and the console's
/// live rows: the records matching `filter` written after `after` (at most `limit`), as soon
/// as there are some, or none at `deadline`. Looks every `TAIL_POLL`; `alive` is asked before
/// each look, and `None` is returned once it says no (the console's session ended).
/// Open-stream records are left out: their final records follow with new sequence numbers.
pub(crate) async fn next_records(
    store: crate::audit::AuditStore,
    filter: Arc<crate::audit::Filter>,
    mut after: i64,
    limit: usize,
    deadline: tokio::time::Instant,
    alive: impl Fn() -> bool,
) -> Result<Option<crate::audit::SeqBatch>, String> {
    loop {
        if !alive() {
            return Ok(None);
        }
        let (s, f) = (store.clone(), filter.clone());
        let mut batch =
            match tokio::task::spawn_blocking(move || s.records_after(after, &f, limit)).await {
                Ok(Ok(b)) => b,
                Ok(Err(err)) => return Err(err.to_string()),
                Err(err) => return Err(err.to_string()),
            };
        batch
            .records
            .retain(|r| !crate::sinks::format::is_open_stream(r));
        if !batch.records.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Some(batch));
        }
        after = batch.through;
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + TAIL_POLL)).await;
    }
}

impl super::Gateway {
    /// The bindings that apply to a user, for `ztk status`.
    pub fn roles_of(&self, user: &str, groups: &[String]) -> Vec<protocol::RoleGrant> {
        let who = Identity {
            user: user.to_string(),
            groups: groups.to_vec(),
        };
        self.policy()
            .bindings_of(&who)
            .map(access::grant_of)
            .collect()
    }
}

/// The caller's session, or the 401 to answer (its message says to run `ztk login`).
#[allow(clippy::result_large_err)]
pub(super) fn session_of(
    gateway: &Gateway,
    req: &Request<Body>,
) -> Result<Session, Response<Body>> {
    gateway.authenticate(req.headers()).map_err(|message| {
        body::status_response(StatusCode::UNAUTHORIZED, "Unauthorized", &message)
    })
}

fn forbidden(message: String) -> Response<Body> {
    body::status_response(StatusCode::FORBIDDEN, "Forbidden", &message)
}

// The errors are finished HTTP answers, made at most once per request; boxing them only adds noise.
#[allow(clippy::result_large_err)]
/// The identity a question is about: the asker, or (for administrators) another user.
fn subject_of(
    gateway: &super::Gateway,
    asker: &Identity,
    clusters: &[&str],
    user: Option<&str>,
) -> Result<Identity, Response<Body>> {
    gateway
        .subject_of(asker, clusters, user)
        .map_err(|(status, message)| match status {
            StatusCode::FORBIDDEN => forbidden(message),
            StatusCode::BAD_REQUEST => bad_request(message),
            _ => internal(message),
        })
}

impl Gateway {
    /// Who an access question is about: the asker, or another user, which needs the
    /// impersonate verb on that user on every cluster asked about (as `kubectl auth can-i
    /// --as`). The error is the status and message to answer (`ztk access` and the console).
    pub fn subject_of(
        &self,
        asker: &Identity,
        clusters: &[&str],
        user: Option<&str>,
    ) -> Result<Identity, (StatusCode, String)> {
        let Some(user) = user.filter(|u| *u != asker.user) else {
            return Ok(asker.clone());
        };
        let policy = self.policy();
        if let Some(c) = clusters
            .iter()
            .find(|c| !access::may_inspect(&policy, asker, c, Some(user)))
        {
            return Err((StatusCode::FORBIDDEN, format!(
                "{asker} may not ask about user {user:?} on cluster {c:?}: that needs the impersonate verb on users (e.g. role cluster-admin)"
            )));
        }
        match self.users.groups_of(user) {
            Ok(Some(groups)) => Ok(Identity {
                user: user.to_string(),
                groups,
            }),
            Ok(None) => Err((
                StatusCode::BAD_REQUEST,
                format!("no user {user:?}; `ztk gateway user list` shows the users"),
            )),
            Err(err) => Err((StatusCode::INTERNAL_SERVER_ERROR, err.to_string())),
        }
    }
}

#[allow(clippy::result_large_err)]
fn check_cluster(gateway: &super::Gateway, cluster: &str) -> Result<(), Response<Body>> {
    if gateway.clusters.contains_key(cluster) {
        Ok(())
    } else {
        Err(bad_request(format!(
            "the gateway has no cluster {cluster:?}; `ztk status` lists the clusters"
        )))
    }
}

/// The start of every access question: who asks, what about, on which (known) cluster.
#[allow(clippy::result_large_err)]
async fn access_question(
    gateway: &Gateway,
    req: Request<Body>,
) -> Result<(Identity, AccessQuery, crate::request_info::RequestInfo), Response<Body>> {
    let session = session_of(gateway, &req)?;
    let q: AccessQuery = read_json(req).await?;
    check_cluster(gateway, &q.cluster)?;
    let info = access::request_of(&q).map_err(bad_request)?;
    let asker = Identity {
        user: session.user,
        groups: session.groups,
    };
    Ok((asker, q, info))
}

async fn can_i(gateway: Arc<super::Gateway>, req: Request<Body>) -> Response<Body> {
    let (asker, q, info) = match access_question(&gateway, req).await {
        Ok(question) => question,
        Err(resp) => return resp,
    };
    let who = match subject_of(&gateway, &asker, &[&q.cluster], q.user.as_deref()) {
        Ok(who) => who,
        Err(resp) => return resp,
    };
    let (allowed, reason) = access::can_i(&gateway.policy(), &who, &q.cluster, &info);
    json(&CanIAnswer {
        allowed,
        user: who.user,
        request: access::request_label(&info),
        reason,
    })
}

async fn who_can(gateway: Arc<super::Gateway>, req: Request<Body>) -> Response<Body> {
    let (asker, q, info) = match access_question(&gateway, req).await {
        Ok(question) => question,
        Err(resp) => return resp,
    };
    let policy = gateway.policy();
    if !access::may_inspect(&policy, &asker, &q.cluster, None) {
        return forbidden(format!(
            "{asker} may not ask who can do what on cluster {:?}: that needs the impersonate verb on all users (e.g. role cluster-admin)",
            q.cluster
        ));
    }
    let users = match gateway.users.list_users() {
        Ok(users) => users,
        Err(err) => return internal(err),
    };
    let users: Vec<(String, Vec<String>)> = users.into_iter().map(|u| (u.name, u.groups)).collect();
    let (bindings, users) = access::who_can(&policy, &users, &q.cluster, &info);
    json(&WhoCanAnswer {
        request: access::request_label(&info),
        bindings,
        users,
    })
}

async fn access_list(gateway: Arc<super::Gateway>, req: Request<Body>) -> Response<Body> {
    let session = match session_of(&gateway, &req) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let q: AccessListQuery = match read_json(req).await {
        Ok(q) => q,
        Err(resp) => return resp,
    };
    let asker = Identity {
        user: session.user,
        groups: session.groups,
    };
    // Another user's rules on every cluster: the asker must be an administrator on all.
    let clusters: Vec<&str> = gateway.clusters.keys().map(String::as_str).collect();
    let who = match subject_of(&gateway, &asker, &clusters, q.user.as_deref()) {
        Ok(who) => who,
        Err(resp) => return resp,
    };
    let policy = gateway.policy();
    let mut rules = Vec::new();
    for binding in policy.bindings_of(&who) {
        let grant = access::grant_of(binding);
        match policy.role(&binding.role) {
            Some(role) => rules.extend(role.rules.iter().map(|r| EffectiveRule {
                grant: grant.clone(),
                rule: r.to_string(),
            })),
            None => rules.push(EffectiveRule {
                grant,
                rule: "(unknown role: grants nothing)".into(),
            }),
        }
    }
    json(&AccessListAnswer {
        user: who.user,
        groups: who.groups,
        rules,
    })
}
