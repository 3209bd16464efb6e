//! Roles, bindings and the rule matching behind every access decision.
//!
//! A role is a list of rules (API groups, resources with optional subresources, verbs, and
//! optionally resource names or non-resource URLs), as in Kubernetes RBAC. A binding gives a
//! role to a user or a group on one cluster or all, and on one namespace or all. Nothing is
//! allowed unless some binding of the user (or of one of their groups) has a matching rule: deny
//! by default, and the union of all bindings.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::request_info::RequestInfo;

/// One rule: a request matches when every non-empty part matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `verbs`: get, list, watch, create, update, patch, delete, deletecollection, impersonate,
    /// or `*`.
    pub verbs: Vec<String>,
    /// API groups (`""` is the core group, `*` any).
    #[serde(default)]
    pub api_groups: Vec<String>,
    /// Resources: `pods`, `pods/exec` (a subresource), `*/scale`, `pods/*`, or `*`.
    #[serde(default)]
    pub resources: Vec<String>,
    /// When set, only these object names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Paths outside the resource API (`/version`, `/apis/*`); a trailing `*` is a prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

fn matches_any(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

impl Rule {
    fn resource_rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Rule {
        let owned = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        Rule {
            verbs: owned(verbs),
            api_groups: owned(groups),
            resources: owned(resources),
            resource_names: Vec::new(),
            non_resource_urls: Vec::new(),
        }
    }

    /// Whether this rule allows the request `info`.
    pub fn allows(&self, info: &RequestInfo) -> bool {
        if !matches_any(&self.verbs, &info.verb) {
            return false;
        }
        if !info.is_resource_request {
            return self.non_resource_urls.iter().any(|url| {
                url == "*"
                    || url == &info.path
                    || url
                        .strip_suffix('*')
                        .is_some_and(|prefix| info.path.starts_with(prefix))
            });
        }
        if !matches_any(&self.api_groups, &info.api_group) {
            return false;
        }
        let resource_ok = self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            match r.split_once('/') {
                None => info.subresource.is_empty() && *r == info.resource,
                Some((res, sub)) => {
                    !info.subresource.is_empty()
                        && (res == "*" || res == info.resource)
                        && (sub == "*" || sub == info.subresource)
                }
            }
        });
        if !resource_ok {
            return false;
        }
        // Like Kubernetes: a rule limited to names never matches a request without a name
        // (list, create), so `resource_names` cannot be widened by leaving the name out.
        self.resource_names.is_empty() || self.resource_names.contains(&info.name)
    }

    /// Checks a rule from the config; the message names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.verbs.is_empty() {
            return Err("a rule needs `verbs`".into());
        }
        match (self.resources.is_empty(), self.non_resource_urls.is_empty()) {
            (true, true) => Err("a rule needs `resources` or `non_resource_urls`".into()),
            (false, false) => {
                Err("a rule has either `resources` or `non_resource_urls`, not both".into())
            }
            (false, true) if self.api_groups.is_empty() => {
                Err("a resource rule needs `api_groups` (\"\" is the core group)".into())
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |xs: &[String]| {
            xs.iter()
                .map(|x| {
                    if x.is_empty() {
                        "\"\"".to_string()
                    } else {
                        x.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        if !self.non_resource_urls.is_empty() {
            return write!(
                f,
                "verbs=[{}] nonResourceURLs=[{}]",
                list(&self.verbs),
                list(&self.non_resource_urls)
            );
        }
        write!(
            f,
            "verbs=[{}] apiGroups=[{}] resources=[{}]",
            list(&self.verbs),
            list(&self.api_groups),
            list(&self.resources)
        )?;
        if !self.resource_names.is_empty() {
            write!(f, " resourceNames=[{}]", list(&self.resource_names))?;
        }
        Ok(())
    }
}

/// A named list of rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    pub rules: Vec<Rule>,
    /// Built into ztk (as opposed to defined in the gateway config).
    #[serde(default)]
    pub builtin: bool,
}

impl Role {
    pub fn allows(&self, info: &RequestInfo) -> bool {
        self.rules.iter().any(|r| r.allows(info))
    }
}

/// Who a binding is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Subject {
    User(String),
    Group(String),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::User(u) => write!(f, "user {u}"),
            Subject::Group(g) => write!(f, "group {g}"),
        }
    }
}

/// A role given to a subject, on one cluster (or all: `None`) and one namespace (or all).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Binding {
    pub role: String,
    pub subject: Subject,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
}

impl Binding {
    /// Whether this binding's scope covers `cluster` and the request's namespace. A binding
    /// limited to a namespace covers only requests in that namespace, except non-resource
    /// paths (discovery), which are not namespaced and which kubectl needs for anything.
    fn covers(&self, cluster: &str, info: &RequestInfo) -> bool {
        if self.cluster.as_deref().is_some_and(|c| c != cluster) {
            return false;
        }
        match &self.namespace {
            None => true,
            Some(ns) => !info.is_resource_request || *ns == info.namespace || is_self_review(info),
        }
    }

    pub fn applies_to(&self, user: &str, groups: &[String]) -> bool {
        match &self.subject {
            Subject::User(u) => u == user,
            Subject::Group(g) => groups.iter().any(|x| x == g),
        }
    }

    pub fn scope(&self) -> String {
        format!(
            "cluster {}, namespace {}",
            self.cluster.as_deref().unwrap_or("*"),
            self.namespace.as_deref().unwrap_or("*")
        )
    }
}

/// Questions about oneself (`kubectl auth whoami`, `auth can-i`): cluster-scoped creates that
/// every role allows, so a binding limited to a namespace covers them too (as Kubernetes'
/// `system:basic-user` does for everyone).
fn is_self_review(info: &RequestInfo) -> bool {
    info.verb == "create"
        && info.namespace.is_empty()
        && info.name.is_empty()
        && info.subresource.is_empty()
        && matches!(
            (info.api_group.as_str(), info.resource.as_str()),
            ("authentication.k8s.io", "selfsubjectreviews")
                | (
                    "authorization.k8s.io",
                    "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
                )
        )
}

/// The roles known to the gateway and the current bindings: what every decision reads.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    roles: BTreeMap<String, Arc<Role>>,
    bindings: Vec<Binding>,
}

/// Who is asking: a user and their groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.groups.is_empty() {
            write!(f, "user {:?}", self.user)
        } else {
            write!(
                f,
                "user {:?} (groups {})",
                self.user,
                self.groups.join(", ")
            )
        }
    }
}

impl Policy {
    /// The built-in roles plus the config's custom ones, with these bindings.
    pub fn new(custom: &[Role], bindings: Vec<Binding>) -> Policy {
        let mut roles: BTreeMap<String, Arc<Role>> = builtin_roles()
            .into_iter()
            .map(|r| (r.name.clone(), Arc::new(r)))
            .collect();
        for role in custom {
            roles.insert(role.name.clone(), Arc::new(role.clone()));
        }
        Policy { roles, bindings }
    }

    pub fn roles(&self) -> impl Iterator<Item = &Role> {
        self.roles.values().map(|r| r.as_ref())
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name).map(|r| r.as_ref())
    }

    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    pub fn with_bindings(&self, bindings: Vec<Binding>) -> Policy {
        Policy {
            roles: self.roles.clone(),
            bindings,
        }
    }

    /// The bindings that apply to `who` (on any cluster).
    pub fn bindings_of<'a>(&'a self, who: &'a Identity) -> impl Iterator<Item = &'a Binding> {
        self.bindings
            .iter()
            .filter(move |b| b.applies_to(&who.user, &who.groups))
    }

    /// The binding that grants `who` the request on `cluster`, if any.
    pub fn grant(&self, who: &Identity, cluster: &str, info: &RequestInfo) -> Option<&Binding> {
        self.bindings
            .iter()
            .find(|b| b.applies_to(&who.user, &who.groups) && self.binding_allows(b, cluster, info))
    }

    /// Whether one binding grants the request (for `who-can`).
    pub fn binding_allows(&self, binding: &Binding, cluster: &str, info: &RequestInfo) -> bool {
        binding.covers(cluster, info)
            && self
                .roles
                .get(&binding.role)
                .is_some_and(|role| role.allows(info))
    }

    /// The reason a request is denied: who, what, where, and the rule that would allow it.
    pub fn denial(&self, who: &Identity, cluster: &str, info: &RequestInfo) -> String {
        let bound = self.bindings_of(who).count();
        let what = describe(info);
        let missing = missing_rule(info);
        let scope = if info.is_resource_request && !info.namespace.is_empty() {
            format!("namespace {:?} of cluster {cluster:?}", info.namespace)
        } else if info.is_resource_request {
            format!(
                "cluster {cluster:?} (cluster-wide: all namespaces or a cluster-scoped resource)"
            )
        } else {
            format!("cluster {cluster:?}")
        };
        let hint = if bound == 0 {
            "they have no role bindings at all (deny by default)".to_string()
        } else {
            format!("none of their {bound} binding(s) has it there")
        };
        format!(
            "{who} may not {what} in {scope}: missing rule {{{missing}}}; {hint}. \
             An administrator can grant it with `ztk gateway role bind ROLE --user {} ...`",
            who.user
        )
    }
}

/// "list secrets", "create pods/exec \"web\"", "get /version".
pub fn describe(info: &RequestInfo) -> String {
    if !info.is_resource_request {
        return format!("{} {}", info.verb, info.path);
    }
    let mut res = info.resource.clone();
    if !info.api_group.is_empty() {
        res = format!("{res}.{}", info.api_group);
    }
    if !info.subresource.is_empty() {
        res = format!("{res}/{}", info.subresource);
    }
    if info.name.is_empty() {
        format!("{} {res}", info.verb)
    } else {
        format!("{} {res} {:?}", info.verb, info.name)
    }
}

/// The narrowest rule that would allow `info`.
pub fn missing_rule(info: &RequestInfo) -> Rule {
    if !info.is_resource_request {
        return Rule {
            verbs: vec![info.verb.clone()],
            api_groups: Vec::new(),
            resources: Vec::new(),
            resource_names: Vec::new(),
            non_resource_urls: vec![info.path.clone()],
        };
    }
    let resource = if info.subresource.is_empty() {
        info.resource.clone()
    } else {
        format!("{}/{}", info.resource, info.subresource)
    };
    Rule {
        verbs: vec![info.verb.clone()],
        api_groups: vec![info.api_group.clone()],
        resources: vec![resource],
        resource_names: Vec::new(),
        non_resource_urls: Vec::new(),
    }
}

/// Read-only paths kubectl needs before anything else (discovery, version, OpenAPI), granted
/// by every built-in role, like Kubernetes' `system:discovery`.
const DISCOVERY: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/version",
    "/version/",
    "/openapi/*",
    "/healthz",
    "/livez",
    "/readyz",
];

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

/// The namespaced workload resources `view` reads and `edit` writes (Kubernetes'
/// aggregate-to-view/edit lists, without secrets).
fn workload_rules(verbs: &[&str]) -> Vec<Rule> {
    vec![
        Rule::resource_rule(
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
            ],
            verbs,
        ),
        Rule::resource_rule(
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets",
                "deployments",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
            verbs,
        ),
        Rule::resource_rule(&["autoscaling"], &["horizontalpodautoscalers"], verbs),
        Rule::resource_rule(&["batch"], &["cronjobs", "jobs"], verbs),
        Rule::resource_rule(&["policy"], &["poddisruptionbudgets"], verbs),
        Rule::resource_rule(
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
            verbs,
        ),
        Rule::resource_rule(&["discovery.k8s.io"], &["endpointslices"], verbs),
    ]
}

fn discovery_rule() -> Rule {
    Rule {
        verbs: vec!["get".into()],
        api_groups: Vec::new(),
        resources: Vec::new(),
        resource_names: Vec::new(),
        non_resource_urls: DISCOVERY.iter().map(|s| s.to_string()).collect(),
    }
}

fn view_rules() -> Vec<Rule> {
    let mut rules = vec![discovery_rule()];
    // Questions about oneself (`kubectl auth whoami`, `auth can-i`), like `system:basic-user`.
    rules.push(Rule::resource_rule(
        &["authentication.k8s.io"],
        &["selfsubjectreviews"],
        &["create"],
    ));
    rules.push(Rule::resource_rule(
        &["authorization.k8s.io"],
        &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
        &["create"],
    ));
    rules.extend(workload_rules(READ));
    rules.push(Rule::resource_rule(
        &[""],
        &[
            "events",
            "limitranges",
            "namespaces",
            "namespaces/status",
            "pods/log",
            "pods/status",
            "resourcequotas",
            "resourcequotas/status",
            "services/status",
            "persistentvolumeclaims/status",
            "replicationcontrollers/status",
        ],
        READ,
    ));
    rules.push(Rule::resource_rule(
        &["apps"],
        &[
            "daemonsets/status",
            "deployments/status",
            "replicasets/status",
            "statefulsets/status",
        ],
        READ,
    ));
    rules.push(Rule::resource_rule(&["events.k8s.io"], &["events"], READ));
    // `kubectl top`: metrics-server aggregates this rule into view, edit and admin
    // (`system:aggregated-metrics-reader`), and the sandbox serves metrics as it does.
    rules.push(Rule::resource_rule(
        &["metrics.k8s.io"],
        &["pods", "nodes"],
        &["get", "list", "watch"],
    ));
    rules
}

fn edit_rules() -> Vec<Rule> {
    let mut rules = view_rules();
    rules.extend(workload_rules(WRITE));
    let all: Vec<&str> = READ.iter().chain(WRITE).copied().collect();
    rules.push(Rule::resource_rule(&[""], &["secrets"], &all));
    // Interactive access: exec/attach/port-forward are `create` over SPDY and `get` over
    // WebSocket (kubectl 1.30+), so both verbs, as in Kubernetes' edit role.
    rules.push(Rule::resource_rule(
        &[""],
        &[
            "pods/exec",
            "pods/attach",
            "pods/portforward",
            "pods/proxy",
            "services/proxy",
        ],
        &["get", "create"],
    ));
    rules.push(Rule::resource_rule(
        &[""],
        &["pods/eviction", "serviceaccounts/token"],
        &["create"],
    ));
    rules.push(Rule::resource_rule(
        &["apps"],
        &["deployments/rollback"],
        &["create", "update", "patch"],
    ));
    rules
}

fn admin_rules() -> Vec<Rule> {
    let mut rules = edit_rules();
    let all: Vec<&str> = READ.iter().chain(WRITE).copied().collect();
    rules.push(Rule::resource_rule(
        &["rbac.authorization.k8s.io"],
        &["roles", "rolebindings"],
        &all,
    ));
    rules.push(Rule::resource_rule(
        &["authorization.k8s.io"],
        &["localsubjectaccessreviews"],
        &["create"],
    ));
    rules
}

/// `view`, `edit`, `admin` and `cluster-admin`, comparable to Kubernetes' roles of the same
/// names. Scope comes from the binding, so `admin` bound to a namespace is a namespace admin.
pub fn builtin_roles() -> Vec<Role> {
    let role = |name: &str, rules| Role {
        name: name.into(),
        rules,
        builtin: true,
    };
    vec![
        role("view", view_rules()),
        role("edit", edit_rules()),
        role("admin", admin_rules()),
        role(
            "cluster-admin",
            vec![
                Rule::resource_rule(&["*"], &["*"], &["*"]),
                Rule {
                    verbs: vec!["*".into()],
                    api_groups: Vec::new(),
                    resources: Vec::new(),
                    resource_names: Vec::new(),
                    non_resource_urls: vec!["*".into()],
                },
            ],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, query: Option<&str>) -> RequestInfo {
        RequestInfo::parse(method, path, query)
    }

    fn who(user: &str, groups: &[&str]) -> Identity {
        Identity {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn bind(role: &str, subject: Subject, cluster: Option<&str>, ns: Option<&str>) -> Binding {
        Binding {
            role: role.into(),
            subject,
            cluster: cluster.map(Into::into),
            namespace: ns.map(Into::into),
        }
    }

    #[test]
    fn deny_by_default_and_union_of_bindings() {
        let alice = who("alice", &["dev"]);
        let pods = req("GET", "/api/v1/namespaces/dev/pods", None);
        assert!(Policy::new(&[], vec![]).grant(&alice, "c", &pods).is_none());

        let policy = Policy::new(
            &[],
            vec![
                bind("view", Subject::Group("dev".into()), None, Some("dev")),
                bind(
                    "edit",
                    Subject::User("alice".into()),
                    Some("c"),
                    Some("web"),
                ),
            ],
        );
        assert!(policy.grant(&alice, "c", &pods).is_some());
        assert!(policy.grant(&alice, "other", &pods).is_some());
        let create_web = req("POST", "/api/v1/namespaces/web/pods", None);
        assert!(policy.grant(&alice, "c", &create_web).is_some());
        assert!(policy.grant(&alice, "other", &create_web).is_none());
        let create_dev = req("POST", "/api/v1/namespaces/dev/pods", None);
        assert!(policy.grant(&alice, "c", &create_dev).is_none());
        // All namespaces needs a cluster-wide binding.
        assert!(policy
            .grant(&alice, "c", &req("GET", "/api/v1/pods", None))
            .is_none());
        // Discovery comes with any binding on the cluster.
        assert!(policy
            .grant(&alice, "c", &req("GET", "/api", None))
            .is_some());
        // So do questions about oneself (`kubectl auth whoami`, `auth can-i`), though they are
        // cluster-scoped creates.
        for review in [
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        ] {
            assert!(policy
                .grant(&alice, "c", &req("POST", review, None))
                .is_some());
            assert!(policy
                .grant(&alice, "c", &req("DELETE", review, None))
                .is_none());
        }
        let bob = who("bob", &[]);
        assert!(policy
            .grant(
                &bob,
                "c",
                &req(
                    "POST",
                    "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                    None
                )
            )
            .is_none());
        assert!(policy.grant(&bob, "c", &pods).is_none());
        let reason = policy.denial(&bob, "c", &pods);
        assert!(
            reason.contains("verbs=[list] apiGroups=[\"\"] resources=[pods]"),
            "{reason}"
        );
        assert!(reason.contains("no role bindings"), "{reason}");
    }

    #[test]
    fn builtin_roles_differ_where_kubernetes_does() {
        let roles: BTreeMap<String, Role> = builtin_roles()
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();
        let secrets = req("GET", "/api/v1/namespaces/dev/secrets/x", None);
        let exec = req(
            "POST",
            "/api/v1/namespaces/dev/pods/p/exec",
            Some("command=sh"),
        );
        let exec_ws = req(
            "GET",
            "/api/v1/namespaces/dev/pods/p/exec",
            Some("command=sh"),
        );
        let logs = req("GET", "/api/v1/namespaces/dev/pods/p/log", None);
        let rolebinding = req(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/dev/rolebindings",
            None,
        );
        let nodes = req("GET", "/api/v1/nodes", None);
        let pod_metrics = req(
            "GET",
            "/apis/metrics.k8s.io/v1beta1/namespaces/dev/pods",
            None,
        );
        // `kubectl debug`'s ephemeral container: as in Kubernetes, no built-in role below
        // cluster-admin has it (it runs anything in someone else's pod).
        let debug = req(
            "PATCH",
            "/api/v1/namespaces/dev/pods/p/ephemeralcontainers",
            None,
        );
        assert!(roles["view"].allows(&pod_metrics));
        assert!(!roles["admin"].allows(&debug));
        assert!(roles["cluster-admin"].allows(&debug));
        assert!(!roles["view"].allows(&secrets));
        assert!(!roles["view"].allows(&exec));
        assert!(!roles["view"].allows(&exec_ws));
        assert!(roles["view"].allows(&logs));
        assert!(roles["edit"].allows(&secrets));
        assert!(roles["edit"].allows(&exec) && roles["edit"].allows(&exec_ws));
        assert!(!roles["edit"].allows(&rolebinding));
        assert!(roles["admin"].allows(&rolebinding));
        assert!(!roles["admin"].allows(&nodes));
        assert!(roles["cluster-admin"].allows(&nodes));
    }

    #[test]
    fn rule_matching() {
        let rule = Rule {
            verbs: vec!["impersonate".into()],
            api_groups: vec!["".into()],
            resources: vec!["users".into()],
            resource_names: vec!["bob".into()],
            non_resource_urls: vec![],
        };
        let mut info = RequestInfo {
            is_resource_request: true,
            verb: "impersonate".into(),
            resource: "users".into(),
            name: "bob".into(),
            ..Default::default()
        };
        assert!(rule.allows(&info));
        info.name = "carol".into();
        assert!(!rule.allows(&info));
        info.name.clear();
        assert!(!rule.allows(&info));

        let scale = Rule::resource_rule(&["*"], &["*/scale"], &["patch"]);
        assert!(scale.allows(&req(
            "PATCH",
            "/apis/apps/v1/namespaces/d/deployments/x/scale",
            None
        )));
        assert!(!scale.allows(&req(
            "PATCH",
            "/apis/apps/v1/namespaces/d/deployments/x",
            None
        )));
        assert!(Rule::resource_rule(&[""], &["pods/*"], &["*"]).allows(&req(
            "GET",
            "/api/v1/namespaces/d/pods/p/log",
            None
        )));
        assert!(discovery_rule().allows(&req("GET", "/apis/apps/v1", None)));
        assert!(!discovery_rule().allows(&req("GET", "/metrics", None)));
        assert!(Rule::resource_rule(&[""], &["pods"], &["get"])
            .validate()
            .is_ok());
        assert!(Rule::resource_rule(&[], &["pods"], &["get"])
            .validate()
            .is_err());
    }
}
