//! # orchestration-core
//!
//! The shared library of the orchestrator: the domain, the life of a run, and all SQL. It
//! knows nothing of HTTP (the `api` crate) or of running agents (the `worker` crate); both
//! call the [`engine`].
//!
//! ## Layout
//! - [`lifecycle`]: run, node, attempt and approval statuses and the one table of transitions
//!   per machine; every status a statement writes is spelled from it.
//! - [`engine`]: the state changes, split by what happens: `trigger`, `attempt` (claim and
//!   record), `control` (cancel, retry), `approval`, `repair` (what the rescuer calls). Each
//!   is one transaction (`engine::change::Change`) that returns its [`effects`].
//! - [`effects`]: lifecycle events, metrics, wake-ups: what a change causes, applied in one
//!   place after its commit.
//! - [`outbox`]: lifecycle events written as apalis jobs in the change's own transaction, for
//!   the worker's deliverers (NATS JetStream, webhooks).
//! - [`store`]: all SQL of our tables (see `migrations/`), one file per table family.
//! - [`domain`]: agents, workflows and the plan a run executes; [`dag`] parses a workflow into
//!   a validated DAG and plans it; [`template`] renders node inputs.
//! - [`definitions`]: saving workflows; [`ingest`]: events that start workflows; [`alerts`]:
//!   the AlertManager webhook.
//! - [`auth`]: principals, roles, token secrets.
//! - [`db`], [`telemetry`], [`error`]: connection and migrations, logs, traces and metric
//!   names, the library's error.

#[macro_use]
mod macros;

pub mod alerts;
pub mod auth;
pub mod dag;
pub mod db;
pub mod definitions;
pub mod domain;
pub mod effects;
pub mod engine;
pub mod error;
pub mod ingest;
pub mod lifecycle;
pub mod outbox;
pub mod store;
pub mod telemetry;
pub mod template;

pub use error::{Error, Result};
