-- An attempt already references its node (run_id, node_id), whose run_id references the run:
-- the attempt's own reference to the run checked the same thing again on every attempt opened
-- (one foreign-key lookup per node on the hot path). Deleting a run still deletes its attempts,
-- through its nodes.
ALTER TABLE agent_runs DROP CONSTRAINT agent_runs_run_id_fkey;
