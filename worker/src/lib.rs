//! # orchestration-worker
//!
//! The worker runtime: claims due nodes, runs their agents, records how each attempt ended,
//! and delivers what the changes wrote to the outbox. The `orchestration-worker` binary runs
//! one [`app::Application`]; the API runs the same parts as its embedded workers.
//!
//! ## Layout
//! - [`app`]: start-up and shutdown of a worker process (settings in [`settings`], flags and
//!   environment in [`cli`]).
//! - [`runner`]: claim → execute → record for one worker, with lease renewal and batched
//!   recording; [`queue`]: the consumer loop that claims when slots are free and workers are
//!   woken.
//! - [`executor`]: one attempt of an agent (a SCRIPT process or an HTTP call), and
//!   [`builtin`], the agents that run inside the worker.
//! - [`deliver`]: the outbox's apalis workers (NATS JetStream, webhook fan-out and delivery);
//!   [`webhook`]: where a subscription may point, and one signed POST; [`nats`]: connecting
//!   and the streams.
//! - [`maintenance`]: the rescuer (repairs through the engine) and the gauge sampler.

pub mod app;
pub mod builtin;
pub mod cli;
pub mod deliver;
pub mod executor;
pub mod maintenance;
pub mod nats;
pub mod queue;
pub mod runner;
pub mod settings;
pub mod webhook;
