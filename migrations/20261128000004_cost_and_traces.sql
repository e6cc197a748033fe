-- Cost tracking and trace propagation.

-- What one minute of this agent costs (any currency unit the operator chooses).
ALTER TABLE agents ADD COLUMN cost_per_minute DOUBLE PRECISION CHECK (cost_per_minute >= 0);
-- Cost of one attempt: its duration times the agent's rate at trigger time.
ALTER TABLE agent_runs ADD COLUMN cost DOUBLE PRECISION;
CREATE INDEX agent_runs_finished_idx ON agent_runs (finished_at) WHERE finished_at IS NOT NULL;

-- W3C traceparent of the request that started the run: every node execution joins its trace.
ALTER TABLE workflow_runs ADD COLUMN traceparent TEXT;
