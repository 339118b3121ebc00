//! The schema migrations of both stores, embedded in the binary.
//!
//! sqlx's `migrate!` macro would do the same, but it needs sqlx's `macros`
//! feature, which builds sqlx and both database drivers (SQLite's C source
//! included) a second time for the compiler host: minutes of every clean
//! build. These lists hold the same files; `Migration::new` computes the same
//! checksum and the description is derived from the file name as sqlx does,
//! so databases migrated by either way agree. A test checks that each list
//! names every file of its folder.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

/// One embedded migration file: its name (`0001_jobs.sql`) and its SQL.
type Embedded = (&'static str, &'static str);

macro_rules! embed {
    ($dir:literal: $($file:literal),+ $(,)?) => {
        &[$(($file, include_str!(concat!("../../../migrations/", $dir, "/", $file)))),+]
    };
}

/// PostgreSQL's migrations, in order.
pub(crate) const POSTGRES: &[Embedded] = embed!("postgres":
    "0001_jobs.sql",
    "0002_tenancy.sql",
    "0003_usage.sql",
    "0004_audit.sql",
    "0005_schedules.sql",
    "0006_artifacts.sql",
    "0007_scans.sql",
    "0008_job_error_codes.sql",
    "0009_schedule_skips.sql",
    "0010_audit_reads_job_events.sql",
    "0011_running_counters.sql",
    "0012_retention.sql",
    "0013_workers.sql",
    "0014_webhooks.sql",
    "0015_throughput.sql",
    "0016_quota_counted_jobs.sql",
);

/// SQLite's migrations, in order.
pub(crate) const SQLITE: &[Embedded] = embed!("sqlite":
    "0001_jobs.sql",
    "0002_tenancy.sql",
    "0003_usage.sql",
    "0004_audit.sql",
    "0005_schedules.sql",
    "0006_artifacts.sql",
    "0007_scans.sql",
    "0008_job_error_codes.sql",
    "0009_schedule_skips.sql",
    "0010_audit_reads_job_events.sql",
    "0011_retention.sql",
    "0012_workers.sql",
    "0013_webhooks.sql",
    "0014_throughput.sql",
    "0015_quota_counted_jobs.sql",
);

/// A list of embedded files as a source sqlx's `Migrator` reads.
#[derive(Debug)]
struct EmbeddedSource(&'static [Embedded]);

impl MigrationSource<'static> for EmbeddedSource {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, sqlx::error::BoxDynError>> + Send>>
    {
        Box::pin(async move { self.0.iter().map(|m| to_migration(*m)).collect() })
    }
}

/// What sqlx's folder source makes of one file: the version before the first
/// `_`, the rest of the name (less `.sql`, `_` as spaces) as the description.
fn to_migration((file, sql): Embedded) -> Result<Migration, sqlx::error::BoxDynError> {
    let (version, rest) = file
        .split_once('_')
        .ok_or_else(|| format!("migration file {file:?} has no `_` after its version"))?;
    let version: i64 = version
        .parse()
        .map_err(|_| format!("migration file {file:?} does not start with a number"))?;
    let kind = MigrationType::from_filename(rest);
    let description = rest.trim_end_matches(kind.suffix()).replace('_', " ");
    Ok(Migration::new(
        version,
        Cow::Owned(description),
        kind,
        Cow::Borrowed(sql),
        sql.starts_with("-- no-transaction"),
    ))
}

/// The migrator of one store's embedded list.
pub(crate) async fn migrator(files: &'static [Embedded]) -> crate::error::Result<Migrator> {
    Ok(Migrator::new(EmbeddedSource(files)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_in(dir: &str) -> Vec<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/");
        let mut names: Vec<String> = std::fs::read_dir(format!("{path}{dir}"))
            .expect("reading the migrations folder")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        names.sort();
        names
    }

    fn embedded(list: &[Embedded]) -> Vec<String> {
        list.iter().map(|(f, _)| f.to_string()).collect()
    }

    #[test]
    fn every_migration_file_is_embedded_in_order() {
        assert_eq!(embedded(POSTGRES), files_in("postgres"));
        assert_eq!(embedded(SQLITE), files_in("sqlite"));
    }

    #[tokio::test]
    async fn embedded_migrations_match_what_the_folder_source_reads() {
        for (dir, list) in [("postgres", POSTGRES), ("sqlite", SQLITE)] {
            let path =
                std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"))
                    .join(dir);
            let from_folder = Migrator::new(path).await.expect("folder migrations");
            let ours = migrator(list).await.expect("embedded migrations");
            let key = |m: &Migration| (m.version, m.description.to_string(), m.checksum.to_vec());
            let a: Vec<_> = from_folder.iter().map(key).collect();
            let b: Vec<_> = ours.iter().map(key).collect();
            assert_eq!(a, b, "{dir}");
        }
    }
}
