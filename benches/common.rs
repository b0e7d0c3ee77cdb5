//! Inputs shared by the micro-benchmarks and `gen_safe`, so both measure the same messages and
//! rules as `scripts/bench.sh`.
#![allow(dead_code)] // each including target uses a different part

use wxmp::protocol::crypto::AesKey;
use wxmp::protocol::envelope::SafeMode;
use wxmp::protocol::message::{Kind, Message};
use wxmp::protocol::verify::Token;

pub const TOKEN: &str = "benchtoken";
pub const TIMESTAMP: &str = "1700000000";
pub const NONCE: &str = "1320562132";
/// The EncodingAESKey and AppID of Tencent's own safe-mode samples.
pub const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
pub const APP_ID: &str = "wx2c2769f8efd9abc2";
pub const TO_USER: &str = "gh_7f083739789a";
pub const FROM_USER: &str = "oia2TjjewbmiOUlr6X-1crbLOvLw";

/// A text push as WeChat sends it (same shape as `benches/wrk/common.lua`).
pub fn text_message(content: &str, msg_id: u64) -> String {
    Message::new(
        TO_USER,
        FROM_USER,
        1_700_000_000,
        Kind::Text {
            content: Some(content.into()),
        },
    )
    .with_msg_id(msg_id)
    .to_xml()
}

pub fn token() -> Token {
    Token::new(TOKEN).expect("bench token")
}

pub fn safe_mode() -> SafeMode {
    SafeMode {
        key: AesKey::from_encoding_aes_key(AES_KEY).expect("sample key"),
        app_id: APP_ID.into(),
    }
}

/// `xml` as a safe-mode push: its msg_signature (for the query) and the body.
pub fn sealed_push(xml: &str, random: &[u8; 16]) -> (String, String) {
    sealed_push_at(xml, random, TIMESTAMP, NONCE)
}

/// `xml` as a safe-mode push signed at `ts` with `nonce`: its msg_signature and the body.
pub fn sealed_push_at(xml: &str, random: &[u8; 16], ts: &str, nonce: &str) -> (String, String) {
    let sealed = safe_mode().seal(&token(), xml, ts, nonce, random);
    let body = sealed.push_xml(TO_USER);
    (sealed.msg_signature, body)
}

/// Seconds since the epoch now: the timestamp a fresh push carries (the server refuses one
/// outside its replay window).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A timestamp (now) and the `n`th nonce: a query no earlier push used.
pub fn fresh(n: u64) -> (String, String) {
    (unix_now().to_string(), n.to_string())
}

/// `signature=…&timestamp=…&nonce=…` for the bench token.
pub fn signed_query(ts: &str, nonce: &str) -> String {
    let sig = wxmp::protocol::verify::signature(&token(), ts, nonce);
    format!("signature={sig}&timestamp={ts}&nonce={nonce}")
}

/// `n` regex rules that never match the benchmark texts, in a few common shapes (anchored and
/// not, case-insensitive, Unicode classes, captures).
pub fn extra_rules(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let pattern = match i % 4 {
            0 => format!(r"^订单{i}\s*(\d+)$"),
            1 => format!(r"(?i)promo-{i}-[a-z]{{3,8}}"),
            2 => format!(r"^/cmd{i}(\s+\w+)*$"),
            _ => format!(r"快递\s*{i}号"),
        };
        out.push_str(&format!(
            "\n[[rules]]\nregex = '{pattern}'\nreply.text = \"rule {i}\"\n"
        ));
    }
    out
}
