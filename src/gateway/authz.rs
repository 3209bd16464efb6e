//! The one place that decides whether a request may go to a cluster.
//!
//! Every Kubernetes request (upgrades included) passes here after authentication and before it
//! is forwarded, and `ztk access can-i`/`who-can`/`list` ask the same functions, so what they
//! answer is what the gateway enforces. Denied requests are audited with the reason.

use http::HeaderMap;

use super::rbac::{Identity, Policy};
use crate::request_info::RequestInfo;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; acting as `identity` (the user, or whom they impersonate). `note` says what
    /// the audit record should carry beyond "allow" (an impersonation).
    Allow {
        identity: Identity,
        note: Option<String>,
    },
    Deny(String),
}

/// What a client asked to act as, from its `Impersonate-*` headers (kubectl `--as`,
/// `--as-group`, `--as-uid`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Impersonation {
    pub user: Option<String>,
    pub groups: Vec<String>,
    pub uid: Option<String>,
    /// `Impersonate-Extra-KEY: VALUE` pairs.
    pub extras: Vec<(String, String)>,
    /// A header ztk does not know (`Impersonate-Foo`): never forwarded, always refused.
    pub unknown: Option<String>,
}

impl Impersonation {
    /// The client's impersonation request, if it sent any `Impersonate-*` header.
    pub fn from_headers(headers: &HeaderMap) -> Option<Impersonation> {
        let mut imp = Impersonation::default();
        let mut any = false;
        for (name, value) in headers {
            let name = name.as_str();
            let Some(rest) = name.strip_prefix("impersonate-") else {
                continue;
            };
            any = true;
            let value = value.to_str().unwrap_or("").to_string();
            match rest {
                "user" => imp.user = Some(value),
                "group" => imp.groups.push(value),
                "uid" => imp.uid = Some(value),
                _ => match rest.strip_prefix("extra-") {
                    Some(key) => imp.extras.push((key.to_string(), value)),
                    None => imp.unknown = Some(name.to_string()),
                },
            }
        }
        any.then_some(imp)
    }

    /// The `impersonate` checks Kubernetes makes: one per user, group, uid and extra.
    fn checks(&self) -> Vec<(String, RequestInfo)> {
        let check = |group: &str, resource: &str, sub: &str, name: &str| RequestInfo {
            is_resource_request: true,
            verb: "impersonate".into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            ..Default::default()
        };
        let mut out = Vec::new();
        if let Some(user) = &self.user {
            out.push((format!("user {user:?}"), check("", "users", "", user)));
        }
        for group in &self.groups {
            out.push((format!("group {group:?}"), check("", "groups", "", group)));
        }
        if let Some(uid) = &self.uid {
            out.push((
                format!("uid {uid:?}"),
                check("authentication.k8s.io", "uids", "", uid),
            ));
        }
        for (key, value) in &self.extras {
            out.push((
                format!("extra {key}={value:?}"),
                check("authentication.k8s.io", "userextras", key, value),
            ));
        }
        out
    }
}

/// Decides `who`'s request `info` on `cluster`, with the client's impersonation request if any.
pub fn authorize(
    policy: &Policy,
    who: &Identity,
    cluster: &str,
    info: &RequestInfo,
    impersonation: Option<&Impersonation>,
) -> Decision {
    let mut acting = who.clone();
    let mut note = None;
    if let Some(imp) = impersonation {
        if let Some(header) = &imp.unknown {
            return Decision::Deny(format!(
                "{who} sent the unknown impersonation header {header:?}; ztk accepts Impersonate-User, -Group, -Uid and -Extra-*"
            ));
        }
        let Some(target) = &imp.user else {
            return Decision::Deny(format!(
                "{who} asked to impersonate groups, a uid or extras without a user (Impersonate-User, kubectl --as); Kubernetes requires the user"
            ));
        };
        for (what, check) in imp.checks() {
            if policy.grant(who, cluster, &check).is_none() {
                return Decision::Deny(format!(
                    "{who} may not impersonate {what} on cluster {cluster:?} (Impersonate-* headers, kubectl --as): missing rule {{{}}}",
                    super::rbac::missing_rule(&check)
                ));
            }
        }
        // As in Kubernetes, the impersonated identity is exactly what was asked for.
        acting = Identity {
            user: target.clone(),
            groups: imp.groups.clone(),
        };
        note = Some(format!("{who} impersonating {acting}"));
    }
    if policy.grant(&acting, cluster, info).is_some() {
        Decision::Allow {
            identity: acting,
            note,
        }
    } else {
        let mut reason = policy.denial(&acting, cluster, info);
        if let Some(note) = note {
            reason = format!("{note}: {reason}");
        }
        Decision::Deny(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::super::rbac::{Binding, Role, Rule, Subject};
    use super::*;

    #[test]
    fn impersonation_needs_the_impersonate_verb_on_each_target() {
        let impersonator = Role {
            name: "impersonate-bob".into(),
            rules: vec![Rule {
                verbs: vec!["impersonate".into()],
                api_groups: vec!["".into()],
                resources: vec!["users".into()],
                resource_names: vec!["bob".into()],
                non_resource_urls: vec![],
            }],
            builtin: false,
        };
        let policy = Policy::new(
            &[impersonator],
            vec![
                Binding {
                    role: "impersonate-bob".into(),
                    subject: Subject::User("alice".into()),
                    cluster: None,
                    namespace: None,
                },
                Binding {
                    role: "view".into(),
                    subject: Subject::User("bob".into()),
                    cluster: None,
                    namespace: None,
                },
            ],
        );
        let alice = Identity {
            user: "alice".into(),
            groups: vec![],
        };
        let pods = RequestInfo::parse("GET", "/api/v1/namespaces/dev/pods", None);
        let mut headers = HeaderMap::new();
        assert!(Impersonation::from_headers(&headers).is_none());
        headers.insert("impersonate-user", "bob".parse().unwrap());
        let imp = Impersonation::from_headers(&headers).unwrap();
        match authorize(&policy, &alice, "c", &pods, Some(&imp)) {
            Decision::Allow { identity, note } => {
                assert_eq!(identity.user, "bob");
                assert!(note.unwrap().contains("impersonating"));
            }
            other => panic!("{other:?}"),
        }
        // Alice herself has no binding for pods.
        assert!(matches!(
            authorize(&policy, &alice, "c", &pods, None),
            Decision::Deny(_)
        ));
        headers.append("impersonate-group", "system:masters".parse().unwrap());
        let imp = Impersonation::from_headers(&headers).unwrap();
        let Decision::Deny(reason) = authorize(&policy, &alice, "c", &pods, Some(&imp)) else {
            panic!("group impersonation allowed");
        };
        assert!(reason.contains("group \"system:masters\""), "{reason}");
        let mut carol = HeaderMap::new();
        carol.insert("impersonate-user", "carol".parse().unwrap());
        let imp = Impersonation::from_headers(&carol).unwrap();
        assert!(matches!(
            authorize(&policy, &alice, "c", &pods, Some(&imp)),
            Decision::Deny(_)
        ));
    }
}
