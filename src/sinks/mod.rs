//! Streaming the gateway's audit trail to SIEMs and files, at least once and in order per sink.
//!
//! Each `[[sinks]]` entry runs as its own task that follows the audit store by its write
//! sequence: read the records written after the sink's cursor (`AuditStore::records_after`),
//! deliver them as one batch, and only when the receiver acknowledged move the durable cursor
//! (`cursor::Cursors`, in the same database). A failed delivery is retried, the same batch,
//! with exponential backoff and jitter. The tasks only read the store, so a slow or dead
//! receiver never touches the request path or another sink.
//!
//! - A stream's open record (reason `stream open`) is skipped: its final record replaces it
//!   with a new sequence number and is delivered then.
//! - A command is written at its start and again at its end (the persistent proxy updates it
//!   every second while calls come): each write has a new sequence number, so receivers may see
//!   one command several times, the newest state last. Deduplicate on `id`, keep the last.
//! - A crash between a delivery and the cursor update resends that batch (at least once).
//! - With several gateways on one database, each sink is delivered by one gateway at a time:
//!   the holder of its lease (`Cursors::lease`, renewed every few seconds). When the holder
//!   stops it gives the lease up; when it dies the lease runs out after `LEASE`, and another
//!   gateway goes on from the durable cursor: repeats only across such a takeover. (Lease
//!   expiry compares the gateways' clocks: keep them in sync, as for the records' times.)

pub mod config;
pub mod cursor;
pub mod file;
pub mod format;
pub mod http;
pub mod syslog;

use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::model::now_us;
use crate::audit::{AuditStore, Sequenced};
use config::{SinkConfig, SinkKind};
use cursor::Cursors;

/// Why a delivery or setup failed. The text never holds a token.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// How often an idle sink looks for new records.
const POLL: Duration = Duration::from_millis(200);
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a sink's lease holds without renewal (a dead holder is replaced after this).
pub const LEASE: Duration = Duration::from_secs(10);
/// How often a gateway that does not hold a sink's lease asks for it.
const LEASE_POLL: Duration = Duration::from_secs(1);

/// One sink's way to a receiver (one value per sink, made once).
#[allow(clippy::large_enum_variant)]
enum Transport {
    File(file::FileSink),
    Syslog(syslog::SyslogSink),
    Http(http::HttpSink),
}

impl Transport {
    fn new(kind: &SinkKind) -> Result<Transport, SinkError> {
        Ok(match kind {
            SinkKind::File {
                path,
                max_size,
                max_files,
            } => Transport::File(file::FileSink::new(path, *max_size, *max_files)),
            SinkKind::Syslog {
                address,
                tls,
                app_name,
                enterprise_number,
            } => Transport::Syslog(syslog::SyslogSink::new(
                address,
                tls.as_ref(),
                app_name,
                *enterprise_number,
            )?),
            SinkKind::Webhook {
                url,
                format,
                token,
                tls,
            } => Transport::Http(http::HttpSink::new(
                url,
                tls,
                token.as_ref(),
                http::Payload::Webhook(*format),
            )?),
            SinkKind::SplunkHec {
                url,
                token,
                tls,
                source,
                sourcetype,
                index,
                host,
            } => Transport::Http(http::HttpSink::new(
                url,
                tls,
                Some(token),
                http::Payload::Hec {
                    host: host.clone(),
                    source: source.clone(),
                    sourcetype: sourcetype.clone(),
                    index: index.clone(),
                },
            )?),
        })
    }

    async fn deliver(&mut self, records: &[Sequenced]) -> Result<(), SinkError> {
        match self {
            Transport::File(s) => s.deliver(records).await,
            Transport::Syslog(s) => s.deliver(records).await,
            Transport::Http(s) => s.deliver(records).await,
        }
    }
}

/// The running sink tasks; dropping it (or `stop`) ends them.
pub struct Sinks {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Sinks {
    /// Ends every sink task. A batch in flight is abandoned and resent after a restart.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

/// Starts one task per sink, reading the audit store at `store`. Fails (before starting
/// anything) when a sink cannot be set up, e.g. an unreadable CA file.
pub fn start(store: &AuditStore, sinks: &[SinkConfig]) -> Result<Sinks, SinkError> {
    let mut transports = Vec::new();
    for sink in sinks {
        let transport = Transport::new(&sink.kind)
            .map_err(|e| SinkError(format!("sink {}: {e}", sink.name)))?;
        transports.push((sink.clone(), transport));
    }
    let (stop, stopped) = watch::channel(false);
    // This gateway, as the holder of sink leases.
    let owner = format!(
        "pid {} {}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    let tasks = transports
        .into_iter()
        .map(|(sink, transport)| {
            tokio::spawn(run(
                store.clone(),
                sink,
                transport,
                owner.clone(),
                stopped.clone(),
            ))
        })
        .collect();
    Ok(Sinks { stop, tasks })
}

/// Sleeps for `d`, or less if asked to stop; true when stopping.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Full jitter over an exponentially growing ceiling (so many sinks failing at once spread out).
struct Backoff {
    ceiling: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            ceiling: BACKOFF_START,
        }
    }

    fn next(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(BACKOFF_MAX);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms))
    }

    fn reset(&mut self) {
        self.ceiling = BACKOFF_START;
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::audit::store::StoreError> + Send + 'static,
) -> Result<T, SinkError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(SinkError(e.to_string())),
        Err(e) => Err(SinkError(e.to_string())),
    }
}

/// One sink's loop (`deliver`), then its lease given up.
async fn run(
    store: AuditStore,
    sink: SinkConfig,
    transport: Transport,
    owner: String,
    stop: watch::Receiver<bool>,
) {
    let cursors = Cursors::new(&store);
    let name = sink.name.clone();
    deliver(store, sink, transport, &owner, stop).await;
    let _ = blocking(move || cursors.release(&name, &owner)).await;
}

/// Whether this gateway holds the sink's lease, renewing it when a third of it has passed:
/// Some(true) when it does and just took it over (the cursor must be read again: another
/// gateway may have moved it), Some(false) when it held it already, None when another gateway
/// holds it (or the database did not answer).
async fn hold_lease(
    cursors: &Cursors,
    name: &str,
    owner: &str,
    held_until: &mut Option<Instant>,
) -> Option<bool> {
    if held_until.is_some_and(|t| t.saturating_duration_since(Instant::now()) > LEASE * 2 / 3) {
        return Some(false);
    }
    let (c, n, o) = (cursors.clone(), name.to_string(), owner.to_string());
    let asked = Instant::now();
    let now = now_us();
    let granted = blocking(move || c.lease(&n, &o, now, now + LEASE.as_micros() as i64)).await;
    match granted {
        Ok(true) => {
            let new = held_until.is_none();
            *held_until = Some(asked + LEASE);
            if new {
                tracing::info!(sink = %name, "this gateway delivers the sink");
            }
            Some(new)
        }
        Ok(false) => {
            if held_until.take().is_some() {
                tracing::warn!(sink = %name, "another gateway took the sink over");
            }
            None
        }
        Err(e) => {
            tracing::warn!(sink = %name, "cannot renew the sink's lease: {e}");
            // Held only for as long as it was granted.
            if held_until.is_some_and(|t| t <= Instant::now()) {
                *held_until = None;
            }
            held_until.map(|_| false)
        }
    }
}

/// One sink's deliveries: read after the cursor, deliver, acknowledge, repeat, while this
/// gateway holds the sink's lease.
async fn deliver(
    store: AuditStore,
    sink: SinkConfig,
    mut transport: Transport,
    owner: &str,
    mut stop: watch::Receiver<bool>,
) {
    let cursors = Cursors::new(&store);
    let name = sink.name.clone();
    let mut backoff = Backoff::new();
    let fail = |message: String| {
        let cursors = cursors.clone();
        let name = name.clone();
        async move {
            tracing::warn!(sink = %name, "{message}");
            let _ = blocking(move || cursors.failed(&name, &message, now_us())).await;
        }
    };
    let load = || async {
        let (c, n) = (cursors.clone(), name.clone());
        blocking(move || c.load(&n)).await
    };
    let mut held_until: Option<Instant> = None;
    let mut cursor = 0;
    tracing::info!(sink = %name, "sink started");
    // When the oldest record of a partial batch was first seen (for `max_wait`).
    let mut waiting_since: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        match hold_lease(&cursors, &name, owner, &mut held_until).await {
            None => {
                if pause(&mut stop, LEASE_POLL).await {
                    return;
                }
                continue;
            }
            Some(true) => match load().await {
                Ok(seq) => {
                    cursor = seq;
                    tracing::info!(sink = %name, cursor, "delivering from the sink's cursor");
                }
                Err(e) => {
                    held_until = None;
                    fail(format!("cannot read the sink's cursor: {e}")).await;
                    if pause(&mut stop, backoff.next()).await {
                        return;
                    }
                    continue;
                }
            },
            Some(false) => {}
        }
        let (s, filter, limit) = (store.clone(), sink.filter.clone(), sink.batch_size);
        let batch = match blocking(move || s.records_after(cursor, &filter, limit)).await {
            Ok(b) => b,
            Err(e) => {
                fail(format!("cannot read the audit store: {e}")).await;
                if pause(&mut stop, backoff.next()).await {
                    return;
                }
                continue;
            }
        };
        let full = batch.records.len() >= sink.batch_size;
        let records: Vec<Sequenced> = batch
            .records
            .into_iter()
            .filter(|r| !format::is_open_stream(r))
            .collect();
        if records.is_empty() {
            waiting_since = None;
            if batch.through > cursor {
                // Only filtered-out or open records: pass over them.
                let (c, n, through) = (cursors.clone(), name.clone(), batch.through);
                if blocking(move || c.advance(&n, through, 0, now_us()))
                    .await
                    .is_ok()
                {
                    cursor = through;
                }
            }
            if !full && pause(&mut stop, POLL).await {
                return;
            }
            continue;
        }
        if !full {
            let since = *waiting_since.get_or_insert_with(Instant::now);
            let waited = since.elapsed();
            if waited < sink.max_wait {
                if pause(&mut stop, POLL.min(sink.max_wait - waited)).await {
                    return;
                }
                continue;
            }
        }
        waiting_since = None;
        let mut delivered = false;
        while !delivered {
            match transport.deliver(&records).await {
                Ok(()) => delivered = true,
                Err(e) => {
                    fail(format!("delivery failed: {e}")).await;
                    if pause(&mut stop, backoff.next()).await {
                        return;
                    }
                    // Retries go on only while this gateway still holds the sink.
                    if hold_lease(&cursors, &name, owner, &mut held_until)
                        .await
                        .is_none()
                    {
                        break;
                    }
                }
            }
        }
        if !delivered {
            continue;
        }
        backoff.reset();
        let n = records.len() as i64;
        let (c, nm, through) = (cursors.clone(), name.clone(), batch.through);
        // The receiver has the batch: the cursor moves even if recording that fails once (the
        // next success writes it; a restart in between resends the batch, at least once).
        if let Err(e) = blocking(move || c.advance(&nm, through, n, now_us())).await {
            fail(format!("cannot save the sink's cursor: {e}")).await;
        }
        cursor = through;
        tracing::debug!(sink = %name, delivered = n, cursor, "batch delivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_up_to_a_ceiling_and_resets() {
        let mut b = Backoff::new();
        let first = b.next();
        assert!(first >= BACKOFF_START / 2 && first <= BACKOFF_START);
        let mut last = first;
        for _ in 0..20 {
            last = b.next();
            assert!(last <= BACKOFF_MAX);
        }
        assert!(last >= BACKOFF_MAX / 2);
        b.reset();
        assert!(b.next() <= BACKOFF_START);
    }
}
