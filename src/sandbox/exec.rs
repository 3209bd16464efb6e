//! exec and attach over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`), against a small
//! fake filesystem per pod: enough for `kubectl exec` and `kubectl cp` (tar over exec) to be
//! tested for real through both hops.
//!
//! Each WebSocket binary message starts with a channel byte: 0 stdin, 1 stdout, 2 stderr,
//! 3 the final Status, 4 terminal resize; v5 adds 255 = "close channel N" so that a client can
//! end stdin (what `tar x` and `cat` need).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message, Role};
use tokio_tungstenite::WebSocketStream;

use super::{ephemeral, spdy, status, Sandbox};
use crate::body::{self, Body};

const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// How long a sandbox exec takes to "start its process" before its first output (see
/// `run_session`).
const EXEC_START: std::time::Duration = std::time::Duration::from_millis(20);
/// kubectl 1.31+ port-forward: SPDY carried inside WebSocket binary messages.
const PORTFORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// Every pod's files, created on first use.
#[derive(Default)]
pub struct Filesystems(Mutex<HashMap<String, Fs>>);

/// One pod's files (absolute paths) and directories.
#[derive(Clone)]
struct Fs {
    files: BTreeMap<String, Vec<u8>>,
    dirs: std::collections::BTreeSet<String>,
    /// What the pod's attached shells printed, by container: their log.
    logs: BTreeMap<String, Vec<u8>>,
}

impl Fs {
    fn seed(pod: &str) -> Fs {
        let mut files = BTreeMap::new();
        files.insert("/etc/hostname".into(), format!("{pod}\n").into_bytes());
        files.insert(
            "/etc/os-release".into(),
            b"NAME=\"ztk sandbox\"\nID=ztk\n".to_vec(),
        );
        files.insert(
            "/app/README.txt".into(),
            b"This pod runs in the ztk sandbox: no real containers, a few built-in commands.\n"
                .to_vec(),
        );
        let dirs = ["/", "/etc", "/app", "/tmp"]
            .into_iter()
            .map(String::from)
            .collect();
        Fs {
            files,
            dirs,
            logs: BTreeMap::new(),
        }
    }

    fn is_dir(&self, path: &str) -> bool {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        self.dirs.contains(path) || self.files.keys().any(|f| f.starts_with(&prefix))
    }
}

/// How a stream request wants to talk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    WebSocket,
    Spdy,
}

fn transport(req: &Request<Body>) -> Option<Transport> {
    let upgrade = req.headers().get(header::UPGRADE)?.to_str().ok()?;
    if upgrade.eq_ignore_ascii_case("websocket") {
        Some(Transport::WebSocket)
    } else if upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        Some(Transport::Spdy)
    } else {
        None
    }
}

/// Whether `req` is an exec, attach or port-forward upgrade this module answers.
pub fn is_exec(req: &Request<Body>) -> bool {
    let segs: Vec<&str> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    matches!(
        segs.as_slice(),
        [
            "api",
            "v1",
            "namespaces",
            _,
            "pods",
            _,
            "exec" | "attach" | "portforward"
        ]
    ) && transport(req).is_some()
}

/// The protocols a client offers, from repeated or comma-separated headers.
fn offered(req: &Request<Body>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .collect()
}

pub fn serve(sandbox: Arc<Sandbox>, mut req: Request<Body>) -> Response<Body> {
    let segs: Vec<String> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let (ns, pod, sub) = (segs[3].clone(), segs[5].clone(), segs[6].clone());
    let Some(pod_obj) = sandbox
        .store
        .get(&super::store::res_key("", "pods"), &ns, &pod)
    else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{pod}\" not found"),
        );
    };
    let transport = transport(&req).expect("checked by is_exec");
    let portforward = sub == "portforward";
    // WebSocket names its subprotocol; SPDY negotiates X-Stream-Protocol-Version.
    let (supported, header_name): (&[&'static str], &str) = match (transport, portforward) {
        (Transport::WebSocket, false) => (&PROTOCOLS, "sec-websocket-protocol"),
        (Transport::WebSocket, true) => (&[PORTFORWARD_TUNNEL], "sec-websocket-protocol"),
        (Transport::Spdy, false) => (&["v4.channel.k8s.io"], "x-stream-protocol-version"),
        (Transport::Spdy, true) => (&["portforward.k8s.io"], "x-stream-protocol-version"),
    };
    let offered = offered(&req, header_name);
    let Some(protocol) = supported
        .iter()
        .find(|p| offered.iter().any(|o| o == *p))
        .copied()
    else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "no supported stream protocol offered ({})",
                supported.join(", ")
            ),
        );
    };
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    if transport == Transport::WebSocket && key.is_none() {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "missing Sec-WebSocket-Key",
        );
    }
    let mut command = Vec::new();
    let mut stdin = false;
    let mut tty = false;
    let mut stderr = false;
    let mut container = None;
    for (k, v) in form_urlencoded(req.uri().query().unwrap_or("")) {
        let on = v == "true" || v == "1";
        match k.as_str() {
            "command" => command.push(v),
            "stdin" => stdin = on,
            "tty" => tty = on,
            "stderr" => stderr = on,
            "container" if !v.is_empty() => container = Some(v),
            _ => {}
        }
    }
    // The apiserver checks the container name against the pod (all three kinds of container).
    let spec = match &container {
        Some(name) => match ephemeral::find_container(&pod_obj, name) {
            Some(c) => Some(c),
            None if portforward => None,
            None => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("container {name} is not valid for pod {pod}"),
                )
            }
        },
        None => pod_obj.pointer("/spec/containers/0"),
    };
    let container_name = spec
        .and_then(|c| c.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or_default()
        .to_string();
    let mut interactive = false;
    if sub == "attach" {
        match spec {
            // A shell that reads its stdin (`kubectl debug -it`, `kubectl run -it … -- sh`):
            // the session talks to it line by line.
            Some(c) if stdin && ephemeral::is_interactive_shell(c) => {
                interactive = true;
                command = ephemeral::argv(c);
            }
            // Any other "main process" echoes its input, or says hello and ends.
            _ => {
                command = if stdin {
                    vec!["cat".into()]
                } else {
                    vec!["echo".into(), format!("attached to {pod}")]
                };
            }
        }
    }
    // `exec -i POD -- sh`: a shell reading its stdin, line by line, as in a real container.
    let bare_shell = command
        .first()
        .and_then(|p| p.rsplit('/').next())
        .is_some_and(|p| matches!(p, "sh" | "ash" | "bash" | "zsh"))
        && !command.iter().skip(1).any(|a| a == "-c");
    if sub == "exec" && stdin && bare_shell {
        interactive = true;
    }
    let ephemeral = ephemeral::is_ephemeral(&pod_obj, &container_name);
    let upgrade = hyper::upgrade::on(&mut req);
    let v5 = protocol.starts_with("v5");
    let exec = Exec {
        sandbox,
        ns,
        pod,
        container: container_name,
        ephemeral,
        attached: interactive && sub == "attach",
        command,
        stdin,
        stderr: stderr && !tty,
        tty,
    };
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let io = TokioIo::new(upgraded);
        match (transport, portforward) {
            (Transport::WebSocket, false) if interactive => {
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                ws_interactive(exec, ws, v5).await;
            }
            (Transport::WebSocket, false) => {
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                run_session(exec, ws, v5).await;
            }
            (Transport::Spdy, false) if interactive => {
                spdy_interactive(exec, spdy::Conn::new(io)).await
            }
            (Transport::WebSocket, true) => {
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                tunnel(ws, |inner| spdy_portforward(spdy::Conn::new(inner))).await;
            }
            (Transport::Spdy, false) => spdy_exec(exec, spdy::Conn::new(io)).await,
            (Transport::Spdy, true) => spdy_portforward(spdy::Conn::new(io)).await,
        }
    });
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    match (transport, key) {
        (Transport::WebSocket, Some(key)) => {
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(protocol),
            );
            if let Ok(v) = HeaderValue::from_str(&crate::serve::websocket_accept(key.as_bytes())) {
                h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
            }
        }
        _ => {
            h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            h.insert(
                "x-stream-protocol-version",
                HeaderValue::from_static(protocol),
            );
        }
    }
    resp
}

/// One exec or attach: where, what, and which streams the client asked for.
struct Exec {
    sandbox: Arc<Sandbox>,
    ns: String,
    pod: String,
    container: String,
    /// The container is an ephemeral one (`kubectl debug`): its shell's end is its end.
    ephemeral: bool,
    /// An attach to an interactive shell: the runtime's attach ends with the streams and says
    /// nothing of the process's exit code (exec does).
    attached: bool,
    command: Vec<String>,
    stdin: bool,
    stderr: bool,
    tty: bool,
}

impl Exec {
    /// Runs `script` (one line typed into an interactive shell): stdout, stderr, exit code, and
    /// the shell's own exit code if the line ended it (`exit`).
    fn run_line(&self, script: &str) -> (Vec<u8>, Vec<u8>, i32, Option<i32>) {
        let mut all = self
            .sandbox
            .files
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let fs = all
            .entry(format!("{}/{}", self.ns, self.pod))
            .or_insert_with(|| Fs::seed(&self.pod));
        let mut shell = Shell {
            fs,
            pod: &self.pod,
            ns: &self.ns,
            stdin: b"",
            stdout: Vec::new(),
            stderr: Vec::new(),
            exit: None,
        };
        let code = shell.script(script);
        (shell.stdout, shell.stderr, code, shell.exit)
    }

    /// Runs the command on the pod's files: stdout, stderr, exit code.
    fn run(&self, input: &[u8]) -> (Vec<u8>, Vec<u8>, i32) {
        let mut all = self
            .sandbox
            .files
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let fs = all
            .entry(format!("{}/{}", self.ns, self.pod))
            .or_insert_with(|| Fs::seed(&self.pod));
        let mut shell = Shell {
            fs,
            pod: &self.pod,
            ns: &self.ns,
            stdin: input,
            stdout: Vec::new(),
            stderr: Vec::new(),
            exit: None,
        };
        let code = shell.run(&self.command);
        let (mut stdout, stderr) = (shell.stdout, shell.stderr);
        if self.tty {
            // A terminal has one output stream.
            stdout.extend_from_slice(&stderr);
            return (stdout, Vec::new(), code);
        }
        (stdout, stderr, code)
    }

    /// The Status the client reads from the error stream.
    fn status(&self, code: i32) -> serde_json::Value {
        if code == 0 || self.attached {
            json!({"metadata": {}, "status": "Success"})
        } else {
            json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: error executing command {:?}, exit code {code}", self.command),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
            })
        }
    }
}

/// exec over SPDY (`v4.channel.k8s.io`): one SPDY stream per channel, named by `streamtype`.
async fn spdy_exec<S: AsyncRead + AsyncWrite + Unpin>(exec: Exec, mut conn: spdy::Conn<S>) {
    let mut expected = vec!["error", "stdout"];
    if exec.stdin {
        expected.push("stdin");
    }
    if exec.stderr {
        expected.push("stderr");
    }
    if exec.tty {
        expected.push("resize");
    }
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut input = Vec::new();
    let mut stdin_done = !(exec.stdin && needs_stdin(&exec.command));
    while !(stdin_done && expected.iter().all(|t| ids.contains_key(*t))) {
        match conn.read().await {
            Ok(Some(spdy::Frame::SynStream { id, headers, fin })) => {
                if conn.syn_reply(id, &[]).await.is_err() {
                    return;
                }
                let kind = headers.get("streamtype").cloned().unwrap_or_default();
                if kind == "stdin" && fin {
                    stdin_done = true;
                }
                ids.insert(kind, id);
            }
            Ok(Some(spdy::Frame::Data { id, data, fin })) => {
                if ids.get("stdin") == Some(&id) {
                    input.extend_from_slice(&data);
                    stdin_done |= fin;
                }
            }
            Ok(Some(spdy::Frame::Ping(n))) => {
                if conn.ping(n).await.is_err() {
                    return;
                }
            }
            Ok(Some(spdy::Frame::Other)) => {}
            Ok(Some(spdy::Frame::GoAway)) | Ok(None) | Err(_) => return,
        }
    }
    let (stdout, stderr, code) = exec.run(&input);
    let mut ok = conn.data(ids["stdout"], &stdout, true).await.is_ok();
    if let Some(id) = ids.get("stderr") {
        ok &= conn.data(*id, &stderr, true).await.is_ok();
    }
    // v4: an empty error stream means success; otherwise it holds the Status.
    let status = if code == 0 {
        Vec::new()
    } else {
        exec.status(code).to_string().into_bytes()
    };
    ok &= conn.data(ids["error"], &status, true).await.is_ok();
    if !ok {
        return;
    }
    // The client closes when it has read everything; answer its pings until then.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(frame)) = conn.read().await {
            match frame {
                spdy::Frame::Ping(n) => {
                    let _ = conn.ping(n).await;
                }
                // A stream opened late still needs its reply, or the client waits for it.
                spdy::Frame::SynStream { id, .. } => {
                    let _ = conn.syn_reply(id, &[]).await;
                }
                spdy::Frame::GoAway => break,
                _ => {}
            }
        }
    })
    .await;
    conn.shutdown().await;
}

/// port-forward over SPDY (`portforward.k8s.io`): each forwarded connection is a pair of
/// streams (`error`, `data`) with the same `requestid`; the pod's "server" on every port echoes
/// what it receives.
async fn spdy_portforward<S: AsyncRead + AsyncWrite + Unpin>(mut conn: spdy::Conn<S>) {
    // data stream id -> error stream id (by request id)
    let mut errors: HashMap<String, u32> = HashMap::new();
    let mut data_streams: HashMap<u32, String> = HashMap::new();
    loop {
        let frame = match conn.read().await {
            Ok(Some(frame)) => frame,
            _ => break,
        };
        let ok = match frame {
            spdy::Frame::SynStream { id, headers, .. } => {
                let request = headers.get("requestid").cloned().unwrap_or_default();
                match headers.get("streamtype").map(String::as_str) {
                    Some("error") => {
                        errors.insert(request, id);
                    }
                    Some("data") => {
                        data_streams.insert(id, request);
                    }
                    _ => {}
                }
                conn.syn_reply(id, &[]).await.is_ok()
            }
            spdy::Frame::Data { id, data, fin } => match data_streams.get(&id).cloned() {
                Some(request) => {
                    let mut ok = data.is_empty() || conn.data(id, &data, false).await.is_ok();
                    if fin {
                        ok &= conn.data(id, &[], true).await.is_ok();
                        if let Some(error_id) = errors.remove(&request) {
                            ok &= conn.data(error_id, &[], true).await.is_ok();
                        }
                        data_streams.remove(&id);
                    }
                    ok
                }
                None => true,
            },
            spdy::Frame::Ping(n) => conn.ping(n).await.is_ok(),
            spdy::Frame::GoAway => break,
            spdy::Frame::Other => true,
        };
        if !ok {
            break;
        }
    }
    conn.shutdown().await;
}

/// Carries a byte protocol inside WebSocket binary messages (kubectl's port-forward tunnels
/// SPDY this way since 1.31): `serve` gets one end of an in-memory pipe.
async fn tunnel<S, F, Fut>(ws: WebSocketStream<S>, serve: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(tokio::io::DuplexStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (inner, outer) = tokio::io::duplex(256 * 1024);
    let served = tokio::spawn(serve(inner));
    let (mut to_client, mut from_client) = ws.split();
    let (mut read, mut write) = tokio::io::split(outer);
    let inbound = async move {
        while let Some(Ok(msg)) = from_client.next().await {
            let failed = match msg {
                Message::Binary(data) => write.write_all(&data).await.is_err(),
                Message::Close(_) => true,
                _ => false,
            };
            if failed {
                break;
            }
        }
        let _ = write.shutdown().await;
    };
    let outbound = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_client
                        .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = to_client
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
    };
    tokio::join!(inbound, outbound);
    let _ = served.await;
}

async fn run_session<S>(exec: Exec, mut ws: WebSocketStream<S>, v5: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut input = Vec::new();
    if exec.stdin && needs_stdin(&exec.command) {
        // Read stdin to its end: v5 closes the channel; v4 can only close the connection.
        while let Some(Ok(msg)) = ws.next().await {
            match msg {
                Message::Binary(data) if !data.is_empty() => match data[0] {
                    0 => input.extend_from_slice(&data[1..]),
                    255 if v5 && data.get(1) == Some(&0) => break,
                    _ => {}
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
    }
    let (stdout, stderr, code) = exec.run(&input);
    // kubectl before 1.33 reads the WebSocket before it has made its stream readers, and drops
    // what arrives meanwhile ("Unknown stream id 2, discarding message", then "closed all
    // streams": kubernetes/kubernetes#131189, fixed in client-go 1.33). A real runtime takes
    // tens of milliseconds to start the process; an instant sandbox behind fast relays hit the
    // window. Start the output as late as a quick runtime would.
    if input.is_empty() {
        tokio::time::sleep(EXEC_START).await;
    }
    for (channel, data) in [(1u8, stdout), (2u8, stderr)] {
        for chunk in data.chunks(32 * 1024) {
            let mut msg = Vec::with_capacity(chunk.len() + 1);
            msg.push(channel);
            msg.extend_from_slice(chunk);
            if ws.send(Message::Binary(Bytes::from(msg))).await.is_err() {
                return;
            }
        }
    }
    let status = exec.status(code);
    let mut msg = vec![3u8];
    msg.extend_from_slice(status.to_string().as_bytes());
    let _ = ws.send(Message::Binary(Bytes::from(msg))).await;
    // A close without a status code reads as an error to client-go: say "normal closure".
    let _ = ws
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .await;
    // Let the client's close frame arrive so the connection ends cleanly.
    while let Some(Ok(_)) = ws.next().await {}
}

/// A shell talking to an attached client line by line, as busybox `sh` does: with a terminal
/// it echoes what is typed, prints `/ # ` and ends lines with CRLF; reading a pipe it prints
/// only what the commands print.
struct Interactive {
    tty: bool,
    line: Vec<u8>,
    /// The last byte was a CR (a terminal's Enter); a LF right after it is the same Enter.
    after_cr: bool,
    last_code: i32,
    exit: Option<i32>,
}

const PROMPT: &[u8] = b"/ # ";

impl Interactive {
    fn new(tty: bool) -> Interactive {
        Interactive {
            tty,
            line: Vec::new(),
            after_cr: false,
            last_code: 0,
            exit: None,
        }
    }

    fn greeting(&self) -> Vec<u8> {
        if self.tty {
            PROMPT.to_vec()
        } else {
            Vec::new()
        }
    }

    fn run(&mut self, exec: &Exec, out: &mut Vec<u8>, err: &mut Vec<u8>) {
        let line = String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
        let (stdout, stderr, code, exit) = exec.run_line(&line);
        if self.tty {
            // The terminal's output processing (onlcr), one stream for both.
            for data in [stdout, stderr] {
                for b in data {
                    if b == b'\n' {
                        out.push(b'\r');
                    }
                    out.push(b);
                }
            }
        } else {
            out.extend_from_slice(&stdout);
            err.extend_from_slice(&stderr);
        }
        if !line.trim().is_empty() {
            self.last_code = code;
        }
        self.exit = exit;
    }

    /// Typed or piped input in, (stdout, stderr) out.
    fn feed(&mut self, exec: &Exec, data: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        for &b in data {
            if self.exit.is_some() {
                break;
            }
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    if self.tty {
                        out.extend_from_slice(b"\r\n");
                    }
                    self.run(exec, &mut out, &mut err);
                    if self.tty && self.exit.is_none() {
                        out.extend_from_slice(PROMPT);
                    }
                }
                0x7f | 0x08 if self.tty => {
                    if self.line.pop().is_some() {
                        out.extend_from_slice(b"\x08 \x08");
                    }
                }
                0x03 if self.tty => {
                    self.line.clear();
                    out.extend_from_slice(b"^C\r\n");
                    out.extend_from_slice(PROMPT);
                }
                0x04 if self.tty && self.line.is_empty() => {
                    out.extend_from_slice(b"\r\n");
                    self.exit = Some(self.last_code);
                }
                _ => {
                    self.line.push(b);
                    if self.tty {
                        out.push(b);
                    }
                }
            }
        }
        (out, err)
    }

    /// End of input: what is left of the line runs, then the shell exits.
    fn finish(&mut self, exec: &Exec) -> (Vec<u8>, Vec<u8>, i32) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        if self.exit.is_none() && !self.line.is_empty() {
            self.run(exec, &mut out, &mut err);
        }
        let code = self.exit.unwrap_or(self.last_code);
        (out, err, code)
    }
}

impl Exec {
    /// Keeps what an attached shell printed as its container's log.
    fn record(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut all = self
            .sandbox
            .files
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let fs = all
            .entry(format!("{}/{}", self.ns, self.pod))
            .or_insert_with(|| Fs::seed(&self.pod));
        let log = fs.logs.entry(self.container.clone()).or_default();
        log.extend_from_slice(data);
        // Like a kubelet's log rotation, keep the recent part only.
        if log.len() > 1 << 20 {
            log.drain(..log.len() - (1 << 19));
        }
    }

    /// The attached process ended with `code`: an ephemeral container terminates (it is never
    /// restarted).
    fn ended(&self, code: i32) {
        if !self.ephemeral {
            return;
        }
        self.sandbox.store.write(|txn| {
            if let Some(mut pod) = txn.get("/pods", &self.ns, &self.pod).cloned() {
                ephemeral::terminate(&mut pod, &self.container, code);
                let _ = txn.update("/pods", pod);
            }
        });
    }

    /// Where stderr goes: its own stream if the client asked for one, else nowhere a client
    /// reads (a terminal merges it into stdout before this).
    fn split_err(&self, out: &mut Vec<u8>, err: Vec<u8>) -> Vec<u8> {
        if self.stderr {
            err
        } else {
            out.extend_from_slice(&err);
            Vec::new()
        }
    }
}

/// An attached interactive shell over WebSocket: each line of stdin runs as it arrives.
async fn ws_interactive<S>(exec: Exec, mut ws: WebSocketStream<S>, v5: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    async fn send<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        ws: &mut WebSocketStream<S>,
        channel: u8,
        data: &[u8],
    ) -> bool {
        if data.is_empty() {
            return true;
        }
        let mut msg = Vec::with_capacity(data.len() + 1);
        msg.push(channel);
        msg.extend_from_slice(data);
        ws.send(Message::Binary(Bytes::from(msg))).await.is_ok()
    }
    // See `run_session`: kubectl before 1.33 drops what arrives before its readers exist.
    tokio::time::sleep(EXEC_START).await;
    let mut sh = Interactive::new(exec.tty);
    if !send(&mut ws, 1, &sh.greeting()).await {
        return;
    }
    while sh.exit.is_none() {
        match ws.next().await {
            Some(Ok(Message::Binary(data))) if !data.is_empty() => match data[0] {
                0 => {
                    let (mut out, err) = sh.feed(&exec, &data[1..]);
                    let err = exec.split_err(&mut out, err);
                    exec.record(&out);
                    exec.record(&err);
                    if !send(&mut ws, 1, &out).await || !send(&mut ws, 2, &err).await {
                        return;
                    }
                }
                255 if v5 && data.get(1) == Some(&0) => break,
                _ => {}
            },
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            _ => {}
        }
    }
    let (mut out, err, code) = sh.finish(&exec);
    let err = exec.split_err(&mut out, err);
    exec.record(&out);
    exec.record(&err);
    exec.ended(code);
    let _ = send(&mut ws, 1, &out).await && send(&mut ws, 2, &err).await;
    let mut msg = vec![3u8];
    msg.extend_from_slice(exec.status(code).to_string().as_bytes());
    let _ = ws.send(Message::Binary(Bytes::from(msg))).await;
    let _ = ws
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .await;
    while let Some(Ok(_)) = ws.next().await {}
}

/// An attached interactive shell over SPDY (`v4.channel.k8s.io`, kubectl before 1.30).
async fn spdy_interactive<S: AsyncRead + AsyncWrite + Unpin>(exec: Exec, mut conn: spdy::Conn<S>) {
    let mut expected = vec!["error", "stdout", "stdin"];
    if exec.stderr {
        expected.push("stderr");
    }
    if exec.tty {
        expected.push("resize");
    }
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut early = Vec::new();
    let mut eof = false;
    while !expected.iter().all(|t| ids.contains_key(*t)) {
        match conn.read().await {
            Ok(Some(spdy::Frame::SynStream { id, headers, fin })) => {
                if conn.syn_reply(id, &[]).await.is_err() {
                    return;
                }
                let kind = headers.get("streamtype").cloned().unwrap_or_default();
                eof |= kind == "stdin" && fin;
                ids.insert(kind, id);
            }
            Ok(Some(spdy::Frame::Data { id, data, fin })) => {
                if ids.get("stdin") == Some(&id) {
                    early.extend_from_slice(&data);
                    eof |= fin;
                }
            }
            Ok(Some(spdy::Frame::Ping(n))) => {
                if conn.ping(n).await.is_err() {
                    return;
                }
            }
            Ok(Some(spdy::Frame::Other)) => {}
            Ok(Some(spdy::Frame::GoAway)) | Ok(None) | Err(_) => return,
        }
    }
    let (stdout_id, stdin_id) = (ids["stdout"], ids["stdin"]);
    let stderr_id = ids.get("stderr").copied();
    let mut sh = Interactive::new(exec.tty);
    let (mut out, mut err) = (sh.greeting(), Vec::new());
    let (o, e) = sh.feed(&exec, &early);
    out.extend(o);
    err.extend(e);
    let mut ok = true;
    loop {
        let e = exec.split_err(&mut out, std::mem::take(&mut err));
        exec.record(&out);
        exec.record(&e);
        if !out.is_empty() {
            ok &= conn
                .data(stdout_id, &std::mem::take(&mut out), false)
                .await
                .is_ok();
        }
        if let (Some(id), false) = (stderr_id, e.is_empty()) {
            ok &= conn.data(id, &e, false).await.is_ok();
        }
        if !ok {
            return;
        }
        if eof || sh.exit.is_some() {
            break;
        }
        match conn.read().await {
            Ok(Some(spdy::Frame::Data { id, data, fin })) if id == stdin_id => {
                let (o, e) = sh.feed(&exec, &data);
                out = o;
                err = e;
                eof |= fin;
            }
            Ok(Some(spdy::Frame::SynStream { id, .. })) => {
                if conn.syn_reply(id, &[]).await.is_err() {
                    return;
                }
            }
            Ok(Some(spdy::Frame::Ping(n))) => {
                if conn.ping(n).await.is_err() {
                    return;
                }
            }
            Ok(Some(spdy::Frame::GoAway)) | Ok(None) | Err(_) => break,
            Ok(Some(_)) => {}
        }
    }
    let (mut out, err, code) = sh.finish(&exec);
    let err = exec.split_err(&mut out, err);
    exec.record(&out);
    exec.record(&err);
    exec.ended(code);
    let mut ok = conn.data(stdout_id, &out, true).await.is_ok();
    if let Some(id) = stderr_id {
        ok &= conn.data(id, &err, true).await.is_ok();
    }
    let status = if code == 0 || exec.attached {
        Vec::new()
    } else {
        exec.status(code).to_string().into_bytes()
    };
    ok &= conn.data(ids["error"], &status, true).await.is_ok();
    if !ok {
        return;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(frame)) = conn.read().await {
            match frame {
                spdy::Frame::Ping(n) => {
                    let _ = conn.ping(n).await;
                }
                spdy::Frame::SynStream { id, .. } => {
                    let _ = conn.syn_reply(id, &[]).await;
                }
                spdy::Frame::GoAway => break,
                _ => {}
            }
        }
    })
    .await;
    conn.shutdown().await;
}

/// The log of an ephemeral container: what its attached shells printed, or else what its
/// command prints (`kubectl debug POD --image=busybox -- ls /app`).
pub fn ephemeral_log(
    sandbox: &Arc<Sandbox>,
    ns: &str,
    pod: &str,
    container: &serde_json::Value,
) -> Vec<u8> {
    let name = container["name"].as_str().unwrap_or_default();
    let recorded = {
        let all = sandbox.files.0.lock().unwrap_or_else(|e| e.into_inner());
        all.get(&format!("{ns}/{pod}"))
            .and_then(|fs| fs.logs.get(name))
            .cloned()
    };
    if let Some(log) = recorded {
        return log;
    }
    let argv = ephemeral::argv(container);
    if matches!(
        argv.first().map(String::as_str),
        Some("sh" | "bash" | "ash" | "zsh")
    ) && argv.len() == 1
    {
        return Vec::new();
    }
    let exec = Exec {
        sandbox: sandbox.clone(),
        ns: ns.into(),
        pod: pod.into(),
        container: name.into(),
        ephemeral: true,
        attached: false,
        command: argv,
        stdin: false,
        stderr: false,
        tty: false,
    };
    let (mut out, err, _) = exec.run(b"");
    out.extend(err);
    out
}

/// Whether the command reads its standard input (so stdin must be read to its end first):
/// `cat` without files, `tar x`, or a `sh -c` script with one of them.
fn needs_stdin(command: &[String]) -> bool {
    let reads = |words: &[&str]| match words {
        ["cat"] => true,
        ["tar", mode, ..] => mode.contains('x'),
        _ => false,
    };
    match command.first().map(String::as_str) {
        Some("sh" | "bash") => command.get(2).is_some_and(|script| {
            script.split([';', '&', '\n', '|']).any(|part| {
                let words: Vec<&str> = part.split_whitespace().collect();
                reads(&words)
            })
        }),
        _ => {
            let words: Vec<&str> = command.iter().map(String::as_str).collect();
            reads(&words)
        }
    }
}

/// `a=1&b=2` decoded, keeping repeated keys (`command` repeats).
fn form_urlencoded(q: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(kv), String::new()),
        })
        .collect()
}

/// The built-in commands, run against one pod's files.
struct Shell<'a> {
    fs: &'a mut Fs,
    pod: &'a str,
    ns: &'a str,
    stdin: &'a [u8],
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Set by `exit`: the shell ends with this code.
    exit: Option<i32>,
}

impl Shell<'_> {
    fn err(&mut self, msg: String) -> i32 {
        self.stderr.extend_from_slice(msg.as_bytes());
        self.stderr.push(b'\n');
        1
    }

    fn run(&mut self, argv: &[String]) -> i32 {
        let Some(cmd) = argv.first() else {
            return self.err("no command given".into());
        };
        let args = &argv[1..];
        match cmd.as_str() {
            "echo" => {
                self.stdout.extend_from_slice(args.join(" ").as_bytes());
                self.stdout.push(b'\n');
                0
            }
            "true" => 0,
            "false" => 1,
            "exit" => match args.first().map(|a| a.parse::<i32>()) {
                None => {
                    self.exit = Some(0);
                    0
                }
                Some(Ok(code)) => {
                    self.exit = Some(code & 0xff);
                    code & 0xff
                }
                Some(Err(_)) => {
                    self.exit = Some(2);
                    self.err(format!("sh: exit: Illegal number: {}", args[0]))
                }
            },
            "whoami" => {
                self.stdout.extend_from_slice(b"root\n");
                0
            }
            "hostname" => {
                self.stdout
                    .extend_from_slice(format!("{}\n", self.pod).as_bytes());
                0
            }
            "pwd" => {
                self.stdout.extend_from_slice(b"/\n");
                0
            }
            "env" => {
                let env = format!(
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nHOSTNAME={}\nPOD_NAMESPACE={}\nHOME=/root\n",
                    self.pod, self.ns
                );
                self.stdout.extend_from_slice(env.as_bytes());
                0
            }
            "cat" if args.is_empty() => {
                self.stdout.extend_from_slice(self.stdin);
                0
            }
            "cat" => {
                let mut code = 0;
                for path in args {
                    match self.fs.files.get(path.as_str()) {
                        Some(data) => self.stdout.extend_from_slice(&data.clone()),
                        None => code = self.err(format!("cat: {path}: No such file or directory")),
                    }
                }
                code
            }
            "ls" => self.ls(args),
            "test" => match args {
                [flag, path] if flag == "-d" => i32::from(!self.fs.is_dir(path)),
                [flag, path] if flag == "-f" || flag == "-e" => i32::from(
                    !(self.fs.files.contains_key(path.as_str())
                        || (flag == "-e" && self.fs.is_dir(path))),
                ),
                _ => 2,
            },
            "mkdir" => {
                for path in args.iter().filter(|a| !a.starts_with('-')) {
                    self.fs.dirs.insert(path.trim_end_matches('/').to_string());
                }
                0
            }
            "tar" => self.tar(args),
            "sh" | "bash" => match args {
                [flag, script, ..] if flag == "-c" => self.script(script),
                _ => self.err("sh: only `sh -c SCRIPT` is supported in the sandbox".into()),
            },
            other => {
                self.stderr
                    .extend_from_slice(format!("sh: {other}: not found\n").as_bytes());
                127
            }
        }
    }

    /// `a; b && c` with single and double quotes: enough for `sh -c 'echo …'`.
    fn script(&mut self, script: &str) -> i32 {
        let mut code = 0;
        let mut words = Vec::new();
        let mut word = String::new();
        let mut in_word = false;
        let mut quote: Option<char> = None;
        let mut run_next = true;
        let mut chars = script.chars().peekable();
        loop {
            let c = chars.next();
            match (quote, c) {
                (Some(q), Some(c)) if c == q => quote = None,
                (Some(_), Some(c)) => word.push(c),
                (None, Some(c @ ('\'' | '"'))) => {
                    quote = Some(c);
                    in_word = true;
                }
                (None, Some(c)) if c.is_whitespace() => {
                    if in_word {
                        words.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                }
                (None, Some(c))
                    if c == ';' || (c == '&' && chars.peek() == Some(&'&')) || c == '\n' =>
                {
                    if c == '&' {
                        chars.next();
                    }
                    if in_word {
                        words.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                    if run_next && !words.is_empty() {
                        code = self.run(&words);
                        if self.exit.is_some() {
                            return code;
                        }
                    }
                    words.clear();
                    run_next = c != '&' || code == 0;
                }
                (None, Some(c)) => {
                    word.push(c);
                    in_word = true;
                }
                (_, None) => {
                    if in_word {
                        words.push(word);
                    }
                    if run_next && !words.is_empty() {
                        code = self.run(&words);
                    }
                    return code;
                }
            }
        }
    }

    fn ls(&mut self, args: &[String]) -> i32 {
        let paths: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
        let targets = if paths.is_empty() {
            vec!["/".to_string()]
        } else {
            paths.into_iter().cloned().collect()
        };
        let mut code = 0;
        for target in targets {
            if self.fs.files.contains_key(&target) {
                self.stdout
                    .extend_from_slice(format!("{target}\n").as_bytes());
                continue;
            }
            if !self.fs.is_dir(&target) {
                code = self.err(format!(
                    "ls: cannot access '{target}': No such file or directory"
                ));
                continue;
            }
            let prefix = format!("{}/", target.trim_end_matches('/'));
            let mut names: Vec<String> = self
                .fs
                .files
                .keys()
                .chain(self.fs.dirs.iter())
                .filter_map(|p| p.strip_prefix(&prefix))
                .filter(|rest| !rest.is_empty())
                .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
                .collect();
            names.sort();
            names.dedup();
            for name in names {
                self.stdout
                    .extend_from_slice(format!("{name}\n").as_bytes());
            }
        }
        code
    }

    /// `tar cf - [-C DIR] PATH...` and `tar xf - [-C DIR]` (also `-xmf`), plain ustar.
    fn tar(&mut self, args: &[String]) -> i32 {
        let Some(mode) = args.first() else {
            return self.err("tar: no mode".into());
        };
        let mut dir = "/".to_string();
        let mut paths = Vec::new();
        let mut rest = args[1..].iter();
        while let Some(arg) = rest.next() {
            match arg.as_str() {
                "-" => {}
                "-C" => dir = rest.next().cloned().unwrap_or_default(),
                other => paths.push(other.to_string()),
            }
        }
        let resolve = |p: &str| {
            if p.starts_with('/') {
                p.to_string()
            } else {
                format!("{}/{p}", dir.trim_end_matches('/'))
            }
        };
        if mode.contains('x') {
            let mut offset = 0;
            let data = self.stdin;
            while offset + 512 <= data.len() {
                let header = &data[offset..offset + 512];
                if header.iter().all(|b| *b == 0) {
                    break;
                }
                let field = |a: usize, b: usize| {
                    let raw = &header[a..b];
                    let end = raw.iter().position(|c| *c == 0).unwrap_or(raw.len());
                    String::from_utf8_lossy(&raw[..end]).into_owned()
                };
                let size = u64::from_str_radix(field(124, 136).trim(), 8).unwrap_or(0) as usize;
                let name = match field(345, 500) {
                    prefix if !prefix.is_empty() => format!("{prefix}/{}", field(0, 100)),
                    _ => field(0, 100),
                };
                let kind = header[156];
                offset += 512;
                let Some(body) = data.get(offset..offset + size) else {
                    return self.err("tar: unexpected end of archive".into());
                };
                let path = resolve(name.trim_start_matches("./"));
                match kind {
                    b'0' | 0 => {
                        self.fs.files.insert(path, body.to_vec());
                    }
                    b'5' => {
                        self.fs.dirs.insert(path.trim_end_matches('/').to_string());
                    }
                    _ => {}
                }
                offset += size.div_ceil(512) * 512;
            }
            return 0;
        }
        if !mode.contains('c') {
            return self.err(format!("tar: unsupported mode {mode}"));
        }
        let mut out = Vec::new();
        let mut code = 0;
        for path in &paths {
            let full = resolve(path);
            let prefix = format!("{}/", full.trim_end_matches('/'));
            let entries: Vec<(String, Vec<u8>)> = self
                .fs
                .files
                .iter()
                .filter(|(p, _)| **p == full || p.starts_with(&prefix))
                .map(|(p, d)| (p.clone(), d.clone()))
                .collect();
            if entries.is_empty() && !self.fs.is_dir(&full) {
                code = self.err(format!(
                    "tar: {path}: Cannot stat: No such file or directory"
                ));
                continue;
            }
            for (p, data) in entries {
                // GNU tar drops the leading `/`; names relative to -C stay relative.
                let name = if path.starts_with('/') {
                    p.trim_start_matches('/').to_string()
                } else {
                    p.strip_prefix(&format!("{}/", dir.trim_end_matches('/')))
                        .unwrap_or(&p)
                        .to_string()
                };
                out.extend_from_slice(&ustar_header(&name, data.len()));
                out.extend_from_slice(&data);
                out.resize(out.len().div_ceil(512) * 512, 0);
            }
        }
        out.resize(out.len() + 1024, 0);
        self.stdout.extend_from_slice(&out);
        code
    }
}

fn ustar_header(name: &str, size: usize) -> [u8; 512] {
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, s: &[u8]| h[at..at + s.len()].copy_from_slice(s);
    put(&mut h, 0, &name.as_bytes()[..name.len().min(100)]);
    put(&mut h, 100, b"0000644\0");
    put(&mut h, 108, b"0000000\0");
    put(&mut h, 116, b"0000000\0");
    put(&mut h, 124, format!("{size:011o}\0").as_bytes());
    put(&mut h, 136, b"00000000000\0");
    put(&mut h, 148, b"        ");
    h[156] = b'0';
    put(&mut h, 257, b"ustar\x0000");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell_run(fs: &mut Fs, stdin: &[u8], argv: &[&str]) -> (String, String, i32) {
        let mut shell = Shell {
            fs,
            pod: "p",
            ns: "dev",
            stdin,
            stdout: vec![],
            stderr: vec![],
            exit: None,
        };
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let code = shell.run(&argv);
        (
            String::from_utf8_lossy(&shell.stdout).into_owned(),
            String::from_utf8_lossy(&shell.stderr).into_owned(),
            code,
        )
    }

    #[test]
    fn builtins_and_tar_round_trip() {
        let mut fs = Fs::seed("p");
        assert_eq!(
            shell_run(
                &mut fs,
                b"",
                &["sh", "-c", "echo 'a  b'; echo c && false && echo no"]
            )
            .0,
            "a  b\nc\n"
        );
        assert_eq!(shell_run(&mut fs, b"", &["ls", "/"]).0, "app\netc\ntmp\n");
        assert_eq!(shell_run(&mut fs, b"", &["cat", "/nope"]).2, 1);
        assert_eq!(shell_run(&mut fs, b"", &["test", "-d", "/tmp"]).2, 0);
        assert_eq!(shell_run(&mut fs, b"", &["nosuch"]).2, 127);
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(needs_stdin(&argv(&["cat"])));
        assert!(needs_stdin(&argv(&["tar", "-xmf", "-"])));
        assert!(needs_stdin(&argv(&["sh", "-c", "echo a; cat"])));
        assert!(!needs_stdin(&argv(&["sh", "-c", "echo tty; cat /nope"])));
        assert!(!needs_stdin(&argv(&["cat", "/etc/hostname"])));
        let (tar, _, code) = shell_run(&mut fs, b"", &["tar", "cf", "-", "/app/README.txt"]);
        assert_eq!(code, 0);
        assert_eq!(&tar.as_bytes()[..14], b"app/README.txt");
        let mut other = Fs::seed("q");
        let (_, _, code) = shell_run(
            &mut other,
            tar.as_bytes(),
            &["tar", "-xmf", "-", "-C", "/tmp"],
        );
        assert_eq!(code, 0);
        assert!(other.files["/tmp/app/README.txt"].starts_with(b"This pod"));
        // The example key and answer of RFC 6455 §1.3.
        assert_eq!(
            crate::serve::websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
