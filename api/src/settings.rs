//! What the API process runs with, as plain values (`cli` reads them from flags and the
//! environment; tests build them directly).

use std::net::SocketAddr;

use orchestration_core::db::DatabaseSettings;
use orchestration_worker::settings::{NatsSettings, OutboxSettings, WorkerSettings};

#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the API listens (port 0: any free one; see `app::Application::address`).
    pub listen: SocketAddr,
    /// Workers run inside this process.
    pub embedded_workers: usize,
    /// The bearer token the AlertManager webhook requires (unset: an operator token).
    pub alertmanager_token: Option<String>,
    /// The deployment-wide admin token's secret (unset: generated at the first start).
    pub admin_token: Option<String>,
    /// Also serve `/metrics` here.
    pub metrics_listen: Option<SocketAddr>,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Serve without authentication (development only).
    pub auth_disabled: bool,
    pub database: DatabaseSettings,
    pub nats: NatsSettings,
    pub outbox: OutboxSettings,
    /// Of the embedded workers; agent limits also apply at registration.
    pub worker: WorkerSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([0, 0, 0, 0], 9002)),
            embedded_workers: 0,
            alertmanager_token: None,
            admin_token: None,
            metrics_listen: None,
            max_body_bytes: crate::DEFAULT_BODY_LIMIT,
            auth_disabled: false,
            database: DatabaseSettings::default(),
            nats: NatsSettings::default(),
            outbox: OutboxSettings::default(),
            worker: WorkerSettings::default(),
        }
    }
}
