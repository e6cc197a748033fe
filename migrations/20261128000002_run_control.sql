-- Run control: retry from failure counts attempts per generation, and triggers may carry an
-- idempotency key.

-- Attempts started before the current generation (a retried run starts a new one); a node's
-- retry policy applies to attempts beyond this base.
ALTER TABLE node_states ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;

ALTER TABLE workflow_runs ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;
ALTER TABLE workflow_runs ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX workflow_runs_idempotency_key ON workflow_runs (project_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- The rescuer looks for READY nodes that have waited too long.
CREATE INDEX node_states_ready_idx ON node_states (ready_at) WHERE status = 'READY';
