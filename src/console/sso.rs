//! The console's **Sign in with SSO**: the OpenID Connect authorization code flow with the
//! gateway as a confidential client (`oidc::sso`: state, nonce and PKCE). `/oidc/start` sends
//! the browser to the provider with a state also kept in a cookie (`SameSite=Lax`: the
//! provider's redirect back is a cross-site navigation), `/oidc/callback` checks that state,
//! redeems the code and makes the web session as the password sign-in does.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use maud::html;

use super::auth;
use super::layout;
use crate::body::Body;
use crate::gateway::api::{sso_login, LoginVia};
use crate::gateway::users::SessionMethod;
use crate::gateway::Gateway;

/// The cookie that binds a sign-in at the provider to this browser.
const STATE_COOKIE: &str = "__Host-ztk-oidc";

/// The callback URL: as configured, or on the host the browser used.
fn redirect_uri<B>(gateway: &Gateway, req: &Request<B>) -> Option<String> {
    let sso = gateway.sso.as_ref()?;
    if let Some(url) = &sso.config.redirect_url {
        return Some(url.clone());
    }
    let host = auth::request_host(req)?;
    Some(format!("https://{host}/oidc/callback"))
}

fn problem(status: StatusCode, message: &str) -> Response<Body> {
    super::html(
        status,
        layout::page(
            "Sign-in failed",
            None,
            layout::Nav::None,
            html! {
                section.signin aria-labelledby="failed-title" {
                    h1 #failed-title { "Single sign-on did not work" }
                    p.error role="alert" { (message) }
                    p { a href="/signin" { "Back to sign-in" } }
                }
            },
        ),
    )
}

/// `GET /oidc/start?next=PATH`.
pub async fn start(gateway: Arc<Gateway>, req: Request<Body>) -> Response<Body> {
    let (Some(sso), Some(redirect)) = (gateway.sso.clone(), redirect_uri(&gateway, &req)) else {
        return problem(StatusCode::NOT_FOUND, "This gateway has no single sign-on.");
    };
    let query = super::pairs(req.uri().query().unwrap_or(""));
    let next = auth::safe_next(
        query
            .iter()
            .find(|(k, _)| k == "next")
            .map(|(_, v)| v.as_str()),
    );
    match sso.begin(&redirect, &next).await {
        Ok((url, state)) => {
            let mut resp = super::redirect(&url);
            set_cookie(
                &mut resp,
                &format!(
                    "{STATE_COOKIE}={state}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600"
                ),
            );
            resp
        }
        Err(err) => {
            tracing::warn!("SSO sign-in could not start: {err}");
            problem(StatusCode::SERVICE_UNAVAILABLE, &err.to_string())
        }
    }
}

/// `GET /oidc/callback?code=…&state=…` (or `?error=…`).
pub async fn callback(
    gateway: Arc<Gateway>,
    req: Request<Body>,
    peer: SocketAddr,
) -> Response<Body> {
    let Some(sso) = gateway.sso.clone() else {
        return problem(StatusCode::NOT_FOUND, "This gateway has no single sign-on.");
    };
    let query = super::pairs(req.uri().query().unwrap_or(""));
    let get = |k: &str| {
        query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if let Some(error) = get("error") {
        let description = get("error_description").unwrap_or_default();
        return problem(
            StatusCode::UNAUTHORIZED,
            &format!(
                "The provider refused the sign-in: {} {}",
                layout::printable(&error),
                layout::printable(&description)
            ),
        );
    }
    let (Some(code), Some(state)) = (get("code"), get("state")) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "The provider's answer has no code and state.",
        );
    };
    // The state must be the one this browser started with (no sign-in forced on a victim).
    let ours = auth::cookie(req.headers(), STATE_COOKIE);
    if !ours.is_some_and(|s| {
        crate::client::credential::constant_time_eq(s.as_bytes(), state.as_bytes())
    }) {
        return problem(
            StatusCode::FORBIDDEN,
            "This sign-in was not started in this browser, or it expired; start again.",
        );
    }
    let finished = sso.finish(&state, &code).await;
    let (identity, next) = match finished {
        Ok((identity, next)) => (Ok(identity), next),
        Err(err) => (Err(err), "/audit/kubectl".to_string()),
    };
    match sso_login(
        &gateway,
        identity,
        SessionMethod::SsoCode,
        None,
        peer,
        &user_agent,
        LoginVia::Console,
    )
    .await
    {
        Ok(done) => {
            // A page, not a redirect: the browser arrived here from the provider (cross-site),
            // so a redirect would not send the new SameSite=Strict cookie; the refresh below is
            // a navigation from this site.
            let next = auth::safe_next(Some(&next));
            let mut resp = super::html(
                StatusCode::OK,
                html! {
                    (maud::DOCTYPE)
                    html lang="en" {
                        head {
                            meta charset="utf-8";
                            meta http-equiv="refresh" content=(format!("0;url={next}"));
                            title { "Signed in · ztk" }
                        }
                        body { p { "Signed in. " a href=(next) { "Continue" } } }
                    }
                },
            );
            let max_age = ((done.expires_us - crate::audit::model::now_us()) / 1_000_000).max(0);
            set_cookie(
                &mut resp,
                &format!(
                    "{}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}",
                    auth::SESSION_COOKIE,
                    done.token
                ),
            );
            set_cookie(
                &mut resp,
                &format!("{STATE_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"),
            );
            resp
        }
        Err(failure) => problem(failure.status(), &failure.message()),
    }
}

fn set_cookie(resp: &mut Response<Body>, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}
