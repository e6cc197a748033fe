//! Template benchmarks: `template::render` is run by the worker for every node
//! attempt (and for every approval request), `template::references` by
//! `Dag::parse` for every node when a workflow is saved.
//!
//! Run: `cargo bench -p orchestration-core --bench template`

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use orchestration_core::template::{self, Scope};
use serde_json::{Map, Value, json};

/// Number of upstream nodes whose outputs the large input reads.
const UPSTREAM: usize = 10;
/// Number of fields of the large input.
const LARGE_FIELDS: usize = 50;

/// The input of a typical notification node: one interpolated node output and
/// one context value kept as is.
fn small_input() -> Value {
    json!({
        "channel": "console",
        "message": "Security scan complete: {{ nodes.scan-node.output.summary.total }} findings",
        "repo": "{{ context.repositoryPath }}",
    })
}

/// 50 fields cycling through the shapes met in practice: a whole-string
/// template (keeps the JSON type), text with two interpolations, an array of
/// templates, a nested object, a plain string and a number.
fn large_input() -> Value {
    let mut map = Map::new();
    for i in 0..LARGE_FIELDS {
        let node = format!("upstream-{}", i % UPSTREAM);
        let value = match i % 6 {
            0 => json!(format!("{{{{ nodes.{node}.output.summary.total }}}}")),
            1 => json!(format!(
                "Scan of {{{{ context.repositoryPath }}}} on {{{{ context.branch }}}}: \
                 {{{{ nodes.{node}.output.summary.total }}}} findings, status {{{{ nodes.{node}.output.status }}}}"
            )),
            2 => json!([
                format!("{{{{ nodes.{node}.output.files.0 }}}}"),
                format!("{{{{ nodes.{node}.output.files.1 }}}}"),
                "literal.rs",
            ]),
            3 => json!({
                "severity": format!("{{{{ nodes.{node}.output.summary.bySeverity.high }}}}"),
                "owner": "{{ context.owner.team }}",
                "threshold": 5,
            }),
            4 => json!(format!("a plain string without templates, field {i}")),
            _ => json!(i),
        };
        map.insert(format!("field{i:02}"), value);
    }
    Value::Object(map)
}

fn context() -> Value {
    json!({
        "repositoryPath": "/srv/repos/payments-service",
        "branch": "main",
        "owner": { "team": "platform-security", "oncall": "alice" },
        "trigger": { "type": "manual", "by": "bob" },
    })
}

fn node_outputs() -> HashMap<String, Value> {
    let mut nodes = HashMap::new();
    nodes.insert(
        "scan-node".to_owned(),
        json!({ "summary": { "total": 9, "ok": false }, "status": "done" }),
    );
    for i in 0..UPSTREAM {
        nodes.insert(
            format!("upstream-{i}"),
            json!({
                "summary": { "total": i * 3, "bySeverity": { "high": i, "low": 2 * i } },
                "status": "done",
                "files": [format!("src/mod{i}.rs"), format!("src/lib{i}.rs")],
                "log": "x".repeat(256),
            }),
        );
    }
    nodes
}

fn bench_render(c: &mut Criterion) {
    let context = context();
    let nodes = node_outputs();
    let scope = Scope {
        context: &context,
        nodes: &nodes,
    };
    let small = small_input();
    let large = large_input();
    // Check once that the inputs render, so that the benchmark does not time
    // an error path.
    let rendered = template::render(&small, &scope).expect("small input renders");
    assert_eq!(rendered["message"], "Security scan complete: 9 findings");
    assert_eq!(rendered["repo"], "/srv/repos/payments-service");
    template::render(&large, &scope).expect("large input renders");

    let mut group = c.benchmark_group("template_render");
    group.bench_function("small_3_fields", |b| {
        b.iter(|| template::render(black_box(&small), black_box(&scope)))
    });
    group.bench_function("large_50_fields", |b| {
        b.iter(|| template::render(black_box(&large), black_box(&scope)))
    });
    group.finish();
}

fn bench_references(c: &mut Criterion) {
    let small = small_input();
    let large = large_input();
    assert_eq!(template::references(&small).unwrap().len(), 2);
    assert!(template::references(&large).unwrap().len() > LARGE_FIELDS);

    let mut group = c.benchmark_group("template_references");
    group.bench_function("small_3_fields", |b| {
        b.iter(|| template::references(black_box(&small)))
    });
    group.bench_function("large_50_fields", |b| {
        b.iter(|| template::references(black_box(&large)))
    });
    group.finish();
}

criterion_group!(benches, bench_render, bench_references);
criterion_main!(benches);
