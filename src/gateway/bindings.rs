//! Role bindings in the gateway's database (table `bindings`).
//!
//! `ztk gateway role bind/unbind` write here from another process; the running gateways
//! notice the commit (`UserStore::data_version`) and reload (see `Gateway::watch`).

use crate::args;

use super::rbac::{Binding, Role, Subject};
use super::users::{UserError, UserStore};
use crate::audit::model::now_us;

impl UserStore {
    /// The stored custom roles, by name.
    pub fn list_roles(&self) -> Result<Vec<Role>, UserError> {
        let mut roles = self.with_db(|db| {
            db.query_vec("SELECT name, rules FROM roles", &[], |r| {
                let name: String = r.get(0)?;
                let rules = serde_json::from_str(&r.text(1)?).map_err(|e| {
                    crate::db::DbError::Invalid(format!("the stored rules of role {name:?}: {e}"))
                })?;
                Ok(Role {
                    name,
                    rules,
                    builtin: false,
                })
            })
        })?;
        roles.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(roles)
    }

    /// Stores a custom role (replacing one of that name); true when it is new or changed.
    pub fn put_role(&self, role: &Role) -> Result<bool, UserError> {
        let rules = serde_json::to_string(&role.rules).unwrap_or_else(|_| "[]".into());
        self.with_change(|db| {
            db.execute(
                "INSERT INTO roles (name, rules, updated_us) VALUES (?, ?, ?) \
                 ON CONFLICT (name) DO UPDATE SET rules = excluded.rules, updated_us = excluded.updated_us \
                 WHERE roles.rules <> excluded.rules",
                args![role.name, rules, now_us()],
            )
            .map(|n| n > 0)
        })
    }

    /// Removes a stored role; false when there was none. Its bindings stay (and grant nothing).
    pub fn remove_role(&self, name: &str) -> Result<bool, UserError> {
        self.with_change(|db| {
            db.execute("DELETE FROM roles WHERE name = ?", args![name])
                .map(|n| n > 0)
        })
    }

    /// Every binding, in a stable order.
    pub fn list_bindings(&self) -> Result<Vec<Binding>, UserError> {
        let mut bindings = self.with_db(|db| {
            db.query_vec(
                "SELECT role, subject_kind, subject, cluster, namespace FROM bindings",
                &[],
                |r| {
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
                },
            )
        })?;
        // Sorted here: the same order whatever the database's collation.
        bindings.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
        Ok(bindings)
    }

    /// Adds a binding; false when it already existed.
    pub fn add_binding(&self, b: &Binding) -> Result<bool, UserError> {
        let (kind, name) = subject_columns(&b.subject);
        let n = self.with_change(|db| {
            db.execute(
                "INSERT INTO bindings (role, subject_kind, subject, cluster, namespace, created_us) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                args![
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
        let n = self.with_change(|db| {
            db.execute(
                "DELETE FROM bindings WHERE role = ? AND subject_kind = ? AND subject = ? \
                 AND cluster = ? AND namespace = ?",
                args![
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

/// The order bindings are listed in: role, subject kind, subject, cluster, namespace.
fn order_key(b: &Binding) -> (&str, &'static str, &str, &str, &str) {
    let (kind, name) = subject_columns(&b.subject);
    (
        b.role.as_str(),
        kind,
        name,
        b.cluster.as_deref().unwrap_or(""),
        b.namespace.as_deref().unwrap_or(""),
    )
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
