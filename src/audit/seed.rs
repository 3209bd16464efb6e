//! Synthetic audit records for benchmarks and large-store tests: deterministic (a fixed
//! random seed), spread over the last 30 days, with realistic mixes of users, clusters,
//! namespaces, resources, verbs and statuses. Written through the normal batch writer.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use super::model::{now_us, AccessMethod, ApiCall, Command};
use super::store::{AuditStore, StoreError};

const USERS: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
];
const CLUSTERS: &[&str] = &["prod", "staging", "dev"];
const NAMESPACES: &[&str] = &[
    "default",
    "kube-system",
    "payments",
    "web",
    "data",
    "monitoring",
    "",
];
const RESOURCES: &[(&str, &str)] = &[
    ("pods", ""),
    ("deployments", "apps"),
    ("services", ""),
    ("configmaps", ""),
    ("secrets", ""),
    ("namespaces", ""),
    ("nodes", ""),
    ("jobs", "batch"),
];
/// Verbs weighted like real kubectl traffic: mostly reads.
const VERBS: &[(&str, u32)] = &[
    ("get", 30),
    ("list", 40),
    ("watch", 8),
    ("create", 6),
    ("patch", 6),
    ("update", 3),
    ("delete", 7),
];

/// Adds `count` API calls (and a command per ten calls) to `store`; returns the number of calls.
pub fn seed(store: &AuditStore, count: u64) -> Result<u64, StoreError> {
    seed_for(store, count, None)
}

/// Like `seed`, with every record belonging to `user` when given (a backlog to ship).
pub fn seed_for(store: &AuditStore, count: u64, only: Option<&str>) -> Result<u64, StoreError> {
    let (sink, writer) = store.start_writer(16_384)?;
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let now = now_us();
    let span = 30 * 86_400_000_000i64;
    let total_weight: u32 = VERBS.iter().map(|(_, w)| w).sum();
    let mut written = 0;
    while written < count {
        let user = USERS[rng.gen_range(0..USERS.len())];
        let user = only.unwrap_or(user);
        let cluster = CLUSTERS[rng.gen_range(0..CLUSTERS.len())];
        let start = now - rng.gen_range(0..span);
        let calls = (count - written).min(10);
        let (resource, group) = RESOURCES[rng.gen_range(0..RESOURCES.len())];
        let namespace = NAMESPACES[rng.gen_range(0..NAMESPACES.len())];
        let mut pick = rng.gen_range(0..total_weight);
        let verb = VERBS
            .iter()
            .find(|(_, w)| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .map(|(v, _)| *v)
            .unwrap_or("get");
        let ns_flag = if namespace.is_empty() {
            "-A".to_string()
        } else {
            format!("-n {namespace}")
        };
        let command = Command {
            id: Uuid::now_v7(),
            started_us: start,
            ended_us: Some(start + 40_000 + rng.gen_range(0..400_000)),
            user: user.into(),
            cluster: cluster.into(),
            argv: vec!["kubectl".into(), verb.into(), resource.into()],
            command_line: format!("kubectl {verb} {resource} {ns_flag}"),
            exit_code: Some(0),
            api_calls: calls as i64,
            access_method: AccessMethod::Cli,
            cwd: format!("/home/{user}"),
            host: format!("{user}-laptop"),
            reason: String::new(),
        };
        for i in 0..calls {
            let status = match rng.gen_range(0..100) {
                0..=89 => 200,
                90..=93 => 404,
                94..=96 => 403,
                97..=98 => 409,
                _ => 500,
            };
            let discovery = i < 2;
            let call_verb = if discovery { "get" } else { verb };
            let name = if call_verb == "get" || call_verb == "delete" || call_verb == "patch" {
                format!("{resource}-{}", rng.gen_range(0..500))
            } else {
                String::new()
            };
            let path = if discovery {
                if i == 0 {
                    "/api".to_string()
                } else {
                    "/apis".to_string()
                }
            } else {
                let base = if group.is_empty() {
                    "/api/v1".to_string()
                } else {
                    format!("/apis/{group}/v1")
                };
                let ns = if namespace.is_empty() || resource == "namespaces" || resource == "nodes"
                {
                    String::new()
                } else {
                    format!("/namespaces/{namespace}")
                };
                if name.is_empty() {
                    format!("{base}{ns}/{resource}")
                } else {
                    format!("{base}{ns}/{resource}/{name}")
                }
            };
            let id = Uuid::now_v7();
            sink.record_call(ApiCall {
                id,
                time_us: start + i as i64 * 3_000,
                user: user.into(),
                cluster: cluster.into(),
                namespace: if discovery {
                    String::new()
                } else {
                    namespace.into()
                },
                resource: if discovery {
                    String::new()
                } else {
                    resource.into()
                },
                name,
                api_group: if discovery {
                    String::new()
                } else {
                    group.into()
                },
                api_version: if discovery {
                    String::new()
                } else {
                    "v1".into()
                },
                verb: call_verb.into(),
                method: "GET".into(),
                path,
                status,
                duration_us: 800 + rng.gen_range(0..30_000),
                bytes_out: rng.gen_range(200..40_000),
                user_agent: "kubectl/v1.32.4 (linux/amd64) kubernetes/59526cd".into(),
                source_ip: "127.0.0.1".into(),
                kubectl_command: format!("kubectl {verb}"),
                kubectl_session: String::new(),
                command_id: Some(command.id),
                request_id: Some(id),
                access_method: AccessMethod::Cli,
                decision: "allow".into(),
                ..Default::default()
            });
        }
        sink.record_command(command);
        written += calls;
    }
    drop(sink);
    let stats = writer.close();
    let failed = stats.failed.load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        return Err(StoreError::Output(format!(
            "{failed} seeded records could not be written"
        )));
    }
    Ok(written)
}
