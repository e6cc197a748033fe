-- BUILTIN agents run inside the worker (noop, echo, sleep, fail): no entrypoint, no url.
ALTER TABLE agents DROP CONSTRAINT agents_type_check;
ALTER TABLE agents ADD CONSTRAINT agents_type_check CHECK (type IN ('SCRIPT', 'HTTP', 'BUILTIN'));
