//! Inputs the fuzzers found, kept under tests/fixtures/fuzz/ and replayed here: through the
//! parser, and as a signed body through the handler in plain and safe mode.

use wxmp::protocol::crypto::AesKey;
use wxmp::protocol::envelope::SafeMode;
use wxmp::protocol::message::Message;
use wxmp::protocol::reply::Reply;
use wxmp::rules::RuleSet;

use crate::helpers::*;

fn fuzz_inputs() -> Vec<(String, Vec<u8>)> {
    let dir = format!("{}/tests/fixtures/fuzz", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no regression inputs in {dir}");
    files
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

#[test]
fn every_fuzz_input_parses_or_is_refused_and_replies_read_back() {
    for (name, bytes) in fuzz_inputs() {
        let Ok(msg) = Message::parse_bytes(&bytes) else {
            continue;
        };
        let reply = RuleSet::builtin().decide(&msg).reply;
        let body = reply.render(msg.from_user(), msg.to_user(), 1);
        assert!(
            Reply::parse(&body).is_ok(),
            "{name}: reply does not read back: {body:?}"
        );
    }
}

#[test]
fn every_fuzz_input_gets_a_deliberate_status_from_the_handler() {
    let plain = harness();
    let safe = harness_with(
        Some(SafeMode {
            key: AesKey::from_encoding_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
                .unwrap(),
            app_id: "wx2c2769f8efd9abc2".into(),
        }),
        RuleSet::builtin(),
    );
    for (name, bytes) in fuzz_inputs() {
        for h in [&plain, &safe] {
            let r = h.call("POST", &format!("/weixin?{}", h.signed_query()), &bytes);
            assert!(
                [200, 400].contains(&r.status),
                "{name}: status {}",
                r.status
            );
            if r.status == 200 && r.body != "success" {
                parse_reply(&r.body);
            }
        }
    }
}

#[test]
fn doctype_hidden_behind_a_control_character_is_refused() {
    // Regression: the DOCTYPE check ran before control characters were stripped.
    let h = harness();
    let r = h.post(
        &String::from_utf8(
            std::fs::read(format!(
                "{}/tests/fixtures/fuzz/doctype_hidden_by_control_char.xml",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        )
        .unwrap(),
    );
    assert_eq!(r.status, 400);
}

#[test]
fn the_text_doctype_inside_a_message_is_echoed() {
    // Regression: a user sending the characters "<!DOCTYPE" got 400 and no reply, and wxmp's own
    // reply check refused the echo.
    let h = harness();
    let r = h.post(&text_xml("o", "<!DOCTYPE html>", 1));
    assert_eq!(r.status, 200);
    assert_eq!(text_of(&r.body), "<!DOCTYPE html>");
}

#[test]
fn every_fuzzed_rules_file_that_loads_answers_readable_replies() {
    let samples = [
        "text.xml",
        "voice_recognition.xml",
        "image.xml",
        "event_subscribe_qrscene.xml",
        "event_click.xml",
    ];
    for (name, bytes) in fuzz_inputs()
        .into_iter()
        .filter(|(n, _)| n.ends_with(".toml"))
    {
        let Ok(set) = RuleSet::parse(&String::from_utf8_lossy(&bytes), &name) else {
            continue;
        };
        for sample in samples {
            let msg = Message::parse(&fixture(sample)).unwrap();
            let body = set
                .decide(&msg)
                .reply
                .render(msg.from_user(), msg.to_user(), 1);
            assert!(Reply::parse(&body).is_ok(), "{name} on {sample}: {body:?}");
        }
    }
}
