-- Text search over a million leads: a trigram index of each lead's search text (name,
-- company, e-mail, messenger, phone forms) finds the leads holding any 3 or more characters
-- typed without reading every lead. It only narrows: the matches are checked against the
-- lead's own text. Keyed by the lead's rowid.
--
-- New leads are indexed in the background, thousands at a time (`Store::index_words`):
-- FTS5 writes a segment per transaction, and intake's small, frequent commits would pay for
-- one each. Leads past the mark `indexed_to` are not in the index yet and are searched
-- directly; changes and deletions of indexed leads are applied at once by the triggers.
CREATE VIRTUAL TABLE lead_words USING fts5(search, content='', contentless_delete=1, tokenize='trigram');
CREATE TABLE lead_words_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_to INTEGER NOT NULL
);
INSERT INTO lead_words_state (id, indexed_to) VALUES (1, 0);
-- A rowid at or below the mark used again (after the last lead was deleted): indexed at once.
CREATE TRIGGER lead_words_insert AFTER INSERT ON leads
WHEN NEW.rowid <= (SELECT indexed_to FROM lead_words_state)
BEGIN
    INSERT INTO lead_words (rowid, search) VALUES (NEW.rowid, NEW.search);
END;
CREATE TRIGGER lead_words_update AFTER UPDATE OF search ON leads
WHEN OLD.search IS NOT NEW.search AND OLD.rowid <= (SELECT indexed_to FROM lead_words_state)
BEGIN
    DELETE FROM lead_words WHERE rowid = OLD.rowid;
    INSERT INTO lead_words (rowid, search) VALUES (NEW.rowid, NEW.search);
END;
CREATE TRIGGER lead_words_delete AFTER DELETE ON leads
WHEN OLD.rowid <= (SELECT indexed_to FROM lead_words_state)
BEGIN
    DELETE FROM lead_words WHERE rowid = OLD.rowid;
END;
-- Whatever renumbers the leads' rowids (VACUUM, a migration that rebuilds `leads` without
-- copying them) must empty the index and set the mark back to 0.
