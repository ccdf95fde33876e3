-- The intake writes a new lead's state into its score row itself (the lead was inserted a
-- moment before in the same transaction, with no owner), so the trigger copying the state
-- and owner from the lead runs only for rows inserted without them: a lookup per new lead
-- less on the intake's path.
DROP TRIGGER lead_scores_list_columns ON lead_scores;
CREATE TRIGGER lead_scores_list_columns BEFORE INSERT ON lead_scores
    FOR EACH ROW WHEN (NEW.status IS NULL) EXECUTE FUNCTION lead_scores_list_columns();

-- Handled outbox messages are deleted from now on (they were kept, marked done, one row per
-- lead and more, forever); the ones kept so far go now.
DELETE FROM outbox WHERE done_at IS NOT NULL;
