//! The gateway's audit integrity: periodic signed checkpoints of the audit chain, what the
//! gateway answers while it cannot write audit records (`audit_mode`), and the administrators'
//! health and verify endpoints.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};

use super::api::{internal, session_of};
use super::Gateway;
use crate::audit::chain::SigningKey;
use crate::audit::AuditStore;
use crate::body::{self, Body};
use crate::protocol::{AuditHealth, AuditVerifyAnswer};

/// The refusal of a fail-closed gateway whose audit store does not take writes.
pub const AUDIT_DOWN: &str = "ztk: the gateway cannot write its audit log, and its audit_mode is \"fail-closed\": it refuses requests until the log takes writes again; retry later, or tell the gateway's administrator";

/// Signs the chain's head every `every` when it moved (off the request path).
pub async fn checkpoint_loop(store: AuditStore, key: Arc<SigningKey>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        sign_head(&store, &key).await;
    }
}

/// Signs the head now if it moved since the last checkpoint.
pub async fn sign_head(store: &AuditStore, key: &Arc<SigningKey>) {
    let (store, key) = (store.clone(), key.clone());
    match tokio::task::spawn_blocking(move || store.checkpoint(&key)).await {
        Ok(Ok(Some(cp))) => tracing::debug!(seq = cp.seq, "audit checkpoint signed"),
        Ok(Ok(None)) => {}
        Ok(Err(err)) => tracing::error!("could not sign an audit checkpoint: {err}"),
        Err(err) => tracing::error!("audit checkpoint task failed: {err}"),
    }
}

impl Gateway {
    pub fn audit_health(&self) -> AuditHealth {
        AuditHealth {
            audit_mode: self.audit_mode.as_str().into(),
            writer: self.audit.stats().status(),
            public_key: hex::encode(self.audit_key.public_key()),
        }
    }
}

/// The session of an administrator, or the answer that refuses the request.
#[allow(clippy::result_large_err)]
fn admin(gateway: &Gateway, req: &Request<Body>) -> Result<(), Response<Body>> {
    let session = session_of(gateway, req)?;
    if session
        .groups
        .iter()
        .any(|g| gateway.admin_groups.contains(g))
    {
        Ok(())
    } else {
        Err(body::status_response(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "{} may not verify the gateway's audit log or read its health; administrators are in the groups {:?}",
                session.user, gateway.admin_groups
            ),
        ))
    }
}

pub fn health(gateway: &Gateway, req: &Request<Body>) -> Response<Body> {
    if let Err(resp) = admin(gateway, req) {
        return resp;
    }
    json(&gateway.audit_health())
}

/// Verifies the gateway's store against its own signing key and the other gateways'.
pub async fn verify(gateway: Arc<Gateway>, req: Request<Body>) -> Response<Body> {
    if let Err(resp) = admin(&gateway, &req) {
        return resp;
    }
    let store = gateway.audit_store.clone();
    let keys = gateway.audit_keys.clone();
    match tokio::task::spawn_blocking(move || {
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        store.verify(&keys)
    })
    .await
    {
        Ok(Ok(report)) => json(&AuditVerifyAnswer {
            report,
            health: gateway.audit_health(),
        }),
        Ok(Err(err)) => internal(err),
        Err(err) => internal(err),
    }
}

fn json<T: serde::Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_value(value) {
        Ok(v) => body::json_response(StatusCode::OK, &v),
        Err(err) => internal(err),
    }
}

/// How often the gateway rolls up its new calls for latency and activity statistics
/// (`audit::stats`); what is not rolled up yet is read from the calls themselves.
const ROLLUP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Rolls up the gateway's calls at start (everything a store of an older version holds, in
/// steps of 50,000) and then every minute.
pub async fn rollup_loop(store: crate::audit::AuditStore) {
    let mut ticks = tokio::time::interval(ROLLUP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.roll_up()).await {
            Ok(Ok(n)) if n > 0 => tracing::debug!(calls = n, "audit calls rolled up"),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!("could not roll up audit calls: {err}"),
            Err(err) => tracing::warn!("audit roll-up panicked: {err}"),
        }
    }
}

/// Writes the calls the gateway answered but lost its record of (killed before its writer
/// committed them) from the clients' shipped records (`audit::reconcile`), every few seconds.
pub async fn reconcile_loop(
    store: crate::audit::AuditStore,
    sink: crate::audit::AuditSink,
    grace: std::time::Duration,
) {
    let every = (grace / 3).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
    );
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prepared = false;
    loop {
        ticks.tick().await;
        if !prepared {
            let s = store.clone();
            match tokio::task::spawn_blocking(move || crate::audit::reconcile::prepare(&s)).await {
                Ok(Ok(())) => prepared = true,
                Ok(Err(err)) => {
                    tracing::warn!(
                        "could not index the calls for reconciling: {err}; trying again"
                    );
                    continue;
                }
                Err(err) => {
                    tracing::warn!("indexing the calls for reconciling panicked: {err}");
                    continue;
                }
            }
        }
        let (s, k) = (store.clone(), sink.clone());
        let before = crate::audit::reconcile::cutoff(grace);
        match tokio::task::spawn_blocking(move || {
            crate::audit::reconcile::reconcile(&s, &k, before)
        })
        .await
        {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::warn!(
                calls = n,
                "recovered lost gateway records from the clients' records"
            ),
            Ok(Err(err)) => tracing::warn!("could not reconcile the clients' records: {err}"),
            Err(err) => tracing::warn!("reconciling the clients' records panicked: {err}"),
        }
    }
}
