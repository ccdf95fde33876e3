-- Lists filtered by owner (a manager's own leads, the unowned ones) or by one state and
-- sorted by priority walk a score index that starts with that filter, so a page reads about
-- its own rows even when the matches are rare among the top priorities. The owner and the
-- state are copied into the score row and kept there by triggers.
ALTER TABLE lead_scores ADD COLUMN status TEXT;
ALTER TABLE lead_scores ADD COLUMN owner_id BLOB;
UPDATE lead_scores SET (status, owner_id) = (SELECT l.status, l.owner_id FROM leads l WHERE l.id = lead_scores.lead_id);
CREATE INDEX lead_scores_status ON lead_scores (status, priority);
CREATE INDEX lead_scores_owner ON lead_scores (owner_id, priority);
CREATE TRIGGER lead_scores_list_columns AFTER INSERT ON lead_scores
BEGIN
    UPDATE lead_scores SET (status, owner_id) = (SELECT l.status, l.owner_id FROM leads l WHERE l.id = NEW.lead_id)
    WHERE lead_id = NEW.lead_id;
END;
CREATE TRIGGER leads_list_columns AFTER UPDATE OF status, owner_id ON leads
WHEN OLD.status IS NOT NEW.status OR OLD.owner_id IS NOT NEW.owner_id
BEGIN
    UPDATE lead_scores SET status = NEW.status, owner_id = NEW.owner_id WHERE lead_id = NEW.id;
END;
