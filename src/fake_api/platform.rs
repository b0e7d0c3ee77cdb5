//! The fake platform itself: requests in, WeChat's JSON out, no HTTP server and no clock of its
//! own (the time comes with each request), so tests drive it directly.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::api::kf;
use crate::api::media::{self, Format, MediaType};
use crate::api::menu::Menu;
use crate::fake_api::args::{Failure, FakeConfig};
use crate::fake_api::multipart;
use crate::protocol::query::percent_decode;
use crate::text::printable;

/// One request, as the HTTP edge read it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// The `Content-Type` header ("" when absent).
    pub content_type: &'a str,
    pub body: &'a [u8],
    pub peer: IpAddr,
    /// Milliseconds since the Unix epoch.
    pub now_ms: u64,
}

/// The answer, and the lines to print (what a user of the fake watches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    /// `Content-Disposition`, for a file download.
    pub disposition: Option<String>,
    pub body: Vec<u8>,
    pub lines: Vec<String>,
}

/// What a call produced: WeChat's JSON, or a file (`media/get`, `material/get_material`).
enum Body {
    Json(Value),
    File {
        mime: &'static str,
        filename: String,
        data: Vec<u8>,
    },
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

/// A file the fake keeps, permanent material or temporary media.
#[derive(Debug)]
struct Stored {
    ty: MediaType,
    format: Format,
    /// The multipart filename.
    name: String,
    data: Vec<u8>,
    /// A video's title and introduction (`add_material`'s `description` part).
    title: String,
    introduction: String,
    created_ms: u64,
}

/// WeChat keeps temporary media 3 days.
const TEMPORARY_MS: u64 = 3 * 24 * 3600 * 1000;
/// stable_token's forced mode: at most 20 a day, at least 30 s apart (WeChat's docs).
const FORCED_PER_DAY: usize = 20;
const FORCED_GAP_MS: u64 = 30_000;
const DAY_MS: u64 = 24 * 3600 * 1000;
/// The fake keeps files in memory: past this many bytes in all it refuses more.
pub const MAX_STORED_BYTES: usize = 256 * 1024 * 1024;

/// One AppID's tokens.
#[derive(Debug, Default)]
struct Tokens {
    /// Tokens WeChat would still accept, newest last: the classic and the stable endpoint's are
    /// isolated, so a fetch from one never invalidates the other's.
    classic: Vec<Issued>,
    stable: Vec<Issued>,
    /// When the stable token was force-refreshed in the last day.
    forced_at_ms: Vec<u64>,
}

/// The customer-service messages kept for `/fake/stats`, the newest.
const KF_KEPT: usize = 1000;

#[derive(Debug, Default)]
struct State {
    /// Each AppID's tokens (`--appid`, and each `--account`).
    apps: BTreeMap<String, Tokens>,
    /// Customer-service messages accepted: which AppID's token each came with, to whom, what.
    kf: std::collections::VecDeque<Value>,
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
    materials: BTreeMap<String, Stored>,
    temporary: BTreeMap<String, Stored>,
    stored_bytes: usize,
}

/// The fake WeChat API.
pub struct Platform {
    config: FakeConfig,
    /// Makes this run's tokens differ from another run's.
    seed: u64,
    state: Mutex<State>,
}

type Outcome = Result<(Body, Vec<String>), (i64, String)>;

/// The endpoints the fake serves, with their method.
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/cgi-bin/stable_token"),
    ("GET", "/cgi-bin/token"),
    ("POST", "/cgi-bin/menu/create"),
    ("GET", "/cgi-bin/menu/get"),
    ("GET", "/cgi-bin/menu/delete"),
    ("POST", "/cgi-bin/message/custom/send"),
    ("POST", "/cgi-bin/message/custom/typing"),
    ("POST", "/cgi-bin/material/add_material"),
    ("POST", "/cgi-bin/material/get_material"),
    ("POST", "/cgi-bin/material/batchget_material"),
    ("POST", "/cgi-bin/material/del_material"),
    ("POST", "/cgi-bin/media/upload"),
    ("GET", "/cgi-bin/media/get"),
];

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
            ("GET", "/fake/stats") => return answer(Body::Json(state.stats()), vec![]),
            ("POST", "/cgi-bin/stable_token") | ("GET", "/cgi-bin/token") => Kind::Token,
            (m, p) if ENDPOINTS.contains(&(m, p)) => Kind::Api,
            (method, path) => {
                // WeChat's own shape (HTTP 200, an errcode), so an SDK shows the sentence
                // instead of failing on the status.
                let served = ENDPOINTS.iter().find(|(_, p)| *p == path);
                let errmsg = match served {
                    Some((m, _)) => format!(
                        "invalid url: wxmp fake-api serves {path} with {m}, not {method}"
                    ),
                    None => format!(
                        "invalid url: wxmp fake-api does not serve {method} {path} (see wxmp fake-api --help)"
                    ),
                };
                let line = format!("{method} {path} → errcode 40066 (not served)");
                *state.errcodes.entry(40066).or_insert(0) += 1;
                return answer(
                    Body::Json(json!({"errcode": 40066, "errmsg": errmsg})),
                    vec![line],
                );
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
                (
                    Body::Json(json!({"errcode": code, "errmsg": errmsg})),
                    vec![line],
                    code,
                )
            }
        };
        *state.errcodes.entry(code).or_insert(0) += 1;
        if code == 0 && kind == Kind::Api && lines.is_empty() {
            lines.push(format!("{} {} → ok", req.method, req.path));
        }
        answer(body, std::mem::take(&mut lines))
    }

    fn serve(&self, state: &mut State, req: &Request<'_>, kind: Kind) -> Outcome {
        if kind == Kind::Token {
            return self.token(state, req);
        }
        let app_id = state.check_token(req)?;
        let json = |v: Value, line: String| Ok((Body::Json(v), vec![line]));
        match req.path {
            "/cgi-bin/menu/create" => {
                let body = json_body(req.body)?;
                let (menu, _) = Menu::from_json(&body).map_err(|e| (e.errcode, e.reason))?;
                let count = menu.all_buttons().count();
                let mut value = menu.to_json();
                with_empty_sub_buttons(&mut value);
                state.menu = Some(value);
                json(ok(), format!("menu created: {count} buttons"))
            }
            "/cgi-bin/menu/get" => match &state.menu {
                Some(menu) => json(json!({ "menu": menu }), "menu read".to_owned()),
                None => Err((46003, "menu no exist".to_owned())),
            },
            "/cgi-bin/menu/delete" => {
                state.menu = None;
                json(ok(), "menu deleted".to_owned())
            }
            "/cgi-bin/message/custom/send" => {
                let body = json_body(req.body)?;
                let (openid, msg) = kf::Message::from_json(&body)?;
                let summary = msg.summary();
                if state.kf.len() == KF_KEPT {
                    state.kf.pop_front();
                }
                state
                    .kf
                    .push_back(json!({"appid": app_id, "touser": openid, "summary": summary}));
                // With several AppIDs, the line says whose token sent it.
                let whose = match self.config.more.is_empty() {
                    true => String::new(),
                    false => format!(" (AppID {app_id})"),
                };
                json(ok(), format!("kf send → {openid}: {summary}{whose}"))
            }
            "/cgi-bin/message/custom/typing" => {
                let body = json_body(req.body)?;
                let openid = body.get("touser").and_then(Value::as_str).unwrap_or("");
                match body.get("command").and_then(Value::as_str) {
                    Some(c @ ("Typing" | "CancelTyping")) if !openid.is_empty() => {
                        json(ok(), format!("kf typing → {openid}: {c}"))
                    }
                    _ => Err((45072, "command invalid".to_owned())),
                }
            }
            "/cgi-bin/material/add_material" | "/cgi-bin/media/upload" => self.upload(state, req),
            "/cgi-bin/media/get" => media_get(state, req),
            "/cgi-bin/material/get_material" => material_get(state, req),
            "/cgi-bin/material/del_material" => {
                let id = media_id_of(req.body)?;
                let stored = state
                    .materials
                    .remove(&id)
                    .ok_or_else(|| (40007, "invalid media_id".to_owned()))?;
                state.stored_bytes = state.stored_bytes.saturating_sub(stored.data.len());
                json(ok(), format!("material deleted: {} {id}", stored.ty))
            }
            "/cgi-bin/material/batchget_material" => material_list(state, req),
            other => Err((40066, format!("invalid url: {other}"))),
        }
    }

    /// `material/add_material` (permanent) and `media/upload` (temporary), multipart.
    fn upload(&self, state: &mut State, req: &Request<'_>) -> Outcome {
        let permanent = req.path == "/cgi-bin/material/add_material";
        let ty = query_param(req.query, "type")
            .as_deref()
            .and_then(MediaType::parse)
            .ok_or_else(|| (40004, "invalid media type".to_owned()))?;
        let missing = |why: &str| (41005, format!("media data missing: {why}"));
        let boundary = multipart::boundary(req.content_type)
            .ok_or_else(|| missing("send multipart/form-data with a part named media"))?;
        let parts = multipart::parse(req.body, boundary).map_err(|e| missing(&e))?;
        let media = parts
            .iter()
            .find(|p| p.name == "media")
            .ok_or_else(|| missing("no part named media"))?;
        let name = media
            .filename
            .filter(|f| f.contains('.'))
            .ok_or_else(|| {
                (
                    40005,
                    "invalid file type: the filename needs an extension".to_owned(),
                )
            })?
            .to_owned();
        let format = media::check(ty, media.data).map_err(|e| {
            let code = e.errcode();
            (code, format!("{}: {e}", canned(code, req.peer)))
        })?;
        let (mut title, mut introduction) = (String::new(), String::new());
        if permanent && ty == MediaType::Video {
            // WeChat documents a form part; wechatpy 1.8 sends it in the query instead.
            let description = parts
                .iter()
                .find(|p| p.name == "description")
                .and_then(|p| serde_json::from_slice::<Value>(p.data).ok())
                .or_else(|| {
                    query_param(req.query, "description")
                        .and_then(|d| serde_json::from_str(&d).ok())
                });
            let field = |n: &str| {
                description
                    .as_ref()
                    .and_then(|d| d.get(n))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            title = field("title");
            introduction = field("introduction");
            if title.is_empty() {
                return Err(missing(
                    "a video needs a description part, JSON with a title",
                ));
            }
        }
        if state.stored_bytes.saturating_add(media.data.len()) > MAX_STORED_BYTES {
            return Err((
                -1,
                format!("system error: wxmp fake-api keeps at most {MAX_STORED_BYTES} bytes of media; restart it"),
            ));
        }
        state.issued += 1;
        let id = format!(
            "{}_{:016x}_{:06}",
            if permanent { "MAT" } else { "TMP" },
            self.seed,
            state.issued
        );
        let size = media.data.len();
        let stored = Stored {
            ty,
            format,
            name: name.clone(),
            data: media.data.to_vec(),
            title,
            introduction,
            created_ms: req.now_ms,
        };
        state.stored_bytes += size;
        let line = format!(
            "{} {ty} {id} ({name}, {size} bytes)",
            if permanent {
                "material added:"
            } else {
                "media uploaded:"
            }
        );
        let body = if permanent {
            state.materials.insert(id.clone(), stored);
            match ty {
                MediaType::Image => json!({"media_id": id, "url": image_url(&id)}),
                _ => json!({"media_id": id}),
            }
        } else {
            state.temporary.insert(id.clone(), stored);
            json!({"type": ty.name(), "media_id": id, "created_at": req.now_ms / 1000})
        };
        Ok((Body::Json(body), vec![line]))
    }

    fn token(&self, state: &mut State, req: &Request<'_>) -> Outcome {
        let TokenRequest {
            grant,
            appid,
            secret,
            force,
            classic,
        } = TokenRequest::of(req)?;
        if classic {
            state.classic_requests += 1;
        } else {
            state.stable_requests += 1;
        }
        if grant.as_deref() != Some("client_credential") {
            return Err((40002, "invalid grant_type".into()));
        }
        let Some(appid) = appid.filter(|a| self.config.secret_of(a).is_some()) else {
            return Err((40013, "invalid appid".into()));
        };
        if secret.as_deref() != self.config.secret_of(&appid).map(|s| s.expose()) {
            return Err((40125, "invalid appsecret".into()));
        }
        // This AppID's tokens, put back whatever the outcome.
        let mut app = state.apps.remove(&appid).unwrap_or_default();
        let issued = self.issue(state, &mut app, req.now_ms, force, classic);
        state.apps.insert(appid, app);
        issued
    }

    /// A token request of one AppID that passed the checks: its current token or a new one.
    fn issue(
        &self,
        state: &mut State,
        app: &mut Tokens,
        now: u64,
        force: bool,
        classic: bool,
    ) -> Outcome {
        app.classic.retain(|t| t.expires_at_ms > now);
        app.stable.retain(|t| t.expires_at_ms > now);
        app.forced_at_ms.retain(|t| now.saturating_sub(*t) < DAY_MS);
        let n = state.token_requests;
        let force_ignored = force && app.force_ignored(now)?;
        if force && !force_ignored {
            state.forced_refreshes += 1;
        }
        let force = force && !force_ignored;
        let lifetime_ms = self.config.expires_in.saturating_mul(1000);
        let endpoint = if classic { "token" } else { "stable_token" };
        // stable_token's normal mode hands out the current token until it is within its
        // renewal margin (5 minutes, or half of a short lifetime), then a new one while the
        // old one stays valid; forced mode and the classic endpoint replace theirs at once.
        if !classic && !force {
            let reuse = app.stable.last().filter(|t| {
                let margin = (300_000u64).min(t.lifetime_ms / 2);
                t.expires_at_ms.saturating_sub(now) > margin
            });
            if let Some(t) = reuse {
                let left = (t.expires_at_ms - now) / 1000;
                let body = json!({"access_token": t.token, "expires_in": left});
                let why = if force_ignored {
                    " (force_refresh within 30 s of the last one: not refreshed)"
                } else {
                    ""
                };
                let line =
                    format!("token request {n} ({endpoint}): the same token, {left} s left{why}");
                return Ok((Body::Json(body), vec![line]));
            }
        }
        state.issued += 1;
        let token = format!("FAKE_{:016x}_{:06}", self.seed, state.issued);
        let held = if classic {
            &mut app.classic
        } else {
            &mut app.stable
        };
        if classic || force {
            held.clear();
        }
        held.push(Issued {
            token: token.clone(),
            expires_at_ms: now + lifetime_ms,
            lifetime_ms,
        });
        let how = match (classic, force) {
            (true, _) => "a new token; earlier classic tokens stop working",
            (false, true) => "a new token (force_refresh); earlier stable tokens stop working",
            (false, false) => "a new token",
        };
        let line = format!(
            "token request {n} ({endpoint}): {how}, valid {} s",
            self.config.expires_in
        );
        Ok((
            Body::Json(json!({"access_token": token, "expires_in": self.config.expires_in})),
            vec![line],
        ))
    }
}

/// A token request, read from the classic `GET token` query or the `POST stable_token` JSON
/// body, so both endpoints are then checked alike.
struct TokenRequest {
    grant: Option<String>,
    appid: Option<String>,
    secret: Option<String>,
    force: bool,
    classic: bool,
}

impl TokenRequest {
    /// Only stable_token can ask for force_refresh; the classic endpoint always replaces.
    fn of(req: &Request<'_>) -> Result<TokenRequest, (i64, String)> {
        if req.method == "GET" {
            let q = |n: &str| query_param(req.query, n);
            return Ok(TokenRequest {
                grant: q("grant_type"),
                appid: q("appid"),
                secret: q("secret"),
                force: false,
                classic: true,
            });
        }
        let body = json_body(req.body)?;
        let s = |n: &str| body.get(n).and_then(Value::as_str).map(str::to_owned);
        Ok(TokenRequest {
            grant: s("grant_type"),
            appid: s("appid"),
            secret: s("secret"),
            force: body.get("force_refresh").and_then(Value::as_bool) == Some(true),
            classic: false,
        })
    }
}

impl Tokens {
    /// Applies WeChat's limits on stable_token's force_refresh: whether this one is ignored
    /// (within 30 s of the last), or refused once the day's quota is used.
    fn force_ignored(&mut self, now: u64) -> Result<bool, (i64, String)> {
        // "连续使用该模式时，请保证调用时间隔至少为30s，否则不会刷新": within 30 s of the
        // last forced refresh, the current token comes back unchanged.
        let recent = self
            .forced_at_ms
            .last()
            .is_some_and(|t| now.saturating_sub(*t) < FORCED_GAP_MS);
        if recent && !self.stable.is_empty() {
            Ok(true)
        } else if self.forced_at_ms.len() >= FORCED_PER_DAY {
            Err((
                45009,
                format!("reach max api daily quota limit: force_refresh is limited to {FORCED_PER_DAY} a day"),
            ))
        } else {
            self.forced_at_ms.push(now);
            Ok(false)
        }
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

    /// The AppID whose token the request carries.
    fn check_token(&mut self, req: &Request<'_>) -> Result<String, (i64, String)> {
        let Some(given) = query_param(req.query, "access_token") else {
            return Err((41001, "access_token missing".into()));
        };
        let found = self.apps.iter().find_map(|(app, tokens)| {
            let mut all = tokens.classic.iter().chain(tokens.stable.iter());
            all.find(|t| t.token == given).map(|t| (app, t))
        });
        match found {
            None => Err((
                40001,
                "invalid credential, access_token is invalid or not latest".into(),
            )),
            Some((_, t)) if t.expires_at_ms <= req.now_ms => {
                Err((42001, "access_token expired".into()))
            }
            Some((app, _)) => Ok(app.clone()),
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
            "materials": self.materials.len(),
            "temporary_media": self.temporary.len(),
            "kf": self.kf,
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
        40004 => "invalid media type".into(),
        40005 => "invalid file type".into(),
        40007 => "invalid media_id".into(),
        41005 => "media data missing".into(),
        44001 => "empty media data".into(),
        45001 => "media size out of limit".into(),
        45008 => "article size out of limit".into(),
        48001 => "api unauthorized".into(),
        -1 => "system error".into(),
        _ => "injected by wxmp fake-api --fail".into(),
    }
}

/// `media/get`: a temporary medium is served only for its 3 days, as WeChat does, and a
/// video as a URL rather than bytes.
fn media_get(state: &State, req: &Request<'_>) -> Outcome {
    let id = query_param(req.query, "media_id").unwrap_or_default();
    let stored = state
        .temporary
        .get(&id)
        .filter(|s| req.now_ms.saturating_sub(s.created_ms) < TEMPORARY_MS)
        .ok_or_else(|| (40007, "invalid media_id".to_owned()))?;
    let line = format!("media get: {} {id}", stored.ty);
    if stored.ty == MediaType::Video {
        let url = format!("http://fake.video.weixin.qq.com/{id}.mp4");
        return Ok((Body::Json(json!({ "video_url": url })), vec![line]));
    }
    Ok((file_of(&id, stored), vec![line]))
}

/// `material/get_material`: a permanent video comes back as its title, description and a
/// URL, as WeChat answers, other material as the bytes.
fn material_get(state: &State, req: &Request<'_>) -> Outcome {
    let id = media_id_of(req.body)?;
    let stored = state
        .materials
        .get(&id)
        .ok_or_else(|| (40007, "invalid media_id".to_owned()))?;
    let line = format!("material get: {} {id}", stored.ty);
    if stored.ty == MediaType::Video {
        let url = format!("http://fake.video.weixin.qq.com/{id}.mp4");
        let v = json!({"title": stored.title, "description": stored.introduction, "down_url": url});
        return Ok((Body::Json(v), vec![line]));
    }
    Ok((file_of(&id, stored), vec![line]))
}

/// `material/batchget_material`: checked and paged as WeChat does, so SDK paging loops
/// behave as they would against WeChat.
fn material_list(state: &State, req: &Request<'_>) -> Outcome {
    let body = json_body(req.body)?;
    let ty = body.get("type").and_then(Value::as_str).unwrap_or("");
    let offset = body.get("offset").and_then(Value::as_u64).unwrap_or(0);
    let count = body.get("count").and_then(Value::as_u64).unwrap_or(0);
    if !(1..=20).contains(&count) {
        return Err((47001, "data format error: count must be 1 to 20".into()));
    }
    if ty == "news" {
        let v = json!({"total_count": 0, "item_count": 0, "item": []});
        return Ok((
            Body::Json(v),
            vec!["material list: news (the fake keeps none)".into()],
        ));
    }
    let ty = MediaType::parse(ty)
        .filter(|t| *t != MediaType::Thumb)
        .ok_or_else(|| (40004, "invalid media type".to_owned()))?;
    // Newest first, as WeChat lists them.
    let mut all: Vec<(&String, &Stored)> =
        state.materials.iter().filter(|(_, s)| s.ty == ty).collect();
    all.sort_by(|a, b| b.1.created_ms.cmp(&a.1.created_ms).then(b.0.cmp(a.0)));
    let items: Vec<Value> = all
        .iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(count as usize)
        .map(|(id, s)| {
            let mut item =
                json!({"media_id": id, "name": s.name, "update_time": s.created_ms / 1000});
            if ty == MediaType::Image {
                item["url"] = json!(image_url(id));
            }
            item
        })
        .collect();
    let line = format!("material list: {ty}, {} of {}", items.len(), all.len());
    let v = json!({"total_count": all.len(), "item_count": items.len(), "item": items});
    Ok((Body::Json(v), vec![line]))
}

fn ok() -> Value {
    json!({"errcode": 0, "errmsg": "ok"})
}

/// Every printed line passes here: what came from the request (`touser`, a command, an
/// errmsg quoting the body) is escaped, so no escape code reaches the terminal.
fn answer(body: Body, lines: Vec<String>) -> Answer {
    let lines = lines
        .into_iter()
        .map(|l| printable(&l).into_owned())
        .collect();
    match body {
        Body::Json(v) => Answer {
            status: 200,
            content_type: "application/json; charset=utf-8".into(),
            disposition: None,
            body: v.to_string().into_bytes(),
            lines,
        },
        Body::File {
            mime,
            filename,
            data,
        } => Answer {
            status: 200,
            content_type: mime.into(),
            disposition: Some(format!("attachment; filename=\"{filename}\"")),
            body: data,
            lines,
        },
    }
}

fn file_of(id: &str, stored: &Stored) -> Body {
    Body::File {
        mime: stored.format.mime(),
        filename: format!("{id}.{}", stored.format.extension()),
        data: stored.data.clone(),
    }
}

/// Where WeChat would serve a permanent image (only inside Tencent's domains).
fn image_url(id: &str) -> String {
    format!("http://mmbiz.qpic.cn/fake/{id}/0")
}

/// Puts `"sub_button": []` on every leaf button, as WeChat's `menu/get` does (some SDKs
/// read the field without checking it is there).
fn with_empty_sub_buttons(menu: &mut Value) {
    fn leaf(button: &mut Value) {
        match button.get_mut("sub_button").and_then(Value::as_array_mut) {
            Some(subs) => subs.iter_mut().for_each(leaf),
            None => {
                if let Some(b) = button.as_object_mut() {
                    b.insert("sub_button".into(), json!([]));
                }
            }
        }
    }
    if let Some(buttons) = menu.get_mut("button").and_then(Value::as_array_mut) {
        buttons.iter_mut().for_each(leaf);
    }
}

/// WeChat's JSON bodies: UTF-8 as it is. A `\uXXXX` escape of a non-ASCII character is
/// refused with 40033, as WeChat's errcode list says (JSON encoders that escape Chinese, such
/// as Python's `json.dumps` by default, hit it).
fn json_body(body: &[u8]) -> Result<Value, (i64, String)> {
    if escapes_non_ascii(body) {
        return Err((
            40033,
            "invalid charset. please check your request, if include \\uxxxx will create fail!"
                .into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| (47001, format!("data format error: {e}")))
}

/// Whether a JSON text carries a `\uXXXX` escape of a character above U+007F.
fn escapes_non_ascii(body: &[u8]) -> bool {
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'\\' {
            if body.get(i + 1) == Some(&b'u') {
                let code = body
                    .get(i + 2..i + 6)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u32::from_str_radix(h, 16).ok());
                if code.is_some_and(|c| c > 0x7f) {
                    return true;
                }
            }
            // Skip the escaped character, so `\\u4f60` (a backslash, then text) is not one.
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

fn media_id_of(body: &[u8]) -> Result<String, (i64, String)> {
    json_body(body)?
        .get("media_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| (47001, "data format error: no media_id".into()))
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        // Form encoding, as HTTP clients write queries: `+` is a space.
        .and_then(|(_, v)| percent_decode(&v.replace('+', " ")))
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
            content_type: "application/json",
            body: body.as_bytes(),
            peer: "127.0.0.1".parse().unwrap(),
            now_ms: now_s * 1000,
        });
        serde_json::from_slice(&a.body).unwrap()
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
    fn each_appid_has_its_own_tokens_and_a_kf_message_says_whose_token_sent_it() {
        let config = resolve(args(&["--account", "wxsecond0000001:second"]), &|_| None);
        let p = Platform::new(config.unwrap(), 7);
        let second = STABLE
            .replace("wxfake0000000000", "wxsecond0000001")
            .replace("fakesecret", "second");
        let a = call(&p, "POST", "/cgi-bin/stable_token", "", STABLE, 100);
        let b = call(&p, "POST", "/cgi-bin/stable_token", "", &second, 100);
        assert_ne!(a["access_token"], b["access_token"]);
        // One AppID's secret does not open the other.
        let crossed = STABLE.replace("wxfake0000000000", "wxsecond0000001");
        let refused = call(&p, "POST", "/cgi-bin/stable_token", "", &crossed, 100);
        assert_eq!(refused["errcode"], 40125);
        // A forced refresh of one AppID leaves the other's token working.
        let forced = second.replace("false", "true");
        let b2 = call(&p, "POST", "/cgi-bin/stable_token", "", &forced, 100);
        assert_ne!(b2["access_token"], b["access_token"]);
        for (token, user) in [(&a, "o_one"), (&b2, "o_two")] {
            let q = format!("access_token={}", token["access_token"].as_str().unwrap());
            let body =
                format!(r#"{{"touser":"{user}","msgtype":"text","text":{{"content":"hi"}}}}"#);
            let sent = call(&p, "POST", "/cgi-bin/message/custom/send", &q, &body, 101);
            assert_eq!(sent["errcode"], 0, "{sent}");
        }
        let kf = call(&p, "GET", "/fake/stats", "", "", 102)["kf"].clone();
        assert_eq!(kf[0]["appid"], "wxfake0000000000", "{kf}");
        assert_eq!(kf[0]["touser"], "o_one", "{kf}");
        assert_eq!(kf[1]["appid"], "wxsecond0000001", "{kf}");
        assert_eq!(kf[1]["touser"], "o_two", "{kf}");
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
            content_type: "application/json",
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
                // U+202E and U+0085 raw: escaped, they would be refused with 40033.
                "{\"touser\":\"o\\u001b[2J\u{202e}1\",\"msgtype\":\"text\",\"text\":{\"content\":\"hi\"}}",
            ),
            (
                "/cgi-bin/message/custom/typing",
                "{\"touser\":\"o\\u001b]0;pwned\\u0007\u{85}\",\"command\":\"Typing\"}",
            ),
        ] {
            let a = p.handle(&Request {
                method: "POST",
                path,
                query: &q,
                content_type: "application/json",
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

    const CLASSIC: &str = "grant_type=client_credential&appid=wxfake0000000000&secret=fakesecret";

    fn token_query(v: &Value) -> String {
        format!("access_token={}", v["access_token"].as_str().unwrap())
    }

    #[test]
    fn classic_and_stable_tokens_are_isolated() {
        let p = platform(&[], "7200");
        let stable = call(&p, "POST", "/cgi-bin/stable_token", "", STABLE, 10);
        let classic = call(&p, "GET", "/cgi-bin/token", CLASSIC, "", 11);
        let _ = call(&p, "GET", "/cgi-bin/token", CLASSIC, "", 12);
        // A classic fetch kills the earlier classic token, never the stable one.
        assert_eq!(
            call(
                &p,
                "GET",
                "/cgi-bin/menu/delete",
                &token_query(&stable),
                "",
                13
            )["errcode"],
            json!(0)
        );
        assert_eq!(
            call(
                &p,
                "GET",
                "/cgi-bin/menu/delete",
                &token_query(&classic),
                "",
                13
            )["errcode"],
            json!(40001)
        );
        // A forced stable refresh kills the stable token, never the classic one.
        let newest = call(&p, "GET", "/cgi-bin/token", CLASSIC, "", 14);
        let forced = STABLE.replace("false", "true");
        let f = call(&p, "POST", "/cgi-bin/stable_token", "", &forced, 15);
        assert_ne!(f["access_token"], stable["access_token"]);
        for (token, code) in [(&stable, 40001), (&newest, 0), (&f, 0)] {
            assert_eq!(
                call(
                    &p,
                    "GET",
                    "/cgi-bin/menu/delete",
                    &token_query(token),
                    "",
                    16
                )["errcode"],
                json!(code)
            );
        }
    }

    #[test]
    fn forced_refreshes_are_30_s_apart_and_20_a_day() {
        let p = platform(&[], "7200");
        let forced = STABLE.replace("false", "true");
        let a = call(&p, "POST", "/cgi-bin/stable_token", "", &forced, 1000);
        let b = call(&p, "POST", "/cgi-bin/stable_token", "", &forced, 1029);
        assert_eq!(
            a["access_token"], b["access_token"],
            "within 30 s: not refreshed"
        );
        let c = call(&p, "POST", "/cgi-bin/stable_token", "", &forced, 1030);
        assert_ne!(a["access_token"], c["access_token"]);
        for i in 2..20 {
            let t = call(
                &p,
                "POST",
                "/cgi-bin/stable_token",
                "",
                &forced,
                1030 + 30 * i,
            );
            assert!(t["access_token"].is_string(), "{i}: {t}");
        }
        let over = call(&p, "POST", "/cgi-bin/stable_token", "", &forced, 5000);
        assert_eq!(over["errcode"], json!(45009), "{over}");
        // A day after the first, one is allowed again.
        let later = call(
            &p,
            "POST",
            "/cgi-bin/stable_token",
            "",
            &forced,
            1000 + 86_400,
        );
        assert!(later["access_token"].is_string(), "{later}");
        let stats = call(&p, "GET", "/fake/stats", "", "", 1000 + 86_401);
        assert_eq!(stats["forced_refreshes"], json!(21));
    }

    #[test]
    fn escaped_chinese_is_refused_with_40033() {
        assert!(escapes_non_ascii(br#"{"a":"\u4f60"}"#));
        assert!(!escapes_non_ascii("{\"a\":\"你\"}".as_bytes()));
        assert!(!escapes_non_ascii(br#"{"a":"\u001f \\u4f60"}"#));
        assert!(!escapes_non_ascii(br#"{"a":"\u00"#));
        let p = platform(&[], "7200");
        let t = call(&p, "POST", "/cgi-bin/stable_token", "", STABLE, 1);
        let menu = r#"{"button":[{"type":"click","name":"\u4eca\u65e5","key":"K"}]}"#;
        let e = call(
            &p,
            "POST",
            "/cgi-bin/menu/create",
            &token_query(&t),
            menu,
            2,
        );
        assert_eq!(e["errcode"], json!(40033), "{e}");
    }

    #[test]
    fn menu_get_puts_an_empty_sub_button_on_leaves() {
        let p = platform(&[], "7200");
        let t = call(&p, "POST", "/cgi-bin/stable_token", "", STABLE, 1);
        let q = token_query(&t);
        let menu = r#"{"button":[{"type":"click","name":"a","key":"K"},{"name":"b","sub_button":[{"type":"view","name":"c","url":"https://e.com/"}]}]}"#;
        assert_eq!(
            call(&p, "POST", "/cgi-bin/menu/create", &q, menu, 2)["errcode"],
            json!(0)
        );
        let got = call(&p, "GET", "/cgi-bin/menu/get", &q, "", 3);
        let b = &got["menu"]["button"];
        assert_eq!(b[0]["sub_button"], json!([]));
        assert_eq!(b[1]["sub_button"][0]["sub_button"], json!([]));
        assert_eq!(b[1]["sub_button"][0]["url"], json!("https://e.com/"));
    }

    #[test]
    fn unserved_endpoints_answer_an_errcode_that_names_them() {
        let p = platform(&[], "7200");
        let e = call(&p, "POST", "/cgi-bin/user/info", "", "", 1);
        assert_eq!(e["errcode"], json!(40066));
        assert!(
            e["errmsg"]
                .as_str()
                .unwrap()
                .contains("POST /cgi-bin/user/info"),
            "{e}"
        );
        let e = call(&p, "GET", "/cgi-bin/menu/create", "", "", 1);
        assert!(
            e["errmsg"].as_str().unwrap().contains("with POST, not GET"),
            "{e}"
        );
    }

    fn upload(p: &Platform, path: &str, q: &str, parts: &[media::Part<'_>]) -> Answer {
        let (ct, body) = media::multipart(parts);
        p.handle(&Request {
            method: "POST",
            path,
            query: q,
            content_type: &ct,
            body: &body,
            peer: "127.0.0.1".parse().unwrap(),
            now_ms: 5000,
        })
    }

    fn file<'a>(name: &'a str, data: &'a [u8]) -> media::Part<'a> {
        media::Part {
            name: "media",
            filename: Some(name),
            content_type: None,
            data,
        }
    }

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn materials_are_added_listed_read_and_deleted() {
        let p = platform(&[], "7200");
        let t = call(&p, "POST", "/cgi-bin/stable_token", "", STABLE, 1);
        let q = token_query(&t);
        let a = upload(
            &p,
            "/cgi-bin/material/add_material",
            &format!("{q}&type=image"),
            &[file("a.png", PNG)],
        );
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        let id = v["media_id"].as_str().unwrap().to_owned();
        assert!(v["url"].is_string(), "{v}");
        assert!(
            a.lines[0].starts_with("material added: image MAT_"),
            "{:?}",
            a.lines
        );
        let list = call(
            &p,
            "POST",
            "/cgi-bin/material/batchget_material",
            &q,
            r#"{"type":"image","offset":0,"count":20}"#,
            2,
        );
        assert_eq!(list["total_count"], json!(1));
        assert_eq!(list["item"][0]["media_id"], json!(id));
        assert_eq!(list["item"][0]["name"], json!("a.png"));
        let got = p.handle(&Request {
            method: "POST",
            path: "/cgi-bin/material/get_material",
            query: &q,
            content_type: "application/json",
            body: format!(r#"{{"media_id":"{id}"}}"#).as_bytes(),
            peer: "127.0.0.1".parse().unwrap(),
            now_ms: 6000,
        });
        assert_eq!(got.body, PNG);
        assert_eq!(got.content_type, "image/png");
        let del = format!(r#"{{"media_id":"{id}"}}"#);
        assert_eq!(
            call(&p, "POST", "/cgi-bin/material/del_material", &q, &del, 3)["errcode"],
            json!(0)
        );
        assert_eq!(
            call(&p, "POST", "/cgi-bin/material/del_material", &q, &del, 3)["errcode"],
            json!(40007)
        );
        let bad = call(
            &p,
            "POST",
            "/cgi-bin/material/batchget_material",
            &q,
            r#"{"type":"image","offset":0,"count":21}"#,
            4,
        );
        assert_eq!(bad["errcode"], json!(47001));
    }

    #[test]
    fn uploads_get_wechats_type_and_size_errors() {
        let p = platform(&[], "7200");
        let t = call(&p, "POST", "/cgi-bin/stable_token", "", STABLE, 1);
        let q = token_query(&t);
        let code = |path: &str, ty: &str, parts: &[media::Part<'_>]| -> i64 {
            let a = upload(&p, path, &format!("{q}&type={ty}"), parts);
            let v: Value = serde_json::from_slice(&a.body).unwrap();
            v["errcode"].as_i64().unwrap_or(0)
        };
        let add = "/cgi-bin/material/add_material";
        assert_eq!(code(add, "gif", &[file("a.png", PNG)]), 40004);
        assert_eq!(code(add, "thumb", &[file("a.png", PNG)]), 40005);
        assert_eq!(code(add, "image", &[file("noext", PNG)]), 40005);
        let wrong_name = media::Part {
            name: "file",
            ..file("a.png", PNG)
        };
        assert_eq!(code(add, "image", &[wrong_name]), 41005);
        let mut big = b"\xff\xd8\xff".to_vec();
        big.resize(64 * 1024 + 1, 0);
        assert_eq!(code(add, "thumb", &[file("a.jpg", &big)]), 45001);
        let mp4 = b"\0\0\0\x18ftypmp42....";
        assert_eq!(
            code(add, "video", &[file("v.mp4", mp4)]),
            41005,
            "no description"
        );
        let desc = media::Part {
            name: "description",
            filename: None,
            content_type: None,
            data: br#"{"title":"T","introduction":"I"}"#,
        };
        assert_eq!(code(add, "video", &[file("v.mp4", mp4), desc]), 0);
        let tmp = upload(
            &p,
            "/cgi-bin/media/upload",
            &format!("{q}&type=image"),
            &[file("a.png", PNG)],
        );
        let v: Value = serde_json::from_slice(&tmp.body).unwrap();
        assert_eq!(v["type"], json!("image"));
        let id = v["media_id"].as_str().unwrap();
        let got = p.handle(&Request {
            method: "GET",
            path: "/cgi-bin/media/get",
            query: &format!("{q}&media_id={id}"),
            content_type: "",
            body: b"",
            peer: "127.0.0.1".parse().unwrap(),
            now_ms: 7000,
        });
        assert_eq!(got.body, PNG);
        assert!(got.disposition.unwrap().contains(".png"));
        // Not JSON at all: 41005, never a panic.
        let a = p.handle(&Request {
            method: "POST",
            path: add,
            query: &format!("{q}&type=image"),
            content_type: "multipart/form-data; boundary=zz",
            body: b"--zz\r\n\xff\xff",
            peer: "127.0.0.1".parse().unwrap(),
            now_ms: 7000,
        });
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["errcode"], json!(41005));
    }

    #[test]
    fn customer_service_news_of_two_articles_is_45008_and_new_types_pass() {
        let p = platform(&[], "7200");
        let t = call(&p, "POST", "/cgi-bin/stable_token", "", STABLE, 1);
        let q = token_query(&t);
        let two =
            r#"{"touser":"o","msgtype":"news","news":{"articles":[{"title":"a"},{"title":"b"}]}}"#;
        assert_eq!(
            call(&p, "POST", "/cgi-bin/message/custom/send", &q, two, 2)["errcode"],
            json!(45008)
        );
        for body in [
            r#"{"touser":"o","msgtype":"mpnews","mpnews":{"media_id":"M"}}"#,
            r#"{"touser":"o","msgtype":"wxcard","wxcard":{"card_id":"C"}}"#,
            r#"{"touser":"o","msgtype":"mpnewsarticle","mpnewsarticle":{"article_id":"A"}}"#,
        ] {
            assert_eq!(
                call(&p, "POST", "/cgi-bin/message/custom/send", &q, body, 3)["errcode"],
                json!(0),
                "{body}"
            );
        }
    }
}
