//! The loopback HTTPS proxy between kubectl and the gateway.
//!
//! kubectl talks to 127.0.0.1 over TLS (it sends credentials only over HTTPS) with a per-run
//! secret; the proxy checks it, tags each call with the command id and a request id, relays it
//! to the gateway with the user's session token, and records it in the local audit store.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use uuid::Uuid;

use crate::audit::{ApiCall, AuditSink};
use crate::body::{self, Body};
use crate::protocol::{COMMAND_ID_HEADER, REQUEST_ID_HEADER};
use crate::relay::Upstream;
use crate::tls;

/// What the proxy needs to relay and record one kubectl run's calls.
pub struct ProxyContext {
    pub upstream: Upstream,
    /// The credential kubectl must present (never the session token).
    pub secret: String,
    pub user: String,
    pub cluster: String,
    pub command_id: Option<Uuid>,
    pub sink: AuditSink,
    /// Calls relayed so far.
    pub calls: AtomicI64,
    /// Calls whose audit record is not yet handed to the sink.
    pub in_flight: AtomicI64,
    /// Signalled whenever a call finishes.
    pub finished: tokio::sync::Notify,
}

impl ProxyContext {
    pub fn new(
        upstream: Upstream,
        secret: String,
        user: String,
        cluster: String,
        command_id: Option<Uuid>,
        sink: AuditSink,
    ) -> ProxyContext {
        ProxyContext {
            upstream,
            secret,
            user,
            cluster,
            command_id,
            sink,
            calls: AtomicI64::new(0),
            in_flight: AtomicI64::new(0),
            finished: tokio::sync::Notify::new(),
        }
    }

    /// Waits until every call's record is handed over, or `timeout` passes (a stream kubectl
    /// left open is recorded when it closes).
    pub async fn wait_idle(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.in_flight.load(Ordering::Acquire) > 0 {
            let notified = self.finished.notified();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
    }
}

pub struct LocalProxy {
    pub addr: SocketAddr,
    /// The proxy's own CA, for kubectl's `certificate-authority-data`.
    pub ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl LocalProxy {
    /// Starts serving on an ephemeral loopback port.
    pub async fn start(ctx: Arc<ProxyContext>) -> Result<LocalProxy> {
        let ca = tls::Ca::generate("ztk local proxy CA")?;
        let leaf = ca.issue_server(&["127.0.0.1".into(), "localhost".into()])?;
        let server_tls = tls::server_config(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot open a loopback port for the local proxy")?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(crate::serve::serve_tls(
            listener,
            server_tls,
            move |req, peer| {
                let ctx = ctx.clone();
                async move { handle(ctx, req, peer.addr).await }
            },
        ));
        Ok(LocalProxy {
            addr,
            ca_pem: ca.cert_pem(),
            task,
        })
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// Compares secrets in constant time.
fn secret_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn handle(
    ctx: Arc<ProxyContext>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let req = req.map(body::boxed);
    let start = std::time::Instant::now();
    let uri = req.uri().clone();
    let mut call = ApiCall::begin(req.method(), &uri, uri.path(), req.headers(), peer.ip());
    call.user = ctx.user.clone();
    call.cluster = ctx.cluster.clone();
    call.command_id = ctx.command_id;
    call.request_id = Some(call.id);
    let id = call.id;
    let headers = req.headers();

    let authorized =
        crate::gateway::bearer(headers).is_some_and(|t| secret_matches(t, &ctx.secret));
    if !authorized {
        let message = "ztk: this local proxy serves only the kubectl that ztk started for it";
        call.refuse(401, "unauthenticated", message, start.elapsed());
        ctx.sink.record_call(call);
        return body::refusal(StatusCode::UNAUTHORIZED, "Unauthorized", message);
    }
    ctx.calls.fetch_add(1, Ordering::Relaxed);
    ctx.in_flight.fetch_add(1, Ordering::AcqRel);

    let mut extra = HeaderMap::new();
    if let Some(cmd) = ctx.command_id {
        if let Ok(v) = HeaderValue::from_str(&cmd.to_string()) {
            extra.insert(COMMAND_ID_HEADER, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        extra.insert(REQUEST_ID_HEADER, v);
    }
    let path_and_query = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .to_string();
    let done_ctx = ctx.clone();
    crate::relay::relay(
        &ctx.upstream,
        req,
        &path_and_query,
        extra,
        None,
        move |outcome| {
            call.finish(outcome);
            done_ctx.sink.record_call(call);
            done_ctx.in_flight.fetch_sub(1, Ordering::AcqRel);
            done_ctx.finished.notify_waiters();
        },
    )
    .await
}
