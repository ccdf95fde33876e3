-- The assignee of a task is reminded once when its due time comes (a postponed lead's
-- reminder too), within a day of it: tasks long overdue are not reminded after the fact.
ALTER TABLE tasks ADD COLUMN reminded_at TIMESTAMPTZ;
CREATE INDEX tasks_to_remind ON tasks (due_at) WHERE status = 'open' AND reminded_at IS NULL;
