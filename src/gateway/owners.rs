//! Which user each command id belongs to, so that a client cannot put its calls under another
//! user's command by sending that command's id in `Ztk-Command-Id`.
//!
//! A command id is a client's UUIDv7; its first use decides its owner: the first call that
//! carries it, or the command record a client ships. Later calls of another user that carry it
//! are relayed without the link (their record says why). The table lives in memory (no database
//! round trip on the request path), is filled at start from the recent commands and calls of the
//! audit store, and forgets ids unused for a day. The store's views join a call to its command
//! only when both have the same user, so a link can never show a call under someone else's
//! command, whatever this table forgot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

/// How long an unused command id is remembered.
pub const KEEP_US: i64 = 24 * 3_600_000_000;
/// At most this many ids are remembered; past it the least recently used half is forgotten.
const MAX_IDS: usize = 200_000;

/// The answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The id is this user's (now, or since its first use).
    Accepted,
    /// The id belongs to another user.
    Foreign,
}

#[derive(Default)]
pub struct CommandOwners {
    ids: Mutex<HashMap<Uuid, (Arc<str>, i64)>>,
}

impl CommandOwners {
    /// Claims `id` for `user` at `now_us`: accepted when unknown or already theirs.
    pub fn claim(&self, id: Uuid, user: &str, now_us: i64) -> Claim {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        match ids.get_mut(&id) {
            Some((owner, seen)) if &**owner == user => {
                *seen = (*seen).max(now_us);
                Claim::Accepted
            }
            Some(_) => Claim::Foreign,
            None => {
                if ids.len() >= MAX_IDS {
                    shrink(&mut ids);
                }
                ids.insert(id, (Arc::from(user), now_us));
                Claim::Accepted
            }
        }
    }

    /// Forgets the ids unused since `before_us`.
    pub fn forget_before(&self, before_us: i64) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.retain(|_, (_, seen)| *seen >= before_us);
    }

    pub fn len(&self) -> usize {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops the least recently used half.
fn shrink(ids: &mut HashMap<Uuid, (Arc<str>, i64)>) {
    let mut seen: Vec<i64> = ids.values().map(|(_, s)| *s).collect();
    let middle = seen.len() / 2;
    let (_, cut, _) = seen.select_nth_unstable(middle);
    let cut = *cut;
    ids.retain(|_, (_, s)| *s > cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_user_of_an_id_owns_it() {
        let owners = CommandOwners::default();
        let id = Uuid::now_v7();
        assert_eq!(owners.claim(id, "alice", 1), Claim::Accepted);
        assert_eq!(owners.claim(id, "alice", 2), Claim::Accepted);
        assert_eq!(owners.claim(id, "bob", 3), Claim::Foreign);
        let other = Uuid::now_v7();
        assert_eq!(owners.claim(other, "bob", 4), Claim::Accepted);
        owners.forget_before(3);
        assert_eq!(owners.len(), 1);
        assert_eq!(owners.claim(id, "bob", 5), Claim::Accepted);
    }

    #[test]
    fn a_full_table_forgets_the_least_recently_used_half() {
        let mut ids = HashMap::new();
        for i in 0..10 {
            ids.insert(Uuid::now_v7(), (Arc::from("u"), i));
        }
        shrink(&mut ids);
        assert_eq!(ids.len(), 4);
        assert!(ids.values().all(|(_, s)| *s > 5));
    }
}
