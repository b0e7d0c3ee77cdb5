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

/// A local endpoint for `reply.forward` that answers `answer` once the test releases it, and
/// says when the call has arrived.
fn held_endpoint(
    answer: &'static str,
) -> (
    String,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (called_tx, called) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        called_tx.send(()).unwrap();
        // Answering is the test's call: after the retry has joined.
        let _ = released.recv();
        let mut s = stream;
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        );
    });
    (url, called, release)
}

/// Regression: a retry that joined the attempt in flight ran the rules again. It logged the
/// reply warnings a second time, put the rule of the re-run into its access record, and after a
/// reload between the attempts it could decide differently (here: not to forward at all).
#[test]
fn a_joined_retry_answers_as_the_first_attempt_decided_without_running_the_rules_again() {
    use std::time::{Duration, Instant};
    use wxmp::log::Format;

    let (url, called, release) = held_endpoint(r#"{"MsgType":"text","Content":"answered once"}"#);
    // A fallback over WeChat's 2048 bytes: every decision warns that it was cut.
    let long = "长".repeat(1000);
    let first = RuleSet::parse(
        &format!(
            "[[rules]]\ntext = \"hold on\"\nreply.forward = {{ url = \"{url}\", fallback = {{ text = \"{long}\" }} }}\n"
        ),
        "first.toml",
    )
    .unwrap();
    let second = RuleSet::parse(
        "[[rules]]\ntext = \"something else\"\nreply.text = \"x\"\n\n[[rules]]\ntext = \"hold on\"\nreply.text = \"decided again\"\n",
        "second.toml",
    )
    .unwrap();
    let mut h = harness_with(None, first);
    h.service.log = h.service.log.clone().with_format(Format::Json);
    let body = text_xml("o_joined", "hold on", 42);
    let (a, b) = std::thread::scope(|s| {
        let first_attempt = s.spawn(|| h.post(&body));
        called
            .recv_timeout(Duration::from_secs(30))
            .expect("the forward call never reached the endpoint");
        // A reload lands between WeChat's attempts.
        h.service.pipeline.account().rules.replace(second);
        let retry = s.spawn(|| h.post(&body));
        let started = Instant::now();
        while h.service.pipeline.forwarder().held() < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the retry never joined the forwarded attempt in flight (held attempts: {})",
                h.service.pipeline.forwarder().held()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        release.send(()).unwrap();
        (first_attempt.join().unwrap(), retry.join().unwrap())
    });
    for r in [&a, &b] {
        assert_eq!(r.status, 200);
        assert!(r.body.contains("answered once"), "{}", r.body);
    }
    let lines = h.log.lines();
    let records: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["kind"] == "access")
        .collect();
    assert_eq!(records.len(), 2, "{lines:#?}");
    let joined = records
        .iter()
        .find(|r| r["answered"] == "joined")
        .unwrap_or_else(|| panic!("no joined record in {lines:#?}"));
    assert_eq!(
        (&joined["decided"], &joined["rule"], &joined["rule_line"]),
        (&"rule".into(), &1.into(), &1.into()),
        "the joined retry names the first attempt's rule: {joined}"
    );
    let warnings = lines
        .iter()
        .filter(|l| l.contains("text reply cut"))
        .count();
    assert_eq!(warnings, 1, "the reply warning is logged once: {lines:#?}");
}
