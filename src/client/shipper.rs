//! Ships the client's audit records — commands and API calls — from the local store's outbox
//! (`audit::outbox`) to the gateway, in batches, in the compact encoding.
//!
//! A batch is marked shipped only when the gateway acknowledged it; any failure leaves the mark
//! where it was, so the same records go again (the gateway stores them once). Shipping runs on
//! its own tasks and reads the store on its own connections: it never delays a relayed call.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rand::Rng;
use uuid::Uuid;

use std::collections::VecDeque;

use tokio::task::JoinHandle;

use super::api::{ApiError, GatewayApi};
use super::config::ClientConfig;
use crate::audit::model::now_us;
use crate::audit::AuditStore;
use crate::protocol::IngestAck;
use crate::protocol::{EncodedBatch, IngestBatch, INGEST_VERSION};

/// Records per batch: large enough to amortise a round trip and a transaction, small enough
/// (about 0.5 MB compact) to be quick to re-send after a failure.
pub const BATCH: usize = 2000;
/// Batches sent before the first is acknowledged.
const IN_FLIGHT: usize = 2;

/// A batch on its way: its last seq, its size, and the sending task.
type InFlight = (i64, u64, JoinHandle<Result<IngestAck, ApiError>>);

/// Ships one user's outbox with one login.
pub struct Shipper {
    pub store: AuditStore,
    pub api: Arc<GatewayApi>,
    pub token: String,
    pub user: String,
    /// The gateway URL `api` talks to.
    pub gateway: String,
    /// Send JSON instead of the compact encoding.
    pub json: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shipped {
    pub records: u64,
    pub batches: u64,
}

impl Shipper {
    pub fn new(store: AuditStore, config: &ClientConfig, token: &str) -> Result<Shipper> {
        let api = GatewayApi::new(&config.gateway, &config.roots()?)?;
        Ok(Shipper::with_api(store, config, token, api))
    }

    /// A shipper that talks to the gateway through `api`.
    pub fn with_api(
        store: AuditStore,
        config: &ClientConfig,
        token: &str,
        api: GatewayApi,
    ) -> Shipper {
        Shipper {
            store,
            api: Arc::new(api),
            token: token.to_string(),
            user: config.user.clone(),
            gateway: config.gateway.clone(),
            json: false,
        }
    }

    /// Ships everything pending, batch by batch, calling `progress` with the running total
    /// after each acknowledged batch. A failure is remembered for `ztk audit status`.
    pub async fn ship_all(&self, mut progress: impl FnMut(u64)) -> Result<Shipped> {
        let result = self.ship_inner(&mut progress).await;
        if let Err(err) = &result {
            let store = self.store.clone();
            let (user, message) = (self.user.clone(), format!("{err:#}"));
            let _ = tokio::task::spawn_blocking(move || {
                store.note_ship_error(&user, &message, now_us())
            })
            .await;
        }
        result
    }

    async fn ship_inner(&self, progress: &mut impl FnMut(u64)) -> Result<Shipped> {
        let mut done = Shipped::default();
        let mut next = Some(self.read(None));
        // Batches in flight, oldest first: the gateway stores one while the next travels. The
        // mark still moves in order, each batch's after the ones before it.
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        loop {
            while in_flight.len() < IN_FLIGHT {
                let Some(reading) = next.take() else { break };
                let Some(ready) = reading.await.context("the outbox reader stopped")?? else {
                    break;
                };
                // Read the next batch while this one travels (a short batch was the last).
                if ready.encoded.records == BATCH {
                    next = Some(self.read(Some(ready.through)));
                }
                let (n, through) = (ready.encoded.records as u64, ready.through);
                let (api, token) = (self.api.clone(), self.token.clone());
                let sending =
                    tokio::spawn(async move { api.ingest_encoded(&token, ready.encoded).await });
                in_flight.push_back((through, n, sending));
            }
            let Some((through, n, sending)) = in_flight.pop_front() else {
                return Ok(done);
            };
            let sent = sending
                .await
                .context("the sender stopped")
                .and_then(|r| r.context("the gateway did not take the audit records"));
            if let Err(err) = sent {
                // The batches behind it are answered before this returns: none is left half
                // sent, and a caller that looks at the gateway next sees what it stored.
                for (_, _, later) in in_flight.drain(..) {
                    let _ = later.await;
                }
                return Err(err);
            }
            let (store, user) = (self.store.clone(), self.user.clone());
            tokio::task::spawn_blocking(move || store.ack_shipped(&user, through, now_us()))
                .await??;
            done.records += n;
            done.batches += 1;
            progress(done.records);
        }
    }

    /// Reads the next batch after `after` (the stored mark if `None`) and encodes it, on a
    /// blocking thread: the records are made, encoded and freed there, and only the encoded
    /// bytes travel. `None` when nothing is pending.
    fn read(&self, after: Option<i64>) -> JoinHandle<Result<Option<Ready>>> {
        let (store, user, json) = (self.store.clone(), self.user.clone(), self.json);
        tokio::task::spawn_blocking(move || {
            let batch = store.outbox_batch_after(&user, after, BATCH)?;
            if batch.is_empty() {
                return Ok(None);
            }
            let through = batch.through_seq;
            let request = IngestBatch {
                version: INGEST_VERSION,
                batch_id: Uuid::now_v7(),
                commands: batch.commands,
                calls: batch.calls,
            };
            let encoded = request
                .encode(json)
                .map_err(|e| anyhow::anyhow!("could not encode an audit batch: {e}"))?;
            Ok(Some(Ready { through, encoded }))
        })
    }
}

/// A batch read from the outbox and encoded, with the mark its acknowledgement moves to.
struct Ready {
    through: i64,
    encoded: EncodedBatch,
}

/// Exponential backoff with jitter: 0.5 s doubling to 60 s, each wait a random 50–100 % of
/// its step, so clients that failed together do not retry together.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(60);

    pub fn next_delay(&mut self) -> Duration {
        let step = Self::BASE
            .saturating_mul(1u32 << self.failures.min(16))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        step.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Where a long-running shipper gets its login each round (the persistent proxy follows
/// `ztk login`; a `ztk kubectl` run keeps its own).
pub type LoginSource = Arc<dyn Fn() -> Option<(ClientConfig, String)> + Send + Sync>;

/// Ships until `stop` turns true: after each `wake` (new records), and every `interval` (for
/// records other processes wrote), everything pending; after a failure, waits by `Backoff` first.
pub async fn ship_continuously(
    store: AuditStore,
    login: LoginSource,
    interval: Duration,
    wake: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    let mut delay = Duration::ZERO;
    let mut shipper: Option<Shipper> = None;
    loop {
        let wait = if delay.is_zero() { interval } else { delay };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified(), if delay.is_zero() => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        if *stop.borrow() {
            return;
        }
        // Reading the token can block (the OS keyring): not on the runtime's thread.
        let read = login.clone();
        let Ok(Some((config, token))) = tokio::task::spawn_blocking(move || read()).await else {
            continue;
        };
        // One client (and its open connection to the gateway) for as long as the login holds.
        let same =
            |s: &Shipper| s.token == token && s.user == config.user && s.gateway == config.gateway;
        if !shipper.as_ref().is_some_and(same) {
            shipper = match Shipper::new(store.clone(), &config, &token) {
                Ok(s) => Some(s),
                Err(err) => {
                    delay = backoff.next_delay();
                    tracing::warn!("cannot ship audit records (retry in {delay:?}): {err:#}");
                    continue;
                }
            };
        }
        let shipped = shipper.as_ref().expect("set above").ship_all(|_| {}).await;
        match shipped {
            Ok(_) => {
                backoff.reset();
                delay = Duration::ZERO;
            }
            Err(err) => {
                delay = backoff.next_delay();
                // A gateway that asks to wait (429, over this user's ingest allowance) gets at
                // least that; the records stay in the outbox meanwhile.
                if let Some(ApiError::Throttled { retry_after, .. }) = err.downcast_ref() {
                    delay = delay.max(*retry_after);
                }
                tracing::warn!("audit records not shipped yet (retry in {delay:?}): {err:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_a_minute() {
        let mut b = Backoff::default();
        let d: Vec<_> = (0..12).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(250) && d[0] <= Duration::from_millis(500));
        assert!(d[3] >= Duration::from_secs(2) && d[3] <= Duration::from_secs(4));
        assert!(d[11] >= Duration::from_secs(30) && d[11] <= Duration::from_secs(60));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(500));
    }
}
