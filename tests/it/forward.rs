//! Forwarding to the user's own code, against the real binary: a local endpoint that is fast,
//! slow, broken or gone, and commands that answer, fail, or never exit. WeChat's retries are
//! played by `wxmp send --retries 3` (each attempt abandoned after 5 s, then sent again).
//!
//! Timing is never asserted: tests wait for outcomes with generous bounds.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::api::{Fake, APPID, SECRET};
use crate::helpers::{text_of, text_xml};
use crate::kit::binary::Wxmp;
use crate::kit::http::request;
use crate::kit::signed;
use crate::kit::tempdir;
use crate::kit::wait::{self, secs};

const TOKEN: &str = "fwdtoken";

/// One request the endpoint received: its headers and body.
type Seen = (Vec<(String, String)>, Vec<u8>);

/// What the endpoint saw and how it answers.
pub struct Endpoint {
    pub url: String,
    pub calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A local HTTP endpoint: after `delay`, answers `status` with `answer`.
pub fn endpoint(delay: Duration, status: u16, answer: &'static str) -> Endpoint {
    endpoint_paced(move |_| delay, status, answer)
}

/// The same, answering its `n`th call (from 0) after `pace(n)`.
pub fn endpoint_paced(
    pace: impl Fn(usize) -> Duration + Send + Sync + 'static,
    status: u16,
    answer: &'static str,
) -> Endpoint {
    let pace = Arc::new(pace);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    {
        let (calls, seen) = (Arc::clone(&calls), Arc::clone(&seen));
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (calls, seen, pace) =
                    (Arc::clone(&calls), Arc::clone(&seen), Arc::clone(&pace));
                thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let mut headers = Vec::new();
                    let mut length = 0;
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap();
                            }
                            headers.push((k.trim().to_owned(), v.trim().to_owned()));
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    seen.lock().unwrap().push((headers, body));
                    // Pacing the answer is the endpoint's behaviour under test.
                    thread::sleep(pace(n));
                    let mut s = stream;
                    let _ = write!(
                        s,
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                });
            }
        });
    }
    Endpoint {
        url: format!("http://{addr}/wechat"),
        calls,
        seen,
    }
}

impl Endpoint {
    /// Calls received so far.
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// A rules file in a fresh folder whose default forwards to `url`.
pub(crate) fn forward_rules(url: &str) -> PathBuf {
    rules(&format!(
        "[[rules]]\ntext = \"static\"\nreply.text = \"from a rule\"\n\n[default]\nreply.forward = {{ url = \"{url}\", fallback = {{ text = \"稍等\" }} }}\n"
    ))
}

fn rules(text: &str) -> PathBuf {
    let dir = tempdir();
    let file = dir.join("rules.toml");
    std::fs::write(&file, text).unwrap();
    file
}

fn serve(rules: &Path, extra: &[&str]) -> Wxmp {
    let mut args = vec!["--token", TOKEN, "--rules", rules.to_str().unwrap()];
    args.extend_from_slice(extra);
    Wxmp::start(&args)
}

fn send(server: &Wxmp, args: &[&str]) -> Output {
    let url = format!("http://{}/weixin", server.addr);
    let mut c = Command::new(env!("CARGO_BIN_EXE_wxmp"));
    c.args(["send", "--url", &url, "--token", TOKEN]).args(args);
    for var in ["WXMP_TOKEN", "WXMP_AES_KEY", "WXMP_APPID"] {
        c.env_remove(var);
    }
    c.output().unwrap()
}

/// The value of one sample line in the server's /metrics, e.g.
/// `wxmp_forward_calls_total{outcome="on_time"}`.
/// Waits until the metrics show `sample` at `value`; fails with the last value seen.
#[track_caller]
fn metric_reaches(server: &Wxmp, sample: &str, value: f64) {
    wait::until_ok(
        secs(10),
        format_args!("{sample} at {value}"),
        || match metric(server, sample) {
            Some(v) if v == value => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

fn metric(server: &Wxmp, sample: &str) -> Option<f64> {
    let (status, body) = request(&server.metrics_addr(), "GET", "/metrics", b"");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn answered(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(o)
}

#[test]
fn a_fast_endpoint_answers_with_the_push_as_cloud_hosting_json() {
    let ep = endpoint(
        Duration::ZERO,
        200,
        r#"{"MsgType":"text","Content":"来自你的代码","ToUserName":"ignored"}"#,
    );
    let server = serve(
        &forward_rules(&ep.url),
        &[
            "--forward-secret",
            "s3cret",
            "--metrics-addr",
            "127.0.0.1:0",
            "--appid",
            "wxcloudhosting01",
        ],
    );
    let out = answered(&send(&server, &["--msg-id", "42", "text", "你好"]));
    assert!(out.starts_with("text: 来自你的代码"), "{out}");
    server.wait_for_log("forward attempt 1 of 3: answer", secs(10));
    metric_reaches(
        &server,
        "wxmp_forward_calls_total{outcome=\"on_time\"}",
        1.0,
    );
    // A static rule still answers by itself.
    let out = answered(&send(&server, &["text", "static"]));
    assert!(out.starts_with("text: from a rule"), "{out}");

    let seen = ep.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (headers, body) = &seen[0];
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["MsgType"], "text");
    assert_eq!(json["Content"], "你好");
    assert_eq!(json["MsgId"], 42);
    assert!(json["CreateTime"].is_u64());
    assert_eq!(json["FromUserName"], "o_wxmp_send");
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    assert!(header("Content-Type")
        .unwrap()
        .starts_with("application/json"));
    // The headers Cloud Hosting puts on a push, which its samples require.
    assert_eq!(header("X-WX-SOURCE").as_deref(), Some("wxmp"));
    assert_eq!(header("X-WX-OPENID").as_deref(), Some("o_wxmp_send"));
    assert_eq!(header("X-WX-APPID").as_deref(), Some("wxcloudhosting01"));
    // The signature is HMAC-SHA256 of the body with --forward-secret.
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(header("X-Wxmp-Signature"), Some(expected));
}

#[test]
fn safe_mode_forwards_the_decrypted_push_and_seals_the_answer() {
    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const APPID: &str = "wx2c2769f8efd9abc2";
    let ep = endpoint(Duration::ZERO, 200, r#"{"MsgType":"text","Content":"ok"}"#);
    let server = serve(
        &forward_rules(&ep.url),
        &["--aes-key", KEY, "--appid", APPID],
    );
    let out = answered(&send(
        &server,
        &["--aes-key", KEY, "--appid", APPID, "text", "secret words"],
    ));
    assert!(
        out.starts_with("text: ok") && out.contains("encrypted"),
        "{out}"
    );
    let seen = ep.seen.lock().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&seen[0].1).unwrap();
    assert_eq!(json["Content"], "secret words");
}

/// The heart of `stretch`: a 7 s endpoint is answered on WeChat's second attempt, the user's
/// code runs once, and the retry joined the same call. `wxmp send` retries as WeChat does
/// without being told (issue 19: it made one attempt and failed).
#[test]
fn a_slow_endpoint_is_answered_on_wechats_second_attempt() {
    let ep = endpoint(
        Duration::from_secs(7),
        200,
        r#"{"MsgType":"text","Content":"slow but sure"}"#,
    );
    let server = serve(&forward_rules(&ep.url), &["--metrics-addr", "127.0.0.1:0"]);
    let o = send(&server, &["text", "take your time"]);
    let out = answered(&o);
    assert!(out.starts_with("text: slow but sure"), "{out}");
    assert!(out.contains("attempt 2 of 3"), "{out}");
    assert_eq!(ep.calls.load(Ordering::SeqCst), 1, "one call per push");
    // The access log tells the attempts apart: the first held, the retry answered.
    for line in [
        "forward attempt 1 of 3: held",
        "the answer of the attempt in flight (a retry); forward attempt 2 of 3: answer",
    ] {
        server.wait_for_log(line, secs(10));
    }
    metric_reaches(
        &server,
        "wxmp_forward_calls_total{outcome=\"late_stretched\"}",
        1.0,
    );
}

/// Issue 20: after fast answers, a first attempt makes the call on its own thread; an endpoint
/// that then turns slow is still answered on WeChat's second attempt, with one call per push.
#[test]
fn after_fast_answers_a_slow_one_is_still_answered_on_the_second_attempt() {
    let ep = endpoint_paced(
        |n| Duration::from_secs(if n < 3 { 0 } else { 7 }),
        200,
        r#"{"MsgType":"text","Content":"fast, then slow"}"#,
    );
    let server = serve(&forward_rules(&ep.url), &[]);
    for i in 0..3 {
        let out = answered(&send(&server, &["text", &format!("quick {i}")]));
        assert!(out.starts_with("text: fast, then slow"), "{out}");
        assert!(!out.contains("attempt 2"), "{out}");
    }
    let out = answered(&send(&server, &["text", "take your time"]));
    assert!(out.starts_with("text: fast, then slow"), "{out}");
    assert!(out.contains("attempt 2 of 3"), "{out}");
    assert_eq!(ep.calls(), 4, "one call per push");
    server.wait_for_log("forward attempt 1 of 3: held", secs(10));
}

#[test]
fn an_endpoint_slower_than_every_attempt_gets_the_fallback_on_the_last_one() {
    let ep = endpoint(
        Duration::from_secs(30),
        200,
        r#"{"MsgType":"text","Content":"too late"}"#,
    );
    let server = serve(&forward_rules(&ep.url), &[]);
    let out = answered(&send(&server, &["--retries", "3", "text", "hello"]));
    assert!(out.starts_with("text: 稍等"), "{out}");
    assert!(out.contains("attempt 3 of 3"), "{out}");
    assert_eq!(ep.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn broken_answers_get_the_fallback_and_one_log_line_each() {
    let nine = Box::leak(
        format!(
            r#"{{"MsgType":"news","Articles":[{}]}}"#,
            [r#"{"Title":"a"}"#; 9].join(",")
        )
        .into_boxed_str(),
    );
    let cases: Vec<(Endpoint, &str)> = vec![
        (
            endpoint(Duration::ZERO, 500, "oops"),
            "it answered HTTP 500",
        ),
        (
            endpoint(Duration::ZERO, 200, "{not json"),
            "the answer is not JSON",
        ),
        (
            endpoint(Duration::ZERO, 200, r#"{"MsgType":"dance"}"#),
            "MsgType \"dance\" is not a passive reply type",
        ),
        (
            endpoint(Duration::ZERO, 200, nine),
            "news reply has 9 articles",
        ),
    ];
    for (ep, reason) in cases {
        let server = serve(&forward_rules(&ep.url), &[]);
        // `answered` checks WeChat got a 200: never a 5xx, whatever the endpoint did.
        let out = answered(&send(&server, &["text", "hi"]));
        assert!(out.starts_with("text: 稍等"), "{reason}: {out}");
        server.wait_for_log(reason, secs(10));
    }
    // Nobody listening at all.
    let gone = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/wechat", l.local_addr().unwrap())
    };
    let server = serve(&forward_rules(&gone), &[]);
    let out = answered(&send(&server, &["text", "hi"]));
    assert!(out.starts_with("text: 稍等"), "{out}");
    server.wait_for_log("cannot reach it", secs(10));
}

#[test]
fn success_or_an_empty_body_means_no_reply() {
    for body in ["success", ""] {
        let ep = endpoint(Duration::ZERO, 200, body);
        let server = serve(&forward_rules(&ep.url), &[]);
        let out = answered(&send(&server, &["text", "hi"]));
        assert!(out.starts_with("success"), "{body:?}: {out}");
    }
}

#[test]
fn past_its_capacity_a_push_gets_the_fallback_at_once() {
    let ep = endpoint(
        Duration::from_secs(20),
        200,
        r#"{"MsgType":"text","Content":"late"}"#,
    );
    let server = serve(&forward_rules(&ep.url), &["--forward-capacity", "1"]);
    let url = format!("http://{}/weixin", server.addr);
    // The first push takes the one slot (its attempt is abandoned by wxmp send after 5 s).
    let first = {
        let url = url.clone();
        thread::spawn(move || {
            Command::new(env!("CARGO_BIN_EXE_wxmp"))
                .args(["send", "--url", &url, "--token", TOKEN, "--retries", "1"])
                .args(["text", "one"])
                .output()
                .unwrap()
        })
    };
    wait::until(secs(20), "the first push's call to the endpoint", || {
        ep.calls.load(Ordering::SeqCst) > 0
    });
    let out = answered(&send(&server, &["text", "two"]));
    assert!(out.starts_with("text: 稍等"), "{out}");
    server.wait_for_log("at --forward-capacity", secs(10));
    assert_eq!(
        ep.calls.load(Ordering::SeqCst),
        1,
        "the second push made no call"
    );
    let _ = first.join();
}

/// Isolation: while pushes wait on a slow endpoint, static rules, the URL check and /healthz
/// are all served.
#[test]
fn held_pushes_never_take_the_threads_of_other_requests() {
    const HELD: usize = 40;
    let ep = endpoint(
        Duration::from_secs(20),
        200,
        r#"{"MsgType":"text","Content":"late"}"#,
    );
    let server = serve(&forward_rules(&ep.url), &["--threads", "2"]);
    let holders: Vec<_> = (0..HELD)
        .map(|i| {
            let (addr, target) = (server.addr.clone(), signed::target(TOKEN));
            thread::spawn(move || {
                request(
                    &addr,
                    "POST",
                    &target,
                    text_xml("o", "hold", 1000 + i as u64).as_bytes(),
                )
            })
        })
        .collect();
    wait::until_ok(
        secs(30),
        format_args!("{HELD} pushes at the endpoint"),
        || match ep.calls.load(Ordering::SeqCst) {
            n if n >= HELD => Ok(()),
            n => Err(format!("{n} pushes")),
        },
    );
    // All of them are held now; everything else is still served (within http's 10 s timeout).
    for i in 0..20u64 {
        let (status, body) = server.request(
            "POST",
            &signed::target(TOKEN),
            text_xml("o", "static", 5000 + i).as_bytes(),
        );
        assert_eq!(status, 200);
        assert_eq!(text_of(&body), "from a rule");
    }
    assert_eq!(server.request("GET", "/healthz", b""), (200, "ok".into()));
    let (status, body) =
        server.request("GET", &format!("{}&echostr=e1", signed::target(TOKEN)), b"");
    assert_eq!((status, body.as_str()), (200, "e1"));
    // The held attempts themselves are let go once WeChat would have dropped them.
    for h in holders {
        assert_eq!(h.join().unwrap().0, 200);
    }
}

/// `kf`: the first attempt answers the fallback in time; the answer, 20 s later, reaches the
/// user as a customer-service message (here: in `wxmp fake-api`'s output).
#[test]
fn under_kf_a_very_slow_answer_arrives_as_a_customer_service_message() {
    let fake = Fake::start(&[]);
    let ep = endpoint(
        Duration::from_secs(20),
        200,
        r#"{"MsgType":"text","Content":"late but here"}"#,
    );
    let cache = tempdir().join("token.json");
    // With an AppSecret, `kf` is the default.
    let server = serve(
        &forward_rules(&ep.url),
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--appid",
            APPID,
            "--secret",
            SECRET,
            "--api-base",
            &fake.base,
            "--token-cache",
            cache.to_str().unwrap(),
        ],
    );
    let out = answered(&send(&server, &["--from", "o_kf_user", "text", "hello"]));
    assert!(out.starts_with("text: 稍等"), "{out}");
    fake.wait_for("kf send → o_kf_user: text \"late but here\"", secs(60));
    assert_eq!(ep.calls.load(Ordering::SeqCst), 1);
    metric_reaches(
        &server,
        "wxmp_forward_calls_total{outcome=\"late_kf\"}",
        1.0,
    );
    // The API call is counted by errcode, and the token's remaining life is exposed.
    assert!(metric(&server, "wxmp_api_calls_total{errcode=\"0\"}").is_some_and(|n| n >= 2.0));
    assert!(metric(&server, "wxmp_access_token_expiry_seconds").is_some_and(|s| s > 60.0));
}

/// Regression: a late music answer without `ThumbMediaId` went out as a customer-service music
/// message without `thumb_media_id`, which WeChat (and the fake) refuse with 47001. It now
/// reaches the user as a text with the title, description and link.
#[test]
fn under_kf_late_music_without_a_thumbnail_arrives_as_a_text_with_its_link() {
    let fake = Fake::start(&[]);
    let ep = endpoint(
        Duration::from_secs(7),
        200,
        r#"{"MsgType":"music","Music":{"Title":"晴天","Description":"周杰伦","MusicUrl":"https://e.com/a.mp3"}}"#,
    );
    let cache = tempdir().join("token.json");
    let server = serve(
        &forward_rules(&ep.url),
        &[
            "--appid",
            APPID,
            "--secret",
            SECRET,
            "--api-base",
            &fake.base,
            "--token-cache",
            cache.to_str().unwrap(),
        ],
    );
    let out = answered(&send(&server, &["--from", "o_music", "text", "a song"]));
    assert!(out.starts_with("text: 稍等"), "{out}");
    // The fake prints what it was sent escaped, each newline as \\n.
    fake.wait_for(
        r#"kf send → o_music: text "晴天\\n周杰伦\\nhttps://e.com/a.mp3""#,
        secs(60),
    );
    let log = server.log();
    assert!(!log.contains("47001"), "{log}");
}

#[test]
fn kf_needs_the_api_settings() {
    let o = Command::new(env!("CARGO_BIN_EXE_wxmp"))
        .args(["--token", TOKEN, "--port", "0", "--late", "kf"])
        .env_remove("WXMP_APPID")
        .env_remove("WXMP_SECRET")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--late kf") && e.contains("--secret"), "{e}");
}

fn command_rules(script: &str, extra: &str) -> PathBuf {
    let dir = tempdir();
    std::fs::write(dir.join("bot.sh"), script).unwrap();
    let file = dir.join("rules.toml");
    std::fs::write(
        &file,
        format!("{extra}[default]\nreply.command = {{ argv = [\"sh\", \"bot.sh\"], fallback = {{ text = \"稍等\" }} }}\n"),
    )
    .unwrap();
    file
}

#[test]
fn a_command_reads_the_push_and_writes_the_answer() {
    // The program runs in the rules file's folder and gets the JSON on stdin.
    let script = "read push\ncase \"$push\" in *'\"Content\":\"ping\"'*) echo '{\"MsgType\":\"text\",\"Content\":\"pong\"}';; *) echo success;; esac\necho 'a note' >&2\n";
    let server = serve(&command_rules(script, ""), &[]);
    let out = answered(&send(&server, &["text", "ping"]));
    assert!(out.starts_with("text: pong"), "{out}");
    assert!(answered(&send(&server, &["text", "other"])).starts_with("success"));
    server.wait_for_log("command sh[", secs(10));
    server.wait_for_log("stderr: a note", secs(10));
}

#[test]
fn a_slow_command_is_answered_on_the_second_attempt_and_garbage_gets_the_fallback() {
    let slow = "cat >/dev/null\nsleep 7\necho '{\"MsgType\":\"text\",\"Content\":\"slow\"}'\n";
    let server = serve(&command_rules(slow, ""), &[]);
    let out = answered(&send(&server, &["--retries", "3", "text", "x"]));
    assert!(
        out.starts_with("text: slow") && out.contains("attempt 2 of 3"),
        "{out}"
    );

    let garbage = "cat >/dev/null\necho 'this is not json'\n";
    let server = serve(&command_rules(garbage, ""), &[]);
    let out = answered(&send(&server, &["text", "x"]));
    assert!(out.starts_with("text: 稍等"), "{out}");
    server.wait_for_log("the answer is not JSON", secs(10));
}

/// Processes whose command line contains `marker`.
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

#[test]
fn a_command_that_never_exits_is_killed_with_its_children_and_reaped() {
    // A sleep no other process runs: its argument is the marker.
    let marker = format!("3600.{}", std::process::id());
    let script = format!("cat >/dev/null\nsleep {marker} &\nexec sleep {marker}\n");
    let fake = Fake::start(&[]);
    let cache = tempdir().join("token.json");
    let server = serve(
        &command_rules(&script, ""),
        &[
            "--late",
            "kf",
            "--kf-wait",
            "5",
            "--appid",
            APPID,
            "--secret",
            SECRET,
            "--api-base",
            &fake.base,
            "--token-cache",
            cache.to_str().unwrap(),
        ],
    );
    // Watched from before the push: the command may be killed soon after the answer comes.
    let most = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (most, stop, marker) = (Arc::clone(&most), Arc::clone(&stop), marker.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                most.fetch_max(processes_with(&marker), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let out = answered(&send(&server, &["text", "x"]));
    assert!(out.starts_with("text: 稍等"), "{out}");
    // Killed at the kf wait (5 s), the program and the child it started, and reaped.
    wait::until_ok(
        secs(30),
        "the command and its child killed",
        || match processes_with(&marker) {
            0 => Ok(()),
            n => Err(format!("{n} still running")),
        },
    );
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let most = most.load(Ordering::SeqCst);
    assert!(
        most >= 2,
        "the command and its child were never both seen running (at most {most})"
    );
    server.wait_for_log("no answer before the push's deadline", secs(10));
    assert_eq!(zombies_of(server.pid), 0);
}

/// Children of `pid` that exited and were never waited for.
fn zombies_of(pid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid ...
            let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let mut f = after.split_whitespace();
            let state = f.next().unwrap_or("");
            let ppid: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            state == "Z" && ppid == pid
        })
        .count()
}

/// Regression (issue 19, N7): a password in a forward URL was logged in clear, in the server's
/// log and in `wxmp check-rules`.
#[test]
fn a_password_in_the_forward_url_is_never_logged_or_printed() {
    let ep = endpoint(Duration::ZERO, 500, "broken");
    let url = ep.url.replace("http://", "http://bot:s3cretpw@");
    let file = forward_rules(&url);
    let server = serve(&file, &[]);
    let out = answered(&send(&server, &["--retries", "1", "text", "hello"]));
    assert!(out.starts_with("text: 稍等"), "{out}");
    let shown = ep.url.replace("http://", "http://bot:***@");
    server.wait_for_log(&format!("forward to {shown}: "), secs(10));
    let check = Command::new(env!("CARGO_BIN_EXE_wxmp"))
        .args(["check-rules", file.to_str().unwrap()])
        .output()
        .unwrap();
    let printed = stdout(&check);
    assert!(
        printed.contains(&format!("forward to {shown}")),
        "{printed}"
    );
    for text in [server.log(), printed] {
        assert!(!text.contains("s3cretpw"), "{text}");
    }
}

/// Regression (issue 19, N8): a fast failure (bad JSON, a redirect, no free process) settles
/// the push with the fallback, but the access log, the JSON log and `wxmp tail` said the code
/// answered.
#[test]
fn a_fast_failure_is_logged_and_shown_as_the_fallback_not_the_codes_answer() {
    let bad = endpoint(Duration::ZERO, 200, "{not json");
    let redirect = endpoint(Duration::ZERO, 302, "");
    for (ep, format) in [(&bad, "text"), (&redirect, "json")] {
        let server = serve(
            &forward_rules(&ep.url),
            &["--metrics-addr", "127.0.0.1:0", "--log-format", format],
        );
        let out = answered(&send(&server, &["text", "hi"]));
        assert!(out.starts_with("text: 稍等"), "{out}");
        let said = if format == "text" {
            "default: text, fresh; forward attempt 1 of 3: fallback"
        } else {
            r#""forward_attempt":1,"forward":"fallback""#
        };
        server.wait_for_log(said, secs(10));
        assert!(
            !server.log().contains("forward attempt 1 of 3: answer")
                && !server.log().contains(r#""forward":"answer""#),
            "{}",
            server.log()
        );
        let (status, page) = request(&server.metrics_addr(), "GET", "/tail", b"");
        assert_eq!(status, 200);
        assert!(
            page.contains("default: the fallback, text \"稍等\""),
            "{page}"
        );
        assert!(!page.contains("the answer of your code"), "{page}");
    }
}
