//! "Who can do what" (`/access`): the viewer's own rules; for administrators the bindings and
//! roles; and a can-i / who-can form answered by the same functions as `ztk access`
//! (`gateway::access`, which call `authz::authorize`, the one decision of every request).
//! Questions are GET forms: they change nothing, and a link reproduces the answer.

use maud::{html, Markup};

use http::{Response, StatusCode};

use super::auth::Viewer;
use super::layout::{self, printable, Nav};
use crate::body::Body;
use crate::gateway::access;
use crate::gateway::rbac::Identity;
use crate::gateway::Gateway;
use crate::protocol::AccessQuery;

/// The answer to the form's question, or why there is none.
enum Answer {
    CanI {
        allowed: bool,
        user: String,
        request: String,
        reason: String,
    },
    WhoCan {
        request: String,
        bindings: Vec<crate::protocol::RoleGrant>,
        users: Vec<String>,
    },
    Refused(StatusCode, String),
}

pub fn page(gateway: &Gateway, viewer: &Viewer, raw: &str) -> Response<Body> {
    let fields = super::pairs(raw);
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let me = Identity {
        user: viewer.session.user.clone(),
        groups: viewer.session.groups.clone(),
    };
    let policy = gateway.policy();
    let ask = get("ask");
    let answer = match ask.as_str() {
        "" => None,
        "can-i" | "who-can" => Some(answer(gateway, &me, &ask, &get)),
        other => Some(Answer::Refused(
            StatusCode::BAD_REQUEST,
            format!("unknown question {other:?}: use ask=can-i or ask=who-can"),
        )),
    };
    let status = match &answer {
        Some(Answer::Refused(status, _)) => *status,
        _ => StatusCode::OK,
    };
    let clusters: Vec<&String> = gateway.clusters.keys().collect();
    let mine: Vec<_> = policy.bindings_of(&me).collect();
    let content = html! {
        nav.crumbs aria-label="Breadcrumb" { ol { li { "System" } li aria-current="page" { "Who can do what" } } }
        h1 { "Who can do what" }
        section aria-labelledby="ask-title" {
            h2 #ask-title { "Ask" }
            form.filters method="get" action="/access" {
                div.fields {
                    div.field {
                        label for="a-ask" { "Question" }
                        select #a-ask name="ask" {
                            option value="can-i" selected[ask != "who-can"] { "Can … (can-i)" }
                            option value="who-can" selected[ask == "who-can"] { "Who can … (who-can)" }
                        }
                    }
                    div.field {
                        label for="a-cluster" { "Cluster" }
                        select #a-cluster name="cluster" {
                            @for c in &clusters {
                                option value=(c) selected[get("cluster") == **c] { (c) }
                            }
                        }
                    }
                    div.field {
                        label for="a-verb" { "Verb" }
                        input #a-verb name="verb" type="text" value=(get("verb")) placeholder="delete" list="a-verbs";
                        datalist #a-verbs { @for v in ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "impersonate"] { option value=(v) {} } }
                    }
                    div.field {
                        label for="a-resource" { "Resource" }
                        input #a-resource name="resource" type="text" value=(get("resource")) placeholder="pods, pods/exec, deployments.apps, /version";
                    }
                    div.field {
                        label for="a-namespace" { "Namespace" }
                        input #a-namespace name="namespace" type="text" value=(get("namespace")) placeholder="all";
                    }
                    div.field {
                        label for="a-name" { "Name" }
                        input #a-name name="name" type="text" value=(get("name")) placeholder="any";
                    }
                    div.field {
                        label for="a-user" { "As user (can-i)" }
                        input #a-user name="user" type="text" value=(get("user")) placeholder=(viewer.session.user);
                    }
                }
                div.actions { button.primary type="submit" { "Ask" } }
            }
            @if let Some(answer) = &answer { (render_answer(answer)) }
        }
        section aria-labelledby="mine-title" {
            h2 #mine-title { "Your access" }
            p { "Signed in as " strong { (printable(&me.user)) }
                @if !me.groups.is_empty() { ", groups " (printable(&me.groups.join(", "))) } "." }
            @if mine.is_empty() {
                p.empty { "No role is bound to you: every request is denied." }
            } @else {
                (bindings_table(&mine, &policy))
            }
        }
        @if viewer.admin {
            section aria-labelledby="bindings-title" {
                h2 #bindings-title { "All bindings" }
                @let all: Vec<_> = policy.bindings().iter().collect();
                @if all.is_empty() { p.empty { "No bindings." } } @else { (bindings_table(&all, &policy)) }
            }
            section aria-labelledby="roles-title" {
                h2 #roles-title { "Roles" }
                div.table-wrap { table.rows {
                    thead { tr { th scope="col" { "Role" } th scope="col" { "Kind" } th scope="col" { "Rules" } } }
                    tbody {
                        @for role in policy.roles() {
                            tr {
                                td { (printable(&role.name)) }
                                td { (if role.builtin { "built-in" } else { "custom" }) }
                                td { details { summary { (role.rules.len()) " rules" }
                                    ul.rules { @for rule in &role.rules { li { code { (printable(&rule.to_string())) } } } } } }
                            }
                        }
                    }
                } }
            }
        }
    };
    super::html(
        status,
        layout::page("Who can do what", Some(viewer), Nav::Access, content),
    )
}

fn bindings_table(
    bindings: &[&crate::gateway::rbac::Binding],
    policy: &crate::gateway::rbac::Policy,
) -> Markup {
    html! {
        div.table-wrap { table.rows {
            thead { tr {
                th scope="col" { "Subject" } th scope="col" { "Role" } th scope="col" { "Cluster" }
                th scope="col" { "Namespace" } th scope="col" { "Rules" }
            } }
            tbody {
                @for b in bindings {
                    tr {
                        td { (printable(&b.subject.to_string())) }
                        td { (printable(&b.role)) }
                        td { (printable(b.cluster.as_deref().unwrap_or("all"))) }
                        td { (printable(b.namespace.as_deref().unwrap_or("all"))) }
                        td {
                            @match policy.role(&b.role) {
                                Some(role) => details { summary { (role.rules.len()) " rules" }
                                    ul.rules { @for rule in &role.rules { li { code { (printable(&rule.to_string())) } } } } },
                                None => span.error { "unknown role: grants nothing" },
                            }
                        }
                    }
                }
            }
        } }
    }
}

fn answer(gateway: &Gateway, me: &Identity, ask: &str, get: &dyn Fn(&str) -> String) -> Answer {
    let cluster = get("cluster");
    if !gateway.clusters.contains_key(&cluster) {
        return Answer::Refused(
            StatusCode::BAD_REQUEST,
            format!("the gateway has no cluster {cluster:?}"),
        );
    }
    let opt = |s: String| (!s.is_empty()).then_some(s);
    let q = AccessQuery {
        verb: get("verb"),
        resource: get("resource"),
        name: opt(get("name")),
        namespace: opt(get("namespace")),
        cluster: cluster.clone(),
        user: opt(get("user")),
    };
    if q.resource.is_empty() {
        return Answer::Refused(
            StatusCode::BAD_REQUEST,
            "the resource is empty: use pods, pods/exec, deployments.apps or a path like /version"
                .into(),
        );
    }
    let info = match access::request_of(&q) {
        Ok(info) => info,
        Err(message) => return Answer::Refused(StatusCode::BAD_REQUEST, message),
    };
    let policy = gateway.policy();
    if ask == "who-can" {
        if !access::may_inspect(&policy, me, &cluster, None) {
            return Answer::Refused(
                StatusCode::FORBIDDEN,
                format!("{me} may not ask who can do what on cluster {cluster:?}: that needs the impersonate verb on all users (e.g. role cluster-admin)"),
            );
        }
        let users = match gateway.users.list_users() {
            Ok(users) => users,
            Err(err) => {
                tracing::error!("console access page: {err}");
                return Answer::Refused(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the gateway could not read its users; see its log".into(),
                );
            }
        };
        let users: Vec<(String, Vec<String>)> =
            users.into_iter().map(|u| (u.name, u.groups)).collect();
        let (bindings, users) = access::who_can(&policy, &users, &cluster, &info);
        return Answer::WhoCan {
            request: access::request_label(&info),
            bindings,
            users,
        };
    }
    let who = match gateway.subject_of(me, &[&cluster], q.user.as_deref()) {
        Ok(who) => who,
        Err((status, message)) if status == StatusCode::INTERNAL_SERVER_ERROR => {
            tracing::error!("console access page: {message}");
            return Answer::Refused(
                status,
                "the gateway could not read its users; see its log".into(),
            );
        }
        Err((status, message)) => return Answer::Refused(status, message),
    };
    let (allowed, reason) = access::can_i(&policy, &who, &cluster, &info);
    Answer::CanI {
        allowed,
        user: who.user,
        request: access::request_label(&info),
        reason,
    }
}

fn render_answer(answer: &Answer) -> Markup {
    html! {
        div.answer role="status" {
            @match answer {
                Answer::CanI { allowed, user, request, reason } => {
                    p.verdict {
                        @if *allowed { span.status.s2 { "yes" } } @else { span.status.s4 { "no" } }
                        " " (printable(user)) " " (if *allowed { "may" } else { "may not" }) " " (printable(request))
                    }
                    @if !reason.is_empty() { p.muted { (printable(reason)) } }
                }
                Answer::WhoCan { request, bindings, users } => {
                    p.verdict { "Who may " (printable(request)) ":" }
                    @if users.is_empty() { p.empty { "No known user." } } @else {
                        ul { @for u in users { li { (printable(u)) } } }
                    }
                    @if !bindings.is_empty() {
                        p.muted { "Through: " @for (i, b) in bindings.iter().enumerate() {
                            @if i > 0 { "; " }
                            (printable(&format!("{} bound to {} (cluster {}, namespace {})", b.role, b.subject,
                                b.cluster.as_deref().unwrap_or("*"), b.namespace.as_deref().unwrap_or("*"))))
                        } }
                    }
                }
                Answer::Refused(_, message) => p.error role="alert" { (printable(message)) },
            }
        }
    }
}
