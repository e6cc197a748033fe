-- After every attempt the engine asks whether its run still has a node that can make
-- progress; this answers with one index probe instead of a scan of the run's nodes.
CREATE INDEX node_states_open_idx ON node_states (run_id)
    WHERE status IN ('PENDING', 'READY', 'RUNNING', 'WAITING_APPROVAL');
