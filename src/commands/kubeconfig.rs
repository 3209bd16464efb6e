//! `ztk kubeconfig`: a kubeconfig that sends plain kubectl (and any Kubernetes client) through
//! the persistent proxy, authenticated by the `ztk credential` exec plugin. It holds no token.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use serde_yaml_ng::{Mapping, Value};

use crate::client::api::GatewayApi;
use crate::client::config::{ClientConfig, Paths};
use crate::client::daemon::ProxyFiles;
use crate::client::token::require_session;

/// Write a kubeconfig for plain kubectl, with a context `ztk-CLUSTER` per cluster you may use.
///
/// Its server is the persistent loopback proxy (`ztk proxy`) and its user an exec credential plugin
/// (`ztk credential`), so every kubectl run is relayed through the gateway and recorded with its
/// command line. By default writes ~/.kube/ztk.yaml and prints the `KUBECONFIG=` line to use it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write to this file instead of ~/.kube/ztk.yaml (`-` prints it).
    #[arg(long, short, value_name = "FILE", conflicts_with = "merge")]
    pub output: Option<PathBuf>,
    /// Add the contexts to your kubeconfig ($KUBECONFIG's first file, else ~/.kube/config),
    /// replacing only ztk's own entries and keeping a backup of the file.
    #[arg(long)]
    pub merge: bool,
    /// Loopback port for the persistent proxy (default: the one chosen before, else a free one).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
}

pub async fn run(args: Args) -> Result<i32> {
    let paths = Paths::from_env()?;
    let (mut config, token) = require_session(&paths)?;
    refresh_clusters(&paths, &mut config, &token).await;
    if config.clusters.is_empty() {
        anyhow::bail!(
            "the gateway offers no clusters to {}; ask its administrator",
            config.user
        );
    }
    let files = ProxyFiles::new(&paths);
    let old_port = files.port()?;
    let port = files.ensure_port(args.port)?;
    let ca_pem = files.ensure_tls()?;
    if let Some(pid) = files.running()? {
        if old_port.is_some_and(|p| p != port) {
            eprintln!("ztk: the running proxy (pid {pid}) still listens on the old port; run `ztk proxy stop` (the next kubectl starts it again)");
        } else if pid != 0 && !files.accepts_current(pid) {
            eprintln!("{}", super::credential::old_proxy_hint(pid));
        }
    }
    let exe = std::env::current_exe().context("cannot find the ztk executable")?;
    let default_cluster = config.pick_cluster(None).ok();
    let entries = Entries::new(&config.clusters, port, &ca_pem, &exe.display().to_string());

    if args.merge {
        let target = merge_target()?;
        let backup = merge_into(&target, &entries)?;
        println!(
            "Added {} to {}",
            entries.names().join(", "),
            target.display()
        );
        if let Some(backup) = backup {
            println!("Backup of the previous file: {}", backup.display());
        }
        if let Some(cluster) = default_cluster {
            println!("Use it: kubectl config use-context ztk-{cluster}");
        }
        return Ok(0);
    }
    let mut doc = entries.document();
    if let Some(cluster) = default_cluster.or_else(|| config.clusters.first().cloned()) {
        doc.insert("current-context".into(), format!("ztk-{cluster}").into());
    }
    let text = serde_yaml_ng::to_string(&Value::Mapping(doc))?;
    let target = match &args.output {
        Some(path) if path.as_os_str() == "-" => {
            print!("{text}");
            return Ok(0);
        }
        Some(path) => path.clone(),
        None => home()?.join(".kube").join("ztk.yaml"),
    };
    crate::fsutil::write_private(&target, text.as_bytes())
        .with_context(|| format!("cannot write {}", target.display()))?;
    println!(
        "Wrote {} ({})",
        target.display(),
        entries.names().join(", ")
    );
    println!("export KUBECONFIG={}", target.display());
    Ok(0)
}

/// The clusters the user may use now; the list saved at login when the gateway cannot be asked.
async fn refresh_clusters(paths: &Paths, config: &mut ClientConfig, token: &str) {
    let asked = async {
        let api = GatewayApi::new(&config.gateway, &config.roots()?)?;
        anyhow::Ok(api.session(token).await?)
    };
    match asked.await {
        Ok(session) => {
            config.clusters = session.clusters.into_iter().map(|c| c.name).collect();
            config.expires_us = session.expires_us;
            if let Err(err) = config.save(paths) {
                eprintln!("ztk: warning: {err:#}");
            }
        }
        Err(err) => eprintln!(
            "ztk: warning: cannot ask the gateway for your clusters ({err:#}); using the list from login"
        ),
    }
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("HOME is not set; give --output FILE")
}

/// The file `--merge` writes to: what kubectl itself would write to.
fn merge_target() -> Result<PathBuf> {
    if let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        if let Some(first) = std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty()) {
            return Ok(first);
        }
    }
    Ok(home()?.join(".kube").join("config"))
}

/// ztk's clusters, users and contexts, as YAML values.
struct Entries {
    clusters: Vec<Value>,
    users: Vec<Value>,
    contexts: Vec<Value>,
    names: Vec<String>,
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Mapping(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

impl Entries {
    fn new(clusters: &[String], port: u16, ca_pem: &str, exe: &str) -> Entries {
        let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        let mut entries = Entries {
            clusters: vec![],
            users: vec![],
            contexts: vec![],
            names: vec![],
        };
        for cluster in clusters {
            let name = format!("ztk-{cluster}");
            // The proxy routes by the credential, which names the cluster (`kubectl get --raw`
            // drops this path); the path is kept because kubectl keys its discovery cache by
            // the whole server URL, so each cluster keeps a cache of its own.
            entries.clusters.push(map(vec![
                ("name", name.clone().into()),
                (
                    "cluster",
                    map(vec![
                        (
                            "server",
                            format!("https://127.0.0.1:{port}/k8s/{cluster}").into(),
                        ),
                        ("certificate-authority-data", ca.clone().into()),
                    ]),
                ),
            ]));
            let exec = map(vec![
                ("apiVersion", "client.authentication.k8s.io/v1".into()),
                ("command", exe.into()),
                (
                    "args",
                    Value::Sequence(vec![
                        "credential".into(),
                        "--cluster".into(),
                        cluster.clone().into(),
                    ]),
                ),
                (
                    "installHint",
                    "ztk is needed for this context: install it (install.sh in the ztk sources), then run `ztk login` and `ztk kubeconfig`".into(),
                ),
                ("interactiveMode", "IfAvailable".into()),
                ("provideClusterInfo", false.into()),
            ]);
            entries.users.push(map(vec![
                ("name", name.clone().into()),
                ("user", map(vec![("exec", exec)])),
            ]));
            entries.contexts.push(map(vec![
                ("name", name.clone().into()),
                (
                    "context",
                    map(vec![
                        ("cluster", name.clone().into()),
                        ("user", name.clone().into()),
                    ]),
                ),
            ]));
            entries.names.push(name);
        }
        entries
    }

    fn names(&self) -> &[String] {
        &self.names
    }

    fn document(&self) -> Mapping {
        let mut doc = Mapping::new();
        doc.insert("apiVersion".into(), "v1".into());
        doc.insert("kind".into(), "Config".into());
        doc.insert("clusters".into(), Value::Sequence(self.clusters.clone()));
        doc.insert("users".into(), Value::Sequence(self.users.clone()));
        doc.insert("contexts".into(), Value::Sequence(self.contexts.clone()));
        doc
    }
}

/// Replaces ztk's entries in the kubeconfig at `path` (other keys and entries are kept as they
/// are); returns the backup made of the previous file, if there was one.
fn merge_into(path: &Path, entries: &Entries) -> Result<Option<PathBuf>> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut doc = match existing.as_deref().map(str::trim) {
        None | Some("") => Mapping::new(),
        Some(text) => match serde_yaml_ng::from_str::<Value>(text)
            .with_context(|| format!("{} is not valid YAML; not touching it", path.display()))?
        {
            Value::Mapping(m) => m,
            _ => anyhow::bail!("{} is not a kubeconfig; not touching it", path.display()),
        },
    };
    doc.entry("apiVersion".into()).or_insert("v1".into());
    doc.entry("kind".into()).or_insert("Config".into());
    for (key, ours) in [
        ("clusters", &entries.clusters),
        ("users", &entries.users),
        ("contexts", &entries.contexts),
    ] {
        let list = doc
            .entry(key.into())
            .or_insert_with(|| Value::Sequence(vec![]));
        if list.is_null() {
            *list = Value::Sequence(vec![]);
        }
        let Value::Sequence(items) = list else {
            anyhow::bail!("{}: `{key}` is not a list; not touching it", path.display());
        };
        items.retain(|item| {
            !item
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| entries.names.iter().any(|ours| ours == n))
        });
        items.extend(ours.iter().cloned());
    }
    let backup = match &existing {
        Some(text) => {
            let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
            let backup = path.with_file_name(format!(
                "{}.ztk-backup-{stamp}",
                path.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("config")
            ));
            crate::fsutil::write_private(&backup, text.as_bytes())
                .with_context(|| format!("cannot write the backup {}", backup.display()))?;
            Some(backup)
        }
        None => None,
    };
    let text = serde_yaml_ng::to_string(&Value::Mapping(doc))?;
    crate::fsutil::write_private(path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(backup)
}
