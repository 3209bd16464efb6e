//! A throwaway PostgreSQL server for tests: one per test process, started on first use in a
//! temporary directory (initdb, then `pg_ctl start` on a free loopback port, as the `postgres`
//! user when the tests run as root), stopped when the process exits. Each test gets a database
//! of its own in it, so tests run in parallel and never touch a database they did not create.
//! The server takes TLS too, with a certificate for 127.0.0.1 from a CA of its own
//! ([`ca_file`]), so that `sslmode=verify-full` is tested against a real server.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

struct Server {
    port: u16,
    ca: PathBuf,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static STOP: Mutex<Option<(PathBuf, PathBuf)>> = Mutex::new(None);

/// The directory of PostgreSQL's server programs (Debian's `postgresql` package).
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

fn as_postgres(program: PathBuf) -> Command {
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command, what: &str) -> Result<(), String> {
    let out = c.output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

extern "C" fn stop_at_exit() {
    if let Some((bin, dir)) = STOP.lock().ok().and_then(|mut s| s.take()) {
        let mut c = as_postgres(bin.join("pg_ctl"));
        c.arg("-D")
            .arg(dir.join("data"))
            .args(["-m", "immediate", "stop"]);
        let _ = c.output();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn start() -> Result<Server, String> {
    let bin = bin_dir().ok_or(
        "PostgreSQL's server programs are not installed (/usr/lib/postgresql/*/bin/initdb): \
         apt-get install postgresql, or run scripts/test.sh, which does",
    )?;
    let dir = std::env::temp_dir().join(format!("ztk-pg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("chown");
        c.arg("postgres:postgres").arg(&dir);
        run(c, "chown the test database directory")?;
    }
    let mut c = as_postgres(bin.join("initdb"));
    c.arg("-D")
        .arg(dir.join("data"))
        .args(["-U", "ztk", "-A", "trust", "--no-sync", "-E", "UTF8"]);
    run(c, "initdb")?;
    // TLS: a CA of its own, and a server certificate for the loopback address.
    let ca = crate::tls::Ca::generate("ztk test PostgreSQL CA").map_err(|e| e.to_string())?;
    let leaf = ca
        .issue_server(&["127.0.0.1".into(), "localhost".into()])
        .map_err(|e| e.to_string())?;
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).map_err(|e| e.to_string())?;
    let data = dir.join("data");
    std::fs::write(data.join("server.crt"), &leaf.cert_pem).map_err(|e| e.to_string())?;
    crate::fsutil::write_private(&data.join("server.key"), leaf.key_pem.as_bytes())
        .map_err(|e| e.to_string())?;
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("chown");
        c.arg("postgres:postgres")
            .arg(data.join("server.crt"))
            .arg(data.join("server.key"));
        run(c, "chown the test server's key")?;
    }
    *STOP.lock().unwrap_or_else(|e| e.into_inner()) = Some((bin.clone(), dir.clone()));
    unsafe { libc::atexit(stop_at_exit) };
    // A free port: the kernel's choice, released just before the server binds it; retried if
    // another process took it meanwhile.
    let mut last = String::new();
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut c = as_postgres(bin.join("pg_ctl"));
        c.arg("-D")
            .arg(dir.join("data"))
            .arg("-l")
            .arg(dir.join("pg.log"))
            .arg("-w")
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 -c ssl=on",
                dir.display()
            ))
            .arg("start");
        match run(c, "pg_ctl start") {
            Ok(()) => return Ok(Server { port, ca: ca_file }),
            Err(e) => {
                last = format!(
                    "{e}\n{}",
                    std::fs::read_to_string(dir.join("pg.log")).unwrap_or_default()
                )
            }
        }
    }
    Err(last)
}

fn server() -> &'static Server {
    match SERVER.get_or_init(start) {
        Ok(server) => server,
        Err(e) => panic!("could not start a PostgreSQL server for the tests: {e}"),
    }
}

/// The CA that signed the test server's certificate (for 127.0.0.1 and localhost).
pub fn ca_file() -> PathBuf {
    server().ca.clone()
}

/// A new, empty database on the test server: its URL (no TLS on loopback, trust sign-in).
pub fn database() -> String {
    let server = server();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin = format!(
        "postgresql://ztk@127.0.0.1:{}/postgres?sslmode=disable",
        server.port
    );
    let url = super::PgUrl::parse(&admin, None).expect("the test server's URL");
    let mut conn = url.connect().expect("connect to the test server");
    conn.client()
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create a test database");
    format!(
        "postgresql://ztk@127.0.0.1:{}/{name}?sslmode=disable",
        server.port
    )
}
