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
    let tasks = transports
        .into_iter()
        .map(|(sink, transport)| tokio::spawn(run(store.clone(), sink, transport, stopped.clone())))
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

/// One sink's loop: read after the cursor, deliver, acknowledge, repeat.
async fn run(
    store: AuditStore,
    sink: SinkConfig,
    mut transport: Transport,
    mut stop: watch::Receiver<bool>,
) {
    let cursors = Cursors::new(store.path());
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
    let mut cursor = loop {
        let (c, n) = (cursors.clone(), name.clone());
        match blocking(move || c.load(&n)).await {
            Ok(seq) => break seq,
            Err(e) => {
                fail(format!("cannot read the sink's cursor: {e}")).await;
                if pause(&mut stop, backoff.next()).await {
                    return;
                }
            }
        }
    };
    tracing::info!(sink = %name, cursor, "sink started");
    // When the oldest record of a partial batch was first seen (for `max_wait`).
    let mut waiting_since: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            return;
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
        loop {
            match transport.deliver(&records).await {
                Ok(()) => break,
                Err(e) => {
                    fail(format!("delivery failed: {e}")).await;
                    if pause(&mut stop, backoff.next()).await {
                        return;
                    }
                }
            }
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
