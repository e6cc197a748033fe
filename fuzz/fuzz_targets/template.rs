//! Templates in node inputs: `template::references` (run at registration) and
//! `template::render` (run by the worker) on hostile input.
//!
//! The input is a JSON document when it parses as one (so the fuzzer can nest templates in
//! arrays and objects), otherwise its bytes as one string. Rendering reads from the
//! same document: it is the run context, and its top-level members are the node outputs, so
//! templates can resolve paths through data the fuzzer controls as well as fail on them.

#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use orchestration_core::template::{self, MAX_TEMPLATE_LEN, Scope, TemplateError};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let value = serde_json::from_slice::<Value>(data)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()));
    let nodes: HashMap<String, Value> = match &value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => HashMap::new(),
    };
    let scope = Scope {
        context: &value,
        nodes: &nodes,
    };

    let refs = template::references(&value);
    let rendered = template::render(&value, &scope);

    match &refs {
        Ok(refs) => {
            for r in refs {
                assert!(r.raw.starts_with("{{") && r.raw.ends_with("}}"), "{r:?}");
                assert!(r.raw.chars().count() <= MAX_TEMPLATE_LEN + 4, "{r:?}");
            }
            // Registration accepted the syntax, so rendering may only miss paths.
            assert!(
                !matches!(rendered, Err(TemplateError::Syntax { .. })),
                "references accepted what render rejects: {rendered:?}"
            );
        }
        Err(TemplateError::Syntax { .. }) => {}
        Err(other) => panic!("references returned a non-syntax error: {other:?}"),
    }
    if matches!(rendered, Err(TemplateError::Syntax { .. })) {
        assert!(refs.is_err(), "render rejects what references accepted");
    }
    for err in [refs.err(), rendered.err()].into_iter().flatten() {
        // Errors are stored with the run and logged: they quote a bounded template.
        let (TemplateError::Syntax { template, .. } | TemplateError::MissingPath { template, .. }) =
            &err;
        assert!(
            template.chars().count() <= MAX_TEMPLATE_LEN + 4,
            "error quotes {} characters",
            template.chars().count()
        );
        let _ = err.to_string();
    }
});
