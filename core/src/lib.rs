//! # orchestration-core
//!
//! A durable, Postgres-backed DAG workflow engine. The API and the workers are thin binaries
//! around this library.
//!
//! ## Layout
//! - [`domain`]: agents, workflows, runs and their statuses, as they cross the API.
//! - [`dag`]: parses a workflow's nodes into a validated [`dag::Dag`] and freezes it into the
//!   [`domain::RunPlan`] a run executes.
//! - [`template`]: `{{ context.… }}` / `{{ nodes.<id>.output.… }}` references in node inputs.
//! - [`store`]: all SQL of our tables (`projects`, `agents`, `workflows`, `workflow_versions`,
//!   `workflow_runs`, `node_states`, `agent_runs`; see `migrations/`).
//! - [`queue`]: the job queue: due READY nodes taken in batches with `FOR UPDATE SKIP LOCKED`,
//!   workers woken by LISTEN/NOTIFY.
//! - [`definitions`]: saving workflows, validated in the transaction that writes them.
//! - [`alerts`]: the AlertManager webhook: alerts stored once, firing ones become events.
//! - [`engine`]: the run/node state machine; every state change is one transaction.
//! - [`events`]: event triggers (NATS JetStream consumer, REST, alerts) and lifecycle publishing.
//! - [`executor`]: runs one agent attempt (SCRIPT process or HTTP call).
//! - [`maintenance`]: the rescuer, which repairs expired leases, stalled and unfinished runs.
//! - [`worker`]: queue consumer that claims, executes and records node attempts.
//! - [`db`], [`config`], [`telemetry`]: connection and migrations, settings, logs and metrics.
//!
//! ## How a run moves
//! Trigger writes the run and a node state per node (roots READY) in one transaction; a READY
//! node is a job. A worker claims due nodes (READY → RUNNING with an attempt row, in one
//! statement), runs the agent outside any transaction, then records the result under the run's
//! row lock: the node becomes COMPLETED and its dependents whose dependencies are all done
//! become READY (the worker keeps one to run next), or a retry is scheduled, or the node FAILS and its
//! descendants are SKIPPED; the run finishes when no node can make progress.

pub mod alerts;
pub mod auth;
pub mod builtin;
pub mod config;
pub mod dag;
pub mod db;
pub mod definitions;
pub mod domain;
pub mod engine;
pub mod error;
pub mod events;
pub mod executor;
pub mod maintenance;
pub mod queue;
pub mod store;
pub mod telemetry;
pub mod template;
pub mod worker;

pub use error::{Error, Result};
