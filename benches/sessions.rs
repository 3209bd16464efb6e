//! The session check on the request path, per backend, side by side: `UserStore::authenticate`
//! of a cached session (nothing changed: SQLite reads its wal-index header, PostgreSQL the
//! generation its listening connection keeps), and of a session looked up in the database
//! (what every request costs while the cache is empty: right after a change, or on PostgreSQL
//! while the listener is reconnecting). `cargo bench --bench sessions [-- N]`.

use std::time::Instant;

use ztk::gateway::users::UserStore;

fn main() {
    let n: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("a temp dir");
    for backend in ["sqlite", "postgresql"] {
        let store = match backend {
            "sqlite" => UserStore::open(&dir.path().join("gateway.db")),
            _ => UserStore::open_postgres(
                ztk::db::PgUrl::parse(&ztk::db::testing::database(), None).expect("a URL"),
            ),
        }
        .expect("the store");
        store
            .add_user("alice", &["dev".into()], "pw")
            .expect("a user");
        let (token, _) = store
            .create_session("alice", 3_600_000_000, 0)
            .expect("a session");
        // Wait for the change to be heard (PostgreSQL), then warm the cache.
        std::thread::sleep(std::time::Duration::from_millis(200));
        store.authenticate(&token).unwrap().expect("valid");
        let t = Instant::now();
        for _ in 0..n {
            store.authenticate(&token).unwrap().expect("valid");
        }
        let cached = t.elapsed().as_secs_f64() * 1e9 / f64::from(n);
        // Looked up: another session's token each time is never cached (it is unknown).
        let m = (n / 10).max(1);
        let t = Instant::now();
        for _ in 0..m {
            let _ = store.authenticate("ztk_unknown").unwrap();
        }
        let looked_up = t.elapsed().as_secs_f64() * 1e9 / f64::from(m);
        println!(
            "{backend:<10} session check: cached {cached:>9.0} ns, looked up in the database {looked_up:>9.0} ns"
        );
    }
}
