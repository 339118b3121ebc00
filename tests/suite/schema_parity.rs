//! Both stores' migrations define the same schema: the same tables, the same
//! columns per table, and the same named indexes over the same columns
//! (partial-index predicates and column types are dialect-specific and not
//! compared). A table or index one dialect needs and the other does not is
//! listed in `ONLY_POSTGRES` with the reason.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{Connection, Row};

use crate::harness;

/// Tables (and indexes, by name) that exist on PostgreSQL only, and why.
const ONLY_POSTGRES: &[(&str, &str)] = &[(
    "tenant_running",
    "running counters of capped tenants, so concurrent claims reserve slots \
     without a global lock; SQLite has one writer at a time and counts instead",
)];

/// A schema as both dialects can describe it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Schema {
    /// Table → its columns.
    tables: BTreeMap<String, BTreeSet<String>>,
    /// Index name → (table, indexed columns in order; `<expr>` for expressions).
    indexes: BTreeMap<String, (String, Vec<String>)>,
}

impl Schema {
    fn without_postgres_only(mut self) -> Self {
        for (name, _why) in ONLY_POSTGRES {
            self.tables.remove(*name);
            self.indexes
                .retain(|index, (table, _)| index != name && table != name);
        }
        self
    }
}

async fn postgres_schema(url: &str) -> Schema {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connecting to the test schema");
    let mut schema = Schema::default();
    let columns = sqlx::query(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut conn)
    .await
    .expect("reading PostgreSQL columns");
    for row in columns {
        schema
            .tables
            .entry(row.get(0))
            .or_default()
            .insert(row.get(1));
    }
    // Indexes created by CREATE INDEX, not those backing a primary key or a
    // UNIQUE constraint (SQLite's equivalents are unnamed autoindexes).
    let indexes = sqlx::query(
        "SELECT ic.relname::text, tc.relname::text,
                array(SELECT coalesce(a.attname::text, '<expr>')
                      FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                      LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                      ORDER BY k.n)
         FROM pg_index i
         JOIN pg_class ic ON ic.oid = i.indexrelid
         JOIN pg_class tc ON tc.oid = i.indrelid
         JOIN pg_namespace ns ON ns.oid = tc.relnamespace
         WHERE ns.nspname = current_schema()
           AND tc.relname <> '_sqlx_migrations'
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
    )
    .fetch_all(&mut conn)
    .await
    .expect("reading PostgreSQL indexes");
    for row in indexes {
        schema
            .indexes
            .insert(row.get(0), (row.get(1), row.get::<Vec<String>, _>(2)));
    }
    schema
}

async fn sqlite_schema(url: &str) -> Schema {
    let mut conn = sqlx::SqliteConnection::connect(url)
        .await
        .expect("opening the test SQLite file");
    let mut schema = Schema::default();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table'
         AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut conn)
    .await
    .expect("reading SQLite tables");
    for table in tables {
        let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?1)")
            .bind(&table)
            .fetch_all(&mut conn)
            .await
            .expect("reading SQLite columns");
        schema.tables.insert(table, columns.into_iter().collect());
    }
    // Named indexes only (`sql` is NULL for autoindexes of keys and UNIQUE).
    let indexes = sqlx::query(
        "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
    )
    .fetch_all(&mut conn)
    .await
    .expect("reading SQLite indexes");
    for row in indexes {
        let name: String = row.get(0);
        let columns: Vec<Option<String>> =
            sqlx::query_scalar("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")
                .bind(&name)
                .fetch_all(&mut conn)
                .await
                .expect("reading SQLite index columns");
        let columns = columns
            .into_iter()
            .map(|c| c.unwrap_or_else(|| "<expr>".into()))
            .collect();
        schema.indexes.insert(name, (row.get(1), columns));
    }
    schema
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_sqlite_migrations_define_the_same_schema() {
    let postgres = harness::postgres().await;
    let sqlite = harness::sqlite().await;
    let postgres = postgres_schema(&postgres.url).await;
    let sqlite = sqlite_schema(&sqlite.url).await;

    // The comparison sees real schemas (a broken reader would compare two
    // empty ones).
    assert!(postgres.tables.contains_key("jobs"), "{postgres:?}");
    assert!(postgres.indexes.contains_key("jobs_claim_idx"));
    assert!(sqlite.tables["jobs"].contains("vtime"));
    for (name, _why) in ONLY_POSTGRES {
        assert!(
            postgres.tables.contains_key(*name),
            "{name} is listed as PostgreSQL-only but does not exist there"
        );
    }

    let postgres = postgres.without_postgres_only();
    let table_names = |s: &Schema| s.tables.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(
        table_names(&postgres),
        table_names(&sqlite),
        "tables differ between the PostgreSQL and SQLite migrations"
    );
    for (table, columns) in &postgres.tables {
        assert_eq!(
            columns, &sqlite.tables[table],
            "columns of {table} differ between the PostgreSQL and SQLite migrations"
        );
    }
    assert_eq!(
        postgres.indexes, sqlite.indexes,
        "indexes differ between the PostgreSQL and SQLite migrations"
    );
}
