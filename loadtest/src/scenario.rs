//! The workflow shapes the harness runs, and the agents they use.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::client::Api;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// scan-and-notify: the acceptance load test (10 concurrent runs by default).
    Seed,
    /// N sequential nodes, each passing its output to the next.
    Chain,
    /// 1 root → W parallel branches → 1 join.
    Fanout,
    /// Many small runs (1 node each unless --nodes says otherwise).
    Throughput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    /// In-process BUILTIN agents: measures the engine, not process start-up.
    Builtin,
    /// Real SCRIPT agents: a child process per node.
    Script,
}

/// A workflow ready to be triggered, and what its runs must look like.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub workflow_id: String,
    pub context: Value,
    /// Node id → the nodes it depends on.
    pub parents: BTreeMap<String, Vec<String>>,
}

impl Prepared {
    pub fn nodes_per_run(&self) -> usize {
        self.parents.len()
    }
}

/// Registers the agents and the workflow of `kind`.
pub async fn prepare(
    api: &Api,
    kind: Kind,
    agent: AgentKind,
    nodes: usize,
    width: usize,
    repository: &Path,
) -> anyhow::Result<Prepared> {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (echo, value_path) = match agent {
        AgentKind::Builtin => (
            api.create(
                "/api/agents",
                &json!({"name": format!("loadtest-builtin-{tag}"), "type": "BUILTIN",
                        "capabilities": [{"name": "echo"}, {"name": "noop"}, {"name": "sleep"}, {"name": "fail"}],
                        "timeoutSeconds": 60}),
            )
            .await?,
            "output.value",
        ),
        AgentKind::Script => (
            api.create(
                "/api/agents",
                &json!({"name": format!("loadtest-echo-{tag}"), "type": "SCRIPT",
                        "entrypoint": "testing/echo", "capabilities": [{"name": "echo"}],
                        "timeoutSeconds": 60}),
            )
            .await?,
            "output.inputs.value",
        ),
    };
    let echo_node = |id: &str, deps: Vec<String>, value: String| {
        json!({"id": id, "agentId": echo, "action": "echo", "dependsOn": deps,
               "inputsJson": {"value": value}})
    };
    let mut context = json!({"value": "payload"});
    let mut specs = Vec::new();
    match kind {
        Kind::Chain | Kind::Throughput => {
            for i in 1..=nodes.max(1) {
                let (deps, value) = if i == 1 {
                    (vec![], "{{ context.value }}".to_string())
                } else {
                    let prev = format!("n{}", i - 1);
                    let value = format!("{{{{ nodes.{prev}.{value_path} }}}}");
                    (vec![prev], value)
                };
                specs.push(echo_node(&format!("n{i}"), deps, value));
            }
        }
        Kind::Fanout => {
            specs.push(echo_node("root", vec![], "{{ context.value }}".into()));
            let branches: Vec<String> = (0..width.max(1)).map(|i| format!("b{i}")).collect();
            for b in &branches {
                specs.push(echo_node(
                    b,
                    vec!["root".into()],
                    format!("{{{{ nodes.root.{value_path} }}}}"),
                ));
            }
            specs.push(echo_node("join", branches, "joined".into()));
        }
        Kind::Seed => {
            context = json!({"repositoryPath": repository});
            match agent {
                AgentKind::Script => {
                    let scanner = api
                        .create(
                            "/api/agents",
                            &json!({"name": format!("loadtest-scanner-{tag}"), "type": "SCRIPT",
                                    "entrypoint": "security-scanner", "capabilities": [{"name": "scan"}],
                                    "timeoutSeconds": 120}),
                        )
                        .await?;
                    let notifier = api
                        .create(
                            "/api/agents",
                            &json!({"name": format!("loadtest-notifier-{tag}"), "type": "SCRIPT",
                                    "entrypoint": "notifier", "capabilities": [{"name": "send"}],
                                    "timeoutSeconds": 60}),
                        )
                        .await?;
                    specs.push(
                        json!({"id": "scan-node", "agentId": scanner, "action": "scan",
                        "inputsJson": {"repositoryPath": "{{ context.repositoryPath }}"}}),
                    );
                    specs.push(json!({"id": "notify-node", "agentId": notifier, "action": "send",
                        "dependsOn": ["scan-node"],
                        "inputsJson": {"channel": "console",
                            "message": "Security scan complete: {{ nodes.scan-node.output.summary.total }} findings"}}));
                }
                AgentKind::Builtin => {
                    specs.push(echo_node(
                        "scan-node",
                        vec![],
                        "{{ context.repositoryPath }}".into(),
                    ));
                    specs.push(echo_node(
                        "notify-node",
                        vec!["scan-node".into()],
                        format!("Security scan complete: {{{{ nodes.scan-node.{value_path} }}}}"),
                    ));
                }
            }
        }
    }
    let parents = specs
        .iter()
        .map(|s| {
            let deps = s["dependsOn"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect();
            (s["id"].as_str().unwrap_or_default().to_string(), deps)
        })
        .collect();
    let workflow_id = api
        .create(
            "/api/workflows",
            &json!({"name": format!("loadtest-{}-{tag}", kind_name(kind)), "nodes": specs}),
        )
        .await?;
    Ok(Prepared {
        workflow_id,
        context,
        parents,
    })
}

pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Seed => "seed",
        Kind::Chain => "chain",
        Kind::Fanout => "fanout",
        Kind::Throughput => "throughput",
    }
}
