//! The one request signer: the query WeChat adds to a push. WeChat signs each push with the time
//! it sent it and a fresh nonce (its retries repeat the query), so [`query`] and [`target`] do the
//! same for the real binary; [`query_at`] signs a given timestamp and nonce, for the in-process
//! harness's clock and for reproducible tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use wxmp::protocol::verify::{self, Token};

/// The fixed timestamp and nonce of reproducible requests.
pub const TS: &str = "1714036504";
pub const NONCE: &str = "1514711492";

/// `signature=…&timestamp=…&nonce=…` for `token`, `ts` and `nonce`.
pub fn query_at(token: &Token, ts: &str, nonce: &str) -> String {
    let sig = verify::signature(token, ts, nonce);
    format!("signature={sig}&timestamp={ts}&nonce={nonce}")
}

/// A nonce no other request of this test run has used (apart across test processes too).
pub fn fresh_nonce() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}{n:06}", std::process::id() % 10_000)
}

/// A query signed for `token` now, with a fresh nonce, as WeChat signs a push (the replay window
/// refuses an old timestamp, and a query seen before on another body).
pub fn query(token: &str) -> String {
    let token = Token::new(token).unwrap_or_else(|e| panic!("bad test token {token:?}: {e}"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    query_at(&token, &now.to_string(), &fresh_nonce())
}

/// `/weixin?` and [`query`].
pub fn target(token: &str) -> String {
    format!("/weixin?{}", query(token))
}

#[test]
fn the_query_is_sha1_of_the_sorted_parts() {
    // sha1("1514711492" + "1714036504" + "testtoken"), computed outside wxmp (Python's hashlib).
    assert_eq!(
        query_at(&Token::new("testtoken").unwrap(), TS, NONCE),
        "signature=ed26e9cf5447a1d6ff426d00b1b69e4e813e9a64&timestamp=1714036504&nonce=1514711492"
    );
}

#[test]
fn each_target_is_signed_now_with_its_own_nonce() {
    let field = |target: &str, name: &str| -> String {
        target
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {name} in {target}"))
            .to_owned()
    };
    let (a, b) = (target("testtoken"), target("testtoken"));
    assert_ne!(field(&a, "nonce"), field(&b, "nonce"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ts: u64 = field(&a, "timestamp").parse().unwrap();
    assert!(now.abs_diff(ts) <= 60, "timestamp {ts}, now {now}");
    let token = Token::new("testtoken").unwrap();
    assert_eq!(
        a,
        format!(
            "/weixin?{}",
            query_at(&token, &field(&a, "timestamp"), &field(&a, "nonce"))
        )
    );
}
