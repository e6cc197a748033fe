//! A private, throwaway NATS server with JetStream for tests that need to stop, restart or crash
//! the message broker without disturbing the shared server on 127.0.0.1:4222.
//!
//! The server listens on a free port of 127.0.0.1 only and keeps everything in a fresh directory
//! under [`std::env::temp_dir`]: the JetStream store (`-sd`), which survives
//! [`stop`](PrivateNats::stop) / [`start_again`](PrivateNats::start_again), and the server log
//! (`-l`), appended to across restarts. The server is killed and the directory removed when the
//! [`PrivateNats`] is dropped. Everything is synchronous and uses only `std` plus the
//! `nats-server` binary; signals are sent with the `kill` command.
//!
//! The binary is taken from `ORCH_TEST_NATS_SERVER` if set, else `/usr/sbin/nats-server`, else
//! `nats-server` on `PATH`.
//!
//! If the test process dies without unwinding (SIGKILL, abort), the server outlives it: nothing
//! in `std` ties a child's life to its parent's.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a start may take until the server accepts clients.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`PrivateNats::stop`] waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How many fresh ports [`PrivateNats::start`] tries when the chosen one is taken meanwhile.
const START_ATTEMPTS: usize = 3;
/// What nats-server logs once it accepts client connections.
const READY_LINE: &str = "Server is ready";

/// A throwaway nats-server with JetStream on a free loopback port, storage in a temp dir.
pub struct PrivateNats {
    /// TCP client port on 127.0.0.1.
    pub port: u16,
    /// Directory holding everything below; removed on drop.
    root: PathBuf,
    /// JetStream storage (`-sd`; the server keeps its data in `jetstream/` below it); kept
    /// across restarts.
    store_dir: PathBuf,
    /// Server log (`-l`), appended to across restarts.
    log_file: PathBuf,
    /// The server's own stdout and stderr: whatever it prints before `-l` takes effect (bad
    /// flags, Go panics).
    output_file: PathBuf,
    /// The nats-server executable.
    binary: PathBuf,
    /// The running server, if any.
    child: Option<Child>,
}

impl PrivateNats {
    /// Starts `nats-server -a 127.0.0.1 -p PORT -js -sd <tmpdir>/store -l <tmpdir>/server.log`
    /// and waits until it greets clients on the port and has logged that it is ready. Returns
    /// None with a printed reason (eprintln!) if the binary is missing or the server does not
    /// come up; the test then skips.
    pub fn start() -> Option<PrivateNats> {
        let Some(binary) = find_binary() else {
            eprintln!(
                "PrivateNats: skipped, no nats-server in $ORCH_TEST_NATS_SERVER, /usr/sbin or on PATH"
            );
            return None;
        };
        let root = match make_root_dir() {
            Ok(root) => root,
            Err(reason) => {
                eprintln!("PrivateNats: skipped, {reason}");
                return None;
            }
        };
        let mut nats = PrivateNats {
            port: 0,
            store_dir: root.join("store"),
            log_file: root.join("server.log"),
            output_file: root.join("server.out"),
            root,
            binary,
            child: None,
        };
        // From here on, dropping `nats` cleans up.

        let began = Instant::now();
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let Some(port) = free_port() else {
                eprintln!("PrivateNats: skipped, cannot find a free port on 127.0.0.1");
                return None;
            };
            nats.port = port;
            match nats.launch() {
                Ok(()) => {
                    eprintln!(
                        "PrivateNats: server on 127.0.0.1:{port} ({}) ready in {:?}",
                        nats.root.display(),
                        began.elapsed()
                    );
                    return Some(nats);
                }
                Err(failure) => {
                    last_failure = failure;
                    // Another process may have taken the port between the probe and the bind:
                    // try again on a fresh one. Anything else will not get better.
                    if !nats.log().contains("address already in use") {
                        break;
                    }
                }
            }
        }
        eprintln!(
            "PrivateNats: skipped, server did not start: {last_failure}\n--- server log ---\n{}",
            nats.log()
        );
        None
    }

    /// nats://127.0.0.1:PORT
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGTERM (a clean shutdown that flushes JetStream), waiting for the exit; SIGKILL if the
    /// server is still running after 5 s. Afterwards the port refuses connections. Does nothing
    /// if the server is not running; panics (with the server log) if something still accepts
    /// connections on the port.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take()
            && matches!(child.try_wait(), Ok(None))
        {
            {
                // The child is not reaped before the wait below, so its pid cannot be reused.
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                if !wait_for_exit(&mut child, STOP_GRACE) {
                    eprintln!(
                        "PrivateNats on port {}: no exit {STOP_GRACE:?} after SIGTERM, sending SIGKILL",
                        self.port
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        // The listener dies with the process; this only guards against surprises.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.port_open() {
            if Instant::now() >= deadline {
                panic!(
                    "PrivateNats: port {} still accepts connections after stop\n--- server log ---\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same port with the same storage directory, so JetStream
    /// streams, consumers and messages survive, and waits until it is ready. Does nothing if it
    /// is already running; panics (with the server log) if it does not come up (for instance
    /// because another process took the port meanwhile).
    pub fn start_again(&mut self) {
        if self.is_running() {
            return;
        }
        if let Err(failure) = self.launch() {
            panic!(
                "PrivateNats on port {}: restart failed: {failure}\n--- server log ---\n{}",
                self.port,
                self.log()
            );
        }
    }

    /// [`stop`](Self::stop) then [`start_again`](Self::start_again).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// SIGKILLs the server, as a crash would (no JetStream flush), and waits for its exit.
    /// [`start_again`](Self::start_again) brings it back.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether our server process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                // Exited on its own (or cannot be asked): forget it.
                if let Some(mut child) = self.child.take() {
                    let _ = child.wait();
                }
                false
            }
            None => false,
        }
    }

    /// Whether something on the port greets a new connection with a NATS `INFO` line.
    pub fn is_accepting(&self) -> bool {
        nats_greeting(self.port)
    }

    /// Contents of the server log, for failure reports; followed by whatever the process wrote
    /// to stdout/stderr, if anything.
    pub fn log(&self) -> String {
        let mut text = match fs::read(&self.log_file) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("(cannot read {}: {e})\n", self.log_file.display()),
        };
        if let Ok(bytes) = fs::read(&self.output_file)
            && !bytes.is_empty()
        {
            text.push_str("--- stdout/stderr ---\n");
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
        text
    }

    /// The JetStream storage directory (`-sd`).
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// Spawns the server on `self.port` and waits until it is ready; on failure nothing of it
    /// is left running.
    fn launch(&mut self) -> Result<(), String> {
        // Only what the log gains from here on counts as this start's readiness.
        let log_offset = fs::metadata(&self.log_file).map(|m| m.len()).unwrap_or(0);
        let output = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.output_file)
            .map_err(|e| format!("cannot open {}: {e}", self.output_file.display()))?;
        let output2 = output
            .try_clone()
            .map_err(|e| format!("cannot clone {}: {e}", self.output_file.display()))?;
        let child = Command::new(&self.binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store_dir)
            .arg("-l")
            .arg(&self.log_file)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(output2)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if !self.is_running() {
                return Err(format!("{} exited during startup", self.binary.display()));
            }
            if self.logged_since(log_offset, READY_LINE) && self.is_accepting() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!("not ready within {READY_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the log, from byte `offset` on, contains `needle`.
    fn logged_since(&self, offset: u64, needle: &str) -> bool {
        let Ok(file) = File::open(&self.log_file) else {
            return false;
        };
        let mut bytes = Vec::new();
        let mut reader = BufReader::new(file);
        if std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(offset)).is_err()
            || reader.read_to_end(&mut bytes).is_err()
        {
            return false;
        }
        String::from_utf8_lossy(&bytes).contains(needle)
    }

    /// Whether anything accepts TCP connections on the port.
    fn port_open(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
    }
}

impl Drop for PrivateNats {
    /// SIGKILL, wait, then remove the directory. Never panics.
    fn drop(&mut self) {
        self.kill();
        if let Err(e) = fs::remove_dir_all(&self.root) {
            eprintln!("PrivateNats: cannot remove {}: {e}", self.root.display());
        }
    }
}

/// The nats-server executable, or None.
fn find_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ORCH_TEST_NATS_SERVER") {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let sbin = PathBuf::from("/usr/sbin/nats-server");
    if sbin.is_file() {
        return Some(sbin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

/// A new, empty, mode 0700 directory under the temp dir.
fn make_root_dir() -> Result<PathBuf, String> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "orch-nats-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Option<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").ok()?;
    Some(listener.local_addr().ok()?.port())
}

/// Polls `child` until it exits or `timeout` passes; true when it exited (and is reaped).
fn wait_for_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => return false,
            // Cannot be waited for any more (already reaped elsewhere): nothing left to wait for.
            Err(_) => return true,
        }
    }
}

/// Connects to 127.0.0.1:`port` and checks that the first line is a NATS `INFO {...}`.
fn nats_greeting(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .is_err()
    {
        return false;
    }
    let mut line = String::new();
    match BufReader::new(stream.take(64 * 1024)).read_line(&mut line) {
        Ok(_) => line.starts_with("INFO {"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// One JetStream API call (or a publish with an ack) over a bare NATS connection: returns
    /// the reply payload.
    fn request(port: u16, subject: &str, payload: &str) -> Result<String, String> {
        let stream =
            TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("INFO: {e}"))?;
        if !line.starts_with("INFO ") {
            return Err(format!("no INFO greeting: {line:?}"));
        }
        let msg = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB _INBOX.test 1\r\n\
             PUB {subject} _INBOX.test {}\r\n{payload}\r\n",
            payload.len()
        );
        (&stream)
            .write_all(msg.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        loop {
            line.clear();
            if reader
                .read_line(&mut line)
                .map_err(|e| format!("read: {e}"))?
                == 0
            {
                return Err("connection closed".into());
            }
            let head = line.trim_end();
            if head.starts_with("-ERR") {
                return Err(head.to_string());
            }
            if let Some(rest) = head.strip_prefix("MSG ") {
                let len: usize = rest
                    .rsplit(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("bad MSG line {head:?}"))?;
                let mut body = vec![0; len + 2];
                reader
                    .read_exact(&mut body)
                    .map_err(|e| format!("read body: {e}"))?;
                body.truncate(len);
                return Ok(String::from_utf8_lossy(&body).into_owned());
            }
            if head == "PING" {
                (&stream)
                    .write_all(b"PONG\r\n")
                    .map_err(|e| e.to_string())?;
            }
        }
    }

    fn connects(port: u16) -> bool {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    }

    #[test]
    fn private_nats_starts_restarts_and_cleans_up() {
        let began = Instant::now();
        let Some(mut nats) = PrivateNats::start() else {
            return;
        };
        eprintln!("start() took {:?}", began.elapsed());
        let port = nats.port;
        let root = nats.root.clone();
        assert_ne!(port, 4222);
        assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
        assert!(
            connects(port),
            "no TCP connect after start:\n{}",
            nats.log()
        );
        assert!(nats.is_accepting());

        // Something in JetStream that must survive the restart.
        let created = request(
            port,
            "$JS.API.STREAM.CREATE.PRIVTEST",
            r#"{"name":"PRIVTEST","subjects":["privtest.>"],"storage":"file"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", nats.log()));
        assert!(!created.contains("\"error\""), "stream create: {created}");
        let ack = request(port, "privtest.one", "hello")
            .unwrap_or_else(|e| panic!("{e}\n{}", nats.log()));
        assert!(ack.contains("\"seq\":1"), "publish ack: {ack}");

        let began = Instant::now();
        nats.stop();
        eprintln!("stop() took {:?}", began.elapsed());
        assert!(!connects(port), "TCP connect works after stop");
        assert!(!nats.is_running());
        nats.stop(); // idempotent

        let began = Instant::now();
        nats.start_again();
        eprintln!("start_again() took {:?}", began.elapsed());
        assert!(
            connects(port),
            "no TCP connect after start_again:\n{}",
            nats.log()
        );
        nats.start_again(); // no-op while running
        let info = request(port, "$JS.API.STREAM.INFO.PRIVTEST", "")
            .unwrap_or_else(|e| panic!("{e}\n{}", nats.log()));
        assert!(info.contains("\"messages\":1"), "stream lost: {info}");

        let began = Instant::now();
        nats.kill();
        nats.start_again();
        eprintln!("kill() + start_again() took {:?}", began.elapsed());
        let info = request(port, "$JS.API.STREAM.INFO.PRIVTEST", "")
            .unwrap_or_else(|e| panic!("{e}\n{}", nats.log()));
        assert!(
            info.contains("\"messages\":1"),
            "stream lost after crash: {info}"
        );

        let began = Instant::now();
        nats.restart();
        eprintln!("restart() took {:?}", began.elapsed());
        assert!(
            nats.is_accepting(),
            "not accepting after restart:\n{}",
            nats.log()
        );
        let log = nats.log();
        assert_eq!(log.matches(READY_LINE).count(), 4, "{log}");
        assert!(log.contains("Server Exiting"), "{log}");

        let began = Instant::now();
        drop(nats);
        eprintln!("drop took {:?}", began.elapsed());
        assert!(!root.exists(), "{} still exists", root.display());
        assert!(!connects(port), "TCP connect works after drop");
    }
}
