//! `/shell`: kubectl in the browser. The page picks a cluster the viewer may reach and a
//! default namespace (`/shell?cluster=NAME&namespace=NS` links straight to one), and holds the
//! terminal (xterm.js, shipped inside the binary, with its DOM renderer and screen-reader mode
//! so the text is in the page). `/shell/socket` carries it (`crate::shell::session`).

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use maud::html;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::auth::{self, Viewer};
use super::layout::{self, printable, Nav};
use crate::body::{self, Body};
use crate::gateway::rbac::Identity;
use crate::gateway::Gateway;
use crate::shell::{reachable, valid_namespace};

fn identity(viewer: &Viewer) -> Identity {
    Identity {
        user: viewer.session.user.clone(),
        groups: viewer.session.groups.clone(),
    }
}

/// The clusters the viewer may open a shell on, with their default namespaces.
fn clusters(gateway: &Gateway, viewer: &Viewer) -> Vec<(String, String)> {
    let names: Vec<String> = gateway.clusters.keys().cloned().collect();
    reachable(&gateway.policy(), &identity(viewer), &names)
}

pub fn page(gateway: &Gateway, viewer: &Viewer, query: &str) -> Response<Body> {
    let q = super::pairs(query);
    let get = |k: &str| {
        q.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let reach = clusters(gateway, viewer);
    let asked = get("cluster");
    let chosen = reach
        .iter()
        .find(|(c, _)| *c == asked)
        .or_else(|| reach.first().filter(|_| asked.is_empty()))
        .cloned();
    let namespace = match get("namespace") {
        ns if ns.is_empty() => chosen
            .as_ref()
            .map(|(_, ns)| ns.clone())
            .unwrap_or_default(),
        ns => ns,
    };
    let mut status = StatusCode::OK;
    let problem = if let Err(why) = &gateway.shell.kubectl {
        status = StatusCode::SERVICE_UNAVAILABLE;
        Some(format!(
            "The web shell is not available on this gateway: {why}."
        ))
    } else if reach.is_empty() {
        Some("No role is bound to you on any cluster, so there is nothing to open a shell on. Ask an administrator for a binding.".to_string())
    } else if chosen.is_none() {
        status = StatusCode::NOT_FOUND;
        Some(format!(
            "You have no access to a cluster named {:?} (or it does not exist); pick one below.",
            printable(&asked)
        ))
    } else if !valid_namespace(&namespace) {
        status = StatusCode::BAD_REQUEST;
        Some(format!(
            "{:?} is not a namespace name (lowercase letters, digits and '-', at most 63).",
            printable(&namespace)
        ))
    } else {
        None
    };
    let open = problem.is_none();
    let cluster = chosen.as_ref().map(|(c, _)| c.clone()).unwrap_or_default();
    let content = html! {
        nav.crumbs aria-label="Breadcrumb" { ol { li { "System" } li aria-current="page" { "kubectl shell" } } }
        h1 { "kubectl shell" }
        form.filters.shell-pick method="get" action="/shell" {
            div.fields {
                div.field {
                    label for="s-cluster" { "Cluster" }
                    select #s-cluster name="cluster" {
                        @for (c, _) in &reach {
                            option value=(c) selected[*c == cluster] { (c) }
                        }
                    }
                }
                div.field {
                    label for="s-namespace" { "Namespace" }
                    input #s-namespace name="namespace" type="text" value=(namespace) required
                        pattern="[a-z0-9]([-a-z0-9]*[a-z0-9])?" maxlength="63";
                }
            }
            div.actions { button.primary type="submit" { "Open shell" } }
        }
        @if let Some(problem) = &problem {
            p.error role="alert" { (problem) }
        }
        @if open {
            section.shell aria-labelledby="term-title" {
                h2 #term-title .sr { "Terminal" }
                div.shell-bar {
                    span #shell-status role="status" { "Connecting…" }
                    span.spacer {}
                    span #manifest-state { "No manifest pasted" }
                    button #paste-manifest type="button" { "Paste manifest" }
                    button #clear-manifest type="button" hidden { "Clear manifest" }
                }
                div #terminal .shell-terminal
                    data-cluster=(cluster) data-namespace=(namespace) data-user=(viewer.session.user) {}
                p.hint {
                    "Type kubectl command lines (no shell: pipes, ; and redirections are refused). "
                    "Ctrl-C stops a command; ↑/↓ recall history. "
                    code { "-f -" } " reads the pasted manifest (or drop a YAML file on the terminal). "
                    "Every command is audited with access method Browser."
                }
                dialog #manifest-dialog aria-labelledby="manifest-title" {
                    form method="dialog" {
                        h2 #manifest-title { "Paste manifest" }
                        p { "The input of the next " code { "kubectl apply -f -" } ", " code { "create -f -" } " or " code { "diff -f -" } "." }
                        label for="manifest-text" { "Manifest (YAML or JSON)" }
                        textarea #manifest-text rows="16" cols="80" spellcheck="false" {}
                        div.actions {
                            button value="cancel" type="submit" { "Cancel" }
                            button.primary #manifest-use value="use" type="submit" { "Use manifest" }
                        }
                    }
                }
            }
        }
    };
    let mut resp = super::html(
        status,
        layout::page_with(
            "kubectl shell",
            Some(viewer),
            Nav::Shell,
            &["xterm.css", "xterm.js", "addon-fit.js", "shell.js"],
            content,
        ),
    );
    // xterm.js's DOM renderer sets its measured cell sizes and colours as styles at run time;
    // scripts stay limited to this origin's own files.
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self'; \
             connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; \
             base-uri 'none'",
        ),
    );
    resp
}

fn refuse(status: StatusCode, reason: &'static str, message: &str) -> Response<Body> {
    body::status_response(status, reason, message)
}

/// The terminal's WebSocket: same origin, a valid session cookie, a cluster the user may reach,
/// a free place under the limits; then the CSRF token as the first message (`session`).
pub async fn socket(
    gateway: Arc<Gateway>,
    mut req: Request<Body>,
    peer: SocketAddr,
) -> Response<Body> {
    if !auth::same_origin(&req) {
        return refuse(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "the shell opens only from this console's own pages (Origin)",
        );
    }
    let Some(token) = auth::cookie(req.headers(), auth::SESSION_COOKIE) else {
        return refuse(StatusCode::UNAUTHORIZED, "Unauthorized", "sign in first");
    };
    let Some(viewer) = auth::signed_in(&gateway, req.headers()) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the console session ended; sign in again",
        );
    };
    let h = req.headers();
    let is_upgrade = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (true, Some(key)) = (is_upgrade, key) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the shell's socket is a WebSocket",
        );
    };
    if gateway.shell.kubectl.is_err() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the web shell is not available on this gateway",
        );
    }
    let q = super::pairs(req.uri().query().unwrap_or(""));
    let get = |k: &str| {
        q.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (cluster, namespace) = (get("cluster"), get("namespace"));
    if !clusters(&gateway, &viewer)
        .iter()
        .any(|(c, _)| *c == cluster)
    {
        return refuse(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "you have no access to that cluster",
        );
    }
    if !valid_namespace(&namespace) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "namespace: not a namespace name",
        );
    }
    let place = match gateway.shell.open(&viewer.session.user) {
        Ok(place) => place,
        Err(message) => return refuse(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", &message),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let opened = crate::shell::session::Opened {
        token,
        session: viewer.session,
        cluster,
        namespace,
        source_ip: peer.ip().to_string(),
        place,
    };
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(crate::shell::session::websocket_config()),
        )
        .await;
        crate::shell::session::serve(gateway, ws, opened).await;
    });
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&crate::serve::websocket_accept(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}
