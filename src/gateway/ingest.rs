//! `POST /ztk/v1/audit/ingest`: the clients' audit records, in versioned, size-limited batches
//! (JSON, or the compact postcard encoding the client sends by default).
//!
//! Every record is checked before anything is written; the batch is then stored in one
//! transaction (`audit::ingest`). Answers: 200 with an `IngestAck` (also for a batch stored
//! before), 400 naming the first bad record, 403 for a record of another user, 413 for a batch
//! too large; in every refusal nothing is stored.

use std::sync::Arc;

use http::{header, Request, Response, StatusCode};

use super::Gateway;
use crate::audit::ingest::IngestError;
use crate::audit::model::now_us;
use crate::audit::{ApiCall, Command};
use crate::body::{self, Body};
use crate::protocol::{self, IngestAck, IngestBatch};

/// Records older than 2020 are not from ztk.
const MIN_TIME_US: i64 = 1_577_836_800_000_000;
/// How far ahead of the gateway's clock a client's may run.
const MAX_SKEW_US: i64 = 3_600_000_000;

pub async fn handle(gateway: Arc<Gateway>, req: Request<Body>) -> Response<Body> {
    let session = match gateway.authenticate(req.headers()) {
        Ok(s) => s,
        Err(message) => {
            return body::status_response(StatusCode::UNAUTHORIZED, "Unauthorized", &message)
        }
    };
    let compact = match req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
    {
        Some(protocol::INGEST_COMPACT) => true,
        Some(protocol::INGEST_JSON) | None => false,
        Some(other) => {
            return body::status_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &format!(
                    "content type {other:?} is not a batch encoding; send {} or {}",
                    protocol::INGEST_JSON,
                    protocol::INGEST_COMPACT
                ),
            )
        }
    };
    let started = std::time::Instant::now();
    let bytes = match body::read_limited(req.into_body(), protocol::MAX_INGEST_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return body::status_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &format!(
                    "the batch could not be read ({e}); batches are limited to {} bytes and {} records; nothing was stored",
                    protocol::MAX_INGEST_BODY,
                    protocol::MAX_INGEST_RECORDS
                ),
            )
        }
    };
    // Decoding and checking a batch (up to 0.5 MB, 2,000 records) and storing it take
    // milliseconds of CPU: off the async threads, which relay everyone's calls.
    let ingestor = gateway.ingestor.clone();
    let user = session.user.clone();
    let gw = gateway.clone();
    let stored = tokio::task::spawn_blocking(move || {
        // A refusal is boxed: a whole Response in the closure's Err would be large to move.
        let batch = decode(&bytes, compact)
            .map_err(|reason| Box::new(bad_request(format!("{reason}; nothing was stored"))))?;
        if batch.records() > protocol::MAX_INGEST_RECORDS {
            return Err(Box::new(body::status_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &format!(
                    "the batch holds {} records, more than {}; nothing was stored",
                    batch.records(),
                    protocol::MAX_INGEST_RECORDS
                ),
            )));
        }
        check(&batch, &user, now_us()).map_err(Box::new)?;
        // Within the user's allowance of records and bytes per minute (`[limits]`), or 429:
        // the client keeps the batch and sends it again after `Retry-After`.
        let size = bytes.len() as u64;
        if !gw.ingest_quota.fits(batch.records() as u64, size) {
            return Err(Box::new(body::status_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &format!("the batch ({} records, {size} bytes) is larger than a minute's allowance of the gateway (`[limits]` ingest_records_per_minute, ingest_bytes_per_minute); send smaller batches; nothing was stored", batch.records()),
            )));
        }
        if let Err(wait) = gw.ingest_quota.take(&user, batch.records() as u64, size, std::time::Instant::now()) {
            let secs = super::throttle::retry_after_secs(wait);
            tracing::warn!(user = %user, records = batch.records(), bytes = size, "audit batch over the user's ingest allowance; asked to retry in {secs} s");
            let mut resp = body::status_response(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                &format!("{user} shipped more audit records than the gateway takes per minute (`[limits]` ingest_records_per_minute, ingest_bytes_per_minute); nothing was stored, send the batch again in {secs} s"),
            );
            resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
            return Err(Box::new(resp));
        }
        // A command id is its first user's: calls already relayed under it by another user
        // make it theirs.
        for command in &batch.commands {
            let claim = gw.command_owners.claim(command.id, &user, now_us());
            if claim == super::owners::Claim::Foreign {
                return Err(Box::new(forbidden(format!(
                    "command {} has an id already in use by another user's records; a record may only be sent by its own user; nothing was stored",
                    command.id
                ))));
            }
        }
        let checked = started.elapsed();
        let t = std::time::Instant::now();
        let result = ingestor.ingest(&user, &batch.commands, &batch.calls);
        Ok((
            batch.batch_id,
            batch.records(),
            result,
            checked,
            t.elapsed(),
        ))
    })
    .await;
    match stored {
        Ok(Err(refusal)) => *refusal,
        Ok(Ok((batch_id, accepted, Ok(written), checked, took))) => {
            tracing::debug!(user = %session.user, %batch_id, accepted, ?checked, ?took, "audit batch stored");
            let ack = IngestAck {
                batch_id,
                accepted,
                written: written.calls + written.commands,
            };
            match serde_json::to_value(&ack) {
                Ok(v) => body::json_response(StatusCode::OK, &v),
                Err(e) => internal(e),
            }
        }
        Ok(Ok((_, _, Err(err @ IngestError::Foreign { .. }), _, _))) => forbidden(format!(
            "{err}; a record may only be sent by its own user; nothing was stored"
        )),
        Ok(Ok((_, _, Err(IngestError::Invalid(err)), _, _))) => {
            bad_request(format!("{err}; nothing was stored"))
        }
        Ok(Ok((_, _, Err(err @ (IngestError::Store(_) | IngestError::Db(_))), _, _))) => {
            tracing::error!("could not store an audit batch: {err}");
            body::status_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the gateway could not store the batch (see its log); nothing was stored, send it again later",
            )
        }
        Err(err) => internal(err),
    }
}

fn decode(bytes: &[u8], compact: bool) -> Result<IngestBatch, String> {
    if compact {
        return IngestBatch::from_compact(bytes);
    }
    #[derive(serde::Deserialize)]
    struct Version {
        version: Option<u32>,
    }
    match serde_json::from_slice::<IngestBatch>(bytes) {
        Ok(batch) if batch.version == protocol::INGEST_VERSION => Ok(batch),
        Ok(batch) => Err(unsupported(batch.version)),
        Err(err) => match serde_json::from_slice::<Version>(bytes) {
            Ok(Version {
                version: Some(v), ..
            }) if v != protocol::INGEST_VERSION => Err(unsupported(v)),
            _ => Err(format!("invalid JSON batch: {err}")),
        },
    }
}

fn unsupported(version: u32) -> String {
    format!(
        "batch version {version} is not supported (this gateway reads version {}); upgrade ztk",
        protocol::INGEST_VERSION
    )
}

/// Checks every record before anything is stored: the user first (403), then the content (400).
#[allow(clippy::result_large_err)]
fn check(batch: &IngestBatch, user: &str, now: i64) -> Result<(), Response<Body>> {
    let foreign = batch
        .commands
        .iter()
        .map(|c| ("command", c.id, &c.user))
        .chain(batch.calls.iter().map(|c| ("call", c.id, &c.user)))
        .find(|(_, _, u)| u.as_str() != user);
    if let Some((kind, id, owner)) = foreign {
        return Err(forbidden(format!(
            "{kind} {id} is a record of user {owner:?}, but this session is {user:?}; nothing was stored"
        )));
    }
    for c in &batch.commands {
        check_command(c, now)
            .map_err(|why| bad_request(format!("command {}: {why}; nothing was stored", c.id)))?;
    }
    for c in &batch.calls {
        check_call(c, now)
            .map_err(|why| bad_request(format!("call {}: {why}; nothing was stored", c.id)))?;
    }
    Ok(())
}

fn check_id(id: &uuid::Uuid) -> Result<(), String> {
    if id.get_version_num() != 7 {
        return Err(format!("the id {id} is not a UUIDv7"));
    }
    Ok(())
}

fn check_time(what: &str, t: i64, now: i64) -> Result<(), String> {
    if t < MIN_TIME_US || t > now + MAX_SKEW_US {
        return Err(format!(
            "{what} {} is not a plausible time",
            crate::audit::model::format_time_us(t)
        ));
    }
    Ok(())
}

fn check_command(c: &Command, now: i64) -> Result<(), String> {
    check_id(&c.id)?;
    check_time("the start", c.started_us, now)?;
    if let Some(end) = c.ended_us {
        check_time("the end", end, now)?;
        if end < c.started_us {
            return Err("it ends before it starts".into());
        }
    }
    if c.argv.is_empty() {
        return Err("argv is empty".into());
    }
    if c.cluster.is_empty() {
        return Err("the cluster is missing".into());
    }
    if c.api_calls < 0 {
        return Err("the call count is negative".into());
    }
    Ok(())
}

fn check_call(c: &ApiCall, now: i64) -> Result<(), String> {
    check_id(&c.id)?;
    check_time("the time", c.time_us, now)?;
    if c.request_id != Some(c.id) {
        return Err("a client's record must carry its own id as request id".into());
    }
    if let Some(cmd) = &c.command_id {
        check_id(cmd).map_err(|e| format!("command id: {e}"))?;
    }
    if c.cluster.is_empty() || c.method.is_empty() || c.decision.is_empty() {
        return Err("cluster, method and decision are required".into());
    }
    if c.status > 999 || c.duration_us < 0 {
        return Err("the status or the duration is out of range".into());
    }
    Ok(())
}

fn bad_request(message: String) -> Response<Body> {
    body::status_response(StatusCode::BAD_REQUEST, "BadRequest", &message)
}

fn forbidden(message: String) -> Response<Body> {
    body::status_response(StatusCode::FORBIDDEN, "Forbidden", &message)
}

fn internal(err: impl std::fmt::Display) -> Response<Body> {
    tracing::error!("audit ingest failed: {err}");
    body::status_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "the gateway failed to complete the request; see its log",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn call(user: &str) -> ApiCall {
        let id = Uuid::now_v7();
        ApiCall {
            id,
            request_id: Some(id),
            time_us: now_us(),
            user: user.into(),
            cluster: "dev".into(),
            method: "GET".into(),
            decision: "allow".into(),
            status: 200,
            ..Default::default()
        }
    }

    #[test]
    fn both_encodings_carry_the_same_batch_and_check_the_version() {
        let batch = IngestBatch {
            version: protocol::INGEST_VERSION,
            batch_id: Uuid::now_v7(),
            commands: vec![command("alice", "")],
            calls: vec![call("alice"), call("alice")],
        };
        let compact = batch.to_compact().unwrap();
        assert_eq!(decode(&compact, true).unwrap(), batch);
        let json = serde_json::to_vec(&batch).unwrap();
        assert!(compact.len() * 2 < json.len(), "compact is compact");
        assert_eq!(decode(&json, false).unwrap(), batch);
        let old = IngestBatch {
            version: 1,
            ..batch.clone()
        };
        assert!(decode(&old.to_compact().unwrap(), true)
            .unwrap_err()
            .contains("version 1 is not supported"));
        assert!(decode(br#"{"version": 9, "records": []}"#, false)
            .unwrap_err()
            .contains("version 9"));
        assert!(decode(b"\x02garbage", true).is_err());
        assert!(decode(b"{", false).unwrap_err().contains("invalid JSON"));
    }

    fn command(user: &str, reason: &str) -> Command {
        Command {
            id: Uuid::now_v7(),
            started_us: now_us(),
            ended_us: Some(now_us()),
            user: user.into(),
            cluster: "dev".into(),
            argv: vec!["kubectl".into(), "get".into(), "po".into()],
            command_line: "kubectl get po".into(),
            exit_code: reason.is_empty().then_some(0),
            api_calls: 2,
            access_method: crate::audit::AccessMethod::Browser,
            cwd: "/".into(),
            host: "h".into(),
            reason: reason.into(),
        }
    }

    /// A command as clients and gateways from before `Command::reason` encode it.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct V2Command {
        id: Uuid,
        started_us: i64,
        ended_us: Option<i64>,
        user: String,
        cluster: String,
        argv: Vec<String>,
        command_line: String,
        exit_code: Option<i32>,
        api_calls: i64,
        access_method: crate::audit::AccessMethod,
        cwd: String,
        host: String,
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct V2Batch {
        version: u32,
        batch_id: Uuid,
        commands: Vec<V2Command>,
        calls: Vec<ApiCall>,
    }

    #[test]
    fn compact_batches_read_across_the_reason_change_and_a_reason_goes_as_json() {
        let c = command("alice", "");
        let v2 = V2Command {
            id: c.id,
            started_us: c.started_us,
            ended_us: c.ended_us,
            user: c.user.clone(),
            cluster: c.cluster.clone(),
            argv: c.argv.clone(),
            command_line: c.command_line.clone(),
            exit_code: c.exit_code,
            api_calls: c.api_calls,
            access_method: c.access_method,
            cwd: c.cwd.clone(),
            host: c.host.clone(),
        };
        let calls = vec![call("alice")];
        let old = postcard::to_allocvec(&V2Batch {
            version: protocol::INGEST_VERSION,
            batch_id: Uuid::now_v7(),
            commands: vec![v2],
            calls: calls.clone(),
        })
        .unwrap();
        // An old client's batch reads here, without a reason.
        let read = decode(&old, true).unwrap();
        assert_eq!(read.commands, vec![c.clone()]);
        assert_eq!(read.calls, calls);
        // This client's batch is byte for byte what an old gateway reads.
        let batch = IngestBatch {
            commands: vec![c],
            ..read
        };
        assert_eq!(batch.to_compact().unwrap(), old);
        let back: V2Batch = postcard::from_bytes(&old).unwrap();
        assert_eq!(back.commands.len(), 1);

        // A reason does not fit the compact layout: such a batch goes as JSON (which old
        // gateways read too, ignoring the field), and is never sent compact.
        let refused = IngestBatch {
            commands: vec![
                command(
                    "alice",
                    "refused: kubectl config is not allowed in the web shell",
                ),
                command("alice", ""),
            ],
            ..batch.clone()
        };
        assert!(refused.to_compact().is_err());
        let sent = refused.encode(false).unwrap();
        assert_eq!(sent.content_type, protocol::INGEST_JSON);
        assert_eq!(decode(&sent.payload, false).unwrap(), refused);
        let json: serde_json::Value = serde_json::from_slice(&sent.payload).unwrap();
        assert!(json["commands"][0]["reason"].is_string());
        assert!(json["commands"][1].get("reason").is_none());
        assert_eq!(
            batch.encode(false).unwrap().content_type,
            protocol::INGEST_COMPACT
        );
    }

    #[test]
    fn every_record_is_checked() {
        let now = now_us();
        assert!(check_call(&call("alice"), now).is_ok());
        let mut v4 = call("alice");
        v4.id = Uuid::new_v4();
        v4.request_id = Some(v4.id);
        assert!(check_call(&v4, now).unwrap_err().contains("UUIDv7"));
        let mut future = call("alice");
        future.time_us = now + 2 * MAX_SKEW_US;
        assert!(check_call(&future, now).unwrap_err().contains("plausible"));
        let mut no_cluster = call("alice");
        no_cluster.cluster.clear();
        assert!(check_call(&no_cluster, now).is_err());
        let batch = IngestBatch {
            version: protocol::INGEST_VERSION,
            batch_id: Uuid::now_v7(),
            commands: vec![],
            calls: vec![call("alice"), call("bob")],
        };
        assert_eq!(
            check(&batch, "alice", now).unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
        let batch = IngestBatch {
            calls: vec![call("alice"), no_cluster],
            ..batch
        };
        assert_eq!(
            check(&batch, "alice", now).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }
}
