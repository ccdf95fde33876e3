-- The sales workflow: teams and users with duty schedules, reasons, settings (assignment
-- rules, SLAs, calendar…), tasks, notifications, escalations, scripts, and the records a
-- lead converts into (contacts, companies, deals).

CREATE TABLE teams (
    id         BLOB PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE users (
    id               BLOB PRIMARY KEY,
    email            TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    role             TEXT NOT NULL,
    password_hash    TEXT,
    team_id          BLOB REFERENCES teams(id),
    level            TEXT NOT NULL DEFAULT 'junior',
    industries       TEXT NOT NULL DEFAULT '[]',
    regions          TEXT NOT NULL DEFAULT '[]',
    segments         TEXT NOT NULL DEFAULT '[]',
    capacity         INTEGER NOT NULL DEFAULT 50,
    timezone         TEXT NOT NULL DEFAULT 'Europe/Moscow',
    hours            TEXT NOT NULL,
    days_off         TEXT NOT NULL DEFAULT '[]',
    vacations        TEXT NOT NULL DEFAULT '[]',
    active           INTEGER NOT NULL DEFAULT 1,
    lang             TEXT NOT NULL DEFAULT 'ru',
    last_assigned_at INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX users_team ON users (team_id);

CREATE TABLE reasons (
    kind     TEXT NOT NULL,
    code     TEXT NOT NULL,
    name_en  TEXT NOT NULL,
    name_ru  TEXT NOT NULL,
    active   INTEGER NOT NULL DEFAULT 1,
    position INTEGER NOT NULL,
    PRIMARY KEY (kind, code)
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE tasks (
    id          BLOB PRIMARY KEY,
    lead_id     BLOB NOT NULL REFERENCES leads(id),
    kind        TEXT NOT NULL,
    title       TEXT NOT NULL,
    due_at      INTEGER,
    assignee_id BLOB REFERENCES users(id),
    status      TEXT NOT NULL DEFAULT 'open',
    result      TEXT,
    created_by  TEXT,
    created_at  INTEGER NOT NULL,
    done_at     INTEGER
);
CREATE INDEX tasks_open_due ON tasks (assignee_id, due_at) WHERE status = 'open';
CREATE INDEX tasks_lead ON tasks (lead_id);

CREATE TABLE notifications (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    BLOB NOT NULL REFERENCES users(id),
    kind       TEXT NOT NULL,
    lead_id    BLOB,
    data       TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    read_at    INTEGER
);
CREATE INDEX notifications_user ON notifications (user_id, id);

CREATE TABLE escalations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    lead_id    BLOB NOT NULL REFERENCES leads(id),
    from_user  BLOB,
    to_user    BLOB,
    deadline   INTEGER NOT NULL,
    at         INTEGER NOT NULL
);
CREATE INDEX escalations_lead ON escalations (lead_id);

CREATE TABLE scripts (
    id         BLOB PRIMARY KEY,
    name       TEXT NOT NULL,
    segment    TEXT,
    channel    TEXT,
    status     TEXT,
    body       TEXT NOT NULL,
    position   INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE companies (
    id         BLOB PRIMARY KEY,
    name       TEXT NOT NULL,
    inn        TEXT UNIQUE,
    kpp        TEXT,
    ogrn       TEXT,
    okpo       TEXT,
    size       TEXT,
    industry   TEXT,
    created_at INTEGER NOT NULL
);

CREATE TABLE contacts (
    id         BLOB PRIMARY KEY,
    name       TEXT,
    phone      TEXT,
    email      TEXT,
    messenger  TEXT,
    position   TEXT,
    company_id BLOB REFERENCES companies(id),
    created_at INTEGER NOT NULL
);
CREATE INDEX contacts_phone ON contacts (phone) WHERE phone IS NOT NULL;
CREATE INDEX contacts_email ON contacts (email) WHERE email IS NOT NULL;

CREATE TABLE deals (
    id         BLOB PRIMARY KEY,
    lead_id    BLOB NOT NULL REFERENCES leads(id),
    contact_id BLOB REFERENCES contacts(id),
    company_id BLOB REFERENCES companies(id),
    title      TEXT,
    amount     REAL,
    currency   TEXT NOT NULL DEFAULT 'RUB',
    created_at INTEGER NOT NULL
);

ALTER TABLE leads ADD COLUMN assigned_at INTEGER;
ALTER TABLE leads ADD COLUMN first_touch_at INTEGER;
ALTER TABLE leads ADD COLUMN sla_due_at INTEGER;
ALTER TABLE leads ADD COLUMN queued_at INTEGER;
ALTER TABLE leads ADD COLUMN postponed_until INTEGER;
ALTER TABLE leads ADD COLUMN converted_at INTEGER;
ALTER TABLE leads ADD COLUMN company_id BLOB;
ALTER TABLE leads ADD COLUMN deal_id BLOB;
CREATE INDEX leads_sla_due ON leads (sla_due_at) WHERE sla_due_at IS NOT NULL;
CREATE INDEX leads_queued ON leads (queued_at) WHERE queued_at IS NOT NULL;
CREATE INDEX leads_contact ON leads (contact_id) WHERE contact_id IS NOT NULL;
