//! AlertManager's webhook body, as `POST /api/alerts/alertmanager` takes it: raw bytes through
//! serde into `alerts::Webhook`, `Webhook::validate`, then for a valid delivery the pure steps
//! of `alerts::webhook_ingest` before its SQL (the event subject, the idempotency key, the JSON
//! columns, the zero `endsAt`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestration_core::alerts::{MAX_ALERTS, Webhook, alert_subject};
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let hook = match serde_json::from_slice::<Webhook>(data) {
        Ok(hook) => hook,
        Err(e) => {
            // The API answers 400 or 422 with this text.
            let _ = (e.is_data(), e.to_string());
            return;
        }
    };
    if let Err(invalid) = hook.validate() {
        assert!(!invalid.message.is_empty());
        return;
    }

    assert_eq!(hook.version, "4");
    assert!(hook.alerts.len() <= MAX_ALERTS);
    for a in &hook.alerts {
        assert!(a.status == "firing" || a.status == "resolved");
        let alertname = a.labels.get("alertname").expect("validated");
        let subject = alert_subject(alertname);
        let token = subject.strip_prefix("alert.").expect("subject prefix");
        // One NATS subject token, so that `alert.>` and `alert.<name>` patterns match it.
        assert!(
            !token.is_empty()
                && !token.contains(['.', '*', '>'])
                && !token.chars().any(char::is_whitespace),
            "{alertname:?} -> {subject:?}"
        );
        let _ = format!("alert:{}:{}", a.fingerprint, a.starts_at.to_rfc3339());
        let _ = (json!(a.labels), json!(a.annotations));
        let _ = a.ends_at.filter(|t| t.timestamp() > 0);
    }
});
