//! One child process of a deployment: its output kept for reports and for the lines a caller
//! waits for, killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

pub struct Proc {
    pub name: String,
    child: Child,
    lines: Arc<Mutex<std::collections::VecDeque<String>>>,
}

impl Proc {
    /// Starts `cmd`, keeping the last `keep` lines of its stdout and stderr (all when `None`).
    pub fn spawn(name: &str, mut cmd: Command, keep: Option<usize>) -> anyhow::Result<Proc> {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        let lines = Arc::new(Mutex::new(std::collections::VecDeque::new()));
        for stream in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut lines = lines.lock().expect("log lock");
                    if keep.is_some_and(|k| lines.len() >= k) {
                        lines.pop_front();
                    }
                    lines.push_back(line);
                }
            });
        }
        Ok(Proc {
            name: name.to_string(),
            child,
            lines,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for a JSON log line whose `message` is `message`, and returns it.
    pub fn wait_for(
        &mut self,
        message: &str,
        timeout: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .lines
                .lock()
                .expect("log lock")
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["message"] == message);
            if let Some(v) = found {
                return Ok(v);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "{} exited ({status}) before logging {message:?}:\n{}",
                    self.name,
                    self.dump()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not log {message:?} in time:\n{}",
                    self.name,
                    self.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The output kept so far.
    pub fn dump(&self) -> String {
        let lines = self.lines.lock().expect("log lock");
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGKILL: the process gets no chance to clean up, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` and waits up to `timeout` for the exit status.
    pub fn signal_and_wait(
        &mut self,
        signal: i32,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) with a pid we own; no memory is touched.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM, then SIGKILL if it does not stop in time.
    pub fn stop(&mut self, grace: Duration) {
        if self.signal_and_wait(libc::SIGTERM, grace).is_none() {
            self.kill();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
