//! A private, throwaway PostgreSQL server for tests that need to stop, restart or crash the
//! database without disturbing the shared server on 127.0.0.1:5432.
//!
//! The cluster lives in a fresh directory under [`std::env::temp_dir`] (data directory, socket
//! directory and server log), listens on a free port of 127.0.0.1 only, trusts every local
//! connection as user `postgres`, and is destroyed (`pg_ctl stop -m immediate`, directory
//! removed) when the [`PrivatePostgres`] is dropped. Everything is synchronous and uses only
//! `std` plus the PostgreSQL command-line tools.
//!
//! `initdb` and `postgres` refuse to run as root, so when the tests run as root the server tools
//! are run as the `postgres` OS user through `runuser`; otherwise they run as the current user.
//!
//! The server binaries are taken from `ORCH_TEST_PG_BINDIR` if set, else from the newest
//! `/usr/lib/postgresql/<version>/bin`, else from the directory of `initdb` on `PATH`.

use std::fs::{self, DirBuilder};
use std::net::TcpListener;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds `pg_ctl` waits for a start or stop to complete.
const PG_CTL_TIMEOUT_SECS: &str = "60";
/// How many fresh ports [`PrivatePostgres::start`] tries when the chosen one is taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// A throwaway PostgreSQL cluster in a temporary directory on a free port.
pub struct PrivatePostgres {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Directory holding everything below; removed on drop.
    root: PathBuf,
    /// The cluster (`initdb` target).
    data_dir: PathBuf,
    /// `unix_socket_directories`, so the server never touches /var/run/postgresql.
    socket_dir: PathBuf,
    /// Server log (`pg_ctl -l`), appended to across restarts.
    log_file: PathBuf,
    /// Directory of `initdb`, `pg_ctl`, `pg_isready`.
    bin_dir: PathBuf,
    /// Run the server tools through `runuser -u postgres` (we are root).
    as_postgres: bool,
}

impl PrivatePostgres {
    /// initdb + start. Returns None with a printed reason (eprintln!) if the server binaries
    /// cannot be found or run; the test then skips.
    pub fn start() -> Option<PrivatePostgres> {
        let Some(bin_dir) = find_bin_dir() else {
            eprintln!(
                "PrivatePostgres: skipped, no PostgreSQL server binaries (initdb, pg_ctl, postgres) \
                 found in $ORCH_TEST_PG_BINDIR, /usr/lib/postgresql/*/bin or on PATH"
            );
            return None;
        };
        let as_postgres = match running_as_root() {
            Some(root) => root,
            None => {
                eprintln!(
                    "PrivatePostgres: skipped, `id -u` failed, cannot tell whether we are root"
                );
                return None;
            }
        };

        let root = match make_root_dir(as_postgres) {
            Ok(root) => root,
            Err(reason) => {
                eprintln!("PrivatePostgres: skipped, {reason}");
                return None;
            }
        };
        let mut pg = PrivatePostgres {
            port: 0,
            data_dir: root.join("data"),
            socket_dir: root.join("sock"),
            log_file: root.join("server.log"),
            root,
            bin_dir,
            as_postgres,
        };
        // From here on, dropping `pg` cleans up (stop -m immediate is harmless when not running).

        let began = Instant::now();
        let initdb = pg
            .tool("initdb")
            .arg("-D")
            .arg(&pg.data_dir)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .arg("--locale=C")
            .output();
        match initdb {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                eprintln!(
                    "PrivatePostgres: skipped, initdb failed ({}):\n{}",
                    out.status,
                    output_text(&out)
                );
                return None;
            }
            Err(e) => {
                eprintln!("PrivatePostgres: skipped, cannot run initdb: {e}");
                return None;
            }
        }
        if let Err(e) = fs::create_dir(&pg.socket_dir) {
            eprintln!(
                "PrivatePostgres: skipped, cannot create {}: {e}",
                pg.socket_dir.display()
            );
            return None;
        }
        if pg.as_postgres && !chown_to_postgres(&pg.socket_dir) {
            eprintln!(
                "PrivatePostgres: skipped, cannot chown {} to postgres",
                pg.socket_dir.display()
            );
            return None;
        }

        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let Some(port) = free_port() else {
                eprintln!("PrivatePostgres: skipped, cannot find a free port on 127.0.0.1");
                return None;
            };
            pg.port = port;
            match pg.pg_ctl_start() {
                Ok(()) => {
                    eprintln!(
                        "PrivatePostgres: server on 127.0.0.1:{port} ({}) ready in {:?}",
                        pg.root.display(),
                        began.elapsed()
                    );
                    return Some(pg);
                }
                Err(failure) => {
                    last_failure = failure;
                    // Another process may have taken the port between the probe and the bind:
                    // try again on a fresh one. Anything else will not get better.
                    let log = pg.log();
                    if !(log.contains("could not bind") || log.contains("Address already in use")) {
                        break;
                    }
                    pg.pg_ctl_stop("immediate");
                }
            }
        }
        eprintln!(
            "PrivatePostgres: skipped, server did not start: {last_failure}\n--- server log ---\n{}",
            pg.log()
        );
        None
    }

    /// Base URL without database: postgres://postgres@127.0.0.1:PORT
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// `pg_ctl stop -m fast`, waiting until the server is gone. Does nothing if it is not
    /// running; panics (with the server log) if it cannot be stopped.
    pub fn stop(&self) {
        if !self.pg_ctl_stop("fast") && self.is_running() {
            panic!(
                "PrivatePostgres on port {}: pg_ctl stop -m fast failed\n--- server log ---\n{}",
                self.port,
                self.log()
            );
        }
        self.wait_until_not_accepting();
    }

    /// `pg_ctl start -w` on the same port and directory. Does nothing if it is already running;
    /// panics (with the server log) if it does not come up.
    pub fn start_again(&self) {
        if self.is_running() {
            return;
        }
        if let Err(failure) = self.pg_ctl_start() {
            panic!(
                "PrivatePostgres on port {}: restart failed: {failure}\n--- server log ---\n{}",
                self.port,
                self.log()
            );
        }
    }

    /// [`stop`](Self::stop) then [`start_again`](Self::start_again).
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    /// Whether the server accepts connections (`pg_isready`).
    pub fn is_accepting(&self) -> bool {
        let mut cmd = Command::new(self.bin_dir.join("pg_isready"));
        cmd.args([
            "-q",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-t",
            "3",
        ])
        .arg("-p")
        .arg(self.port.to_string());
        succeeds(&mut cmd)
    }

    /// Contents of the server log, for failure reports.
    pub fn log(&self) -> String {
        match fs::read(&self.log_file) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("(cannot read {}: {e})", self.log_file.display()),
        }
    }

    /// The data directory of the cluster.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A server tool as a command: run as user postgres when we are root, otherwise directly.
    /// Working directory is the cluster's own directory, so postgres never trips over an
    /// unreadable current directory, and libpq/PG environment variables of the test run are
    /// removed so they cannot redirect the tool to another cluster.
    fn tool(&self, name: &str) -> Command {
        let path = self.bin_dir.join(name);
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        };
        cmd.current_dir(&self.root);
        for var in [
            "PGDATA",
            "PGPORT",
            "PGHOST",
            "PGHOSTADDR",
            "PGUSER",
            "PGDATABASE",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        quiet(&mut cmd);
        cmd
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            shell_quote(&self.socket_dir.to_string_lossy()),
        );
        let out = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-o")
            .arg(options)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS, "start"])
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl start: {}: {}",
                out.status,
                output_text(&out)
            ))
        }
    }

    /// `pg_ctl stop -m MODE -w`; true when it reported success.
    fn pg_ctl_stop(&self, mode: &str) -> bool {
        self.tool("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", mode, "-w", "-t", PG_CTL_TIMEOUT_SECS, "stop"])
            .output()
            .map(|out| out.status.success())
            .unwrap_or(false)
    }

    /// `pg_ctl status`: exit 0 running, 3 not running, 4 no data directory.
    fn is_running(&self) -> bool {
        succeeds(
            self.tool("pg_ctl")
                .arg("-D")
                .arg(&self.data_dir)
                .arg("status"),
        )
    }

    /// pg_ctl -w stop already waits for the postmaster to exit; this only guards against a
    /// listener lingering for a moment afterwards.
    fn wait_until_not_accepting(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.is_accepting() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivatePostgres {
    /// `pg_ctl stop -m immediate`, then remove the directory. Never panics.
    fn drop(&mut self) {
        if self.data_dir.join("postmaster.pid").exists() {
            self.pg_ctl_stop("immediate");
        }
        if let Err(e) = fs::remove_dir_all(&self.root) {
            eprintln!(
                "PrivatePostgres: cannot remove {}: {e}",
                self.root.display()
            );
        }
    }
}

/// Directory of the server binaries, or None.
fn find_bin_dir() -> Option<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres", "pg_isready"]
            .iter()
            .all(|t| dir.join(t).is_file())
    };

    if let Some(dir) = std::env::var_os("ORCH_TEST_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        return complete(&dir).then_some(dir);
    }

    // Debian/Ubuntu layout: /usr/lib/postgresql/<major>/bin; take the newest complete one.
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let key: Vec<u32> = name
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            Some((key, entry.path().join("bin")))
        })
        .filter(|(_, bin)| complete(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }

    // Otherwise wherever `initdb` on PATH really lives (it is often a symlink).
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("initdb"))
        .filter(|initdb| initdb.is_file())
        .filter_map(|initdb| {
            fs::canonicalize(initdb)
                .ok()?
                .parent()
                .map(Path::to_path_buf)
        })
        .find(|dir| complete(dir))
}

/// Some(true) when `id -u` says 0.
fn running_as_root() -> Option<bool> {
    let out = Command::new("id")
        .arg("-u")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// A new, empty, mode 0700 directory under the temp dir, owned by postgres when `as_postgres`.
fn make_root_dir(as_postgres: bool) -> Result<PathBuf, String> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut candidates = vec![std::env::temp_dir()];
    if as_postgres && Path::new("/tmp") != candidates[0] {
        // user postgres may not be able to reach into e.g. a $TMPDIR under /root.
        candidates.push(PathBuf::from("/tmp"));
    }
    let mut failures = Vec::new();
    for parent in candidates {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = parent.join(format!(
            "orch-pg-{}-{}-{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        if let Err(e) = DirBuilder::new().mode(0o700).create(&dir) {
            failures.push(format!("cannot create {}: {e}", dir.display()));
            continue;
        }
        if as_postgres {
            let usable = chown_to_postgres(&dir)
                && succeeds(
                    Command::new("runuser")
                        .args(["-u", "postgres", "--", "test", "-w"])
                        .arg(&dir),
                );
            if !usable {
                failures.push(format!("user postgres cannot write to {}", dir.display()));
                let _ = fs::remove_dir_all(&dir);
                continue;
            }
        }
        return Ok(dir);
    }
    Err(failures.join("; "))
}

fn chown_to_postgres(path: &Path) -> bool {
    succeeds(Command::new("chown").arg("postgres:postgres").arg(path))
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Option<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").ok()?;
    Some(listener.local_addr().ok()?.port())
}

/// No stdin; stdout and stderr are captured by `output()`.
fn quiet(cmd: &mut Command) -> &mut Command {
    cmd.stdin(Stdio::null())
}

/// Run with stdout and stderr discarded; true on exit status 0.
fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Quote for the `sh -c` through which pg_ctl launches postgres with the `-o` options.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select_one(port: u16) -> Result<String, String> {
        let out = Command::new("psql")
            .args([
                "-X",
                "-tA",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                "select 1",
            ])
            .arg("-p")
            .arg(port.to_string())
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(output_text(&out))
        }
    }

    #[test]
    fn private_postgres_starts_restarts_and_cleans_up() {
        let began = Instant::now();
        let Some(pg) = PrivatePostgres::start() else {
            return;
        };
        eprintln!("start() took {:?}", began.elapsed());
        let port = pg.port;
        let root = pg.root.clone();
        assert_ne!(port, 5432);
        assert_eq!(pg.url(), format!("postgres://postgres@127.0.0.1:{port}"));
        assert!(
            pg.is_accepting(),
            "not accepting after start:\n{}",
            pg.log()
        );
        assert_eq!(
            select_one(port).unwrap_or_else(|e| panic!("{e}\n{}", pg.log())),
            "1"
        );

        let began = Instant::now();
        pg.stop();
        eprintln!("stop() took {:?}", began.elapsed());
        assert!(!pg.is_accepting());
        assert!(select_one(port).is_err());
        pg.stop(); // idempotent

        let began = Instant::now();
        pg.start_again();
        eprintln!("start_again() took {:?}", began.elapsed());
        assert!(
            pg.is_accepting(),
            "not accepting after start_again:\n{}",
            pg.log()
        );

        let began = Instant::now();
        pg.restart();
        eprintln!("restart() took {:?}", began.elapsed());
        assert!(
            pg.is_accepting(),
            "not accepting after restart:\n{}",
            pg.log()
        );
        assert_eq!(
            select_one(port).unwrap_or_else(|e| panic!("{e}\n{}", pg.log())),
            "1"
        );
        assert!(
            pg.log()
                .contains("database system is ready to accept connections")
        );

        let began = Instant::now();
        drop(pg);
        eprintln!("drop took {:?}", began.elapsed());
        assert!(!root.exists(), "{} still exists", root.display());
        TcpListener::bind(("127.0.0.1", port)).expect("port still taken after drop");
    }
}
