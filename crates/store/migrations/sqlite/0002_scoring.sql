-- Scoring: versions of the points model, the dictionary of event targets (type + page path
-- or action name), each lead's ledger and score, and each lead's scorable events packed
-- compactly so that a model change re-scores without reading the timeline.

CREATE TABLE scoring_models (
    version    INTEGER PRIMARY KEY,
    model      TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE event_targets (
    id   INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    UNIQUE (kind, path, name)
);

-- score and priority are as of scored_at (refreshed as time passes); the API computes the
-- current values from the ledger at read time.
CREATE TABLE lead_scores (
    lead_id       BLOB PRIMARY KEY REFERENCES leads(id),
    score         REAL NOT NULL,
    priority      REAL NOT NULL,
    profile       REAL NOT NULL,
    temperature   TEXT NOT NULL,
    grade         TEXT NOT NULL,
    ledger        BLOB NOT NULL,
    model_version INTEGER NOT NULL,
    scored_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX lead_scores_priority ON lead_scores (priority);

CREATE TABLE lead_inputs (
    lead_id BLOB PRIMARY KEY REFERENCES leads(id),
    events  BLOB NOT NULL,
    rev     INTEGER NOT NULL
) WITHOUT ROWID;

-- One process at a time runs a periodic job (score refresh…): it holds the lease.
CREATE TABLE job_leases (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until  INTEGER NOT NULL
);

INSERT INTO lead_scores (lead_id, score, priority, profile, temperature, grade, ledger, model_version, scored_at)
SELECT id, 0, 0, 0, 'cold', 'C', X'01', 0, created_at FROM leads;

DROP INDEX leads_score;
ALTER TABLE leads DROP COLUMN score;
ALTER TABLE leads DROP COLUMN priority;
ALTER TABLE leads DROP COLUMN temperature;
ALTER TABLE leads DROP COLUMN grade;
