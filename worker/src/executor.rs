//! Runs one attempt of an agent: a SCRIPT as a child process fed one JSON document on stdin,
//! or an HTTP agent as one POST. Every way an attempt can go wrong ends as an [`Outcome`],
//! never as a panic or a hung worker.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use tokio_util::sync::CancellationToken;

use orchestration_core::domain::{AgentSnapshot, AgentType, Outcome};

/// Largest output an agent may return (stdout or HTTP body).
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// How much of stderr is kept for the error message.
const STDERR_TAIL_BYTES: usize = 4096;
/// Environment variables a SCRIPT agent inherits from the worker; everything else (database
/// URLs, tokens) stays out of the child.
pub const ENV_ALLOW_LIST: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "PYENV_ROOT",
];

/// Everything the executor needs besides the agent: where relative entrypoints live, and
/// variables that describe the run to the child.
pub struct Invocation<'a> {
    pub agent: &'a AgentSnapshot,
    pub document: &'a Value,
    pub timeout: Duration,
    pub env: Vec<(String, String)>,
    /// Fires when the attempt must stop early (run cancelled, lease lost, shutdown).
    pub cancel: CancellationToken,
}

/// Outcome of an attempt stopped through [`Invocation::cancel`].
pub const INTERRUPTED: &str = "attempt interrupted";

/// What agents may do: where SCRIPT entrypoints live, the resources a child gets, where HTTP
/// agents may connect.
#[derive(Debug, Clone, Default)]
pub struct AgentPolicy {
    /// Canonical: entrypoints must resolve (after symlinks) inside it.
    pub agents_dir: PathBuf,
    /// RLIMIT_AS of a SCRIPT agent; 0 for none.
    pub memory_bytes: u64,
    /// RLIMIT_NPROC of a SCRIPT agent; 0 for none.
    pub max_processes: u64,
    /// Allowed HTTP agent destinations (lowercase); empty allows any.
    pub http_allow: Vec<String>,
}

impl AgentPolicy {
    /// The path a SCRIPT entrypoint runs from, or why it may not run. Entrypoints are relative
    /// to the agents directory, without `..`; one that exists must stay inside the directory
    /// after symlinks are followed. `must_exist` at execution; at registration a missing file
    /// is allowed (it fails cleanly when run).
    pub fn entrypoint(&self, entrypoint: &str, must_exist: bool) -> Result<PathBuf, String> {
        let rel = Path::new(entrypoint);
        if rel.is_absolute() {
            return Err(format!(
                "entrypoint {entrypoint:?} must be relative to the agents directory"
            ));
        }
        if rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(format!(
                "entrypoint {entrypoint:?} must not contain \"..\" or \".\" components"
            ));
        }
        let path = self.agents_dir.join(rel);
        match std::fs::canonicalize(&path) {
            Ok(real) if real.starts_with(&self.agents_dir) && real.is_file() => Ok(real),
            Ok(real) if real.starts_with(&self.agents_dir) => {
                Err(format!("entrypoint {entrypoint:?} is not a file"))
            }
            Ok(_) => Err(format!(
                "entrypoint {entrypoint:?} resolves outside the agents directory"
            )),
            Err(_) if !must_exist => Ok(path),
            Err(e) => Err(format!("entrypoint {entrypoint:?}: {e}")),
        }
    }

    /// Whether an HTTP agent may call `url`.
    pub fn http_destination(&self, url: &str) -> Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("url {url:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("url {url:?}: only http and https are allowed"));
        }
        if self.http_allow.is_empty() {
            return Ok(());
        }
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        let port = parsed.port_or_known_default().unwrap_or(0);
        let allowed = self.http_allow.iter().any(|entry| {
            let (scheme, rest) = match entry.split_once("://") {
                Some((s, r)) => (Some(s), r.trim_end_matches('/')),
                None => (None, entry.as_str()),
            };
            if scheme.is_some_and(|s| s != parsed.scheme()) {
                return false;
            }
            let (pattern, want_port) = match rest.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse::<u16>().ok()),
                _ => (rest, None),
            };
            let host_ok = match pattern.strip_prefix("*.") {
                Some(domain) => host.ends_with(&format!(".{domain}")),
                None => host == pattern,
            };
            host_ok && want_port.is_none_or(|p| p == port)
        });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "url {url:?} is not in ORCH_HTTP_AGENT_ALLOW ({})",
                self.http_allow.join(", ")
            ))
        }
    }
}

#[derive(Clone)]
pub struct Executor {
    policy: AgentPolicy,
    http: reqwest::Client,
}

impl Executor {
    pub fn new(policy: AgentPolicy) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client builds with static settings");
        Self { policy, http }
    }

    pub fn agents_dir(&self) -> &Path {
        &self.policy.agents_dir
    }

    pub async fn run(&self, inv: Invocation<'_>) -> Outcome {
        let cancel = inv.cancel.clone();
        let work = async {
            match inv.agent.agent_type {
                AgentType::Script => self.run_script(inv).await,
                AgentType::Http => self.run_http(inv).await,
                AgentType::Builtin => {
                    let action = inv.document["action"].as_str().unwrap_or_default();
                    let inputs = &inv.document["inputs"];
                    match tokio::time::timeout(inv.timeout, crate::builtin::run(action, inputs))
                        .await
                    {
                        Ok(outcome) => outcome,
                        Err(_) => Outcome::failed(
                            format!("agent timed out after {}s", inv.timeout.as_secs_f64()),
                            true,
                            None,
                        ),
                    }
                }
            }
        };
        // Dropping the work future kills a SCRIPT agent's whole process group.
        tokio::select! {
            outcome = work => outcome,
            _ = cancel.cancelled() => Outcome::failed(INTERRUPTED, true, None),
        }
    }

    async fn run_script(&self, inv: Invocation<'_>) -> Outcome {
        let Some(entrypoint) = inv.agent.entrypoint.as_deref() else {
            return Outcome::failed("SCRIPT agent has no entrypoint", false, None);
        };
        // Checked again at every run: the directory may have changed since registration.
        let path = match self.policy.entrypoint(entrypoint, true) {
            Ok(p) => p,
            Err(e) => return Outcome::failed(format!("cannot start agent: {e}"), false, None),
        };
        let mut cmd = Command::new(&path);
        cmd.args(&inv.agent.args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Own process group, so a timeout kills the agent's children too.
            .process_group(0);
        for key in ENV_ALLOW_LIST {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        for (k, v) in &inv.env {
            cmd.env(k, v);
        }
        // If the worker dies (even by SIGKILL), the kernel kills the agent rather than
        // leaving an orphan that keeps working on a node someone else will re-run.
        let (memory, processes) = (self.policy.memory_bytes, self.policy.max_processes);
        // SAFETY: between fork and exec only async-signal-safe calls (prctl, setrlimit).
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // Limits the kernel enforces on the agent and whatever it starts: an agent
                // that exceeds one fails (allocation error, fork error), the worker does not.
                let limit = |resource, value: u64| {
                    let rl = libc::rlimit {
                        rlim_cur: value as libc::rlim_t,
                        rlim_max: value as libc::rlim_t,
                    };
                    libc::setrlimit(resource, &rl);
                };
                if memory > 0 {
                    limit(libc::RLIMIT_AS, memory);
                }
                if processes > 0 {
                    limit(libc::RLIMIT_NPROC, processes);
                }
                limit(libc::RLIMIT_CORE, 0);
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Outcome::failed(
                    format!("cannot start agent {}: {e}", path.display()),
                    false,
                    None,
                );
            }
        };
        let group = GroupGuard(child.id().map(|id| id as i32));

        let input = serde_json::to_vec(inv.document).expect("JSON value serializes");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");

        let work = async {
            // An agent may exit without reading its input; that is its business, not an error.
            let writer = async move {
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
                drop(stdin);
            };
            let (_, out, err, status) = tokio::join!(
                writer,
                read_capped(stdout, MAX_OUTPUT_BYTES),
                read_tail(stderr, STDERR_TAIL_BYTES),
                child.wait()
            );
            (out, err, status)
        };
        let (out, err, status) = match tokio::time::timeout(inv.timeout, work).await {
            Ok(r) => r,
            Err(_) => {
                drop(group);
                return Outcome::failed(
                    format!("agent timed out after {}s", inv.timeout.as_secs_f64()),
                    true,
                    None,
                );
            }
        };
        // The agent is gone; make sure nothing it started lingers in its group.
        drop(group);

        let status = match status {
            Ok(s) => s,
            Err(e) => return Outcome::failed(format!("waiting for agent failed: {e}"), true, None),
        };
        let exit_code = status.code();
        let stderr_tail = String::from_utf8_lossy(&err).trim().to_string();
        if !stderr_tail.is_empty() {
            // What the agent said is part of the run's story (the console notifier speaks here).
            tracing::info!(target: "agent", agent = %inv.agent.name, stderr = %stderr_tail, "agent stderr");
        }
        let with_stderr = |msg: String| {
            if stderr_tail.is_empty() {
                msg
            } else {
                format!("{msg}: {stderr_tail}")
            }
        };
        let stdout = match out {
            Ok(bytes) => bytes,
            Err(ReadError::TooLarge) => {
                return Outcome::failed(
                    format!("agent output exceeds {MAX_OUTPUT_BYTES} bytes"),
                    false,
                    exit_code,
                );
            }
            Err(ReadError::Io(e)) => {
                return Outcome::failed(
                    format!("reading agent output failed: {e}"),
                    true,
                    exit_code,
                );
            }
        };
        if !status.success() {
            let msg = match exit_code {
                Some(code) => format!("agent exited with code {code}"),
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    format!("agent killed by signal {}", status.signal().unwrap_or(0))
                }
            };
            return Outcome::failed(with_stderr(msg), true, exit_code);
        }
        match serde_json::from_slice::<Value>(&stdout) {
            Ok(output) => Outcome::Succeeded { output, exit_code },
            Err(e) => {
                let preview: String = String::from_utf8_lossy(&stdout).chars().take(200).collect();
                Outcome::failed(
                    with_stderr(format!(
                        "agent output is not JSON ({e}); output starts with {preview:?}"
                    )),
                    true,
                    exit_code,
                )
            }
        }
    }

    async fn run_http(&self, inv: Invocation<'_>) -> Outcome {
        let Some(url) = inv.agent.url.as_deref() else {
            return Outcome::failed("HTTP agent has no url", false, None);
        };
        if let Err(e) = self.policy.http_destination(url) {
            return Outcome::failed(e, false, None);
        }
        let mut request = self.http.post(url).timeout(inv.timeout).json(inv.document);
        for (k, v) in &inv.env {
            if k == "TRACEPARENT" {
                request = request.header("traceparent", v);
            }
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Outcome::failed(
                    format!("HTTP agent timed out after {}s", inv.timeout.as_secs_f64()),
                    true,
                    None,
                );
            }
            Err(e) => {
                return Outcome::failed(format!("HTTP agent request failed: {e}"), true, None);
            }
        };
        let status = response.status();
        let code = Some(status.as_u16() as i32);
        let body = match read_body_capped(response, MAX_OUTPUT_BYTES).await {
            Ok(b) => b,
            Err(ReadError::TooLarge) => {
                return Outcome::failed(
                    format!("HTTP agent response exceeds {MAX_OUTPUT_BYTES} bytes"),
                    false,
                    code,
                );
            }
            Err(ReadError::Io(e)) => {
                return Outcome::failed(
                    format!("reading HTTP agent response failed: {e}"),
                    true,
                    code,
                );
            }
        };
        let preview: String = String::from_utf8_lossy(&body).chars().take(300).collect();
        if status.is_server_error() {
            return Outcome::failed(
                format!("HTTP agent answered {status}: {preview}"),
                true,
                code,
            );
        }
        if !status.is_success() {
            return Outcome::failed(
                format!("HTTP agent answered {status}: {preview}"),
                false,
                code,
            );
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(output) => Outcome::Succeeded {
                output,
                exit_code: code,
            },
            Err(e) => Outcome::failed(
                format!("HTTP agent response is not JSON ({e}): {preview:?}"),
                false,
                code,
            ),
        }
    }
}

/// Kills a process group when dropped: on timeout, on cancellation, and after the agent exits
/// (so that nothing it started in the background outlives the attempt).
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

#[derive(Debug)]
enum ReadError {
    TooLarge,
    Io(std::io::Error),
}

/// Reads at most `cap` bytes; more is an error, and the rest is drained so the child never
/// blocks on a full pipe.
async fn read_capped(mut r: impl AsyncRead + Unpin, cap: usize) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut too_large = false;
    loop {
        match r.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => {
                if !too_large && buf.len() + n <= cap {
                    buf.extend_from_slice(&chunk[..n]);
                } else {
                    too_large = true;
                    buf = Vec::new();
                }
            }
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    if too_large {
        Err(ReadError::TooLarge)
    } else {
        Ok(buf)
    }
}

/// Keeps the last `keep` bytes of a stream.
async fn read_tail(mut r: impl AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    while let Ok(n) = r.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > keep * 2 {
            buf.drain(..buf.len() - keep);
        }
    }
    if buf.len() > keep {
        buf.drain(..buf.len() - keep);
    }
    buf
}

async fn read_body_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(bytes)) => {
                if buf.len() + bytes.len() > cap {
                    return Err(ReadError::TooLarge);
                }
                buf.extend_from_slice(&bytes);
            }
            Ok(None) => return Ok(buf),
            Err(e) => return Err(ReadError::Io(std::io::Error::other(e))),
        }
    }
}
