//! The API gateway (`--api-proxy`, off by default): a listener of its own where the owner's code
//! calls the WeChat API without an access_token, and wxmp adds its own. One token holder in the
//! process ([`crate::api::Client`]), so an SDK's fetch can never invalidate wxmp's token, and no
//! language needs its own token cache: WeChat's "central token server" (中控服务器), and what
//! Cloud Hosting's 开放接口服务 does for code in its containers.
//!
//! What it does with a request, in order:
//! - refuses a peer that is neither loopback nor in `--api-proxy-allow` (403): the gateway is a
//!   key to the whole account;
//! - refuses `CONNECT` (405) and absolute-form requests for any host but `api.weixin.qq.com` and
//!   `api2.weixin.qq.com` (403): it is not an open proxy;
//! - past [`MAX_IN_FLIGHT`] calls at once answers 503 with a JSON errcode body; buffers the body
//!   up to [`MAX_BODY`] (413 beyond), so a call can be sent twice;
//! - answers the token endpoints itself with wxmp's token (the passive-refresh rule:
//!   [`PASSIVE_REFRESH_AGE`]);
//! - passes `/sns/` (the user's own OAuth tokens) untouched; everything else gets
//!   `access_token` set to wxmp's token, added or replacing the caller's;
//! - on 40001/40014/42001 replaces the token once and sends the call once more;
//! - streams the answer back (`media/get` returns files), reading only a JSON answer's first
//!   [`SNIFF`] bytes to find its errcode;
//! - logs one line per call (never the token, never query values) and counts it in the API
//!   metrics.
//!
//! With an accounts file, the shared gateway serves each account under its name
//! (`/<name>/cgi-bin/...`: the prefix picks the account's token and is stripped before the call),
//! and an account may have a gateway of its own (`api_proxy` in the file), for `HTTP_PROXY`
//! clients, which cannot add a prefix. [`Listeners`] opens and closes those as the file changes.
//!
//! Besides `routes`, `run` and `monitor`, the one server module that names rouille: it is the
//! edge of a third HTTP server.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Cursor, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rouille::{Request, Response, ResponseBody};
use serde_json::{json, Value};

use crate::api::error::is_token_rejection;
use crate::api::token::{AccessToken, Held};
use crate::api::{ApiError, Client, BAD_RESPONSE, NETWORK_ERROR};
use crate::config::{AccessOptions, Gateway as Settings};
use crate::log::{Field, Level, Log};
use crate::net::NetError;
use crate::protocol::query::percent_encode;
use crate::server::listener::{self, Running};
use crate::server::metrics::Metrics;
use crate::server::router::Router;

/// The largest body buffered: WeChat's largest upload (a video, 10 MB) plus room for the
/// multipart framing.
pub const MAX_BODY: u64 = (10 << 20) + (64 << 10);
/// Calls at once; past it a call gets 503. Each may buffer up to [`MAX_BODY`].
pub const MAX_IN_FLIGHT: usize = 32;
/// Handler threads: the calls in flight, plus room to answer the 503s and refusals at once.
const THREADS: usize = MAX_IN_FLIGHT + 8;
/// The limit on one call to WeChat, answer included: a 10 MB upload on a slow link.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A caller's forced refresh is honoured only for a token at least this old (seconds), so a
/// burst of callers cannot burn WeChat's forced-refresh quota.
pub const PASSIVE_REFRESH_AGE: u64 = 30;
/// Bytes of a JSON answer read to find its errcode; a longer answer is streamed unread.
pub const SNIFF: usize = 1 << 20;
/// The hosts an absolute-form request may name.
pub const HOSTS: [&str; 2] = ["api.weixin.qq.com", "api2.weixin.qq.com"];

/// Whose token a gateway hands out.
pub enum Scope {
    /// The one account of the flags.
    One(Arc<Client>),
    /// Every account of the accounts file, by the name that starts the path
    /// (`/<name>/cgi-bin/...`): the shared gateway, `--api-proxy`.
    Prefixed(Arc<Router>),
    /// One account of the file, on its own address (its `api_proxy`).
    Account(String, Arc<Router>),
}

/// How long an address closed by a reload may take to be free for the account that takes it.
const REBIND: Duration = Duration::from_secs(2);

/// How many account names a 404 lists.
const NAMES_SHOWN: usize = 10;

/// The gateway: whose token it uses, and what it reports to.
pub struct Gateway {
    scope: Scope,
    settings: Settings,
    agent: ureq::Agent,
    in_flight: Arc<AtomicUsize>,
    log: Log,
    access: AccessOptions,
    metrics: Arc<Metrics>,
}

/// A slot among the calls in flight, given back on drop (after a streamed answer is sent).
struct Permit(Arc<AtomicUsize>);

impl Permit {
    fn take(count: &Arc<AtomicUsize>) -> Option<Permit> {
        if count.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
            count.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Permit(Arc::clone(count)))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A streamed answer that keeps its slot until it is sent.
struct Streamed<R> {
    inner: R,
    _permit: Permit,
}

impl<R: Read> Read for Streamed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

/// What one call looked like, for its log line and the metrics.
#[derive(Debug, Default)]
struct Record {
    /// The account, with an accounts file.
    account: Option<String>,
    /// The path, and the query's parameter names without their values.
    shown: String,
    status: u16,
    errcode: Option<i64>,
    retried_after: Option<i64>,
    note: Option<String>,
}

/// Where a request goes, from its target.
#[derive(Debug, PartialEq, Eq)]
pub struct Target<'a> {
    pub path: &'a str,
    pub query: &'a str,
}

/// Reads the request target: origin form (`/cgi-bin/...`), or absolute form for WeChat's API
/// hosts, as a client with `HTTP_PROXY` sends it. `Err` is the status and the sentence.
pub fn target(raw: &str) -> Result<Target<'_>, (u16, String)> {
    let rest = if raw.starts_with('/') {
        raw
    } else {
        let Some(after) = raw
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("http://"))
            .map(|_| &raw[7..])
        else {
            return Err((
                403,
                "only http://api.weixin.qq.com/... and paths like /cgi-bin/... are served: the gateway is not an open proxy".into(),
            ));
        };
        let (authority, path) = after.find('/').map_or((after, "/"), |i| after.split_at(i));
        let host = authority
            .strip_suffix(":80")
            .unwrap_or(authority)
            .to_ascii_lowercase();
        if !HOSTS.contains(&host.as_str()) {
            return Err((
                403,
                format!(
                    "{} is not WeChat's API: the gateway serves only {} and is not an open proxy",
                    authority.escape_debug(),
                    HOSTS.join(" and ")
                ),
            ));
        }
        path
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    Ok(Target { path, query })
}

/// The query with `access_token` set to `token`: first, and any the caller sent dropped; every
/// other parameter byte for byte.
pub fn with_token(query: &str, token: &AccessToken) -> String {
    let mut out = format!("access_token={}", percent_encode(token.expose()));
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if pair.split('=').next() == Some("access_token") {
            continue;
        }
        out.push('&');
        out.push_str(pair);
    }
    out
}

/// The path and the query's names, for the log: `/cgi-bin/user/info?openid&lang`. Query
/// values can be tokens (the caller's, or `/sns/`'s OAuth ones), so none is shown.
pub fn shown(path: &str, query: &str) -> String {
    let mut out: String = path.chars().take(200).collect::<String>();
    let mut first = true;
    for pair in query.split('&').filter(|p| !p.is_empty()).take(20) {
        let name = pair.split('=').next().unwrap_or("");
        out.push(if first { '?' } else { '&' });
        first = false;
        out.extend(name.chars().take(40));
    }
    out.escape_debug().to_string()
}

/// The account's name that starts `path`, and the rest of the path (`/` when nothing follows):
/// `/shop/cgi-bin/menu/get` is `shop` and `/cgi-bin/menu/get`.
pub fn prefix(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (name, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    (!name.is_empty()).then_some((name, tail))
}

/// `appid` from a token request's query (classic) or JSON body (stable).
fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A JSON errcode body, as WeChat answers failures.
fn errcode(status: u16, code: i64, msg: &str) -> Response {
    json_response(status, &json!({ "errcode": code, "errmsg": msg }))
}

fn json_response(status: u16, v: &Value) -> Response {
    Response::from_data("application/json; charset=utf-8", v.to_string()).with_status_code(status)
}

/// Request headers passed on to WeChat: the body's type (a multipart boundary included) and
/// what the caller accepts. Nothing else: no cookies, no proxy headers, no compression wxmp
/// would have to undo to read an errcode.
const REQUEST_HEADERS: [&str; 2] = ["Content-Type", "Accept"];

/// Answer headers not passed back: hop-by-hop ones, and those tiny_http writes itself.
const DROPPED: [&str; 10] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "date",
    "server",
];

/// An answer from WeChat, its start read.
struct Upstream {
    status: u16,
    headers: Vec<(String, String)>,
    length: Option<usize>,
    /// The JSON answer, whole, or the first bytes of a longer one.
    head: Vec<u8>,
    /// The rest, to stream (a file, or a JSON answer longer than [`SNIFF`]).
    rest: Option<Box<dyn Read + Send + Sync>>,
    errcode: Option<i64>,
}

impl Upstream {
    fn read(resp: ureq::Response) -> Result<Upstream, NetError> {
        let status = resp.status();
        let headers: Vec<(String, String)> = resp
            .headers_names()
            .into_iter()
            .filter(|n| !DROPPED.contains(&n.to_ascii_lowercase().as_str()))
            .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_owned())))
            .collect();
        let length = resp
            .header("Content-Length")
            .and_then(|l| l.trim().parse::<usize>().ok());
        let kind = resp.content_type().to_ascii_lowercase();
        // WeChat answers JSON, sometimes labelled text/plain; files come with their own type.
        let json = kind.contains("json") || kind.starts_with("text/");
        let mut reader = resp.into_reader();
        if !json {
            return Ok(Upstream {
                status,
                headers,
                length,
                head: Vec::new(),
                rest: Some(reader),
                errcode: (status == 200).then_some(0),
            });
        }
        let mut head = Vec::new();
        (&mut reader)
            .take(SNIFF as u64 + 1)
            .read_to_end(&mut head)
            .map_err(|e| NetError::from_read(&e))?;
        if head.len() > SNIFF {
            return Ok(Upstream {
                status,
                headers,
                length,
                head,
                rest: Some(reader),
                errcode: None,
            });
        }
        let errcode = serde_json::from_slice::<Value>(&head)
            .ok()
            .filter(Value::is_object)
            .map(|v| v.get("errcode").and_then(Value::as_i64).unwrap_or(0));
        Ok(Upstream {
            status,
            headers,
            length: Some(head.len()),
            head,
            rest: None,
            errcode,
        })
    }

    fn into_response(self, permit: Permit) -> Response {
        let data = match self.rest {
            None => ResponseBody::from_data(self.head),
            Some(rest) => {
                let reader = Streamed {
                    inner: Cursor::new(self.head).chain(rest),
                    _permit: permit,
                };
                match self.length {
                    Some(n) => ResponseBody::from_reader_and_size(reader, n),
                    None => ResponseBody::from_reader(reader),
                }
            }
        };
        Response {
            status_code: self.status,
            headers: self
                .headers
                .into_iter()
                .map(|(n, v)| (Cow::Owned(n), Cow::Owned(v)))
                .collect(),
            data,
            upgrade: None,
        }
    }
}

impl Gateway {
    pub fn new(
        scope: Scope,
        settings: Settings,
        log: Log,
        access: AccessOptions,
        metrics: Arc<Metrics>,
    ) -> Gateway {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(CALL_TIMEOUT)
            // WeChat never redirects; a redirect would be a proxy's login page.
            .redirects(0)
            .user_agent(concat!("wxmp/", env!("CARGO_PKG_VERSION"), " (gateway)"))
            .build();
        Gateway {
            scope,
            settings,
            agent,
            in_flight: Arc::default(),
            log,
            access,
            metrics,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Calls running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Handles one request: the answer, and one log line.
    pub fn handle(&self, req: &Request) -> Response {
        let started = Instant::now();
        let mut record = Record::default();
        let response = self.serve(req, &mut record);
        record.status = response.status_code;
        self.report(req.method(), &record, started.elapsed());
        response
    }

    fn serve(&self, req: &Request, record: &mut Record) -> Response {
        let raw = req.raw_url();
        record.shown = shown(raw.split('?').next().unwrap_or(""), "");
        let target = match self.admit(req, raw, record) {
            Ok(t) => t,
            Err(refused) => return refused,
        };
        let (client, path) = match self.account(raw, &target, record) {
            Ok(found) => found,
            Err(refused) => return refused,
        };
        let target = Target {
            path,
            query: target.query,
        };
        record.shown = shown(target.path, target.query);
        let Some(permit) = Permit::take(&self.in_flight) else {
            record.note = Some(format!("refused: {MAX_IN_FLIGHT} calls in flight"));
            return errcode(
                503,
                -1,
                &format!("wxmp gateway: {MAX_IN_FLIGHT} calls are in flight already; try again in a moment"),
            )
            .with_unique_header("Retry-After", "1");
        };
        let body = match read_body(req) {
            Ok(b) => b,
            Err(status) => {
                record.note = Some(if status == 413 {
                    "refused: body over the limit".into()
                } else {
                    "refused: body unreadable".into()
                });
                let why = if status == 413 {
                    format!("the body is over {MAX_BODY} bytes (WeChat's largest upload is a 10 MB video)")
                } else {
                    "the body could not be read".into()
                };
                return errcode(status, -1, &format!("wxmp gateway: {why}"));
            }
        };
        let method = req.method();
        let is = |m: &str, p: &str| method.eq_ignore_ascii_case(m) && target.path == p;
        if is("GET", "/cgi-bin/token") || is("POST", "/cgi-bin/stable_token") {
            return self.token_answer(&client, &target, &body, record);
        }
        let headers: Vec<(&str, String)> = REQUEST_HEADERS
            .iter()
            .filter_map(|h| req.header(h).map(|v| (*h, v.to_owned())))
            .collect();
        let base = &client.config().api_base;
        if target.path.starts_with("/sns/") {
            // The user's own OAuth tokens: sent as they came, never retried.
            let url = match target.query {
                "" => format!("{base}{}", target.path),
                q => format!("{base}{}?{q}", target.path),
            };
            return self.finish(
                &client,
                self.send(method, &url, &headers, &body),
                permit,
                record,
            );
        }
        let mut token = match client.token() {
            Ok(h) => h.token,
            Err(e) => return self.no_token(&e, record),
        };
        let url =
            |t: &AccessToken| format!("{base}{}?{}", target.path, with_token(target.query, t));
        let mut answer = self.send(method, &url(&token), &headers, &body);
        if let Ok(Upstream {
            errcode: Some(code),
            ..
        }) = answer
        {
            if is_token_rejection(code) {
                client.record(code);
                token = match client.replace_token(&token) {
                    Ok(h) => h.token,
                    Err(e) => return self.no_token(&e, record),
                };
                record.retried_after = Some(code);
                answer = self.send(method, &url(&token), &headers, &body);
            }
        }
        self.finish(&client, answer, permit, record)
    }

    /// The request's target, if the peer may call and the target is WeChat's API.
    #[allow(clippy::result_large_err)] // the refusal is the response to send
    fn admit<'r>(
        &self,
        req: &Request,
        raw: &'r str,
        record: &mut Record,
    ) -> Result<Target<'r>, Response> {
        let peer: IpAddr = req.remote_addr().ip();
        if !self.settings.allows(peer) {
            record.note = Some(format!("refused: {peer} is not allowed"));
            let setting = match self.scope {
                Scope::Account(..) => "the account's api_proxy_allow in the accounts file",
                _ => "--api-proxy-allow (WXMP_API_PROXY_ALLOW)",
            };
            return Err(errcode(
                403,
                -1,
                &format!("wxmp gateway: {peer} may not call it; add its network to {setting}"),
            ));
        }
        if req.method().eq_ignore_ascii_case("CONNECT") {
            record.note = Some("refused: CONNECT".into());
            return Err(errcode(
                405,
                -1,
                &format!("wxmp gateway: CONNECT (an https:// URL through HTTP_PROXY) is not supported: call http://api.weixin.qq.com/... (wxmp calls WeChat over HTTPS for you), or the gateway's own address, http://{}/cgi-bin/...", self.settings.addr),
            )
            .with_unique_header("Allow", "GET, POST"));
        }
        target(raw).map_err(|(status, why)| {
            record.note = Some("refused: not WeChat's API".into());
            errcode(status, -1, &format!("wxmp gateway: {why}"))
        })
    }

    /// The account `raw` is for, and the path to call upstream (without the account's name):
    /// its API client, or the refusal. The account is looked up on every call, so a reload's
    /// changes (an account added, removed, given another AppSecret) apply at once.
    #[allow(clippy::result_large_err)] // the refusal is the response to send
    fn account<'t>(
        &self,
        raw: &str,
        target: &Target<'t>,
        record: &mut Record,
    ) -> Result<(Arc<Client>, &'t str), Response> {
        let (router, name, path) = match &self.scope {
            Scope::One(client) => return Ok((Arc::clone(client), target.path)),
            Scope::Account(name, router) => (router, name.as_str(), target.path),
            Scope::Prefixed(router) => match prefix(target.path) {
                Some((name, path)) if raw.starts_with('/') => (router, name, path),
                _ => return Err(self.no_prefix(record)),
            },
        };
        record.account = Some(
            name.chars()
                .take(64)
                .collect::<String>()
                .escape_debug()
                .to_string(),
        );
        record.shown = shown(path, "");
        let table = router.current();
        let services = table.services();
        let Some(service) = services
            .iter()
            .find(|s| *s.pipeline.account().name == *name)
        else {
            // A WeChat path with no account's name before it.
            if matches!(name, "cgi-bin" | "sns") && matches!(self.scope, Scope::Prefixed(_)) {
                record.account = None;
                record.shown = shown(target.path, "");
                return Err(self.no_prefix(record));
            }
            record.note = Some("refused: no such account".into());
            let names: Vec<&str> = services
                .iter()
                .map(|s| &*s.pipeline.account().name)
                .take(NAMES_SHOWN)
                .collect();
            let more = if services.len() > NAMES_SHOWN {
                ", ..."
            } else {
                ""
            };
            return Err(errcode(
                404,
                -1,
                &format!(
                    "wxmp gateway: no account named {:?} in the accounts file; the accounts are {}{more}",
                    name.chars().take(64).collect::<String>(),
                    names.join(", ")
                ),
            ));
        };
        match &service.api {
            Some(client) => Ok((Arc::clone(client), path)),
            None => {
                record.note = Some("refused: the account has no appid and secret".into());
                Err(errcode(
                    403,
                    -1,
                    &format!(
                        "wxmp gateway: account {name:?} has no appid and secret in the accounts file, so wxmp holds no access_token for it"
                    ),
                ))
            }
        }
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Upstream, NetError> {
        let mut req = self.agent.request(method, url);
        for (name, value) in headers {
            req = req.set(name, value);
        }
        let bodiless = ["GET", "HEAD", "DELETE", "OPTIONS"]
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method));
        let result = if body.is_empty() && bodiless {
            req.call()
        } else {
            req.send_bytes(body)
        };
        match result {
            Ok(r) | Err(ureq::Error::Status(_, r)) => Upstream::read(r),
            Err(ureq::Error::Transport(t)) => Err(NetError::from_transport(&t)),
        }
    }

    /// A call on the gateway of many accounts that names none (or comes through `HTTP_PROXY`,
    /// which cannot name one).
    fn no_prefix(&self, record: &mut Record) -> Response {
        record.note = Some("refused: no account in the path".into());
        errcode(
            400,
            -1,
            &format!(
                "wxmp gateway: this gateway serves several accounts: put the account's name first, as in http://{}/NAME/cgi-bin/..., or call the account's own api_proxy (set in the accounts file; an HTTP_PROXY client needs one, as it cannot add the name)",
                self.settings.addr
            ),
        )
    }

    fn finish(
        &self,
        client: &Client,
        answer: Result<Upstream, NetError>,
        permit: Permit,
        record: &mut Record,
    ) -> Response {
        match answer {
            Ok(up) => {
                record.errcode = up.errcode;
                client.record(match up.errcode {
                    Some(code) => code,
                    None if up.status == 200 => 0,
                    None => BAD_RESPONSE,
                });
                up.into_response(permit)
            }
            Err(e) => {
                client.record(NETWORK_ERROR);
                record.note = Some(format!("no answer from WeChat: {e}"));
                let status = if e.is_timeout() { 504 } else { 502 };
                errcode(
                    status,
                    -1,
                    &format!(
                        "wxmp gateway: no answer from {}: {e}",
                        client.config().api_base
                    ),
                )
            }
        }
    }

    /// wxmp has no token to give: WeChat's refusal (a wrong AppSecret, the IP whitelist) as its
    /// errcode with wxmp's sentence, or 502 when WeChat did not answer.
    fn no_token(&self, e: &ApiError, record: &mut Record) -> Response {
        record.note = Some(format!("no token: {e}"));
        match e.errcode() {
            Some(code) => {
                record.errcode = Some(code);
                errcode(200, code, &format!("wxmp gateway: {e}"))
            }
            None => errcode(502, -1, &format!("wxmp gateway: {e}")),
        }
    }

    /// `GET /cgi-bin/token` and `POST /cgi-bin/stable_token`, answered with wxmp's token and
    /// the seconds it has left, so an SDK pointed here never fetches one behind wxmp's back. The
    /// AppSecret is not checked (a dummy one does), the AppID is when given. A forced refresh
    /// (`force_refresh: true`) is WeChat's passive refresh: honoured only when the caller's
    /// token (its `access_token` parameter, or else the one wxmp handed out) is still wxmp's
    /// current one and at least [`PASSIVE_REFRESH_AGE`] seconds old.
    fn token_answer(
        &self,
        client: &Client,
        target: &Target<'_>,
        body: &[u8],
        record: &mut Record,
    ) -> Response {
        let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let app_id = param(target.query, "appid")
            .map(str::to_owned)
            .or_else(|| json.get("appid").and_then(Value::as_str).map(str::to_owned));
        let ours = &client.config().app_id;
        if app_id.as_ref().is_some_and(|a| a != ours) {
            record.note = Some("token refused: another AppID".into());
            record.errcode = Some(40013);
            return errcode(
                200,
                40013,
                &format!(
                    "wxmp gateway: invalid appid; this gateway holds the token of {ours} only"
                ),
            );
        }
        let force = json.get("force_refresh").and_then(Value::as_bool) == Some(true);
        let mut held: Held = match client.token() {
            Ok(h) => h,
            Err(e) => return self.no_token(&e, record),
        };
        let now = client.now();
        let mut note = "answered by wxmp".to_owned();
        if force {
            let callers = param(target.query, "access_token");
            let age = now.saturating_sub(held.fetched_at);
            if callers.is_some_and(|t| t != held.token.expose()) {
                note.push_str(
                    "; forced refresh not needed: the caller's token was already replaced",
                );
            } else if age < PASSIVE_REFRESH_AGE {
                let _ = write!(
                    note,
                    "; forced refresh refused: the token is {age} s old (at least {PASSIVE_REFRESH_AGE})"
                );
            } else {
                held = match client.replace_token(&held.token) {
                    Ok(h) => h,
                    Err(e) => return self.no_token(&e, record),
                };
                note.push_str("; refreshed on the caller's request");
            }
        }
        record.note = Some(note);
        record.errcode = Some(0);
        json_response(
            200,
            &json!({
                "access_token": held.token.expose(),
                "expires_in": held.expires_at.saturating_sub(now),
            }),
        )
    }

    /// One line per call, and the metrics.
    fn report(&self, method: &str, r: &Record, took: Duration) {
        let outcome = match (r.status, r.retried_after, r.errcode) {
            (403 | 405, ..) => "refused",
            (413 | 400, ..) => "refused",
            (503, _, None) if r.note.as_deref().is_some_and(|n| n.contains("in flight")) => "busy",
            (502 | 504, ..) => "unanswered",
            (_, Some(_), _) => "retried",
            (_, None, Some(0)) => "ok",
            (_, None, Some(_)) => "errcode",
            _ => "other",
        };
        self.metrics.gateway.with(&[outcome]).inc();
        if self.access.quiet && r.status < 400 {
            return;
        }
        let method: String = method.chars().take(16).collect::<String>();
        let method = method.escape_debug().to_string();
        let code = r.errcode.map_or("-".to_owned(), |c| c.to_string());
        let mut text = match &r.account {
            Some(a) => format!("[{a}] "),
            None => String::new(),
        };
        let _ = write!(
            text,
            "gateway {method} {} {} errcode {code}",
            r.shown, r.status
        );
        if let Some(c) = r.retried_after {
            let _ = write!(text, ", retried after {c}");
        }
        if let Some(n) = &r.note {
            let _ = write!(text, "; {n}");
        }
        let ms = took.as_secs_f64() * 1000.0;
        let _ = write!(text, " {ms:.3}ms");
        // Busy is the caller's to retry, like a refusal; no answer from WeChat is an error.
        let level = match r.status {
            502 | 504 => Level::Error,
            400.. => Level::Warn,
            _ => Level::Info,
        };
        let retried = r.retried_after.map(|c| c.to_string()).unwrap_or_default();
        let mut fields = Vec::with_capacity(9);
        if let Some(a) = &r.account {
            fields.push(("account", Field::Str(a)));
        }
        fields.extend([
            ("listener", Field::Str("gateway")),
            ("method", Field::Str(&method)),
            ("path", Field::Str(&r.shown)),
            ("status", Field::Int(u64::from(r.status))),
            ("errcode", Field::Str(&code)),
        ]);
        if r.retried_after.is_some() {
            fields.push(("retried_after", Field::Str(&retried)));
        }
        if let Some(n) = &r.note {
            fields.push(("note", Field::Str(n)));
        }
        fields.push(("duration_ms", Field::Millis(ms)));
        self.log.record(level, &text, &fields);
    }
}

/// The body, whole: a declared length over the limit is refused before reading.
fn read_body(req: &Request) -> Result<Vec<u8>, u16> {
    let declared = req
        .header("Content-Length")
        .and_then(|l| l.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(413);
    }
    let mut body = Vec::new();
    if let Some(data) = req.data() {
        data.take(MAX_BODY + 1)
            .read_to_end(&mut body)
            .map_err(|_| 400u16)?;
    }
    if body.len() as u64 > MAX_BODY {
        return Err(413);
    }
    Ok(body)
}

/// The gateways of single accounts (`api_proxy` in the accounts file): opened at start, then
/// opened, moved and closed as the accounts file changes. Each is a listener of its own, with
/// its own [`MAX_IN_FLIGHT`].
pub struct Listeners {
    router: Arc<Router>,
    log: Log,
    access: AccessOptions,
    metrics: Arc<Metrics>,
    /// What the accounts file asks for at start, by account.
    wanted: Vec<(String, Settings)>,
    open: Vec<Own>,
}

/// One account's gateway, listening.
struct Own {
    name: String,
    settings: Settings,
    stop: Arc<AtomicBool>,
    running: Running,
}

impl Listeners {
    pub fn new(
        router: Arc<Router>,
        log: Log,
        access: AccessOptions,
        metrics: Arc<Metrics>,
        wanted: Vec<(String, Settings)>,
    ) -> Listeners {
        Listeners {
            router,
            log,
            access,
            metrics,
            wanted,
            open: Vec::new(),
        }
    }

    /// Opens the gateways asked for at start; `Err` names the first that cannot listen.
    pub fn open(&mut self) -> Result<(), (String, SocketAddr, io::Error)> {
        for (name, settings) in std::mem::take(&mut self.wanted) {
            let own = self
                .start(&name, &settings)
                .map_err(|e| (name.clone(), settings.addr, e))?;
            self.open.push(own);
        }
        Ok(())
    }

    /// Makes the open gateways those of `wanted`: closes those of accounts that are gone or
    /// whose `api_proxy` changed, then opens the new ones. One line each; an address that
    /// cannot be bound leaves its account without a gateway of its own until the next reload.
    pub fn sync(&mut self, wanted: &[(String, Settings)]) {
        let (keep, close): (Vec<Own>, Vec<Own>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|o| wanted.iter().any(|(n, s)| *n == o.name && *s == o.settings));
        let freed: Vec<SocketAddr> = close.iter().map(|o| o.running.addr).collect();
        for own in close {
            let why = if wanted.iter().any(|(n, _)| *n == own.name) {
                "its api_proxy changed"
            } else {
                "it has no api_proxy any more"
            };
            let addr = own.running.addr;
            let name = own.name.clone();
            own.close();
            self.log.info(&format!(
                "[{name}] API gateway on http://{addr} closed: {why}"
            ));
        }
        self.open = keep;
        for (name, settings) in wanted {
            if self.open.iter().any(|o| o.name == *name) {
                continue;
            }
            // An address closed just now is free once its accept thread has let it go.
            let mut started = self.start(name, settings);
            let deadline = Instant::now() + REBIND;
            while freed.contains(&settings.addr)
                && Instant::now() < deadline
                && matches!(&started, Err(e) if e.kind() == io::ErrorKind::AddrInUse)
            {
                std::thread::sleep(Duration::from_millis(50));
                started = self.start(name, settings);
            }
            match started {
                Ok(own) => self.open.push(own),
                Err(e) => self.log.error(&format!(
                    "[{name}] cannot listen for the account's API gateway on {}: {}; check api_proxy in the accounts file",
                    settings.addr,
                    listener::why(&e)
                )),
            }
        }
    }

    /// Closes every account's gateway, after the calls in flight.
    pub fn stop(&mut self) {
        for own in std::mem::take(&mut self.open) {
            own.close();
        }
    }

    fn start(&self, name: &str, settings: &Settings) -> Result<Own, io::Error> {
        let gateway = Arc::new(Gateway::new(
            Scope::Account(name.to_owned(), Arc::clone(&self.router)),
            settings.clone(),
            self.log.clone(),
            self.access,
            Arc::clone(&self.metrics),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let running = spawn(gateway, Arc::clone(&stop))?;
        self.log.info(&format!(
            "[{name}] API gateway on http://{} (api_proxy)",
            running.addr
        ));
        Ok(Own {
            name: name.to_owned(),
            settings: settings.clone(),
            stop,
            running,
        })
    }
}

impl Own {
    /// Stops taking calls and waits for those in flight (each bounded by [`CALL_TIMEOUT`]).
    fn close(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.running.join();
    }
}

/// Binds the gateway's address and serves there until `stop` is set.
pub fn spawn(gateway: Arc<Gateway>, stop: Arc<AtomicBool>) -> Result<Running, io::Error> {
    let addr = gateway.settings.addr;
    listener::spawn(
        addr,
        "gateway",
        THREADS,
        move |req| gateway.handle(req),
        stop,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiConfig, Secret, TokenEndpoint};
    use crate::config::Cidr;
    use crate::log::Capture;

    fn gateway(allow: &[&str]) -> (Gateway, Arc<Capture>) {
        let client = Client::new(ApiConfig {
            app_id: "wx1".into(),
            secret: Secret::new("s"),
            // Nothing listens there: a refused call must never get this far.
            api_base: "http://127.0.0.1:1".into(),
            token_cache: None,
            token_endpoint: TokenEndpoint::Stable,
            timeout: Duration::from_secs(1),
        });
        let settings = Settings {
            addr: "0.0.0.0:9200".parse().unwrap(),
            allow: allow.iter().filter_map(|c| Cidr::parse(c)).collect(),
        };
        let capture = Arc::new(Capture::default());
        let g = Gateway::new(
            Scope::One(Arc::new(client)),
            settings,
            Log::to(capture.clone()),
            AccessOptions::default(),
            Arc::new(Metrics::new()),
        );
        (g, capture)
    }

    #[test]
    fn a_peer_outside_the_allowed_networks_gets_403_and_one_line() {
        let (g, capture) = gateway(&["172.17.0.0/16"]);
        let from = |ip: &str| {
            let req = Request::fake_http_from(
                format!("{ip}:40000").parse().unwrap(),
                "GET",
                "/cgi-bin/menu/get",
                vec![],
                vec![],
            );
            g.handle(&req)
        };
        let refused = from("10.0.0.7");
        assert_eq!(refused.status_code, 403);
        let lines = capture.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("gateway GET /cgi-bin/menu/get 403")
                && lines[0].contains("10.0.0.7 is not allowed"),
            "{lines:?}"
        );
        // An allowed peer gets as far as the token, which here cannot be fetched: 502.
        assert_eq!(from("172.17.0.2").status_code, 502);
        assert_eq!(g.in_flight(), 0, "every slot was given back");
        let metrics = g.metrics.render();
        assert!(
            metrics.contains("wxmp_api_gateway_calls_total{outcome=\"refused\"} 1"),
            "{metrics}"
        );
    }

    #[test]
    fn origin_and_absolute_forms_for_wechat_s_hosts_only() {
        assert_eq!(
            target("/cgi-bin/menu/get?x=1"),
            Ok(Target {
                path: "/cgi-bin/menu/get",
                query: "x=1"
            })
        );
        for raw in [
            "http://api.weixin.qq.com/cgi-bin/menu/get?x=1",
            "HTTP://API2.weixin.qq.com:80/cgi-bin/menu/get?x=1",
        ] {
            assert_eq!(
                target(raw).map(|t| (t.path, t.query)),
                Ok(("/cgi-bin/menu/get", "x=1")),
                "{raw}"
            );
        }
        assert_eq!(target("http://api.weixin.qq.com").unwrap().path, "/");
        for raw in [
            "http://example.com/cgi-bin/menu/get",
            "http://api.weixin.qq.com.evil.example/x",
            "http://api.weixin.qq.com:8080/x",
            "https://api.weixin.qq.com/x",
            "api.weixin.qq.com:443",
            "*",
        ] {
            assert_eq!(target(raw).map(|_| ()).unwrap_err().0, 403, "{raw}");
        }
    }

    #[test]
    fn the_token_is_added_or_replaced_and_nothing_else_changes() {
        let t = AccessToken::new("T/1+");
        assert_eq!(with_token("", &t), "access_token=T%2F1%2B");
        assert_eq!(
            with_token("openid=o1&access_token=theirs&lang=zh_CN&access_token", &t),
            "access_token=T%2F1%2B&openid=o1&lang=zh_CN"
        );
        assert_eq!(
            with_token("type=image&x=%E4%B8%AD", &t),
            "access_token=T%2F1%2B&type=image&x=%E4%B8%AD"
        );
    }

    #[test]
    fn the_account_s_name_starts_the_path_and_is_stripped() {
        assert_eq!(
            prefix("/shop/cgi-bin/menu/get"),
            Some(("shop", "/cgi-bin/menu/get"))
        );
        assert_eq!(prefix("/shop"), Some(("shop", "/")));
        assert_eq!(prefix("/shop/"), Some(("shop", "/")));
        assert_eq!(prefix("/"), None);
        assert_eq!(prefix("//cgi-bin/x"), None);
        assert_eq!(prefix("http://api.weixin.qq.com/x"), None);
    }

    #[test]
    fn the_log_shows_parameter_names_never_values() {
        assert_eq!(
            shown("/cgi-bin/user/info", "access_token=SECRET&openid=o1&lang"),
            "/cgi-bin/user/info?access_token&openid&lang"
        );
        assert_eq!(shown("/sns/userinfo", ""), "/sns/userinfo");
        assert_eq!(shown("/x\n", "a\u{7}=1"), "/x\\n?a\\u{7}");
    }
}
