//! `ztk login --sso`: the CLI signs in at the gateway's OpenID provider as a public client and
//! hands the ID token to the gateway, which verifies it and makes the session. Two flows: the
//! authorization code flow with PKCE (S256) on a loopback redirect (`127.0.0.1`, a random port,
//! `state` checked), and the device authorization grant (RFC 8628) for hosts without a browser.
//! The provider's tokens are not kept: the gateway's session is what the client holds.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::mpsc;

use super::provider::{self, Http, OidcError, Provider};
use super::sso::oauth_error;
use crate::protocol::OidcInfo;

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error(transparent)]
    Provider(#[from] OidcError),
    #[error("cannot listen on a loopback port for the provider's redirect: {0}")]
    Listen(std::io::Error),
    #[error("no sign-in within {0} s; run `ztk login --sso` again")]
    Timeout(u64),
    #[error("the provider refused the sign-in: {0}")]
    Refused(String),
    #[error(
        "the provider has no device authorization endpoint; use `ztk login --sso` without --device"
    )]
    NoDeviceFlow,
    #[error("the provider's answer lacks {0}")]
    Missing(&'static str),
}

/// An ID token, and the nonce the sign-in sent (the code flow).
pub struct Signed {
    pub id_token: String,
    pub nonce: Option<String>,
}

async fn discover(info: &OidcInfo) -> Result<Provider, FlowError> {
    Ok(Provider::discover(&info.issuer, Http::new(None)?).await?)
}

fn id_token_of(answer: &Value) -> Result<String, FlowError> {
    answer
        .get("id_token")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or(FlowError::Missing(
            "id_token (is `openid` among the scopes?)",
        ))
}

/// Opens `url` in the user's browser; false when no opener ran.
pub fn open_browser(url: &str) -> bool {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

const DONE_PAGE: &str = "<!doctype html><meta charset=utf-8><title>ztk</title><p>Signed in to ztk. You can close this tab and go back to the terminal.</p>";

/// The code flow on a loopback redirect. `show` gets the URL to open (printed, and opened in
/// the browser unless `no_browser`).
pub async fn code_flow(
    info: &OidcInfo,
    no_browser: bool,
    wait: Duration,
    show: impl FnOnce(&str, bool),
) -> Result<Signed, FlowError> {
    let provider = discover(info).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(FlowError::Listen)?;
    let port = listener.local_addr().map_err(FlowError::Listen)?.port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let state = provider::random_token(24);
    let nonce = provider::random_token(24);
    let (verifier, challenge) = provider::pkce();
    let url = provider::authorization_url(
        &provider.meta,
        &info.client_id,
        &redirect_uri,
        &info.scopes.join(" "),
        &state,
        &nonce,
        &challenge,
    );
    let opened = !no_browser && open_browser(&url);
    show(&url, opened);

    // The redirect: GET /callback?code=…&state=… (or ?error=…); anything else is a 404.
    let (tx, mut rx) = mpsc::channel::<Result<String, String>>(1);
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    let state = state.clone();
                    async move {
                        let pairs = crate::console::pairs(req.uri().query().unwrap_or(""));
                        let get = |k: &str| {
                            pairs
                                .iter()
                                .find(|(key, _)| key == k)
                                .map(|(_, v)| v.clone())
                        };
                        let (status, text, outcome) = if req.uri().path() != "/callback" {
                            (StatusCode::NOT_FOUND, "not found".to_string(), None)
                        } else if get("state").as_deref() != Some(state.as_str()) {
                            (StatusCode::BAD_REQUEST, "This sign-in is not the one ztk started (state); run ztk login --sso again.".into(), None)
                        } else if let Some(error) = get("error") {
                            let e =
                                format!("{error} {}", get("error_description").unwrap_or_default());
                            (
                                StatusCode::UNAUTHORIZED,
                                format!("The provider refused the sign-in: {e}"),
                                Some(Err(e)),
                            )
                        } else if let Some(code) = get("code") {
                            (StatusCode::OK, DONE_PAGE.to_string(), Some(Ok(code)))
                        } else {
                            (StatusCode::BAD_REQUEST, "no code".into(), None)
                        };
                        if let Some(outcome) = outcome {
                            let _ = tx.send(outcome).await;
                        }
                        let mut resp = Response::new(Full::new(Bytes::from(text)));
                        *resp.status_mut() = status;
                        resp.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("text/html; charset=utf-8"),
                        );
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let outcome = tokio::time::timeout(wait, rx.recv()).await;
    server.abort();
    let code = match outcome {
        Err(_) => return Err(FlowError::Timeout(wait.as_secs())),
        Ok(None) => return Err(FlowError::Refused("the redirect listener stopped".into())),
        Ok(Some(Err(e))) => return Err(FlowError::Refused(e)),
        Ok(Some(Ok(code))) => code,
    };
    let (status, answer) = provider
        .http
        .post_form(
            &provider.meta.token_endpoint,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &redirect_uri),
                ("code_verifier", &verifier),
                ("client_id", &info.client_id),
            ],
            None,
        )
        .await?;
    if !status.is_success() {
        return Err(FlowError::Refused(oauth_error(&answer)));
    }
    Ok(Signed {
        id_token: id_token_of(&answer)?,
        nonce: Some(nonce),
    })
}

/// What the user is told to do in the device flow.
pub struct DevicePrompt<'a> {
    pub verification_uri: &'a str,
    pub user_code: &'a str,
    pub complete: Option<&'a str>,
    pub expires_in: u64,
}

/// The device authorization grant: `show` gets the URL and code; then the token endpoint is
/// polled at the provider's interval (longer after `slow_down`) until the user finished.
pub async fn device_flow(
    info: &OidcInfo,
    show: impl FnOnce(&DevicePrompt),
) -> Result<Signed, FlowError> {
    let provider = discover(info).await?;
    let endpoint = provider
        .meta
        .device_authorization_endpoint
        .clone()
        .ok_or(FlowError::NoDeviceFlow)?;
    let scope = info.scopes.join(" ");
    let (status, answer) = provider
        .http
        .post_form(
            &endpoint,
            &[("client_id", &info.client_id), ("scope", &scope)],
            None,
        )
        .await?;
    if !status.is_success() {
        return Err(FlowError::Refused(oauth_error(&answer)));
    }
    let text = |k: &'static str| {
        answer
            .get(k)
            .and_then(Value::as_str)
            .ok_or(FlowError::Missing(k))
    };
    let device_code = text("device_code")?.to_string();
    let user_code = text("user_code")?;
    let verification_uri = text("verification_uri")?;
    let expires_in = answer
        .get("expires_in")
        .and_then(Value::as_u64)
        .unwrap_or(600);
    let mut interval = answer
        .get("interval")
        .and_then(Value::as_u64)
        .unwrap_or(5)
        .max(1);
    show(&DevicePrompt {
        verification_uri,
        user_code,
        complete: answer
            .get("verification_uri_complete")
            .and_then(Value::as_str),
        expires_in,
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(expires_in);
    loop {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        if tokio::time::Instant::now() >= deadline {
            return Err(FlowError::Timeout(expires_in));
        }
        let (status, answer) = provider
            .http
            .post_form(
                &provider.meta.token_endpoint,
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                    ("device_code", &device_code),
                    ("client_id", &info.client_id),
                ],
                None,
            )
            .await?;
        if status.is_success() {
            return Ok(Signed {
                id_token: id_token_of(&answer)?,
                nonce: None,
            });
        }
        match answer.get("error").and_then(Value::as_str) {
            Some("authorization_pending") => {}
            // RFC 8628 3.5: five seconds more for this and every later request.
            Some("slow_down") => interval += 5,
            _ => return Err(FlowError::Refused(oauth_error(&answer))),
        }
    }
}
