//! The command transport and the secrets against the real binary (issue 19 §2: N1, N5, N6).
//! The transport's own cases (N2, N3) are unit tests in `src/server/forward/command.rs`.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::binary::{eventually, http, tempdir, wxmp, Server};
use crate::helpers::{fresh_query, text_of, text_xml};

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

fn push(server: &Server, token: &str, content: &str, id: u64) -> (u16, String) {
    let target = format!("/weixin?{}", fresh_query(token));
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
    let server = Server::start(&["--token", "cmdtok1", "--rules", rules.to_str().unwrap()]);
    let started = Instant::now();
    let (status, body) = push(&server, "cmdtok1", "hi", 1);
    assert_eq!(status, 200, "{body}");
    assert_eq!(text_of(&body), "早", "the answer, not the fallback");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered after {:?}",
        started.elapsed()
    );
    assert!(
        eventually(5, || processes_with(&marker) == 0),
        "the background child still runs 5 s after the answer"
    );
}

#[test]
fn n6_sigterm_stops_running_commands_with_their_process_groups() {
    // Issue 19 N6: SIGTERM left running commands and their children alive under PID 1.
    let marker = format!("3602.{}", std::process::id());
    let script = format!("cat >/dev/null\nsleep {marker} &\nexec sleep {marker}\n");
    let rules = command_rules(&script);
    let server = Server::start(&["--token", "cmdtok6", "--rules", rules.to_str().unwrap()]);
    let holders: Vec<_> = (0..3)
        .map(|i| {
            let (addr, target) = (
                server.addr.clone(),
                format!("/weixin?{}", fresh_query("cmdtok6")),
            );
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
    assert!(
        eventually(10, || processes_with(&marker) == 6),
        "the three commands and their children did not start within 10 s ({} running)",
        processes_with(&marker)
    );
    let stopping = Instant::now();
    let (code, log) = server.terminate();
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "the stop took {:?}",
        stopping.elapsed()
    );
    assert_eq!(code, Some(0), "{log}");
    assert!(
        eventually(3, || processes_with(&marker) == 0),
        "{} processes of the commands survived the stop",
        processes_with(&marker)
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
    let server = Server::start_env(
        &["--rules", rules.to_str().unwrap()],
        &[("WXMP_TOKEN", "cmdtok5secret")],
    );
    let (status, body) = push(&server, "cmdtok5secret", "hi", 1);
    assert_eq!(status, 200, "{body}");
    assert_eq!(text_of(&body), "clean unset");
    let environ = std::fs::read(format!("/proc/{}/environ", server.pid())).unwrap();
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
    let server = Server::start_env(&[], &[("WXMP_TOKEN_FILE", file.to_str().unwrap())]);
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
