//! The cost of one authorization decision with 200 bindings in place (the gateway makes one
//! per request). `cargo bench --bench authorize` prints it.

use ztk::gateway::authz::authorize;
use ztk::gateway::rbac::{Binding, Identity, Policy, Subject};
use ztk::request_info::RequestInfo;

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
}
