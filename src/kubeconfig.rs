//! The subset of the kubeconfig format ztk reads (the gateway's cluster credentials) and writes
//! (the kubeconfigs handed to kubectl).

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("cannot read kubeconfig {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kubeconfig {path} is not valid YAML: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("kubeconfig {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion", default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind")]
    pub kind: String,
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    #[serde(default)]
    pub users: Vec<NamedUser>,
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    #[serde(
        rename = "current-context",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub current_context: String,
}

fn api_version() -> String {
    "v1".into()
}
fn kind() -> String {
    "Config".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamedCluster {
    pub name: String,
    pub cluster: Cluster,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_tls_verify: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamedUser {
    pub name: String,
    pub user: User,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(rename = "tokenFile", default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecConfig>,
    /// The legacy in-tree providers (gcp, azure, oidc): only named, to refuse them clearly.
    #[serde(
        rename = "auth-provider",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub auth_provider: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// An exec credential plugin (`users[].user.exec`), as client-go reads it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExecConfig {
    pub api_version: String,
    pub command: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<ExecEnv>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_hint: Option<String>,
    #[serde(default)]
    pub provide_cluster_info: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive_mode: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExecEnv {
    pub name: String,
    pub value: String,
}

/// The exec credential API versions ztk speaks (client-go's v1 and v1beta1).
pub const EXEC_API_VERSIONS: [&str; 2] = [
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamedContext {
    pub name: String,
    pub context: Context,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Context {
    pub cluster: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What the gateway needs to reach a cluster: its server, how to trust it, the way there and
/// the credential, with files resolved (relative to the kubeconfig's directory).
#[derive(Debug, Clone)]
pub struct ResolvedCluster {
    pub server: String,
    pub ca_pem: Option<Vec<u8>>,
    /// `insecure-skip-tls-verify`: only returned when the caller allowed it.
    pub insecure: bool,
    pub tls_server_name: Option<String>,
    pub proxy_url: Option<String>,
    pub credential: CredentialSource,
    /// A static client certificate and key (PEM), presented with any token.
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
}

/// Where the bearer token or client certificate comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum CredentialSource {
    /// Nothing beyond a static client certificate (if any).
    None,
    Token(String),
    /// A file re-read when it changes (projected service-account tokens rotate).
    TokenFile(PathBuf),
    /// An exec plugin, run with `dir` as the base for a relative command.
    Exec {
        config: ExecConfig,
        dir: PathBuf,
    },
}

impl CredentialSource {
    /// A name for the kind of credential, never its value.
    pub fn kind(&self, client_cert: bool) -> String {
        let cert = if client_cert {
            " + client certificate"
        } else {
            ""
        };
        match self {
            CredentialSource::None if client_cert => "client certificate".into(),
            CredentialSource::None => "none".into(),
            CredentialSource::Token(_) => format!("token{cert}"),
            CredentialSource::TokenFile(path) => format!("token file {}{cert}", path.display()),
            CredentialSource::Exec { config, .. } => {
                format!("exec plugin {} ({})", config.command, config.api_version)
            }
        }
    }
}

impl Kubeconfig {
    pub fn load(path: &Path) -> Result<Kubeconfig, KubeconfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| KubeconfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_yaml_ng::from_str(&text).map_err(|source| KubeconfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Resolves `context` (or the current context) to a server and credential. File references
    /// are relative to the kubeconfig's directory, as kubectl treats them.
    /// `insecure-skip-tls-verify` is refused unless `allow_insecure`.
    pub fn resolve(
        &self,
        path: &Path,
        context: Option<&str>,
        allow_insecure: bool,
    ) -> Result<ResolvedCluster, KubeconfigError> {
        let invalid = |message: String| KubeconfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let ctx_name = context.unwrap_or(&self.current_context);
        if ctx_name.is_empty() {
            return Err(invalid(
                "no context given and no current-context set; set `context` in the gateway config"
                    .into(),
            ));
        }
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == ctx_name)
            .ok_or_else(|| invalid(format!("context {ctx_name:?} not found")))?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .ok_or_else(|| {
                invalid(format!(
                    "cluster {:?} of context {ctx_name:?} not found",
                    ctx.context.cluster
                ))
            })?;
        let user = self
            .users
            .iter()
            .find(|u| u.name == ctx.context.user)
            .map(|u| u.user.clone())
            .unwrap_or_default();
        let base = path.parent().unwrap_or(Path::new("."));
        let read = |file: &str| -> Result<Vec<u8>, KubeconfigError> {
            let p = base.join(file);
            std::fs::read(&p).map_err(|source| KubeconfigError::Read { path: p, source })
        };
        let decode = |field: &str, data: &str| -> Result<Vec<u8>, KubeconfigError> {
            base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| invalid(format!("{field} is not valid base64: {e}")))
        };
        let c = &cluster.cluster;
        let user_name = &ctx.context.user;
        if c.insecure_skip_tls_verify && !allow_insecure {
            return Err(invalid(format!(
                "cluster {:?} sets insecure-skip-tls-verify; ztk verifies TLS: give certificate-authority(-data), or set `allow_insecure = true` on the gateway's cluster entry to accept it knowingly",
                cluster.name
            )));
        }
        if c.insecure_skip_tls_verify
            && (c.certificate_authority.is_some() || c.certificate_authority_data.is_some())
        {
            // kubectl refuses this combination too.
            return Err(invalid(format!(
                "cluster {:?} sets both insecure-skip-tls-verify and a certificate authority; keep one",
                cluster.name
            )));
        }
        if user.auth_provider.is_some() {
            return Err(invalid(format!(
                "user {user_name:?} uses a legacy auth-provider, which kubectl removed in 1.26; use the provider's exec plugin (gke-gcloud-auth-plugin, kubelogin, ...)"
            )));
        }
        if user.username.is_some() || user.password.is_some() {
            return Err(invalid(format!(
                "user {user_name:?} uses basic authentication, which Kubernetes removed in 1.19; give a token, a client certificate or an exec plugin"
            )));
        }
        let ca_pem = match (&c.certificate_authority_data, &c.certificate_authority) {
            (Some(data), _) => Some(decode("certificate-authority-data", data)?),
            (None, Some(file)) => Some(read(file)?),
            (None, None) => None,
        };
        let client_cert_pem = match (&user.client_certificate_data, &user.client_certificate) {
            (Some(data), _) => Some(decode("client-certificate-data", data)?),
            (None, Some(file)) => Some(read(file)?),
            (None, None) => None,
        };
        let client_key_pem = match (&user.client_key_data, &user.client_key) {
            (Some(data), _) => Some(decode("client-key-data", data)?),
            (None, Some(file)) => Some(read(file)?),
            (None, None) => None,
        };
        let client_cert = match (client_cert_pem, client_key_pem) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(invalid(format!(
                    "user {user_name:?} has a client certificate without its key, or a key without its certificate"
                )))
            }
        };
        let credential = match (&user.token, &user.token_file, &user.exec) {
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err(invalid(format!(
                    "user {user_name:?} has both a token and an exec plugin; keep one"
                )))
            }
            (_, _, Some(exec)) => {
                if client_cert.is_some() {
                    return Err(invalid(format!(
                        "user {user_name:?} has both a client certificate and an exec plugin; keep one"
                    )));
                }
                check_exec(exec).map_err(|m| invalid(format!("user {user_name:?}: {m}")))?;
                CredentialSource::Exec {
                    config: exec.clone(),
                    dir: base.to_path_buf(),
                }
            }
            // kubectl prefers the token when both are set.
            (Some(token), _, None) => CredentialSource::Token(token.clone()),
            (None, Some(file), None) => CredentialSource::TokenFile(base.join(file)),
            (None, None, None) => CredentialSource::None,
        };
        if !c.server.starts_with("https://") && !c.server.starts_with("http://") {
            return Err(invalid(format!(
                "cluster {:?} server {:?} is not an http(s) URL",
                cluster.name, c.server
            )));
        }
        if let Some(proxy) = &c.proxy_url {
            let scheme = proxy.split("://").next().unwrap_or_default();
            if !matches!(scheme, "http" | "socks5" | "socks5h") || !proxy.contains("://") {
                return Err(invalid(format!(
                    "cluster {:?} proxy-url {proxy:?}: ztk supports http:// (CONNECT) and socks5:// proxies",
                    cluster.name
                )));
            }
        }
        Ok(ResolvedCluster {
            server: c.server.clone(),
            ca_pem,
            insecure: c.insecure_skip_tls_verify,
            tls_server_name: c.tls_server_name.clone().filter(|n| !n.is_empty()),
            proxy_url: c.proxy_url.clone().filter(|p| !p.is_empty()),
            credential,
            client_cert,
        })
    }
}

/// What client-go checks of an exec plugin before running it, and what cannot work on a server.
fn check_exec(exec: &ExecConfig) -> Result<(), String> {
    if exec.command.is_empty() {
        return Err("the exec plugin has no command".into());
    }
    if !EXEC_API_VERSIONS.contains(&exec.api_version.as_str()) {
        return Err(format!(
            "exec plugin apiVersion {:?} is not supported; use client.authentication.k8s.io/v1 or v1beta1 (v1alpha1 was removed from kubectl in 1.24)",
            exec.api_version
        ));
    }
    match exec.interactive_mode.as_deref() {
        None | Some("") | Some("Never") | Some("IfAvailable") => Ok(()),
        Some("Always") => Err(format!(
            "the exec plugin {:?} has interactiveMode: Always: it needs a person at a terminal, which a gateway never has; use a non-interactive credential (a service account, workload identity, or a plugin mode that needs no prompt)",
            exec.command
        )),
        Some(other) => Err(format!(
            "exec plugin interactiveMode {other:?} is not one of Never, IfAvailable, Always"
        )),
    }
}

/// A kubeconfig with one cluster, one user and one context, as ztk hands to kubectl.
pub fn single(
    context: &str,
    server: &str,
    ca_pem: &str,
    user: User,
    namespace: Option<String>,
) -> Kubeconfig {
    Kubeconfig {
        api_version: api_version(),
        kind: kind(),
        clusters: vec![NamedCluster {
            name: context.into(),
            cluster: Cluster {
                server: server.into(),
                certificate_authority_data: Some(
                    base64::engine::general_purpose::STANDARD.encode(ca_pem),
                ),
                ..Default::default()
            },
        }],
        users: vec![NamedUser {
            name: context.into(),
            user,
        }],
        contexts: vec![NamedContext {
            name: context.into(),
            context: Context {
                cluster: context.into(),
                user: context.into(),
                namespace,
            },
        }],
        current_context: context.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_context_with_files_relative_to_the_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "CA").unwrap();
        std::fs::write(dir.path().join("tok"), "secret\n").unwrap();
        let yaml = r#"
apiVersion: v1
kind: Config
current-context: a
clusters:
- name: c1
  cluster: {server: "https://10.0.0.1:6443", certificate-authority: ca.pem}
users:
- name: u1
  user: {tokenFile: tok}
contexts:
- name: a
  context: {cluster: c1, user: u1}
"#;
        let path = dir.path().join("config");
        std::fs::write(&path, yaml).unwrap();
        let kc = Kubeconfig::load(&path).unwrap();
        let r = kc.resolve(&path, None, false).unwrap();
        assert_eq!(r.server, "https://10.0.0.1:6443");
        assert_eq!(r.ca_pem.as_deref(), Some(&b"CA"[..]));
        assert_eq!(
            r.credential,
            CredentialSource::TokenFile(dir.path().join("tok"))
        );
        let err = kc
            .resolve(&path, Some("nope"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("context \"nope\" not found"), "{err}");
    }

    fn load(dir: &Path, user: &str, cluster: &str) -> (Kubeconfig, PathBuf) {
        let yaml = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters:\n- name: c1\n  cluster: {cluster}\nusers:\n- name: u1\n  user: {user}\ncontexts:\n- name: a\n  context: {{cluster: c1, user: u1}}\n"
        );
        let path = dir.join("config");
        std::fs::write(&path, yaml).unwrap();
        (Kubeconfig::load(&path).unwrap(), path)
    }

    #[test]
    fn reads_exec_plugins_as_eks_writes_them_and_refuses_what_cannot_work_on_a_server() {
        let dir = tempfile::tempdir().unwrap();
        let server = "{server: \"https://x.eks.amazonaws.com\"}";
        let eks = "{exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: aws, args: [--region, eu-west-1, eks, get-token, --cluster-name, prod], env: [{name: AWS_PROFILE, value: ops}]}}";
        let (kc, path) = load(dir.path(), eks, server);
        let r = kc.resolve(&path, None, false).unwrap();
        let CredentialSource::Exec { config, dir: base } = &r.credential else {
            panic!("{:?}", r.credential)
        };
        assert_eq!(config.command, "aws");
        assert_eq!(config.args.len(), 6);
        assert_eq!(config.env[0].name, "AWS_PROFILE");
        assert_eq!(base, dir.path());
        assert_eq!(
            r.credential.kind(false),
            "exec plugin aws (client.authentication.k8s.io/v1beta1)"
        );

        let always = "{exec: {apiVersion: client.authentication.k8s.io/v1, command: kubelogin, interactiveMode: Always}}";
        let (kc, path) = load(dir.path(), always, server);
        let err = kc.resolve(&path, None, false).unwrap_err().to_string();
        assert!(err.contains("interactiveMode: Always"), "{err}");

        let alpha = "{exec: {apiVersion: client.authentication.k8s.io/v1alpha1, command: x}}";
        let (kc, path) = load(dir.path(), alpha, server);
        let err = kc.resolve(&path, None, false).unwrap_err().to_string();
        assert!(err.contains("v1alpha1"), "{err}");

        let both = "{token: t, exec: {apiVersion: client.authentication.k8s.io/v1, command: x}}";
        let (kc, path) = load(dir.path(), both, server);
        let err = kc.resolve(&path, None, false).unwrap_err().to_string();
        assert!(err.contains("both a token and an exec plugin"), "{err}");

        let legacy = "{auth-provider: {name: gcp}}";
        let (kc, path) = load(dir.path(), legacy, server);
        let err = kc.resolve(&path, None, false).unwrap_err().to_string();
        assert!(err.contains("auth-provider"), "{err}");
    }

    #[test]
    fn insecure_skip_tls_verify_needs_the_gateway_to_allow_it() {
        let dir = tempfile::tempdir().unwrap();
        let insecure = "{server: \"https://10.0.0.1\", insecure-skip-tls-verify: true, tls-server-name: api.internal, proxy-url: \"socks5://127.0.0.1:1080\"}";
        let (kc, path) = load(dir.path(), "{token: t}", insecure);
        let err = kc.resolve(&path, None, false).unwrap_err().to_string();
        assert!(err.contains("allow_insecure = true"), "{err}");
        let r = kc.resolve(&path, None, true).unwrap();
        assert!(r.insecure);
        assert_eq!(r.tls_server_name.as_deref(), Some("api.internal"));
        assert_eq!(r.proxy_url.as_deref(), Some("socks5://127.0.0.1:1080"));
        assert_eq!(r.credential, CredentialSource::Token("t".into()));

        let ftp = "{server: \"https://10.0.0.1\", proxy-url: \"ftp://p:1\"}";
        let (kc, path) = load(dir.path(), "{token: t}", ftp);
        let err = kc.resolve(&path, None, false).unwrap_err().to_string();
        assert!(err.contains("proxy-url"), "{err}");
    }
}
