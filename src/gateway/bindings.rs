//! Role bindings in the gateway's SQLite store (`gateway.db`, table `bindings`).
//!
//! `ztk gateway role bind/unbind` write here from another process; the running gateway
//! notices the commit through `PRAGMA data_version` and reloads (see `Gateway::watch`).

use rusqlite::params;

use super::rbac::{Binding, Subject};
use super::users::{UserError, UserStore};
use crate::audit::model::now_us;

impl UserStore {
    /// Every binding, in a stable order.
    pub fn list_bindings(&self) -> Result<Vec<Binding>, UserError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT role, subject_kind, subject, cluster, namespace FROM bindings \
                 ORDER BY role, subject_kind, subject, cluster, namespace",
            )?;
            let rows = stmt.query_map([], |r| {
                let kind: String = r.get(1)?;
                let name: String = r.get(2)?;
                let cluster: String = r.get(3)?;
                let namespace: String = r.get(4)?;
                Ok(Binding {
                    role: r.get(0)?,
                    subject: if kind == "group" {
                        Subject::Group(name)
                    } else {
                        Subject::User(name)
                    },
                    cluster: (!cluster.is_empty()).then_some(cluster),
                    namespace: (!namespace.is_empty()).then_some(namespace),
                })
            })?;
            rows.collect()
        })
    }

    /// Adds a binding; false when it already existed.
    pub fn add_binding(&self, b: &Binding) -> Result<bool, UserError> {
        let (kind, name) = subject_columns(&b.subject);
        let n = self.with_conn(|c| {
            c.execute(
                "INSERT OR IGNORE INTO bindings (role, subject_kind, subject, cluster, namespace, created_us) \
                 VALUES (?, ?, ?, ?, ?, ?)",
                params![
                    b.role,
                    kind,
                    name,
                    b.cluster.as_deref().unwrap_or(""),
                    b.namespace.as_deref().unwrap_or(""),
                    now_us()
                ],
            )
        })?;
        Ok(n > 0)
    }

    /// Removes a binding; false when there was none.
    pub fn remove_binding(&self, b: &Binding) -> Result<bool, UserError> {
        let (kind, name) = subject_columns(&b.subject);
        let n = self.with_conn(|c| {
            c.execute(
                "DELETE FROM bindings WHERE role = ? AND subject_kind = ? AND subject = ? \
                 AND cluster = ? AND namespace = ?",
                params![
                    b.role,
                    kind,
                    name,
                    b.cluster.as_deref().unwrap_or(""),
                    b.namespace.as_deref().unwrap_or("")
                ],
            )
        })?;
        Ok(n > 0)
    }
}

fn subject_columns(subject: &Subject) -> (&'static str, &str) {
    match subject {
        Subject::User(u) => ("user", u.as_str()),
        Subject::Group(g) => ("group", g.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_round_trip_and_other_writers_bump_data_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let gateway = UserStore::open(&path).unwrap();
        let admin = UserStore::open(&path).unwrap();
        let before = gateway.data_version().unwrap();
        let b = Binding {
            role: "view".into(),
            subject: Subject::Group("dev".into()),
            cluster: None,
            namespace: Some("dev".into()),
        };
        assert!(admin.add_binding(&b).unwrap());
        assert!(!admin.add_binding(&b).unwrap());
        assert_ne!(gateway.data_version().unwrap(), before);
        assert_eq!(gateway.list_bindings().unwrap(), vec![b.clone()]);
        assert!(admin.remove_binding(&b).unwrap());
        assert!(!admin.remove_binding(&b).unwrap());
        assert!(gateway.list_bindings().unwrap().is_empty());
    }
}
