//! Scan policies and results on SQLite: all of their SQL. Writes hold the
//! store's write lock (so a scan's lease cannot change between its check and
//! the write); times are microseconds since the epoch, JSON is text.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use super::audit::insert_change as record;
use crate::audit::{Actor, Change};
use crate::error::{DbContext, Error, Result};
use crate::job::Lease;
use crate::scans::classification::{ObjectClassification, ObjectStatus};
use crate::scans::leakage::{
    parse_severity, severity_text, FindingCursor, Incident, IncidentCursor, IncidentFilter,
    IncidentStatus, LeakageFinding, LeakageStats, NewFinding,
};
use crate::scans::policies::{policy_id_text, NewPolicy, Policy, PolicyFamily, PolicyPatch};
use crate::scans::{ClassificationStats, ObjectCursor, ScanStore, MAX_POLICIES};
use crate::store::{lease_lost, sqlite_time, SqliteStore};
use crate::JobId;

fn json_of(text: String) -> Result<Value> {
    serde_json::from_str(&text).map_err(|e| Error::corrupt("scan JSON column", e))
}

fn policy_from_row(row: &SqliteRow) -> Result<Policy> {
    let read = "reading a scan policy";
    let family: String = row.try_get("family").db(read)?;
    Ok(Policy {
        id: row.try_get("id").db(read)?,
        tenant_id: row.try_get("tenant_id").db(read)?,
        family: PolicyFamily::parse(&family)?,
        name: row.try_get("name").db(read)?,
        description: row.try_get("description").db(read)?,
        enabled: row.try_get("enabled").db(read)?,
        spec: json_of(row.try_get("spec").db(read)?)?,
        version: row.try_get("version").db(read)?,
        created_at: sqlite_time(row.try_get("created_at").db(read)?)?,
        updated_at: sqlite_time(row.try_get("updated_at").db(read)?)?,
    })
}

fn finding_from_row(row: &SqliteRow) -> Result<LeakageFinding> {
    let read = "reading a leakage finding";
    let severity: String = row.try_get("severity").db(read)?;
    let line: i64 = row.try_get("line").db(read)?;
    let column: i64 = row.try_get("col").db(read)?;
    Ok(LeakageFinding {
        key: row.try_get("finding_key").db(read)?,
        fingerprint: row.try_get("fingerprint").db(read)?,
        rule: row.try_get("rule").db(read)?,
        severity: parse_severity(&severity)?,
        source: row.try_get("source").db(read)?,
        commit: row.try_get("commit_sha").db(read)?,
        path: row.try_get("path").db(read)?,
        line: line.max(0) as u64,
        column: column.max(0) as u64,
        redacted: row.try_get("redacted").db(read)?,
        found_at: sqlite_time(row.try_get("found_at").db(read)?)?,
    })
}

fn incident_from_row(row: &SqliteRow) -> Result<Incident> {
    let read = "reading a leakage incident";
    let severity: String = row.try_get("severity").db(read)?;
    let status: String = row.try_get("status").db(read)?;
    let occurrences: i64 = row.try_get("occurrences").db(read)?;
    let last_line: i64 = row.try_get("last_line").db(read)?;
    Ok(Incident {
        fingerprint: row.try_get("fingerprint").db(read)?,
        rule: row.try_get("rule").db(read)?,
        severity: parse_severity(&severity)?,
        redacted: row.try_get("redacted").db(read)?,
        status: IncidentStatus::parse(&status)?,
        occurrences: occurrences.max(0) as u64,
        first_seen_at: sqlite_time(row.try_get("first_seen_at").db(read)?)?,
        last_seen_at: sqlite_time(row.try_get("last_seen_at").db(read)?)?,
        first_job_id: JobId::from_uuid(row.try_get("first_job_id").db(read)?),
        last_job_id: JobId::from_uuid(row.try_get("last_job_id").db(read)?),
        last_source: row.try_get("last_source").db(read)?,
        last_path: row.try_get("last_path").db(read)?,
        last_line: last_line.max(0) as u64,
        resolved_by: row.try_get("resolved_by").db(read)?,
        resolved_at: row
            .try_get::<Option<i64>, _>("resolved_at")
            .db(read)?
            .map(sqlite_time)
            .transpose()?,
        note: row.try_get("note").db(read)?,
        updated_at: sqlite_time(row.try_get("updated_at").db(read)?)?,
    })
}

fn classification_from_row(row: &SqliteRow) -> Result<ObjectClassification> {
    let read = "reading a classification result";
    let status: String = row.try_get("status").db(read)?;
    let size: i64 = row.try_get("size").db(read)?;
    let data_types = json_of(row.try_get("data_types").db(read)?)?;
    let counts = json_of(row.try_get("counts").db(read)?)?;
    Ok(ObjectClassification {
        job_id: JobId::from_uuid(row.try_get("job_id").db(read)?),
        bucket: row.try_get("bucket").db(read)?,
        key: row.try_get("object_key").db(read)?,
        size: size.max(0) as u64,
        status: crate::scans::classification_status(&status)?,
        level: row.try_get("level").db(read)?,
        data_types: serde_json::from_value(data_types)
            .map_err(|e| Error::corrupt("classification data types", e))?,
        counts: serde_json::from_value(counts)
            .map_err(|e| Error::corrupt("classification counts", e))?,
        format: row.try_get("format").db(read)?,
        gzip: row.try_get("gzip").db(read)?,
        truncated: row.try_get("truncated").db(read)?,
        skip_reason: row.try_get("skip_reason").db(read)?,
        classified_at: sqlite_time(row.try_get("classified_at").db(read)?)?,
    })
}

fn name_taken(error: sqlx::Error, name: &str) -> Error {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Error::Conflict(format!("a policy named {name:?} already exists"))
        }
        _ => Error::Database {
            context: "writing a scan policy",
            source: error,
        },
    }
}

/// Locks the job row while the lease holds; the tenant of the job.
async fn hold_lease(conn: &mut SqliteConnection, lease: Lease) -> Result<String> {
    sqlx::query_scalar(
        "SELECT tenant_id FROM jobs WHERE id = ?1 AND attempt = ?2 AND state = 'running'",
    )
    .bind(lease.job_id.as_uuid())
    .bind(lease.attempt)
    .fetch_optional(&mut *conn)
    .await
    .db("checking a scan's lease")?
    .ok_or_else(|| lease_lost(lease))
}

#[async_trait]
impl ScanStore for SqliteStore {
    async fn create_policy(
        &self,
        tenant_id: &str,
        new: &NewPolicy,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<Policy> {
        let mut tx = self.begin_write("starting to create a policy").await?;
        let current: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM scan_policies WHERE tenant_id = ?1 AND family = ?2",
        )
        .bind(tenant_id)
        .bind(new.family.as_str())
        .fetch_one(tx.conn())
        .await
        .db("counting the tenant's policies")?;
        if current >= MAX_POLICIES {
            return Err(Error::LimitReached {
                what: "scan policies",
                limit: MAX_POLICIES,
                current,
            });
        }
        let row = sqlx::query(
            "INSERT INTO scan_policies (tenant_id, id, family, name, description, enabled, spec, version, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?8) RETURNING *",
        )
        .bind(tenant_id)
        .bind(Uuid::now_v7())
        .bind(new.family.as_str())
        .bind(&new.name)
        .bind(&new.description)
        .bind(new.enabled)
        .bind(new.spec.to_string())
        .bind(now.timestamp_micros())
        .fetch_one(tx.conn())
        .await
        .map_err(|e| name_taken(e, &new.name))?;
        let policy = policy_from_row(&row)?;
        record(
            tx.conn(),
            now.timestamp_micros(),
            tenant_id,
            actor,
            &Change::new(
                "scan_policy.create",
                "scan_policy",
                policy.id_text(),
                json!({"family": new.family.as_str(), "name": new.name, "enabled": new.enabled}),
            ),
        )
        .await?;
        tx.commit("creating a policy").await?;
        Ok(policy)
    }

    async fn get_policy(&self, tenant_id: &str, family: PolicyFamily, id: Uuid) -> Result<Policy> {
        let row = sqlx::query(
            "SELECT * FROM scan_policies WHERE tenant_id = ?1 AND family = ?2 AND id = ?3",
        )
        .bind(tenant_id)
        .bind(family.as_str())
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .db("reading a policy")?
        .ok_or_else(|| Error::no_such("policy", policy_id_text(family, id)))?;
        policy_from_row(&row)
    }

    async fn list_policies(
        &self,
        tenant_id: &str,
        family: PolicyFamily,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Policy>> {
        let rows = sqlx::query(
            "SELECT * FROM scan_policies WHERE tenant_id = ?1 AND family = ?2
               AND (?3 IS NULL OR id > ?3) ORDER BY id LIMIT ?4",
        )
        .bind(tenant_id)
        .bind(family.as_str())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .db("listing policies")?;
        rows.iter().map(policy_from_row).collect()
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
        let mut tx = self.begin_write("starting to update a policy").await?;
        let row = sqlx::query(
            "UPDATE scan_policies SET name = coalesce(?4, name), description = coalesce(?5, description),
                    enabled = coalesce(?6, enabled), spec = coalesce(?7, spec),
                    version = version + 1, updated_at = ?8
             WHERE tenant_id = ?1 AND family = ?2 AND id = ?3
               AND (?9 IS NULL OR version = ?9) RETURNING *",
        )
        .bind(tenant_id)
        .bind(family.as_str())
        .bind(id)
        .bind(&patch.name)
        .bind(&patch.description)
        .bind(patch.enabled)
        .bind(patch.spec.as_ref().map(Value::to_string))
        .bind(now.timestamp_micros())
        .bind(patch.expected_version)
        .fetch_optional(tx.conn())
        .await
        .map_err(|e| name_taken(e, patch.name.as_deref().unwrap_or_default()))?;
        let Some(row) = row else {
            // Missing, or changed since the version the caller read.
            let current: Option<i32> = sqlx::query_scalar(
                "SELECT version FROM scan_policies WHERE tenant_id = ?1 AND family = ?2 AND id = ?3",
            )
            .bind(tenant_id)
            .bind(family.as_str())
            .bind(id)
            .fetch_optional(tx.conn())
            .await
            .db("reading a policy's version")?;
            return Err(match current {
                Some(version) => crate::scans::stale_version(family, id, version),
                None => Error::no_such("policy", policy_id_text(family, id)),
            });
        };
        let policy = policy_from_row(&row)?;
        record(
            tx.conn(),
            now.timestamp_micros(),
            tenant_id,
            actor,
            &Change::new(
                "scan_policy.update",
                "scan_policy",
                policy.id_text(),
                crate::scans::patch_details(patch, policy.version),
            ),
        )
        .await?;
        tx.commit("updating a policy").await?;
        Ok(policy)
    }

    async fn delete_policy(
        &self,
        tenant_id: &str,
        family: PolicyFamily,
        id: Uuid,
        actor: &Actor,
    ) -> Result<()> {
        let mut tx = self.begin_write("starting to delete a policy").await?;
        let name: Option<String> = sqlx::query_scalar(
            "DELETE FROM scan_policies WHERE tenant_id = ?1 AND family = ?2 AND id = ?3 RETURNING name",
        )
        .bind(tenant_id)
        .bind(family.as_str())
        .bind(id)
        .fetch_optional(tx.conn())
        .await
        .db("deleting a policy")?;
        let Some(name) = name else {
            return Err(Error::no_such("policy", policy_id_text(family, id)));
        };
        record(
            tx.conn(),
            Utc::now().timestamp_micros(),
            tenant_id,
            actor,
            &Change::new(
                "scan_policy.delete",
                "scan_policy",
                policy_id_text(family, id),
                json!({"family": family.as_str(), "name": name}),
            ),
        )
        .await?;
        tx.commit("deleting a policy").await
    }

    async fn record_findings(
        &self,
        lease: Lease,
        findings: &[NewFinding],
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let mut tx = self.begin_write("starting to record findings").await?;
        let tenant_id = hold_lease(tx.conn(), lease).await?;
        let mut new = 0;
        for (index, finding) in findings.iter().enumerate() {
            // A microsecond apart, so a scan's findings list in the order
            // they were found.
            let found_at = now + chrono::Duration::microseconds(index as i64);
            let inserted = sqlx::query(
                "INSERT INTO leakage_findings (job_id, finding_key, tenant_id, fingerprint, rule, severity,
                     source, commit_sha, path, line, col, redacted, found_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (job_id, finding_key) DO NOTHING",
            )
            .bind(lease.job_id.as_uuid())
            .bind(finding.key())
            .bind(&tenant_id)
            .bind(&finding.fingerprint)
            .bind(&finding.rule)
            .bind(severity_text(finding.severity))
            .bind(&finding.source)
            .bind(&finding.commit)
            .bind(&finding.path)
            .bind(finding.line as i64)
            .bind(finding.column as i64)
            .bind(&finding.redacted)
            .bind(found_at.timestamp_micros())
            .execute(tx.conn())
            .await
            .db("recording a finding")?
            .rows_affected();
            if inserted == 0 {
                continue;
            }
            new += 1;
            sqlx::query(
                "INSERT INTO leakage_incidents (tenant_id, fingerprint, rule, severity, redacted, status,
                     occurrences, first_seen_at, last_seen_at, first_job_id, last_job_id,
                     last_source, last_path, last_line, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'open', 1, ?6, ?6, ?7, ?7, ?8, ?9, ?10, ?6)
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
            .bind(now.timestamp_micros())
            .bind(lease.job_id.as_uuid())
            .bind(&finding.source)
            .bind(&finding.path)
            .bind(finding.line as i64)
            .execute(tx.conn())
            .await
            .db("opening an incident")?;
        }
        tx.commit("recording findings").await?;
        Ok(new)
    }

    async fn count_findings(&self, tenant_id: &str, job_id: JobId) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM leakage_findings WHERE job_id = ?1 AND tenant_id = ?2",
        )
        .bind(job_id.as_uuid())
        .bind(tenant_id)
        .fetch_one(self.pool())
        .await
        .db("counting findings")?;
        Ok(count.max(0) as u64)
    }

    async fn list_findings(
        &self,
        tenant_id: &str,
        job_id: JobId,
        after: Option<&FindingCursor>,
        limit: u32,
    ) -> Result<Vec<LeakageFinding>> {
        let rows = sqlx::query(
            "SELECT * FROM leakage_findings WHERE job_id = ?1 AND tenant_id = ?2
               AND (?3 IS NULL OR (found_at, finding_key) > (?3, ?4))
             ORDER BY found_at, finding_key LIMIT ?5",
        )
        .bind(job_id.as_uuid())
        .bind(tenant_id)
        .bind(after.map(|(at, _)| at.timestamp_micros()))
        .bind(after.map(|(_, key)| key.as_str()).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .db("listing findings")?;
        rows.iter().map(finding_from_row).collect()
    }

    async fn list_incidents(
        &self,
        tenant_id: &str,
        filter: &IncidentFilter,
        after: Option<&IncidentCursor>,
        limit: u32,
    ) -> Result<Vec<Incident>> {
        let rows = sqlx::query(
            "SELECT * FROM leakage_incidents WHERE tenant_id = ?1
               AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR severity = ?3)
               AND (?4 IS NULL OR (first_seen_at, fingerprint) < (?4, ?5))
             ORDER BY first_seen_at DESC, fingerprint DESC LIMIT ?6",
        )
        .bind(tenant_id)
        .bind(filter.status.map(IncidentStatus::as_str))
        .bind(filter.severity.map(severity_text))
        .bind(after.map(|(at, _)| at.timestamp_micros()))
        .bind(after.map(|(_, f)| f.as_str()).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .db("listing incidents")?;
        rows.iter().map(incident_from_row).collect()
    }

    async fn get_incident(&self, tenant_id: &str, fingerprint: &str) -> Result<Incident> {
        let row = sqlx::query(
            "SELECT * FROM leakage_incidents WHERE tenant_id = ?1 AND fingerprint = ?2",
        )
        .bind(tenant_id)
        .bind(fingerprint)
        .fetch_optional(self.pool())
        .await
        .db("reading an incident")?
        .ok_or_else(|| Error::no_such("incident", format!("inc_{fingerprint}")))?;
        incident_from_row(&row)
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
        let mut tx = self.begin_write("starting to update an incident").await?;
        let row = sqlx::query(
            "UPDATE leakage_incidents SET status = ?3, resolved_by = ?4, resolved_at = ?5,
                    note = coalesce(?6, note), updated_at = ?5
             WHERE tenant_id = ?1 AND fingerprint = ?2 RETURNING *",
        )
        .bind(tenant_id)
        .bind(fingerprint)
        .bind(status.as_str())
        .bind(&actor.key_id)
        .bind(now.timestamp_micros())
        .bind(note)
        .fetch_optional(tx.conn())
        .await
        .db("updating an incident")?
        .ok_or_else(|| Error::no_such("incident", format!("inc_{fingerprint}")))?;
        let incident = incident_from_row(&row)?;
        record(
            tx.conn(),
            now.timestamp_micros(),
            tenant_id,
            actor,
            &Change::new(
                if status == IncidentStatus::Resolved {
                    "leakage_incident.resolve"
                } else {
                    "leakage_incident.reopen"
                },
                "leakage_incident",
                format!("inc_{fingerprint}"),
                json!({"status": status.as_str(), "note": note}),
            ),
        )
        .await?;
        tx.commit("updating an incident").await?;
        Ok(incident)
    }

    async fn leakage_stats(&self, tenant_id: &str) -> Result<LeakageStats> {
        let findings: i64 =
            sqlx::query_scalar("SELECT count(*) FROM leakage_findings WHERE tenant_id = ?1")
                .bind(tenant_id)
                .fetch_one(self.pool())
                .await
                .db("counting findings")?;
        let rows = sqlx::query(
            "SELECT severity, status, count(*) AS n FROM leakage_incidents WHERE tenant_id = ?1
             GROUP BY severity, status",
        )
        .bind(tenant_id)
        .fetch_all(self.pool())
        .await
        .db("counting incidents")?;
        let mut groups = Vec::new();
        for row in &rows {
            let severity: String = row.try_get("severity").db("reading incident counts")?;
            let status: String = row.try_get("status").db("reading incident counts")?;
            let n: i64 = row.try_get("n").db("reading incident counts")?;
            groups.push((severity, status, n));
        }
        crate::scans::leakage_stats_of(findings, groups)
    }

    async fn record_classifications(
        &self,
        lease: Lease,
        results: &[ObjectClassification],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self
            .begin_write("starting to record classifications")
            .await?;
        let tenant_id = hold_lease(tx.conn(), lease).await?;
        for result in results {
            let data_types = json!(result.data_types);
            let counts = json!(result.counts);
            let status = match result.status {
                ObjectStatus::Classified => "classified",
                ObjectStatus::Skipped => "skipped",
            };
            sqlx::query(
                "INSERT INTO classification_results (job_id, bucket, object_key, tenant_id, size, status,
                     level, data_types, counts, format, gzip, truncated, skip_reason, classified_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (job_id, bucket, object_key) DO UPDATE
                    SET size = excluded.size, status = excluded.status, level = excluded.level,
                        data_types = excluded.data_types, counts = excluded.counts,
                        format = excluded.format, gzip = excluded.gzip,
                        truncated = excluded.truncated, skip_reason = excluded.skip_reason,
                        classified_at = excluded.classified_at",
            )
            .bind(lease.job_id.as_uuid())
            .bind(&result.bucket)
            .bind(&result.key)
            .bind(&tenant_id)
            .bind(result.size as i64)
            .bind(status)
            .bind(&result.level)
            .bind(data_types.to_string())
            .bind(counts.to_string())
            .bind(&result.format)
            .bind(result.gzip)
            .bind(result.truncated)
            .bind(&result.skip_reason)
            .bind(now.timestamp_micros())
            .execute(tx.conn())
            .await
            .db("recording a classification")?;
            let has = |t: &str| result.data_types.iter().any(|d| d == t);
            sqlx::query(
                "INSERT INTO classified_objects (tenant_id, bucket, object_key, job_id, size, level, pii, phi, pci, classified_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (tenant_id, bucket, object_key) DO UPDATE
                    SET job_id = excluded.job_id, size = excluded.size, level = excluded.level,
                        pii = excluded.pii, phi = excluded.phi, pci = excluded.pci,
                        classified_at = excluded.classified_at
                    WHERE excluded.classified_at >= classified_objects.classified_at",
            )
            .bind(&tenant_id)
            .bind(&result.bucket)
            .bind(&result.key)
            .bind(lease.job_id.as_uuid())
            .bind(result.size as i64)
            .bind(&result.level)
            .bind(has("pii"))
            .bind(has("phi"))
            .bind(has("pci"))
            .bind(now.timestamp_micros())
            .execute(tx.conn())
            .await
            .db("recording an object's latest classification")?;
        }
        tx.commit("recording classifications").await
    }

    async fn list_classifications(
        &self,
        tenant_id: &str,
        job_id: JobId,
        after: Option<&ObjectCursor>,
        limit: u32,
    ) -> Result<Vec<ObjectClassification>> {
        let rows = sqlx::query(
            "SELECT * FROM classification_results WHERE job_id = ?1 AND tenant_id = ?2
               AND (?3 IS NULL OR (bucket, object_key) > (?3, ?4))
             ORDER BY bucket, object_key LIMIT ?5",
        )
        .bind(job_id.as_uuid())
        .bind(tenant_id)
        .bind(after.map(|(bucket, _)| bucket.as_str()))
        .bind(after.map(|(_, key)| key.as_str()).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .db("listing classifications")?;
        rows.iter().map(classification_from_row).collect()
    }

    async fn count_classifications(&self, tenant_id: &str, job_id: JobId) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM classification_results WHERE job_id = ?1 AND tenant_id = ?2",
        )
        .bind(job_id.as_uuid())
        .bind(tenant_id)
        .fetch_one(self.pool())
        .await
        .db("counting classifications")?;
        Ok(count.max(0) as u64)
    }

    async fn classification_stats(&self, tenant_id: &str) -> Result<ClassificationStats> {
        let rows = sqlx::query(
            "SELECT level, count(*) AS n, coalesce(sum(size), 0) AS bytes,
                    count(*) FILTER (WHERE pii) AS pii, count(*) FILTER (WHERE phi) AS phi,
                    count(*) FILTER (WHERE pci) AS pci
             FROM classified_objects WHERE tenant_id = ?1 GROUP BY level",
        )
        .bind(tenant_id)
        .fetch_all(self.pool())
        .await
        .db("counting classified objects")?;
        let mut groups = Vec::new();
        for row in &rows {
            let read = "reading classification counts";
            let level: Option<String> = row.try_get("level").db(read)?;
            let counts: [i64; 5] = [
                row.try_get("n").db(read)?,
                row.try_get("bytes").db(read)?,
                row.try_get("pii").db(read)?,
                row.try_get("phi").db(read)?,
                row.try_get("pci").db(read)?,
            ];
            groups.push((level, counts));
        }
        Ok(crate::scans::classification_stats_of(groups))
    }
}
