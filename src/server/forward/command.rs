//! The command transport: run the user's program with the push's JSON on stdin and read the
//! answer from stdout. The program runs without a shell (the user's text never reaches one), in
//! its own process group, so a deadline kills it and everything it started; it is always waited
//! for, so no zombie is left. Its stderr goes to wxmp's log, prefixed and bounded, never to
//! WeChat.
//!
//! One thread does all of it: the three pipes are non-blocking and served by `poll`, so no
//! thread is started per command (a thread that cannot be started at a process limit cannot
//! leave a child behind), and a background child that keeps the program's stdout open cannot
//! hold the answer back: once the program exits, its process group is killed and what it wrote
//! is read to the end.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{kill_process_group, waitid, Pid, Signal, WaitId, WaitIdOptions};

use super::http::MAX_ANSWER;
use super::CallError;
use crate::log::Log;

/// How often a running command is checked for exit, deadline and cancellation.
const POLL: Duration = Duration::from_millis(10);
/// After the program exits and its group is killed, how long its pipes may take to reach their
/// end; a process that left the group (`setsid`) and holds them open is not waited for longer.
const DRAIN: Duration = Duration::from_millis(500);
/// Lines of stderr logged per run, and bytes kept of each (a longer line is cut, the rest of it
/// read and dropped): a chatty program cannot flood the log or the memory.
const STDERR_LINES: usize = 50;
const STDERR_LINE_BYTES: usize = 2000;

/// Set when the server stops: running commands are killed with their groups, new ones refused.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Stops every command of this process, now and later: each running one is killed with its
/// process group within 10 ms, and answers the fallback. Called once on SIGTERM, so the stop
/// leaves no program (or its children) running under PID 1.
pub fn stop_all() {
    STOPPING.store(true, Ordering::SeqCst);
}

/// Runs `argv` in `dir` with `input` on stdin and `env` added to its environment; its stdout,
/// once it exits 0. Killed (with its process group) at `deadline`, as soon as `cancelled()` says
/// no one can use its answer, or when the server stops ([`stop_all`]); its group is killed when
/// it exits, too.
pub fn run(
    argv: &[String],
    dir: &Path,
    input: &[u8],
    env: &[(&str, &str)],
    deadline: Instant,
    cancelled: &dyn Fn() -> bool,
    log: &Log,
) -> Result<Vec<u8>, CallError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(CallError::Spawn("no program".into()));
    };
    if STOPPING.load(Ordering::SeqCst) {
        return Err(CallError::Stopping);
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // wxmp's own secrets are not in its environment, so the program inherits none of them
    // (`crate::secrets` took them out at start).
    cmd.envs(env.iter().copied());
    let mut child = cmd
        .spawn()
        .map_err(|e| CallError::Spawn(format!("{program}: {e}")))?;
    let name = Path::new(program)
        .file_name()
        .map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned());
    let mut stderr = StderrLog {
        prefix: format!("command {name}[{}] stderr: ", child.id()),
        log,
        line: Vec::new(),
        cut: false,
        logged: 0,
    };
    let result = supervise(&mut child, input, deadline, cancelled, &mut stderr);
    stderr.flush();
    // An exited program was reaped after its group was killed; any other ending stops it here,
    // group and all, and reaps it.
    let (status, out) = result.inspect_err(|_| kill(&mut child))?;
    if !status.success() {
        return Err(CallError::Exit(status.code()));
    }
    Ok(out)
}

/// The poll loop: feeds stdin, collects stdout, logs stderr, until the program has exited and
/// its pipes are drained (its exit status and stdout), or until it must be stopped.
fn supervise(
    child: &mut Child,
    input: &[u8],
    deadline: Instant,
    cancelled: &dyn Fn() -> bool,
    stderr_log: &mut StderrLog<'_>,
) -> Result<(std::process::ExitStatus, Vec<u8>), CallError> {
    let pid = Pid::from_child(child);
    let mut pipes = Pipes::nonblocking(child)?;
    if input.is_empty() {
        pipes.stdin = None;
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    // Set once the program has exited: from then on only its pipes are drained, until then.
    let mut drain_until: Option<Instant> = None;
    loop {
        if drain_until.is_none() {
            // Seen without reaping it: its PID (the group's ID) cannot be reused while it is a
            // zombie, so the group kill below cannot hit anyone else.
            let exited = waitid(
                WaitId::Pid(pid),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
            )
            .map_err(|e| CallError::Io(e.to_string()))?;
            if exited.is_some() {
                // Anything it left running (a background child holding stdout) goes now; what
                // it wrote before it exited is still in the pipe.
                let _ = kill_process_group(pid, Signal::KILL);
                pipes.stdin = None;
                drain_until = Some(Instant::now() + DRAIN);
            }
        }
        match drain_until {
            Some(until) if pipes.drained() || Instant::now() >= until => {
                let status = child.wait().map_err(|e| CallError::Io(e.to_string()))?;
                return Ok((status, out));
            }
            Some(_) => {}
            None if Instant::now() >= deadline => return Err(CallError::Timeout),
            None if STOPPING.load(Ordering::SeqCst) => return Err(CallError::Stopping),
            None if cancelled() => return Err(CallError::Cancelled),
            None => {}
        }
        pipes.pump(input, &mut out, &mut buf, stderr_log)?;
    }
}

/// A command's three pipes, non-blocking, each `None` once closed.
struct Pipes {
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    /// How much of the input has been written.
    written: usize,
}

impl Pipes {
    fn nonblocking(child: &mut Child) -> Result<Pipes, CallError> {
        let pipes = Pipes {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            written: 0,
        };
        for fd in [
            pipes.stdin.as_ref().map(AsFd::as_fd),
            pipes.stdout.as_ref().map(AsFd::as_fd),
            pipes.stderr.as_ref().map(AsFd::as_fd),
        ]
        .into_iter()
        .flatten()
        {
            rustix::io::ioctl_fionbio(fd, true).map_err(|e| CallError::Io(e.to_string()))?;
        }
        Ok(pipes)
    }

    /// Both output pipes are closed: nothing more can come.
    fn drained(&self) -> bool {
        self.stdout.is_none() && self.stderr.is_none()
    }

    /// One round: waits up to `POLL` for any pipe, then feeds stdin, collects stdout and logs
    /// stderr as far as they go without blocking.
    fn pump(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        buf: &mut [u8],
        stderr_log: &mut StderrLog<'_>,
    ) -> Result<(), CallError> {
        let mut fds = Vec::with_capacity(3);
        if let Some(w) = &self.stdin {
            fds.push(PollFd::new(w, PollFlags::OUT));
        }
        if let Some(r) = &self.stdout {
            fds.push(PollFd::new(r, PollFlags::IN));
        }
        if let Some(r) = &self.stderr {
            fds.push(PollFd::new(r, PollFlags::IN));
        }
        let timeout = Timespec {
            tv_sec: 0,
            tv_nsec: POLL.as_nanos() as _,
        };
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(CallError::Io(e.to_string())),
        }
        drop(fds);
        if let Some(w) = &mut self.stdin {
            match w.write(&input[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // A program that does not read its input is its own business.
                Err(_) => self.written = input.len(),
            }
            if self.written >= input.len() {
                self.stdin = None;
            }
        }
        if let Some(r) = &mut self.stdout {
            match drain(r, buf, |chunk| out.extend_from_slice(chunk)) {
                Ok(open) if !open => self.stdout = None,
                Ok(_) => {}
                Err(e) => return Err(CallError::Io(e.to_string())),
            }
            if out.len() as u64 > MAX_ANSWER {
                return Err(CallError::TooLarge);
            }
        }
        if let Some(r) = &mut self.stderr {
            // An error reading stderr ends its logging, not the command.
            if !drain(r, buf, |chunk| stderr_log.feed(chunk)).unwrap_or(false) {
                self.stderr = None;
            }
        }
        Ok(())
    }
}

/// Reads what is there now; `Ok(false)` at the end of the pipe.
fn drain(r: &mut impl Read, buf: &mut [u8], mut take: impl FnMut(&[u8])) -> io::Result<bool> {
    loop {
        match r.read(buf) {
            Ok(0) => return Ok(false),
            Ok(n) => take(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The program's stderr, line by line into the log: at most [`STDERR_LINES`] lines of at most
/// [`STDERR_LINE_BYTES`] bytes each; bytes that are not UTF-8 are shown as `\xNN`. Everything
/// past the bounds is read and dropped, so the program is never blocked or killed by its stderr.
struct StderrLog<'a> {
    prefix: String,
    log: &'a Log,
    line: Vec<u8>,
    /// The current line was longer than the bound.
    cut: bool,
    logged: usize,
}

impl StderrLog<'_> {
    fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            let (head, rest) = chunk.split_at(i);
            self.keep(head);
            self.emit();
            chunk = rest.get(1..).unwrap_or_default();
        }
        self.keep(chunk);
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = STDERR_LINE_BYTES.saturating_sub(self.line.len());
        if bytes.len() > room {
            self.cut = true;
        }
        if self.logged < STDERR_LINES {
            self.line
                .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
        }
    }

    fn emit(&mut self) {
        if self.logged < STDERR_LINES {
            let mut text = escape(&self.line);
            if self.cut {
                text.push_str(" [cut]");
            }
            self.log.info(&format!("{}{text}", self.prefix));
        } else if self.logged == STDERR_LINES {
            self.log
                .warn(&format!("{}(more lines not logged)", self.prefix));
        }
        self.logged = self.logged.saturating_add(1);
        self.line.clear();
        self.cut = false;
    }

    /// A last line without a newline.
    fn flush(&mut self) {
        if !self.line.is_empty() || self.cut {
            self.emit();
        }
    }
}

/// Valid UTF-8 escaped as the log escapes text; anything else as `\xNN`.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.extend(chunk.valid().escape_debug());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Kills the child's whole process group and reaps the child. Only for a child not yet reaped:
/// a reaped child's PID (its group's ID) may belong to another process by now.
fn kill(child: &mut Child) {
    let _ = kill_process_group(Pid::from_child(child), Signal::KILL);
    // The group kill covers the child; this is for a child that left its group.
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Capture;
    use std::sync::Arc;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    fn run_sh(script: &str, secs: u64) -> (Result<Vec<u8>, CallError>, Vec<String>) {
        let capture = Arc::new(Capture::default());
        let log = Log::to(capture.clone());
        let r = run(
            &sh(script),
            Path::new("."),
            b"{\"MsgType\":\"text\"}",
            &[("WXMP_API_PROXY", "http://127.0.0.1:9200")],
            Instant::now() + Duration::from_secs(secs),
            &|| false,
            &log,
        );
        (r, capture.lines())
    }

    #[test]
    fn stdin_goes_in_and_stdout_comes_back() {
        let (r, _) = run_sh("cat", 10);
        assert_eq!(r.unwrap(), b"{\"MsgType\":\"text\"}");
    }

    #[test]
    fn the_gateway_s_address_is_in_the_environment() {
        let (r, _) = run_sh("printf %s \"$WXMP_API_PROXY\"", 10);
        assert_eq!(r.unwrap(), b"http://127.0.0.1:9200");
    }

    #[test]
    fn stderr_is_logged_with_a_prefix_and_a_failure_is_an_error() {
        let (r, lines) = run_sh("echo oops >&2; exit 3", 10);
        assert_eq!(r, Err(CallError::Exit(Some(3))));
        assert!(lines
            .iter()
            .any(|l| l.contains("command sh[") && l.contains("stderr: oops")));
    }

    #[test]
    fn a_program_that_never_exits_is_killed_with_its_children() {
        let started = Instant::now();
        // The child starts a grandchild that would outlive it; the group kill takes both.
        let (r, _) = run_sh("sleep 30 & sleep 30", 1);
        assert_eq!(r, Err(CallError::Timeout));
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    /// The state of process `pid` (`R`, `S`, `Z`...), `None` once it is gone.
    fn state(pid: &str) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.chars().next()
    }

    #[test]
    fn n1_a_background_child_holding_stdout_neither_holds_the_answer_nor_survives() {
        // Issue 19 N1: the answer was never delivered (stdout never reached its end while the
        // child held it) and the child was never killed.
        let dir = std::env::temp_dir().join(format!("wxmp-n1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("bg.pid");
        let started = Instant::now();
        let (r, _) = run_sh(
            &format!(
                "sleep 30 & echo $! > {}; printf '{{\"MsgType\":\"text\"}}'",
                pidfile.display()
            ),
            20,
        );
        assert_eq!(r.unwrap(), b"{\"MsgType\":\"text\"}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the answer waited for the background child: {:?}",
            started.elapsed()
        );
        let bg = std::fs::read_to_string(&pidfile).unwrap();
        let bg = bg.trim();
        let gone = (0..200).any(|_| {
            let s = state(bg);
            if s.is_none() || s == Some('Z') {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
            false
        });
        assert!(gone, "background child {bg} still running: {:?}", state(bg));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn n2_a_huge_stderr_line_is_cut_and_the_lines_are_bounded() {
        // Issue 19 N2: one stderr line was read whole (1 GB took RSS to 979 MiB).
        let (r, lines) = run_sh(
            "head -c 3000000 /dev/zero | tr '\\0' a >&2; echo >&2; seq 1 100 >&2; printf ok",
            20,
        );
        assert_eq!(r.unwrap(), b"ok");
        let logged: Vec<&String> = lines.iter().filter(|l| l.contains("stderr: ")).collect();
        assert!(
            logged[0].ends_with(&format!("{} [cut]", "a".repeat(10))),
            "{}",
            &logged[0][..80]
        );
        assert!(
            logged[0].len() < STDERR_LINE_BYTES + 200,
            "{}",
            logged[0].len()
        );
        assert_eq!(logged.len(), STDERR_LINES + 1, "{logged:?}");
        assert!(logged[STDERR_LINES].contains("(more lines not logged)"));
    }

    #[test]
    fn n3_bytes_that_are_not_utf8_are_logged_escaped_and_the_answer_is_kept() {
        // Issue 19 N3: one such byte ended the reading, and the program died of SIGPIPE on its
        // next write to stderr; its valid answer was replaced by the fallback.
        let (r, lines) = run_sh(
            "printf 'bad \\377 byte\\n' >&2; sleep 0.2; echo still here >&2; printf answer",
            20,
        );
        assert_eq!(r.unwrap(), b"answer");
        assert!(
            lines.iter().any(|l| l.ends_with("stderr: bad \\xff byte")),
            "{lines:?}"
        );
        assert!(lines.iter().any(|l| l.ends_with("stderr: still here")));
    }

    #[test]
    fn a_large_input_that_is_never_read_does_not_block() {
        let log = Log::to(Arc::new(Capture::default()));
        let started = Instant::now();
        let r = run(
            &sh("printf ok"),
            Path::new("."),
            &vec![b'x'; 1 << 20],
            &[],
            Instant::now() + Duration::from_secs(10),
            &|| false,
            &log,
        );
        assert_eq!(r.unwrap(), b"ok");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_answer_over_the_limit_is_refused() {
        let (r, _) = run_sh("head -c 2000000 /dev/zero", 20);
        assert_eq!(r, Err(CallError::TooLarge));
    }

    #[test]
    fn a_missing_program_is_an_error_not_a_panic() {
        let log = Log::to(Arc::new(Capture::default()));
        let r = run(
            &["/nonexistent/wxmp-bot".into()],
            Path::new("."),
            b"",
            &[],
            Instant::now() + Duration::from_secs(5),
            &|| false,
            &log,
        );
        assert!(matches!(r, Err(CallError::Spawn(_))));
    }
}
