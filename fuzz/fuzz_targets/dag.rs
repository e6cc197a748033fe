//! Saving a workflow, as `POST /api/workflows` does it short of the database: the raw body
//! through serde into the shape the API's `wire::WorkflowInput` reads (the fields below, in
//! the core library's stored form), the name and trigger checks, `Dag::parse` against the
//! project's agents, and, for a DAG that is accepted, the `RunPlan` a trigger freezes from it
//! and the parse again of its stored nodes that every trigger does.
//!
//! The agents stand for what `store::agents::resolve_many` returns for a project: each
//! under its name and under its id. Seeds use their names, so the fuzzer starts from DAGs that
//! pass the agent checks and reaches the template and ancestor checks behind them.

#![no_main]

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use orchestration_core::dag::Dag;
use orchestration_core::definitions::validate_trigger;
use orchestration_core::domain::{
    Agent, AgentType, Capability, NodeSpec, RetryPolicy, RiskLevel, Trigger, WorkflowStatus,
    limits, validate_name,
};

/// A workflow body as the API reads it.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct WorkflowInput {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    trigger: Trigger,
    #[serde(default)]
    status: WorkflowStatus,
    nodes: Vec<NodeSpec>,
}

fn agent(
    name: &str,
    agent_type: AgentType,
    risk_level: RiskLevel,
    actions: &[&str],
    retry: Option<RetryPolicy>,
) -> Agent {
    let epoch = chrono::DateTime::UNIX_EPOCH;
    Agent {
        // Fixed ids keep runs reproducible: the ids are keys of the map.
        id: uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + name.len() as u128),
        project_id: 1,
        name: name.to_owned(),
        agent_type,
        risk_level,
        entrypoint: (agent_type == AgentType::Script).then(|| name.to_owned()),
        args: vec![],
        url: (agent_type == AgentType::Http).then(|| format!("http://127.0.0.1:9/{name}")),
        capabilities: actions
            .iter()
            .map(|a| Capability {
                name: (*a).to_owned(),
                description: None,
                input_schema: None,
                output_schema: None,
            })
            .collect(),
        timeout_seconds: (risk_level == RiskLevel::ApprovalRequired).then_some(60),
        retry,
        cost_per_minute: None,
        created_at: epoch,
        updated_at: epoch,
    }
}

fn agents() -> &'static HashMap<String, Agent> {
    static AGENTS: OnceLock<HashMap<String, Agent>> = OnceLock::new();
    AGENTS.get_or_init(|| {
        let list = [
            agent(
                "security-scanner",
                AgentType::Script,
                RiskLevel::Auto,
                &["scan"],
                None,
            ),
            agent(
                "notifier",
                AgentType::Script,
                RiskLevel::Auto,
                &["send"],
                None,
            ),
            agent(
                "deployer",
                AgentType::Http,
                RiskLevel::ApprovalRequired,
                &["plan", "deploy"],
                Some(RetryPolicy {
                    max_attempts: 5,
                    initial_backoff_ms: 10,
                    multiplier: 1.5,
                    max_backoff_ms: 100,
                }),
            ),
            agent("idle", AgentType::Script, RiskLevel::Auto, &[], None),
        ];
        let mut by_ref = HashMap::new();
        for a in list {
            by_ref.insert(a.id.to_string(), a.clone());
            by_ref.insert(a.name.clone(), a);
        }
        by_ref
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = serde_json::from_slice::<WorkflowInput>(data) else {
        return;
    };
    let _ = validate_name("name", &input.name);
    let _ = validate_trigger(&input.trigger);
    let node_count = input.nodes.len();
    let dag = match Dag::parse(input.nodes, agents()) {
        Ok(dag) => dag,
        Err(invalid) => {
            assert!(!invalid.message.is_empty());
            return;
        }
    };

    // What an accepted DAG promises everything downstream.
    assert!((1..=limits::MAX_NODES).contains(&node_count));
    let ids: HashSet<&str> = dag.nodes().iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids.len(), node_count, "node ids are unique");
    assert!(dag.roots().next().is_some(), "an acyclic DAG has a root");
    for node in dag.nodes() {
        assert!(dag.node(&node.id).is_some());
        for dep in &node.depends_on {
            assert!(ids.contains(dep.as_str()), "dependency {dep:?} exists");
        }
    }

    let plan = dag.plan(agents());
    assert_eq!(plan.nodes.len(), node_count);
    for (id, planned) in &plan.nodes {
        let descendants = plan.descendants(id);
        assert!(
            !descendants.contains(id),
            "{id} is its own descendant in an accepted DAG"
        );
        for read in &planned.reads {
            assert!(plan.nodes.contains_key(read));
        }
        for d in &planned.dependents {
            assert!(plan.nodes[d].depends_on.contains(id));
        }
        let _ = planned.retry.backoff(planned.retry.max_attempts);
    }
    // The plan is stored as JSON with the run.
    serde_json::to_vec(&plan).expect("a RunPlan serializes");

    // The nodes are stored as JSON and parsed again at every trigger: what was accepted once
    // must be accepted again, or the saved workflow could never run.
    let stored = serde_json::to_vec(dag.nodes()).expect("nodes serialize");
    let reloaded: Vec<NodeSpec> = serde_json::from_slice(&stored).expect("stored nodes parse");
    if let Err(invalid) = Dag::parse(reloaded, agents()) {
        panic!(
            "accepted when saved, rejected when triggered: {}",
            invalid.message
        );
    }
});
