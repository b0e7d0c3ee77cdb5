//! Several wxmp instances on one real Redis (`--store redis://...`): WeChat's attempts at one
//! push land on different instances and behave as on one; Redis failing degrades, never
//! breaks. Each test starts its own `redis-server` on a free port, persistence off, and stops it
//! by PID. A missing `redis-server` fails with the command that installs it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::forward::{endpoint, forward_rules};
use crate::helpers::text_xml;
use crate::kit::binary::{command, Wxmp};
use crate::kit::http::request as http;
use crate::kit::signed::{query as fresh_query, target as signed};
use crate::kit::wait::{self, secs};
use wxmp::protocol::crypto::AesKey;
use wxmp::protocol::envelope::SafeMode;
use wxmp::protocol::verify::{self, Token};

const TOKEN: &str = "redistok1";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APPID: &str = "wx0123456789abcdef";

/// A `redis-server` of this test's own, stopped (by PID) on drop.
pub(crate) struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    pub(crate) fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut r = Redis { child: None, port };
        r.restart();
        r
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers.
    pub(crate) fn restart(&mut self) {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): these tests need a real Redis; install it with `apt-get install -y redis-server`"
                )
            });
        self.child = Some(child);
        wait::until(
            secs(10),
            format_args!("redis-server on port {port} to answer PING"),
            || self.connection().is_some(),
        );
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn connection(&self) -> Option<redis::Connection> {
        let mut c = redis::Client::open(self.url())
            .ok()?
            .get_connection()
            .ok()?;
        redis::cmd("PING").query::<()>(&mut c).ok()?;
        Some(c)
    }

    /// Every key with its TTL (ms) and value.
    pub(crate) fn dump(&self) -> Vec<(String, i64, Vec<u8>)> {
        let mut c = self.connection().expect("redis answers");
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
        keys.into_iter()
            .map(|k| {
                let ttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut c).unwrap();
                let v: Vec<u8> = redis::cmd("GET").arg(&k).query(&mut c).unwrap_or_default();
                (k, ttl, v)
            })
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An instance on `redis` with `rules`, its metrics listener on.
fn instance(redis: &Redis, rules: &std::path::Path, extra: &[&str]) -> Wxmp {
    let url = redis.url();
    let mut args = vec![
        "--token",
        TOKEN,
        "--rules",
        rules.to_str().unwrap(),
        "--store",
        &url,
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Wxmp::start(&args)
}

fn post(server: &Wxmp, target: &str, body: &[u8]) -> (u16, String) {
    server.request("POST", target, body)
}

/// One push in safe mode, sealed once: the target and body WeChat would send on every attempt.
fn sealed_push(msg_id: u64) -> (String, Vec<u8>) {
    let token = Token::new(TOKEN).unwrap();
    let safe = SafeMode {
        key: AesKey::from_encoding_aes_key(AES_KEY).unwrap(),
        app_id: APPID.into(),
    };
    let query = fresh_query(TOKEN);
    let field = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name))
            .unwrap()
            .to_owned()
    };
    let (ts, nonce) = (field("timestamp="), field("nonce="));
    let sealed = safe.seal(
        &token,
        &text_xml("o_safe", "hello", msg_id),
        &ts,
        &nonce,
        b"0123456789abcdef",
    );
    let sig = verify::signature(&token, &ts, &nonce);
    (
        format!(
            "/weixin?signature={sig}&timestamp={ts}&nonce={nonce}&openid=o_safe&encrypt_type=aes&msg_signature={}",
            sealed.msg_signature
        ),
        sealed.push_xml("gh_test").into_bytes(),
    )
}

fn metric(server: &Wxmp, name: &str) -> f64 {
    let (status, body) = http(&server.metrics_addr(), "GET", "/metrics", b"");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[test]
fn three_instances_run_one_call_per_push_and_answer_every_attempt_with_the_same_bytes() {
    let redis = Redis::start();
    let up = endpoint(
        Duration::ZERO,
        200,
        r#"{"MsgType":"text","Content":"from your code"}"#,
    );
    let rules = forward_rules(&up.url);
    let safe = ["--aes-key", AES_KEY, "--appid", APPID];
    let [a, b, c] = [0, 1, 2].map(|_| instance(&redis, &rules, &safe));

    // Plain: attempts 1, 2 and 3 of one push on A, B and C.
    let target = signed(TOKEN);
    let body = text_xml("o_plain", "hello", 7001);
    let answers: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|s| post(s, &target, body.as_bytes()))
        .collect();
    assert!(answers[0].1.contains("from your code"), "{answers:?}");
    assert!(answers.iter().all(|x| *x == answers[0]), "{answers:?}");
    assert_eq!(up.calls(), 1, "one upstream call across the instances");

    // Safe: the sealed answer is stored, so every instance replays the same bytes.
    let (target, body) = sealed_push(7002);
    let answers: Vec<_> = [&c, &a, &b]
        .iter()
        .map(|s| post(s, &target, &body))
        .collect();
    assert_eq!(answers[0].0, 200, "{answers:?}");
    assert!(answers[0].1.contains("<Encrypt>"), "{answers:?}");
    assert!(answers.iter().all(|x| *x == answers[0]), "{answers:?}");
    assert_eq!(up.calls(), 2, "one more upstream call for the second push");

    // A signed query seen by one instance is refused on another body by another.
    let target = signed(TOKEN);
    assert_eq!(
        post(&a, &target, text_xml("o", "x", 7003).as_bytes()).0,
        200
    );
    assert_eq!(
        post(&b, &target, text_xml("o", "y", 7004).as_bytes()).0,
        403
    );

    // Every key expires, and nothing secret but what the store is for is in Redis.
    let dump = redis.dump();
    assert!(!dump.is_empty());
    for (key, ttl, value) in &dump {
        assert!(key.starts_with("wxmp:"), "{key}");
        assert!(*ttl > 0, "{key} has no expiry ({ttl})");
        let text = String::from_utf8_lossy(value);
        for secret in [TOKEN, AES_KEY] {
            assert!(
                !key.contains(secret) && !text.contains(secret),
                "{key}: {text}"
            );
        }
    }
    for s in [&a, &b, &c] {
        assert_eq!(s.request("GET", "/healthz", b""), (200, "ok".into()));
    }
}

#[test]
fn under_stretch_the_instance_holding_the_open_attempt_delivers_the_answer() {
    let redis = Redis::start();
    let up = endpoint(
        Duration::from_secs(7),
        200,
        r#"{"MsgType":"text","Content":"slow but sure"}"#,
    );
    let rules = forward_rules(&up.url);
    let (a, b) = (instance(&redis, &rules, &[]), instance(&redis, &rules, &[]));
    let target = signed(TOKEN);
    let body = text_xml("o_stretch", "hello", 7101);
    let first = {
        let (addr, target, body) = (a.addr.clone(), target.clone(), body.clone());
        // WeChat drops the first attempt at 5 s; what A writes then is never read.
        thread::spawn(move || http(&addr, "POST", &target, body.as_bytes()))
    };
    thread::sleep(Duration::from_secs(5));
    let started = Instant::now();
    let (status, answer) = post(&b, &target, body.as_bytes());
    assert_eq!(status, 200);
    assert!(answer.contains("slow but sure"), "B delivered {answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "B answered after {:?}",
        started.elapsed()
    );
    let _ = first.join();
    assert_eq!(up.calls(), 1);
}

#[test]
fn when_the_calling_instance_dies_the_others_answer_the_fallback_in_time() {
    let redis = Redis::start();
    let up = endpoint(
        Duration::from_secs(60),
        200,
        r#"{"MsgType":"text","Content":"never"}"#,
    );
    let rules = forward_rules(&up.url);
    let [a, b, c] = [0, 1, 2].map(|_| instance(&redis, &rules, &[]));
    let target = signed(TOKEN);
    let body = text_xml("o_dead", "hello", 7201);
    {
        let (addr, target, body) = (a.addr.clone(), target.clone(), body.clone());
        thread::spawn(move || http(&addr, "POST", &target, body.as_bytes()));
    }
    wait::until(secs(10), "A's call to the endpoint", || up.calls() == 1);
    drop(a);
    // WeChat's second and third attempts, on the other instances.
    for s in [&b, &c] {
        let started = Instant::now();
        let (status, answer) = post(s, &target, body.as_bytes());
        assert_eq!(status, 200);
        assert!(answer.contains("稍等"), "the fallback, got {answer:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered after {:?}",
            started.elapsed()
        );
    }
    assert_eq!(up.calls(), 1, "no second call for the push");
}

#[test]
fn redis_stopped_mid_test_degrades_to_memory_and_sharing_resumes_after_a_restart() {
    let mut redis = Redis::start();
    let up = endpoint(
        Duration::ZERO,
        200,
        r#"{"MsgType":"text","Content":"shared"}"#,
    );
    let rules = forward_rules(&up.url);
    let (a, b) = (instance(&redis, &rules, &[]), instance(&redis, &rules, &[]));

    redis.stop();
    for s in [&a, &b] {
        let started = Instant::now();
        let target = signed(TOKEN);
        let (status, _) = post(s, &target, text_xml("o_down", "hi", 7301).as_bytes());
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(metric(s, "wxmp_store_failures_total") >= 1.0);
        assert_eq!(s.request("GET", "/healthz", b""), (200, "degraded".into()));
    }
    a.wait_for_log("pushes are handled with the local memory store", secs(5));
    assert!(!a.log().contains("password"));

    redis.restart();
    for s in [&a, &b] {
        wait::until(
            secs(15),
            "/healthz back to ok after Redis's restart",
            || s.request("GET", "/healthz", b"").1 == "ok",
        );
        s.wait_for_log("answers again; sharing resumes", secs(5));
    }
    let calls = up.calls();
    let target = signed(TOKEN);
    let body = text_xml("o_back", "hi", 7302);
    let one = post(&a, &target, body.as_bytes());
    let two = post(&b, &target, body.as_bytes());
    assert_eq!(one, two);
    assert_eq!(
        up.calls(),
        calls + 1,
        "shared again: one call for both attempts"
    );
    assert_eq!(
        a.log()
            .matches("pushes are handled with the local memory store")
            .count(),
        1,
        "one line per outage:\n{}",
        a.log()
    );
}

#[test]
fn an_unreachable_redis_at_start_is_a_warning_and_a_malformed_url_an_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let url = format!("redis://user:hunter2@127.0.0.1:{port}/0");
    let s = Wxmp::start(&["--token", TOKEN, "--store", &url]);
    s.wait_for_log("cannot reach redis://user:***@127.0.0.1", secs(5));
    assert!(!s.log().contains("hunter2"), "{}", s.log());
    assert_eq!(s.request("GET", "/healthz", b""), (200, "degraded".into()));
    let target = signed(TOKEN);
    assert_eq!(
        post(&s, &target, text_xml("o", "hi", 7401).as_bytes()).0,
        200
    );

    let o = command(&[
        "--token",
        TOKEN,
        "--store",
        "redis://user:hunter2@host:port",
    ])
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--store / WXMP_STORE") && !err.contains("hunter2"),
        "{err}"
    );
}

/// Calls of each Redis command since the last `CONFIG RESETSTAT` (`INFO commandstats`).
fn command_calls(redis: &Redis) -> std::collections::HashMap<String, u64> {
    let mut c = redis.connection().expect("redis answers");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

fn redis_cmd(redis: &Redis, args: &[&str]) {
    let mut c = redis.connection().expect("redis answers");
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<redis::Value>(&mut c).unwrap();
}

/// Regression (issue 23): each push sent its scripts in full (`EVAL`), wrote its plan and
/// PUBLISHed twice even when no other attempt could be waiting.
#[test]
fn a_push_answered_at_once_runs_its_scripts_by_sha_and_publishes_nothing() {
    let redis = Redis::start();
    let url = redis.url();
    let server = Wxmp::start(&["--token", TOKEN, "--store", &url]);
    let push = |msg_id: u64| {
        let (status, body) = post(
            &server,
            &signed(TOKEN),
            text_xml("o_quiet", "hello", msg_id).as_bytes(),
        );
        assert_eq!(status, 200, "{body}");
        body
    };
    push(7500);
    redis_cmd(&redis, &["CONFIG", "RESETSTAT"]);
    for id in 7501..7521 {
        push(id);
    }
    let calls = command_calls(&redis);
    let count = |name: &str| calls.get(name).copied().unwrap_or(0);
    assert_eq!(count("eval"), 0, "{calls:?}");
    assert_eq!(count("publish"), 0, "{calls:?}");
    assert_eq!(count("evalsha"), 20 * PUSH_ROUND_TRIPS, "{calls:?}");

    // Redis forgot the scripts (a restart, SCRIPT FLUSH): they are loaded again, and shared.
    redis_cmd(&redis, &["SCRIPT", "FLUSH"]);
    let target = signed(TOKEN);
    let body = text_xml("o_quiet", "again", 7600);
    let first = post(&server, &target, body.as_bytes());
    assert_eq!(first.0, 200, "{first:?}");
    assert_eq!(post(&server, &target, body.as_bytes()), first);
    assert!(
        redis.dump().iter().any(|(k, _, _)| k.ends_with(":answer")),
        "the answer is in Redis"
    );
    assert_eq!(server.request("GET", "/healthz", b""), (200, "ok".into()));
}

/// Round trips to Redis for a push answered at once: the replay window's seen query with the
/// claim, then the answer.
const PUSH_ROUND_TRIPS: u64 = 2;
