//! Helpers for tests that run a real Prometheus and AlertManager beside the service: finding
//! their binaries, free loopback ports, scratch directories and readiness waits.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Proc;

/// The executable `name` on PATH or in /usr/bin, /usr/sbin.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A port nobody listens on right now (bound on loopback and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}

/// A scratch directory removed when dropped.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A fresh directory under the temp dir whose name starts with `prefix`.
    pub fn new(prefix: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        ScratchDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {path:?}: {e}"));
        path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until `GET {url}` answers 200, failing with the process's output if it dies first.
pub async fn wait_ready(client: &reqwest::Client, proc: &mut Proc, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = client.get(url).send().await
            && resp.status().is_success()
        {
            return;
        }
        assert!(
            proc.is_alive(),
            "{} exited before {url} was ready:\n{}",
            proc.name,
            proc.dump()
        );
        assert!(
            Instant::now() < deadline,
            "{} not ready at {url} within 30 s:\n{}",
            proc.name,
            proc.dump()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Best-effort text of `GET {url}`, for the failure report.
pub async fn fetch_text(client: &reqwest::Client, url: &str) -> String {
    match client.get(url).send().await {
        Ok(resp) => resp
            .text()
            .await
            .unwrap_or_else(|e| format!("<unreadable: {e}>")),
        Err(e) => format!("<request failed: {e}>"),
    }
}
