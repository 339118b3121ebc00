//! Scan policies and results, written once for both backends (see
//! `sql.rs`). A scan's writes check its lease inside their transaction: on
//! PostgreSQL the check locks the job row (`FOR SHARE`), on SQLite the
//! store's write lock already keeps the lease from changing, so an attempt
//! that lost the job cannot write after the check.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::sql::{sql, Db, Row, SqlStore};
use super::{lease_lost, PgStore, SqliteStore};
use crate::audit::{Actor, Change};
use crate::error::{Error, Result};
use crate::job::Lease;
use crate::scans::classification::{ObjectClassification, ObjectStatus};
use crate::scans::leakage::{
    parse_severity, severity_text, FindingCursor, Incident, IncidentCursor, IncidentFilter,
    IncidentStatus, LeakageFinding, LeakageStats, NewFinding,
};
use crate::scans::policies::{policy_id_text, NewPolicy, Policy, PolicyFamily, PolicyPatch};
use crate::scans::{
    classification_stats_of, classification_status, leakage_stats_of, patch_details, stale_version,
    ClassificationStats, ObjectCursor, ScanStore, MAX_POLICIES,
};
use crate::JobId;

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

fn policy_from_row(row: &Row) -> Result<Policy> {
    Ok(Policy {
        id: row.uuid("id")?,
        tenant_id: row.text("tenant_id")?,
        family: PolicyFamily::parse(&row.text("family")?)?,
        name: row.text("name")?,
        description: row.text("description")?,
        enabled: row.bool("enabled")?,
        spec: row.json("spec")?,
        version: row.int4("version")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

fn finding_from_row(row: &Row) -> Result<LeakageFinding> {
    Ok(LeakageFinding {
        key: row.text("finding_key")?,
        fingerprint: row.text("fingerprint")?,
        rule: row.text("rule")?,
        severity: parse_severity(&row.text("severity")?)?,
        source: row.text("source")?,
        commit: row.opt_text("commit_sha")?,
        path: row.text("path")?,
        line: count(row.int("line")?),
        column: count(row.int("col")?),
        redacted: row.text("redacted")?,
        found_at: row.time("found_at")?,
    })
}

fn incident_from_row(row: &Row) -> Result<Incident> {
    Ok(Incident {
        fingerprint: row.text("fingerprint")?,
        rule: row.text("rule")?,
        severity: parse_severity(&row.text("severity")?)?,
        redacted: row.text("redacted")?,
        status: IncidentStatus::parse(&row.text("status")?)?,
        occurrences: count(row.int("occurrences")?),
        first_seen_at: row.time("first_seen_at")?,
        last_seen_at: row.time("last_seen_at")?,
        first_job_id: JobId::from_uuid(row.uuid("first_job_id")?),
        last_job_id: JobId::from_uuid(row.uuid("last_job_id")?),
        last_source: row.text("last_source")?,
        last_path: row.text("last_path")?,
        last_line: count(row.int("last_line")?),
        resolved_by: row.opt_text("resolved_by")?,
        resolved_at: row.opt_time("resolved_at")?,
        note: row.opt_text("note")?,
        updated_at: row.time("updated_at")?,
    })
}

fn classification_from_row(row: &Row) -> Result<ObjectClassification> {
    Ok(ObjectClassification {
        job_id: JobId::from_uuid(row.uuid("job_id")?),
        bucket: row.text("bucket")?,
        key: row.text("object_key")?,
        size: count(row.int("size")?),
        status: classification_status(&row.text("status")?)?,
        level: row.opt_text("level")?,
        data_types: serde_json::from_value(row.json("data_types")?)
            .map_err(|e| Error::corrupt("classification data types", e))?,
        counts: serde_json::from_value(row.json("counts")?)
            .map_err(|e| Error::corrupt("classification counts", e))?,
        format: row.opt_text("format")?,
        gzip: row.bool("gzip")?,
        truncated: row.bool("truncated")?,
        skip_reason: row.opt_text("skip_reason")?,
        classified_at: row.time("classified_at")?,
    })
}

/// A unique violation on a policy's name is a conflict naming it.
fn name_taken(error: Error, name: &str) -> Error {
    match &error {
        Error::Database {
            source: sqlx::Error::Database(db),
            ..
        } if db.is_unique_violation() => {
            Error::Conflict(format!("a policy named {name:?} already exists"))
        }
        _ => error,
    }
}

/// Checks the lease inside the caller's transaction (holding the job row on
/// PostgreSQL); the tenant of the job.
async fn hold_lease(db: &mut Db<'_>, lease: Lease) -> Result<String> {
    let text = db.pick(
        "SELECT tenant_id FROM jobs WHERE id = $1 AND attempt = $2 AND state = 'running' FOR SHARE",
        "SELECT tenant_id FROM jobs WHERE id = $1 AND attempt = $2 AND state = 'running'",
    );
    db.fetch_optional(
        sql("checking a scan's lease", text)
            .bind(lease.job_id)
            .bind(lease.attempt),
    )
    .await?
    .map(|row| row.text("tenant_id"))
    .transpose()?
    .ok_or_else(|| lease_lost(lease))
}

async fn create_policy(
    store: &impl SqlStore,
    tenant_id: &str,
    new: &NewPolicy,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<Policy> {
    let mut tx = store.write("starting to create a policy").await?;
    let mut db = tx.db();
    if let Db::Pg(_) = db {
        // Serializes creations per tenant so the cap holds (SQLite's write
        // lock already does).
        db.execute(
            sql(
                "locking the tenant's policies",
                "SELECT pg_advisory_xact_lock(hashtext('scan_policies:' || $1))",
            )
            .bind(tenant_id),
        )
        .await?;
    }
    let current = db
        .fetch_optional(
            sql(
                "counting the tenant's policies",
                "SELECT count(*) AS n FROM scan_policies WHERE tenant_id = $1 AND family = $2",
            )
            .bind(tenant_id)
            .bind(new.family.as_str()),
        )
        .await?
        .map(|row| row.int("n"))
        .transpose()?
        .unwrap_or(0);
    if current >= MAX_POLICIES {
        return Err(Error::LimitReached {
            what: "scan policies",
            limit: MAX_POLICIES,
            current,
        });
    }
    let row = db
        .fetch_optional(
            sql(
                "writing a scan policy",
                "INSERT INTO scan_policies (tenant_id, id, family, name, description, enabled, spec,
                                            version, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8) RETURNING *",
            )
            .bind(tenant_id)
            .bind(Uuid::now_v7())
            .bind(new.family.as_str())
            .bind(&new.name)
            .bind(&new.description)
            .bind(new.enabled)
            .bind(&new.spec)
            .bind(now),
        )
        .await
        .map_err(|e| name_taken(e, &new.name))?
        .ok_or_else(|| Error::corrupt("creating a policy", "no row returned"))?;
    let policy = policy_from_row(&row)?;
    db.record_change(
        tenant_id,
        actor,
        &Change::new(
            "scan_policy.create",
            "scan_policy",
            policy.id_text(),
            json!({"family": new.family.as_str(), "name": new.name, "enabled": new.enabled}),
        ),
        now,
    )
    .await?;
    tx.commit("creating a policy").await?;
    Ok(policy)
}

async fn get_policy(
    store: &impl SqlStore,
    tenant_id: &str,
    family: PolicyFamily,
    id: Uuid,
) -> Result<Policy> {
    let mut conn = store.read("reading a policy").await?;
    let row = conn
        .db()
        .fetch_optional(
            sql(
                "reading a policy",
                "SELECT * FROM scan_policies WHERE tenant_id = $1 AND family = $2 AND id = $3",
            )
            .bind(tenant_id)
            .bind(family.as_str())
            .bind(id),
        )
        .await?
        .ok_or_else(|| Error::no_such("policy", policy_id_text(family, id)))?;
    policy_from_row(&row)
}

async fn list_policies(
    store: &impl SqlStore,
    tenant_id: &str,
    family: PolicyFamily,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<Policy>> {
    let mut conn = store.read("listing policies").await?;
    conn.db()
        .fetch_all(
            sql(
                "listing policies",
                "SELECT * FROM scan_policies WHERE tenant_id = $1 AND family = $2
                   AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4",
            )
            .bind(tenant_id)
            .bind(family.as_str())
            .bind(after)
            .bind(i64::from(limit)),
        )
        .await?
        .iter()
        .map(policy_from_row)
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn update_policy(
    store: &impl SqlStore,
    tenant_id: &str,
    family: PolicyFamily,
    id: Uuid,
    patch: &PolicyPatch,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<Policy> {
    let mut tx = store.write("starting to update a policy").await?;
    let mut db = tx.db();
    let row = db
        .fetch_optional(
            sql(
                "updating a policy",
                "UPDATE scan_policies SET name = coalesce($4, name),
                        description = coalesce($5, description),
                        enabled = coalesce($6, enabled), spec = coalesce($7, spec),
                        version = version + 1, updated_at = $8
                 WHERE tenant_id = $1 AND family = $2 AND id = $3
                   AND ($9 IS NULL OR version = $9) RETURNING *",
            )
            .bind(tenant_id)
            .bind(family.as_str())
            .bind(id)
            .bind(&patch.name)
            .bind(&patch.description)
            .bind(patch.enabled)
            .bind(patch.spec.as_ref())
            .bind(now)
            .bind(patch.expected_version),
        )
        .await
        .map_err(|e| name_taken(e, patch.name.as_deref().unwrap_or_default()))?;
    let Some(row) = row else {
        // Missing, or changed since the version the caller read.
        let current = db
            .fetch_optional(
                sql(
                    "reading a policy's version",
                    "SELECT version FROM scan_policies
                     WHERE tenant_id = $1 AND family = $2 AND id = $3",
                )
                .bind(tenant_id)
                .bind(family.as_str())
                .bind(id),
            )
            .await?
            .map(|row| row.int4("version"))
            .transpose()?;
        return Err(match current {
            Some(version) => stale_version(family, id, version),
            None => Error::no_such("policy", policy_id_text(family, id)),
        });
    };
    let policy = policy_from_row(&row)?;
    db.record_change(
        tenant_id,
        actor,
        &Change::new(
            "scan_policy.update",
            "scan_policy",
            policy.id_text(),
            patch_details(patch, policy.version),
        ),
        now,
    )
    .await?;
    tx.commit("updating a policy").await?;
    Ok(policy)
}

async fn delete_policy(
    store: &impl SqlStore,
    tenant_id: &str,
    family: PolicyFamily,
    id: Uuid,
    actor: &Actor,
) -> Result<()> {
    let mut tx = store.write("starting to delete a policy").await?;
    let mut db = tx.db();
    let name = db
        .fetch_optional(
            sql(
                "deleting a policy",
                "DELETE FROM scan_policies WHERE tenant_id = $1 AND family = $2 AND id = $3
                 RETURNING name",
            )
            .bind(tenant_id)
            .bind(family.as_str())
            .bind(id),
        )
        .await?
        .map(|row| row.text("name"))
        .transpose()?;
    let Some(name) = name else {
        return Err(Error::no_such("policy", policy_id_text(family, id)));
    };
    db.record_change(
        tenant_id,
        actor,
        &Change::new(
            "scan_policy.delete",
            "scan_policy",
            policy_id_text(family, id),
            json!({"family": family.as_str(), "name": name}),
        ),
        Utc::now(),
    )
    .await?;
    tx.commit("deleting a policy").await
}

async fn record_findings(
    store: &impl SqlStore,
    lease: Lease,
    findings: &[NewFinding],
    now: DateTime<Utc>,
) -> Result<u64> {
    let mut tx = store.write("starting to record findings").await?;
    let mut db = tx.db();
    let tenant_id = hold_lease(&mut db, lease).await?;
    let mut new = 0;
    for (index, finding) in findings.iter().enumerate() {
        // A microsecond apart, so a scan's findings list in the order they
        // were found.
        let found_at = now + chrono::Duration::microseconds(index as i64);
        let inserted = db
            .execute(
                sql(
                    "recording a finding",
                    "INSERT INTO leakage_findings (job_id, finding_key, tenant_id, fingerprint, rule,
                         severity, source, commit_sha, path, line, col, redacted, found_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                     ON CONFLICT (job_id, finding_key) DO NOTHING",
                )
                .bind(lease.job_id)
                .bind(finding.key().as_str())
                .bind(&tenant_id)
                .bind(&finding.fingerprint)
                .bind(&finding.rule)
                .bind(severity_text(finding.severity))
                .bind(&finding.source)
                .bind(&finding.commit)
                .bind(&finding.path)
                .bind(finding.line)
                .bind(finding.column)
                .bind(&finding.redacted)
                .bind(found_at),
            )
            .await?;
        if inserted == 0 {
            continue;
        }
        new += 1;
        db.execute(
            sql(
                "opening an incident",
                "INSERT INTO leakage_incidents (tenant_id, fingerprint, rule, severity, redacted,
                     status, occurrences, first_seen_at, last_seen_at, first_job_id, last_job_id,
                     last_source, last_path, last_line, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 'open', 1, $6, $6, $7, $7, $8, $9, $10, $6)
                 ON CONFLICT (tenant_id, fingerprint) DO UPDATE
                    SET occurrences = leakage_incidents.occurrences + 1,
                        last_seen_at = excluded.last_seen_at, last_job_id = excluded.last_job_id,
                        last_source = excluded.last_source, last_path = excluded.last_path,
                        last_line = excluded.last_line, updated_at = excluded.updated_at",
            )
            .bind(&tenant_id)
            .bind(&finding.fingerprint)
            .bind(&finding.rule)
            .bind(severity_text(finding.severity))
            .bind(&finding.redacted)
            .bind(now)
            .bind(lease.job_id)
            .bind(&finding.source)
            .bind(&finding.path)
            .bind(finding.line),
        )
        .await?;
    }
    tx.commit("recording findings").await?;
    Ok(new)
}

/// `SELECT count(*) AS n …` as a number.
async fn count_of(store: &impl SqlStore, statement: super::sql::Sql) -> Result<u64> {
    let mut conn = store.read("counting").await?;
    let n = conn
        .db()
        .fetch_optional(statement)
        .await?
        .map(|row| row.int("n"))
        .transpose()?
        .unwrap_or(0);
    Ok(count(n))
}

async fn list_findings(
    store: &impl SqlStore,
    tenant_id: &str,
    job_id: JobId,
    after: Option<&FindingCursor>,
    limit: u32,
) -> Result<Vec<LeakageFinding>> {
    let mut conn = store.read("listing findings").await?;
    conn.db()
        .fetch_all(
            sql(
                "listing findings",
                "SELECT * FROM leakage_findings WHERE job_id = $1 AND tenant_id = $2
                   AND ($3 IS NULL OR (found_at, finding_key) > ($3, $4))
                 ORDER BY found_at, finding_key LIMIT $5",
            )
            .bind(job_id)
            .bind(tenant_id)
            .bind(after.map(|(at, _)| *at))
            .bind(after.map(|(_, key)| key.as_str()).unwrap_or_default())
            .bind(i64::from(limit)),
        )
        .await?
        .iter()
        .map(finding_from_row)
        .collect()
}

async fn list_incidents(
    store: &impl SqlStore,
    tenant_id: &str,
    filter: &IncidentFilter,
    after: Option<&IncidentCursor>,
    limit: u32,
) -> Result<Vec<Incident>> {
    let mut conn = store.read("listing incidents").await?;
    conn.db()
        .fetch_all(
            sql(
                "listing incidents",
                "SELECT * FROM leakage_incidents WHERE tenant_id = $1
                   AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR severity = $3)
                   AND ($4 IS NULL OR (first_seen_at, fingerprint) < ($4, $5))
                 ORDER BY first_seen_at DESC, fingerprint DESC LIMIT $6",
            )
            .bind(tenant_id)
            .bind(filter.status.map(IncidentStatus::as_str))
            .bind(filter.severity.map(severity_text))
            .bind(after.map(|(at, _)| *at))
            .bind(after.map(|(_, f)| f.as_str()).unwrap_or_default())
            .bind(i64::from(limit)),
        )
        .await?
        .iter()
        .map(incident_from_row)
        .collect()
}

async fn get_incident(
    store: &impl SqlStore,
    tenant_id: &str,
    fingerprint: &str,
) -> Result<Incident> {
    let mut conn = store.read("reading an incident").await?;
    let row = conn
        .db()
        .fetch_optional(
            sql(
                "reading an incident",
                "SELECT * FROM leakage_incidents WHERE tenant_id = $1 AND fingerprint = $2",
            )
            .bind(tenant_id)
            .bind(fingerprint),
        )
        .await?
        .ok_or_else(|| Error::no_such("incident", format!("inc_{fingerprint}")))?;
    incident_from_row(&row)
}

async fn set_incident_status(
    store: &impl SqlStore,
    tenant_id: &str,
    fingerprint: &str,
    status: IncidentStatus,
    note: Option<&str>,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<Incident> {
    let mut tx = store.write("starting to update an incident").await?;
    let mut db = tx.db();
    let row = db
        .fetch_optional(
            sql(
                "updating an incident",
                "UPDATE leakage_incidents SET status = $3, resolved_by = $4, resolved_at = $5,
                        note = coalesce($6, note), updated_at = $5
                 WHERE tenant_id = $1 AND fingerprint = $2 RETURNING *",
            )
            .bind(tenant_id)
            .bind(fingerprint)
            .bind(status.as_str())
            .bind(&actor.key_id)
            .bind(now)
            .bind(note),
        )
        .await?
        .ok_or_else(|| Error::no_such("incident", format!("inc_{fingerprint}")))?;
    let incident = incident_from_row(&row)?;
    let action = if status == IncidentStatus::Resolved {
        "leakage_incident.resolve"
    } else {
        "leakage_incident.reopen"
    };
    db.record_change(
        tenant_id,
        actor,
        &Change::new(
            action,
            "leakage_incident",
            format!("inc_{fingerprint}"),
            json!({"status": status.as_str(), "note": note}),
        ),
        now,
    )
    .await?;
    tx.commit("updating an incident").await?;
    Ok(incident)
}

async fn leakage_stats(store: &impl SqlStore, tenant_id: &str) -> Result<LeakageStats> {
    let findings = count_of(
        store,
        sql(
            "counting findings",
            "SELECT count(*) AS n FROM leakage_findings WHERE tenant_id = $1",
        )
        .bind(tenant_id),
    )
    .await?;
    let mut conn = store.read("counting incidents").await?;
    let rows = conn
        .db()
        .fetch_all(
            sql(
                "counting incidents",
                "SELECT severity, status, count(*) AS n FROM leakage_incidents
                 WHERE tenant_id = $1 GROUP BY severity, status",
            )
            .bind(tenant_id),
        )
        .await?;
    let mut groups = Vec::new();
    for row in &rows {
        groups.push((row.text("severity")?, row.text("status")?, row.int("n")?));
    }
    leakage_stats_of(i64::try_from(findings).unwrap_or(i64::MAX), groups)
}

async fn record_classifications(
    store: &impl SqlStore,
    lease: Lease,
    results: &[ObjectClassification],
    now: DateTime<Utc>,
) -> Result<()> {
    let mut tx = store.write("starting to record classifications").await?;
    let mut db = tx.db();
    let tenant_id = hold_lease(&mut db, lease).await?;
    for result in results {
        let data_types = json!(result.data_types);
        let counts = json!(result.counts);
        let status = match result.status {
            ObjectStatus::Classified => "classified",
            ObjectStatus::Skipped => "skipped",
        };
        db.execute(
            sql(
                "recording a classification",
                "INSERT INTO classification_results (job_id, bucket, object_key, tenant_id, size,
                     status, level, data_types, counts, format, gzip, truncated, skip_reason,
                     classified_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                 ON CONFLICT (job_id, bucket, object_key) DO UPDATE
                    SET size = excluded.size, status = excluded.status, level = excluded.level,
                        data_types = excluded.data_types, counts = excluded.counts,
                        format = excluded.format, gzip = excluded.gzip,
                        truncated = excluded.truncated, skip_reason = excluded.skip_reason,
                        classified_at = excluded.classified_at",
            )
            .bind(lease.job_id)
            .bind(&result.bucket)
            .bind(&result.key)
            .bind(&tenant_id)
            .bind(result.size)
            .bind(status)
            .bind(&result.level)
            .bind(&data_types)
            .bind(&counts)
            .bind(&result.format)
            .bind(result.gzip)
            .bind(result.truncated)
            .bind(&result.skip_reason)
            .bind(now),
        )
        .await?;
        let has = |t: &str| result.data_types.iter().any(|d| d == t);
        db.execute(
            sql(
                "recording an object's latest classification",
                "INSERT INTO classified_objects (tenant_id, bucket, object_key, job_id, size, level,
                     pii, phi, pci, classified_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (tenant_id, bucket, object_key) DO UPDATE
                    SET job_id = excluded.job_id, size = excluded.size, level = excluded.level,
                        pii = excluded.pii, phi = excluded.phi, pci = excluded.pci,
                        classified_at = excluded.classified_at
                    WHERE excluded.classified_at >= classified_objects.classified_at",
            )
            .bind(&tenant_id)
            .bind(&result.bucket)
            .bind(&result.key)
            .bind(lease.job_id)
            .bind(result.size)
            .bind(&result.level)
            .bind(has("pii"))
            .bind(has("phi"))
            .bind(has("pci"))
            .bind(now),
        )
        .await?;
    }
    tx.commit("recording classifications").await
}

async fn list_classifications(
    store: &impl SqlStore,
    tenant_id: &str,
    job_id: JobId,
    after: Option<&ObjectCursor>,
    limit: u32,
) -> Result<Vec<ObjectClassification>> {
    let mut conn = store.read("listing classifications").await?;
    conn.db()
        .fetch_all(
            sql(
                "listing classifications",
                "SELECT * FROM classification_results WHERE job_id = $1 AND tenant_id = $2
                   AND ($3 IS NULL OR (bucket, object_key) > ($3, $4))
                 ORDER BY bucket, object_key LIMIT $5",
            )
            .bind(job_id)
            .bind(tenant_id)
            .bind(after.map(|(bucket, _)| bucket.as_str()))
            .bind(after.map(|(_, key)| key.as_str()).unwrap_or_default())
            .bind(i64::from(limit)),
        )
        .await?
        .iter()
        .map(classification_from_row)
        .collect()
}

async fn classification_stats(
    store: &impl SqlStore,
    tenant_id: &str,
) -> Result<ClassificationStats> {
    let mut conn = store.read("counting classified objects").await?;
    let rows = conn
        .db()
        .fetch_all(
            sql(
                "counting classified objects",
                "SELECT level, count(*) AS n, CAST(coalesce(sum(size), 0) AS BIGINT) AS bytes,
                        count(*) FILTER (WHERE pii) AS pii, count(*) FILTER (WHERE phi) AS phi,
                        count(*) FILTER (WHERE pci) AS pci
                 FROM classified_objects WHERE tenant_id = $1 GROUP BY level",
            )
            .bind(tenant_id),
        )
        .await?;
    let mut groups = Vec::new();
    for row in &rows {
        let counts = [
            row.int("n")?,
            row.int("bytes")?,
            row.int("pii")?,
            row.int("phi")?,
            row.int("pci")?,
        ];
        groups.push((row.opt_text("level")?, counts));
    }
    Ok(classification_stats_of(groups))
}

/// `ScanStore` for a backend, through the functions above.
macro_rules! scan_store_for {
    ($store:ty) => {
        #[async_trait]
        impl ScanStore for $store {
            async fn create_policy(
                &self,
                tenant_id: &str,
                new: &NewPolicy,
                now: DateTime<Utc>,
                actor: &Actor,
            ) -> Result<Policy> {
                create_policy(self, tenant_id, new, now, actor).await
            }

            async fn get_policy(
                &self,
                tenant_id: &str,
                family: PolicyFamily,
                id: Uuid,
            ) -> Result<Policy> {
                get_policy(self, tenant_id, family, id).await
            }

            async fn list_policies(
                &self,
                tenant_id: &str,
                family: PolicyFamily,
                after: Option<Uuid>,
                limit: u32,
            ) -> Result<Vec<Policy>> {
                list_policies(self, tenant_id, family, after, limit).await
            }

            async fn update_policy(
                &self,
                tenant_id: &str,
                family: PolicyFamily,
                id: Uuid,
                patch: &PolicyPatch,
                now: DateTime<Utc>,
                actor: &Actor,
            ) -> Result<Policy> {
                update_policy(self, tenant_id, family, id, patch, now, actor).await
            }

            async fn delete_policy(
                &self,
                tenant_id: &str,
                family: PolicyFamily,
                id: Uuid,
                actor: &Actor,
            ) -> Result<()> {
                delete_policy(self, tenant_id, family, id, actor).await
            }

            async fn record_findings(
                &self,
                lease: Lease,
                findings: &[NewFinding],
                now: DateTime<Utc>,
            ) -> Result<u64> {
                record_findings(self, lease, findings, now).await
            }

            async fn count_findings(&self, tenant_id: &str, job_id: JobId) -> Result<u64> {
                count_of(
                    self,
                    sql(
                        "counting findings",
                        "SELECT count(*) AS n FROM leakage_findings
                         WHERE job_id = $1 AND tenant_id = $2",
                    )
                    .bind(job_id)
                    .bind(tenant_id),
                )
                .await
            }

            async fn list_findings(
                &self,
                tenant_id: &str,
                job_id: JobId,
                after: Option<&FindingCursor>,
                limit: u32,
            ) -> Result<Vec<LeakageFinding>> {
                list_findings(self, tenant_id, job_id, after, limit).await
            }

            async fn list_incidents(
                &self,
                tenant_id: &str,
                filter: &IncidentFilter,
                after: Option<&IncidentCursor>,
                limit: u32,
            ) -> Result<Vec<Incident>> {
                list_incidents(self, tenant_id, filter, after, limit).await
            }

            async fn get_incident(&self, tenant_id: &str, fingerprint: &str) -> Result<Incident> {
                get_incident(self, tenant_id, fingerprint).await
            }

            async fn set_incident_status(
                &self,
                tenant_id: &str,
                fingerprint: &str,
                status: IncidentStatus,
                note: Option<&str>,
                now: DateTime<Utc>,
                actor: &Actor,
            ) -> Result<Incident> {
                set_incident_status(self, tenant_id, fingerprint, status, note, now, actor).await
            }

            async fn leakage_stats(&self, tenant_id: &str) -> Result<LeakageStats> {
                leakage_stats(self, tenant_id).await
            }

            async fn record_classifications(
                &self,
                lease: Lease,
                results: &[ObjectClassification],
                now: DateTime<Utc>,
            ) -> Result<()> {
                record_classifications(self, lease, results, now).await
            }

            async fn list_classifications(
                &self,
                tenant_id: &str,
                job_id: JobId,
                after: Option<&ObjectCursor>,
                limit: u32,
            ) -> Result<Vec<ObjectClassification>> {
                list_classifications(self, tenant_id, job_id, after, limit).await
            }

            async fn count_classifications(&self, tenant_id: &str, job_id: JobId) -> Result<u64> {
                count_of(
                    self,
                    sql(
                        "counting classifications",
                        "SELECT count(*) AS n FROM classification_results
                         WHERE job_id = $1 AND tenant_id = $2",
                    )
                    .bind(job_id)
                    .bind(tenant_id),
                )
                .await
            }

            async fn classification_stats(&self, tenant_id: &str) -> Result<ClassificationStats> {
                classification_stats(self, tenant_id).await
            }
        }
    };
}

scan_store_for!(PgStore);
scan_store_for!(SqliteStore);
