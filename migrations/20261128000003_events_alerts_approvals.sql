-- Event triggers, AlertManager alerts and approvals.

-- Every event that reached the engine (NATS, REST or an alert), once: the key is the
-- publisher's message id (Nats-Msg-Id), the stream sequence, or the id the caller gave, so a
-- redelivery finds its row and starts nothing new.
CREATE TABLE events (
    event_key      TEXT PRIMARY KEY,
    source         TEXT NOT NULL CHECK (source IN ('nats', 'api', 'alertmanager')),
    subject        TEXT NOT NULL,
    payload        JSONB,
    received_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    triggered_runs UUID[] NOT NULL DEFAULT '{}'
);

CREATE TABLE alerts (
    id              UUID PRIMARY KEY,
    fingerprint     TEXT NOT NULL,
    starts_at       TIMESTAMPTZ NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
    alertname       TEXT NOT NULL,
    labels          JSONB NOT NULL,
    annotations     JSONB NOT NULL,
    ends_at         TIMESTAMPTZ,
    generator_url   TEXT,
    receiver        TEXT,
    first_received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_received_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- AlertManager repeats a notification for as long as the alert fires.
    UNIQUE (fingerprint, starts_at)
);
CREATE INDEX alerts_status_idx ON alerts (status, last_received_at DESC);

-- Who triggered a run (X-Actor), so that they cannot approve their own run.
ALTER TABLE workflow_runs ADD COLUMN triggered_by TEXT;

CREATE TABLE approvals (
    id          UUID PRIMARY KEY,
    project_id  BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    run_id      UUID NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    node_id     TEXT NOT NULL,
    -- PENDING until someone decides, or until it expires or its run is cancelled.
    status      TEXT NOT NULL CHECK (status IN ('PENDING', 'APPROVED', 'REJECTED', 'EXPIRED', 'CANCELLED')),
    agent_name  TEXT NOT NULL,
    action      TEXT NOT NULL,
    -- The rendered input the node will run with once approved.
    input       JSONB,
    requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    decided_by  TEXT,
    decided_at  TIMESTAMPTZ,
    comment     TEXT,
    FOREIGN KEY (run_id, node_id) REFERENCES node_states (run_id, node_id) ON DELETE CASCADE,
    CHECK ((status = 'PENDING') = (decided_at IS NULL))
);
-- One open request per node at a time.
CREATE UNIQUE INDEX approvals_one_pending ON approvals (run_id, node_id) WHERE status = 'PENDING';
CREATE INDEX approvals_pending_idx ON approvals (expires_at) WHERE status = 'PENDING';
