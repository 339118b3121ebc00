//! Store logic written once for both backends (the CRUD-shaped domains; the
//! queue engine's hot statements stay per dialect). A statement is one SQL
//! text in PostgreSQL's form (`$1`, `$2`; SQLite gets `?1`, `?2`), its
//! arguments are typed values each backend encodes its own way (times as
//! `timestamptz` or microseconds, JSON as `jsonb` or text), and rows are
//! read through getters that decode the same way. Portable SQL only: no
//! `now()` (times are arguments), no `UPDATE … FROM`, no casts.
//!
//! A domain's logic is a set of functions over [`SqlStore`]: one write
//! transaction ([`SqlStore::write`]: `BEGIN` on PostgreSQL, the store's write
//! lock and `BEGIN IMMEDIATE` on SQLite) or reads on the pool
//! ([`SqlStore::read`]). Why not a query builder such as sea-query: these
//! statements are short, hand-written SQL reads better than its builder
//! calls, and the differences between the dialects here are values and
//! placeholders, not syntax.

use std::borrow::Cow;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{PgConnection, Row as _, SqliteConnection};
use uuid::Uuid;

use crate::error::{DbContext, Error, Result};
use crate::ids::JobId;

/// A value bound to a statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Uuid(Option<Uuid>),
    Text(Option<String>),
    Int(Option<i64>),
    Int4(Option<i32>),
    Int2(Option<i16>),
    Bool(Option<bool>),
    Bytes(Vec<u8>),
    Time(Option<DateTime<Utc>>),
    Json(Option<Value>),
}

impl From<Uuid> for Arg {
    fn from(value: Uuid) -> Self {
        Arg::Uuid(Some(value))
    }
}

impl From<JobId> for Arg {
    fn from(value: JobId) -> Self {
        Arg::Uuid(Some(value.as_uuid()))
    }
}

impl From<Option<JobId>> for Arg {
    fn from(value: Option<JobId>) -> Self {
        Arg::Uuid(value.map(|id| id.as_uuid()))
    }
}

impl From<&str> for Arg {
    fn from(value: &str) -> Self {
        Arg::Text(Some(value.to_string()))
    }
}

impl From<&String> for Arg {
    fn from(value: &String) -> Self {
        Arg::Text(Some(value.clone()))
    }
}

impl From<Option<&str>> for Arg {
    fn from(value: Option<&str>) -> Self {
        Arg::Text(value.map(str::to_string))
    }
}

impl From<i64> for Arg {
    fn from(value: i64) -> Self {
        Arg::Int(Some(value))
    }
}

impl From<u64> for Arg {
    /// Saturated at `i64::MAX` (sizes and counts never get there).
    fn from(value: u64) -> Self {
        Arg::Int(Some(i64::try_from(value).unwrap_or(i64::MAX)))
    }
}

impl From<i32> for Arg {
    fn from(value: i32) -> Self {
        Arg::Int4(Some(value))
    }
}

impl From<Option<i32>> for Arg {
    fn from(value: Option<i32>) -> Self {
        Arg::Int4(value)
    }
}

impl From<Option<i64>> for Arg {
    fn from(value: Option<i64>) -> Self {
        Arg::Int(value)
    }
}

impl From<&[u8]> for Arg {
    fn from(value: &[u8]) -> Self {
        Arg::Bytes(value.to_vec())
    }
}

impl From<Option<&Value>> for Arg {
    fn from(value: Option<&Value>) -> Self {
        Arg::Json(value.cloned())
    }
}

impl From<&Option<Value>> for Arg {
    fn from(value: &Option<Value>) -> Self {
        Arg::Json(value.clone())
    }
}

impl From<Option<i16>> for Arg {
    fn from(value: Option<i16>) -> Self {
        Arg::Int2(value)
    }
}

impl From<bool> for Arg {
    fn from(value: bool) -> Self {
        Arg::Bool(Some(value))
    }
}

impl From<Option<bool>> for Arg {
    fn from(value: Option<bool>) -> Self {
        Arg::Bool(value)
    }
}

impl From<Option<Uuid>> for Arg {
    fn from(value: Option<Uuid>) -> Self {
        Arg::Uuid(value)
    }
}

impl From<Option<String>> for Arg {
    fn from(value: Option<String>) -> Self {
        Arg::Text(value)
    }
}

impl From<&Option<String>> for Arg {
    fn from(value: &Option<String>) -> Self {
        Arg::Text(value.clone())
    }
}

impl From<DateTime<Utc>> for Arg {
    fn from(value: DateTime<Utc>) -> Self {
        Arg::Time(Some(value))
    }
}

impl From<Option<DateTime<Utc>>> for Arg {
    fn from(value: Option<DateTime<Utc>>) -> Self {
        Arg::Time(value)
    }
}

impl From<&Value> for Arg {
    fn from(value: &Value) -> Self {
        Arg::Json(Some(value.clone()))
    }
}

/// One statement: its text (PostgreSQL placeholders), its arguments, and
/// what it does (the context of its errors).
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    text: &'static str,
    args: Vec<Arg>,
    context: &'static str,
}

/// A statement that `context` names in its errors (`"recording an artifact"`).
pub(crate) fn sql(context: &'static str, text: &'static str) -> Sql {
    Sql {
        text,
        args: Vec::new(),
        context,
    }
}

impl Sql {
    /// Binds the next placeholder.
    pub(crate) fn bind(mut self, value: impl Into<Arg>) -> Self {
        self.args.push(value.into());
        self
    }
}

/// `$N` placeholders as SQLite's `?N` (a `$` not followed by a digit, as in
/// a JSON path `'$.id'`, is left alone).
fn sqlite_text(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    if !bytes
        .windows(2)
        .any(|w| w[0] == b'$' && w[1].is_ascii_digit())
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A connection (or transaction) of either backend.
pub(crate) enum Db<'c> {
    Pg(&'c mut PgConnection),
    Sqlite(&'c mut SqliteConnection),
}

impl Db<'_> {
    /// Picks a statement's text by dialect, where the two must differ (a
    /// row lock PostgreSQL needs and SQLite's write lock makes moot).
    pub(crate) fn pick(&self, postgres: &'static str, sqlite: &'static str) -> &'static str {
        match self {
            Db::Pg(_) => postgres,
            Db::Sqlite(_) => sqlite,
        }
    }

    /// Records an audited change in this transaction (`at`: when, where the
    /// backend does not read its own clock).
    pub(crate) async fn record_change(
        &mut self,
        tenant_id: &str,
        actor: &crate::audit::Actor,
        change: &crate::audit::Change,
        at: DateTime<Utc>,
    ) -> Result<()> {
        match self {
            Db::Pg(conn) => {
                super::postgres::audit::insert_change(conn, tenant_id, actor, change).await
            }
            Db::Sqlite(conn) => {
                super::sqlite::audit::insert_change(
                    conn,
                    at.timestamp_micros(),
                    tenant_id,
                    actor,
                    change,
                )
                .await
            }
        }
    }

    /// Runs a statement; answers the rows it changed.
    pub(crate) async fn execute(&mut self, statement: Sql) -> Result<u64> {
        match self {
            Db::Pg(conn) => Ok(pg_query(&statement)
                .execute(&mut **conn)
                .await
                .db(statement.context)?
                .rows_affected()),
            Db::Sqlite(conn) => {
                let text = sqlite_text(statement.text);
                Ok(sqlite_query(&text, &statement)
                    .execute(&mut **conn)
                    .await
                    .db(statement.context)?
                    .rows_affected())
            }
        }
    }

    pub(crate) async fn fetch_all(&mut self, statement: Sql) -> Result<Vec<Row>> {
        match self {
            Db::Pg(conn) => Ok(pg_query(&statement)
                .fetch_all(&mut **conn)
                .await
                .db(statement.context)?
                .into_iter()
                .map(Row::Pg)
                .collect()),
            Db::Sqlite(conn) => {
                let text = sqlite_text(statement.text);
                Ok(sqlite_query(&text, &statement)
                    .fetch_all(&mut **conn)
                    .await
                    .db(statement.context)?
                    .into_iter()
                    .map(Row::Sqlite)
                    .collect())
            }
        }
    }

    pub(crate) async fn fetch_optional(&mut self, statement: Sql) -> Result<Option<Row>> {
        match self {
            Db::Pg(conn) => Ok(pg_query(&statement)
                .fetch_optional(&mut **conn)
                .await
                .db(statement.context)?
                .map(Row::Pg)),
            Db::Sqlite(conn) => {
                let text = sqlite_text(statement.text);
                Ok(sqlite_query(&text, &statement)
                    .fetch_optional(&mut **conn)
                    .await
                    .db(statement.context)?
                    .map(Row::Sqlite))
            }
        }
    }
}

fn pg_query(
    statement: &Sql,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let mut query = sqlx::query(statement.text);
    for arg in &statement.args {
        query = match arg.clone() {
            Arg::Uuid(v) => query.bind(v),
            Arg::Text(v) => query.bind(v),
            Arg::Int(v) => query.bind(v),
            Arg::Int4(v) => query.bind(v),
            Arg::Int2(v) => query.bind(v),
            Arg::Bool(v) => query.bind(v),
            Arg::Bytes(v) => query.bind(v),
            Arg::Time(v) => query.bind(v),
            Arg::Json(v) => query.bind(v),
        };
    }
    query
}

fn sqlite_query<'q>(
    text: &'q str,
    statement: &Sql,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    let mut query = sqlx::query(text);
    for arg in &statement.args {
        query = match arg.clone() {
            Arg::Uuid(v) => query.bind(v),
            Arg::Text(v) => query.bind(v),
            Arg::Int(v) => query.bind(v),
            Arg::Int4(v) => query.bind(v),
            Arg::Int2(v) => query.bind(v),
            Arg::Bool(v) => query.bind(v),
            Arg::Bytes(v) => query.bind(v),
            Arg::Time(v) => query.bind(v.map(|t| t.timestamp_micros())),
            Arg::Json(v) => query.bind(v.map(|j| j.to_string())),
        };
    }
    query
}

/// A row of either backend, read by column name.
pub(crate) enum Row {
    Pg(PgRow),
    Sqlite(SqliteRow),
}

impl Row {
    pub(crate) fn text(&self, column: &str) -> Result<String> {
        self.get(column)
    }

    pub(crate) fn opt_text(&self, column: &str) -> Result<Option<String>> {
        self.get(column)
    }

    pub(crate) fn int(&self, column: &str) -> Result<i64> {
        self.get(column)
    }

    pub(crate) fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        self.get(column)
    }

    pub(crate) fn int4(&self, column: &str) -> Result<i32> {
        self.get(column)
    }

    pub(crate) fn opt_int4(&self, column: &str) -> Result<Option<i32>> {
        self.get(column)
    }

    pub(crate) fn opt_int2(&self, column: &str) -> Result<Option<i16>> {
        self.get(column)
    }

    pub(crate) fn bytes(&self, column: &str) -> Result<Vec<u8>> {
        self.get(column)
    }

    pub(crate) fn bool(&self, column: &str) -> Result<bool> {
        self.get(column)
    }

    pub(crate) fn uuid(&self, column: &str) -> Result<Uuid> {
        self.get(column)
    }

    pub(crate) fn opt_uuid(&self, column: &str) -> Result<Option<Uuid>> {
        self.get(column)
    }

    pub(crate) fn json(&self, column: &str) -> Result<Value> {
        match self {
            Row::Pg(row) => row.try_get(column).db("reading JSON"),
            Row::Sqlite(row) => {
                let text: String = row.try_get(column).db("reading JSON")?;
                serde_json::from_str(&text)
                    .map_err(|error| Error::corrupt("reading JSON", format!("{column}: {error}")))
            }
        }
    }

    pub(crate) fn time(&self, column: &str) -> Result<DateTime<Utc>> {
        self.opt_time(column)?
            .ok_or_else(|| Error::corrupt("reading a row", format!("{column} is NULL")))
    }

    pub(crate) fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>> {
        match self {
            Row::Pg(row) => row.try_get(column).db("reading a time"),
            Row::Sqlite(row) => {
                let micros: Option<i64> = row.try_get(column).db("reading a time")?;
                micros.map(super::sqlite_time).transpose()
            }
        }
    }

    fn get<T>(&self, column: &str) -> Result<T>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres>
            + sqlx::Type<sqlx::Postgres>
            + for<'r> sqlx::Decode<'r, sqlx::Sqlite>
            + sqlx::Type<sqlx::Sqlite>,
    {
        match self {
            Row::Pg(row) => row.try_get(column),
            Row::Sqlite(row) => row.try_get(column),
        }
        .map_err(|error| Error::corrupt("reading a row", format!("{column}: {error}")))
    }
}

/// A write transaction of either backend.
pub(crate) enum WriteTx {
    Pg(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(super::sqlite::WriteTx),
}

impl WriteTx {
    pub(crate) fn db(&mut self) -> Db<'_> {
        match self {
            WriteTx::Pg(tx) => Db::Pg(&mut *tx),
            WriteTx::Sqlite(tx) => Db::Sqlite(tx.conn()),
        }
    }

    pub(crate) async fn commit(self, context: &'static str) -> Result<()> {
        match self {
            WriteTx::Pg(tx) => tx.commit().await.db(context),
            WriteTx::Sqlite(tx) => tx.commit(context).await,
        }
    }
}

/// A connection for reads, from either backend's pool.
pub(crate) enum ReadConn {
    Pg(sqlx::pool::PoolConnection<sqlx::Postgres>),
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
}

impl ReadConn {
    pub(crate) fn db(&mut self) -> Db<'_> {
        match self {
            ReadConn::Pg(conn) => Db::Pg(&mut *conn),
            ReadConn::Sqlite(conn) => Db::Sqlite(&mut *conn),
        }
    }
}

/// What the shared store logic needs of a backend.
#[async_trait]
pub(crate) trait SqlStore: Send + Sync {
    /// A write transaction (on SQLite, under the store's write lock).
    async fn write(&self, context: &'static str) -> Result<WriteTx>;

    /// A connection for reads.
    async fn read(&self, context: &'static str) -> Result<ReadConn>;
}

#[async_trait]
impl SqlStore for super::PgStore {
    async fn write(&self, context: &'static str) -> Result<WriteTx> {
        Ok(WriteTx::Pg(self.pool().begin().await.db(context)?))
    }

    async fn read(&self, context: &'static str) -> Result<ReadConn> {
        Ok(ReadConn::Pg(self.pool().acquire().await.db(context)?))
    }
}

#[async_trait]
impl SqlStore for super::SqliteStore {
    async fn write(&self, context: &'static str) -> Result<WriteTx> {
        Ok(WriteTx::Sqlite(self.begin_write(context).await?))
    }

    async fn read(&self, context: &'static str) -> Result<ReadConn> {
        Ok(ReadConn::Sqlite(self.pool().acquire().await.db(context)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_sqlite_numbered_ones_and_json_paths_stay() {
        assert_eq!(
            sqlite_text("SELECT $1, $12 FROM t WHERE a = $2 AND j ->> '$.id' = $1"),
            "SELECT ?1, ?12 FROM t WHERE a = ?2 AND j ->> '$.id' = ?1"
        );
        assert!(matches!(sqlite_text("SELECT 1"), Cow::Borrowed(_)));
    }
}
