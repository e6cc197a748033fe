//! The nouns of the system as they cross the API and the database: agents, workflows, runs and
//! their statuses. Request bodies are parsed into these types once, at the boundary.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::Invalid;

/// Ids are opaque strings in the API, whatever their type in the database.
fn as_string<S: serde::Serializer>(id: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgentType {
    Script,
    Http,
    /// Runs inside the worker (see [`crate::builtin`]): for tests and benchmarks.
    Builtin,
}

impl AgentType {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentType::Script => "SCRIPT",
            AgentType::Http => "HTTP",
            AgentType::Builtin => "BUILTIN",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "SCRIPT" => Some(AgentType::Script),
            "HTTP" => Some(AgentType::Http),
            "BUILTIN" => Some(AgentType::Builtin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RiskLevel {
    #[default]
    Auto,
    ApprovalRequired,
}

impl RiskLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Auto => "AUTO",
            RiskLevel::ApprovalRequired => "APPROVAL_REQUIRED",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "AUTO" => Some(RiskLevel::Auto),
            "APPROVAL_REQUIRED" => Some(RiskLevel::ApprovalRequired),
            _ => None,
        }
    }
}

/// How often and how patiently a failed attempt is tried again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RetryPolicy {
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    #[schema(minimum = 1.0, maximum = 100.0)]
    pub multiplier: f64,
    #[schema(maximum = 86_400_000)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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

/// An agent as a user registers it (`POST`/`PUT /api/agents`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentInput {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[serde(rename = "type")]
    pub agent_type: AgentType,
    #[serde(default)]
    pub risk_level: RiskLevel,
    #[serde(default)]
    pub entrypoint: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604_800)]
    pub timeout_seconds: Option<u32>,
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    #[serde(default)]
    pub description: Option<String>,
    /// What one minute of this agent costs; enables cost tracking for it.
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1e9)]
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
                    .find(|c| !crate::builtin::ACTIONS.contains(&c.name.as_str()))
                {
                    return Err(Invalid::new(format!(
                        "BUILTIN agents have no action \"{}\" (known: {})",
                        cap.name,
                        crate::builtin::ACTIONS.join(", ")
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

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub id: Uuid,
    #[serde(serialize_with = "as_string")]
    #[schema(value_type = String)]
    pub project_id: i64,
    pub name: String,
    #[serde(rename = "type")]
    pub agent_type: AgentType,
    pub risk_level: RiskLevel,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub capabilities: Vec<Capability>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Trigger {
    #[default]
    Manual,
    Event {
        #[schema(min_length = 1, max_length = 256)]
        pattern: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkflowStatus {
    #[default]
    Active,
    Paused,
}

impl WorkflowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Active => "ACTIVE",
            WorkflowStatus::Paused => "PAUSED",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ACTIVE" => Some(WorkflowStatus::Active),
            "PAUSED" => Some(WorkflowStatus::Paused),
            _ => None,
        }
    }
}

/// One node of a workflow as the user writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkflowInput {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub trigger: Trigger,
    #[serde(default)]
    pub status: WorkflowStatus,
    pub nodes: Vec<NodeSpec>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workflow {
    pub id: Uuid,
    #[serde(serialize_with = "as_string")]
    #[schema(value_type = String)]
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

macro_rules! status_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[schema(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }
        impl $name {
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $text),+ } }
            pub fn parse(s: &str) -> Option<Self> { match s { $($text => Some($name::$variant),)+ _ => None } }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

status_enum!(
    /// PENDING until a worker starts its first node; terminal states always carry `finishedAt`.
    RunStatus {
        Pending => "PENDING",
        Running => "RUNNING",
        WaitingApproval => "WAITING_APPROVAL",
        Completed => "COMPLETED",
        Failed => "FAILED",
        Cancelled => "CANCELLED",
    }
);

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

status_enum!(
    /// PENDING waits on dependencies; READY has a job in the queue; RUNNING is held by a worker.
    NodeStatus {
        Pending => "PENDING",
        Ready => "READY",
        Running => "RUNNING",
        WaitingApproval => "WAITING_APPROVAL",
        Completed => "COMPLETED",
        Failed => "FAILED",
        Skipped => "SKIPPED",
        Cancelled => "CANCELLED",
    }
);

status_enum!(
    /// PENDING until decided; EXPIRED after its timeout; CANCELLED with its run.
    ApprovalStatus {
        Pending => "PENDING",
        Approved => "APPROVED",
        Rejected => "REJECTED",
        Expired => "EXPIRED",
        Cancelled => "CANCELLED",
    }
);

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    pub id: Uuid,
    pub run_id: Uuid,
    pub node_id: String,
    pub status: ApprovalStatus,
    pub agent_name: String,
    pub action: String,
    pub input: Option<Value>,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub id: Uuid,
    pub fingerprint: String,
    pub status: String,
    pub alertname: String,
    pub labels: Value,
    pub annotations: Value,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    pub generator_url: Option<String>,
    pub receiver: Option<String>,
    pub first_received_at: DateTime<Utc>,
    pub last_received_at: DateTime<Utc>,
}

status_enum!(AgentRunStatus {
    Running => "RUNNING",
    Completed => "COMPLETED",
    Failed => "FAILED",
});

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    pub node_id: String,
    pub status: NodeStatus,
    pub attempts: i32,
    pub output: Option<Value>,
    pub error: Option<String>,
    /// When the node's current attempt became READY (its job was due).
    pub ready_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentRun {
    pub id: Uuid,
    pub node_id: String,
    pub agent_id: Uuid,
    pub action: String,
    pub attempt: i32,
    pub status: AgentRunStatus,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
    pub worker: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<String>,
    pub workflow_id: Uuid,
    pub workflow_name: String,
    pub workflow_version: i32,
    pub trigger: String,
    pub status: RunStatus,
    pub context: Value,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunSummary,
    pub nodes: Vec<NodeState>,
    pub agent_runs: Vec<AgentRun>,
    pub approvals: Vec<Approval>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    #[serde(serialize_with = "as_string")]
    #[schema(value_type = String)]
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

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

    #[test]
    fn statuses_round_trip() {
        for s in [
            "PENDING",
            "RUNNING",
            "WAITING_APPROVAL",
            "COMPLETED",
            "FAILED",
            "CANCELLED",
        ] {
            assert_eq!(RunStatus::parse(s).unwrap().as_str(), s);
        }
        assert!(NodeStatus::parse("SKIPPED").is_some());
        assert!(RunStatus::parse("SKIPPED").is_none());
    }
}
