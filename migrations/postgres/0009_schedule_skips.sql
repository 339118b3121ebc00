-- A schedule's last fire time that created no job for a reason the tenant can
-- act on (today: `quota_exceeded`, its maxQueued was reached); see
-- core/src/schedule/mod.rs.

ALTER TABLE schedules ADD COLUMN last_skipped_at timestamptz, ADD COLUMN last_skip_reason text;
