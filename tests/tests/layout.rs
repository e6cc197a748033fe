//! The shape of the code, checked: the deployables at the top level as the design card names
//! them, a shared library that knows nothing of HTTP, and no import cycles between modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use orchestration_e2e::repo_root;

#[test]
fn the_top_level_shows_the_deployables() {
    let root = repo_root();
    for entry in [
        "Cargo.toml",
        "api",
        "worker",
        "loadtest",
        "core",
        "migrations",
        "tests",
        "docker-compose.yml",
    ] {
        assert!(
            root.join(entry).exists(),
            "{entry} is missing at the top level"
        );
    }
    assert!(!root.join("crates").exists(), "crates/ is gone");
    for crate_dir in ["api", "worker", "loadtest", "core"] {
        let lib = std::fs::read_to_string(root.join(crate_dir).join("src/lib.rs")).unwrap();
        assert!(
            lib.contains("## Layout"),
            "{crate_dir}/src/lib.rs opens with a layout map"
        );
    }
    for binary in [
        "api/src/main.rs",
        "worker/src/main.rs",
        "loadtest/src/main.rs",
    ] {
        let lines = std::fs::read_to_string(root.join(binary))
            .unwrap()
            .lines()
            .count();
        assert!(
            lines <= 40,
            "{binary} is {lines} lines: start-up belongs in the library"
        );
    }
}

#[test]
fn the_shared_library_knows_nothing_of_http_flags_or_agents() {
    let manifest = std::fs::read_to_string(repo_root().join("core/Cargo.toml")).unwrap();
    let dependencies = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|s| s.split("\n[").next())
        .unwrap();
    for forbidden in ["axum", "utoipa", "clap", "tower", "async-nats"] {
        assert!(
            !dependencies
                .lines()
                .any(|l| l.split(['.', ' ', '=']).next() == Some(forbidden)),
            "core depends on {forbidden}"
        );
    }
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let root = repo_root();
    let mut problems = Vec::new();
    for crate_dir in ["core", "api", "worker", "loadtest", "tests"] {
        let src = root.join(crate_dir).join("src");
        let graph = module_graph(&src);
        for cycle in cycles(&graph) {
            problems.push(format!("{crate_dir}: {}", cycle.join(" -> ")));
        }
    }
    assert!(
        problems.is_empty(),
        "import cycles:\n{}",
        problems.join("\n")
    );
}

/// Each module of the crate in `src` (`crate`, `crate::a`, `crate::a::b`) and the modules it
/// refers to through `crate::` and `super::` paths, test code left out. A module and its
/// ancestors may refer to each other: declaring a child and using what the parent provides
/// is not a cycle.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = rust_files(src);
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graph = BTreeMap::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let code = without_tests_and_comments(&text);
        let mut edges = BTreeSet::new();
        for reference in references(&code, module) {
            let Some(target) = longest_module(&modules, &reference) else {
                continue;
            };
            if target == *module || is_ancestor(&target, module) || is_ancestor(module, &target) {
                continue;
            }
            edges.insert(target);
        }
        graph.insert(module.clone(), edges);
    }
    graph
}

fn rust_files(src: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap().with_extension("");
                let mut parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(
                    parts.last().map(String::as_str),
                    Some("mod" | "lib" | "main")
                ) {
                    parts.pop();
                }
                if parts.first().map(String::as_str) == Some("bin") {
                    continue;
                }
                let module = std::iter::once("crate".to_string())
                    .chain(parts)
                    .collect::<Vec<_>>()
                    .join("::");
                out.push((module, path));
            }
        }
    }
    out
}

/// The text without `#[cfg(test)]` modules (at the end of a file, by convention) and without
/// comments, which name paths in prose.
fn without_tests_and_comments(text: &str) -> String {
    let code = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    code.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Absolute module paths (`crate::a::b::Item`) referred to in `code`, with `super::` resolved
/// against `module` and `{..}` groups expanded one level.
fn references(code: &str, module: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            // `crate::` inside a longer identifier (`my_crate::`) is not ours.
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let base = if start == "crate::" {
                "crate".to_string()
            } else {
                let mut base = module.to_string();
                let mut rest = &code[at..];
                while let Some(after) = rest.strip_prefix("super::") {
                    base = match base.rsplit_once("::") {
                        Some((parent, _)) => parent.to_string(),
                        None => base,
                    };
                    rest = after;
                }
                base
            };
            let mut path_start = at;
            while code[path_start..].starts_with(start) {
                path_start += start.len();
            }
            let tail: String = code[path_start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':' || *c == '{')
                .collect();
            if let Some(prefix) = tail
                .strip_suffix('{')
                .or_else(|| tail.split_once('{').map(|(p, _)| p))
            {
                // A group: `crate::a::{b, c::D}`.
                let group_start = path_start + prefix.len() + 1;
                let group_end = code[group_start..].find('}').map(|j| group_start + j);
                if let Some(end) = group_end {
                    for item in code[group_start..end].split(',') {
                        let item = item.trim().trim_start_matches("self");
                        let joined = format!("{base}::{}{}", prefix, item.trim_start_matches("::"));
                        out.push(joined.trim_end_matches("::").to_string());
                    }
                }
            } else {
                out.push(format!("{base}::{tail}").trim_end_matches("::").to_string());
            }
        }
    }
    out
}

fn longest_module(modules: &BTreeSet<String>, reference: &str) -> Option<String> {
    let mut candidate = reference.to_string();
    loop {
        if modules.contains(&candidate) {
            return Some(candidate);
        }
        candidate = candidate.rsplit_once("::")?.0.to_string();
    }
}

fn is_ancestor(ancestor: &str, of: &str) -> bool {
    of.starts_with(&format!("{ancestor}::"))
}

/// The strongly connected components with more than one module, each as a cycle.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Tarjan's algorithm.
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: usize,
        indices: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.indices.insert(v, s.index);
        s.low.insert(v, s.index);
        s.index += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.graph.contains_key(w) {
                continue;
            }
            if !s.indices.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.indices[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.indices[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.reverse();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: 0,
        indices: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.indices.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[test]
fn the_checker_finds_a_cycle_and_resolves_super() {
    let code = "use crate::store::{runs, nodes::NodeState};\nuse super::change::Change;\n";
    let refs = references(code, "crate::engine::trigger");
    assert!(refs.contains(&"crate::store::runs".to_string()), "{refs:?}");
    assert!(
        refs.contains(&"crate::store::nodes::NodeState".to_string()),
        "{refs:?}"
    );
    assert!(
        refs.contains(&"crate::engine::change::Change".to_string()),
        "{refs:?}"
    );
    let mut graph = BTreeMap::new();
    graph.insert(
        "crate::a".to_string(),
        BTreeSet::from(["crate::b".to_string()]),
    );
    graph.insert(
        "crate::b".to_string(),
        BTreeSet::from(["crate::c".to_string()]),
    );
    graph.insert(
        "crate::c".to_string(),
        BTreeSet::from(["crate::a".to_string()]),
    );
    graph.insert("crate::d".to_string(), BTreeSet::new());
    assert_eq!(cycles(&graph).len(), 1);
    // On the real code it sees what is there.
    let core = module_graph(&repo_root().join("core/src"));
    for (from, to) in [
        ("crate::engine::trigger", "crate::store::runs"),
        ("crate::engine::attempt", "crate::engine::change"),
        ("crate::store::nodes", "crate::store::runs"),
        ("crate::effects", "crate::lifecycle"),
    ] {
        assert!(
            core[from].contains(to),
            "{from} -> {to} not seen: {:?}",
            core[from]
        );
    }
}
