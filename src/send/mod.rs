//! `wxmp send`: plays the WeChat platform against any WeChat backend. It builds a push exactly as
//! WeChat does (with the one message model), signs it, seals it in safe or compatible mode,
//! posts it, then checks the reply the way WeChat would and prints it in one readable line.
//!
//! [`args`] turns the command line into a [`Job`]; [`build_request`] and [`check::check_reply`]
//! are pure; [`http`] does the exchange and [`run`] the printing.

pub mod args;
pub mod check;
pub mod http;

use std::time::Instant;

pub use args::{usage, Job, Payload, UsageError, DEFAULT_URL, DEV_TOKEN};
pub use check::{check_reply, summary, Checked, SendError, TIMEOUT};

use crate::protocol::envelope::Mode;
use crate::protocol::message::{Message, Numeric};
use crate::protocol::query::percent_encode;
use crate::protocol::verify;

/// A request ready to go: the URL with its query and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub url: String,
    pub body: String,
}

impl Job {
    /// Who the push is from and to: the message's own fields (a file's too, when it parses),
    /// else `--from` / `--to`. The reply must swap these.
    pub fn users(&self) -> (String, String) {
        let parsed;
        let msg = match &self.payload {
            Payload::Push(m) => Some(&**m),
            Payload::File(xml) => {
                parsed = Message::parse(xml).ok();
                parsed.as_ref()
            }
            Payload::Verify => None,
        };
        let from = msg.and_then(|m| m.from_user_name.clone());
        let to = msg.and_then(|m| m.to_user_name.clone());
        (
            from.unwrap_or_else(|| self.from.clone()),
            to.unwrap_or_else(|| self.to.clone()),
        )
    }

    /// The push's XML as WeChat sends it in plaintext mode, stamped with `create_time` and (for
    /// messages) `msg_id`; a file as it is.
    pub fn push_xml(&self, create_time: u64, msg_id: &str) -> String {
        match &self.payload {
            Payload::Push(m) => {
                let mut m = (**m).clone();
                m.create_time = Some(Numeric::Parsed(create_time));
                // WeChat puts MsgId on messages; events are keyed by user, time and name instead.
                if m.event().is_none() {
                    m.msg_id = Some(msg_id.to_owned());
                }
                m.to_xml()
            }
            Payload::File(xml) => xml.clone(),
            Payload::Verify => String::new(),
        }
    }
}

/// Signs (and in compat/safe mode seals) a push as WeChat does.
pub fn build_request(
    job: &Job,
    xml: &str,
    timestamp: u64,
    nonce: &str,
    random: &[u8; 16],
) -> Outgoing {
    let ts = timestamp.to_string();
    let signature = verify::signature(&job.token, &ts, nonce);
    let (from, to) = job.users();
    let mut url = format!(
        "{}{}signature={signature}&timestamp={ts}&nonce={nonce}&openid={}",
        job.url,
        if job.url.contains('?') { '&' } else { '?' },
        percent_encode(&from)
    );
    let body = match (&job.safe, job.mode) {
        (Some(safe), Mode::Compat | Mode::Safe) => {
            let sealed = safe.seal(&job.token, xml, &ts, nonce, random);
            url.push_str(&format!(
                "&encrypt_type=aes&msg_signature={}",
                sealed.msg_signature
            ));
            if job.mode == Mode::Compat {
                sealed.compat_push_xml(xml)
            } else {
                sealed.push_xml(&to)
            }
        }
        _ => xml.to_owned(),
    };
    Outgoing { url, body }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // Only the simulator's nonces and IV prefix depend on this; a failure is not fatal there.
    let _ = getrandom::getrandom(&mut b);
    b
}

/// Runs a `send`, printing the outcome; returns the exit code (0, 1).
pub fn run(job: &Job) -> u8 {
    let agent = ureq::AgentBuilder::new().timeout(TIMEOUT).build();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let nonce = (u64::from_le_bytes(random_bytes::<8>()) % 10_000_000_000).to_string();
    if job.payload == Payload::Verify {
        let echostr =
            (u64::from_le_bytes(random_bytes::<8>()) % 10_000_000_000_000_000_000).to_string();
        let ts = now.to_string();
        let url = format!(
            "{}{}signature={}&timestamp={ts}&nonce={nonce}&echostr={echostr}",
            job.url,
            if job.url.contains('?') { '&' } else { '?' },
            verify::signature(&job.token, &ts, &nonce)
        );
        let started = Instant::now();
        let outcome = http::exchange(&agent, "GET", &url, "").and_then(|(status, body)| {
            if body == echostr {
                Ok(status)
            } else {
                Err(SendError::VerifyFailed(format!(
                    "the server answered {body:?}, not the echostr {echostr:?}"
                )))
            }
        });
        return match outcome {
            Ok(status) => {
                println!(
                    "verify: passed (echostr echoed)  [HTTP {status}, {}]",
                    ms(started)
                );
                0
            }
            Err(e) => {
                eprintln!("wxmp send: verify: {e}");
                1
            }
        };
    }
    let msg_id = job
        .msg_id
        .clone()
        .unwrap_or_else(|| (u64::from_le_bytes(random_bytes::<8>()) >> 1).to_string());
    let xml = job.push_xml(now, &msg_id);
    let out = build_request(job, &xml, now, &nonce, &random_bytes::<16>());
    let (user, account) = job.users();
    let mut bodies: Vec<String> = Vec::new();
    for attempt in 1..=job.repeat {
        let started = Instant::now();
        let result = post_like_wechat(&agent, job, &out).and_then(|(status, body, tries)| {
            check_reply(job, &user, &account, &body).map(|c| (status, body, c, tries))
        });
        match result {
            Ok((status, body, checked, tries)) => {
                let tag = if job.repeat > 1 {
                    format!("#{attempt} ")
                } else {
                    String::new()
                };
                let enc = if checked.encrypted { ", encrypted" } else { "" };
                // The first attempt answering is the normal case; say so only when it did not.
                let tries = if tries > 1 {
                    format!("attempt {tries} of {}, ", job.retries)
                } else {
                    String::new()
                };
                let meta = format!(
                    "[HTTP {status}, {tries}{}, {} mode{enc}]",
                    ms(started),
                    job.mode
                );
                if job.xml {
                    // The XML alone on stdout, so it can be piped; the status on stderr.
                    println!("{}", checked.xml);
                    eprintln!("{tag}{meta}");
                } else {
                    println!("{tag}{}  {meta}", summary(&checked.reply));
                }
                bodies.push(body);
            }
            Err(e) => {
                eprintln!("wxmp send: {e}");
                return 1;
            }
        }
    }
    if job.repeat > 1 {
        let identical = bodies.windows(2).all(|w| w[0] == w[1]);
        if identical {
            println!("retries: all {} replies byte-identical", bodies.len());
        } else {
            eprintln!("wxmp send: retries: the {} replies differ; WeChat's retries would get different answers", bodies.len());
            return 1;
        }
    }
    0
}

/// Posts the push as WeChat does (`--retries`, 3 by default): an attempt unanswered after 5 s
/// is abandoned (its connection closed) and the same query and body are sent again. The status, the body and
/// which attempt answered.
fn post_like_wechat(
    agent: &ureq::Agent,
    job: &Job,
    out: &Outgoing,
) -> Result<(u16, String, usize), SendError> {
    let mut tries = 1;
    loop {
        match http::exchange(agent, "POST", &out.url, &out.body) {
            Ok((status, body)) => return Ok((status, body, tries)),
            Err(SendError::Timeout) if tries < job.retries => {
                eprintln!(
                    "attempt {tries} of {}: no answer within {} s; sending it again, as WeChat does",
                    job.retries,
                    TIMEOUT.as_secs()
                );
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn ms(started: Instant) -> String {
    format!("{:.1} ms", started.elapsed().as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::args::resolve;
    use super::args::tests::{no_env, raw};
    use super::*;
    use crate::protocol::crypto::AesKey;
    use crate::protocol::envelope::SafeMode;
    use crate::protocol::message::{Event, Kind};
    use crate::protocol::reply::Reply;
    use crate::protocol::verify::Token;

    #[test]
    fn every_push_parses_as_wechat_would_send_it() {
        /// (KIND and arguments, per-kind options, expected MsgType)
        type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case> = vec![
            (vec!["text", "a]]>b"], vec![], "text"),
            (vec!["image"], vec![], "image"),
            (vec!["voice"], vec![("recognition", "你好")], "voice"),
            (vec!["video"], vec![], "video"),
            (vec!["shortvideo"], vec![], "shortvideo"),
            (
                vec!["location"],
                vec![("lat", "23.1"), ("lng", "113.3"), ("label", "<广州>")],
                "location",
            ),
            (vec!["link"], vec![], "link"),
            (
                vec!["event", "subscribe"],
                vec![("key", "qrscene_42"), ("ticket", "T")],
                "event",
            ),
            (
                vec!["event", "LOCATION"],
                vec![("lat", "1"), ("lng", "2")],
                "event",
            ),
        ];
        for (kind, fields, msg_type) in cases {
            let mut args: Vec<String> = kind.iter().map(|k| k.to_string()).collect();
            for (name, value) in &fields {
                args.push(format!("--{name}"));
                args.push(value.to_string());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = raw(&args);
            let j = resolve(r, &no_env).unwrap();
            let xml = j.push_xml(1_700_000_000, "42");
            let m = Message::parse(&xml).unwrap_or_else(|e| panic!("{kind:?}: {e}: {xml}"));
            assert_eq!(m.msg_type(), msg_type);
            assert_eq!(m.from_user(), "o_wxmp_send");
            assert_eq!(m.create_time, Some(Numeric::Parsed(1_700_000_000)));
            match &m.kind {
                Kind::Text { content } => assert_eq!(content.as_deref(), Some("a]]>b")),
                Kind::Voice { recognition, .. } => assert_eq!(recognition.as_deref(), Some("你好")),
                Kind::Location {
                    label, location_x, ..
                } => {
                    assert_eq!(label.as_deref(), Some("<广州>"));
                    assert_eq!(location_x, &Some(Numeric::Parsed(23.1)));
                }
                Kind::Event(Event::Subscribe { event_key, .. }) => {
                    assert_eq!(event_key.as_deref(), Some("qrscene_42"));
                    assert_eq!(m.msg_id, None);
                }
                Kind::Event(Event::Location { latitude, .. }) => {
                    assert_eq!(latitude, &Some(Numeric::Parsed(1.0)))
                }
                _ => assert_eq!(m.msg_id.as_deref(), Some("42")),
            }
        }
    }

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const APPID: &str = "wx2c2769f8efd9abc2";

    fn safe_job() -> Job {
        let r = raw(&[
            "text",
            "hi",
            "--aes-key",
            KEY,
            "--appid",
            APPID,
            "--token",
            "spamtest",
        ]);
        resolve(r, &no_env).unwrap()
    }

    #[test]
    fn safe_request_carries_both_signatures_and_only_encrypt() {
        let j = safe_job();
        let xml = j.push_xml(1, "1");
        let out = build_request(&j, &xml, 1409735669, "1320562132", &[7; 16]);
        assert!(out
            .url
            .contains("signature=16120ec1b8dbb870f510d87ce6bc2463eae6ca1a"));
        assert!(out.url.contains("encrypt_type=aes&msg_signature="));
        assert!(!out.body.contains("MsgType"));
        let mut compat = j.clone();
        compat.mode = Mode::Compat;
        let out = build_request(&compat, &xml, 1, "2", &[7; 16]);
        assert!(out.body.contains("<MsgType>") && out.body.contains("<Encrypt>"));
    }

    fn envelope(inner: &str, app_id: &str, token: &str) -> String {
        let safe = SafeMode {
            key: AesKey::from_encoding_aes_key(KEY).unwrap(),
            app_id: app_id.into(),
        };
        safe.seal(&Token::new(token).unwrap(), inner, "5", "6", &[1; 16])
            .reply_xml(5, "6")
    }

    #[test]
    fn check_reply_verifies_like_wechat() {
        let j = safe_job();
        let (user, account) = j.users();
        let check = |body: &str| check_reply(&j, &user, &account, body);
        let good = Reply::text("ok").0.render(&user, &account, 1);
        let checked = check(&envelope(&good, APPID, "spamtest")).unwrap();
        assert_eq!(summary(&checked.reply), "text: ok");
        assert_eq!(
            check(&envelope(&good, APPID, "wrongtoken")),
            Err(SendError::EnvelopeSignature)
        );
        assert!(matches!(
            check(&envelope(&good, "wxOTHER", "spamtest")),
            Err(SendError::AppId { .. })
        ));
        assert_eq!(check(&good), Err(SendError::NotEncrypted));
        assert_eq!(check("success").unwrap().reply, Reply::Success);
        let unswapped = Reply::text("ok").0.render(&account, &user, 1);
        assert!(matches!(
            check(&envelope(&unswapped, APPID, "spamtest")),
            Err(SendError::NotSwapped { .. })
        ));
        let empty = good.replace("<![CDATA[ok]]>", "<![CDATA[]]>");
        assert!(matches!(
            check(&envelope(&empty, APPID, "spamtest")),
            Err(SendError::Reply(_))
        ));
    }

    /// Regression (issue 10): `send file` compared the reply with the default --from/--to,
    /// not with the file's own users, so a correct server failed as "swapped".
    #[test]
    fn a_file_push_is_checked_against_its_own_users() {
        let mut j = resolve(raw(&["verify"]), &no_env).unwrap();
        j.payload = Payload::File(
            Message::new("gh_file", "o_file", 1, Kind::Text { content: None }).to_xml(),
        );
        assert_eq!(j.users(), ("o_file".to_owned(), "gh_file".to_owned()));
    }
}
