//! Where the TUI's records come from: the local store or the gateway's query API, behind one
//! trait, and the worker thread that runs their queries so the UI never waits on them.

use std::sync::mpsc::{Receiver, Sender};

use uuid::Uuid;

use crate::audit::filter::Filter;
use crate::audit::format::Format;
use crate::audit::{AuditStore, CallRow, CommandRow, Cursor, Page};
use crate::client::api::GatewayApi;
use crate::commands::audit::export::{write_export, ExportFrom, ExportJob};
use crate::protocol::{AuditQuery, View, MAX_PAGE};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Store(#[from] crate::audit::store::StoreError),
    #[error("the gateway's audit query failed: {0}")]
    Remote(String),
    #[error("no gateway session: {0} (run `ztk login`)")]
    NoSession(String),
    #[error("cannot open the local audit store: {0}")]
    Local(String),
    #[error("export failed: {0}")]
    Export(String),
}

/// One row of either view.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Command(Box<CommandRow>),
    Call(Box<CallRow>),
}

impl Record {
    pub fn id(&self) -> Uuid {
        match self {
            Record::Command(c) => c.command.id,
            Record::Call(c) => c.call.id,
        }
    }

    pub fn time_us(&self) -> i64 {
        match self {
            Record::Command(c) => c.command.started_us,
            Record::Call(c) => c.call.time_us,
        }
    }

    /// The listing's order key: newest first is descending (time, id).
    pub fn key(&self) -> (i64, Uuid) {
        (self.time_us(), self.id())
    }

    /// The keyset cursor that continues a listing after this row.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            time_us: self.time_us(),
            id: self.id().to_string(),
        }
    }

    /// The row as the JSON `ztk audit list -o json` prints.
    pub fn to_json(&self) -> String {
        let value = match self {
            Record::Command(c) => serde_json::to_string_pretty(c),
            Record::Call(c) => serde_json::to_string_pretty(c),
        };
        value.unwrap_or_default()
    }
}

fn records<T>(page: Page<T>, wrap: impl Fn(T) -> Record) -> Page<Record> {
    Page {
        items: page.items.into_iter().map(wrap).collect(),
        next: page.next,
    }
}

/// A source of audit records, paged newest first with keyset cursors.
pub trait Source: Send {
    /// Says where the records come from, for the title bar.
    fn label(&self) -> String;
    fn page(
        &mut self,
        view: View,
        filter: &Filter,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Record>, SourceError>;
    /// A number that changes whenever the source may hold new or changed records; None when
    /// the source cannot tell cheaply (then every refresh queries).
    fn marker(&mut self) -> Result<Option<i64>, SourceError>;
    /// Writes every row of the job; the same function as `ztk audit export`.
    fn export(
        &mut self,
        job: &ExportJob,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, SourceError>;
}

pub struct LocalSource {
    store: AuditStore,
}

impl LocalSource {
    pub fn new(store: AuditStore) -> LocalSource {
        LocalSource { store }
    }
}

impl Source for LocalSource {
    fn label(&self) -> String {
        format!("local {}", self.store.path().display())
    }

    fn page(
        &mut self,
        view: View,
        filter: &Filter,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Record>, SourceError> {
        Ok(match view {
            View::Calls => records(self.store.query_calls(filter, after, limit)?, |r| {
                Record::Call(Box::new(r))
            }),
            View::Commands => records(self.store.query_commands(filter, after, limit)?, |r| {
                Record::Command(Box::new(r))
            }),
        })
    }

    fn marker(&mut self) -> Result<Option<i64>, SourceError> {
        Ok(Some(self.store.last_seq()?))
    }

    fn export(
        &mut self,
        job: &ExportJob,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, SourceError> {
        write_export(job, ExportFrom::Local(&self.store), progress)
            .map_err(|e| SourceError::Export(format!("{e:#}")))
    }
}

/// The gateway's `POST /ztk/v1/audit/query`, as `ztk audit list --remote` uses it.
pub struct RemoteSource {
    api: GatewayApi,
    token: String,
    gateway: String,
    runtime: tokio::runtime::Runtime,
}

impl RemoteSource {
    /// Connects with the logged-in session (`ztk login`).
    pub fn from_session() -> Result<RemoteSource, SourceError> {
        let session = || -> anyhow::Result<RemoteSource> {
            let paths = crate::client::config::Paths::from_env()?;
            let (config, token) = crate::client::token::require_session(&paths)?;
            let api = GatewayApi::new(&config.gateway, &config.roots()?)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(RemoteSource {
                api,
                token,
                gateway: config.gateway.clone(),
                runtime,
            })
        };
        session().map_err(|e| SourceError::NoSession(format!("{e:#}")))
    }
}

impl Source for RemoteSource {
    fn label(&self) -> String {
        format!("gateway {}", self.gateway)
    }

    fn page(
        &mut self,
        view: View,
        filter: &Filter,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Record>, SourceError> {
        let query = AuditQuery {
            view,
            filter: filter.clone(),
            after: after.cloned(),
            limit: limit.min(MAX_PAGE),
        };
        let remote = |e: crate::client::api::ApiError| SourceError::Remote(e.to_string());
        Ok(match view {
            View::Calls => records(
                self.runtime
                    .block_on(self.api.query::<CallRow>(&self.token, &query))
                    .map_err(remote)?,
                |r| Record::Call(Box::new(r)),
            ),
            View::Commands => records(
                self.runtime
                    .block_on(self.api.query::<CommandRow>(&self.token, &query))
                    .map_err(remote)?,
                |r| Record::Command(Box::new(r)),
            ),
        })
    }

    fn marker(&mut self) -> Result<Option<i64>, SourceError> {
        Ok(None)
    }

    fn export(
        &mut self,
        job: &ExportJob,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, SourceError> {
        write_export(job, ExportFrom::Remote, progress)
            .map_err(|e| SourceError::Export(format!("{e:#}")))
    }
}

/// Which source a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Local,
    Remote,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Local => "local",
            SourceKind::Remote => "remote",
        }
    }
}

/// What a fetch is for: a fresh listing, the next page down, or new rows at the top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchKind {
    Reset,
    More,
    /// New and changed rows at the top, down to the newest row already shown (`top`).
    Refresh,
}

/// A query the app wants run.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetch {
    /// The list screen asking (its generation: answers for an older one are dropped).
    pub screen: u64,
    pub kind: FetchKind,
    pub source: SourceKind,
    pub view: View,
    pub filter: Filter,
    pub after: Option<Cursor>,
    pub limit: usize,
    /// For a refresh: the marker of the last answer (skip the query when unchanged) and the
    /// newest row shown.
    pub since_marker: Option<i64>,
    pub top: Option<(i64, Uuid)>,
}

/// An export the app wants written.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRequest {
    pub source: SourceKind,
    pub view: View,
    pub filter: Filter,
    pub path: std::path::PathBuf,
}

/// Answers from the worker threads.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Rows {
        screen: u64,
        kind: FetchKind,
        rows: Vec<Record>,
        next: Option<Cursor>,
        marker: Option<i64>,
        /// For a refresh: false when the new rows did not reach the newest row shown (more
        /// arrived than one refresh reads), so the listing must start over.
        complete: bool,
        label: String,
    },
    /// A refresh found the marker unchanged: nothing new.
    Unchanged {
        screen: u64,
    },
    Failed {
        screen: u64,
        kind: FetchKind,
        message: String,
    },
    ExportProgress {
        rows: u64,
    },
    Exported {
        path: std::path::PathBuf,
        rows: u64,
    },
    ExportFailed {
        message: String,
    },
}

/// Rows a refresh reads at most before giving up on closing the gap to the rows shown.
pub const REFRESH_MAX: usize = 2_000;

/// Runs one fetch against a source.
pub fn run_fetch(source: &mut dyn Source, fetch: &Fetch) -> Response {
    let failed = |e: SourceError| Response::Failed {
        screen: fetch.screen,
        kind: fetch.kind,
        message: e.to_string(),
    };
    // Read the marker before the query: a write during the query shows up next time.
    let marker = match source.marker() {
        Ok(m) => m,
        Err(e) => return failed(e),
    };
    if fetch.kind == FetchKind::Refresh && marker.is_some() && marker == fetch.since_marker {
        return Response::Unchanged {
            screen: fetch.screen,
        };
    }
    let mut rows = Vec::new();
    let mut after = fetch.after.clone();
    let mut next;
    let mut complete = true;
    loop {
        let page = match source.page(fetch.view, &fetch.filter, after.as_ref(), fetch.limit) {
            Ok(p) => p,
            Err(e) => return failed(e),
        };
        next = page.next.clone();
        let reached = match (fetch.kind, fetch.top) {
            (FetchKind::Refresh, Some(top)) => page.items.iter().any(|r| r.key() <= top),
            _ => true,
        };
        rows.extend(page.items);
        if reached || next.is_none() {
            break;
        }
        if rows.len() >= REFRESH_MAX {
            complete = false;
            break;
        }
        after = next.clone();
    }
    Response::Rows {
        screen: fetch.screen,
        kind: fetch.kind,
        rows,
        next,
        marker,
        complete,
        label: source.label(),
    }
}

/// Opens a source (again: exports open their own, as they run on threads of their own).
pub type Opener = std::sync::Arc<dyn Fn() -> Result<Box<dyn Source>, SourceError> + Send + Sync>;

/// Opens sources on first use, so a missing gateway session only matters once asked for.
pub struct Sources {
    local: Option<Box<dyn Source>>,
    remote: Option<Box<dyn Source>>,
    open_local: Opener,
    open_remote: Opener,
}

impl Sources {
    pub fn new(open_local: Opener, open_remote: Opener) -> Sources {
        Sources {
            local: None,
            remote: None,
            open_local,
            open_remote,
        }
    }

    /// The local store (`store`, or the user's own when None) and the logged-in gateway session.
    pub fn standard(store: Option<AuditStore>) -> Sources {
        Sources::new(
            std::sync::Arc::new(move || {
                let store = match &store {
                    Some(store) => store.clone(),
                    None => crate::commands::audit::local_store()
                        .map_err(|e| SourceError::Local(format!("{e:#}")))?,
                };
                Ok(Box::new(LocalSource::new(store)) as Box<dyn Source>)
            }),
            std::sync::Arc::new(|| Ok(Box::new(RemoteSource::from_session()?) as Box<dyn Source>)),
        )
    }

    pub fn opener(&self, kind: SourceKind) -> Opener {
        match kind {
            SourceKind::Local => self.open_local.clone(),
            SourceKind::Remote => self.open_remote.clone(),
        }
    }

    pub fn get(&mut self, kind: SourceKind) -> Result<&mut dyn Source, SourceError> {
        let (slot, open) = match kind {
            SourceKind::Local => (&mut self.local, &self.open_local),
            SourceKind::Remote => (&mut self.remote, &self.open_remote),
        };
        if slot.is_none() {
            *slot = Some(open()?);
        }
        Ok(slot.as_mut().expect("opened").as_mut())
    }
}

/// Work for the query thread.
pub enum Job {
    Fetch(Box<Fetch>),
    Stop,
}

/// The query thread: runs fetches in order, answering on `answers`. Exports run on threads
/// of their own (they take long and must not hold up the listing).
pub fn spawn_worker(
    mut sources: Sources,
    jobs: Receiver<Job>,
    answers: Sender<super::Event>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("tui-query".into())
        .spawn(move || {
            while let Ok(job) = jobs.recv() {
                let fetch = match job {
                    Job::Fetch(f) => *f,
                    Job::Stop => break,
                };
                let answer = match sources.get(fetch.source) {
                    Ok(source) => run_fetch(source, &fetch),
                    Err(e) => Response::Failed {
                        screen: fetch.screen,
                        kind: fetch.kind,
                        message: e.to_string(),
                    },
                };
                if answers.send(super::Event::Data(answer)).is_err() {
                    break;
                }
            }
        })
        .expect("spawn the TUI query thread")
}

/// Runs an export on a thread of its own, reporting progress and the end on `answers`.
pub fn spawn_export(open: Opener, request: ExportRequest, answers: Sender<super::Event>) {
    std::thread::spawn(move || {
        let progress_tx = answers.clone();
        let result = open().and_then(|mut source| {
            let job = ExportJob {
                view: request.view,
                filter: request.filter.clone(),
                format: Format::Csv,
                limit: None,
                output: Some(request.path.clone()),
            };
            source.export(&job, &mut |rows| {
                let _ = progress_tx.send(super::Event::Data(Response::ExportProgress { rows }));
            })
        });
        let answer = match result {
            Ok(rows) => Response::Exported {
                path: request.path,
                rows,
            },
            Err(e) => Response::ExportFailed {
                message: e.to_string(),
            },
        };
        let _ = answers.send(super::Event::Data(answer));
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::ApiCall;

    fn store() -> (tempfile::TempDir, AuditStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.db")).unwrap();
        crate::audit::seed::seed(&store, 3_000).unwrap();
        (dir, store)
    }

    fn fetch(kind: FetchKind, view: View) -> Fetch {
        Fetch {
            screen: 1,
            kind,
            source: SourceKind::Local,
            view,
            filter: Filter::default(),
            after: None,
            limit: 200,
            since_marker: None,
            top: None,
        }
    }

    fn rows_of(response: Response) -> (Vec<Record>, Option<Cursor>, Option<i64>, bool) {
        match response {
            Response::Rows {
                rows,
                next,
                marker,
                complete,
                ..
            } => (rows, next, marker, complete),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn local_pages_refreshes_and_change_detection() {
        let (_dir, store) = store();
        let mut source = LocalSource::new(store.clone());
        let (rows, next, marker, _) = rows_of(run_fetch(
            &mut source,
            &fetch(FetchKind::Reset, View::Calls),
        ));
        assert_eq!(rows.len(), 200);
        assert!(
            rows.windows(2).all(|w| w[0].key() > w[1].key()),
            "newest first"
        );
        assert_eq!(next, Some(rows[199].cursor()));
        let mut more = fetch(FetchKind::More, View::Calls);
        more.after = next;
        let (page2, ..) = rows_of(run_fetch(&mut source, &more));
        assert!(page2[0].key() < rows[199].key());

        // Nothing written since: the refresh does not query.
        let mut refresh = fetch(FetchKind::Refresh, View::Calls);
        refresh.since_marker = marker;
        refresh.top = Some(rows[0].key());
        assert_eq!(
            run_fetch(&mut source, &refresh),
            Response::Unchanged { screen: 1 }
        );

        // A new call moves the marker; the refresh brings it, newest first.
        let (sink, writer) = store.start_writer(16).unwrap();
        let call = ApiCall {
            id: Uuid::now_v7(),
            time_us: crate::audit::model::now_us(),
            user: "zoe".into(),
            verb: "delete".into(),
            status: 200,
            ..Default::default()
        };
        sink.record_call(call.clone());
        assert!(sink.flush(Duration::from_secs(10)));
        drop(sink);
        writer.close();
        let (fresh, _, new_marker, complete) = rows_of(run_fetch(&mut source, &refresh));
        assert!(complete);
        assert_eq!(fresh[0].id(), call.id);
        assert!(new_marker > marker);
        assert!(
            fresh.iter().any(|r| r.key() == rows[0].key()),
            "reaches the rows shown"
        );

        // Too far behind: a refresh reads at most REFRESH_MAX rows and says it did not catch up.
        refresh.since_marker = None;
        refresh.top = Some((0, Uuid::nil()));
        let (fresh, _, _, complete) = rows_of(run_fetch(&mut source, &refresh));
        assert!(!complete);
        assert_eq!(fresh.len(), REFRESH_MAX);
    }

    #[test]
    fn keyset_pages_cover_rows_with_equal_times_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.db")).unwrap();
        let (sink, writer) = store.start_writer(64).unwrap();
        // Three timestamps, seven calls each: page boundaries fall inside runs of equal times.
        let mut want = Vec::new();
        for t in 0..3 {
            for _ in 0..7 {
                let call = ApiCall {
                    id: Uuid::now_v7(),
                    time_us: 1_000_000 + t,
                    status: 200,
                    ..Default::default()
                };
                want.push((call.time_us, call.id));
                sink.record_call(call);
            }
        }
        assert!(sink.flush(Duration::from_secs(10)));
        drop(sink);
        writer.close();
        want.sort();
        want.reverse();
        let mut source = LocalSource::new(store);
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = source
                .page(View::Calls, &Filter::default(), after.as_ref(), 4)
                .unwrap();
            got.extend(page.items.iter().map(Record::key));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn commands_view_and_export_through_the_export_command_code() {
        let (dir, store) = store();
        let mut source = LocalSource::new(store.clone());
        let (rows, ..) = rows_of(run_fetch(
            &mut source,
            &fetch(FetchKind::Reset, View::Commands),
        ));
        assert!(matches!(rows[0], Record::Command(_)));
        let filter = Filter::parse_query("user:alice verb:delete").unwrap();
        let path = dir.path().join("out.csv");
        let job = ExportJob {
            view: View::Calls,
            filter: filter.clone(),
            format: Format::Csv,
            limit: None,
            output: Some(path.clone()),
        };
        let mut seen = 0;
        let n = source.export(&job, &mut |rows| seen = rows).unwrap();
        assert_eq!(n, store.count_calls(&filter).unwrap());
        assert_eq!(seen, n);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert!(lines
            .next()
            .unwrap()
            .starts_with("time,user,cluster,namespace"));
        assert_eq!(lines.count() as u64, n);
        assert!(n > 0);
    }

    #[test]
    fn the_worker_answers_on_the_channel_and_a_missing_session_is_an_error() {
        let (_dir, store) = store();
        let local = store.clone();
        let sources = Sources::new(
            std::sync::Arc::new(move || {
                Ok(Box::new(LocalSource::new(local.clone())) as Box<dyn Source>)
            }),
            std::sync::Arc::new(|| Err(SourceError::NoSession("not logged in".into()))),
        );
        let (jobs, job_rx) = std::sync::mpsc::channel();
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = spawn_worker(sources, job_rx, tx);
        jobs.send(Job::Fetch(Box::new(fetch(FetchKind::Reset, View::Calls))))
            .unwrap();
        let mut remote = fetch(FetchKind::Reset, View::Calls);
        remote.source = SourceKind::Remote;
        jobs.send(Job::Fetch(Box::new(remote))).unwrap();
        let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(matches!(
            first,
            super::super::Event::Data(Response::Rows { .. })
        ));
        match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
            super::super::Event::Data(Response::Failed { message, .. }) => {
                assert!(
                    message.contains("not logged in") && message.contains("ztk login"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
        jobs.send(Job::Stop).unwrap();
        worker.join().unwrap();
    }
}
