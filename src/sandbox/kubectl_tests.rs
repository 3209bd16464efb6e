//! The sandbox against the real kubectl: each test starts its own sandbox on a TLS port of its
//! own and points a private kubeconfig (in a temp dir, also used as HOME and cache dir) at it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;

use super::Sandbox;
use crate::{body, serve, tls};

const KUBECTL: &str = "/usr/bin/kubectl";
const VERSIONED: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.";
const TOKEN: &str = "sandbox-test-token";

struct Cluster {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn start() -> Cluster {
    tls::install_crypto_provider();
    let ca = tls::Ca::generate("ztk sandbox test CA").expect("CA");
    let cert = ca
        .issue_server(&["127.0.0.1".into(), "localhost".into()])
        .expect("server cert");
    let config =
        tls::server_config(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).expect("TLS config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let sandbox: Arc<Sandbox> = Sandbox::new(TOKEN.into());
    let server = tokio::spawn(serve::serve_tls(
        listener,
        config,
        move |req, _peer: serve::Peer| {
            let sandbox = sandbox.clone();
            async move { sandbox.handle(req.map(body::boxed)).await }
        },
    ));

    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    use base64::Engine;
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca.cert_pem());
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {ca_data}\nusers:\n- name: tester\n  user:\n    token: {TOKEN}\ncontexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: tester\n    namespace: default\ncurrent-context: sandbox\n"
    );
    std::fs::write(&kubeconfig, text).expect("write kubeconfig");
    Cluster {
        dir,
        kubeconfig,
        server,
    }
}

impl Cluster {
    fn command(&self, bin: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    async fn run_with(&self, bin: &str, args: &[&str]) -> Out {
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(bin, args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
            .expect("run kubectl");
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn ok(&self, args: &[&str]) -> String {
        self.ok_with(KUBECTL, args).await
    }

    async fn ok_with(&self, bin: &str, args: &[&str]) -> String {
        let out = self.run_with(bin, args).await;
        assert!(
            out.ok,
            "{bin} {args:?} failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        assert!(
            !out.stderr.contains("warning") && !out.stderr.contains("Warning"),
            "{bin} {args:?} warned:\n{}",
            out.stderr
        );
        out.stdout
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write manifest");
        path
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn deployment_manifest(name: &str, image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: dev\n  labels:\n    app: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n      - name: main\n        image: {image}\n        ports:\n        - containerPort: 8080\n        env:\n        - name: MODE\n          value: test\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_views() {
    let c = start().await;

    let all = c.ok(&["get", "po", "-A"]).await;
    let header: Vec<&str> = all
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{all}"
    );
    assert!(
        all.lines()
            .any(|l| l.starts_with("kube-system ") && l.contains("etcd-sandbox-node-1")),
        "{all}"
    );
    assert!(
        all.lines()
            .any(|l| l.starts_with("dev ") && l.contains("debug-shell") && l.contains("Running")),
        "{all}"
    );
    assert!(
        all.lines()
            .any(|l| l.starts_with("prod ") && l.contains(" web-")),
        "{all}"
    );

    let ns = c.ok(&["get", "ns"]).await;
    for name in ["default", "kube-system", "dev", "prod"] {
        assert!(
            ns.lines()
                .any(|l| l.starts_with(name) && l.contains("Active")),
            "{ns}"
        );
    }

    let yaml = c.ok(&["get", "deploy", "-n", "dev", "-o", "yaml"]).await;
    assert!(
        yaml.contains("kind: Deployment")
            && yaml.contains("name: web")
            && yaml.contains("readyReplicas: 2"),
        "{yaml}"
    );

    let wide = c
        .ok(&["get", "po", "-n", "dev", "-o", "wide", "-l", "app=web"])
        .await;
    assert!(
        wide.lines().next().unwrap_or_default().contains("NODE"),
        "{wide}"
    );
    assert_eq!(
        wide.lines()
            .filter(|l| l.contains("sandbox-node-1") && l.contains("10.244."))
            .count(),
        2,
        "{wide}"
    );

    let mixed = c.ok(&["get", "svc,cm,secret", "-n", "prod"]).await;
    assert!(
        mixed.contains("service/web")
            && mixed.contains("LoadBalancer")
            && mixed.contains("203.0.113.10"),
        "{mixed}"
    );
    assert!(
        mixed.contains("configmap/app-config") && mixed.contains("secret/db-credentials"),
        "{mixed}"
    );

    let missing = c
        .run_with(KUBECTL, &["get", "po", "nope", "-n", "dev"])
        .await;
    assert!(
        !missing.ok && missing.stderr.contains("pods \"nope\" not found"),
        "{}",
        missing.stderr
    );

    for version in ["27", "33"] {
        let out = c
            .ok_with(&format!("{VERSIONED}{version}"), &["get", "po", "-A"])
            .await;
        assert!(
            out.lines()
                .next()
                .unwrap_or_default()
                .starts_with("NAMESPACE"),
            "1.{version}: {out}"
        );
        assert!(out.contains("coredns-"), "1.{version}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_twice_then_delete() {
    let c = start().await;
    let m1 = c.write("v1.yaml", &deployment_manifest("shop", "nginx:1.0", 2));
    let out = c.ok(&["apply", "-f", path_str(&m1)]).await;
    assert!(out.contains("deployment.apps/shop created"), "{out}");

    let m2 = c.write("v2.yaml", &deployment_manifest("shop", "nginx:2.0", 3));
    let out = c.ok(&["apply", "-f", path_str(&m2)]).await;
    assert!(out.contains("deployment.apps/shop configured"), "{out}");

    let got = c
        .ok(&["get", "deploy", "shop", "-n", "dev", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.spec.replicas} {.spec.template.spec.containers[0].env[0].value} {.status.readyReplicas}"])
        .await;
    assert_eq!(got, "nginx:2.0 3 test 3");
    let pods = c
        .ok(&[
            "get",
            "po",
            "-n",
            "dev",
            "-l",
            "app=shop",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ])
        .await;
    assert_eq!(pods, "nginx:2.0 nginx:2.0 nginx:2.0");

    let out = c.ok(&["delete", "deploy", "shop", "-n", "dev"]).await;
    assert!(out.contains("deployment.apps \"shop\" deleted"), "{out}");
    let gone = c
        .run_with(KUBECTL, &["get", "deploy", "shop", "-n", "dev"])
        .await;
    assert!(
        !gone.ok && gone.stderr.contains("deployments.apps \"shop\" not found"),
        "{}",
        gone.stderr
    );
    let pods = c
        .ok(&["get", "po", "-n", "dev", "-l", "app=shop", "-o", "name"])
        .await;
    assert!(pods.trim().is_empty(), "{pods}");
}

/// Client-side apply reads OpenAPI differently across versions (v3 with a v2 fallback);
/// every supported kubectl must create and then patch without errors or warnings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_every_version() {
    let c = start().await;
    for version in 27..=33 {
        let bin = format!("{VERSIONED}{version}");
        let name = format!("app{version}");
        let m1 = c.write("a.yaml", &deployment_manifest(&name, "busybox:1", 1));
        let out = c.ok_with(&bin, &["apply", "-f", path_str(&m1)]).await;
        assert!(out.contains("created"), "1.{version}: {out}");
        let m2 = c.write("b.yaml", &deployment_manifest(&name, "busybox:2", 1));
        let out = c.ok_with(&bin, &["apply", "-f", path_str(&m2)]).await;
        assert!(out.contains("configured"), "1.{version}: {out}");
        let image = c
            .ok_with(
                &bin,
                &[
                    "get",
                    "deploy",
                    &name,
                    "-n",
                    "dev",
                    "-o",
                    "jsonpath={.spec.template.spec.containers[0].image}",
                ],
            )
            .await;
        assert_eq!(image, "busybox:2", "1.{version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs() {
    let c = start().await;
    let out = c
        .ok(&["logs", "-n", "dev", "debug-shell", "--tail=3"])
        .await;
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines().all(|l| l.contains("[debug-shell/debug-shell]")),
        "{out}"
    );
    let missing = c.run_with(KUBECTL, &["logs", "-n", "dev", "nope"]).await;
    assert!(
        !missing.ok && missing.stderr.contains("not found"),
        "{}",
        missing.stderr
    );
}

async fn next_line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("kubectl get -w printed nothing in time")
        .expect("read")
        .expect("kubectl get -w ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_sees_new_pod() {
    let c = start().await;
    let mut child = c
        .command(KUBECTL, &["get", "po", "-n", "dev", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kubectl get -w");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // Wait for the initial listing so that the pod below is created after the watch began.
    loop {
        if next_line(&mut lines).await.contains("debug-shell") {
            break;
        }
    }
    c.ok(&["run", "watched", "-n", "dev", "--image=busybox:1.36"])
        .await;
    loop {
        let line = next_line(&mut lines).await;
        if line.starts_with("watched") {
            assert!(line.contains("Running"), "{line}");
            break;
        }
    }
    c.ok(&["delete", "po", "watched", "-n", "dev"]).await;
    let _ = child.kill().await;
}
