-- A full re-score that changes many score rows builds the score table anew beside the old
-- one and swaps the two (an update in place of every row, each non-HOT with five indexes,
-- took 52–58 s at 1 M rows; the build takes a few seconds). Writes to the old table while
-- the new one is built are noted by a trigger that exists only for the build, and are
-- carried over under the swap's lock.
CREATE TABLE lead_scores_rebuild_delta (lead_id UUID NOT NULL);

-- It notes nothing unless a pass holds the re-score lock (the session advisory lock
-- 8534165641809846529): a trigger left behind by a pass that died costs a lock test a row.
CREATE FUNCTION lead_scores_note_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_try_advisory_xact_lock_shared(8534165641809846529) THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO lead_scores_rebuild_delta VALUES (OLD.lead_id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO lead_scores_rebuild_delta VALUES (NEW.lead_id);
    END IF;
    RETURN NULL;
END
$$;

-- The foreign key to leads goes, so that dropping the old score table at the swap locks
-- that table alone, not the leads every request reads. Its guarantee is kept by the
-- writers: a score row is inserted only beside its lead's row locked `FOR KEY SHARE` (the
-- lock the key's check took), and every path that deletes a lead deletes its score row.
ALTER TABLE lead_scores DROP CONSTRAINT IF EXISTS lead_scores_lead_id_fkey;
