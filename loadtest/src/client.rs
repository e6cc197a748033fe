//! The few REST calls the harness makes, as a user's script would make them.

use std::collections::HashSet;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Api {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("HTTP client builds with static settings");
        Api {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await?;
        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok((status, value))
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn health(&self) -> anyhow::Result<()> {
        let (status, body) = self.get("/api/health").await.context("GET /api/health")?;
        if status != 200 {
            bail!("the deployment is not healthy ({status}): {body}");
        }
        Ok(())
    }

    /// Creates a resource and returns its id.
    pub async fn create(&self, path: &str, body: &Value) -> anyhow::Result<String> {
        let (status, value) = self.post(path, body).await?;
        if status != 201 {
            bail!("POST {path} answered {status}: {value}");
        }
        Ok(value["id"].as_str().unwrap_or_default().to_string())
    }

    /// Starts a run; returns its id, or the status and body of the refusal.
    pub async fn trigger(
        &self,
        workflow_id: &str,
        context: &Value,
    ) -> anyhow::Result<Result<String, String>> {
        let (status, body) = self
            .post(
                &format!("/api/workflows/{workflow_id}/trigger"),
                &json!({ "context": context }),
            )
            .await?;
        if status != 202 {
            return Ok(Err(format!("{status}: {body}")));
        }
        Ok(Ok(body["runId"].as_str().unwrap_or_default().to_string()))
    }

    /// Ids of the workflow's runs that are still going (at most 1,000, newest first).
    pub async fn active_runs(&self, workflow_id: &str) -> anyhow::Result<HashSet<String>> {
        let mut active = HashSet::new();
        for status in ["RUNNING", "PENDING", "WAITING_APPROVAL"] {
            let (code, body) = self
                .get(&format!(
                    "/api/workflows/{workflow_id}/runs?status={status}&limit=1000"
                ))
                .await?;
            if code != 200 {
                bail!("listing runs answered {code}: {body}");
            }
            active.extend(
                body["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["id"].as_str().map(str::to_string)),
            );
            // Runs of the load test's shapes start RUNNING and never wait for a person.
            if status == "RUNNING" {
                break;
            }
        }
        Ok(active)
    }

    pub async fn run(&self, run_id: &str) -> anyhow::Result<Value> {
        let (status, body) = self.get(&format!("/api/runs/{run_id}")).await?;
        if status != 200 {
            bail!("GET /api/runs/{run_id} answered {status}: {body}");
        }
        Ok(body)
    }
}
