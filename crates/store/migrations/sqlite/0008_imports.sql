-- File imports: each run, every row's outcome (created, repeat, returning, rejected — with
-- the reason), and the column mapping last used per source. A row's outcome is written in
-- the intake transaction of its lead, so an interrupted import resumes without duplicates.
CREATE TABLE imports (
    id           BLOB PRIMARY KEY,
    source       TEXT NOT NULL,
    file_name    TEXT NOT NULL,
    file_hash    TEXT NOT NULL,
    format       TEXT NOT NULL,
    mapping      TEXT NOT NULL DEFAULT '{}',
    campaign     TEXT,
    dry_run      INTEGER NOT NULL DEFAULT 0,
    status       TEXT NOT NULL,
    total_rows   INTEGER,
    processed    INTEGER NOT NULL DEFAULT 0,
    created      INTEGER NOT NULL DEFAULT 0,
    repeats      INTEGER NOT NULL DEFAULT 0,
    returned     INTEGER NOT NULL DEFAULT 0,
    rejected     INTEGER NOT NULL DEFAULT 0,
    removed      INTEGER,
    kept         INTEGER,
    actor        TEXT NOT NULL,
    error        TEXT,
    worker       TEXT,
    heartbeat_at INTEGER,
    file         BLOB,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    undone_at    INTEGER
);
CREATE INDEX imports_created ON imports (created_at);
CREATE INDEX imports_hash ON imports (file_hash, status);

CREATE TABLE import_rows (
    import_id BLOB NOT NULL,
    row_no    INTEGER NOT NULL,
    outcome   TEXT NOT NULL,
    lead_id   BLOB,
    reason    TEXT,
    detail    TEXT,
    PRIMARY KEY (import_id, row_no)
) WITHOUT ROWID;

CREATE TABLE import_mappings (
    source     TEXT PRIMARY KEY,
    mapping    TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
