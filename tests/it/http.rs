//! The foundation's behaviour through the handler: every line of the Flask app, and bad input.

use std::sync::atomic::Ordering;
use std::time::Instant;

use proptest::prelude::*;

use crate::helpers::*;

#[test]
fn root_and_healthz_answer() {
    let h = harness();
    let r = h.call("GET", "/", b"");
    assert_eq!((r.status, r.body.as_str()), (200, "Hello World!"));
    let r = h.call("GET", "/healthz", b"");
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
}

#[test]
fn url_verification_echoes_echostr_exactly() {
    let h = harness();
    for echostr in ["4375120948345356249", "a+b==", "你好 world/?&=", ""] {
        let r = h.verify(echostr);
        assert_eq!((r.status, r.body.as_str()), (200, echostr));
    }
    // A literal '+' is not a space and '=' inside the value is kept (rouille's get_param gets
    // both wrong).
    let r = h.call(
        "GET",
        &format!("/weixin?{}&echostr=a+b=c", h.signed_query()),
        b"",
    );
    assert_eq!(r.body, "a+b=c");
}

#[test]
fn url_verification_with_the_official_vector() {
    let h = harness_full("AAAAA", None, wxmp::rules::RuleSet::builtin());
    // The vector's own time, a minute on: inside the replay window.
    h.env.now.store(1_714_036_504 + 60, Ordering::SeqCst);
    let r = h.call(
        "GET",
        "/weixin?signature=f464b24fc39322e44b38aa78f5edd27bd1441696&echostr=4375120948345356249&timestamp=1714036504&nonce=1514711492",
        b"",
    );
    assert_eq!((r.status, r.body.as_str()), (200, "4375120948345356249"));
}

#[test]
fn url_verification_refuses_bad_or_missing_signatures() {
    let h = harness();
    let r = h.call(
        "GET",
        &format!("/weixin?signature=deadbeef&timestamp={TS}&nonce={NONCE}&echostr=x"),
        b"",
    );
    assert_eq!(r.status, 403);
    assert_eq!(h.call("GET", "/weixin?echostr=x", b"").status, 403);
    assert_eq!(h.call("GET", "/weixin", b"").status, 403);
    // Right signature for another nonce.
    let q = h.signed_with(&NOW.to_string(), NONCE).replace(NONCE, "1");
    assert_eq!(
        h.call("GET", &format!("/weixin?{q}&echostr=x"), b"").status,
        403
    );
}

#[test]
fn weather_gets_the_weather() {
    let h = harness();
    let r = h.post(&text_xml("o_user", "天气", 1));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("application/xml; charset=utf-8")
    );
    let reply = parse_reply(&r.body);
    assert_eq!(reply.to_user_name, "o_user");
    assert_eq!(reply.from_user_name, "gh_test");
    assert_eq!(reply.create_time, NOW);
    assert_eq!(text_of(&r.body), "北京天气挺好的！");
}

#[test]
fn other_text_is_echoed_byte_for_byte() {
    let h = harness();
    for (i, content) in [
        "hello 你好",
        " 天气",
        "天气天气",
        "😀 <b>&amp;</b> \"'",
        "a]]><evil/>",
        "]]>]]>",
    ]
    .iter()
    .enumerate()
    {
        let r = h.post(&text_xml("o_user", content, 100 + i as u64));
        assert_eq!(r.status, 200, "{content}");
        assert_eq!(text_of(&r.body), *content);
    }
}

#[test]
fn cdata_terminator_in_content_stays_text() {
    let h = harness();
    let r = h.post(&fixture("hostile_cdata_end.xml"));
    assert_eq!(r.status, 200);
    assert!(r.body.contains("]]]]><![CDATA[>"), "{}", r.body);
    assert_eq!(text_of(&r.body), "a]]><evil/>");
}

#[test]
fn every_other_msg_type_gets_success() {
    let h = harness();
    for name in [
        "image.xml",
        "voice.xml",
        "voice_recognition.xml",
        "video.xml",
        "shortvideo.xml",
        "location.xml",
        "link.xml",
        "miniprogrampage.xml",
        "unknown.xml",
        "event_subscribe.xml",
        "event_click.xml",
        "event_location.xml",
        "event_masssendjobfinish.xml",
    ] {
        let r = h.post(&fixture(name));
        assert_eq!((r.status, r.body.as_str()), (200, "success"), "{name}");
        assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    }
}

#[test]
fn posts_without_a_valid_signature_are_forbidden() {
    let h = harness();
    let body = text_xml("o", "hi", 1);
    assert_eq!(h.call("POST", "/weixin", body.as_bytes()).status, 403);
    let bad = format!(
        "/weixin?signature=0000000000000000000000000000000000000000&timestamp={TS}&nonce={NONCE}"
    );
    assert_eq!(h.call("POST", &bad, body.as_bytes()).status, 403);
    let missing_nonce = format!("/weixin?signature=x&timestamp={TS}");
    assert_eq!(h.call("POST", &missing_nonce, body.as_bytes()).status, 403);
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405() {
    let h = harness();
    assert_eq!(h.call("GET", "/nope", b"").status, 404);
    assert_eq!(h.call("POST", "/weixin/extra", b"").status, 404);
    for method in ["PUT", "DELETE", "PATCH"] {
        let r = h.call(method, "/weixin", b"");
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("Allow"), Some("GET, POST"));
    }
    assert_eq!(h.call("POST", "/", b"").status, 405);
    assert_eq!(h.call("DELETE", "/healthz", b"").status, 405);
}

#[test]
fn a_body_over_one_mib_is_413_and_exactly_one_mib_is_accepted() {
    let h = harness();
    let msg = text_xml("o", "big", 7);
    let limit = 1 << 20;
    // Pad with a comment to exactly 1 MiB.
    let pad = limit - msg.len() - "<!---->".len();
    let exact = format!("{msg}<!--{}-->", " ".repeat(pad));
    assert_eq!(exact.len(), limit);
    let r = h.post(&exact);
    assert_eq!(r.status, 200);
    assert_eq!(text_of(&r.body), "big");
    let over = format!("{exact} ");
    let r = h.post(&over);
    assert_eq!(r.status, 413);
    assert_eq!(r.header("Connection"), Some("close"));
}

#[test]
fn a_declared_length_over_the_limit_is_refused_before_reading() {
    let h = harness();
    let req = rouille::Request::fake_http(
        "POST",
        format!("/weixin?{}", h.signed_query()),
        vec![("Content-Length".into(), "1000000000000".into())],
        b"x".to_vec(),
    );
    let resp = wxmp::server::routes::handle(&h.service, &req);
    assert_eq!(resp.status_code, 413);
}

#[test]
fn malformed_bodies_are_400_with_a_reason() {
    let h = harness();
    let no_type = text_xml("o", "x", 1).replace("<MsgType><![CDATA[text]]></MsgType>", "");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not xml", b"hello".to_vec()),
        ("truncated", text_xml("o", "x", 1).as_bytes()[..60].to_vec()),
        ("empty", Vec::new()),
        (
            "invalid utf-8",
            b"<xml><Content>\xff\xfe</Content></xml>".to_vec(),
        ),
        ("no MsgType", no_type.into_bytes()),
        ("wrong root", b"<msg><MsgType>text</MsgType></msg>".to_vec()),
        ("deep", "<a>".repeat(10_000).into_bytes()),
    ];
    for (what, body) in cases {
        let before = h.log.lines().len();
        let r = h.call("POST", &format!("/weixin?{}", h.signed_query()), &body);
        assert_eq!(r.status, 400, "{what}");
        assert_eq!(r.body, "bad request\n", "{what}");
        // One log line per refusal, naming the request and the status.
        let lines = h.log.lines();
        assert_eq!(lines.len(), before + 1, "{what}: {lines:?}");
        assert!(
            lines[before].contains("POST /weixin 400 "),
            "{what}: {lines:?}"
        );
    }
}

#[test]
fn doctype_is_refused_fast_and_the_next_request_is_served() {
    let h = harness();
    for name in [
        "hostile_doctype_entities.xml",
        "hostile_doctype_external.xml",
    ] {
        let started = Instant::now();
        let r = h.post(&fixture(name));
        assert_eq!(r.status, 400, "{name}");
        assert!(!r.body.contains("root:"), "no file content may leak");
        // Not a timing assertion on speed, only that no expansion ran away (generous bound).
        assert!(started.elapsed().as_secs() < 5);
    }
    assert_eq!(text_of(&h.post(&text_xml("o", "next", 9)).body), "next");
}

#[test]
fn control_characters_wechat_sends_are_stripped_not_refused() {
    let h = harness();
    let r = h.post(&fixture("hostile_control_chars.xml"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(text_of(&r.body), " cd");
}

#[test]
fn invalid_utf8_in_the_query_is_400() {
    let h = harness();
    let r = h.call(
        "GET",
        &format!("/weixin?{}&echostr=%FF", h.signed_query()),
        b"",
    );
    assert_eq!(r.status, 400);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// No input produces a 500 or a panic: any body, signed or not, gets a deliberate status.
    #[test]
    fn arbitrary_bodies_never_cause_a_500(body in proptest::collection::vec(any::<u8>(), 0..400), signed in any::<bool>()) {
        let h = harness();
        let url = if signed { format!("/weixin?{}", h.signed_query()) } else { "/weixin".to_owned() };
        let r = h.call("POST", &url, &body);
        prop_assert!([200, 400, 403].contains(&r.status), "status {}", r.status);
    }

    /// Any text content is echoed back exactly, as WeChat's client would show it.
    #[test]
    fn any_text_round_trips_through_the_echo(content in "\\PC{1,60}", id in any::<u32>()) {
        let h = harness();
        let r = h.post(&text_xml("o", &content, u64::from(id)));
        prop_assert_eq!(r.status, 200);
        let expected = if content == "天气" { "北京天气挺好的！".to_owned() } else { content.clone() };
        if content.trim().is_empty() {
            // Whitespace-only content is still echoed (it is not empty).
            prop_assert_eq!(text_of(&r.body), content);
        } else {
            prop_assert_eq!(text_of(&r.body), expected);
        }
    }
}
