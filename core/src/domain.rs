//! The nouns of the system: agents, workflows and the plan a run executes. Definitions are
//! checked once, where they enter (`AgentInput::validate`, `dag::Dag::parse`); what is stored
//! as JSON (node specs, retry policies, plans) is serialized in the shape users write it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::Invalid;

/// Upper bounds that keep one request from costing the service more than it should.
pub mod limits {
    pub const MAX_NAME_LEN: usize = 200;
    pub const MAX_NODES: usize = 1000;
    pub const MAX_NODE_ID_LEN: usize = 128;
    pub const MAX_TIMEOUT_SECONDS: u32 = 7 * 24 * 3600;
    pub const MAX_ATTEMPTS: u32 = 100;
    pub const DEFAULT_TIMEOUT_SECONDS: u32 = 300;
    /// Largest run context (serialized JSON): every node's document carries it.
    pub const MAX_CONTEXT_BYTES: usize = 256 * 1024;
}

spelled_enum!(
    /// How an agent runs.
    AgentType {
        Script => "SCRIPT",
        Http => "HTTP",
        /// Runs inside the worker (see the worker's `builtin`): for tests and benchmarks.
        Builtin => "BUILTIN",
    }
);
stored_text!(AgentType);

spelled_enum!(
    /// Whether a person approves each of the agent's runs first.
    #[derive(Default)]
    RiskLevel {
        #[default]
        Auto => "AUTO",
        ApprovalRequired => "APPROVAL_REQUIRED",
    }
);
stored_text!(RiskLevel);

/// How often and how patiently a failed attempt is tried again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub multiplier: f64,
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff_ms: 1000,
            multiplier: 2.0,
            max_backoff_ms: 60_000,
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `next_attempt` (2 for the first retry).
    pub fn backoff(&self, next_attempt: u32) -> std::time::Duration {
        let exponent = next_attempt.saturating_sub(2).min(64) as i32;
        let ms = self.initial_backoff_ms as f64 * self.multiplier.powi(exponent);
        let ms = ms.min(self.max_backoff_ms as f64).max(0.0);
        std::time::Duration::from_millis(ms as u64)
    }

    pub fn validate(&self, field: &str) -> Result<(), Invalid> {
        if self.max_attempts == 0 || self.max_attempts > limits::MAX_ATTEMPTS {
            return Err(Invalid::new(format!(
                "{field}.maxAttempts must be between 1 and {}",
                limits::MAX_ATTEMPTS
            )));
        }
        if !self.multiplier.is_finite() || self.multiplier < 1.0 || self.multiplier > 100.0 {
            return Err(Invalid::new(format!(
                "{field}.multiplier must be between 1.0 and 100.0"
            )));
        }
        if self.initial_backoff_ms > self.max_backoff_ms.max(self.initial_backoff_ms)
            || self.max_backoff_ms > 24 * 3600 * 1000
        {
            return Err(Invalid::new(format!(
                "{field}.maxBackoffMs must be at most one day"
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capability {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
}

/// An agent as a user defines it (`POST`/`PUT /api/agents`), checked by [`AgentInput::validate`].
#[derive(Debug, Clone)]
pub struct AgentInput {
    pub name: String,
    pub agent_type: AgentType,
    pub risk_level: RiskLevel,
    pub entrypoint: Option<String>,
    pub args: Vec<String>,
    pub url: Option<String>,
    pub capabilities: Vec<Capability>,
    pub timeout_seconds: Option<u32>,
    pub retry: Option<RetryPolicy>,
    /// What one minute of this agent costs; enables cost tracking for it.
    pub cost_per_minute: Option<f64>,
}

impl AgentInput {
    pub fn validate(&self) -> Result<(), Invalid> {
        validate_name("name", &self.name)?;
        match self.agent_type {
            AgentType::Script => {
                let entry = self.entrypoint.as_deref().unwrap_or("");
                if entry.trim().is_empty() {
                    return Err(Invalid::new("a SCRIPT agent needs an entrypoint"));
                }
                if self.url.is_some() {
                    return Err(Invalid::new("a SCRIPT agent takes no url"));
                }
            }
            AgentType::Http => {
                let url = self.url.as_deref().unwrap_or("");
                match reqwest::Url::parse(url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
                    _ => {
                        return Err(Invalid::new("an HTTP agent needs an absolute http(s) url"));
                    }
                }
                if self.entrypoint.is_some() {
                    return Err(Invalid::new("an HTTP agent takes no entrypoint"));
                }
            }
            AgentType::Builtin => {
                if self.entrypoint.is_some() || self.url.is_some() {
                    return Err(Invalid::new(
                        "a BUILTIN agent takes neither entrypoint nor url",
                    ));
                }
                if let Some(cap) = self
                    .capabilities
                    .iter()
                    .find(|c| !BUILTIN_ACTIONS.contains(&c.name.as_str()))
                {
                    return Err(Invalid::new(format!(
                        "BUILTIN agents have no action \"{}\" (known: {})",
                        cap.name,
                        BUILTIN_ACTIONS.join(", ")
                    )));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for cap in &self.capabilities {
            if cap.name.trim().is_empty() {
                return Err(Invalid::new("capability names must not be empty"));
            }
            if !seen.insert(cap.name.as_str()) {
                return Err(Invalid::new(format!(
                    "capability \"{}\" is declared twice",
                    cap.name
                )));
            }
        }
        if let Some(t) = self.timeout_seconds {
            validate_timeout("timeoutSeconds", t)?;
        }
        if let Some(retry) = &self.retry {
            retry.validate("retry")?;
        }
        if let Some(c) = self.cost_per_minute
            && (!c.is_finite() || !(0.0..=1e9).contains(&c))
        {
            return Err(Invalid::new(
                "costPerMinute must be a number between 0 and 1e9",
            ));
        }
        Ok(())
    }
}

pub fn validate_name(field: &str, name: &str) -> Result<(), Invalid> {
    if name.trim().is_empty() {
        return Err(Invalid::new(format!("{field} must not be empty")));
    }
    if name.chars().count() > limits::MAX_NAME_LEN {
        return Err(Invalid::new(format!(
            "{field} must be at most {} characters",
            limits::MAX_NAME_LEN
        )));
    }
    Ok(())
}

pub fn validate_timeout(field: &str, t: u32) -> Result<(), Invalid> {
    if t == 0 || t > limits::MAX_TIMEOUT_SECONDS {
        return Err(Invalid::new(format!(
            "{field} must be between 1 and {}",
            limits::MAX_TIMEOUT_SECONDS
        )));
    }
    Ok(())
}

/// A registered agent.
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: Uuid,
    pub project_id: i64,
    pub name: String,
    pub agent_type: AgentType,
    pub risk_level: RiskLevel,
    pub entrypoint: Option<String>,
    pub args: Vec<String>,
    pub url: Option<String>,
    pub capabilities: Vec<Capability>,
    pub timeout_seconds: Option<u32>,
    pub retry: Option<RetryPolicy>,
    pub cost_per_minute: Option<f64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Agent {
    pub fn offers(&self, action: &str) -> bool {
        self.capabilities.iter().any(|c| c.name == action)
    }
}

/// What starts a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Trigger {
    #[default]
    Manual,
    Event {
        pattern: String,
    },
}

spelled_enum!(
    /// Only an ACTIVE workflow can be triggered.
    #[derive(Default)]
    WorkflowStatus {
        #[default]
        Active => "ACTIVE",
        Paused => "PAUSED",
    }
);
stored_text!(WorkflowStatus);

/// One node of a workflow as the user writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    pub id: String,
    pub agent_id: String,
    pub action: String,
    #[serde(default = "empty_object", alias = "inputs")]
    pub inputs_json: Value,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// `{"required": true}` makes the node wait for a person even if its agent does not ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalSpec {
    #[serde(default)]
    pub required: bool,
    /// How long the request stays open before the node fails (default one day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
}

/// How long an approval request waits for a decision unless the node says otherwise.
pub const DEFAULT_APPROVAL_TIMEOUT_SECONDS: u32 = 24 * 3600;

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// A workflow as a user defines it (`POST`/`PUT /api/workflows`); `definitions` checks it.
#[derive(Debug, Clone)]
pub struct WorkflowInput {
    pub name: String,
    pub trigger: Trigger,
    pub status: WorkflowStatus,
    pub nodes: Vec<NodeSpec>,
}

/// A saved workflow: always a valid DAG of the project's agents.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub id: Uuid,
    pub project_id: i64,
    pub name: String,
    pub trigger: Trigger,
    pub status: WorkflowStatus,
    pub version: i32,
    pub nodes: Vec<NodeSpec>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The agent settings a run executes with, copied at trigger time so that editing or deleting
/// the agent never changes a run in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSnapshot {
    pub id: Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub agent_type: AgentType,
    pub risk_level: RiskLevel,
    #[serde(default)]
    pub entrypoint: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_minute: Option<f64>,
}

/// A node as a run executes it: agent resolved, retry and timeout settled, edges both ways.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedNode {
    pub id: String,
    pub agent: AgentSnapshot,
    pub action: String,
    pub inputs: Value,
    pub depends_on: Vec<String>,
    pub dependents: Vec<String>,
    /// Nodes whose outputs the input templates read.
    pub reads: Vec<String>,
    pub retry: RetryPolicy,
    pub timeout_seconds: u32,
    /// Seconds an approval request stays open, when the node needs one before it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_timeout_seconds: Option<u32>,
    /// Dependents that need an approval: only these need more than a job when released.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gated_dependents: Vec<String>,
    /// Every other node of the run is an ancestor or a descendant of this one, so no other
    /// node can run while it does: its completion cannot race another one's to end the run,
    /// and needs no run lock taken before it (false in plans that predate it: they lock).
    #[serde(default)]
    pub alone: bool,
}

impl PlannedNode {
    /// Whether a person must approve the node before it runs.
    pub fn needs_approval(&self) -> bool {
        self.approval_timeout_seconds.is_some()
    }
}

/// The frozen definition a run executes (`workflow_runs.definition`). Nodes are keyed by id
/// so that a worker can fetch just its own node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunPlan {
    pub nodes: std::collections::BTreeMap<String, PlannedNode>,
}

/// How an attempt ended: what the executor reports and the engine records.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded {
        output: Value,
        exit_code: Option<i32>,
    },
    Failed {
        error: String,
        /// Whether another attempt could go differently (a timeout, a 5xx); a template that
        /// cannot render or a 4xx answer will not.
        retryable: bool,
        exit_code: Option<i32>,
    },
}

impl Outcome {
    pub fn failed(error: impl Into<String>, retryable: bool, exit_code: Option<i32>) -> Self {
        Outcome::Failed {
            error: error.into(),
            retryable,
            exit_code,
        }
    }

    pub fn succeeded(&self) -> bool {
        matches!(self, Outcome::Succeeded { .. })
    }

    /// The failure's message; empty for a success.
    pub fn error(&self) -> &str {
        match self {
            Outcome::Failed { error, .. } => error,
            Outcome::Succeeded { .. } => "",
        }
    }
}

/// The actions BUILTIN agents offer (they run inside the worker: see the worker's `builtin`).
pub const BUILTIN_ACTIONS: &[&str] = &["noop", "echo", "sleep", "fail"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 100,
            multiplier: 2.0,
            max_backoff_ms: 500,
        };
        assert_eq!(p.backoff(2).as_millis(), 100);
        assert_eq!(p.backoff(3).as_millis(), 200);
        assert_eq!(p.backoff(4).as_millis(), 400);
        assert_eq!(p.backoff(5).as_millis(), 500);
        assert_eq!(p.backoff(60).as_millis(), 500);
    }
}
