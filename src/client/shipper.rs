//! Sends the client's command records to the gateway, which joins them with its own
//! API-call records by command id. A record is marked shipped only once the gateway
//! acknowledged it, so a failed attempt is simply retried by the next run.

use anyhow::Result;

use super::api::GatewayApi;
use crate::audit::model::now_us;
use crate::audit::AuditStore;
use crate::protocol::IngestCommands;

const BATCH: usize = 500;

/// Ships every unshipped, finished command; returns how many were acknowledged.
pub async fn ship_commands(store: &AuditStore, api: &GatewayApi, token: &str) -> Result<usize> {
    let mut shipped = 0;
    loop {
        let pending = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.unshipped_commands(BATCH)).await??
        };
        if pending.is_empty() {
            return Ok(shipped);
        }
        let ids: Vec<_> = pending.iter().map(|c| c.id).collect();
        let n = pending.len();
        let timings = {
            let store = store.clone();
            let ids = ids.clone();
            tokio::task::spawn_blocking(
                move || -> Result<Vec<_>, crate::audit::store::StoreError> {
                    let mut all = Vec::new();
                    for id in ids {
                        all.extend(store.timings_of(id)?);
                    }
                    Ok(all)
                },
            )
            .await??
        };
        api.ingest_commands(
            token,
            &IngestCommands {
                commands: pending,
                timings,
            },
        )
        .await?;
        let store2 = store.clone();
        tokio::task::spawn_blocking(move || store2.mark_shipped(&ids, now_us())).await??;
        shipped += n;
        if n < BATCH {
            return Ok(shipped);
        }
    }
}
