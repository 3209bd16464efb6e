//! Load: 50 clients, each with its own persistent `ztk proxy` and store, make 200 API calls
//! each through the gateway while the gateway ingests their batches. Afterwards the gateway's
//! own records match what the cluster served, and every client record is at the gateway once.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use ztk::audit::AuditStore;
use ztk::client::config::Paths;
use ztk::client::credential::CredentialKey;
use ztk::client::daemon::ProxyFiles;

use crate::harness::*;

const CLIENTS: usize = 50;
const CALLS: usize = 200;

struct Client {
    paths: Paths,
    proxy: Child,
    port: u16,
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.proxy.kill();
        let _ = self.proxy.wait();
    }
}

fn table_ids(db: &Path, table: &str) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn.prepare(&format!("SELECT id FROM {table}")).unwrap();
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<bytes::Bytes>,
>;

async fn get(client: &HttpsClient, url: &str, token: &str) -> (u16, bytes::Bytes) {
    let req = http::Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .header("user-agent", "load-test/1.0")
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.into_body().collect().await.unwrap().to_bytes())
}

/// The sandbox's own count of requests it answered.
async fn sandbox_served(kubeconfig: &Path) -> u64 {
    let config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(kubeconfig).unwrap()).unwrap();
    let cluster = &config["clusters"][0]["cluster"];
    let server = cluster["server"].as_str().unwrap();
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(cluster["certificate-authority-data"].as_str().unwrap())
        .unwrap();
    let token = config["users"][0]["user"]["token"].as_str().unwrap();
    let client = https_client(ca);
    let (code, body) = get(
        &client,
        &format!("{server}{}", ztk::sandbox::SERVED_PATH),
        token,
    )
    .await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["served"].as_u64().unwrap()
}

/// It keeps both cores busy for a while, which would starve the streams tests running beside
/// it: it waits until it has the machine to itself (`machine_alone`).
#[test]
fn fifty_clients_calling_while_the_gateway_ingests_lose_and_repeat_nothing() {
    let _alone = machine_alone();
    let dir = tempfile::tempdir().unwrap();
    let sandbox = SandboxProcess::start(dir.path().join("sandbox.kubeconfig"), false);
    let clusters = format!(
        "[[clusters]]\nname = \"k\"\nkubeconfig = \"{}\"\n",
        sandbox.kubeconfig.display()
    );
    let env = Env::start_in(dir, "", &clusters);
    env.login();

    // Fifty clients logged in as alice (the login's files copied), each with its own proxy.
    let mut starting = Vec::new();
    for i in 0..CLIENTS {
        let paths = Paths {
            config_dir: env.path(&format!("c{i}/config")),
            data_dir: env.path(&format!("c{i}/data")),
        };
        std::fs::create_dir_all(&paths.config_dir).unwrap();
        std::fs::create_dir_all(&paths.data_dir).unwrap();
        std::fs::copy(env.path("client/config/config.toml"), paths.config_file()).unwrap();
        std::fs::copy(env.path("client/data/session-token"), paths.token_file()).unwrap();
        let proxy = Command::new(ztk_bin())
            .arg("proxy")
            .env("ZTK_CONFIG_DIR", &paths.config_dir)
            .env("ZTK_DATA_DIR", &paths.data_dir)
            .env("ZTK_TOKEN_STORE", "file")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(paths.data_dir.join("proxy.stderr")).unwrap())
            .spawn()
            .unwrap();
        starting.push((paths, proxy));
    }
    let mut clients = Vec::new();
    for (paths, mut proxy) in starting {
        let mut lines = BufReader::new(proxy.stdout.take().unwrap()).lines();
        let Some(Ok(line)) = lines.next() else {
            let stderr = std::fs::read_to_string(paths.data_dir.join("proxy.stderr"));
            panic!("a proxy ended before it listened: {stderr:?}");
        };
        let port: u16 = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        std::thread::spawn(move || for _ in lines.by_ref() {});
        clients.push(Client { paths, proxy, port });
    }

    let started = Instant::now();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for client in &clients {
            let files = ProxyFiles::new(&client.paths);
            let key = CredentialKey::load_or_create(&files.credential_key_file()).unwrap();
            // As `ztk credential` does for a kubectl: a command record, and a credential naming it.
            let command = ztk::audit::Command {
                id: uuid::Uuid::now_v7(),
                started_us: ztk::audit::model::now_us(),
                user: "alice".into(),
                cluster: "k".into(),
                argv: vec!["load-test".into()],
                command_line: "load-test".into(),
                ..Default::default()
            };
            AuditStore::open(&client.paths.audit_db())
                .unwrap()
                .upsert_commands(std::slice::from_ref(&command))
                .unwrap();
            let credential = key.issue(
                Some(command.id),
                "k",
                ztk::audit::model::now_us() + 3_600_000_000,
            );
            let http = https_client(std::fs::read(files.ca_file()).unwrap());
            let url = format!(
                "https://127.0.0.1:{}/k8s/k/api/v1/namespaces/default",
                client.port
            );
            tasks.push(tokio::spawn(async move {
                for _ in 0..CALLS {
                    let (code, body) = get(&http, &url, &credential).await;
                    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    eprintln!("{} calls in {:.1?}", CLIENTS * CALLS, started.elapsed());
    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    };
    let proxies: f64 = clients.iter().map(|c| cpu(c.proxy.id())).sum();
    eprintln!(
        "CPU: proxies {proxies:.1}s gateway {:.1}s test {:.1}s",
        cpu(env.gateway_pid().unwrap()),
        cpu(std::process::id())
    );

    // The proxies ship continuously: wait until every outbox is empty.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut expected_calls = BTreeSet::new();
    for client in &clients {
        let store = AuditStore::open(&client.paths.audit_db()).unwrap();
        loop {
            let calls = table_ids(&client.paths.audit_db(), "api_calls").len();
            if calls == CALLS && store.pending_count("alice").unwrap() == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "client outbox not shipped: {calls} calls"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        expected_calls.extend(table_ids(&client.paths.audit_db(), "api_calls"));
    }
    eprintln!("all shipped after {:.1?}", started.elapsed());
    assert_eq!(expected_calls.len(), CLIENTS * CALLS);

    let served = rt.block_on(sandbox_served(&sandbox.kubeconfig));
    // And the gateway's own `GET /version` at start (gateway::clusters::probe_all), which is
    // logged, not audited: no user made it.
    assert_eq!(served as usize, CLIENTS * CALLS + 1);
    let served = served - 1;
    let gw_db: PathBuf = env.path("gw/audit.db");
    // The gateway's own writer commits its records in the background: wait for them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while table_ids(&gw_db, "api_calls").len() < served as usize && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(table_ids(&gw_db, "api_calls").len(), served as usize);
    let shipped = table_ids(&gw_db, "client_calls");
    assert_eq!(
        shipped.len(),
        CLIENTS * CALLS,
        "each client record stored once"
    );
    assert_eq!(shipped.into_iter().collect::<BTreeSet<_>>(), expected_calls);
    assert_eq!(table_ids(&gw_db, "commands").len(), CLIENTS);
}
