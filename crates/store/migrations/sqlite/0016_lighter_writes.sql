-- The intake writes a new lead's state into its score row itself (the lead was inserted a
-- moment before in the same transaction, with no owner), so the trigger copying the state
-- and owner from the lead runs only for rows inserted without them. It rewrote every new
-- score row, moving its entries in the state and owner indexes a second time.
DROP TRIGGER lead_scores_list_columns;
CREATE TRIGGER lead_scores_list_columns AFTER INSERT ON lead_scores
WHEN NEW.status IS NULL
BEGIN
    UPDATE lead_scores SET (status, owner_id) = (SELECT l.status, l.owner_id FROM leads l WHERE l.id = NEW.lead_id)
    WHERE lead_id = NEW.lead_id;
END;

-- Handled outbox messages are deleted from now on (they were kept, marked done, one row per
-- lead and more, forever); the ones kept so far go now.
DELETE FROM outbox WHERE done_at IS NOT NULL;
