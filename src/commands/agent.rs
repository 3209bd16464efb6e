//! `ztk agent`: run next to a cluster that accepts no inbound connection; dials out to the
//! gateway(s) and carries their calls to the cluster (see `agent`).

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::agent::{AgentConfig, ClusterSource};
use crate::cli::UsageError;

/// Connect a cluster that accepts no inbound connection to the gateway, through a tunnel this
/// agent dials out (the gateway's cluster has `agent = true`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway's URL, https://HOST:PORT (repeat for each gateway of a PostgreSQL-shared
    /// group: the agent keeps a tunnel to each).
    #[arg(
        long = "gateway",
        required = true,
        value_name = "URL",
        env = "ZTK_AGENT_GATEWAY",
        value_delimiter = ','
    )]
    gateways: Vec<String>,
    /// The gateway's CA certificate (PEM), to verify it.
    #[arg(long, value_name = "FILE", env = "ZTK_AGENT_CA_FILE")]
    ca_file: PathBuf,
    /// The cluster's name in the gateway's config.
    #[arg(long, value_name = "NAME", env = "ZTK_AGENT_CLUSTER")]
    cluster: String,
    /// A file holding the one-time enrollment token (`ztk gateway agent token CLUSTER`); read
    /// only on the first start, before the agent has its certificate.
    #[arg(long, value_name = "FILE", env = "ZTK_AGENT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Reach the cluster with this kubeconfig (exec plugins and token files work as on the
    /// gateway).
    #[arg(long, value_name = "FILE", conflicts_with = "incluster")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, value_name = "NAME", requires = "kubeconfig")]
    context: Option<String>,
    /// Reach the cluster with the pod's service account (the agent runs in the cluster).
    #[arg(long)]
    incluster: bool,
    /// Reach the gateways through this proxy: http://[USER:PASSWORD@]HOST:PORT (CONNECT) or
    /// socks5://HOST:PORT, as egress from private networks often must.
    #[arg(long, value_name = "URL", env = "ZTK_AGENT_PROXY")]
    proxy: Option<String>,
    /// How often each gateway is pinged; one silent for as long is dialled again.
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    keepalive: String,
    /// Where the agent keeps its key and certificate (default: ZTK_DATA_DIR or the user's data
    /// directory).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<i32> {
    let source = match (args.kubeconfig, args.incluster) {
        (Some(path), false) => ClusterSource::Kubeconfig {
            path,
            context: args.context,
        },
        (None, true) => ClusterSource::InCluster,
        _ => {
            return Err(UsageError(
                "give --kubeconfig FILE or --incluster: how the agent reaches its cluster".into(),
            )
            .into())
        }
    };
    if !crate::gateway::config::valid_name(&args.cluster) {
        return Err(UsageError(format!(
            "--cluster {:?}: a cluster name is lowercase letters, digits and '-'",
            args.cluster
        ))
        .into());
    }
    for url in &args.gateways {
        crate::agent::GatewayAddr::parse(url).map_err(|e| UsageError(e.to_string()))?;
    }
    let keepalive = crate::audit::filter::parse_duration_us(&args.keepalive)
        .ok()
        .filter(|us| (1_000_000..=3_600_000_000).contains(us))
        .map(|us| std::time::Duration::from_micros(us as u64))
        .ok_or_else(|| {
            UsageError(format!(
                "--keepalive {:?} is not a duration from 1s to 1h, like 15s",
                args.keepalive
            ))
        })?;
    let proxy = match &args.proxy {
        Some(url) => {
            Some(crate::relay::Proxy::parse(url).map_err(|e| UsageError(format!("--proxy: {e}")))?)
        }
        None => None,
    };
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => crate::client::config::Paths::from_env()?.data_dir,
    };
    let config = AgentConfig {
        gateways: args.gateways,
        ca_file: args.ca_file,
        cluster: args.cluster.clone(),
        token_file: args.token_file,
        source,
        data_dir,
        keepalive,
        proxy,
    };
    eprintln!(
        "ztk agent: cluster {} through {}",
        config.cluster,
        config.gateways.join(", ")
    );
    crate::cli::block_on(async move {
        crate::agent::run(config, super::gateway::shutdown_signal())
            .await
            .with_context(|| format!("ztk agent for cluster {}", args.cluster))
    })?;
    eprintln!("ztk agent: stopped");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use serde::Deserialize as _;

    /// `deploy/agent.yaml` runs a command line this binary accepts, reads its files from the
    /// volumes it mounts, and has the service account and rights it names.
    #[test]
    fn the_deployment_manifest_runs_a_valid_agent() {
        let text = include_str!("../../deploy/agent.yaml");
        let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(text)
            .map(|d| serde_json::Value::deserialize(d).unwrap())
            .collect();
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        for kind in [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "PersistentVolumeClaim",
            "Deployment",
        ] {
            assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
        }
        let role = docs.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
        assert!(role["rules"][0]["verbs"]
            .as_array()
            .unwrap()
            .contains(&"impersonate".into()));
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "ztk-agent");
        let container = &pod["containers"][0];
        let args: Vec<String> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let cli =
            crate::cli::Cli::try_parse_from(std::iter::once("ztk".to_string()).chain(args.clone()))
                .unwrap_or_else(|e| panic!("deploy/agent.yaml's args: {e}"));
        let crate::cli::Command::Agent(parsed) = cli.command else {
            panic!("not `ztk agent`");
        };
        assert!(parsed.incluster);
        let mounts: Vec<&str> = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        for path in [
            parsed.ca_file.clone(),
            parsed.token_file.clone().unwrap(),
            parsed.data_dir.clone().unwrap().join("x"),
        ] {
            assert!(
                mounts.iter().any(|m| path.starts_with(m)),
                "{} is on no volume ({mounts:?})",
                path.display()
            );
        }
    }
}
