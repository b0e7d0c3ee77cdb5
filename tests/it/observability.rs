//! Issue 12, seeing what the server does: the access log (text and JSON, privacy, `--quiet`),
//! the Prometheus metrics on their own listener, and `wxmp tail`.
//!
//! The handler tests capture the log in process; the binary tests run the real server and
//! count what it says against what was sent.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use wxmp::log::{Capture, Format, Log};
use wxmp::protocol::crypto::AesKey;
use wxmp::protocol::envelope::SafeMode;
use wxmp::protocol::message::{Event, Kind, Message};
use wxmp::protocol::verify::Token;
use wxmp::rules::RuleSet;
use wxmp::server::access::{user_label, AccessOptions, Shown};
use wxmp::server::account::Account;
use wxmp::server::pipeline::Pipeline;
use wxmp::server::recent::{Ask, Recent};
use wxmp::server::routes::Service;
use wxmp::server::store::Limits;

use crate::helpers::{text_xml, Harness, TestEnv};
use crate::kit::binary::{command as wxmp, Wxmp};
use crate::kit::http::{exchange, request as http, statuses};
use crate::kit::signed::target as signed;
use crate::kit::tempdir;
use crate::kit::wait::{self, secs};

const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APPID: &str = "wx2c2769f8efd9abc2";
const OPENID: &str = "oSecretOpenId0123456789abcdef";

/// A harness whose log is in `format`, with `access` options and the live view's buffer.
fn observed(
    format: Format,
    access: AccessOptions,
    safe: Option<SafeMode>,
) -> (Harness, Arc<Recent>) {
    let env = TestEnv::default();
    let token = Token::new("secrettoken1").unwrap();
    let account = Account::new(token.clone())
        .with_safe(safe)
        .with_rules(RuleSet::builtin());
    let pipeline =
        Pipeline::in_memory(account, Limits::default(), Arc::new(env.clone())).with_samples(true);
    let log = Arc::new(Capture::default());
    let recent = Arc::new(Recent::new(1));
    let service = Service::new(Arc::new(pipeline), Log::to(log.clone()).with_format(format))
        .with_access(access)
        .with_recent(Some(Arc::clone(&recent)));
    (
        Harness {
            service,
            env,
            token,
            log,
        },
        recent,
    )
}

fn aes() -> SafeMode {
    SafeMode {
        key: AesKey::from_encoding_aes_key(KEY).unwrap(),
        app_id: APPID.into(),
    }
}

fn event_xml(from: &str, time: u64, event: Event) -> String {
    Message::new("gh_test", from, time, Kind::Event(event)).to_xml()
}

fn click(from: &str, time: u64, key: &str) -> String {
    event_xml(
        from,
        time,
        Event::Click {
            event_key: Some(key.into()),
        },
    )
}

/// The live view's lines so far.
fn tail_lines(recent: &Recent) -> Vec<String> {
    recent
        .page(Ask {
            after: Some(0),
            epoch: Some(1),
            ..Ask::default()
        })
        .lines
        .into_iter()
        .map(|(_, l)| l.to_string())
        .collect()
}

#[test]
fn every_request_leaves_one_line_with_the_push_and_how_it_was_answered() {
    let (h, _) = observed(Format::Text, AccessOptions::default(), None);
    assert_eq!(h.verify("hello").status, 200);
    assert_eq!(h.post(&text_xml(OPENID, "天气", 1)).status, 200);
    assert_eq!(h.post(&text_xml(OPENID, "天气", 1)).status, 200);
    assert_eq!(h.post(&click(OPENID, 5, "V1001_TODAY")).status, 200);
    assert_eq!(h.call("GET", "/healthz", b"").status, 200);
    assert_eq!(h.call("GET", "/nothing", b"").status, 404);
    let lines = h.log.lines();
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let user = user_label(OPENID, Shown::Hashed);
    for (line, want) in lines.iter().zip([
        " INFO GET /weixin 200 URL check passed, echostr sent back ".to_owned(),
        format!(" INFO POST /weixin 200 plain text from {user} → rule 1 (line 2): text, fresh "),
        format!(" INFO POST /weixin 200 plain text from {user} → the cached answer (a retry) "),
        format!(" INFO POST /weixin 200 plain event CLICK key \"V1001_TODAY\" from {user} → default: success, fresh "),
        " INFO GET /healthz 200 ".to_owned(),
        " WARN GET /nothing 404 no such path ".to_owned(),
    ]) {
        assert!(line.contains(&want), "{line:?} lacks {want:?}");
        assert!(line.ends_with("ms"), "{line}");
    }
}

#[test]
fn json_lines_are_one_object_each_with_the_same_record() {
    let (h, _) = observed(Format::Json, AccessOptions::default(), Some(aes()));
    let key = aes().key;
    let xml = event_xml(
        OPENID,
        7,
        Event::Subscribe {
            event_key: Some("qrscene_42".into()),
            ticket: None,
        },
    );
    assert_eq!(h.post_encrypted(&key, APPID, &xml, false).status, 200);
    assert_eq!(
        h.call("POST", "/weixin?signature=x&timestamp=1&nonce=2", b"<xml/>")
            .status,
        403
    );
    let lines = h.log.lines();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let push: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    for (field, want) in [
        ("level", serde_json::json!("info")),
        ("kind", "access".into()),
        ("method", "POST".into()),
        ("path", "/weixin".into()),
        ("status", 200.into()),
        ("mode", "safe".into()),
        ("msg_type", "event".into()),
        ("event", "subscribe".into()),
        ("event_key", "qrscene_42".into()),
        ("user", user_label(OPENID, Shown::Hashed).into()),
        ("decided", "default".into()),
        ("reply", "success".into()),
        ("answered", "fresh".into()),
    ] {
        assert_eq!(push[field], want, "{field} in {push}");
    }
    assert!(push["duration_ms"].as_f64().is_some(), "{push}");
    let refused: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(
        (
            refused["level"].as_str(),
            refused["status"].as_u64(),
            refused["reason"].as_str()
        ),
        (Some("warn"), Some(403), Some("signature mismatch"))
    );
}

/// The privacy rules: never the token, the key or message content, in either format;
/// the OpenID only hashed. The same content does reach the live view.
#[test]
fn content_and_secrets_never_reach_the_log_in_either_format() {
    for format in [Format::Text, Format::Json] {
        let (h, recent) = observed(format, AccessOptions::default(), Some(aes()));
        let key = aes().key;
        let said = "秘密内容-content-marker";
        // Echoed back, so the reply carries the content too; 天气 gets the built-in rule's text.
        for (xml, compat) in [
            (text_xml(OPENID, said, 1), false),
            (text_xml(OPENID, "天气", 2), true),
        ] {
            assert_eq!(h.post_encrypted(&key, APPID, &xml, compat).status, 200);
        }
        assert_eq!(h.post(&text_xml(OPENID, said, 3)).status, 200);
        let log = h.log.lines().join("\n");
        assert_eq!(h.log.lines().len(), 3, "{log}");
        for secret in [said, "北京天气挺好的！", "secrettoken1", KEY, OPENID] {
            assert!(
                !log.contains(secret),
                "{format:?} log shows {secret:?}:\n{log}"
            );
        }
        assert!(log.contains(&user_label(OPENID, Shown::Hashed)), "{log}");
        let view = tail_lines(&recent).join("\n");
        assert!(
            view.contains(&format!("\"{said}\" → default: text \"{said}\"")),
            "{view}"
        );
        assert!(view.contains("text \"北京天气挺好的！\""), "{view}");
        assert!(!view.contains(OPENID), "{view}");
    }
}

#[test]
fn the_whole_openid_is_shown_only_when_asked() {
    let full = AccessOptions {
        full_openid: true,
        ..AccessOptions::default()
    };
    let (h, recent) = observed(Format::Text, full, None);
    assert_eq!(h.post(&text_xml(OPENID, "hi", 1)).status, 200);
    assert!(
        h.log.lines()[0].contains(&format!(" from {OPENID} → ")),
        "{:?}",
        h.log.lines()
    );
    assert!(tail_lines(&recent)[0].contains(OPENID));
}

#[test]
fn quiet_logs_only_the_refusals_as_before() {
    let quiet = AccessOptions {
        quiet: true,
        ..AccessOptions::default()
    };
    let (h, recent) = observed(Format::Text, quiet, None);
    assert_eq!(h.post(&text_xml(OPENID, "hi", 1)).status, 200);
    assert_eq!(h.verify("e").status, 200);
    assert_eq!(
        h.call("POST", "/weixin?signature=x&timestamp=1&nonce=2", b"<xml/>")
            .status,
        403
    );
    let lines = h.log.lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains(" WARN POST /weixin 403 signature mismatch "),
        "{lines:?}"
    );
    // Quiet is about the log: the live view and the metrics still see everything.
    assert_eq!(tail_lines(&recent).len(), 3);
    let metrics = h.service.metrics.render();
    assert!(
        metrics.contains("wxmp_http_requests_total{class=\"2xx\",mode=\"plain\"} 1\n"),
        "{metrics}"
    );
}

/// Samples are `name{labels}` → value, as the exposition writes them.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")),
            };
            (name.to_owned(), value)
        })
        .collect()
}

/// The pushes the metrics tests send, and what they must count.
fn send_known_pushes(server: &Wxmp, token: &str) {
    let post = |xml: &str| server.request("POST", &signed(token), xml.as_bytes()).0;
    assert_eq!(
        server
            .request("GET", &format!("{}&echostr=e", signed(token)), b"")
            .0,
        200
    );
    assert_eq!(post(&text_xml("o_a", "天气", 1)), 200);
    assert_eq!(post(&text_xml("o_a", "天气", 1)), 200); // WeChat's retry: cached
    assert_eq!(post(&text_xml("o_b", "你好", 2)), 200);
    assert_eq!(post(&click("o_a", 10, "K")), 200);
    let unknown = event_xml(
        "o_a",
        11,
        Event::Other {
            event: "brand_new_event".into(),
            event_key: None,
        },
    );
    assert_eq!(post(&unknown), 200);
    let refused = server.request(
        "POST",
        &signed("othertoken"),
        text_xml("o_a", "x", 3).as_bytes(),
    );
    assert_eq!(refused.0, 403);
    assert_eq!(server.request("GET", "/healthz", b"").0, 200);
    assert_eq!(server.request("GET", "/nothing", b"").0, 404);
    // The public port never serves the metrics.
    assert_eq!(server.request("GET", "/metrics", b"").0, 404);
}

/// What `send_known_pushes` must have counted, exactly.
const EXPECTED: &[(&str, f64)] = &[
    ("wxmp_http_requests_total{class=\"2xx\",mode=\"none\"}", 2.0),
    (
        "wxmp_http_requests_total{class=\"2xx\",mode=\"plain\"}",
        5.0,
    ),
    (
        "wxmp_http_requests_total{class=\"4xx\",mode=\"plain\"}",
        1.0,
    ),
    ("wxmp_http_requests_total{class=\"4xx\",mode=\"none\"}", 2.0),
    ("wxmp_pushes_total{msg_type=\"text\",event=\"\"}", 3.0),
    ("wxmp_pushes_total{msg_type=\"event\",event=\"CLICK\"}", 1.0),
    ("wxmp_pushes_total{msg_type=\"event\",event=\"other\"}", 1.0),
    ("wxmp_answers_total{answered=\"fresh\"}", 4.0),
    ("wxmp_answers_total{answered=\"cached\"}", 1.0),
    ("wxmp_answers_total{answered=\"joined\"}", 0.0),
    ("wxmp_push_duration_seconds_count", 5.0),
    ("wxmp_push_duration_seconds_bucket{le=\"+Inf\"}", 5.0),
    ("wxmp_retry_store_entries", 4.0),
    ("wxmp_retry_store_limit_bytes", 1_048_576.0),
];

#[test]
fn metrics_on_their_own_listener_count_exactly_what_was_sent() {
    let dir = tempdir();
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, "[[rules]]\ntext = \"天气\"\nreply.text = \"晴\"\n").unwrap();
    let server = Wxmp::start(&[
        "--token",
        "metrics1",
        "--cache-mb",
        "1",
        "--rules",
        rules.to_str().unwrap(),
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let addr = server.metrics_addr();
    send_known_pushes(&server, "metrics1");
    // A broken edit, then a good one: one failed reload and one that took.
    std::fs::write(&rules, "[[rules]]\ntext = \"天气\"\nreply.txt = \"typo\"\n").unwrap();
    server.wait_for_log("rules reload failed", secs(10));
    std::fs::write(
        &rules,
        "[[rules]]\ntext = \"天气\"\nreply.text = \"晴，25 度\"\n",
    )
    .unwrap();
    server.wait_for_log("rules reloaded", secs(10));

    let (status, text) = http(&addr, "GET", "/metrics", b"");
    assert_eq!(status, 200, "{text}");
    let got = samples(&text);
    for (name, want) in EXPECTED {
        assert_eq!(got.get(*name), Some(want), "{name} in\n{text}");
    }
    assert_eq!(
        got.get("wxmp_rules_reloads_total{outcome=\"failed\"}"),
        Some(&1.0),
        "{text}"
    );
    assert_eq!(
        got.get("wxmp_rules_reloads_total{outcome=\"ok\"}"),
        Some(&1.0),
        "{text}"
    );
    assert!(got["wxmp_retry_store_bytes"] > 0.0, "{text}");
    // Every series is bounded: no OpenID, EventKey or unknown event name became a label.
    for secret in ["o_a", "o_b", "\"K\"", "brand_new_event", "天气"] {
        assert!(!text.contains(secret), "{secret} in\n{text}");
    }
    // The five answered pushes fall in the histogram's buckets, cumulatively.
    let le = |b: &str| got[&format!("wxmp_push_duration_seconds_bucket{{le=\"{b}\"}}")];
    assert!(le("0.0001") <= le("5") && le("5") <= le("+Inf"), "{text}");
}

/// The same exposition through Python's reference parser. Ignored by a bare `cargo test`
/// (prometheus_client may be missing); `make test` runs it through `scripts/prometheus.sh
/// --if-able`, which says SKIPPED when the parser is missing, and CI installs it and requires it.
#[test]
#[ignore = "needs python3 with prometheus_client: run by make test when it is installed"]
fn prometheus_client_parses_the_metrics_and_reads_the_same_counts() {
    let server = Wxmp::start(&[
        "--token",
        "metrics2",
        "--cache-mb",
        "1",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    send_known_pushes(&server, "metrics2");
    let (status, text) = http(&server.metrics_addr(), "GET", "/metrics", b"");
    assert_eq!(status, 200);
    let script = format!(
        "{}/tests/interop/prometheus_parse.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // name{labels} → value, labels in the order the exposition writes them.
    let mut parsed = BTreeMap::new();
    for family in families.as_array().unwrap() {
        for s in family["samples"].as_array().unwrap() {
            let labels = s["labels"].as_object().unwrap();
            let mut key = s["name"].as_str().unwrap().to_owned();
            if !labels.is_empty() {
                let inner: Vec<String> = [
                    "class", "mode", "msg_type", "event", "answered", "outcome", "version", "le",
                ]
                .iter()
                .filter_map(|n| labels.get(*n).map(|v| format!("{n}={v}")))
                .collect();
                assert_eq!(inner.len(), labels.len(), "unexpected label in {s}");
                key = format!("{key}{{{}}}", inner.join(","));
            }
            parsed.insert(key, s["value"].as_f64().unwrap_or(f64::INFINITY));
        }
    }
    for (name, want) in EXPECTED {
        assert_eq!(parsed.get(*name), Some(want), "{name} in {parsed:#?}");
    }
    let types: BTreeMap<&str, &str> = families
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["type"].as_str().unwrap()))
        .collect();
    assert_eq!(types.get("wxmp_push_duration_seconds"), Some(&"histogram"));
    assert_eq!(types.get("wxmp_http_requests"), Some(&"counter"));
}

#[test]
fn wxmp_tail_prints_each_push_and_its_answer_as_it_arrives() {
    let server = Wxmp::start(&["--token", "tail1", "--metrics-addr", "127.0.0.1:0"]);
    let addr = server.metrics_addr();
    let post = |content: &str, id: u64| {
        let (status, _) = server.request(
            "POST",
            &signed("tail1"),
            text_xml(OPENID, content, id).as_bytes(),
        );
        assert_eq!(status, 200);
    };
    post("天气", 1);
    let mut tail = wxmp(&["tail", "--metrics-addr", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let reader = {
        let seen = Arc::clone(&seen);
        let stdout = tail.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut s = seen.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        })
    };
    let shown = |needle: &str| {
        wait::until_ok(secs(10), format_args!("{needle:?} in wxmp tail"), || {
            let seen = seen.lock().unwrap();
            if seen.contains(needle) {
                Ok(())
            } else {
                Err(format!("\n{seen}"))
            }
        })
    };
    let user = user_label(OPENID, Shown::Hashed);
    // What came before the tail started (its history), then a push while it watches.
    shown(&format!(
        " text from {user} \"天气\" → rule 1 (line 2): text \"北京天气挺好的！\" "
    ));
    post("live 你好", 2);
    shown(&format!(
        " text from {user} \"live 你好\" → default: text \"live 你好\" "
    ));
    let _ = tail.kill();
    let _ = tail.wait();
    let _ = reader.join();
    // The log never had the content.
    assert!(!server.log().contains("live 你好"), "{}", server.log());
}

#[test]
fn wxmp_tail_without_a_listener_says_how_to_start_one() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = wxmp(&["tail", "--metrics-addr", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("cannot reach the metrics listener") && e.contains("--metrics-addr"),
        "{e}"
    );
    // Pointed at the public port by mistake: refused in words.
    let server = Wxmp::start(&["--token", "tail2"]);
    let o = wxmp(&["tail", "--metrics-addr", &server.addr])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not wxmp's metrics listener"));
}

#[test]
fn the_metrics_listener_is_off_by_default_and_the_live_view_needs_loopback() {
    let server = Wxmp::start(&["--token", "metrics3"]);
    assert_eq!(server.metrics, None);
    assert!(!server.banner.contains("metrics"), "{}", server.banner);
    assert_eq!(server.request("GET", "/metrics", b"").0, 404);
    drop(server);

    let server = Wxmp::start(&["--token", "metrics3", "--metrics-addr", "0.0.0.0:0"]);
    server.wait_for_log("is not a loopback address", secs(10));
    let metrics = server.metrics_addr();
    let port = metrics
        .strip_prefix("0.0.0.0:")
        .unwrap_or_else(|| panic!("metrics not on 0.0.0.0: {metrics}"));
    let addr = format!("127.0.0.1:{port}");
    assert_eq!(http(&addr, "GET", "/metrics", b"").0, 200);
    let (status, body) = http(&addr, "GET", "/tail", b"");
    assert_eq!(status, 404);
    assert!(body.contains("live view is off"), "{body}");
}

#[test]
fn a_metrics_address_in_use_exits_2_naming_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = wxmp(&[
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--token",
        "tok123",
        "--metrics-addr",
        &addr,
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("already in use") && e.contains("--metrics-addr"),
        "{e}"
    );
    let o = wxmp(&["--token", "tok123", "--metrics-addr", "localhost"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("IP:PORT"));
    // `wxmp tail` words its usage errors like every command (it said `wxmp tail:`).
    let o = wxmp(&["tail", "--history", "many"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.starts_with("wxmp: invalid value \"many\" for --history"),
        "{e}"
    );
}

/// `--quiet` is today's behaviour: the real binary logs refusals only, JSON or not.
#[test]
fn the_binary_logs_successes_unless_quiet() {
    for (args, logs_success) in [(&[][..], true), (&["--quiet"][..], false)] {
        let mut all = vec!["--token", "quiet1"];
        all.extend_from_slice(args);
        let server = Wxmp::start(&all);
        let ok = server.request(
            "POST",
            &signed("quiet1"),
            text_xml(OPENID, "秘密", 1).as_bytes(),
        );
        assert_eq!(ok.0, 200);
        assert_eq!(server.request("POST", &signed("wrong1"), b"<xml/>").0, 403);
        let (code, log) = server.terminate();
        assert_eq!(code, Some(0));
        assert!(
            log.contains("WARN POST /weixin 403 signature mismatch "),
            "{log}"
        );
        assert_eq!(
            log.contains("INFO POST /weixin 200 plain text from "),
            logs_success,
            "{args:?}: {log}"
        );
        assert!(
            !log.contains("秘密") && !log.contains("quiet1") && !log.contains(OPENID),
            "{log}"
        );
    }
}

/// A GET with the given extra header lines (`Host` among them, or not), raw; the status.
fn get_with_headers(addr: &str, target: &str, headers: &str) -> u16 {
    let raw = format!("GET {target} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n");
    exchange(addr, raw.as_bytes())
        .and_then(|answer| statuses(&answer).first().copied())
        .unwrap_or(0)
}

/// Regression (issue 19, N10): the metrics listener served `/tail` (message content) for any
/// `Host` and `Origin`, which a DNS-rebinding web page could use.
#[test]
fn the_live_view_refuses_foreign_hosts_and_origins_with_403_and_one_line() {
    let server = Wxmp::start(&["--token", "tail403", "--metrics-addr", "127.0.0.1:0"]);
    let addr = server.metrics_addr();
    let port = addr.rsplit(':').next().unwrap();
    let ok = |headers: &str| get_with_headers(&addr, "/tail", headers);
    assert_eq!(ok(&format!("Host: {addr}\r\n")), 200);
    assert_eq!(ok(&format!("Host: localhost:{port}\r\n")), 200);
    assert_eq!(
        ok(&format!(
            "Host: {addr}\r\nOrigin: http://localhost:{port}\r\n"
        )),
        200
    );
    assert_eq!(ok(&format!("Host: rebind.example:{port}\r\n")), 403);
    assert_eq!(
        ok(&format!("Host: {addr}\r\nOrigin: http://evil.example\r\n")),
        403
    );
    // /metrics stays open to scrapers, whatever name they use.
    assert_eq!(
        get_with_headers(
            &addr,
            "/metrics",
            &format!("Host: rebind.example:{port}\r\n")
        ),
        200
    );
    server.wait_for_log(
        &format!("Host \"rebind.example:{port}\" / Origin - is not loopback"),
        secs(10),
    );
    server.wait_for_log("Origin \"http://evil.example\" is not loopback", secs(10));
    // wxmp tail itself is served: the live-view tests above run it against this check.
}
