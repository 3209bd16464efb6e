//! The sandbox against the real kubectl: each test starts its own sandbox on a TLS port of its
//! own and points a private kubeconfig (in a temp dir, also used as HOME and cache dir) at it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;

use serde_json::json;

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

const OLDEST: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

impl Cluster {
    /// Runs kubectl with `input` on its stdin and extra environment.
    async fn run_input(&self, bin: &str, args: &[&str], env: &[(&str, &str)], input: &str) -> Out {
        use tokio::io::AsyncWriteExt;
        let mut cmd = self.command(bin, args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn kubectl");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(input.as_bytes())
            .await
            .expect("write stdin");
        drop(stdin);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
            .expect("run kubectl");
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all).await).expect("kubectl printed JSON")
    }
}

fn configmap_manifest(name: &str, a: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: dev\n  labels:\n    app: {name}\ndata:\n  a: \"{a}\"\n  b: \"2\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply() {
    let c = start().await;
    for (bin, tag) in [(KUBECTL, "new"), (OLDEST, "old")] {
        let name = format!("ssa-{tag}");
        let m1 = c.write("cm1.yaml", &configmap_manifest(&name, "1"));
        let out = c
            .ok_with(bin, &["apply", "--server-side", "-f", path_str(&m1)])
            .await;
        assert_eq!(
            out.trim(),
            format!("configmap/{name} serverside-applied"),
            "{bin}"
        );
        let cm = c
            .json(&["get", "cm", &name, "-n", "dev", "--show-managed-fields"])
            .await;
        let rv = cm["metadata"]["resourceVersion"].clone();
        let entry = &cm["metadata"]["managedFields"][0];
        assert_eq!(
            (&entry["manager"], &entry["operation"], &entry["fieldsType"]),
            (&json!("kubectl"), &json!("Apply"), &json!("FieldsV1")),
            "{bin}: {cm}"
        );
        assert_eq!(entry["fieldsV1"]["f:data"], json!({"f:a": {}, "f:b": {}}));
        assert!(entry["time"].is_string() && entry["apiVersion"] == "v1");

        // The same file again: applied, nothing written.
        let out = c
            .ok_with(bin, &["apply", "--server-side", "-f", path_str(&m1)])
            .await;
        assert!(out.contains("serverside-applied"), "{out}");
        let again = c.json(&["get", "cm", &name, "-n", "dev"]).await;
        assert_eq!(
            again["metadata"]["resourceVersion"], rv,
            "{bin}: no-op apply"
        );

        // Another manager changing a.
        let m2 = c.write("cm2.yaml", &configmap_manifest(&name, "9"));
        let conflict = c
            .run_with(
                bin,
                &[
                    "apply",
                    "--server-side",
                    "--field-manager=other",
                    "-f",
                    path_str(&m2),
                ],
            )
            .await;
        assert!(!conflict.ok, "{bin}: {}", conflict.stdout);
        assert!(
            conflict
                .stderr
                .contains("Apply failed with 1 conflict: conflict with \"kubectl\": .data.a"),
            "{bin}: {}",
            conflict.stderr
        );
        let dry = c
            .ok_with(
                bin,
                &[
                    "apply",
                    "--server-side",
                    "--field-manager=other",
                    "--force-conflicts",
                    "--dry-run=server",
                    "-f",
                    path_str(&m2),
                ],
            )
            .await;
        assert!(dry.contains("(server dry run)"), "{dry}");
        let data = c
            .ok(&["get", "cm", &name, "-n", "dev", "-o", "jsonpath={.data.a}"])
            .await;
        assert_eq!(
            data, "1",
            "{bin}: neither the conflict nor the dry run wrote"
        );
        c.ok_with(
            bin,
            &[
                "apply",
                "--server-side",
                "--field-manager=other",
                "--force-conflicts",
                "-f",
                path_str(&m2),
            ],
        )
        .await;
        let cm = c
            .json(&["get", "cm", &name, "-n", "dev", "--show-managed-fields"])
            .await;
        assert_eq!(cm["data"], json!({"a": "9", "b": "2"}));
        let owners: Vec<(&str, Vec<&String>)> = cm["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["manager"].as_str().unwrap(),
                    e["fieldsV1"]["f:data"]
                        .as_object()
                        .unwrap()
                        .keys()
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            owners,
            [
                ("kubectl", vec![&"f:b".to_string()]),
                ("other", vec![&"f:a".to_string(), &"f:b".to_string()])
            ],
            "{bin}: forcing took a from kubectl, b is shared"
        );
    }

    // A deployment: created by apply with its pods, then a client-side owner and `kubectl scale`
    // conflict, as on a real cluster.
    let m = c.write("d.yaml", &deployment_manifest("ssa-shop", "nginx:1.0", 2));
    let out = c.ok(&["apply", "--server-side", "-f", path_str(&m)]).await;
    assert!(
        out.contains("deployment.apps/ssa-shop serverside-applied"),
        "{out}"
    );
    let ready = c
        .ok(&[
            "get",
            "deploy",
            "ssa-shop",
            "-n",
            "dev",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ])
        .await;
    assert_eq!(ready, "2");
    c.ok(&["scale", "deploy", "ssa-shop", "-n", "dev", "--replicas=3"])
        .await;
    let m = c.write("d2.yaml", &deployment_manifest("ssa-shop", "nginx:2.0", 2));
    let conflict = c
        .run_with(OLDEST, &["apply", "--server-side", "-f", path_str(&m)])
        .await;
    assert!(
        !conflict.ok
            && conflict.stderr.contains(
                "conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas"
            ),
        "{}",
        conflict.stderr
    );
    c.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        path_str(&m),
    ])
    .await;
    let images = c
        .ok(&[
            "get",
            "po",
            "-n",
            "dev",
            "-l",
            "app=ssa-shop",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ])
        .await;
    assert_eq!(images, "nginx:2.0 nginx:2.0");

    // Client-side apply first, then server-side: kubectl migrates the ownership.
    let m = c.write("csa.yaml", &configmap_manifest("csa", "1"));
    c.ok(&["apply", "-f", path_str(&m)]).await;
    let m = c.write("csa2.yaml", &configmap_manifest("csa", "3"));
    let conflict = c
        .run_with(KUBECTL, &["apply", "--server-side", "-f", path_str(&m)])
        .await;
    assert!(
        conflict
            .stderr
            .contains("conflict with \"kubectl-client-side-apply\" using v1: .data.a"),
        "{}",
        conflict.stderr
    );
    c.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        path_str(&m),
    ])
    .await;
    let cm = c
        .json(&["get", "cm", "csa", "-n", "dev", "--show-managed-fields"])
        .await;
    let managers: Vec<&str> = cm["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert!(
        managers.contains(&"kubectl") && !managers.contains(&"kubectl-client-side-apply"),
        "{managers:?}"
    );
    let diff = c
        .run_with(
            KUBECTL,
            &["diff", "--server-side", "-f", path_str(&m1_path(&c))],
        )
        .await;
    assert!(
        diff.stdout.contains("-  a: \"3\"") && diff.stdout.contains("+  a: \"1\""),
        "{}\n{}",
        diff.stdout,
        diff.stderr
    );
}

fn m1_path(c: &Cluster) -> PathBuf {
    c.write("csa-back.yaml", &configmap_manifest("csa", "1"))
}

/// `kubectl debug -it` with input on a pipe (no terminal): the interactive shell runs each
/// line; `exit` ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_debug_ephemeral_container() {
    let c = start().await;
    let pod = "web-f4xbb9mvgl-fh794";
    for (bin, tag) in [(KUBECTL, "new"), (OLDEST, "old")] {
        for (extra, ws) in [
            (&["--", "sh"][..], "true"),
            (&["--target=web"][..], "false"),
        ] {
            let mut args = vec!["debug", "-it", "-n", "dev", pod, "--image=busybox"];
            args.extend_from_slice(extra);
            let input = format!("echo hello-{tag}\nhostname\nexit\n");
            let out = c
                .run_input(
                    bin,
                    &args,
                    &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", ws)],
                    &input,
                )
                .await;
            assert!(out.ok, "{bin} {args:?}: {}\n{}", out.stdout, out.stderr);
            // kubectl 1.32 prints its notices on stdout, 1.27 on stderr.
            let (notices, session): (Vec<&str>, Vec<&str>) = out
                .stdout
                .lines()
                .filter(|l| !l.starts_with("Targeting container \"web\""))
                .partition(|l| l.starts_with("Defaulting debug container name"));
            assert_eq!(
                session,
                [format!("hello-{tag}"), pod.to_string()],
                "{bin} {args:?} ws={ws}: {}",
                out.stderr
            );
            assert!(
                notices.len() == 1
                    || out
                        .stderr
                        .contains("Defaulting debug container name to debugger-"),
                "{}",
                out.stderr
            );
        }
    }
    let got = c.json(&["get", "po", pod, "-n", "dev"]).await;
    let ecs = got["spec"]["ephemeralContainers"].as_array().unwrap();
    assert_eq!(ecs.len(), 4, "{got}");
    assert_eq!(ecs[1]["targetContainerName"], "web");
    let statuses = got["status"]["ephemeralContainerStatuses"]
        .as_array()
        .unwrap();
    assert_eq!(statuses.len(), 4);
    // Each shell exited: its container terminated, and its log is what it printed.
    assert!(
        statuses
            .iter()
            .all(|s| s["state"]["terminated"]["exitCode"] == 0),
        "{statuses:?}"
    );
    let first = ecs[0]["name"].as_str().unwrap();
    let log = c.ok(&["logs", "-n", "dev", pod, "-c", first]).await;
    assert_eq!(log, format!("hello-new\n{pod}\n"));

    // A non-interactive one runs its command; exec reaches a running one.
    let out = c
        .ok(&[
            "debug",
            "-n",
            "dev",
            pod,
            "--image=busybox",
            "--profile=general",
            "--",
            "sleep",
            "1d",
        ])
        .await;
    assert!(
        out.starts_with("Defaulting debug container name to debugger-"),
        "{out}"
    );
    let got = c.json(&["get", "po", pod, "-n", "dev"]).await;
    let sleeper = got["spec"]["ephemeralContainers"][4]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(got["status"]["ephemeralContainerStatuses"][4]["state"]["running"].is_object());
    let out = c
        .ok(&[
            "exec",
            "-n",
            "dev",
            pod,
            "-c",
            &sleeper,
            "--",
            "cat",
            "/etc/hostname",
        ])
        .await;
    assert_eq!(out, format!("{pod}\n"));

    // The apiserver's refusals.
    let bad = c
        .run_with(
            KUBECTL,
            &[
                "debug",
                "-n",
                "dev",
                pod,
                "--image=busybox",
                "--target=nope",
            ],
        )
        .await;
    assert!(
        !bad.ok
            && bad.stderr.contains(&format!(
                "The Pod \"{pod}\" is invalid: spec.ephemeralContainers[5].targetContainerName: Not found: \"nope\""
            )),
        "{}",
        bad.stderr
    );
    let bad = c
        .run_with(
            OLDEST,
            &[
                "debug",
                "-n",
                "kube-system",
                "etcd-sandbox-node-1",
                "--image=busybox",
            ],
        )
        .await;
    assert!(
        bad.stderr
            .contains("static pods do not support ephemeral containers"),
        "{}",
        bad.stderr
    );

    // --copy-to and node/NAME create pods and attach to their shell.
    let out = c
        .run_input(
            KUBECTL,
            &[
                "debug",
                "-n",
                "dev",
                pod,
                "-it",
                "--copy-to=web-copy",
                "--image=busybox",
                "--profile=general",
            ],
            &[],
            "echo in-copy\nexit\n",
        )
        .await;
    assert!(
        out.ok && out.stdout.ends_with("in-copy\n"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    let ready = c
        .ok(&[
            "get",
            "po",
            "web-copy",
            "-n",
            "dev",
            "-o",
            "jsonpath={.status.phase} {.spec.containers[*].image}",
        ])
        .await;
    assert_eq!(ready, "Running nginx:1.25.3 busybox");
    let out = c
        .run_input(
            OLDEST,
            &["debug", "node/sandbox-node-1", "-it", "--image=busybox"],
            &[],
            "echo on-node\nexit\n",
        )
        .await;
    assert!(
        out.ok && out.stdout.ends_with("on-node\n"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        format!("{}{}", out.stdout, out.stderr)
            .contains("Creating debugging pod node-debugger-sandbox-node-1-"),
        "{}",
        out.stderr
    );
}

/// `kubectl debug -it` in a terminal (`script` gives kubectl a pty): echo, prompt, CRLF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_debug_with_a_terminal() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = start().await;
    for bin in [KUBECTL, OLDEST] {
        let line =
            format!("{bin} debug -it -n dev web-f4xbb9mvgl-pv968 --image=busybox --target=web");
        let mut child = c
            .command("script", &["-qec", &line, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn script");
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // Type only once the shell's prompt is there, as a person would.
        while !String::from_utf8_lossy(&seen).contains("/ # ") {
            let n = tokio::time::timeout(Duration::from_secs(30), stdout.read(&mut buf))
                .await
                .expect("no prompt in time")
                .expect("read");
            assert!(n > 0, "ended early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        stdin.write_all(b"echo tty-$((1))ok\r").await.unwrap();
        stdin.write_all(b"exit\r").await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), stdout.read_to_end(&mut seen))
            .await
            .expect("session did not end")
            .unwrap();
        let text = String::from_utf8_lossy(&seen);
        assert!(
            text.contains("/ # echo tty-$((1))ok\r\ntty-$((1))ok\r\n/ # exit\r\n"),
            "{bin}: {text:?}"
        );
        assert!(text.contains("Session ended"), "{bin}: {text:?}");
        assert!(child.wait().await.unwrap().success());
    }
}

fn millicores(cell: &str) -> u64 {
    cell.strip_suffix('m')
        .unwrap_or_else(|| panic!("CPU {cell:?} is not in millicores"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_top() {
    let c = start().await;
    for bin in [KUBECTL, OLDEST] {
        let out = c.ok_with(bin, &["top", "pods", "-n", "dev"]).await;
        let rows: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[0],
            ["NAME", "CPU(cores)", "MEMORY(bytes)"],
            "{bin}: {out}"
        );
        let names: Vec<&str> = rows[1..].iter().map(|r| r[0]).collect();
        assert_eq!(
            names,
            [
                "api-nv7cnnlg94-qpf5n",
                "debug-shell",
                "web-f4xbb9mvgl-fh794",
                "web-f4xbb9mvgl-pv968"
            ],
            "{bin}: {out}"
        );
        for r in &rows[1..] {
            millicores(r[1]);
            assert!(r[2].ends_with("Mi"), "{bin}: {out}");
        }

        let out = c
            .ok_with(bin, &["top", "pods", "-A", "--sort-by=cpu"])
            .await;
        let rows: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[0],
            ["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"],
            "{out}"
        );
        assert_eq!(rows.len(), 1 + 15, "{out}");
        let cpus: Vec<u64> = rows[1..].iter().map(|r| millicores(r[2])).collect();
        assert!(
            cpus.windows(2).all(|w| w[0] >= w[1]),
            "{bin}: not sorted by CPU: {out}"
        );
        assert_eq!(rows[1][1], "kube-apiserver-sandbox-node-1", "{out}");

        let out = c
            .ok_with(bin, &["top", "pods", "-n", "prod", "-l", "app=web"])
            .await;
        assert_eq!(out.lines().count(), 4, "{out}");
        assert!(out.lines().skip(1).all(|l| l.starts_with("web-")), "{out}");

        let out = c
            .ok_with(
                bin,
                &["top", "pod", "debug-shell", "-n", "dev", "--containers"],
            )
            .await;
        let rows: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[0],
            ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"],
            "{out}"
        );
        assert_eq!(rows[1][..2], ["debug-shell", "debug-shell"]);

        let out = c.ok_with(bin, &["top", "nodes"]).await;
        let rows: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0][0], "NAME", "{out}");
        assert_eq!(rows[1][0], "sandbox-node-1", "{out}");
        assert!(
            millicores(rows[1][1]) > 100 && rows[1][2].ends_with('%'),
            "{out}"
        );

        let missing = c.run_with(bin, &["top", "pod", "nope", "-n", "dev"]).await;
        assert!(
            !missing.ok && missing.stderr.contains("not found"),
            "{}",
            missing.stderr
        );
    }

    // The raw objects, and the Table kubectl get asks for.
    let raw: serde_json::Value = serde_json::from_str(
        &c.ok(&[
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/namespaces/dev/pods/debug-shell",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(raw["kind"], "PodMetrics");
    assert!(raw["window"].as_str().unwrap().ends_with('s'));
    assert!(raw["containers"][0]["usage"]["cpu"]
        .as_str()
        .unwrap()
        .ends_with('n'));
    assert!(raw["containers"][0]["usage"]["memory"]
        .as_str()
        .unwrap()
        .ends_with("Ki"));
    let out = c
        .ok(&["get", "podmetrics", "-n", "dev", "debug-shell"])
        .await;
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "CPU", "MEMORY", "WINDOW"], "{out}");
    let resources = c
        .ok(&["api-resources", "--api-group=metrics.k8s.io", "-o", "name"])
        .await;
    assert_eq!(resources, "nodes.metrics.k8s.io\npods.metrics.k8s.io\n");
}
