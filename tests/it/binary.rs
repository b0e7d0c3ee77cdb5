//! The real `wxmp` executable: exit codes and messages, HTTP over a real socket, signals and hot
//! reload.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Output;
use std::time::Duration;

use crate::helpers::text_xml;
use crate::kit::binary::{command, Wxmp};
use crate::kit::signed::target as signed;
use crate::kit::tempdir;
use crate::kit::wait::{self, secs};

fn run(args: &[&str]) -> Output {
    command(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn missing_token_exits_2_naming_flag_and_variable() {
    let o = run(&["--port", "0"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("--token") && e.contains("WXMP_TOKEN"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn invalid_values_exit_2_naming_them() {
    for (args, needle) in [
        (vec!["--token", "tok123", "--port", "http"], "--port"),
        (vec!["--token", "tok123", "--path", "weixin"], "--path"),
        (
            vec![
                "--token",
                "tok123",
                "--aes-key",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ],
            "--appid",
        ),
        (
            vec!["--token", "tok123", "--aes-key", "short", "--appid", "wx1"],
            "--aes-key",
        ),
        (vec!["--token", "tok123", "--bogus", "1"], "--bogus"),
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn env_variables_configure_the_server() {
    let o = command(&["--port", "http"])
        .env("WXMP_TOKEN", "tok123")
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("--port"),
        "token from the env was accepted, port was not"
    );
}

#[test]
fn help_and_version_exit_0() {
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("WXMP_TOKEN"));
    let o = run(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("wxmp {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_port_in_use_exits_2_with_advice() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let o = run(&["--host", "127.0.0.1", "--port", &port, "--token", "tok123"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("already in use") && e.contains("--port"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn serves_over_a_real_socket_and_stops_cleanly_on_sigterm() {
    let server = Wxmp::start(&["--token", "sockettoken"]);
    assert_eq!(
        server.request("GET", "/", b""),
        (200, "Hello World!".into())
    );
    assert_eq!(server.request("GET", "/healthz", b""), (200, "ok".into()));
    let (status, body) = server.request(
        "GET",
        &format!("{}&echostr=a+b%3D", signed("sockettoken")),
        b"",
    );
    assert_eq!((status, body.as_str()), (200, "a+b="));
    let (status, body) = server.request(
        "POST",
        &signed("sockettoken"),
        text_xml("o", "天气", 1).as_bytes(),
    );
    assert_eq!(status, 200);
    assert!(body.contains("北京天气挺好的！"), "{body}");
    let (status, body) = server.request(
        "POST",
        &signed("sockettoken"),
        text_xml("o", "你好", 2).as_bytes(),
    );
    assert_eq!(status, 200);
    assert!(
        body.contains("<Content><![CDATA[你好]]></Content>"),
        "{body}"
    );
    assert_eq!(
        server
            .request("POST", "/weixin?signature=x&timestamp=1&nonce=2", b"<xml/>")
            .0,
        403
    );
    assert_eq!(server.request("PUT", "/weixin", b"").0, 405);
    assert_eq!(server.request("GET", "/missing", b"").0, 404);
    assert_eq!(
        server
            .request("POST", &signed("sockettoken"), b"<!DOCTYPE x><xml/>")
            .0,
        400
    );
    let (code, err) = server.terminate();
    assert_eq!(code, Some(0));
    // Rejections are logged, one line each, and the token never is.
    assert!(err.contains("POST /weixin 403 signature mismatch"), "{err}");
    assert!(err.contains("PUT /weixin 405"), "{err}");
    assert!(
        !err.contains("sockettoken"),
        "token leaked into the log: {err}"
    );
}

/// The start-up line for scripts (README, "Configuration"): the human banner, then one JSON
/// line with the bound addresses, each of which serves.
#[test]
fn the_start_up_line_names_the_bound_addresses() {
    let server = Wxmp::start(&["--token", "tok123", "--metrics-addr", "127.0.0.1:0"]);
    let metrics = server.metrics_addr();
    for addr in [&server.addr, &metrics] {
        let port: u16 = addr
            .strip_prefix("127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("not a loopback address: {addr}"));
        assert_ne!(port, 0, "{addr}");
        assert!(server.banner.contains(addr.as_str()), "{}", server.banner);
    }
    assert!(server.banner.starts_with("wxmp "), "{}", server.banner);
    assert_eq!(server.request("GET", "/healthz", b""), (200, "ok".into()));
    assert_eq!(
        crate::kit::http::request(&metrics, "GET", "/metrics", b"").0,
        200
    );
}

#[test]
fn a_huge_declared_body_does_not_crash_the_server() {
    // Regression: tiny_http 0.12.0 aborted the process dropping an unread body of this size.
    let server = Wxmp::start(&["--token", "tok123"]);
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\nxx",
        signed("tok123")
    );
    s.write_all(head.as_bytes()).unwrap();
    // The answer is 413 with `Connection: close`, and the server does close: the rest of that
    // body is not the next request. (Regression: tiny_http dropped the Connection header.)
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    drop(s);
    assert_eq!(server.request("GET", "/healthz", b""), (200, "ok".into()));
}

#[test]
fn an_endless_header_line_is_cut_off() {
    // Regression: tiny_http read a header line without bound.
    let server = Wxmp::start(&["--token", "tok123"]);
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nX-Long: ");
    let chunk = vec![b'a'; 64 * 1024];
    let mut refused = false;
    for _ in 0..64 {
        if s.write_all(&chunk).is_err() {
            refused = true;
            break;
        }
    }
    // Refused: the server stopped reading (our writes fail), or it answers with an error and
    // closes (or resets) the connection. A read that times out means it is still swallowing the
    // line, which is the bug.
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => {
            let answer = String::from_utf8_lossy(&rest);
            assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
                "the endless line was accepted: {answer:.200}"
            );
        }
        Err(e) => assert!(
            refused
                || matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ),
            "the connection was neither refused nor closed: {e}"
        ),
    }
    assert_eq!(server.request("GET", "/healthz", b""), (200, "ok".into()));
}

#[test]
fn check_rules_lists_a_good_file_and_locates_errors() {
    let example = format!("{}/examples/rules.toml", env!("CARGO_MANIFEST_DIR"));
    let o = run(&["check-rules", &example]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("line 2: text is \"天气\""), "{out}");
    assert!(out.contains("6 rules OK"), "{out}");

    let dir = tempdir();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[rules]]\ntext = \"a\"\nreply.text = \"b\"\n\n[[rules]]\nregex = '(oops'\nreply.text = \"x\"\n").unwrap();
    let o = run(&["check-rules", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    // The line of the offending key (the regex), not of its [[rules]] header.
    assert!(e.contains("bad.toml:6:") && e.contains("bad regex"), "{e}");
    // The same file refuses to start the server, with the same message.
    let o = run(&[
        "--token",
        "tok123",
        "--port",
        "0",
        "--rules",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad.toml:6:"), "{}", stderr(&o));
}

fn reply_to(server: &Wxmp, content: &str, id: u64) -> String {
    let (status, body) = server.request(
        "POST",
        &signed("tok123"),
        text_xml("o", content, id).as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn rules_hot_reload_and_a_broken_edit_keeps_the_old_rules() {
    let dir = tempdir();
    let file = dir.join("rules.toml");
    std::fs::write(&file, "[[rules]]\ntext = \"ping\"\nreply.text = \"pong\"\n").unwrap();
    let server = Wxmp::start(&["--token", "tok123", "--rules", file.to_str().unwrap()]);
    assert!(reply_to(&server, "ping", 1).contains("pong"));

    std::fs::write(
        &file,
        "[[rules]]\ntext = \"ping\"\nreply.text = \"pong v2, a longer reply\"\n",
    )
    .unwrap();
    let mut id = 10;
    wait::until(secs(10), "the edited rules in a reply", || {
        id += 1;
        reply_to(&server, "ping", id).contains("pong v2")
    });

    std::fs::write(&file, "[[rules]]\ntext = \"ping\"\nreply.txt = \"typo\"\n").unwrap();
    server.wait_for_log("rules reload failed", secs(10));
    assert!(
        reply_to(&server, "ping", 100).contains("pong v2"),
        "a broken edit replaced the rules"
    );

    let (code, err) = server.terminate();
    assert_eq!(code, Some(0));
    assert!(
        err.contains("rules reloaded (file changed): 1 rules"),
        "{err}"
    );
    assert!(
        err.contains("rules reload failed") && err.contains("unknown reply kind `txt`"),
        "{err}"
    );
}

/// Issue 10: settings that cannot be meant, or a signal with nothing to do, are said in the log.
#[test]
fn an_appid_alone_and_a_sighup_without_rules_are_logged() {
    let server = Wxmp::start(&["--token", "tok123", "--appid", "wx1"]);
    server.wait_for_log("--appid / WXMP_APPID is set without --aes-key", secs(10));
    server.signal("HUP");
    server.wait_for_log("SIGHUP: no rules file to reload", secs(10));
    assert_eq!(server.request("GET", "/healthz", b""), (200, "ok".into()));
}

#[test]
fn check_rules_warns_about_names_wechat_never_sends() {
    let dir = tempdir();
    let file = dir.join("typo.toml");
    std::fs::write(
        &file,
        "[[rules]]\nmsg_type = \"imgae\"\nreply.text = \"x\"\n",
    )
    .unwrap();
    let o = run(&["check-rules", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "warnings keep exit 0");
    let e = stderr(&o);
    assert!(
        e.contains("typo.toml:2: rule 1: msg_type \"imgae\"")
            && e.contains("did you mean \"image\""),
        "{e}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 rules OK (1 warning)"));
}

#[test]
fn sighup_reloads_the_rules() {
    let dir = tempdir();
    let file = dir.join("rules.toml");
    std::fs::write(&file, "[[rules]]\ntext = \"ping\"\nreply.text = \"one\"\n").unwrap();
    let server = Wxmp::start(&["--token", "tok123", "--rules", file.to_str().unwrap()]);
    server.signal("HUP");
    server.wait_for_log("rules reloaded (SIGHUP)", secs(10));
    let (code, _) = server.terminate();
    assert_eq!(code, Some(0));
}
