-- A score row's state and owner are written by whoever inserts the row (the intake gives a
-- new lead's state, and fills both from the lead for a row it has to create for an older
-- lead; the single-lead rescore and the seed give both), so the trigger copying them from
-- the lead goes. Its mere presence made SQLite open a statement journal for every score
-- upsert, copying each page the statement touched: about a third of the writer's time on
-- score rows, 8 % of all its time in an import.
DROP TRIGGER lead_scores_list_columns;
UPDATE lead_scores SET (status, owner_id) = (SELECT l.status, l.owner_id FROM leads l WHERE l.id = lead_scores.lead_id)
WHERE status IS NULL;
