//! Users, sessions and role bindings in the gateway's database: SQLite (`gateway.db`) for one
//! gateway, or PostgreSQL shared by several.
//!
//! Passwords are argon2id hashes. A session token is 32 random bytes shown to the client once;
//! the store keeps only its SHA-256, so a copy of the database grants no access.
//!
//! Valid sessions are cached so that a request usually runs no query; any change to the
//! database empties the cache. SQLite tells of a change through its wal-index header (see
//! `commits`); PostgreSQL through `NOTIFY ztk_changes`, sent in the transaction of every change
//! (a login, a logout, a revocation, a binding) by whichever gateway or command made it, and
//! heard by a listening connection in each gateway ([`Changes`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use rand::RngCore;
use rusqlite::Connection;
use sha2::{Digest, Sha256};

use crate::args;
use crate::audit::model::now_us;
use crate::audit::store::{migrate, open_connection};
use crate::db::{Db, DbError, Dialect, Param, PgPool, PgUrl};
use crate::gateway::commits::{Header, WalHeader};

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("gateway database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("gateway database {location}: {source}")]
    Db { location: String, source: DbError },
    #[error("gateway database {location}: {source}")]
    Migrate {
        location: String,
        source: crate::db::postgres::MigrateError,
    },
    #[error("user {0:?} already exists; remove it first with `ztk gateway user remove {0}`")]
    Exists(String),
    #[error("no user {0:?}; `ztk gateway user list` shows the users")]
    NoSuchUser(String),
    #[error("invalid user name {0:?}: use lowercase letters, digits, '-', '.', '_' (at most 63)")]
    BadName(String),
    #[error("the password is empty")]
    EmptyPassword,
    #[error("could not hash the password: {0}")]
    Hash(String),
    #[error("user {user:?} already has {limit} open session(s), the limit (`max_sessions_per_user`); log out elsewhere with `ztk logout`, or ask an administrator to run `ztk gateway session revoke {user}`")]
    TooManySessions { user: String, limit: u32 },
}

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    groups TEXT NOT NULL,
    created_us INTEGER NOT NULL
);
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    expires_us INTEGER NOT NULL,
    revoked_us INTEGER
);
CREATE INDEX sessions_user ON sessions(user);
"#,
    r#"
CREATE TABLE bindings (
    role TEXT NOT NULL,
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('user', 'group')),
    subject TEXT NOT NULL,
    cluster TEXT NOT NULL,   -- '' for every cluster
    namespace TEXT NOT NULL, -- '' for every namespace
    created_us INTEGER NOT NULL,
    UNIQUE (role, subject_kind, subject, cluster, namespace)
);
"#,
    // How each session was made; an SSO session keeps the groups from its claims (its user
    // needs no row in `users`).
    r#"
ALTER TABLE sessions ADD COLUMN method TEXT NOT NULL DEFAULT 'password';
ALTER TABLE sessions ADD COLUMN subject TEXT;
ALTER TABLE sessions ADD COLUMN groups TEXT;
"#,
    SSO_TABLES,
    LOGIN_FAILURES,
    STORED_ROLES,
    AGENT_TABLES,
];

/// `ztk agent` (src/gateway/agents.rs): the agent CA (one row), one-time enrollment tokens by
/// hash, and every certificate issued to an agent, by fingerprint, with its revocation.
const AGENT_TABLES: &str = r#"
CREATE TABLE agent_ca (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    cert_pem TEXT NOT NULL,
    key_pem TEXT NOT NULL,
    created_us BIGINT NOT NULL
);
CREATE TABLE agent_tokens (
    token_hash TEXT PRIMARY KEY,
    cluster TEXT NOT NULL,
    created_us BIGINT NOT NULL,
    expires_us BIGINT NOT NULL,
    used_us BIGINT,
    used_by TEXT
);
CREATE TABLE agent_certs (
    fingerprint TEXT PRIMARY KEY,
    cluster TEXT NOT NULL,
    issued_us BIGINT NOT NULL,
    expires_us BIGINT NOT NULL,
    revoked_us BIGINT,
    origin TEXT NOT NULL
);
CREATE INDEX agent_certs_cluster ON agent_certs(cluster);
"#;

/// Custom roles stored by `ztk gateway role apply` (beside the config's): they reload live in
/// every gateway, like bindings. `rules` is the JSON of the role's rules.
const STORED_ROLES: &str = r#"
CREATE TABLE roles (
    name TEXT PRIMARY KEY,
    rules TEXT NOT NULL,
    updated_us BIGINT NOT NULL
);
"#;

/// Failed logins per user name (`u:NAME`) and source address (`a:ADDRESS`), and until when
/// each must wait (src/gateway/throttle.rs): in the database, so that gateways sharing it
/// throttle together.
const LOGIN_FAILURES: &str = r#"
CREATE TABLE login_failures (
    key TEXT PRIMARY KEY,
    count BIGINT NOT NULL,
    last_us BIGINT NOT NULL,
    blocked_until_us BIGINT NOT NULL
);
"#;

/// Single sign-on in progress (src/oidc/sso.rs): console sign-ins waiting for the provider's
/// callback, by the hash of their state (a sign-in begun on one gateway may come back to
/// another), and the ID tokens already taken, by hash, until they expire (each is taken once,
/// by whichever gateway sees it first).
const SSO_TABLES: &str = r#"
CREATE TABLE sso_pending (
    state_hash TEXT PRIMARY KEY,
    nonce TEXT NOT NULL,
    verifier TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    next TEXT NOT NULL,
    expires_us BIGINT NOT NULL
);
CREATE TABLE sso_used (token_hash TEXT PRIMARY KEY, expires_us BIGINT NOT NULL);
"#;

/// The same tables in PostgreSQL (component `gateway` in `ztk_schema`). `user` is a reserved
/// word there, so the shared SQL quotes it.
const PG_COMPONENT: &str = "gateway";
const PG_MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    groups TEXT NOT NULL,
    created_us BIGINT NOT NULL
);
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    "user" TEXT NOT NULL,
    created_us BIGINT NOT NULL,
    expires_us BIGINT NOT NULL,
    revoked_us BIGINT,
    method TEXT NOT NULL DEFAULT 'password',
    subject TEXT,
    groups TEXT
);
CREATE INDEX sessions_user ON sessions("user");
CREATE TABLE bindings (
    role TEXT NOT NULL,
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('user', 'group')),
    subject TEXT NOT NULL,
    cluster TEXT NOT NULL,
    namespace TEXT NOT NULL,
    created_us BIGINT NOT NULL,
    UNIQUE (role, subject_kind, subject, cluster, namespace)
);
"#,
    SSO_TABLES,
    LOGIN_FAILURES,
    STORED_ROLES,
    AGENT_TABLES,
];

/// The channel every change is announced on (PostgreSQL).
const CHANNEL: &str = "ztk_changes";

#[derive(Debug, Clone, PartialEq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
    pub created_us: i64,
}

/// An authenticated session.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: String,
    pub user: String,
    pub groups: Vec<String>,
    pub expires_us: i64,
    /// How it was made.
    pub method: SessionMethod,
}

/// How a session was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionMethod {
    #[default]
    Password,
    /// OpenID Connect, authorization code flow (`ztk login --sso`, the console's SSO button).
    SsoCode,
    /// OpenID Connect, device authorization grant (`ztk login --sso --device`).
    SsoDevice,
}

impl SessionMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionMethod::Password => "password",
            SessionMethod::SsoCode => "sso-code",
            SessionMethod::SsoDevice => "sso-device",
        }
    }

    pub fn parse(s: &str) -> SessionMethod {
        match s {
            "sso-code" => SessionMethod::SsoCode,
            "sso-device" => SessionMethod::SsoDevice,
            _ => SessionMethod::Password,
        }
    }
}

/// What a new session records beyond its user: how it was made, and for SSO the provider's
/// subject and the groups from the claims.
#[derive(Debug, Clone, Default)]
pub struct Origin<'a> {
    pub method: SessionMethod,
    pub subject: Option<&'a str>,
    pub groups: Option<&'a [String]>,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    Unknown,
    Expired,
    Revoked,
}

/// A session row: id, user, expiry, revocation time, the groups (an SSO session's own, else the
/// user's; None when a password user was removed), and how it was made.
type SessionRow = (String, String, i64, Option<i64>, Option<String>, String);

pub struct UserStore {
    path: PathBuf,
    backend: Backend,
    /// Valid sessions seen by `authenticate`, so that a request usually runs no query.
    sessions: Mutex<SessionCache>,
}

enum Backend {
    Sqlite {
        // One connection for the request path; SQLite reads take microseconds.
        conn: Mutex<Connection>,
        /// The database's wal-index header, where SQLite shares it: lets `authenticate` tell
        /// that nothing was committed without a query.
        wal: Option<WalHeader>,
    },
    Postgres {
        pool: PgPool,
        changes: Arc<Changes>,
    },
}

/// What the listening connection has heard: a number that moves with every change announced
/// (and whenever the connection was lost, since changes may have gone unheard meanwhile).
#[derive(Default)]
pub struct Changes {
    generation: AtomicU64,
    listening: AtomicBool,
}

impl Changes {
    /// The current generation, or None while not listening (nothing may be cached then).
    fn generation(&self) -> Option<u64> {
        self.listening
            .load(Ordering::Acquire)
            .then(|| self.generation.load(Ordering::Acquire))
    }
}

/// Keeps a connection listening on [`CHANNEL`] for as long as the store lives, reconnecting
/// with backoff when the database goes away.
fn listen_loop(url: PgUrl, changes: Weak<Changes>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(strong) = changes.upgrade() else {
            return;
        };
        let result = url.connect().and_then(|mut conn| {
            conn.client().batch_execute(&format!("LISTEN {CHANNEL}"))?;
            strong.listening.store(true, Ordering::Release);
            // Whatever happened while no one listened counts as a change.
            strong.generation.fetch_add(1, Ordering::AcqRel);
            drop(strong);
            loop {
                use ::postgres::fallible_iterator::FallibleIterator;
                let mut heard = false;
                {
                    let mut notifications = conn.client().notifications();
                    let mut it = notifications.timeout_iter(Duration::from_millis(500));
                    while it.next()?.is_some() {
                        heard = true;
                    }
                }
                let Some(strong) = changes.upgrade() else {
                    return Ok(());
                };
                if heard {
                    strong.generation.fetch_add(1, Ordering::AcqRel);
                }
                if conn.client().is_closed() {
                    return Err(DbError::Invalid("the listening connection closed".into()));
                }
            }
        });
        let Some(strong) = changes.upgrade() else {
            return;
        };
        strong.listening.store(false, Ordering::Release);
        strong.generation.fetch_add(1, Ordering::AcqRel);
        drop(strong);
        if let Err(err) = result {
            tracing::warn!(
                "gateway database {url}: not listening for changes ({err}); sessions are looked up on every request until it is back"
            );
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Sessions found valid, by token hash, for as long as the database has not changed.
///
/// The cache is keyed by the database's state: the wal-index header (`commits`: rewritten by
/// every commit of any connection, in this process or another), or where SQLite does not share
/// it, `PRAGMA data_version` (changes when any other connection commits) with the connection's
/// own `total_changes` (logins, logouts, revocations through the API). Any change empties it,
/// so a revocation counts on the next request exactly as without the cache; expiry is checked
/// on every hit.
#[derive(Default)]
struct SessionCache {
    state: Option<DbState>,
    by_hash: HashMap<String, Session>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DbState {
    Header(Header),
    Version(i64, u64),
    Generation(u64),
}

/// More cached sessions than this empties the cache (a bound, not a tuning knob).
const SESSION_CACHE_MAX: usize = 10_000;

impl UserStore {
    pub fn open(path: &Path) -> Result<UserStore, UserError> {
        let err = |source| UserError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            let _ = crate::fsutil::create_private_dir(dir);
        }
        let mut conn = open_connection(path, false).map_err(err)?;
        migrate(&mut conn, MIGRATIONS).map_err(err)?;
        // Safety: `wal` is only read through the store, which keeps `conn` open.
        let wal = unsafe { WalHeader::of(&conn) };
        Ok(UserStore {
            path: path.to_path_buf(),
            backend: Backend::Sqlite {
                conn: Mutex::new(conn),
                wal,
            },
            sessions: Mutex::new(SessionCache::default()),
        })
    }

    /// Opens (creating and migrating when needed) the tables in the PostgreSQL database at
    /// `url`, and starts listening for the changes other gateways announce.
    pub fn open_postgres(url: PgUrl) -> Result<UserStore, UserError> {
        let location = url.to_string();
        let pool = PgPool::open(url.clone()).map_err(|source| UserError::Db {
            location: location.clone(),
            source,
        })?;
        let mut conn = pool.get().map_err(|source| UserError::Db {
            location: location.clone(),
            source,
        })?;
        crate::db::postgres::migrate(&mut conn, PG_COMPONENT, PG_MIGRATIONS).map_err(|source| {
            UserError::Migrate {
                location: location.clone(),
                source,
            }
        })?;
        drop(conn);
        let changes = Arc::new(Changes::default());
        let weak = Arc::downgrade(&changes);
        std::thread::Builder::new()
            .name("gateway-db-listen".into())
            .spawn(move || listen_loop(url, weak))
            .map_err(|e| UserError::Db {
                location: location.clone(),
                source: DbError::Invalid(format!("could not start the listening thread: {e}")),
            })?;
        // Sessions are cached only once the listener is in place (a second at most).
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while changes.generation().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(UserStore {
            path: PathBuf::from(&location),
            backend: Backend::Postgres { pool, changes },
            sessions: Mutex::new(SessionCache::default()),
        })
    }

    fn err(&self, source: rusqlite::Error) -> UserError {
        UserError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn db_err(&self, source: DbError) -> UserError {
        match source {
            DbError::Sqlite(source) => self.err(source),
            source => UserError::Db {
                location: self.path.display().to_string(),
                source,
            },
        }
    }

    /// Runs `f` on the store's connection (SQLite) or a pooled one (PostgreSQL).
    pub(super) fn with_db<T>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, DbError>,
    ) -> Result<T, UserError> {
        match &self.backend {
            Backend::Sqlite { conn, .. } => {
                let conn = conn.lock().unwrap_or_else(|e| e.into_inner());
                f(&mut Db::Sqlite(&conn)).map_err(|e| self.db_err(e))
            }
            Backend::Postgres { pool, .. } => {
                let mut conn = pool.get().map_err(|e| self.db_err(e))?;
                f(&mut Db::Postgres(&mut conn)).map_err(|e| self.db_err(e))
            }
        }
    }

    /// Runs a change (`f`) that every gateway must see: with PostgreSQL, in a transaction that
    /// also announces it on [`CHANNEL`] (delivered at its commit).
    pub(super) fn with_change<T>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, DbError>,
    ) -> Result<T, UserError> {
        self.with_db(|db| match db.dialect() {
            Dialect::Sqlite => f(db),
            Dialect::Postgres => db.transaction(true, |tx| {
                let out = f(tx)?;
                tx.execute("SELECT pg_notify(?, '')", args![CHANNEL])?;
                Ok(out)
            }),
        })
    }

    pub fn add_user(&self, name: &str, groups: &[String], password: &str) -> Result<(), UserError> {
        if !super::config::valid_name(name) {
            return Err(UserError::BadName(name.to_string()));
        }
        if password.is_empty() {
            return Err(UserError::EmptyPassword);
        }
        let salt = SaltString::generate(&mut OsRng);
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| UserError::Hash(e.to_string()))?
            .to_string();
        let groups_json = serde_json::to_string(groups).unwrap_or_else(|_| "[]".into());
        let inserted = self.with_change(|db| {
            db.execute(
                "INSERT INTO users (name, password_hash, groups, created_us) VALUES (?, ?, ?, ?) \
                 ON CONFLICT DO NOTHING",
                args![name, hash, groups_json, now_us()],
            )
        })?;
        if inserted == 0 {
            return Err(UserError::Exists(name.to_string()));
        }
        Ok(())
    }

    pub fn list_users(&self) -> Result<Vec<UserInfo>, UserError> {
        let mut users = self.with_db(|db| {
            db.query_vec("SELECT name, groups, created_us FROM users", &[], |r| {
                Ok(UserInfo {
                    name: r.get(0)?,
                    groups: serde_json::from_str(&r.text(1)?).unwrap_or_default(),
                    created_us: r.get(2)?,
                })
            })
        })?;
        // Sorted here: the same order whatever the database's collation.
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }

    /// Removes a user and revokes all their sessions.
    pub fn remove_user(&self, name: &str) -> Result<(), UserError> {
        let removed = self.with_change(|db| {
            let n = db.execute("DELETE FROM users WHERE name = ?", args![name])?;
            db.execute(
                "UPDATE sessions SET revoked_us = ? WHERE \"user\" = ? AND revoked_us IS NULL",
                args![now_us(), name],
            )?;
            Ok(n)
        })?;
        if removed == 0 {
            return Err(UserError::NoSuchUser(name.to_string()));
        }
        Ok(())
    }

    /// Checks a password. Unknown users cost the same time as known ones, so timing does not
    /// tell which names exist.
    pub fn verify_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<UserInfo>, UserError> {
        let row: Option<(String, String, i64)> = self.with_db(|db| {
            db.query_row(
                "SELECT password_hash, groups, created_us FROM users WHERE name = ?",
                args![name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })?;
        let Some((hash, groups, created_us)) = row else {
            let _ = Argon2::default()
                .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng));
            return Ok(None);
        };
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return Ok(None);
        };
        if Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_err()
        {
            return Ok(None);
        }
        Ok(Some(UserInfo {
            name: name.to_string(),
            groups: serde_json::from_str(&groups).unwrap_or_default(),
            created_us,
        }))
    }

    /// Creates a session and returns its token (shown once) and expiry. With `limit` > 0, refuses
    /// when the user already has that many open sessions; count and insert are one statement,
    /// so concurrent logins cannot both slip under the limit.
    pub fn create_session(
        &self,
        user: &str,
        ttl_us: i64,
        limit: u32,
    ) -> Result<(String, i64), UserError> {
        self.create_session_from(user, ttl_us, limit, &Origin::default())
    }

    /// `create_session`, recording how the session was made.
    pub fn create_session_from(
        &self,
        user: &str,
        ttl_us: i64,
        limit: u32,
        origin: &Origin,
    ) -> Result<(String, i64), UserError> {
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let token = format!(
            "ztk_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let now = now_us();
        let expires = now + ttl_us;
        let id = uuid::Uuid::now_v7().to_string();
        let groups = origin
            .groups
            .map(|g| serde_json::to_string(g).unwrap_or_else(|_| "[]".into()));
        let inserted = self.with_change(|db| {
            if db.dialect() == Dialect::Postgres {
                // Two gateways' logins of one user at once would both count the sessions
                // before either inserts: the user's logins take turns.
                db.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(?))",
                    args![format!("session:{user}")],
                )?;
            }
            db.execute(
                "INSERT INTO sessions (id, token_hash, \"user\", created_us, expires_us, method, subject, groups) \
                 SELECT ?1, ?2, ?3, CAST(?4 AS BIGINT), CAST(?5 AS BIGINT), ?7, ?8, ?9 \
                 WHERE CAST(?6 AS BIGINT) = 0 OR (SELECT COUNT(*) FROM sessions \
                 WHERE \"user\" = ?3 AND revoked_us IS NULL AND expires_us > ?4) < ?6",
                args![
                    id,
                    hash_token(&token),
                    user,
                    now,
                    expires,
                    i64::from(limit),
                    origin.method.as_str(),
                    origin.subject,
                    groups,
                ],
            )
        })?;
        if inserted == 0 {
            return Err(UserError::TooManySessions {
                user: user.to_string(),
                limit,
            });
        }
        Ok((token, expires))
    }

    /// A login's session: ends `replaces` (the client's previous session) when it is this
    /// user's, then creates the new one (`create_session_from`). The token, its expiry, and how
    /// many sessions the user has open now.
    pub fn start_session(
        &self,
        user: &str,
        replaces: Option<&str>,
        ttl_us: i64,
        limit: u32,
        origin: &Origin,
    ) -> Result<(String, i64, u32), UserError> {
        if let Some(previous) = replaces {
            if let Ok(Ok(old)) = self.authenticate(previous) {
                if old.user == user {
                    self.revoke_session(&old.id)?;
                }
            }
        }
        let (token, expires_us) = self.create_session_from(user, ttl_us, limit, origin)?;
        Ok((token, expires_us, self.open_sessions(user)?))
    }

    /// How many sessions `user` has open (not expired, not revoked).
    pub fn open_sessions(&self, user: &str) -> Result<u32, UserError> {
        let now = now_us();
        let n: Option<i64> = self.with_db(|db| {
            db.query_row(
                "SELECT COUNT(*) FROM sessions WHERE \"user\" = ?1 AND revoked_us IS NULL AND expires_us > ?2",
                args![user, now],
                |r| r.get(0),
            )
        })?;
        Ok(n.unwrap_or(0) as u32)
    }

    /// Looks a bearer token up. Revocations made by another process count at once.
    pub fn authenticate(&self, token: &str) -> Result<Result<Session, TokenRejection>, UserError> {
        self.authenticate_hash(hash_token(token))
    }

    /// `authenticate` for a token known by its hash (the web shell's commands hold their web
    /// session's hash, not its token).
    pub fn authenticate_hash(
        &self,
        hash: String,
    ) -> Result<Result<Session, TokenRejection>, UserError> {
        // The state is read before the session row: a commit in between changes it again for
        // the next request, so nothing read here outlives a change.
        let state = match &self.backend {
            Backend::Sqlite { wal: Some(wal), .. } => Some(DbState::Header(wal.read())),
            Backend::Sqlite { conn, wal: None } => {
                let c = conn.lock().unwrap_or_else(|e| e.into_inner());
                let version = c
                    .prepare_cached("PRAGMA data_version")
                    .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
                    .map_err(|e| self.err(e))?;
                Some(DbState::Version(version, c.total_changes()))
            }
            Backend::Postgres { changes, .. } => changes.generation().map(DbState::Generation),
        };
        let now = now_us();
        if let Some(state) = state {
            let mut cache = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            if cache.state != Some(state) {
                cache.by_hash.clear();
                cache.state = Some(state);
            }
            if let Some(session) = cache.by_hash.get(&hash) {
                if session.expires_us > now {
                    return Ok(Ok(session.clone()));
                }
                return Ok(Err(TokenRejection::Expired));
            }
        }
        let row: Option<SessionRow> = self.with_db(|db| {
            db.query_row(
                "SELECT s.id, s.user, s.expires_us, s.revoked_us, COALESCE(s.groups, u.groups), \
                 s.method FROM sessions s LEFT JOIN users u ON u.name = s.user \
                 WHERE s.token_hash = ?",
                args![hash],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
        })?;
        Ok(match row {
            None => Err(TokenRejection::Unknown),
            Some((_, _, _, Some(_), _, _)) => Err(TokenRejection::Revoked),
            // The (password) user was removed.
            Some((_, _, _, None, None, _)) => Err(TokenRejection::Revoked),
            Some((_, _, expires, None, _, _)) if expires <= now => Err(TokenRejection::Expired),
            Some((id, user, expires_us, None, Some(groups), method)) => {
                let session = Session {
                    id,
                    user,
                    groups: serde_json::from_str(&groups).unwrap_or_default(),
                    expires_us,
                    method: SessionMethod::parse(&method),
                };
                let mut cache = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
                // Only while the database is still in the state the row was read in.
                if state.is_some() && cache.state == state {
                    if cache.by_hash.len() >= SESSION_CACHE_MAX {
                        cache.by_hash.clear();
                    }
                    cache.by_hash.insert(hash, session.clone());
                }
                Ok(session)
            }
        })
    }

    /// Revokes every open session of `user`; returns how many.
    pub fn revoke_user(&self, user: &str) -> Result<usize, UserError> {
        self.with_change(|db| {
            db.execute(
                "UPDATE sessions SET revoked_us = ? WHERE \"user\" = ? AND revoked_us IS NULL AND expires_us > ?",
                args![now_us(), user, now_us()],
            )
            .map(|n| n as usize)
        })
    }

    pub fn revoke_session(&self, id: &str) -> Result<(), UserError> {
        self.with_change(|db| {
            db.execute(
                "UPDATE sessions SET revoked_us = ? WHERE id = ? AND revoked_us IS NULL",
                args![now_us(), id],
            )
        })?;
        Ok(())
    }
}

/// A console sign-in waiting for the provider's callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSignIn {
    pub nonce: String,
    pub verifier: String,
    pub redirect_uri: String,
    pub next: String,
}

/// Sign-ins in progress at most (a bound against a flood of unfinished ones).
const MAX_PENDING_SIGN_INS: i64 = 10_000;

impl UserStore {
    /// Keeps a sign-in until `expires_us`, by the hash of its state; false when too many are in
    /// progress already.
    pub fn put_sign_in(
        &self,
        state: &str,
        p: &PendingSignIn,
        now_us: i64,
        expires_us: i64,
    ) -> Result<bool, UserError> {
        self.with_db(|db| {
            db.execute("DELETE FROM sso_pending WHERE expires_us <= ?", args![now_us])?;
            let n: i64 = db
                .query_row("SELECT COUNT(*) FROM sso_pending", &[], |r| r.get(0))?
                .unwrap_or(0);
            if n >= MAX_PENDING_SIGN_INS {
                return Ok(false);
            }
            db.execute(
                "INSERT INTO sso_pending (state_hash, nonce, verifier, redirect_uri, next, expires_us) \
                 VALUES (?, ?, ?, ?, ?, ?)",
                args![hash_token(state), p.nonce, p.verifier, p.redirect_uri, p.next, expires_us],
            )?;
            Ok(true)
        })
    }

    /// Takes (once: it is gone after) the sign-in of `state`, unless it expired.
    pub fn take_sign_in(
        &self,
        state: &str,
        now_us: i64,
    ) -> Result<Option<PendingSignIn>, UserError> {
        self.with_db(|db| {
            db.query_row(
                "DELETE FROM sso_pending WHERE state_hash = ? AND expires_us > ? \
                 RETURNING nonce, verifier, redirect_uri, next",
                args![hash_token(state), now_us],
                |r| {
                    Ok(PendingSignIn {
                        nonce: r.get(0)?,
                        verifier: r.get(1)?,
                        redirect_uri: r.get(2)?,
                        next: r.get(3)?,
                    })
                },
            )
        })
    }

    /// Takes an ID token (by its hash) until it expires: false when it was taken before.
    pub fn take_id_token(
        &self,
        token_hash: &str,
        expires_us: i64,
        now_us: i64,
    ) -> Result<bool, UserError> {
        self.with_db(|db| {
            db.execute("DELETE FROM sso_used WHERE expires_us <= ?", args![now_us])?;
            db.execute(
                "INSERT INTO sso_used (token_hash, expires_us) VALUES (?, ?) ON CONFLICT DO NOTHING",
                args![token_hash, expires_us],
            )
            .map(|n| n == 1)
        })
    }

    /// The groups of a user, or None when there is no such user.
    pub fn groups_of(&self, name: &str) -> Result<Option<Vec<String>>, UserError> {
        let groups: Option<String> = self.with_db(|db| {
            db.query_row(
                "SELECT groups FROM users WHERE name = ?",
                args![name],
                |r| r.get(0),
            )
        })?;
        Ok(groups.map(|g| serde_json::from_str(&g).unwrap_or_default()))
    }

    /// Drops these sessions from the cache: the next request of theirs reads the database (a
    /// revocation seen by a query before the change notice reached this process).
    pub fn forget_sessions(&self, ids: &[String]) {
        let mut cache = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        cache.by_hash.retain(|_, s| !ids.contains(&s.id));
    }

    /// Of these session ids, the ones no longer valid (revoked, expired, or user removed).
    pub fn invalid_sessions(&self, ids: &[String]) -> Result<Vec<String>, UserError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut invalid = Vec::new();
        // Bound parameters, in chunks under SQLite's variable limit.
        for chunk in ids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!(
                "SELECT s.id FROM sessions s LEFT JOIN users u ON u.name = s.user \
                 WHERE s.id IN ({marks}) AND (s.revoked_us IS NOT NULL OR s.expires_us <= ? \
                 OR (u.name IS NULL AND s.groups IS NULL))"
            );
            let now = now_us();
            let found: Vec<String> = self.with_db(|db| {
                let mut values: Vec<&dyn Param> = chunk.iter().map(|s| s as &dyn Param).collect();
                values.push(&now);
                db.query_vec(&sql, &values, |r| r.get(0))
            })?;
            invalid.extend(found);
        }
        Ok(invalid)
    }

    /// A number that changes when another process (e.g. `ztk gateway role bind`, or another
    /// gateway) commits to the database: SQLite's `data_version` of this connection, or the
    /// generation of the changes heard (PostgreSQL; it also moves when the listener was lost).
    /// It is how the gateway notices binding changes without a restart.
    pub fn data_version(&self) -> Result<i64, UserError> {
        match &self.backend {
            Backend::Postgres { changes, .. } => {
                Ok(changes.generation.load(Ordering::Acquire) as i64)
            }
            Backend::Sqlite { .. } => self.with_db(|db| {
                db.query_row("PRAGMA data_version", &[], |r| r.get(0))
                    .map(|v| v.unwrap_or(0))
            }),
        }
    }
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cached sessions: a revocation by another process or connection, a removed user and
    /// an expiry all count on the very next lookup, with the wal-index header and with the
    /// `PRAGMA data_version` fallback alike.
    #[test]
    fn cached_sessions_follow_every_change_at_once() {
        cached_sessions_follow_changes(true);
        cached_sessions_follow_changes(false);
    }

    fn cached_sessions_follow_changes(query_free: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let mut store = UserStore::open(&path).unwrap();
        let Backend::Sqlite { wal, .. } = &mut store.backend else {
            unreachable!()
        };
        assert!(wal.is_some(), "the query-free check is the one in use");
        if !query_free {
            *wal = None;
        }
        store.add_user("alice", &["dev".into()], "pw").unwrap();
        store.add_user("bob", &[], "pw").unwrap();
        let (alice, _) = store.create_session("alice", 60_000_000, 0).unwrap();
        let (bob, _) = store.create_session("bob", 60_000_000, 0).unwrap();
        for _ in 0..3 {
            assert_eq!(store.authenticate(&alice).unwrap().unwrap().user, "alice");
            assert_eq!(store.authenticate(&bob).unwrap().unwrap().user, "bob");
        }
        // Another connection (as `ztk gateway session revoke` in another process).
        let other = UserStore::open(&path).unwrap();
        assert_eq!(other.revoke_user("alice").unwrap(), 1);
        assert_eq!(
            store.authenticate(&alice).unwrap(),
            Err(TokenRejection::Revoked)
        );
        assert_eq!(store.authenticate(&bob).unwrap().unwrap().user, "bob");
        // The same connection (a logout through the gateway's API).
        assert_eq!(store.revoke_user("bob").unwrap(), 1);
        assert_eq!(
            store.authenticate(&bob).unwrap(),
            Err(TokenRejection::Revoked)
        );
        // Another process (the sqlite3 CLI) while the session is cached.
        let (carol, _) = store.create_session("alice", 60_000_000, 0).unwrap();
        for _ in 0..2 {
            assert!(store.authenticate(&carol).unwrap().is_ok());
        }
        let status = std::process::Command::new("sqlite3")
            .arg(&path)
            .arg("UPDATE sessions SET revoked_us = 1 WHERE revoked_us IS NULL;")
            .status()
            .expect("the sqlite3 CLI (Debian package sqlite3) runs");
        assert!(status.success());
        assert_eq!(
            store.authenticate(&carol).unwrap(),
            Err(TokenRejection::Revoked)
        );
        // Expiry, while the database does not change.
        let (short, _) = store.create_session("alice", 300_000, 0).unwrap();
        assert!(store.authenticate(&short).unwrap().is_ok());
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert_eq!(
            store.authenticate(&short).unwrap(),
            Err(TokenRejection::Expired)
        );
    }

    #[test]
    fn users_sessions_and_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(&dir.path().join("g.db")).unwrap();
        store.add_user("alice", &["dev".into()], "pw").unwrap();
        assert!(matches!(
            store.add_user("alice", &[], "pw"),
            Err(UserError::Exists(_))
        ));
        assert!(matches!(
            store.add_user("Bad Name", &[], "pw"),
            Err(UserError::BadName(_))
        ));
        assert!(store.verify_password("alice", "wrong").unwrap().is_none());
        assert!(store.verify_password("nobody", "pw").unwrap().is_none());
        let user = store.verify_password("alice", "pw").unwrap().unwrap();
        assert_eq!(user.groups, vec!["dev".to_string()]);

        let (token, _) = store.create_session("alice", 60_000_000, 0).unwrap();
        let session = store.authenticate(&token).unwrap().unwrap();
        assert_eq!(session.user, "alice");
        assert_eq!(
            store.authenticate("ztk_nope").unwrap(),
            Err(TokenRejection::Unknown)
        );

        let (expired, _) = store.create_session("alice", -1, 0).unwrap();
        assert_eq!(
            store.authenticate(&expired).unwrap(),
            Err(TokenRejection::Expired)
        );

        assert_eq!(store.revoke_user("alice").unwrap(), 1);
        assert_eq!(
            store.authenticate(&token).unwrap(),
            Err(TokenRejection::Revoked)
        );

        let (again, _) = store.create_session("alice", 60_000_000, 0).unwrap();
        store.remove_user("alice").unwrap();
        assert_eq!(
            store.authenticate(&again).unwrap(),
            Err(TokenRejection::Revoked)
        );
        assert!(matches!(
            store.remove_user("alice"),
            Err(UserError::NoSuchUser(_))
        ));
    }
}
