//! The audit store's reads on both backends, side by side: N seeded API calls (default
//! 1,000,000; `cargo bench --bench store -- 10000000` for the ten million) written
//! through the batch writer into SQLite and into PostgreSQL (a throwaway server on loopback,
//! `db::testing`), then for each: the first page (100 rows, keyset) of several filtered
//! listings, median of 5, and the export of every call (streamed, counted, not held).

use std::time::Instant;

use ztk::audit::{AuditStore, Filter};

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("a temp dir");
    let filters = [
        "",
        "user:alice",
        "verb:delete ns:payments",
        "status:5xx cluster:prod",
        "since:1d resource:secrets",
        "user:alice verb:delete status:4xx since:7d",
        "delete pods",
    ];
    for backend in ["sqlite", "postgresql"] {
        let store = match backend {
            "sqlite" => AuditStore::open(&dir.path().join("audit.db")),
            _ => AuditStore::open_postgres(
                ztk::db::PgUrl::parse(&ztk::db::testing::database(), None).expect("a URL"),
                &dir.path().join("spill"),
            ),
        }
        .expect("the store");
        let start = Instant::now();
        ztk::audit::seed::seed(&store, n).expect("seeded");
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{backend:<10} seed: {n} calls in {secs:.1}s ({:.0} records/s through the writer)",
            n as f64 * 1.1 / secs
        );
        for f in filters {
            let filter = Filter::parse_query(f).expect("a filter");
            let mut times = Vec::new();
            let mut rows = 0;
            for _ in 0..5 {
                let t = Instant::now();
                rows = store
                    .query_calls(&filter, None, 100)
                    .expect("a page")
                    .items
                    .len();
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(|a, b| a.total_cmp(b));
            println!(
                "{backend:<10} first page {:<45} {rows:>3} rows  median {:>8.2} ms",
                format!("{f:?}"),
                times[2]
            );
        }
        let t = Instant::now();
        let mut exported = 0u64;
        store
            .for_each_call(&Filter::default(), None, None, |_| {
                exported += 1;
                Ok(())
            })
            .expect("exported");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{backend:<10} export: {exported} calls in {secs:.2}s ({:.0} rows/s)",
            exported as f64 / secs
        );
    }
}
