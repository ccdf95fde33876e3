-- Lists filtered by owner (a manager's own leads, the unowned ones) or by one state and
-- sorted by priority walk a score index that starts with that filter, so a page reads about
-- its own rows even when the matches are rare among the top priorities. The owner and the
-- state are copied into the score row and kept there by triggers.
ALTER TABLE lead_scores ADD COLUMN status TEXT, ADD COLUMN owner_id UUID;
UPDATE lead_scores s SET status = l.status, owner_id = l.owner_id FROM leads l WHERE l.id = s.lead_id;
CREATE INDEX lead_scores_status ON lead_scores (status, priority, lead_id);
CREATE INDEX lead_scores_owner ON lead_scores (owner_id, priority, lead_id);

CREATE FUNCTION lead_scores_list_columns() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT l.status, l.owner_id INTO NEW.status, NEW.owner_id FROM leads l WHERE l.id = NEW.lead_id;
    RETURN NEW;
END
$$;
CREATE TRIGGER lead_scores_list_columns BEFORE INSERT ON lead_scores
    FOR EACH ROW EXECUTE FUNCTION lead_scores_list_columns();

CREATE FUNCTION leads_list_columns() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE lead_scores SET status = NEW.status, owner_id = NEW.owner_id WHERE lead_id = NEW.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER leads_list_columns AFTER UPDATE OF status, owner_id ON leads
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.owner_id IS DISTINCT FROM NEW.owner_id)
    EXECUTE FUNCTION leads_list_columns();
