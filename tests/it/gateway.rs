//! The API gateway (`--api-proxy`), against the real binary and the real `wxmp fake-api`: the
//! token added or replaced, token requests answered by wxmp, one retry after 40001, other hosts
//! and CONNECT refused, the token never logged. What the fake cannot show (the exact bytes that
//! reached WeChat: `/sns/` untouched, a multipart upload byte for byte) is seen by a recorder
//! standing where WeChat would be.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::api::{Fake, APPID, SECRET};
use crate::kit::binary::{command as wxmp, Wxmp as Server};
use crate::kit::http::request as http;
use crate::kit::tempdir;
use crate::kit::wait::{at_most, secs};

/// A server with the gateway on a free loopback port, calling the API at `base`.
pub struct Gw {
    pub server: Server,
    pub addr: String,
    pub cache: PathBuf,
}

pub fn start(base: &str, extra: &[&str]) -> Gw {
    let cache = tempdir().join("token.json");
    let mut args = vec![
        "--token",
        "gwtoken1",
        "--appid",
        APPID,
        "--secret",
        SECRET,
        "--api-base",
        base,
        "--token-cache",
        cache.to_str().unwrap(),
        "--api-proxy",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    let addr = server
        .api_proxy
        .clone()
        .unwrap_or_else(|| panic!("no gateway address; banner: {}", server.banner));
    Gw {
        server,
        addr,
        cache,
    }
}

impl Gw {
    fn call(&self, method: &str, target: &str, body: &[u8]) -> (u16, Value) {
        let (status, body) = http(&self.addr, method, target, body);
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{method} {target}: not JSON ({e}): {body:?}"));
        (status, json)
    }

    /// The token wxmp holds, from its cache file.
    fn token(&self) -> String {
        let text = std::fs::read_to_string(&self.cache).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    }
}

#[test]
fn the_token_is_added_or_replaced_and_token_requests_are_answered_by_wxmp() {
    let fake = Fake::start(&[]);
    let gw = start(&fake.base, &[]);
    // No token at all: wxmp adds its own, so the fake answers the call, not 41001.
    let (status, v) = gw.call("GET", "/cgi-bin/menu/get", b"");
    assert_eq!((status, v["errcode"].as_i64()), (200, Some(46003)), "{v}");
    // A stale token of the caller's is replaced.
    let menu = r#"{"button":[{"type":"click","name":"今日歌曲","key":"V1001_TODAY_MUSIC"}]}"#;
    let (_, v) = gw.call(
        "POST",
        "/cgi-bin/menu/create?access_token=STALE_TOKEN_OF_THE_CALLER",
        menu.as_bytes(),
    );
    assert_eq!(v["errcode"], 0, "{v}");
    // Absolute form, as a client with HTTP_PROXY sends it, for both API hosts.
    for host in ["api.weixin.qq.com", "api2.weixin.qq.com"] {
        let (status, v) = gw.call("GET", &format!("http://{host}/cgi-bin/menu/get"), b"");
        assert_eq!(status, 200);
        assert_eq!(v["menu"]["button"][0]["name"], "今日歌曲", "{v}");
    }
    // Token requests, with a dummy secret, get wxmp's own token and what it has left.
    let token = gw.token();
    let (_, v) = gw.call(
        "POST",
        "/cgi-bin/stable_token",
        format!(r#"{{"grant_type":"client_credential","appid":"{APPID}","secret":"dummy"}}"#)
            .as_bytes(),
    );
    assert_eq!(v["access_token"], token.as_str(), "{v}");
    assert!(v["expires_in"].as_u64().is_some_and(|s| s > 7000), "{v}");
    let (_, v) = gw.call(
        "GET",
        &format!("/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret=dummy"),
        b"",
    );
    assert_eq!(v["access_token"], token.as_str(), "{v}");
    // A forced refresh of a token younger than 30 s is not honoured: WeChat limits them.
    let (_, v) = gw.call(
        "POST",
        "/cgi-bin/stable_token",
        br#"{"grant_type":"client_credential","secret":"dummy","force_refresh":true}"#,
    );
    assert_eq!(v["access_token"], token.as_str(), "{v}");
    // Another AppID gets WeChat's 40013, not this account's token.
    let (_, v) = gw.call(
        "GET",
        "/cgi-bin/token?grant_type=client_credential&appid=wxother&secret=x",
        b"",
    );
    assert_eq!(v["errcode"], 40013, "{v}");
    assert!(v.get("access_token").is_none());
    // The fake handed out one token, to wxmp: no SDK fetch reached it.
    assert_eq!(fake_token_requests(&fake), 1);
    // The log is written by its own thread: wait for each line.
    for line in [
        "forced refresh refused",
        "gateway POST /cgi-bin/menu/create?access_token 200 errcode 0",
        "gateway GET /cgi-bin/menu/get 200 errcode 46003",
        "gateway GET /cgi-bin/token?grant_type&appid&secret 200 errcode 40013",
    ] {
        gw.server.wait_for_log(line, secs(10));
    }
    let log = gw.server.log();
    for secret in [token.as_str(), "STALE_TOKEN_OF_THE_CALLER", SECRET] {
        assert!(!log.contains(secret), "the log shows {secret}: {log}");
    }
}

fn fake_token_requests(fake: &Fake) -> u64 {
    let addr = fake.base.trim_start_matches("http://");
    let (status, body) = http(addr, "GET", "/fake/stats", b"");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["token_requests"].as_u64().unwrap()
}

#[test]
fn a_rejected_token_is_replaced_and_the_call_sent_once_more() {
    // The fake refuses the first API call with 40001, as WeChat does when another process
    // fetched a classic token.
    let fake = Fake::start(&["--fail", "40001:once"]);
    let gw = start(&fake.base, &[]);
    let (status, v) = gw.call(
        "POST",
        "/cgi-bin/message/custom/send",
        r#"{"touser":"o_gw_user","msgtype":"text","text":{"content":"经由网关"}}"#.as_bytes(),
    );
    assert_eq!((status, v["errcode"].as_i64()), (200, Some(0)), "{v}");
    assert!(
        at_most(secs(10), || fake
            .output()
            .contains("kf send → o_gw_user: text \"经由网关\"")),
        "{}",
        fake.output()
    );
    gw.server.wait_for_log(
        "gateway POST /cgi-bin/message/custom/send 200 errcode 0, retried after 40001",
        secs(10),
    );
    // Once only: a second rejection goes back to the caller as it came.
    let fake = Fake::start(&["--fail", "40001"]);
    let gw = start(&fake.base, &[]);
    let (_, v) = gw.call("GET", "/cgi-bin/menu/get", b"");
    assert_eq!(v["errcode"], 40001, "{v}");
    gw.server
        .wait_for_log("errcode 40001, retried after 40001", secs(10));
}

#[test]
fn other_hosts_connect_and_large_bodies_are_refused() {
    let fake = Fake::start(&[]);
    let gw = start(&fake.base, &[]);
    let (status, v) = gw.call("GET", "http://example.com/cgi-bin/menu/get", b"");
    assert_eq!(status, 403);
    assert!(
        v["errmsg"].as_str().unwrap().contains("not an open proxy"),
        "{v}"
    );
    let (status, v) = gw.call("CONNECT", "api.weixin.qq.com:443", b"");
    assert_eq!(status, 405);
    assert!(
        v["errmsg"]
            .as_str()
            .unwrap()
            .contains("http://api.weixin.qq.com"),
        "{v}"
    );
    // Over 10 MB (WeChat's largest upload) is refused before it is read.
    let mut s = TcpStream::connect(&gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /cgi-bin/media/upload?type=video HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = String::new();
    BufReader::new(s).read_line(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    gw.server
        .wait_for_log("413 errcode -; refused: body over the limit", secs(10));
    // The fake saw none of them.
    assert_eq!(fake_token_requests(&fake), 0);
}

#[test]
fn a_gateway_on_another_address_needs_the_networks_named() {
    let out = wxmp(&[
        "--token",
        "gwtoken1",
        "--port",
        "0",
        "--appid",
        APPID,
        "--secret",
        SECRET,
        "--api-proxy",
        "0.0.0.0:0",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not a loopback address") && err.contains("--api-proxy-allow"),
        "{err}"
    );
    let out = wxmp(&[
        "--token",
        "gwtoken1",
        "--port",
        "0",
        "--api-proxy",
        "127.0.0.1:0",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --appid and --secret"));
}

/// One request as it reached the recorder: the request line, the headers and the body.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Stands where WeChat would be and keeps what it gets: hands out `REC_TOKEN` for a token
/// request and answers `{"errcode":0}` to anything else.
fn recorder() -> (String, Arc<Mutex<Vec<Seen>>>) {
    recorder_holding(Arc::new(AtomicBool::new(false)), Arc::default())
}

/// A recorder that holds calls to `/cgi-bin/slow` unanswered while `hold` is set, counting
/// them in `waiting`.
fn recorder_holding(
    hold: Arc<AtomicBool>,
    waiting: Arc<AtomicUsize>,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&seen);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (keep, hold, waiting) =
                (Arc::clone(&keep), Arc::clone(&hold), Arc::clone(&waiting));
            thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.contains("/cgi-bin/slow") {
                    waiting.fetch_add(1, Ordering::SeqCst);
                    while hold.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(20));
                    }
                }
                let mut headers = Vec::new();
                let mut length = 0;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap();
                        }
                        headers.push((k.trim().to_owned(), v.trim().to_owned()));
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let answer = if line.contains("/cgi-bin/stable_token") {
                    r#"{"access_token":"REC_TOKEN","expires_in":7200}"#
                } else {
                    r#"{"errcode":0,"errmsg":"ok"}"#
                };
                keep.lock().unwrap().push(Seen {
                    line: line.trim_end().to_owned(),
                    headers,
                    body,
                });
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            });
        }
    });
    (base, seen)
}

#[test]
fn sns_calls_pass_untouched_and_a_multipart_upload_arrives_byte_for_byte() {
    let (base, seen) = recorder();
    let gw = start(&base, &[]);
    let (status, v) = gw.call(
        "GET",
        "/sns/userinfo?access_token=USER_OAUTH_TOKEN&openid=o1&lang=zh_CN",
        b"",
    );
    assert_eq!((status, v["errcode"].as_i64()), (200, Some(0)), "{v}");
    // Every byte value, and a boundary-like line inside the file, in a multipart body.
    let mut file: Vec<u8> = (0..=255u8).collect();
    file.extend_from_slice(b"\r\n--not-the-boundary\r\n");
    file.extend((0..50_000u32).map(|i| (i * 7 % 251) as u8));
    let boundary = "wxmpgatewayboundary42";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"media\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let mut s = TcpStream::connect(&gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /cgi-bin/media/upload?type=image&access_token=OLD HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let seen = seen.lock().unwrap().clone();
    let sns: Vec<&Seen> = seen.iter().filter(|s| s.line.contains("/sns/")).collect();
    assert_eq!(
        sns[0].line,
        "GET /sns/userinfo?access_token=USER_OAUTH_TOKEN&openid=o1&lang=zh_CN HTTP/1.1"
    );
    let upload = seen
        .iter()
        .find(|s| s.line.contains("/media/upload"))
        .expect("the upload reached WeChat");
    assert_eq!(
        upload.line,
        "POST /cgi-bin/media/upload?access_token=REC_TOKEN&type=image HTTP/1.1"
    );
    assert!(upload.body == body, "the body changed on the way");
    let ct = upload
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str());
    assert_eq!(ct, Some(content_type.as_str()));
    gw.server.wait_for_log(
        "gateway GET /sns/userinfo?access_token&openid&lang 200 errcode 0",
        secs(10),
    );
    let log = gw.server.log();
    for secret in ["REC_TOKEN", "USER_OAUTH_TOKEN"] {
        assert!(!log.contains(secret), "the log shows {secret}: {log}");
    }
}

/// WeChat's passive refresh: a caller's `force_refresh` is honoured when wxmp's token is at
/// least 30 s old, and the caller's token (when it names one) is still wxmp's current one.
#[test]
fn a_forced_refresh_replaces_a_token_at_least_30_s_old() {
    let fake = Fake::start(&[]);
    let addr = fake.base.trim_start_matches("http://");
    // A token fetched a minute ago, in the cache file wxmp starts from.
    let (_, body) = http(
        addr,
        "POST",
        "/cgi-bin/stable_token",
        format!(r#"{{"grant_type":"client_credential","appid":"{APPID}","secret":"{SECRET}"}}"#)
            .as_bytes(),
    );
    let old: Value = serde_json::from_str(&body).unwrap();
    let old = old["access_token"].as_str().unwrap().to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let cache = tempdir().join("token.json");
    let file = serde_json::json!({
        "app_id": APPID, "api_base": fake.base, "endpoint": "stable", "access_token": old,
        "fetched_at": now - 60, "expires_at": now + 7000,
    });
    std::fs::write(&cache, file.to_string()).unwrap();
    // The last --token-cache wins.
    let mut gw = start(&fake.base, &["--token-cache", cache.to_str().unwrap()]);
    gw.cache = cache;
    let (_, v) = gw.call("GET", "/cgi-bin/token?grant_type=client_credential", b"");
    assert_eq!(
        v["access_token"],
        old.as_str(),
        "the cached token is used: {v}"
    );
    // A caller naming an older token than wxmp's is told the current one, without a refresh.
    let force = br#"{"grant_type":"client_credential","force_refresh":true}"#;
    let (_, v) = gw.call("POST", "/cgi-bin/stable_token?access_token=OLDER", force);
    assert_eq!(v["access_token"], old.as_str(), "{v}");
    let (_, v) = gw.call("POST", "/cgi-bin/stable_token", force);
    let new = v["access_token"].as_str().unwrap().to_owned();
    assert_ne!(new, old, "a token a minute old is refreshed on request");
    assert_eq!(gw.token(), new, "and kept as wxmp's own");
    // The new token is seconds old: a second forced refresh is refused.
    let (_, v) = gw.call("POST", "/cgi-bin/stable_token", force);
    assert_eq!(v["access_token"], new.as_str(), "{v}");
    // The log is written by its own thread: wait for each line.
    for line in [
        "refreshed on the caller's request",
        "forced refresh refused",
        "forced refresh not needed",
    ] {
        gw.server.wait_for_log(line, secs(10));
    }
    assert!(!gw.server.log().contains(&new));
}

/// Past 32 calls in flight a call gets 503 with a JSON errcode body at once, and the slots come
/// back when the calls end.
#[test]
fn past_its_calls_in_flight_a_call_gets_503_at_once() {
    let hold = Arc::new(AtomicBool::new(true));
    let waiting = Arc::new(AtomicUsize::new(0));
    let (base, _) = recorder_holding(Arc::clone(&hold), Arc::clone(&waiting));
    let gw = start(&base, &[]);
    let held: Vec<_> = (0..32)
        .map(|_| {
            let addr = gw.addr.clone();
            thread::spawn(move || http(&addr, "GET", "/cgi-bin/slow", b""))
        })
        .collect();
    let all_held = at_most(secs(30), || waiting.load(Ordering::SeqCst) == 32);
    let (status, busy) = http(&gw.addr, "GET", "/cgi-bin/menu/get", b"");
    hold.store(false, Ordering::SeqCst);
    assert!(
        all_held,
        "the 32 calls did not all reach WeChat: {}",
        gw.server.log()
    );
    assert_eq!(status, 503, "{busy}");
    let busy: Value = serde_json::from_str(&busy).unwrap();
    assert_eq!(busy["errcode"], -1);
    assert!(
        busy["errmsg"]
            .as_str()
            .unwrap()
            .contains("32 calls are in flight"),
        "{busy}"
    );
    for h in held {
        assert_eq!(h.join().unwrap().0, 200);
    }
    let (status, _) = http(&gw.addr, "GET", "/cgi-bin/menu/get", b"");
    assert_eq!(status, 200, "the slots came back");
}
