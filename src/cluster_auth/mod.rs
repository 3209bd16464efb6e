//! The credential the gateway presents to a cluster, kept current: a static token or client
//! certificate, a token file re-read when it changes (projected service-account tokens
//! rotate), or an exec plugin's answer cached until it expires.
//!
//! Calls never wait on the source when the credential is current: they read a cached header
//! under a short lock. When it is due (expiry ahead, a changed file, the cluster answered 401
//! to it), one call refreshes it while the others wait for that one refresh — a plugin never
//! runs twice at once for one cluster, nor per request — and a failure is kept for a few
//! seconds so that a broken plugin is not started by every call.

pub mod exec;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use http::HeaderValue;

pub use exec::{ExecError, ExecPlugin};

/// A token file is checked for changes at most this often.
const FILE_CHECK: Duration = Duration::from_secs(1);
/// A failed refresh is answered from memory for this long before it is tried again.
const FAILURE_HOLD: Duration = Duration::from_secs(5);
/// A 401 makes the credential refresh at most this often.
const REJECTED_REFRESH: Duration = Duration::from_secs(10);
/// An expiring credential is refreshed up to this long before its expiry.
const MAX_EARLY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the token file {path}: {reason}")]
    TokenFile { path: String, reason: String },
    #[error("the token file {0} is empty")]
    EmptyTokenFile(String),
    #[error("{0}")]
    Exec(String),
}

/// Where the credential comes from.
enum Source {
    Static,
    TokenFile(PathBuf),
    Exec(ExecPlugin),
}

/// The credential to present now.
#[derive(Clone, Debug, Default)]
pub struct Presented {
    pub authorization: Option<HeaderValue>,
    /// Changes whenever the credential does: a 401 names the one it refused.
    pub generation: u64,
    /// A client certificate and key from the source (PEM), and its own generation: the
    /// connections made with an older one are not reused.
    pub client_cert: Option<Arc<(Vec<u8>, Vec<u8>)>>,
    pub cert_generation: u64,
}

/// For `ztk gateway clusters status`: never the credential itself.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct AuthStatus {
    pub kind: String,
    /// RFC 3339, when the source says (exec plugin, JWT `exp`, certificate `notAfter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// How many times the source was read or run.
    pub refreshes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

struct State {
    current: Presented,
    /// Refresh at or after this instant (None: the credential does not expire).
    refresh_at: Option<Instant>,
    /// When it stops being usable at all (exec: its expirationTimestamp).
    usable_until: Option<Instant>,
    expires: Option<SystemTime>,
    /// The cluster refused the current credential: refresh before the next call.
    rejected: bool,
    last_rejected_refresh: Option<Instant>,
    /// Token file: when it was last checked, and its modification time and length then.
    checked: Option<Instant>,
    file_stamp: Option<(SystemTime, u64)>,
    failure: Option<(Instant, AuthError)>,
    refreshes: u64,
    loaded: bool,
}

pub struct ClusterAuth {
    kind: String,
    source: Source,
    state: Mutex<State>,
    refresh: tokio::sync::Mutex<()>,
}

impl ClusterAuth {
    /// A credential that never changes (a token or nothing; a static client certificate is part
    /// of the TLS config).
    pub fn fixed(kind: impl Into<String>, authorization: Option<HeaderValue>) -> ClusterAuth {
        let expires = authorization
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .and_then(jwt_expiry);
        let auth = ClusterAuth::new(kind.into(), Source::Static);
        {
            let mut state = auth.lock();
            state.current.authorization = authorization;
            state.loaded = true;
            state.expires = expires;
        }
        auth
    }

    pub fn token_file(kind: impl Into<String>, path: PathBuf) -> ClusterAuth {
        ClusterAuth::new(kind.into(), Source::TokenFile(path))
    }

    pub fn exec(kind: impl Into<String>, plugin: ExecPlugin) -> ClusterAuth {
        ClusterAuth::new(kind.into(), Source::Exec(plugin))
    }

    fn new(kind: String, source: Source) -> ClusterAuth {
        ClusterAuth {
            kind,
            source,
            state: Mutex::new(State {
                current: Presented::default(),
                refresh_at: None,
                usable_until: None,
                expires: None,
                rejected: false,
                last_rejected_refresh: None,
                checked: None,
                file_stamp: None,
                failure: None,
                refreshes: 0,
                loaded: false,
            }),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The header of a credential that never changes.
    pub fn fixed_authorization(&self) -> Option<HeaderValue> {
        self.lock().current.authorization.clone()
    }

    /// Whether the credential can change (calls must ask [`current`](Self::current)).
    pub fn is_dynamic(&self) -> bool {
        !matches!(self.source, Source::Static)
    }

    /// The credential to present now, refreshed first when it is due.
    pub async fn current(&self) -> Result<Presented, AuthError> {
        if let Some(presented) = self.fresh(Instant::now()) {
            return Ok(presented);
        }
        let _single = self.refresh.lock().await;
        let now = Instant::now();
        if let Some(presented) = self.fresh(now) {
            return Ok(presented);
        }
        // (The guard must be gone before `usable_despite` locks again.)
        let held = self.lock().failure.clone();
        if let Some((at, err)) = held {
            if now.duration_since(at) < FAILURE_HOLD {
                return self.usable_despite(err, now);
            }
        }
        let result = match &self.source {
            Source::Static => return Ok(self.lock().current.clone()),
            Source::TokenFile(path) => self.reload_file(path),
            Source::Exec(plugin) => self.run_plugin(plugin).await,
        };
        match result {
            Ok(()) => Ok(self.lock().current.clone()),
            Err(err) => {
                tracing::warn!("cluster credential ({}): {err}", self.kind);
                self.lock().failure = Some((Instant::now(), err.clone()));
                self.usable_despite(err, Instant::now())
            }
        }
    }

    /// After a failed refresh: the previous credential while it is still valid (a plugin that
    /// fails ahead of expiry must not cut the cluster off early), else the error.
    fn usable_despite(&self, err: AuthError, now: Instant) -> Result<Presented, AuthError> {
        let state = self.lock();
        let still_valid =
            state.loaded && !state.rejected && state.usable_until.is_none_or(|until| now < until);
        if still_valid {
            Ok(state.current.clone())
        } else {
            Err(err)
        }
    }

    /// The cached credential when nothing says it must be refreshed.
    fn fresh(&self, now: Instant) -> Option<Presented> {
        let state = self.lock();
        if !state.loaded || state.rejected {
            return None;
        }
        match &self.source {
            Source::Static => {}
            Source::TokenFile(_) => {
                if state
                    .checked
                    .is_none_or(|c| now.duration_since(c) >= FILE_CHECK)
                {
                    return None;
                }
            }
            Source::Exec(_) => {
                if state.refresh_at.is_some_and(|at| now >= at) {
                    return None;
                }
            }
        }
        Some(state.current.clone())
    }

    /// The cluster answered 401 to the credential of `generation`: refresh it before the next
    /// call (once, and not more often than every few seconds).
    pub fn rejected(&self, generation: u64) {
        if matches!(self.source, Source::Static) {
            return;
        }
        let mut state = self.lock();
        let now = Instant::now();
        let recently = state
            .last_rejected_refresh
            .is_some_and(|at| now.duration_since(at) < REJECTED_REFRESH);
        if state.current.generation == generation && !recently {
            state.rejected = true;
            state.last_rejected_refresh = Some(now);
            // A file that did not change is read again anyway.
            state.file_stamp = None;
        }
    }

    fn reload_file(&self, path: &PathBuf) -> Result<(), AuthError> {
        let shown = path.display().to_string();
        let now = Instant::now();
        let meta = std::fs::metadata(path);
        let stamp = meta
            .as_ref()
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        {
            let mut state = self.lock();
            if state.loaded && !state.rejected && stamp.is_some() && stamp == state.file_stamp {
                state.checked = Some(now);
                return Ok(());
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| AuthError::TokenFile {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(AuthError::EmptyTokenFile(shown));
        }
        let header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            AuthError::TokenFile {
                path: shown.clone(),
                reason: "it holds characters not allowed in a header".into(),
            }
        })?;
        let expires = jwt_expiry(token);
        let mut state = self.lock();
        let changed = state.current.authorization.as_ref() != Some(&header);
        if changed {
            state.current.generation += 1;
            state.current.authorization = Some(header);
            if state.loaded {
                tracing::info!("cluster credential: {shown} changed; using the new token");
            }
        }
        state.refreshes += 1;
        state.file_stamp = stamp;
        state.checked = Some(now);
        state.loaded = true;
        state.rejected = false;
        state.failure = None;
        state.expires = expires;
        Ok(())
    }

    async fn run_plugin(&self, plugin: &ExecPlugin) -> Result<(), AuthError> {
        let started = Instant::now();
        let output = plugin
            .run()
            .await
            .map_err(|e| AuthError::Exec(e.to_string()));
        let mut state = self.lock();
        state.refreshes += 1;
        let output = output?;
        let now = Instant::now();
        let header =
            match &output.token {
                Some(token) => Some(HeaderValue::from_str(&format!("Bearer {token}")).map_err(
                    |_| AuthError::Exec("the plugin's token is not a valid header".into()),
                )?),
                None => None,
            };
        let cert_expires = output
            .client_cert
            .as_ref()
            .and_then(|(cert, _)| certificate_expiry(cert));
        let expires = output
            .expires
            .map(SystemTime::from)
            .or_else(|| output.token.as_deref().and_then(jwt_expiry))
            .or(cert_expires);
        state.current.generation += 1;
        state.current.authorization = header;
        let cert = output.client_cert.map(Arc::new);
        if cert.as_deref() != state.current.client_cert.as_deref() {
            state.current.cert_generation += 1;
            state.current.client_cert = cert;
        }
        // Only the plugin's own expirationTimestamp makes it run again (as client-go); a JWT's
        // `exp` is for the status.
        let lifetime = output.expires.map(|at| {
            let left = at - time::OffsetDateTime::now_utc();
            Duration::try_from(left).unwrap_or(Duration::ZERO)
        });
        state.usable_until = lifetime.map(|left| now + left);
        state.refresh_at = lifetime.map(|left| now + left - (left / 10).min(MAX_EARLY));
        state.expires = expires;
        state.loaded = true;
        state.rejected = false;
        state.failure = None;
        tracing::info!(
            plugin = plugin.command(),
            "exec plugin gave a credential in {} ms{}",
            started.elapsed().as_millis(),
            match lifetime {
                Some(left) => format!(", valid for {}s", left.as_secs()),
                None => String::new(),
            }
        );
        Ok(())
    }

    pub fn status(&self) -> AuthStatus {
        let state = self.lock();
        AuthStatus {
            kind: self.kind.clone(),
            expires: state.expires.map(|at| {
                time::OffsetDateTime::from(at)
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            }),
            refreshes: state.refreshes,
            last_error: state.failure.as_ref().map(|(_, e)| e.to_string()),
        }
    }
}

/// A JWT's `exp`, read without checking the signature (for the status only).
fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(exp))
}

/// A PEM certificate's `notAfter`.
pub fn certificate_expiry(pem: &[u8]) -> Option<SystemTime> {
    let der = crate::tls::parse_certs(pem, "certificate").ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.first()?.as_ref()).ok()?;
    let secs = cert.validity().not_after.timestamp();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_expiry_of_a_jwt_without_trusting_it() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"exp":1900000000,"sub":"system:serviceaccount:a:b"}"#);
        let token = format!("eyJhbGciOiJSUzI1NiJ9.{claims}.sig");
        assert_eq!(
            jwt_expiry(&token),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000))
        );
        assert_eq!(jwt_expiry("opaque-token"), None);
    }

    #[tokio::test]
    async fn a_failure_is_held_and_answered_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let auth = ClusterAuth::token_file("token file", dir.path().join("missing"));
        let first = auth.current().await.unwrap_err().to_string();
        // Within FAILURE_HOLD the same error comes back without reading the file again.
        std::fs::write(dir.path().join("missing"), "now-here").unwrap();
        let second = auth.current().await.unwrap_err().to_string();
        assert_eq!(first, second);
        assert_eq!(auth.status().refreshes, 0);
        auth.lock().failure.as_mut().unwrap().0 -= FAILURE_HOLD;
        assert_eq!(
            auth.current().await.unwrap().authorization.unwrap(),
            "Bearer now-here"
        );
    }

    #[tokio::test]
    async fn a_token_file_is_read_again_when_it_changes_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let auth = ClusterAuth::token_file("token file", path.clone());
        let err = auth.current().await.unwrap_err().to_string();
        assert!(err.contains("cannot read the token file"), "{err}");
        // The failure is held for a few seconds; a new source shows the file once it exists.
        std::fs::write(&path, "one\n").unwrap();
        let auth = ClusterAuth::token_file("token file", path.clone());
        let first = auth.current().await.unwrap();
        assert_eq!(first.authorization.unwrap(), "Bearer one");
        std::fs::write(&path, "two-longer\n").unwrap();
        // Within a second the cached one is kept without touching the file.
        assert_eq!(auth.current().await.unwrap().generation, first.generation);
        auth.lock().checked = Some(Instant::now() - FILE_CHECK);
        let second = auth.current().await.unwrap();
        assert_eq!(second.authorization.unwrap(), "Bearer two-longer");
        assert!(second.generation > first.generation);
        assert_eq!(auth.status().refreshes, 2);
        // A 401 forces a read even when the file looks unchanged.
        auth.rejected(second.generation);
        assert!(auth.fresh(Instant::now()).is_none());
        auth.current().await.unwrap();
        assert_eq!(auth.status().refreshes, 3);
    }

    /// An exec plugin runs with its args and env, and again a little before its credential's
    /// expirationTimestamp (a tenth of the lifetime early, at most a minute), not per call.
    #[tokio::test]
    async fn an_exec_credential_is_refreshed_a_little_before_it_expires() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("plugin.sh");
        std::fs::write(
            &script,
            r#"#!/bin/sh
echo run >> "$(dirname "$0")/runs"
n=$(wc -l < "$(dirname "$0")/runs")
at=$(date -u -d '+6 seconds' +%Y-%m-%dT%H:%M:%S.%NZ)
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s-%s-%s","expirationTimestamp":"%s"}}' "$1" "$PLUGIN_ENV" "$n" "$at"
"#,
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
        let config = crate::kubeconfig::ExecConfig {
            api_version: "client.authentication.k8s.io/v1".into(),
            command: "./plugin.sh".into(),
            args: vec!["arg".into()],
            env: vec![crate::kubeconfig::ExecEnv {
                name: "PLUGIN_ENV".into(),
                value: "env".into(),
            }],
            ..Default::default()
        };
        let cluster = crate::kubeconfig::ResolvedCluster {
            server: "https://cluster.example".into(),
            ca_pem: None,
            insecure: false,
            tls_server_name: None,
            proxy_url: None,
            credential: crate::kubeconfig::CredentialSource::None,
            client_cert: None,
        };
        let auth = ClusterAuth::exec("exec plugin", ExecPlugin::new(config, dir.path(), &cluster));
        let first = auth.current().await.unwrap();
        assert_eq!(first.authorization.unwrap(), "Bearer arg-env-1");
        for _ in 0..20 {
            assert_eq!(auth.current().await.unwrap().generation, first.generation);
        }
        let (refresh_at, usable_until) = {
            let state = auth.lock();
            (state.refresh_at.unwrap(), state.usable_until.unwrap())
        };
        let early = usable_until - refresh_at;
        // A tenth of the lifetime (6 s, less the moments the plugin took to answer).
        assert!(
            early > Duration::from_millis(400) && early <= Duration::from_millis(600),
            "{early:?}"
        );
        // Just before the refresh point the cached one is used; just after it (the old one
        // still valid for a while) the plugin runs again.
        tokio::time::sleep_until((refresh_at - Duration::from_millis(250)).into()).await;
        assert_eq!(auth.current().await.unwrap().generation, first.generation);
        tokio::time::sleep_until((refresh_at + Duration::from_millis(20)).into()).await;
        let second = auth.current().await.unwrap();
        assert!(Instant::now() < usable_until);
        assert_eq!(second.authorization.unwrap(), "Bearer arg-env-2");
        assert_eq!(auth.status().refreshes, 2);
    }
}
