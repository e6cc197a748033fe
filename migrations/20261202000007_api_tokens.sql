-- API tokens. Only a SHA-256 of each secret is kept; the secret is shown once, at creation.
-- A token without a project is a deployment-wide admin (the bootstrap token).
CREATE TABLE api_tokens (
    id           UUID PRIMARY KEY,
    project_id   BIGINT REFERENCES projects (id) ON DELETE CASCADE,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    secret_hash  TEXT NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by   TEXT,
    revoked_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    CHECK (project_id IS NOT NULL OR role = 'admin')
);
CREATE INDEX api_tokens_project_idx ON api_tokens (project_id, created_at DESC);
