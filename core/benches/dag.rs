//! DAG benchmarks on 1,000-node workflows (the `limits::MAX_NODES` maximum):
//! - `Dag::parse`: validation when a workflow is saved (ids, edges, cycles,
//!   agents, templates, ancestor checks);
//! - `Dag::plan`: the frozen `RunPlan` written when a run is triggered, with the
//!   dependents each completion releases, gated dependents and template reads;
//! - `RunPlan::descendants`: the nodes a failure (or a rejected approval) skips;
//! - decoding the stored `RunPlan` JSON, which the engine does (through
//!   `store::runs::run_plan`) before computing descendants.
//!
//! Shapes: a chain, a fan-out/fan-in (1 -> 998 -> 1) and a layered DAG with
//! pseudo-random edges built deterministically (20 layers of 50 nodes).
//!
//! Run: `cargo bench -p orchestration-core --bench dag`

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use orchestration_core::dag::Dag;
use orchestration_core::domain::{
    Agent, AgentType, Capability, NodeSpec, RiskLevel, RunPlan, limits,
};
use serde_json::{Value, json};

const N: usize = limits::MAX_NODES;
const LAYERS: usize = 20;
const PER_LAYER: usize = N / LAYERS;

const AGENT: &str = "scanner";
/// An agent whose nodes wait for an approval, so that plans have gated dependents.
const APPROVER: &str = "deployer";

fn agent(name: &str, risk_level: RiskLevel, actions: &[&str]) -> Agent {
    Agent {
        id: uuid::Uuid::new_v4(),
        project_id: 1,
        name: name.to_owned(),
        agent_type: AgentType::Script,
        risk_level,
        entrypoint: Some("/usr/local/bin/agent".into()),
        args: vec!["--json".into()],
        url: None,
        capabilities: actions
            .iter()
            .map(|a| Capability {
                name: (*a).to_owned(),
                description: None,
                input_schema: None,
                output_schema: None,
            })
            .collect(),
        timeout_seconds: Some(600),
        retry: None,
        cost_per_minute: Some(0.01),
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
    }
}

fn agents() -> HashMap<String, Agent> {
    HashMap::from([
        (
            AGENT.to_owned(),
            agent(AGENT, RiskLevel::Auto, &["scan", "summarize", "notify"]),
        ),
        (
            APPROVER.to_owned(),
            agent(APPROVER, RiskLevel::ApprovalRequired, &["deploy"]),
        ),
    ])
}

fn node(id: &str, agent_id: &str, action: &str, deps: Vec<String>, inputs: Value) -> NodeSpec {
    NodeSpec {
        id: id.to_owned(),
        agent_id: agent_id.to_owned(),
        action: action.to_owned(),
        inputs_json: inputs,
        depends_on: deps,
        retry: None,
        timeout_seconds: None,
        approval: None,
    }
}

fn reads(id: &str) -> String {
    format!("{{{{ nodes.{id}.output.summary.total }}}}")
}

/// n0000 -> n0001 -> ... -> n0999; each node reads its parent's output.
fn chain() -> Vec<NodeSpec> {
    (0..N)
        .map(|i| {
            let id = format!("n{i:04}");
            if i == 0 {
                node(
                    &id,
                    AGENT,
                    "scan",
                    vec![],
                    json!({ "repo": "{{ context.repositoryPath }}" }),
                )
            } else {
                let parent = format!("n{:04}", i - 1);
                let inputs = json!({ "previous": reads(&parent), "step": i });
                node(&id, AGENT, "summarize", vec![parent], inputs)
            }
        })
        .collect()
}

/// root -> worker-000 .. worker-997 -> join; the join reads every worker.
fn fan() -> Vec<NodeSpec> {
    let workers: Vec<String> = (0..N - 2).map(|i| format!("worker-{i:03}")).collect();
    let mut nodes = Vec::with_capacity(N);
    nodes.push(node(
        "root",
        AGENT,
        "scan",
        vec![],
        json!({ "repo": "{{ context.repositoryPath }}" }),
    ));
    for (i, id) in workers.iter().enumerate() {
        let inputs = json!({ "shard": i, "files": "{{ nodes.root.output.files }}" });
        nodes.push(node(id, AGENT, "scan", vec!["root".to_owned()], inputs));
    }
    let results: Vec<Value> = workers.iter().map(|w| json!(reads(w))).collect();
    nodes.push(node(
        "join",
        AGENT,
        "summarize",
        workers,
        json!({ "results": results }),
    ));
    nodes
}

/// Small deterministic generator (64-bit LCG, high bits), so every run
/// benchmarks the same graph without a rand dependency.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n
    }
}

/// 20 layers of 50 nodes. Each node below the first layer depends on 1 to 3
/// nodes of the layer above and, one time in four, on a node of an earlier
/// layer; it reads its first parent. One node in ten needs an approval.
fn layered() -> Vec<NodeSpec> {
    let id = |layer: usize, k: usize| format!("l{layer:02}-n{k:02}");
    let mut rng = Lcg(0x5eed);
    let mut nodes = Vec::with_capacity(N);
    for layer in 0..LAYERS {
        for k in 0..PER_LAYER {
            let me = id(layer, k);
            let (agent_id, action) = if (layer * PER_LAYER + k) % 10 == 9 {
                (APPROVER, "deploy")
            } else {
                (AGENT, "scan")
            };
            if layer == 0 {
                let inputs = json!({ "repo": "{{ context.repositoryPath }}", "shard": k });
                nodes.push(node(&me, agent_id, action, vec![], inputs));
                continue;
            }
            let mut deps = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let parent = id(layer - 1, rng.below(PER_LAYER));
                if !deps.contains(&parent) {
                    deps.push(parent);
                }
            }
            if layer >= 2 && rng.below(4) == 0 {
                deps.push(id(rng.below(layer - 1), rng.below(PER_LAYER)));
            }
            let inputs = json!({
                "input": reads(&deps[0]),
                "message": format!("layer {layer} of {{{{ context.repositoryPath }}}}"),
            });
            nodes.push(node(&me, agent_id, action, deps, inputs));
        }
    }
    nodes
}

struct Shape {
    name: &'static str,
    nodes: Vec<NodeSpec>,
    /// The node whose failure is benchmarked.
    failing: &'static str,
}

fn shapes() -> Vec<Shape> {
    vec![
        Shape {
            name: "chain_1000",
            nodes: chain(),
            failing: "n0000",
        },
        Shape {
            name: "fan_1_998_1",
            nodes: fan(),
            failing: "root",
        },
        Shape {
            name: "layered_20x50",
            nodes: layered(),
            failing: "l00-n00",
        },
    ]
}

fn bench_parse(c: &mut Criterion) {
    let agents = agents();
    let mut group = c.benchmark_group("dag_parse");
    for shape in shapes() {
        assert_eq!(shape.nodes.len(), N);
        Dag::parse(shape.nodes.clone(), &agents).expect("benchmark DAG is valid");
        // `parse` takes the nodes by value: clone them outside the timing.
        group.bench_function(shape.name, |b| {
            b.iter_batched(
                || shape.nodes.clone(),
                |nodes| Dag::parse(nodes, black_box(&agents)),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn bench_plan(c: &mut Criterion) {
    let agents = agents();
    let mut group = c.benchmark_group("dag_plan");
    for shape in shapes() {
        let dag = Dag::parse(shape.nodes, &agents).unwrap();
        group.bench_function(shape.name, |b| {
            b.iter(|| black_box(&dag).plan(black_box(&agents)))
        });
    }
    group.finish();
}

fn bench_descendants(c: &mut Criterion) {
    let agents = agents();
    let mut group = c.benchmark_group("run_plan_descendants");
    for shape in shapes() {
        let plan = Dag::parse(shape.nodes, &agents).unwrap().plan(&agents);
        let skipped = plan.descendants(shape.failing).len();
        assert!(
            skipped > N / 2,
            "{}: only {skipped} descendants",
            shape.name
        );
        group.bench_function(shape.name, |b| {
            b.iter(|| black_box(&plan).descendants(black_box(shape.failing)))
        });
    }
    group.finish();
}

fn bench_plan_decode(c: &mut Criterion) {
    let agents = agents();
    let mut group = c.benchmark_group("run_plan_decode");
    for shape in shapes() {
        let plan = Dag::parse(shape.nodes, &agents).unwrap().plan(&agents);
        let stored = serde_json::to_vec(&plan).unwrap();
        assert_eq!(serde_json::from_slice::<RunPlan>(&stored).unwrap(), plan);
        group.bench_function(shape.name, |b| {
            b.iter(|| serde_json::from_slice::<RunPlan>(black_box(&stored)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_parse,
    bench_plan,
    bench_descendants,
    bench_plan_decode
);
criterion_main!(benches);
