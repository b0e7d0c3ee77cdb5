//! Building a service with a fixed clock and fixed "random" bytes, and signed requests.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rouille::Request;
use wxmp::log::{Capture, Log};
use wxmp::protocol::crypto::AesKey;
use wxmp::protocol::envelope::SafeMode;
use wxmp::protocol::message::{Kind, Message};
use wxmp::protocol::query::percent_encode;
use wxmp::protocol::verify::Token;
use wxmp::rules::RuleSet;
use wxmp::server::account::Account;
use wxmp::server::env::Env;
use wxmp::server::pipeline::Pipeline;
use wxmp::server::routes::{self, Service};
use wxmp::server::store::Limits;

use crate::kit::signed;

pub const TOKEN: &str = "testtoken";
pub const NOW: u64 = 1_700_000_000;
pub use crate::kit::signed::{fresh_nonce, NONCE, TS};

/// A clock the test moves by hand and a counter for random bytes.
#[derive(Clone)]
pub struct TestEnv {
    pub now: Arc<AtomicU64>,
    /// Monotonic time: `start` plus this many milliseconds.
    pub elapsed_ms: Arc<AtomicU64>,
    start: Instant,
    counter: Arc<AtomicU8>,
}

impl Default for TestEnv {
    fn default() -> Self {
        TestEnv {
            now: Arc::new(AtomicU64::new(NOW)),
            elapsed_ms: Arc::default(),
            start: Instant::now(),
            counter: Arc::default(),
        }
    }
}

impl Env for TestEnv {
    fn now(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    fn monotonic(&self) -> Instant {
        self.start + Duration::from_millis(self.elapsed_ms.load(Ordering::SeqCst))
    }

    fn fill_random(&self, buf: &mut [u8]) {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        buf.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = n.wrapping_add(i as u8));
    }
}

pub struct Harness {
    pub service: Service,
    pub env: TestEnv,
    pub token: Token,
    /// What the server logged.
    pub log: Arc<Capture>,
}

pub fn harness() -> Harness {
    harness_with(None, RuleSet::builtin())
}

pub fn harness_with(safe: Option<SafeMode>, rules: RuleSet) -> Harness {
    harness_full(TOKEN, safe, rules)
}

pub fn harness_full(token: &str, safe: Option<SafeMode>, rules: RuleSet) -> Harness {
    let env = TestEnv::default();
    let token = Token::new(token).unwrap();
    let account = Account::new(token.clone())
        .with_safe(safe)
        .with_rules(rules);
    let log = Arc::new(Capture::default());
    let pipeline = Pipeline::in_memory(account, Limits::default(), Arc::new(env.clone()))
        .with_log(Log::to(log.clone()));
    Harness {
        service: Service::new(Arc::new(pipeline), Log::to(log.clone())),
        env,
        token,
        log,
    }
}

pub struct Resp {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Harness {
    pub fn call(&self, method: &str, url: &str, body: &[u8]) -> Resp {
        let req = Request::fake_http(method, url, vec![], body.to_vec());
        let resp = routes::handle(&self.service, &req);
        let (mut reader, _) = resp.data.into_reader_and_size();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut bytes).unwrap();
        Resp {
            status: resp.status_code,
            body: String::from_utf8(bytes).unwrap(),
            headers: resp
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The plain signature query, as WeChat signs each push: the timestamp from the test's
    /// clock, a fresh nonce.
    pub fn signed_query(&self) -> String {
        self.signed_with(&self.env.now().to_string(), &fresh_nonce())
    }

    /// The plain signature query for `ts` and `nonce`.
    pub fn signed_with(&self, ts: &str, nonce: &str) -> String {
        signed::query_at(&self.token, ts, nonce)
    }

    /// POSTs a body signed as WeChat would in plaintext mode.
    pub fn post(&self, body: &str) -> Resp {
        self.call(
            "POST",
            &format!("/weixin?{}", self.signed_query()),
            body.as_bytes(),
        )
    }

    pub fn verify(&self, echostr: &str) -> Resp {
        self.call(
            "GET",
            &format!(
                "/weixin?{}&echostr={}",
                self.signed_query(),
                percent_encode(echostr)
            ),
            b"",
        )
    }

    /// POSTs `xml` encrypted as WeChat would in safe mode (or compatible mode when `compat`).
    pub fn post_encrypted(&self, key: &AesKey, app_id: &str, xml: &str, compat: bool) -> Resp {
        let safe = SafeMode {
            key: key.clone(),
            app_id: app_id.into(),
        };
        let (ts, nonce) = (self.env.now().to_string(), fresh_nonce());
        let sealed = safe.seal(&self.token, xml, &ts, &nonce, b"0123456789abcdef");
        let body = if compat {
            sealed.compat_push_xml(xml)
        } else {
            sealed.push_xml("gh_test")
        };
        let url = format!(
            "/weixin?{}&openid=o1&encrypt_type=aes&msg_signature={}",
            self.signed_with(&ts, &nonce),
            sealed.msg_signature
        );
        self.call("POST", &url, body.as_bytes())
    }
}

/// A text message from `from` with `content` and `msg_id`.
pub fn text_xml(from: &str, content: &str, msg_id: u64) -> String {
    text_message(from, content, msg_id).to_xml()
}

pub fn text_message(from: &str, content: &str, msg_id: u64) -> Message {
    Message::new(
        "gh_test",
        from,
        1348831860,
        Kind::Text {
            content: Some(content.into()),
        },
    )
    .with_msg_id(msg_id)
}

pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    String::from_utf8(std::fs::read(&path).unwrap()).unwrap()
}

/// Parses a reply body back, as WeChat would.
pub fn parse_reply(body: &str) -> wxmp::protocol::reply::Rendered {
    wxmp::protocol::reply::Reply::parse(body)
        .unwrap_or_else(|e| panic!("reply does not parse ({e}): {body}"))
}

pub fn text_of(body: &str) -> String {
    match parse_reply(body).reply {
        wxmp::protocol::reply::Reply::Text(t) => t.as_str().to_owned(),
        other => panic!("expected a text reply, got {other:?}"),
    }
}
