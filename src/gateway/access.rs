//! "Who can do what": the answers behind `ztk access can-i`, `who-can` and `list`, and the roles
//! `ztk status` shows. Each one goes through `authz::authorize` or the same `Policy` matching,
//! so the answers agree with enforcement by construction.

use std::sync::OnceLock;

use super::authz::{self, Decision};
use super::rbac::{describe, Binding, Identity, Policy};
use crate::protocol::{AccessQuery, RoleGrant};
use crate::request_info::RequestInfo;
use crate::sandbox::discovery::Discovery;

pub fn grant_of(b: &Binding) -> RoleGrant {
    RoleGrant {
        role: b.role.clone(),
        subject: b.subject.to_string(),
        cluster: b.cluster.clone(),
        namespace: b.namespace.clone(),
    }
}

/// The standard Kubernetes resource names (the sandbox's discovery documents, from a real
/// 1.32 apiserver), to resolve `deploy` to `deployments` in group `apps` as kubectl would.
fn discovery() -> &'static Discovery {
    static DISCOVERY: OnceLock<Discovery> = OnceLock::new();
    DISCOVERY.get_or_init(Discovery::load)
}

/// Turns `VERB RESOURCE[.GROUP][/SUBRESOURCE] [NAME]` into the request the gateway would see.
pub fn request_of(q: &AccessQuery) -> Result<RequestInfo, String> {
    let verb = q.verb.trim().to_ascii_lowercase();
    if verb.is_empty() {
        return Err("the verb is empty: use get, list, watch, create, update, patch, delete, deletecollection or impersonate".into());
    }
    if q.resource.starts_with('/') {
        return Ok(RequestInfo {
            is_resource_request: false,
            path: q.resource.clone(),
            verb,
            ..Default::default()
        });
    }
    let (typ, sub) = match q.resource.split_once('/') {
        Some((t, s)) => (t, s),
        None => (q.resource.as_str(), ""),
    };
    if typ.is_empty() || q.resource.matches('/').count() > 1 {
        return Err(format!(
            "{:?} is not a resource: use RESOURCE[.GROUP][/SUBRESOURCE], e.g. pods, pods/exec, deployments.apps",
            q.resource
        ));
    }
    let typ = typ.to_ascii_lowercase();
    let (mut resource, mut group) = match typ.split_once('.') {
        Some((r, g)) => (r.to_string(), g.to_string()),
        None => (typ.clone(), String::new()),
    };
    // Resolve short and singular names the way kubectl does (core group first).
    let found = discovery().resources.iter().find(|r| {
        !(typ.contains('.') && r.group != group)
            && (r.name == resource || r.singular == resource || r.short_names.contains(&resource))
    });
    if let Some(r) = found {
        resource = r.name.clone();
        group = r.group.clone();
    }
    Ok(RequestInfo {
        is_resource_request: true,
        path: String::new(),
        verb,
        api_group: group,
        namespace: q.namespace.clone().unwrap_or_default(),
        resource,
        subresource: sub.to_string(),
        name: q.name.clone().unwrap_or_default(),
        ..Default::default()
    })
}

/// Whether `asker` may ask about `target` (another user, or everyone when None) on `cluster`:
/// the same right Kubernetes asks for `can-i --as`, the `impersonate` verb on `users`.
pub fn may_inspect(policy: &Policy, asker: &Identity, cluster: &str, target: Option<&str>) -> bool {
    let check = RequestInfo {
        is_resource_request: true,
        verb: "impersonate".into(),
        resource: "users".into(),
        name: target.unwrap_or("").into(),
        ..Default::default()
    };
    matches!(
        authz::authorize(policy, asker, cluster, &check, None),
        Decision::Allow { .. }
    )
}

/// can-i: the decision the gateway would make for `who`.
pub fn can_i(policy: &Policy, who: &Identity, cluster: &str, info: &RequestInfo) -> (bool, String) {
    match authz::authorize(policy, who, cluster, info, None) {
        Decision::Allow { .. } => {
            let via = policy
                .grant(who, cluster, info)
                .map(|b| format!("role {} bound to {} ({})", b.role, b.subject, b.scope()))
                .unwrap_or_default();
            (true, via)
        }
        Decision::Deny(reason) => (false, reason),
    }
}

/// who-can: the bindings granting the request, and the known users they reach.
pub fn who_can(
    policy: &Policy,
    users: &[(String, Vec<String>)],
    cluster: &str,
    info: &RequestInfo,
) -> (Vec<RoleGrant>, Vec<String>) {
    let bindings: Vec<RoleGrant> = policy
        .bindings()
        .iter()
        .filter(|b| policy.binding_allows(b, cluster, info))
        .map(grant_of)
        .collect();
    // The same function as enforcement decides for each known user.
    let granted = users
        .iter()
        .filter(|(user, groups)| {
            let who = Identity {
                user: user.clone(),
                groups: groups.clone(),
            };
            matches!(
                authz::authorize(policy, &who, cluster, info, None),
                Decision::Allow { .. }
            )
        })
        .map(|(user, _)| user.clone())
        .collect();
    (bindings, granted)
}

pub fn request_label(info: &RequestInfo) -> String {
    let mut s = describe(info);
    if info.is_resource_request && !info.namespace.is_empty() {
        s = format!("{s} in namespace {}", info.namespace);
    }
    s
}
