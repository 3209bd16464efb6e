//! Requests whose path lost the kubeconfig's `/k8s/CLUSTER` prefix (`kubectl get --raw`,
//! `create --raw`, clients that build URLs from the host alone): the persistent proxy routes them
//! by the cluster the credential names, and never lets a credential reach another cluster.

use std::path::Path;

use http_body_util::{BodyExt, Full};
use serde_json::Value;
use ztk::audit::{CallRow, Filter};
use ztk::client::credential::{CredentialKey, Format};

use crate::harness::*;

/// Every kubectl on the machine: the dispatcher and each version beside it.
fn kubectls() -> Vec<(String, String)> {
    let mut all = vec![("kubectl".to_string(), "/usr/bin/kubectl".to_string())];
    for minor in 27..=33 {
        all.push((
            format!("1-{minor}"),
            format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{minor}"),
        ));
    }
    all
}

/// A gateway with two sandbox clusters, `sandbox` and `other`; alice may edit both.
fn two_clusters() -> Env {
    let env = Env::start_in(
        tempfile::tempdir().unwrap(),
        "",
        "[[clusters]]\nname = \"other\"\nsandbox = true\n",
    );
    env.setup_plain();
    env
}

fn configmap(dir: &Path, name: &str) -> String {
    let path = dir.join(format!("cm-{name}.json"));
    let cm = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"made-by": "create --raw"},
    });
    write(&path, &cm.to_string());
    path.display().to_string()
}

/// Local records of calls to `path` whose command line contains `text`.
fn calls_to(env: &Env, path: &str, text: &str, at_least: usize) -> Vec<CallRow> {
    let filter = Filter {
        commands: vec![text.to_string()],
        ..Default::default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let rows: Vec<CallRow> = env
            .local_calls(&filter, at_least)
            .into_iter()
            .filter(|r| r.call.path == path)
            .collect();
        if rows.len() >= at_least || std::time::Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn raw_requests_go_to_the_credentials_cluster_with_every_kubectl() {
    let env = two_clusters();
    let versions = kubectls();
    for (label, kubectl) in &versions {
        let ctx = ["--context", "ztk-sandbox"];
        let list = env
            .plain(
                kubectl,
                &[
                    &ctx[..],
                    &["get", "--raw", "/api/v1/namespaces/default/configmaps"],
                ]
                .concat(),
            )
            .success();
        let list: Value = serde_json::from_str(&list).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(list["kind"], "ConfigMapList", "{label}: {list}");

        let ready = env
            .plain(kubectl, &[&ctx[..], &["get", "--raw", "/readyz"]].concat())
            .success();
        assert_eq!(ready.trim(), "ok", "{label}");

        let name = format!("raw-{label}");
        let file = configmap(env.dir.path(), &name);
        let created = env
            .plain(
                kubectl,
                &[
                    &ctx[..],
                    &[
                        "create",
                        "--raw",
                        "/api/v1/namespaces/default/configmaps",
                        "-f",
                        &file,
                    ],
                ]
                .concat(),
            )
            .success();
        let created: Value = serde_json::from_str(&created).unwrap();
        assert_eq!(created["metadata"]["name"], name.as_str(), "{label}");
    }

    // The objects are where the credentials said: in `sandbox`, not in `other`.
    let names = |context: &str| {
        env.plain(
            "kubectl",
            &[
                "--context",
                context,
                "get",
                "cm",
                "-n",
                "default",
                "-o",
                "name",
            ],
        )
        .success()
    };
    let in_sandbox = names("ztk-sandbox");
    let in_other = names("ztk-other");
    for (label, _) in &versions {
        assert!(
            in_sandbox.contains(&format!("configmap/raw-{label}\n")),
            "{in_sandbox}"
        );
        assert!(!in_other.contains(&format!("raw-{label}")), "{in_other}");
    }
    // The other context's credential sends its raw requests to `other`.
    let file = configmap(env.dir.path(), "raw-other");
    let other = ["--context", "ztk-other"];
    env.plain(
        "kubectl",
        &[
            &other[..],
            &[
                "create",
                "--raw",
                "/api/v1/namespaces/default/configmaps",
                "-f",
                &file,
            ],
        ]
        .concat(),
    )
    .success();
    assert!(names("ztk-other").contains("configmap/raw-other\n"));
    assert!(!names("ztk-sandbox").contains("raw-other"));
    // A path the role does not grant reaches the gateway, which refuses it for that cluster.
    let (_, out) = env
        .plain(
            "kubectl",
            &[&other[..], &["get", "--raw", "/metrics"]].concat(),
        )
        .failure();
    assert!(
        out.contains("Forbidden") || out.contains("forbidden"),
        "{out}"
    );

    // Each call is audited with its cluster and linked to the command that made it.
    let n = versions.len();
    let lists = calls_to(
        &env,
        "/api/v1/namespaces/default/configmaps",
        "get --raw /api/v1/namespaces/default/configmaps",
        n,
    );
    let readies = calls_to(&env, "/readyz", "get --raw /readyz", n);
    for rows in [&lists, &readies] {
        assert_eq!(rows.len(), n, "{rows:#?}");
        let commands: std::collections::BTreeSet<_> =
            rows.iter().map(|r| r.call.command_id.unwrap()).collect();
        assert_eq!(commands.len(), n, "one command per kubectl run");
        for row in rows.iter() {
            assert_eq!(row.call.cluster, "sandbox");
            assert_eq!(row.call.status, 200, "{row:#?}");
            assert_eq!(row.call.user, "alice");
            assert!(row
                .command_line
                .as_deref()
                .unwrap()
                .starts_with("kubectl --context ztk-sandbox get --raw"));
        }
    }
    assert!(lists
        .iter()
        .all(|r| r.call.verb == "list" && r.call.resource == "configmaps"));
    for (label, _) in &versions {
        let rows = calls_to(
            &env,
            "/api/v1/namespaces/default/configmaps",
            &format!("cm-raw-{label}.json"),
            1,
        );
        let create = rows
            .iter()
            .find(|r| r.call.verb == "create")
            .unwrap_or_else(|| panic!("{label}: no create in {rows:#?}"));
        assert_eq!(create.call.cluster, "sandbox", "{label}");
        assert_eq!(create.call.status, 201, "{label}");
        let command = env
            .local_store()
            .command(create.call.command_id.unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(command.cluster, "sandbox");
        assert!(command.command_line.contains("create --raw"), "{command:?}");
    }
    let rows = calls_to(
        &env,
        "/api/v1/namespaces/default/configmaps",
        "cm-raw-other.json",
        1,
    );
    assert!(rows
        .iter()
        .any(|r| r.call.verb == "create" && r.call.cluster == "other"));
    let metrics = calls_to(&env, "/metrics", "get --raw /metrics", 1);
    assert!(!metrics.is_empty());
    assert!(metrics
        .iter()
        .all(|r| r.call.cluster == "other" && r.call.status == 403));

    // The gateway saw each create in the credential's cluster.
    let creates = |cluster: &str, at_least| {
        env.gateway_calls(
            &Filter {
                clusters: vec![cluster.into()],
                verbs: vec!["create".into()],
                resources: vec!["configmaps".into()],
                ..Default::default()
            },
            at_least,
        )
    };
    assert_eq!(creates("sandbox", n).len(), n);
    assert_eq!(creates("other", 1).len(), 1);

    // kubectl keeps one discovery cache per server URL, path included: the clusters' caches
    // stay apart although they share the proxy's host and port (the machine's kubectl above,
    // and the oldest and newest here, each with a cache directory of its own).
    let port = std::fs::read_to_string(env.path("client/data/proxy/port")).unwrap();
    for (label, kubectl) in [
        ("", "kubectl"),
        ("-127", KUBECTL_127),
        ("-133", KUBECTL_133),
    ] {
        let cache = env.path(&format!("home/kube-cache{label}"));
        for cluster in ["sandbox", "other"] {
            if !label.is_empty() {
                let context = format!("ztk-{cluster}");
                env.plain(
                    kubectl,
                    &["--context", &context, "get", "cm", "-n", "default"],
                )
                .env("KUBECACHEDIR", &cache)
                .success();
            }
            let dir = cache.join(format!("discovery/127.0.0.1_{}/k8s/{cluster}", port.trim()));
            assert!(
                dir.join("servergroups.json").exists(),
                "{kubectl}: no discovery cache of {cluster} in {}",
                dir.display()
            );
        }
    }
}

/// Sends one request to the persistent proxy with `credential`; returns status and body.
fn to_proxy(env: &Env, method: &str, path: &str, credential: &str) -> (u16, String) {
    let port = std::fs::read_to_string(env.path("client/data/proxy/port")).unwrap();
    let ca = std::fs::read(env.path("client/data/proxy/ca.pem")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = https_client(ca);
        let req = http::Request::builder()
            .method(method)
            .uri(format!("https://127.0.0.1:{}{path}", port.trim()))
            .header("authorization", format!("Bearer {credential}"))
            .header("user-agent", "raw-test/1.0")
            .body(Full::new(bytes::Bytes::new()))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
}

#[test]
fn a_credential_never_reaches_another_cluster_and_bad_ones_are_refused_without_a_prefix() {
    let env = two_clusters();
    let pods = env
        .plain(
            "kubectl",
            &["--context", "ztk-sandbox", "get", "po", "-n", "dev"],
        )
        .success();
    assert!(pods.contains("debug-shell"), "{pods}");

    // kubectl with sandbox's user (its credential) and other's server.
    let (_, out) = env
        .plain(
            "kubectl",
            &[
                "--context",
                "ztk-sandbox",
                "--cluster",
                "ztk-other",
                "get",
                "cm",
                "-n",
                "default",
            ],
        )
        .failure();
    assert!(
        out.contains("Forbidden") || out.contains("forbidden"),
        "{out}"
    );
    let denied = env.local_calls(
        &Filter {
            clusters: vec!["other".into()],
            statuses: vec![ztk::audit::filter::StatusMatch::Code(403)],
            ..Default::default()
        },
        1,
    );
    assert!(!denied.is_empty());
    for row in &denied {
        assert_eq!(row.call.decision, "deny");
        assert!(
            row.call.reason.contains("is for cluster \"sandbox\""),
            "{}",
            row.call.reason
        );
    }

    let issued = env.ztk(&["credential", "--cluster", "sandbox"]).success();
    let issued: Value = serde_json::from_str(&issued).unwrap();
    let credential = issued["status"]["token"].as_str().unwrap().to_string();
    assert!(credential.starts_with("ztk2_"), "{credential}");
    let cms = "/api/v1/namespaces/default/configmaps";
    let (code, body) = to_proxy(&env, "GET", cms, &credential);
    assert_eq!(code, 200, "{body}");
    let (code, body) = to_proxy(&env, "GET", &format!("/k8s/sandbox{cms}"), &credential);
    assert_eq!(code, 200, "{body}");
    let (code, body) = to_proxy(&env, "GET", &format!("/k8s/other{cms}"), &credential);
    assert_eq!(code, 403, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Forbidden");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("for cluster \"sandbox\", not \"other\""),
        "{message}"
    );
    let (code, _) = to_proxy(&env, "GET", &format!("/k8s/{cms}"), &credential);
    assert_eq!(code, 404);

    // A credential for a name that is no path segment goes nowhere.
    let odd = env
        .ztk(&["credential", "--cluster", "../sandbox"])
        .success();
    let odd: Value = serde_json::from_str(&odd).unwrap();
    let (code, body) = to_proxy(&env, "GET", cms, odd["status"]["token"].as_str().unwrap());
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("no cluster name"), "{body}");

    // Forged, altered and expired credentials, on paths without the prefix.
    let files = ztk::client::daemon::ProxyFiles::new(&ztk::client::config::Paths {
        config_dir: env.path("client/config"),
        data_dir: env.path("client/data"),
    });
    let key = CredentialKey::load_or_create(&files.credential_key_file()).unwrap();
    let now = ztk::audit::model::now_us();
    let forged = format!(
        "ztk2_{}_-_{}_{}",
        hex::encode("sandbox"),
        now + 3_600_000_000,
        "0".repeat(64)
    );
    let expired = key.issue(None, "sandbox", now - 1);
    let (head, mac) = credential.rsplit_once('_').unwrap();
    let retargeted = format!(
        "{}_{mac}",
        head.replacen(&hex::encode("sandbox"), &hex::encode("other"), 1)
    );
    let foreign_key = CredentialKey::load_or_create(&env.path("foreign-key"))
        .unwrap()
        .issue(None, "sandbox", now + 3_600_000_000);
    for bad in [
        &forged,
        &expired,
        &retargeted,
        &foreign_key,
        &"".to_string(),
        &"ztk2_".to_string(),
    ] {
        for path in [cms, "/readyz", "/version", "/k8s/sandbox/readyz"] {
            let (code, body) = to_proxy(&env, "GET", path, bad);
            assert_eq!(code, 401, "{bad} {path}: {body}");
            assert!(body.contains("no valid ztk credential"), "{body}");
        }
    }

    // A credential from before ztk2 serves the paths under the kubeconfig's server as before;
    // without them it cannot say where to go, and says so.
    let old = key.issue_as(Format::V1, None, "sandbox", now + 3_600_000_000);
    let (code, body) = to_proxy(&env, "GET", &format!("/k8s/sandbox{cms}"), &old);
    assert_eq!(code, 200, "{body}");
    let (code, _) = to_proxy(&env, "GET", &format!("/k8s/other{cms}"), &old);
    assert_eq!(code, 401);
    let (code, body) = to_proxy(&env, "GET", cms, &old);
    assert_eq!(code, 401);
    assert!(
        body.contains("older `ztk credential`") && body.contains("run the command again"),
        "{body}"
    );

    // Refusals are recorded; none reached the gateway (the denied cluster least of all).
    let refused = env.local_calls(
        &Filter {
            statuses: vec![ztk::audit::filter::StatusMatch::Code(401)],
            ..Default::default()
        },
        26,
    );
    assert!(refused.len() >= 26, "{}", refused.len());
    assert!(refused
        .iter()
        .all(|r| r.call.decision == "unauthenticated" && !r.call.cluster.is_empty()));
    let gw_other = env.gateway_calls(
        &Filter {
            clusters: vec!["other".into()],
            ..Default::default()
        },
        0,
    );
    assert!(gw_other.is_empty(), "{gw_other:#?}");
}

/// `ztk kubectl`'s own proxy serves one cluster at its root: `--raw` needs no routing there.
#[test]
fn ztk_kubectl_serves_raw_requests() {
    let env = two_clusters();
    let list = env
        .kubectl(&[
            "--cluster",
            "other",
            "get",
            "--raw",
            "/api/v1/namespaces/default/configmaps",
        ])
        .success();
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["kind"], "ConfigMapList");
    let file = configmap(env.dir.path(), "via-ztk-kubectl");
    env.kubectl(&[
        "--cluster",
        "other",
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        &file,
    ])
    .success();
    let names = env
        .kubectl(&[
            "--cluster",
            "other",
            "get",
            "cm",
            "-n",
            "default",
            "-o",
            "name",
        ])
        .success();
    assert!(names.contains("configmap/via-ztk-kubectl"), "{names}");
    let rows = calls_to(
        &env,
        "/api/v1/namespaces/default/configmaps",
        "cm-via-ztk-kubectl.json",
        1,
    );
    let create = rows.iter().find(|r| r.call.verb == "create").unwrap();
    assert_eq!(create.call.cluster, "other");
    assert_eq!(create.call.status, 201);
    assert!(create.call.command_id.is_some());
}

/// A client library: the Python client's own raw calls (under the kubeconfig's server, and to
/// the host alone), and `requests` to the host alone with the credential the library got from
/// the exec plugin.
#[test]
fn python_clients_raw_and_host_only_calls_reach_the_cluster() {
    let env = two_clusters();
    let script = r#"
import json, sys, urllib.parse
import kubernetes, requests
cfg = kubernetes.client.Configuration()
kubernetes.config.load_kube_config(context=sys.argv[1], client_configuration=cfg)
api = kubernetes.client.ApiClient(cfg)
root = '{0.scheme}://{0.netloc}'.format(urllib.parse.urlsplit(cfg.host))
def lib_get(host):
    method, url, headers, _, _ = api.param_serialize('GET', '/api/v1/namespaces/default/configmaps',
        auth_settings=['BearerToken'], _host=host)
    answer = api.call_api(method, url, header_params=headers)
    answer.read()
    return [url, answer.status, json.loads(answer.data)['kind']]
auth = {'Authorization': cfg.get_api_key_with_prefix('BearerToken', alias='authorization')}
got = requests.get(root + '/api/v1/namespaces/default/configmaps', headers=auth, verify=cfg.ssl_ca_cert)
cm = {'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'name': 'from-requests'}}
made = requests.post(root + '/api/v1/namespaces/default/configmaps', json=cm, headers=auth, verify=cfg.ssl_ca_cert)
version = requests.get(root + '/version', headers=auth, verify=cfg.ssl_ca_cert)
print(json.dumps({'host': cfg.host, 'lib': lib_get(None), 'lib_host_only': lib_get(root), 'get': [got.status_code, got.json()['kind']],
    'post': [made.status_code, made.json()['metadata']['name']], 'version': version.status_code}))
"#;
    let out = env
        .program("python3", &["-c", script, "ztk-other"])
        .env("KUBECONFIG", env.plain_kubeconfig())
        .success();
    let out: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(
        out["host"].as_str().unwrap().ends_with("/k8s/other"),
        "{out}"
    );
    let cms = "/api/v1/namespaces/default/configmaps";
    let host = out["host"].as_str().unwrap();
    let root = host.strip_suffix("/k8s/other").unwrap();
    let lib = serde_json::json!([format!("{host}{cms}"), 200, "ConfigMapList"]);
    assert_eq!(out["lib"], lib, "{out}");
    let host_only = serde_json::json!([format!("{root}{cms}"), 200, "ConfigMapList"]);
    assert_eq!(out["lib_host_only"], host_only, "{out}");
    assert_eq!(
        out["get"],
        serde_json::json!([200, "ConfigMapList"]),
        "{out}"
    );
    assert_eq!(
        out["post"],
        serde_json::json!([201, "from-requests"]),
        "{out}"
    );
    assert_eq!(out["version"], 200, "{out}");
    let names = env
        .plain(
            "kubectl",
            &[
                "--context",
                "ztk-other",
                "get",
                "cm",
                "-n",
                "default",
                "-o",
                "name",
            ],
        )
        .success();
    assert!(names.contains("configmap/from-requests"), "{names}");

    let rows = env.local_calls(
        &Filter {
            clusters: vec!["other".into()],
            verbs: vec!["create".into()],
            ..Default::default()
        },
        1,
    );
    let create = rows
        .iter()
        .find(|r| r.call.user_agent.starts_with("python-requests"))
        .unwrap_or_else(|| panic!("{rows:#?}"));
    assert_eq!(create.call.path, "/api/v1/namespaces/default/configmaps");
    assert_eq!(create.call.status, 201);
    assert_eq!(create.call.command_id, None);
    assert_eq!(create.call.access_method, ztk::audit::AccessMethod::Api);
}

/// After an upgrade the proxy started by the older ztk keeps running: the plugin sees that it
/// announces no `ztk2` and issues it the old format (the kubeconfig's paths keep working) with a
/// hint; once it is restarted, `--raw` works.
#[test]
fn a_proxy_from_before_ztk2_gets_old_credentials_until_restarted() {
    let env = Env::start();
    env.setup_plain();
    env.plain("kubectl", &["get", "ns"]).success();
    // What a proxy from before ztk2 leaves: a pid file, no formats file.
    std::fs::remove_file(env.path("client/data/proxy/proxy.formats")).unwrap();
    let out = env.plain("kubectl", &["get", "po", "-n", "dev"]).output();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("from an older ztk") && stderr.contains("ztk proxy stop"),
        "{stderr}"
    );
    let issued = env.ztk(&["credential", "--cluster", "sandbox"]).success();
    assert!(issued.contains("\"ztk1_"), "{issued}");
    let (_, out) = env
        .plain(
            "kubectl",
            &["get", "--raw", "/api/v1/namespaces/default/configmaps"],
        )
        .failure();
    assert!(out.contains("older `ztk credential`"), "{out}");
    let out = env.ztk(&["kubeconfig"]).output();
    assert!(String::from_utf8_lossy(&out.stderr).contains("from an older ztk"));

    env.ztk(&["proxy", "stop"]).success();
    let out = env
        .plain(
            "kubectl",
            &["get", "--raw", "/api/v1/namespaces/default/configmaps"],
        )
        .output();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let issued = env.ztk(&["credential", "--cluster", "sandbox"]).success();
    assert!(issued.contains("\"ztk2_"), "{issued}");
}
