//! The API's JSON: request bodies parsed into the domain at the boundary, responses made from
//! what the engine and the store return, and the OpenAPI schema of each.
//!
//! The definitions users write (node specs, retry policies, capabilities, triggers) and the
//! statuses are stored and sent in one JSON shape, the core library's; their schemas are
//! described here by mirrors (`*Doc`) that a test holds to what the core types serialize.

use chrono::{DateTime, Utc};
use orchestration_core::auth::Role;
use orchestration_core::domain::{
    self, AgentType, Capability, NodeSpec, RetryPolicy, RiskLevel, Trigger, WorkflowStatus,
};
use orchestration_core::lifecycle::{ApprovalStatus, AttemptStatus, NodeStatus, RunStatus};
use orchestration_core::store;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// Ids are opaque strings in the API, whatever their type in the database.
fn as_string<S: serde::Serializer>(id: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

fn as_optional_string<S: serde::Serializer>(id: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
}

/// `{"items": [..]}`: every list the API returns.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemList<T> {
    pub items: Vec<T>,
}

impl<T, U: Into<T>> From<Vec<U>> for ItemList<T> {
    fn from(items: Vec<U>) -> Self {
        ItemList {
            items: items.into_iter().map(Into::into).collect(),
        }
    }
}

/// An agent as a user registers it (`POST`/`PUT /api/agents`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentInput {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[serde(rename = "type")]
    #[schema(value_type = AgentTypeDoc)]
    pub agent_type: AgentType,
    #[serde(default)]
    #[schema(value_type = RiskLevelDoc)]
    pub risk_level: RiskLevel,
    #[serde(default)]
    pub entrypoint: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    #[schema(value_type = Vec<CapabilityDoc>)]
    pub capabilities: Vec<Capability>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604_800)]
    pub timeout_seconds: Option<u32>,
    #[serde(default)]
    #[schema(value_type = Option<RetryPolicyDoc>)]
    pub retry: Option<RetryPolicy>,
    #[serde(default)]
    pub description: Option<String>,
    /// What one minute of this agent costs; enables cost tracking for it.
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1e9)]
    pub cost_per_minute: Option<f64>,
}

impl AgentInput {
    pub fn into_domain(self) -> domain::AgentInput {
        domain::AgentInput {
            name: self.name,
            agent_type: self.agent_type,
            risk_level: self.risk_level,
            entrypoint: self.entrypoint,
            args: self.args,
            url: self.url,
            capabilities: self.capabilities,
            timeout_seconds: self.timeout_seconds,
            retry: self.retry,
            cost_per_minute: self.cost_per_minute,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub id: Uuid,
    #[serde(serialize_with = "as_string")]
    #[schema(value_type = String)]
    pub project_id: i64,
    pub name: String,
    #[serde(rename = "type")]
    #[schema(value_type = AgentTypeDoc)]
    pub agent_type: AgentType,
    #[schema(value_type = RiskLevelDoc)]
    pub risk_level: RiskLevel,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[schema(value_type = Vec<CapabilityDoc>)]
    pub capabilities: Vec<Capability>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<RetryPolicyDoc>)]
    pub retry: Option<RetryPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_minute: Option<f64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<domain::Agent> for Agent {
    fn from(a: domain::Agent) -> Self {
        Agent {
            id: a.id,
            project_id: a.project_id,
            name: a.name,
            agent_type: a.agent_type,
            risk_level: a.risk_level,
            entrypoint: a.entrypoint,
            args: a.args,
            url: a.url,
            capabilities: a.capabilities,
            timeout_seconds: a.timeout_seconds,
            retry: a.retry,
            cost_per_minute: a.cost_per_minute,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

/// A workflow as a user writes it (`POST`/`PUT /api/workflows`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkflowInput {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(value_type = TriggerDoc)]
    pub trigger: Trigger,
    #[serde(default)]
    #[schema(value_type = WorkflowStatusDoc)]
    pub status: WorkflowStatus,
    #[schema(value_type = Vec<NodeSpecDoc>)]
    pub nodes: Vec<NodeSpec>,
}

impl WorkflowInput {
    pub fn into_domain(self) -> domain::WorkflowInput {
        domain::WorkflowInput {
            name: self.name,
            trigger: self.trigger,
            status: self.status,
            nodes: self.nodes,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workflow {
    pub id: Uuid,
    #[serde(serialize_with = "as_string")]
    #[schema(value_type = String)]
    pub project_id: i64,
    pub name: String,
    #[schema(value_type = TriggerDoc)]
    pub trigger: Trigger,
    #[schema(value_type = WorkflowStatusDoc)]
    pub status: WorkflowStatus,
    pub version: i32,
    #[schema(value_type = Vec<NodeSpecDoc>)]
    pub nodes: Vec<NodeSpec>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<domain::Workflow> for Workflow {
    fn from(w: domain::Workflow) -> Self {
        Workflow {
            id: w.id,
            project_id: w.project_id,
            name: w.name,
            trigger: w.trigger,
            status: w.status,
            version: w.version,
            nodes: w.nodes,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<String>,
    pub workflow_id: Uuid,
    pub workflow_name: String,
    pub workflow_version: i32,
    pub trigger: String,
    #[schema(value_type = RunStatusDoc)]
    pub status: RunStatus,
    pub context: Value,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<store::runs::Run> for RunSummary {
    fn from(r: store::runs::Run) -> Self {
        RunSummary {
            id: r.id,
            triggered_by: r.triggered_by,
            workflow_id: r.workflow_id,
            workflow_name: r.workflow_name,
            workflow_version: r.workflow_version,
            trigger: r.trigger,
            status: r.status,
            context: r.context,
            error: r.error,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunSummary,
    pub nodes: Vec<NodeState>,
    pub agent_runs: Vec<AgentRun>,
    pub approvals: Vec<Approval>,
}

impl From<store::details::RunDetail> for RunDetail {
    fn from(d: store::details::RunDetail) -> Self {
        RunDetail {
            run: d.run.into(),
            nodes: d.nodes.into_iter().map(Into::into).collect(),
            agent_runs: d.attempts.into_iter().map(Into::into).collect(),
            approvals: d.approvals.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    pub node_id: String,
    #[schema(value_type = NodeStatusDoc)]
    pub status: NodeStatus,
    pub attempts: i32,
    pub output: Option<Value>,
    pub error: Option<String>,
    /// When the node's current attempt became READY (its job was due).
    pub ready_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<store::nodes::NodeState> for NodeState {
    fn from(n: store::nodes::NodeState) -> Self {
        NodeState {
            node_id: n.node_id,
            status: n.status,
            attempts: n.attempts,
            output: n.output,
            error: n.error,
            ready_at: n.ready_at,
            started_at: n.started_at,
            finished_at: n.finished_at,
        }
    }
}

/// One attempt of a node.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentRun {
    pub id: Uuid,
    pub node_id: String,
    pub agent_id: Uuid,
    pub action: String,
    pub attempt: i32,
    #[schema(value_type = AgentRunStatusDoc)]
    pub status: AttemptStatus,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
    pub worker: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
}

impl From<store::attempts::Attempt> for AgentRun {
    fn from(a: store::attempts::Attempt) -> Self {
        AgentRun {
            id: a.id,
            node_id: a.node_id,
            agent_id: a.agent_id,
            action: a.action,
            attempt: a.attempt,
            status: a.status,
            input: a.input,
            output: a.output,
            error: a.error,
            exit_code: a.exit_code,
            worker: a.worker,
            started_at: a.started_at,
            finished_at: a.finished_at,
            duration_ms: a.duration_ms,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    pub id: Uuid,
    pub run_id: Uuid,
    pub node_id: String,
    #[schema(value_type = ApprovalStatusDoc)]
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

impl From<store::approvals::Approval> for Approval {
    fn from(a: store::approvals::Approval) -> Self {
        Approval {
            id: a.id,
            run_id: a.run_id,
            node_id: a.node_id,
            status: a.status,
            agent_name: a.agent_name,
            action: a.action,
            input: a.input,
            requested_at: a.requested_at,
            expires_at: a.expires_at,
            decided_by: a.decided_by,
            decided_at: a.decided_at,
            comment: a.comment,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    #[serde(serialize_with = "as_string")]
    #[schema(value_type = String)]
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl From<store::projects::Project> for Project {
    fn from(p: store::projects::Project) -> Self {
        Project {
            id: p.id,
            name: p.name,
            created_at: p.created_at,
        }
    }
}

/// A token as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub id: Uuid,
    #[serde(serialize_with = "as_optional_string")]
    #[schema(value_type = Option<String>)]
    pub project_id: Option<i64>,
    #[schema(value_type = String)]
    pub role: Role,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<store::tokens::Token> for TokenView {
    fn from(t: store::tokens::Token) -> Self {
        TokenView {
            id: t.id,
            project_id: t.project_id,
            role: t.role,
            name: t.name,
            created_at: t.created_at,
            created_by: t.created_by,
            revoked_at: t.revoked_at,
            last_used_at: t.last_used_at,
        }
    }
}

/// `ok` when everything the service uses answers, `degraded` when NATS does not.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Degraded,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub status: HealthStatus,
    pub service: &'static str,
    pub version: &'static str,
    /// Whether the database answered within two seconds.
    pub database: bool,
    /// Whether NATS is connected; `null` when NATS is not configured.
    pub nats: Option<bool>,
    pub uptime_seconds: u64,
    pub timestamp: DateTime<Utc>,
}

/// The answer to a trigger: the run it started (202) or, for a repeated `Idempotency-Key`, the
/// run the first trigger started (200).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Triggered {
    pub run_id: Uuid,
    #[schema(value_type = RunStatusDoc)]
    pub status: RunStatus,
    pub workflow_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventAccepted {
    /// The caller's id for the event, or the one the service gave it.
    pub event_id: String,
    /// The runs the event started.
    pub triggered_runs: Vec<Uuid>,
    /// Whether an event with this id was received before (and so started nothing new).
    pub duplicate: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookReceived {
    /// Alerts stored from this delivery.
    pub received: usize,
    /// Runs started by newly firing alerts.
    pub triggered_runs: Vec<Uuid>,
}

/// One line of a cost report: the attempts of one agent in one workflow.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostLine {
    pub workflow: String,
    pub agent: String,
    pub attempts: i64,
    pub execution_seconds: f64,
    pub cost: f64,
}

impl From<store::cost::CostLine> for CostLine {
    fn from(l: store::cost::CostLine) -> Self {
        CostLine {
            workflow: l.workflow,
            agent: l.agent,
            attempts: l.attempts,
            execution_seconds: l.execution_seconds,
            cost: l.cost,
        }
    }
}

/// Execution time and cost in `[from, to)`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostReport {
    #[schema(value_type = String)]
    pub project_id: String,
    /// The workflow the report is limited to; `null` for the whole project.
    pub workflow_id: Option<Uuid>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub execution_seconds: f64,
    pub execution_minutes: f64,
    pub cost: f64,
    /// By workflow and agent.
    pub items: Vec<CostLine>,
}

/// A webhook subscription of a project (`POST /api/subscriptions`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionInput {
    /// Where deliveries are POSTed: an http(s) URL that resolves to public addresses (unless
    /// the deployment allows private ones).
    #[schema(
        min_length = 1,
        max_length = 2048,
        example = "https://hooks.example.com/orchestration"
    )]
    pub url: String,
    /// Event kinds (`approval.requested`, `run.failed`: the lifecycle subjects without
    /// `orchestration.`), `<machine>.*` (`run.*`), or `*`; absent or empty: every event.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub events: Option<Vec<String>>,
    /// Signs each delivery: `X-Orchestration-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 512)]
    pub secret: Option<String>,
}

/// A webhook subscription, without its secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: Uuid,
    #[serde(serialize_with = "as_string")]
    #[schema(value_type = String)]
    pub project_id: i64,
    pub url: String,
    pub events: Vec<String>,
    /// Whether deliveries are signed.
    pub signed: bool,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<String>,
}

impl From<store::subscriptions::Subscription> for Subscription {
    fn from(s: store::subscriptions::Subscription) -> Self {
        Subscription {
            id: s.id,
            project_id: s.project_id,
            url: s.url,
            events: s.events,
            signed: s.secret.is_some(),
            created_at: s.created_at,
            created_by: s.created_by,
        }
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    /// Not tried yet.
    Pending,
    /// Failed, and due again at `nextAttemptAt`.
    Retrying,
    Delivered,
    /// Failed every attempt it had; given up.
    Failed,
}

/// One event delivered (or being delivered) to a subscription.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The outbox job that delivers it.
    pub id: String,
    pub event_id: Uuid,
    /// `run.failed`, `approval.requested`, ...
    pub event: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub max_attempts: Option<i32>,
    /// Why the last failed attempt failed (kept after a later success).
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl From<store::deliveries::Delivery> for Delivery {
    fn from(d: store::deliveries::Delivery) -> Self {
        let attempts = d.attempts.unwrap_or_default();
        let exhausted = d.max_attempts.is_some_and(|max| attempts >= max);
        let status = match d.job_status.as_deref() {
            // Delivered jobs are removed after their retention: their record stays.
            Some("Done") | None => DeliveryStatus::Delivered,
            Some("Killed") => DeliveryStatus::Failed,
            Some("Failed") if exhausted => DeliveryStatus::Failed,
            Some("Failed") => DeliveryStatus::Retrying,
            Some(_) if attempts > 0 => DeliveryStatus::Retrying,
            Some(_) => DeliveryStatus::Pending,
        };
        let next_attempt_at = matches!(status, DeliveryStatus::Pending | DeliveryStatus::Retrying)
            .then_some(d.run_at)
            .flatten();
        Delivery {
            id: d.job_id,
            event_id: d.event_id,
            event: d.event_kind,
            status,
            attempts,
            max_attempts: d.max_attempts,
            last_error: d.last_error,
            created_at: d.created_at,
            delivered_at: (status == DeliveryStatus::Delivered)
                .then_some(d.done_at)
                .flatten(),
            next_attempt_at,
        }
    }
}

// Schema mirrors of the core library's stored JSON (see the module doc).

/// How an agent runs.
#[derive(ToSchema)]
#[schema(as = AgentType)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub enum AgentTypeDoc {
    SCRIPT,
    HTTP,
    BUILTIN,
}

/// Whether a person approves each of the agent's runs first.
#[derive(ToSchema)]
#[schema(as = RiskLevel)]
#[allow(dead_code, non_camel_case_types, clippy::upper_case_acronyms)]
pub enum RiskLevelDoc {
    AUTO,
    APPROVAL_REQUIRED,
}

/// Only an ACTIVE workflow can be triggered.
#[derive(ToSchema)]
#[schema(as = WorkflowStatus)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub enum WorkflowStatusDoc {
    ACTIVE,
    PAUSED,
}

/// PENDING (runs written before runs started RUNNING), RUNNING, WAITING_APPROVAL, and the
/// three terminal statuses, which always carry `finishedAt`.
#[derive(ToSchema)]
#[schema(as = RunStatus)]
#[allow(dead_code, non_camel_case_types, clippy::upper_case_acronyms)]
pub enum RunStatusDoc {
    PENDING,
    RUNNING,
    WAITING_APPROVAL,
    COMPLETED,
    FAILED,
    CANCELLED,
}

/// PENDING waits on dependencies; READY has a job in the queue; RUNNING is held by a worker.
#[derive(ToSchema)]
#[schema(as = NodeStatus)]
#[allow(dead_code, non_camel_case_types, clippy::upper_case_acronyms)]
pub enum NodeStatusDoc {
    PENDING,
    READY,
    RUNNING,
    WAITING_APPROVAL,
    COMPLETED,
    FAILED,
    SKIPPED,
    CANCELLED,
}

/// PENDING until decided; EXPIRED after its timeout; CANCELLED with its run.
#[derive(ToSchema)]
#[schema(as = ApprovalStatus)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub enum ApprovalStatusDoc {
    PENDING,
    APPROVED,
    REJECTED,
    EXPIRED,
    CANCELLED,
}

#[derive(ToSchema)]
#[schema(as = AgentRunStatus)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub enum AgentRunStatusDoc {
    RUNNING,
    COMPLETED,
    FAILED,
}

/// An alert's state.
#[derive(ToSchema)]
#[schema(as = AlertState, rename_all = "lowercase")]
#[allow(dead_code)]
pub enum AlertStateDoc {
    Firing,
    Resolved,
}

#[derive(ToSchema)]
#[schema(as = Capability, rename_all = "camelCase")]
#[allow(dead_code)]
pub struct CapabilityDoc {
    name: String,
    description: Option<String>,
    input_schema: Option<Value>,
    output_schema: Option<Value>,
}

/// How often and how patiently a failed attempt is tried again.
#[derive(Deserialize, ToSchema)]
#[schema(as = RetryPolicy)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub struct RetryPolicyDoc {
    #[schema(minimum = 1, maximum = 100, default = 3, required = false)]
    max_attempts: u32,
    #[schema(default = 1000, required = false)]
    initial_backoff_ms: u64,
    #[schema(minimum = 1.0, maximum = 100.0, default = 2.0, required = false)]
    multiplier: f64,
    #[schema(maximum = 86_400_000, default = 60000, required = false)]
    max_backoff_ms: u64,
}

/// What starts a workflow.
#[derive(Serialize, ToSchema)]
#[schema(as = Trigger)]
#[serde(tag = "type", rename_all = "lowercase")]
#[allow(dead_code)]
pub enum TriggerDoc {
    Manual,
    Event {
        #[schema(min_length = 1, max_length = 256)]
        pattern: String,
    },
}

/// One node of a workflow as the user writes it.
#[derive(Deserialize, ToSchema)]
#[schema(as = NodeSpec)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub struct NodeSpecDoc {
    id: String,
    agent_id: String,
    action: String,
    #[schema(required = false)]
    inputs_json: Value,
    #[schema(required = false)]
    depends_on: Vec<String>,
    retry: Option<RetryPolicyDoc>,
    timeout_seconds: Option<u32>,
    /// `{"required": true}` makes the node wait for a person even if its agent does not ask.
    approval: Option<ApprovalSpecDoc>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = ApprovalSpec)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub struct ApprovalSpecDoc {
    #[schema(required = false)]
    required: bool,
    /// How long the request stays open before the node fails (default one day).
    timeout_seconds: Option<u32>,
}

/// An alert as stored (`orchestration_core::store::alerts::Alert` as it serializes), and as
/// the workflows it starts read it (`context.alert`).
#[derive(ToSchema)]
#[schema(as = Alert, rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AlertDoc {
    id: Uuid,
    fingerprint: String,
    status: String,
    alertname: String,
    labels: Value,
    annotations: Value,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
    generator_url: Option<String>,
    receiver: Option<String>,
    first_received_at: DateTime<Utc>,
    last_received_at: DateTime<Utc>,
}

/// AlertManager's webhook payload, version 4 (the fields the service reads; others are
/// ignored). Describes `orchestration_core::alerts::Webhook`.
#[derive(ToSchema)]
#[schema(as = AlertManagerWebhook)]
#[allow(dead_code)]
pub struct WebhookDoc {
    /// Must be "4".
    #[schema(example = "4")]
    version: String,
    receiver: Option<String>,
    status: Option<String>,
    #[schema(max_items = 1000)]
    alerts: Vec<WebhookAlertDoc>,
}

#[derive(ToSchema)]
#[schema(as = AlertManagerAlert, rename_all = "camelCase")]
#[allow(dead_code)]
pub struct WebhookAlertDoc {
    /// `firing` or `resolved`.
    status: String,
    /// Must contain `alertname`.
    labels: std::collections::BTreeMap<String, String>,
    #[schema(required = false)]
    annotations: std::collections::BTreeMap<String, String>,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
    #[schema(rename = "generatorURL")]
    generator_url: Option<String>,
    /// 1 to 128 characters.
    fingerprint: String,
}
