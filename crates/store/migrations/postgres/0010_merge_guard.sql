-- A lead is merged into at most one other lead at a time, whatever races.
CREATE UNIQUE INDEX merges_active_merged ON merges (merged_id) WHERE undone_at IS NULL;
