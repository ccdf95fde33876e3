-- The sales workflow: teams and users with duty schedules, reasons, settings (assignment
-- rules, SLAs, calendar…), tasks, notifications, escalations, scripts, and the records a
-- lead converts into (contacts, companies, deals).

CREATE TABLE teams (
    id         UUID PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE users (
    id               UUID PRIMARY KEY,
    email            TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    role             TEXT NOT NULL,
    password_hash    TEXT,
    team_id          UUID REFERENCES teams(id),
    level            TEXT NOT NULL DEFAULT 'junior',
    industries       JSONB NOT NULL DEFAULT '[]',
    regions          JSONB NOT NULL DEFAULT '[]',
    segments         JSONB NOT NULL DEFAULT '[]',
    capacity         BIGINT NOT NULL DEFAULT 50,
    timezone         TEXT NOT NULL DEFAULT 'Europe/Moscow',
    hours            JSONB NOT NULL,
    days_off         JSONB NOT NULL DEFAULT '[]',
    vacations        JSONB NOT NULL DEFAULT '[]',
    active           BOOLEAN NOT NULL DEFAULT TRUE,
    lang             TEXT NOT NULL DEFAULT 'ru',
    last_assigned_at TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX users_team ON users (team_id);

CREATE TABLE reasons (
    kind     TEXT NOT NULL,
    code     TEXT NOT NULL,
    name_en  TEXT NOT NULL,
    name_ru  TEXT NOT NULL,
    active   BOOLEAN NOT NULL DEFAULT TRUE,
    position INTEGER NOT NULL,
    PRIMARY KEY (kind, code)
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value JSONB NOT NULL
);

CREATE TABLE tasks (
    id          UUID PRIMARY KEY,
    lead_id     UUID NOT NULL REFERENCES leads(id),
    kind        TEXT NOT NULL,
    title       TEXT NOT NULL,
    due_at      TIMESTAMPTZ,
    assignee_id UUID REFERENCES users(id),
    status      TEXT NOT NULL DEFAULT 'open',
    result      TEXT,
    created_by  TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    done_at     TIMESTAMPTZ
);
CREATE INDEX tasks_open_due ON tasks (assignee_id, due_at) WHERE status = 'open';
CREATE INDEX tasks_lead ON tasks (lead_id);

CREATE TABLE notifications (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    UUID NOT NULL REFERENCES users(id),
    kind       TEXT NOT NULL,
    lead_id    UUID,
    data       JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL,
    read_at    TIMESTAMPTZ
);
CREATE INDEX notifications_user ON notifications (user_id, id);

CREATE TABLE escalations (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lead_id    UUID NOT NULL REFERENCES leads(id),
    from_user  UUID,
    to_user    UUID,
    deadline   TIMESTAMPTZ NOT NULL,
    at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX escalations_lead ON escalations (lead_id);

CREATE TABLE scripts (
    id         UUID PRIMARY KEY,
    name       TEXT NOT NULL,
    segment    TEXT,
    channel    TEXT,
    status     TEXT,
    body       TEXT NOT NULL,
    position   INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE companies (
    id         UUID PRIMARY KEY,
    name       TEXT NOT NULL,
    inn        TEXT UNIQUE,
    kpp        TEXT,
    ogrn       TEXT,
    okpo       TEXT,
    size       TEXT,
    industry   TEXT,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE contacts (
    id         UUID PRIMARY KEY,
    name       TEXT,
    phone      TEXT,
    email      TEXT,
    messenger  TEXT,
    position   TEXT,
    company_id UUID REFERENCES companies(id),
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX contacts_phone ON contacts (phone) WHERE phone IS NOT NULL;
CREATE INDEX contacts_email ON contacts (email) WHERE email IS NOT NULL;

CREATE TABLE deals (
    id         UUID PRIMARY KEY,
    lead_id    UUID NOT NULL REFERENCES leads(id),
    contact_id UUID REFERENCES contacts(id),
    company_id UUID REFERENCES companies(id),
    title      TEXT,
    amount     DOUBLE PRECISION,
    currency   TEXT NOT NULL DEFAULT 'RUB',
    created_at TIMESTAMPTZ NOT NULL
);

ALTER TABLE leads ADD COLUMN assigned_at TIMESTAMPTZ;
ALTER TABLE leads ADD COLUMN first_touch_at TIMESTAMPTZ;
ALTER TABLE leads ADD COLUMN sla_due_at TIMESTAMPTZ;
ALTER TABLE leads ADD COLUMN queued_at TIMESTAMPTZ;
ALTER TABLE leads ADD COLUMN postponed_until TIMESTAMPTZ;
ALTER TABLE leads ADD COLUMN converted_at TIMESTAMPTZ;
ALTER TABLE leads ADD COLUMN company_id UUID;
ALTER TABLE leads ADD COLUMN deal_id UUID;
CREATE INDEX leads_sla_due ON leads (sla_due_at) WHERE sla_due_at IS NOT NULL;
CREATE INDEX leads_queued ON leads (queued_at) WHERE queued_at IS NOT NULL;
CREATE INDEX leads_contact ON leads (contact_id) WHERE contact_id IS NOT NULL;
