-- The same columns as migrations/postgres/0009_schedule_skips.sql: a
-- schedule's last fire time skipped for a reason the tenant can act on.

ALTER TABLE schedules ADD COLUMN last_skipped_at INTEGER;
ALTER TABLE schedules ADD COLUMN last_skip_reason TEXT;
