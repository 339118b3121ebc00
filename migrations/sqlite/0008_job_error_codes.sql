-- The same columns as migrations/postgres/0008_job_error_codes.sql: what
-- tenants see of a failed attempt (a stable code and a short message);
-- `jobs.last_error` and `job_attempts.error` keep the raw error for operators.

ALTER TABLE jobs ADD COLUMN error_code TEXT;
ALTER TABLE jobs ADD COLUMN error_message TEXT;
ALTER TABLE job_attempts ADD COLUMN error_code TEXT;
ALTER TABLE job_attempts ADD COLUMN error_message TEXT;
