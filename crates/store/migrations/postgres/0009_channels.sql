-- Channels in and out: inbound webhook endpoints and what they received (replays are
-- recognised by the event id), outbound webhook subscriptions with every delivery (signed,
-- retried with back-off, dead-lettered), the triage mark of the unsorted inbox, and the merge log.

ALTER TABLE leads ADD COLUMN triage TEXT;
CREATE INDEX leads_triage ON leads (created_at) WHERE triage IS NOT NULL;

CREATE TABLE hook_endpoints (
    id         UUID PRIMARY KEY,
    hook_key   TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    secret     TEXT NOT NULL,
    channel    TEXT NOT NULL,
    campaign   TEXT,
    mapping    TEXT NOT NULL DEFAULT '{}',
    active     BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE hook_receipts (
    endpoint_id      UUID NOT NULL,
    event_id         TEXT NOT NULL,
    kind             TEXT NOT NULL,
    outcome          TEXT NOT NULL,
    lead_id          UUID,
    visitor_id       TEXT,
    answered         BOOLEAN,
    wait_seconds     INTEGER,
    talk_seconds     INTEGER,
    response_seconds INTEGER,
    at               TIMESTAMPTZ NOT NULL,
    received_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (endpoint_id, event_id)
);
CREATE INDEX hook_receipts_kind_at ON hook_receipts (kind, at);

CREATE TABLE webhook_subscriptions (
    id         UUID PRIMARY KEY,
    name       TEXT NOT NULL,
    url        TEXT NOT NULL,
    events     TEXT NOT NULL,
    secret     TEXT NOT NULL,
    active     BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE webhook_deliveries (
    id              UUID PRIMARY KEY,
    subscription_id UUID NOT NULL,
    outbox_id       BIGINT NOT NULL,
    topic           TEXT NOT NULL,
    lead_id         UUID,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_at         TIMESTAMPTZ NOT NULL,
    locked_by       TEXT,
    locked_until    TIMESTAMPTZ,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    done_at         TIMESTAMPTZ,
    UNIQUE (subscription_id, outbox_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_status ON webhook_deliveries (status, created_at);

CREATE TABLE merges (
    id          UUID PRIMARY KEY,
    survivor_id UUID NOT NULL,
    merged_id   UUID NOT NULL,
    actor       TEXT NOT NULL,
    log         TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    undone_at   TIMESTAMPTZ,
    undone_by   TEXT
);
CREATE INDEX merges_survivor ON merges (survivor_id);
CREATE INDEX merges_merged ON merges (merged_id);
