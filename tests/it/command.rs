//! The command transport and the secrets against the real binary (issue 19 §2: N1, N5, N6).
//! The transport's own cases (N2, N3) are unit tests in `src/server/forward/command.rs`.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::helpers::{text_of, text_xml};
use crate::kit::binary::{command as wxmp, Wxmp};
use crate::kit::http::request as http;
use crate::kit::signed;
use crate::kit::tempdir;
use crate::kit::wait::{self, secs};

/// A rules file whose default runs `sh bot.sh` with `script` as bot.sh.
fn command_rules(script: &str) -> PathBuf {
    let dir = tempdir();
    std::fs::write(dir.join("bot.sh"), script).unwrap();
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        "[default]\nreply.command = { argv = [\"sh\", \"bot.sh\"], fallback = { text = \"稍等\" } }\n",
    )
    .unwrap();
    rules
}

/// Live processes whose command line holds `marker` (a zombie's command line is empty).
fn processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .count()
}

fn push(server: &Wxmp, token: &str, content: &str, id: u64) -> (u16, String) {
    let target = signed::target(token);
    http(
        &server.addr,
        "POST",
        &target,
        text_xml("o", content, id).as_bytes(),
    )
}

#[test]
fn n1_a_background_child_holding_stdout_does_not_hold_the_answer_and_is_killed() {
    // Issue 19 N1: the answer was never delivered, the slot stayed held and the child lived on.
    let marker = format!("3601.{}", std::process::id());
    let script = format!(
        "cat >/dev/null\nsleep {marker} &\nprintf '{{\"MsgType\":\"text\",\"Content\":\"早\"}}'\n"
    );
    let rules = command_rules(&script);
    let server = Wxmp::start(&["--token", "cmdtok1", "--rules", rules.to_str().unwrap()]);
    let started = Instant::now();
    let (status, body) = push(&server, "cmdtok1", "hi", 1);
    assert_eq!(status, 200, "{body}");
    assert_eq!(text_of(&body), "早", "the answer, not the fallback");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered after {:?}",
        started.elapsed()
    );
    wait::until(
        secs(5),
        "the background child killed after the answer",
        || processes_with(&marker) == 0,
    );
}

#[test]
fn n6_sigterm_stops_running_commands_with_their_process_groups() {
    // Issue 19 N6: SIGTERM left running commands and their children alive under PID 1.
    let marker = format!("3602.{}", std::process::id());
    let script = format!("cat >/dev/null\nsleep {marker} &\nexec sleep {marker}\n");
    let rules = command_rules(&script);
    let server = Wxmp::start(&["--token", "cmdtok6", "--rules", rules.to_str().unwrap()]);
    let holders: Vec<_> = (0..3)
        .map(|i| {
            let (addr, target) = (server.addr.clone(), signed::target("cmdtok6"));
            thread::spawn(move || {
                http(
                    &addr,
                    "POST",
                    &target,
                    text_xml("o", "hold", 100 + i).as_bytes(),
                )
            })
        })
        .collect();
    wait::until_ok(
        secs(10),
        "the three commands and their children running",
        || match processes_with(&marker) {
            6 => Ok(()),
            n => Err(format!("{n} running")),
        },
    );
    let stopping = Instant::now();
    let (code, log) = server.terminate();
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "the stop took {:?}",
        stopping.elapsed()
    );
    assert_eq!(code, Some(0), "{log}");
    wait::until_ok(
        secs(3),
        "the commands' processes gone after the stop",
        || match processes_with(&marker) {
            0 => Ok(()),
            n => Err(format!("{n} survived")),
        },
    );
    for h in holders {
        let (status, body) = h.join().unwrap();
        assert_eq!((status, text_of(&body)), (200, "稍等".to_owned()));
    }
    assert!(
        log.contains("stopped: the server is shutting down"),
        "{log}"
    );
}

#[test]
fn n5_the_programs_a_server_runs_cannot_read_its_secrets() {
    // Issue 19 N5: a command could read every secret in /proc/$PPID/environ.
    let script = "cat >/dev/null\nif grep -q cmdtok5secret /proc/$PPID/environ; then c=leaked; else c=clean; fi\nprintf '{\"MsgType\":\"text\",\"Content\":\"%s %s\"}' \"$c\" \"${WXMP_TOKEN:-unset}\"\n";
    let rules = command_rules(script);
    let server = Wxmp::builder()
        .args(&["--rules", rules.to_str().unwrap()])
        .env("WXMP_TOKEN", "cmdtok5secret")
        .start();
    let (status, body) = push(&server, "cmdtok5secret", "hi", 1);
    assert_eq!(status, 200, "{body}");
    assert_eq!(text_of(&body), "clean unset");
    let environ = std::fs::read(format!("/proc/{}/environ", server.pid)).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains("cmdtok5secret"),
        "the secret is still in the server's /proc/PID/environ"
    );
}

#[test]
fn every_secret_can_come_from_a_file() {
    let dir = tempdir();
    let file = dir.join("token");
    std::fs::write(&file, "filetok7\n").unwrap();
    let server = Wxmp::builder()
        .env("WXMP_TOKEN_FILE", file.to_str().unwrap())
        .start();
    let (status, body) = push(&server, "filetok7", "天气", 1);
    assert_eq!(
        (status, text_of(&body)),
        (200, "北京天气挺好的！".to_owned())
    );

    let both = wxmp(&["--port", "0"])
        .env("WXMP_TOKEN", "filetok7")
        .env("WXMP_TOKEN_FILE", file.to_str().unwrap())
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&both.stderr),
        "wxmp: both WXMP_TOKEN and WXMP_TOKEN_FILE are set: use one\n"
    );
    let missing = wxmp(&["--port", "0"])
        .env("WXMP_SECRET_FILE", dir.join("nope").to_str().unwrap())
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.starts_with("wxmp: cannot read WXMP_SECRET_FILE "),
        "{err}"
    );
}

/// Threads of every process running as nobody (RLIMIT_NPROC counts them all).
fn nobody_tasks() -> u64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|s| s.lines().any(|l| l.starts_with("Uid:\t65534\t")))
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// Children of `pid` that exited and were never waited for.
fn zombies_of(pid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let mut f = after.split_whitespace();
            let state = f.next().unwrap_or("");
            let ppid: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            state == "Z" && ppid == pid
        })
        .count()
}

#[test]
fn n14_at_a_process_limit_a_command_push_never_panics_and_the_stop_exits_cleanly() {
    // Issue 19 N14: at a thread or process limit the command path panicked in thread::spawn
    // after its child was spawned (a zombie each time), and SIGTERM then panicked the main
    // thread (exit 101). Root is exempt from RLIMIT_NPROC, so the server runs as nobody, with
    // room for a few tasks more than it starts with: each step below allows one more.
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let have = |tool: &str| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok()
    };
    if !is_root || !have("setpriv") || !have("prlimit") {
        eprintln!("SKIPPED n14_...: needs root, setpriv and prlimit");
        return;
    }
    let script = "cat >/dev/null\nprintf '{\"MsgType\":\"text\",\"Content\":\"ok\"}'\n";
    let rules = command_rules(script);
    let args = [
        "--token",
        "cmdtok14",
        "--threads",
        "1",
        "--rules",
        rules.to_str().unwrap(),
    ];
    let started_with = Wxmp::start(&args).threads();
    let mut outcomes = Vec::new();
    for room in 1..=6 {
        let limit = nobody_tasks() + started_with + room;
        let mut server = Wxmp::builder()
            .wrap(&[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "prlimit",
                &format!("--nproc={limit}:{limit}"),
                "--",
            ])
            .args(&args)
            .start();
        let (status, body) = http(
            &server.addr,
            "POST",
            &signed::target("cmdtok14"),
            text_xml("o", "hi", room).as_bytes(),
        );
        let said = if status == 200 {
            text_of(&body)
        } else {
            format!("HTTP {status}")
        };
        assert!(
            ["ok", "稍等", "HTTP 503"].contains(&said.as_str()),
            "room {room}: {said}"
        );
        outcomes.push(said);
        let pid = server.pid;
        wait::until_ok(
            secs(5),
            format_args!("room {room}: no zombies"),
            || match zombies_of(pid) {
                0 => Ok(()),
                n => Err(format!("{n} zombies")),
            },
        );
        server.signal("TERM");
        let mut code = None;
        wait::until(
            secs(10),
            format_args!("room {room}: the exit after SIGTERM"),
            || {
                code = server.exit_code();
                code.is_some()
            },
        );
        let stderr = server.log();
        assert!(!stderr.contains("panicked"), "room {room}: {stderr}");
        assert_eq!(code, Some(0), "room {room}: {stderr}");
    }
    eprintln!("n14 outcomes by room: {outcomes:?}");
    assert!(
        outcomes.iter().any(|o| o == "ok"),
        "no step had room for the command: {outcomes:?}"
    );
}
