//! Safe and compatible mode through the handler, with WeChat's official vectors.

use std::sync::atomic::Ordering;

use wxmp::protocol::crypto::AesKey;
use wxmp::protocol::envelope::{ReplyEnvelope, SafeMode};
use wxmp::protocol::reply::Reply;
use wxmp::protocol::verify;
use wxmp::rules::RuleSet;

use crate::helpers::*;

const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APPID: &str = "wx2c2769f8efd9abc2";

fn safe() -> SafeMode {
    SafeMode {
        key: AesKey::from_encoding_aes_key(KEY).unwrap(),
        app_id: APPID.into(),
    }
}

fn key() -> AesKey {
    AesKey::from_encoding_aes_key(KEY).unwrap()
}

/// Opens an encrypted reply envelope the way WeChat does: check MsgSignature, decrypt, check AppID.
fn open(h: &Harness, body: &str) -> String {
    let fields = ReplyEnvelope::read(body).unwrap_or_else(|| panic!("not an envelope: {body}"));
    let (ts, nonce) = (fields.timestamp.unwrap(), fields.nonce.unwrap());
    // Timestamped by the server's clock when the reply was made (a test may have moved it since).
    let now = h.env.now.load(Ordering::SeqCst);
    assert!(
        ts.parse::<u64>().is_ok_and(|t| t <= now && now - t <= 10),
        "reply timestamp {ts}, clock {now}"
    );
    assert!(nonce.chars().all(|c| c.is_ascii_digit()) && !nonce.is_empty());
    safe()
        .open_reply(&h.token, body)
        .unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// `xml` sealed for `app_id` with this test's key: the `Encrypt` text.
fn encrypt_for(h: &Harness, app_id: &str, xml: &str) -> String {
    let safe = SafeMode {
        key: key(),
        app_id: app_id.into(),
    };
    safe.seal(&h.token, xml, TS, NONCE, &[1; 16]).encrypt
}

#[test]
fn safe_mode_message_gets_an_encrypted_signed_reply() {
    let h = harness_with(Some(safe()), RuleSet::builtin());
    let r = h.post_encrypted(&key(), APPID, &text_xml("o_user", "天气", 1), false);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("Content-Type"),
        Some("application/xml; charset=utf-8")
    );
    let inner = open(&h, &r.body);
    assert_eq!(text_of(&inner), "北京天气挺好的！");
    assert_eq!(parse_reply(&inner).to_user_name, "o_user");
}

#[test]
fn compatible_mode_is_answered_encrypted() {
    let h = harness_with(Some(safe()), RuleSet::builtin());
    let r = h.post_encrypted(&key(), APPID, &text_xml("o_user", "echo me", 2), true);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(text_of(&open(&h, &r.body)), "echo me");
}

#[test]
fn tencent_compat_sample_is_accepted_and_answered() {
    // Tencent's official OA sample (token spamtest, compatible-mode body).
    let h = harness_full("spamtest", Some(safe()), RuleSet::builtin());
    // The sample's own time, a minute on: inside the replay window.
    h.env.now.store(1_409_735_669 + 60, Ordering::SeqCst);
    let url = "/weixin?signature=16120ec1b8dbb870f510d87ce6bc2463eae6ca1a&timestamp=1409735669&nonce=1320562132&encrypt_type=aes&msg_signature=5d197aaffba7e9b25a30732f161a50dee96bd5fa";
    let r = h.call("POST", url, fixture("safe_compat_sample.xml").as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    let inner = open(&h, &r.body);
    assert_eq!(text_of(&inner), "abcdteT");
    assert_eq!(
        parse_reply(&inner).to_user_name,
        "oyORnuP8q7ou2gfYjqLzSIWZf0rs"
    );
}

#[test]
fn official_worked_example_passes_every_check_but_is_json_not_xml() {
    // The message-push doc's safe-mode vector decrypts to JSON (a mini-program push): signature,
    // msg_signature, AES and AppID all check out, and then the body is not XML → 400.
    let h = harness_full(
        "AAAAA",
        Some(SafeMode {
            key: AesKey::from_encoding_aes_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
                .unwrap(),
            app_id: "wxba5fad812f8e6fb9".into(),
        }),
        RuleSet::builtin(),
    );
    h.env.now.store(1_714_112_445 + 60, Ordering::SeqCst);
    let enc = "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04=";
    let url = "/weixin?signature=6c5c811b55cc85e0e1b54100749188c20beb3f5d&timestamp=1714112445&nonce=415670741&openid=o9AgO5Kd5ggOC-bXrbNODIiE3bGY&encrypt_type=aes&msg_signature=046e02f8204d34f8ba5fa3b1db94908f3df2e9b3";
    let body = format!("<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>");
    let r = h.call("POST", url, body.as_bytes());
    assert_eq!(r.status, 400);
    // Tamper with msg_signature: now it is 403, proving the 400 came after the checks.
    let r = h.call(
        "POST",
        &url.replace("046e02f8", "146e02f8"),
        body.as_bytes(),
    );
    assert_eq!(r.status, 403);
}

#[test]
fn success_is_sent_unencrypted_in_safe_mode() {
    let h = harness_with(Some(safe()), RuleSet::builtin());
    let r = h.post_encrypted(&key(), APPID, &fixture("image.xml"), false);
    assert_eq!((r.status, r.body.as_str()), (200, "success"));
}

#[test]
fn plaintext_posts_still_work_with_a_key_configured() {
    let h = harness_with(Some(safe()), RuleSet::builtin());
    let r = h.post(&text_xml("o", "plain", 3));
    assert_eq!(text_of(&r.body), "plain");
}

#[test]
fn compatible_mode_without_a_key_answers_the_plaintext_fields() {
    let h = harness();
    let r = h.post_encrypted(&key(), APPID, &text_xml("o", "compat", 4), true);
    assert_eq!(r.status, 200);
    assert_eq!(text_of(&r.body), "compat");
    let r = h.post_encrypted(&key(), APPID, &text_xml("o", "safe", 5), false);
    assert_eq!(r.status, 400);
}

fn post_raw_encrypt(h: &Harness, encrypt: &str) -> u16 {
    let body =
        format!("<xml><ToUserName>gh</ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>");
    let (ts, nonce) = (h.env.now.load(Ordering::SeqCst).to_string(), fresh_nonce());
    let sig = verify::msg_signature(&h.token, &ts, &nonce, encrypt);
    let url = format!(
        "/weixin?{}&encrypt_type=aes&msg_signature={sig}",
        h.signed_with(&ts, &nonce)
    );
    h.call("POST", &url, body.as_bytes()).status
}

#[test]
fn crypto_failures_map_to_400_and_403() {
    let h = harness_with(Some(safe()), RuleSet::builtin());
    // Wrong msg_signature.
    let enc = encrypt_for(&h, APPID, &text_xml("o", "x", 1));
    let url = format!(
        "/weixin?{}&encrypt_type=aes&msg_signature={}",
        h.signed_query(),
        "0".repeat(40)
    );
    let body = format!("<xml><Encrypt><![CDATA[{enc}]]></Encrypt></xml>");
    assert_eq!(h.call("POST", &url, body.as_bytes()).status, 403);
    // Missing msg_signature.
    let url = format!("/weixin?{}&encrypt_type=aes", h.signed_query());
    assert_eq!(h.call("POST", &url, body.as_bytes()).status, 403);
    // Another account's AppID.
    let other = encrypt_for(&h, "wxsomeoneelse", &text_xml("o", "x", 1));
    assert_eq!(post_raw_encrypt(&h, &other), 403);
    // Bad base64, bad length, garbage that fails padding or length checks.
    assert_eq!(post_raw_encrypt(&h, "not-base64!!"), 400);
    assert_eq!(post_raw_encrypt(&h, "AAAA"), 400);
    assert_eq!(post_raw_encrypt(&h, &"QUFB".repeat(16)), 400);
    // Decrypts fine but is not XML, or not UTF-8.
    assert_eq!(post_raw_encrypt(&h, &encrypt_for(&h, APPID, "hello")), 400);
    // encrypt_type=aes with no Encrypt element.
    let url = format!(
        "/weixin?{}&encrypt_type=aes&msg_signature=x",
        h.signed_query()
    );
    assert_eq!(
        h.call("POST", &url, text_xml("o", "x", 1).as_bytes())
            .status,
        400
    );
}

#[test]
fn url_verification_is_plain_in_safe_mode() {
    let h = harness_with(Some(safe()), RuleSet::builtin());
    let r = h.verify("12345");
    assert_eq!((r.status, r.body.as_str()), (200, "12345"));
}

#[test]
fn a_retry_in_safe_mode_gets_byte_identical_ciphertext() {
    let h = harness_with(Some(safe()), RuleSet::builtin());
    let msg = text_xml("o_user", "retry me", 77);
    let first = h.post_encrypted(&key(), APPID, &msg, false);
    h.env
        .now
        .store(NOW + 5, std::sync::atomic::Ordering::SeqCst);
    let second = h.post_encrypted(&key(), APPID, &msg, false);
    assert_eq!(first.status, 200);
    assert_eq!(first.body, second.body);
    // A different message gets fresh random bytes, so a different ciphertext.
    let other = h.post_encrypted(&key(), APPID, &text_xml("o_user", "retry me", 78), false);
    assert_ne!(first.body, other.body);
    assert!(matches!(
        parse_reply(&open(&h, &first.body)).reply,
        Reply::Text(_)
    ));
}

/// Regression (issue 19, N13): a decrypted push that does not parse put its element names into
/// the log. Now the line says the kind and position only.
#[test]
fn a_decrypted_push_that_does_not_parse_is_logged_without_its_names() {
    let h = harness_with(Some(safe()), RuleSet::builtin());
    let broken = "<xml><SecretTag>x</OtherSecret></xml>";
    assert_eq!(post_raw_encrypt(&h, &encrypt_for(&h, APPID, broken)), 400);
    let wrong_root = "<SecretRoot><MsgType>text</MsgType></SecretRoot>";
    assert_eq!(
        post_raw_encrypt(&h, &encrypt_for(&h, APPID, wrong_root)),
        400
    );
    let log = h.log.lines().join("\n");
    for needle in [
        "malformed XML: unexpected closing tag at line 1, column 31",
        "the root element is not <xml>",
    ] {
        assert!(log.contains(needle), "lacks {needle:?}: {log}");
    }
    assert!(!log.contains("Secret"), "{log}");
}
