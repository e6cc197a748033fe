//! A webhook receiver for tests: an HTTP server on a loopback port that records every POST
//! it gets and answers as the test says (a status, after a pause).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Value,
    /// `X-Orchestration-Signature`, if sent.
    pub signature: Option<String>,
    /// The raw body, to check the signature against.
    pub raw: Vec<u8>,
}

/// How the receiver answers its `n`-th request (0-based): a status, after a pause.
pub type Answer = Arc<dyn Fn(usize) -> (StatusCode, Duration) + Send + Sync>;

#[derive(Clone)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    answer: Answer,
}

pub struct Receiver {
    /// `http://127.0.0.1:<port>/hook`.
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver that answers each request as `answer` says.
    pub async fn start(
        answer: impl Fn(usize) -> (StatusCode, Duration) + Send + Sync + 'static,
    ) -> Receiver {
        let shared = Shared {
            received: Arc::default(),
            answer: Arc::new(answer),
        };
        let received = shared.received.clone();
        let app = Router::new().route("/hook", post(hook)).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url,
            received,
            server,
        }
    }

    /// A receiver that answers 200 at once.
    pub async fn ok() -> Receiver {
        Receiver::start(|_| (StatusCode::OK, Duration::ZERO)).await
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `check` holds for what arrived, and returns it; panics after `timeout`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let received = self.received();
            if check(&received) {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver did not get {what} within {timeout:?}; it got:\n{:#?}",
                received.iter().map(|r| &r.body).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn hook(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let n = {
        let mut received = shared.received.lock().unwrap();
        received.push(Received {
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            signature: headers
                .get("x-orchestration-signature")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            raw: body.to_vec(),
        });
        received.len() - 1
    };
    let (status, pause) = (shared.answer)(n);
    tokio::time::sleep(pause).await;
    status
}
