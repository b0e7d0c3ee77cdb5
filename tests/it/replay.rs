//! The replay window (issue 19 §1): a signed query is good for `--replay-window` seconds and for
//! one body. In-process with a fixed clock, then against the real binary.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use wxmp::log::{Capture, Log};
use wxmp::protocol::crypto::AesKey;
use wxmp::protocol::envelope::SafeMode;
use wxmp::protocol::verify::Token;
use wxmp::rules::RuleSet;
use wxmp::server::account::Account;
use wxmp::server::pipeline::{Pipeline, PLAIN_IN_SAFE_MODE};
use wxmp::server::replay::Replay;
use wxmp::server::routes::Service;
use wxmp::server::store::Limits;

use crate::helpers::*;
use crate::kit::binary::{command, Wxmp};
use crate::kit::signed;
use crate::kit::wait::secs;

const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APPID: &str = "wx2c2769f8efd9abc2";

fn safe() -> SafeMode {
    SafeMode {
        key: AesKey::from_encoding_aes_key(KEY).unwrap(),
        app_id: APPID.into(),
    }
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

#[test]
fn a_push_signed_ten_minutes_ago_is_refused_and_the_log_shows_both_times() {
    let h = harness();
    let old = (NOW - 600).to_string();
    let q = h.signed_with(&old, "42");
    let r = h.call(
        "POST",
        &format!("/weixin?{q}"),
        text_xml("o", "天气", 1).as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body, "forbidden\n", "details stay in the log");
    let lines = h.log.lines();
    let line = lines
        .iter()
        .find(|l| l.contains("POST /weixin 403"))
        .unwrap_or_else(|| panic!("no refusal logged: {lines:?}"));
    assert!(
        line.contains("timestamp 1699999400 (2023-11-14T22:03:20Z) is 600 s behind the server's clock (2023-11-14T22:13:20Z)")
            && line.contains("clock is wrong"),
        "{line}"
    );
    // Within the window it passes.
    let q = h.signed_with(&(NOW - 299).to_string(), "43");
    let r = h.call(
        "POST",
        &format!("/weixin?{q}"),
        text_xml("o", "天气", 2).as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_timestamp_from_the_future_is_refused_too() {
    let h = harness();
    let q = h.signed_with(&(NOW + 301).to_string(), "1");
    let r = h.call(
        "POST",
        &format!("/weixin?{q}"),
        text_xml("o", "x", 1).as_bytes(),
    );
    assert_eq!(r.status, 403);
    assert!(h.log.lines().iter().any(|l| l.contains("301 s ahead of")));
}

#[test]
fn an_unsigned_request_is_refused_for_its_signature_before_its_time() {
    // Unsigned junk must not learn about the clock, nor fill the memory.
    let h = harness();
    let r = h.call(
        "POST",
        "/weixin?signature=0000000000000000000000000000000000000000&timestamp=1&nonce=2",
        b"<xml/>",
    );
    assert_eq!(r.status, 403);
    assert!(
        h.log
            .lines()
            .iter()
            .any(|l| l.contains("signature mismatch")),
        "{:?}",
        h.log.lines()
    );
    assert!(h.service.pipeline.replay().is_empty());
}

#[test]
fn the_same_query_with_another_body_is_refused() {
    let h = harness();
    let q = h.signed_query();
    let genuine = h.call(
        "POST",
        &format!("/weixin?{q}"),
        text_xml("o_victim", "你好", 7).as_bytes(),
    );
    assert_eq!(genuine.status, 200);
    let forged = h.call(
        "POST",
        &format!("/weixin?{q}"),
        text_xml("o_victim", "天气", 8).as_bytes(),
    );
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert_eq!(
        count(&h.log.lines(), "already used with another body"),
        1,
        "{:?}",
        h.log.lines()
    );
}

#[test]
fn wechats_retry_with_the_same_query_and_body_is_answered_from_the_retry_store() {
    let h = harness();
    let q = h.signed_query();
    let body = text_xml("o", "天气", 9);
    let first = h.call("POST", &format!("/weixin?{q}"), body.as_bytes());
    assert_eq!(first.status, 200);
    // Five seconds later the reply would carry another CreateTime if it were made again.
    h.env.now.store(NOW + 5, Ordering::SeqCst);
    let retry = h.call("POST", &format!("/weixin?{q}"), body.as_bytes());
    assert_eq!((retry.status, &retry.body), (200, &first.body));
    assert!(
        h.log
            .lines()
            .last()
            .is_some_and(|l| l.contains("the cached answer (a retry)")),
        "{:?}",
        h.log.lines()
    );
}

#[test]
fn a_url_check_with_an_old_timestamp_is_refused() {
    let h = harness();
    let q = h.signed_with(&(NOW - 3600).to_string(), "5");
    let r = h.call("GET", &format!("/weixin?{q}&echostr=hello"), b"");
    assert_eq!(r.status, 403);
    assert!(
        h.log
            .lines()
            .iter()
            .any(|l| l.contains("GET /weixin 403 timestamp")),
        "{:?}",
        h.log.lines()
    );
    let r = h.verify("hello");
    assert_eq!((r.status, r.body.as_str()), (200, "hello"));
}

#[test]
fn a_zero_window_accepts_old_and_reused_queries() {
    let env = TestEnv::default();
    let token = Token::new(TOKEN).unwrap();
    let pipeline = Pipeline::in_memory(
        Account::new(token.clone()),
        Limits::default(),
        Arc::new(env.clone()),
    )
    .with_replay(Replay::new(0));
    let h = Harness {
        service: Service::new(Arc::new(pipeline), Log::to(Arc::new(Capture::default()))),
        env,
        token,
        log: Arc::new(Capture::default()),
    };
    let q = h.signed_with("1409735669", "1");
    for id in [1, 2] {
        let r = h.call(
            "POST",
            &format!("/weixin?{q}"),
            text_xml("o", "x", id).as_bytes(),
        );
        assert_eq!(r.status, 200);
    }
}

#[test]
fn a_plaintext_push_to_a_safe_mode_server_is_answered_and_hinted_once_an_hour() {
    let h = harness_with(Some(safe()), RuleSet::builtin());
    for id in 1..=3 {
        let r = h.post(&text_xml("o", "天气", id));
        assert_eq!(r.status, 200);
        assert_eq!(
            text_of(&r.body),
            "北京天气挺好的！",
            "answered in plaintext"
        );
    }
    assert_eq!(count(&h.log.lines(), PLAIN_IN_SAFE_MODE), 1);
    h.env.now.store(NOW + 3600, Ordering::SeqCst);
    assert_eq!(h.post(&text_xml("o", "天气", 4)).status, 200);
    assert_eq!(count(&h.log.lines(), PLAIN_IN_SAFE_MODE), 2);
    // The same rules hold: a reused query on another body is refused.
    let q = h.signed_query();
    let url = format!("/weixin?{q}");
    assert_eq!(
        h.call("POST", &url, text_xml("o", "a", 5).as_bytes())
            .status,
        200
    );
    assert_eq!(
        h.call("POST", &url, text_xml("o", "b", 6).as_bytes())
            .status,
        403
    );
    // An encrypted push says nothing of the sort.
    let before = count(&h.log.lines(), PLAIN_IN_SAFE_MODE);
    h.env.now.store(NOW + 7200, Ordering::SeqCst);
    let r = h.post_encrypted(&safe().key, APPID, &text_xml("o", "x", 7), false);
    assert_eq!(r.status, 200);
    assert_eq!(count(&h.log.lines(), PLAIN_IN_SAFE_MODE), before);
}

#[test]
fn a_plaintext_push_to_a_plaintext_server_gives_no_hint() {
    let h = harness();
    assert_eq!(h.post(&text_xml("o", "x", 1)).status, 200);
    assert_eq!(count(&h.log.lines(), PLAIN_IN_SAFE_MODE), 0);
}

#[test]
fn evictions_from_a_full_memory_are_counted_in_the_metrics() {
    let env = TestEnv::default();
    let pipeline = Arc::new(
        Pipeline::in_memory(
            Account::new(Token::new(TOKEN).unwrap()),
            Limits::default(),
            Arc::new(env.clone()),
        )
        .with_replay(Replay::with_capacity(300, 2)),
    );
    let metrics = wxmp::server::metrics::Metrics::new();
    {
        let (a, b) = (Arc::clone(&pipeline), Arc::clone(&pipeline));
        metrics.watch_replay(move || a.replay().len(), move || b.replay().evictions());
    }
    let h = Harness {
        service: Service::new(pipeline, Log::to(Arc::new(Capture::default()))),
        env,
        token: Token::new(TOKEN).unwrap(),
        log: Arc::new(Capture::default()),
    };
    for id in 1..=5 {
        assert_eq!(h.post(&text_xml("o", "x", id)).status, 200);
    }
    let text = metrics.render();
    assert!(text.contains("wxmp_replay_entries 2\n"), "{text}");
    assert!(
        text.contains("# TYPE wxmp_replay_evictions_total counter\n"),
        "{text}"
    );
    assert!(text.contains("wxmp_replay_evictions_total 3\n"), "{text}");
}

// --- the real binary ---

#[test]
fn the_binary_refuses_old_timestamps_and_forged_bodies_and_answers_retries() {
    let server = Wxmp::start(&["--token", "replay1"]);
    // WeChat's official vector time (2024): far outside the window.
    let old = format!(
        "/weixin?{}",
        signed::query_at(&Token::new("replay1").unwrap(), TS, NONCE)
    );
    let (status, _) = server.request("POST", &old, text_xml("o", "天气", 1).as_bytes());
    assert_eq!(status, 403);
    server.wait_for_log(
        "403 timestamp 1714036504 (2024-04-25T09:15:04Z) is ",
        secs(10),
    );
    assert!(server.log().contains("the server's clock is wrong"));
    let (status, _) = server.request("GET", &format!("{old}&echostr=e"), b"");
    assert_eq!(status, 403, "the URL check is timed too");

    let fresh = signed::target("replay1");
    let body = text_xml("o_victim", "天气", 2);
    let (status, first) = server.request("POST", &fresh, body.as_bytes());
    assert_eq!(status, 200, "{first}");
    let (status, again) = server.request("POST", &fresh, body.as_bytes());
    assert_eq!((status, &again), (200, &first), "WeChat's retry");
    server.wait_for_log("the cached answer (a retry)", secs(10));
    let forged = text_xml("o_victim", "你好", 3);
    let (status, _) = server.request("POST", &fresh, forged.as_bytes());
    assert_eq!(status, 403);
    server.wait_for_log("already used with another body", secs(10));
}

#[test]
fn the_binary_warns_at_start_when_the_window_is_off_and_then_accepts_old_queries() {
    let server = Wxmp::builder()
        .args(&["--token", "replay2"])
        .env("WXMP_REPLAY_WINDOW", "0")
        .start();
    server.wait_for_log(
        "WXMP_REPLAY_WINDOW is 0: timestamps and nonces are not checked",
        secs(10),
    );
    let old = format!(
        "/weixin?{}",
        signed::query_at(&Token::new("replay2").unwrap(), TS, "1")
    );
    for id in [1, 2] {
        let (status, body) = server.request("POST", &old, text_xml("o", "x", id).as_bytes());
        assert_eq!(status, 200, "{body}");
    }
}

#[test]
fn the_binary_answers_a_plaintext_push_in_safe_mode_and_hints_once() {
    let server = Wxmp::start(&["--token", "replay3", "--aes-key", KEY, "--appid", APPID]);
    for id in 1..=3 {
        let target = signed::target("replay3");
        let (status, body) = server.request("POST", &target, text_xml("o", "天气", id).as_bytes());
        assert_eq!(status, 200, "{body}");
        assert_eq!(text_of(&body), "北京天气挺好的！");
    }
    server.wait_for_log(
        "a plaintext push reached a server with an AES key",
        secs(10),
    );
    assert_eq!(
        server
            .log()
            .matches("a plaintext push reached a server with an AES key")
            .count(),
        1
    );
}

#[test]
fn a_replay_window_out_of_range_is_refused_at_start() {
    let out = command(&["--token", "replay4", "--replay-window", "86401"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--replay-window / WXMP_REPLAY_WINDOW") && err.contains("from 0 to 86400"),
        "{err}"
    );
}
