//! The cost of one authorization decision with 200 bindings in place (the gateway makes one
//! per request), and of the strict parse each hop makes of a request before it (beside the
//! lenient `RequestInfo` naming it replaced). `cargo bench --bench authorize` prints them.

use ztk::gateway::authz::authorize;
use ztk::gateway::rbac::{Binding, Identity, Policy, Subject};
use ztk::request_info::{ParsedRequest, RequestInfo};

fn main() {
    let mut bindings = Vec::new();
    for i in 0..200 {
        bindings.push(Binding {
            role: ["view", "edit", "admin"][i % 3].into(),
            subject: if i % 2 == 0 {
                Subject::User(format!("user{i}"))
            } else {
                Subject::Group(format!("group{i}"))
            },
            cluster: Some("c".into()),
            namespace: Some(format!("ns{i}")),
        });
    }
    bindings.push(Binding {
        role: "edit".into(),
        subject: Subject::Group("dev".into()),
        cluster: None,
        namespace: Some("dev".into()),
    });
    let policy = Policy::new(&[], bindings);
    let who = Identity {
        user: "alice".into(),
        groups: vec!["dev".into(), "qa".into()],
    };
    let allowed = RequestInfo::parse("GET", "/apis/apps/v1/namespaces/dev/deployments", None);
    let denied = RequestInfo::parse("GET", "/api/v1/namespaces/dev/secrets/x/y", None);
    let n = 200_000u32;
    for (label, info) in [("allowed", &allowed), ("denied", &denied)] {
        let start = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(authorize(&policy, &who, "c", info, None));
        }
        println!(
            "authorize ({label}, 201 bindings): {:?} per request",
            start.elapsed() / n
        );
    }
    // What kubectl sends most: a list with a selector and a limit, and a watch.
    let requests = [
        (
            "/api/v1/namespaces/dev/pods",
            Some("labelSelector=app%3Dweb&limit=500"),
        ),
        (
            "/apis/apps/v1/namespaces/dev/deployments",
            Some("allowWatchBookmarks=true&resourceVersion=123&watch=true&timeoutSeconds=300"),
        ),
    ];
    for (path, query) in requests {
        let start = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(RequestInfo::parse("GET", path, query));
        }
        let lenient = start.elapsed() / n;
        let start = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(ParsedRequest::parse("GET", path, query).unwrap());
        }
        println!(
            "parse {path}?{}: RequestInfo {lenient:?}, ParsedRequest (strict, canonical) {:?}",
            query.unwrap_or(""),
            start.elapsed() / n
        );
    }
}
