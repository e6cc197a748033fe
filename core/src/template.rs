//! Templates inside workflow node inputs: parsing `{{ context.… }}` and
//! `{{ nodes.<id>.output.… }}` references out of JSON values, and rendering
//! them against the run context and the outputs of completed nodes.
//! Registration uses [`references`] to validate; execution uses [`render`].

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

/// Maximum accepted length of one template expression (between the braces),
/// for hostile input: longer expressions are a syntax error.
pub const MAX_TEMPLATE_LEN: usize = 1024;

const OPEN: &str = "{{";
const CLOSE: &str = "}}";

/// Error messages quote at most this many characters of a template, so that
/// hostile input cannot blow up logs and stored run errors.
const EXCERPT_CHARS: usize = 64;

/// Where a template reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    Context,
    Node(String),
}

/// One `{{ ... }}` reference found in a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef {
    /// The template exactly as written, braces included.
    pub raw: String,
    pub root: Root,
    /// Segments after the root prefix (`context` or `nodes.<id>.output`).
    pub path: Vec<String>,
}

/// The values templates may read: the run context and the outputs of
/// completed nodes.
pub struct Scope<'a> {
    pub context: &'a Value,
    pub nodes: &'a HashMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("invalid template {template:?}: {message}")]
    Syntax { template: String, message: String },
    #[error("template {template:?}: missing segment {segment:?} at {path:?}")]
    MissingPath {
        template: String,
        segment: String,
        path: String,
    },
}

/// Every template reference in `value` (recursively), in document order; a
/// syntax error anywhere fails the whole parse. Used at workflow registration
/// to validate syntax and to check that referenced nodes are ancestors.
pub fn references(value: &Value) -> Result<Vec<TemplateRef>, TemplateError> {
    let mut out = Vec::new();
    collect_refs(value, &mut out)?;
    Ok(out)
}

/// Renders `value` against `scope`.
pub fn render(value: &Value, scope: &Scope<'_>) -> Result<Value, TemplateError> {
    Ok(match value {
        Value::String(s) => render_str(s, scope)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| render(item, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| Ok((key.clone(), render(item, scope)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

fn collect_refs(value: &Value, out: &mut Vec<TemplateRef>) -> Result<(), TemplateError> {
    match value {
        Value::String(s) if s.contains(OPEN) => {
            out.extend(parse_str(s)?.into_iter().filter_map(|piece| match piece {
                Piece::Template(t) => Some(t),
                Piece::Text(_) => None,
            }));
        }
        Value::Array(items) => {
            for item in items {
                collect_refs(item, out)?;
            }
        }
        Value::Object(map) => {
            for item in map.values() {
                collect_refs(item, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn render_str(s: &str, scope: &Scope<'_>) -> Result<Value, TemplateError> {
    if !s.contains(OPEN) {
        return Ok(Value::String(s.to_owned()));
    }
    let pieces = parse_str(s)?;
    // A string that is nothing but one template keeps the referenced value's
    // JSON type, so `"{{ context.n }}"` can feed a number into a numeric input.
    if let [Piece::Template(t)] = pieces.as_slice() {
        return resolve(t, scope).cloned();
    }
    let mut out = String::with_capacity(s.len());
    for piece in &pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Template(t) => match resolve(t, scope)? {
                Value::String(text) => out.push_str(text),
                // Value's Display is compact JSON, which is what we want for
                // numbers, bools, null, arrays and objects alike.
                other => {
                    let _ = write!(out, "{other}");
                }
            },
        }
    }
    Ok(Value::String(out))
}

enum Piece<'s> {
    Text(&'s str),
    Template(TemplateRef),
}

/// Splits `s` into literal text and templates. Every slice boundary sits next
/// to an ASCII brace found by `find`, so slicing never splits a UTF-8 char.
fn parse_str(s: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find(OPEN) {
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        let after_open = &rest[open + OPEN.len()..];
        let Some(close) = after_open.find(CLOSE) else {
            return Err(syntax(
                excerpt(&rest[open..]),
                "unclosed \"{{\" (missing \"}}\")",
            ));
        };
        let raw = &rest[open..open + OPEN.len() + close + CLOSE.len()];
        pieces.push(Piece::Template(parse_template(raw, &after_open[..close])?));
        rest = &after_open[close + CLOSE.len()..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

fn parse_template(raw: &str, inner: &str) -> Result<TemplateRef, TemplateError> {
    // Byte length bounds char count from above, so counting chars is only
    // needed when the cheap check fails.
    if inner.len() > MAX_TEMPLATE_LEN && inner.chars().count() > MAX_TEMPLATE_LEN {
        return Err(syntax(
            excerpt(raw),
            format!("expression is longer than {MAX_TEMPLATE_LEN} characters"),
        ));
    }
    let expr = inner.trim();
    if expr.is_empty() {
        return Err(syntax(raw, "empty template"));
    }
    let mut segments = Vec::new();
    for segment in expr.split('.') {
        if segment.is_empty() {
            return Err(syntax(raw, format!("empty segment in path {expr:?}")));
        }
        if !segment.bytes().all(is_segment_byte) {
            return Err(syntax(
                raw,
                format!("invalid segment {segment:?} (allowed characters: A-Z a-z 0-9 _ -)"),
            ));
        }
        segments.push(segment);
    }
    let (root, path) = match segments.as_slice() {
        ["context", path @ ..] => (Root::Context, path),
        ["nodes", id, "output", path @ ..] => (Root::Node((*id).to_owned()), path),
        ["nodes", ..] => {
            return Err(syntax(
                raw,
                "only \"nodes.<id>.output[.<path>]\" is supported under \"nodes\"",
            ));
        }
        [other, ..] => {
            return Err(syntax(
                raw,
                format!("unknown root {other:?} (expected \"context\" or \"nodes\")"),
            ));
        }
        // `split` always yields at least one item; kept total so that no
        // input can reach a panic.
        [] => return Err(syntax(raw, "empty template")),
    };
    Ok(TemplateRef {
        raw: raw.to_owned(),
        root,
        path: path.iter().map(|s| (*s).to_owned()).collect(),
    })
}

fn is_segment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn resolve<'a>(t: &TemplateRef, scope: &Scope<'a>) -> Result<&'a Value, TemplateError> {
    let mut current = match &t.root {
        Root::Context => scope.context,
        Root::Node(id) => scope
            .nodes
            .get(id)
            .ok_or_else(|| missing(t, id, "nodes".into()))?,
    };
    for (depth, segment) in t.path.iter().enumerate() {
        let next = match current {
            Value::Object(map) => map.get(segment),
            // Only all-digit segments index arrays; `parse` alone would also
            // accept forms like "+1". Overflowing indices are simply missing.
            Value::Array(items) if segment.bytes().all(|b| b.is_ascii_digit()) => {
                segment.parse::<usize>().ok().and_then(|i| items.get(i))
            }
            _ => None,
        };
        // The location is only formatted on failure, keeping success
        // allocation-free.
        current = next.ok_or_else(|| missing(t, segment, location(t, depth)))?;
    }
    Ok(current)
}

/// Dotted path of the value reached after `depth` segments of `t.path`.
fn location(t: &TemplateRef, depth: usize) -> String {
    let mut at = match &t.root {
        Root::Context => String::from("context"),
        Root::Node(id) => format!("nodes.{id}.output"),
    };
    for segment in &t.path[..depth] {
        at.push('.');
        at.push_str(segment);
    }
    at
}

fn missing(t: &TemplateRef, segment: &str, path: String) -> TemplateError {
    TemplateError::MissingPath {
        template: t.raw.clone(),
        segment: segment.to_owned(),
        path,
    }
}

fn syntax(template: impl Into<String>, message: impl Into<String>) -> TemplateError {
    TemplateError::Syntax {
        template: template.into(),
        message: message.into(),
    }
}

fn excerpt(raw: &str) -> String {
    match raw.char_indices().nth(EXCERPT_CHARS) {
        Some((end, _)) => format!("{}…", &raw[..end]),
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixtures() -> (Value, HashMap<String, Value>) {
        let context = json!({
            "n": 42,
            "name": "prod",
            "flag": true,
            "nothing": null,
            "a": { "b": "deep" },
            "items": ["first", { "id": 7 }],
            "by_digit": { "0": "zero-key" },
        });
        let mut nodes = HashMap::new();
        nodes.insert(
            "scan".to_owned(),
            json!({ "summary": { "total": 3, "ok": true }, "files": ["a.rs", "b.rs"] }),
        );
        nodes.insert("scan-node".to_owned(), json!({ "summary": { "total": 9 } }));
        nodes.insert("under_score".to_owned(), json!("plain"));
        (context, nodes)
    }

    fn render_with(value: Value) -> Result<Value, TemplateError> {
        let (context, nodes) = fixtures();
        let scope = Scope {
            context: &context,
            nodes: &nodes,
        };
        render(&value, &scope)
    }

    fn syntax_message(input: &str) -> String {
        match references(&json!(input)) {
            Err(TemplateError::Syntax { message, .. }) => message,
            other => panic!("expected syntax error for {input:?}, got {other:?}"),
        }
    }

    fn missing_parts(input: &str) -> (String, String) {
        match render_with(json!(input)) {
            Err(TemplateError::MissingPath { segment, path, .. }) => (segment, path),
            other => panic!("expected missing path for {input:?}, got {other:?}"),
        }
    }

    #[test]
    fn typed_substitution_keeps_json_type() {
        assert_eq!(render_with(json!("{{context.n}}")).unwrap(), json!(42));
        assert_eq!(
            render_with(json!("{{ nodes.scan.output.summary }}")).unwrap(),
            json!({ "total": 3, "ok": true })
        );
        assert_eq!(
            render_with(json!("{{ context.flag }}")).unwrap(),
            json!(true)
        );
        assert_eq!(
            render_with(json!("{{ context.nothing }}")).unwrap(),
            Value::Null
        );
        assert_eq!(
            render_with(json!("{{ nodes.scan.output }}")).unwrap(),
            json!({ "summary": { "total": 3, "ok": true }, "files": ["a.rs", "b.rs"] })
        );
        let (context, _) = fixtures();
        assert_eq!(render_with(json!("{{ context }}")).unwrap(), context);
    }

    #[test]
    fn interpolation_into_text() {
        assert_eq!(
            render_with(json!("env={{ context.name }} n={{context.n}}")).unwrap(),
            json!("env=prod n=42")
        );
        assert_eq!(
            render_with(json!("summary: {{ nodes.scan.output.summary }}")).unwrap(),
            json!(r#"summary: {"ok":true,"total":3}"#)
        );
        assert_eq!(
            render_with(json!(
                "{{ context.flag }}/{{ context.nothing }}/{{ context.items }}"
            ))
            .unwrap(),
            json!(r#"true/null/["first",{"id":7}]"#)
        );
        // Surrounding whitespace means the string is not exactly one template.
        assert_eq!(
            render_with(json!(" {{ context.n }}")).unwrap(),
            json!(" 42")
        );
        assert_eq!(
            render_with(json!("{{ context.n }}{{ context.n }}")).unwrap(),
            json!("4242")
        );
    }

    #[test]
    fn array_index_and_digit_keys() {
        assert_eq!(
            render_with(json!("{{ context.items.0 }}")).unwrap(),
            json!("first")
        );
        assert_eq!(
            render_with(json!("{{ context.items.1.id }}")).unwrap(),
            json!(7)
        );
        assert_eq!(
            render_with(json!("{{ nodes.scan.output.files.1 }}")).unwrap(),
            json!("b.rs")
        );
        assert_eq!(
            render_with(json!("{{ context.by_digit.0 }}")).unwrap(),
            json!("zero-key")
        );
    }

    #[test]
    fn node_ids_with_dashes_and_underscores() {
        assert_eq!(
            render_with(json!("{{ nodes.scan-node.output.summary.total }}")).unwrap(),
            json!(9)
        );
        assert_eq!(
            render_with(json!("{{ nodes.under_score.output }}")).unwrap(),
            json!("plain")
        );
    }

    #[test]
    fn nested_rendering_in_arrays_and_objects() {
        let input = json!({
            "{{ context.n }}": ["{{ context.n }}", { "deep": "x-{{ context.a.b }}" }],
            "count": 5,
            "keep": null,
            "plain": "no templates }} here",
        });
        assert_eq!(
            render_with(input).unwrap(),
            json!({
                "{{ context.n }}": [42, { "deep": "x-deep" }],
                "count": 5,
                "keep": null,
                "plain": "no templates }} here",
            })
        );
    }

    #[test]
    fn strings_without_templates_are_unchanged() {
        for s in ["", "plain", "}}", "a } b { c", "{ {", "💥 }} {"] {
            assert_eq!(render_with(json!(s)).unwrap(), json!(s));
        }
    }

    #[test]
    fn syntax_errors() {
        assert!(syntax_message("x {{ context.n").contains("unclosed"));
        assert!(syntax_message("{{").contains("unclosed"));
        assert!(syntax_message("{{ }}").contains("empty template"));
        assert!(syntax_message("{{}}").contains("empty template"));
        assert_eq!(
            syntax_message("{{ foo.bar }}"),
            r#"unknown root "foo" (expected "context" or "nodes")"#
        );
        assert!(syntax_message("{{ context.a..b }}").contains("empty segment"));
        assert!(syntax_message("{{ context. }}").contains("empty segment"));
        assert!(syntax_message("{{ .context }}").contains("empty segment"));
        assert!(syntax_message("{{ context.a b }}").contains(r#"invalid segment "a b""#));
        assert!(syntax_message("{{ context.a$ }}").contains(r#"invalid segment "a$""#));
        assert!(syntax_message("{{ context.é }}").contains("invalid segment"));
        assert!(syntax_message("{{{ context.n }}}").contains("invalid segment"));
        for unsupported in [
            "{{ nodes }}",
            "{{ nodes.x }}",
            "{{ nodes.x.status }}",
            "{{ nodes.x.outputs.a }}",
        ] {
            assert!(
                syntax_message(unsupported).contains("nodes.<id>.output"),
                "{unsupported}"
            );
        }
        let long = format!("{{{{ context.{} }}}}", "a".repeat(MAX_TEMPLATE_LEN));
        assert!(syntax_message(&long).contains("longer than"));
        let at_limit = format!("{{{{{}}}}}", "a".repeat(MAX_TEMPLATE_LEN - 8));
        assert!(syntax_message(&at_limit).contains("unknown root"));
    }

    #[test]
    fn syntax_error_display_and_excerpt() {
        let err = references(&json!("{{ foo.bar }}")).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid template "{{ foo.bar }}": unknown root "foo" (expected "context" or "nodes")"#
        );
        let err = references(&json!(format!("{{{{ {}", "x".repeat(10_000)))).unwrap_err();
        let TemplateError::Syntax { template, .. } = err else {
            panic!("expected syntax error");
        };
        assert!(template.chars().count() <= EXCERPT_CHARS + 1);
    }

    #[test]
    fn syntax_error_also_fails_render() {
        assert!(matches!(
            render_with(json!(["ok {{ context.n }}", { "bad": "{{ nope }}" }])),
            Err(TemplateError::Syntax { .. })
        ));
    }

    #[test]
    fn missing_paths_name_the_segment() {
        let err = render_with(json!("{{ nodes.scan.output.summary.totl }}")).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"template "{{ nodes.scan.output.summary.totl }}": missing segment "totl" at "nodes.scan.output.summary""#
        );
        // Missing object key.
        assert_eq!(
            missing_parts("{{ context.a.c }}"),
            ("c".into(), "context.a".into())
        );
        assert_eq!(
            missing_parts("{{ context.zz }}"),
            ("zz".into(), "context".into())
        );
        // Index out of range, and a non-numeric segment on an array.
        assert_eq!(
            missing_parts("{{ context.items.2 }}"),
            ("2".into(), "context.items".into())
        );
        assert_eq!(
            missing_parts("{{ context.items.first }}"),
            ("first".into(), "context.items".into())
        );
        assert_eq!(
            missing_parts("{{ context.items.99999999999999999999999 }}"),
            ("99999999999999999999999".into(), "context.items".into())
        );
        // Indexing into scalars.
        assert_eq!(
            missing_parts("{{ context.n.0 }}"),
            ("0".into(), "context.n".into())
        );
        assert_eq!(
            missing_parts("x {{ context.a.b.c }}"),
            ("c".into(), "context.a.b".into())
        );
        // Node output not available.
        assert_eq!(
            missing_parts("{{ nodes.later.output.x }}"),
            ("later".into(), "nodes".into())
        );
        assert_eq!(
            missing_parts("{{ nodes.scan-node.output.files }}"),
            ("files".into(), "nodes.scan-node.output".into())
        );
    }

    #[test]
    fn references_in_document_order() {
        let value = json!([
            "{{ context.a.b }}",
            { "k": "x {{ nodes.scan-node.output.summary.total }} y {{ nodes.s.output }}" },
            7,
            "{{context}}",
        ]);
        let refs = references(&value).unwrap();
        assert_eq!(
            refs,
            vec![
                TemplateRef {
                    raw: "{{ context.a.b }}".into(),
                    root: Root::Context,
                    path: vec!["a".into(), "b".into()],
                },
                TemplateRef {
                    raw: "{{ nodes.scan-node.output.summary.total }}".into(),
                    root: Root::Node("scan-node".into()),
                    path: vec!["summary".into(), "total".into()],
                },
                TemplateRef {
                    raw: "{{ nodes.s.output }}".into(),
                    root: Root::Node("s".into()),
                    path: vec![],
                },
                TemplateRef {
                    raw: "{{context}}".into(),
                    root: Root::Context,
                    path: vec![],
                },
            ]
        );
        assert_eq!(references(&json!({ "a": [1, "no refs"] })).unwrap(), vec![]);
    }

    #[test]
    fn multibyte_text_and_trailing_open_brace() {
        assert_eq!(
            render_with(json!("🚀 {{ context.name }} ✅ ñ")).unwrap(),
            json!("🚀 prod ✅ ñ")
        );
        assert_eq!(
            render_with(json!("{{ context.name }}🎉")).unwrap(),
            json!("prod🎉")
        );
        assert!(syntax_message("🎉{{").contains("unclosed"));
        assert!(syntax_message("ok {{ context.n }} then {{").contains("unclosed"));
        assert!(syntax_message("{{ 🎉 }}").contains("invalid segment"));
    }

    #[test]
    fn adversarial_inputs_never_panic() {
        let long_open = "{{".repeat(5000);
        let long_emoji = format!("{{{{ {} }}}}", "🎉".repeat(2000));
        let long_unclosed = format!("{{{{ {}", "é".repeat(3000));
        let inputs = [
            "",
            "{",
            "}",
            "{{",
            "}}",
            "{{{",
            "}}}",
            "{{}",
            "{}}",
            "{{}}",
            "{{{{}}}}",
            "}}{{",
            "{{ }} }}",
            "{{ . }}",
            "{{..}}",
            "{{ context.. }}",
            "{{ nodes.. }}",
            "{{ nodes..output }}",
            "{{ nodes.-.output }}",
            "{{ context.-_- }}",
            "{{\tcontext.n\n}}",
            "{{\u{3000}context.n\u{3000}}}",
            "{{ context\u{0}.n }}",
            "{{ context.n }",
            "{ { context.n } }",
            "{{ 🎉",
            "🎉{{",
            "{{🎉}}",
            "é{{é}}é",
            "{{ context.a }}{{",
            "{{ context.items.0.id.x }}",
            "{{ nodes.scan.output.files.18446744073709551616 }}",
            "{{ context.\u{200b} }}",
            "\u{feff}{{ context.n }}",
            "{{ context.n }}\u{0301}",
            "\\{{ context.n }}",
            "{{ \"context\" }}",
            long_open.as_str(),
            long_emoji.as_str(),
            long_unclosed.as_str(),
        ];
        let (context, nodes) = fixtures();
        let scope = Scope {
            context: &context,
            nodes: &nodes,
        };
        for input in inputs {
            let value = json!({ "k": [input] });
            let refs = references(&value);
            let rendered = render(&value, &scope);
            // A value that parses must also reach rendering without a syntax
            // error, and vice versa.
            assert_eq!(
                refs.is_err_and(|e| matches!(e, TemplateError::Syntax { .. })),
                matches!(rendered, Err(TemplateError::Syntax { .. })),
                "{input:?}"
            );
        }
    }
}
