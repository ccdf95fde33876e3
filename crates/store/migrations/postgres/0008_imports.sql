-- File imports: each run, every row's outcome (created, repeat, returning, rejected — with
-- the reason), and the column mapping last used per source. A row's outcome is written in
-- the intake transaction of its lead, so an interrupted import resumes without duplicates.
CREATE TABLE imports (
    id           UUID PRIMARY KEY,
    source       TEXT NOT NULL,
    file_name    TEXT NOT NULL,
    file_hash    TEXT NOT NULL,
    format       TEXT NOT NULL,
    mapping      TEXT NOT NULL DEFAULT '{}',
    campaign     TEXT,
    dry_run      BOOLEAN NOT NULL DEFAULT FALSE,
    status       TEXT NOT NULL,
    total_rows   BIGINT,
    processed    BIGINT NOT NULL DEFAULT 0,
    created      BIGINT NOT NULL DEFAULT 0,
    repeats      BIGINT NOT NULL DEFAULT 0,
    returned     BIGINT NOT NULL DEFAULT 0,
    rejected     BIGINT NOT NULL DEFAULT 0,
    removed      BIGINT,
    kept         BIGINT,
    actor        TEXT NOT NULL,
    error        TEXT,
    worker       TEXT,
    heartbeat_at TIMESTAMPTZ,
    file         BYTEA,
    created_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ,
    undone_at    TIMESTAMPTZ
);
CREATE INDEX imports_created ON imports (created_at);
CREATE INDEX imports_hash ON imports (file_hash, status);

CREATE TABLE import_rows (
    import_id UUID NOT NULL,
    row_no    BIGINT NOT NULL,
    outcome   TEXT NOT NULL,
    lead_id   UUID,
    reason    TEXT,
    detail    TEXT,
    PRIMARY KEY (import_id, row_no)
);

CREATE TABLE import_mappings (
    source     TEXT PRIMARY KEY,
    mapping    TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
