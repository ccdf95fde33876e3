-- The dashboard's arrivals and funnel and the kanban's column counts, kept as counts per
-- hour of arrival (UTC) and channel, and per hour of arrival and current state, so that a
-- quarter at a million leads reads about 40,000 counts instead of a quarter of a million
-- index entries (see `Store::arrivals`). Two tables rather than one by channel and state:
-- ten channels times nine states make most of an hour's combinations hold a lead or two.
--
-- Kept like the search index, under the same mark (`lead_words_state.indexed_to`): the
-- background indexer counts each batch of new leads in the transaction that indexes it
-- (`Store::index_words`), so intake and import pay nothing for them; leads past the mark
-- are counted directly by the readers. Changes of an arrival time, a channel or a state and
-- deletions of counted leads are applied at once by the triggers, in the transaction that
-- makes them. Counts that fall to 0 stay as rows of 0.
CREATE TABLE arrivals_by_channel (
    hour    INTEGER NOT NULL,
    channel TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (hour, channel)
) WITHOUT ROWID;
CREATE TABLE arrivals_by_status (
    hour   INTEGER NOT NULL,
    status TEXT NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (hour, status)
) WITHOUT ROWID;
INSERT INTO arrivals_by_channel (hour, channel, n)
SELECT created_at / 3600000000, channel, COUNT(*) FROM leads
WHERE rowid <= (SELECT indexed_to FROM lead_words_state)
GROUP BY 1, 2;
INSERT INTO arrivals_by_status (hour, status, n)
SELECT created_at / 3600000000, status, COUNT(*) FROM leads
WHERE rowid <= (SELECT indexed_to FROM lead_words_state)
GROUP BY 1, 2;
-- A rowid at or below the mark used again (after the last lead was deleted): indexed and
-- counted at once. One trigger with the search index's, so a new lead's insert checks the
-- mark once.
DROP TRIGGER lead_words_insert;
CREATE TRIGGER leads_derived_insert AFTER INSERT ON leads
WHEN NEW.rowid <= (SELECT indexed_to FROM lead_words_state)
BEGIN
    INSERT INTO lead_words (rowid, search) VALUES (NEW.rowid, NEW.search);
    INSERT INTO arrivals_by_channel (hour, channel, n) VALUES (NEW.created_at / 3600000000, NEW.channel, 1)
    ON CONFLICT (hour, channel) DO UPDATE SET n = n + 1;
    INSERT INTO arrivals_by_status (hour, status, n) VALUES (NEW.created_at / 3600000000, NEW.status, 1)
    ON CONFLICT (hour, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER arrivals_update_channel AFTER UPDATE OF created_at, channel ON leads
WHEN (OLD.created_at IS NOT NEW.created_at OR OLD.channel IS NOT NEW.channel)
 AND OLD.rowid <= (SELECT indexed_to FROM lead_words_state)
BEGIN
    UPDATE arrivals_by_channel SET n = n - 1 WHERE hour = OLD.created_at / 3600000000 AND channel = OLD.channel;
    INSERT INTO arrivals_by_channel (hour, channel, n) VALUES (NEW.created_at / 3600000000, NEW.channel, 1)
    ON CONFLICT (hour, channel) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER arrivals_update_status AFTER UPDATE OF created_at, status ON leads
WHEN (OLD.created_at IS NOT NEW.created_at OR OLD.status IS NOT NEW.status)
 AND OLD.rowid <= (SELECT indexed_to FROM lead_words_state)
BEGIN
    UPDATE arrivals_by_status SET n = n - 1 WHERE hour = OLD.created_at / 3600000000 AND status = OLD.status;
    INSERT INTO arrivals_by_status (hour, status, n) VALUES (NEW.created_at / 3600000000, NEW.status, 1)
    ON CONFLICT (hour, status) DO UPDATE SET n = n + 1;
END;
DROP TRIGGER lead_words_delete;
CREATE TRIGGER leads_derived_delete AFTER DELETE ON leads
WHEN OLD.rowid <= (SELECT indexed_to FROM lead_words_state)
BEGIN
    DELETE FROM lead_words WHERE rowid = OLD.rowid;
    UPDATE arrivals_by_channel SET n = n - 1 WHERE hour = OLD.created_at / 3600000000 AND channel = OLD.channel;
    UPDATE arrivals_by_status SET n = n - 1 WHERE hour = OLD.created_at / 3600000000 AND status = OLD.status;
END;
-- Whatever renumbers the leads' rowids must, as for the search index, empty these tables
-- too when it sets the mark back to 0.
