-- What tenants see of a failed attempt (core/src/failure.rs): a stable code
-- and a short message. `jobs.last_error` and `job_attempts.error` keep the
-- raw error (bucket names, request ids, SDK context) for operators only.

ALTER TABLE jobs ADD COLUMN error_code text, ADD COLUMN error_message text;
ALTER TABLE job_attempts ADD COLUMN error_code text, ADD COLUMN error_message text;
