//! Console sign-in and sessions. A web session is a gateway session like `ztk login`'s (same
//! users, password check, throttle, `max_sessions_per_user`, `session_ttl`, revocation), carried
//! in a cookie the page's script cannot read (`__Host-ztk`: `HttpOnly; Secure;
//! SameSite=Strict; Path=/`). Every state-changing request (sign-in, sign-out) must come from
//! this origin (`Origin`) and carry a CSRF token: after sign-in an HMAC of the session token
//! (bound to the session, nothing stored); before it, a random value also set as a cookie
//! (double submit), so a sign-in cannot be forged from another site either.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use maud::html;

use super::layout;
use crate::body::{self, Body};
use crate::client::credential::constant_time_eq;
use crate::gateway::api::{password_login, LoginFailure, LoginVia};
use crate::gateway::users::Session;
use crate::gateway::Gateway;

/// The session cookie. `__Host-`: the browser keeps it only if Secure, Path=/ and no Domain.
pub const SESSION_COOKIE: &str = "__Host-ztk";
/// The sign-in form's double-submit token.
const PRE_COOKIE: &str = "__Host-ztk-pre";
/// Bytes of a sign-in form body.
const MAX_FORM: usize = 16 * 1024;
/// How long a session watch waits before answering "still signed in".
const WATCH_WAIT: Duration = Duration::from_secs(25);
/// How often a session watch checks the session (revocation shows within this).
const WATCH_STEP: Duration = Duration::from_millis(250);

/// Who is looking at a page: the session, and what the console shows them.
#[derive(Clone)]
pub struct Viewer {
    pub session: Session,
    pub admin: bool,
    /// The CSRF token of this session (in every form that changes state).
    pub csrf: String,
}

/// The signed-in viewer of a request, if its cookie holds a valid session.
pub fn signed_in(gateway: &Gateway, headers: &HeaderMap) -> Option<Viewer> {
    let token = cookie(headers, SESSION_COOKIE)?;
    match gateway.users.authenticate(&token) {
        Ok(Ok(session)) => Some(Viewer {
            admin: gateway.is_admin(&session),
            csrf: csrf_of(&token),
            session,
        }),
        Ok(Err(_)) => None,
        Err(err) => {
            tracing::error!("console session lookup failed: {err}");
            None
        }
    }
}

/// The CSRF token bound to a session token: HMAC-SHA256(token, purpose), hex.
pub fn csrf_of(token: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.as_bytes());
    hex::encode(ring::hmac::sign(&key, b"ztk console csrf v1").as_ref())
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// The host (and port) the browser sent the request to.
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
}

/// Whether a state-changing request comes from this console's own origin: its `Origin` must be
/// `https://HOST` for the host the request was sent to.
pub fn same_origin<B>(req: &Request<B>) -> bool {
    let host = request_host(req);
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    match (host, origin) {
        (Some(host), Some(origin)) => origin.eq_ignore_ascii_case(&format!("https://{host}")),
        _ => false,
    }
}

/// `303` to the sign-in page, coming back to this page afterwards.
pub fn to_signin<B>(req: &Request<B>) -> Response<Body> {
    let here = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    super::redirect(&format!("/signin?next={}", super::encode(here)))
}

/// Where to go after signing in: only a path of this console (never another site).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control)
                && n != "/signin"
                && !n.starts_with("/signin?") =>
        {
            n.to_string()
        }
        _ => "/audit/kubectl".to_string(),
    }
}

pub fn signin_page<B>(gateway: &Gateway, req: &Request<B>) -> Response<Body> {
    let query = super::pairs(req.uri().query().unwrap_or(""));
    let next = query
        .iter()
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.as_str());
    if signed_in(gateway, req.headers()).is_some() {
        return super::redirect(&safe_next(next));
    }
    form(gateway, StatusCode::OK, &safe_next(next), "", None)
}

/// The sign-in form, with a fresh double-submit token (also set as a cookie).
fn form(
    gateway: &Gateway,
    status: StatusCode,
    next: &str,
    user: &str,
    error: Option<&str>,
) -> Response<Body> {
    let pre = random_token();
    let sso = gateway.sso.is_some();
    let passwords = gateway.password_login;
    let markup = layout::page(
        "Sign in",
        None,
        layout::Nav::None,
        html! {
            section.signin aria-labelledby="signin-title" {
                h1 #signin-title { "Sign in to ztk" }
                p.muted { "Zero-trust kubectl access: every command and API call, audited." }
                @if let Some(error) = error {
                    p.error role="alert" { (error) }
                }
                @if sso {
                    p { a.button.primary.sso href=(format!("/oidc/start?next={}", super::encode(next))) { "Sign in with SSO" } }
                }
                @if passwords {
                    @if sso { p.muted { "Or with a local account:" } }
                    form method="post" action="/signin" {
                        input type="hidden" name="csrf" value=(pre);
                        input type="hidden" name="next" value=(next);
                        label for="username" { "Username" }
                        input #username name="username" type="text" autocomplete="username"
                            required autofocus[!sso] value=(user);
                        label for="password" { "Password" }
                        input #password name="password" type="password"
                            autocomplete="current-password" required;
                        button.primary type="submit" { "Sign in" }
                    }
                }
            }
        },
    );
    let mut resp = super::html(status, markup);
    set_cookie(
        &mut resp,
        &format!("{PRE_COOKIE}={pre}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=3600"),
    );
    resp
}

pub async fn signin(gateway: Arc<Gateway>, req: Request<Body>, peer: SocketAddr) -> Response<Body> {
    if !same_origin(&req) {
        return forbidden("the sign-in did not come from this console (Origin); reload the page");
    }
    let pre = cookie(req.headers(), PRE_COOKIE);
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = match body::read_limited(req.into_body(), MAX_FORM).await {
        Ok(b) => b,
        Err(e) => {
            return body::status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("could not read the sign-in form: {e}"),
            )
        }
    };
    let fields = super::pairs(&String::from_utf8_lossy(&bytes));
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let next = safe_next(Some(&field("next")));
    let presented = field("csrf");
    if !pre.is_some_and(|p| !p.is_empty() && constant_time_eq(p.as_bytes(), presented.as_bytes())) {
        return form(
            &gateway,
            StatusCode::FORBIDDEN,
            &next,
            &field("username"),
            Some("The sign-in form expired; try again."),
        );
    }
    let (user, password) = (field("username"), field("password"));
    if user.is_empty() || password.is_empty() {
        return form(
            &gateway,
            StatusCode::BAD_REQUEST,
            &next,
            &user,
            Some("Enter a username and a password."),
        );
    }
    match password_login(
        &gateway,
        user.clone(),
        password,
        None,
        peer,
        &user_agent,
        LoginVia::Console,
    )
    .await
    {
        Ok(done) => {
            let mut resp = super::redirect(&next);
            let max_age = ((done.expires_us - crate::audit::model::now_us()) / 1_000_000).max(0);
            set_cookie(
                &mut resp,
                &format!(
                    "{SESSION_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}",
                    done.token
                ),
            );
            set_cookie(&mut resp, &expired(PRE_COOKIE));
            resp
        }
        Err(failure) => {
            let mut resp = form(
                &gateway,
                failure.status(),
                &next,
                &user,
                Some(&failure.message()),
            );
            if let LoginFailure::Throttled(wait) = failure {
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    crate::gateway::throttle::retry_after_secs(wait).into(),
                );
            }
            resp
        }
    }
}

pub async fn signout(gateway: &Gateway, req: Request<Body>) -> Response<Body> {
    if !same_origin(&req) {
        return forbidden("the sign-out did not come from this console (Origin)");
    }
    let Some(viewer) = signed_in(gateway, req.headers()) else {
        let mut resp = super::redirect("/signin");
        set_cookie(&mut resp, &expired(SESSION_COOKIE));
        return resp;
    };
    let bytes = body::read_limited(req.into_body(), MAX_FORM)
        .await
        .unwrap_or_default();
    let fields = super::pairs(&String::from_utf8_lossy(&bytes));
    let presented = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if !constant_time_eq(presented.as_bytes(), viewer.csrf.as_bytes()) {
        return forbidden("the sign-out form has no valid CSRF token; reload the page");
    }
    if let Err(err) = gateway.users.revoke_session(&viewer.session.id) {
        tracing::error!("could not end a console session: {err}");
        return body::status_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "the session could not be ended; see the gateway's log",
        );
    }
    tracing::info!(user = %viewer.session.user, "console sign-out");
    let mut resp = super::redirect("/signin");
    set_cookie(&mut resp, &expired(SESSION_COOKIE));
    resp
}

/// `GET /console/session`: answers `401` as soon as the session ends (revoked, expired, its
/// user removed), or `200` after a while if it did not: every open page keeps one waiting, so
/// it shows that it is signed out within a second of a revocation.
pub async fn watch_session(gateway: Arc<Gateway>, req: Request<Body>) -> Response<Body> {
    let deadline = tokio::time::Instant::now() + WATCH_WAIT;
    loop {
        if signed_in(&gateway, req.headers()).is_none() {
            return body::status_response(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "the console session ended; sign in again",
            );
        }
        if tokio::time::Instant::now() >= deadline {
            return body::json_response(StatusCode::OK, &serde_json::json!({"signedIn": true}));
        }
        tokio::time::sleep(WATCH_STEP).await;
    }
}

fn forbidden(message: &str) -> Response<Body> {
    body::status_response(StatusCode::FORBIDDEN, "Forbidden", message)
}

fn expired(name: &str) -> String {
    format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn set_cookie(resp: &mut Response<Body>, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn random_token() -> String {
    use rand::RngCore;
    let mut raw = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_console() {
        assert_eq!(safe_next(Some("/access?x=1")), "/access?x=1");
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/\\evil",
            "",
            "/signin",
        ] {
            assert_eq!(safe_next(Some(bad)), "/audit/kubectl", "{bad}");
        }
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_session() {
        assert_eq!(csrf_of("ztk_a"), csrf_of("ztk_a"));
        assert_ne!(csrf_of("ztk_a"), csrf_of("ztk_b"));
        assert_eq!(csrf_of("ztk_a").len(), 64);
    }

    #[test]
    fn origin_must_be_this_host_over_https() {
        let req = |origin: &str| {
            Request::builder()
                .uri("/signin")
                .header(header::HOST, "gw.example:8443")
                .header(header::ORIGIN, origin)
                .body(())
                .unwrap()
        };
        assert!(same_origin(&req("https://gw.example:8443")));
        assert!(!same_origin(&req("https://evil.example")));
        assert!(!same_origin(&req("http://gw.example:8443")));
        let none = Request::builder()
            .uri("/signin")
            .header(header::HOST, "gw.example:8443")
            .body(())
            .unwrap();
        assert!(!same_origin(&none));
    }
}
