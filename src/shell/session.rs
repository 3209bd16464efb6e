//! One browser tab's shell, carried over a WebSocket. The browser edits the line itself (the
//! prompt, history, cursor keys) and sends whole lines; while a command runs, every key goes to
//! the command's terminal (Ctrl-C included, which the terminal turns into SIGINT, or an
//! `exec -it` forwards). Output goes back as binary frames, events as JSON text frames.
//!
//! Wire (JSON, field `t`): browser → gateway `hello {csrf, cols, rows}` (first, within 10 s),
//! `run {line, stdin?}`, `input {data}`, `resize {cols, rows}`; gateway → browser `ready`,
//! `started {id}`, `exit {id, code, reason}`, `refused {reason}`, `notice {text}`,
//! `closed {reason}`.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

use super::{line, pty, run, Place};
use crate::audit::model::{now_us, AccessMethod, Command};
use crate::audit::redact::{redact_argv, shell_join};
use crate::gateway::users::Session;
use crate::gateway::Gateway;

/// The largest message the browser may send (a pasted manifest with its framing).
pub const MAX_MESSAGE: usize = 2 << 20;
/// The largest pasted manifest.
pub const MAX_MANIFEST: usize = 1 << 20;
/// How often the session, the idle timer and the command's wall clock are checked.
const CHECK: Duration = Duration::from_millis(250);
/// How long the browser has to say hello.
const HELLO_WAIT: Duration = Duration::from_secs(10);

pub fn websocket_config() -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.max_message_size = Some(MAX_MESSAGE);
    c.max_frame_size = Some(MAX_MESSAGE);
    c
}

#[derive(Debug, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
enum In {
    Hello {
        csrf: String,
        #[serde(default)]
        cols: u16,
        #[serde(default)]
        rows: u16,
    },
    Run {
        line: String,
        #[serde(default)]
        stdin: Option<String>,
    },
    Input {
        data: String,
    },
    Resize {
        cols: u16,
        rows: u16,
    },
}

#[derive(Debug, Serialize)]
#[serde(tag = "t", rename_all = "lowercase")]
enum Out<'a> {
    Ready {
        user: &'a str,
        cluster: &'a str,
        namespace: &'a str,
        confinement: &'a str,
    },
    Started {
        id: Uuid,
    },
    Exit {
        id: Uuid,
        code: Option<i32>,
        reason: &'a str,
    },
    Refused {
        reason: &'a str,
    },
    Notice {
        text: &'a str,
    },
    Closed {
        reason: &'a str,
    },
}

/// Who opened the shell, and where it points.
pub struct Opened {
    /// The web session's token (from its cookie): the CSRF token and the commands'
    /// credentials are bound to it.
    pub token: String,
    pub session: Session,
    pub cluster: String,
    pub namespace: String,
    pub source_ip: String,
    pub place: Place,
}

enum Ctl {
    Input(Vec<u8>),
    Resize(u16, u16),
}

enum Event {
    Output(Uuid, Vec<u8>),
    Exit(Uuid, Option<i32>, String),
}

/// Stops the running command (from the loop or the session watchdog), remembering why.
#[derive(Default)]
struct Killer {
    pgid: AtomicI32,
    reason: Mutex<Option<String>>,
}

impl Killer {
    fn kill(&self, reason: &str) {
        let pgid = self.pgid.load(Ordering::SeqCst);
        if pgid > 0 {
            self.reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(|| reason.to_string());
            // SAFETY: signals the command's own process group.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

struct Current {
    id: Uuid,
    ctl: mpsc::Sender<Ctl>,
    started: Instant,
    interactive: bool,
}

fn json(out: &Out) -> Message {
    Message::text(serde_json::to_string(out).unwrap_or_default())
}

/// Serves one shell until the browser leaves, the session ends or the shell idles out.
pub async fn serve<S>(gateway: Arc<Gateway>, mut ws: WebSocketStream<S>, opened: Opened)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut cols, mut rows) = (80u16, 24u16);
    // The CSRF token first: a page of another site cannot know it.
    let hello = tokio::time::timeout(HELLO_WAIT, ws.next()).await;
    let csrf = crate::console::csrf_of(&opened.token);
    match hello {
        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<In>(&text) {
            Ok(In::Hello {
                csrf: sent,
                cols: c,
                rows: r,
            }) if crate::client::credential::constant_time_eq(sent.as_bytes(), csrf.as_bytes()) => {
                if c > 0 && r > 0 {
                    (cols, rows) = (c, r);
                }
            }
            _ => {
                let _ = ws
                    .send(json(&Out::Closed {
                        reason: "the shell's first message must be its hello with the page's CSRF token; reload the page",
                    }))
                    .await;
                let _ = ws.close(None).await;
                return;
            }
        },
        _ => {
            let _ = ws.close(None).await;
            return;
        }
    }
    let state = gateway.shell.clone();
    let confinement = match super::confine::landlock_abi() {
        0 => "limits and no_new_privs (this kernel has no Landlock)",
        v if v < 4 => "Landlock (files only: ABI < 4), limits, no_new_privs",
        _ => "Landlock (files and network), limits, no_new_privs",
    };
    let user = opened.session.user.clone();
    if ws
        .send(json(&Out::Ready {
            user: &user,
            cluster: &opened.cluster,
            namespace: &opened.namespace,
            confinement,
        }))
        .await
        .is_err()
    {
        return;
    }
    tracing::info!(%user, cluster = %opened.cluster, source = %opened.source_ip, "web shell opened");

    let killer = Arc::new(Killer::default());
    // The session watchdog: a revoked, expired or signed-out session stops the command at
    // once (even while the loop below waits on a slow browser) and closes the shell.
    let (ended_tx, mut ended_rx) = watch::channel(None::<String>);
    let parent = crate::gateway::users::hash_token(&opened.token);
    let watchdog = {
        let gateway = gateway.clone();
        let killer = killer.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECK);
            loop {
                tick.tick().await;
                let reason = match gateway.users.authenticate_hash(parent.clone()) {
                    Ok(Ok(_)) => continue,
                    Ok(Err(crate::gateway::users::TokenRejection::Expired)) => {
                        "your session expired; sign in again"
                    }
                    Ok(Err(_)) => "your session was ended (signed out or revoked); sign in again",
                    Err(_) => continue,
                };
                killer.kill(&format!("stopped: {reason}"));
                let _ = ended_tx.send(Some(reason.to_string()));
                return;
            }
        })
    };

    let (events_tx, mut events) = mpsc::channel::<Event>(32);
    let mut current: Option<Current> = None;
    let mut last_activity = Instant::now();
    let mut tick = tokio::time::interval(CHECK);
    let closing: String = loop {
        tokio::select! {
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        let _ = ws.send(json(&Out::Notice { text: "binary messages are not part of the shell's protocol" })).await;
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None => break String::new(),
                    Some(Err(err)) => {
                        tracing::info!(%user, "web shell connection ended: {err}");
                        break String::new();
                    }
                };
                last_activity = Instant::now();
                let msg = match serde_json::from_str::<In>(&text) {
                    Ok(msg) => msg,
                    Err(err) => {
                        let text = format!("not a shell message: {err}");
                        let _ = ws.send(json(&Out::Notice { text: &text })).await;
                        continue;
                    }
                };
                match msg {
                    In::Hello { .. } => {}
                    In::Input { data } => {
                        if let Some(c) = &current {
                            let _ = c.ctl.send(Ctl::Input(data.into_bytes())).await;
                        }
                    }
                    In::Resize { cols: c, rows: r } => {
                        if c > 0 && r > 0 {
                            (cols, rows) = (c.min(1000), r.min(1000));
                            if let Some(cur) = &current {
                                let _ = cur.ctl.send(Ctl::Resize(cols, rows)).await;
                            }
                        }
                    }
                    In::Run { line, stdin } => {
                        if current.is_some() {
                            let _ = ws.send(json(&Out::Notice { text: "a command is running; Ctrl-C stops it" })).await;
                            continue;
                        }
                        match start(&gateway, &opened, &line, stdin, (cols, rows), &killer, events_tx.clone()) {
                            Ok(Some(cur)) => {
                                let _ = ws.send(json(&Out::Started { id: cur.id })).await;
                                current = Some(cur);
                            }
                            Ok(None) => {}
                            Err(reason) => {
                                if ws.send(json(&Out::Refused { reason: &reason })).await.is_err() {
                                    break String::new();
                                }
                            }
                        }
                    }
                }
            }
            Some(event) = events.recv() => match event {
                Event::Output(id, bytes) => {
                    if current.as_ref().is_some_and(|c| c.id == id) {
                        last_activity = Instant::now();
                        if ws.send(Message::Binary(Bytes::from(bytes))).await.is_err() {
                            break String::new();
                        }
                    }
                }
                Event::Exit(id, code, reason) => {
                    if current.as_ref().is_some_and(|c| c.id == id) {
                        current = None;
                        killer.pgid.store(0, Ordering::SeqCst);
                        if ws.send(json(&Out::Exit { id, code, reason: &reason })).await.is_err() {
                            break String::new();
                        }
                    }
                }
            },
            _ = ended_rx.changed() => {
                break ended_rx.borrow().clone().unwrap_or_default();
            }
            _ = tick.tick() => {
                if last_activity.elapsed() >= state.config.idle_timeout {
                    let reason = format!(
                        "closed after {} without activity (shell.idle_timeout)",
                        super::config::human(state.config.idle_timeout)
                    );
                    killer.kill(&format!("stopped: the shell {reason}"));
                    break reason;
                }
                if let Some(c) = &current {
                    if !c.interactive && c.started.elapsed() >= state.config.command_timeout {
                        killer.kill(&format!(
                            "stopped: ran longer than {} (shell.command_timeout)",
                            super::config::human(state.config.command_timeout)
                        ));
                    }
                }
            }
        }
    };
    watchdog.abort();
    if current.is_some() {
        killer.kill("stopped: the browser closed the shell");
    }
    if !closing.is_empty() {
        let _ = ws.send(json(&Out::Closed { reason: &closing })).await;
    }
    let _ = ws.close(None).await;
    tracing::info!(%user, cluster = %opened.cluster, "web shell closed");
}

/// Checks and starts one line: the running command, None for an empty line, or the refusal
/// (recorded).
fn start(
    gateway: &Arc<Gateway>,
    opened: &Opened,
    text: &str,
    stdin: Option<String>,
    (cols, rows): (u16, u16),
    killer: &Arc<Killer>,
    events: mpsc::Sender<Event>,
) -> Result<Option<Current>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let state = &gateway.shell;
    let typed = line::split(text).unwrap_or_else(|_| vec![text.to_string()]);
    let argv = redact_argv(&typed);
    let mut record = Command {
        id: Uuid::now_v7(),
        started_us: now_us(),
        user: opened.session.user.clone(),
        cluster: opened.cluster.clone(),
        command_line: shell_join(&argv),
        argv,
        access_method: AccessMethod::Browser,
        host: crate::fsutil::hostname(),
        ..Default::default()
    };
    let refuse = |mut record: Command, reason: String| -> Result<Option<Current>, String> {
        record.ended_us = Some(record.started_us);
        record.reason = format!("refused: {reason}");
        tracing::info!(user = %record.user, command = %record.command_line, "web shell refused a command: {reason}");
        gateway.audit.record_command(record);
        Err(reason)
    };
    let allowed = match line::check(text) {
        Ok(allowed) => allowed,
        Err(refused) => return refuse(record, refused.to_string()),
    };
    let stdin = match (allowed.reads_stdin, stdin) {
        (true, Some(manifest)) if manifest.len() > MAX_MANIFEST => {
            return refuse(record, format!("the pasted manifest is larger than {} MiB", MAX_MANIFEST >> 20))
        }
        (true, Some(manifest)) if !manifest.trim().is_empty() => Some(manifest.into_bytes()),
        (true, _) => {
            return refuse(
                record,
                "-f - reads the pasted manifest: use Paste manifest (or drop a YAML file on the terminal) first".into(),
            )
        }
        (false, _) => None,
    };
    let (Ok(kubectl), Some(port)) = (&state.kubectl, state.port()) else {
        return refuse(
            record,
            "the web shell is not available on this gateway".into(),
        );
    };
    gateway
        .command_owners
        .claim(record.id, &record.user, record.started_us);
    let minted = state.grants.mint(
        &opened.token,
        &record.user,
        &opened.cluster,
        record.id,
        &opened.source_ip,
    );
    let server = format!(
        "https://127.0.0.1:{}{}{}",
        port.port,
        crate::protocol::KUBE_PREFIX,
        opened.cluster
    );
    let running = match run::spawn(run::Spec {
        kubectl,
        args: &allowed.args,
        parent_dir: &state.dir,
        server: &server,
        ca_pem: &port.ca_pem,
        token: &minted.token,
        namespace: &opened.namespace,
        connect_port: port.port,
        limits: state.config.limits,
        stdin,
        cols,
        rows,
    }) {
        Ok(running) => running,
        Err(err) => {
            tracing::error!("web shell could not start kubectl: {err}");
            record.ended_us = Some(now_us());
            record.reason = format!("failed to start: {err}");
            gateway.audit.record_command(record);
            return Err(format!("could not start kubectl on the gateway: {err}"));
        }
    };
    gateway.audit.record_command(record.clone());
    killer.pgid.store(running.pgid, Ordering::SeqCst);
    *killer.reason.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let (ctl_tx, ctl_rx) = mpsc::channel(64);
    let id = record.id;
    tokio::spawn(drive(
        gateway.clone(),
        running,
        record,
        minted,
        killer.clone(),
        ctl_rx,
        events,
    ));
    Ok(Some(Current {
        id,
        ctl: ctl_tx,
        started: Instant::now(),
        interactive: allowed.interactive(),
    }))
}

/// Pumps one command's terminal until it ends, then writes its final record (and only then
/// revokes its credential, by dropping `minted`).
async fn drive(
    gateway: Arc<Gateway>,
    mut running: run::Running,
    mut record: Command,
    minted: super::grants::Minted,
    killer: Arc<Killer>,
    mut ctl: mpsc::Receiver<Ctl>,
    events: mpsc::Sender<Event>,
) {
    let id = record.id;
    let mut buf = vec![0u8; 32 * 1024];
    let mut status = None;
    let mut eof = false;
    let mut ctl_open = true;
    // After the command exits, its output is drained for at most this long (a process it
    // left behind could keep the terminal open).
    let mut drain_until: Option<tokio::time::Instant> = None;
    while !(eof && status.is_some()) {
        tokio::select! {
            r = pty::read(&running.terminal, &mut buf), if !eof => match r {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => {
                    // A full channel waits here: kubectl then waits on its terminal.
                    let _ = events.send(Event::Output(id, buf[..n].to_vec())).await;
                }
            },
            s = running.child.wait(), if status.is_none() => {
                // Reaped: its process group id may be reused from now on.
                killer.pgid.store(0, Ordering::SeqCst);
                status = Some(s);
                drain_until = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            }
            c = ctl.recv(), if ctl_open => match c {
                Some(Ctl::Input(bytes)) => { let _ = pty::write_all(&running.terminal, &bytes).await; }
                Some(Ctl::Resize(c, r)) => { let _ = pty::resize(&running.terminal, c, r); }
                None => ctl_open = false,
            },
            _ = tokio::time::sleep_until(drain_until.unwrap_or_else(tokio::time::Instant::now)), if drain_until.is_some() => break,
        }
    }
    let code = match status {
        Some(Ok(s)) => {
            use std::os::unix::process::ExitStatusExt as _;
            s.code().or_else(|| s.signal().map(|sig| 128 + sig))
        }
        _ => None,
    };
    let mut reason = killer
        .reason
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default();
    // The session may have ended just before the watchdog saw it: the gateway then closed the
    // command's streams itself and kubectl ended on its own. Say so in the record too.
    if reason.is_empty()
        && !matches!(
            gateway.users.authenticate_hash(minted.grant.parent.clone()),
            Ok(Ok(_))
        )
    {
        reason = "stopped: your session was ended (signed out, revoked or expired)".into();
    }
    record.ended_us = Some(now_us());
    record.exit_code = code;
    record.api_calls = minted.grant.calls();
    record.reason = reason.clone();
    gateway.audit.record_command(record);
    drop(minted);
    let _ = events.send(Event::Exit(id, code, reason)).await;
}
