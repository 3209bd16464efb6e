//! The one HTTP body type used by every server and client in ztk, and small response helpers.
//!
//! Everything is streamed: a `Body` is a boxed stream of chunks, so a relayed watch or log
//! stream never sits in memory whole.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed HTTP body.
pub type Body = BoxBody<Bytes, BodyError>;

/// Why a body stream failed. A concrete type rather than a bare `Box<dyn Error>`: rustc cannot
/// prove hyper's `Into<Box<dyn Error>>` bounds for a boxed error inside generic async code.
#[derive(Debug)]
pub struct BodyError(pub BoxError);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl BodyError {
    pub fn new(err: impl Into<BoxError>) -> BodyError {
        BodyError(err.into())
    }
}

/// A body holding `data` in full (small, generated answers only).
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Boxes any body whose error converts into `BoxError` (hyper's `Incoming` included).
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(BodyError::new).boxed()
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A Kubernetes `Status` object, which kubectl prints as `error: <message>` (or
/// `Error from server (<Reason>): <message>`).
pub fn status_value(code: StatusCode, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    })
}

/// A Kubernetes `Status` failure response.
pub fn status_response(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(code, &status_value(code, reason, message))
}

/// Reads a whole (small) request body, refusing anything over `limit` bytes.
pub async fn read_limited(body: Body, limit: usize) -> Result<Bytes, String> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => Err(err.to_string()),
    }
}

/// A refusal made by ztk itself (not relayed from a cluster): a `Status` that also carries its
/// message in a `Warning: 299` header. kubectl prints warnings on every response, while during
/// discovery it replaces a 401's message with a generic one and a 403's with "unknown".
pub fn refusal(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let mut resp = status_response(code, reason, message);
    if let Some(value) = warning_value(message) {
        resp.headers_mut().insert(header::WARNING, value);
    }
    resp
}

/// `299 - "text"` (RFC 7234 warn-code 299, the form the apiserver uses).
fn warning_value(message: &str) -> Option<HeaderValue> {
    let text: String = message
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect::<String>()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    HeaderValue::from_str(&format!("299 - \"{text}\"")).ok()
}
