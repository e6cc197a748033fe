-- Core schema of the orchestrator. The job queue (apalis) keeps its own tables in schema `apalis`;
-- the tables here are the source of truth for every run, node and attempt.

CREATE TABLE projects (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO projects (id, name) VALUES (1, 'default');
SELECT setval(pg_get_serial_sequence('projects', 'id'), 1);

CREATE TABLE agents (
    id              UUID PRIMARY KEY,
    project_id      BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    type            TEXT NOT NULL CHECK (type IN ('SCRIPT', 'HTTP')),
    risk_level      TEXT NOT NULL DEFAULT 'AUTO' CHECK (risk_level IN ('AUTO', 'APPROVAL_REQUIRED')),
    entrypoint      TEXT,
    args            JSONB NOT NULL DEFAULT '[]',
    url             TEXT,
    capabilities    JSONB NOT NULL DEFAULT '[]',
    timeout_seconds INTEGER CHECK (timeout_seconds > 0),
    retry           JSONB,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (project_id, name),
    CHECK ((type = 'SCRIPT') = (entrypoint IS NOT NULL)),
    CHECK ((type = 'HTTP') = (url IS NOT NULL))
);

CREATE TABLE workflows (
    id          UUID PRIMARY KEY,
    project_id  BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    trigger     JSONB NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('ACTIVE', 'PAUSED')),
    version     INTEGER NOT NULL DEFAULT 1,
    nodes       JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (project_id, name)
);

-- Every definition a workflow ever had, so a run can always be traced to what it executed.
CREATE TABLE workflow_versions (
    workflow_id UUID NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    trigger     JSONB NOT NULL,
    nodes       JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, version)
);

CREATE TABLE workflow_runs (
    id               UUID PRIMARY KEY,
    project_id       BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    workflow_id      UUID NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    workflow_version INTEGER NOT NULL,
    workflow_name    TEXT NOT NULL,
    -- The node definitions (with agent settings resolved at trigger time) this run executes;
    -- editing the workflow later never changes a run in flight.
    definition       JSONB NOT NULL,
    trigger          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('PENDING', 'RUNNING', 'WAITING_APPROVAL', 'COMPLETED', 'FAILED', 'CANCELLED')),
    context          JSONB NOT NULL DEFAULT '{}',
    error            TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    -- A terminal run always says when it ended, and only a terminal run does.
    CHECK ((status IN ('COMPLETED', 'FAILED', 'CANCELLED')) = (finished_at IS NOT NULL))
);
CREATE INDEX workflow_runs_workflow_idx ON workflow_runs (workflow_id, created_at DESC);
CREATE INDEX workflow_runs_active_idx ON workflow_runs (status) WHERE status IN ('PENDING', 'RUNNING', 'WAITING_APPROVAL');

CREATE TABLE node_states (
    run_id           UUID NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    node_id          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('PENDING', 'READY', 'RUNNING', 'WAITING_APPROVAL', 'COMPLETED', 'FAILED', 'SKIPPED', 'CANCELLED')),
    -- Dependencies not yet COMPLETED; the node becomes READY when this reaches zero.
    pending_deps     INTEGER NOT NULL CHECK (pending_deps >= 0),
    -- Attempts started so far; the job for attempt N may only claim the node while this is N-1.
    attempts         INTEGER NOT NULL DEFAULT 0,
    output           JSONB,
    error            TEXT,
    ready_at         TIMESTAMPTZ,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    -- Who holds a RUNNING node and until when; a rescuer may take it back after expiry.
    locked_by        TEXT,
    lease_expires_at TIMESTAMPTZ,
    PRIMARY KEY (run_id, node_id),
    CHECK ((status IN ('COMPLETED', 'FAILED', 'SKIPPED', 'CANCELLED')) = (finished_at IS NOT NULL))
);
CREATE INDEX node_states_running_idx ON node_states (lease_expires_at) WHERE status = 'RUNNING';

CREATE TABLE agent_runs (
    id           UUID PRIMARY KEY,
    run_id       UUID NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    node_id      TEXT NOT NULL,
    agent_id     UUID NOT NULL,
    action       TEXT NOT NULL,
    attempt      INTEGER NOT NULL CHECK (attempt >= 1),
    status       TEXT NOT NULL CHECK (status IN ('RUNNING', 'COMPLETED', 'FAILED')),
    input        JSONB,
    output       JSONB,
    error        TEXT,
    exit_code    INTEGER,
    worker       TEXT,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ,
    duration_ms  BIGINT,
    UNIQUE (run_id, node_id, attempt),
    CHECK ((status = 'RUNNING') = (finished_at IS NULL)),
    FOREIGN KEY (run_id, node_id) REFERENCES node_states (run_id, node_id) ON DELETE CASCADE
);
-- A node completes at most once, whatever the queue redelivers.
CREATE UNIQUE INDEX agent_runs_one_completion ON agent_runs (run_id, node_id) WHERE status = 'COMPLETED';
