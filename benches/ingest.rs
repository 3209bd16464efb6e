//! The gateway's store step of ingest alone: batches of client records (seeded, read from a
//! client store's outbox beforehand) stored by `Ingestor::ingest` one after the other, as the
//! gateway stores them, without the network, the decoding or the client beside it on the same
//! cores. `cargo bench --bench ingest [-- N]` prints records per second (N calls, default
//! 200,000, plus one command per ten calls), into SQLite and into PostgreSQL (a throwaway
//! server on loopback, `db::testing`), side by side in each round.

use std::time::Instant;

use ztk::audit::ingest::Ingestor;
use ztk::audit::AuditStore;

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("a temp dir");
    let client = AuditStore::open(&dir.path().join("client.db")).expect("the client store");
    ztk::audit::seed::seed_for(&client, n, Some("alice")).expect("seeded");
    let mut batches = Vec::new();
    let mut after = None;
    loop {
        let batch = client
            .outbox_batch_after("alice", after, 2000)
            .expect("a batch");
        if batch.is_empty() {
            break;
        }
        after = Some(batch.through_seq);
        batches.push(batch);
    }
    let records: usize = batches.iter().map(|b| b.len()).sum();
    for round in 1..=3 {
        for backend in ["sqlite", "postgresql"] {
            // One batch at a time, and two at once (a client ships two batches in flight, and
            // several clients ship at once): the gateway's ingest takes them side by side where
            // the backend can (PostgreSQL), in turn where it cannot (SQLite's one writer).
            for at_once in [1, 2] {
                let store = match backend {
                    "sqlite" => {
                        AuditStore::open(&dir.path().join(format!("gateway{round}-{at_once}.db")))
                    }
                    _ => AuditStore::open_postgres(
                        ztk::db::PgUrl::parse(&ztk::db::testing::database(), None).expect("a URL"),
                        &dir.path().join("spill"),
                    ),
                }
                .expect("the gateway store");
                let ingestor = Ingestor::new(store);
                let start = Instant::now();
                std::thread::scope(|s| {
                    for lane in 0..at_once {
                        let (ingestor, batches) = (&ingestor, &batches);
                        s.spawn(move || {
                            for batch in batches.iter().skip(lane).step_by(at_once) {
                                ingestor
                                    .ingest("alice", &batch.commands, &batch.calls)
                                    .expect("stored");
                            }
                        });
                    }
                });
                let secs = start.elapsed().as_secs_f64();
                println!(
                    "round {round} {backend:<10} {at_once} at once: {records} records ({n} calls) in {secs:.2}s: {:.0} records/s, {:.0} calls/s, {:.2} µs per record",
                    records as f64 / secs,
                    n as f64 / secs,
                    secs * 1e6 / records as f64
                );
            }
        }
    }
}
