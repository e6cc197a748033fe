//! Agents that run inside the worker: no process, no network. They exist so that tests and
//! benchmarks measure the engine rather than process start-up, and so that a workflow can
//! pause, pass data along or fail on purpose without writing a script.
//!
//! Actions: `noop` (output `{}`), `echo` (output = inputs), `sleep` (`{"ms": n}`, at most the
//! attempt's timeout), `fail` (`{"message": .., "retryable": bool}`, retryable by default).

use std::time::Duration;

use serde_json::{Value, json};

use orchestration_core::domain::{BUILTIN_ACTIONS as ACTIONS, Outcome};

/// Longest pause `sleep` accepts, whatever the timeout.
const MAX_SLEEP_MS: u64 = 3_600_000;

/// Runs `action` with `inputs`. Timeouts and cancellation are the caller's.
pub async fn run(action: &str, inputs: &Value) -> Outcome {
    match action {
        "noop" => success(json!({})),
        "echo" => success(inputs.clone()),
        "sleep" => {
            let ms = match inputs.get("ms") {
                None => 100,
                Some(v) => match v.as_u64() {
                    Some(ms) if ms <= MAX_SLEEP_MS => ms,
                    _ => {
                        return failure(
                            format!("sleep: inputs.ms must be an integer from 0 to {MAX_SLEEP_MS}"),
                            false,
                        );
                    }
                },
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            success(json!({ "sleptMs": ms }))
        }
        "fail" => {
            let message = inputs
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("failed on purpose (builtin fail)");
            let retryable = inputs
                .get("retryable")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            failure(message.to_string(), retryable)
        }
        other => failure(
            format!(
                "BUILTIN agents have no action \"{other}\" (known: {})",
                ACTIONS.join(", ")
            ),
            false,
        ),
    }
}

fn success(output: Value) -> Outcome {
    Outcome::Succeeded {
        output,
        exit_code: None,
    }
}

fn failure(error: String, retryable: bool) -> Outcome {
    Outcome::failed(error, retryable, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn actions_do_what_they_say() {
        assert_eq!(run("noop", &json!({"a": 1})).await, success(json!({})));
        assert_eq!(
            run("echo", &json!({"a": 1})).await,
            success(json!({"a": 1}))
        );
        assert_eq!(
            run("sleep", &json!({"ms": 1})).await,
            success(json!({"sleptMs": 1}))
        );
        assert!(matches!(
            run("sleep", &json!({"ms": "x"})).await,
            Outcome::Failed {
                retryable: false,
                ..
            }
        ));
        assert_eq!(
            run("fail", &json!({"message": "boom", "retryable": false})).await,
            failure("boom".into(), false)
        );
        assert!(matches!(
            run("fail", &json!({})).await,
            Outcome::Failed {
                retryable: true,
                ..
            }
        ));
        assert!(matches!(
            run("dance", &json!({})).await,
            Outcome::Failed {
                retryable: false,
                ..
            }
        ));
    }
}
