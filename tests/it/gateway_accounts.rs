//! The API gateway with an accounts file, against the real binary and the real `wxmp fake-api`:
//! the shared gateway serves each account under its name (`/<name>/cgi-bin/...`) with that
//! account's token; an account's own `api_proxy` serves `HTTP_PROXY` clients; both follow live
//! changes of the accounts file; commands get their own account's gateway.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::api::{Fake, APPID, SECRET};
use crate::kit::binary::{command as wxmp, Wxmp};
use crate::kit::http::request as http;
use crate::kit::tempdir;
use crate::kit::wait::{self, secs};

/// A loopback port free a moment ago: an account's own gateway needs a fixed one.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `[[account]]` with the API of the fake, and `extra` lines.
fn with_api(name: &str, extra: &str) -> String {
    format!(
        "[[account]]\nname = \"{name}\"\ntoken = \"token{name}1\"\nappid = \"{APPID}\"\nsecret = \"{SECRET}\"\n{extra}\n"
    )
}

/// An account without the API.
fn without_api(name: &str) -> String {
    format!("[[account]]\nname = \"{name}\"\ntoken = \"token{name}1\"\n\n")
}

fn write_accounts(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("accounts.toml");
    // Written whole and renamed, so the watcher never reads half a file.
    let tmp = dir.join("accounts.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    file
}

/// wxmp with `file`, the shared gateway on a free port and the API at `fake`; token caches in
/// `dir`.
fn start(dir: &Path, file: &Path, fake: &Fake) -> Wxmp {
    Wxmp::builder()
        .args(&[
            "--accounts",
            file.to_str().unwrap(),
            "--api-base",
            &fake.base,
            "--api-proxy",
            "127.0.0.1:0",
        ])
        .env("XDG_CACHE_HOME", dir.to_str().unwrap())
        .start()
}

fn call(addr: &str, method: &str, target: &str, body: &[u8]) -> (u16, Value) {
    let (status, body) = http(addr, method, target, body);
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{method} {target} on {addr}: not JSON ({e}): {body:?}"));
    (status, json)
}

fn errmsg(v: &Value) -> &str {
    v["errmsg"].as_str().unwrap_or("")
}

#[test]
fn the_shared_gateway_picks_the_account_by_the_name_before_the_path() {
    let fake = Fake::start(&[]);
    let dir = tempdir();
    let file = write_accounts(&dir, &[with_api("a", ""), without_api("c")].concat());
    let server = start(&dir, &file, &fake);
    let gw = server
        .api_proxy
        .clone()
        .unwrap_or_else(|| panic!("no gateway; banner: {}", server.banner));
    assert!(
        server.banner.contains("API gateway on http://"),
        "{}",
        server.banner
    );
    // The name picks the account and is stripped: the fake sees /cgi-bin/menu/create with a's
    // token.
    let menu = r#"{"button":[{"type":"click","name":"今日歌曲","key":"V1001_TODAY_MUSIC"}]}"#;
    let (status, v) = call(&gw, "POST", "/a/cgi-bin/menu/create", menu.as_bytes());
    assert_eq!((status, v["errcode"].as_i64()), (200, Some(0)), "{v}");
    assert_eq!(fake.count("/cgi-bin/menu/create"), 1);
    let (_, v) = call(&gw, "GET", "/a/cgi-bin/menu/get", b"");
    assert_eq!(v["menu"]["button"][0]["name"], "今日歌曲", "{v}");
    // Token requests are answered with the account's token, checked against its AppID.
    let token = format!("/a/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret=x");
    let (_, v) = call(&gw, "GET", &token, b"");
    assert!(
        v["access_token"].as_str().is_some_and(|t| !t.is_empty()),
        "{v}"
    );
    let (_, v) = call(
        &gw,
        "GET",
        "/a/cgi-bin/token?grant_type=client_credential&appid=wxother&secret=x",
        b"",
    );
    assert_eq!(v["errcode"], 40013, "{v}");
    // An account without appid and secret, a name no account has, no name at all, and a
    // client that came through HTTP_PROXY (which cannot add a name): each a JSON errcode
    // body that says what to do.
    let (status, v) = call(&gw, "GET", "/c/cgi-bin/menu/get", b"");
    assert_eq!(status, 403, "{v}");
    assert!(
        errmsg(&v).contains("account \"c\" has no appid and secret"),
        "{v}"
    );
    let (status, v) = call(&gw, "GET", "/nobody/cgi-bin/menu/get", b"");
    assert_eq!(status, 404, "{v}");
    assert!(
        errmsg(&v).contains("no account named \"nobody\"") && errmsg(&v).contains("a, c"),
        "{v}"
    );
    for target in [
        "/cgi-bin/menu/get",
        "/sns/userinfo?access_token=USER&openid=o1",
        "http://api.weixin.qq.com/cgi-bin/menu/get",
    ] {
        let (status, v) = call(&gw, "GET", target, b"");
        assert_eq!(status, 400, "{target}: {v}");
        assert!(
            errmsg(&v).contains("put the account's name first")
                && errmsg(&v).contains("own api_proxy"),
            "{target}: {v}"
        );
    }
    assert_eq!(
        fake.count("/cgi-bin/menu/get"),
        1,
        "a refused call reached WeChat"
    );
    for line in [
        "[a] gateway POST /cgi-bin/menu/create 200 errcode 0",
        "[a] gateway GET /cgi-bin/token?grant_type&appid&secret 200 errcode 0",
        "[c] gateway GET /cgi-bin/menu/get 403 errcode -; refused: the account has no appid and secret",
        "[nobody] gateway GET /cgi-bin/menu/get 404 errcode -; refused: no such account",
        "gateway GET /cgi-bin/menu/get 400 errcode -; refused: no account in the path",
    ] {
        server.wait_for_log(line, secs(10));
    }
    // A live change: c is removed, d added; the prefix follows at once.
    write_accounts(&dir, &[with_api("a", ""), with_api("d", "")].concat());
    server.wait_for_log("accounts reloaded (file changed): 2 accounts", secs(15));
    let (status, v) = call(&gw, "GET", "/c/cgi-bin/menu/get", b"");
    assert_eq!(status, 404, "{v}");
    let (status, v) = call(&gw, "GET", "/d/cgi-bin/menu/get", b"");
    assert_eq!(
        (status, v["menu"]["button"][0]["name"].as_str()),
        (200, Some("今日歌曲")),
        "{v}"
    );
}

#[test]
fn an_account_s_own_api_proxy_serves_http_proxy_clients_and_opens_and_closes_live() {
    let fake = Fake::start(&[]);
    let dir = tempdir();
    let p1 = free_port();
    let p2 = (0..100).map(|_| free_port()).find(|p| *p != p1).unwrap();
    let own = |p: u16| format!("api_proxy = \"127.0.0.1:{p}\"");
    let file = write_accounts(&dir, &[with_api("a", &own(p1)), without_api("b")].concat());
    let server = start(&dir, &file, &fake);
    let a = format!("127.0.0.1:{p1}");
    server.wait_for_log(
        &format!("[a] API gateway on http://{a} (api_proxy)"),
        secs(10),
    );
    // Absolute form, as a client with HTTP_PROXY=http://127.0.0.1:P1 sends it: no name needed.
    let (status, v) = call(&a, "GET", "http://api.weixin.qq.com/cgi-bin/menu/get", b"");
    assert_eq!((status, v["errcode"].as_i64()), (200, Some(46003)), "{v}");
    let (_, v) = call(
        &a,
        "GET",
        &format!("/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret=x"),
        b"",
    );
    assert!(v["access_token"].is_string(), "{v}");
    // Other hosts are still refused there: it is not an open proxy.
    let (status, _) = call(&a, "GET", "http://example.com/", b"");
    assert_eq!(status, 403);
    server.wait_for_log(
        "[a] gateway GET /cgi-bin/menu/get 200 errcode 46003",
        secs(10),
    );
    // Live: a's gateway moves to P2, and a new account d takes P1 as soon as a lets it go.
    let text = [
        with_api("a", &own(p2)),
        without_api("b"),
        with_api("d", &own(p1)),
    ]
    .concat();
    write_accounts(&dir, &text);
    server.wait_for_log(
        &format!("[a] API gateway on http://{a} closed: its api_proxy changed"),
        secs(15),
    );
    server.wait_for_log(
        &format!("[a] API gateway on http://127.0.0.1:{p2} (api_proxy)"),
        secs(15),
    );
    server.wait_for_log(
        &format!("[d] API gateway on http://{a} (api_proxy)"),
        secs(15),
    );
    let (status, v) = call(
        &format!("127.0.0.1:{p2}"),
        "GET",
        "http://api.weixin.qq.com/cgi-bin/menu/get",
        b"",
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = call(&a, "GET", "http://api.weixin.qq.com/cgi-bin/menu/get", b"");
    assert_eq!(status, 200, "{v}");
    server.wait_for_log("[d] gateway GET /cgi-bin/menu/get 200", secs(10));
    // d is removed: its gateway closes, and nothing listens on P1 any more.
    write_accounts(&dir, &[with_api("a", &own(p2)), without_api("b")].concat());
    server.wait_for_log(
        &format!("[d] API gateway on http://{a} closed: it has no api_proxy any more"),
        secs(15),
    );
    wait::until(secs(10), format_args!("nothing listening on {a}"), || {
        std::net::TcpStream::connect(&a).is_err()
    });
    let log = server.log();
    assert!(!log.contains(SECRET), "{log}");
}

#[test]
fn commands_get_their_own_account_s_gateway() {
    let fake = Fake::start(&[]);
    let dir = tempdir();
    std::fs::write(
        dir.join("bot.sh"),
        "cat >/dev/null; printf '{\"MsgType\":\"text\",\"Content\":\"%s\"}' \"$WXMP_API_PROXY\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("rules.toml"),
        "[default]\nreply.command = { argv = [\"sh\", \"bot.sh\"], fallback = { text = \"稍等\" } }\n",
    )
    .unwrap();
    let p = free_port();
    let rules = "rules = \"rules.toml\"\nlate = \"stretch\"";
    let text = [
        with_api("a", rules),
        with_api("b", &format!("{rules}\napi_proxy = \"127.0.0.1:{p}\"")),
    ]
    .concat();
    let file = write_accounts(&dir, &text);
    let server = start(&dir, &file, &fake);
    let gw = server.api_proxy.clone().unwrap();
    for (name, want) in [
        ("a", format!("http://{gw}/a")),
        ("b", format!("http://127.0.0.1:{p}")),
    ] {
        let url = format!("http://{}/weixin/{name}", server.addr);
        let o = wxmp(&["send", "--url", &url, "--token", &format!("token{name}1")])
            .args(["text", "where"])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.starts_with(&format!("text: {want}")),
            "{name}: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn check_accounts_shows_each_own_gateway_and_refuses_a_shared_address() {
    let dir = tempdir();
    let file = write_accounts(
        &dir,
        &[
            with_api("a", "api_proxy = \"127.0.0.1:9251\""),
            with_api("b", "api_proxy = \"127.0.0.1:9251\""),
        ]
        .concat(),
    );
    let o = wxmp(&["check-accounts", file.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(":12: account \"b\": duplicate api_proxy 127.0.0.1:9251: account \"a\" (line 6) listens on 127.0.0.1:9251"),
        "{err}"
    );
    let file = write_accounts(
        &dir,
        &[
            with_api("a", "api_proxy = \"127.0.0.1:9251\""),
            without_api("b"),
        ]
        .concat(),
    );
    let o = wxmp(&["check-accounts", file.to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.lines().any(|l| l.starts_with("a ")
            && l.ends_with("; its own API gateway on http://127.0.0.1:9251")),
        "{out}"
    );
}

/// Two accounts with different AppIDs: a call through `/a/...` reaches WeChat with a's token,
/// one through `/b/...` (or through b's own `api_proxy`, as an `HTTP_PROXY` client sends it) with
/// b's. `wxmp fake-api` serves both AppIDs and says which AppID's token sent each message.
#[test]
fn calls_under_each_name_arrive_with_that_account_s_own_token() {
    const APPID_B: &str = "wxgwtwo000000002";
    let fake = Fake::start(&["--account", &format!("{APPID_B}:secrettwo")]);
    let dir = tempdir();
    let p = free_port();
    let b = format!(
        "[[account]]\nname = \"b\"\ntoken = \"tokenb1\"\nappid = \"{APPID_B}\"\nsecret = \"secrettwo\"\napi_proxy = \"127.0.0.1:{p}\"\n"
    );
    let file = write_accounts(&dir, &[with_api("a", ""), b].concat());
    let server = start(&dir, &file, &fake);
    let gw = server.api_proxy.clone().unwrap();
    let own = format!("127.0.0.1:{p}");
    let kf = |to: &str| {
        format!(r#"{{"touser":"{to}","msgtype":"text","text":{{"content":"hi"}}}}"#).into_bytes()
    };
    for (addr, target, user) in [
        (&gw, "/a/cgi-bin/message/custom/send", "o_via_a"),
        (&gw, "/b/cgi-bin/message/custom/send", "o_via_b"),
        (
            &own,
            "http://api.weixin.qq.com/cgi-bin/message/custom/send",
            "o_via_b_own",
        ),
    ] {
        let (status, v) = call(addr, "POST", target, &kf(user));
        assert_eq!(
            (status, v["errcode"].as_i64()),
            (200, Some(0)),
            "{target}: {v}"
        );
    }
    let sent: Vec<(String, String)> = fake.stats()["kf"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let field = |k: &str| m[k].as_str().unwrap_or("").to_owned();
            (field("touser"), field("appid"))
        })
        .collect();
    let whose = |user: &str| {
        sent.iter()
            .find(|(u, _)| u == user)
            .map(|(_, a)| a.as_str())
    };
    assert_eq!(whose("o_via_a"), Some(APPID), "{sent:?}");
    assert_eq!(whose("o_via_b"), Some(APPID_B), "{sent:?}");
    assert_eq!(whose("o_via_b_own"), Some(APPID_B), "{sent:?}");
    // Each name's token requests get that account's own token, checked against its AppID.
    let token = |name: &str, appid: &str| {
        let target = format!(
            "/{name}/cgi-bin/token?grant_type=client_credential&appid={appid}&secret=dummy"
        );
        let (_, v) = call(&gw, "GET", &target, b"");
        v["access_token"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{name}: {v}"))
    };
    assert_ne!(token("a", APPID), token("b", APPID_B));
    let (_, v) = call(
        &gw,
        "GET",
        &format!("/b/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret=x"),
        b"",
    );
    assert_eq!(v["errcode"], 40013, "{v}");
}
