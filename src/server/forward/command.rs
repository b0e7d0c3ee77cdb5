//! The command transport: run the user's program with the push's JSON on stdin and read the
//! answer from stdout. The program runs without a shell (the user's text never reaches one), in
//! its own process group, so a deadline kills it and everything it started; it is always waited
//! for, so no zombie is left. Its stderr goes to wxmp's log, prefixed, never to WeChat.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};

use super::http::MAX_ANSWER;
use super::CallError;
use crate::log::Log;

/// How often a running command is checked for exit, deadline and cancellation.
const POLL: Duration = Duration::from_millis(10);
/// Lines of stderr logged per run, and characters per line: a chatty program cannot flood.
const STDERR_LINES: usize = 50;
const STDERR_LINE_CHARS: usize = 500;
/// wxmp's own secrets are not handed to the user's program.
const SECRET_VARS: [&str; 4] = [
    "WXMP_TOKEN",
    "WXMP_AES_KEY",
    "WXMP_SECRET",
    "WXMP_FORWARD_SECRET",
];

/// Runs `argv` in `dir` with `input` on stdin; its stdout, once it exits 0. Killed (with its
/// process group) at `deadline`, or as soon as `cancelled()` says no one can use its answer.
pub fn run(
    argv: &[String],
    dir: &Path,
    input: &[u8],
    deadline: Instant,
    cancelled: &dyn Fn() -> bool,
    log: &Log,
) -> Result<Vec<u8>, CallError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(CallError::Spawn("no program".into()));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for var in SECRET_VARS {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| CallError::Spawn(format!("{program}: {e}")))?;
    let pid = child.id();
    let name = Path::new(program)
        .file_name()
        .map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned());

    // Each pipe on its own thread, so a program that writes before it reads cannot deadlock.
    let stdin = child.stdin.take().map(|mut w| {
        let input = input.to_vec();
        thread::spawn(move || {
            // A program that does not read its input is its own business.
            let _ = w.write_all(&input);
        })
    });
    let stdout = child.stdout.take().map(|r| {
        thread::spawn(move || {
            let mut out = Vec::new();
            let read = r.take(MAX_ANSWER + 1).read_to_end(&mut out);
            read.map(|_| out)
        })
    });
    let stderr = child.stderr.take().map(|r| {
        let log = log.clone();
        let name = name.clone();
        thread::spawn(move || {
            for (i, line) in BufReader::new(r).lines().map_while(Result::ok).enumerate() {
                if i == STDERR_LINES {
                    log.warn(&format!(
                        "command {name}[{pid}] stderr: (more lines not logged)"
                    ));
                }
                if i >= STDERR_LINES {
                    continue;
                }
                let line: String = line.chars().take(STDERR_LINE_CHARS).collect();
                log.info(&format!(
                    "command {name}[{pid}] stderr: {}",
                    line.escape_debug()
                ));
            }
        })
    });

    let ended = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(CallError::Io(e.to_string())),
        }
        if Instant::now() >= deadline {
            break Err(CallError::Timeout);
        }
        if cancelled() {
            break Err(CallError::Cancelled);
        }
        thread::sleep(POLL);
    };
    // Whatever happened, the group goes and the child is reaped.
    let status = match ended {
        Ok(status) => Ok(status),
        Err(e) => {
            kill(&mut child);
            Err(e)
        }
    };
    if let Some(t) = stdin {
        let _ = t.join();
    }
    let out = stdout.map(|t| t.join());
    if let Some(t) = stderr {
        let _ = t.join();
    }
    let status = status?;
    if !status.success() {
        return Err(CallError::Exit(status.code()));
    }
    match out {
        Some(Ok(Ok(bytes))) if bytes.len() as u64 > MAX_ANSWER => Err(CallError::TooLarge),
        Some(Ok(Ok(bytes))) => Ok(bytes),
        Some(Ok(Err(e))) => Err(CallError::Io(e.to_string())),
        _ => Err(CallError::Io("stdout could not be read".into())),
    }
}

/// Kills the child's whole process group and reaps the child.
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

    #[test]
    fn a_missing_program_is_an_error_not_a_panic() {
        let log = Log::to(Arc::new(Capture::default()));
        let r = run(
            &["/nonexistent/wxmp-bot".into()],
            Path::new("."),
            b"",
            Instant::now() + Duration::from_secs(5),
            &|| false,
            &log,
        );
        assert!(matches!(r, Err(CallError::Spawn(_))));
    }
}
