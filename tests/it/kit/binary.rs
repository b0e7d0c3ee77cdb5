//! The real `wxmp` executable: a clean [`command`] for one-shot runs, and [`Wxmp`], a running
//! server on a free loopback port, built with [`Wxmp::builder`] (flags, environment, an
//! open-files limit, a wrapper such as `setpriv`) and killed on drop.
//!
//! The server's address comes from its machine-readable start-up line
//! (`{"listening":{"http":…,"metrics":…}}` on stdout), never from the human banner.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::kit::http::{exchange, request};
use crate::kit::tempdir;
use crate::kit::wait::{self, secs};

pub const BIN: &str = env!("CARGO_BIN_EXE_wxmp");

/// How long a server may take to print its start-up line.
const START: Duration = Duration::from_secs(30);

/// `wxmp args…` with none of the caller's `WXMP_*` settings.
pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    clean_env(&mut c);
    c
}

fn clean_env(c: &mut Command) {
    for (name, _) in std::env::vars() {
        if name.starts_with("WXMP_") {
            c.env_remove(name);
        }
    }
}

/// What a [`Wxmp`] is started with.
#[derive(Default)]
pub struct Builder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    nofile: Option<u32>,
    wrap: Vec<String>,
    unread_stderr: bool,
}

impl Builder {
    /// Flags after `--host 127.0.0.1 --port 0`.
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Builder {
        self.args.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// One environment variable (the caller's `WXMP_*` are always removed).
    pub fn env(mut self, name: &str, value: &str) -> Builder {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Runs under `ulimit -n n`, which also lowers the hard limit that wxmp raises its soft
    /// limit to.
    pub fn nofile(mut self, n: u32) -> Builder {
        self.nofile = Some(n);
        self
    }

    /// A command that runs first and execs the rest (e.g. `setpriv … prlimit … --`), before
    /// the open-files limit is set.
    pub fn wrap(mut self, wrap: &[&str]) -> Builder {
        self.wrap = wrap.iter().map(|&w| w.to_owned()).collect();
        self
    }

    /// Sends stderr to a pipe that nobody reads until the test takes it ([`Wxmp::take_stderr`]):
    /// a stalled log reader. [`Wxmp::log`] is empty then.
    pub fn unread_stderr(mut self) -> Builder {
        self.unread_stderr = true;
        self
    }

    /// Starts the server and waits for its start-up line; panics with its stderr if it does
    /// not print one.
    pub fn start(self) -> Wxmp {
        let dir = tempdir();
        let log = dir.join("stderr.log");
        let mut cmd = if self.wrap.is_empty() && self.nofile.is_none() {
            Command::new(BIN)
        } else {
            let limit = self
                .nofile
                .map_or(String::new(), |n| format!("ulimit -n {n} && "));
            let mut c = Command::new(self.wrap.first().map_or("sh", String::as_str));
            if !self.wrap.is_empty() {
                c.args(&self.wrap[1..]).arg("sh");
            }
            c.arg("-c")
                .arg(format!("{limit}exec \"$0\" \"$@\""))
                .arg(BIN);
            c
        };
        clean_env(&mut cmd);
        cmd.args(["--host", "127.0.0.1", "--port", "0"])
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if self.unread_stderr {
            cmd.stderr(Stdio::piped());
        } else {
            // A file, not a pipe: nobody has to keep reading it for the server to go on logging.
            cmd.stderr(std::fs::File::create(&log).unwrap());
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            let stdout = Arc::clone(&stdout);
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if line.starts_with("{\"listening\"") {
                        let _ = tx.send(line.clone());
                    }
                    let mut s = stdout.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        let read_log =
            || String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
        let line = rx.recv_timeout(START).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "no start-up line within {START:?}; exit {:?}; stdout: {}; stderr: {}",
                child.wait().ok().and_then(|s| s.code()),
                stdout.lock().unwrap(),
                read_log()
            )
        });
        let json: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("bad start-up line {line:?}: {e}"));
        let listening = &json["listening"];
        let addr = listening["http"]
            .as_str()
            .unwrap_or_else(|| panic!("no http address in {line:?}"))
            .to_owned();
        let metrics = listening["metrics"].as_str().map(str::to_owned);
        let api_proxy = listening["api_proxy"].as_str().map(str::to_owned);
        let banner = stdout
            .lock()
            .unwrap()
            .lines()
            .take_while(|l| !l.starts_with("{\"listening\""))
            .collect::<Vec<_>>()
            .join("\n");
        Wxmp {
            pid: child.id(),
            stderr: child.stderr.take(),
            child,
            addr,
            metrics,
            api_proxy,
            banner,
            log,
        }
    }
}

/// A running server, killed on drop. Its stderr goes to a file, read by [`Wxmp::log`].
pub struct Wxmp {
    child: Child,
    /// With [`Builder::unread_stderr`], the pipe until the test takes it.
    stderr: Option<ChildStderr>,
    pub pid: u32,
    /// `127.0.0.1:PORT` of the public listener.
    pub addr: String,
    /// The metrics listener's address, when there is one.
    pub metrics: Option<String>,
    /// The API gateway's address (`--api-proxy`), when there is one.
    pub api_proxy: Option<String>,
    /// The human start-up banner (for tests of its wording only).
    pub banner: String,
    log: PathBuf,
}

impl Wxmp {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// `Wxmp::builder().args(args).start()`.
    pub fn start(args: &[&str]) -> Wxmp {
        Wxmp::builder().args(args).start()
    }

    /// The metrics listener's address; panics if the server has none.
    pub fn metrics_addr(&self) -> String {
        self.metrics
            .clone()
            .unwrap_or_else(|| panic!("no metrics listener; banner: {}", self.banner))
    }

    /// What the server has written to stderr so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits until the log contains `needle`; fails, showing the log, if it does not within
    /// `within`.
    #[track_caller]
    pub fn wait_for_log(&self, needle: &str, within: Duration) {
        wait::until_ok(within, format_args!("{needle:?} in the log"), || {
            let log = self.log();
            if log.contains(needle) {
                Ok(())
            } else {
                Err(format!("\n{log}"))
            }
        });
    }

    /// One request on a fresh connection: the status and the body.
    pub fn request(&self, method: &str, target: &str, body: &[u8]) -> (u16, String) {
        request(&self.addr, method, target, body)
    }

    /// `GET /healthz` on a fresh connection answers 200 `ok` within 10 s.
    pub fn healthy(&self) -> bool {
        exchange(
            &self.addr,
            b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .is_some_and(|r| r.starts_with("HTTP/1.1 200") && r.ends_with("ok"))
    }

    /// Sends a signal by name (`TERM`, `HUP`).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name} {} failed", self.pid);
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The exit code once the server has exited (-1 for a signal), else None.
    pub fn exit_code(&mut self) -> Option<i32> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.code().unwrap_or(-1)),
            _ => None,
        }
    }

    /// SIGTERM, then the exit code and stderr; fails if it has not exited within 20 s (the
    /// grace period is 8 s).
    #[track_caller]
    pub fn terminate(self) -> (Option<i32>, String) {
        self.terminate_within(secs(20))
    }

    /// [`Wxmp::terminate`], failing if the exit takes longer than `within`.
    #[track_caller]
    pub fn terminate_within(mut self, within: Duration) -> (Option<i32>, String) {
        self.signal("TERM");
        let mut code = None;
        wait::until(within, "the exit after SIGTERM", || {
            code = self.exit_code();
            code.is_some()
        });
        (code, self.log())
    }

    /// The stderr pipe of a server started with [`Builder::unread_stderr`].
    pub fn take_stderr(&mut self) -> ChildStderr {
        self.stderr
            .take()
            .expect("started with Builder::unread_stderr, and taken once")
    }

    fn status_field(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn threads(&self) -> u64 {
        self.status_field("Threads:")
    }

    pub fn rss_mib(&self) -> u64 {
        self.status_field("VmRSS:") / 1024
    }

    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Descriptors and threads of the idle server, after one request has warmed it up: the
    /// counts once they have held still for 200 ms (or the last seen after 10 s).
    pub fn baseline(&self) -> (usize, u64) {
        assert!(self.healthy(), "not serving");
        let mut base = (0, 0);
        wait::at_most(secs(10), || {
            base = (self.fds(), self.threads());
            std::thread::sleep(Duration::from_millis(200));
            base == (self.fds(), self.threads())
        });
        base
    }

    /// Waits until descriptors and threads are back to `base` (see [`Wxmp::baseline`]); fails
    /// with what it saw if they are not within 30 s.
    #[track_caller]
    pub fn settles_to(&self, base: (usize, u64)) {
        wait::until_ok(
            secs(30),
            format_args!("descriptors and threads back to the baseline {base:?}"),
            || {
                let now = (self.fds(), self.threads());
                if now.0 <= base.0 && now.1 <= base.1 {
                    return Ok(());
                }
                let open: Vec<_> = std::fs::read_dir(format!("/proc/{}/fd", self.pid))
                    .map(|d| {
                        d.flatten()
                            .filter_map(|e| std::fs::read_link(e.path()).ok())
                            .collect()
                    })
                    .unwrap_or_default();
                Err(format!("{now:?}; open: {open:?}"))
            },
        );
    }
}

impl Drop for Wxmp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
