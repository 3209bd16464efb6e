//! What one client may send: failed logins (per user name and per source address) and shipped
//! audit records (per user), so that no one can guess passwords at full speed or fill the
//! gateway's disk. Both answer `429 Too Many Requests` with `Retry-After`. Failed logins are
//! counted in the gateway database (`login_failures`), so that several gateways behind one
//! address count them together; the ingest quota is in memory (a restart forgets it, which
//! only ever lets a client in sooner).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::users::{UserError, UserStore};
use crate::args;

/// Failed logins a user name may have before each further attempt waits.
const USER_FREE_FAILURES: u32 = 5;
/// Failed logins an address may have (over any user names) before each further attempt waits.
const ADDRESS_FREE_FAILURES: u32 = 20;
/// The first wait, doubled with each further failure up to `MAX_DELAY`.
const FIRST_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Failures are forgotten after this long without another.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// The wait after the `count`-th failure of a key allowed `free` ones.
fn delay(count: u32, free: u32) -> Option<Duration> {
    (count >= free).then(|| {
        let doublings = (count - free).min(20);
        FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
    })
}

fn us(d: Duration) -> i64 {
    d.as_micros() as i64
}

/// Failed logins per user name and per source address, in the gateway database.
pub struct LoginThrottle {
    users: Arc<UserStore>,
}

impl LoginThrottle {
    pub fn new(users: Arc<UserStore>) -> LoginThrottle {
        LoginThrottle { users }
    }

    /// How long `user` from `address` must wait before a password is checked (None: now).
    /// An unknown and a known user name are throttled alike, so the answer tells nothing.
    pub fn wait(
        &self,
        user: &str,
        address: IpAddr,
        now_us: i64,
    ) -> Result<Option<Duration>, UserError> {
        self.wait_keys(&[format!("u:{user}"), format!("a:{address}")], now_us)
    }

    /// How long `address` must wait before it may try again (for what only an address can be
    /// held to: an agent's enrollment token, which names no user).
    pub fn wait_address(
        &self,
        address: IpAddr,
        now_us: i64,
    ) -> Result<Option<Duration>, UserError> {
        self.wait_keys(&[format!("a:{address}")], now_us)
    }

    fn wait_keys(&self, keys: &[String], now_us: i64) -> Result<Option<Duration>, UserError> {
        let marks = vec!["?"; keys.len()].join(", ");
        let sql =
            format!("SELECT MAX(blocked_until_us) FROM login_failures WHERE key IN ({marks})");
        let params: Vec<&dyn crate::db::Param> =
            keys.iter().map(|k| k as &dyn crate::db::Param).collect();
        let until: Option<i64> = self.users.with_db(|db| {
            db.query_row(&sql, &params, |r| r.get(0))
                .map(Option::flatten)
        })?;
        Ok(until
            .filter(|until| *until > now_us)
            .map(|until| Duration::from_micros((until - now_us) as u64)))
    }

    /// Counts a failed login.
    pub fn failed(&self, user: &str, address: IpAddr, now_us: i64) -> Result<(), UserError> {
        self.failed_keys(
            &[
                (format!("u:{user}"), USER_FREE_FAILURES),
                (format!("a:{address}"), ADDRESS_FREE_FAILURES),
            ],
            now_us,
        )
    }

    /// Counts a failure of `address` alone (see `wait_address`).
    pub fn failed_address(&self, address: IpAddr, now_us: i64) -> Result<(), UserError> {
        self.failed_keys(&[(format!("a:{address}"), USER_FREE_FAILURES)], now_us)
    }

    fn failed_keys(&self, keys: &[(String, u32)], now_us: i64) -> Result<(), UserError> {
        for (key, free) in keys {
            let free = *free;
            self.users.with_db(|db| {
                let count: i64 = db
                    .query_row(
                        "INSERT INTO login_failures (key, count, last_us, blocked_until_us) VALUES (?, 1, ?, ?) \
                         ON CONFLICT (key) DO UPDATE SET count = login_failures.count + 1, \
                         last_us = excluded.last_us RETURNING count",
                        args![key, now_us, now_us],
                        |r| r.get(0),
                    )?
                    .unwrap_or(1);
                if let Some(wait) = delay(count.clamp(0, i64::from(u32::MAX)) as u32, free) {
                    let until = now_us + us(wait);
                    db.execute(
                        "UPDATE login_failures SET blocked_until_us = ? WHERE key = ? AND blocked_until_us < ?",
                        args![until, key, until],
                    )?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// A successful login clears the user name's failures (not the address's).
    pub fn succeeded(&self, user: &str) -> Result<(), UserError> {
        self.users.with_db(|db| {
            db.execute(
                "DELETE FROM login_failures WHERE key = ?",
                args![format!("u:{user}")],
            )
            .map(drop)
        })
    }

    /// Forgets failures older than an hour (once their wait is over).
    pub fn forget_old(&self, now_us: i64) -> Result<(), UserError> {
        self.users.with_db(|db| {
            db.execute(
                "DELETE FROM login_failures WHERE last_us < ? AND blocked_until_us <= ?",
                args![now_us - us(FORGET_AFTER), now_us],
            )
            .map(drop)
        })
    }
}

/// Token buckets per user: each holds a minute's allowance and refills continuously.
pub struct IngestQuota {
    records_per_minute: u64,
    bytes_per_minute: u64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    records: f64,
    bytes: f64,
    at: Instant,
}

impl IngestQuota {
    /// 0 for either: no limit on it.
    pub fn new(records_per_minute: u64, bytes_per_minute: u64) -> IngestQuota {
        IngestQuota {
            records_per_minute,
            bytes_per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a batch of this size can ever be taken (it is no larger than a minute's
    /// allowance).
    pub fn fits(&self, records: u64, bytes: u64) -> bool {
        (self.records_per_minute == 0 || records <= self.records_per_minute)
            && (self.bytes_per_minute == 0 || bytes <= self.bytes_per_minute)
    }

    /// Takes `records` and `bytes` from `user`'s allowance, or says how long until it holds
    /// them (nothing is taken then).
    pub fn take(&self, user: &str, records: u64, bytes: u64, now: Instant) -> Result<(), Duration> {
        if self.records_per_minute == 0 && self.bytes_per_minute == 0 {
            return Ok(());
        }
        let (rate_r, rate_b) = (self.records_per_minute as f64, self.bytes_per_minute as f64);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            buckets.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        let bucket = buckets.entry(user.to_string()).or_insert(Bucket {
            records: rate_r,
            bytes: rate_b,
            at: now,
        });
        let minutes = now.duration_since(bucket.at).as_secs_f64() / 60.0;
        bucket.records = (bucket.records + minutes * rate_r).min(rate_r);
        bucket.bytes = (bucket.bytes + minutes * rate_b).min(rate_b);
        bucket.at = now;
        let short_r = if rate_r > 0.0 {
            records as f64 - bucket.records
        } else {
            0.0
        };
        let short_b = if rate_b > 0.0 {
            bytes as f64 - bucket.bytes
        } else {
            0.0
        };
        if short_r > 0.0 || short_b > 0.0 {
            let wait_r = if rate_r > 0.0 {
                short_r.max(0.0) / rate_r
            } else {
                0.0
            };
            let wait_b = if rate_b > 0.0 {
                short_b.max(0.0) / rate_b
            } else {
                0.0
            };
            let minutes = wait_r.max(wait_b);
            return Err(Duration::from_secs_f64(minutes * 60.0).max(Duration::from_secs(1)));
        }
        if rate_r > 0.0 {
            bucket.records -= records as f64;
        }
        if rate_b > 0.0 {
            bucket.bytes -= bytes as f64;
        }
        Ok(())
    }
}

/// A `Retry-After` value: whole seconds, rounded up.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_logins_wait_longer_and_longer_per_user_and_per_address() {
        let dir = tempfile::tempdir().unwrap();
        let users = Arc::new(UserStore::open(&dir.path().join("g.db")).unwrap());
        let throttle = LoginThrottle::new(users.clone());
        // Another gateway on the same database counts the same failures.
        let other = LoginThrottle::new(users);
        let t0 = 1_000_000_000;
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..USER_FREE_FAILURES - 1 {
            assert_eq!(throttle.wait("alice", a, t0).unwrap(), None);
            throttle.failed("alice", a, t0).unwrap();
        }
        assert_eq!(other.wait("alice", a, t0).unwrap(), None);
        other.failed("alice", a, t0).unwrap();
        // The fifth failure: one second, from any address; other users are not affected.
        assert_eq!(throttle.wait("alice", b, t0).unwrap(), Some(FIRST_DELAY));
        assert_eq!(throttle.wait("bob", b, t0).unwrap(), None);
        let t1 = t0 + us(FIRST_DELAY);
        assert_eq!(throttle.wait("alice", a, t1).unwrap(), None);
        throttle.failed("alice", a, t1).unwrap();
        assert_eq!(
            throttle.wait("alice", a, t1).unwrap(),
            Some(FIRST_DELAY * 2)
        );
        // Success clears the user's count.
        throttle.succeeded("alice").unwrap();
        assert_eq!(throttle.wait("alice", b, t1).unwrap(), None);
        // One address trying many names waits too.
        for i in 0..ADDRESS_FREE_FAILURES {
            throttle.failed(&format!("user{i}"), b, t1).unwrap();
        }
        assert!(throttle.wait("carol", b, t1).unwrap().is_some());
        assert_eq!(throttle.wait("carol", a, t1).unwrap(), None);
        // The delay stops growing.
        for _ in 0..100 {
            throttle.failed("dave", a, t1).unwrap();
        }
        assert_eq!(throttle.wait("dave", b, t1).unwrap(), Some(MAX_DELAY));
        let later = t1 + us(MAX_DELAY + FORGET_AFTER);
        throttle.forget_old(later).unwrap();
        assert_eq!(throttle.wait("dave", b, later).unwrap(), None);
        let n: Option<i64> = throttle
            .users
            .with_db(|db| db.query_row("SELECT COUNT(*) FROM login_failures", &[], |r| r.get(0)))
            .unwrap();
        assert_eq!(n, Some(0), "forgotten");
    }

    #[test]
    fn ingest_quota_refills_over_a_minute() {
        let quota = IngestQuota::new(600, 6_000);
        let t0 = Instant::now();
        assert!(quota.take("alice", 600, 10, t0).is_ok());
        let wait = quota.take("alice", 60, 10, t0).unwrap_err();
        assert!((5..=7).contains(&wait.as_secs()), "{wait:?}");
        assert!(quota.take("bob", 60, 10, t0).is_ok());
        assert!(quota
            .take("alice", 60, 10, t0 + Duration::from_secs(6))
            .is_ok());
        let wait = quota
            .take("alice", 1, 6_000, t0 + Duration::from_secs(6))
            .unwrap_err();
        assert!(wait.as_secs() >= 1, "{wait:?}");
        let unlimited = IngestQuota::new(0, 0);
        assert!(unlimited.take("alice", u64::MAX, u64::MAX, t0).is_ok());
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
