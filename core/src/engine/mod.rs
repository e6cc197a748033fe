//! The engine: every state change of a run and its nodes, each one transaction through the
//! lifecycle tables, returning its effects. Split by what happens:
//!
//! - [`Engine`]: the pool, the outbox, plans and waiting triggers; [`change::Change`]: one
//!   transaction and the effects it collects. Its commit writes the events to the outbox in
//!   the same transaction and applies the rest (metrics, logs) after it.
//! - [`trigger`]: starting runs (REST, events, alerts), with the plans of [`plans`] and
//!   concurrent triggers of a workflow sharing one statement ([`batch`]).
//! - [`attempt`]: claiming due nodes and recording how their attempts ended.
//! - [`control`]: cancel, and retry from failure.
//! - [`approval`]: approval requests, decisions and expiry.
//! - [`outcome`]: what follows from a node failing or a run having no move left (skipped
//!   descendants, the run's end), for all of the above.
//! - [`repair`]: what the rescuer repairs (lost workers, unfinished and stalled runs), through
//!   the same transitions.
//!
//! A run: a trigger writes it RUNNING with a node state per node (roots READY: a READY node is
//! a job) in one statement. A worker claims due nodes (READY → RUNNING with an attempt row, in
//! one statement), runs the agent outside any transaction, then records the result under the
//! run's row lock: the node COMPLETES and releases its dependents (the worker keeps one to run
//! next), or is scheduled for a retry, or FAILS and its descendants are SKIPPED; the run ends
//! when no node can move.

pub mod approval;
pub mod attempt;
mod batch;
pub mod change;
pub mod control;
pub mod outcome;
pub mod plans;
pub mod repair;
pub mod trigger;

use sqlx::PgPool;

use crate::outbox::Outbox;

/// The engine's handles, shared by the API's handlers and a worker's tasks (cheap to clone:
/// every field is shared).
#[derive(Clone)]
pub struct Engine {
    pub(crate) pool: PgPool,
    pub(crate) outbox: Outbox,
    /// Plans of the workflows this process triggered (see `trigger`).
    pub(crate) plans: std::sync::Arc<plans::PlanCache>,
    /// Triggers waiting to share an insert (see `batch`).
    pub(crate) batches: batch::Batches,
}

impl Engine {
    pub fn new(pool: PgPool, outbox: Outbox) -> Engine {
        Engine {
            pool,
            outbox,
            plans: Default::default(),
            batches: batch::Batches::default(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }
}
