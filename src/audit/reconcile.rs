//! A call the cluster executed is never missing from the gateway's trail. The gateway writes
//! its records off the request path (a queue and a short linger), so a gateway killed with
//! `kill -9` loses the records still queued, of calls it had answered. The client recorded the
//! same calls and ships them (`client_calls`), each with its id, which the gateway's record
//! carries as `request_id`. The gateway's upkeep compares the two: a client call answered
//! through the gateway, old enough that the gateway's own record would have been written, with
//! no gateway record of that id, is written to the trail from the client's record, marked
//! `recovered from the client's record`. Each client call is looked at once (`reconciled`);
//! a recovered record carries the client call's id as its `request_id`, so a crash between the
//! write and the mark never recovers a call twice.

use crate::args;
use uuid::Uuid;

use super::model::{now_us, ApiCall};
use super::store::{call_from_row, AuditSink, AuditStore, StoreError, CALL_COLUMNS};

/// The note on a recovered record.
pub const RECOVERED: &str = "recovered from the client's record: the gateway's own record of this call was lost (the gateway stopped before writing it)";

/// The migration of the store that adds the mark.
pub const MIGRATION: &str = r#"
-- Client calls the gateway's upkeep has compared with its own records (src/audit/reconcile.rs).
ALTER TABLE client_calls ADD COLUMN reconciled INTEGER NOT NULL DEFAULT 0;
CREATE INDEX client_calls_unreconciled ON client_calls(time_us) WHERE reconciled = 0;
"#;

/// Client calls looked at per round.
const BATCH: usize = 5_000;

/// Whether the client's record says the gateway answered the call: the client got a status
/// from the gateway. Not when the client's relay failed to reach it (a 502/503 the client made
/// itself: an error and nothing read), nor a call that never got an answer (status 0).
pub fn answered_by_gateway(call: &ApiCall) -> bool {
    if call.status == 0 {
        return false;
    }
    let made_locally =
        matches!(call.status, 502 | 503) && call.bytes_out == 0 && !call.reason.is_empty();
    let refused_locally = call.decision != "allow" && call.decision != "error";
    !made_locally && !refused_locally
}

/// The client calls not looked at yet, oldest first, each with whether the gateway has a record
/// of it: among the calls of the client call's command (the command index), or among the calls
/// without a command (plain kubectl through the persistent proxy, other clients) by request id
/// ([`UNCOMMANDED_INDEX`]; also for a client call whose command id the gateway did not link).
/// (A CASE, not an OR, where one side would scan: SQLite evaluates both sides of an OR of
/// subqueries.)
fn candidates_sql() -> String {
    format!(
        "SELECT {CALL_COLUMNS}, CASE WHEN c.command_id IS NULL \
         THEN EXISTS(SELECT 1 FROM api_calls g WHERE g.command_id IS NULL AND g.request_id = c.id) \
         ELSE EXISTS(SELECT 1 FROM api_calls g WHERE g.command_id = c.command_id AND g.request_id = c.id) \
         OR EXISTS(SELECT 1 FROM api_calls g WHERE g.command_id IS NULL AND g.request_id = c.id) \
         END FROM client_calls c WHERE c.reconciled = 0 AND c.time_us < ?1 \
         ORDER BY c.time_us LIMIT ?2"
    )
}

/// SQLite's index of the gateway's calls without a command by request id, made by the first
/// round of a gateway's upkeep (only gateways ask; a client's store never has it). Without it,
/// each such client call read every call of the store (a round of 5,000 over 600,000 calls took
/// minutes of CPU). Partial, so that calls of commands (most of `ztk kubectl`'s) cost nothing
/// more to write; not a numbered migration, so that older binaries still open the store.
/// PostgreSQL keeps a full `request_id` index from its first migration.
pub const UNCOMMANDED_INDEX: &str = "CREATE INDEX IF NOT EXISTS api_calls_request_uncommanded \
     ON api_calls(request_id) WHERE command_id IS NULL";

/// Makes what [`reconcile`] needs on `store` (once per gateway start).
pub fn prepare(store: &AuditStore) -> Result<(), StoreError> {
    if store.dialect() != crate::db::Dialect::Sqlite {
        return Ok(());
    }
    store.with_db(false, |db| db.execute(UNCOMMANDED_INDEX, &[]).map(|_| ()))
}

/// One round: client calls older than `before_us` not looked at yet; the ones the gateway
/// answered but has no record of are written through `sink` (and committed) before they are
/// marked. Returns how many were recovered.
pub fn reconcile(
    store: &AuditStore,
    sink: &AuditSink,
    before_us: i64,
) -> Result<usize, StoreError> {
    let mut recovered = 0;
    let sql = candidates_sql();
    loop {
        let rows: Vec<(ApiCall, bool)> = store.with_db(true, |db| {
            db.query_vec(&sql, args![before_us, BATCH as i64], |row| {
                Ok((call_from_row(row)?, row.get::<bool>(27)?))
            })
        })?;
        if rows.is_empty() {
            return Ok(recovered);
        }
        let full = rows.len() == BATCH;
        let mut ids = Vec::with_capacity(rows.len());
        for (client, known) in rows {
            ids.push(client.id.to_string());
            if known || !answered_by_gateway(&client) {
                continue;
            }
            let mut call = client.clone();
            call.id = recovered_id(client.id);
            call.request_id = Some(client.id);
            call.note(RECOVERED);
            tracing::warn!(user = %call.user, cluster = %call.cluster, request = %client.id, "recovered a call from the client's record: the gateway's own record was lost");
            sink.record_call(call);
            recovered += 1;
        }
        // The recovered records are committed before the client calls are marked.
        if !sink.flush(std::time::Duration::from_secs(30)) {
            // Not marked: the next round looks again (and finds what was written meanwhile).
            tracing::warn!(
                "the audit writer did not confirm the recovered calls; trying again later"
            );
            return Ok(recovered);
        }
        store.with_db(false, |db| {
            db.transaction(true, |tx| {
                for id in &ids {
                    tx.execute(
                        "UPDATE client_calls SET reconciled = 1 WHERE id = ?",
                        args![id],
                    )?;
                }
                Ok::<_, crate::db::DbError>(())
            })
        })?;
        if !full {
            return Ok(recovered);
        }
    }
}

/// The id of the record recovered from client call `client`: the same whichever gateway
/// recovers it (several gateways on one database each run this upkeep, and may look at one
/// client call at the same moment: both then write one record, the second replacing the
/// first). A UUIDv7 with the client call's time and bits of its hash, so it sorts with its time.
pub fn recovered_id(client: Uuid) -> Uuid {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest([b"ztk-recovered-v1\0".as_slice(), client.as_bytes()].concat());
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&client.as_bytes()[..6]);
    bytes[6..].copy_from_slice(&hash[..10]);
    bytes[6] = 0x70 | (bytes[6] & 0x0f);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    Uuid::from_bytes(bytes)
}

/// `now - grace`: the client calls a round looks at.
pub fn cutoff(grace: std::time::Duration) -> i64 {
    now_us() - grace.as_micros() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Filter;
    use rusqlite::params;

    fn client_call(
        store: &AuditStore,
        id: Uuid,
        time_us: i64,
        status: u16,
        bytes_out: u64,
        decision: &str,
        reason: &str,
    ) {
        let conn = store.connect(false).unwrap();
        conn.execute(
            "INSERT INTO client_calls (id, time_us, user, cluster, namespace, resource, verb, method, path, \
             status, bytes_out, decision, reason, request_id, access_method) \
             VALUES (?1, ?2, 'alice', 'prod', 'dev', 'pods', 'list', 'GET', '/api/v1/namespaces/dev/pods', \
             ?3, ?4, ?5, ?6, ?1, 'cli')",
            params![id.to_string(), time_us, status, bytes_out as i64, decision, reason],
        )
        .unwrap();
    }

    /// A gateway record is looked for through an index, never by scanning every call (SQLite's
    /// store keeps no full index on request_id): a round over many client calls stays linear,
    /// with or without their command ids.
    #[test]
    fn the_gateway_record_is_found_through_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.db")).unwrap();
        prepare(&store).unwrap();
        prepare(&store).unwrap();
        let conn = store.connect(false).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", candidates_sql()))
            .unwrap()
            .query_map(params![0i64, 10i64], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let lookups: Vec<&String> = plan.iter().filter(|l| l.contains(" g")).collect();
        assert_eq!(lookups.len(), 3, "{plan:#?}");
        assert!(
            lookups.iter().all(|l| l.starts_with("SEARCH g USING")),
            "{plan:#?}"
        );
        assert!(
            lookups.iter().any(|l| l.contains("api_calls_command"))
                && lookups
                    .iter()
                    .any(|l| l.contains("api_calls_request_uncommanded")),
            "{plan:#?}"
        );
    }

    #[test]
    fn calls_the_gateway_answered_but_lost_are_recovered_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.db")).unwrap();
        prepare(&store).unwrap();
        let (sink, writer) = store.start_writer(64).unwrap();
        let now = now_us();
        let old = now - 60_000_000;
        let (lost, kept, local, unanswered, refused, recent) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        client_call(&store, lost, old, 200, 1234, "allow", "");
        client_call(&store, kept, old, 200, 99, "allow", "");
        client_call(
            &store,
            local,
            old,
            503,
            0,
            "allow",
            "cannot reach the gateway: connection refused",
        );
        client_call(&store, unanswered, old, 0, 0, "allow", "connection reset");
        client_call(
            &store,
            refused,
            old,
            401,
            50,
            "unauthenticated",
            "no session",
        );
        client_call(&store, recent, now, 200, 10, "allow", "");
        // The gateway's own record of `kept`.
        sink.record_call(ApiCall {
            id: Uuid::now_v7(),
            time_us: old,
            user: "alice".into(),
            request_id: Some(kept),
            status: 200,
            decision: "allow".into(),
            ..Default::default()
        });
        // Client calls of a command: one the gateway linked to it, one whose command id it did
        // not link (it belonged to another user): both have their gateway record.
        let (linked, unlinked) = (Uuid::now_v7(), Uuid::now_v7());
        let command = Uuid::now_v7();
        for (id, gateway_command) in [(linked, Some(command)), (unlinked, None)] {
            client_call(&store, id, old, 200, 10, "allow", "");
            store
                .connect(false)
                .unwrap()
                .execute(
                    "UPDATE client_calls SET command_id = ?1 WHERE id = ?2",
                    params![command.to_string(), id.to_string()],
                )
                .unwrap();
            sink.record_call(ApiCall {
                id: Uuid::now_v7(),
                time_us: old,
                user: "alice".into(),
                request_id: Some(id),
                command_id: gateway_command,
                status: 200,
                decision: "allow".into(),
                ..Default::default()
            });
        }
        assert!(sink.flush(std::time::Duration::from_secs(5)));

        assert_eq!(reconcile(&store, &sink, now - 30_000_000).unwrap(), 1);
        let calls = store.list_calls(&Filter::default()).unwrap();
        let recovered: Vec<_> = calls
            .iter()
            .filter(|c| c.call.reason.contains(RECOVERED))
            .collect();
        assert_eq!(recovered.len(), 1, "{calls:#?}");
        let r = &recovered[0].call;
        assert_eq!(
            (r.request_id, r.status, r.bytes_out, r.user.as_str()),
            (Some(lost), 200, 1234, "alice")
        );
        assert_ne!(r.id, lost);
        assert_eq!(
            r.id,
            recovered_id(lost),
            "the same id whichever gateway recovers it"
        );
        assert_eq!(r.id.get_version_num(), 7);
        assert_eq!(
            r.id.as_bytes()[..6],
            lost.as_bytes()[..6],
            "sorted with its time"
        );
        // Looked at once: a second round finds nothing; the recent one waits for its grace.
        assert_eq!(reconcile(&store, &sink, now - 30_000_000).unwrap(), 0);
        let conn = store.connect(true).unwrap();
        let waiting: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM client_calls WHERE reconciled = 0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(waiting, 1);
        drop(conn);
        // A crash between the write and the mark: the next round does not recover it again.
        store
            .connect(false)
            .unwrap()
            .execute("UPDATE client_calls SET reconciled = 0", [])
            .unwrap();
        assert_eq!(reconcile(&store, &sink, now - 30_000_000).unwrap(), 0);
        // Once old enough, the recent one (no gateway record either) is recovered too.
        assert_eq!(reconcile(&store, &sink, now + 1).unwrap(), 1);
        drop(sink);
        writer.close();
        let report = store.verify(&[]).unwrap();
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.calls, 5);
    }
}
