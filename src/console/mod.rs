//! The web console, served by the gateway on its own port beside `/k8s/...` and `/ztk/v1/...`:
//! sign-in, System › Audit Logs › KubeCTL (commands or API calls, every filter of the shared
//! `audit::Filter` as the URL query, live, CSV export of the whole filtered set), and "who can
//! do what".
//!
//! Pages are rendered on the server (`maud`: compile-time templates that escape every value),
//! so each page is one request, a link reproduces a view and Back works without a client-side
//! router. One small script (`assets/console.js`, no framework) adds the live rows, the pause
//! switch and the signed-out notice. Everything is inside the binary (`assets`); the
//! Content-Security-Policy allows nothing but this origin's own files.

mod access;
mod assets;
mod audit;
mod auth;
mod insights;
mod layout;
mod shell;
mod sso;

pub use auth::csrf_of;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use crate::body::{self, Body};
use crate::gateway::Gateway;

/// What the console keeps between requests.
#[derive(Default)]
pub struct State {
    /// The suggested filter values, cached.
    suggestions: audit::Suggestions,
}

/// The paths the console answers (everything else the gateway does not route is a 404 page).
pub fn serves(path: &str) -> bool {
    path == "/"
        || path == "/signin"
        || path == "/signout"
        || path == "/access"
        || path == "/shell"
        || path == "/shell/socket"
        || path == "/oidc/start"
        || path == "/oidc/callback"
        || path.starts_with("/audit/")
        || path.starts_with("/assets/")
        || path.starts_with("/console/")
        || path == "/favicon.ico"
}

/// Answers one console request, with the security headers on every answer.
pub async fn handle(gateway: Arc<Gateway>, req: Request<Body>, peer: SocketAddr) -> Response<Body> {
    let mut resp = route(gateway, req, peer).await;
    secure(resp.headers_mut());
    resp
}

async fn route(gateway: Arc<Gateway>, req: Request<Body>, peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if let Some(name) = path.strip_prefix("/assets/") {
        return assets::serve(name, &method);
    }
    if path == "/favicon.ico" {
        return assets::serve("icon.svg", &method);
    }
    match (method.clone(), path.as_str()) {
        (Method::GET | Method::HEAD, "/signin") => auth::signin_page(&gateway, &req),
        (Method::POST, "/signin") => auth::signin(gateway, req, peer).await,
        (Method::POST, "/signout") => auth::signout(&gateway, req).await,
        (Method::GET, "/console/session") => auth::watch_session(gateway, req).await,
        (Method::GET, "/shell/socket") => shell::socket(gateway, req, peer).await,
        (Method::GET, "/oidc/start") => sso::start(gateway, req).await,
        (Method::GET, "/oidc/callback") => sso::callback(gateway, req, peer).await,
        (Method::GET | Method::HEAD, "/") => match auth::signed_in(&gateway, req.headers()) {
            Some(_) => redirect("/audit/kubectl"),
            None => auth::signin_page(&gateway, &req),
        },
        (Method::GET | Method::HEAD, page) => {
            let Some(who) = auth::signed_in(&gateway, req.headers()) else {
                return if page.starts_with("/console/") || page.ends_with(".csv") {
                    body::status_response(
                        StatusCode::UNAUTHORIZED,
                        "Unauthorized",
                        "the console session ended; sign in again",
                    )
                } else {
                    auth::to_signin(&req)
                };
            };
            let query = req.uri().query().unwrap_or("").to_string();
            match page {
                "/audit/kubectl" => audit::page(&gateway, &who, &query).await,
                "/audit/kubectl/export.csv" => audit::export(&gateway, &who, &query),
                "/audit/insights" => insights::page(&gateway, &who, &query).await,
                "/console/live" => audit::live(gateway.clone(), &who, &query, req.headers()).await,
                "/access" => access::page(&gateway, &who, &query),
                "/shell" => shell::page(&gateway, &who, &query),
                _ => not_found(&who),
            }
        }
        (
            _,
            "/signin" | "/signout" | "/" | "/access" | "/shell" | "/audit/kubectl"
            | "/audit/insights",
        ) => {
            let mut resp = Response::new(body::full("method not allowed\n"));
            *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            resp
        }
        _ => match auth::signed_in(&gateway, req.headers()) {
            Some(who) => not_found(&who),
            None => auth::to_signin(&req),
        },
    }
}

fn not_found(who: &auth::Viewer) -> Response<Body> {
    let page = layout::page(
        "Not found",
        Some(who),
        layout::Nav::None,
        maud::html! {
            h1 { "Not found" }
            p { "The console has no such page. " a href="/audit/kubectl" { "Audit Logs › KubeCTL" } }
        },
    );
    html(StatusCode::NOT_FOUND, page)
}

/// An HTML answer.
pub(crate) fn html(status: StatusCode, markup: maud::Markup) -> Response<Body> {
    let mut resp = Response::new(body::full(markup.into_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// `303 See Other` to a path of this console.
pub(crate) fn redirect(to: &str) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// The headers every console answer carries: a Content-Security-Policy that allows only this
/// origin's own scripts, styles, images and requests (no inline script or style, no frames),
/// no MIME sniffing, HSTS, no referrer to other sites, and no caching of pages that hold
/// audit data (assets set their own `Cache-Control`).
fn secure(headers: &mut HeaderMap) {
    // A page that needs more (the shell's terminal styles) sets its own, stricter elsewhere.
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; \
             base-uri 'none'",
        ));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

use http::HeaderName;

/// The `key=value` pairs of a URL query or a form body, decoded (`+` is a space).
pub(crate) fn pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Encodes one query value or key.
pub(crate) fn encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b':');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// Builds a query string from pairs.
pub(crate) fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .into_iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_and_encode_back() {
        let p = pairs("namespace=prod&verb=delete&command=get+pods%2C%20x&since=24h");
        assert_eq!(
            p,
            vec![
                ("namespace".into(), "prod".into()),
                ("verb".into(), "delete".into()),
                ("command".into(), "get pods, x".into()),
                ("since".into(), "24h".into()),
            ]
        );
        let back = query_string(p.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(pairs(&back), p);
        assert_eq!(encode("<a&b>"), "%3Ca%26b%3E");
    }
}
