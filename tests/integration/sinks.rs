//! SIEM sinks against real receivers: rsyslog (TCP and TLS, started here as a foreground
//! process), an HTTPS server (hyper + rustls) standing in for a webhook and Splunk HEC, and
//! files. Every record must arrive, in order; the fault test stops the receiver mid-run.
//! Also `ztk audit tail`, local and remote.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use ztk::audit::model::{format_time_us, now_us, STREAM_OPEN};
use ztk::audit::{ApiCall, AuditStore, Command as AuditCommand, Filter, Record, Sequenced};

use crate::harness::*;

/// A call as the gateway would record it, with hostile characters in the places where a
/// format could break (syslog structured data, JSON).
fn call(i: usize, user: &str, cluster: &str) -> ApiCall {
    let verbs = ["get", "list", "delete", "create", "patch"];
    ApiCall {
        id: uuid::Uuid::now_v7(),
        time_us: now_us(),
        user: user.into(),
        cluster: cluster.into(),
        namespace: "prod".into(),
        resource: "pods".into(),
        name: format!("web-{i}"),
        api_version: "v1".into(),
        verb: verbs[i % verbs.len()].into(),
        method: "GET".into(),
        path: format!("/api/v1/namespaces/prod/pods/web-{i}"),
        query: if i % 7 == 0 {
            "a=\"b\"]\\c".into()
        } else {
            String::new()
        },
        status: if i % 11 == 0 { 403 } else { 200 },
        duration_us: 1500 + i as i64,
        user_agent: "kubectl/v1.33.0 (linux/amd64) \"quoted\" [x]".into(),
        source_ip: "10.0.0.7".into(),
        decision: if i % 11 == 0 {
            "deny".into()
        } else {
            "allow".into()
        },
        reason: if i % 11 == 0 {
            "no binding allows delete on pods".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

/// Writes `n` records into the gateway's audit store (a second writer beside the gateway's, as
/// ingest is): calls of alice and bob on dev and prod, a command, and a stream that opens and
/// closes. Returns once they are committed.
fn inject(store_path: &Path, n: usize, offset: usize) {
    let store = AuditStore::open(store_path).unwrap();
    let (sink, writer) = store.start_writer(256).unwrap();
    for i in offset..offset + n {
        let user = if i % 2 == 0 { "alice" } else { "bob" };
        let cluster = if i % 3 == 0 { "prod" } else { "dev" };
        match i % 10 {
            4 => sink.record_command(AuditCommand {
                id: uuid::Uuid::now_v7(),
                started_us: now_us() - 1000,
                ended_us: Some(now_us()),
                user: user.into(),
                cluster: cluster.into(),
                argv: vec!["kubectl".into(), "get".into(), format!("po/web-{i}")],
                command_line: format!("kubectl get po/web-{i}"),
                exit_code: Some(0),
                api_calls: 1,
                host: "laptop".into(),
                ..Default::default()
            }),
            9 => {
                // An exec: its open record first, replaced by the final one.
                let mut c = call(i, user, cluster);
                c.subresource = "exec".into();
                c.verb = "create".into();
                c.status = 101;
                c.reason = STREAM_OPEN.into();
                sink.record_call(c.clone());
                c.reason.clear();
                c.bytes_out = 42;
                sink.record_call(c);
            }
            _ => sink.record_call(call(i, user, cluster)),
        }
    }
    drop(sink);
    writer.close();
}

/// What a sink with `filter` must deliver: the store's records in write order, open streams
/// left out.
fn expected(store_path: &Path, filter: &str) -> Vec<Sequenced> {
    let store = AuditStore::open(store_path).unwrap();
    store
        .records_after(0, &Filter::parse_query(filter).unwrap(), 1_000_000)
        .unwrap()
        .records
        .into_iter()
        .filter(|r| !matches!(&r.record, Record::Call(c) if c.call.reason == STREAM_OPEN))
        .collect()
}

fn seqs(records: &[Sequenced]) -> Vec<i64> {
    records.iter().map(|r| r.seq).collect()
}

/// Checks arrival order against the expected list: after dropping repeats (at-least-once),
/// exactly the expected sequence, in order. Returns how many repeats there were.
fn check_in_order(what: &str, arrived: &[i64], want: &[i64]) -> usize {
    let mut seen = HashSet::new();
    let firsts: Vec<i64> = arrived
        .iter()
        .copied()
        .filter(|s| seen.insert(*s))
        .collect();
    assert_eq!(firsts, want, "{what}: every record, once, in write order");
    arrived.len() - firsts.len()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn status_json(env: &Env) -> Vec<Value> {
    let out = env
        .gateway_cmd(&["sinks", "status", "-o", "json"])
        .success();
    serde_json::from_str(&out).unwrap()
}

// ---------------------------------------------------------------------------------------------
// rsyslog

/// rsyslogd in the foreground with a generated config: imtcp (octet-counted framing on by
/// default) on a free port, optionally TLS with the gtls driver, writing every message's parsed
/// RFC 5424 fields to `out`.
struct Rsyslog {
    child: Option<Child>,
    dir: PathBuf,
    pub port: u16,
    pub out: PathBuf,
}

impl Rsyslog {
    fn start(dir: &Path, tls: Option<(&Path, &Path, &Path)>) -> Rsyslog {
        let bin = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect(
                "rsyslogd is missing: apt-get install -y rsyslog rsyslog-gnutls (.ci/run does)",
            );
        std::fs::create_dir_all(dir).unwrap();
        let mut r = Rsyslog {
            child: None,
            dir: dir.to_path_buf(),
            port: free_port(),
            out: dir.join("received.log"),
        };
        let tls_global = match tls {
            Some((ca, cert, key)) => format!(
                " defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
                ca.display(),
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let module = if tls.is_some() {
            "module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"anon\")"
        } else {
            "module(load=\"imtcp\")"
        };
        std::fs::write(
            dir.join("rsyslog.conf"),
            format!(
                "global(workDirectory=\"{dir}\" maxMessageSize=\"64k\"{tls_global})\n{module}\n\
                 input(type=\"imtcp\" port=\"{port}\")\n\
                 template(name=\"fields\" type=\"string\" string=\"%app-name%|%msgid%|%pri%|%timereported:::date-rfc3339%|%structured-data%|%msg%\\n\")\n\
                 action(type=\"omfile\" file=\"{out}\" template=\"fields\")\n",
                dir = dir.display(),
                port = r.port,
                out = r.out.display(),
            ),
        )
        .unwrap();
        r.child = Some(
            Command::new(bin)
                .args(["-n", "-f"])
                .arg(dir.join("rsyslog.conf"))
                .arg("-i")
                .arg(dir.join("rsyslogd.pid"))
                .stdout(Stdio::null())
                // Its complaints about the readiness probes (connections without a handshake).
                .stderr(std::fs::File::create(dir.join("rsyslogd.stderr")).unwrap())
                .spawn()
                .unwrap(),
        );
        r.wait_listening();
        r
    }

    fn wait_listening(&self) {
        wait_for("rsyslog to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }

    /// Starts again on the same port, appending to the same file.
    fn restart(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(self.dir.join("rsyslogd.pid"));
        let conf = self.dir.join("rsyslog.conf");
        let bin = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap();
        self.child = Some(
            Command::new(bin)
                .args(["-n", "-f"])
                .arg(conf)
                .arg("-i")
                .arg(self.dir.join("rsyslogd.pid"))
                .stdout(Stdio::null())
                // Its complaints about the readiness probes (connections without a handshake).
                .stderr(std::fs::File::create(self.dir.join("rsyslogd.stderr")).unwrap())
                .spawn()
                .unwrap(),
        );
        self.wait_listening();
    }

    /// The messages received so far, parsed.
    fn messages(&self) -> Vec<SyslogLine> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(SyslogLine::parse)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug)]
struct SyslogLine {
    app: String,
    msgid: String,
    pri: u32,
    time: String,
    sd_id: String,
    sd: BTreeMap<String, String>,
    msg: String,
}

impl SyslogLine {
    /// `APP|MSGID|PRI|TIME|[id k="v" …]|MSG`, undoing RFC 5424's escapes in the values.
    fn parse(line: &str) -> SyslogLine {
        let mut parts = line.splitn(5, '|');
        let app = parts.next().unwrap().to_string();
        let msgid = parts.next().unwrap().to_string();
        let pri = parts.next().unwrap().parse().unwrap();
        let time = parts.next().unwrap().to_string();
        let rest = parts.next().unwrap();
        let body = rest.strip_prefix('[').expect(line);
        let id_end = body.find(' ').unwrap();
        let sd_id = body[..id_end].to_string();
        let mut sd = BTreeMap::new();
        let mut chars = body[id_end..].chars().peekable();
        loop {
            while chars.next_if(|c| *c == ' ').is_some() {}
            if chars.next_if(|c| *c == ']').is_some() {
                break;
            }
            let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
            assert_eq!(chars.next(), Some('='), "{line}");
            assert_eq!(chars.next(), Some('"'), "{line}");
            let mut value = String::new();
            loop {
                match chars.next().expect(line) {
                    '\\' => value.push(chars.next().unwrap()),
                    '"' => break,
                    c => value.push(c),
                }
            }
            sd.insert(name, value);
        }
        let msg: String = chars
            .collect::<String>()
            .trim_start_matches('|')
            .trim_start()
            .to_string();
        SyslogLine {
            app,
            msgid,
            pri,
            time,
            sd_id,
            sd,
            msg,
        }
    }

    fn seq(&self) -> i64 {
        self.sd["seq"].parse().unwrap()
    }
}

/// A CA, and a server certificate for 127.0.0.1 signed by it, written under `dir`.
fn server_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf, ztk::tls::Ca) {
    ztk::tls::install_crypto_provider();
    std::fs::create_dir_all(dir).unwrap();
    let ca = ztk::tls::Ca::generate("test receiver CA").unwrap();
    let leaf = ca
        .issue_server(&["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap();
    let (ca_path, cert, key) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    (ca_path, cert, key, ca)
}

fn check_syslog_fields(line: &SyslogLine, record: &Sequenced) {
    assert_eq!(line.sd_id, "ztk@32473");
    assert_eq!(line.seq(), record.seq);
    match &record.record {
        Record::Call(row) => {
            let c = &row.call;
            assert_eq!(line.msgid, "call");
            assert_eq!(line.sd["id"], c.id.to_string());
            assert_eq!(line.sd["user"], c.user);
            assert_eq!(line.sd["cluster"], c.cluster);
            assert_eq!(line.sd["verb"], c.verb);
            assert_eq!(line.sd["status"], c.status.to_string());
            assert_eq!(
                line.sd["userAgent"], c.user_agent,
                "escaped \" ] \\ survive"
            );
            assert_eq!(line.sd.get("query").cloned().unwrap_or_default(), c.query);
            assert_eq!(line.sd["decision"], c.decision);
            // authpriv (10): informational, or notice for refusals.
            assert_eq!(
                line.pri,
                if c.decision != "allow" || c.status >= 400 {
                    85
                } else {
                    86
                }
            );
            let mut want = format!("{} {} {}", c.user, c.verb, c.resource_label());
            want.push_str(&format!(
                "/{} -n prod on cluster {}: {}",
                c.name, c.cluster, c.status
            ));
            assert!(line.msg.starts_with(&want), "{} vs {want}", line.msg);
            assert!(
                line.time.starts_with(&format_time_us(c.time_us)[..19]),
                "{}",
                line.time
            );
        }
        Record::Command(row) => {
            assert_eq!(line.msgid, "command");
            assert_eq!(line.sd["command"], row.command.command_line);
            assert_eq!(line.sd["exitCode"], "0");
            assert!(
                line.msg.contains(" ran \"kubectl get po/web-"),
                "{}",
                line.msg
            );
        }
    }
}

#[test]
fn syslog_over_tcp_and_tls_reaches_rsyslog() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key, _) = server_certs(&dir.path().join("certs"));
    let plain = Rsyslog::start(&dir.path().join("rsyslog-tcp"), None);
    let tls = Rsyslog::start(&dir.path().join("rsyslog-tls"), Some((&ca, &cert, &key)));
    let sinks = format!(
        r#"
[[sinks]]
name = "tcp-all"
type = "syslog"
address = "127.0.0.1:{plain}"
app_name = "ztk-all"
batch_size = 25
max_wait = "100ms"

[[sinks]]
name = "tcp-mutations"
type = "syslog"
address = "127.0.0.1:{plain}"
app_name = "ztk-mut"
filter = "verb:create,update,patch,delete"

[[sinks]]
name = "tls"
type = "syslog"
address = "127.0.0.1:{tls}"
tls = {{ ca_file = "{ca}", server_name = "localhost" }}
batch_size = 40
"#,
        plain = plain.port,
        tls = tls.port,
        ca = ca.display()
    );
    let store = dir.path().join("gw/audit.db");
    inject(&store, 60, 0);
    let env = Env::start_in(dir, &sinks, "");
    inject(&store, 60, 60);
    let all = expected(&store, "");
    let mutations = expected(&store, "verb:create,update,patch,delete");
    assert!(mutations.len() > 10 && mutations.len() < all.len());

    let by_app = |r: &Rsyslog, app: &str| -> Vec<SyslogLine> {
        r.messages().into_iter().filter(|l| l.app == app).collect()
    };
    wait_for(
        "every record at both rsyslogs",
        Duration::from_secs(15),
        || {
            by_app(&plain, "ztk-all").len() >= all.len()
                && by_app(&plain, "ztk-mut").len() >= mutations.len()
                && by_app(&tls, "ztk").len() >= all.len()
        },
    );
    for (what, lines, want) in [
        ("tcp", by_app(&plain, "ztk-all"), &all),
        ("tcp filtered", by_app(&plain, "ztk-mut"), &mutations),
        ("tls", by_app(&tls, "ztk"), &all),
    ] {
        let arrived: Vec<i64> = lines.iter().map(SyslogLine::seq).collect();
        assert_eq!(
            check_in_order(what, &arrived, &seqs(want)),
            0,
            "{what}: no repeats without faults"
        );
        for (line, record) in lines.iter().zip(want.iter()) {
            check_syslog_fields(line, record);
        }
    }
    let status = status_json(&env);
    for s in &status {
        assert_eq!(s["lag_records"], 0, "{s}");
        assert!(s["last_success"].is_string(), "{s}");
    }
}

#[test]
fn syslog_receiver_outage_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut rsyslog = Rsyslog::start(&dir.path().join("rsyslog"), None);
    let sinks = format!(
        "[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"127.0.0.1:{}\"\nbatch_size = 20\nmax_wait = \"50ms\"\n",
        rsyslog.port
    );
    let store = dir.path().join("gw/audit.db");
    let mut env = Env::start_in(dir, &sinks, "");
    // Records keep coming for about 4 s; the receiver is down from about 1 s to 3 s, and the
    // gateway itself restarts once while it is down.
    let writer_store = store.clone();
    let producer = std::thread::spawn(move || {
        for round in 0..40 {
            inject(&writer_store, 10, round * 10);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    rsyslog.stop();
    wait_for(
        "the sink to report the outage",
        Duration::from_secs(10),
        || status_json(&env)[0]["failing"] == true,
    );
    let failing = status_json(&env);
    assert!(
        failing[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{failing:?}"
    );
    env.stop_gateway();
    env.serve();
    std::thread::sleep(Duration::from_millis(1500));
    rsyslog.restart();
    producer.join().unwrap();
    let all = expected(&store, "");
    assert!(all.len() >= 350);
    wait_for(
        "every record after the outage",
        Duration::from_secs(20),
        || {
            let got: HashSet<i64> = rsyslog.messages().iter().map(SyslogLine::seq).collect();
            all.iter().all(|r| got.contains(&r.seq))
        },
    );
    let arrived: Vec<i64> = rsyslog.messages().iter().map(SyslogLine::seq).collect();
    let repeats = check_in_order("after an outage", &arrived, &seqs(&all));
    println!(
        "syslog outage: {} records delivered, {repeats} repeated (batches resent after an unacknowledged attempt)",
        all.len()
    );
    let status = status_json(&env);
    assert_eq!(status[0]["lag_records"], 0);
    assert_eq!(status[0]["failing"], false);
}

// ---------------------------------------------------------------------------------------------
// HTTPS receivers

struct Received {
    path: String,
    headers: http::HeaderMap,
    body: Vec<u8>,
    client_cert: bool,
}

/// An HTTPS server on 127.0.0.1 recording every request. The first `fail_first` requests are
/// answered 500, echoing the Authorization header (a receiver that leaks the token into its
/// error must not make ztk log or show it).
struct HttpsReceiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    fail_first: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl HttpsReceiver {
    fn start(cert: &Path, key: &Path, client_ca: &Path) -> HttpsReceiver {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = ztk::tls::server_config_with_client_ca(
            &std::fs::read(cert).unwrap(),
            &std::fs::read(key).unwrap(),
            &std::fs::read(client_ca).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let fail_first = Arc::new(AtomicUsize::new(0));
        let (g, f) = (got.clone(), fail_first.clone());
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, got, fail) = (acceptor.clone(), g.clone(), f.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let client_cert = tls.get_ref().1.peer_certificates().is_some();
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (got, fail) = (got.clone(), fail.clone());
                            async move {
                                use http_body_util::BodyExt;
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await.unwrap().to_bytes().to_vec();
                                let failing = fail
                                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                        n.checked_sub(1)
                                    })
                                    .is_ok();
                                let answer = if failing {
                                    let auth = parts
                                        .headers
                                        .get("authorization")
                                        .map(|v| v.to_str().unwrap().to_string())
                                        .unwrap_or_default();
                                    http::Response::builder().status(500).body(
                                        http_body_util::Full::new(bytes::Bytes::from(format!(
                                            "overloaded; you sent {auth}"
                                        ))),
                                    )
                                } else {
                                    got.lock().unwrap().push(Received {
                                        path: parts.uri.path().to_string(),
                                        headers: parts.headers,
                                        body,
                                        client_cert,
                                    });
                                    http::Response::builder().status(200).body(
                                        http_body_util::Full::new(bytes::Bytes::from_static(
                                            br#"{"text":"Success","code":0}"#,
                                        )),
                                    )
                                };
                                Ok::<_, std::convert::Infallible>(answer.unwrap())
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
                });
            }
        });
        HttpsReceiver {
            port,
            got,
            fail_first,
            _rt: rt,
        }
    }

    fn requests(&self, path: &str) -> Vec<(http::HeaderMap, Vec<u8>, bool)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| (r.headers.clone(), r.body.clone(), r.client_cert))
            .collect()
    }
}

fn json_lines(body: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    for v in serde_json::Deserializer::from_slice(body).into_iter::<Value>() {
        out.push(v.unwrap());
    }
    out
}

/// One EventList item against the record it came from, field by field (audit.k8s.io/v1 Event).
fn check_event(item: &Value, record: &Sequenced) {
    let Record::Call(row) = &record.record else {
        panic!("commands have no audit event: {item}")
    };
    let c = &row.call;
    assert_eq!(item["kind"], "Event");
    assert_eq!(item["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(item["level"], "Metadata");
    assert_eq!(item["auditID"], c.id.to_string());
    assert_eq!(item["stage"], "ResponseComplete");
    let uri = if c.query.is_empty() {
        c.path.clone()
    } else {
        format!("{}?{}", c.path, c.query)
    };
    assert_eq!(item["requestURI"], uri);
    assert_eq!(item["verb"], c.verb);
    assert_eq!(item["user"]["username"], c.user);
    assert_eq!(item["sourceIPs"][0], c.source_ip);
    assert_eq!(item["userAgent"], c.user_agent);
    assert_eq!(item["responseStatus"]["code"], c.status);
    for (field, value) in [
        ("resource", &c.resource),
        ("namespace", &c.namespace),
        ("name", &c.name),
        ("apiGroup", &c.api_group),
        ("apiVersion", &c.api_version),
        ("subresource", &c.subresource),
    ] {
        if value.is_empty() {
            assert!(item["objectRef"].get(field).is_none(), "{item}");
        } else {
            assert_eq!(item["objectRef"][field], **value, "{field} in {item}");
        }
    }
    let parse = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
        .unix_timestamp_nanos()
            / 1000
    };
    assert_eq!(parse(&item["requestReceivedTimestamp"]), c.time_us as i128);
    assert_eq!(
        parse(&item["stageTimestamp"]),
        (c.time_us + c.duration_us) as i128
    );
    assert_eq!(item["annotations"]["ztk.dev/cluster"], c.cluster);
    assert_eq!(item["annotations"]["ztk.dev/decision"], c.decision);
}

/// The parts of a record that do not change after it is written (a call's client timing and
/// command line are joined in from rows that may arrive later).
fn stable(record: &Value) -> Value {
    let mut v = record.clone();
    for key in [
        "client_duration_us",
        "command_line",
        "calls",
        "statuses",
        "duration_us",
    ] {
        v.as_object_mut().unwrap().remove(key);
    }
    v
}

#[test]
fn webhook_and_hec_receive_every_record_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key, _) = server_certs(&dir.path().join("certs"));
    // The gateway's client certificate for mutual TLS, from the CA the receiver trusts.
    let client_ca = ztk::tls::Ca::generate("client CA").unwrap();
    let client = client_ca.issue_client("ztk-gateway").unwrap();
    let (client_ca_path, client_cert, client_key) = (
        dir.path().join("certs/client-ca.pem"),
        dir.path().join("certs/client.pem"),
        dir.path().join("certs/client-key.pem"),
    );
    std::fs::write(&client_ca_path, client_ca.cert_pem()).unwrap();
    std::fs::write(&client_cert, &client.cert_pem).unwrap();
    std::fs::write(&client_key, &client.key_pem).unwrap();
    let receiver = HttpsReceiver::start(&cert, &key, &client_ca_path);
    receiver.fail_first.store(3, Ordering::SeqCst);
    let base = format!("https://127.0.0.1:{}", receiver.port);
    let sinks = format!(
        r#"
[[sinks]]
name = "falco"
type = "webhook"
url = "{base}/k8s-audit"
format = "k8s-audit"
token = "bearer-s3cret-token"
ca_file = "{ca}"
client_cert = "{client_cert}"
client_key = "{client_key}"
batch_size = 30
max_wait = "200ms"

[[sinks]]
name = "lines"
type = "webhook"
url = "{base}/ndjson"
format = "ndjson"
ca_file = "{ca}"
filter = "cluster:prod"

[[sinks]]
name = "splunk"
type = "splunk_hec"
url = "{base}/services/collector/event"
token = "hec-s3cret-token"
ca_file = "{ca}"
host = "gw-test"
index = "main"
batch_size = 500

# A receiver that is down for the whole test: it must not slow kubectl or the other sinks.
[[sinks]]
name = "down"
type = "syslog"
address = "127.0.0.1:{dead}"
"#,
        dead = free_port(),
        ca = ca.display(),
        client_cert = client_cert.display(),
        client_key = client_key.display(),
    );
    let store = dir.path().join("gw/audit.db");
    let env = Env::start_in(dir, &sinks, "");
    // Real traffic through both hops, beside injected records.
    env.login();
    env.kubectl(&["get", "pods"]).success();
    inject(&store, 80, 0);
    env.kubectl(&["get", "namespaces"]).success();

    let all = expected(&store, "");
    let calls: Vec<&Sequenced> = all
        .iter()
        .filter(|r| matches!(r.record, Record::Call(_)))
        .collect();
    let prod = expected(&store, "cluster:prod");
    let events = || -> Vec<Value> {
        receiver
            .requests("/k8s-audit")
            .iter()
            .flat_map(|(_, body, _)| {
                let list: Value = serde_json::from_slice(body).unwrap();
                list["items"].as_array().unwrap().clone()
            })
            .collect()
    };
    let ndjson = || -> Vec<Value> {
        receiver
            .requests("/ndjson")
            .iter()
            .flat_map(|(_, body, _)| json_lines(body))
            .collect()
    };
    let hec = || -> Vec<Value> {
        receiver
            .requests("/services/collector/event")
            .iter()
            .flat_map(|(_, body, _)| json_lines(body))
            .collect()
    };
    // The ztk kubectl command reaches the gateway after its calls: wait for the store to settle.
    wait_for(
        "every record at every endpoint",
        Duration::from_secs(15),
        || {
            let all = expected(&store, "");
            let ids: HashSet<String> = events()
                .iter()
                .map(|e| e["auditID"].as_str().unwrap().to_string())
                .collect();
            let hec_seqs: HashSet<i64> = hec()
                .iter()
                .map(|e| e["event"]["seq"].as_i64().unwrap())
                .collect();
            all.iter().all(|r| match &r.record {
                Record::Call(c) => ids.contains(&c.call.id.to_string()),
                Record::Command(_) => true,
            }) && all.iter().all(|r| hec_seqs.contains(&r.seq))
                && ndjson().len() >= expected(&store, "cluster:prod").len()
        },
    );
    let all = expected(&store, "");
    assert!(calls.len() >= 70 && all.iter().any(|r| matches!(r.record, Record::Command(_))));

    // k8s-audit: EventList documents, mTLS and the bearer token, every call once in order.
    for (headers, body, client_cert) in receiver.requests("/k8s-audit") {
        assert!(client_cert, "the webhook presented its client certificate");
        assert_eq!(headers["authorization"], "Bearer bearer-s3cret-token");
        assert_eq!(headers["content-type"], "application/json");
        let list: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(list["kind"], "EventList");
        assert_eq!(list["apiVersion"], "audit.k8s.io/v1");
        assert!(list["items"].as_array().unwrap().len() <= 30);
    }
    let by_id: HashMap<String, &Sequenced> = all
        .iter()
        .filter_map(|r| match &r.record {
            Record::Call(c) => Some((c.call.id.to_string(), r)),
            _ => None,
        })
        .collect();
    let events = events();
    let arrived: Vec<i64> = events
        .iter()
        .map(|e| by_id[e["auditID"].as_str().unwrap()].seq)
        .collect();
    let want: Vec<i64> = all
        .iter()
        .filter(|r| matches!(r.record, Record::Call(_)))
        .map(|r| r.seq)
        .collect();
    assert_eq!(check_in_order("k8s-audit", &arrived, &want), 0);
    for e in &events {
        check_event(e, by_id[e["auditID"].as_str().unwrap()]);
    }
    assert!(events
        .iter()
        .any(|e| e["annotations"]["ztk.dev/cluster"] == "sandbox"
            && e["objectRef"]["resource"] == "namespaces"));

    // NDJSON: only cluster prod, calls and commands, the store's fields.
    let prod_now = expected(&store, "cluster:prod");
    assert!(prod.len() <= prod_now.len());
    let lines = ndjson();
    let arrived: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert_eq!(check_in_order("ndjson", &arrived, &seqs(&prod_now)), 0);
    for (line, record) in lines.iter().zip(&prod_now) {
        assert_eq!(line["cluster"], "prod");
        assert_eq!(stable(line), stable(&serde_json::to_value(record).unwrap()));
    }
    for (headers, _, _) in receiver.requests("/ndjson") {
        assert!(headers.get("authorization").is_none());
        assert_eq!(headers["content-type"], "application/x-ndjson");
    }

    // HEC: the Splunk token scheme and the event envelope.
    for (headers, _, _) in receiver.requests("/services/collector/event") {
        assert_eq!(headers["authorization"], "Splunk hec-s3cret-token");
    }
    let hec = hec();
    let arrived: Vec<i64> = hec
        .iter()
        .map(|e| e["event"]["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(check_in_order("hec", &arrived, &seqs(&all)), 0);
    for (e, record) in hec.iter().zip(&all) {
        assert_eq!(e["host"], "gw-test");
        assert_eq!(e["source"], "ztk");
        assert_eq!(e["sourcetype"], "ztk:audit");
        assert_eq!(e["index"], "main");
        let (kind, t) = match &record.record {
            Record::Call(c) => ("call", c.call.time_us),
            Record::Command(c) => ("command", c.command.ended_us.unwrap()),
        };
        assert_eq!(e["event"]["kind"], kind);
        assert!(
            (e["time"].as_f64().unwrap() - t as f64 / 1e6).abs() < 1e-3,
            "{e}"
        );
        assert_eq!(
            stable(&e["event"]),
            stable(&serde_json::to_value(record).unwrap())
        );
    }

    // Status: caught up; the refused attempts are reported without the tokens they echoed.
    let status = env
        .gateway_cmd(&["sinks", "status", "-o", "json"])
        .success();
    let table = env.gateway_cmd(&["sinks", "status"]).success();
    for text in [&status, &table] {
        assert!(!text.contains("s3cret"), "a token leaked: {text}");
    }
    let status: Vec<Value> = serde_json::from_str(&status).unwrap();
    assert_eq!(status.len(), 4);
    let (down, status): (Vec<Value>, Vec<Value>) =
        status.into_iter().partition(|s| s["name"] == "down");
    assert_eq!(down[0]["failing"], true, "{down:?}");
    assert!(down[0]["lag_records"].as_u64().unwrap() >= all.len() as u64 - 1);
    assert!(down[0]["lag_age_s"].as_f64().unwrap() > 0.0);
    assert!(down[0]["last_error"]
        .as_str()
        .unwrap()
        .contains("cannot connect"));
    assert!(table.contains("down") && table.contains("never"), "{table}");
    let errors: Vec<&str> = status
        .iter()
        .filter_map(|s| s["last_error"].as_str())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("500") && e.contains("<redacted>")),
        "{status:?}"
    );
    for s in &status {
        assert_eq!(s["lag_records"], 0, "{s}");
        assert_eq!(s["failing"], false, "{s}");
    }
    assert!(
        table.contains("falco") && table.contains("splunk_hec"),
        "{table}"
    );
}

// ---------------------------------------------------------------------------------------------
// Files and restarts

#[test]
fn file_sink_rotates_keeps_retention_and_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sinks = r#"
[[sinks]]
name = "archive"
type = "file"
path = "siem/all.jsonl"
max_size = "16KiB"
max_files = 1000
max_wait = "50ms"

[[sinks]]
name = "recent"
type = "file"
path = "siem/recent.jsonl"
max_size = "8KiB"
max_files = 2
filter = "user:alice"
"#;
    let store = dir.path().join("gw/audit.db");
    let siem = dir.path().join("siem");
    let mut env = Env::start_in(dir, sinks, "");
    inject(&store, 100, 0);
    // Every record in the archive, oldest first; None when the sink rotated or appended while
    // it was being read (a file gone between the listing and the read, a line half written):
    // the polls below then look again.
    let archive = |siem: &Path| -> Option<Vec<Value>> {
        let mut files: Vec<(usize, PathBuf)> = std::fs::read_dir(siem)
            .ok()?
            .filter_map(|e| {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_str().unwrap().to_string();
                let n = match name.strip_prefix("all.jsonl") {
                    Some("") => 0,
                    Some(rest) => rest.trim_start_matches('.').parse().ok()?,
                    None => return None,
                };
                Some((n, p))
            })
            .collect();
        // Oldest first: the highest number, down to the live file.
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        let mut records = Vec::new();
        for (_, p) in &files {
            let text = std::fs::read_to_string(p).ok()?;
            assert!(text.len() <= 16 * 1024, "{p:?} is over max_size");
            for line in text.lines() {
                records.push(serde_json::from_str::<Value>(line).ok()?);
            }
        }
        Some(records)
    };
    let delivered = |siem: &Path, n: usize| archive(siem).is_some_and(|a| a.len() >= n);
    let all = expected(&store, "");
    wait_for("the first 100 records", Duration::from_secs(10), || {
        delivered(&siem, all.len())
    });
    // Stopped: records written meanwhile are delivered after the restart, from the cursor.
    env.stop_gateway();
    let cursor_before = AuditStore::open(&store).unwrap().last_seq().unwrap();
    inject(&store, 100, 100);
    env.serve();
    let all = expected(&store, "");
    wait_for(
        "the records written while stopped",
        Duration::from_secs(10),
        || delivered(&siem, all.len()),
    );
    // Everything is delivered: the sink has stopped writing.
    let lines = archive(&siem).expect("the archive reads whole once the sink is idle");
    let arrived: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        check_in_order("file across a restart", &arrived, &seqs(&all)),
        0
    );
    assert!(arrived.iter().any(|s| *s > cursor_before));
    assert!(
        std::fs::read_dir(&siem).unwrap().count() > 5,
        "the archive rotated"
    );
    for (line, record) in lines.iter().zip(&all) {
        assert_eq!(stable(line), stable(&serde_json::to_value(record).unwrap()));
    }
    // Retention: two rotated files beside the live one, holding alice's newest records.
    wait_for("the filtered sink", Duration::from_secs(10), || {
        status_json(&env).iter().all(|s| s["lag_records"] == 0)
    });
    assert!(siem.join("recent.jsonl.2").exists());
    assert!(!siem.join("recent.jsonl.3").exists());
    let mut kept = Vec::new();
    for name in ["recent.jsonl.2", "recent.jsonl.1", "recent.jsonl"] {
        let text = std::fs::read_to_string(siem.join(name)).unwrap();
        assert!(text.len() <= 8 * 1024);
        kept.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    let alice = expected(&store, "user:alice");
    assert!(kept.iter().all(|l| l["user"] == "alice"));
    let kept_seqs: Vec<i64> = kept.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    let newest = seqs(&alice[alice.len() - kept.len()..]);
    assert_eq!(kept_seqs, newest, "the newest records, in order");
    assert!(kept.len() < alice.len(), "older files were removed");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(siem.join("all.jsonl"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn bad_sink_config_fails_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "data_dir = \"gw\"\n[[sinks]]\nname = \"s\"\ntype = \"webhook\"\nurl = \"https://x/\"\ntoken = \"tok-s3cret\"\nformat = \"xml\"\n",
    )
    .unwrap();
    for args in [&["sinks", "status"][..], &["serve"][..]] {
        let out = Command::new(ztk_bin())
            .arg("gateway")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            text.contains("gateway.toml") && text.contains("`sinks[0].format` (s)"),
            "{text}"
        );
        assert!(!text.contains("tok-s3cret"), "{text}");
    }
    // A CA file that cannot be read stops the gateway at start, naming the sink.
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\ndata_dir = \"gw\"\n[[sinks]]\nname = \"hec\"\ntype = \"splunk_hec\"\nurl = \"https://x/\"\ntoken = \"tok-s3cret\"\nca_file = \"missing.pem\"\n",
    )
    .unwrap();
    let out = Command::new(ztk_bin())
        .args(["gateway", "serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("sink hec") && text.contains("missing.pem"),
        "{text}"
    );
    assert!(!text.contains("tok-s3cret"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// ztk audit tail

/// Reads lines of a child's stdout on a thread, so tests can wait with a timeout.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn take_lines(rx: &std::sync::mpsc::Receiver<String>, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => out.push(line),
            Err(_) => panic!("only {} of {n} lines arrived: {out:?}", out.len()),
        }
    }
    out
}

fn interrupt_and_wait(mut child: Child) -> std::process::ExitStatus {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "tail did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn audit_tail_follows_local_and_remote_records() {
    let env = Env::start();
    env.add_user("root", &["ztk-admins"]);
    let store = env.path("gw/audit.db");
    env.login();

    // Remote, as alice (no admin): only her records, as they arrive.
    let mut tail = env
        .ztk(&[
            "audit", "tail", "--remote", "-o", "ndjson", "--since", "10m",
        ])
        .cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut tail);
    inject(&store, 20, 0);
    let first: Vec<Value> = take_lines(&rx, 10)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    inject(&store, 20, 20);
    let more: Vec<Value> = take_lines(&rx, 10)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<&Value> = first.iter().chain(&more).collect();
    assert!(got.iter().all(|v| v["user"] == "alice"), "{got:?}");
    let s: Vec<i64> = got.iter().map(|v| v["seq"].as_i64().unwrap()).collect();
    assert!(s.windows(2).all(|w| w[0] < w[1]), "in write order: {s:?}");
    assert!(got.iter().all(|v| v["reason"] != STREAM_OPEN));
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "nothing else is alice's"
    );
    assert_eq!(interrupt_and_wait(tail).code(), Some(0));

    // Asking for someone else's records is refused for alice, allowed for an administrator.
    let (_, text) = env
        .ztk(&["audit", "tail", "--remote", "--user", "bob"])
        .failure();
    assert!(text.contains("only their own audit records"), "{text}");
    let admin_dirs = |cmd: Cmd| {
        cmd.env("ZTK_CONFIG_DIR", env.path("admin/config"))
            .env("ZTK_DATA_DIR", env.path("admin/data"))
    };
    admin_dirs(env.login_cmd("root")).success();
    let mut tail = admin_dirs(env.ztk(&[
        "audit",
        "tail",
        "--remote",
        "-o",
        "k8s-audit",
        "--user",
        "bob",
        "--since",
        "10m",
    ]))
    .cmd
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    let rx = lines_of(&mut tail);
    let events: Vec<Value> = take_lines(&rx, 20)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events
        .iter()
        .all(|e| e["kind"] == "Event" && e["user"]["username"] == "bob"));
    assert_eq!(interrupt_and_wait(tail).code(), Some(0));

    // Local: the client's own store, one readable line per record; a closed pipe ends it.
    let mut tail = env
        .ztk(&["audit", "tail", "-o", "table"])
        .cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    env.kubectl(&["get", "pods", "-n", "default"]).success();
    let mut reader = BufReader::new(tail.stdout.take().unwrap());
    let line = loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "tail ended early");
        if line.contains("list pods") {
            break line;
        }
    };
    assert!(
        line.contains("alice list pods -n default on cluster sandbox: 200"),
        "{line}"
    );
    drop(reader);
    // The reader is gone: the next record's write fails with EPIPE and tail exits quietly.
    std::thread::sleep(Duration::from_millis(200));
    env.kubectl(&["get", "pods"]).success();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = tail.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "tail did not notice the closed pipe"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}
