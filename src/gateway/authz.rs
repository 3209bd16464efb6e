//! The one place that decides whether a request may go to a cluster.
//!
//! Every Kubernetes request (upgrades included) passes here after authentication and before it
//! is forwarded, and `ztk access can-i`/`who-can`/`list` ask the same functions, so what they
//! answer is what the gateway enforces. Denied requests are audited with the reason.

use http::{HeaderMap, HeaderName, HeaderValue};

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
    /// The client's impersonation request, if it sent any `Impersonate-*` header. Refused (with
    /// the message for a 400) when it could be read two ways: `Impersonate-User` or
    /// `Impersonate-Uid` given twice (the gateway would authorize one value and the cluster act
    /// on another), a value that is not visible ASCII text, or an extra key with an escape.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Impersonation>, String> {
        let mut imp = Impersonation::default();
        let mut any = false;
        for (name, value) in headers {
            let name = name.as_str();
            let Some(rest) = name.strip_prefix("impersonate-") else {
                continue;
            };
            any = true;
            let value = value
                .to_str()
                .ok()
                .filter(|v| v.chars().all(|c| c == ' ' || c.is_ascii_graphic()))
                .ok_or_else(|| format!("the {name} header's value is not plain text"))?
                .to_string();
            let once = |slot: &mut Option<String>| {
                if slot.is_some() {
                    return Err(format!(
                        "the {name} header is given more than once; give one (kubectl --as)"
                    ));
                }
                *slot = Some(value.clone());
                Ok(())
            };
            match rest {
                "user" => once(&mut imp.user)?,
                "uid" => once(&mut imp.uid)?,
                "group" => imp.groups.push(value),
                _ => match rest.strip_prefix("extra-") {
                    Some(key) if key.is_empty() || key.contains('%') => {
                        return Err(format!(
                            "the impersonation header {name:?} has an empty or escaped extra key"
                        ))
                    }
                    Some(key) => imp.extras.push((key.to_string(), value)),
                    None => imp.unknown = Some(name.to_string()),
                },
            }
        }
        Ok(any.then_some(imp))
    }

    /// Whether every value can go out as a header (a user or group name from the gateway's
    /// own users may not).
    pub fn check_sendable(&self) -> Result<(), String> {
        let names = self.user.iter().chain(&self.groups).chain(&self.uid);
        for value in names.chain(self.extras.iter().map(|(_, v)| v)) {
            if HeaderValue::from_str(value).is_err() {
                return Err(format!(
                    "{value:?} cannot be sent as an impersonation header"
                ));
            }
        }
        Ok(())
    }

    /// Writes this impersonation as headers, rebuilt from the parsed values (after
    /// `check_sendable`; a value that cannot be sent is left out).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let mut put = |name: HeaderName, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(name, value);
            }
        };
        if let Some(user) = &self.user {
            put(HeaderName::from_static("impersonate-user"), user);
        }
        for group in &self.groups {
            put(HeaderName::from_static("impersonate-group"), group);
        }
        if let Some(uid) = &self.uid {
            put(HeaderName::from_static("impersonate-uid"), uid);
        }
        for (key, value) in &self.extras {
            if let Ok(name) = HeaderName::from_bytes(format!("impersonate-extra-{key}").as_bytes())
            {
                put(name, value);
            }
        }
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
        assert!(Impersonation::from_headers(&headers).unwrap().is_none());
        headers.insert("impersonate-user", "bob".parse().unwrap());
        let imp = Impersonation::from_headers(&headers).unwrap().unwrap();
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
        let imp = Impersonation::from_headers(&headers).unwrap().unwrap();
        let Decision::Deny(reason) = authorize(&policy, &alice, "c", &pods, Some(&imp)) else {
            panic!("group impersonation allowed");
        };
        assert!(reason.contains("group \"system:masters\""), "{reason}");
        let mut carol = HeaderMap::new();
        carol.insert("impersonate-user", "carol".parse().unwrap());
        let imp = Impersonation::from_headers(&carol).unwrap().unwrap();
        assert!(matches!(
            authorize(&policy, &alice, "c", &pods, Some(&imp)),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn ambiguous_impersonation_is_refused_and_forwarded_as_parsed() {
        let mut headers = HeaderMap::new();
        headers.append("impersonate-user", "alice".parse().unwrap());
        headers.append("impersonate-user", "bob".parse().unwrap());
        let err = Impersonation::from_headers(&headers).unwrap_err();
        assert!(err.contains("more than once"), "{err}");
        let mut headers = HeaderMap::new();
        headers.append("impersonate-user", "bob".parse().unwrap());
        headers.append("impersonate-uid", "1".parse().unwrap());
        headers.append("impersonate-uid", "2".parse().unwrap());
        assert!(Impersonation::from_headers(&headers).is_err());
        let mut headers = HeaderMap::new();
        headers.append(
            "impersonate-user",
            HeaderValue::from_bytes(b"b\xffob").unwrap(),
        );
        assert!(Impersonation::from_headers(&headers).is_err());
        let mut headers = HeaderMap::new();
        headers.append("impersonate-user", "bob".parse().unwrap());
        headers.append("impersonate-extra-a%2fb", "x".parse().unwrap());
        assert!(Impersonation::from_headers(&headers).is_err());
        // Groups and extras repeat; what is written is what was parsed.
        let mut headers = HeaderMap::new();
        headers.append("impersonate-user", "bob".parse().unwrap());
        headers.append("impersonate-group", "g1".parse().unwrap());
        headers.append("impersonate-group", "g2".parse().unwrap());
        headers.append("impersonate-extra-scopes", "s1".parse().unwrap());
        headers.append("impersonate-extra-scopes", "s2".parse().unwrap());
        let imp = Impersonation::from_headers(&headers).unwrap().unwrap();
        let mut out = HeaderMap::new();
        imp.write_headers(&mut out);
        assert_eq!(out, headers);
    }
}
