-- Text search over a million leads: a trigram index of each lead's search text (name,
-- company, e-mail, messenger, phone forms) finds the leads holding any 3 or more characters
-- typed without reading every lead. It only narrows: the matches are checked against the
-- lead's own text. Keyed by the lead's rowid and kept by triggers.
CREATE VIRTUAL TABLE lead_words USING fts5(search, content='', contentless_delete=1, tokenize='trigram');
INSERT INTO lead_words (rowid, search) SELECT rowid, search FROM leads;
CREATE TRIGGER lead_words_insert AFTER INSERT ON leads
BEGIN
    INSERT INTO lead_words (rowid, search) VALUES (NEW.rowid, NEW.search);
END;
CREATE TRIGGER lead_words_update AFTER UPDATE OF search ON leads WHEN OLD.search IS NOT NEW.search
BEGIN
    DELETE FROM lead_words WHERE rowid = OLD.rowid;
    INSERT INTO lead_words (rowid, search) VALUES (NEW.rowid, NEW.search);
END;
CREATE TRIGGER lead_words_delete AFTER DELETE ON leads
BEGIN
    DELETE FROM lead_words WHERE rowid = OLD.rowid;
END;
-- Whatever renumbers the leads' rowids (VACUUM, a migration that rebuilds `leads` without
-- copying them) must refill the index the same way as above: DELETE FROM lead_words, then
-- the INSERT … SELECT.
