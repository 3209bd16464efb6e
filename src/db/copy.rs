//! Copying rows between databases of either backend (`ztk gateway migrate`): each row read as
//! the storage classes it holds and written as they are, in multi-row inserts that skip rows
//! already there, so a copy run twice writes nothing the second time.

use super::{Db, DbError, Param, Value};

/// Rows per insert statement (SQLite takes at most 32,766 parameters in one).
const CHUNK: usize = 200;

/// Copies `columns` of every row of `table` from `from` to `to`, skipping rows whose key is
/// already in `to` (`ON CONFLICT DO NOTHING`); returns how many rows were inserted. `order`
/// is the column the rows are read in order of (rows are written in that order).
pub fn copy_table(
    from: &mut Db,
    to: &mut Db,
    table: &str,
    columns: &[&str],
    order: &str,
) -> Result<u64, DbError> {
    let list = columns.join(", ");
    let select = format!("SELECT {list} FROM {table} ORDER BY {order}");
    let mut rows: Vec<Vec<Value>> = Vec::with_capacity(CHUNK);
    let mut inserted = 0;
    let mut failed = None;
    from.query_each(&select, &[], &mut |row| {
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            values.push(row.get::<Value>(i)?);
        }
        rows.push(values);
        if rows.len() == CHUNK {
            match insert(to, table, &list, columns.len(), &rows) {
                Ok(n) => inserted += n,
                Err(e) => {
                    failed = Some(e);
                    return Err(DbError::Stopped);
                }
            }
            rows.clear();
        }
        Ok(())
    })
    .map_err(|e| failed.take().unwrap_or(e))?;
    if !rows.is_empty() {
        inserted += insert(to, table, &list, columns.len(), &rows)?;
    }
    Ok(inserted)
}

fn insert(
    to: &mut Db,
    table: &str,
    list: &str,
    width: usize,
    rows: &[Vec<Value>],
) -> Result<u64, DbError> {
    let one = format!("({})", vec!["?"; width].join(", "));
    let sql = format!(
        "INSERT INTO {table} ({list}) VALUES {} ON CONFLICT DO NOTHING",
        vec![one.as_str(); rows.len()].join(", ")
    );
    let params: Vec<&dyn Param> = rows.iter().flatten().map(|v| v as &dyn Param).collect();
    to.execute(&sql, &params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args;

    #[test]
    fn rows_are_copied_once_with_their_classes() {
        let a = rusqlite::Connection::open_in_memory().unwrap();
        let b = rusqlite::Connection::open_in_memory().unwrap();
        for c in [&a, &b] {
            c.execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER, h BLOB, x TEXT)")
                .unwrap();
        }
        let mut from = Db::Sqlite(&a);
        for i in 0..450i64 {
            let none: Option<String> = None;
            from.execute(
                "INSERT INTO t VALUES (?, ?, ?, ?)",
                args![format!("{i:04}"), i, vec![i as u8, 1], none],
            )
            .unwrap();
        }
        let mut to = Db::Sqlite(&b);
        let cols = ["id", "n", "h", "x"];
        assert_eq!(
            copy_table(&mut from, &mut to, "t", &cols, "id").unwrap(),
            450
        );
        assert_eq!(copy_table(&mut from, &mut to, "t", &cols, "id").unwrap(), 0);
        let row = to
            .query_row("SELECT n, h, x FROM t WHERE id = '0449'", &[], |r| {
                Ok((
                    r.get::<i64>(0)?,
                    r.get::<Vec<u8>>(1)?,
                    r.get::<Option<String>>(2)?,
                ))
            })
            .unwrap();
        assert_eq!(row, Some((449, vec![449u16 as u8, 1], None)));
    }
}
