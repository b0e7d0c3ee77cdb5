//! The fake platform itself: requests in, WeChat's JSON out, no HTTP server and no clock of its
//! own (the time comes with each request), so tests drive it directly.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::api::kf;
use crate::api::menu::Menu;
use crate::fake_api::args::{Failure, FakeConfig};
use crate::protocol::query::percent_decode;
use crate::text::printable;

/// One request, as the HTTP edge read it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    pub body: &'a [u8],
    pub peer: IpAddr,
    /// Milliseconds since the Unix epoch.
    pub now_ms: u64,
}

/// The answer, and the lines to print (what a user of the fake watches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub lines: Vec<String>,
}

/// What a request is, for failure injection and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Token,
    Api,
}

#[derive(Debug)]
struct Issued {
    token: String,
    expires_at_ms: u64,
    lifetime_ms: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Tokens WeChat would still accept, newest last.
    tokens: Vec<Issued>,
    issued: u64,
    menu: Option<Value>,
    fail: Vec<Failure>,
    token_requests: u64,
    stable_requests: u64,
    classic_requests: u64,
    forced_refreshes: u64,
    calls: BTreeMap<String, u64>,
    errcodes: BTreeMap<i64, u64>,
    rid: u64,
}

/// The fake WeChat API.
pub struct Platform {
    config: FakeConfig,
    /// Makes this run's tokens differ from another run's.
    seed: u64,
    state: Mutex<State>,
}

type Outcome = Result<(Value, Vec<String>), (i64, String)>;

impl Platform {
    pub fn new(config: FakeConfig, seed: u64) -> Platform {
        let state = State {
            fail: config.fail.clone(),
            ..State::default()
        };
        Platform {
            config,
            seed,
            state: Mutex::new(state),
        }
    }

    pub fn config(&self) -> &FakeConfig {
        &self.config
    }

    pub fn handle(&self, req: &Request<'_>) -> Answer {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let kind = match (req.method, req.path) {
            ("GET", "/fake/stats") => return answer(200, &state.stats(), vec![]),
            ("POST", "/cgi-bin/stable_token") | ("GET", "/cgi-bin/token") => Kind::Token,
            ("POST", "/cgi-bin/menu/create")
            | ("GET", "/cgi-bin/menu/get")
            | ("GET", "/cgi-bin/menu/delete")
            | ("POST", "/cgi-bin/message/custom/send")
            | ("POST", "/cgi-bin/message/custom/typing") => Kind::Api,
            (_, path) => {
                let body = json!({"errcode": 404, "errmsg": format!("the fake does not serve {} {path}", req.method)});
                return answer(404, &body, vec![]);
            }
        };
        *state.calls.entry(req.path.to_owned()).or_insert(0) += 1;
        if kind == Kind::Token {
            state.token_requests += 1;
        }
        let outcome = match state.injected(req.path, kind) {
            Some(code) => Err((code, canned(code, req.peer))),
            None => self.serve(&mut state, req, kind),
        };
        let (body, mut lines, code) = match outcome {
            Ok((body, lines)) => (body, lines, 0),
            Err((code, errmsg)) => {
                state.rid += 1;
                let errmsg = format!("{errmsg} rid: fake-{:04}", state.rid);
                let line = format!("{} {} → errcode {code} ({errmsg})", req.method, req.path);
                (json!({"errcode": code, "errmsg": errmsg}), vec![line], code)
            }
        };
        *state.errcodes.entry(code).or_insert(0) += 1;
        if code == 0 && kind == Kind::Api && lines.is_empty() {
            lines.push(format!("{} {} → ok", req.method, req.path));
        }
        answer(200, &body, std::mem::take(&mut lines))
    }

    fn serve(&self, state: &mut State, req: &Request<'_>, kind: Kind) -> Outcome {
        if kind == Kind::Token {
            return self.token(state, req);
        }
        state.check_token(req)?;
        match req.path {
            "/cgi-bin/menu/create" => {
                let body = json_body(req.body)?;
                let (menu, _) = Menu::from_json(&body).map_err(|e| (e.errcode, e.reason))?;
                let count = menu.all_buttons().count();
                state.menu = Some(menu.to_json());
                Ok((ok(), vec![format!("menu created: {count} buttons")]))
            }
            "/cgi-bin/menu/get" => match &state.menu {
                Some(menu) => Ok((json!({ "menu": menu }), vec!["menu read".to_owned()])),
                None => Err((46003, "menu no exist".to_owned())),
            },
            "/cgi-bin/menu/delete" => {
                state.menu = None;
                Ok((ok(), vec!["menu deleted".to_owned()]))
            }
            "/cgi-bin/message/custom/send" => {
                let body = json_body(req.body)?;
                let (openid, msg) = kf::Message::from_json(&body)
                    .map_err(|e| (47001, format!("data format error: {e}")))?;
                Ok((ok(), vec![format!("kf send → {openid}: {}", msg.summary())]))
            }
            _ => {
                let body = json_body(req.body)?;
                let openid = body.get("touser").and_then(Value::as_str).unwrap_or("");
                match body.get("command").and_then(Value::as_str) {
                    Some(c @ ("Typing" | "CancelTyping")) if !openid.is_empty() => {
                        Ok((ok(), vec![format!("kf typing → {openid}: {c}")]))
                    }
                    _ => Err((45072, "command invalid".to_owned())),
                }
            }
        }
    }

    fn token(&self, state: &mut State, req: &Request<'_>) -> Outcome {
        let (grant, appid, secret, force, classic) = if req.method == "GET" {
            let q = |n: &str| query_param(req.query, n);
            (q("grant_type"), q("appid"), q("secret"), true, true)
        } else {
            let body = json_body(req.body)?;
            let s = |n: &str| body.get(n).and_then(Value::as_str).map(str::to_owned);
            let force = body.get("force_refresh").and_then(Value::as_bool) == Some(true);
            (s("grant_type"), s("appid"), s("secret"), force, false)
        };
        if classic {
            state.classic_requests += 1;
        } else {
            state.stable_requests += 1;
            if force {
                state.forced_refreshes += 1;
            }
        }
        if grant.as_deref() != Some("client_credential") {
            return Err((40002, "invalid grant_type".into()));
        }
        if appid.as_deref() != Some(self.config.app_id.as_str()) {
            return Err((40013, "invalid appid".into()));
        }
        if secret.as_deref() != Some(self.config.secret.expose()) {
            return Err((40125, "invalid appsecret".into()));
        }
        let now = req.now_ms;
        state.tokens.retain(|t| t.expires_at_ms > now);
        let lifetime_ms = self.config.expires_in.saturating_mul(1000);
        // stable_token's normal mode hands out the current token until it is within its
        // renewal margin (5 minutes, or half of a short lifetime), then a new one while the
        // old one stays valid; forced mode and the classic endpoint replace it at once.
        let reuse = state.tokens.last().filter(|t| {
            let margin = (300_000u64).min(t.lifetime_ms / 2);
            !force && t.expires_at_ms.saturating_sub(now) > margin
        });
        let n = state.token_requests;
        let endpoint = if classic { "token" } else { "stable_token" };
        if let Some(t) = reuse {
            let left = (t.expires_at_ms - now) / 1000;
            let body = json!({"access_token": t.token, "expires_in": left});
            let line = format!("token request {n} ({endpoint}): the same token, {left} s left");
            return Ok((body, vec![line]));
        }
        if force {
            state.tokens.clear();
        }
        state.issued += 1;
        let token = format!("FAKE_{:016x}_{:06}", self.seed, state.issued);
        state.tokens.push(Issued {
            token: token.clone(),
            expires_at_ms: now + lifetime_ms,
            lifetime_ms,
        });
        let how = match (classic, force) {
            (true, _) => "a new token; earlier ones stop working",
            (false, true) => "a new token (force_refresh); earlier ones stop working",
            (false, false) => "a new token",
        };
        let line = format!(
            "token request {n} ({endpoint}): {how}, valid {} s",
            self.config.expires_in
        );
        Ok((
            json!({"access_token": token, "expires_in": self.config.expires_in}),
            vec![line],
        ))
    }
}

impl State {
    /// The errcode of the first `--fail` that applies to this request, used up by one.
    fn injected(&mut self, path: &str, kind: Kind) -> Option<i64> {
        let f = self.fail.iter_mut().find(|f| {
            let place = match &f.path {
                Some(p) => p == path,
                None => match f.errcode {
                    40013 | 40125 | 40243 => kind == Kind::Token,
                    40164 | 61004 | 89503 => true,
                    _ => kind == Kind::Api,
                },
            };
            place && f.remaining != Some(0)
        })?;
        if let Some(n) = &mut f.remaining {
            *n -= 1;
        }
        Some(f.errcode)
    }

    fn check_token(&mut self, req: &Request<'_>) -> Result<(), (i64, String)> {
        let Some(given) = query_param(req.query, "access_token") else {
            return Err((41001, "access_token missing".into()));
        };
        match self.tokens.iter().find(|t| t.token == given) {
            None => Err((
                40001,
                "invalid credential, access_token is invalid or not latest".into(),
            )),
            Some(t) if t.expires_at_ms <= req.now_ms => Err((42001, "access_token expired".into())),
            Some(_) => Ok(()),
        }
    }

    fn stats(&self) -> Value {
        let errcodes: serde_json::Map<String, Value> = self
            .errcodes
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({
            "token_requests": self.token_requests,
            "stable_token_requests": self.stable_requests,
            "classic_token_requests": self.classic_requests,
            "forced_refreshes": self.forced_refreshes,
            "calls": self.calls,
            "errcodes": errcodes,
            "menu": self.menu.is_some(),
        })
    }
}

/// What WeChat says with each code (the IP ones name the caller, as WeChat does).
fn canned(code: i64, peer: IpAddr) -> String {
    match code {
        40001 => "invalid credential, access_token is invalid or not latest".into(),
        40013 => "invalid appid".into(),
        40014 => "invalid access_token".into(),
        40125 => "invalid appsecret".into(),
        40243 => "AppSecret已被冻结，请登录小程序平台解冻后再次调用".into(),
        40164 => format!("invalid ip {peer} ipv6 ::ffff:{peer}, not in whitelist"),
        61004 => format!("access clientip is not registered, not in whitelist, ip {peer}"),
        89503 => format!("此次调用需要管理员确认，请耐心等候 ip {peer}"),
        42001 => "access_token expired".into(),
        45009 => "reach max api daily quota limit".into(),
        45011 => "api minute-quota reach limit  mustslower  retry next minute".into(),
        45015 => "response out of time limit or subscription is canceled".into(),
        45047 => "out of response count limit".into(),
        46003 => "menu no exist".into(),
        48001 => "api unauthorized".into(),
        -1 => "system error".into(),
        _ => "injected by wxmp fake-api --fail".into(),
    }
}

fn ok() -> Value {
    json!({"errcode": 0, "errmsg": "ok"})
}

/// Every printed line passes here: what came from the request (`touser`, a command, an
/// errmsg quoting the body) is escaped, so no escape code reaches the terminal.
fn answer(status: u16, body: &Value, lines: Vec<String>) -> Answer {
    Answer {
        status,
        body: body.to_string(),
        lines: lines
            .into_iter()
            .map(|l| printable(&l).into_owned())
            .collect(),
    }
}

fn json_body(body: &[u8]) -> Result<Value, (i64, String)> {
    serde_json::from_slice(body).map_err(|e| (47001, format!("data format error: {e}")))
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| percent_decode(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_api::args::{resolve, tests::args};

    fn platform(fail: &[&str], expires_in: &str) -> Platform {
        let mut a = vec!["--expires-in", expires_in];
        for f in fail {
            a.extend(["--fail", f]);
        }
        Platform::new(resolve(args(&a), &|_| None).unwrap(), 7)
    }

    fn call(p: &Platform, method: &str, path: &str, query: &str, body: &str, now_s: u64) -> Value {
        let a = p.handle(&Request {
            method,
            path,
            query,
            body: body.as_bytes(),
            peer: "127.0.0.1".parse().unwrap(),
            now_ms: now_s * 1000,
        });
        serde_json::from_str(&a.body).unwrap()
    }

    const STABLE: &str = r#"{"grant_type":"client_credential","appid":"wxfake0000000000","secret":"fakesecret","force_refresh":false}"#;

    #[test]
    fn stable_token_returns_the_same_token_until_its_renewal_margin() {
        let p = platform(&[], "7200");
        let a = call(&p, "POST", "/cgi-bin/stable_token", "", STABLE, 1000);
        let b = call(&p, "POST", "/cgi-bin/stable_token", "", STABLE, 2000);
        assert_eq!(a["access_token"], b["access_token"]);
        assert_eq!(b["expires_in"], json!(6200));
        let c = call(&p, "POST", "/cgi-bin/stable_token", "", STABLE, 1000 + 6950);
        assert_ne!(
            a["access_token"], c["access_token"],
            "renewed 250 s before expiry"
        );
        // The old token stays valid until it expires.
        let q = format!("access_token={}", a["access_token"].as_str().unwrap());
        assert_eq!(
            call(&p, "GET", "/cgi-bin/menu/delete", &q, "", 1000 + 6960)["errcode"],
            json!(0)
        );
        assert_eq!(
            call(&p, "GET", "/cgi-bin/menu/delete", &q, "", 1000 + 7200)["errcode"],
            json!(42001)
        );
    }

    #[test]
    fn the_classic_endpoint_invalidates_the_previous_token() {
        let p = platform(&[], "7200");
        let q = "grant_type=client_credential&appid=wxfake0000000000&secret=fakesecret";
        let a = call(&p, "GET", "/cgi-bin/token", q, "", 10);
        let _ = call(&p, "GET", "/cgi-bin/token", q, "", 11);
        let old = format!("access_token={}", a["access_token"].as_str().unwrap());
        assert_eq!(
            call(&p, "GET", "/cgi-bin/menu/get", &old, "", 12)["errcode"],
            json!(40001)
        );
    }

    #[test]
    fn wrong_credentials_and_injected_failures() {
        let p = platform(&["40001:once", "45009@/cgi-bin/menu/delete"], "7200");
        let wrong = STABLE.replace("fakesecret", "nope");
        assert_eq!(
            call(&p, "POST", "/cgi-bin/stable_token", "", &wrong, 1)["errcode"],
            json!(40125)
        );
        let t = call(&p, "POST", "/cgi-bin/stable_token", "", STABLE, 1);
        let q = format!("access_token={}", t["access_token"].as_str().unwrap());
        assert_eq!(
            call(&p, "GET", "/cgi-bin/menu/get", &q, "", 2)["errcode"],
            json!(40001)
        );
        assert_eq!(
            call(&p, "GET", "/cgi-bin/menu/get", &q, "", 3)["errcode"],
            json!(46003)
        );
        let e = call(&p, "GET", "/cgi-bin/menu/delete", &q, "", 4);
        assert_eq!(e["errcode"], json!(45009));
        assert!(e["errmsg"].as_str().unwrap().contains("rid: fake-"));
        let stats = call(&p, "GET", "/fake/stats", "", "", 5);
        assert_eq!(stats["token_requests"], json!(2));
        assert_eq!(stats["errcodes"]["40001"], json!(1));
    }

    #[test]
    fn the_menu_is_kept_and_messages_are_printed() {
        let p = platform(&[], "7200");
        let t = call(&p, "POST", "/cgi-bin/stable_token", "", STABLE, 1);
        let q = format!("access_token={}", t["access_token"].as_str().unwrap());
        let menu = r#"{"button":[{"type":"click","name":"今日歌曲","key":"K"}]}"#;
        assert_eq!(
            call(&p, "POST", "/cgi-bin/menu/create", &q, menu, 2)["errcode"],
            json!(0)
        );
        let got = call(&p, "GET", "/cgi-bin/menu/get", &q, "", 3);
        assert_eq!(got["menu"]["button"][0]["key"], json!("K"));
        let bad = r#"{"button":[{"type":"click","name":"a"}]}"#;
        assert_eq!(
            call(&p, "POST", "/cgi-bin/menu/create", &q, bad, 4)["errcode"],
            json!(40017)
        );
        let a = p.handle(&Request {
            method: "POST",
            path: "/cgi-bin/message/custom/send",
            query: &q,
            body: br#"{"touser":"o1","msgtype":"text","text":{"content":"hi"}}"#,
            peer: "127.0.0.1".parse().unwrap(),
            now_ms: 5000,
        });
        assert_eq!(a.lines, ["kf send → o1: text \"hi\""]);
    }

    /// Regression (issue 19, N12): `touser` was printed raw, so escape codes in it reached the
    /// fake's terminal.
    #[test]
    fn what_the_request_says_is_printed_escaped() {
        let p = platform(&[], "7200");
        let t = call(&p, "POST", "/cgi-bin/stable_token", "", STABLE, 1);
        let q = format!("access_token={}", t["access_token"].as_str().unwrap());
        for (path, body) in [
            (
                "/cgi-bin/message/custom/send",
                r#"{"touser":"o\u001b[2J\u202e1","msgtype":"text","text":{"content":"hi"}}"#,
            ),
            (
                "/cgi-bin/message/custom/typing",
                r#"{"touser":"o\u001b]0;pwned\u0007\u0085","command":"Typing"}"#,
            ),
        ] {
            let a = p.handle(&Request {
                method: "POST",
                path,
                query: &q,
                body: body.as_bytes(),
                peer: "127.0.0.1".parse().unwrap(),
                now_ms: 5000,
            });
            assert_eq!(a.lines.len(), 1, "{path}");
            let line = &a.lines[0];
            assert!(
                !line.chars().any(crate::text::is_hidden_control),
                "{path}: {line:?}"
            );
            assert!(line.contains("o\\u{1b}"), "{path}: {line}");
        }
    }
}
