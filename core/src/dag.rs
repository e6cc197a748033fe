//! Parses a workflow's node list into a validated [`Dag`]: unique ids, known dependencies, no
//! cycles, known agents and actions, well-formed templates that only read ancestors. Nothing
//! downstream checks these again.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::domain::{Agent, AgentSnapshot, NodeSpec, PlannedNode, RetryPolicy, RunPlan, limits};
use crate::error::Invalid;
use crate::template::{self, Root};

#[derive(Debug, Clone)]
pub struct Dag {
    nodes: Vec<NodeSpec>,
    index: HashMap<String, usize>,
    children: Vec<Vec<usize>>,
    /// Nodes read by each node's templates, by index.
    reads: Vec<Vec<usize>>,
    /// Whether every other node is each node's ancestor or descendant (see
    /// `PlannedNode::alone`).
    alone: Vec<bool>,
}

fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= limits::MAX_NODE_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Dag {
    /// Validates `nodes` against the project's agents (looked up by id as the user wrote it).
    pub fn parse(nodes: Vec<NodeSpec>, agents: &HashMap<String, Agent>) -> Result<Dag, Invalid> {
        if nodes.is_empty() {
            return Err(Invalid::new("a workflow needs at least one node"));
        }
        if nodes.len() > limits::MAX_NODES {
            return Err(Invalid::new(format!(
                "a workflow may have at most {} nodes (got {})",
                limits::MAX_NODES,
                nodes.len()
            )));
        }
        let mut index = HashMap::with_capacity(nodes.len());
        for (i, node) in nodes.iter().enumerate() {
            if !valid_node_id(&node.id) {
                return Err(Invalid::new(format!(
                    "node id \"{}\" is invalid: use 1 to {} letters, digits, '-' or '_'",
                    node.id,
                    limits::MAX_NODE_ID_LEN
                )));
            }
            if index.insert(node.id.clone(), i).is_some() {
                return Err(Invalid::new(format!("duplicate node id \"{}\"", node.id)));
            }
        }

        let mut parents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for (i, node) in nodes.iter().enumerate() {
            let mut seen = HashSet::new();
            for dep in &node.depends_on {
                let Some(&d) = index.get(dep) else {
                    return Err(Invalid::new(format!(
                        "node \"{}\" depends on unknown node \"{}\"",
                        node.id, dep
                    )));
                };
                if seen.insert(d) {
                    parents[i].push(d);
                    children[d].push(i);
                }
            }
        }
        if let Some(cycle) = find_cycle(&children) {
            let names: Vec<&str> = cycle.iter().map(|&i| nodes[i].id.as_str()).collect();
            return Err(Invalid::new(format!(
                "the workflow has a cycle: {}",
                names.join(" -> ")
            )));
        }

        for node in &nodes {
            let Some(agent) = agents.get(&node.agent_id) else {
                return Err(Invalid::new(format!(
                    "node \"{}\" uses unknown agent \"{}\"",
                    node.id, node.agent_id
                )));
            };
            if !agent.offers(&node.action) {
                let offered: Vec<&str> =
                    agent.capabilities.iter().map(|c| c.name.as_str()).collect();
                return Err(Invalid::new(format!(
                    "node \"{}\": agent \"{}\" does not offer action \"{}\" (offers: {})",
                    node.id,
                    agent.name,
                    node.action,
                    if offered.is_empty() {
                        "none".to_string()
                    } else {
                        offered.join(", ")
                    }
                )));
            }
            if let Some(retry) = &node.retry {
                retry.validate(&format!("node \"{}\" retry", node.id))?;
            }
            if let Some(t) = node.approval.as_ref().and_then(|a| a.timeout_seconds) {
                crate::domain::validate_timeout(
                    &format!("node \"{}\" approval.timeoutSeconds", node.id),
                    t,
                )?;
            }
            if let Some(t) = node.timeout_seconds {
                crate::domain::validate_timeout(
                    &format!("node \"{}\" timeoutSeconds", node.id),
                    t,
                )?;
            }
        }

        let ancestors = ancestor_sets(&parents);
        let mut reads = vec![Vec::new(); nodes.len()];
        for (i, node) in nodes.iter().enumerate() {
            let refs = template::references(&node.inputs_json)
                .map_err(|e| Invalid::new(format!("node \"{}\": {e}", node.id)))?;
            for r in refs {
                if let Root::Node(target) = &r.root {
                    let Some(&t) = index.get(target) else {
                        return Err(Invalid::new(format!(
                            "node \"{}\": template {} reads unknown node \"{}\"",
                            node.id, r.raw, target
                        )));
                    };
                    if !ancestors[i].contains(&t) {
                        return Err(Invalid::new(format!(
                            "node \"{}\": template {} reads node \"{}\", which is not an ancestor (add it to dependsOn)",
                            node.id, r.raw, target
                        )));
                    }
                    if !reads[i].contains(&t) {
                        reads[i].push(t);
                    }
                }
            }
        }

        // A node is alone when its ancestors and descendants are all the other nodes.
        let mut descendants = vec![0usize; nodes.len()];
        for set in &ancestors {
            set.iter().for_each(|&a| descendants[a] += 1);
        }
        let alone = (0..nodes.len())
            .map(|i| ancestors[i].len() + descendants[i] + 1 == nodes.len())
            .collect();

        Ok(Dag {
            nodes,
            index,
            children,
            reads,
            alone,
        })
    }

    pub fn nodes(&self) -> &[NodeSpec] {
        &self.nodes
    }

    pub fn into_nodes(self) -> Vec<NodeSpec> {
        self.nodes
    }

    pub fn node(&self, id: &str) -> Option<&NodeSpec> {
        self.index.get(id).map(|&i| &self.nodes[i])
    }

    /// Ids of the nodes without dependencies, which start when the run starts.
    pub fn roots(&self) -> impl Iterator<Item = &str> {
        self.nodes
            .iter()
            .filter(|n| n.depends_on.is_empty())
            .map(|n| n.id.as_str())
    }

    /// Freezes the DAG with its agents' current settings into what a run executes.
    pub fn plan(&self, agents: &HashMap<String, Agent>) -> RunPlan {
        let mut nodes = BTreeMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let agent = &agents[&node.agent_id];
            let retry: RetryPolicy = node
                .retry
                .clone()
                .or_else(|| agent.retry.clone())
                .unwrap_or_default();
            let timeout_seconds = node
                .timeout_seconds
                .or(agent.timeout_seconds)
                .unwrap_or(limits::DEFAULT_TIMEOUT_SECONDS);
            let approval_timeout_seconds = match &node.approval {
                Some(a) if a.required => Some(
                    a.timeout_seconds
                        .unwrap_or(crate::domain::DEFAULT_APPROVAL_TIMEOUT_SECONDS),
                ),
                _ if agent.risk_level == crate::domain::RiskLevel::ApprovalRequired => Some(
                    node.approval
                        .as_ref()
                        .and_then(|a| a.timeout_seconds)
                        .unwrap_or(crate::domain::DEFAULT_APPROVAL_TIMEOUT_SECONDS),
                ),
                _ => None,
            };
            let mut depends_on: Vec<String> = Vec::new();
            for d in &node.depends_on {
                if !depends_on.contains(d) {
                    depends_on.push(d.clone());
                }
            }
            nodes.insert(
                node.id.clone(),
                PlannedNode {
                    id: node.id.clone(),
                    agent: AgentSnapshot {
                        id: agent.id,
                        name: agent.name.clone(),
                        agent_type: agent.agent_type,
                        risk_level: agent.risk_level,
                        entrypoint: agent.entrypoint.clone(),
                        args: agent.args.clone(),
                        url: agent.url.clone(),
                        cost_per_minute: agent.cost_per_minute,
                    },
                    action: node.action.clone(),
                    inputs: node.inputs_json.clone(),
                    depends_on,
                    dependents: self.children[i]
                        .iter()
                        .map(|&c| self.nodes[c].id.clone())
                        .collect(),
                    reads: self.reads[i]
                        .iter()
                        .map(|&r| self.nodes[r].id.clone())
                        .collect(),
                    retry,
                    timeout_seconds,
                    approval_timeout_seconds,
                    gated_dependents: Vec::new(),
                    alone: self.alone[i],
                },
            );
        }
        let gated: Vec<String> = nodes
            .values()
            .filter(|n| n.needs_approval())
            .map(|n| n.id.clone())
            .collect();
        for id in gated {
            let parents = nodes[&id].depends_on.clone();
            for p in parents {
                if let Some(parent) = nodes.get_mut(&p) {
                    parent.gated_dependents.push(id.clone());
                }
            }
        }
        RunPlan { nodes }
    }
}

impl RunPlan {
    /// Every node reachable from `id` through dependents, excluding `id` itself.
    pub fn descendants(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut queue: VecDeque<&str> = VecDeque::from([id]);
        while let Some(cur) = queue.pop_front() {
            if let Some(node) = self.nodes.get(cur) {
                for d in &node.dependents {
                    if seen.insert(d.as_str()) {
                        out.push(d.clone());
                        queue.push_back(d);
                    }
                }
            }
        }
        out
    }
}

/// Returns one cycle (as a closed path of node indexes) if the graph has any.
fn find_cycle(children: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    let n = children.len();
    let mut mark = vec![Mark::New; n];
    // Iterative DFS: a 1,000-node chain must not overflow the stack.
    for start in 0..n {
        if mark[start] != Mark::New {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::OnStack;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if *next < children[node].len() {
                let child = children[node][*next];
                *next += 1;
                match mark[child] {
                    Mark::New => {
                        mark[child] = Mark::OnStack;
                        stack.push((child, 0));
                    }
                    Mark::OnStack => {
                        let pos = stack.iter().position(|&(n, _)| n == child).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[pos..].iter().map(|&(n, _)| n).collect();
                        cycle.push(child);
                        return Some(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

/// For each node, the set of its ancestors. Called only on an acyclic graph.
fn ancestor_sets(parents: &[Vec<usize>]) -> Vec<HashSet<usize>> {
    let n = parents.len();
    let mut indegree: Vec<usize> = parents.iter().map(|p| p.len()).collect();
    let mut children = vec![Vec::new(); n];
    for (i, ps) in parents.iter().enumerate() {
        for &p in ps {
            children[p].push(i);
        }
    }
    let mut queue: VecDeque<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut sets: Vec<HashSet<usize>> = vec![HashSet::new(); n];
    while let Some(i) = queue.pop_front() {
        for &c in &children[i] {
            let mut inherited = sets[i].clone();
            inherited.insert(i);
            sets[c].extend(inherited);
            indegree[c] -= 1;
            if indegree[c] == 0 {
                queue.push_back(c);
            }
        }
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgentType, Capability, RiskLevel};
    use serde_json::json;

    fn agent(id: &str, actions: &[&str]) -> Agent {
        Agent {
            id: uuid::Uuid::new_v4(),
            project_id: 1,
            name: id.to_string(),
            agent_type: AgentType::Script,
            risk_level: RiskLevel::Auto,
            entrypoint: Some("x".into()),
            args: vec![],
            url: None,
            capabilities: actions
                .iter()
                .map(|a| Capability {
                    name: a.to_string(),
                    description: None,
                    input_schema: None,
                    output_schema: None,
                })
                .collect(),
            timeout_seconds: None,
            retry: None,
            cost_per_minute: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    fn agents() -> HashMap<String, Agent> {
        HashMap::from([("a1".to_string(), agent("a1", &["scan", "send"]))])
    }

    fn node(id: &str, deps: &[&str], inputs: serde_json::Value) -> NodeSpec {
        NodeSpec {
            id: id.into(),
            agent_id: "a1".into(),
            action: "scan".into(),
            inputs_json: inputs,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            retry: None,
            timeout_seconds: None,
            approval: None,
        }
    }

    fn err(nodes: Vec<NodeSpec>) -> String {
        Dag::parse(nodes, &agents()).unwrap_err().message
    }

    #[test]
    fn accepts_diamond_and_plans_edges() {
        let dag = Dag::parse(
            vec![
                node("a", &[], json!({})),
                node("b", &["a"], json!({"x": "{{ nodes.a.output.n }}"})),
                node("c", &["a"], json!({})),
                node(
                    "d",
                    &["b", "c"],
                    json!({"y": "{{ nodes.a.output }} {{ nodes.c.output.z }}"}),
                ),
            ],
            &agents(),
        )
        .unwrap();
        assert_eq!(dag.roots().collect::<Vec<_>>(), vec!["a"]);
        let plan = dag.plan(&agents());
        assert_eq!(plan.nodes["a"].dependents, vec!["b", "c"]);
        assert_eq!(plan.nodes["d"].reads, vec!["a", "c"]);
        assert_eq!(plan.descendants("a"), vec!["b", "c", "d"]);
        assert_eq!(plan.nodes["a"].retry, RetryPolicy::default());
    }

    #[test]
    fn rejects_each_invalid_shape_with_a_precise_message() {
        assert!(err(vec![]).contains("at least one node"));
        assert!(
            err(vec![node("a", &[], json!({})), node("a", &[], json!({}))])
                .contains("duplicate node id \"a\"")
        );
        assert!(err(vec![node("a", &["zz"], json!({}))]).contains("unknown node \"zz\""));
        let cyc = err(vec![
            node("a", &["c"], json!({})),
            node("b", &["a"], json!({})),
            node("c", &["b"], json!({})),
        ]);
        assert!(
            cyc.contains("cycle") && cyc.contains("a") && cyc.contains("b") && cyc.contains("c"),
            "{cyc}"
        );
        assert!(err(vec![node("a", &["a"], json!({}))]).contains("cycle: a -> a"));
        let mut unknown_agent = node("a", &[], json!({}));
        unknown_agent.agent_id = "nope".into();
        assert!(err(vec![unknown_agent]).contains("unknown agent \"nope\""));
        let mut bad_action = node("a", &[], json!({}));
        bad_action.action = "dance".into();
        assert!(err(vec![bad_action]).contains("does not offer action \"dance\""));
        assert!(
            err(vec![node("a", &[], json!({"x": "{{ nodes.a.output"}))]).contains("node \"a\"")
        );
        let not_ancestor = err(vec![
            node("a", &[], json!({})),
            node("b", &[], json!({"x": "{{ nodes.a.output.n }}"})),
        ]);
        assert!(not_ancestor.contains("not an ancestor"), "{not_ancestor}");
        assert!(err(vec![node("bad id", &[], json!({}))]).contains("invalid"));
    }

    #[test]
    fn long_chain_does_not_overflow() {
        let mut nodes = vec![node("n0", &[], json!({}))];
        for i in 1..1000 {
            let prev = format!("n{}", i - 1);
            nodes.push(node(&format!("n{i}"), &[prev.as_str()], json!({})));
        }
        let dag = Dag::parse(nodes, &agents()).unwrap();
        let plan = dag.plan(&agents());
        assert_eq!(plan.descendants("n0").len(), 999);
        assert!(plan.nodes.values().all(|n| n.alone));
    }

    /// A node is alone when every other node comes before or after it: then no other node of
    /// the run can run while it does.
    #[test]
    fn alone_nodes_are_those_every_other_node_comes_before_or_after() {
        let plan = |nodes: Vec<NodeSpec>| Dag::parse(nodes, &agents()).unwrap().plan(&agents());
        let alone = |plan: &RunPlan| -> Vec<String> {
            plan.nodes
                .values()
                .filter(|n| n.alone)
                .map(|n| n.id.clone())
                .collect()
        };
        assert_eq!(alone(&plan(vec![node("a", &[], json!({}))])), vec!["a"]);
        // A diamond with a tail: the branches may run together, the rest may not.
        let diamond = plan(vec![
            node("a", &[], json!({})),
            node("b", &["a"], json!({})),
            node("c", &["a"], json!({})),
            node("d", &["b", "c"], json!({})),
            node("e", &["d"], json!({})),
        ]);
        assert_eq!(alone(&diamond), vec!["a", "d", "e"]);
        // Two roots: neither is alone, nor is a node after only one of them.
        let two_roots = plan(vec![
            node("a", &[], json!({})),
            node("b", &[], json!({})),
            node("c", &["a"], json!({})),
            node("d", &["b", "c"], json!({})),
        ]);
        assert_eq!(alone(&two_roots), vec!["d"]);
        // A skip edge (a -> c besides a -> b -> c) leaves the path alone.
        let skip = plan(vec![
            node("a", &[], json!({})),
            node("b", &["a"], json!({})),
            node("c", &["a", "b"], json!({})),
        ]);
        assert_eq!(alone(&skip), vec!["a", "b", "c"]);
        // A wide fan-out: only its root and its join.
        let mut wide = vec![node("root", &[], json!({}))];
        let branches: Vec<String> = (0..100).map(|i| format!("b{i}")).collect();
        wide.extend(branches.iter().map(|b| node(b, &["root"], json!({}))));
        let refs: Vec<&str> = branches.iter().map(String::as_str).collect();
        wide.push(node("join", &refs, json!({})));
        assert_eq!(alone(&plan(wide)), vec!["join", "root"]);
    }
}
