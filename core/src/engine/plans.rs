//! Plans of the workflows this process triggered, each with what it was planned from. A
//! trigger whose workflow and agents are unchanged since is then one statement, which checks
//! that they are while it inserts (see `store::runs::insert`); otherwise it plans again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::RunPlan;

#[derive(Default)]
pub struct PlanCache {
    plans: Mutex<HashMap<Uuid, Arc<CachedPlan>>>,
}

/// A workflow's plan and what it was planned from.
pub struct CachedPlan {
    pub project_id: i64,
    pub workflow_id: Uuid,
    pub workflow_version: i32,
    pub workflow_name: String,
    pub plan: RunPlan,
    /// The agents it uses, each as of its `updated_at`.
    pub agents: Vec<(Uuid, DateTime<Utc>)>,
    /// Nodes that start READY.
    pub roots: Vec<String>,
}

impl PlanCache {
    pub(crate) fn get(&self, project_id: i64, workflow_id: Uuid) -> Option<Arc<CachedPlan>> {
        lock(&self.plans)
            .get(&workflow_id)
            .filter(|p| p.project_id == project_id)
            .cloned()
    }

    /// Keeps `plan` for later triggers of `workflow_id`, or forgets the one it had (`None`).
    pub(crate) fn put(&self, workflow_id: Uuid, plan: Option<CachedPlan>) {
        let mut plans = lock(&self.plans);
        match plan {
            Some(plan) => plans.insert(workflow_id, Arc::new(plan)),
            None => plans.remove(&workflow_id),
        };
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
