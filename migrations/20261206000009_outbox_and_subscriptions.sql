-- Webhook subscriptions of a project: which lifecycle events go where. The outbox (apalis,
-- schema apalis, set up before these migrations run) carries the deliveries.
CREATE TABLE subscriptions (
    id          UUID PRIMARY KEY,
    project_id  BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    url         TEXT NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    -- Event kinds ('run.failed'), '<machine>.*', or '*' for every event.
    events      TEXT[] NOT NULL CHECK (cardinality(events) > 0),
    -- Signs deliveries (HMAC-SHA256); kept to sign, never shown again.
    secret      TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by  TEXT
);
CREATE INDEX subscriptions_project_idx ON subscriptions (project_id, created_at);

-- One row per subscription and event: the apalis job that delivers it. The job keeps status
-- and attempts; this keeps the last failure, which the job's own result loses on success.
CREATE TABLE subscription_deliveries (
    subscription_id UUID NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    event_id        UUID NOT NULL,
    event_kind      TEXT NOT NULL,
    job_id          TEXT NOT NULL,
    last_error      TEXT,
    last_attempt_at TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, event_id)
);
CREATE INDEX subscription_deliveries_listed_idx ON subscription_deliveries (subscription_id, created_at DESC);
CREATE INDEX subscription_deliveries_job_idx ON subscription_deliveries (job_id);

-- apalis keeps a new job's run_at in whole seconds and fetches jobs by run_at, so jobs written
-- within one second came out in any order. An outbox job due at once is due when its change
-- began instead: the events of a run leave in the order their changes committed (a change
-- that follows another begins after it committed).
CREATE FUNCTION orchestration_outbox_run_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.job_type LIKE 'orchestration.%' AND NEW.run_at <= now() THEN
        NEW.run_at := now();
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER orchestration_outbox_run_at BEFORE INSERT ON apalis.jobs
    FOR EACH ROW EXECUTE FUNCTION orchestration_outbox_run_at();
