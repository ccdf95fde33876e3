-- The web UI: login sessions (the cookie's value is kept only as a SHA-256 hash) with their
-- CSRF token, and failed logins for throttling.

CREATE TABLE sessions (
    id_hash    BYTEA PRIMARY KEY,
    user_id    UUID NOT NULL REFERENCES users(id),
    csrf       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

CREATE TABLE login_failures (
    id    BIGSERIAL PRIMARY KEY,
    email TEXT NOT NULL,
    ip    TEXT NOT NULL,
    at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX login_failures_email ON login_failures (email, at);
CREATE INDEX login_failures_ip ON login_failures (ip, at);

-- Dashboards count leads assigned in a period.
CREATE INDEX leads_assigned ON leads (assigned_at) WHERE assigned_at IS NOT NULL;
