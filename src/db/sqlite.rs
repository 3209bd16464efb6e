//! [`Db`](super::Db) on a `rusqlite` connection: statements are prepared once per connection
//! (`prepare_cached`) and values bound and read without copies.

use rusqlite::types::{ToSqlOutput, ValueRef as SqlValue};
use rusqlite::{params_from_iter, Connection};

use super::{DbError, Param, Row, ValueRef};

pub(super) fn to_rusqlite(v: ValueRef<'_>) -> SqlValue<'_> {
    match v {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Integer(i),
        ValueRef::Real(f) => SqlValue::Real(f),
        ValueRef::Text(t) => SqlValue::Text(t),
        ValueRef::Blob(b) => SqlValue::Blob(b),
    }
}

struct Arg<'a>(&'a dyn Param);

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(to_rusqlite(self.0.value())))
    }
}

fn bound<'a>(params: &'a [&'a dyn Param]) -> impl Iterator<Item = Arg<'a>> + 'a {
    params.iter().map(|p| Arg(*p))
}

pub(super) fn execute(c: &Connection, sql: &str, params: &[&dyn Param]) -> Result<u64, DbError> {
    Ok(c.prepare_cached(sql)?
        .execute(params_from_iter(bound(params)))? as u64)
}

pub(super) fn query_each(
    c: &Connection,
    sql: &str,
    params: &[&dyn Param],
    each: &mut dyn FnMut(&Row) -> Result<(), DbError>,
) -> Result<(), DbError> {
    let mut stmt = c.prepare_cached(sql)?;
    let mut rows = stmt.query(params_from_iter(bound(params)))?;
    while let Some(row) = rows.next()? {
        each(&Row::Sqlite(row))?;
    }
    Ok(())
}

pub(super) fn value<'r>(row: &'r rusqlite::Row<'r>, i: usize) -> Result<ValueRef<'r>, DbError> {
    Ok(match row.get_ref(i)? {
        SqlValue::Null => ValueRef::Null,
        SqlValue::Integer(i) => ValueRef::Integer(i),
        SqlValue::Real(f) => ValueRef::Real(f),
        SqlValue::Text(t) => ValueRef::Text(t),
        SqlValue::Blob(b) => ValueRef::Blob(b),
    })
}
