-- Foundation: leads, identities, timeline events, channels, campaigns, sites, forms,
-- API tokens, idempotency keys, spam and the transactional outbox.
-- Instants are INTEGER microseconds since the Unix epoch (UTC); ids are UUID v7 as 16-byte BLOBs.

CREATE TABLE channels (
    code         TEXT PRIMARY KEY,
    name_en      TEXT NOT NULL,
    name_ru      TEXT NOT NULL,
    needs_triage INTEGER NOT NULL DEFAULT 0
);
INSERT INTO channels (code, name_en, name_ru) VALUES
    ('web_form', 'Web form', 'Веб-форма'),
    ('callback', 'Callback request', 'Обратный звонок'),
    ('chat', 'Site chat', 'Чат на сайте'),
    ('call', 'Phone call', 'Звонок'),
    ('email', 'E-mail', 'E-mail'),
    ('social', 'Social network', 'Соцсеть'),
    ('messenger', 'Messenger', 'Мессенджер'),
    ('offline', 'Offline event', 'Офлайн-мероприятие'),
    ('import', 'File import', 'Импорт из файла'),
    ('cpa', 'Lead exchange / CPA', 'Биржа лидов / CPA'),
    ('referral', 'Referral', 'Рекомендация'),
    ('word_of_mouth', 'Word of mouth', 'Сарафанное радио'),
    ('manual', 'Manual entry', 'Ручной ввод'),
    ('api', 'API', 'API');

CREATE TABLE campaigns (
    id              BLOB PRIMARY KEY,
    code            TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    channel         TEXT,
    tracking_number TEXT,
    created_at      INTEGER NOT NULL
);

CREATE TABLE sites (
    id         BLOB PRIMARY KEY,
    site_key   TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    origins    TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL
);

CREATE TABLE forms (
    id             BLOB PRIMARY KEY,
    form_key       TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    site_id        BLOB REFERENCES sites(id),
    thank_you_url  TEXT,
    channel        TEXT NOT NULL DEFAULT 'web_form',
    campaign       TEXT,
    honeypot_field TEXT NOT NULL DEFAULT '_hp',
    field_map      TEXT NOT NULL DEFAULT '{}',
    created_at     INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id           BLOB PRIMARY KEY,
    name         TEXT NOT NULL,
    token_hash   BLOB NOT NULL UNIQUE,
    scopes       TEXT NOT NULL,
    user_id      BLOB,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);

CREATE TABLE leads (
    id                BLOB PRIMARY KEY,
    name              TEXT,
    phone             TEXT,
    email             TEXT,
    messenger         TEXT,
    company           TEXT,
    position          TEXT,
    city              TEXT,
    interest          TEXT,
    message           TEXT,
    budget            REAL,
    channel           TEXT NOT NULL,
    campaign          TEXT,
    source            TEXT,
    utm_source        TEXT,
    utm_medium        TEXT,
    utm_campaign      TEXT,
    utm_content       TEXT,
    utm_term          TEXT,
    referrer          TEXT,
    landing_page      TEXT,
    tracking_number   TEXT,
    visitor_id        TEXT,
    external_id       TEXT,
    fields            TEXT NOT NULL DEFAULT '{}',
    consent_marketing INTEGER,
    consent_text      TEXT,
    consent_at        INTEGER,
    status            TEXT NOT NULL DEFAULT 'new',
    status_reason     TEXT,
    score             REAL NOT NULL DEFAULT 0,
    priority          REAL NOT NULL DEFAULT 0,
    temperature       TEXT NOT NULL DEFAULT 'cold',
    grade             TEXT NOT NULL DEFAULT 'C',
    owner_id          BLOB,
    repeat_count      INTEGER NOT NULL DEFAULT 0,
    returning_of      BLOB REFERENCES leads(id),
    contact_id        BLOB,
    search            TEXT NOT NULL DEFAULT '',
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    last_request_at   INTEGER NOT NULL
);
CREATE INDEX leads_created ON leads (created_at, id);
CREATE INDEX leads_status_created ON leads (status, created_at);
CREATE INDEX leads_owner_created ON leads (owner_id, created_at) WHERE owner_id IS NOT NULL;
CREATE INDEX leads_channel_created ON leads (channel, created_at);
CREATE INDEX leads_score ON leads (score);
CREATE INDEX leads_returning_of ON leads (returning_of) WHERE returning_of IS NOT NULL;
CREATE INDEX leads_visitor ON leads (visitor_id) WHERE visitor_id IS NOT NULL;

-- Normalised contact → the lead that currently answers for it. The primary key is what makes
-- two concurrent submissions with one phone end as one lead, whatever process they reach.
CREATE TABLE identities (
    ident      TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    lead_id    BLOB NOT NULL REFERENCES leads(id),
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX identities_lead ON identities (lead_id);

-- The timeline: submissions, site actions, calls, state changes… Anonymous interest has
-- a visitor id and no lead until the visitor leaves contacts.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    lead_id    BLOB REFERENCES leads(id),
    visitor_id TEXT,
    site_id    BLOB,
    kind       TEXT NOT NULL,
    at         INTEGER NOT NULL,
    actor      TEXT,
    data       TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL
);
CREATE INDEX events_lead_at ON events (lead_id, at) WHERE lead_id IS NOT NULL;
CREATE INDEX events_visitor_at ON events (visitor_id, at) WHERE visitor_id IS NOT NULL;
CREATE INDEX events_kind_at ON events (kind, at);

CREATE TABLE idempotency_keys (
    scope_key    TEXT PRIMARY KEY,
    request_hash BLOB NOT NULL,
    status       INTEGER NOT NULL,
    body         BLOB NOT NULL,
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX idempotency_created ON idempotency_keys (created_at);

CREATE TABLE spam_submissions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    form_id    BLOB,
    ip         TEXT,
    reason     TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Work for background jobs, written in the same transaction as the change that causes it.
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    topic        TEXT NOT NULL,
    aggregate_id BLOB,
    payload      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    available_at INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    locked_by    TEXT,
    locked_until INTEGER,
    done_at      INTEGER,
    last_error   TEXT
);
CREATE INDEX outbox_pending ON outbox (available_at) WHERE done_at IS NULL;
