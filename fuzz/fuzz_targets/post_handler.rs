//! The whole HTTP handler on an arbitrary query and body: never a panic, never a 500, and every
//! 200 to a push is a body WeChat can read (decrypting it first in safe mode).
//!
//! Input: one flag byte, then `query \n body`. The flags pick the method, add a valid signature,
//! switch to the safe-mode service and wrap the body in a signed `Encrypt` envelope, so the fuzzer
//! gets past the signature and decryption checks instead of stopping at 403.
#![no_main]

use std::io::Read;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use rouille::Request;
use wxmp::log::{Capture, Log};
use wxmp::protocol::crypto::AesKey;
use wxmp::protocol::envelope::SafeMode;
use wxmp::protocol::reply::Reply;
use wxmp::protocol::verify::{self, Token};
use wxmp::rules::RuleSet;
use wxmp::server::account::Account;
use wxmp::server::env::Env;
use wxmp::server::pipeline::Pipeline;
use wxmp::server::recent::Recent;
use wxmp::server::routes::{self, Service};
use wxmp::server::store::Limits;

const TOKEN: &str = "spamtest";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APP_ID: &str = "wx2c2769f8efd9abc2";
const TS: &str = "1409735669";
const NONCE: &str = "1320562132";

#[derive(Default)]
struct FixedEnv(AtomicU8);

impl Env for FixedEnv {
    fn now(&self) -> u64 {
        // A minute after the signed timestamp (Tencent's sample), inside the replay window, so
        // the fuzzer gets past the timestamp check.
        1_409_735_669 + 60
    }

    fn monotonic(&self) -> Instant {
        Instant::now()
    }

    fn fill_random(&self, buf: &mut [u8]) {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        buf.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = n.wrapping_add(i as u8));
    }
}

fn safe_mode(app_id: &str) -> SafeMode {
    SafeMode {
        key: AesKey::from_encoding_aes_key(KEY).unwrap(),
        app_id: app_id.into(),
    }
}

// A fresh service per input keeps runs reproducible (the retry store is state); the log is
// captured, not printed. The live view is on, so its content samples see hostile pushes too.
fn service(safe: bool) -> Service {
    let account = Account::new(Token::new(TOKEN).unwrap())
        .with_safe(safe.then(|| safe_mode(APP_ID)))
        .with_rules(RuleSet::builtin());
    let pipeline = Pipeline::in_memory(account, Limits::default(), Arc::new(FixedEnv::default()))
        .with_samples(true);
    Service::new(Arc::new(pipeline), Log::to(Arc::new(Capture::default())))
        .with_recent(Some(Arc::new(Recent::new(0))))
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (head, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let method = ["POST", "GET", "POST", "PUT"][usize::from(flags & 3)];
    let sign = flags & 4 != 0;
    let safe = flags & 8 != 0;
    let wrap = flags & 16 != 0;
    let own_url = flags & 32 == 0;
    let token = Token::new(TOKEN).unwrap();

    let mut body = body.to_vec();
    let mut query = String::new();
    if sign {
        let sig = verify::signature(&token, TS, NONCE);
        query.push_str(&format!("signature={sig}&timestamp={TS}&nonce={NONCE}&"));
    }
    if wrap {
        // Mostly the right AppID; flag bit 6 lets the fuzzer try a wrong one.
        let app_id = if flags & 64 == 0 { APP_ID } else { "wx_other" };
        let sealed = safe_mode(app_id).seal(
            &token,
            &String::from_utf8_lossy(&body),
            TS,
            NONCE,
            b"0123456789abcdef",
        );
        query.push_str(&format!(
            "encrypt_type=aes&msg_signature={}&",
            sealed.msg_signature
        ));
        body = sealed.push_xml("gh_test").into_bytes();
    }
    let url = if own_url {
        format!("/weixin?{query}{head}")
    } else {
        head.into_owned()
    };
    let mut headers = Vec::new();
    if flags & 128 != 0 {
        headers.push(("Content-Length".to_owned(), body.len().to_string()));
    }

    let svc = service(safe);
    let req = Request::fake_http(method, url.clone(), headers, body);
    let resp = routes::handle(&svc, &req);
    assert!(
        resp.status_code < 500,
        "status {} for {url:?}",
        resp.status_code
    );

    if resp.status_code != 200 || method != "POST" {
        return;
    }
    let (mut reader, _) = resp.data.into_reader_and_size();
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    let out = String::from_utf8(out).expect("reply is not UTF-8");
    let reply = match wxmp::protocol::envelope::ReplyEnvelope::read(&out) {
        Some(_) => safe_mode(APP_ID)
            .open_reply(&token, &out)
            .unwrap_or_else(|e| panic!("reply does not open ({e}): {out:?}")),
        None => out,
    };
    if let Err(e) = Reply::parse(&reply) {
        panic!("reply does not read back ({e}): {reply:?}");
    }
});
