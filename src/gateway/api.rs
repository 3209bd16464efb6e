//! The gateway's own API under `/ztk/v1/`: login, the session, and command ingest.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};

use super::Gateway;
use crate::body::{self, Body};
use crate::protocol::{self, IngestAck, IngestCommands, LoginRequest, SessionInfo};

pub async fn handle(gateway: Arc<Gateway>, req: Request<Body>) -> Response<Body> {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::POST, protocol::LOGIN_PATH) => login(gateway, req).await,
        (Method::GET, protocol::SESSION_PATH) => session(&gateway, &req),
        (Method::DELETE, protocol::SESSION_PATH) => logout(&gateway, &req),
        (Method::POST, protocol::COMMANDS_PATH) => ingest_commands(gateway, req).await,
        (Method::POST, protocol::AUDIT_QUERY_PATH) => audit_query(gateway, req).await,
        (
            _,
            protocol::LOGIN_PATH
            | protocol::SESSION_PATH
            | protocol::COMMANDS_PATH
            | protocol::AUDIT_QUERY_PATH,
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

fn internal(err: impl std::fmt::Display) -> Response<Body> {
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

async fn login(gateway: Arc<Gateway>, req: Request<Body>) -> Response<Body> {
    let login: LoginRequest = match read_json(req).await {
        Ok(l) => l,
        Err(resp) => return resp,
    };
    // argon2 takes tens of milliseconds: keep it off the async workers.
    let gw = gateway.clone();
    let verified = tokio::task::spawn_blocking(move || {
        let user = gw.users.verify_password(&login.user, &login.password)?;
        match user {
            Some(user) => {
                let (token, expires_us) = gw.users.create_session(&user.name, gw.session_ttl_us)?;
                Ok::<_, super::users::UserError>(Some((user, token, expires_us)))
            }
            None => Ok(None),
        }
    })
    .await;
    match verified {
        Ok(Ok(Some((user, token, expires_us)))) => {
            tracing::info!(user = %user.name, "login");
            json(&SessionInfo {
                user: user.name,
                groups: user.groups,
                expires_us,
                clusters: gateway.cluster_infos(),
                token: Some(token),
            })
        }
        Ok(Ok(None)) => body::status_response(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "invalid user name or password",
        ),
        Ok(Err(err)) => internal(err),
        Err(err) => internal(err),
    }
}

fn session(gateway: &Gateway, req: &Request<Body>) -> Response<Body> {
    match gateway.authenticate(req.headers()) {
        Ok(s) => json(&SessionInfo {
            user: s.user,
            groups: s.groups,
            expires_us: s.expires_us,
            clusters: gateway.cluster_infos(),
            token: None,
        }),
        Err(message) => body::status_response(StatusCode::UNAUTHORIZED, "Unauthorized", &message),
    }
}

fn logout(gateway: &Gateway, req: &Request<Body>) -> Response<Body> {
    match gateway.authenticate(req.headers()) {
        Ok(s) => match gateway.users.revoke_session(&s.id) {
            Ok(()) => json(&serde_json::json!({"revoked": true})),
            Err(err) => internal(err),
        },
        Err(message) => body::status_response(StatusCode::UNAUTHORIZED, "Unauthorized", &message),
    }
}

/// Stores the client's command records. Each must belong to the authenticated user; a batch
/// with any foreign or malformed record stores nothing.
async fn ingest_commands(gateway: Arc<Gateway>, req: Request<Body>) -> Response<Body> {
    let session = match gateway.authenticate(req.headers()) {
        Ok(s) => s,
        Err(message) => {
            return body::status_response(StatusCode::UNAUTHORIZED, "Unauthorized", &message)
        }
    };
    let batch: IngestCommands = match read_json(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if let Some(foreign) = batch.commands.iter().find(|c| c.user != session.user) {
        return body::status_response(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "command {} belongs to user {:?}, not to {:?}; nothing was stored",
                foreign.id, foreign.user, session.user
            ),
        );
    }
    if let Some(bad) = batch
        .commands
        .iter()
        .find(|c| c.id.is_nil() || c.argv.is_empty())
    {
        return bad_request(format!(
            "command {} has no id or no argv; nothing was stored",
            bad.id
        ));
    }
    let known: std::collections::HashSet<_> = batch.commands.iter().map(|c| c.id).collect();
    if let Some(stray) = batch
        .timings
        .iter()
        .find(|t| !t.command_id.is_some_and(|id| known.contains(&id)))
    {
        return bad_request(format!(
            "the timing of call {} belongs to no command of this batch; nothing was stored",
            stray.request_id
        ));
    }
    let store = gateway.audit_store.clone();
    let n = batch.commands.len();
    match tokio::task::spawn_blocking(move || store.ingest(&batch.commands, &batch.timings)).await {
        Ok(Ok(())) => json(&IngestAck { accepted: n }),
        Ok(Err(err)) => internal(err),
        Err(err) => internal(err),
    }
}

/// Pages through the gateway's audit trail. Administrators (members of an `admin_groups`
/// group) see everything; everyone else sees their own records only.
async fn audit_query(gateway: Arc<Gateway>, req: Request<Body>) -> Response<Body> {
    let session = match gateway.authenticate(req.headers()) {
        Ok(s) => s,
        Err(message) => {
            return body::status_response(StatusCode::UNAUTHORIZED, "Unauthorized", &message)
        }
    };
    let mut query: protocol::AuditQuery = match read_json(req).await {
        Ok(q) => q,
        Err(resp) => return resp,
    };
    if query.limit == 0 || query.limit > protocol::MAX_PAGE {
        return bad_request(format!(
            "limit must be between 1 and {}",
            protocol::MAX_PAGE
        ));
    }
    let admin = session
        .groups
        .iter()
        .any(|g| gateway.admin_groups.contains(g));
    if !admin {
        if query.filter.users.iter().any(|u| *u != session.user) {
            return body::status_response(
                StatusCode::FORBIDDEN,
                "Forbidden",
                &format!("{} may read only their own audit records; administrators are in the groups {:?}", session.user, gateway.admin_groups),
            );
        }
        query.filter.users = vec![session.user.clone()];
    }
    let store = gateway.audit_store.clone();
    let result = tokio::task::spawn_blocking(move || match query.view {
        protocol::View::Calls => store
            .query_calls(&query.filter, query.after.as_ref(), query.limit)
            .map(|p| serde_json::to_value(p)),
        protocol::View::Commands => store
            .query_commands(&query.filter, query.after.as_ref(), query.limit)
            .map(|p| serde_json::to_value(p)),
    })
    .await;
    match result {
        Ok(Ok(Ok(page))) => body::json_response(StatusCode::OK, &page),
        Ok(Ok(Err(err))) => internal(err),
        Ok(Err(err)) => internal(err),
        Err(err) => internal(err),
    }
}
